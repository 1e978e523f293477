//! `agent-host serve`: the daemon for one workspace. It starts the [`Host`] (the identity key,
//! the policy, the audit log, the sandbox, the paired devices; [`crate::host`]) and the driver of
//! its decision state, serves the local API on two unix sockets, and (with a relay) starts the
//! link to paired devices.
//!
//! The two sockets ([`Door`]): the *owner socket* takes every request, including those that
//! grant or change authority (approve, deny, pair, devices and their roles); it lies in the
//! state directory, which every sandbox and jail hides. The *agent socket* takes only what an
//! agent needs (ask, the hook, a session's input and output, running a command through policy,
//! status); it lies in a directory of its own that a jail binds in. An owner request on the
//! agent socket is refused and audited.
//!
//! Every action, local or remote, takes the one path in [`crate::actions`].

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use protocol::{HostId, RequestId};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::actions::Outcome;
use crate::approvals::Requester;
use crate::audit::{AuditError, AuditLog, Record};
use crate::devices::Registry;
use crate::dirs::Dirs;
use crate::dirs::{agent_socket, agent_socket_dir, owner_socket};
use crate::host::{Config, Host, Syncer, lock, now_ms, recent_request};
use crate::local_api::LocalConn;
use crate::local_api::{ApiRequest, ApiResponse, Door, LocalApiError};
use crate::refusals::RefusalBudget;

/// Binds a private socket at `path`, replacing a stale one (the audit log's lock proves no
/// host owns it).
fn bind_private(path: &std::path::Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Why the host did not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A directory, socket or file of the host's could not be made.
    #[error("{}: {error}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The identity key.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The channel key's public half could not be worked out.
    #[error("the channel key: {0}")]
    Channel(protocol::channel::ChannelError),
    /// Another host runs on this state directory.
    #[error("another agent-host is running on {}", .0.display())]
    Running(PathBuf),
    /// The audit log does not verify.
    #[error("the audit log does not verify; refusing to start: {0}")]
    Audit(AuditError),
    /// The paired devices could not be loaded.
    #[error(transparent)]
    Devices(#[from] crate::devices::RegistryError),
    /// The workspace could not be opened.
    #[error(transparent)]
    Workspace(#[from] crate::confine::FsError),
    /// The host's decision state stopped while serving.
    #[error("{0}; the host stopped")]
    Stopped(String),
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |error| ServeError::Io { path: path.to_path_buf(), error }
}

/// Runs the daemon until `shutdown` resolves. `ready` receives the host id once the socket
/// accepts connections.
pub async fn serve(
    dirs: Dirs,
    config: Config,
    ready: Option<oneshot::Sender<HostId>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&dirs.state).map_err(io(&dirs.state))?;
    std::fs::set_permissions(&dirs.state, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&dirs.state))?;
    let key = crate::identity::load_or_create(&dirs.config.join("host.key"))?;
    let channel = crate::identity::load_or_create_channel(&dirs.config.join("channel.key"))?;
    let channel_key = protocol::channel::public_of(&channel).map_err(ServeError::Channel)?;
    let host_id = HostId::new(key.public_key());
    let me = key.public_key();
    let horizon = protocol::VerifyContext::new(&me, now_ms());
    let since = horizon.now_ms.saturating_sub(horizon.replayable_for_ms());
    let mut requested_before = HashSet::new();
    let mut remember = |record: &Record| requested_before.extend(recent_request(record, since));
    // The audit log's lock also makes this the only host on this state directory.
    let audit = AuditLog::open_with(&dirs.audit_log(), &mut remember).map_err(|e| match e {
        AuditError::Locked(_) => ServeError::Running(dirs.state.clone()),
        other => ServeError::Audit(other),
    })?;
    if let Some(note) = &audit.recovered {
        tracing::warn!("audit log: {note}");
    }
    let mut devices = Registry::load(&dirs.state)?;
    devices.prepare()?;
    let (audit, journal) = (Arc::new(audit), devices.journal_sync());
    let devices = Arc::new(Mutex::new(devices));
    let syncer = Syncer::start(audit.clone(), journal, devices.clone()).map_err(io(&dirs.state))?;
    let agent_dir = agent_socket_dir(&dirs);
    std::fs::create_dir_all(&agent_dir).map_err(io(&agent_dir))?;
    std::fs::set_permissions(&agent_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&agent_dir))?;
    let (socket, agent) = (owner_socket(&dirs), agent_socket(&dirs));
    let agents = bind_private(&agent).map_err(io(&agent))?;
    // The owner socket last: tests and clients take it as the sign that the host is ready.
    let owners = bind_private(&socket).map_err(io(&socket))?;
    tracing::info!(host = %host_id, socket = %socket.display(), agent_socket = %agent.display(), sandbox = %config.sandbox.describe(), "host ready");
    crate::exec::ensure_agent_settings_dir(&config.workspace).map_err(io(&config.workspace))?;
    let files = crate::confine::Workspace::open(std::slice::from_ref(&config.workspace))?;
    let (link_tx, link_rx) = crate::host::link_queue();
    let relay = config.relay.clone();
    let scope = crate::exec::Scope {
        roots: vec![config.workspace.clone()],
        hidden: dirs.all(),
        user: config.user.clone(),
        layer: std::env::current_exe().ok(),
    };
    let pool = std::env::current_exe().ok().and_then(|launcher| {
        crate::exec::WarmPool::start(
            &config.sandbox,
            &launcher,
            &scope,
            &crate::exec::Limits::default(),
        )
    });
    let mut core = crate::host_core::HostCore::new(
        me,
        u64::try_from(config.approval_timeout.as_millis()).unwrap_or(u64::MAX),
        config.two_person,
    )
    .requested_before(requested_before)
    .named(config.host_name.clone())
    .with_channel_key(protocol::ChannelKey(channel_key));
    let pusher = match crate::push::VapidKey::load_or_create(&dirs.config.join("vapid.key"))
        .and_then(|key| crate::push::Pusher::new(key, &config.push))
    {
        Ok(pusher) => Some(pusher),
        Err(e) => {
            tracing::warn!("push: {e}; notifications are not pushed");
            None
        }
    };
    if let Some(wait) = config.push.ack_wait {
        core = core.push_ack_wait(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    for (device, counters) in lock(&devices).list() {
        core.load_device(device.id, device.role, counters.rx);
        if let (Some(push), Some(_)) = (&device.push, &pusher) {
            core.set_push(now_ms(), device.id, Some(push.hide_detail));
        }
    }
    let (core_handle, core_commands) = crate::host_core::CoreHandle::channel();
    let host = Arc::new(Host {
        config,
        key,
        host_id,
        audit,
        syncer,
        core: core_handle,
        files,
        devices,
        device_changes: tokio::sync::Mutex::new(()),
        refusals: Mutex::new(RefusalBudget::default()),
        link: relay.is_some().then_some(link_tx),
        pool,
        scope,
        pusher,
    });
    let driver = tokio::spawn(crate::driver::drive(host.clone(), core, core_commands));
    let link =
        relay.map(|setup| tokio::spawn(crate::link::run(host.clone(), setup, channel, link_rx)));
    if let Some(ready) = ready {
        let _ = ready.send(host_id);
    }
    tokio::pin!(shutdown);
    tokio::pin!(driver);
    let mut failed = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Without its driver the host can decide nothing: stop rather than answer
            // "stopped" to everyone while looking alive.
            ended = &mut driver => {
                failed = Some(format!("the host's decision state stopped ({ended:?})"));
                break;
            }
            accepted = owners.accept() => accept(&host, accepted, Door::Owner),
            accepted = agents.accept() => accept(&host, accepted, Door::Agent),
        }
    }
    driver.abort();
    if let Some(link) = link {
        link.abort();
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&agent);
    if let Err(e) = host.commit() {
        tracing::error!("{e}");
    }
    if let Some(failed) = failed {
        return Err(ServeError::Stopped(failed));
    }
    tracing::info!("host stopped");
    Ok(())
}

/// Serves one local client that came in at `door`.
fn accept(
    host: &Arc<Host>,
    accepted: std::io::Result<(UnixStream, tokio::net::unix::SocketAddr)>,
    door: Door,
) {
    let stream = match accepted {
        Ok((stream, _)) => stream,
        Err(e) => {
            tracing::warn!("accept: {e}");
            return;
        }
    };
    let host = host.clone();
    tokio::spawn(async move {
        if let Err(e) = handle(host, stream, door).await {
            tracing::debug!("local client: {e}");
        }
    });
}

async fn handle(host: Arc<Host>, stream: UnixStream, door: Door) -> Result<(), LocalApiError> {
    let peer = stream.peer_cred()?;
    if peer.uid() != rustix::process::getuid().as_raw() {
        return Err(LocalApiError::NotTheOwner(peer.uid()));
    }
    let mut conn = LocalConn::new(stream);
    let request: ApiRequest = match conn.next().await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(e) => {
            return conn.send(&ApiResponse::Error { message: format!("bad request: {e}") }).await;
        }
    };
    if door == Door::Agent && request.needs_owner() {
        let message = format!(
            "`{}` grants or changes authority: only the owner socket takes it, and nothing an \
             agent runs can reach that",
            request.op()
        );
        crate::host::refuse(&host, "local:agent-socket", &message);
        return conn.send(&ApiResponse::Error { message }).await;
    }
    match request {
        ApiRequest::Status => {
            let response = ApiResponse::Status {
                host_id: host.host_id.to_string(),
                workspace: host.config.workspace.display().to_string(),
                sandbox: host.config.sandbox.describe(),
            };
            conn.send(&response).await
        }
        ApiRequest::Approvals => {
            let listed: Result<_, crate::host_core::CoreError> =
                async { Ok((host.core.pending().await?, host.core.deliveries().await?)) }.await;
            match listed {
                Ok((pending, (delivery, push))) => {
                    conn.send(&ApiResponse::Approvals { pending, delivery, push }).await
                }
                Err(e) => conn.send(&ApiResponse::Error { message: e.to_string() }).await,
            }
        }
        ApiRequest::Decide { id, action_hash, verdict, note } => {
            if let Some(Err(e)) = note.as_deref().map(protocol::check_note) {
                return conn.send(&ApiResponse::Error { message: e.to_string() }).await;
            }
            let decided = crate::actions::decide(
                &host,
                id,
                &action_hash,
                verdict,
                &Requester::Local("terminal".into()),
                note,
            )
            .await;
            let response = match decided {
                Ok(()) => ApiResponse::Decided { request: id, verdict },
                Err(e) => ApiResponse::Error { message: e.to_string() },
            };
            conn.send(&response).await
        }
        ApiRequest::Exec { argv, cwd, wait } => {
            let id = RequestId(crate::identity::random_id()?);
            let action = protocol::Action::Run {
                argv,
                cwd: cwd.unwrap_or_else(|| ".".into()),
                env: Default::default(),
            };
            if let Err(e) =
                protocol::Message::Request(protocol::Request::Action { id, action: action.clone() })
                    .check()
            {
                return conn
                    .send(&ApiResponse::Denied { request: None, reason: e.to_string() })
                    .await;
            }
            let by = Requester::Local(door.asker().into());
            let (first, rest) = crate::actions::submit(host, by, id, action).await;
            conn.send(&to_api(first)).await?;
            if let Some(rest) = rest {
                if wait {
                    let last = rest.await.unwrap_or_else(|_| Outcome::Refused {
                        request: Some(id),
                        code: protocol::ErrorCode::Internal,
                        message: "the host stopped".into(),
                    });
                    conn.send(&to_api(last)).await?;
                } else {
                    // Go on without the client: the action still runs when approved.
                    tokio::spawn(async move {
                        let _ = rest.await;
                    });
                }
            }
            Ok(())
        }
        ApiRequest::Judge { action, requester, cwd } => {
            let id = RequestId(crate::identity::random_id()?);
            let checked = protocol::Message::Request(protocol::Request::Action {
                id,
                action: action.clone(),
            })
            .check();
            // `terminal` names the person at the owner socket: an asker elsewhere may not.
            let name_ok = !requester.is_empty()
                && requester.len() <= 64
                && !requester.chars().any(char::is_control)
                && (door == Door::Owner || !requester.starts_with(Door::Owner.asker()));
            if let Err(e) = checked {
                return conn
                    .send(&ApiResponse::Denied { request: None, reason: e.to_string() })
                    .await;
            }
            if !name_ok {
                let reason = format!(
                    "the requester is a short printable name, not `{}`",
                    Door::Owner.asker()
                );
                return conn.send(&ApiResponse::Denied { request: None, reason }).await;
            }
            let gave_up = Requester::Local(format!("{requester} (stopped waiting)"));
            let by = Requester::Local(requester);
            let cwd = PathBuf::from(cwd);
            let (first, rest) = crate::actions::judge(host.clone(), by, id, action, cwd).await;
            conn.send(&to_api(first)).await?;
            let Some(mut rest) = rest else { return Ok(()) };
            tokio::select! {
                last = &mut rest => {
                    let last = last.unwrap_or_else(|_| Outcome::Refused {
                        request: Some(id),
                        code: protocol::ErrorCode::Internal,
                        message: "the host stopped".into(),
                    });
                    conn.send(&to_api(last)).await
                }
                // The asker hung up (its own deadline passed): nobody would hear an approval,
                // so the question is withdrawn as denied.
                _ = conn.next::<serde_json::Value>() => {
                    let _ = host.core.withdraw(id, gave_up, false).await;
                    Ok(())
                }
            }
        }
        ApiRequest::RunAllowed { id, action } => {
            let outcome = crate::actions::run_allowed(host, door, id, action).await;
            conn.send(&to_api(outcome)).await
        }
        ApiRequest::Session { command, kind, size } => {
            let size = size.filter(|s| s.check().is_ok());
            share_session(&host, &mut conn, command, kind, size).await
        }
        ApiRequest::Pair { role, name, expires_secs, yes } => {
            crate::link::pair_local(&host, &mut conn, role, name, expires_secs, yes).await
        }
        ApiRequest::Devices => {
            let online = host.core.online().await.unwrap_or_default().into_iter().collect();
            let devices = crate::link::device_infos(&lock(&host.devices), &online);
            conn.send(&ApiResponse::Devices { devices }).await
        }
        ApiRequest::Device { id, change } => {
            let response = match crate::link::change_device(&host, &id, change).await {
                Ok(message) => ApiResponse::Ok { message },
                Err(e) => ApiResponse::Error { message: e.to_string() },
            };
            conn.send(&response).await
        }
    }
}

/// Shares the session an `agent-host run` holds until it ends or hangs up: its changes go to
/// the core, which keeps the session and tells devices; approved input comes back from it.
async fn share_session(
    host: &Host,
    conn: &mut LocalConn,
    command: Vec<String>,
    kind: protocol::SessionKind,
    size: Option<protocol::TermSize>,
) -> Result<(), LocalApiError> {
    use crate::host_core::Command;
    use crate::session::SessionUpdate;
    let total: usize = command.iter().map(String::len).sum();
    if command.is_empty() || command.len() > protocol::limits::MAX_ARGS || total > 64 << 10 {
        let message = "a session runs one program with its arguments".to_string();
        return conn.send(&ApiResponse::Error { message }).await;
    }
    let session = protocol::SessionId(crate::identity::random_id()?);
    let (input, mut inputs) = mpsc::channel(crate::host_core::MAX_SESSION_INPUTS);
    let started = Command::SessionStarted { session, command, kind, size, input };
    if host.core.send(started).await.is_err() {
        let message = "the host is stopping".to_string();
        return conn.send(&ApiResponse::Error { message }).await;
    }
    let result = async {
        conn.send(&ApiResponse::SessionOpened { session }).await?;
        loop {
            tokio::select! {
                update = conn.next::<SessionUpdate>() => match update? {
                    Some(SessionUpdate::Output { data }) => {
                        let output = Command::SessionOutput { session, data: data.0 };
                        if host.core.send(output).await.is_err() {
                            return Ok(None);
                        }
                    }
                    Some(SessionUpdate::Resized { size }) => {
                        if size.check().is_err() {
                            continue;
                        }
                        if host.core.send(Command::SessionResized { session, size }).await.is_err() {
                            return Ok(None);
                        }
                    }
                    Some(SessionUpdate::Ended { exit_code }) => return Ok(exit_code),
                    None => return Ok(None),
                },
                Some(data) = inputs.recv() => {
                    conn.send(&ApiResponse::SessionInput { data: protocol::Blob(data) }).await?;
                }
            }
        }
    }
    .await;
    let exit_code = result.as_ref().ok().copied().flatten();
    let _ = host.core.send(Command::SessionEnded { session, exit_code }).await;
    result.map(|_| ())
}

/// How the local API reports an outcome.
fn to_api(outcome: Outcome) -> ApiResponse {
    use protocol::ErrorCode;
    match outcome {
        Outcome::Pending(p) => ApiResponse::Pending {
            request: p.id,
            action_hash: p.action_hash,
            summary: p.summary,
            reason: p.reason,
        },
        Outcome::Done { request, exit_code, output, truncated, timed_out } => ApiResponse::Done {
            request,
            exit_code,
            output: protocol::Blob(output),
            truncated,
            timed_out,
        },
        Outcome::Refused {
            request,
            code:
                ErrorCode::DeniedByPolicy
                | ErrorCode::DeniedByApprover
                | ErrorCode::Expired
                | ErrorCode::OutsideWorkspace,
            message,
        } => ApiResponse::Denied { request, reason: message },
        Outcome::Refused { message, .. } => ApiResponse::Error { message },
        Outcome::Allowed { request, reason } => ApiResponse::Allowed { request, reason },
    }
}
