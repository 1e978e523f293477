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
//! Pairing (see [`crate::host_core`] for its rules): `agent-host pair` (or `up`) opens an offer,
//! a one-time secret that travels only in the link; the offer's token is registered at the relay
//! so that the new device can reach the host. Pending actions do not survive a host restart: the
//! restart denies them (they lapse unanswered), and devices see a fresh list when they sync.

use std::sync::Arc;

use protocol::relay::Side;
use protocol::{DeviceId, Message, PublicKey, RelayKey, SealContext};
use relay_client::{ChannelSetup, Client, ClientConfig, Inbound};

use crate::host::{Host, LinkInbox, RelaySetup, ToLink, lock, now_ms};
use crate::host_core::Command;

mod manage;
mod pairing;

pub(crate) use manage::change_device;
pub use manage::{DeviceChangeError, apply_change, device_infos};
pub(crate) use pairing::{pair_local, record_pairing};

/// How long an event the host sends stays valid.
const EVENT_LIFETIME_MS: u64 = 5 * 60 * 1000;

/// Seals `message` to `recipient` ([`seal_to`]) and queues it: a pairing answer always (on the
/// channel the device opened to pair), an event unless the client's queue is full (then it is
/// dropped, and the host's log says so).
fn send_to(host: &Host, client: &Client, recipient: &PublicKey, message: &Message) {
    let Some(frame) = seal_to(host, recipient, message) else { return };
    let peer = RelayKey::of(recipient);
    let sent = match message {
        Message::Pairing(_) => client.send_pairing(peer, frame),
        _ => client.send(peer, frame),
    };
    if let Err(e) = sent {
        tracing::warn!(device = %DeviceId::new(*recipient), "not sent: {e}");
    }
}

/// A frame's counter towards `to`: the device's next, or 1 for a key not (yet) paired (a
/// pairing answer; the device has no window for this host yet). An event to a device revoked
/// a moment ago (the notice of it) goes on from its last counter, so that the device takes it.
fn seal_to(host: &Host, recipient: &PublicKey, message: &Message) -> Option<Vec<u8>> {
    seal_until(host, recipient, message, now_ms() + EVENT_LIFETIME_MS)
}

/// [`seal_to`], valid until `expires_at_ms` (a push, which may wait at its push service for
/// a phone that is away).
pub(crate) fn seal_until(
    host: &Host,
    recipient: &PublicKey,
    message: &Message,
    expires_at_ms: u64,
) -> Option<Vec<u8>> {
    let id = DeviceId::new(*recipient);
    let counter = {
        let mut devices = lock(&host.devices);
        let was_paired = matches!(message, Message::Event(_)) && devices.knows(&id);
        if devices.get(&id).is_some() || was_paired {
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
        recipient,
        counter,
        issued_at_ms: now,
        expires_at_ms: expires_at_ms.max(now + 1),
    };
    match protocol::seal(&host.key, &ctx, message) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!("cannot seal an event: {e}");
            None
        }
    }
}

/// The devices the relay routes to this host and that may open a channel: those paired with a
/// channel key (one paired before the channel has to pair again: `agent-host devices` says so).
fn routed(host: &Host, devices: impl IntoIterator<Item = RelayKey>) -> Vec<(RelayKey, [u8; 32])> {
    let registry = lock(&host.devices);
    devices
        .into_iter()
        .filter_map(|key| {
            let id = DeviceId::new(PublicKey::from_bytes(&key.0).ok()?);
            Some((key, registry.get(&id)?.channel_key?.0))
        })
        .collect()
}

/// Runs the link until the host stops; `channel` is the host's static channel key.
pub(crate) async fn run(
    host: Arc<Host>,
    setup: RelaySetup,
    channel: zeroize::Zeroizing<[u8; 32]>,
    mut commands: LinkInbox,
) {
    let mut config = ClientConfig::new(
        setup.addr.clone(),
        setup.server_name.clone(),
        setup.tls.clone(),
        protocol::SecretKey::from_seed(&host.key.to_seed()),
        Side::Host,
        ChannelSetup::Host { local_static: channel },
    );
    let ids = lock(&host.devices).ids();
    config.devices = routed(&host, ids.iter().map(|id| RelayKey::of(&id.key())));
    config.local = setup.local.clone();
    let mut client = match Client::start(config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("cannot start the relay link: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(ToLink::Broadcast(event)) => {
                    let ids = lock(&host.devices).ids();
                    let message = Message::Event(event);
                    for id in ids {
                        send_to(&host, &client, &id.key(), &message);
                    }
                }
                Some(ToLink::To(device, event)) => {
                    send_to(&host, &client, &device.key(), &Message::Event(event));
                }
                Some(ToLink::Pairing(key, answer)) => {
                    send_to(&host, &client, &key, &Message::Pairing(answer));
                }
                Some(ToLink::Register { devices, offers, psks }) => {
                    let mut psks: std::collections::HashMap<_, _> = psks.into_iter().collect();
                    let offers = offers.into_iter().map(|t| (t, psks.remove(&t))).collect();
                    let _ = client.register((routed(&host, devices), offers));
                }
            },
            inbound = client.next() => match inbound {
                None => return,
                // Judged by the core, in the order frames came; while it is busy the link
                // waits (and reads nothing more from the relay).
                Some(Inbound::Message { from, bytes }) => {
                    if host.core.frame(from, bytes).await.is_err() {
                        return;
                    }
                }
                Some(Inbound::Presence { device, online }) => {
                    let Ok(key) = PublicKey::from_bytes(&device.0) else { continue };
                    // A device that comes online is brought up to date, in order with the
                    // decisions the core takes.
                    let presence = Command::Presence { device: DeviceId::new(key), online };
                    if host.core.send(presence).await.is_err() {
                        return;
                    }
                }
                Some(Inbound::Connected) => tracing::info!(relay = %setup.addr, "linked to the relay"),
                Some(Inbound::Refused(reason)) => tracing::warn!("the relay refused: {reason}"),
                Some(Inbound::Undeliverable { .. }) => {}
                // Tampered, replayed, or a handshake that failed: the audit log says so
                // (within its limit on refusals).
                Some(Inbound::ChannelRefused { peer, reason }) => {
                    crate::host::refuse(&host, &peer.to_string(), format_args!("the end-to-end channel refused a frame: {reason}"));
                }
            },
        }
    }
}
