//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`: real frames, lines
//! and files as the bridge writes them, so each target starts from inputs that reach deep.
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`; the output is committed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use agent_host::audit::{AuditLog, Event};
use agent_host::devices::{Device, Registry};
use agent_host::local_api::{ApiRequest, DeviceChange, PairAnswer};
use protocol::relay::{FrameKind, FromRelay, Side, ToRelay};
use protocol::resume::Frame;
use protocol::{DeviceId, HostId, ReplayWindow, Role, SecretKey};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).unwrap();
}

fn main() {
    let host = SecretKey::from_seed(&[0x22; 32]);
    let device = SecretKey::from_seed(&[0x11; 32]);
    let (host_key, device_key) = (*host.public_key().as_bytes(), *device.public_key().as_bytes());

    // Resume: runs of payloads, each behind its length.
    let epoch = 1_767_225_600_000_000_123;
    let runs: [(&str, Vec<Frame<'_>>); 3] = [
        (
            "in_order",
            (1..=3).map(|seq| Frame::Data { epoch, seq, base: 1, message: b"m" }).collect(),
        ),
        (
            "duplicate_gap_ack",
            vec![
                Frame::Data { epoch, seq: 2, base: 1, message: b"two" },
                Frame::Data { epoch, seq: 2, base: 1, message: b"two" },
                Frame::Data { epoch, seq: 4, base: 3, message: b"four" },
                Frame::Ack { epoch: 7, seq: 1 },
                Frame::Data { epoch: epoch + 1, seq: 1, base: 1, message: b"new" },
            ],
        ),
        ("ack_only", vec![Frame::Ack { epoch: 7, seq: 3 }]),
    ];
    for (name, frames) in runs {
        let mut bytes = Vec::new();
        for frame in frames {
            let payload = frame.encode();
            bytes.push(u8::try_from(payload.len()).unwrap());
            bytes.extend(payload);
        }
        write("resume_frames", name, &bytes);
    }

    // The channel: a handshake, payloads of one and of two chunks, a replay, a tampered chunk,
    // the host's notice; each frame behind its two-byte length.
    let (mut at_device, _, hello, answer) = protocol_fuzz::fixed_channel();
    let framed = |frames: &[Vec<u8>]| {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&u16::try_from(f.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    };
    let small = at_device.seal(b"a resume payload").unwrap();
    let big = at_device.seal(&vec![7; 70_000]).unwrap();
    let mut tampered = small[0].clone();
    let at = tampered.len() - 1;
    tampered[at] ^= 1;
    let unknown = protocol::channel::Frame::Unknown { id: protocol::channel::ChannelId::ANY };
    write("channel_frames", "handshake", &framed(&[hello, answer, unknown.encode()]));
    write(
        "channel_frames",
        "payloads",
        &framed(&[small[0].clone(), big[0].clone(), big[1].clone()]),
    );
    write(
        "channel_frames",
        "replay_and_tamper",
        &framed(&[tampered, small[0].clone(), small[0].clone()]),
    );

    // The relay: data frames, and control messages both ways.
    let (host_route, device_route) = (protocol::RelayKey(host_key), protocol::RelayKey(device_key));
    let route = |kind, to, payload: &[u8]| protocol::relay::data_frame(kind, to, payload);
    write("relay_frames", "data_to", &route(FrameKind::To, &host_route, b"x"));
    write(
        "relay_frames",
        "data_broadcast",
        &route(FrameKind::Broadcast, &protocol::RelayKey([0; 32]), b""),
    );
    let nonce = [0x44; 32];
    let hello = protocol::relay::hello(&device, Side::Device, &nonce, &[0x55; 32]);
    let offer = protocol::PairingToken([0x33; 32]);
    let register = protocol::relay::register(&host, 3, &[device_route], &[offer]);
    let knock = ToRelay::Knock { host: hex::encode(host_key), token: hex::encode([0x33; 32]) };
    for (name, message) in [("hello", hello), ("register", register), ("knock", knock)] {
        write("relay_frames", name, serde_json::to_string(&message).unwrap().as_bytes());
    }
    let from_relay = [
        ("challenge", FromRelay::Challenge { nonce: hex::encode(nonce) }),
        ("welcome", FromRelay::Welcome),
        ("presence", FromRelay::Presence { device: hex::encode(device_key), online: true }),
        ("host_presence", FromRelay::HostPresence { host: hex::encode(host_key), online: false }),
        ("undeliverable", FromRelay::Undeliverable { peer: hex::encode(host_key), offline: true }),
        ("refused", FromRelay::Refused { reason: "no".into() }),
    ];
    for (name, message) in from_relay {
        write("relay_frames", name, serde_json::to_string(&message).unwrap().as_bytes());
    }

    // The local API: one request per file, and a session's lines.
    let id = protocol::RequestId([7; 16]);
    let action = protocol::Action::Run {
        argv: vec!["cargo".into(), "test".into()],
        cwd: ".".into(),
        env: Default::default(),
    };
    let requests = [
        ("exec", ApiRequest::Exec { argv: vec!["ls".into()], cwd: Some("src".into()), wait: true }),
        (
            "judge",
            ApiRequest::Judge {
                action: action.clone(),
                requester: "hook claude-code".into(),
                cwd: "/w".into(),
            },
        ),
        ("run_allowed", ApiRequest::RunAllowed { id, action: action.clone() }),
        (
            "decide",
            ApiRequest::Decide {
                id,
                action_hash: protocol::action_hash(&action),
                verdict: protocol::Verdict::Approve,
                note: Some("use cargo nextest instead".into()),
            },
        ),
        (
            "pair",
            ApiRequest::Pair {
                role: Role::Approver,
                name: Some("phone".into()),
                expires_secs: 600,
                yes: false,
            },
        ),
        (
            "device",
            ApiRequest::Device {
                id: "dev1".into(),
                change: DeviceChange::Rename { name: "x".into() },
            },
        ),
        (
            "session",
            ApiRequest::Session {
                command: vec!["claude".into()],
                kind: protocol::SessionKind::Agent,
                size: Some(protocol::TermSize { cols: 100, rows: 30 }),
            },
        ),
        ("status", ApiRequest::Status),
    ];
    for (name, request) in requests {
        write("local_api_lines", name, &serde_json::to_vec(&request).unwrap());
    }
    let session = [
        serde_json::json!({"op": "output", "data": "aGk="}),
        serde_json::json!({"op": "resized", "size": {"cols": 80, "rows": 24}}),
        serde_json::json!({"op": "ended", "exit_code": 0}),
        serde_json::to_value(PairAnswer { accept: true }).unwrap(),
    ];
    let lines: Vec<String> = session.iter().map(ToString::to_string).collect();
    write("local_api_lines", "session_lines", lines.join("\n").as_bytes());

    // Pairing links.
    let link = protocol::PairingLink {
        relay: "relay.example.com:8443".into(),
        page: None,
        host: HostId::new(host.public_key()),
        secret: [0x33; 32],
        expires_at_ms: 1_767_225_600_000,
        cert_sha256: Some([0x55; 32]),
    };
    write("pairing_link", "with_cert", link.to_string().as_bytes());
    let plain = protocol::PairingLink { cert_sha256: None, ..link };
    write("pairing_link", "without_cert", plain.to_string().as_bytes());
    let elsewhere = protocol::PairingLink { page: Some("ui.example.com".into()), ..plain };
    write("pairing_link", "page_elsewhere", elsewhere.to_string().as_bytes());

    // The audit log as a host writes it.
    let scratch = tempdir();
    let log_path = scratch.join("audit.log");
    {
        let log = AuditLog::open(&log_path).unwrap();
        let events = [
            Event::Request {
                request: hex::encode([7u8; 16]),
                actor: DeviceId::new(device.public_key()).to_string(),
                action: serde_json::to_value(&action).unwrap(),
                action_hash: protocol::action_hash(&action).to_string(),
                decision: "ask".into(),
                reason: "no rule allows it".into(),
                rule: None,
            },
            Event::Approval {
                request: hex::encode([7u8; 16]),
                verdict: "approve".into(),
                by: "local:terminal".into(),
                action_hash: protocol::action_hash(&action).to_string(),
                note: Some("use cargo nextest instead".into()),
            },
            Event::Start { request: hex::encode([7u8; 16]) },
            Event::Result {
                request: hex::encode([7u8; 16]),
                exit_code: Some(0),
                summary: "ok".into(),
            },
            Event::Refused { claimed_sender: "dev1x".into(), reason: "not a paired device".into() },
        ];
        for (i, event) in (1u64..).zip(events) {
            log.append(1_767_225_600_000 + i, event).unwrap();
        }
    }
    let log = std::fs::read(&log_path).unwrap();
    write("audit_log", "five_records", &log);
    write("audit_log", "torn_last_line", &log[..log.len() - 7]);

    // The device registry's files.
    let state = scratch.join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let mut registry = Registry::load(&state).unwrap();
        let id = DeviceId::new(device.public_key());
        registry
            .add(Device {
                id,
                name: "phone".into(),
                role: Role::Operator,
                paired_at_ms: 5,
                channel_key: Some(protocol::ChannelKey([0x66; 32])),
                push: None,
            })
            .unwrap();
        registry.next_tx(&id).unwrap();
        let mut window = ReplayWindow::restore(registry.rx(&id));
        for counter in [1, 2, 5] {
            window.commit(counter).unwrap();
            registry.accepted(&id, window.export(), counter).unwrap();
        }
    }
    let read = |name: &str| std::fs::read(state.join(name)).unwrap_or_default();
    let joined =
        [read("devices.json"), read("counters.json"), read("counters.journal")].join(&0xffu8);
    write("device_state", "one_device", &joined);

    // Settings files.
    let settings = [
        (
            "rules",
            serde_json::json!({
                "permissions": {
                    "allow": ["Bash(cargo test:*)", "Read(./src/**)", "Edit(/docs/**)", "WebFetch(domain:example.com)"],
                    "ask": ["Bash(git push:*)"],
                    "deny": ["Read(./.env)", "Bash(rm -rf:*)", "mcp__server__tool"],
                    "defaultMode": "acceptEdits",
                    "additionalDirectories": ["../other"]
                }
            }),
        ),
        (
            "sandbox",
            serde_json::json!({
                "sandbox": {
                    "path": ["/usr/bin", "~/.cargo/bin"],
                    "env": ["RUSTFLAGS"],
                    "hide": ["~/.secret"],
                    "writable": ["~/.cache/sccache"],
                    "home": "toolchains",
                    "show": ["~/.gitconfig"]
                }
            }),
        ),
    ];
    for (name, value) in settings {
        write("settings", name, serde_json::to_string_pretty(&value).unwrap().as_bytes());
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agent-bridge-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
