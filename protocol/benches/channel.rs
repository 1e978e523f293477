//! The end-to-end channel's cost beside the signed envelope alone: for a message of 1 KiB and
//! 16 KiB, one way, sender to receiver (seal + decode + verify, with and without the channel's
//! seal + open around it), and a whole handshake.
//!
//! Run: `cargo bench -p protocol --bench channel`. Results go in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use protocol::channel::{self, Channel, ChannelId, ChannelKeys, Frame};
use protocol::envelope::{SealContext, Sealed, VerifyContext, seal};
use protocol::{Blob, HostEvent, Message, ReplayWindow, SecretKey, SessionId};

const NOW_MS: u64 = 1_767_225_600_000;

fn keys() -> (ChannelKeys, ChannelKeys) {
    let (host_x, host_xp) = channel::generate_static().expect("a key");
    let (device_x, device_xp) = channel::generate_static().expect("a key");
    let host = SecretKey::from_seed(&[2; 32]).public_key();
    let device = SecretKey::from_seed(&[1; 32]).public_key();
    (
        ChannelKeys { local_static: host_x, remote_static: device_xp, host, device },
        ChannelKeys { local_static: device_x, remote_static: host_xp, host, device },
    )
}

/// The message of a handshake frame.
fn message_of(frame: &[u8]) -> Vec<u8> {
    match Frame::decode(frame).expect("a frame") {
        Frame::Hello { message, .. } | Frame::Answer { message, .. } => message.to_vec(),
        _ => unreachable!("a handshake frame"),
    }
}

/// Both sides of a handshake: (the device's channel, the host's).
fn handshake(at_device: &ChannelKeys, at_host: &ChannelKeys, max: usize) -> (Channel, Channel) {
    let id = ChannelId([1; 8]);
    let (mut initiator, hello) = channel::initiate(at_device, id, 1, max).expect("hello");
    let (host, answer, _) =
        channel::respond(at_host, id, &message_of(&hello), max).expect("answer");
    (initiator.finish(&message_of(&answer)).expect("open"), host)
}

fn bench(c: &mut Criterion) {
    let host = SecretKey::from_seed(&[2; 32]);
    let device_key = SecretKey::from_seed(&[1; 32]).public_key();
    let host_key = host.public_key();
    let (at_host, at_device) = keys();

    for size in [1usize << 10, 16 << 10] {
        let message = Message::Event(HostEvent::Output {
            session: SessionId([7; 16]),
            seq: 1,
            data: Blob(vec![b'x'; size]),
        });
        // Each frame with the next counter, so that the receiver's window takes it.
        let counter = std::cell::Cell::new(0u64);
        let ctx = || {
            counter.set(counter.get() + 1);
            SealContext {
                recipient: &device_key,
                counter: counter.get(),
                issued_at_ms: NOW_MS,
                expires_at_ms: NOW_MS + 60_000,
            }
        };
        let (mut receiving, mut sending) = handshake(&at_device, &at_host, 1 << 22);
        let mut window = ReplayWindow::new();
        let mut group = c.benchmark_group(format!("message {} KiB", size >> 10));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("one way", "envelope alone"), |b| {
            b.iter(|| {
                let frame = seal(&host, &ctx(), black_box(&message)).expect("seals");
                let sealed = Sealed::decode(&frame).expect("decodes");
                sealed
                    .verify(&host_key, &VerifyContext::new(&device_key, NOW_MS), &mut window)
                    .expect("verifies");
            })
        });
        let mut window = ReplayWindow::new();
        group.bench_function(BenchmarkId::new("one way", "envelope in the channel"), |b| {
            b.iter(|| {
                let frame = seal(&host, &ctx(), black_box(&message)).expect("seals");
                let mut opened = None;
                for sealed in sending.seal(&frame).expect("channel seals") {
                    let Ok(Frame::Data { nonce, ciphertext, .. }) = Frame::decode(&sealed) else {
                        unreachable!("a data frame")
                    };
                    opened = receiving.open(nonce, ciphertext).expect("channel opens");
                }
                let frame = opened.expect("whole");
                let sealed = Sealed::decode(&frame).expect("decodes");
                sealed
                    .verify(&host_key, &VerifyContext::new(&device_key, NOW_MS), &mut window)
                    .expect("verifies");
            })
        });
        group.finish();
    }
    c.bench_function("handshake (both sides)", |b| {
        b.iter(|| handshake(&at_device, &at_host, 1 << 20))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
