//! The `agent-host` command line. `main.rs` only parses and calls [`run`], so tests drive every
//! command in-process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::dirs::{self, Dirs};
use crate::policy::{Mode, Policy, Settings, Subject, Trust};

/// The host of the remote-control bridge: it alone decides and executes on this machine.
#[derive(Debug, Parser)]
#[command(name = "agent-host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what the policy decides for a command or a path, and why.
    ///
    /// Settings are merged from the user's file, the workspace's `.claude/settings.json` and
    /// `.claude/settings.local.json` (their allow rules count only once the workspace is
    /// trusted), and every `--settings FILE`. Exit status 0 whatever the decision; 2 for bad
    /// usage or a settings file that cannot be read.
    Check(CheckArgs),
    /// Trust a workspace: its own settings' allow rules and extra directories start to count.
    Trust {
        /// The workspace (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Say which sandbox is in force, how processes are limited, and why.
    Doctor,
}

/// `agent-host audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the head; name the first record that was edited, removed,
    /// inserted or reordered. Exit status 0 when intact, 1 when not, 2 when unreadable.
    Verify {
        /// The log (default: audit.jsonl in the host's state directory).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
    /// Show the last records readably.
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing records as they are appended.
        #[arg(short, long)]
        follow: bool,
        /// The log (default: audit.jsonl in the host's state directory).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

/// What `check` judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckKind {
    /// A shell command line.
    Bash,
    /// Reading a file.
    Read,
    /// Writing or editing a file.
    Edit,
    /// Fetching a URL.
    Webfetch,
    /// Any other tool, by name.
    Tool,
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// bash, read, edit, webfetch or tool.
    pub kind: CheckKind,
    /// The command line, path, URL or tool name.
    pub subject: String,
    /// An extra settings file (repeatable); its rules count as the user's own.
    #[arg(long = "settings", value_name = "FILE")]
    pub settings: Vec<PathBuf>,
    /// The workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The mode, overriding every file's `defaultMode`.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Print one JSON object: {"decision", "reason", "rule"}.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Trust { dir } => trust(dir),
        Command::Audit(command) => audit(command),
        Command::Doctor => doctor(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent-host: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let default_log = || Dirs::discover().map(|d| d.audit_log());
    match command {
        AuditCommand::Verify { log } => {
            let log = match log {
                Some(l) => l,
                None => default_log()?,
            };
            match crate::audit::verify(&log) {
                Ok(v) => {
                    let head = v
                        .last
                        .map(|(seq, hash)| format!(", head #{seq} {hash}"))
                        .unwrap_or_default();
                    println!("ok: {} records intact{head}", v.records);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ crate::audit::AuditError::Io { .. }) => Err(e.into()),
                Err(e) => {
                    println!("TAMPERED: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Tail { lines, follow, log } => {
            let log = match log {
                Some(l) => l,
                None => default_log()?,
            };
            let records = crate::audit::read_records(&log)?;
            let mut out = std::io::stdout().lock();
            for r in records.iter().skip(records.len().saturating_sub(lines)) {
                writeln!(out, "{}", crate::audit::describe(r))?;
            }
            out.flush()?;
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            let mut seen = records.len();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(300));
                let records = crate::audit::read_records(&log)?;
                for r in records.iter().skip(seen) {
                    writeln!(out, "{}", crate::audit::describe(r))?;
                }
                out.flush()?;
                seen = records.len();
            }
        }
    }
}

fn doctor() -> anyhow::Result<ExitCode> {
    use crate::exec::{Sandbox, process_limit_available};
    let dirs = Dirs::discover()?;
    println!("config:  {}", dirs.config.display());
    println!("state:   {}", dirs.state.display());
    let ok = match Sandbox::detect() {
        Ok(sandbox) => {
            println!("sandbox: {}", sandbox.describe());
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
    match process_limit_available() {
        Some(how) => println!("limits:  process count limited by {how}"),
        None => println!(
            "limits:  no process limit available (root without a writable pids cgroup); timeouts still apply"
        ),
    }
    let probe = std::env::temp_dir().join(format!("agent-host-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&probe)?;
    let confined = crate::confine::Workspace::open(std::slice::from_ref(&probe))
        .and_then(|w| w.list(Path::new(".")).map(|_| ()));
    let _ = std::fs::remove_dir(&probe);
    match confined {
        Ok(()) => println!("files:   confined by openat2 RESOLVE_BENEATH"),
        Err(e) => println!("files:   UNAVAILABLE: {e}"),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn trust(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::discover()?;
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let trusted = dirs::trust(&dirs, &dir)?;
    println!("trusted {}", trusted.display());
    Ok(ExitCode::SUCCESS)
}

/// Loads every settings file that applies to `workspace`, trusted or not.
pub fn load_settings(
    dirs: &Dirs,
    workspace: &Path,
    extra: &[PathBuf],
) -> anyhow::Result<Vec<(Settings, Trust)>> {
    let mut files = Vec::new();
    let user = dirs.user_settings();
    if user.exists() {
        files.push((Settings::load(&user)?, Trust::Trusted));
    }
    let workspace_real = workspace.canonicalize().unwrap_or_else(|_| workspace.to_path_buf());
    let trust = if dirs::trusted(dirs)?.contains(&workspace_real) {
        Trust::Trusted
    } else {
        Trust::Untrusted
    };
    for name in ["settings.json", "settings.local.json"] {
        let path = workspace.join(".claude").join(name);
        if path.exists() {
            files.push((Settings::load(&path)?, trust));
        }
    }
    for path in extra {
        files.push((Settings::load(path)?, Trust::Trusted));
    }
    Ok(files)
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
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
