//! A link to the relay that stays up: reconnects with jittered exponential backoff,
//! authenticates again, re-registers a host's devices, and resumes end to end
//! ([`crate::resume`]) so every message is delivered exactly once across drops and relay
//! restarts; every resume payload travels in the end-to-end channel ([`crate::channels`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::relay::{FromRelay, Side, ToRelay};
use protocol::{PairingToken, RelayKey, SecretKey};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

use crate::channels::{ChannelSetup, Channels, Event, Lane, Route, SetupError};
use crate::resume::{Incoming, Join, Peer};
use crate::{Duplex, LocalConnector, authenticate, connect};

/// How the client connects.
pub struct ClientConfig {
    /// `host:port` of the relay, or of several nodes of one, comma-separated: the client
    /// connects to the first, and moves to the next whenever one cannot be reached (a node that
    /// died), round and round, waiting between rounds ([`ClientConfig::backoff_min`]).
    pub addr: String,
    /// The name the relay's certificate is presented for (SNI). With several addresses, each
    /// named by a host name is reached under that name, one named by an IP address under this.
    pub server_name: String,
    /// TLS trust ([`crate::pinned_config`] for a self-signed relay).
    pub tls: Arc<rustls::ClientConfig>,
    /// This side's key.
    pub secret: SecretKey,
    /// Host or device.
    pub side: Side,
    /// For a host: the devices that may reach it, with their channels' static keys,
    /// registered on every connection.
    pub devices: Vec<(RelayKey, [u8; 32])>,
    /// For a host: its open pairing offers, registered with the devices: each one's token, and
    /// the pre-shared key of its pairing channel while a new device may still open one.
    pub offers: Vec<(PairingToken, Option<Zeroizing<[u8; 32]>>)>,
    /// For a device that is pairing: the host's key and the offer's token, sent on every
    /// connection so the relay routes the handshake.
    pub knock: Option<(RelayKey, PairingToken)>,
    /// Unacknowledged messages are sent again after this long.
    pub rto: Duration,
    /// The first reconnection delay; doubled on each failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest reconnection delay.
    pub backoff_max: Duration,
    /// Data frames per second this client sends at most (messages, resends and
    /// acknowledgements). Also the burst. Within it, the client keeps to three quarters of what
    /// the relay says this connection may send ([`protocol::relay::FromRelay::Rate`]), and of
    /// a device's default rate ([`protocol::relay::FRAMES_PER_SEC`]) until the relay says (a
    /// relay that never says is paced as one that allows a device's rate).
    pub max_frames_per_sec: u32,
    /// For a host whose relay runs in its own process: connect through this instead of TLS
    /// to `addr` (the rest, authentication included, is the same).
    pub local: Option<LocalConnector>,
    /// What the end-to-end channels are made with.
    pub channel: ChannelSetup,
}

impl ClientConfig {
    /// Defaults: resend after 1 s, reconnect after 100 ms doubling up to 5 s, at most three
    /// quarters of the relay's default rate for the side (150 frames per second for a device,
    /// 750 for a host) and of what the relay says.
    pub fn new(
        addr: String,
        server_name: String,
        tls: Arc<rustls::ClientConfig>,
        secret: SecretKey,
        side: Side,
        channel: ChannelSetup,
    ) -> Self {
        Self {
            addr,
            server_name,
            tls,
            secret,
            side,
            devices: Vec::new(),
            offers: Vec::new(),
            knock: None,
            rto: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_frames_per_sec: match side {
                Side::Host => protocol::relay::HOST_FRAMES_PER_SEC * 3 / 4,
                Side::Device => protocol::relay::FRAMES_PER_SEC * 3 / 4,
            },
            local: None,
            channel,
        }
    }
}

enum Command {
    /// A message, and how many of its bytes count against [`MAX_QUEUED_BYTES`].
    Send(Route, Vec<u8>, usize),
    Register(Registration),
    DropConnection,
}

/// What the client hands to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message from a peer, exactly once and in order.
    Message {
        /// The peer's key (authenticated by the relay only: check the envelope).
        from: RelayKey,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A registered device came online or went away (hosts only).
    Presence {
        /// The device's key.
        device: RelayKey,
        /// Online now?
        online: bool,
    },
    /// A frame could not be delivered (at most one notice a second per connection).
    Undeliverable {
        /// To whom.
        peer: RelayKey,
        /// True: allowed but not connected. False: the relay has no route (not registered by
        /// that host, or no longer).
        offline: bool,
    },
    /// The relay refused a control message (a registration, a knock), with its reason.
    Refused(String),
    /// The end-to-end channel refused a frame from this peer (tampered, replayed, a handshake
    /// with other keys, from a key that may not open one), with the reason.
    ChannelRefused {
        /// Whom the relay said it came from.
        peer: RelayKey,
        /// Why.
        reason: String,
    },
    /// A connection was made and authenticated (and, for a host, its registration sent).
    Connected,
}

/// The client was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relay client has stopped")]
pub struct Stopped;

/// The most messages and notices waiting for [`Client::next`]: past this the client reads
/// nothing more from the relay until the caller takes one, and the relay's own limits apply to
/// what waits there (what it drops, the resume layer sends again).
pub const MAX_INBOX: usize = 64;

/// The most bytes of messages [`Client::send`] queues for the link's task: past this a
/// message is refused ([`SendError::Full`]) until the task has taken what waits. The task
/// takes messages into each peer's bounded backlog ([`protocol::resume::Peer::push`]) whenever
/// it is not busy otherwise: connecting and authenticating, writing to a slow connection, or
/// waiting for the caller to take what arrived ([`MAX_INBOX`]). Registrations, other commands
/// and [`Client::send_pairing`] are not counted: they are few, and keep their order with the
/// messages.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Why [`Client::send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The client was closed.
    #[error("the relay client has stopped")]
    Stopped,
    /// [`MAX_QUEUED_BYTES`] wait already.
    #[error("the relay client's queue is full")]
    Full,
}

/// What a host registers: the devices (with their channels' static keys) and the open offers
/// (with their pairing channels' pre-shared keys, while they take new devices).
pub type Registration =
    (Vec<(RelayKey, [u8; 32])>, Vec<(PairingToken, Option<Zeroizing<[u8; 32]>>)>);

/// A self-healing link. Dropping it stops it.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    /// The lane [`Client::send`] uses.
    lane: Lane,
    /// Bytes of messages in `commands` (see [`MAX_QUEUED_BYTES`]).
    queued: Arc<AtomicUsize>,
    inbox: mpsc::Receiver<Inbound>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts connecting in the background. Fails if the channel's keys are not usable.
    pub fn start(config: ClientConfig) -> Result<Self, SetupError> {
        let epoch = incarnation();
        let setup = config.channel.clone();
        let channels = Channels::new(config.secret.public_key(), setup, config.knock, epoch)?;
        let lane = channels.lane();
        let (commands, rx) = mpsc::unbounded_channel();
        let (tx, inbox) = mpsc::channel(MAX_INBOX);
        let queued = Arc::new(AtomicUsize::new(0));
        let commands_rx = Commands { rx, queued: queued.clone() };
        let task = tokio::spawn(drive(config, channels, epoch, commands_rx, tx));
        Ok(Self { commands, lane, queued, inbox, task })
    }

    /// Queues a message for `peer`; it is delivered exactly once, whenever the link allows,
    /// unless the peer's backlog is full when the link's task takes it (then it is dropped, as
    /// if never acknowledged) or [`MAX_QUEUED_BYTES`] wait already.
    pub fn send(&self, peer: RelayKey, message: Vec<u8>) -> Result<(), SendError> {
        let size = message.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return Err(SendError::Full);
        }
        self.commands.send(Command::Send((peer, self.lane), message, size)).map_err(|_| {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            SendError::Stopped
        })
    }

    /// For a host: a message to a device that is pairing, on the pairing channel it opened
    /// ([`Lane::Pairing`]). Never refused for a full queue: few, and not to be lost to someone
    /// else's flood.
    pub fn send_pairing(&self, peer: RelayKey, message: Vec<u8>) -> Result<(), SendError> {
        let command = Command::Send((peer, Lane::Pairing), message, 0);
        self.commands.send(command).map_err(|_| SendError::Stopped)
    }

    /// The next message from a peer, in order (other notices are skipped).
    pub async fn recv(&mut self) -> Option<(RelayKey, Vec<u8>)> {
        loop {
            if let Inbound::Message { from, bytes } = self.inbox.recv().await? {
                return Some((from, bytes));
            }
        }
    }

    /// The next message or notice.
    pub async fn next(&mut self) -> Option<Inbound> {
        self.inbox.recv().await
    }

    /// For a host: replaces the registered devices and open pairing offers, at once on the
    /// current connection and on every later one. A device no longer registered loses its
    /// channels.
    pub fn register(&self, registration: Registration) -> Result<(), Stopped> {
        self.commands.send(Command::Register(registration)).map_err(|_| Stopped)
    }

    /// Drops the current connection (as a network change would); the client reconnects.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::DropConnection);
    }
}

fn jittered(config: &ClientConfig, attempt: u32) -> Duration {
    let base = config.backoff_min.saturating_mul(1 << attempt.min(16)).min(config.backoff_max);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    // Between half and all of the delay, so that clients cut off together do not return together.
    let fraction = 0.5 + f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) / 2.0;
    base.mul_f64(fraction)
}

/// A token bucket: how many frames may go now.
struct Pace {
    tokens: f64,
    rate: f64,
    /// Which peer goes first, moved on at each flush.
    turn: usize,
    /// The configured most ([`ClientConfig::max_frames_per_sec`]).
    most: f64,
    last: Instant,
}

impl Pace {
    /// Paced for a relay that allows a device's rate, within `most`.
    fn new(most: u32) -> Self {
        let most = f64::from(most.max(1));
        let rate = pace_for(protocol::relay::FRAMES_PER_SEC).min(most);
        Self { tokens: rate, rate, turn: 0, most, last: Instant::now() }
    }

    /// The relay said this connection may send `frames_per_sec`, `burst` at once.
    fn allowed(&mut self, frames_per_sec: u32, burst: u32) {
        self.rate = pace_for(frames_per_sec.min(burst)).min(self.most).max(1.0);
        self.tokens = self.tokens.min(self.rate);
    }

    fn available(&mut self) -> usize {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens as usize
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// Three quarters of a relay's rate: room for resends and the clock's jitter.
fn pace_for(frames_per_sec: u32) -> f64 {
    f64::from(frames_per_sec) * 0.75
}

/// Sends acknowledgements and whatever is due on the routes with a channel, sealed, within the
/// pace (a host asks a device with payloads due and no channel to open one). False: the link
/// failed.
async fn flush(
    link: &mut Box<dyn Duplex>,
    peers: &mut HashMap<Route, Peer>,
    channels: &mut Channels,
    pace: &mut Pace,
    now_ms: u64,
    rto_ms: u64,
) -> bool {
    let budget = pace.available();
    pace.turn = pace.turn.wrapping_add(1);
    let due = due_fairly(peers, budget, pace.turn, now_ms, rto_ms, |r| channels.sendable(r));
    let mut sent = 0;
    for (route, payload) in due {
        for frame in channels.seal(&route, &payload) {
            sent += 1;
            if !send_data(link, &route.0, &frame).await {
                return false;
            }
        }
    }
    pace.spend(sent);
    let waiting: Vec<Route> = peers
        .iter()
        .filter(|(route, peer)| peer.unacked() > 0 && !channels.sendable(route))
        .map(|(route, _)| *route)
        .collect();
    for route in waiting {
        if let Some(hint) = channels.hint(&route, now_ms)
            && !send_data(link, &route.0, &hint).await
        {
            return false;
        }
    }
    true
}

async fn send_data(link: &mut Box<dyn Duplex>, peer: &RelayKey, payload: &[u8]) -> bool {
    let frame = protocol::relay::data_frame(protocol::relay::FrameKind::To, peer, payload);
    link.send(Message::binary(frame)).await.is_ok()
}

/// What carrying out the channels' events came to.
enum Flow {
    Ok,
    /// The link failed: connect again.
    LinkFailed,
    /// The caller dropped the client.
    Stopped,
}

/// Carries out what the channels asked: payloads into their resume streams (and what they
/// deliver to the caller), frames to the relay, resends on a new channel, refusals to the
/// caller.
async fn carry_out(
    events: Vec<Event>,
    link: &mut Box<dyn Duplex>,
    (peers, channels): (&mut HashMap<Route, Peer>, &Channels),
    (epoch, join): (u64, Join),
    inbox: &mpsc::Sender<Inbound>,
) -> Flow {
    for event in events {
        match event {
            Event::Payload(route, payload) => {
                let state = peers.entry(route).or_insert_with(|| Peer::new(epoch, join));
                let Incoming::Deliver(bytes) = state.receive(&payload) else { continue };
                let inbound = if channels.accepts(&route, &bytes) {
                    Inbound::Message { from: route.0, bytes }
                } else {
                    let reason = "a message other than a pairing one on a pairing channel".into();
                    Inbound::ChannelRefused { peer: route.0, reason }
                };
                if inbox.send(inbound).await.is_err() {
                    return Flow::Stopped;
                }
            }
            Event::Send(peer, frame) => {
                if !send_data(link, &peer, &frame).await {
                    return Flow::LinkFailed;
                }
            }
            Event::Opened(route) => {
                peers.entry(route).or_insert_with(|| Peer::new(epoch, join)).reconnected();
            }
            Event::Refused(peer, reason) => {
                if inbox.send(Inbound::ChannelRefused { peer, reason }).await.is_err() {
                    return Flow::Stopped;
                }
            }
        }
    }
    Flow::Ok
}

/// Up to `budget` frames that are due, taken fairly: first each peer's acknowledgements, then
/// an equal share of what is left for each peer, and what a peer did not need for those that
/// have more, so that one peer's backlog (a device that asks for much) does not hold up what
/// the others are owed. The peers take turns by `turn` (which goes first), so that a budget
/// smaller than the number of peers (a busy link) goes to each in turn.
fn due_fairly<K: Copy + Ord + std::hash::Hash>(
    peers: &mut HashMap<K, Peer>,
    budget: usize,
    turn: usize,
    now_ms: u64,
    rto_ms: u64,
    sendable: impl Fn(&K) -> bool,
) -> Vec<(K, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut wanting: Vec<(K, &mut Peer)> =
        peers.iter_mut().filter(|(k, _)| sendable(k)).map(|(k, v)| (*k, v)).collect();
    wanting.sort_unstable_by_key(|(key, _)| *key);
    if !wanting.is_empty() {
        let first = turn % wanting.len();
        wanting.rotate_left(first);
    }
    for (peer, state) in &mut wanting {
        if frames.len() >= budget {
            return frames;
        }
        frames.extend(state.poll_acks().into_iter().map(|ack| (*peer, ack)));
    }
    while frames.len() < budget && !wanting.is_empty() {
        let share = (budget - frames.len()).div_ceil(wanting.len());
        wanting.retain_mut(|(peer, state)| {
            let room = share.min(budget - frames.len());
            let due = state.poll_send(now_ms, rto_ms, room);
            // A peer that took its whole share may have more.
            let more = room > 0 && due.len() == room;
            frames.extend(due.into_iter().map(|payload| (*peer, payload)));
            more
        });
    }
    frames
}

/// This incarnation's resume epoch: nanoseconds since the Unix epoch, so it grows across
/// restarts (see [`crate::resume`]).
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

async fn send_control(link: &mut Box<dyn Duplex>, message: &ToRelay) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => link.send(Message::text(text)).await.is_ok(),
        Err(_) => false,
    }
}

fn hex_key(s: &str) -> Option<RelayKey> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(s, &mut key).ok().map(|()| RelayKey(key))
}

/// The link task's end of [`Client`]'s commands, which gives back the count of what it takes.
struct Commands {
    rx: mpsc::UnboundedReceiver<Command>,
    queued: Arc<AtomicUsize>,
}

impl Commands {
    async fn recv(&mut self) -> Option<Command> {
        let command = self.rx.recv().await;
        if let Some(Command::Send(_, _, counted)) = &command {
            self.queued.fetch_sub(*counted, Ordering::Relaxed);
        }
        command
    }
}

async fn drive(
    mut config: ClientConfig,
    mut channels: Channels,
    epoch: u64,
    mut commands: Commands,
    inbox: mpsc::Sender<Inbound>,
) {
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    // A device joins the host's stream where it connects; a host catches up on what a device
    // sent while it was away (see crate::resume).
    let join = if config.side == Side::Host { Join::AtBase } else { Join::AtFirstFrame };
    let rto_ms = config.rto.as_millis() as u64;
    let mut peers: HashMap<Route, Peer> = HashMap::new();
    register_channels(&mut channels, &config);
    let mut pace;
    let mut attempt = 0u32;
    // The relay's nodes, in turn (one address: that one).
    let addresses: Vec<String> =
        protocol::link::relay_addresses(&config.addr).map(String::from).collect();
    let mut turn = 0usize;
    let mut counter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // When the last link was welcomed: one that ended soon after counts as a failure of its
    // node (the next is tried, after the backoff), so a node that welcomes and drops is no loop.
    let mut last_up: Option<Instant> = None;
    loop {
        if let Some(up) = last_up.take() {
            if up.elapsed() >= SETTLED {
                last_up = Some(Instant::now());
            } else {
                turn += 1;
                if !wait(
                    &mut config,
                    &mut channels,
                    attempt,
                    (epoch, join),
                    &mut commands,
                    &mut peers,
                )
                .await
                {
                    return;
                }
                attempt += 1;
            }
        }
        let opened = match &config.local {
            Some(local) => Ok(local()),
            None => {
                let (addr, name) = node(&addresses, turn, &config);
                match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    connect(&addr, &name, config.tls.clone()),
                )
                .await
                {
                    Ok(connected) => {
                        connected.map(|(link, cert)| (Box::new(link) as Box<dyn Duplex>, cert))
                    }
                    Err(_) => Err(crate::LinkError::Protocol(format!("{addr}: no answer in time"))),
                }
            }
        };
        let connected = match opened {
            Ok((mut link, cert)) => tokio::time::timeout(
                CONNECT_TIMEOUT,
                authenticate(&mut *link, &config.secret, config.side, &cert),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|()| link),
            Err(_) => None,
        };
        let Some(mut link) = connected else {
            // The next node at once; a wait only once every node failed in this round.
            turn += 1;
            if addresses.len() > 1 && !turn.is_multiple_of(addresses.len()) {
                continue;
            }
            if !wait(&mut config, &mut channels, attempt, (epoch, join), &mut commands, &mut peers)
                .await
            {
                return;
            }
            attempt += 1;
            continue;
        };
        attempt = 0;
        // Paced as for a device until this relay says what this connection may send.
        pace = Pace::new(config.max_frames_per_sec);
        if config.side == Side::Host {
            counter += 1;
            if !send_control(&mut link, &registration(&config, counter)).await {
                continue;
            }
        }
        if let Some((host, token)) = &config.knock {
            let knock = ToRelay::Knock { host: host.to_string(), token: token.to_string() };
            if !send_control(&mut link, &knock).await {
                continue;
            }
        }
        if inbox.send(Inbound::Connected).await.is_err() {
            return;
        }
        // Everything not yet acknowledged is due again on a new connection (a device's, once
        // its new channel is open).
        for state in peers.values_mut() {
            state.reconnected();
        }
        let hello = channels.connected(now_ms());
        match carry_out(hello, &mut link, (&mut peers, &channels), (epoch, join), &inbox).await {
            Flow::Ok => {}
            Flow::LinkFailed => continue,
            Flow::Stopped => return,
        }
        if !flush(&mut link, &mut peers, &mut channels, &mut pace, now_ms(), rto_ms).await {
            continue;
        }
        let mut tick = tokio::time::interval((config.rto / 4).max(Duration::from_millis(10)));
        // A relay pings every connection; one silent for long is gone (a node lost without a
        // word: power, network), and the next is tried.
        let mut heard = Instant::now();
        loop {
            let events = tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::DropConnection) => break,
                    Some(Command::Register((devices, offers))) => {
                        (config.devices, config.offers) = (devices, offers);
                        register_channels(&mut channels, &config);
                        counter += 1;
                        if !send_control(&mut link, &registration(&config, counter)).await {
                            break;
                        }
                        continue;
                    }
                    Some(Command::Send(route, message, _)) => {
                        // A full backlog drops the message; the caller sees it as never acknowledged.
                        let _ = peers.entry(route).or_insert_with(|| Peer::new(epoch, join)).push(&message);
                        (Vec::new(), true)
                    }
                },
                incoming = link.next() => { heard = Instant::now(); match incoming {
                    Some(Ok(Message::Binary(frame))) => {
                        let Ok((_, from, payload)) = protocol::relay::split_frame(&frame) else { continue };
                        // Acknowledgements wait for the next flush (a message sent, a tick), as
                        // before the channel; a channel that opened flushes at once.
                        let events = channels.receive(now_ms(), from, payload);
                        let opened = events.iter().any(|e| matches!(e, Event::Opened(_)));
                        (events, opened)
                    }
                    Some(Ok(Message::Text(text))) => {
                        let notice = match serde_json::from_str(&text) {
                            Ok(FromRelay::Presence { device, online }) => {
                                let Some(device) = hex_key(&device) else { continue };
                                if online {
                                    // A device coming back online gets what it missed at once
                                    // (once it has a channel again).
                                    for (route, state) in &mut peers {
                                        if route.0 == device {
                                            state.reconnected();
                                        }
                                    }
                                } else {
                                    channels.offline(&device);
                                }
                                Inbound::Presence { device, online }
                            }
                            Ok(FromRelay::HostPresence { host, online: true }) => {
                                let Some(host) = hex_key(&host) else { continue };
                                let hello = channels.host_online(&host, now_ms());
                                match carry_out(hello, &mut link, (&mut peers, &channels), (epoch, join), &inbox).await {
                                    Flow::Ok => continue,
                                    Flow::LinkFailed => break,
                                    Flow::Stopped => return,
                                }
                            }
                            Ok(FromRelay::Undeliverable { peer, offline }) => {
                                let Some(peer) = hex_key(&peer) else { continue };
                                Inbound::Undeliverable { peer, offline }
                            }
                            Ok(FromRelay::Refused { reason }) => Inbound::Refused(reason),
                            Ok(FromRelay::Rate { frames_per_sec, burst }) => {
                                pace.allowed(frames_per_sec, burst);
                                continue;
                            }
                            _ => continue,
                        };
                        if inbox.send(notice).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    // Over TLS the WebSocket layer has answered already (one more pong is
                    // allowed); a connection in the relay's process has no such layer.
                    Some(Ok(Message::Ping(payload))) => {
                        if link.send(Message::Pong(payload)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                }},
                _ = tick.tick() => {
                    if heard.elapsed() > SILENCE {
                        break;
                    }
                    // A pairing device's stream goes with the last of its channels, once
                    // nothing in it waits (a pairing answer waits for a channel again).
                    peers.retain(|route, peer| {
                        route.1 == Lane::Paired || channels.has_route(route) || peer.unacked() > 0
                    });
                    (channels.tick(now_ms()), true)
                }
            };
            let (events, flush_now) = events;
            match carry_out(events, &mut link, (&mut peers, &channels), (epoch, join), &inbox).await
            {
                Flow::Ok => {}
                Flow::LinkFailed => break,
                Flow::Stopped => return,
            }
            if flush_now
                && !flush(&mut link, &mut peers, &mut channels, &mut pace, now_ms(), rto_ms).await
            {
                break;
            }
        }
        let _ = link.close().await;
    }
}

/// How long a connection to a relay may take to open (and be welcomed) before the next node is
/// tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a link lives before its node counts as good again (backoff starts afresh).
const SETTLED: Duration = Duration::from_secs(2);
/// How long a relay may say nothing (it pings every 25 s by default) before its link is taken
/// for dead.
const SILENCE: Duration = Duration::from_secs(90);

/// The address to try at `turn`, and the name its certificate is checked for.
fn node(addresses: &[String], turn: usize, config: &ClientConfig) -> (String, String) {
    if addresses.len() <= 1 {
        return (config.addr.clone(), config.server_name.clone());
    }
    let addr = addresses[turn % addresses.len()].clone();
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = if host.parse::<std::net::IpAddr>().is_ok() {
        config.server_name.clone()
    } else {
        host.to_string()
    };
    (addr, name)
}

/// A host's registration at the relay: its devices' keys and its offers' tokens.
fn registration(config: &ClientConfig, counter: u64) -> ToRelay {
    let devices: Vec<RelayKey> = config.devices.iter().map(|(key, _)| *key).collect();
    let offers: Vec<PairingToken> = config.offers.iter().map(|(token, _)| *token).collect();
    protocol::relay::register(&config.secret, counter, &devices, &offers)
}

/// Tells a host's channels which devices and offers may open one.
fn register_channels(channels: &mut Channels, config: &ClientConfig) {
    let devices = config.devices.iter().copied().collect();
    let offers =
        config.offers.iter().filter_map(|(token, psk)| Some((*token, psk.clone()?))).collect();
    channels.register(devices, offers);
}

/// Waits out a backoff delay while still taking messages to send later. False: stopped.
async fn wait(
    config: &mut ClientConfig,
    channels: &mut Channels,
    attempt: u32,
    (epoch, join): (u64, Join),
    commands: &mut Commands,
    peers: &mut HashMap<Route, Peer>,
) -> bool {
    let sleep = tokio::time::sleep(jittered(config, attempt));
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            command = commands.recv() => match command {
                None => return false,
                Some(Command::DropConnection) => {}
                Some(Command::Register((devices, offers))) => {
                    (config.devices, config.offers) = (devices, offers);
                    register_channels(channels, config);
                }
                Some(Command::Send(route, message, _)) => {
                    let _ = peers.entry(route).or_insert_with(|| Peer::new(epoch, join)).push(&message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers_with(backlogs: &[(u8, usize)]) -> HashMap<RelayKey, Peer> {
        backlogs
            .iter()
            .map(|&(key, n)| {
                let mut peer = Peer::new(1, Join::AtBase);
                for i in 0..n {
                    peer.push(&[key, i as u8]).unwrap();
                }
                (RelayKey([key; 32]), peer)
            })
            .collect()
    }

    fn sent_to(frames: &[(RelayKey, Vec<u8>)], key: u8) -> usize {
        frames.iter().filter(|(peer, _)| *peer == RelayKey([key; 32])).count()
    }

    #[test]
    fn one_peers_backlog_does_not_hold_up_the_others() {
        let mut peers = peers_with(&[(1, 500), (2, 1), (3, 2)]);
        let frames = due_fairly(&mut peers, 10, 0, 0, 1_000, |_| true);
        assert_eq!(frames.len(), 10);
        assert_eq!((sent_to(&frames, 2), sent_to(&frames, 3)), (1, 2));
        // What the others did not need goes to the one with more.
        assert_eq!(sent_to(&frames, 1), 7);
        // Nothing more is due until the round trip passes; then resends, within the budget.
        assert!(due_fairly(&mut peers, 10, 0, 10, 1_000, |_| true).len() == 10);
        assert_eq!(due_fairly(&mut peers, 1_000, 0, 20, 1_000, |_| true).len(), 500 + 3 - 20);
        assert!(due_fairly(&mut peers, 1_000, 0, 30, 1_000, |_| true).is_empty());
        assert_eq!(due_fairly(&mut peers, 5, 0, 2_000, 1_000, |_| true).len(), 5);
    }

    #[test]
    fn a_budget_smaller_than_the_peers_goes_to_each_in_turn() {
        let mut peers = peers_with(&[(1, 3), (2, 3), (3, 3), (4, 3)]);
        assert_eq!(due_fairly(&mut peers, 0, 0, 0, 1_000, |_| true).len(), 0);
        // One frame a flush (a busy link): the four peers are served one after another.
        let mut served = Vec::new();
        for turn in 0..4 {
            let frames = due_fairly(&mut peers, 1, turn, 0, 1_000, |_| true);
            assert_eq!(frames.len(), 1);
            served.push(frames[0].0.0[0]);
        }
        served.sort_unstable();
        assert_eq!(served, [1, 2, 3, 4]);
        assert_eq!(due_fairly(&mut peers, 2, 4, 0, 1_000, |_| true).len(), 2);
        assert_eq!(due_fairly(&mut peers, 100, 5, 0, 1_000, |_| true).len(), 6);
    }

    #[test]
    fn the_pace_keeps_to_what_the_relay_allows() {
        // Before the relay says: a device's rate, whatever the configured most.
        let mut pace = Pace::new(750);
        assert_eq!(pace.rate, 150.0);
        pace.allowed(600, 1_200);
        assert_eq!(pace.rate, 450.0);
        pace.allowed(10_000, 20_000);
        assert_eq!(pace.rate, 750.0);
        // Never more at once than the relay's burst.
        pace.allowed(600, 100);
        assert_eq!(pace.rate, 75.0);
        pace.allowed(0, 0);
        assert_eq!(pace.rate, 1.0);
        assert!(Pace::new(100).rate <= 100.0);
    }

    /// `send` refuses past `MAX_QUEUED_BYTES` until the link's task has taken what waits (on a
    /// runtime of one thread, the task runs only when the test waits).
    #[tokio::test]
    async fn the_queue_to_the_links_task_is_bounded() {
        let peer = RelayKey(*SecretKey::from_seed(&[1; 32]).public_key().as_bytes());
        let config = ClientConfig::new(
            "127.0.0.1:9".into(),
            "localhost".into(),
            crate::pinned_config([0; 32]),
            SecretKey::from_seed(&[7; 32]),
            Side::Device,
            ChannelSetup::Device {
                local_static: Zeroizing::new([3; 32]),
                host: peer,
                host_static: [4; 32],
            },
        );
        let client = Client::start(config).unwrap();
        let message = vec![0; 64 << 10];
        for _ in 0..MAX_QUEUED_BYTES / message.len() {
            client.send(peer, message.clone()).unwrap();
        }
        assert_eq!(client.send(peer, vec![0]), Err(SendError::Full));
        // The task takes them all (into the peer's backlog, which drops what it has no room
        // for); the queue has room again.
        let drained = async {
            while client.queued.load(Ordering::Relaxed) > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), drained).await.unwrap();
        assert_eq!(client.send(peer, message), Ok(()));
    }
}
