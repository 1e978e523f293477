//! The `remote` command line.
//!
//! Exit status: 0 when done (for `run`, the command's own exit code); 1 when the host refused
//! or failed the request; 3 when no answer came (host offline, relay unreachable, revoked);
//! 126 when policy or an approver denied it, or nobody approved in time; 2 for bad usage or
//! local trouble (no pairing, unreadable key).

use std::io::{Read as _, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use protocol::{
    Action, Decision, ErrorCode, HostEvent, Message, PairingLink, Request, RequestId, Role, Verdict,
};

use remote::profile::{Pairing, Profile};
use remote::session::{Link, Session, Silence, now_ms};

/// A command-line device for agent-host: pair once, then ask the host to run commands, read
/// and change files, and answer its pending actions. Every request is signed by this device's
/// key and judged by the host; nothing here can act on the host by itself.
#[derive(Debug, Parser)]
#[command(name = "remote", version, about)]
pub(crate) struct Cli {
    /// Which paired identity to use (one machine may hold several).
    #[arg(long, global = true, default_value = "default", env = "REMOTE_PROFILE")]
    pub(crate) profile: String,
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
    /// List the actions waiting for approval, with what exactly each would do.
    Pending,
    /// Approve a pending action (as listed by `pending`; a unique id prefix is enough).
    Approve {
        /// The request id.
        id: String,
    },
    /// Deny a pending action.
    Deny {
        /// The request id.
        id: String,
    },
    /// Print the host's events as they come (pending actions, decisions, results).
    Watch,
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

struct Ctx {
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

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = Profile::open(&cli.profile)?;
    if let Command::Pair { link, name, force } = cli.command {
        return pair(&profile, &link, name, force, cli.json, cli.timeout).await;
    }
    let (pairing, session) = Session::open(&profile)?;
    let mut ctx = Ctx {
        json: cli.json,
        timeout: cli.timeout,
        pairing,
        session,
        backlog: Vec::new(),
        shown: Default::default(),
    };
    match cli.command {
        Command::Pair { .. } => unreachable!("handled above"),
        Command::Status => status(&mut ctx).await,
        Command::Pending => pending(&mut ctx).await,
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
        Command::Approve { id } => decide(&mut ctx, &id, Verdict::Approve).await,
        Command::Deny { id } => decide(&mut ctx, &id, Verdict::Deny).await,
        Command::Watch => watch(&mut ctx).await,
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Approver => "approver",
        Role::Operator => "operator",
    }
}

fn this_machine() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

async fn pair(
    profile: &Profile,
    link: &str,
    name: Option<String>,
    force: bool,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let link: PairingLink = link.parse()?;
    if now_ms() >= link.expires_at_ms {
        anyhow::bail!("this pairing link has expired; ask for a new one (agent-host pair)");
    }
    if !force && profile.pairing().is_ok() {
        anyhow::bail!(
            "profile {} is already paired; use --force to replace it, or --profile NAME",
            profile.dir().display()
        );
    }
    let name = name.unwrap_or_else(|| format!("remote on {}", this_machine()));
    let (key, channel) = profile.new_key()?;
    let channel_key = Some(protocol::ChannelKey(protocol::channel::public_of(&channel)?));
    let me = key.public_key();
    let secret = link.pairing_secret();
    let token = protocol::pairing::token(&secret);
    let host = link.host.key();
    let proof = protocol::pairing::prove(&secret, &host, &me, &name);
    if !json {
        println!("this device: {}", protocol::DeviceId::new(me));
        println!("fingerprint: {}  (compare it with the host's question)", me.fingerprint());
        let _ = std::io::stdout().flush();
    }
    let session_link = Link {
        relay: link.relay.clone(),
        cert_sha256: link.cert_sha256,
        host,
        knock: Some((protocol::RelayKey::of(&host), token)),
    };
    let mut session = Session::start(session_link, key, None, 0)?;
    session.send(&Message::Pairing(protocol::Pairing::Hello {
        token,
        name,
        proof,
        channel_key,
    }))?;
    // The person at the host has until the link lapses to answer, and at least the timeout.
    let wait = Duration::from_millis(link.expires_at_ms.saturating_sub(now_ms())).max(timeout);
    let deadline = Instant::now() + wait;
    loop {
        let message = match session.next(deadline).await {
            Ok(m) => m,
            Err(Silence::NoRoute) => anyhow::bail!(
                "the host has no open pairing offer for this link (used, burned, withdrawn or \
                 expired); ask for a new one"
            ),
            Err(e) => return Err(e.into()),
        };
        match message {
            Message::Pairing(protocol::Pairing::Accepted { role, host_name, channel_key }) => {
                if channel_key.is_some_and(|k| !protocol::channel::usable_public(&k.0)) {
                    anyhow::bail!("the host's channel key is not a usable X25519 key; not paired");
                }
                let pairing = Pairing {
                    host: link.host,
                    host_name: host_name.clone(),
                    relay: link.relay.clone(),
                    cert_sha256: link.cert_sha256.map(hex::encode),
                    role,
                    paired_at_ms: now_ms(),
                    host_channel_key: channel_key,
                };
                profile.save_pairing(&pairing)?;
                // The host's next counters continue after the one of its answer.
                profile.update_counters(|c| c.received = 1)?;
                if json {
                    print_json(&pairing)?;
                } else {
                    println!("paired with {host_name} ({}) as {}", link.host, role_name(role));
                }
                return Ok(ExitCode::SUCCESS);
            }
            Message::Pairing(protocol::Pairing::Rejected { reason }) => {
                anyhow::bail!("the host refused the pairing: {reason}");
            }
            _ => {}
        }
    }
}

/// Sends a Sync and collects the pending actions until the status.
async fn sync(ctx: &mut Ctx) -> anyhow::Result<(Vec<HostEvent>, HostEvent)> {
    let id = RequestId(random_id()?);
    ctx.session.send(&Message::Request(Request::Sync { id }))?;
    let deadline = Instant::now() + ctx.timeout;
    let mut pending: Vec<HostEvent> = Vec::new();
    loop {
        match ctx.session.next_event(deadline).await? {
            event @ HostEvent::ActionPending { .. } => {
                let request = pending_id(&event);
                pending.retain(|p| pending_id(p) != request);
                pending.push(event);
            }
            HostEvent::ActionDecided { request, .. } => {
                pending.retain(|p| pending_id(p) != Some(request));
            }
            status @ HostEvent::Status { request: Some(r), .. } if r == id => {
                return Ok((pending, status));
            }
            HostEvent::Status { .. } => pending.clear(),
            event @ (HostEvent::SessionStarted { .. }
            | HostEvent::SessionEnded { .. }
            | HostEvent::Output { .. })
                if ctx.fresh(&event) =>
            {
                ctx.backlog.push(event);
            }
            _ => {}
        }
    }
}

fn pending_id(event: &HostEvent) -> Option<RequestId> {
    match event {
        HostEvent::ActionPending { request, .. } => Some(*request),
        _ => None,
    }
}

fn random_id() -> anyhow::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(id)
}

async fn status(ctx: &mut Ctx) -> anyhow::Result<ExitCode> {
    let (_, status) = sync(ctx).await?;
    if ctx.json {
        print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let HostEvent::Status { host_name, workspace, sandbox, role, pending, .. } = status {
        println!("host:      {host_name} ({}), online", ctx.pairing.host);
        println!("relay:     {}", ctx.pairing.relay);
        println!("workspace: {workspace}");
        println!("sandbox:   {sandbox}");
        println!("role:      {}", role_name(role));
        println!("pending:   {pending}");
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::Run { argv, cwd, env } => {
            let mut out = format!("run {argv:?} in {cwd}");
            for (k, v) in env {
                out.push_str(&format!("\n        with {k}={v}"));
            }
            out
        }
        Action::ReadFile { path } => format!("read {path}"),
        Action::ListDir { path } => format!("list {path}"),
        Action::WriteFile { path, content } => format!("write {} bytes to {path}", content.0.len()),
        Action::EditFile { path, .. } => format!("edit {path}"),
        Action::SessionInput { session, data } => format!("send {data:?} to session {session}"),
        Action::WebFetch { url } => format!("fetch {url}"),
        Action::Tool { name, input } => format!("use {name} with {input}"),
    }
}

/// A device as people read it: its name at the host when the host gave one, with the id's
/// start to tell two of a name apart; the id alone otherwise.
fn who(id: &protocol::DeviceId, name: Option<&str>) -> String {
    let id = id.to_string();
    match name {
        Some(name) => format!("{name} ({}…)", &id[..id.len().min(12)]),
        None => id,
    }
}

fn print_pending(out: &mut dyn Write, event: &HostEvent) -> std::io::Result<()> {
    if let HostEvent::ActionPending {
        request,
        requested_by,
        action,
        summary,
        reason,
        preview,
        expires_at_ms,
        ..
    } = event
    {
        let who = match requested_by {
            protocol::Actor::Device { id, name } => who(id, name.as_deref()),
            protocol::Actor::Local { name } => format!("{name} (at the host)"),
        };
        let left = expires_at_ms.saturating_sub(now_ms()) / 1000;
        writeln!(out, "{request}  {summary}")?;
        writeln!(out, "    exactly: {}", describe_action(action))?;
        writeln!(out, "    why:     {reason}")?;
        writeln!(out, "    asked by {who}; {left} s left")?;
        if let Some(preview) = preview {
            for line in preview.lines() {
                writeln!(out, "    | {line}")?;
            }
        }
    }
    out.flush()
}

async fn pending(ctx: &mut Ctx) -> anyhow::Result<ExitCode> {
    let (pending, _) = sync(ctx).await?;
    if ctx.json {
        print_json(&pending)?;
    } else if pending.is_empty() {
        println!("nothing is waiting for approval");
    } else {
        for p in &pending {
            print_pending(&mut std::io::stdout(), p)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn refusal_code(code: ErrorCode) -> ExitCode {
    match code {
        ErrorCode::DeniedByPolicy | ErrorCode::DeniedByApprover | ErrorCode::Expired => {
            ExitCode::from(126)
        }
        _ => ExitCode::from(1),
    }
}

fn error_name(code: ErrorCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Sends one action and follows it: pending, decided, then a result or an error.
async fn request(
    ctx: &mut Ctx,
    action: Action,
    wait: bool,
    command: bool,
) -> anyhow::Result<ExitCode> {
    let id = RequestId(random_id()?);
    ctx.session.send(&Message::Request(Request::Action { id, action }))?;
    let mut deadline = Instant::now() + ctx.timeout;
    let mut shown = false;
    loop {
        let event = ctx.session.next_event(deadline).await?;
        // The same pending action also comes with a sync sent when this device connects.
        if matches!(event, HostEvent::ActionPending { .. }) && std::mem::replace(&mut shown, true) {
            continue;
        }
        let about_this = match &event {
            HostEvent::ActionPending { request, .. }
            | HostEvent::ActionDecided { request, .. }
            | HostEvent::ActionResult { request, .. } => *request == id,
            HostEvent::Error { request, .. } => *request == Some(id),
            _ => false,
        };
        if !about_this {
            continue;
        }
        if ctx.json {
            print_json(&event)?;
        }
        match event {
            HostEvent::ActionPending { expires_at_ms, .. } => {
                if !ctx.json {
                    let mut err = std::io::stderr();
                    write!(err, "waiting for approval: ")?;
                    print_pending(&mut err, &event)?;
                    writeln!(
                        err,
                        "approve at the host (agent-host approve {}) or from a device",
                        &id.to_string()[..8]
                    )?;
                }
                if !wait {
                    return Ok(ExitCode::SUCCESS);
                }
                // Wait as long as the host will: until the pending action lapses.
                let left = Duration::from_millis(expires_at_ms.saturating_sub(now_ms()));
                deadline = Instant::now() + left + ctx.timeout;
            }
            HostEvent::ActionDecided { verdict, decided_by, .. } if !ctx.json => {
                let by = match decided_by {
                    Some(protocol::Actor::Device { id, name }) => who(&id, name.as_deref()),
                    Some(protocol::Actor::Local { name }) => format!("{name} at the host"),
                    None => "nobody (lapsed)".into(),
                };
                let word = if verdict == Verdict::Approve { "approved" } else { "denied" };
                eprintln!("{word} by {by}");
            }
            HostEvent::ActionResult { exit_code, output, truncated, .. } => {
                if !ctx.json {
                    std::io::stdout().write_all(&output.0)?;
                    std::io::stdout().flush()?;
                    if truncated {
                        eprintln!("remote: the output was cut at the host's limit");
                    }
                }
                return Ok(match (command, exit_code) {
                    (true, Some(code)) => ExitCode::from(code.clamp(0, 255) as u8),
                    (true, None) => ExitCode::from(1),
                    (false, _) => ExitCode::SUCCESS,
                });
            }
            // Once pending, a request is no longer refused for this device's role: a
            // `forbidden` about it refuses a decision on it (this device's own approval under
            // the two-person rule, made elsewhere), and the request still waits.
            HostEvent::Error { code: ErrorCode::Forbidden, message, .. } if shown => {
                if !ctx.json {
                    eprintln!("remote: a decision on it was refused: {message}");
                }
                continue;
            }
            HostEvent::Error { code, message, .. } => {
                if !ctx.json {
                    eprintln!("remote: {}: {message}", error_name(code));
                }
                return Ok(refusal_code(code));
            }
            _ => {}
        }
    }
}

async fn decide(ctx: &mut Ctx, prefix: &str, verdict: Verdict) -> anyhow::Result<ExitCode> {
    let (pending, _) = sync(ctx).await?;
    let matches: Vec<&HostEvent> = pending
        .iter()
        .filter(|p| pending_id(p).is_some_and(|id| id.to_string().starts_with(prefix)))
        .collect();
    let target = match matches.as_slice() {
        [one] => *one,
        [] => anyhow::bail!("no pending action has an id starting with {prefix}"),
        _ => anyhow::bail!("several pending actions start with {prefix}; give more of the id"),
    };
    let HostEvent::ActionPending { request, action, action_hash, .. } = target else {
        unreachable!("only pending actions are listed")
    };
    // Approve exactly what was shown: the hash is recomputed here from the action itself.
    if protocol::action_hash(action) != *action_hash {
        anyhow::bail!("the host's hash does not match the action it shows; not answering");
    }
    if !ctx.json {
        print_pending(&mut std::io::stdout(), target)?;
    }
    let request = *request;
    let decision = Decision { request, action_hash: *action_hash, verdict };
    ctx.session.send(&Message::Decision(decision))?;
    let deadline = Instant::now() + ctx.timeout;
    loop {
        match ctx.session.next_event(deadline).await? {
            event @ HostEvent::ActionDecided { request: r, .. } if r == request => {
                let HostEvent::ActionDecided { verdict: outcome, decided_by, .. } = &event else {
                    unreachable!()
                };
                if ctx.json {
                    print_json(&event)?;
                } else {
                    let mine = matches!(decided_by, Some(protocol::Actor::Device { id, .. }) if id.key() == ctx.session_key());
                    let word = if *outcome == Verdict::Approve { "approved" } else { "denied" };
                    if mine {
                        println!("{word}");
                    } else {
                        println!("already {word} by someone else");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            event @ HostEvent::Error { request: Some(r), .. } if r == request => {
                if ctx.json {
                    print_json(&event)?;
                }
                if let HostEvent::Error { code, message, .. } = event {
                    eprintln!("remote: {}: {message}", error_name(code));
                }
                return Ok(ExitCode::from(1));
            }
            _ => {}
        }
    }
}

impl Ctx {
    fn session_key(&self) -> protocol::PublicKey {
        self.session.key()
    }
}

async fn watch(ctx: &mut Ctx) -> anyhow::Result<ExitCode> {
    let (pending, _) = sync(ctx).await?;
    for p in &pending {
        if ctx.json {
            print_json(p)?;
        } else {
            print_pending(&mut std::io::stdout(), p)?;
        }
    }
    let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut backlog = std::mem::take(&mut ctx.backlog).into_iter();
    loop {
        let event = match backlog.next() {
            Some(e) => e,
            None => match ctx.session.next_event(forever).await {
                Ok(e) if ctx.fresh(&e) => e,
                Ok(_) => continue,
                Err(Silence::NoRoute) => anyhow::bail!(Silence::NoRoute),
                Err(e) => return Err(e.into()),
            },
        };
        if ctx.json {
            print_json(&event)?;
            continue;
        }
        match &event {
            HostEvent::ActionPending { .. } => print_pending(&mut std::io::stdout(), &event)?,
            HostEvent::ActionDecided { request, verdict, decided_by } => {
                println!("{request}  {verdict:?} by {decided_by:?}");
            }
            HostEvent::ActionResult { request, exit_code, output, .. } => {
                println!(
                    "{request}  finished{}: {} bytes of output",
                    exit_code.map(|c| format!(" with exit code {c}")).unwrap_or_default(),
                    output.0.len()
                );
            }
            HostEvent::Error { request, code, message } => {
                println!(
                    "{}  {}: {message}",
                    request.map(|r| r.to_string()).unwrap_or_default(),
                    error_name(*code)
                );
            }
            HostEvent::Status { host_name, pending, .. } => {
                println!("host {host_name}: {pending} pending");
            }
            HostEvent::Output { data, .. } => std::io::stdout().write_all(&data.0)?,
            HostEvent::SessionStarted { session, command, kind, size } => {
                let size = size.map(|s| format!(", {}x{}", s.cols, s.rows)).unwrap_or_default();
                println!("session {session} ({kind:?}{size}): {command:?}");
            }
            HostEvent::SessionResized { session, size } => {
                println!("session {session} resized to {}x{}", size.cols, size.rows);
            }
            HostEvent::SessionEnded { session, exit_code } => {
                println!("session {session} ended ({exit_code:?})");
            }
        }
        std::io::stdout().flush()?;
    }
}
