//! Durable accepts through the group-commit writer: many concurrent callers, each waiting for its own
//! message to be fsync'd, as API handlers do under load. Throughput is in messages per second.
//!
//! Run: `cargo bench --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use modemgate::store::{Category, NewMessage, NewPart, OpenOptions, Store, TextEncoding};

fn message(writer: usize, n: usize) -> NewMessage {
    NewMessage {
        api_key: "cms".into(),
        idempotency_key: Some(format!("{writer}-{n}-{}", fastrand())),
        to: format!("+1555{:07}", writer * 1000 + n % 1000),
        text: "Your account ending 1234 has a balance due. Call 1-800-555-0100. Reply STOP to stop texts to \
               this telephone number."
            .into(),
        encoding: TextEncoding::Gsm7,
        parts: vec![NewPart {
            tpdu_length: 130,
            pdu_hex: "0011000B915155210000F00000AA".repeat(10),
        }],
        priority: 0,
        send_at: None,
        expires_at: None,
        reference: Some(format!("acct-{writer}")),
        metadata: None,
        tz: Some("America/New_York".into()),
        region: None,
        category: Category::Standard,
    }
}

/// Unique idempotency keys across criterion's repeated runs without a random-number crate.
fn fastrand() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `writers` tasks each accept `per_writer` messages one after another; returns the elapsed time.
async fn round(store: &Store, writers: usize, per_writer: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per_writer {
                    store
                        .accept(message(writer, n))
                        .await
                        .expect("accept failed");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task panicked");
    }
    started.elapsed()
}

fn durable_accepts(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path().join("bench.db"),
        OpenOptions {
            clock: Arc::new(modemgate::store::SystemClock),
            ..OpenOptions::default()
        },
    )
    .expect("open store");

    let mut group = c.benchmark_group("durable_accept");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let per_writer = 8;
    for writers in [64, 256, 1024] {
        group.throughput(Throughput::Elements((writers * per_writer) as u64));
        group.bench_with_input(
            BenchmarkId::new("concurrent_writers", writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += round(&store, writers, per_writer).await;
                        }
                        total
                    })
                })
            },
        );
    }
    group.finish();

    // The same through `accept_batch` (a batch send endpoint): 100 messages per request.
    let mut group = c.benchmark_group("durable_accept_batch");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let (writers, per_request) = (16, 100);
    group.throughput(Throughput::Elements((writers * per_request) as u64));
    group.bench_function(BenchmarkId::new("concurrent_writers_x100", writers), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..writers)
                        .map(|writer| {
                            let store = store.clone();
                            let batch = (0..per_request).map(|n| message(writer, n)).collect();
                            tokio::spawn(async move { store.accept_batch(batch).await })
                        })
                        .collect();
                    for task in tasks {
                        let results = task
                            .await
                            .expect("writer task panicked")
                            .expect("batch failed");
                        assert!(results.iter().all(Result::is_ok));
                    }
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    let stats = store.writer_stats();
    println!(
        "writer: {} requests in {} commits ({:.1} per commit)",
        stats.requests,
        stats.commits,
        stats.requests as f64 / stats.commits.max(1) as f64
    );
}

criterion_group!(benches, durable_accepts);
criterion_main!(benches);
