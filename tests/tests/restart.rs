//! What survives a host restart, and approvals that name the wrong action.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use e2e::hostile::{Hostile, envelope_of, fresh_stream};
use e2e::{Device, World, eventually, pending_ids, text};
use protocol::{Decision, ErrorCode, HostEvent, Message, Verdict};

fn device_key(device: &Device) -> [u8; 32] {
    let seed: [u8; 32] =
        std::fs::read(device.dir().join("device.key")).unwrap().try_into().unwrap();
    *protocol::SecretKey::from_seed(&seed).public_key().as_bytes()
}

/// After a restart, the device's old frames still bounce (its counters were kept), pending
/// actions are gone (a restart denies them: they lapse unanswered), and the device goes on
/// working with the restarted host.
#[test]
fn a_restarted_host_still_refuses_old_frames_and_drops_pending_actions() {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let host_key = *host.id.parse::<protocol::HostId>().unwrap().as_bytes();
    let op = world.device("op");
    world.pair(&op, "operator");
    let out = op.run(&["run", "--", "printf", "before"]);
    assert_eq!(out.stdout, b"before", "{}", text(&out));
    let mut waiting = op.spawn(&["run", "--", "touch", "never"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let old: Vec<Vec<u8>> = relay
        .log()
        .iter()
        .filter(|s| s.from == device_key(&op))
        .filter_map(|s| envelope_of(&s.payload).map(<[u8]>::to_vec))
        .collect();
    assert!(!old.is_empty());

    host.stop();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    assert!(eventually(Duration::from_secs(10), || relay.connected(&host_key)));
    assert!(pending_ids(&world).is_empty(), "pending actions do not survive a restart");
    let refused_before = world.audit().matches("refused a frame").count();
    for envelope in &old {
        relay.inject(device_key(&op), host_key, &fresh_stream(envelope));
    }
    assert!(
        eventually(Duration::from_secs(10), || world.audit().matches("refused a frame").count()
            >= refused_before + old.len()),
        "{}",
        world.audit()
    );
    assert!(pending_ids(&world).is_empty() && !world.ws().join("never").exists());
    let _ = waiting.kill();
    let _ = waiting.wait();

    let out = op.run(&["run", "--", "printf", "after"]);
    assert_eq!(out.stdout, b"after", "{}", text(&out));
    drop(host);
}

/// An approval names the hash of the action it approves: one for another action is refused,
/// and the action stays pending until a right one comes.
#[test]
fn an_approval_for_another_action_hash_is_refused() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let (op, approver) = (world.device("op"), world.device("approver"));
    world.pair(&op, "operator");
    world.pair(&approver, "approver");
    let run = op.spawn(&["run", "--", "touch", "approved-file"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id: protocol::RequestId = pending_ids(&world)[0].parse().unwrap();

    // The approver's own key and profile, through the device library the `remote` CLI uses.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = runtime.block_on(async {
        let profile = remote::profile::Profile::open_in(&approver.home, &approver.profile).unwrap();
        let (_, mut session) = remote::session::Session::open(&profile).unwrap();
        let other = protocol::Action::Run {
            argv: vec!["touch".into(), "something-else".into()],
            cwd: ".".into(),
            env: Default::default(),
        };
        let decision = Decision {
            request: id,
            action_hash: protocol::action_hash(&other),
            verdict: Verdict::Approve,
        };
        session.send(&Message::Decision(decision)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let HostEvent::Error { request: Some(r), code, .. } =
                session.next_event(deadline).await.unwrap()
                && r == id
            {
                return code;
            }
        }
    });
    assert_eq!(answer, ErrorCode::Conflict);
    assert_eq!(pending_ids(&world), vec![id.to_string()], "still pending");
    assert!(!world.ws().join("approved-file").exists());
    assert!(world.audit().contains("another action"), "{}", world.audit());

    // The right approval still works.
    let out = approver.run(&["approve", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(run.wait_with_output().unwrap().status.success());
    assert!(world.ws().join("approved-file").exists());
}

/// The counter lines of the last few messages are synced in the background, so a power loss
/// may take them; the audit log, synced before an action starts, then still keeps the action
/// from running twice: the restarted host refuses a request that it recorded before.
#[test]
fn a_request_that_ran_is_refused_after_a_restart_that_lost_its_counters() {
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let host_id: protocol::HostId = host.id.parse().unwrap();
    let host_key = *host_id.as_bytes();
    let op = world.device("op");
    world.pair(&op, "operator");
    let out = op.run(&["run", "--", "printf", "once"]);
    assert_eq!(out.stdout, b"once", "{}", text(&out));

    // The request's frame, as the relay saw it.
    let op_key = protocol::PublicKey::from_bytes(&device_key(&op)).unwrap();
    let me = host_id.key();
    let now = protocol_now_ms();
    let (request, frame) = relay
        .log()
        .iter()
        .filter(|s| s.from == device_key(&op))
        .filter_map(|s| envelope_of(&s.payload).map(<[u8]>::to_vec))
        .find_map(|envelope| {
            let sealed = protocol::Sealed::decode(&envelope).ok()?;
            let ctx = protocol::VerifyContext::new(&me, now);
            let verified = sealed.verify(&op_key, &ctx, &mut protocol::ReplayWindow::new()).ok()?;
            match verified.into_parts().1 {
                Message::Request(protocol::Request::Action { id, action })
                    if matches!(&action, protocol::Action::Run { argv, .. } if argv[1] == "once") =>
                {
                    Some((id, envelope))
                }
                _ => None,
            }
        })
        .expect("the request went through the relay");

    // The host stops, and every counter line since pairing is lost, as if the power went.
    host.stop();
    let state = world.home().join("state");
    let _ = std::fs::remove_file(state.join("counters.journal"));
    let path = state.join("counters.json");
    let mut counters: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for device in counters["devices"].as_object_mut().unwrap().values_mut() {
        device["rx"] = serde_json::json!({ "highest": 0, "seen": 0 });
    }
    std::fs::write(&path, serde_json::to_vec(&counters).unwrap()).unwrap();

    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    assert!(eventually(Duration::from_secs(10), || relay.connected(&host_key)));
    relay.inject(device_key(&op), host_key, &fresh_stream(&frame));
    assert!(
        eventually(Duration::from_secs(10), || world
            .audit()
            .contains("made before the host restarted")),
        "{}",
        world.audit()
    );
    let started = format!("request {request}: started");
    assert_eq!(world.audit().matches(&started).count(), 1, "{}", world.audit());
    drop(host);
}

fn protocol_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
