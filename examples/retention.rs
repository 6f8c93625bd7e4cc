//! What retention costs: fills a database with N sent messages (webhooks on, so each has its events, part,
//! webhook event and contact-cap row), reports the bytes per message, then deletes them all in chunks
//! through `Store::prune` while a caller accepts a message every 5 ms, and reports the rate and the waits.
//!
//! Run: `N=100000 cargo run --release --example retention` (`DIR`, default /var/tmp/modemgate-retention;
//! `CHUNK`, default 500 as the daemon uses). See BENCHMARKS.md, "Retention".
use std::sync::Arc;
use std::time::Instant;

use modemgate::store::*;

fn message(n: usize) -> NewMessage {
    NewMessage {
        api_key: "cms".into(),
        idempotency_key: Some(format!("key-{n}")),
        to: format!("+1415{:07}", n),
        text: "Your account ending 1234 has a balance due. Call 1-800-555-0100. Reply STOP to stop texts to this telephone number.".into(),
        encoding: TextEncoding::Gsm7,
        parts: vec![NewPart { tpdu_length: 130, pdu_hex: "0011000B915155210000F00000AA".repeat(10) }],
        priority: 0, send_at: None, expires_at: None,
        reference: Some(format!("acct-{n}")), metadata: None, tz: None, region: None, category: Category::Standard,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = std::path::PathBuf::from(
        std::env::var("DIR").unwrap_or("/var/tmp/modemgate-retention".into()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.db");
    let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
    let store = Store::open(
        &path,
        OpenOptions {
            clock: Arc::new(clock.clone()),
            webhooks: vec![modemgate::webhook::Subscription {
                url: "http://127.0.0.1:9/h".into(),
                name: None,
                events: None,
            }],
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(64) {
                    let id = store.accept(message(i)).await.unwrap().id;
                    store.claim(id, "m0", None).await.unwrap();
                    store.part_submitting(id, 1, "m0", None).await.unwrap();
                    store.part_sent(id, 1, "m0", (i % 250) as u8).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "filled {n} sent messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(store.checkpoint().await.unwrap());
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "database {:.1} MB = {:.0} B per sent message (with events, parts, webhook rows, cap history)",
        size as f64 / 1e6,
        size as f64 / n as f64
    );
    clock.advance(std::time::Duration::from_secs(86_400));
    let cutoff = clock.now();
    let chunk: usize = std::env::var("CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // Accepts go on meanwhile: how long does each wait?
    let probe = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut waits = Vec::new();
            for i in 0..2000 {
                let t = Instant::now();
                store.accept(message(n + 10 + i)).await.unwrap();
                waits.push(t.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            waits
        })
    };
    let started = Instant::now();
    let (mut cursor, mut messages, mut events, mut other, mut calls, mut longest) =
        (PruneCursor::default(), 0, 0, 0, 0, 0f64);
    loop {
        let t = Instant::now();
        let p = store.prune(cutoff, cursor, chunk).await.unwrap();
        longest = longest.max(t.elapsed().as_secs_f64() * 1000.0);
        messages += p.messages;
        events += p.webhook_events;
        other += p.other_rows;
        calls += 1;
        match p.next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    let took = started.elapsed().as_secs_f64();
    let mut waits = probe.await.unwrap();
    waits.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    println!(
        "pruned {messages} messages, {events} webhook events, {other} other rows in {calls} calls, {took:.2} s ({:.0} messages/s); longest call {longest:.1} ms",
        messages as f64 / took
    );
    println!(
        "accepts meanwhile (one every 5 ms, 2,000, spanning the prune and after): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        waits[waits.len() - 1]
    );
}
