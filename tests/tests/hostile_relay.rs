//! A hostile relay between a real host (`agent-host serve --relay`) and real `remote` devices:
//! it tampers with, replays, reorders and redirects frames, injects frames of its own (unsigned,
//! self-signed, claiming to be someone else), forges host events, and answers a pairing itself.
//! Nothing runs without a valid approval, no device accepts a forged event, and every attempt
//! that reaches the host is in its audit log.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use e2e::hostile::{Hostile, Seen, envelope_of, fresh_stream};
use e2e::{Device, World, eventually, pending_ids, text};
use protocol::{
    Blob, HostEvent, Message, MessageKind, Pairing, Role, SealContext, Sealed, SecretKey,
};

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

/// A frame signed by the relay's key; with `claim`, the sender field then says someone else.
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

fn kind(envelope: &[u8]) -> Option<MessageKind> {
    Sealed::decode(envelope).ok().map(|s| s.unverified_header().kind)
}

/// The JSON payload of an envelope (the relay can read it: it is signed, not encrypted).
fn payload(envelope: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&envelope[protocol::envelope::HEADER_LEN..envelope.len() - 64]).unwrap()
}

/// The distinct envelopes of a kind that `from` sent (the resume layer sends some twice).
fn envelopes(log: &[Seen], from: [u8; 32], of: MessageKind) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for envelope in log.iter().filter(|s| s.from == from).filter_map(|s| envelope_of(&s.payload)) {
        if kind(envelope) == Some(of) && !out.iter().any(|e| e == envelope) {
            out.push(envelope.to_vec());
        }
    }
    out
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

fn setup() -> Setup {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let key = host_key(&host.id);
    let (op, appr) = (world.device("op"), world.device("appr"));
    world.pair(&op, "operator");
    world.pair(&appr, "approver");
    Setup { relay, world, _host: host, host: key, op, appr }
}

#[test]
fn tampered_replayed_and_injected_frames_make_the_host_do_nothing() {
    let Setup { relay, world, host, op, appr, _host: _running } = setup();
    let opk = device_key(&op);

    // Tampered: one byte of the request's payload changed on the way.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let mut payload = seen.payload.clone();
        if seen.from == opk && envelope_of(&payload).is_some() {
            let at = payload.len() - 70; // inside the JSON, before the signature
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
    assert!(world.audit().contains("signature"), "{}", world.audit());
    relay.set_rule(None);
    // (The relay could still deliver the untouched original later: a delay, which only ever
    // yields a pending action. It is not replayed here; only frames from now on are.)
    relay.clear_log();

    // Replayed: a request approved and run once is sent again, and so is its approval.
    let run = op.spawn(&["run", "--", "sh", "-c", "echo x >> count"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    let out = appr.run(&["approve", &id[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(run.wait_with_output().unwrap().status.success());
    let log = relay.log();
    let requests = envelopes(&log, opk, MessageKind::Request);
    let decisions = envelopes(&log, device_key(&appr), MessageKind::Decision);
    assert!(!requests.is_empty() && !decisions.is_empty());
    let before = refusals(&world);
    for request in &requests {
        relay.inject(opk, host, &fresh_stream(request));
    }
    for decision in &decisions {
        relay.inject(device_key(&appr), host, &fresh_stream(decision));
    }
    assert!(
        eventually(Duration::from_secs(10), || refusals(&world)
            >= before + requests.len() + decisions.len()),
        "every replay is refused and audited:\n{}",
        world.audit()
    );
    assert!(world.audit().contains("already seen") || world.audit().contains("stale"));
    assert!(pending_ids(&world).is_empty());
    assert_eq!(std::fs::read_to_string(world.ws().join("count")).unwrap(), "x\n", "ran once");

    // Injected: frames of the relay's own making.
    let rk = *relay_key().public_key().as_bytes();
    let action = protocol::Action::Run {
        argv: vec!["touch".into(), "injected".into()],
        cwd: ".".into(),
        env: Default::default(),
    };
    let request =
        Message::Request(protocol::Request::Action { id: protocol::RequestId([9; 16]), action });
    let before = refusals(&world);
    // Self-signed, as itself: not a paired device.
    relay.inject(rk, host, &fresh_stream(&forged(&host, &request, None)));
    // Self-signed, delivered as if from the operator: not signed by the connection's key.
    relay.inject(opk, host, &fresh_stream(&forged(&host, &request, None)));
    // Claiming to be the operator in the signed header: the signature does not verify.
    relay.inject(opk, host, &fresh_stream(&forged(&host, &request, Some(opk))));
    // Not an envelope at all.
    relay.inject(opk, host, &fresh_stream(b"\x01unsigned garbage"));
    assert!(
        eventually(Duration::from_secs(10), || refusals(&world) >= before + 4),
        "{}",
        world.audit()
    );
    let audit = world.audit();
    assert!(audit.contains("not a paired device"), "{audit}");
    assert!(audit.contains("another key than the connection"), "{audit}");
    assert!(pending_ids(&world).is_empty() && !world.ws().join("injected").exists());
}

#[test]
fn reordered_frames_still_need_an_approval_and_bounce_when_replayed() {
    let Setup { relay, world, host, op, _host: _running, .. } = setup();
    let opk = device_key(&op);
    // The relay holds back everything the operator sends…
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        if seen.from == opk { vec![] } else { vec![(seen.from, seen.to, seen.payload.clone())] }
    })));
    for name in ["first", "second"] {
        let out = op.run(&["--timeout", "2s", "run", "--no-wait", "--", "touch", name]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    relay.set_rule(None);
    let requests = envelopes(&relay.log(), opk, MessageKind::Request);
    assert_eq!(requests.len(), 2);
    // …then delivers it in the reverse order: each is judged, neither runs unapproved.
    for request in requests.iter().rev() {
        relay.inject(opk, host, &fresh_stream(request));
    }
    assert!(eventually(Duration::from_secs(10), || pending_ids(&world).len() == 2));
    assert!(!world.ws().join("first").exists() && !world.ws().join("second").exists());
    let before = refusals(&world);
    for request in &requests {
        relay.inject(opk, host, &fresh_stream(request));
    }
    assert!(eventually(Duration::from_secs(10), || refusals(&world) >= before + 2));
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
    assert!(other_world.audit().contains("not a paired device"));
    assert!(pending_ids(&world).is_empty() && pending_ids(&other_world).is_empty());
    assert!(!world.ws().join("redirected").exists());
}

#[test]
fn a_device_accepts_no_forged_host_event() {
    let Setup { relay, world: _world, host, op, _host: _running, .. } = setup();
    let opk = device_key(&op);
    // The host's real answers are dropped; forged ones take their place, one self-signed and
    // one that claims the host's key.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        if seen.from == host {
            return vec![];
        }
        let mut out = vec![(seen.from, seen.to, seen.payload.clone())];
        if let Some(envelope) = envelope_of(&seen.payload)
            && kind(envelope) == Some(MessageKind::Request)
            && let Some(id) = payload(envelope)["id"].as_str()
        {
            let result = Message::Event(HostEvent::ActionResult {
                request: id.parse().unwrap(),
                exit_code: Some(0),
                output: Blob(b"forged\n".to_vec()),
                truncated: false,
            });
            for claim in [None, Some(host)] {
                out.push((host, opk, fresh_stream(&forged(&opk, &result, claim))));
            }
        }
        out
    })));
    let out = op.run(&["--timeout", "3s", "run", "--", "printf", "real"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("forged"), "{}", text(&out));
}

#[test]
fn a_relay_cannot_answer_a_pairing_itself() {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let hk = host_key(&host.id);
    // The relay swallows every hello and answers "accepted" itself.
    relay.set_rule(Some(Box::new(move |seen: &Seen| {
        let Some(envelope) = envelope_of(&seen.payload) else { return vec![] };
        if kind(envelope) != Some(MessageKind::Pairing) {
            return vec![(seen.from, seen.to, seen.payload.clone())];
        }
        let accepted = Message::Pairing(Pairing::Accepted {
            role: Role::Operator,
            host_name: "definitely the host".into(),
            channel_key: None,
        });
        vec![
            (hk, seen.from, fresh_stream(&forged(&seen.from, &accepted, Some(hk)))),
            (hk, seen.from, fresh_stream(&forged(&seen.from, &accepted, None))),
        ]
    })));
    let offer = world.offer(&["--yes", "--expires", "3s"]);
    let device = world.device("victim");
    let out = device.run(&["--timeout", "1s", "pair", &offer.link]);
    assert!(!out.status.success(), "a relay-made answer paired the device: {}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("definitely the host"));
    let status = device.run(&["status"]);
    assert_eq!(status.status.code(), Some(2), "the profile is not paired: {}", text(&status));
    let listed = world.agent_host(&["devices", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}
