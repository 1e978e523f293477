//! The running host's shared parts: its configuration, the [`Host`] that every driver holds (the
//! identity key, the audit log and its background sync, the paired devices, the handle of the
//! decision state's driver, the way to the link), and what every driver does through it: write
//! audit records, refuse and say so, tell devices.
//!
//! It imports none of the drivers (the daemon's local API, the link, the actions and the core's
//! driver): they import it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{Actor, DeviceId, HostEvent, HostId, Pairing, RequestId, SecretKey};
use tokio::sync::mpsc;

use crate::approvals::{Pending, Requester};
use crate::audit::{AuditError, AuditLog, Event, Record};
use crate::devices::{JournalSync, Registry};
use crate::exec::Sandbox;
use crate::policy::Policy;
use crate::refusals::{REFUSALS_PER_SEC, RefusalBudget};

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
    /// How the host pushes notifications to devices.
    pub push: crate::push::PushSetup,
}

/// Where the relay is and how to trust it.
#[derive(Clone)]
pub struct RelaySetup {
    /// `host:port` to connect to.
    pub addr: String,
    /// The name its certificate is presented for.
    pub server_name: String,
    /// TLS trust.
    pub tls: Arc<rustls::ClientConfig>,
    /// The certificate's SHA-256 when it is pinned (self-signed): it goes into pairing links.
    pub cert_sha256: Option<[u8; 32]>,
    /// `host:port` as devices reach it (printed in pairing links).
    pub public: String,
    /// Where the web UI's page is, `host:port`, when not at the relay: pairing links name it,
    /// and the relay apart (`agent-host serve --page`).
    pub page: Option<String>,
    /// For a relay embedded in this process (`up`): the host's own way in, without TLS.
    pub local: Option<relay_client::LocalConnector>,
}

impl std::fmt::Debug for RelaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelaySetup({} as {})", self.addr, self.public)
    }
}

/// The running host, shared by the local API, the relay link and the actions they start.
pub struct Host {
    pub(crate) config: Config,
    pub(crate) key: SecretKey,
    pub(crate) host_id: HostId,
    /// Written through [`Host::record`], made durable by [`Host::commit`].
    pub(crate) audit: Arc<AuditLog>,
    /// Syncs both in the background.
    pub(crate) syncer: Syncer,
    /// The decision state's driver ([`crate::host_core`]): pending actions and grants.
    pub(crate) core: crate::host_core::CoreHandle,
    /// The workspace root, held open once for every confined lookup.
    pub(crate) files: crate::confine::Workspace,
    pub(crate) devices: Arc<Mutex<Registry>>,
    /// Held across a change of the paired devices: the registry's, then the core's, then its
    /// audit record, so that the core learns of changes in the order the registry made them.
    pub(crate) device_changes: tokio::sync::Mutex<()>,
    /// How many refusals may still be written one by one.
    pub(crate) refusals: Mutex<RefusalBudget>,
    /// To the relay link, when there is one.
    pub(crate) link: Option<LinkQueue>,
    /// A bubblewrap sandbox kept started for the next command (none under other sandboxes).
    pub(crate) pool: Option<crate::exec::WarmPool>,
    /// Where jobs run and what they see.
    pub(crate) scope: crate::exec::Scope,
    /// Pushes notifications (none when the VAPID key could not be had).
    pub(crate) pusher: Option<crate::push::Pusher>,
}

impl Host {
    /// Tells every paired device (through the link, if there is one).
    pub(crate) fn broadcast(&self, event: HostEvent) {
        if let Some(link) = &self.link {
            link.send(ToLink::Broadcast(event));
        }
    }

    /// Tells one paired device (through the link, if there is one).
    pub(crate) fn send(&self, device: DeviceId, event: HostEvent) {
        if let Some(link) = &self.link {
            link.send(ToLink::To(device, event));
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
    pub(crate) fn commit(&self) -> Result<(), CommitError> {
        self.audit.sync().map_err(CommitError)
    }
}

impl Host {
    /// A device's name in the registry.
    pub fn device_name(&self, id: &DeviceId) -> Option<String> {
        lock(&self.devices).get(id).map(|d| d.name.clone())
    }

    /// [`Requester::actor`] with names from the registry.
    pub fn actor(&self, who: &Requester) -> Actor {
        who.actor(|id| self.device_name(id))
    }

    /// [`Requester::person`] with names from the registry.
    pub fn person(&self, who: &Requester) -> String {
        who.person(|id| self.device_name(id))
    }
}

/// The audit log could not be made durable: nothing that waited for it takes effect.
#[derive(Debug, thiserror::Error)]
#[error("the audit log: {0}")]
pub struct CommitError(#[from] pub AuditError);

/// The most pieces of sessions' output waiting for the relay link's task: past this one is
/// dropped (and said so in the host's log; a device that syncs again gets the session's
/// scrollback). The link takes them as fast as it seals them, so they pile up only while it
/// waits for the core or for the relay client. Nothing else is counted or dropped here: the
/// other events are as many as the core lets happen (at most `MAX_PENDING` actions wait, each
/// decided and finished once; a sync per device that comes online), and a lost decision or
/// result would not come back.
pub(crate) const MAX_TO_LINK: usize = 4096;

/// The rest of the host's end of the queue to the link.
pub(crate) struct LinkQueue {
    tx: mpsc::UnboundedSender<ToLink>,
    events: Arc<AtomicUsize>,
}

/// The link's end of [`LinkQueue`].
pub(crate) struct LinkInbox {
    rx: mpsc::UnboundedReceiver<ToLink>,
    events: Arc<AtomicUsize>,
}

/// A queue to the link, bounded as [`MAX_TO_LINK`] says.
pub(crate) fn link_queue() -> (LinkQueue, LinkInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Arc::new(AtomicUsize::new(0));
    (LinkQueue { tx, events: events.clone() }, LinkInbox { rx, events })
}

impl LinkQueue {
    /// Queues `message` unless it is a session's output and [`MAX_TO_LINK`] of those wait.
    pub(crate) fn send(&self, message: ToLink) {
        let counted = message.is_output();
        if counted && self.events.fetch_add(1, Ordering::Relaxed) >= MAX_TO_LINK {
            self.events.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(
                "{MAX_TO_LINK} pieces of output wait for the relay link: one is dropped"
            );
            return;
        }
        if self.tx.send(message).is_err() && counted {
            self.events.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl LinkInbox {
    /// The next message for the link; `None` once the host has stopped.
    pub(crate) async fn recv(&mut self) -> Option<ToLink> {
        let message = self.rx.recv().await;
        if message.as_ref().is_some_and(ToLink::is_output) {
            self.events.fetch_sub(1, Ordering::Relaxed);
        }
        message
    }
}

impl ToLink {
    /// A piece of a session's output ([`MAX_TO_LINK`]).
    fn is_output(&self) -> bool {
        matches!(
            self,
            Self::Broadcast(HostEvent::Output { .. }) | Self::To(_, HostEvent::Output { .. })
        )
    }
}

/// What the rest of the host asks of the link.
pub(crate) enum ToLink {
    /// Tell every paired device.
    Broadcast(HostEvent),
    /// Tell one device.
    To(DeviceId, HostEvent),
    /// Send a pairing answer to a key (paired or not yet).
    Pairing(protocol::PublicKey, Pairing),
    /// Register these devices and offers at the relay.
    Register {
        /// The paired devices' keys.
        devices: Vec<protocol::RelayKey>,
        /// The open offers' tokens.
        offers: Vec<protocol::PairingToken>,
        /// The pairing channels' pre-shared keys of the offers that take new devices.
        psks: Vec<(protocol::PairingToken, zeroize::Zeroizing<[u8; 32]>)>,
    },
}

pub(crate) fn audit(host: &Host, event: Event) {
    if let Err(e) = host.record(event) {
        tracing::error!("audit: {e}");
    }
}

pub(crate) fn refuse(host: &Host, claimed: &str, reason: impl std::fmt::Display) {
    tracing::info!(claimed_sender = claimed, "refused: {reason}");
    let Some(earlier) = lock(&host.refusals).take() else { return };
    let reason = if earlier > 0 {
        format!(
            "{reason} (and {earlier} refusals before this one, over {REFUSALS_PER_SEC}/s, counted only)"
        )
    } else {
        reason.to_string()
    };
    audit(host, Event::Refused { claimed_sender: claimed.into(), reason });
}

/// The event that shows a pending action to devices.
pub fn pending_event(host: &Host, p: &Pending) -> HostEvent {
    HostEvent::ActionPending {
        request: p.id,
        requested_by: host.actor(&p.requested_by),
        action: p.action.clone(),
        action_hash: p.action_hash,
        summary: p.summary.clone(),
        reason: p.reason.clone(),
        preview: p.preview.clone(),
        expires_at_ms: p.expires_at_ms,
    }
}

/// Sends a device every pending action, the live sessions, then the host's status (the core's
/// driver does, for [`crate::host_core::Effect::Sync`]).
pub(crate) fn send_sync(
    host: &Host,
    device: DeviceId,
    request: Option<RequestId>,
    pending: &[Pending],
    sessions: Vec<HostEvent>,
) {
    let Some(link) = &host.link else { return };
    let Some((role, push)) = lock(&host.devices).get(&device).map(|d| (d.role, d.push.is_some()))
    else {
        return;
    };
    for p in pending {
        link.send(ToLink::To(device, pending_event(host, p)));
    }
    // Live sessions, with what they printed lately.
    for event in sessions {
        link.send(ToLink::To(device, event));
    }
    link.send(ToLink::To(
        device,
        HostEvent::Status {
            request,
            host_name: host.config.host_name.clone(),
            workspace: host.config.workspace.display().to_string(),
            sandbox: host.config.sandbox.describe(),
            role,
            pending: u32::try_from(pending.len()).unwrap_or(u32::MAX),
            push_key: host.pusher.as_ref().map(|p| p.public_key().to_string()),
            push,
        },
    ));
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
    pub(crate) fn start(
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these would be a bug; the state is still consistent
    // (every mutation is a single call), so keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past `MAX_TO_LINK` waiting pieces of output one more is dropped; other events and a
    /// registration still go, in order; taking one makes room.
    #[tokio::test]
    async fn the_queue_to_the_link_drops_output_past_its_bound_and_nothing_else() {
        let (queue, mut inbox) = link_queue();
        let session = protocol::SessionId([0; 16]);
        let output = || HostEvent::Output { session, seq: 0, data: protocol::Blob(vec![1]) };
        let ended = HostEvent::SessionEnded { session, exit_code: None };
        for _ in 0..=MAX_TO_LINK {
            queue.send(ToLink::Broadcast(output()));
        }
        queue.send(ToLink::Broadcast(ended));
        queue.send(ToLink::Register { devices: vec![], offers: vec![], psks: vec![] });
        for _ in 0..MAX_TO_LINK {
            assert!(matches!(
                inbox.recv().await,
                Some(ToLink::Broadcast(HostEvent::Output { .. }))
            ));
        }
        assert!(matches!(
            inbox.recv().await,
            Some(ToLink::Broadcast(HostEvent::SessionEnded { .. }))
        ));
        assert!(matches!(inbox.recv().await, Some(ToLink::Register { .. })));
        queue.send(ToLink::Broadcast(output()));
        assert!(matches!(inbox.recv().await, Some(ToLink::Broadcast(HostEvent::Output { .. }))));
    }
}
