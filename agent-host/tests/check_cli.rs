//! `agent-host check` as a user runs it: the real binary, real settings files, real symlinks.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

fn check(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .arg("check")
        .args(args)
        .current_dir(cwd)
        .env("AGENT_HOST_HOME", home)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (home, ws) = (dir.path().join("home"), dir.path().join("ws"));
    std::fs::create_dir_all(&ws).unwrap();
    let settings = dir.path().join("s.json");
    std::fs::write(
        &settings,
        r#"{"permissions":{"allow":["Bash(npm run test *)"],"deny":["Bash(rm *)"]}}"#,
    )
    .unwrap();
    let s = settings.to_str().unwrap();

    let v = json(&check(&home, &ws, &["bash", "npm run test -- -u", "--settings", s, "--json"]));
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["rule"], "Bash(npm run test *)");
    assert!(v["reason"].as_str().unwrap().contains("npm run test"));
    assert_eq!(v["explicit"], true, "every part allowed by a rule");
    assert_eq!(v["programs"], serde_json::json!(["npm"]), "what the policy judged");
    assert_eq!(v.as_object().unwrap().len(), 5);

    let v = json(&check(&home, &ws, &["bash", "ls | wc -l", "--json"]));
    assert_eq!((&v["decision"], &v["explicit"]), (&"allow".into(), &false.into()));
    assert_eq!(v["programs"], serde_json::json!(["ls", "wc"]));

    let v = json(&check(&home, &ws, &["bash", "safe && rm -rf x", "--settings", s, "--json"]));
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "Bash(rm *)");

    let v = json(&check(&home, &ws, &["bash", "curl example.com", "--json"]));
    assert_eq!(v["decision"], "ask");
    assert_eq!(v["rule"], serde_json::Value::Null);

    let v = json(&check(&home, &ws, &["bash", "touch x", "--mode", "dontAsk", "--json"]));
    assert_eq!(v["decision"], "deny");
}

#[test]
fn paths_resolve_through_symlinks_as_the_executor_will() {
    let dir = tempfile::tempdir().unwrap();
    let (home, ws) = (dir.path().join("home"), dir.path().join("ws"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(dir.path().join("secret"), "x").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), ws.join("innocent.txt")).unwrap();
    let v = json(&check(&home, &ws, &["read", "innocent.txt", "--json"]));
    assert_eq!(v["decision"], "ask", "{v}");
    std::fs::write(ws.join("plain.txt"), "x").unwrap();
    assert_eq!(json(&check(&home, &ws, &["read", "plain.txt", "--json"]))["decision"], "allow");
}

#[test]
fn bad_usage_and_bad_settings_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = check(&home, dir.path(), &["bash"]);
    assert_eq!(out.status.code(), Some(2));
    let out = check(&home, dir.path(), &["frobnicate", "x"]);
    assert_eq!(out.status.code(), Some(2));

    let missing = dir.path().join("missing.json");
    let out = check(&home, dir.path(), &["bash", "ls", "--settings", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"permissions":{"allow":"Bash"}}"#).unwrap();
    let out = check(&home, dir.path(), &["bash", "ls", "--settings", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("invalid type"), "{err}");

    // An unreadable user settings file refuses too: never a fallback to no rules.
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(home.join("config/settings.json"), "{").unwrap();
    let out = check(&home, dir.path(), &["bash", "ls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("settings.json"));
}

#[test]
fn workspace_allow_rules_count_after_trust() {
    let dir = tempfile::tempdir().unwrap();
    let (home, ws) = (dir.path().join("home"), dir.path().join("ws"));
    std::fs::create_dir_all(ws.join(".claude")).unwrap();
    std::fs::write(
        ws.join(".claude/settings.json"),
        // (`Bash(make *)` would not do: each make target runs its own recipe, so a broad rule
        // must name the targets it covers.)
        r#"{"permissions":{"allow":["Bash(make test *)"]}}"#,
    )
    .unwrap();
    assert_eq!(json(&check(&home, &ws, &["bash", "make test", "--json"]))["decision"], "ask");
    let out = Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .arg("trust")
        .current_dir(&ws)
        .env("AGENT_HOST_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json(&check(&home, &ws, &["bash", "make test", "--json"]))["decision"], "allow");
}
