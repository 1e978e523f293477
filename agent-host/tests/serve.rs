//! The daemon end to end: the real `agent-host serve` and CLI on a real socket, with policy,
//! local approvals, the sandbox and the audit log in the path.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_host::local_api::{ApiRequest, ApiResponse, call};

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    home: PathBuf,
    ws: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let (home, ws) = (base.join("home"), base.join("ws"));
    std::fs::create_dir_all(&ws).unwrap();
    let settings = base.join("settings.json");
    std::fs::write(
        &settings,
        r#"{"permissions":{"allow":["Bash(echo *)"],"deny":["Bash(rm *)"]}}"#,
    )
    .unwrap();
    let mut args = vec![
        "serve",
        "--workspace",
        ws.to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if agent_host::exec::Sandbox::detect(Some(Path::new(env!("CARGO_BIN_EXE_agent-host")))).is_err()
    {
        println!("no sandbox here: the daemon runs with --allow-unsandboxed");
        args.push("--allow-unsandboxed");
    }
    let child = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(&args)
        .env("AGENT_HOST_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = home.join("state/host.sock");
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon { child, _dir: dir, home, ws }
}

impl Daemon {
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .args(args)
            .env("AGENT_HOST_HOME", &self.home)
            .output()
            .unwrap()
    }

    fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_agent-host"))
            .args(args)
            .env("AGENT_HOST_HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn socket(&self) -> PathBuf {
        self.home.join("state/host.sock")
    }

    fn agent_socket(&self) -> PathBuf {
        self.home.join("state/agent/agent.sock")
    }

    fn wait_pending(&self) -> Vec<agent_host::approvals::Pending> {
        let start = Instant::now();
        loop {
            let out = self.cli(&["approvals", "--json"]);
            let list: Vec<agent_host::approvals::Pending> =
                serde_json::from_slice(&out.stdout).unwrap();
            if !list.is_empty() {
                return list;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "nothing became pending");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn audit(home: &Path) -> String {
    std::fs::read_to_string(home.join("state/audit.jsonl")).unwrap()
}

#[test]
fn allowed_runs_denied_does_not_and_both_are_audited() {
    let d = start(&[]);
    let ok = d.cli(&["exec", "--", "echo", "hello"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout), "hello\n");
    let no = d.cli(&["exec", "--", "rm", "-rf", "important"]);
    assert_eq!(no.status.code(), Some(126));
    assert!(text(&no.stderr).contains("denied by Bash(rm *)"));
    let log = audit(&d.home);
    assert!(log.contains("\"decision\":\"allow\"") && log.contains("\"decision\":\"deny\""));
    assert!(log.contains("\"type\":\"start\"") && log.contains("\"type\":\"result\""));
    let verify = d.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

#[test]
fn an_asked_command_runs_only_after_approval() {
    let d = start(&[]);
    let waiting = d.spawn_cli(&["exec", "--", "touch", "approved-file"]);
    let pending = d.wait_pending();
    assert_eq!(pending.len(), 1);
    assert!(!d.ws.join("approved-file").exists(), "ran before approval");
    let id = pending[0].id.to_string();
    let approve = d.cli(&["approve", &id[..8]]);
    assert_eq!(approve.status.code(), Some(0), "{}", text(&approve.stderr));
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(d.ws.join("approved-file").exists());
    // The approval is single-use.
    let again = d.cli(&["approve", &id[..8]]);
    assert_ne!(again.status.code(), Some(0));
}

#[test]
fn an_action_starts_only_once_its_records_are_on_disk() {
    let d = start(&[]);
    let waiting = d.spawn_cli(&[
        "exec",
        "--",
        "sh",
        "-c",
        "touch started; while [ ! -e go ]; do sleep 0.01; done",
    ]);
    let id = d.wait_pending()[0].id.to_string();
    assert_eq!(d.cli(&["approve", &id[..8]]).status.code(), Some(0));
    let start = Instant::now();
    while !d.ws.join("started").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the command did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The host syncs other records in the background, a little later; those an action
    // follows are synced before it starts: the head names the start of this very command.
    let log = d.home.join("state/audit.jsonl");
    let verified = agent_host::audit::verify(&log).unwrap();
    assert_eq!(verified.unsynced, 0, "records written before the action were not synced");
    let records = agent_host::audit::read_records(&log).unwrap();
    let last = records.last().unwrap();
    assert!(
        matches!(&last.event, agent_host::audit::Event::Start { request } if *request == id),
        "{last:?}"
    );
    assert_eq!(verified.last.unwrap().0, last.seq);
    std::fs::write(d.ws.join("go"), b"").unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_denied_command_does_not_run() {
    let d = start(&[]);
    let waiting = d.spawn_cli(&["exec", "--", "touch", "denied-file"]);
    let pending = d.wait_pending();
    assert_eq!(d.cli(&["deny", &pending[0].id.to_string()]).status.code(), Some(0));
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("denied by terminal at the host"));
    assert!(!d.ws.join("denied-file").exists());
}

#[test]
fn an_unanswered_request_lapses_into_denial() {
    let d = start(&["--approval-timeout", "1s"]);
    let out = d.cli(&["exec", "--", "touch", "lapsed-file"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("lapsed"), "{}", text(&out.stderr));
    assert!(!d.ws.join("lapsed-file").exists());
}

#[test]
fn racing_decisions_exactly_one_wins_and_the_action_runs_once() {
    let d = start(&[]);
    let waiting = d.spawn_cli(&["exec", "--", "sh", "-c", "echo ran >> counter"]);
    let pending = d.wait_pending().remove(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = d.socket();
    let results: Vec<ApiResponse> = runtime.block_on(async {
        let calls = (0..8).map(|i| {
            let socket = socket.clone();
            let verdict =
                if i % 2 == 0 { protocol::Verdict::Approve } else { protocol::Verdict::Deny };
            let request = ApiRequest::Decide {
                id: pending.id,
                action_hash: pending.action_hash,
                verdict,
                note: None,
            };
            tokio::spawn(async move { call(&socket, &request, |_| {}).await.unwrap().remove(0) })
        });
        let mut out = Vec::new();
        for c in calls.collect::<Vec<_>>() {
            out.push(c.await.unwrap());
        }
        out
    });
    let winners = results.iter().filter(|r| matches!(r, ApiResponse::Decided { .. })).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results.iter().filter(|r| !matches!(r, ApiResponse::Decided { .. })).all(
            |r| matches!(r, ApiResponse::Error { message } if message.contains("not pending"))
        )
    );
    let _ = waiting.wait_with_output().unwrap();
    let ran = std::fs::read_to_string(d.ws.join("counter")).unwrap_or_default();
    assert!(ran.is_empty() || ran == "ran\n", "ran more than once: {ran:?}");
}

#[test]
fn a_decision_for_another_action_is_refused() {
    let d = start(&[]);
    let waiting = d.spawn_cli(&["exec", "--", "touch", "x"]);
    let pending = d.wait_pending().remove(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let forged = ApiRequest::Decide {
        id: pending.id,
        action_hash: protocol::ActionHash([7; 32]),
        verdict: protocol::Verdict::Approve,
        note: None,
    };
    let answer = runtime.block_on(call(&d.socket(), &forged, |_| {})).unwrap().remove(0);
    assert!(
        matches!(answer, ApiResponse::Error { ref message } if message.contains("another action")),
        "{answer:?}"
    );
    assert!(!d.ws.join("x").exists());
    assert_eq!(d.cli(&["deny", &pending.id.to_string()]).status.code(), Some(0));
    let _ = waiting.wait_with_output();
}

#[test]
fn the_agent_socket_asks_and_cannot_decide_pair_or_change_devices() {
    let d = start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ask = |request: &ApiRequest| {
        runtime.block_on(call(&d.agent_socket(), request, |_| {})).unwrap().remove(0)
    };
    assert!(matches!(ask(&ApiRequest::Status), ApiResponse::Status { .. }));
    // Asking works, and is labelled as the agent's.
    let echo = ApiRequest::Exec { argv: vec!["echo".into(), "hi".into()], cwd: None, wait: true };
    let done = runtime.block_on(call(&d.agent_socket(), &echo, |_| {})).unwrap();
    assert!(matches!(done.last(), Some(ApiResponse::Done { exit_code: Some(0), .. })), "{done:?}");
    assert!(audit(&d.home).contains("\"actor\":\"local:agent\""));
    // It may not pass for the person at the terminal.
    let judge = ApiRequest::Judge {
        action: protocol::Action::ReadFile { path: "x".into() },
        requester: "terminal".into(),
        cwd: d.ws.display().to_string(),
    };
    assert!(matches!(ask(&judge), ApiResponse::Denied { request: None, .. }));
    // A pending action of its own: it cannot approve it, list it, pair or change devices.
    let waiting = d.spawn_cli(&["exec", "--", "touch", "x"]);
    let pending = d.wait_pending().remove(0);
    let approve = ApiRequest::Decide {
        id: pending.id,
        action_hash: pending.action_hash,
        verdict: protocol::Verdict::Approve,
        note: None,
    };
    let pair = ApiRequest::Pair {
        role: protocol::Role::Approver,
        name: None,
        expires_secs: 60,
        yes: true,
    };
    let revoke = ApiRequest::Device {
        id: "dev1".into(),
        change: agent_host::local_api::DeviceChange::Revoke,
    };
    for request in [approve, pair, revoke, ApiRequest::Approvals, ApiRequest::Devices] {
        let answer = ask(&request);
        assert!(
            matches!(answer, ApiResponse::Error { ref message } if message.contains("only the owner socket")),
            "{request:?}: {answer:?}"
        );
    }
    // Each was refused before its answer came; had the approval been taken, the owner's below
    // would find nothing pending.
    assert!(!d.ws.join("x").exists(), "the agent socket approved an action");
    assert_eq!(d.wait_pending().len(), 1);
    let log = audit(&d.home);
    assert!(log.contains("local:agent-socket") && log.contains("`decide` grants"), "{log}");
    // The owner socket decides.
    assert_eq!(d.cli(&["approve", &pending.id.to_string()]).status.code(), Some(0));
    assert_eq!(waiting.wait_with_output().unwrap().status.code(), Some(0));
    assert!(d.ws.join("x").exists());
}

#[test]
fn a_sandboxed_command_sees_neither_socket_nor_the_host_state() {
    use agent_host::exec::Sandbox;
    let probe = match Sandbox::detect(Some(Path::new(env!("CARGO_BIN_EXE_agent-host")))) {
        // bubblewrap mounts empty directories over the host's state: nothing there exists.
        Ok(Sandbox::Bubblewrap(_)) => "test -e \"$f\" && echo \"visible $f\"",
        // Landlock cannot keep a path from `stat`: what it keeps is the bytes (and seccomp
        // every unix socket: `tests/exec.rs` tries to connect to one).
        Ok(Sandbox::Landlock(_)) => {
            "test -f \"$f\" && head -c1 \"$f\" >/dev/null 2>&1 && echo \"read $f\""
        }
        _ => {
            println!("no sandbox here: nothing to check");
            return;
        }
    };
    let d = start(&[]);
    let probe = format!(
        "for f in {} {} {}; do {probe}; done; echo checked",
        d.socket().display(),
        d.agent_socket().display(),
        d.home.join("config/host.key").display(),
    );
    let probing = d.spawn_cli(&["exec", "--", "sh", "-c", &probe]);
    let pending = d.wait_pending().remove(0);
    assert_eq!(d.cli(&["approve", &pending.id.to_string()]).status.code(), Some(0));
    let out = probing.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "checked\n", "{}", text(&out.stderr));
}

#[test]
fn key_socket_and_state_are_private_and_one_host_per_state() {
    let d = start(&[]);
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.home.join("config/host.key")), 0o600);
    assert_eq!(mode(d.socket()), 0o600);
    assert_eq!(mode(d.agent_socket()), 0o600);
    assert_eq!(mode(d.home.join("state/agent")), 0o700);
    assert_eq!(mode(d.home.join("state")), 0o700);
    assert_eq!(mode(d.home.join("state/audit.jsonl")), 0o600);
    let second = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .args(["serve", "--workspace", d.ws.to_str().unwrap(), "--allow-unsandboxed"])
        .env("AGENT_HOST_HOME", &d.home)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        text(&second.stderr).contains("another agent-host is running"),
        "{}",
        text(&second.stderr)
    );
    // The first host still answers.
    assert_eq!(d.cli(&["exec", "--", "echo", "still"]).status.code(), Some(0));
}

#[test]
fn only_an_approved_network_client_gets_the_network() {
    let d = start(&[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let approve_next = |d: &Daemon| {
        let pending = d.wait_pending();
        assert_eq!(d.cli(&["approve", &pending[0].id.to_string()]).status.code(), Some(0));
    };
    // A network client (python is one), approved by a person: online.
    let script =
        format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)");
    let client = d.spawn_cli(&["exec", "--", "/usr/bin/python3", "-c", &script]);
    approve_next(&d);
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stderr), text(&out.stdout));
    // A shell writing to /dev/tcp is not a network client: approved, it still runs offline.
    let shell =
        d.spawn_cli(&["exec", "--", "bash", "-c", &format!("echo hi > /dev/tcp/127.0.0.1/{port}")]);
    approve_next(&d);
    let out = shell.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "a non-network command reached the network");
}

#[test]
fn sigterm_stops_the_host_cleanly() {
    let mut d = start(&[]);
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket().exists(), "the socket was left behind");
    // The audit log is intact for the next start.
    let verify = d.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

/// A command that makes `.git/commondir` (which would point git at another directory's config
/// and hooks, past the read-only ones) finds it removed when it ends, and is told so.
#[test]
fn a_git_redirect_a_command_made_is_removed() {
    let d = start(&[]);
    std::fs::create_dir_all(d.ws.join(".git/hooks")).unwrap();
    std::fs::write(d.ws.join(".git/config"), "[core]\n").unwrap();
    let making =
        d.spawn_cli(&["exec", "--", "sh", "-c", "mkdir -p evil && echo ../evil > .git/commondir"]);
    let pending = d.wait_pending().remove(0);
    assert_eq!(d.cli(&["approve", &pending.id.to_string()]).status.code(), Some(0));
    let out = making.wait_with_output().unwrap();
    assert!(text(&out.stdout).contains("removed"), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!d.ws.join(".git/commondir").exists());
}
