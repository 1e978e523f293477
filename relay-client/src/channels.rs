//! The end-to-end channel as the link sees it ([`protocol::channel`]): which channels are open
//! with which peer, their handshakes, and every resume payload sealed and opened; without I/O
//! (the link's task carries the frames and tells the time).
//!
//! A device opens a channel on each connection of its own, when its host comes back online
//! (it may have restarted and forgotten it), when the host says it knows no such channel, and
//! again when an answer does not come within [`HANDSHAKE_RETRY_MS`]. Nothing but handshakes
//! goes to the host before the channel is open.
//!
//! A host keeps the channels of each device it registered with a static key (at most
//! [`MAX_CHANNELS`] per device: one per process of that key, a process that connects again
//! replacing its own; past that the one heard from least recently goes), and of each device
//! pairing through an offer it registered (on a lane of its own, [`Lane::Pairing`], which
//! carries the pairing messages only). What it sends a device is sealed for each of its
//! channels, so every process of one key hears the host as today. A device revoked or gone
//! offline loses its channels.
//!
//! A hello can be replayed (Noise's first message carries no freshness), and anyone may claim
//! to answer one; so a channel is *confirmed* by the first chunk the device seals in it (an empty
//! payload it sends at once), which only the device that made the hello can make. Until then the
//! host seals nothing for it, and it replaces or pushes out no confirmed channel: at most
//! [`MAX_CHANNELS`] unconfirmed ones wait per device and lane (the oldest goes first), and a
//! hello for an id in use is ignored. A
//! device keeps its channel across its reconnections until a new one is answered; an answer
//! that does not verify leaves the handshake waiting for the real one.

use std::collections::HashMap;

use protocol::channel::{
    self, Channel, ChannelError, ChannelId, ChannelKeys, Frame, Initiator, PairingKeys,
};
use protocol::{PairingToken, PublicKey, RelayKey};
use zeroize::Zeroizing;

/// The most channels a host keeps per device key and lane.
pub const MAX_CHANNELS: usize = 8;
/// The most devices pairing at once whose channels a host keeps.
pub const MAX_PAIRING: usize = 2 * protocol::relay::MAX_OFFERS;
/// A device that has no answer to its hello this long sends a new one (and waits twice as long
/// for each next, up to [`HANDSHAKE_RETRY_MAX_MS`]).
pub const HANDSHAKE_RETRY_MS: u64 = 3_000;
/// The longest a device waits between two unanswered hellos.
pub const HANDSHAKE_RETRY_MAX_MS: u64 = 60_000;
/// The least time between two "no such channel" notices from a host to one device key.
pub const HINT_INTERVAL_MS: u64 = 1_000;

/// Which of a peer's resume streams: a paired device's, or a device's while it pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// A paired device's channel (`Noise_KK`).
    Paired,
    /// A pairing device's channel (`Noise_NNpsk0`): pairing messages only.
    Pairing,
}

/// One resume stream of the link: a peer and a lane.
pub type Route = (RelayKey, Lane);

/// What a client's channels are made with.
#[derive(Clone)]
pub enum ChannelSetup {
    /// A host: its static X25519 private key. The devices' static keys and the offers'
    /// pre-shared keys come with each registration.
    Host {
        /// The host's static key.
        local_static: Zeroizing<[u8; 32]>,
    },
    /// A paired device: its static key, and its host's key and static key from pairing.
    Device {
        /// The device's static key.
        local_static: Zeroizing<[u8; 32]>,
        /// The host it talks to.
        host: RelayKey,
        /// The host's static key.
        host_static: [u8; 32],
    },
    /// A device that is pairing: the pre-shared key from the link's secret
    /// ([`protocol::pairing::channel_psk`]). The host and the offer's token are the knock's.
    Pairing {
        /// The pairing channel's pre-shared key.
        psk: Zeroizing<[u8; 32]>,
    },
}

/// What the channels ask of the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A resume payload that came on this route.
    Payload(Route, Vec<u8>),
    /// Send this frame to this peer now (a handshake or a notice: outside the pace).
    Send(RelayKey, Vec<u8>),
    /// A channel opened on this route: what waits unacknowledged there is due again.
    Opened(Route),
    /// A frame from this peer was refused, for this reason.
    Refused(RelayKey, String),
}

struct Slot {
    channel: Channel,
    incarnation: u64,
    heard_ms: u64,
    /// The device sealed a chunk in it ([`Channels`]' documentation).
    confirmed: bool,
}

// One per client: the size of the larger variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum State {
    Host {
        local_static: Zeroizing<[u8; 32]>,
        statics: HashMap<RelayKey, [u8; 32]>,
        psks: HashMap<PairingToken, Zeroizing<[u8; 32]>>,
        open: HashMap<Route, Vec<Slot>>,
        hinted: HashMap<RelayKey, u64>,
    },
    Device {
        host: RelayKey,
        lane: Lane,
        keys: Result<ChannelKeys, PairingKeys>,
        incarnation: u64,
        pending: Option<Pending>,
        open: Option<(Channel, u64)>,
        /// The channel the open one replaced: what the host still seals in it is taken (it
        /// does so until the new one's confirmation reaches it, which is then sent again).
        previous: Option<Channel>,
        /// When the open channel's confirmation was last sent.
        confirmed_at_ms: u64,
    },
}

/// A device's hello waiting for its answer.
struct Pending {
    initiator: Initiator,
    at_ms: u64,
    /// How long until the next hello if this one goes unanswered.
    retry_ms: u64,
}

/// A client's channels.
pub struct Channels {
    me: PublicKey,
    state: State,
    max_payload: usize,
}

/// The largest resume payload taken: a whole envelope and the resume header.
pub const MAX_PAYLOAD: usize = protocol::limits::MAX_FRAME + protocol::resume::DATA_HEADER;

/// Why the channels could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A key is not a public key this protocol takes.
    #[error("a key is not usable: {0}")]
    Key(String),
    /// A pairing device without a knock (the host and the offer's token).
    #[error("a pairing device needs the knock's host and token")]
    NoKnock,
}

fn identity(key: &RelayKey) -> Result<PublicKey, SetupError> {
    PublicKey::from_bytes(&key.0).map_err(|e| SetupError::Key(e.to_string()))
}

impl Channels {
    /// Channels for a client whose identity is `me`, the knock (host, token) of a device that
    /// is pairing, and `incarnation` its resume epoch.
    pub fn new(
        me: PublicKey,
        setup: ChannelSetup,
        knock: Option<(RelayKey, PairingToken)>,
        incarnation: u64,
    ) -> Result<Self, SetupError> {
        let state = match setup {
            ChannelSetup::Host { local_static } => State::Host {
                local_static,
                statics: HashMap::new(),
                psks: HashMap::new(),
                open: HashMap::new(),
                hinted: HashMap::new(),
            },
            ChannelSetup::Device { local_static, host, host_static } => State::Device {
                host,
                lane: Lane::Paired,
                keys: Ok(ChannelKeys {
                    local_static,
                    remote_static: host_static,
                    host: identity(&host)?,
                    device: me,
                }),
                incarnation,
                pending: None,
                open: None,
                previous: None,
                confirmed_at_ms: 0,
            },
            ChannelSetup::Pairing { psk } => {
                let (host, token) = knock.ok_or(SetupError::NoKnock)?;
                State::Device {
                    host,
                    lane: Lane::Pairing,
                    keys: Err(PairingKeys { psk, token, host: identity(&host)?, device: me }),
                    incarnation,
                    pending: None,
                    open: None,
                    previous: None,
                    confirmed_at_ms: 0,
                }
            }
        };
        Ok(Self { me, state, max_payload: MAX_PAYLOAD })
    }

    /// The lane this side sends on by default: a device's own; a host's to paired devices.
    pub fn lane(&self) -> Lane {
        match &self.state {
            State::Device { lane, .. } => *lane,
            State::Host { .. } => Lane::Paired,
        }
    }

    /// For a host: the devices that may open a channel (with their static keys) and the open
    /// offers' pre-shared keys. A device no longer listed loses its channels.
    pub fn register(
        &mut self,
        devices: HashMap<RelayKey, [u8; 32]>,
        offers: HashMap<PairingToken, Zeroizing<[u8; 32]>>,
    ) {
        if let State::Host { statics, psks, open, .. } = &mut self.state {
            open.retain(|(peer, lane), _| *lane == Lane::Pairing || devices.contains_key(peer));
            *statics = devices;
            *psks = offers;
        }
    }

    /// For a host: a device's last connection went away, and its channels with it.
    pub fn offline(&mut self, device: &RelayKey) {
        if let State::Host { open, .. } = &mut self.state {
            open.retain(|(peer, _), _| peer != device);
        }
    }

    /// This side's link connected: a device opens a new channel.
    pub fn connected(&mut self, now_ms: u64) -> Vec<Event> {
        self.handshake(now_ms, HANDSHAKE_RETRY_MS)
    }

    /// A paired device's host came online: it may have restarted, so a new channel is opened,
    /// unless a hello went out a moment ago (the relay tells of the host after each welcome,
    /// as the hello of that connection goes out). A device that is pairing does not: a host
    /// that restarted has forgotten the offer, and one that just paired it registers it, which
    /// the relay tells as coming online.
    pub fn host_online(&mut self, host_key: &RelayKey, now_ms: u64) -> Vec<Event> {
        match &self.state {
            State::Device { host, lane: Lane::Paired, pending, .. }
                if host == host_key
                    && pending
                        .as_ref()
                        .is_none_or(|p| now_ms.saturating_sub(p.at_ms) >= HINT_INTERVAL_MS) =>
            {
                self.handshake(now_ms, HANDSHAKE_RETRY_MS)
            }
            _ => Vec::new(),
        }
    }

    /// Time passed: a device whose hello went unanswered sends a new one, waiting twice as long
    /// each time up to [`HANDSHAKE_RETRY_MAX_MS`] (a channel still open stays in use meanwhile).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let State::Device { pending: Some(p), .. } = &self.state else { return Vec::new() };
        if now_ms.saturating_sub(p.at_ms) < p.retry_ms {
            return Vec::new();
        }
        let retry = (p.retry_ms * 2).min(HANDSHAKE_RETRY_MAX_MS);
        self.handshake(now_ms, retry)
    }

    /// Whether payloads can be sealed for `route` now.
    pub fn sendable(&self, route: &Route) -> bool {
        match &self.state {
            State::Host { open, .. } => {
                open.get(route).is_some_and(|slots| slots.iter().any(|s| s.confirmed))
            }
            State::Device { host, lane, open, .. } => open.is_some() && *route == (*host, *lane),
        }
    }

    /// For a host: whether a channel (confirmed or not) is kept for `route`; the link forgets
    /// a pairing route's resume state once none is.
    pub fn has_route(&self, route: &Route) -> bool {
        match &self.state {
            State::Host { open, .. } => open.contains_key(route),
            State::Device { host, lane, .. } => *route == (*host, *lane),
        }
    }

    /// For a host: whether a message delivered on `route` may go on: on a pairing channel,
    /// pairing messages only (by the envelope's kind byte; the core checks the signed kind).
    pub fn accepts(&self, route: &Route, message: &[u8]) -> bool {
        match &self.state {
            State::Host { .. } if route.1 == Lane::Pairing => {
                message.get(1) == Some(&(protocol::MessageKind::Pairing as u8))
            }
            _ => true,
        }
    }

    /// For a host with payloads due on `route` and no channel there: a notice asking any
    /// process of that device to open one, at most every [`HINT_INTERVAL_MS`].
    pub fn hint(&mut self, route: &Route, now_ms: u64) -> Option<Vec<u8>> {
        if !matches!(self.state, State::Host { .. })
            || route.1 != Lane::Paired
            || self.sendable(route)
        {
            return None;
        }
        self.hint_to(route.0, ChannelId::ANY, now_ms)
    }

    /// A "no such channel" notice to a device the host knows (registered, or pairing), at
    /// most every [`HINT_INTERVAL_MS`] per key.
    fn hint_to(&mut self, peer: RelayKey, id: ChannelId, now_ms: u64) -> Option<Vec<u8>> {
        let State::Host { hinted, statics, open, .. } = &mut self.state else { return None };
        if !statics.contains_key(&peer) && !open.contains_key(&(peer, Lane::Pairing)) {
            return None;
        }
        if let Some(last) = hinted.get(&peer)
            && now_ms.saturating_sub(*last) < HINT_INTERVAL_MS
        {
            return None;
        }
        // Bounded by the keys that may be hinted: the registered devices and pairing routes.
        if hinted.len() >= protocol::relay::MAX_DEVICES + MAX_PAIRING {
            hinted.retain(|_, at| now_ms.saturating_sub(*at) < HINT_INTERVAL_MS);
        }
        hinted.insert(peer, now_ms);
        Some(Frame::Unknown { id }.encode())
    }

    /// Seals a resume payload for every channel of `route` (none: nothing).
    pub fn seal(&mut self, route: &Route, payload: &[u8]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        match &mut self.state {
            State::Host { open, .. } => {
                for slot in open.get_mut(route).into_iter().flatten().filter(|s| s.confirmed) {
                    frames.extend(slot.channel.seal(payload).unwrap_or_default());
                }
            }
            State::Device { host, lane, open: Some((channel, _)), .. }
                if *route == (*host, *lane) =>
            {
                frames.extend(channel.seal(payload).unwrap_or_default());
            }
            State::Device { .. } => {}
        }
        frames
    }

    /// Starts a device's handshake (a host: nothing), to be tried again after `retry_ms`. A
    /// channel still open stays in use until the new one opens.
    fn handshake(&mut self, now_ms: u64, retry_ms: u64) -> Vec<Event> {
        let State::Device { host, keys, incarnation, pending, .. } = &mut self.state else {
            return Vec::new();
        };
        let mut id = [0u8; 8];
        if getrandom::fill(&mut id).is_err() || id == [0; 8] {
            return Vec::new();
        }
        let id = ChannelId(id);
        let started = match keys {
            Ok(keys) => channel::initiate(keys, id, *incarnation, self.max_payload),
            Err(keys) => channel::initiate_pairing(keys, id, *incarnation, self.max_payload),
        };
        match started {
            Ok((initiator, hello)) => {
                *pending = Some(Pending { initiator, at_ms: now_ms, retry_ms });
                vec![Event::Send(*host, hello)]
            }
            Err(e) => vec![Event::Refused(*host, format!("cannot start a channel: {e}"))],
        }
    }

    /// A frame from `from`.
    pub fn receive(&mut self, now_ms: u64, from: RelayKey, bytes: &[u8]) -> Vec<Event> {
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => return vec![Event::Refused(from, e.to_string())],
        };
        match &self.state {
            State::Host { .. } => self.host_receives(now_ms, from, frame),
            State::Device { .. } => self.device_receives(now_ms, from, frame),
        }
    }

    fn host_receives(&mut self, now_ms: u64, from: RelayKey, frame: Frame<'_>) -> Vec<Event> {
        let me = self.me;
        let max = self.max_payload;
        let State::Host { local_static, statics, psks, open, .. } = &mut self.state else {
            return Vec::new();
        };
        let refused = |why: String| vec![Event::Refused(from, why)];
        // A hello for an id in use is a replay (or a device that cannot count): ignored.
        if let Frame::Hello { id, .. } | Frame::PairHello { id, .. } = frame
            && open
                .iter()
                .any(|(route, slots)| route.0 == from && slots.iter().any(|s| s.channel.id() == id))
        {
            return Vec::new();
        }
        let (_, opened) = match frame {
            Frame::Hello { id, message } => {
                let Some(remote_static) = statics.get(&from) else {
                    return refused(
                        "a channel from a device not registered with a channel key".into(),
                    );
                };
                let Ok(device) = PublicKey::from_bytes(&from.0) else {
                    return refused("a channel from a key that is not one".into());
                };
                let keys = ChannelKeys {
                    local_static: local_static.clone(),
                    remote_static: *remote_static,
                    host: me,
                    device,
                };
                (id, channel::respond(&keys, id, message, max).map(|o| (Lane::Paired, o)))
            }
            Frame::PairHello { id, token, message } => {
                let Some(psk) = psks.get(&token) else {
                    return refused("a pairing channel for an offer that is not open".into());
                };
                let Ok(device) = PublicKey::from_bytes(&from.0) else {
                    return refused("a channel from a key that is not one".into());
                };
                let keys = PairingKeys { psk: psk.clone(), token, host: me, device };
                (id, channel::respond_pairing(&keys, id, message, max).map(|o| (Lane::Pairing, o)))
            }
            Frame::Data { id, nonce, ciphertext } => {
                let found = open.iter_mut().find_map(|(route, slots)| {
                    let at = slots.iter().position(|s| s.channel.id() == id)?;
                    (route.0 == from).then_some((*route, at))
                });
                let Some((route, at)) = found else {
                    return match self.hint_to(from, id, now_ms) {
                        Some(notice) => vec![Event::Send(from, notice)],
                        None => refused("a chunk for no channel this host keeps".into()),
                    };
                };
                return self.host_opens(now_ms, route, at, nonce, ciphertext);
            }
            Frame::Answer { .. } | Frame::PairAnswer { .. } | Frame::Unknown { .. } => {
                return refused("a frame only a host sends".into());
            }
        };
        let (lane, (channel, answer, incarnation)) = match opened {
            Ok(opened) => opened,
            Err(e) => return refused(format!("a channel handshake failed: {e}")),
        };
        let route = (from, lane);
        let pairing_routes = open.keys().filter(|(_, l)| *l == Lane::Pairing).count();
        if lane == Lane::Pairing && !open.contains_key(&route) && pairing_routes >= MAX_PAIRING {
            // The route heard from least recently gives way.
            let oldest = open
                .iter()
                .filter(|((_, l), _)| *l == Lane::Pairing)
                .min_by_key(|(_, slots)| slots.iter().map(|s| s.heard_ms).max().unwrap_or(0))
                .map(|(route, _)| *route);
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        // It waits for the device's first chunk, beside at most as many others waiting (past
        // that, the oldest waiting goes: replayed hellos push out only what is unconfirmed).
        let slots = open.entry(route).or_default();
        if slots.iter().filter(|s| !s.confirmed).count() >= MAX_CHANNELS
            && let Some(oldest) =
                (0..slots.len()).filter(|&i| !slots[i].confirmed).min_by_key(|&i| slots[i].heard_ms)
        {
            slots.swap_remove(oldest);
        }
        slots.push(Slot { channel, incarnation, heard_ms: now_ms, confirmed: false });
        vec![Event::Send(from, answer)]
    }

    /// Opens a chunk in the `at`th channel of `route`; the first one confirms the channel,
    /// which then replaces the same process's older one (past the most, the one heard from
    /// least recently goes).
    fn host_opens(
        &mut self,
        now_ms: u64,
        route: Route,
        at: usize,
        nonce: u64,
        ciphertext: &[u8],
    ) -> Vec<Event> {
        let State::Host { open, .. } = &mut self.state else { return Vec::new() };
        let Some(slots) = open.get_mut(&route) else { return Vec::new() };
        let Some(slot) = slots.get_mut(at) else { return Vec::new() };
        let opened = match slot.channel.open(nonce, ciphertext) {
            Ok(opened) => opened,
            Err(e) => return vec![Event::Refused(route.0, e.to_string())],
        };
        slot.heard_ms = now_ms;
        let mut events = Vec::new();
        if !slot.confirmed {
            slot.confirmed = true;
            let (id, incarnation) = (slot.channel.id(), slot.incarnation);
            slots.retain(|s| s.channel.id() == id || s.incarnation != incarnation);
            // Confirmed channels are counted apart from those waiting (bounded when made).
            while slots.iter().filter(|s| s.confirmed).count() > MAX_CHANNELS {
                let oldest = (0..slots.len())
                    .filter(|&i| slots[i].confirmed && slots[i].channel.id() != id)
                    .min_by_key(|&i| slots[i].heard_ms);
                let Some(oldest) = oldest else { break };
                slots.swap_remove(oldest);
            }
            events.push(Event::Opened(route));
        }
        // The confirmation itself is empty: nothing for the resume layer.
        if let Some(payload) = opened.filter(|p| !p.is_empty()) {
            events.push(Event::Payload(route, payload));
        }
        events
    }

    fn device_receives(&mut self, now_ms: u64, from: RelayKey, frame: Frame<'_>) -> Vec<Event> {
        let State::Device { host, lane, pending, open, previous, confirmed_at_ms, .. } =
            &mut self.state
        else {
            return Vec::new();
        };
        if from != *host {
            return Vec::new();
        }
        let (host, lane) = (*host, *lane);
        // The first chunk of a channel confirms it to the host: an empty payload.
        let confirmation = |channel: &mut Channel| -> Vec<Event> {
            channel
                .seal(&[])
                .unwrap_or_default()
                .into_iter()
                .map(|f| Event::Send(host, f))
                .collect()
        };
        match frame {
            Frame::Answer { id, message } | Frame::PairAnswer { id, message } => {
                let expected = if lane == Lane::Paired {
                    matches!(frame, Frame::Answer { .. })
                } else {
                    matches!(frame, Frame::PairAnswer { .. })
                };
                let Some(waiting) = pending.as_mut().filter(|p| expected && p.initiator.id() == id)
                else {
                    return Vec::new();
                };
                let mut channel = match waiting.initiator.finish(message) {
                    Ok(channel) => channel,
                    // One that verifies but is malformed (only a holder of the keys makes
                    // one) spent the handshake: another starts.
                    Err(ChannelError::Malformed) => {
                        return self.handshake(now_ms, HANDSHAKE_RETRY_MS);
                    }
                    // One that does not verify leaves it waiting for the real answer.
                    Err(e) => {
                        let why = format!("a channel handshake failed: {e}");
                        return vec![Event::Refused(host, why)];
                    }
                };
                *pending = None;
                let mut events = confirmation(&mut channel);
                *confirmed_at_ms = now_ms;
                *previous = open.take().map(|(old, _)| old);
                *open = Some((channel, now_ms));
                events.push(Event::Opened((host, lane)));
                events
            }
            Frame::Data { id, nonce, ciphertext } => {
                let (channel, old) = match (open.as_mut(), previous.as_mut()) {
                    (Some((channel, _)), _) if channel.id() == id => (channel, false),
                    (_, Some(channel)) if channel.id() == id => (channel, true),
                    // Another process of this key has channels of its own: not for this one.
                    _ => return Vec::new(),
                };
                let mut events = match channel.open(nonce, ciphertext) {
                    Ok(Some(payload)) => vec![Event::Payload((host, lane), payload)],
                    Ok(None) => Vec::new(),
                    Err(e) => vec![Event::Refused(host, e.to_string())],
                };
                // The host still seals in the channel the open one replaced: the open one's
                // confirmation did not reach it. Sent again, at most once a second.
                if old
                    && now_ms.saturating_sub(*confirmed_at_ms) >= HINT_INTERVAL_MS
                    && let Some((channel, _)) = open.as_mut()
                {
                    *confirmed_at_ms = now_ms;
                    events.extend(confirmation(channel));
                }
                events
            }
            Frame::Unknown { id } => {
                let open_id = open.as_ref().map(|(c, _)| c.id());
                if open_id == Some(id) && pending.is_some() {
                    // The host forgot the channel in use; the hello under way makes another.
                    *open = None;
                    return Vec::new();
                }
                let ours =
                    open_id == Some(id) || pending.as_ref().map(|p| p.initiator.id()) == Some(id);
                // "Any channel": unless this one opened a moment ago (the notice crossed it) or
                // a hello is under way.
                let any = id == ChannelId::ANY
                    && pending.is_none()
                    && open
                        .as_ref()
                        .is_none_or(|(_, at)| now_ms.saturating_sub(*at) >= HINT_INTERVAL_MS * 2);
                if ours || any { self.handshake(now_ms, HANDSHAKE_RETRY_MS) } else { Vec::new() }
            }
            Frame::Hello { .. } | Frame::PairHello { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        host: Channels,
        device: Channels,
        host_key: RelayKey,
        device_key: RelayKey,
    }

    type Static = (Zeroizing<[u8; 32]>, [u8; 32]);

    fn statics() -> (Static, Static) {
        (channel::generate_static().unwrap(), channel::generate_static().unwrap())
    }

    fn pair(incarnation: u64) -> Pair {
        let host_id = protocol::SecretKey::from_seed(&[1; 32]).public_key();
        let device_id = protocol::SecretKey::from_seed(&[2; 32]).public_key();
        let ((host_x, host_xp), (device_x, device_xp)) = statics();
        let (host_key, device_key) = (RelayKey::of(&host_id), RelayKey::of(&device_id));
        let mut host =
            Channels::new(host_id, ChannelSetup::Host { local_static: host_x }, None, 1).unwrap();
        host.register(HashMap::from([(device_key, device_xp)]), HashMap::new());
        let setup =
            ChannelSetup::Device { local_static: device_x, host: host_key, host_static: host_xp };
        let device = Channels::new(device_id, setup, None, incarnation).unwrap();
        Pair { host, device, host_key, device_key }
    }

    /// Carries every `Send` between the two until nothing is left; returns the rest.
    fn carry(p: &mut Pair, from_device: bool, events: Vec<Event>, now: u64) -> Vec<Event> {
        let mut rest = Vec::new();
        let mut queue: Vec<(bool, Event)> = events.into_iter().map(|e| (from_device, e)).collect();
        while let Some((by_device, event)) = queue.pop() {
            match event {
                Event::Send(_, frame) => {
                    let got = if by_device {
                        p.host.receive(now, p.device_key, &frame)
                    } else {
                        p.device.receive(now, p.host_key, &frame)
                    };
                    queue.extend(got.into_iter().map(|e| (!by_device, e)));
                }
                other => rest.push(other),
            }
        }
        rest
    }

    #[test]
    fn a_device_opens_a_channel_and_payloads_go_both_ways() {
        let mut p = pair(5);
        let route = (p.host_key, Lane::Paired);
        assert!(!p.device.sendable(&route));
        let hello = p.device.connected(0);
        let rest = carry(&mut p, true, hello, 0);
        assert!(rest.contains(&Event::Opened((p.device_key, Lane::Paired))));
        assert!(rest.contains(&Event::Opened(route)));
        assert!(p.device.sendable(&route));
        for frame in p.device.seal(&route, b"resume payload") {
            let got = p.host.receive(1, p.device_key, &frame);
            assert_eq!(
                got,
                [Event::Payload((p.device_key, Lane::Paired), b"resume payload".to_vec())]
            );
        }
        let back = p.host.seal(&(p.device_key, Lane::Paired), b"answer");
        assert_eq!(back.len(), 1);
        assert_eq!(
            p.device.receive(2, p.host_key, &back[0]),
            [Event::Payload(route, b"answer".to_vec())]
        );
    }

    #[test]
    fn a_process_that_connects_again_replaces_its_channel_and_others_keep_theirs() {
        let mut p = pair(5);
        let hello = p.device.connected(0);
        carry(&mut p, true, hello, 0);
        let hello = p.device.connected(10);
        carry(&mut p, true, hello, 10);
        let to_device = (p.device_key, Lane::Paired);
        assert_eq!(p.host.seal(&to_device, b"x").len(), 1, "one channel for one process");
        // A second process of the same key: both hear the host.
        let State::Device { keys: Ok(keys), .. } = &p.device.state else { panic!() };
        let setup = ChannelSetup::Device {
            local_static: keys.local_static.clone(),
            host: p.host_key,
            host_static: keys.remote_static,
        };
        let mut second = Channels::new(keys.device, setup, None, 6).unwrap();
        let hello = second.connected(20);
        let Event::Send(_, hello) = &hello[0] else { panic!() };
        let answer = p.host.receive(20, p.device_key, hello);
        let Event::Send(_, answer) = &answer[0] else { panic!() };
        assert_eq!(p.host.seal(&to_device, b"x").len(), 1, "not before it is confirmed");
        let got = second.receive(20, p.host_key, answer);
        let [Event::Send(_, confirmation), Event::Opened(_)] = &got[..] else { panic!("{got:?}") };
        assert_eq!(p.host.receive(20, p.device_key, confirmation), [Event::Opened(to_device)]);
        let frames = p.host.seal(&to_device, b"to both");
        assert_eq!(frames.len(), 2);
        let from_host =
            |c: &mut Channels| frames.iter().flat_map(|f| c.receive(30, p.host_key, f)).count();
        assert_eq!(from_host(&mut p.device), 1);
        assert_eq!(from_host(&mut second), 1);
        // Gone offline: no channels until a device opens one again.
        p.host.offline(&p.device_key);
        assert!(!p.host.sendable(&to_device));
        assert!(p.host.hint(&to_device, 40).is_some());
        assert!(p.host.hint(&to_device, 41).is_none(), "at most one a second");
    }

    #[test]
    fn a_host_that_forgot_the_channel_says_so_and_the_device_opens_another() {
        let mut p = pair(5);
        let hello = p.device.connected(0);
        carry(&mut p, true, hello, 0);
        let route = (p.host_key, Lane::Paired);
        let frame = p.device.seal(&route, b"lost").remove(0);
        p.host.offline(&p.device_key);
        let notice = p.host.receive(5, p.device_key, &frame);
        assert!(matches!(&notice[..], [Event::Send(..)]));
        let rest = carry(&mut p, false, notice, 5);
        assert!(rest.contains(&Event::Opened(route)), "{rest:?}");
        assert!(p.host.sendable(&(p.device_key, Lane::Paired)));
    }

    #[test]
    fn tampered_frames_and_strangers_are_refused_and_revocation_closes() {
        let mut p = pair(5);
        let hello = p.device.connected(0);
        carry(&mut p, true, hello, 0);
        let route = (p.host_key, Lane::Paired);
        let mut frame = p.device.seal(&route, b"run cargo test").remove(0);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(matches!(&p.host.receive(1, p.device_key, &frame)[..], [Event::Refused(..)]));
        assert!(matches!(&p.host.receive(1, p.device_key, b"\x00junk")[..], [Event::Refused(..)]));
        // A hello from a key the host did not register with a channel key.
        let stranger = RelayKey::of(&protocol::SecretKey::from_seed(&[9; 32]).public_key());
        let Event::Send(_, hello) = &p.device.connected(2)[0] else { panic!() };
        assert!(matches!(&p.host.receive(2, stranger, hello)[..], [Event::Refused(..)]));
        // Revoked: its channels close with the registration that drops it.
        let host_key = p.host_key;
        carry(&mut p, true, vec![Event::Send(host_key, hello.clone())], 3);
        p.host.register(HashMap::new(), HashMap::new());
        assert!(!p.host.sendable(&(p.device_key, Lane::Paired)));
    }

    #[test]
    fn a_pairing_device_needs_an_open_offer_and_the_links_secret() {
        let host_id = protocol::SecretKey::from_seed(&[1; 32]).public_key();
        let device_id = protocol::SecretKey::from_seed(&[3; 32]).public_key();
        let (host_key, device_key) = (RelayKey::of(&host_id), RelayKey::of(&device_id));
        let secret = protocol::pairing::PairingSecret::from_bytes([4; 32]);
        let token = protocol::pairing::token(&secret);
        let psk = || Zeroizing::new(protocol::pairing::channel_psk(&secret));
        let (host_x, _) = channel::generate_static().unwrap();
        let mut host =
            Channels::new(host_id, ChannelSetup::Host { local_static: host_x }, None, 1).unwrap();
        let mut device = Channels::new(
            device_id,
            ChannelSetup::Pairing { psk: psk() },
            Some((host_key, token)),
            7,
        )
        .unwrap();
        let Event::Send(_, hello) = &device.connected(0)[0] else { panic!() };
        assert!(
            matches!(&host.receive(0, device_key, hello)[..], [Event::Refused(..)]),
            "no offer"
        );
        host.register(HashMap::new(), HashMap::from([(token, psk())]));
        let got = host.receive(0, device_key, hello);
        let [Event::Send(_, answer)] = &got[..] else { panic!("{got:?}") };
        let got = device.receive(0, host_key, answer);
        let [Event::Send(_, confirmation), Event::Opened(route)] = &got[..] else { panic!() };
        assert_eq!(*route, (host_key, Lane::Pairing));
        assert_eq!(
            host.receive(0, device_key, confirmation),
            [Event::Opened((device_key, Lane::Pairing))]
        );
        assert!(!host.sendable(&(device_key, Lane::Paired)), "the pairing lane only");
        assert!(host.sendable(&(device_key, Lane::Pairing)));
        let frame = device.seal(&(host_key, Lane::Pairing), b"hello").remove(0);
        assert_eq!(
            host.receive(1, device_key, &frame),
            [Event::Payload((device_key, Lane::Pairing), b"hello".to_vec())]
        );
    }

    #[test]
    fn a_replayed_hello_or_a_forged_answer_breaks_no_channel() {
        let mut p = pair(5);
        let (route, to_device) = ((p.host_key, Lane::Paired), (p.device_key, Lane::Paired));
        let first = p.device.connected(0);
        let Event::Send(_, first_hello) = &first[0] else { panic!() };
        let first_hello = first_hello.clone();
        carry(&mut p, true, first, 0);
        // The current hello again: ignored.
        assert!(p.host.receive(1, p.device_key, &first_hello).is_empty());
        // The device connects again; later the relay replays its first hello: answered, but
        // that channel is never confirmed, and the one in use stays.
        let second = p.device.connected(10);
        carry(&mut p, true, second, 10);
        assert!(matches!(&p.host.receive(20, p.device_key, &first_hello)[..], [Event::Send(..)]));
        let frames = p.host.seal(&to_device, b"still");
        assert_eq!(frames.len(), 1);
        assert_eq!(
            p.device.receive(21, p.host_key, &frames[0]),
            [Event::Payload(route, b"still".to_vec())]
        );
        // A forged answer leaves the handshake waiting for the real one.
        let next = p.device.connected(30);
        let Event::Send(_, hello) = &next[0] else { panic!() };
        let Frame::Hello { id, .. } = Frame::decode(hello).unwrap() else { panic!() };
        let forged = Frame::Answer { id, message: &[0x24; 48] }.encode();
        assert!(matches!(&p.device.receive(31, p.host_key, &forged)[..], [Event::Refused(..)]));
        let rest = carry(&mut p, true, next, 32);
        assert!(rest.contains(&Event::Opened(to_device)), "{rest:?}");
    }

    #[test]
    fn a_lost_confirmation_is_sent_again_when_the_host_seals_in_the_old_channel() {
        let mut p = pair(5);
        let (route, to_device) = ((p.host_key, Lane::Paired), (p.device_key, Lane::Paired));
        let first = p.device.connected(0);
        carry(&mut p, true, first, 0);
        // A new connection: hello and answer pass, the confirmation is lost.
        let Event::Send(_, hello) = &p.device.connected(10)[0] else { panic!() };
        let Event::Send(_, answer) = &p.host.receive(10, p.device_key, hello)[0] else { panic!() };
        let got = p.device.receive(11, p.host_key, answer);
        assert!(matches!(&got[..], [Event::Send(..), Event::Opened(_)]), "{got:?}");
        // The host still seals in the old channel: the device takes it and confirms again.
        let old = p.host.seal(&to_device, b"in the old one");
        assert_eq!(old.len(), 1);
        let got = p.device.receive(2_000, p.host_key, &old[0]);
        let [Event::Payload(_, payload), Event::Send(_, again)] = &got[..] else {
            panic!("{got:?}")
        };
        assert_eq!(payload, b"in the old one");
        assert_eq!(p.host.receive(2_001, p.device_key, again), [Event::Opened(to_device)]);
        let new = p.host.seal(&to_device, b"in the new one");
        assert_eq!(new.len(), 1, "the old channel of the same process is gone");
        assert_eq!(
            p.device.receive(2_002, p.host_key, &new[0]),
            [Event::Payload(route, b"in the new one".to_vec())]
        );
    }

    #[test]
    fn an_unanswered_hello_is_sent_again_later_each_time() {
        let mut p = pair(5);
        let first = p.device.connected(0);
        assert!(p.device.tick(HANDSHAKE_RETRY_MS - 1).is_empty());
        let again = p.device.tick(HANDSHAKE_RETRY_MS);
        assert_eq!(again.len(), 1);
        assert_ne!(first, again, "a new channel id and ephemeral key");
        // Twice as long before the next, up to the most.
        assert!(p.device.tick(HANDSHAKE_RETRY_MS * 3 - 1).is_empty());
        assert_eq!(p.device.tick(HANDSHAKE_RETRY_MS * 3).len(), 1);
        // The first answer, late, opens nothing.
        let Event::Send(_, hello) = &first[0] else { panic!() };
        let answer = p.host.receive(1, p.device_key, hello);
        let Event::Send(_, answer) = &answer[0] else { panic!() };
        assert!(p.device.receive(2, p.host_key, answer).is_empty());
    }
}
