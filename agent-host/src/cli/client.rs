//! The commands that talk to a running host over its sockets: sessions, the agent hook, `ask`,
//! pairing, devices, pending approvals and decisions, and commands run through policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use agent_host::dirs::{self, Dirs};

use super::start::runtime;
use super::{DevicesCommand, PairArgs};

pub(super) fn read_stdin() -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut input = Vec::new();
    std::io::stdin().take(agent_host::hook::MAX_INPUT as u64).read_to_end(&mut input)?;
    Ok(input)
}

/// `agent-host run`: the jail from the running host's workspace, unless `no_jail`.
pub(super) fn run_session(
    command: Vec<String>,
    kind: protocol::SessionKind,
    no_jail: bool,
    end_with_host: bool,
) -> anyhow::Result<ExitCode> {
    use agent_host::local_api::{ApiRequest, ApiResponse};
    let dirs = Dirs::discover()?;
    let socket = dirs::agent_socket(&dirs);
    if no_jail {
        eprintln!(
            "agent-host: WARNING: `{}` runs UNJAILED with your full rights: it and everything it \
             starts can approve, pair and trust as you can.",
            command[0]
        );
        return Ok(agent_host::session::run(&socket, command, kind, None, false)?);
    }
    let bwrap = match agent_host::exec::Sandbox::bubblewrap() {
        Ok(agent_host::exec::Sandbox::Bubblewrap(bwrap)) => bwrap,
        Ok(_) => anyhow::bail!("no jail can run here"),
        Err(e) => anyhow::bail!(
            "no jail can run here: {}; `agent-host run --no-jail` runs the session with your \
             full rights",
            e.0
        ),
    };
    let status =
        runtime()?.block_on(agent_host::local_api::call(&socket, &ApiRequest::Status, |_| {}))?;
    let Some(ApiResponse::Status { workspace, .. }) = status.into_iter().next() else {
        anyhow::bail!("the host did not say where its workspace is");
    };
    let user = agent_host::userenv::UserEnv::from_host(&dirs.user_settings(), None)?;
    let jail = agent_host::jail::Jail {
        bwrap,
        workspace: workspace.into(),
        secrets: agent_host::jail::Jail::secrets_of(&user),
        dirs,
        home: std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()),
        exe: std::env::current_exe().ok().and_then(|e| e.canonicalize().ok()),
    };
    if let Some(why) = jail.unfit() {
        anyhow::bail!("no jail: {why} (or run with --no-jail, with your full rights)");
    }
    jail.ensure_home_settings()?;
    Ok(agent_host::session::run(&socket, command, kind, Some(&jail), end_with_host)?)
}

pub(super) fn agent_socket_or_none() -> PathBuf {
    // Without directories the socket cannot exist; the ask then fails and is a deny.
    Dirs::discover().map(|d| dirs::agent_socket(&d)).unwrap_or_default()
}

pub(super) fn hook_claude_code(
    timeout: std::time::Duration,
    sandboxed: bool,
) -> anyhow::Result<ExitCode> {
    let input = read_stdin().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The rewritten command names this binary by its path: it need not be on the agent's PATH.
    let rewrite = match sandboxed.then(std::env::current_exe).transpose() {
        Ok(exe) => exe,
        Err(e) => {
            // Never fall back to running in place: the answer is a deny.
            let answer = agent_host::hook::Answer::deny(
                format!("agent-host cannot find its own binary ({e}); denied"),
                false,
            );
            println!("{}", agent_host::hook::claude_code_output("PreToolUse", &answer, None));
            return Ok(ExitCode::SUCCESS);
        }
    };
    let output = runtime.block_on(agent_host::hook::claude_code(
        &input,
        &agent_socket_or_none(),
        timeout,
        rewrite.as_deref(),
    ));
    println!("{output}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn ask(timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    use agent_host::hook::{Answer, AskInput, ask_output};
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
    let answer = runtime.block_on(agent_host::hook::ask_host(
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

pub(super) fn pair(args: &PairArgs) -> anyhow::Result<ExitCode> {
    let socket = dirs::owner_socket(&Dirs::discover()?);
    let paired = super::up::pair_at_terminal(
        &socket,
        args.role,
        args.name.clone(),
        args.expires.as_secs().max(1),
        args.yes,
    )?;
    Ok(if paired { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) fn devices(json: bool, change: Option<DevicesCommand>) -> anyhow::Result<ExitCode> {
    use agent_host::local_api::{ApiRequest, ApiResponse, DeviceChange};
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
            let registry = agent_host::devices::Registry::load(&dirs.state)?;
            agent_host::link::device_infos(&registry, &Default::default())
        };
        if json {
            println!("{}", serde_json::to_string(&devices)?);
        } else if devices.is_empty() {
            println!("no paired devices (pair one with `agent-host pair`)");
        }
        for d in devices.iter().filter(|_| !json) {
            let seen = match d.last_seen_ms {
                _ if d.online => "online now".to_string(),
                Some(ms) => format!("last seen {}", agent_host::audit::time_for_people(ms)),
                None => "never seen".into(),
            };
            let channel = if d.channel_key { "" } else { "  (no channel key: pair it again)" };
            println!(
                "{}  {}  {}  fingerprint {}  {seen}{channel}",
                d.id,
                agent_host::devices::role_name(d.role),
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
        let mut registry = agent_host::devices::Registry::load(&dirs.state)?;
        let (device, what) = agent_host::link::apply_change(&mut registry, &id, &change)?;
        let audit = agent_host::audit::AuditLog::open(&dirs.audit_log())?;
        audit.append(
            agent_host::host::now_ms(),
            agent_host::audit::Event::Device { device: device.to_string(), change: what.clone() },
        )?;
        println!("{device}: {what}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn call(
    request: &agent_host::local_api::ApiRequest,
    on_line: impl FnMut(&agent_host::local_api::ApiResponse),
) -> anyhow::Result<Vec<agent_host::local_api::ApiResponse>> {
    let dirs = Dirs::discover()?;
    let owner = dirs::owner_socket(&dirs);
    // What any asker may do goes through the agent socket where the owner socket is out of
    // reach (inside a jail), and is labelled `local:agent` there.
    let socket =
        if request.needs_owner() || owner.exists() { owner } else { dirs::agent_socket(&dirs) };
    Ok(runtime()?.block_on(agent_host::local_api::call(&socket, request, on_line))?)
}

/// The paired devices' names by their ids, as the host's registry has them (none if it cannot
/// be read: people then read ids).
pub(super) fn device_names() -> std::collections::BTreeMap<String, String> {
    let registry =
        Dirs::discover().ok().and_then(|d| agent_host::devices::Registry::load(&d.state).ok());
    registry
        .map(|r| r.list().into_iter().map(|(d, _)| (d.id.to_string(), d.name)).collect())
        .unwrap_or_default()
}

pub(super) fn pending_list() -> anyhow::Result<Vec<agent_host::approvals::Pending>> {
    Ok(listing()?.0)
}

type Listing = (
    Vec<agent_host::approvals::Pending>,
    Vec<agent_host::host_core::Track>,
    std::collections::BTreeMap<protocol::DeviceId, agent_host::host_core::PushState>,
);

fn listing() -> anyhow::Result<Listing> {
    use agent_host::local_api::{ApiRequest, ApiResponse};
    match call(&ApiRequest::Approvals, |_| {})?.into_iter().next() {
        Some(ApiResponse::Approvals { pending, delivery, push }) => Ok((pending, delivery, push)),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    }
}

/// A delivery stage as the protocol spells it.
fn stage_name(stage: protocol::DeliveryStage) -> &'static str {
    match stage {
        protocol::DeliveryStage::Issued => "issued",
        protocol::DeliveryStage::Delivered => "delivered",
        protocol::DeliveryStage::Shown => "shown",
        protocol::DeliveryStage::Decided => "decided",
        protocol::DeliveryStage::Applied => "applied",
    }
}

/// `approvals --delivery`: every action kept, where it got on each device, and the pushes.
fn delivery(json: bool) -> anyhow::Result<ExitCode> {
    let (_, tracks, push) = listing()?;
    if json {
        let out = serde_json::json!({ "actions": tracks, "push": push });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let names = device_names();
    let name = |id: &protocol::DeviceId| {
        names.get(&id.to_string()).cloned().unwrap_or_else(|| id.to_string())
    };
    if tracks.is_empty() {
        println!("no action waits, and none was settled lately");
    }
    for t in &tracks {
        let state = match (t.verdict, t.applied) {
            (None, _) => "waiting".to_string(),
            (Some(_), true) => "approved and applied".into(),
            (Some(v), false) => {
                let by = t.decided_by.as_deref().unwrap_or("nobody");
                format!(
                    "{} by {by}",
                    if v == protocol::Verdict::Approve { "approved" } else { "denied" }
                )
            }
        };
        println!("{}  {}  ({state})", t.request, t.summary);
        for (device, stage) in &t.devices {
            println!("    {}: {}", name(device), stage_name(*stage));
        }
    }
    for (device, state) in &push {
        let error = state.last_error.as_deref().map(|e| format!("; last: {e}")).unwrap_or_default();
        println!("push to {}: {} tries{error}", name(device), state.attempts);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn approvals(json: bool, with_delivery: bool) -> anyhow::Result<ExitCode> {
    if with_delivery {
        return delivery(json);
    }
    let (pending, tracks, _) = listing()?;
    if json {
        println!("{}", serde_json::to_string(&pending)?);
    } else if pending.is_empty() {
        println!("nothing is waiting for approval");
    } else {
        for p in &pending {
            let left = p.expires_at_ms.saturating_sub(agent_host::host::now_ms()) / 1000;
            println!("{}  {}", p.id, p.summary);
            if let protocol::Action::Run { argv, cwd, env } = &p.action {
                println!("    exactly: {argv:?} in {cwd}");
                for (name, value) in env {
                    println!("    with {name}={value}");
                }
            }
            println!("    why: {}", p.reason);
            let names = device_names();
            let who = p.requested_by.person(|id| names.get(&id.to_string()).cloned());
            println!("    asked by {who}; {left} s left");
            if let Some(t) = tracks.iter().find(|t| t.request == p.id && !t.devices.is_empty()) {
                let reached: Vec<String> = t
                    .devices
                    .iter()
                    .map(|(d, stage)| {
                        let name = names.get(&d.to_string()).cloned().unwrap_or(d.to_string());
                        format!("{name} {}", stage_name(*stage))
                    })
                    .collect();
                println!("    reached: {}", reached.join(", "));
            }
            for line in p.preview.iter().flat_map(|p| p.lines()) {
                println!("    | {line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn decide(
    prefix: &str,
    verdict: protocol::Verdict,
    note: Option<String>,
) -> anyhow::Result<ExitCode> {
    let note = note.filter(|n| !n.trim().is_empty());
    if let Some(note) = &note {
        protocol::check_note(note)?;
    }
    use agent_host::local_api::{ApiRequest, ApiResponse};
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
    let request =
        ApiRequest::Decide { id: target.id, action_hash: target.action_hash, verdict, note };
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
pub(super) fn finished(
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

pub(super) fn run_allowed(
    request: &str,
    cwd: String,
    argv: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use agent_host::local_api::{ApiRequest, ApiResponse};
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

pub(super) fn exec(argv: Vec<String>, cwd: Option<String>, wait: bool) -> anyhow::Result<ExitCode> {
    use agent_host::local_api::{ApiRequest, ApiResponse};
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
