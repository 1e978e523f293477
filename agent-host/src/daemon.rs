//! `agent-host serve`: the daemon for one workspace. It holds the identity key, the policy, the
//! approvals broker, the audit log and the sandbox, and serves the local API on a unix socket.
//!
//! Every command takes one path: policy → (if asked) a pending action that the first valid
//! decision settles → audit record flushed → sandboxed run → audit record of the result. The
//! remote link (later) feeds requests into the same path.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{Action, Blob, HostId, RequestId, Verdict, action_hash};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use crate::approvals::{Broker, Pending, Resolution};
use crate::audit::{AuditLog, Event};
use crate::dirs::Dirs;
use crate::exec::{Job, Limits, Sandbox};
use crate::local_api::{ApiRequest, ApiResponse, MAX_LINE};
use crate::policy::{Policy, Subject, Verdict as PolicyVerdict};

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The workspace root.
    pub workspace: PathBuf,
    /// The merged policy.
    pub policy: Policy,
    /// The sandbox in force.
    pub sandbox: Sandbox,
    /// How long a pending action waits before it lapses into a denial.
    pub approval_timeout: Duration,
    /// How long a command may run.
    pub command_timeout: Duration,
}

struct Host {
    config: Config,
    dirs: Dirs,
    host_id: HostId,
    audit: Mutex<AuditLog>,
    broker: Mutex<Broker>,
    waiters: Mutex<HashMap<RequestId, oneshot::Sender<Resolution>>>,
    /// The workspace root, held open once for every confined lookup.
    files: crate::confine::Workspace,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The socket of the host whose state is in `dirs`.
pub fn socket_path(dirs: &Dirs) -> PathBuf {
    dirs.state.join("host.sock")
}

/// Runs the daemon until `shutdown` resolves. `ready` receives the host id once the socket
/// accepts connections.
pub async fn serve(
    dirs: Dirs,
    config: Config,
    ready: Option<oneshot::Sender<HostId>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dirs.state)?;
    std::fs::set_permissions(&dirs.state, std::fs::Permissions::from_mode(0o700))?;
    let key = crate::identity::load_or_create(&dirs.config.join("host.key"))?;
    let host_id = HostId::new(key.public_key());
    // The audit log's lock also makes this the only host on this state directory.
    let audit = AuditLog::open(&dirs.audit_log()).map_err(|e| match e {
        crate::audit::AuditError::Locked(_) => {
            anyhow::anyhow!("another agent-host is running on {}", dirs.state.display())
        }
        other => anyhow::anyhow!("the audit log does not verify; refusing to start: {other}"),
    })?;
    if let Some(note) = &audit.recovered {
        tracing::warn!("audit log: {note}");
    }
    let socket = socket_path(&dirs);
    let _ = std::fs::remove_file(&socket); // stale: the lock above proves no host owns it
    let listener = UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(host = %host_id, socket = %socket.display(), sandbox = %config.sandbox.describe(), "host ready");
    let files = crate::confine::Workspace::open(std::slice::from_ref(&config.workspace))?;
    let host = Arc::new(Host {
        config,
        dirs,
        host_id,
        audit: Mutex::new(audit),
        broker: Mutex::new(Broker::new()),
        waiters: Mutex::new(HashMap::new()),
        files,
    });
    if let Some(ready) = ready {
        let _ = ready.send(host_id);
    }
    let expiry = tokio::spawn(expire_loop(host.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => { tracing::warn!("accept: {e}"); continue; }
                };
                let host = host.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(host, stream).await {
                        tracing::debug!("local client: {e}");
                    }
                });
            }
        }
    }
    expiry.abort();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("host stopped");
    Ok(())
}

/// Denies what lapsed, every 250 ms.
async fn expire_loop(host: Arc<Host>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let lapsed = lock(&host.broker).expire(now_ms());
        for resolution in lapsed {
            settle(&host, resolution);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these would be a bug; the state is still consistent
    // (every mutation is a single call), so keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records a resolution and wakes whoever waits for it.
fn settle(host: &Host, resolution: Resolution) {
    let id = resolution.pending.id;
    let by = resolution.by.clone().unwrap_or_else(|| "nobody (lapsed)".into());
    let verdict = if resolution.verdict == Verdict::Approve { "approve" } else { "deny" };
    if let Err(e) = lock(&host.audit).append(
        now_ms(),
        Event::Approval {
            request: id.to_string(),
            verdict: verdict.into(),
            by,
            action_hash: resolution.pending.action_hash.to_string(),
        },
    ) {
        tracing::error!("audit: {e}");
    }
    if let Some(waiter) = lock(&host.waiters).remove(&id) {
        let _ = waiter.send(resolution);
    }
}

async fn handle(host: Arc<Host>, stream: UnixStream) -> anyhow::Result<()> {
    let peer = stream.peer_cred()?;
    if peer.uid() != rustix::process::getuid().as_raw() {
        anyhow::bail!("refused a local client of uid {}", peer.uid());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read.take(MAX_LINE as u64 + 1)).read_line(&mut line).await?;
    let mut send = async |response: &ApiResponse| -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(response)?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        Ok(())
    };
    if n > MAX_LINE {
        return send(&ApiResponse::Error { message: format!("request over {MAX_LINE} bytes") })
            .await;
    }
    let request: ApiRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return send(&ApiResponse::Error { message: format!("bad request: {e}") }).await,
    };
    match request {
        ApiRequest::Status => {
            send(&ApiResponse::Status {
                host_id: host.host_id.to_string(),
                workspace: host.config.workspace.display().to_string(),
                sandbox: host.config.sandbox.describe(),
            })
            .await
        }
        ApiRequest::Approvals => {
            let pending = lock(&host.broker).list();
            send(&ApiResponse::Approvals { pending }).await
        }
        ApiRequest::Decide { id, action_hash, verdict } => {
            let result =
                lock(&host.broker).decide(id, &action_hash, verdict, "local:terminal", now_ms());
            match result {
                Ok(resolution) => {
                    settle(&host, resolution);
                    send(&ApiResponse::Decided { request: id, verdict }).await
                }
                Err(e) => send(&ApiResponse::Error { message: e.to_string() }).await,
            }
        }
        ApiRequest::Exec { argv, cwd, wait } => {
            let (first, rest) = exec(host, argv, cwd).await;
            send(&first).await?;
            if let Some(rest) = rest {
                if wait {
                    send(&rest.await.unwrap_or_else(|_| ApiResponse::Error {
                        message: "the host stopped".into(),
                    }))
                    .await?;
                } else {
                    // Go on without the client: the action still runs when approved.
                    tokio::spawn(async move {
                        let _ = rest.await;
                    });
                }
            }
            Ok(())
        }
    }
}

type Later = tokio::task::JoinHandle<ApiResponse>;

/// Judges and (when allowed or approved) runs a command. Returns the first answer, and the
/// final one still to come when a person must decide.
async fn exec(
    host: Arc<Host>,
    argv: Vec<String>,
    cwd: Option<String>,
) -> (ApiResponse, Option<Later>) {
    let denied = |reason: String| ApiResponse::Denied { request: None, reason };
    if argv.is_empty() {
        return (denied("an empty command".into()), None);
    }
    let cwd_rel = cwd.unwrap_or_else(|| ".".into());
    let Some(cwd_path) = resolve_cwd(&host.files, &cwd_rel) else {
        return (
            denied(format!("working directory {cwd_rel} is not a directory inside the workspace")),
            None,
        );
    };
    let id = match crate::identity::random_id() {
        Ok(id) => RequestId(id),
        Err(e) => return (ApiResponse::Error { message: e.to_string() }, None),
    };
    let action = Action::Run { argv: argv.clone(), cwd: cwd_rel, env: Default::default() };
    let hash = action_hash(&action);
    let decision = host.config.policy.decide(&Subject::Argv(argv.clone()), &cwd_path);
    let summary = format!("run `{}` in {}", argv.join(" "), cwd_path.display());
    if let Err(e) = lock(&host.audit).append(
        now_ms(),
        Event::Request {
            request: id.to_string(),
            actor: "local:terminal".into(),
            action: serde_json::to_value(&action).unwrap_or_default(),
            action_hash: hash.to_string(),
            decision: decision.decision.to_string(),
            reason: decision.reason.clone(),
            rule: decision.rule.clone(),
        },
    ) {
        return (ApiResponse::Error { message: format!("audit log: {e}; nothing was run") }, None);
    }
    // The network is on only for a command that reaches it by design and that an explicit rule
    // allowed (here) or a person approved (set when the approval arrives).
    let wants_network = host.config.policy.wants_network(&argv);
    let mut job = Job {
        argv,
        cwd: cwd_path,
        env: Default::default(),
        network: wants_network && decision.rule.is_some(),
        timeout: host.config.command_timeout,
    };
    match decision.decision {
        PolicyVerdict::Deny => {
            (ApiResponse::Denied { request: Some(id), reason: decision.reason }, None)
        }
        PolicyVerdict::Allow => (run(host, id, job).await, None),
        PolicyVerdict::Ask => {
            let (tx, rx) = oneshot::channel();
            lock(&host.waiters).insert(id, tx);
            let pending = Pending {
                id,
                action,
                action_hash: hash,
                summary: summary.clone(),
                reason: decision.reason.clone(),
                requested_by: "local:terminal".into(),
                expires_at_ms: now_ms() + host.config.approval_timeout.as_millis() as u64,
            };
            if let Err(e) = lock(&host.broker).add(pending) {
                lock(&host.waiters).remove(&id);
                return (ApiResponse::Error { message: e.to_string() }, None);
            }
            let first = ApiResponse::Pending {
                request: id,
                action_hash: hash,
                summary,
                reason: decision.reason,
            };
            let later = tokio::spawn(async move {
                match rx.await {
                    Ok(Resolution { verdict: Verdict::Approve, .. }) => {
                        job.network = wants_network;
                        run(host, id, job).await
                    }
                    Ok(Resolution { by: Some(by), .. }) => {
                        ApiResponse::Denied { request: Some(id), reason: format!("denied by {by}") }
                    }
                    Ok(Resolution { by: None, .. }) => ApiResponse::Denied {
                        request: Some(id),
                        reason: "nobody approved before the request lapsed".into(),
                    },
                    Err(_) => ApiResponse::Error { message: "the host stopped".into() },
                }
            });
            (first, Some(later))
        }
    }
}

/// The working directory, resolved beneath the root by the kernel; `None` if it is not a
/// directory inside.
fn resolve_cwd(files: &crate::confine::Workspace, relative: &str) -> Option<PathBuf> {
    files.list(Path::new(relative)).ok()?;
    let path = files.root().join(relative).canonicalize().ok()?;
    path.starts_with(files.root()).then_some(path)
}

/// Runs an allowed or approved job: audit first (flushed), then the sandbox, then audit.
async fn run(host: Arc<Host>, id: RequestId, job: Job) -> ApiResponse {
    if let Err(e) = lock(&host.audit).append(now_ms(), Event::Start { request: id.to_string() }) {
        return ApiResponse::Error { message: format!("audit log: {e}; nothing was run") };
    }
    let worker = host.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let roots = [worker.config.workspace.clone()];
        crate::exec::run(
            &worker.config.sandbox,
            &job,
            &roots,
            &worker.dirs.all(),
            &Limits::default(),
            &Arc::new(AtomicBool::new(false)),
        )
    })
    .await;
    let outcome = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return ApiResponse::Error { message: format!("could not run: {e}") },
        Err(e) => return ApiResponse::Error { message: format!("could not run: {e}") },
    };
    let summary = if outcome.timed_out {
        "killed at the timeout".to_string()
    } else {
        format!("{} bytes of output", outcome.output.len())
    };
    if let Err(e) = lock(&host.audit).append(
        now_ms(),
        Event::Result { request: id.to_string(), exit_code: outcome.exit_code, summary },
    ) {
        tracing::error!("audit: {e}");
    }
    ApiResponse::Done {
        request: id,
        exit_code: outcome.exit_code,
        output: Blob(outcome.output),
        truncated: outcome.truncated,
        timed_out: outcome.timed_out,
    }
}
