//! The `remote` command line.
//!
//! Exit status: 0 when done (for `run`, the command's own exit code); 1 when the host refused
//! or failed the request; 3 when no answer came (host offline, relay unreachable, revoked);
//! 126 when policy or an approver denied it, or nobody approved in time; 2 for bad usage or
//! local trouble (no pairing, unreadable key).

use std::io::{Read as _, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use protocol::{Action, HostEvent, Role, Verdict};

use remote::profile::{Pairing, Profile};

mod device;
mod pair;

use device::{decide, pending, request, status, watch};
use pair::pair;
use remote::session::{Session, Silence};

/// A command-line device for agent-host: pair once, then ask the host to run commands, read
/// and change files, and answer its pending actions. Every request is signed by this device's
/// key and judged by the host; nothing here can act on the host by itself.
#[derive(Debug, Parser)]
#[command(name = "remote", version, about)]
pub(crate) struct Cli {
    /// Which paired identity to use (one machine may hold several, one per host; `default`
    /// when not given). `approve` and `deny` without it look in every paired profile.
    #[arg(long, global = true, env = "REMOTE_PROFILE")]
    pub(crate) profile: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// How long to wait for the host's first answer.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Pair with a host, using the link (or QR code content) that `agent-host pair` printed.
    Pair {
        /// The pairing link.
        link: String,
        /// The name to give this device (default: this machine's name).
        #[arg(long)]
        name: Option<String>,
        /// Replace this profile's existing pairing.
        #[arg(long)]
        force: bool,
    },
    /// Show the host, its workspace and sandbox, this device's role, and how many actions wait.
    Status,
    /// Ask the host to run a command; waits for the decision and the result.
    Run {
        /// Return once the request is pending (or done) instead of waiting for the result.
        #[arg(long)]
        no_wait: bool,
        /// Working directory, relative to the workspace root.
        #[arg(long, default_value = ".")]
        cwd: String,
        /// An environment variable to set, NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// A shell line to run as bash runs it (`bash -c LINE`: pipes, redirections, `&&`),
        /// judged by the host's policy part by part, instead of an exact argv.
        #[arg(long, value_name = "LINE", conflicts_with = "argv")]
        shell: Option<String>,
        /// The program and its arguments, exactly (no shell).
        #[arg(last = true, required_unless_present = "shell")]
        argv: Vec<String>,
    },
    /// Print a file of the workspace.
    Read {
        /// The path, relative to the workspace root.
        path: String,
    },
    /// Replace a file of the workspace with what comes on stdin.
    Write {
        /// The path, relative to the workspace root.
        path: String,
    },
    /// Replace the one occurrence of a text in a file.
    Edit {
        /// The path, relative to the workspace root.
        path: String,
        /// The exact text to replace (must occur once).
        #[arg(long)]
        old: String,
        /// Its replacement.
        #[arg(long)]
        new: String,
    },
    /// Type into a session the host shares (`agent-host run`): judged like any request.
    Send {
        /// The session (as `watch` shows it).
        session: String,
        /// The text; a newline is added unless --no-newline.
        text: Option<String>,
        /// Send Ctrl-C instead of text.
        #[arg(long, conflicts_with = "text")]
        interrupt: bool,
        /// Do not add a newline.
        #[arg(long)]
        no_newline: bool,
    },
    /// Sessions on the host: start one.
    #[command(subcommand)]
    Session(SessionCommand),
    /// List the actions waiting for approval, with what exactly each would do.
    Pending {
        /// On every host this machine is paired with (every profile), grouped by host.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending action (as listed by `pending`; a unique id prefix is enough).
    Approve {
        /// The request ids (several: each answered on its own, in turn).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// A note for whoever asked (and the host's audit log).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Deny a pending action.
    Deny {
        /// The request ids (several: each answered on its own, in turn).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Why, for whoever asked (an agent is told: "use cargo nextest instead") and the
        /// host's audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Print the host's events as they come (pending actions, decisions, results).
    Watch {
        /// Also run this shell command (`sh -c`) once for each pending action, with the action
        /// (its `action_pending` event, JSON, one line) on its standard input: for
        /// `notify-send`, a pager service, a chat hook. One at a time; one that fails is
        /// reported and the watch goes on.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Every host this machine is paired with at once (every profile), each line after
        /// `[profile]` (JSON: `{"profile", "event"}`).
        #[arg(long)]
        all: bool,
    },
}

/// `remote session …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SessionCommand {
    /// Ask the host to start a program as a session (as `agent-host run -- COMMAND` at the
    /// machine: in the host's jail, in the workspace), shared with every device. Judged by the
    /// host's `Session(…)` rules; asked otherwise. Waits until it started (or was refused).
    Start {
        /// Return once the request is pending (or done) instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// The program and its arguments (`-- claude`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("remote: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remote: {e:#}");
            let silent = e.downcast_ref::<Silence>().is_some();
            ExitCode::from(if silent { 3 } else { 2 })
        }
    }
}

pub(super) struct Ctx {
    json: bool,
    timeout: Duration,
    pairing: Pairing,
    session: Session,
    /// Session events that came with a sync (live sessions and their recent output).
    backlog: Vec<HostEvent>,
    /// Output chunks already shown, (session, seq): a sync sends the scrollback again.
    shown: std::collections::HashSet<(protocol::SessionId, u64)>,
}

impl Ctx {
    /// Whether a session event is new (not a repeat of output already shown).
    fn fresh(&mut self, event: &HostEvent) -> bool {
        match event {
            HostEvent::Output { session, seq, .. } => self.shown.insert((*session, *seq)),
            HostEvent::SessionStarted { session, .. } => self.shown.insert((*session, u64::MAX)),
            _ => true,
        }
    }
}

impl Ctx {
    /// A device of `profile`, linked to its host.
    fn open(profile: &Profile, json: bool, timeout: Duration) -> anyhow::Result<Self> {
        let (pairing, session) = Session::open(profile)?;
        Ok(Self { json, timeout, pairing, session, backlog: Vec::new(), shown: Default::default() })
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let explicit = cli.profile.is_some();
    let profile = Profile::open(cli.profile.as_deref().unwrap_or("default"))?;
    match cli.command {
        Command::Pair { link, name, force } => {
            return pair(&profile, &link, name, force, cli.json, cli.timeout).await;
        }
        Command::Pending { all: true } => return pending_all(cli.json, cli.timeout).await,
        Command::Watch { exec, all: true } => return watch_all(exec, cli.json, cli.timeout).await,
        Command::Approve { ids, note } => {
            return answer_each(
                &ids,
                Verdict::Approve,
                note,
                explicit.then_some(&profile),
                (cli.json, cli.timeout),
            )
            .await;
        }
        Command::Deny { ids, reason } => {
            return answer_each(
                &ids,
                Verdict::Deny,
                reason,
                explicit.then_some(&profile),
                (cli.json, cli.timeout),
            )
            .await;
        }
        _ => {}
    }
    let mut ctx = Ctx::open(&profile, cli.json, cli.timeout)?;
    match cli.command {
        Command::Pair { .. } => unreachable!("handled above"),
        Command::Status => status(&mut ctx).await,
        Command::Pending { .. } => pending(&mut ctx).await,
        Command::Run { no_wait, cwd, env, shell, argv } => {
            let argv = match shell {
                Some(line) => vec!["bash".into(), "-c".into(), line],
                None => argv,
            };
            let mut vars = std::collections::BTreeMap::new();
            for pair in env {
                let Some((name, value)) = pair.split_once('=') else {
                    anyhow::bail!("--env takes NAME=VALUE, not {pair}");
                };
                vars.insert(name.to_string(), value.to_string());
            }
            request(&mut ctx, Action::Run { argv, cwd, env: vars }, !no_wait, true).await
        }
        Command::Read { path } => request(&mut ctx, Action::ReadFile { path }, true, false).await,
        Command::Write { path } => {
            let mut content = Vec::new();
            std::io::stdin().read_to_end(&mut content)?;
            let action = Action::WriteFile { path, content: protocol::Blob(content) };
            request(&mut ctx, action, true, false).await
        }
        Command::Edit { path, old, new } => {
            request(&mut ctx, Action::EditFile { path, old, new }, true, false).await
        }
        Command::Send { session, text, interrupt, no_newline } => {
            let session: protocol::SessionId = session.parse()?;
            let data = match (interrupt, text) {
                (true, _) => "\u{3}".to_string(),
                (false, Some(text)) if no_newline => text,
                (false, Some(text)) => format!("{text}\n"),
                (false, None) => anyhow::bail!("give the text to send, or --interrupt"),
            };
            request(&mut ctx, Action::SessionInput { session, data }, true, false).await
        }
        Command::Session(SessionCommand::Start { no_wait, command }) => {
            request(&mut ctx, Action::StartSession { command }, !no_wait, false).await
        }
        Command::Approve { .. } | Command::Deny { .. } => unreachable!("handled above"),
        Command::Watch { exec, all: _ } => watch(&mut ctx, exec, None).await,
    }
}

/// `pending --all`: each paired profile's host in turn, its pending actions under its name; a
/// host that does not answer is said and skipped.
async fn pending_all(json: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    let profiles = Profile::all()?;
    anyhow::ensure!(!profiles.is_empty(), "this machine is paired with no host (remote pair LINK)");
    let mut failed = false;
    for profile in profiles {
        let name = profile.name();
        let listed = async {
            let mut ctx = Ctx::open(&profile, json, timeout)?;
            device::pending_of(&mut ctx).await
        };
        match listed.await {
            Ok((host, pending)) if json => {
                print_json(
                    &serde_json::json!({ "profile": name, "host": host, "pending": pending }),
                )?;
            }
            Ok((host, pending)) => {
                println!("== {host} (profile {name}): {} waiting", pending.len());
                for p in &pending {
                    device::print_pending(&mut std::io::stdout(), p)?;
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("remote: profile {name}: {e:#}");
            }
        }
    }
    Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// `approve` / `deny` with one id or several, each answered on its own and in turn: with
/// `--profile` (`profile`) on that profile's host, else on whichever host has it.
async fn answer_each(
    ids: &[String],
    verdict: Verdict,
    note: Option<String>,
    profile: Option<&Profile>,
    (json, timeout): (bool, Duration),
) -> anyhow::Result<ExitCode> {
    let mut ctx = profile.map(|p| Ctx::open(p, json, timeout)).transpose()?;
    let mut worst = ExitCode::SUCCESS;
    for id in ids {
        let this = match &mut ctx {
            Some(ctx) => decide(ctx, id, verdict, note.clone()).await,
            None => decide_anywhere(id, verdict, note.clone(), json, timeout).await,
        };
        worst = answered(worst, this);
    }
    Ok(worst)
}

/// One answer of several: what it came to is said, and the first failure's exit code kept.
fn answered(worst: ExitCode, this: anyhow::Result<ExitCode>) -> ExitCode {
    let code = this.unwrap_or_else(|e| {
        eprintln!("remote: {e:#}");
        ExitCode::from(2)
    });
    if worst == ExitCode::SUCCESS { code } else { worst }
}

/// `watch --all`: a watch of each paired profile's host at once; one that ends (its host
/// unreachable, the device revoked) is said, and the others go on.
async fn watch_all(
    exec: Option<String>,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let profiles = Profile::all()?;
    anyhow::ensure!(!profiles.is_empty(), "this machine is paired with no host (remote pair LINK)");
    let mut watches = Vec::new();
    for profile in profiles {
        let (name, exec) = (profile.name(), exec.clone());
        watches.push(tokio::spawn(async move {
            let watched = async {
                let mut ctx = Ctx::open(&profile, json, timeout)?;
                watch(&mut ctx, exec, Some(name.clone())).await
            };
            if let Err(e) = watched.await {
                eprintln!("remote: profile {name}: {e:#}");
            }
        }));
    }
    for watch in watches {
        let _ = watch.await;
    }
    Ok(ExitCode::from(3))
}

/// `approve ID` / `deny ID` without `--profile`: the one pending action whose id starts with
/// ID on any host this machine is paired with, answered there.
async fn decide_anywhere(
    prefix: &str,
    verdict: Verdict,
    note: Option<String>,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    // Short prefixes match too easily across hosts.
    const MIN_PREFIX: usize = 8;
    let whole = prefix.len() == 32;
    anyhow::ensure!(
        prefix.len() >= MIN_PREFIX,
        "give at least {MIN_PREFIX} characters of the id (or --profile to look on one host)"
    );
    let mut found: Vec<(Ctx, String, protocol::RequestId)> = Vec::new();
    let mut hosts = std::collections::HashSet::new();
    let mut unreachable = Vec::new();
    for profile in Profile::all()? {
        let looked = async {
            let mut ctx = Ctx::open(&profile, json, timeout)?;
            let (host, pending) = device::pending_of(&mut ctx).await?;
            anyhow::Ok((ctx, host, pending))
        };
        match looked.await {
            // Two profiles paired with one host see the same actions: counted once.
            Ok((ctx, _, _)) if !hosts.insert(ctx.pairing.host.to_string()) => {}
            Ok((ctx, host, pending)) => {
                let mut ids = pending.iter().filter_map(device::pending_id);
                let mine: Vec<_> =
                    ids.by_ref().filter(|id| id.to_string().starts_with(prefix)).collect();
                if let [id] = mine[..] {
                    found.push((ctx, host, id));
                } else if mine.len() > 1 {
                    anyhow::bail!(
                        "several pending actions on {host} start with {prefix}; give more of the id"
                    );
                }
            }
            Err(e) => {
                eprintln!("remote: profile {}: {e:#}", profile.name());
                unreachable.push(profile.name());
            }
        }
    }
    if !whole && !unreachable.is_empty() && !found.is_empty() {
        anyhow::bail!(
            "profiles {} did not answer, so {prefix} may also name an action there: give the whole id, or --profile",
            unreachable.join(", ")
        );
    }
    let (mut ctx, _, id) = match found.len() {
        1 => found.remove(0),
        0 => anyhow::bail!("no pending action has an id starting with {prefix} on any host"),
        _ => anyhow::bail!(
            "pending actions on {} start with {prefix}; give more of the id",
            found.iter().map(|(_, host, _)| host.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    // On the same link, by its whole id: no other action can be taken for it meanwhile.
    decide(&mut ctx, &id.to_string(), verdict, note).await
}

pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Approver => "approver",
        Role::Operator => "operator",
    }
}

pub(super) fn this_machine() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}
