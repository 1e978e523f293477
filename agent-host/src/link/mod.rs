//! The host's link to paired devices through a relay, and pairing.
//!
//! What arrives goes to the host's core as it came, in order ([`crate::host_core`] checks every
//! frame before anything acts on it: signature, recipient, times, replay window, role); the link
//! itself trusts nothing it receives. A device that comes online is brought up to date.
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

use std::sync::Arc;

use protocol::relay::Side;
use protocol::{DeviceId, ErrorCode, HostEvent, Message, PublicKey, SealContext};
use relay_client::{Client, ClientConfig, Inbound};
use tokio::sync::mpsc;

use crate::host::{Host, RelaySetup, ToLink, lock, now_ms};
use crate::host_core::Command;

mod manage;
mod pairing;

pub(crate) use manage::{apply_change, change_device, device_infos, online};
pub(crate) use pairing::{pair_device, pair_local};

/// How long an event the host sends stays valid.
const EVENT_LIFETIME_MS: u64 = 5 * 60 * 1000;

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
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(ToLink::Broadcast(event)) => {
                    let keys = lock(&host.devices).keys();
                    let message = Message::Event(event);
                    for key in keys {
                        if let Some(frame) = seal_to(&host, &key, &message) {
                            let _ = client.send(key, frame);
                        }
                    }
                }
                Some(ToLink::To(device, event)) => {
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
                // Judged by the core, in the order frames came; while it is busy the relay
                // holds what comes next.
                Some(Inbound::Message { from, bytes }) => {
                    if host.core.frame(from, bytes).await.is_err() {
                        return;
                    }
                }
                Some(Inbound::Presence { device, online }) => {
                    let Ok(key) = PublicKey::from_bytes(&device) else { continue };
                    let id = DeviceId::new(key);
                    if online {
                        lock(&host.offers).online.insert(id);
                        // A device that connects later sees what is still open.
                        sync(&host, &to_self, id);
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

/// Asks the core's driver to bring a device up to date ([`crate::host::send_sync`]), in order
/// with the decisions it takes.
fn sync(host: &Arc<Host>, link: &mpsc::UnboundedSender<ToLink>, device: DeviceId) {
    if let Err(e) = host.core.try_send(Command::Sync { device, request: None }) {
        let message = format!("{e}; ask again");
        let event = HostEvent::Error { request: None, code: ErrorCode::Internal, message };
        let _ = link.send(ToLink::To(device, event));
    }
}
