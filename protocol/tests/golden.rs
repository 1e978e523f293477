//! Golden files: the exact payload bytes of every message, a signed envelope of each, the
//! canonical bytes and hash of every action, and printed identifiers. The web UI's tests read the
//! same files and must reproduce them byte for byte.
//!
//! A mismatch fails the test. After a deliberate change to the wire format, regenerate with
//! `BLESS=1 cargo test -p protocol --test golden` and review the diff like code.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use protocol::envelope::{Sealed, VerifyContext, seal};
use protocol::{DeviceId, HostId, ReplayWindow, action, action_hash};
use serde_json::json;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Compares `actual` with the committed file, or writes it when blessing.
fn check(relative: &str, actual: &[u8], mismatches: &mut Vec<String>) {
    let path = golden_dir().join(relative);
    if std::env::var_os("BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    match fs::read(&path) {
        Ok(expected) if expected == actual => {}
        Ok(_) => mismatches.push(format!("{relative} differs")),
        Err(e) => mismatches.push(format!("{relative}: {e}")),
    }
}

fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap();
    out.push(b'\n');
    out
}

#[test]
fn golden_files_match() {
    let mut mismatches = Vec::new();
    let host = host().public_key();

    // Every message: its payload bytes alone, and a frame sealed by the device (events by the
    // host) with a counter that counts up through the list.
    let mut envelopes = Vec::new();
    let mut names = Vec::new();
    for (counter, (name, message)) in (1..).zip(messages()) {
        let payload = message.to_payload();
        check(&format!("messages/{name}.json"), &payload, &mut mismatches);

        let (signer, recipient) = match message {
            protocol::Message::Event(_) => (common::host(), device().public_key()),
            _ => (device(), host),
        };
        let ctx = protocol::SealContext {
            recipient: &recipient,
            counter,
            issued_at_ms: NOW_MS,
            expires_at_ms: NOW_MS + LIFETIME_MS,
        };
        let frame = seal(&signer, &ctx, &message).unwrap();
        // The golden frame must also open, or the file would enshrine a broken envelope.
        let opened = Sealed::decode(&frame)
            .unwrap()
            .verify(
                &signer.public_key(),
                &VerifyContext::new(&recipient, NOW_MS),
                &mut ReplayWindow::new(),
            )
            .unwrap();
        assert_eq!(opened.message(), &message, "{name}");
        envelopes.push(json!({
            "name": name,
            "kind": message.kind(),
            "kind_byte": message.kind() as u8,
            "sender_seed": hex::encode(signer.to_seed()),
            "sender_public_key": hex::encode(signer.public_key().as_bytes()),
            "recipient_public_key": hex::encode(recipient.as_bytes()),
            "counter": counter,
            "issued_at_ms": NOW_MS,
            "expires_at_ms": NOW_MS + LIFETIME_MS,
            "payload_file": format!("messages/{name}.json"),
            "frame": hex::encode(&frame),
        }));
        names.push(name);
    }
    check(
        "envelopes.json",
        &pretty(&json!({
            "domain": String::from_utf8_lossy(protocol::envelope::DOMAIN),
            "version": protocol::envelope::VERSION,
            "envelopes": envelopes,
        })),
        &mut mismatches,
    );

    let hashes: Vec<_> = actions()
        .into_iter()
        .map(|(name, a)| {
            json!({
                "name": name,
                "action": a,
                "canonical": hex::encode(action::canonical_bytes(&a)),
                "sha256": action_hash(&a).to_string(),
            })
        })
        .collect();
    check("action-hashes.json", &pretty(&json!({ "actions": hashes })), &mut mismatches);

    let device = device().public_key();
    check(
        "ids.json",
        &pretty(&json!({
            "host": {
                "public_key": hex::encode(host.as_bytes()),
                "id": HostId::new(host).to_string(),
                "fingerprint": host.fingerprint().to_string(),
            },
            "device": {
                "public_key": hex::encode(device.as_bytes()),
                "id": DeviceId::new(device).to_string(),
                "fingerprint": device.fingerprint().to_string(),
            },
            "pairing": {
                "secret": hex::encode([0x33; 32]),
                "token": protocol::pairing::token(&protocol::pairing::PairingSecret::from_bytes([0x33; 32])).to_string(),
                "name": "Ana's phone",
                "proof_file": "messages/pairing_hello.json",
            },
        })),
        &mut mismatches,
    );

    // Relay authentication: the challenge answer's bytes, bound to a certificate or an origin.
    let nonce = [0x44u8; 32];
    let cert = [0x55u8; 32];
    let origin = "https://relay.example.com";
    let binding = protocol::relay::origin_binding(origin);
    check(
        "relay-auth.json",
        &pretty(&json!({
            "nonce": hex::encode(nonce),
            "certificate_sha256": hex::encode(cert),
            "device_bound_to_certificate": hex::encode(protocol::relay::auth_message(&nonce, protocol::relay::Side::Device, &cert)),
            "origin": origin,
            "origin_binding": hex::encode(binding),
            "device_bound_to_origin": hex::encode(protocol::relay::auth_message(&nonce, protocol::relay::Side::Device, &binding)),
            "host_bound_to_certificate": hex::encode(protocol::relay::auth_message(&nonce, protocol::relay::Side::Host, &cert)),
        })),
        &mut mismatches,
    );

    // End-to-end resume payloads (`protocol::resume`), and the relay's routing header around
    // them. Numbers are decimal strings: an epoch is nanoseconds, past what a JSON number holds
    // exactly in a browser.
    check("resume.json", &pretty(&resume_cases()), &mut mismatches);

    // The end-to-end channel (`protocol::channel`): a handshake with fixed keys, then messages
    // both ways, as frames (in full below 4 KiB, else by SHA-256).
    check("channel.json", &pretty(&channel_case()), &mut mismatches);

    assert!(
        mismatches.is_empty(),
        "golden files differ from what the code produces: {mismatches:#?}\n\
         If the change is deliberate: BLESS=1 cargo test -p protocol --test golden, then review the diff."
    );
    // Every message kind and every variant has a file.
    assert_eq!(names.len(), 35);
}

#[test]
fn committed_payloads_parse_back() {
    // Reading direction: the committed files (which the browser reproduces) parse to the same
    // messages, so the golden bytes are not only what Rust writes but also what Rust accepts.
    use protocol::Message;
    for (name, message) in messages() {
        let path = golden_dir().join(format!("messages/{name}.json"));
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parsed = match &message {
            Message::Request(_) => Message::Request(serde_json::from_slice(&bytes).unwrap()),
            Message::Decision(_) => Message::Decision(serde_json::from_slice(&bytes).unwrap()),
            Message::Event(_) => Message::Event(serde_json::from_slice(&bytes).unwrap()),
            Message::Pairing(_) => Message::Pairing(serde_json::from_slice(&bytes).unwrap()),
        };
        assert_eq!(parsed, message, "{name}");
    }
}

/// The resume frames of `resume.json`: each encoded, and each malformed payload with the error
/// it must get.
fn resume_cases() -> serde_json::Value {
    use protocol::resume::{Frame, FrameError};
    let epoch = 1_767_225_600_000_000_123u64;
    let envelope = b"an envelope's bytes";
    let frames = [
        ("data_first", Frame::Data { epoch, seq: 1, base: 1, message: b"hello" }),
        ("data_later", Frame::Data { epoch, seq: 7, base: 3, message: envelope }),
        ("data_empty", Frame::Data { epoch: 1, seq: u64::MAX, base: u64::MAX, message: b"" }),
        ("ack", Frame::Ack { epoch, seq: 42 }),
        ("ack_nothing_yet", Frame::Ack { epoch: 5, seq: 0 }),
    ];
    let mut cases: Vec<serde_json::Value> = frames
        .iter()
        .map(|(name, frame)| {
            let payload = frame.encode();
            assert_eq!(Frame::decode(&payload).as_ref(), Ok(frame), "{name}");
            let shape = match *frame {
                Frame::Data { epoch, seq, base, message } => json!({
                    "kind": "data",
                    "epoch": epoch.to_string(),
                    "seq": seq.to_string(),
                    "base": base.to_string(),
                    "message": hex::encode(message),
                }),
                Frame::Ack { epoch, seq } => {
                    json!({ "kind": "ack", "epoch": epoch.to_string(), "seq": seq.to_string() })
                }
            };
            json!({ "name": name, "payload": hex::encode(&payload), "frame": shape })
        })
        .collect();
    let data = |base: u64| Frame::Data { epoch, seq: 4, base, message: b"x" }.encode();
    let ack = Frame::Ack { epoch, seq: 1 }.encode();
    let malformed: [(&str, Vec<u8>, FrameError); 8] = [
        ("empty", vec![], FrameError::Length),
        ("data_without_base", data(1)[..17].to_vec(), FrameError::Length),
        ("data_cut_in_base", data(1)[..24].to_vec(), FrameError::Length),
        ("ack_short", ack[..16].to_vec(), FrameError::Length),
        ("ack_with_more", [ack.as_slice(), b"x"].concat(), FrameError::Length),
        ("unknown_kind", [&[2u8][..], &ack[1..]].concat(), FrameError::Kind(2)),
        ("base_zero", data(0), FrameError::Base),
        ("base_past_seq", data(5), FrameError::Base),
    ];
    for (name, payload, error) in malformed {
        assert_eq!(Frame::decode(&payload), Err(error), "{name}");
        let error = match error {
            FrameError::Length => "length",
            FrameError::Kind(_) => "kind",
            FrameError::Base => "base",
            _ => unreachable!("a new kind of error wants a name here"),
        };
        cases.push(json!({ "name": name, "payload": hex::encode(&payload), "error": error }));
    }
    json!({
        "layout": "data: 0 ‖ epoch u64 BE ‖ seq u64 BE ‖ base u64 BE ‖ message; ack: 1 ‖ epoch u64 BE ‖ seq u64 BE",
        "frames": cases,
    })
}

/// The channel's golden case: every key fixed, the frames each side makes, for a paired device
/// and a pairing one.
fn channel_case() -> serde_json::Value {
    use protocol::channel::{self, ChannelId, ChannelKeys, Frame, PairingKeys};
    use sha2::Digest as _;
    let (host_static, device_static) = ([0x41u8; 32], [0x42u8; 32]);
    let (host_ephemeral, device_ephemeral) = ([0x51u8; 32], [0x52u8; 32]);
    let (host_public, device_public) =
        (channel::public_of(&host_static).unwrap(), channel::public_of(&device_static).unwrap());
    let at_host = ChannelKeys {
        local_static: host_static.into(),
        remote_static: device_public,
        host: host().public_key(),
        device: device().public_key(),
    };
    let at_device = ChannelKeys {
        local_static: device_static.into(),
        remote_static: host_public,
        host: host().public_key(),
        device: device().public_key(),
    };
    let secret = protocol::pairing::PairingSecret::from_bytes([0x61; 32]);
    let pairing = PairingKeys {
        psk: protocol::pairing::channel_psk(&secret).into(),
        token: protocol::pairing::token(&secret),
        host: host().public_key(),
        device: device().public_key(),
    };
    let (id, incarnation) = (ChannelId([1, 2, 3, 4, 5, 6, 7, 8]), 0x0102_0304_0506_0708_u64);
    let message_of = |frame: &[u8]| -> Vec<u8> {
        match Frame::decode(frame).unwrap() {
            Frame::Hello { message, .. }
            | Frame::Answer { message, .. }
            | Frame::PairHello { message, .. }
            | Frame::PairAnswer { message, .. } => message.to_vec(),
            other => panic!("{other:?}"),
        }
    };
    let frame_json = |frames: Vec<Vec<u8>>| {
        frames
            .into_iter()
            .map(|f| {
                let sha256 = hex::encode(sha2::Sha256::digest(&f));
                if f.len() < 4096 {
                    json!({ "hex": hex::encode(&f), "sha256": sha256 })
                } else {
                    json!({ "len": f.len(), "sha256": sha256 })
                }
            })
            .collect::<Vec<_>>()
    };
    let open = |channel: &mut channel::Channel, frame: &[u8]| match Frame::decode(frame).unwrap() {
        Frame::Data { nonce, ciphertext, .. } => channel.open(nonce, ciphertext).unwrap(),
        other => panic!("{other:?}"),
    };
    // A payload of `len` bytes: i mod 251, so no chunk repeats another.
    let payload = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let mut cases = Vec::new();
    for (name, keys) in [("paired", Ok(&at_device)), ("pairing", Err(&pairing))] {
        let host_keys = keys.map(|_| &at_host);
        let (mut initiator, hello) =
            channel::initiate_with(keys, id, incarnation, 1 << 20, &device_ephemeral).unwrap();
        let (mut host_side, answer, got) =
            channel::respond_with(host_keys, id, &message_of(&hello), 1 << 20, &host_ephemeral)
                .unwrap();
        assert_eq!(got, incarnation);
        let mut device_side = initiator.finish(&message_of(&answer)).unwrap();
        let mut payloads = Vec::new();
        let sizes: &[(&str, usize)] = if name == "paired" {
            &[("device", 0), ("device", 5), ("host", 300), ("device", 70_000), ("host", 1)]
        } else {
            &[("device", 40), ("host", 2)]
        };
        for &(from, len) in sizes {
            let m = payload(len);
            let frames = if from == "device" {
                device_side.seal(&m).unwrap()
            } else {
                host_side.seal(&m).unwrap()
            };
            // Each opens on the other side.
            let opener = if from == "device" { &mut host_side } else { &mut device_side };
            let opened = frames.iter().map(|f| open(opener, f)).last().unwrap();
            assert_eq!(opened.unwrap(), m);
            payloads.push(json!({ "from": from, "len": len, "frames": frame_json(frames) }));
        }
        cases.push(json!({
            "name": name,
            "hello": hex::encode(&hello),
            "answer": hex::encode(&answer),
            "handshake_hash": hex::encode(host_side.handshake_hash()),
            "payloads": payloads,
        }));
    }
    let padded = [0, 1, 255, 256, 257, 300, 511, 512, 513, 1000, 1027, 2049, 9000, 16385, 40000]
        .map(|len: usize| [len, channel::size_class(len)]);
    json!({
        "protocol": channel::PROTOCOL,
        "pairing_protocol": channel::PAIRING_PROTOCOL,
        "note": "payload bytes are i mod 251 for i in 0..len",
        "host_identity": hex::encode(host().public_key().as_bytes()),
        "device_identity": hex::encode(device().public_key().as_bytes()),
        "host_static": hex::encode(host_static),
        "host_static_public": hex::encode(host_public),
        "device_static": hex::encode(device_static),
        "device_static_public": hex::encode(device_public),
        "host_ephemeral": hex::encode(host_ephemeral),
        "device_ephemeral": hex::encode(device_ephemeral),
        "pairing_secret": hex::encode(secret.as_bytes()),
        "pairing_token": pairing.token.to_string(),
        "pairing_psk": hex::encode(*pairing.psk),
        "padded": padded,
        "channel_id": hex::encode(id.0),
        "incarnation": incarnation.to_string(),
        "cases": cases,
    })
}
