//! PDU codec throughput: decoding an inbound SMS-DELIVER (the per-message cost of every +CMGR/+CMT) and
//! encoding a 3-part message (the per-send cost). Run with `cargo bench --bench pdu`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modemgate::pdu::{self, SubmitOptions};

/// A real capture (python-gsmmodem's test modem): international sender, GSM 7-bit, 49 characters.
const DELIVER_HEX: &str = "07915892000000F0040B915892214365F700007040213252242331493A283D0795C3F33C88FE06C9CB6132885EC6\
                           D341EDF27C1E3E97E7207B3A0C0A5241E377BB1D7693E72E";

fn decode(c: &mut Criterion) {
    let bytes = hex::decode(DELIVER_HEX).unwrap();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("deliver_bytes", |b| {
        b.iter(|| pdu::decode(black_box(&bytes)).unwrap())
    });
    group.bench_function("deliver_hex", |b| {
        b.iter(|| pdu::decode_hex(black_box(DELIVER_HEX)).unwrap())
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let text = "Hello from modemgate. Your payment of $120.50 is due on 1 December; pay at example.com/pay or \
                reply HELP for help. "
        .repeat(3);
    let opts = SubmitOptions::default();
    assert_eq!(
        pdu::encode_submit("+15125551234", &text, &opts)
            .unwrap()
            .len(),
        3
    );
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("submit_3_parts", |b| {
        b.iter(|| pdu::encode_submit(black_box("+15125551234"), black_box(&text), &opts).unwrap())
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
