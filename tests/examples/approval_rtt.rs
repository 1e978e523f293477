//! The approval round trip through the relay on loopback: device A asks the host to run `true`,
//! policy asks (a device's command needs a person unless a rule allows it), device B approves at
//! once, the host runs it in its sandbox, and the result reaches A. Reports p50 and p99 of the
//! whole round, seen from A, over many rounds.
//!
//! ```text
//! cargo build --release -p agent-host -p remote
//! cargo run --release -p e2e --example approval_rtt -- [ROUNDS] [INTERVAL_MS] [SLOW_SYNC_MS [BUSY_MS]]
//! ```
//!
//! It runs the real `agent-host up` (its embedded relay) and pairs two devices with the real
//! `remote`; the rounds then use the `remote` crate's device code in-process, each device on a
//! thread of its own with a current-thread runtime as in `remote`, so a process start is not
//! counted. Rounds start `INTERVAL_MS` apart (default 100): approvals come at a
//! person's pace, and each client keeps under the relay's frame rate.
//!
//! With `SLOW_SYNC_MS` (0 too), the rounds run beside a busy device and a slow disk: a third
//! device (a viewer) asks the host for its state every `BUSY_MS` (default 100), so that its
//! counters are journaled and synced all along, and every `fsync`/`fdatasync` of the host's
//! counter files (`counters.json`, `counters.journal`) takes `SLOW_SYNC_MS` longer
//! (`slow_sync.c`, built here with `cc` and loaded with `LD_PRELOAD`). The audit log's syncs are not slowed: the round waits for those by
//! design (the record is on disk before the action runs).

#![allow(clippy::unwrap_used)] // a measuring tool: a panic is the report

use std::time::{Duration, Instant};

use e2e::{Device, World};
use protocol::{Action, Decision, HostEvent, Message, Request, RequestId, Verdict};
use remote::session::Session;

fn session(device: &Device) -> Session {
    let profile = remote::profile::Profile::open_in(&device.home, &device.profile).unwrap();
    Session::open(&profile).unwrap().1
}

/// Each device runs as `remote` does: a thread of its own with a current-thread runtime, so
/// that no wake-up crosses threads inside a device.
fn device_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `slow_sync.c` built into the world's directory.
fn slow_sync_library(world: &World) -> std::path::PathBuf {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slow_sync.c");
    let out = world.ws().with_file_name("slow_sync.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(built.success(), "cc could not build {}", source.display());
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(1000, |a| a.parse().unwrap());
    let interval = Duration::from_millis(args.next().map_or(100, |a| a.parse().unwrap()));
    let slow_sync_ms: Option<u64> = args.next().map(|a| a.parse().unwrap());
    let busy_every = Duration::from_millis(args.next().map_or(100, |a| a.parse().unwrap()));
    let world = World::new();
    let shim = slow_sync_ms.map(|ms| (slow_sync_library(&world), ms));
    let host = match &shim {
        Some((shim, ms)) => {
            let ms = ms.to_string();
            world.up_with_env(
                &[],
                &[
                    ("LD_PRELOAD", shim.as_os_str()),
                    ("SLOW_SYNC_MATCH", "/counters.".as_ref()),
                    ("SLOW_SYNC_MS", ms.as_ref()),
                ],
            )
        }
        None => world.up(0, &[]),
    };
    let (a, b) = (world.device("asker"), world.device("approver"));
    world.pair(&a, "operator");
    world.pair(&b, "approver");
    println!("host {} via relay {}", host.id, host.relay.as_deref().unwrap_or("?"));
    if let Some(ms) = slow_sync_ms {
        let busy = world.device("busy");
        world.pair(&busy, "viewer");
        println!(
            "every sync of the counters {ms} ms slower; a third device syncs every {} ms",
            busy_every.as_millis()
        );
        std::thread::spawn(move || {
            device_runtime().block_on(async {
                let mut viewer = session(&busy);
                let mut next = Instant::now();
                loop {
                    tokio::time::sleep_until(next.into()).await;
                    next += busy_every;
                    let mut id = [0u8; 16];
                    getrandom::fill(&mut id).unwrap();
                    let sync = Message::Request(Request::Sync { id: RequestId(id) });
                    if viewer.send(&sync).is_err() {
                        return;
                    }
                    // Whatever came meanwhile, without waiting for it.
                    while viewer.next_event(Instant::now()).await.is_ok() {}
                }
            });
        });
    }

    std::thread::spawn(move || {
        device_runtime().block_on(async {
            let mut approver = session(&b);
            let forever = Instant::now() + Duration::from_secs(86_400);
            while let Ok(event) = approver.next_event(forever).await {
                if let HostEvent::ActionPending { request, action, action_hash, .. } = event
                    && protocol::action_hash(&action) == action_hash
                {
                    let decision = Decision::new(request, action_hash, Verdict::Approve);
                    approver.send(&Message::Decision(decision)).unwrap();
                }
            }
        });
    });
    device_runtime().block_on(async {
        let mut asker = session(&a);
        let mut times = Vec::with_capacity(rounds);
        let (mut to_pending, mut to_decided) = (Vec::new(), Vec::new());
        let mut next = Instant::now();
        for _ in 0..rounds + 10 {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
            let mut id = [0u8; 16];
            getrandom::fill(&mut id).unwrap();
            let id = RequestId(id);
            let action =
                Action::Run { argv: vec!["true".into()], cwd: ".".into(), env: Default::default() };
            let start = Instant::now();
            asker.send(&Message::Request(Request::Action { id, action })).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match asker.next_event(deadline).await.unwrap() {
                    HostEvent::ActionPending { request, .. } if request == id => {
                        to_pending.push(start.elapsed());
                    }
                    HostEvent::ActionDecided { request, .. } if request == id => {
                        to_decided.push(start.elapsed());
                    }
                    HostEvent::ActionResult { request, exit_code, .. } if request == id => {
                        assert_eq!(exit_code, Some(0));
                        break;
                    }
                    HostEvent::Error { request: Some(r), message, .. } if r == id => {
                        panic!("refused: {message}")
                    }
                    _ => {}
                }
            }
            times.push(start.elapsed());
        }
        // The first rounds warm up connections and caches.
        println!(
            "{rounds} rounds, one every {} ms; from the request, at device A:",
            interval.as_millis()
        );
        for (name, part) in [
            ("the pending action shown", to_pending),
            ("the approval known", to_decided),
            ("the result (after `true` ran in the sandbox)", times),
        ] {
            let mut part = part[10..].to_vec();
            part.sort();
            let at = |q: f64| part[((part.len() as f64 * q) as usize).min(part.len() - 1)];
            println!(
                "  {name:<46} p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
                at(0.50).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                part.last().unwrap().as_secs_f64() * 1e3
            );
        }
    });
    drop(host);
}
