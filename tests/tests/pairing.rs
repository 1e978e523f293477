//! Pairing and roles with the real binaries: `agent-host up` (its embedded relay on loopback),
//! `agent-host pair`, and `remote` devices.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use e2e::{World, eventually, pending_ids, text};

/// The README's story: the host is up, a device pairs after the yes at the machine, its
/// `run -- echo hello` shows up as pending, `agent-host approve` lets it run, and the result
/// reaches the device.
#[test]
fn pair_with_the_local_yes_then_a_request_runs_after_local_approval() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    let mut offer = world.offer(&["--role", "operator"]);
    let pairing = phone.spawn(&["pair", &offer.link, "--name", "Ana's phone"]);
    let question = offer.question();
    assert!(question.contains("Ana's phone") && question.contains("as operator"), "{question}");
    // The device shows the same fingerprint the host asks about.
    offer.answer(true);
    let out = pairing.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let fingerprint = shown.lines().find_map(|l| l.strip_prefix("fingerprint: ")).unwrap();
    assert!(question.contains(fingerprint.split_whitespace().next().unwrap()), "{question}");
    assert!(offer.finish().contains("paired"));

    let run = phone.spawn(&["run", "--", "echo", "hello"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    let approve = world.agent_host(&["approve", &id[..10]]);
    assert!(approve.status.success(), "{}", text(&approve));
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    let devices = world.agent_host(&["devices"]);
    let listed = String::from_utf8_lossy(&devices.stdout);
    assert!(listed.contains("Ana's phone") && !listed.contains("no channel key"), "{listed}");
    let json = world.agent_host(&["devices", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0]["channel_key"], true, "{json}");

    // Each side learnt the other's channel key in the signed pairing messages, and kept it;
    // neither is the identity key.
    let public_of = |path: std::path::PathBuf| {
        let private: [u8; 32] = std::fs::read(&path).unwrap().try_into().unwrap();
        hex::encode(protocol::channel::public_of(&private).unwrap())
    };
    let host_channel = public_of(world.home().join("config/channel.key"));
    let phone_channel = public_of(phone.home.join(&phone.profile).join("channel.key"));
    let registry = std::fs::read_to_string(world.home().join("state/devices.json")).unwrap();
    assert!(registry.contains(&format!("\"channel_key\": \"{phone_channel}\"")), "{registry}");
    let pairing = std::fs::read_to_string(phone.home.join(&phone.profile).join("pairing.json"));
    let pairing = pairing.unwrap();
    assert!(pairing.contains(&format!("\"host_channel_key\": \"{host_channel}\"")), "{pairing}");
    assert_ne!(host_channel, phone_channel);
}

#[test]
fn saying_no_at_the_host_pairs_nothing() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    let mut offer = world.offer(&[]);
    let pairing = phone.spawn(&["pair", &offer.link]);
    offer.question();
    offer.answer(false);
    let out = pairing.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not accept"), "{}", text(&out));
    assert!(phone.run(&["status"]).status.code() != Some(0));
}

#[test]
fn expired_reused_and_wrong_secrets_pair_nothing() {
    let world = World::new();
    let _host = world.up(0, &[]);

    // Expired: the device refuses the link, and the host no longer holds the offer either
    // (the pair command ends when the host drops the offer: no waiting on a guess).
    let offer = world.offer(&["--yes", "--expires", "1s"]);
    let link = offer.link.clone();
    let said = offer.finish();
    assert!(said.contains("expired"), "{said}");
    let late = world.device("late");
    let out = late.run(&["pair", &link]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"), "{}", text(&out));
    // The same link with its expiry moved later: the host has dropped the offer all the same.
    let mut stretched: protocol::PairingLink = link.parse().unwrap();
    stretched.expires_at_ms += 3_600_000;
    let out = late.run(&["--timeout", "3s", "pair", &stretched.to_string()]);
    assert!(!out.status.success(), "a host-side expired offer still paired: {}", text(&out));

    // Reused: the first device pairs, the second with the same link does not.
    let offer = world.offer(&["--yes"]);
    let first = world.device("first");
    assert!(first.run(&["pair", &offer.link]).status.success());
    let second = world.device("second");
    let out = second.run(&["--timeout", "3s", "pair", &offer.link]);
    assert!(!out.status.success(), "a used link paired again: {}", text(&out));

    // A wrong secret: the link's secret changed by one digit.
    let offer = world.offer(&["--yes"]);
    let at = offer.link.find("secret=").unwrap() + "secret=".len();
    let mut wrong = offer.link.clone();
    let digit = if &wrong[at..at + 1] == "0" { "1" } else { "0" };
    wrong.replace_range(at..at + 1, digit);
    let guesser = world.device("guesser");
    let out = guesser.run(&["--timeout", "3s", "pair", &wrong]);
    assert!(!out.status.success(), "a wrong secret paired: {}", text(&out));

    let listed = world.agent_host(&["devices", "--json"]);
    let devices: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 1, "only `first` is paired: {devices}");
}

#[test]
fn two_devices_pair_at_the_same_time() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let (a, b) = (world.device("a"), world.device("b"));
    let (offer_a, offer_b) = (world.offer(&["--yes"]), world.offer(&["--yes", "--role", "viewer"]));
    let (pa, pb) = (a.spawn(&["pair", &offer_a.link]), b.spawn(&["pair", &offer_b.link]));
    let (oa, ob) = (pa.wait_with_output().unwrap(), pb.wait_with_output().unwrap());
    assert!(oa.status.success(), "{}", text(&oa));
    assert!(ob.status.success(), "{}", text(&ob));
    assert!(String::from_utf8_lossy(&ob.stdout).contains("as viewer"));
    assert!(a.run(&["status"]).status.success());
    assert!(b.run(&["status"]).status.success());
}

#[test]
fn roles_limit_what_a_device_may_do_and_revocation_cuts_it_off() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let (viewer, approver, operator) =
        (world.device("viewer"), world.device("approver"), world.device("operator"));
    world.pair(&viewer, "viewer");
    world.pair(&approver, "approver");
    world.pair(&operator, "operator");

    // An approver cannot request.
    let out = approver.run(&["run", "--", "printf", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", text(&out));

    // A viewer sees the pending action but cannot approve it; the approver can.
    let run = operator.spawn(&["run", "--", "touch", "made-by-operator"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    let listed = viewer.run(&["pending"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id), "{}", text(&listed));
    let out = viewer.run(&["approve", &id[..8]]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", text(&out));
    assert_eq!(pending_ids(&world), vec![id.clone()], "still pending after the viewer tried");
    let out = approver.run(&["approve", &id[..8]]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(world.ws().join("made-by-operator").exists());

    // Revoked: cut off at once, and nothing it sends is acted on.
    let revoke = world.agent_host(&["devices", "revoke", &device_id(&world, "operator")]);
    assert!(revoke.status.success(), "{}", text(&revoke));
    let out = operator.run(&["--timeout", "5s", "run", "--", "printf", "x"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!world.audit().contains("printf"), "a revoked device's request was judged");
    assert!(world.audit().contains("revoked"));
}

fn device_id(world: &World, name: &str) -> String {
    let listed = world.agent_host(&["devices", "--json"]);
    let devices: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn no_answer_before_expiry_means_deny_and_policy_denials_are_typed() {
    let world = World::new();
    let _host = world.up(0, &["--approval-timeout", "2s"]);
    let phone = world.device("phone");
    world.pair(&phone, "operator");
    let out = phone.run(&["run", "--", "touch", "never"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"), "{}", text(&out));
    assert!(!world.ws().join("never").exists());

    let out = phone.run(&["run", "--", "rm", "-rf", "."]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("denied_by_policy"), "{}", text(&out));

    // An explicit allow rule runs at once, with the command's own exit code.
    let out = phone.run(&["run", "--", "printf", "%s", "ok"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"ok");
}

#[test]
fn files_are_read_written_and_edited_inside_the_workspace_only() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    world.pair(&phone, "operator");
    std::fs::write(world.ws().join("notes.txt"), "one\ntwo\n").unwrap();
    let out = phone.run(&["read", "notes.txt"]);
    assert_eq!(out.stdout, b"one\ntwo\n", "{}", text(&out));
    let out = phone.run(&["read", "../home/config/host.key"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside"), "{}", text(&out));

    // An edit waits for approval and shows its diff.
    let edit = phone.spawn(&["edit", "notes.txt", "--old", "two", "--new", "three"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let listing = String::from_utf8_lossy(&world.agent_host(&["approvals"]).stdout).into_owned();
    assert!(listing.contains("-two") && listing.contains("+three"), "{listing}");
    let id = pending_ids(&world).remove(0);
    assert!(world.agent_host(&["approve", &id]).status.success());
    assert!(edit.wait_with_output().unwrap().status.success());
    assert_eq!(std::fs::read_to_string(world.ws().join("notes.txt")).unwrap(), "one\nthree\n");

    let write = std::thread::spawn(move || phone.run_with_input(&["write", "new.txt"], b"fresh\n"));
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    assert!(world.agent_host(&["deny", &id]).status.success());
    let out = write.join().unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(!world.ws().join("new.txt").exists());
}

/// A hello with the right token but a wrong proof burns the offer: the real device with the real
/// link is then refused too, and the host's audit log says why. (A relay, which sees the token
/// but not the secret, cannot even open the pairing channel: see `hostile_relay.rs`; this is a
/// sender that has the link and proves it wrongly.)
#[test]
fn a_wrong_proof_burns_the_offer() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let offer = world.offer(&["--yes"]);
    let link: protocol::PairingLink = offer.link.parse().unwrap();
    let token = protocol::pairing::token(&link.pairing_secret());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = runtime.block_on(async {
        let host = link.host.key();
        let session_link = remote::session::Link {
            relay: link.relay.clone(),
            cert_sha256: link.cert_sha256,
            host,
            knock: Some((protocol::RelayKey::of(&host), token)),
            channel: remote::session::ChannelSetup::Pairing {
                psk: protocol::pairing::channel_psk(&link.pairing_secret()).into(),
            },
        };
        let key = protocol::SecretKey::from_seed(&[0x42; 32]);
        let mut session = remote::session::Session::start(session_link, key, None, 0).unwrap();
        let hello = protocol::Pairing::Hello {
            token,
            name: "impostor".into(),
            proof: protocol::PairingProof([0; 32]),
            channel_key: None,
        };
        session.send(&protocol::Message::Pairing(hello)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        session.next(deadline).await.unwrap()
    });
    assert!(
        matches!(&answer, protocol::Message::Pairing(protocol::Pairing::Rejected { reason }) if reason.contains("burned")),
        "{answer:?}"
    );
    assert!(offer.finish().contains("burned"));
    let device = world.device("real");
    let out = device.run(&["--timeout", "3s", "pair", &link.to_string()]);
    assert!(!out.status.success(), "a burned offer still paired: {}", text(&out));
    assert!(world.audit().contains("wrong proof"), "{}", world.audit());
}

/// A remote approval and a local one race: exactly one wins and the action runs once.
#[test]
fn a_remote_and_a_local_approval_race_and_the_action_runs_once() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let (op, approver) = (world.device("op"), world.device("approver"));
    world.pair(&op, "operator");
    world.pair(&approver, "approver");
    for round in 0..3 {
        let run = op.spawn(&["run", "--", "sh", "-c", "echo x >> raced"]);
        assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
        let id = pending_ids(&world).remove(0);
        let remote = approver.spawn(&["approve", &id]);
        let local = world.agent_host(&["approve", &id]);
        let remote = remote.wait_with_output().unwrap();
        // The winner says "approved"; the loser finds nothing pending, is refused, or learns
        // that someone else approved.
        let remote_won = String::from_utf8_lossy(&remote.stdout).lines().any(|l| l == "approved");
        let local_won = local.status.success();
        assert!(
            remote_won ^ local_won,
            "round {round}: exactly one approval wins\n{}\n{}",
            text(&remote),
            text(&local)
        );
        assert!(run.wait_with_output().unwrap().status.success());
        let runs = std::fs::read_to_string(world.ws().join("raced")).unwrap();
        assert_eq!(runs.lines().count(), round + 1, "round {round}: ran {runs:?}");
    }
    assert_eq!(world.audit().matches(": approve by").count(), 3, "{}", world.audit());
}

/// `remote watch` shows what is already pending and what comes after; a role changed at the
/// host applies to the device's next request; a renamed device is listed under its new name.
#[test]
fn watch_streams_events_and_role_changes_apply_at_once() {
    use std::io::BufRead as _;
    let world = World::new();
    let _host = world.up(0, &[]);
    let (op, watcher) = (world.device("op"), world.device("watcher"));
    world.pair(&op, "operator");
    world.pair(&watcher, "viewer");
    let first = op.spawn(&["run", "--", "touch", "one"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let mut watch = watcher.spawn(&["--json", "watch"]);
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    // The next event of a kind (a device may also get the pending list again as it connects).
    let mut next_event = move |kind: &str| -> serde_json::Value {
        loop {
            let event: serde_json::Value =
                serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            if event["type"] == kind {
                return event;
            }
        }
    };
    let id = pending_ids(&world).remove(0);
    let shown = next_event("action_pending");
    assert_eq!(shown["request"], id.as_str(), "what was pending before it started");
    // It showed it: the host says how far the action got there.
    let reached = || String::from_utf8_lossy(&world.agent_host(&["approvals"]).stdout).into_owned();
    assert!(
        eventually(Duration::from_secs(20), || reached().contains("watcher shown")),
        "{}",
        reached()
    );
    assert!(world.agent_host(&["deny", &id]).status.success());
    let decided = next_event("action_decided");
    assert_eq!(
        (decided["request"].as_str(), decided["verdict"].as_str()),
        (Some(id.as_str()), Some("deny"))
    );
    assert_eq!(first.wait_with_output().unwrap().status.code(), Some(126));

    // The viewer may not approve; made an approver at the host, it may.
    let watcher_id = {
        let listed = world.agent_host(&["devices", "--json"]);
        let devices: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        devices.as_array().unwrap().iter().find(|d| d["name"] == "watcher").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let second = op.spawn(&["run", "--", "touch", "two"]);
    let shown = next_event("action_pending");
    let id = pending_ids(&world).remove(0);
    assert_eq!(shown["request"], id.as_str(), "a new pending action is streamed");
    let refused = watcher.run(&["approve", &id]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let changed = world.agent_host(&["devices", "set-role", &watcher_id, "approver"]);
    assert!(changed.status.success(), "{}", text(&changed));
    let renamed = world.agent_host(&["devices", "rename", &watcher_id[..12], "kitchen tablet"]);
    assert!(renamed.status.success(), "{}", text(&renamed));
    let out = watcher.run(&["approve", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(second.wait_with_output().unwrap().status.success());
    assert!(world.ws().join("two").exists());
    let listed = String::from_utf8_lossy(&world.agent_host(&["devices"]).stdout).into_owned();
    assert!(listed.contains("kitchen tablet") && listed.contains("approver"), "{listed}");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// An operator device cannot leave the workspace: not with a working directory above it, an
/// absolute one elsewhere, a symlink that points out, nor a path that climbs or links out.
#[test]
fn a_device_cannot_escape_the_workspace() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let op = world.device("op");
    world.pair(&op, "operator");
    std::os::unix::fs::symlink("/etc", world.ws().join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", world.ws().join("hostname-link")).unwrap();
    for cwd in ["..", "/etc", "etc-link", "../../.."] {
        let out = op.run(&["run", "--cwd", cwd, "--", "printf", "escaped"]);
        assert_eq!(out.status.code(), Some(1), "cwd {cwd}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("outside"),
            "cwd {cwd}: {}",
            text(&out)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("escaped"));
    }
    for path in ["../home/config/host.key", "/etc/hostname", "hostname-link", "etc-link/hostname"] {
        let out = op.run(&["read", path]);
        assert_eq!(out.status.code(), Some(1), "read {path}: {}", text(&out));
        assert!(out.stdout.is_empty(), "read {path} leaked: {}", text(&out));
    }
    let out = op.run_with_input(&["write", "etc-link/owned"], b"x");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!std::path::Path::new("/etc/owned").exists());
    assert!(pending_ids(&world).is_empty(), "nothing outside is even put to a person");
}

/// Under `--two-person`, a device's approval of its own request is refused and audited; another
/// device's approval runs it.
#[test]
fn under_the_two_person_rule_a_device_does_not_approve_its_own_request() {
    let world = World::new();
    let _host = world.up(0, &["--two-person"]);
    let (phone, tablet) = (world.device("phone"), world.device("tablet"));
    world.pair(&phone, "operator");
    world.pair(&tablet, "approver");
    let run = phone.spawn(&["run", "--", "sh", "-c", "echo x >> two"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    let own = phone.run(&["approve", &id]);
    assert!(!own.status.success(), "{}", text(&own));
    assert!(text(&own).contains("two-person"), "{}", text(&own));
    assert!(!world.ws().join("two").exists(), "its own approval ran it");
    assert_eq!(pending_ids(&world), vec![id.clone()]);
    let other = tablet.run(&["approve", &id]);
    assert!(other.status.success(), "{}", text(&other));
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(world.ws().join("two")).unwrap(), "x\n");
    assert!(world.audit().contains("two-person"), "{}", world.audit());
}

/// `remote watch --exec CMD` runs CMD once for each pending action, with the action as JSON on
/// its input (for notify-send, a pager service, a chat hook).
#[test]
fn watch_exec_runs_a_command_once_for_each_pending_action() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let op = world.device("op");
    world.pair(&op, "operator");
    let notified = world.home().join("notified.jsonl");
    let command = format!("cat >> '{}'", notified.display());
    let mut watcher = op.spawn(&["watch", "--exec", &command]);
    let read = || std::fs::read_to_string(&notified).unwrap_or_default();
    let mut first = world.agent_host_child(&["exec", "--", "touch", "notify-me"]);
    assert!(eventually(Duration::from_secs(20), || read().contains("notify-me")), "{}", read());
    let mut second = world.agent_host_child(&["exec", "--", "touch", "and-me"]);
    assert!(eventually(Duration::from_secs(20), || read().contains("and-me")), "{}", read());
    let _ = (first.kill(), second.kill(), watcher.kill());
    let _ = (first.wait(), second.wait(), watcher.wait());
    let lines: Vec<protocol::HostEvent> =
        read().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 2, "each pending action once: {}", read());
    assert!(lines.iter().all(|e| matches!(e, protocol::HostEvent::ActionPending { .. })));
}

/// One machine paired with two hosts (a profile each): `remote pending --all` lists what waits
/// on both, by host; `remote approve ID` and `deny ID --reason` find the host by the id; each
/// answer goes to its own host only.
#[test]
fn one_device_answers_for_two_hosts_by_id() {
    let (a, b) = (World::new(), World::new());
    let _laptop = a.up(0, &["--host-name", "laptop"]);
    let _buildbox = b.up(0, &["--host-name", "buildbox"]);
    let on_a = a.device("laptop");
    let on_b = e2e::Device { home: on_a.home.clone(), profile: "buildbox".into() };
    a.pair(&on_a, "operator");
    b.pair(&on_b, "operator");
    // One watch for both hosts.
    let mut watch = std::process::Command::new(e2e::bin("remote"))
        .args(["--json", "watch", "--all"])
        .env("REMOTE_HOME", &on_a.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, watched) = std::sync::mpsc::channel();
    {
        use std::io::BufRead as _;
        let lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            for line in lines.map_while(Result::ok) {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                if value["event"]["type"] == "action_pending" {
                    let summary =
                        value["event"]["summary"].as_str().unwrap_or_default().to_string();
                    seen.insert(value["profile"].as_str().unwrap().to_string(), summary);
                }
                if seen.len() == 2 {
                    let _ = tx.send(seen);
                    return;
                }
            }
        });
    }
    let run_a = on_a.spawn(&["run", "--", "touch", "made-on-a"]);
    let run_b = on_b.spawn(&["run", "--", "touch", "made-on-b"]);
    assert!(eventually(Duration::from_secs(20), || {
        pending_ids(&a).len() == 1 && pending_ids(&b).len() == 1
    }));
    let seen = watched.recv_timeout(Duration::from_secs(30)).expect("both hosts' actions watched");
    assert!(
        seen["laptop"].contains("made-on-a") && seen["buildbox"].contains("made-on-b"),
        "{seen:?}"
    );
    let _ = (watch.kill(), watch.wait());
    // Without --profile: every profile is looked in.
    let remote = |args: &[&str]| {
        std::process::Command::new(e2e::bin("remote"))
            .args(args)
            .env("REMOTE_HOME", &on_a.home)
            .env_remove("REMOTE_PROFILE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let listed = remote(&["pending", "--all"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let out = String::from_utf8_lossy(&listed.stdout).into_owned();
    let (at_a, at_b) = (out.find("== laptop").unwrap(), out.find("== buildbox").unwrap());
    let (made_a, made_b) = (out.find("made-on-a").unwrap(), out.find("made-on-b").unwrap());
    assert!(at_b < made_b && made_b < at_a && at_a < made_a, "grouped by host: {out}");
    let (id_a, id_b) = (pending_ids(&a).remove(0), pending_ids(&b).remove(0));
    let approved = remote(&["approve", &id_b[..10]]);
    assert!(approved.status.success(), "{}", text(&approved));
    let denied = remote(&["deny", &id_a[..10], "--reason", "not on the laptop"]);
    assert!(denied.status.success(), "{}", text(&denied));
    assert!(run_b.wait_with_output().unwrap().status.success());
    let refused = run_a.wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(126));
    assert!(text(&refused).contains("not on the laptop"), "{}", text(&refused));
    assert!(b.ws().join("made-on-b").exists() && !a.ws().join("made-on-a").exists());
    // Each host heard only its own answer.
    let log_a = text(&a.agent_host(&["audit", "tail", "-n", "50"]));
    assert!(log_a.contains(&format!("{id_a}: deny")) && !log_a.contains(&id_b), "{log_a}");
    let log_b = text(&b.agent_host(&["audit", "tail", "-n", "50"]));
    assert!(log_b.contains(&format!("{id_b}: approve")) && !log_b.contains(&id_a), "{log_b}");
    let short = remote(&["approve", &id_b[..4]]);
    assert!(!short.status.success() && text(&short).contains("at least 8"), "{}", text(&short));
    // Several at once, on their hosts, each answered on its own.
    let again_a = on_a.spawn(&["run", "--", "touch", "again-on-a"]);
    let again_b = on_b.spawn(&["run", "--", "touch", "again-on-b"]);
    assert!(eventually(Duration::from_secs(20), || {
        pending_ids(&a).len() == 1 && pending_ids(&b).len() == 1
    }));
    let both = remote(&["approve", &pending_ids(&a)[0], &pending_ids(&b)[0]]);
    assert!(both.status.success(), "{}", text(&both));
    assert!(again_a.wait_with_output().unwrap().status.success());
    assert!(again_b.wait_with_output().unwrap().status.success());
    assert!(a.ws().join("again-on-a").exists() && b.ws().join("again-on-b").exists());
    let unknown = remote(&["approve", "ffffffff"]);
    assert!(!unknown.status.success() && text(&unknown).contains("on any host"));
}
