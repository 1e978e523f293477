//! `agent-host hook claude-code` and `agent-host ask` against the real host: Claude Code's own
//! hook inputs (tests/golden/claude-code/, one per tool kind), answered by policy, by a person
//! on a paired device or at the terminal, and with the host down.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use e2e::{World, bin, eventually, pending_ids, text};
use serde_json::Value;

fn input(world: &World, name: &str) -> Vec<u8> {
    let path = format!("{}/golden/claude-code/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(path).unwrap();
    template.replace("{{WS}}", world.ws().to_str().unwrap()).into_bytes()
}

fn spawn(world: &World, args: &[&str], stdin: &[u8]) -> Child {
    let mut child = world.agent_host_child(args);
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

fn answer(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn hook(world: &World, name: &str) -> Child {
    spawn(world, &["hook", "claude-code"], &input(world, name))
}

/// The PreToolUse decision and its reason.
fn pre_tool_use(out: &Output) -> (String, String) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let value = answer(out);
    let specific = &value["hookSpecificOutput"];
    assert_eq!(specific["hookEventName"], "PreToolUse");
    (
        specific["permissionDecision"].as_str().unwrap().to_string(),
        specific["permissionDecisionReason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn the_hook_answers_every_tool_kind_from_policy_or_a_person() {
    let world = World::new();
    let host = world.up(0, &[]);
    std::fs::write(world.ws().join("notes.txt"), "one\ntwo\n").unwrap();
    let phone = world.device("phone");
    world.pair(&phone, "approver");

    // Policy alone: an allowed read and command, a denied command.
    for (name, want) in [("read", "allow"), ("bash_allowed", "allow"), ("bash_denied", "deny")] {
        let (decision, reason) = pre_tool_use(&hook(&world, name).wait_with_output().unwrap());
        assert_eq!(decision, want, "{name}: {reason}");
    }

    // Asked, and approved from the phone, which sees exactly what the agent will do.
    let write = hook(&world, "write");
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let listed = String::from_utf8_lossy(&phone.run(&["pending"]).stdout).into_owned();
    assert!(listed.contains("new.txt") && listed.contains("+fresh"), "{listed}");
    assert!(listed.contains("hook claude-code"), "who asked: {listed}");
    let id = pending_ids(&world).remove(0);
    assert!(phone.run(&["approve", &id]).status.success());
    let (decision, reason) = pre_tool_use(&write.wait_with_output().unwrap());
    assert_eq!(decision, "allow", "{reason}");
    assert!(reason.contains("approved by phone (a paired device)"), "{reason}");
    assert!(!world.ws().join("new.txt").exists(), "the host itself writes nothing");

    // Asked, and denied from the phone; asked, and denied at the terminal: the reason given
    // reaches the agent (Claude Code shows a deny's reason to the model) and the audit log.
    let reasons = ["use cargo nextest instead", "not that site", "ask me first"];
    for ((name, deny_with_phone), said) in
        [("edit", true), ("webfetch", false), ("mcp", true)].into_iter().zip(reasons)
    {
        let call = hook(&world, name);
        assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1), "{name}");
        let id = pending_ids(&world).remove(0);
        if deny_with_phone {
            assert!(phone.run(&["deny", &id, "--reason", said]).status.success());
        } else {
            assert!(world.agent_host(&["deny", &id, "--reason", said]).status.success());
        }
        let (decision, reason) = pre_tool_use(&call.wait_with_output().unwrap());
        assert_eq!(decision, "deny", "{name}: {reason}");
        let quoted = format!("{said:?}");
        assert!(reason.contains("denied by") && reason.ends_with(&quoted), "{name}: {reason}");
        let log = world.agent_host(&["audit", "tail", "-n", "40"]);
        assert!(text(&log).contains("deny by "), "{}", text(&log));
        assert!(text(&log).contains(&format!("{said:?}")), "{name}: {}", text(&log));
    }

    // The PermissionRequest form, approved at the terminal.
    let call = hook(&world, "permission_request");
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    assert!(world.agent_host(&["approve", &id]).status.success());
    let out = call.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let value = answer(&out);
    assert_eq!(value["hookSpecificOutput"]["hookEventName"], "PermissionRequest");
    assert_eq!(value["hookSpecificOutput"]["decision"]["behavior"], "allow");

    // Every question is in the audit log, with its answer.
    let audit = world.audit();
    assert_eq!(audit.matches("from local:hook claude-code").count(), 8, "{audit}");

    // The host down: an explicit deny, exit 0, valid JSON, for both forms.
    host.stop();
    for name in ["bash_allowed", "permission_request"] {
        let out = hook(&world, name).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let value = answer(&out);
        let specific = &value["hookSpecificOutput"];
        let denied =
            specific["permissionDecision"] == "deny" || specific["decision"]["behavior"] == "deny";
        assert!(denied, "{value}");
        assert!(value.to_string().contains("cannot be asked"), "{value}");
    }
    // Not even JSON: still an explicit deny.
    let out = spawn(&world, &["hook", "claude-code"], b"{oops").wait_with_output().unwrap();
    assert_eq!(pre_tool_use(&out).0, "deny");
}

#[test]
fn ask_prints_the_decision_with_documented_exit_codes() {
    let world = World::new();
    let host = world.up(0, &["--approval-timeout", "2s"]);
    let ws = world.ws().display().to_string();
    let ask = |action: &str| -> Output {
        let stdin = format!(r#"{{"action":{action},"cwd":"{ws}","requester":"my-agent"}}"#);
        spawn(&world, &["ask"], stdin.as_bytes()).wait_with_output().unwrap()
    };
    let allowed = ask(r#"{"type":"run","argv":["printf","x"],"cwd":"."}"#);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
    assert_eq!(answer(&allowed)["decision"], "allow");
    let denied = ask(r#"{"type":"run","argv":["rm","-rf","x"],"cwd":"."}"#);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert_eq!(answer(&denied)["decision"], "deny");
    // Nobody answers before the pending action lapses: a deny.
    let lapsed = ask(r#"{"type":"web_fetch","url":"https://example.com"}"#);
    assert_eq!(lapsed.status.code(), Some(1), "{}", text(&lapsed));
    assert!(answer(&lapsed)["reason"].as_str().unwrap().contains("nobody approved"));
    let bad = spawn(&world, &["ask"], br#"{"action":{"type":"launch_missiles"}}"#);
    let bad = bad.wait_with_output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert_eq!(answer(&bad)["decision"], "deny");
    host.stop();
    let down = ask(r#"{"type":"run","argv":["printf","x"],"cwd":"."}"#);
    assert_eq!(down.status.code(), Some(3), "{}", text(&down));
    assert_eq!(answer(&down)["decision"], "deny");
}

/// Every requester goes through the same checks: variables set for a command ask unless they
/// are harmless, the working directory must resolve inside the workspace, and the preview of a
/// write outside the workspace reads nothing there.
#[test]
fn an_agent_gets_the_same_environment_and_directory_checks_as_a_device() {
    let world = World::new();
    let host = world.up(0, &["--approval-timeout", "2s"]);
    let ws = world.ws().display().to_string();
    let ask = |action: &str, cwd: &str| -> Output {
        let stdin = format!(r#"{{"action":{action},"cwd":"{cwd}","requester":"my-agent"}}"#);
        spawn(&world, &["ask"], stdin.as_bytes()).wait_with_output().unwrap()
    };
    // `printf` is allowed by a rule; with LD_PRELOAD set it is asked (and lapses: a deny).
    let preload =
        ask(r#"{"type":"run","argv":["printf","x"],"cwd":".","env":{"LD_PRELOAD":"./x.so"}}"#, &ws);
    assert_eq!(answer(&preload)["decision"], "deny", "{}", text(&preload));
    assert!(answer(&preload)["reason"].as_str().unwrap().contains("nobody approved"));
    let harmless = ask(r#"{"type":"run","argv":["printf","x"],"cwd":".","env":{"CI":"1"}}"#, &ws);
    assert_eq!(answer(&harmless)["decision"], "allow", "{}", text(&harmless));
    // A command's own directory is taken from the agent's, and must stay inside.
    std::fs::create_dir_all(world.ws().join("src")).unwrap();
    let inside = ask(r#"{"type":"run","argv":["printf","x"],"cwd":"src"}"#, &ws);
    assert_eq!(answer(&inside)["decision"], "allow", "{}", text(&inside));
    for (run_dir, agent_dir) in [("..", ws.as_str()), ("/", ws.as_str()), (".", "/")] {
        let action = format!(r#"{{"type":"run","argv":["printf","x"],"cwd":"{run_dir}"}}"#);
        let out = ask(&action, agent_dir);
        assert_eq!(answer(&out)["decision"], "deny", "{run_dir} from {agent_dir}: {}", text(&out));
        assert!(text(&out).contains("not a directory inside the workspace"), "{}", text(&out));
    }
    // A write outside the workspace is asked; its preview shows nothing of what is there now.
    let outside = world.ws().parent().unwrap().join("outside.txt");
    std::fs::write(&outside, "SECRET-CONTENT\n").unwrap();
    let call = hook_input(
        &world,
        &format!(
            r#"{{"session_id":"1","cwd":"{ws}","permission_mode":"default","hook_event_name":"PreToolUse","tool_name":"Write","tool_input":{{"file_path":"{}","content":"new\n"}},"tool_use_id":"t"}}"#,
            outside.display()
        ),
    );
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let listed = text(&world.agent_host(&["approvals", "--json"]));
    assert!(listed.contains("+new") && !listed.contains("SECRET-CONTENT"), "{listed}");
    let id = pending_ids(&world).remove(0);
    assert!(world.agent_host(&["deny", &id]).status.success());
    assert_eq!(pre_tool_use(&call.wait_with_output().unwrap()).0, "deny");
    host.stop();
}

fn hook_input(world: &World, input: &str) -> Child {
    spawn(world, &["hook", "claude-code"], input.as_bytes())
}

/// A hook whose deadline passes answers deny, and its question is withdrawn at the host, so no
/// one approves what nobody waits for any more.
#[test]
fn a_hook_that_stops_waiting_withdraws_its_question() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let call = spawn(&world, &["hook", "claude-code", "--timeout", "1s"], &input(&world, "write"));
    let (decision, reason) = pre_tool_use(&call.wait_with_output().unwrap());
    assert_eq!(decision, "deny", "{reason}");
    assert!(reason.contains("nobody answered"), "{reason}");
    assert!(eventually(Duration::from_secs(10), || pending_ids(&world).is_empty()));
    assert!(world.audit().contains("stopped waiting"), "{}", world.audit());
}

/// A stand-in agent (a shell script) asks through the hook before running a Bash command, waits
/// while a paired device decides, and proceeds only once it approved.
#[test]
fn a_scripted_agent_proceeds_once_a_device_approves() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    world.pair(&phone, "approver");
    let call = String::from_utf8(input(&world, "write"))
        .unwrap()
        .replace(r#""tool_name":"Write""#, r#""tool_name":"Bash""#)
        .replace(
            r#""tool_input":{"file_path":"#,
            r#""tool_input":{"command":"touch agent-did-it","file_path":"#,
        );
    let script = world.base.join("agent.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             answer=$(printf '%s' '{call}' | \"$AGENT_HOST\" hook claude-code)\n\
             case \"$answer\" in\n\
               *'\"permissionDecision\":\"allow\"'*) touch agent-did-it; echo proceeded ;;\n\
               *) echo \"stopped: $answer\"; exit 1 ;;\n\
             esac\n"
        ),
    )
    .unwrap();
    let agent = Command::new("sh")
        .arg(&script)
        .current_dir(world.ws())
        .env("AGENT_HOST_HOME", world.home())
        .env("AGENT_HOST", bin("agent-host"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    assert!(!world.ws().join("agent-did-it").exists(), "the agent waits for the decision");
    let id = pending_ids(&world).remove(0);
    let listed = String::from_utf8_lossy(&phone.run(&["pending"]).stdout).into_owned();
    assert!(listed.contains("touch agent-did-it"), "{listed}");
    assert!(phone.run(&["approve", &id]).status.success());
    let out = agent.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "proceeded");
    assert!(world.ws().join("agent-did-it").exists());
}

/// A Bash call for `command` from the workspace, as Claude Code sends it.
fn bash_call(world: &World, command: &str) -> String {
    serde_json::json!({
        "session_id": "7f8e",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": world.ws(),
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command, "description": "d", "timeout": 120000},
        "tool_use_id": "toolu_01",
    })
    .to_string()
}

/// The command Claude Code would run for an allowed Bash call: the hook's `updatedInput`.
fn rewritten(out: &Output) -> String {
    let value = answer(out);
    let specific = &value["hookSpecificOutput"];
    assert_eq!(specific["permissionDecision"], "allow", "{value}");
    assert_eq!(specific["updatedInput"]["timeout"], 120000, "the rest of the input is kept");
    specific["updatedInput"]["command"].as_str().unwrap().to_string()
}

/// Runs `command` as the agent's Bash tool would, from the workspace.
fn agent_runs(world: &World, command: &str) -> Output {
    Command::new("bash")
        .args(["-c", command])
        .current_dir(world.ws())
        .env("AGENT_HOST_HOME", world.home())
        .output()
        .unwrap()
}

/// An allowed Bash call comes back rewritten to run through the host's sandbox, bound to its
/// request: it runs once, only as judged; a command the agent was approved to run cannot reach
/// the host's sockets, key or state, write outside the workspace or open a connection; the
/// refused attempts are audited. `--in-place` leaves the command as it is.
#[test]
fn allowed_commands_run_through_the_sandbox_bound_to_their_request() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let call = |command: &str, args: &[&str]| {
        let args = [&["hook", "claude-code"], args].concat();
        spawn(&world, &args, bash_call(&world, command).as_bytes()).wait_with_output().unwrap()
    };
    let wrapped = rewritten(&call("printf 'hello-%s' sandbox", &[]));
    assert!(wrapped.contains("run-allowed --request"), "{wrapped}");
    let ran = agent_runs(&world, &wrapped);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello-sandbox", "{}", text(&ran));
    // Once only.
    let again = agent_runs(&world, &wrapped);
    assert_eq!(again.status.code(), Some(126), "{}", text(&again));
    // Only as judged: another command under an allowed request is refused, and burns it.
    let wrapped = rewritten(&call("printf ok", &[]));
    let forged = wrapped.replace("printf ok", "touch forged");
    let out = agent_runs(&world, &forged);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(!world.ws().join("forged").exists());
    assert_eq!(agent_runs(&world, &wrapped).status.code(), Some(126));
    let audit = world.audit();
    assert!(audit.contains("not the command allowed under request"), "{audit}");

    // An approved command attacks the host from the sandbox.
    if !e2e::sandbox_available() {
        println!("no sandbox here: nothing to attack");
        return;
    }
    let home = world.home();
    let outside = world.base.join("outside");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        "for f in {owner} {agent} {key} {state}/audit.jsonl; do test -e \"$f\" && echo \"ATTACK sees $f\"; done
touch {outside} 2>/dev/null
echo hi > /dev/tcp/127.0.0.1/{port} 2>/dev/null && echo 'ATTACK connected'
echo probed > probed.txt",
        owner = home.join("state/host.sock").display(),
        agent = home.join("state/agent/agent.sock").display(),
        key = home.join("config/host.key").display(),
        state = home.join("state").display(),
        outside = outside.display(),
    );
    let hook = spawn(&world, &["hook", "claude-code"], bash_call(&world, &probe).as_bytes());
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    assert!(world.agent_host(&["approve", &pending_ids(&world)[0]]).status.success());
    let wrapped = rewritten(&hook.wait_with_output().unwrap());
    let out = agent_runs(&world, &wrapped);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("ATTACK"), "{said}");
    assert_eq!(std::fs::read_to_string(world.ws().join("probed.txt")).unwrap(), "probed\n");
    assert!(!outside.exists(), "wrote outside the workspace");

    // In place: the command is the agent's own.
    let value = answer(&call("printf ok", &["--in-place"]));
    assert!(value["hookSpecificOutput"].get("updatedInput").is_none(), "{value}");
}
