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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use protocol::relay::Side;
use protocol::{
    DeviceId, ErrorCode, HostEvent, Message, Pairing, PublicKey, ReplayWindow, Request, RequestId,
    Role, SealContext, Sealed, VerifyContext,
};
use relay_client::{Client, ClientConfig, Inbound};
use tokio::sync::{mpsc, oneshot};

use crate::approvals::Requester;
use crate::devices::{Device, role_name};
use crate::host::{Host, RelaySetup, ToLink, lock, now_ms, refuse};
use crate::host_core::{Command, CoreError};

mod manage;
mod pairing;

pub(crate) use manage::{apply_change, change_device, device_infos, online};
use pairing::pair_device;
pub(crate) use pairing::pair_local;

/// How long an event the host sends stays valid.
const EVENT_LIFETIME_MS: u64 = 5 * 60 * 1000;
/// How many (device, request) ids the link remembers, to answer a retransmitted request with
/// its result instead of running it again.
const REMEMBERED: usize = 1024;

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
