//! The `agent-host` command line: its arguments and [`run`], which hands each command to the
//! file of its concern (starting the host and loading its settings in `start`, talking to a
//! running host in `client`, looking at this machine in `inspect`). `main.rs` only parses and
//! calls [`run`], so tests drive every command in-process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use agent_host::policy::Mode;

mod client;
mod inspect;
mod start;
mod up;

use client::{
    approvals, ask, decide, devices, exec, hook_claude_code, pair, run_allowed, run_session,
};
use inspect::{audit, check, doctor, trust};
use start::{serve, up};

/// The host of the remote-control bridge: it alone decides and executes on this machine.
#[derive(Debug, Parser)]
#[command(name = "agent-host", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// (internal) Restrict this process with Landlock and seccomp, then run a command.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(agent_host::landlock_sandbox::HelperArgs),
    /// (internal) Inside a sandbox started ahead: keep the given places unreadable, read the
    /// job from the pool, run it, and report how it ended.
    #[command(name = "__launch", hide = true)]
    Launch {
        /// The places to keep unreadable (with Landlock, besides bubblewrap's mounts).
        #[arg(last = true)]
        hidden: Vec<PathBuf>,
    },
    /// (internal) Inside a jail: scope this process away from abstract unix sockets made
    /// outside, then run a command.
    #[command(name = "__scope", hide = true)]
    Scope {
        /// The command.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Run the host for one workspace: identity key, policy, approvals, audit log, sandbox,
    /// the owner and agent sockets the other commands talk to, and (with --relay) the link to
    /// paired devices.
    Serve(ServeArgs),
    /// List the actions waiting for approval.
    Approvals {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Where each action (waiting, or settled lately) got on each device, and the pushes
        /// to devices.
        #[arg(long)]
        delivery: bool,
    },
    /// Approve a pending action (the exact action listed by `approvals`).
    Approve {
        /// The request id (a unique prefix is enough).
        id: String,
        /// A note for whoever asked (and the audit log).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Deny a pending action.
    Deny {
        /// The request id (a unique prefix is enough).
        id: String,
        /// Why, for whoever asked (an agent is told: "use cargo nextest instead") and the
        /// audit log.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Start the host for this directory with an embedded relay, and print a pairing link and
    /// QR code. Loopback by default; `--lan` lets a phone on the same network reach it.
    Up(UpArgs),
    /// Pair a device with the running host: prints a QR code and a one-time link, then asks
    /// here before the device is paired.
    Pair(PairArgs),
    /// List paired devices, or change one (`revoke`, `rename`, `set-role`).
    Devices {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// A change to make.
        #[command(subcommand)]
        change: Option<DevicesCommand>,
    },
    /// Answer an agent's hook: reads the hook's JSON on stdin, asks the host, prints the
    /// decision. Always answers (exit 0): an unreachable host or no answer in time is a deny.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Ask the host about one action (JSON on stdin: {"action": {...}, "cwd": "...",
    /// "requester": "..."}) and print {"decision", "reason", "request"}. Exit status: 0 allow,
    /// 1 deny, 3 the host could not be asked or nobody answered in time (a deny), 2 bad input.
    Ask {
        /// How long to wait for a person when policy asks.
        #[arg(long, default_value = "9m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Run a program in a pseudo-terminal at this terminal, shared with paired devices: they see
    /// its output, and an operator's input to it is judged like any request (prompt text to an
    /// agent is allowed; each input to a shell or an interpreter is asked). The program runs in
    /// the host's jail: the workspace writable, the host's keys, state and owner socket absent,
    /// the agents' settings read-only, the network on. Exits with the program's exit code.
    Run {
        /// Treat the program as a coding agent (known agents such as `claude` are by default).
        #[arg(long, conflicts_with = "shell")]
        agent: bool,
        /// Treat the program as a shell or an interpreter (the default for unknown programs).
        #[arg(long)]
        shell: bool,
        /// Run the program WITHOUT the jail, with your full rights: it and everything it starts
        /// can then change authority (approve, pair, trust) as you could.
        #[arg(long)]
        no_jail: bool,
        /// End the program when the link to the host ends (a session the host started for a
        /// device: it must not outlive the host, nor be shared again with the next one).
        #[arg(long, hide = true, conflicts_with = "no_jail")]
        end_with_host: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run, through the host's sandbox, a command an agent's hook was allowed under REQUEST
    /// (what the hook rewrites an allowed Bash command into). Only the command judged, once, in
    /// the directory judged. Exits with the command's exit code; 126 when refused.
    RunAllowed {
        /// The request the command was judged under.
        #[arg(long)]
        request: String,
        /// The agent's working directory, as the hook was told it.
        #[arg(long)]
        cwd: String,
        /// The command, as judged.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Run a command through the host: policy, approval, sandbox and audit, as remote requests
    /// are. Exits with the command's exit code; 126 when denied.
    Exec {
        /// Return once the request is pending instead of waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
        /// Working directory, relative to the workspace root.
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// A shell line to run as bash runs it (`bash -c LINE`), judged part by part, instead
        /// of an exact argv.
        #[arg(long, value_name = "LINE", conflicts_with = "argv")]
        shell: Option<String>,
        /// The program and its arguments, exactly (no shell).
        #[arg(last = true, required_unless_present = "shell")]
        argv: Vec<String>,
    },
}

/// `agent-host hook …`
#[derive(Debug, Subcommand)]
pub(crate) enum HookCommand {
    /// Claude Code's PreToolUse and PermissionRequest hooks. An allowed Bash command is
    /// handed back rewritten to run through the host's sandbox (`agent-host run-allowed`).
    ClaudeCode {
        /// How long to wait for a person when policy asks (keep it under the hook's timeout in
        /// the agent's settings).
        #[arg(long, default_value = "9m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Let the agent run allowed Bash commands itself, outside the host's sandbox (for
        /// agents or versions that cannot take a rewritten command).
        #[arg(long)]
        in_place: bool,
    },
}

/// `agent-host devices …`
#[derive(Debug, Subcommand)]
pub(crate) enum DevicesCommand {
    /// Remove a device: it is cut off at once.
    Revoke {
        /// Its id (a unique prefix is enough).
        id: String,
    },
    /// Rename a device.
    Rename {
        /// Its id (a unique prefix is enough).
        id: String,
        /// The new name.
        name: String,
    },
    /// Change a device's role.
    SetRole {
        /// Its id (a unique prefix is enough).
        id: String,
        /// viewer, approver or operator.
        #[arg(value_parser = parse_role)]
        role: protocol::Role,
    },
}

fn parse_role(s: &str) -> Result<protocol::Role, String> {
    match s {
        "viewer" => Ok(protocol::Role::Viewer),
        "approver" => Ok(protocol::Role::Approver),
        "operator" => Ok(protocol::Role::Operator),
        _ => Err("viewer, approver or operator".into()),
    }
}

/// Arguments of `pair`.
#[derive(Debug, clap::Args)]
pub(crate) struct PairArgs {
    /// What the device may do: viewer (sees), approver (also answers pending actions) or
    /// operator (also requests actions).
    #[arg(long, default_value = "operator", value_parser = parse_role)]
    pub(crate) role: protocol::Role,
    /// The name to register the device under (default: the name it gives itself).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// How long the link works.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) expires: std::time::Duration,
    /// Pair the device that proves the secret without asking (for scripts run here).
    #[arg(long)]
    pub(crate) yes: bool,
}

/// Arguments of `up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// The host's settings, sandbox and timeouts.
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Listen on this machine's LAN address instead of loopback.
    #[arg(long)]
    pub(crate) lan: bool,
    /// The embedded relay's port.
    #[arg(long, default_value_t = 7443)]
    pub(crate) port: u16,
    /// The role of the device paired with the printed link.
    #[arg(long, default_value = "operator", value_parser = parse_role)]
    pub(crate) role: protocol::Role,
    /// Pair the device that proves the printed link's secret without asking.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Print no pairing link at start (pair later with `agent-host pair`).
    #[arg(long)]
    pub(crate) no_pair: bool,
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// An extra settings file (repeatable).
    #[arg(long = "settings", value_name = "FILE")]
    pub(crate) settings: Vec<PathBuf>,
    /// The mode, overriding every file's `defaultMode`.
    #[arg(long, value_enum)]
    pub(crate) mode: Option<Mode>,
    /// Run commands WITHOUT a sandbox when none can work here. Never the default.
    #[arg(long)]
    pub(crate) allow_unsandboxed: bool,
    /// How long a pending action waits for a person before it counts as denied.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) approval_timeout: std::time::Duration,
    /// How long a command may run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) command_timeout: std::time::Duration,
    /// The relay that links paired devices, `HOST:PORT` (not with `up`, which embeds one), or
    /// several nodes of a cluster, comma-separated: the host moves to the next when one fails,
    /// and pairing links name them all.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) relay: Option<String>,
    /// The relay certificate's SHA-256 (hex), to pin a self-signed relay; without it the
    /// system's certificate authorities are trusted.
    #[arg(long, value_name = "SHA256", requires = "relay")]
    pub(crate) relay_cert: Option<String>,
    /// Where browsers open the web UI, `HOST[:PORT]`, when it is not served by the relay (a
    /// static copy of `web/src` on an origin you trust; README, "The web UI on an origin of
    /// your own"): pairing links name it, and the relay apart.
    #[arg(long, value_name = "HOST[:PORT]", requires = "relay")]
    pub(crate) page: Option<String>,
    /// The name devices see for this host (default: the machine's name).
    #[arg(long)]
    pub(crate) host_name: Option<String>,
    /// The two-person rule: a device may not approve an action it requested itself.
    #[arg(long)]
    pub(crate) two_person: bool,
    /// Who runs this host, for push services (`mailto:you@example.org` or an `https:` URL);
    /// they may write there about the host's pushes.
    #[arg(long, value_name = "MAILTO_OR_URL")]
    pub(crate) push_contact: Option<String>,
    /// Certificate authorities (PEM) trusted for push services besides the system's: a push
    /// service of your own.
    #[arg(long, value_name = "PEM_FILE")]
    pub(crate) push_ca: Option<PathBuf>,
    /// Post a content-free "an action needs you" to this ntfy-style topic URL whenever an
    /// action starts to wait (for push you host yourself).
    #[arg(long, value_name = "URL")]
    pub(crate) ntfy: Option<String>,
    /// A push service's origin (`https://host[:port]`) devices may subscribe with besides the
    /// browsers' own (repeatable): a push service of your own.
    #[arg(long = "push-allow", value_name = "ORIGIN")]
    pub(crate) push_allow: Vec<String>,
    /// How long a device has to acknowledge a notification before it is pushed again.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) push_ack_wait: Option<std::time::Duration>,
}

/// `agent-host audit …`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
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
        /// Devices by their ids, not their names.
        #[arg(long)]
        ids: bool,
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
pub(crate) enum CheckKind {
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
    /// Starting a session (a device's `remote session start`): the command line, its words
    /// split at spaces.
    Session,
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// bash, read, edit, webfetch, tool or session.
    pub(crate) kind: CheckKind,
    /// The command line, path, URL or tool name.
    pub(crate) subject: String,
    /// An extra settings file (repeatable); its rules count as the user's own.
    #[arg(long = "settings", value_name = "FILE")]
    pub(crate) settings: Vec<PathBuf>,
    /// The workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) workspace: Option<PathBuf>,
    /// The mode, overriding every file's `defaultMode`.
    #[arg(long, value_enum)]
    pub(crate) mode: Option<Mode>,
    /// Print one JSON object: {"decision", "reason", "rule"}.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Trust { dir } => trust(dir),
        Command::Audit(command) => audit(command),
        Command::Doctor => doctor(),
        Command::Sandbox(args) => {
            // Only reached when the sandbox could not be set up or the command not started:
            // 125, as `env` and `timeout` do, so it is not mistaken for the command's own code.
            eprintln!("agent-host: {:#}", agent_host::landlock_sandbox::run_helper(&args));
            return ExitCode::from(125);
        }
        Command::Launch { hidden } => {
            return ExitCode::from(agent_host::exec::launch_in_sandbox(&hidden));
        }
        Command::Scope { argv } => {
            eprintln!("agent-host: {:#}", agent_host::landlock_sandbox::scope_then_run(&argv));
            return ExitCode::from(125);
        }
        Command::Serve(args) => serve(&args),
        Command::Up(args) => up(&args),
        Command::Pair(args) => pair(&args),
        Command::Devices { json, change } => devices(json, change),
        Command::Hook(HookCommand::ClaudeCode { timeout, in_place }) => {
            hook_claude_code(timeout, !in_place)
        }
        Command::RunAllowed { request, cwd, argv } => run_allowed(&request, cwd, argv),
        Command::Ask { timeout } => ask(timeout),
        Command::Run { agent, shell, no_jail, end_with_host, command } => {
            let kind = match (agent, shell) {
                (true, _) => protocol::SessionKind::Agent,
                (_, true) => protocol::SessionKind::Shell,
                _ => agent_host::session::kind_of(&command[0]),
            };
            run_session(command, kind, no_jail, end_with_host)
        }
        Command::Approvals { json, delivery } => approvals(json, delivery),
        Command::Approve { id, note } => decide(&id, protocol::Verdict::Approve, note),
        Command::Deny { id, reason } => decide(&id, protocol::Verdict::Deny, reason),
        Command::Exec { no_wait, cwd, shell, argv } => {
            let argv = match shell {
                Some(line) => vec!["bash".into(), "-c".into(), line],
                None => argv,
            };
            exec(argv, cwd, !no_wait)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent-host: {e:#}");
            ExitCode::from(2)
        }
    }
}
