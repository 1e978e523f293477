//! Envelope sign + encode and decode + verify, side by side with bare ed25519-dalek `sign` and
//! `verify_strict` over the same bytes, at 256 B and 16 KiB payloads.
//!
//! Run: `cargo bench -p protocol --bench envelope`. Results go in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use protocol::envelope::{DOMAIN, HEADER_LEN, SealContext, Sealed, VerifyContext, seal};
use protocol::{Blob, HostEvent, Message, ReplayWindow, SecretKey, SessionId};

const NOW_MS: u64 = 1_767_225_600_000;

/// A session output event whose JSON payload is exactly `size` bytes.
fn message_of_payload_size(size: usize) -> Message {
    let make = |n: usize| {
        Message::Event(HostEvent::Output {
            session: SessionId([7; 16]),
            seq: 1,
            data: Blob(vec![b'x'; n]),
        })
    };
    let overhead = make(0).to_payload().len();
    // base64 makes 4 characters of every 3 bytes; search the few sizes around the estimate.
    let estimate = (size.saturating_sub(overhead)) * 3 / 4;
    (estimate.saturating_sub(4)..estimate + 4)
        .map(make)
        .find(|m| m.to_payload().len() == size)
        .unwrap_or_else(|| make(estimate))
}

fn bench(c: &mut Criterion) {
    let host = SecretKey::from_seed(&[2; 32]);
    let device = SecretKey::from_seed(&[1; 32]);
    let device_key = device.public_key();
    // The receiver holds the sender's vetted key from pairing, as the bare baseline does.
    let host_key = host.public_key();
    let bare_signing = SigningKey::from_bytes(&[2; 32]);
    let bare_verifying = bare_signing.verifying_key();

    for size in [256usize, 16 << 10] {
        let message = message_of_payload_size(size);
        let ctx = SealContext {
            recipient: &device_key,
            counter: 1,
            issued_at_ms: NOW_MS,
            expires_at_ms: NOW_MS + 60_000,
        };
        let frame = seal(&host, &ctx, &message).expect("bench message seals");
        assert_eq!(frame.len() - HEADER_LEN - 64, size, "payload size");
        // The exact bytes the envelope signs, for the bare baseline.
        let mut signed = DOMAIN.to_vec();
        signed.extend_from_slice(&frame[..frame.len() - 64]);
        let signature = bare_signing.sign(&signed);

        let mut group = c.benchmark_group(format!("payload {size} B"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("sign", "bare ed25519-dalek"), |b| {
            b.iter(|| bare_signing.sign(black_box(&signed)))
        });
        group.bench_function(BenchmarkId::new("sign", "envelope seal"), |b| {
            b.iter(|| seal(&host, black_box(&ctx), black_box(&message)))
        });
        group.bench_function(BenchmarkId::new("verify", "bare verify_strict"), |b| {
            b.iter(|| bare_verifying.verify_strict(black_box(&signed), black_box(&signature)))
        });
        group.bench_function(BenchmarkId::new("verify", "envelope decode+verify"), |b| {
            b.iter(|| {
                let mut window = ReplayWindow::new();
                let sealed = Sealed::decode(black_box(&frame)).expect("decodes");
                sealed
                    .verify(&host_key, &VerifyContext::new(&device_key, NOW_MS), &mut window)
                    .expect("verifies")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
