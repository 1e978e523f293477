//! A hostile relay between a real host (`agent-host serve --relay`) and real `remote` devices:
//! it records every byte it routes, tampers with, replays, reorders and redirects frames,
//! injects frames of its own (plaintext envelopes, channel frames under keys of its own), forges
//! host events, and answers a pairing itself. It reads nothing: no command, file, path, output or
//! device name appears in what it saw. Nothing runs without a valid approval, no device accepts
//! a forged event, and every attempt that reaches the host is in its audit log.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::BufRead as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::hostile::{Hostile, Seen, fresh_stream};
use e2e::{Device, World, eventually, pending_ids, text};
use protocol::channel::{self, ChannelId, Frame};
use protocol::{HostEvent, Message, Pairing, Role, SealContext, SecretKey};

fn host_key(id: &str) -> [u8; 32] {
    *id.parse::<protocol::HostId>().unwrap().as_bytes()
}

fn device_key(device: &Device) -> [u8; 32] {
    let seed: [u8; 32] =
        std::fs::read(device.dir().join("device.key")).unwrap().try_into().unwrap();
    *SecretKey::from_seed(&seed).public_key().as_bytes()
}

/// The relay's own key: it can sign, but nobody paired it.
fn relay_key() -> SecretKey {
    SecretKey::from_seed(&[0x66; 32])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// An envelope signed by the relay's key; with `claim`, the sender field then says someone else.
fn forged(to: &[u8; 32], message: &Message, claim: Option<[u8; 32]>) -> Vec<u8> {
    let recipient = protocol::PublicKey::from_bytes(to).unwrap();
    let ctx = SealContext {
        recipient: &recipient,
        counter: 1_000,
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + 60_000,
    };
    let mut frame = protocol::seal(&relay_key(), &ctx, message).unwrap();
    if let Some(claim) = claim {
        frame[2..34].copy_from_slice(&claim);
    }
    frame
}

/// The channel frame a payload is (every payload the relay routes must be one).
fn frame_of(seen: &Seen) -> Frame<'_> {
    Frame::decode(&seen.payload).unwrap_or_else(|e| panic!("not a channel frame ({e}): {seen:?}"))
}

fn is_data(seen: &Seen) -> bool {
    matches!(frame_of(seen), Frame::Data { .. })
}

fn channel_of(seen: &Seen) -> Option<ChannelId> {
    match frame_of(seen) {
        Frame::Data { id, .. } | Frame::Hello { id, .. } | Frame::PairHello { id, .. } => Some(id),
        _ => None,
    }
}

fn refusals(world: &World) -> usize {
    world.audit().matches("refused a frame").count()
}

/// Keep every field bound: the host stops when `_host` is dropped.
struct Setup {
    relay: Hostile,
    world: World,
    _host: e2e::Host,
    host: [u8; 32],
    op: Device,
    appr: Device,
}

fn setup_with(op: &str, appr: &str) -> Setup {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let key = host_key(&host.id);
    let (op, appr) = (world.device(op), world.device(appr));
    world.pair(&op, "operator");
    world.pair(&appr, "approver");
    Setup { relay, world, _host: host, host: key, op, appr }
}

fn setup() -> Setup {
    setup_with("op", "appr")
}

/// A watching device (`remote --json watch`) and the host events it printed so far.
fn watch(device: &Device) -> (std::process::Child, Arc<Mutex<Vec<HostEvent>>>) {
    let mut child = device.spawn(&["--json", "watch"]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let into = events.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                into.lock().unwrap().push(event);
            }
        }
    });
    (child, events)
}

/// The sessions' output among what a watching device printed.
fn output_of(events: &Mutex<Vec<HostEvent>>) -> String {
    let events = events.lock().unwrap();
    let bytes: Vec<u8> = events
        .iter()
        .filter_map(|e| {
            if let HostEvent::Output { data, .. } = e { Some(data.0.clone()) } else { None }
        })
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `needle` as it could appear in what passed: its bytes, or inside base64 at any alignment
/// (file contents and output travel as base64 in the envelope's JSON).
fn forms_of(needle: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![needle.as_bytes().to_vec()];
    for pad in ["", "x", "xx"] {
        let encoded = base64_simd::STANDARD.encode_to_string(format!("{pad}{needle}"));
        // The characters that depend on the neighbours are left out.
        let inner = &encoded.as_bytes()[4..encoded.len() - 4];
        // Long enough not to turn up by chance in random bytes.
        if inner.len() >= 6 {
            forms.push(inner.to_vec());
        }
    }
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything a pairing, a request and its approval, a file written and read, and a session's
/// output put past the relay: channel frames, none of which holds a known plaintext, or an
/// envelope; a chunk's plaintext padded as the channel pads.
#[test]
fn the_relay_sees_channel_frames_only_and_no_plaintext() {
    let Setup { relay, world, op, appr, _host: _running, .. } =
        setup_with("orchid-phone-7c1", "tulip-tablet-93");

    // A request that runs unasked, with its result; one asked and approved.
    let out = op.run(&["run", "--", "printf", "cmd-marker-3c8e"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cmd-marker-3c8e"), "{}", text(&out));
    let run = op.spawn(&["run", "--", "touch", "touched-6a1"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    assert!(appr.run(&["approve", &id[..8]]).status.success());
    assert!(run.wait_with_output().unwrap().status.success());
    assert!(world.ws().join("touched-6a1").exists());

    // A file written (asked, approved) and one read.
    let write = {
        let op_dir = op.clone();
        std::thread::spawn(move || {
            op_dir.run_with_input(&["write", "plans-5b2.txt"], b"content-marker-51f3\n")
        })
    };
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    assert!(appr.run(&["approve", &id[..8]]).status.success());
    assert!(write.join().unwrap().status.success());
    std::fs::write(world.ws().join("ledger-8e4.txt"), "ledger-content-a9d7\n").unwrap();
    let read = op.run(&["read", "ledger-8e4.txt"]);
    assert!(
        String::from_utf8_lossy(&read.stdout).contains("ledger-content-a9d7"),
        "{}",
        text(&read)
    );

    // A session's output, watched.
    let (mut watcher, output) = watch(&appr);
    let jail: &[&str] = if e2e::sandbox_available() { &[] } else { &["--no-jail"] };
    let mut session = world.agent_host_child(
        &[&["run"], jail, &["--", "sh", "-c", "echo session-marker-77aa; sleep 30"]].concat(),
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            output_of(&output).contains("session-marker-77aa")
        }),
        "the watching device never saw the session's output"
    );
    let _ = session.kill();
    let _ = watcher.kill();
    let _ = (session.wait(), watcher.wait());

    // The workspace's path travels too (a device's status shows it).
    let status = op.run(&["status"]);
    let workspace = world.ws().display().to_string();
    assert!(String::from_utf8_lossy(&status.stdout).contains(&workspace), "{}", text(&status));

    let log = relay.log();
    assert!(log.len() > 20, "{} frames", log.len());
    let needles = [
        workspace.as_str(),
        "orchid-phone-7c1",
        "tulip-tablet-93",
        "cmd-marker-3c8e",
        "printf",
        "touched-6a1",
        "plans-5b2",
        "content-marker-51f3",
        "ledger-8e4",
        "ledger-content-a9d7",
        "session-marker-77aa",
        "sleep 30",
        "\"type\"",
    ];
    let forms: Vec<(&str, Vec<u8>)> =
        needles.iter().flat_map(|n| forms_of(n).into_iter().map(move |f| (*n, f))).collect();
    for seen in &log {
        let frame = frame_of(seen);
        for (needle, form) in &forms {
            assert!(!contains(&seen.payload, form), "the relay saw {needle:?} in {frame:?}");
        }
        if let Frame::Data { ciphertext, .. } = frame {
            let padded = ciphertext.len() - 16;
            assert_eq!(channel::size_class(padded), padded, "a chunk of {padded} bytes");
        }
    }
}

#[test]
fn tampered_replayed_and_injected_frames_make_the_host_do_nothing() {
    let Setup { relay, world, host, op, appr, _host: _running } = setup();
    let opk = device_key(&op);

    // Tampered: one byte of each of the operator's sealed chunks changed on the way.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let mut payload = seen.payload.clone();
        if seen.from == opk && is_data(seen) {
            let at = payload.len() - 20;
            payload[at] ^= 0x01;
        }
        vec![(seen.from, seen.to, payload)]
    })));
    let before = refusals(&world);
    let out = op.run(&["--timeout", "3s", "run", "--", "touch", "tampered"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(pending_ids(&world).is_empty() && !world.ws().join("tampered").exists());
    assert!(
        eventually(Duration::from_secs(5), || refusals(&world) > before),
        "the tampered frame is not in the audit log:\n{}",
        world.audit()
    );
    assert!(world.audit().contains("end-to-end channel refused"), "{}", world.audit());
    relay.set_rule(None);
    relay.clear_log();

    // Replayed: every frame of a request approved and run once, and of its approval, again.
    let run = op.spawn(&["run", "--", "sh", "-c", "echo x >> count"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    let out = appr.run(&["approve", &id[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(run.wait_with_output().unwrap().status.success());
    let replayed: Vec<Seen> =
        relay.log().into_iter().filter(|s| s.to == host && is_data(s)).collect();
    assert!(replayed.len() >= 2);
    let before = refusals(&world);
    for seen in &replayed {
        relay.inject(seen.from, host, &seen.payload);
    }
    assert!(
        eventually(Duration::from_secs(10), || refusals(&world) > before),
        "the replays are refused and audited:\n{}",
        world.audit()
    );
    assert!(world.audit().contains("came again"), "{}", world.audit());
    assert!(pending_ids(&world).is_empty());
    assert_eq!(std::fs::read_to_string(world.ws().join("count")).unwrap(), "x\n", "ran once");

    // Injected: frames of the relay's own making.
    let action = protocol::Action::Run {
        argv: vec!["touch".into(), "injected".into()],
        cwd: ".".into(),
        env: Default::default(),
    };
    let request =
        Message::Request(protocol::Request::Action { id: protocol::RequestId([9; 16]), action });
    let before = refusals(&world);
    // A signed envelope in the clear, as if from the operator: not a channel frame.
    relay.inject(opk, host, &fresh_stream(&forged(&host, &request, Some(opk))));
    // A channel hello under the relay's own key: not a paired device.
    let rk = relay_key().public_key();
    let (relay_static, _) = channel::generate_static().unwrap();
    let keys = |device| channel::ChannelKeys {
        local_static: relay_static.clone(),
        remote_static: [9; 32],
        host: protocol::PublicKey::from_bytes(&host).unwrap(),
        device,
    };
    let (_, hello) = channel::initiate(&keys(rk), ChannelId([5; 8]), 1, 1 << 20).unwrap();
    relay.inject(*rk.as_bytes(), host, &hello);
    // A hello delivered as the operator's, made with the relay's own static key.
    let op_public = protocol::PublicKey::from_bytes(&opk).unwrap();
    let (_, hello) = channel::initiate(&keys(op_public), ChannelId([6; 8]), 1, 1 << 20).unwrap();
    relay.inject(opk, host, &hello);
    assert!(
        eventually(Duration::from_secs(10), || refusals(&world) >= before + 3),
        "{}",
        world.audit()
    );
    let audit = world.audit();
    assert!(audit.contains("not registered"), "{audit}");
    assert!(audit.contains("handshake failed"), "{audit}");
    assert!(pending_ids(&world).is_empty() && !world.ws().join("injected").exists());
}

#[test]
fn reordered_frames_still_need_an_approval_and_bounce_when_replayed() {
    let Setup { relay, world, host, op, _host: _running, .. } = setup();
    let opk = device_key(&op);
    // The relay holds back everything the operator seals (its handshakes pass)…
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        if seen.from == opk && is_data(seen) {
            vec![]
        } else {
            vec![(seen.from, seen.to, seen.payload.clone())]
        }
    })));
    for name in ["first", "second"] {
        let out = op.run(&["--timeout", "2s", "run", "--no-wait", "--", "touch", name]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    relay.set_rule(None);
    // …then delivers the two commands' frames in the reverse order (each command's own in
    // order: within one channel, an older frame after a newer one is a replay).
    let held: Vec<Seen> = relay.log().into_iter().filter(|s| s.from == opk && is_data(s)).collect();
    let mut channels: Vec<ChannelId> = Vec::new();
    for seen in &held {
        let id = channel_of(seen).unwrap();
        if !channels.contains(&id) {
            channels.push(id);
        }
    }
    assert!(channels.len() >= 2, "a channel (or more) per command");
    for id in channels.iter().rev() {
        for seen in held.iter().filter(|s| channel_of(s) == Some(*id)) {
            relay.inject(opk, host, &seen.payload);
        }
    }
    assert!(eventually(Duration::from_secs(10), || pending_ids(&world).len() == 2));
    assert!(!world.ws().join("first").exists() && !world.ws().join("second").exists());
    let before = refusals(&world);
    for seen in &held {
        relay.inject(opk, host, &seen.payload);
    }
    assert!(eventually(Duration::from_secs(10), || refusals(&world) > before));
    assert_eq!(pending_ids(&world).len(), 2, "a replay makes no new pending action");
}

#[test]
fn frames_redirected_to_another_host_are_refused_there() {
    let Setup { relay, world, host, op, _host: _running, .. } = setup();
    let opk = device_key(&op);
    let other_world = World::new();
    let other = other_world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let other_key = host_key(&other.id);
    assert!(eventually(Duration::from_secs(10), || relay.connected(&other_key)));
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let to = if seen.from == opk && seen.to == host { other_key } else { seen.to };
        vec![(seen.from, to, seen.payload.clone())]
    })));
    let out = op.run(&["--timeout", "3s", "run", "--", "touch", "redirected"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        eventually(Duration::from_secs(10), || refusals(&other_world) >= 1),
        "{}",
        other_world.audit()
    );
    assert!(other_world.audit().contains("not registered"), "{}", other_world.audit());
    assert!(pending_ids(&world).is_empty() && pending_ids(&other_world).is_empty());
    assert!(!world.ws().join("redirected").exists());
}

#[test]
fn a_device_accepts_no_forged_host_event() {
    let Setup { relay, world, host, op, _host: _running, .. } = setup();
    let opk = device_key(&op);
    // For every frame the operator sends, the relay hands it forged host events: envelopes in
    // the clear (self-signed, and claiming the host's key) and a chunk under the operator's
    // channel that the relay cannot have sealed. A watching device prints every host event it
    // takes: the forged ones must not be among them, the real ones must.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let mut out = vec![(seen.from, seen.to, seen.payload.clone())];
        if seen.from == opk {
            let event = Message::Event(HostEvent::Error {
                request: None,
                code: protocol::ErrorCode::Forbidden,
                message: "forged-marker".into(),
            });
            for claim in [None, Some(host)] {
                out.push((host, opk, fresh_stream(&forged(&opk, &event, claim))));
            }
            if let Some(id) = channel_of(seen) {
                let chunk = Frame::Data { id, nonce: 1 << 40, ciphertext: &[0x42; 272] };
                out.push((host, opk, chunk.encode()));
            }
        }
        out
    })));
    let (mut watcher, events) = watch(&op);
    let printed = || format!("{:?}", events.lock().unwrap());
    // A real event: an action asked at the host's terminal reaches the watching device.
    let mut asked = world.agent_host_child(&["exec", "--", "touch", "real-marker"]);
    let seen_real = eventually(Duration::from_secs(20), || printed().contains("real-marker"));
    let _ = (asked.kill(), watcher.kill());
    let _ = (asked.wait(), watcher.wait());
    let printed = printed();
    assert!(seen_real, "the watching device saw no real event: {printed}");
    assert!(!printed.contains("forged-marker"), "a forged event was taken: {printed}");
    assert!(relay.log().iter().filter(|s| s.from == opk).count() >= 2, "the operator spoke");
}

#[test]
fn a_relay_cannot_answer_a_pairing_itself_nor_open_one() {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let hk = host_key(&host.id);
    let before = refusals(&world);
    // The relay swallows every pairing hello and answers itself: a handshake answer of its own
    // making, and an "accepted" in the clear. With the token it saw (never the secret), it
    // tries to open a pairing channel of its own while the offer is open.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let Frame::PairHello { id, token, .. } = frame_of(seen) else {
            return vec![(seen.from, seen.to, seen.payload.clone())];
        };
        let accepted = Message::Pairing(Pairing::Accepted {
            role: Role::Operator,
            host_name: "definitely the host".into(),
            channel_key: Some(protocol::ChannelKey([7; 32])),
        });
        let keys = channel::PairingKeys {
            psk: [0; 32].into(),
            token,
            host: protocol::PublicKey::from_bytes(&hk).unwrap(),
            device: protocol::PublicKey::from_bytes(&seen.from).unwrap(),
        };
        let (_, own) = channel::initiate_pairing(&keys, ChannelId([8; 8]), 1, 1 << 20).unwrap();
        vec![
            (hk, seen.from, Frame::PairAnswer { id, message: &[0x24; 48] }.encode()),
            (hk, seen.from, fresh_stream(&forged(&seen.from, &accepted, Some(hk)))),
            (seen.from, hk, own),
        ]
    })));
    let offer = world.offer(&["--yes", "--expires", "5s"]);
    let device = world.device("victim");
    let out = device.run(&["--timeout", "1s", "pair", &offer.link]);
    assert!(!out.status.success(), "a relay-made answer paired the device: {}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("definitely the host"));
    let status = device.run(&["status"]);
    assert_eq!(status.status.code(), Some(2), "the profile is not paired: {}", text(&status));
    assert!(eventually(Duration::from_secs(10), || refusals(&world) > before), "{}", world.audit());
    assert!(world.audit().contains("handshake failed"), "{}", world.audit());
    let listed = world.agent_host(&["devices", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}
