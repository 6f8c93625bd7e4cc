//! Messages per second through one simulated modem with zero send delay: the worker's own overhead per
//! message (Submitting ack, AT+CMGS over a pty, prompt, PDU, +CMGS), not a modem's radio time.
//!
//! Run: `cargo bench --bench modem`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modemgate::{
    modem::{
        WorkerConfig,
        job::{Clearance, JobOutcome, JobPart, ModemState, SendJob, WorkerEvent},
        spawn_worker,
    },
    pdu::{self, SubmitOptions},
    sim::{self, Profile, SimConfig},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

fn send_through_one_modem(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let (worker, _sim) = rt.block_on(async {
        let sim = sim::spawn(SimConfig::instant(Profile::Plain)).unwrap();
        let mut cfg = WorkerConfig::new("bench", sim.device());
        cfg.sweep_interval = Duration::from_secs(3600);
        cfg.health_interval = Duration::from_secs(3600);
        let (tx, mut events) = mpsc::channel(64);
        // The daemon's part, reduced to acknowledging at once.
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    WorkerEvent::Submitting { ack, .. } => {
                        let _ = ack.send(Clearance::Write);
                    }
                    WorkerEvent::Inbound { ack, .. } => {
                        let _ = ack.send(());
                    }
                    _ => {}
                }
            }
        });
        let (worker, _task) = spawn_worker(cfg, tx, cancel.clone());
        let mut health = worker.health();
        health
            .wait_for(|h| h.state == ModemState::Ready)
            .await
            .unwrap();
        (worker, sim)
    });
    let part = pdu::encode_submit(
        "+15551234567",
        "Benchmark message",
        &SubmitOptions::default(),
    )
    .unwrap();
    let part = JobPart {
        part: 1,
        tpdu_length: part[0].tpdu_length,
        pdu_hex: part[0].hex(),
    };

    let mut group = c.benchmark_group("modem");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_one_part_zero_delay", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (done, outcome) = oneshot::channel();
                let job = SendJob {
                    message_id: uuid::Uuid::now_v7(),
                    recipient: "+15551234567".into(),
                    parts: vec![part.clone()],
                    more_waiting: true,
                    send_by: None,
                    done,
                };
                worker.send(job).await;
                assert_eq!(outcome.await.unwrap(), JobOutcome::Sent);
            })
        })
    });
    group.finish();
    cancel.cancel();
}

criterion_group!(benches, send_through_one_modem);
criterion_main!(benches);
