//! `agent-host serve`: the daemon for one workspace. It holds the identity key, the policy, the
//! approvals broker, the audit log, the sandbox and the paired devices, serves the local API on
//! two unix sockets, and (with a relay) the link to paired devices.
//!
//! The two sockets ([`Door`]): the *owner socket* takes every request, including those that
//! grant or change authority (approve, deny, pair, devices and their roles); it lies in the
//! state directory, which every sandbox and jail hides. The *agent socket* takes only what an
//! agent needs (ask, the hook, a session's input and output, running a command through policy,
//! status); it lies in a directory of its own that a jail binds in. An owner request on the
//! agent socket is refused and audited.
//!
//! Every action, local or remote, takes the one path in [`crate::actions`].

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{DeviceId, HostEvent, HostId, RequestId, SecretKey};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::actions::{Outcome, Requester};
use crate::audit::{AuditError, AuditLog, Event, Record};
use crate::devices::{JournalSync, Registry};
use crate::dirs::Dirs;
use crate::exec::Sandbox;
use crate::link::{Offers, RelaySetup, ToLink};
use crate::local_api::{ApiRequest, ApiResponse, Door, MAX_LINE};
use crate::policy::Policy;

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
    /// The host's name, shown to devices.
    pub host_name: String,
    /// The relay that links paired devices, if any.
    pub relay: Option<RelaySetup>,
    /// A device may not approve what it requested itself ([`crate::approvals::Broker::two_person`]).
    pub two_person: bool,
    /// What jobs see of the user's machine.
    pub user: crate::userenv::UserEnv,
}

/// The running host, shared by the local API, the relay link and the actions they start.
pub struct Host {
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
    pub(crate) host_id: HostId,
    /// Written through [`Host::record`], made durable by [`Host::commit`].
    pub(crate) audit: Arc<AuditLog>,
    /// The requests devices made shortly before this start, which could still be replayed
    /// ([`recent_request`]).
    pub(crate) requested_before: HashSet<(DeviceId, RequestId)>,
    /// Syncs both in the background.
    pub(crate) syncer: Syncer,
    /// The decision state's driver ([`crate::host_core`]): pending actions and grants.
    pub(crate) core: crate::host_core::CoreHandle,
    /// The workspace root, held open once for every confined lookup.
    pub(crate) files: crate::confine::Workspace,
    pub(crate) devices: Arc<Mutex<Registry>>,
    pub(crate) offers: Mutex<Offers>,
    /// Sessions shared by `agent-host run`.
    pub(crate) sessions: Mutex<HashMap<protocol::SessionId, crate::session::Live>>,
    /// To the relay link, when there is one.
    pub(crate) link: Option<mpsc::UnboundedSender<ToLink>>,
    /// A bubblewrap sandbox kept started for the next command (none under other sandboxes).
    pub(crate) pool: Option<crate::exec::WarmPool>,
    /// Where jobs run and what they see.
    pub(crate) scope: crate::exec::Scope,
}

impl Host {
    /// Tells every paired device (through the link, if there is one).
    pub(crate) fn broadcast(&self, event: HostEvent) {
        if let Some(link) = &self.link {
            let _ = link.send(ToLink::Broadcast(event));
        }
    }

    /// Writes an audit record now. It reaches the disk in the background right after, and
    /// surely before anything takes effect ([`Host::commit`]).
    pub(crate) fn record(&self, event: Event) -> Result<Record, AuditError> {
        let record = self.audit.append_deferred(now_ms(), event);
        self.syncer.soon();
        record
    }

    /// Makes durable every audit record written so far. Called before anything takes effect:
    /// an action starts, an agent is told yes, the device list changes.
    ///
    /// The counter lines of the messages that led there are synced in the background, within
    /// [`SYNC_WINDOW`], not here: one `fdatasync` on the way of every action instead of two.
    /// Were the power lost before they reached the disk, the request's record did, and a
    /// restarted host refuses the request if it comes again ([`recent_request`]); its approval
    /// has nothing to approve (pending actions do not survive a restart). An action runs at most
    /// once all the same.
    pub(crate) fn commit(&self) -> anyhow::Result<()> {
        self.audit.sync().map_err(|e| anyhow::anyhow!("the audit log: {e}"))
    }

    /// Asks the link to register the current devices and offers at the relay.
    pub(crate) fn reregister(&self) {
        if let Some(link) = &self.link {
            let _ = link.send(ToLink::Register);
        }
    }
}

/// Compactions in a row that lines overtook before the state is written under the registry's
/// lock.
const MAX_MISSED_COMPACTIONS: u32 = 3;

/// How long a record that no action waits for may stay unsynced: the background sync waits
/// this long after it is asked for, so that a commit coming meanwhile (an action about to
/// start) syncs it in the same `fdatasync` instead of waiting behind a sync in progress.
const SYNC_WINDOW: Duration = Duration::from_millis(10);

/// Syncs the audit log and the counter journal on a thread of its own, [`SYNC_WINDOW`] after
/// it is asked to (requests coalesce), so that records and counters reach the disk soon without
/// anyone waiting for them; and folds a long journal into `counters.json`, holding the
/// registry's lock only to take the state and to empty the journal. Stops, after one last sync,
/// when dropped.
pub(crate) struct Syncer {
    asked: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(
        audit: Arc<AuditLog>,
        journal: Arc<JournalSync>,
        registry: Arc<Mutex<Registry>>,
    ) -> std::io::Result<Self> {
        // One request waiting is enough: it syncs everything written before it is served.
        let (asked, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new().name("state-sync".into()).spawn(move || {
            let mut missed = 0;
            let mut sync = || {
                if let Err(e) = journal.sync() {
                    tracing::error!("the devices' counters: {e}");
                }
                let due = {
                    let registry = lock(&registry);
                    registry.compaction_due().then(|| registry.compaction())
                };
                if let Some(compaction) = due {
                    let written =
                        compaction.write().and_then(|()| lock(&registry).compacted(&compaction));
                    match written {
                        Ok(true) => missed = 0,
                        // Lines came while it wrote: the next round tries again, and after a
                        // few misses (steady traffic) it writes under the lock instead, so the
                        // journal cannot grow without end.
                        Ok(false) => {
                            missed += 1;
                            if missed >= MAX_MISSED_COMPACTIONS {
                                missed = 0;
                                if let Err(e) = lock(&registry).save_counters() {
                                    tracing::error!("the devices' counters: {e}");
                                }
                            }
                        }
                        Err(e) => tracing::error!("the devices' counters: {e}"),
                    }
                }
                if let Err(e) = audit.sync().and_then(|()| audit.sync_head()) {
                    tracing::error!("audit: {e}");
                }
            };
            while requests.recv().is_ok() {
                std::thread::sleep(SYNC_WINDOW);
                sync();
            }
            sync();
        })?;
        Ok(Self { asked: Some(asked), thread: Some(thread) })
    }

    /// Asks for a sync soon.
    pub(crate) fn soon(&self) {
        if let Some(asked) = &self.asked {
            let _ = asked.try_send(());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.asked.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The request a paired device made in `record`, if the record is recent enough that a relay
/// could still deliver the request again: written at `since_ms` or later, that is within a
/// message's longest life and twice the clock skew allowed before now
/// ([`protocol::VerifyContext::replayable_for_ms`]). A restarted host refuses these requests
/// even if the counters of their messages were lost with the power ([`Host::commit`]). Every
/// record of the log is looked at, so a clock stepped back meanwhile hides none.
pub(crate) fn recent_request(record: &Record, since_ms: u64) -> Option<(DeviceId, RequestId)> {
    match &record.event {
        Event::Request { request, actor, .. } if record.time_ms >= since_ms => {
            Some((actor.parse().ok()?, request.parse().ok()?))
        }
        _ => None,
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The owner socket of the host whose state is in `dirs` (see the module notes).
pub fn owner_socket(dirs: &Dirs) -> PathBuf {
    dirs.state.join("host.sock")
}

/// The directory of the agent socket, which a jail binds in.
pub fn agent_socket_dir(dirs: &Dirs) -> PathBuf {
    dirs.state.join("agent")
}

/// The agent socket of the host whose state is in `dirs` (see the module notes).
pub fn agent_socket(dirs: &Dirs) -> PathBuf {
    agent_socket_dir(dirs).join("agent.sock")
}

/// Binds a private socket at `path`, replacing a stale one (the audit log's lock proves no
/// host owns it).
fn bind_private(path: &std::path::Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these would be a bug; the state is still consistent
    // (every mutation is a single call), so keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let me = key.public_key();
    let horizon = protocol::VerifyContext::new(&me, now_ms());
    let since = horizon.now_ms.saturating_sub(horizon.replayable_for_ms());
    let mut requested_before = HashSet::new();
    let mut remember = |record: &Record| requested_before.extend(recent_request(record, since));
    // The audit log's lock also makes this the only host on this state directory.
    let audit = AuditLog::open_with(&dirs.audit_log(), &mut remember).map_err(|e| match e {
        AuditError::Locked(_) => {
            anyhow::anyhow!("another agent-host is running on {}", dirs.state.display())
        }
        other => anyhow::anyhow!("the audit log does not verify; refusing to start: {other}"),
    })?;
    if let Some(note) = &audit.recovered {
        tracing::warn!("audit log: {note}");
    }
    let mut devices = Registry::load(&dirs.state)?;
    devices.prepare()?;
    let (audit, journal) = (Arc::new(audit), devices.journal_sync());
    let devices = Arc::new(Mutex::new(devices));
    let syncer = Syncer::start(audit.clone(), journal, devices.clone())?;
    let agent_dir = agent_socket_dir(&dirs);
    std::fs::create_dir_all(&agent_dir)?;
    std::fs::set_permissions(&agent_dir, std::fs::Permissions::from_mode(0o700))?;
    let (socket, agent) = (owner_socket(&dirs), agent_socket(&dirs));
    let agents = bind_private(&agent)?;
    // The owner socket last: tests and clients take it as the sign that the host is ready.
    let owners = bind_private(&socket)?;
    tracing::info!(host = %host_id, socket = %socket.display(), agent_socket = %agent.display(), sandbox = %config.sandbox.describe(), "host ready");
    crate::exec::ensure_agent_settings_dir(&config.workspace)?;
    let files = crate::confine::Workspace::open(std::slice::from_ref(&config.workspace))?;
    let (link_tx, link_rx) = mpsc::unbounded_channel();
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
    let core = crate::host_core::HostCore::new(
        u64::try_from(config.approval_timeout.as_millis()).unwrap_or(u64::MAX),
        config.two_person,
    );
    let (core_handle, core_commands) = crate::host_core::CoreHandle::channel();
    let host = Arc::new(Host {
        config,
        key,
        host_id,
        audit,
        requested_before,
        syncer,
        core: core_handle,
        files,
        devices,
        offers: Mutex::new(Offers::default()),
        sessions: Mutex::new(HashMap::new()),
        link: relay.is_some().then_some(link_tx),
        pool,
        scope,
    });
    let driver = tokio::spawn(crate::actions::drive(host.clone(), core, core_commands));
    let link = relay.map(|setup| tokio::spawn(crate::link::run(host.clone(), setup, link_rx)));
    if let Some(ready) = ready {
        let _ = ready.send(host_id);
    }
    let expiry = tokio::spawn(expire_loop(host.clone()));
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
    expiry.abort();
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
        anyhow::bail!("{failed}; the host stopped");
    }
    tracing::info!("host stopped");
    Ok(())
}

/// Drops lapsed pairing offers, every 250 ms. (Pending actions lapse on the core's own timer.)
async fn expire_loop(host: Arc<Host>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if lock(&host.offers).expire(now_ms()) {
            host.reregister();
        }
    }
}

/// One local client's connection: one request, then one or more answers (and, while pairing,
/// the person's yes or no).
pub(crate) struct LocalConn {
    read: BufReader<OwnedReadHalf>,
    /// Bytes read but not yet a whole line.
    partial: Vec<u8>,
    write: OwnedWriteHalf,
}

impl LocalConn {
    pub(crate) async fn send(&mut self, response: &ApiResponse) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(response)?;
        bytes.push(b'\n');
        self.write.write_all(&bytes).await?;
        Ok(())
    }

    /// The next line from the client (at most [`MAX_LINE`] bytes), parsed; `None` when it hung
    /// up. Cancel-safe: what was read stays for the next call.
    pub(crate) async fn next<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> anyhow::Result<Option<T>> {
        loop {
            if let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=at).collect();
                return Ok(Some(serde_json::from_slice(&line[..at])?));
            }
            if self.partial.len() > MAX_LINE {
                anyhow::bail!("a line over {MAX_LINE} bytes");
            }
            let buf = self.read.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf.len().min(MAX_LINE + 1);
            self.partial.extend_from_slice(&buf[..n]);
            self.read.consume(n);
        }
    }
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

async fn handle(host: Arc<Host>, stream: UnixStream, door: Door) -> anyhow::Result<()> {
    let peer = stream.peer_cred()?;
    if peer.uid() != rustix::process::getuid().as_raw() {
        anyhow::bail!("refused a local client of uid {}", peer.uid());
    }
    let (read, write) = stream.into_split();
    let mut conn = LocalConn { read: BufReader::new(read), partial: Vec::new(), write };
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
        crate::link::refuse(&host, "local:agent-socket", &message);
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
        ApiRequest::Approvals => match host.core.pending().await {
            Ok(pending) => conn.send(&ApiResponse::Approvals { pending }).await,
            Err(e) => conn.send(&ApiResponse::Error { message: e.to_string() }).await,
        },
        ApiRequest::Decide { id, action_hash, verdict } => {
            let decided =
                crate::actions::decide(&host, id, &action_hash, verdict, "local:terminal").await;
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
            let gave_up = format!("local:{requester} (stopped waiting)");
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
            let online = crate::link::online(&host);
            let devices = crate::link::device_infos(&lock(&host.devices), &online);
            conn.send(&ApiResponse::Devices { devices }).await
        }
        ApiRequest::Device { id, change } => {
            let response = match crate::link::change_device(&host, &id, change) {
                Ok(message) => ApiResponse::Ok { message },
                Err(e) => ApiResponse::Error { message: e.to_string() },
            };
            conn.send(&response).await
        }
    }
}

/// Shares the session an `agent-host run` holds until it ends or hangs up.
async fn share_session(
    host: &Host,
    conn: &mut LocalConn,
    command: Vec<String>,
    kind: protocol::SessionKind,
    size: Option<protocol::TermSize>,
) -> anyhow::Result<()> {
    use crate::session::{Live, SessionUpdate};
    let total: usize = command.iter().map(String::len).sum();
    if command.is_empty() || command.len() > protocol::limits::MAX_ARGS || total > 64 << 10 {
        let message = "a session runs one program with its arguments".to_string();
        return conn.send(&ApiResponse::Error { message }).await;
    }
    let session = protocol::SessionId(crate::identity::random_id()?);
    let (input, mut inputs) = mpsc::unbounded_channel();
    let mut live = Live::new(command.clone(), kind, input);
    live.size = size;
    lock(&host.sessions).insert(session, live);
    host.broadcast(HostEvent::SessionStarted { session, command, kind, size });
    let result = async {
        conn.send(&ApiResponse::SessionOpened { session }).await?;
        loop {
            tokio::select! {
                update = conn.next::<SessionUpdate>() => match update? {
                    Some(SessionUpdate::Output { data }) => {
                        let seq = match lock(&host.sessions).get_mut(&session) {
                            Some(live) => live.push(data.0.clone()),
                            None => return Ok(None),
                        };
                        host.broadcast(HostEvent::Output { session, seq, data });
                    }
                    Some(SessionUpdate::Resized { size }) => {
                        if size.check().is_err() {
                            continue;
                        }
                        match lock(&host.sessions).get_mut(&session) {
                            Some(live) => live.size = Some(size),
                            None => return Ok(None),
                        }
                        host.broadcast(HostEvent::SessionResized { session, size });
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
    lock(&host.sessions).remove(&session);
    let exit_code = result.as_ref().ok().copied().flatten();
    host.broadcast(HostEvent::SessionEnded { session, exit_code });
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
