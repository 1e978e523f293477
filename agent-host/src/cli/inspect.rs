//! The commands that look at this machine without a running host: the audit log, `doctor`,
//! trusting a workspace and checking what policy says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agent_host::dirs::{self, Dirs};
use agent_host::policy::{Policy, Subject};

use super::client::device_names;
use super::start::load_settings;
use super::{AuditCommand, CheckArgs, CheckKind};

pub(super) fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let default_log = || Dirs::discover().map(|d| d.audit_log());
    match command {
        AuditCommand::Verify { log } => {
            let log = match log {
                Some(l) => l,
                None => default_log()?,
            };
            match agent_host::audit::verify(&log) {
                Ok(v) => {
                    let head = v
                        .last
                        .map(|(seq, hash)| format!(", head #{seq} {hash}"))
                        .unwrap_or_default();
                    let unsynced = if v.unsynced > 0 {
                        format!(
                            " ({} just written by the running host, not yet synced)",
                            v.unsynced
                        )
                    } else {
                        String::new()
                    };
                    println!("ok: {} records intact{head}{unsynced}", v.records);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ agent_host::audit::AuditError::Io { .. }) => Err(e.into()),
                Err(e) => {
                    println!("TAMPERED: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Tail { lines, follow, log, ids } => {
            let log = match log {
                Some(l) => l,
                None => default_log()?,
            };
            let names = if ids { Default::default() } else { device_names() };
            let name_of = |id: &str| names.get(id).cloned();
            let records = agent_host::audit::read_records(&log)?;
            let mut out = std::io::stdout().lock();
            for r in records.iter().skip(records.len().saturating_sub(lines)) {
                writeln!(out, "{}", agent_host::audit::describe(r, &name_of))?;
            }
            out.flush()?;
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            let mut seen = records.len();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(300));
                let records = agent_host::audit::read_records(&log)?;
                for r in records.iter().skip(seen) {
                    writeln!(out, "{}", agent_host::audit::describe(r, &name_of))?;
                }
                out.flush()?;
                seen = records.len();
            }
        }
    }
}

pub(super) fn doctor() -> anyhow::Result<ExitCode> {
    use agent_host::exec::{Sandbox, process_limit_available};
    let dirs = Dirs::discover()?;
    println!("config:  {}", dirs.config.display());
    println!("state:   {}", dirs.state.display());
    println!(
        "sockets: owner {} (hidden from every sandbox and jail)",
        dirs::owner_socket(&dirs).display()
    );
    println!(
        "         agent {} (ask, hook, sessions; bound into jails)",
        dirs::agent_socket(&dirs).display()
    );
    let helper = std::env::current_exe().ok();
    let ok = match Sandbox::detect(helper.as_deref()) {
        Ok(sandbox) => {
            println!("sandbox: {}", sandbox.describe());
            if matches!(sandbox, Sandbox::Bubblewrap(_)) {
                if agent_host::landlock_sandbox::layer_available() {
                    println!(
                        "secrets: hidden by bubblewrap and kept unreadable by a Landlock layer \
                         inside it (also when replaced or made while a job runs)"
                    );
                } else {
                    println!(
                        "secrets: hidden by bubblewrap's mounts only (no Landlock with the \
                         \"refer\" right here, Linux 5.19): a secret replaced on the machine \
                         while a job runs shows through to it"
                    );
                }
            }
            true
        }
        Err(e) => {
            println!("sandbox: NONE. {e}.");
            println!(
                "         Commands will not run unless you opt in, at this machine, to running them"
            );
            println!(
                "         UNSANDBOXED with your full rights. Install bubblewrap instead if you can."
            );
            false
        }
    };
    let here = std::env::current_dir().and_then(|d| d.canonicalize()).unwrap_or_default();
    let cache = Some(dirs.sandbox_cache_for(&here));
    match agent_host::userenv::UserEnv::from_host(&dirs.user_settings(), cache) {
        Ok(user) => {
            for line in user.describe() {
                println!("jobs:    {line}");
            }
        }
        Err(e) => println!("jobs:    the settings do not read: {e}"),
    }
    match Sandbox::bubblewrap() {
        Ok(_) => println!(
            "jail:    `agent-host run` starts its program jailed by bubblewrap (workspace \
             writable, host state and owner socket hidden, agents' settings read-only, the \
             secrets jobs do not see hidden but the agents' logins)"
        ),
        Err(e) => println!(
            "jail:    NONE ({}): `agent-host run` refuses to start a session unless given \
             --no-jail, which runs it with your full rights",
            e.0
        ),
    }
    for line in hook_modes() {
        println!("hook:    {line}");
    }
    match process_limit_available() {
        Some(how) => println!("limits:  process count limited by {how}"),
        None => println!(
            "limits:  no process limit available (root without a writable pids cgroup); timeouts still apply"
        ),
    }
    let probe = std::env::temp_dir().join(format!("agent-host-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&probe)?;
    let confined = agent_host::confine::Workspace::open(std::slice::from_ref(&probe))
        .and_then(|w| w.list(Path::new(".")).map(|_| ()));
    let _ = std::fs::remove_dir(&probe);
    match confined {
        Ok(()) => println!("files:   confined by openat2 RESOLVE_BENEATH"),
        Err(e) => println!("files:   UNAVAILABLE: {e}"),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// How Claude Code's settings files here call the hook: one line each.
pub(super) fn hook_modes() -> Vec<String> {
    fn commands<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match v.as_str() {
                        Some(s) if key == "command" => out.push(s),
                        _ => commands(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| commands(v, out)),
            _ => {}
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cwd = std::env::current_dir().ok();
    let files = [
        home.as_ref().map(|h| h.join(".claude/settings.json")),
        home.as_ref().map(|h| h.join(".claude/settings.local.json")),
        cwd.as_ref().map(|d| d.join(".claude/settings.json")),
        cwd.as_ref().map(|d| d.join(".claude/settings.local.json")),
    ];
    let mut lines = Vec::new();
    for file in files.into_iter().flatten() {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let mut found = Vec::new();
        commands(&value, &mut found);
        for command in found.into_iter().filter(|c| c.contains("hook claude-code")) {
            let mode = if command.contains("--in-place") {
                "IN PLACE: the agent runs allowed Bash commands itself, outside the host's sandbox"
            } else {
                "allowed Bash commands run through the host's sandbox"
            };
            lines.push(format!("{}: {mode}", file.display()));
        }
    }
    if lines.is_empty() {
        lines.push(
            "not configured in Claude Code's settings here (see README, \"Agents ask before they act\")".into(),
        );
    }
    lines
}

pub(super) fn trust(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::discover()?;
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let trusted = dirs::trust(&dirs, &dir)?;
    println!("trusted {}", trusted.display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::discover()?;
    let cwd = std::env::current_dir()?;
    let workspace = args.workspace.clone().unwrap_or_else(|| cwd.clone());
    let files = load_settings(&dirs, &workspace, &args.settings)?;
    let policy = Policy::new(&workspace, files, args.mode, dirs.all());
    let subject = match args.kind {
        CheckKind::Bash => Subject::Bash(args.subject.clone()),
        CheckKind::Read => Subject::Read(PathBuf::from(&args.subject)),
        CheckKind::Edit => Subject::Edit(PathBuf::from(&args.subject)),
        CheckKind::Webfetch => Subject::WebFetch(args.subject.clone()),
        CheckKind::Tool => Subject::Tool(args.subject.clone()),
        CheckKind::Session => {
            Subject::Session(args.subject.split_whitespace().map(String::from).collect())
        }
    };
    let decision = policy.decide(&subject, &cwd);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &decision)?;
        writeln!(out)?;
    } else {
        for note in policy.notes() {
            eprintln!("note: {note}");
        }
        writeln!(out, "{}: {}", decision.decision, decision.reason)?;
        if let Some(rule) = &decision.rule {
            writeln!(out, "rule: {rule}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
