//! What a paired device asks of its host: a sync, the status, the pending actions, a request
//! (run, read, write, edit) and its result, a decision, and watching events as they come.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use protocol::{Action, Decision, ErrorCode, HostEvent, Message, Request, RequestId, Verdict};
use remote::session::{Silence, now_ms};

use super::{Ctx, print_json, role_name};

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

pub(super) fn pending_id(event: &HostEvent) -> Option<RequestId> {
    match event {
        HostEvent::ActionPending { request, .. } => Some(*request),
        _ => None,
    }
}

/// Tells the host that `requests` were shown here (printed, or handed to `--exec`), so that it
/// stops pushing them to this device's person elsewhere.
fn shown(ctx: &mut Ctx, requests: Vec<RequestId>) -> anyhow::Result<()> {
    for requests in requests.chunks(protocol::limits::MAX_RECEIPTS) {
        let id = RequestId(random_id()?);
        let requests = requests.to_vec();
        let stage = protocol::ReceiptStage::Shown;
        ctx.session.send(&Message::Request(Request::Receipt { id, requests, stage }))?;
    }
    Ok(())
}

fn random_id() -> anyhow::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(id)
}

pub(super) async fn status(ctx: &mut Ctx) -> anyhow::Result<ExitCode> {
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
        Action::StartSession { command } => format!("start {command:?} as a session"),
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

pub(super) fn print_pending(out: &mut dyn Write, event: &HostEvent) -> std::io::Result<()> {
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

/// The host's name and what waits there.
pub(super) async fn pending_of(ctx: &mut Ctx) -> anyhow::Result<(String, Vec<HostEvent>)> {
    let (pending, status) = sync(ctx).await?;
    let HostEvent::Status { host_name, .. } = status else { unreachable!("sync ends at a status") };
    Ok((host_name, pending))
}

pub(super) async fn pending(ctx: &mut Ctx) -> anyhow::Result<ExitCode> {
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
pub(super) async fn request(
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
        // The same pending action also comes with a sync sent when this device connects.
        if matches!(event, HostEvent::ActionPending { .. }) && std::mem::replace(&mut shown, true) {
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

pub(super) async fn decide(
    ctx: &mut Ctx,
    prefix: &str,
    verdict: Verdict,
    note: Option<String>,
) -> anyhow::Result<ExitCode> {
    let note = note.filter(|n| !n.trim().is_empty());
    if let Some(note) = &note {
        protocol::check_note(note)?;
    }
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
    let decision = Decision { request, action_hash: *action_hash, verdict, note };
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

/// The most pending actions waiting for `watch --exec`'s command: past this, one is skipped
/// (and said so).
const MAX_EXEC_QUEUE: usize = 64;

/// Runs `watch --exec`'s command for each pending action handed to it, one at a time, on a
/// thread of its own (a slow command holds up no event).
fn exec_runner(command: String) -> std::sync::mpsc::SyncSender<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(MAX_EXEC_QUEUE);
    std::thread::spawn(move || {
        for line in rx {
            let spawned = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("remote: cannot run the --exec command: {e}");
                    continue;
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its input is not an error.
                let _ = stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n"));
            }
            match child.wait() {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("remote: the --exec command failed ({status})"),
                Err(e) => eprintln!("remote: the --exec command: {e}"),
            }
        }
    });
    tx
}

/// `watch`: what waits, then the host's events as they come, each printed whole (`label`, the
/// profile's name, when several hosts are watched at once: before each line for people, or
/// as `{"profile", "event"}` in JSON).
pub(super) async fn watch(
    ctx: &mut Ctx,
    exec: Option<String>,
    label: Option<String>,
) -> anyhow::Result<ExitCode> {
    let runner = exec.map(exec_runner);
    // Each pending action once, however often it is told (a sync repeats them).
    let mut handed = std::collections::HashSet::new();
    let mut hand = |event: &HostEvent| -> anyhow::Result<()> {
        let (Some(runner), Some(id)) = (&runner, pending_id(event)) else { return Ok(()) };
        if handed.len() >= 4 * MAX_EXEC_QUEUE {
            handed.clear();
        }
        if handed.insert(id) && runner.try_send(serde_json::to_string(event)?).is_err() {
            eprintln!(
                "remote: {MAX_EXEC_QUEUE} pending actions wait for the --exec command; {id} skipped"
            );
        }
        Ok(())
    };
    let (pending, _) = sync(ctx).await?;
    for p in &pending {
        hand(p)?;
        show_event(ctx.json, label.as_deref(), p)?;
    }
    shown(ctx, pending.iter().filter_map(pending_id).collect())?;
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
        hand(&event)?;
        if let Some(id) = pending_id(&event) {
            shown(ctx, vec![id])?;
        }
        show_event(ctx.json, label.as_deref(), &event)?;
    }
}

/// Prints one event for `watch` in one write (so that several watches at once print whole
/// events): JSON, or lines for people; after `label` when there is one.
fn show_event(json: bool, label: Option<&str>, event: &HostEvent) -> anyhow::Result<()> {
    let mut out: Vec<u8> = Vec::new();
    if json {
        match label {
            Some(label) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "profile": label, "event": event }),
            )?,
            None => serde_json::to_writer(&mut out, event)?,
        }
        out.push(b'\n');
    } else {
        match event {
            HostEvent::ActionPending { .. } => print_pending(&mut out, event)?,
            HostEvent::ActionDecided { request, verdict, decided_by, note } => {
                let note = note.as_deref().map(|n| format!(": {n:?}")).unwrap_or_default();
                writeln!(out, "{request}  {verdict:?} by {decided_by:?}{note}")?;
            }
            HostEvent::ActionResult { request, exit_code, output, .. } => {
                writeln!(
                    out,
                    "{request}  finished{}: {} bytes of output",
                    exit_code.map(|c| format!(" with exit code {c}")).unwrap_or_default(),
                    output.0.len()
                )?;
            }
            HostEvent::Error { request, code, message } => {
                let request = request.map(|r| r.to_string()).unwrap_or_default();
                writeln!(out, "{request}  {}: {message}", error_name(*code))?;
            }
            HostEvent::Status { host_name, pending, .. } => {
                writeln!(out, "host {host_name}: {pending} pending")?;
            }
            HostEvent::Output { data, .. } => out.extend_from_slice(&data.0),
            HostEvent::SessionStarted { session, command, kind, size } => {
                let size = size.map(|s| format!(", {}x{}", s.cols, s.rows)).unwrap_or_default();
                writeln!(out, "session {session} ({kind:?}{size}): {command:?}")?;
            }
            HostEvent::SessionResized { session, size } => {
                writeln!(out, "session {session} resized to {}x{}", size.cols, size.rows)?;
            }
            HostEvent::SessionEnded { session, exit_code } => {
                writeln!(out, "session {session} ended ({exit_code:?})")?;
            }
            // Pushed to browsers, never sent on the link; and where actions got on devices,
            // which `--json` shows.
            HostEvent::Notice { .. } | HostEvent::ActionProgress { .. } => {}
        }
        if let Some(label) = label.filter(|_| !out.is_empty()) {
            let text = String::from_utf8_lossy(&out).into_owned();
            out = text.lines().map(|l| format!("[{label}] {l}\n")).collect::<String>().into_bytes();
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}
