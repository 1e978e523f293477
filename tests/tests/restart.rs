//! What survives a host restart, and approvals that name the wrong action.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use e2e::hostile::Hostile;
use e2e::{Device, World, eventually, pending_ids, text};
use protocol::{Decision, ErrorCode, HostEvent, Message, Verdict};

/// A device's own process, run by the test through the device library the `remote` CLI uses,
/// so that it can send a frame it sealed before again (the relay cannot: every frame is in an
/// end-to-end channel that a new connection opens anew).
struct Process {
    runtime: tokio::runtime::Runtime,
    session: remote::session::Session,
}

impl Process {
    fn open(device: &Device) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let profile = remote::profile::Profile::open_in(&device.home, &device.profile).unwrap();
        let (_, session) = {
            let _in = runtime.enter();
            remote::session::Session::open(&profile).unwrap()
        };
        Self { runtime, session }
    }

    fn run(&mut self, argv: &[&str]) -> (protocol::RequestId, Vec<u8>) {
        let id = protocol::RequestId(rand_id());
        let action = protocol::Action::Run {
            argv: argv.iter().map(|a| (*a).into()).collect(),
            cwd: ".".into(),
            env: Default::default(),
        };
        let _in = self.runtime.enter();
        let frame =
            self.session.send(&Message::Request(protocol::Request::Action { id, action })).unwrap();
        (id, frame)
    }

    fn again(&mut self, frame: &[u8]) {
        let _in = self.runtime.enter();
        self.session.send_frame(frame.to_vec()).unwrap();
    }

    /// Waits for the result of `id`.
    fn result(&mut self, id: protocol::RequestId) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        self.runtime.block_on(async {
            loop {
                if let HostEvent::ActionResult { request, output, .. } =
                    self.session.next_event(deadline).await.unwrap()
                    && request == id
                {
                    return output.0;
                }
            }
        })
    }
}

fn rand_id() -> [u8; 16] {
    let mut id = [0; 16];
    getrandom::fill(&mut id).unwrap();
    id
}

/// After a restart, a device's old frames still bounce (its counters were kept), pending
/// actions are gone (a restart denies them: they lapse unanswered), and the device goes on
/// working with the restarted host.
#[test]
fn a_restarted_host_still_refuses_old_frames_and_drops_pending_actions() {
    // A relay apart from the host, so that the host restarts behind the same address.
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let op = world.device("op");
    world.pair(&op, "operator");
    let out = op.run(&["run", "--", "printf", "before"]);
    assert_eq!(out.stdout, b"before", "{}", text(&out));
    let mut process = Process::open(&op);
    let (_, first) = process.run(&["printf", "once"]);
    let (_, waiting) = process.run(&["touch", "never"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    drop(process);

    host.stop();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    assert!(pending_ids(&world).is_empty(), "pending actions do not survive a restart");
    let refused_before = world.audit().matches("refused a frame").count();
    let mut process = Process::open(&op);
    for frame in [&first, &waiting] {
        process.again(frame);
    }
    assert!(
        eventually(Duration::from_secs(10), || world.audit().matches("refused a frame").count()
            >= refused_before + 2),
        "{}",
        world.audit()
    );
    assert!(pending_ids(&world).is_empty() && !world.ws().join("never").exists());
    drop(process);

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
        let decision = Decision::new(id, protocol::action_hash(&other), Verdict::Approve);
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
    // A relay apart from the host, so that the host restarts behind the same address.
    let relay = Hostile::start();
    let world = World::new();
    let host = world.serve(&relay.addr, &relay.cert_sha256, &[]);
    let op = world.device("op");
    world.pair(&op, "operator");
    let mut process = Process::open(&op);
    let (request, frame) = process.run(&["printf", "once"]);
    assert_eq!(process.result(request), b"once");
    drop(process);

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
    let mut process = Process::open(&op);
    process.again(&frame);
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
