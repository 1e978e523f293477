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
    /// (internal) Restrict this process with Landlock and seccomp, then run a command.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(crate::landlock_sandbox::HelperArgs),
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
    },
    /// Approve a pending action (the exact action listed by `approvals`).
    Approve {
        /// The request id (a unique prefix is enough).
        id: String,
    },
    /// Deny a pending action.
    Deny {
        /// The request id (a unique prefix is enough).
        id: String,
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
pub enum HookCommand {
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
pub enum DevicesCommand {
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
pub struct PairArgs {
    /// What the device may do: viewer (sees), approver (also answers pending actions) or
    /// operator (also requests actions).
    #[arg(long, default_value = "operator", value_parser = parse_role)]
    pub role: protocol::Role,
    /// The name to register the device under (default: the name it gives itself).
    #[arg(long)]
    pub name: Option<String>,
    /// How long the link works.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub expires: std::time::Duration,
    /// Pair the device that proves the secret without asking (for scripts run here).
    #[arg(long)]
    pub yes: bool,
}

/// Arguments of `up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The host's settings, sandbox and timeouts.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Listen on this machine's LAN address instead of loopback.
    #[arg(long)]
    pub lan: bool,
    /// The embedded relay's port.
    #[arg(long, default_value_t = 7443)]
    pub port: u16,
    /// The role of the device paired with the printed link.
    #[arg(long, default_value = "operator", value_parser = parse_role)]
    pub role: protocol::Role,
    /// Pair the device that proves the printed link's secret without asking.
    #[arg(long)]
    pub yes: bool,
    /// Print no pairing link at start (pair later with `agent-host pair`).
    #[arg(long)]
    pub no_pair: bool,
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The workspace root (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// An extra settings file (repeatable).
    #[arg(long = "settings", value_name = "FILE")]
    pub settings: Vec<PathBuf>,
    /// The mode, overriding every file's `defaultMode`.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Run commands WITHOUT a sandbox when none can work here. Never the default.
    #[arg(long)]
    pub allow_unsandboxed: bool,
    /// How long a pending action waits for a person before it counts as denied.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub approval_timeout: std::time::Duration,
    /// How long a command may run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub command_timeout: std::time::Duration,
    /// The relay that links paired devices, `HOST:PORT` (not with `up`, which embeds one).
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: Option<String>,
    /// The relay certificate's SHA-256 (hex), to pin a self-signed relay; without it the
    /// system's certificate authorities are trusted.
    #[arg(long, value_name = "SHA256", requires = "relay")]
    pub relay_cert: Option<String>,
    /// The name devices see for this host (default: the machine's name).
    #[arg(long)]
    pub host_name: Option<String>,
    /// The two-person rule: a device may not approve an action it requested itself.
    #[arg(long)]
    pub two_person: bool,
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
        Command::Sandbox(args) => {
            // Only reached when the sandbox could not be set up or the command not started:
            // 125, as `env` and `timeout` do, so it is not mistaken for the command's own code.
            eprintln!("agent-host: {:#}", crate::landlock_sandbox::run_helper(&args));
            return ExitCode::from(125);
        }
        Command::Launch { hidden } => {
            return ExitCode::from(crate::exec::launch_in_sandbox(&hidden));
        }
        Command::Scope { argv } => {
            eprintln!("agent-host: {:#}", crate::landlock_sandbox::scope_then_run(&argv));
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
        Command::Run { agent, shell, no_jail, command } => {
            let kind = match (agent, shell) {
                (true, _) => protocol::SessionKind::Agent,
                (_, true) => protocol::SessionKind::Shell,
                _ => crate::session::kind_of(&command[0]),
            };
            run_session(command, kind, no_jail)
        }
        Command::Approvals { json } => approvals(json),
        Command::Approve { id } => decide(&id, protocol::Verdict::Approve),
        Command::Deny { id } => decide(&id, protocol::Verdict::Deny),
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
                Err(e @ crate::audit::AuditError::Io { .. }) => Err(e.into()),
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
            let records = crate::audit::read_records(&log)?;
            let mut out = std::io::stdout().lock();
            for r in records.iter().skip(records.len().saturating_sub(lines)) {
                writeln!(out, "{}", crate::audit::describe(r, &name_of))?;
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
                    writeln!(out, "{}", crate::audit::describe(r, &name_of))?;
                }
                out.flush()?;
                seen = records.len();
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

fn daemon_config(dirs: &Dirs, args: &ServeArgs) -> anyhow::Result<crate::host::Config> {
    let workspace = match &args.workspace {
        Some(w) => w.canonicalize()?,
        None => std::env::current_dir()?.canonicalize()?,
    };
    let files = load_settings(dirs, &workspace, &args.settings)?;
    let policy = Policy::new(&workspace, files, args.mode, dirs.all());
    for note in policy.notes() {
        eprintln!("note: {note}");
    }
    let sandbox = crate::exec::Sandbox::choose(args.allow_unsandboxed)?;
    if sandbox == crate::exec::Sandbox::Unsandboxed {
        eprintln!(
            "WARNING: no sandbox can run here; commands will run UNSANDBOXED with your full rights."
        );
    }
    let host_name = match &args.host_name {
        Some(name) => name.clone(),
        None => rustix::system::uname().nodename().to_string_lossy().into_owned(),
    };
    let relay = match &args.relay {
        Some(relay) => Some(relay_setup(relay, args.relay_cert.as_deref())?),
        None => None,
    };
    let cache = dirs.sandbox_cache_for(&workspace);
    let user = crate::userenv::UserEnv::from_host(&dirs.user_settings(), Some(cache))?;
    if let Some(refusal) = user.unfit(std::slice::from_ref(&workspace), &dirs.all()) {
        anyhow::bail!("{refusal}");
    }
    Ok(crate::host::Config {
        user,
        workspace,
        policy,
        sandbox,
        approval_timeout: args.approval_timeout,
        command_timeout: args.command_timeout,
        host_name,
        relay,
        two_person: args.two_person,
    })
}

/// How to reach a relay given as `HOST:PORT` (a `wss://` or `https://` prefix is allowed).
fn relay_setup(relay: &str, cert: Option<&str>) -> anyhow::Result<crate::host::RelaySetup> {
    let addr = relay
        .trim_start_matches("wss://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let Some((host, port)) = addr.rsplit_once(':') else {
        anyhow::bail!("the relay is HOST:PORT, not {relay}");
    };
    if port.parse::<u16>().is_err() || host.is_empty() {
        anyhow::bail!("the relay is HOST:PORT, not {relay}");
    }
    let server_name = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let (tls, cert_sha256) = match cert {
        Some(hex_digest) => {
            let pin = protocol::relay::hex32(hex_digest, "certificate SHA-256")
                .map_err(|e| anyhow::anyhow!("--relay-cert: {e}"))?;
            (relay_client::pinned_config(pin), Some(pin))
        }
        None => (relay_client::system_roots_config()?, None),
    };
    Ok(crate::host::RelaySetup {
        public: addr.clone(),
        addr,
        server_name,
        tls,
        cert_sha256,
        local: None,
    })
}

/// Waits for Ctrl-C at the terminal, or SIGTERM from a service manager. The handlers are
/// installed when this is called, not when it is first awaited: a signal that comes as soon as
/// the host's socket appears must stop the host cleanly, not kill it.
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// Runs the daemon until a stop signal; `announce` runs once it is ready.
async fn run_daemon(
    dirs: Dirs,
    config: crate::host::Config,
    announce: impl FnOnce(protocol::HostId),
) -> anyhow::Result<()> {
    let (ready, host) = tokio::sync::oneshot::channel();
    let announced = async {
        if let Ok(id) = host.await {
            announce(id);
        }
    };
    let (result, ()) =
        tokio::join!(crate::daemon::serve(dirs, config, Some(ready), stop_signal()), announced);
    result
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let dirs = Dirs::discover()?;
    let config = daemon_config(&dirs, args)?;
    let workspace = config.workspace.clone();
    let socket = dirs::owner_socket(&dirs);
    runtime()?.block_on(run_daemon(dirs, config, |id| {
        println!("agent-host serving {} as {id}", workspace.display());
        println!("socket: {}", socket.display());
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    if args.serve.relay.is_some() {
        anyhow::bail!(
            "`up` runs its own relay; to use another one, run `agent-host serve --relay`"
        );
    }
    let dirs = Dirs::discover()?;
    let mut config = daemon_config(&dirs, &args.serve)?;
    let workspace = config.workspace.clone();
    let socket = dirs::owner_socket(&dirs);
    let (role, yes, no_pair) = (args.role, args.yes, args.no_pair);
    runtime()?.block_on(async {
        let ip = if args.lan {
            crate::up::lan_address()?
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        };
        let (relay, setup) =
            crate::up::start_relay(&dirs, std::net::SocketAddr::new(ip, args.port)).await?;
        let pin = setup.cert_sha256.map(hex::encode).unwrap_or_default();
        let public = setup.public.clone();
        config.relay = Some(setup);
        let result = run_daemon(dirs, config, move |id| {
            println!("agent-host up: {} as {id}", workspace.display());
            println!("relay:  wss://{public} (self-signed certificate, SHA-256 {pin})");
            let how = if no_pair { "a link from `agent-host pair`" } else { "the link below" };
            println!("web:    https://{public}/ (a browser pairs by opening {how})");
            println!("socket: {}", socket.display());
            println!("approve here with `agent-host approvals` and `agent-host approve ID`; Ctrl-C stops.");
            if !no_pair {
                // The person's yes/no is read from this terminal, away from the host's threads.
                std::thread::spawn(move || {
                    match crate::up::pair_at_terminal(&socket, role, None, 300, yes) {
                        Ok(true) => {}
                        Ok(false) => println!("pair a device later with `agent-host pair`"),
                        Err(e) => eprintln!("agent-host: pairing: {e:#}"),
                    }
                });
            }
        })
        .await;
        relay.shutdown().await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut input = Vec::new();
    std::io::stdin().take(crate::hook::MAX_INPUT as u64).read_to_end(&mut input)?;
    Ok(input)
}

/// `agent-host run`: the jail from the running host's workspace, unless `no_jail`.
fn run_session(
    command: Vec<String>,
    kind: protocol::SessionKind,
    no_jail: bool,
) -> anyhow::Result<ExitCode> {
    use crate::local_api::{ApiRequest, ApiResponse};
    let dirs = Dirs::discover()?;
    let socket = dirs::agent_socket(&dirs);
    if no_jail {
        eprintln!(
            "agent-host: WARNING: `{}` runs UNJAILED with your full rights: it and everything it \
             starts can approve, pair and trust as you can.",
            command[0]
        );
        return crate::session::run(&socket, command, kind, None);
    }
    let bwrap = match crate::exec::Sandbox::bubblewrap() {
        Ok(crate::exec::Sandbox::Bubblewrap(bwrap)) => bwrap,
        Ok(_) => anyhow::bail!("no jail can run here"),
        Err(e) => anyhow::bail!(
            "no jail can run here: {}; `agent-host run --no-jail` runs the session with your \
             full rights",
            e.0
        ),
    };
    let status =
        runtime()?.block_on(crate::local_api::call(&socket, &ApiRequest::Status, |_| {}))?;
    let Some(ApiResponse::Status { workspace, .. }) = status.into_iter().next() else {
        anyhow::bail!("the host did not say where its workspace is");
    };
    let user = crate::userenv::UserEnv::from_host(&dirs.user_settings(), None)?;
    let jail = crate::jail::Jail {
        bwrap,
        workspace: workspace.into(),
        secrets: crate::jail::Jail::secrets_of(&user),
        dirs,
        home: std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()),
        exe: std::env::current_exe().ok().and_then(|e| e.canonicalize().ok()),
    };
    if let Some(why) = jail.unfit() {
        anyhow::bail!("no jail: {why} (or run with --no-jail, with your full rights)");
    }
    jail.ensure_home_settings()?;
    crate::session::run(&socket, command, kind, Some(&jail))
}

fn agent_socket_or_none() -> PathBuf {
    // Without directories the socket cannot exist; the ask then fails and is a deny.
    Dirs::discover().map(|d| dirs::agent_socket(&d)).unwrap_or_default()
}

fn hook_claude_code(timeout: std::time::Duration, sandboxed: bool) -> anyhow::Result<ExitCode> {
    let input = read_stdin().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The rewritten command names this binary by its path: it need not be on the agent's PATH.
    let rewrite = match sandboxed.then(std::env::current_exe).transpose() {
        Ok(exe) => exe,
        Err(e) => {
            // Never fall back to running in place: the answer is a deny.
            let answer = crate::hook::Answer::deny(
                format!("agent-host cannot find its own binary ({e}); denied"),
                false,
            );
            println!("{}", crate::hook::claude_code_output("PreToolUse", &answer, None));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let output = runtime.block_on(crate::hook::claude_code(
        &input,
        &agent_socket_or_none(),
        timeout,
        rewrite.as_deref(),
    ));
    println!("{output}");
    Ok(ExitCode::SUCCESS)
}

fn ask(timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    use crate::hook::{Answer, AskInput, ask_output};
    let print = |answer: &Answer, code: u8| {
        println!("{}", ask_output(answer));
        Ok(ExitCode::from(code))
    };
    let input = match read_stdin()
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<AskInput>(&bytes).map_err(|e| e.to_string()))
    {
        Ok(input) => input,
        Err(e) => {
            let answer = Answer {
                allow: false,
                reason: format!("bad input: {e}"),
                request: None,
                reached: false,
            };
            return print(&answer, 2);
        }
    };
    let cwd = match input.cwd {
        Some(cwd) => cwd,
        None => std::env::current_dir()?.display().to_string(),
    };
    let requester = input.requester.unwrap_or_else(|| "ask".into());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(crate::hook::ask_host(
        &agent_socket_or_none(),
        input.action,
        &requester,
        &cwd,
        timeout,
    ));
    let code = match (answer.allow, answer.reached) {
        (true, _) => 0,
        (false, true) => 1,
        (false, false) => 3,
    };
    print(&answer, code)
}

fn pair(args: &PairArgs) -> anyhow::Result<ExitCode> {
    let socket = dirs::owner_socket(&Dirs::discover()?);
    let paired = crate::up::pair_at_terminal(
        &socket,
        args.role,
        args.name.clone(),
        args.expires.as_secs().max(1),
        args.yes,
    )?;
    Ok(if paired { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn devices(json: bool, change: Option<DevicesCommand>) -> anyhow::Result<ExitCode> {
    use crate::local_api::{ApiRequest, ApiResponse, DeviceChange};
    let dirs = Dirs::discover()?;
    let socket = dirs::owner_socket(&dirs);
    let running = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    let Some(change) = change else {
        let devices = if running {
            match call(&ApiRequest::Devices, |_| {})?.into_iter().next() {
                Some(ApiResponse::Devices { devices }) => devices,
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        } else {
            let registry = crate::devices::Registry::load(&dirs.state)?;
            crate::link::device_infos(&registry, &Default::default())
        };
        if json {
            println!("{}", serde_json::to_string(&devices)?);
        } else if devices.is_empty() {
            println!("no paired devices (pair one with `agent-host pair`)");
        }
        for d in devices.iter().filter(|_| !json) {
            let seen = match d.last_seen_ms {
                _ if d.online => "online now".to_string(),
                Some(ms) => format!("last seen {}", crate::audit::time_for_people(ms)),
                None => "never seen".into(),
            };
            println!(
                "{}  {}  {}  fingerprint {}  {seen}",
                d.id,
                crate::devices::role_name(d.role),
                d.name,
                d.fingerprint
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (id, change) = match change {
        DevicesCommand::Revoke { id } => (id, DeviceChange::Revoke),
        DevicesCommand::Rename { id, name } => (id, DeviceChange::Rename { name }),
        DevicesCommand::SetRole { id, role } => (id, DeviceChange::SetRole { role }),
    };
    if running {
        match call(&ApiRequest::Device { id, change }, |_| {})?.into_iter().next() {
            Some(ApiResponse::Ok { message }) => println!("{message}"),
            Some(ApiResponse::Error { message }) => anyhow::bail!("{message}"),
            other => anyhow::bail!("unexpected answer: {other:?}"),
        }
    } else {
        // No host runs: change the files; the audit log records it all the same.
        let mut registry = crate::devices::Registry::load(&dirs.state)?;
        let (device, what) = crate::link::apply_change(&mut registry, &id, &change)?;
        let audit = crate::audit::AuditLog::open(&dirs.audit_log())?;
        audit.append(
            crate::host::now_ms(),
            crate::audit::Event::Device { device: device.to_string(), change: what.clone() },
        )?;
        println!("{device}: {what}");
    }
    Ok(ExitCode::SUCCESS)
}

fn call(
    request: &crate::local_api::ApiRequest,
    on_line: impl FnMut(&crate::local_api::ApiResponse),
) -> anyhow::Result<Vec<crate::local_api::ApiResponse>> {
    let dirs = Dirs::discover()?;
    let owner = dirs::owner_socket(&dirs);
    // What any asker may do goes through the agent socket where the owner socket is out of
    // reach (inside a jail), and is labelled `local:agent` there.
    let socket =
        if request.needs_owner() || owner.exists() { owner } else { dirs::agent_socket(&dirs) };
    runtime()?.block_on(crate::local_api::call(&socket, request, on_line))
}

/// The paired devices' names by their ids, as the host's registry has them (none if it cannot
/// be read: people then read ids).
fn device_names() -> std::collections::BTreeMap<String, String> {
    let registry =
        Dirs::discover().ok().and_then(|d| crate::devices::Registry::load(&d.state).ok());
    registry
        .map(|r| r.list().into_iter().map(|(d, _)| (d.id.to_string(), d.name)).collect())
        .unwrap_or_default()
}

fn pending_list() -> anyhow::Result<Vec<crate::approvals::Pending>> {
    use crate::local_api::{ApiRequest, ApiResponse};
    match call(&ApiRequest::Approvals, |_| {})?.into_iter().next() {
        Some(ApiResponse::Approvals { pending }) => Ok(pending),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

fn approvals(json: bool) -> anyhow::Result<ExitCode> {
    let pending = pending_list()?;
    if json {
        println!("{}", serde_json::to_string(&pending)?);
    } else if pending.is_empty() {
        println!("nothing is waiting for approval");
    } else {
        for p in &pending {
            let left = p.expires_at_ms.saturating_sub(crate::host::now_ms()) / 1000;
            println!("{}  {}", p.id, p.summary);
            if let protocol::Action::Run { argv, cwd, env } = &p.action {
                println!("    exactly: {argv:?} in {cwd}");
                for (name, value) in env {
                    println!("    with {name}={value}");
                }
            }
            println!("    why: {}", p.reason);
            let names = device_names();
            let who =
                crate::approvals::person(&p.requested_by, |id| names.get(&id.to_string()).cloned());
            println!("    asked by {who}; {left} s left");
            for line in p.preview.iter().flat_map(|p| p.lines()) {
                println!("    | {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(prefix: &str, verdict: protocol::Verdict) -> anyhow::Result<ExitCode> {
    use crate::local_api::{ApiRequest, ApiResponse};
    let pending = pending_list()?;
    let matches: Vec<_> = pending.iter().filter(|p| p.id.to_string().starts_with(prefix)).collect();
    let target = match matches.as_slice() {
        [one] => *one,
        [] => anyhow::bail!("no pending action has an id starting with {prefix}"),
        _ => anyhow::bail!(
            "{} pending actions start with {prefix}; give more of the id",
            matches.len()
        ),
    };
    let word = if verdict == protocol::Verdict::Approve { "approving" } else { "denying" };
    println!("{word}: {}", target.summary);
    let request = ApiRequest::Decide { id: target.id, action_hash: target.action_hash, verdict };
    match call(&request, |_| {})?.into_iter().next() {
        Some(ApiResponse::Decided { .. }) => Ok(ExitCode::SUCCESS),
        Some(ApiResponse::Error { message }) => {
            eprintln!("agent-host: {message}");
            Ok(ExitCode::from(1))
        }
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// Prints a command's output and says how it ended; its exit code as ours.
fn finished(
    exit_code: Option<i32>,
    output: &protocol::Blob,
    truncated: bool,
    timed_out: bool,
) -> ExitCode {
    let _ = std::io::stdout().write_all(&output.0);
    if truncated {
        eprintln!("agent-host: output was truncated");
    }
    if timed_out {
        eprintln!("agent-host: the command was killed at the timeout");
    }
    ExitCode::from(exit_code.map_or(1, |c| c.clamp(0, 255) as u8))
}

fn run_allowed(request: &str, cwd: String, argv: Vec<String>) -> anyhow::Result<ExitCode> {
    use crate::local_api::{ApiRequest, ApiResponse};
    let id = request.parse().map_err(|e| anyhow::anyhow!("--request: {e}"))?;
    let action = protocol::Action::Run { argv, cwd, env: Default::default() };
    let mut code = ExitCode::from(126);
    call(&ApiRequest::RunAllowed { id, action }, |response| match response {
        ApiResponse::Done { exit_code, output, truncated, timed_out, .. } => {
            code = finished(*exit_code, output, *truncated, *timed_out);
        }
        ApiResponse::Denied { reason, .. } => eprintln!("agent-host: refused: {reason}"),
        ApiResponse::Error { message } => eprintln!("agent-host: {message}"),
        other => eprintln!("agent-host: unexpected answer: {other:?}"),
    })?;
    Ok(code)
}

fn exec(argv: Vec<String>, cwd: Option<String>, wait: bool) -> anyhow::Result<ExitCode> {
    use crate::local_api::{ApiRequest, ApiResponse};
    let mut code = ExitCode::from(1);
    call(&ApiRequest::Exec { argv, cwd, wait }, |response| match response {
        ApiResponse::Pending { request, summary, reason, .. } => {
            eprintln!("waiting for approval of {request}: {summary} ({reason})");
            eprintln!("  approve with: agent-host approve {}", &request.to_string()[..8]);
            if !wait {
                code = ExitCode::SUCCESS;
            }
        }
        ApiResponse::Done { exit_code, output, truncated, timed_out, .. } => {
            code = finished(*exit_code, output, *truncated, *timed_out);
        }
        ApiResponse::Denied { reason, .. } => {
            eprintln!("agent-host: denied: {reason}");
            code = ExitCode::from(126);
        }
        ApiResponse::Error { message } => eprintln!("agent-host: {message}"),
        other => eprintln!("agent-host: unexpected answer: {other:?}"),
    })?;
    Ok(code)
}

fn doctor() -> anyhow::Result<ExitCode> {
    use crate::exec::{Sandbox, process_limit_available};
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
                if crate::landlock_sandbox::layer_available() {
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
    match crate::userenv::UserEnv::from_host(&dirs.user_settings(), cache) {
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
    let confined = crate::confine::Workspace::open(std::slice::from_ref(&probe))
        .and_then(|w| w.list(Path::new(".")).map(|_| ()));
    let _ = std::fs::remove_dir(&probe);
    match confined {
        Ok(()) => println!("files:   confined by openat2 RESOLVE_BENEATH"),
        Err(e) => println!("files:   UNAVAILABLE: {e}"),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// How Claude Code's settings files here call the hook: one line each.
fn hook_modes() -> Vec<String> {
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
