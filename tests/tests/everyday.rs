//! What people run most from a phone: their own toolchain's commands, and shell lines, through
//! the real host, relay and `remote` device.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::time::Duration;

use e2e::{World, eventually, pending_ids, text};

/// The `cargo` this test would run, with the toolchain's homes: from this environment, or the
/// real home's `.cargo` and `.rustup` (where rustup puts them).
fn toolchain() -> Option<(PathBuf, PathBuf)> {
    let path = std::env::var("PATH").ok()?;
    path.split(':').map(|d| PathBuf::from(d).join("cargo")).find(|p| p.is_file())?;
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let dir = |var: &str, default: &str| {
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| home.join(default))
    };
    let (cargo, rustup) = (dir("CARGO_HOME", ".cargo"), dir("RUSTUP_HOME", ".rustup"));
    (cargo.is_dir() && rustup.is_dir()).then_some((cargo, rustup))
}

/// Waits for the one pending action and approves it at the machine.
fn approve_the_pending_one(world: &World) {
    let mut ids = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            ids = pending_ids(world);
            !ids.is_empty()
        }),
        "nothing became pending"
    );
    let out = world.agent_host(&["approve", &ids[0]]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A Rust project whose toolchain lives in the user's home: `cargo test` asked from a phone,
/// approved, runs in the sandbox and reports as the terminal would; the test it runs finds the
/// user's key hidden. The same from `agent-host exec` at the machine.
#[test]
fn cargo_test_from_a_device_runs_with_the_users_toolchain_and_no_secrets() {
    let Some((cargo_home, rustup_home)) = toolchain() else {
        println!("SKIPPED: no cargo toolchain here");
        return;
    };
    let world = World::new();
    let user = world.base.join("user");
    std::fs::create_dir_all(user.join(".ssh")).unwrap();
    std::fs::write(user.join(".ssh/id_ed25519"), "SSH KEY").unwrap();
    std::fs::write(user.join("notes.txt"), "notes").unwrap();
    let ws = world.ws();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(
        ws.join("src/lib.rs"),
        r#"pub fn add(a: u32, b: u32) -> u32 { a + b }

#[test]
fn adds() { assert_eq!(add(2, 2), 4); }

#[test]
fn the_home_reads_but_not_its_key() {
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap());
    assert_eq!(std::fs::read_to_string(home.join("notes.txt")).unwrap(), "notes");
    assert!(std::fs::read(home.join(".ssh/id_ed25519")).unwrap_or_default().is_empty());
}
"#,
    )
    .unwrap();
    let _host = world.up_with_env(
        &[],
        &[
            ("HOME", user.as_os_str()),
            ("CARGO_HOME", cargo_home.as_os_str()),
            ("RUSTUP_HOME", rustup_home.as_os_str()),
        ],
    );
    let phone = world.device("phone");
    world.pair(&phone, "operator");
    let run = phone.spawn(&["--timeout", "240s", "run", "--", "cargo", "test"]);
    approve_the_pending_one(&world);
    let out = run.wait_with_output().unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("test adds ... ok"), "{shown}");
    assert!(shown.contains("test the_home_reads_but_not_its_key ... ok"), "{shown}");

    // At the machine: the same command, asked and approved the same way.
    let exec = world.agent_host_child(&["exec", "--shell", "cargo test 2>&1 | grep -c ' ok$'"]);
    approve_the_pending_one(&world);
    let out = exec.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{}", text(&out));
}

/// A shell line from a device is judged as the compound line it is, every part, and runs as
/// bash would; an exact argv stays an exact argv.
#[test]
fn a_shell_line_is_judged_by_its_parts_and_runs_as_bash_would() {
    let world = World::new();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    world.pair(&phone, "operator");
    // Every part allowed by a rule (a device's command needs an explicit one): runs at once.
    let out = phone.run(&["run", "--shell", "printf abc && printf '%s' def"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"abcdef");
    // One part denied by a rule: the whole line is, and nothing of it runs.
    let out = phone.run(&["run", "--shell", "printf x > made.txt; rm -rf src"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("denied_by_policy"), "{}", text(&out));
    assert!(!world.ws().join("made.txt").exists());
    // A redirection writes: asked (the device named, not its id), then run as bash runs it.
    let run = phone.spawn(&["run", "--shell", "printf hi | tr a-z A-Z > out.txt"]);
    assert!(eventually(Duration::from_secs(20), || !pending_ids(&world).is_empty()));
    let listed = String::from_utf8_lossy(&world.agent_host(&["approvals"]).stdout).into_owned();
    assert!(listed.contains("asked by phone (a paired device)"), "{listed}");
    approve_the_pending_one(&world);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(world.ws().join("out.txt")).unwrap(), "HI");
    // The audit log as people read it names the device; `--ids` gives its id.
    let tail = world.agent_host(&["audit", "tail", "-n", "50"]);
    let tail = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert!(tail.contains("from \"phone\":") && !tail.contains("from dev1"), "{tail}");
    let ids = world.agent_host(&["audit", "tail", "-n", "50", "--ids"]);
    assert!(String::from_utf8_lossy(&ids.stdout).contains("from dev1"), "{}", text(&ids));
    // An exact argv: `>` and `|` are words.
    let out = phone.run(&["run", "--", "printf", "%s %s", "a", "|"]);
    assert_eq!(out.stdout, b"a |", "{}", text(&out));
}

/// A Node project: `npm test` asked from a phone, approved, runs where Node is installed, with
/// npm's cache and logs in the jobs' own cache.
#[test]
fn npm_test_from_a_device_runs_where_node_is_installed() {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = |name: &str| path.split(':').any(|d| PathBuf::from(d).join(name).is_file());
    if !found("npm") || !found("node") {
        println!("SKIPPED: no node and npm here");
        return;
    }
    let world = World::new();
    let ws = world.ws();
    std::fs::write(
        ws.join("package.json"),
        r#"{"name":"tiny","version":"1.0.0","private":true,"scripts":{"test":"node test.js"}}"#,
    )
    .unwrap();
    std::fs::write(
        ws.join("test.js"),
        "require('node:assert').strictEqual(2 + 2, 4); console.log('node test passed');\n",
    )
    .unwrap();
    let _host = world.up(0, &[]);
    let phone = world.device("phone");
    world.pair(&phone, "operator");
    let run = phone.spawn(&["--timeout", "120s", "run", "--", "npm", "test"]);
    approve_the_pending_one(&world);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node test passed"), "{}", text(&out));
    let caches: Vec<_> = std::fs::read_dir(world.home().join("state/sandbox-cache"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(caches.len(), 1, "one cache for the one workspace: {caches:?}");
    assert!(caches[0].join("npm").is_dir(), "npm's cache is not the jobs'");
}
