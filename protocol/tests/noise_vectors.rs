//! Known-answer vectors for the Noise suite the end-to-end channel is built on,
//! `Noise_*_25519_AESGCM_SHA256`: every handshake pattern of cacophony's vectors for that suite
//! (`tests/vectors/noise/`, copied from snow's repository with its licences), run through `snow`
//! with the primitives the channel uses ([`protocol::channel::resolver`]). Each vector fixes both
//! sides' keys, ephemeral keys, prologue and pre-shared keys; every message must encrypt to the
//! expected bytes and decrypt back, and both sides must end with the expected handshake hash. The
//! browser runs the same file through its WebCrypto implementation (`web/test/noise.test.js`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;

use serde_json::Value;

fn bytes(v: &Value, field: &str) -> Option<Vec<u8>> {
    v.get(field).and_then(Value::as_str).map(|s| hex::decode(s).unwrap())
}

/// One side's handshake state as the vector sets it up.
fn side(v: &Value, prefix: &str, initiator: bool) -> snow::HandshakeState {
    let name = v["protocol_name"].as_str().unwrap();
    let static_key = bytes(v, &format!("{prefix}_static"));
    let ephemeral = bytes(v, &format!("{prefix}_ephemeral"));
    let remote = bytes(v, &format!("{prefix}_remote_static"));
    let prologue = bytes(v, &format!("{prefix}_prologue")).unwrap();
    let psks: Vec<[u8; 32]> = v
        .get(format!("{prefix}_psks"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| hex::decode(p.as_str().unwrap()).unwrap().try_into().unwrap())
                .collect()
        })
        .unwrap_or_default();
    // The modifiers name where each pre-shared key goes, in the order the vector lists them.
    let pattern = name.split('_').nth(1).unwrap();
    let locations: Vec<u8> = pattern
        .split(['+'])
        .flat_map(|part| part.match_indices("psk").map(move |(i, _)| &part[i + 3..]))
        .map(|rest| rest.chars().next().unwrap().to_digit(10).unwrap() as u8)
        .collect();
    assert_eq!(locations.len(), psks.len(), "{name}");
    let mut builder =
        snow::Builder::with_resolver(name.parse().unwrap(), protocol::channel::resolver())
            .prologue(&prologue)
            .unwrap();
    if let Some(key) = &ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(key);
    }
    if let Some(key) = &static_key {
        builder = builder.local_private_key(key).unwrap();
    }
    if let Some(key) = &remote {
        builder = builder.remote_public_key(key).unwrap();
    }
    for (location, psk) in locations.iter().zip(&psks) {
        builder = builder.psk(*location, psk).unwrap();
    }
    if initiator { builder.build_initiator().unwrap() } else { builder.build_responder().unwrap() }
}

fn vectors() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/noise/cacophony_25519_aesgcm_sha256.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

#[test]
fn every_aesgcm_sha256_vector_of_cacophony_encrypts_and_decrypts_as_expected() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 59, "the committed file changed");
    for v in &vectors {
        let name = v["protocol_name"].as_str().unwrap();
        // One-way patterns (N, K, X, with or without a pre-shared key) send from the initiator
        // only; the others take turns.
        let pattern = name.split('_').nth(1).unwrap();
        let one_way = ["N", "K", "X"]
            .iter()
            .any(|p| pattern == *p || pattern.starts_with(&format!("{p}psk")));
        let mut handshake = Some((side(v, "init", true), side(v, "resp", false)));
        let mut transports: Option<(snow::TransportState, snow::TransportState)> = None;
        let (mut buf, mut out) = (vec![0u8; 65535], vec![0u8; 65535]);
        for (i, m) in v["messages"].as_array().unwrap().iter().enumerate() {
            let payload = bytes(m, "payload").unwrap();
            let expected = bytes(m, "ciphertext").unwrap();
            let from_init = one_way || i % 2 == 0;
            let (n, got) = match (&mut handshake, &mut transports) {
                (Some((init, resp)), _) => {
                    let (tx, rx) = if from_init { (init, resp) } else { (resp, init) };
                    let n = tx.write_message(&payload, &mut buf).unwrap();
                    (n, rx.read_message(&buf[..n], &mut out).unwrap())
                }
                (None, Some((init, resp))) => {
                    let (tx, rx) = if from_init { (init, resp) } else { (resp, init) };
                    let n = tx.write_message(&payload, &mut buf).unwrap();
                    (n, rx.read_message(&buf[..n], &mut out).unwrap())
                }
                (None, None) => unreachable!(),
            };
            assert_eq!(hex::encode(&buf[..n]), hex::encode(&expected), "{name} message {i}");
            assert_eq!(&out[..got], &payload[..], "{name} message {i}");
            if let Some((init, resp)) = handshake.take_if(|(init, resp)| {
                init.is_handshake_finished() && resp.is_handshake_finished()
            }) {
                let hash = bytes(v, "handshake_hash").unwrap();
                assert_eq!(init.get_handshake_hash(), &hash[..], "{name}");
                assert_eq!(resp.get_handshake_hash(), &hash[..], "{name}");
                transports = Some((
                    init.into_transport_mode().unwrap(),
                    resp.into_transport_mode().unwrap(),
                ));
            }
        }
        assert!(transports.is_some(), "{name}: the handshake never finished");
    }
}

/// A flipped byte anywhere in a message is refused, in the handshake and after it.
#[test]
fn a_tampered_message_is_refused() {
    let v = vectors()
        .into_iter()
        .find(|v| v["protocol_name"] == "Noise_KK_25519_AESGCM_SHA256")
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut out = vec![0u8; 1024];
    let mut init = side(&v, "init", true);
    let n = init.write_message(b"hello", &mut buf).unwrap();
    for at in 0..n {
        let mut resp = side(&v, "resp", false);
        let mut tampered = buf[..n].to_vec();
        tampered[at] ^= 1;
        assert!(resp.read_message(&tampered, &mut out).is_err(), "byte {at}");
    }
}
