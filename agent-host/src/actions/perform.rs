//! Doing what was allowed or approved: the audit record of the start (durable, with every record
//! that led there), the sandboxed run or the confined file operation or a session's input, the
//! result to every device through the core, then its audit record.
//!
//! It must not judge: what arrives here was allowed by policy or approved by a person.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use protocol::{Action, Blob, ErrorCode, HostEvent, RequestId};

use super::Outcome;
use crate::audit::Event;
use crate::exec::{Job, Limits};
use crate::host::Host;

/// What an allowed or approved request does.
pub(super) enum Work {
    Run(Job),
    File(Action),
    /// Input for a session's terminal, with the line it was judged against.
    Input(protocol::SessionId, String, crate::session::input::Typed),
    /// A program to start as a session, of this kind ([`start_session`]).
    Session(Vec<String>, protocol::SessionKind),
}

/// The directory a command runs in: `requested` taken from `base` (an absolute directory; an
/// absolute `requested` stands alone), resolved by the kernel, and a directory inside the
/// workspace; `None` otherwise. Every requester's directory goes through here.
pub(super) fn working_dir(
    files: &crate::confine::Workspace,
    base: &Path,
    requested: &str,
) -> Option<PathBuf> {
    let real = base.join(requested).canonicalize().ok()?;
    let relative = real.strip_prefix(files.root()).ok()?;
    files.is_dir(relative).ok()?;
    Some(real)
}

/// Performs an allowed or approved request: audit first (committed, with the records that led
/// here; see [`Host::commit`]), then the sandbox or the confined file operation, then the result
/// to every device, then audit.
pub(super) async fn perform(host: Arc<Host>, id: RequestId, work: Work) -> Outcome {
    if let Err(e) = host.record(Event::Start { request: id.to_string() }) {
        return Outcome::refused(Some(id), ErrorCode::Internal, format!("{e}; not done"));
    }
    let worker = host.clone();
    // The commit waits for the disk off the runtime's thread, which meanwhile sends the
    // decision to the devices.
    let done = match work {
        // Typed through the core, which knows the line as it is now.
        Work::Input(session, data, judged) => {
            let committed = tokio::task::spawn_blocking(move || worker.commit()).await;
            match committed {
                Ok(Ok(())) => Ok(Ok(type_input(&host, session, data, judged).await)),
                Ok(Err(e)) => Ok(Err((ErrorCode::Internal, format!("{e}; not done")))),
                Err(e) => Err(e),
            }
        }
        Work::Session(command, kind) => {
            let committed = tokio::task::spawn_blocking(move || worker.commit()).await;
            match committed {
                Ok(Ok(())) => Ok(Ok(start_session(&host, command, kind).await)),
                Ok(Err(e)) => Ok(Err((ErrorCode::Internal, format!("{e}; not done")))),
                Err(e) => Err(e),
            }
        }
        work => {
            tokio::task::spawn_blocking(move || {
                worker.commit().map_err(|e| (ErrorCode::Internal, format!("{e}; not done")))?;
                Ok(act(&worker, work))
            })
            .await
        }
    };
    let (exit_code, mut output, mut truncated, timed_out) = match done {
        Ok(Ok(Ok(o))) => o,
        Ok(Ok(Err((code, message)))) => {
            audit_result(&host, id, None, &format!("failed: {message}"));
            return Outcome::refused(Some(id), code, message);
        }
        Ok(Err((code, message))) => return Outcome::refused(Some(id), code, message),
        Err(e) => return Outcome::refused(Some(id), ErrorCode::Internal, e.to_string()),
    };
    if output.len() > protocol::limits::MAX_OUTPUT {
        output.truncate(protocol::limits::MAX_OUTPUT);
        truncated = true;
    }
    let summary = if timed_out {
        "killed at the timeout".to_string()
    } else {
        format!("{} bytes of output", output.len())
    };
    // The result goes out first: its record is not one an action waits for. Through the core,
    // which keeps it as the answer to a device that asks again.
    let result =
        HostEvent::ActionResult { request: id, exit_code, output: Blob(output.clone()), truncated };
    if let Err(e) = host.core.done(None, result).await {
        tracing::warn!("the result of {id} is not told: {e}");
    }
    audit_result(&host, id, exit_code, &summary);
    Outcome::Done { request: id, exit_code, output, truncated, timed_out }
}

/// What an action left: exit code, output, whether it was cut, whether it timed out.
type Ran = (Option<i32>, Vec<u8>, bool, bool);

/// Does `work`, on a thread that may block.
fn act(worker: &Host, work: Work) -> Result<Ran, (ErrorCode, String)> {
    match work {
        Work::Run(job) => {
            let roots = [worker.config.workspace.clone()];
            let cancel = Arc::new(AtomicBool::new(false));
            let redirects = crate::exec::git_redirects(&roots);
            let ran = match &worker.pool {
                Some(pool) => pool.run(&job, &cancel),
                None => crate::exec::run(
                    &worker.config.sandbox,
                    &job,
                    &worker.scope,
                    &Limits::default(),
                    &cancel,
                ),
            };
            let removed = crate::exec::remove_new_git_redirects(&roots, &redirects);
            ran.map(|o| {
                let mut output = o.output;
                for path in removed {
                    output.extend_from_slice(
                        format!(
                            "\nagent-host: removed {}, which the command created: it would \
                             point git at other config and hooks\n",
                            path.display()
                        )
                        .as_bytes(),
                    );
                }
                (o.exit_code, output, o.truncated, o.timed_out)
            })
            .map_err(|e| (ErrorCode::Internal, format!("could not run: {e}")))
        }
        Work::File(action) => file_op(&worker.files, &action)
            .map(|output| (None, output, false, false))
            .map_err(|e| ((&e).into(), e.to_string())),
        // Typed through the core ([`type_input`]), started by [`start_session`]: never here.
        Work::Input(..) | Work::Session(..) => {
            Err((ErrorCode::Internal, "input and sessions are not done on a thread".into()))
        }
    }
}

/// Types allowed or approved input into a session, through the core, which checks it against
/// the line as it is now ([`crate::host_core::HostCore::type_into`]).
async fn type_input(
    host: &Host,
    session: protocol::SessionId,
    data: String,
    judged: crate::session::input::Typed,
) -> Result<Ran, (ErrorCode, String)> {
    match host.core.type_into(session, data, judged).await {
        Ok(Ok(())) => Ok((None, Vec::new(), false, false)),
        Ok(Err(e)) => Err(((&e).into(), e.to_string())),
        Err(e) => Err((ErrorCode::Internal, e.to_string())),
    }
}

/// The most sessions started for devices that may run at once.
pub(super) const MAX_STARTED_SESSIONS: usize = 8;
/// How long a started session has to say it is shared.
const SESSION_START_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The sessions started for devices that still run.
static STARTED_SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts `command` as a session, as the person at the machine would with `agent-host run --
/// COMMAND` in the workspace: this binary's `run`, always in the jail (it refuses to start
/// where no jail can run; a device can never ask for `--no-jail`), with the host's
/// environment, no terminal of its own (the devices are its screen). Waits until it says it is
/// shared; the session then reaches every device as any session does. It ends when its program
/// does, or with the host: `--end-with-host` ends it when its link to the host ends (a host
/// that stops, or dies), and the child is killed when the host's runtime stops.
async fn start_session(
    host: &Host,
    command: Vec<String>,
    kind: protocol::SessionKind,
) -> Result<Ran, (ErrorCode, String)> {
    use std::sync::atomic::Ordering;
    let shown = super::quote_argv(&command);
    let fail = |message: String| (ErrorCode::Internal, message);
    if STARTED_SESSIONS.fetch_add(1, Ordering::SeqCst) >= MAX_STARTED_SESSIONS {
        STARTED_SESSIONS.fetch_sub(1, Ordering::SeqCst);
        return Err((
            ErrorCode::RateLimited,
            format!("{MAX_STARTED_SESSIONS} sessions started from devices run already"),
        ));
    }
    struct Started;
    impl Drop for Started {
        fn drop(&mut self) {
            STARTED_SESSIONS.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let started = Started;
    let exe = std::env::current_exe().map_err(|e| fail(format!("cannot find agent-host: {e}")))?;
    let flag = if kind == protocol::SessionKind::Agent { "--agent" } else { "--shell" };
    let mut child = tokio::process::Command::new(exe)
        .args(["run", flag, "--end-with-host", "--"])
        .args(&command)
        .current_dir(&host.config.workspace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start `agent-host run`: {e}")))?;
    let Some(stderr) = child.stderr.take() else {
        return Err(fail("no stderr from `agent-host run`".into()));
    };
    let mut lines = tokio::io::BufReader::new(stderr);
    let mut said = Vec::new();
    let shared = tokio::time::timeout(SESSION_START_WAIT, async {
        while let Some(line) = next_line(&mut lines).await {
            if shared_line(&line) {
                return Some(line);
            }
            if said.len() < 8 {
                said.push(line);
            }
        }
        None
    })
    .await;
    let Ok(Some(line)) = shared else {
        let _ = child.start_kill();
        let why = if said.is_empty() { "it said nothing".to_string() } else { said.join("; ") };
        return Err(fail(format!("`{shown}` did not start as a session: {why}")));
    };
    let pid = child.id();
    tokio::spawn(async move {
        let _started = started;
        while let Some(line) = next_line(&mut lines).await {
            tracing::info!("session `{shown}` ({pid:?}): {line}");
        }
        match child.wait().await {
            Ok(status) => tracing::info!("session `{shown}` ({pid:?}) ended: {status}"),
            Err(e) => tracing::warn!("session `{shown}` ({pid:?}): {e}"),
        }
    });
    let text = line.strip_prefix("agent-host: ").unwrap_or(&line);
    Ok((None, format!("{text}\n").into_bytes(), false, false))
}

/// The next line `agent-host run` wrote to its standard error (not UTF-8: decoded lossily; a
/// line of more than 4 KiB cut), without its line end; `None` at the end.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(from: &mut R) -> Option<String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    let mut line = Vec::new();
    let n = from.take(4096).read_until(b'\n', &mut line).await.ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string())
}

/// Whether `line` is `agent-host run`'s own word that the session is shared, exactly
/// (`agent-host: session <id> shared with paired devices`): nothing a program's name or its
/// own output can put in another line.
fn shared_line(line: &str) -> bool {
    line.strip_prefix("agent-host: session ")
        .and_then(|rest| rest.strip_suffix(" shared with paired devices"))
        .is_some_and(|id| id.parse::<protocol::SessionId>().is_ok())
}

pub(super) fn audit_result(host: &Host, id: RequestId, exit_code: Option<i32>, summary: &str) {
    if let Err(e) =
        host.record(Event::Result { request: id.to_string(), exit_code, summary: summary.into() })
    {
        tracing::error!("audit: {e}");
    }
}

fn file_op(
    files: &crate::confine::Workspace,
    action: &Action,
) -> Result<Vec<u8>, crate::confine::FsError> {
    match action {
        Action::ReadFile { path } => files.read(Path::new(path)),
        Action::ListDir { path } => Ok(files
            .list(Path::new(path))?
            .into_iter()
            .map(|e| format!("{}\t{}\n", e.kind, e.name))
            .collect::<String>()
            .into_bytes()),
        Action::WriteFile { path, content } => files.write(Path::new(path), &content.0).map(|()| {
            Vec::new() // nothing to show but success
        }),
        Action::EditFile { path, old, new } => {
            files.edit(Path::new(path), old, new).map(|()| Vec::new())
        }
        Action::Run { .. }
        | Action::SessionInput { .. }
        | Action::StartSession { .. }
        | Action::WebFetch { .. }
        | Action::Tool { .. } => Ok(Vec::new()),
    }
}
