//! The host's link to paired devices through a relay, and pairing.
//!
//! Everything that arrives is checked here before anything acts on it, in this order: the
//! frame's shape; that it was signed by the key the relay says sent it; that the key is a
//! paired device (or, for a pairing hello only, an acceptable new key); `verify_strict` over the
//! exact bytes; recipient (this host), issue and expiry times, and the device's counter against
//! its persisted replay window. The window is written to disk before the message is acted on.
//! Then the device's role: a viewer only syncs, an approver also decides, an operator also
//! requests. Every refusal is written to the audit log. Requests then take the same path as
//! local ones ([`crate::actions`]).
//!
//! Everything the host sends a device is a signed envelope addressed to that device, with the
//! host's counter towards it ([`crate::devices`]), so a device accepts only what this host said
//! to it.
//!
//! Pairing: `agent-host pair` (or `up`) opens an offer: a one-time secret that travels only in
//! the link. The offer's token is registered at the relay so that the new device can reach the
//! host; the device's hello proves the secret over both keys and its name. The offer is used up
//! by the first hello that names it, whatever happens next: a wrong proof burns it, an expired one
//! is refused, and a good one is shown to the person at the machine (unless they said `--yes`).
//! Pending actions do not survive a host restart: the restart denies them (they lapse unanswered),
//! and devices see a fresh list when they sync.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use protocol::pairing::{self, PairingSecret};
use protocol::relay::Side;
use protocol::{
    DeviceId, ErrorCode, HostEvent, Message, Pairing, PairingLink, PairingToken, PublicKey,
    ReplayWindow, Request, RequestId, Role, SealContext, Sealed, VerifyContext,
};
use relay_client::{Client, ClientConfig, Inbound};
use tokio::sync::{mpsc, oneshot};

use crate::actions::{Requester, pending_event};
use crate::audit::Event;
use crate::daemon::{Host, LocalConn, lock, now_ms};
use crate::devices::{Device, Registry};
use crate::host_core::{Command, CoreError};
use crate::local_api::{ApiResponse, DeviceChange, DeviceInfo, PairAnswer};

/// How long an event the host sends stays valid.
const EVENT_LIFETIME_MS: u64 = 5 * 60 * 1000;
/// The longest a pairing offer may stay open.
pub const MAX_OFFER_SECS: u64 = 60 * 60;
/// How many (device, request) ids the link remembers, to answer a retransmitted request with
/// its result instead of running it again.
const REMEMBERED: usize = 1024;

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
    /// For a relay embedded in this process (`up`): the host's own way in, without TLS.
    pub local: Option<relay_client::LocalConnector>,
}

impl std::fmt::Debug for RelaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelaySetup({} as {})", self.addr, self.public)
    }
}

/// What the rest of the host asks of the link.
pub(crate) enum ToLink {
    /// Tell every paired device.
    Broadcast(HostEvent),
    /// Tell one device.
    To(DeviceId, HostEvent),
    /// Send a pairing answer to a key (paired or not yet).
    Pairing([u8; 32], Pairing),
    /// Register the current devices and open offers at the relay.
    Register,
}

/// What a pairing offer tells the client that opened it.
pub(crate) enum PairEvent {
    /// A device proved the secret: yes or no?
    Confirm { device: DeviceId, name: String, role: Role, answer: oneshot::Sender<bool> },
    /// Over.
    Done(Result<Device, String>),
}

/// An open pairing offer.
pub(crate) struct Offer {
    secret: PairingSecret,
    role: Role,
    name: Option<String>,
    expires_at_ms: u64,
    yes: bool,
    events: mpsc::UnboundedSender<PairEvent>,
}

/// The open pairing offers, who is online, and how many refusals may still be written.
#[derive(Default)]
pub(crate) struct Offers {
    open: HashMap<PairingToken, Offer>,
    online: HashSet<DeviceId>,
    refusals: RefusalBudget,
}

/// Refused frames are audited one by one up to [`REFUSALS_PER_SEC`] (and a burst of as many
/// again); past that, a flood (a hostile relay can send anything) is counted, and the count is
/// written with the next refusal that fits, so the log and the disk stay bounded and nothing
/// goes unmentioned.
#[derive(Debug)]
struct RefusalBudget {
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

/// Refusals audited one by one per second.
pub const REFUSALS_PER_SEC: f64 = 50.0;

impl Default for RefusalBudget {
    fn default() -> Self {
        Self { tokens: 2.0 * REFUSALS_PER_SEC, last: std::time::Instant::now(), suppressed: 0 }
    }
}

impl RefusalBudget {
    /// `None`: over the rate, counted. `Some(n)`: write it, noting `n` refusals counted before.
    fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * REFUSALS_PER_SEC;
        self.tokens = (self.tokens + refill).min(2.0 * REFUSALS_PER_SEC);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Offers {
    fn tokens(&self) -> Vec<[u8; 32]> {
        self.open.keys().map(|t| t.0).collect()
    }

    /// Drops lapsed offers; true if any was dropped (the registration must change).
    pub(crate) fn expire(&mut self, now_ms: u64) -> bool {
        let lapsed: Vec<PairingToken> =
            self.open.iter().filter(|(_, o)| now_ms >= o.expires_at_ms).map(|(t, _)| *t).collect();
        for token in &lapsed {
            if let Some(offer) = self.open.remove(token) {
                let _ = offer.events.send(PairEvent::Done(Err("the offer expired unused".into())));
            }
        }
        !lapsed.is_empty()
    }
}

fn audit(host: &Host, event: Event) {
    if let Err(e) = host.record(event) {
        tracing::error!("audit: {e}");
    }
}

/// Records a change of the device list, durably before going on.
fn audit_device_change(host: &Host, device: DeviceId, change: String) {
    audit(host, Event::Device { device: device.to_string(), change });
    if let Err(e) = host.commit() {
        tracing::error!("{e}");
    }
}

pub(crate) fn refuse(host: &Host, claimed: &str, reason: impl std::fmt::Display) {
    tracing::info!(claimed_sender = claimed, "refused: {reason}");
    let Some(earlier) = lock(&host.offers).refusals.take() else { return };
    let reason = if earlier > 0 {
        format!(
            "{reason} (and {earlier} refusals before this one, over {REFUSALS_PER_SEC}/s, counted only)"
        )
    } else {
        reason.to_string()
    };
    audit(host, Event::Refused { claimed_sender: claimed.into(), reason });
}

/// The devices online now.
pub(crate) fn online(host: &Host) -> HashSet<DeviceId> {
    lock(&host.offers).online.clone()
}

/// The paired devices, for listing.
pub(crate) fn device_infos(registry: &Registry, online: &HashSet<DeviceId>) -> Vec<DeviceInfo> {
    registry
        .list()
        .into_iter()
        .map(|(d, c)| DeviceInfo {
            id: d.id.to_string(),
            name: d.name,
            role: d.role,
            fingerprint: d.id.key().fingerprint().to_string(),
            paired_at_ms: d.paired_at_ms,
            last_seen_ms: c.last_seen_ms,
            online: online.contains(&d.id),
        })
        .collect()
}

/// Applies a change made at this machine to a paired device; returns what was done.
pub(crate) fn apply_change(
    registry: &mut Registry,
    id: &str,
    change: &DeviceChange,
) -> anyhow::Result<(DeviceId, String)> {
    let id = registry.find(id)?;
    let what = match change {
        DeviceChange::Revoke => {
            let device = registry.revoke(&id)?;
            format!("revoked ({})", device.name)
        }
        DeviceChange::Rename { name } => {
            check_name(name)?;
            registry.rename(&id, name.clone())?;
            format!("renamed to {name}")
        }
        DeviceChange::SetRole { role } => {
            registry.set_role(&id, *role)?;
            format!("role set to {}", role_name(*role))
        }
    };
    Ok((id, what))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty()
        || name.chars().any(char::is_control)
        || name.len() > protocol::limits::MAX_TEXT
    {
        anyhow::bail!("a device name is non-empty text without control characters");
    }
    Ok(())
}

/// A role as people and the CLI spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Approver => "approver",
        Role::Operator => "operator",
    }
}

/// A change through the running host: applied, audited, and (for a revocation) the device is
/// cut off at the relay at once.
pub(crate) fn change_device(host: &Host, id: &str, change: DeviceChange) -> anyhow::Result<String> {
    let (device, what) = apply_change(&mut lock(&host.devices), id, &change)?;
    audit_device_change(host, device, what.clone());
    if change == DeviceChange::Revoke {
        lock(&host.offers).online.remove(&device);
        // Said to the device while its route is still open (the registration that closes it
        // follows on the same link), so that it knows why it hears nothing more.
        if let Some(link) = &host.link {
            let _ = link.send(ToLink::To(
                device,
                HostEvent::Error {
                    request: None,
                    code: ErrorCode::Revoked,
                    message: "this device was revoked at the host; pair it again to use it".into(),
                },
            ));
        }
    }
    host.reregister();
    Ok(format!("{device}: {what}"))
}

/// Opens a pairing offer for a local client and sees it through (see the module docs).
pub(crate) async fn pair_local(
    host: &Arc<Host>,
    conn: &mut LocalConn,
    role: Role,
    name: Option<String>,
    expires_secs: u64,
    yes: bool,
) -> anyhow::Result<()> {
    let Some(setup) = &host.config.relay else {
        return conn
            .send(&ApiResponse::Error {
                message: "this host has no relay to pair through: start it with `agent-host up`, \
                          or `agent-host serve --relay HOST:PORT`"
                    .into(),
            })
            .await;
    };
    if let Some(name) = &name {
        check_name(name)?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = PairingSecret::from_bytes(secret);
    let token = pairing::token(&secret);
    let expires_at_ms = now_ms() + expires_secs.clamp(1, MAX_OFFER_SECS) * 1000;
    let link = PairingLink {
        relay: setup.public.clone(),
        host: host.host_id,
        secret: *secret.as_bytes(),
        expires_at_ms,
        cert_sha256: setup.cert_sha256,
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    let opened = {
        let mut offers = lock(&host.offers);
        let room = offers.open.len() < protocol::relay::MAX_OFFERS;
        if room {
            offers.open.insert(token, Offer { secret, role, name, expires_at_ms, yes, events });
        }
        room
    };
    if !opened {
        return conn
            .send(&ApiResponse::Error { message: "too many pairing offers are open".into() })
            .await;
    }
    host.reregister();
    conn.send(&ApiResponse::PairLink { link: link.to_string(), expires_at_ms }).await?;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(PairEvent::Confirm { device, name, role, answer }) => {
                    conn.send(&ApiResponse::PairConfirm {
                        device: device.to_string(),
                        name,
                        fingerprint: device.key().fingerprint().to_string(),
                        role,
                    })
                    .await?;
                    let accept = matches!(conn.next::<PairAnswer>().await, Ok(Some(a)) if a.accept);
                    let _ = answer.send(accept);
                }
                Some(PairEvent::Done(Ok(device))) => {
                    return conn
                        .send(&ApiResponse::Paired {
                            device: device.id.to_string(),
                            name: device.name,
                            role: device.role,
                        })
                        .await;
                }
                Some(PairEvent::Done(Err(reason))) => {
                    return conn.send(&ApiResponse::PairFailed { reason }).await;
                }
                None => return Ok(()),
            },
            // The client hung up before anyone used the offer: withdraw it.
            gone = conn.next::<PairAnswer>() => {
                if matches!(gone, Ok(None) | Err(_)) {
                    if lock(&host.offers).open.remove(&token).is_some() {
                        host.reregister();
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// A frame's counter towards `to`: the paired device's next, or 1 for a key not (yet) paired
/// (a pairing answer; the device has no window for this host yet).
fn seal_to(host: &Host, to: &[u8; 32], message: &Message) -> Option<Vec<u8>> {
    let recipient = PublicKey::from_bytes(to).ok()?;
    let id = DeviceId::new(recipient);
    let counter = {
        let mut devices = lock(&host.devices);
        if devices.get(&id).is_some() {
            match devices.next_tx(&id) {
                Ok(tx) => {
                    if tx.reserved_ahead {
                        host.syncer.soon();
                    }
                    tx.counter
                }
                Err(e) => {
                    tracing::error!("cannot reserve counters: {e}; not sending");
                    return None;
                }
            }
        } else {
            1
        }
    };
    let now = now_ms();
    let ctx = SealContext {
        recipient: &recipient,
        counter,
        issued_at_ms: now,
        expires_at_ms: now + EVENT_LIFETIME_MS,
    };
    match protocol::seal(&host.key, &ctx, message) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!("cannot seal an event: {e}");
            None
        }
    }
}

/// What the link remembers of recent requests: their last answer, to send again when a device
/// repeats a request instead of running it twice.
#[derive(Default)]
struct Recent {
    order: VecDeque<(DeviceId, RequestId)>,
    answers: HashMap<(DeviceId, RequestId), Option<HostEvent>>,
}

impl Recent {
    /// Remembers a new request; false if it is already known.
    fn start(&mut self, key: (DeviceId, RequestId)) -> bool {
        if self.answers.contains_key(&key) {
            return false;
        }
        if self.order.len() >= REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.answers.remove(&old);
        }
        self.order.push_back(key);
        self.answers.insert(key, None);
        true
    }

    fn record(&mut self, device: Option<DeviceId>, event: &HostEvent) {
        let request = match event {
            HostEvent::ActionResult { request, .. } => *request,
            HostEvent::Error { request: Some(request), .. } => *request,
            _ => return,
        };
        for ((d, r), answer) in &mut self.answers {
            if *r == request && device.is_none_or(|device| device == *d) {
                *answer = Some(event.clone());
            }
        }
    }
}

/// Runs the link until the host stops.
pub(crate) async fn run(
    host: Arc<Host>,
    setup: RelaySetup,
    mut commands: mpsc::UnboundedReceiver<ToLink>,
) {
    let mut config = ClientConfig::new(
        setup.addr.clone(),
        setup.server_name.clone(),
        setup.tls.clone(),
        protocol::SecretKey::from_seed(&host.key.to_seed()),
        Side::Host,
    );
    config.devices = lock(&host.devices).keys();
    config.offers = lock(&host.offers).tokens();
    config.local = setup.local.clone();
    let mut client = Client::start(config);
    let Some(to_self) = host.link.clone() else { return };
    let mut recent = Recent::default();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(ToLink::Broadcast(event)) => {
                    recent.record(None, &event);
                    let keys = lock(&host.devices).keys();
                    let message = Message::Event(event);
                    for key in keys {
                        if let Some(frame) = seal_to(&host, &key, &message) {
                            let _ = client.send(key, frame);
                        }
                    }
                }
                Some(ToLink::To(device, event)) => {
                    recent.record(Some(device), &event);
                    let key = *device.as_bytes();
                    if let Some(frame) = seal_to(&host, &key, &Message::Event(event)) {
                        let _ = client.send(key, frame);
                    }
                }
                Some(ToLink::Pairing(key, answer)) => {
                    if let Some(frame) = seal_to(&host, &key, &Message::Pairing(answer)) {
                        let _ = client.send(key, frame);
                    }
                }
                Some(ToLink::Register) => {
                    let devices = lock(&host.devices).keys();
                    let offers = lock(&host.offers).tokens();
                    let _ = client.register(devices, offers);
                }
            },
            inbound = client.next() => match inbound {
                None => return,
                Some(Inbound::Message { from, bytes }) => {
                    on_frame(&host, &to_self, &mut recent, from, &bytes);
                }
                Some(Inbound::Presence { device, online }) => {
                    let Ok(key) = PublicKey::from_bytes(&device) else { continue };
                    let id = DeviceId::new(key);
                    if online {
                        lock(&host.offers).online.insert(id);
                        // A device that connects later sees what is still open.
                        sync(&host, &to_self, id, None);
                    } else {
                        lock(&host.offers).online.remove(&id);
                    }
                }
                Some(Inbound::Connected) => tracing::info!(relay = %setup.addr, "linked to the relay"),
                Some(Inbound::Refused(reason)) => tracing::warn!("the relay refused: {reason}"),
                Some(Inbound::Undeliverable { .. }) => {}
            },
        }
    }
}

/// Asks the core's driver to bring a device up to date ([`send_sync`]), in order with the
/// decisions it takes.
fn sync(
    host: &Arc<Host>,
    link: &mpsc::UnboundedSender<ToLink>,
    device: DeviceId,
    request: Option<RequestId>,
) {
    if let Err(e) = host.core.try_send(Command::Sync { device, request }) {
        error(link, device, request, ErrorCode::Internal, format!("{e}; ask again"));
    }
}

/// Sends a device every pending action, the live sessions, then the host's status (the core's
/// driver does, for [`crate::host_core::Effect::Sync`]).
pub(crate) fn send_sync(
    host: &Host,
    device: DeviceId,
    request: Option<RequestId>,
    pending: &[crate::approvals::Pending],
) {
    let Some(link) = &host.link else { return };
    let Some(role) = lock(&host.devices).get(&device).map(|d| d.role) else { return };
    for p in pending {
        let _ = link.send(ToLink::To(device, pending_event(host, p)));
    }
    // Live sessions, with what they printed lately.
    let sessions: Vec<HostEvent> = lock(&host.sessions)
        .iter()
        .flat_map(|(id, live)| {
            let started = HostEvent::SessionStarted {
                session: *id,
                command: live.command.clone(),
                kind: live.kind,
                size: live.size,
            };
            let output = live.scrollback.iter().map(|(seq, data)| HostEvent::Output {
                session: *id,
                seq: *seq,
                data: protocol::Blob(data.clone()),
            });
            std::iter::once(started).chain(output).collect::<Vec<_>>()
        })
        .collect();
    for event in sessions {
        let _ = link.send(ToLink::To(device, event));
    }
    let _ = link.send(ToLink::To(
        device,
        HostEvent::Status {
            request,
            host_name: host.config.host_name.clone(),
            workspace: host.config.workspace.display().to_string(),
            sandbox: host.config.sandbox.describe(),
            role,
            pending: u32::try_from(pending.len()).unwrap_or(u32::MAX),
        },
    ));
}

fn on_frame(
    host: &Arc<Host>,
    link: &mpsc::UnboundedSender<ToLink>,
    recent: &mut Recent,
    from: [u8; 32],
    bytes: &[u8],
) {
    let claimed = hex::encode(from);
    let sealed = match Sealed::decode(bytes) {
        Ok(s) => s,
        Err(e) => return refuse(host, &claimed, e),
    };
    if *sealed.sender() != from {
        return refuse(host, &claimed, "signed by another key than the connection that sent it");
    }
    let key = match PublicKey::from_bytes(sealed.sender()) {
        Ok(k) => k,
        Err(e) => return refuse(host, &claimed, e),
    };
    let id = DeviceId::new(key);
    let me = host.key.public_key();
    let now = now_ms();
    let ctx = VerifyContext::new(&me, now);
    let device = lock(&host.devices).get(&id).cloned();
    let Some(device) = device else {
        // Only a pairing hello may come from a key this host does not know.
        if sealed.unverified_header().kind != protocol::MessageKind::Pairing {
            return refuse(host, &id.to_string(), "not a paired device");
        }
        let verified = match sealed.verify(&key, &ctx, &mut ReplayWindow::new()) {
            Ok(v) => v,
            Err(e) => return refuse(host, &id.to_string(), e),
        };
        let Message::Pairing(Pairing::Hello { token, name, proof }) = verified.message().clone()
        else {
            return refuse(host, &id.to_string(), "a pairing message other than a hello");
        };
        tokio::spawn(pair_device(host.clone(), link.clone(), key, token, name, proof));
        return;
    };
    let verified = {
        let mut devices = lock(&host.devices);
        let mut window = ReplayWindow::restore(devices.rx(&id));
        match sealed.verify(&key, &ctx, &mut window) {
            Ok(v) => match devices.accepted(&id, window.export(), now) {
                Ok(()) => {
                    host.syncer.soon();
                    v
                }
                Err(e) => {
                    drop(devices);
                    return refuse(
                        host,
                        &id.to_string(),
                        format!("cannot record its counter: {e}"),
                    );
                }
            },
            Err(e) => {
                drop(devices);
                return refuse(host, &id.to_string(), e);
            }
        }
    };
    let (_, message) = verified.into_parts();
    dispatch(host, link, recent, &device, message);
}

fn error(
    link: &mpsc::UnboundedSender<ToLink>,
    device: DeviceId,
    request: Option<RequestId>,
    code: ErrorCode,
    message: impl Into<String>,
) {
    let _ =
        link.send(ToLink::To(device, HostEvent::Error { request, code, message: message.into() }));
}

fn dispatch(
    host: &Arc<Host>,
    link: &mpsc::UnboundedSender<ToLink>,
    recent: &mut Recent,
    device: &Device,
    message: Message,
) {
    let label = device.id.to_string();
    let forbidden = |needs: Role, request: Option<RequestId>| {
        let what =
            format!("a {} may not do this (needs {})", role_name(device.role), role_name(needs));
        refuse(host, &label, &what);
        error(link, device.id, request, ErrorCode::Forbidden, what);
    };
    match message {
        Message::Request(Request::Sync { id }) => sync(host, link, device.id, Some(id)),
        Message::Request(Request::Action { id, action }) => {
            if device.role < Role::Operator {
                return forbidden(Role::Operator, Some(id));
            }
            if host.requested_before.contains(&(device.id, id)) {
                let what = "a request made before the host restarted, sent again";
                refuse(host, &label, what);
                return error(link, device.id, Some(id), ErrorCode::Conflict, what);
            }
            if !recent.start((device.id, id)) {
                // Asked before: send the answer again, never run it twice.
                if let Some(Some(answer)) = recent.answers.get(&(device.id, id)) {
                    let _ = link.send(ToLink::To(device.id, answer.clone()));
                }
                return;
            }
            let (host, link, who) = (host.clone(), link.clone(), device.id);
            tokio::spawn(async move {
                let (first, later) =
                    crate::actions::submit(host, Requester::Device(who), id, action).await;
                if let Some(event) = first.error_event() {
                    let _ = link.send(ToLink::To(who, event));
                }
                if let Some(later) = later
                    && let Ok(last) = later.await
                    && let Some(event) = last.error_event()
                {
                    let _ = link.send(ToLink::To(who, event));
                }
            });
        }
        Message::Request(Request::Cancel { id: _, target }) => {
            if device.role < Role::Operator {
                return forbidden(Role::Operator, Some(target));
            }
            // Only a request of this device's own; queued in the order frames came.
            let (reply, answer) = oneshot::channel();
            let command = Command::Withdraw { id: target, by: label, own_only: true, reply };
            let (link, who) = (link.clone(), device.id);
            let queued = host.core.try_send(command);
            tokio::spawn(async move {
                let failed = match queued {
                    Ok(()) => match answer.await {
                        Ok(Ok(())) => return,
                        Ok(Err(_)) => None,
                        Err(_) => Some(CoreError::Stopped),
                    },
                    Err(e) => Some(e),
                };
                let (code, message) = match failed {
                    None => (ErrorCode::NotFound, "no pending request of this device has that id"),
                    // Not withdrawn: it still waits, and must not look gone.
                    Some(CoreError::Busy) => {
                        (ErrorCode::Internal, "the host is busy; not withdrawn, send it again")
                    }
                    Some(_) => (ErrorCode::Internal, "the host is stopping; not withdrawn"),
                };
                error(&link, who, Some(target), code, message);
            });
        }
        Message::Decision(decision) => {
            if device.role < Role::Approver {
                return forbidden(Role::Approver, Some(decision.request));
            }
            let (reply, answer) = oneshot::channel();
            let command = Command::Decide {
                id: decision.request,
                action_hash: decision.action_hash,
                verdict: decision.verdict,
                by: label.clone(),
                reply,
            };
            let (host, link, who) = (host.clone(), link.clone(), device.id);
            let queued = host.core.try_send(command);
            tokio::spawn(async move {
                let refusal = match queued {
                    Ok(()) => match answer.await {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => (e.code(), e.to_string()),
                        Err(_) => (ErrorCode::Internal, CoreError::Stopped.to_string()),
                    },
                    Err(e) => (ErrorCode::Internal, e.to_string()),
                };
                refuse(&host, &label, &refusal.1);
                error(&link, who, Some(decision.request), refusal.0, refusal.1);
            });
        }
        Message::Event(_) | Message::Pairing(_) => {
            refuse(host, &label, "devices do not send host events or pairing messages once paired");
        }
    }
}

/// A hello from a new key: find the offer, check it, ask the person, answer.
async fn pair_device(
    host: Arc<Host>,
    link: mpsc::UnboundedSender<ToLink>,
    key: PublicKey,
    token: PairingToken,
    name: String,
    proof: protocol::PairingProof,
) {
    let id = DeviceId::new(key);
    let reject = |reason: &str| {
        refuse(&host, &id.to_string(), format!("pairing refused: {reason}"));
        let _ = link
            .send(ToLink::Pairing(*key.as_bytes(), Pairing::Rejected { reason: reason.into() }));
    };
    // The first hello that names an offer uses it up, whatever happens next.
    let Some(offer) = lock(&host.offers).open.remove(&token) else {
        return reject("this pairing offer is not open (used, burned, withdrawn or expired)");
    };
    let finish = |result: Result<Device, String>| {
        let _ = offer.events.send(PairEvent::Done(result));
        // The offer's route at the relay closes; a new device's route opens.
        let _ = link.send(ToLink::Register);
    };
    if now_ms() >= offer.expires_at_ms {
        reject("the pairing offer expired");
        return finish(Err("the offer expired".into()));
    }
    if pairing::check(&offer.secret, &host.key.public_key(), &key, &name, &proof).is_err() {
        reject("wrong proof: this pairing link is burned; make a new one");
        return finish(Err(format!(
            "{id} sent a wrong proof (not the secret of this link, or tampered with); the offer is burned"
        )));
    }
    if lock(&host.devices).get(&id).is_some() {
        reject("this device is already paired");
        return finish(Err("the device is already paired".into()));
    }
    let name = offer.name.clone().unwrap_or(name);
    let accept = if offer.yes {
        true
    } else {
        let (answer, asked) = oneshot::channel();
        let question =
            PairEvent::Confirm { device: id, name: name.clone(), role: offer.role, answer };
        let left = offer.expires_at_ms.saturating_sub(now_ms()).max(60_000);
        offer.events.send(question).is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_millis(left), asked).await,
                Ok(Ok(true))
            )
    };
    if !accept {
        reject("the person at the host did not accept");
        return finish(Err("not accepted at the host".into()));
    }
    let device = Device { id, name, role: offer.role, paired_at_ms: now_ms() };
    if let Err(e) = lock(&host.devices).add(device.clone()) {
        reject("the host could not record the pairing");
        return finish(Err(e.to_string()));
    }
    audit_device_change(
        &host,
        id,
        format!("paired as {} ({})", role_name(device.role), device.name),
    );
    let _ = link.send(ToLink::Register);
    let _ = link.send(ToLink::Pairing(
        *key.as_bytes(),
        Pairing::Accepted { role: device.role, host_name: host.config.host_name.clone() },
    ));
    finish(Ok(device));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_is_counted_not_written_one_by_one() {
        let mut budget = RefusalBudget::default();
        let written = (0..1000).filter(|_| budget.take().is_some()).count();
        assert!((100..=102).contains(&written), "{written} written");
        // A second later there is room again, and the count comes with the next record.
        budget.last -= Duration::from_secs(1);
        assert_eq!(budget.take(), Some(1000 - written as u64));
        assert_eq!(budget.take(), Some(0));
    }
}
