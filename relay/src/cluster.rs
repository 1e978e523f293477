//! Relay nodes that share routing through NATS (`relay --cluster nats://ADDR`).
//!
//! Every node keeps its own hub (`crate::hub`) for the connections it holds, and shares the
//! rest through one `nats-server` (subjects under [`SUBJECT`]):
//!
//! - **Frames** for a key connected at another node go to the subject of that key,
//!   `agent-bridge.key.<key hex>`, which every node holding a connection of the key subscribes
//!   to (while it holds one). The frame has passed this node's checks (size, rate, shape, and
//!   the route: the pair registered by the host) and goes as received, its routing header
//!   naming the sender; the node that delivers it checks the route again against its own copy
//!   of the registrations and queues it under the same queue limit as a frame from a connection
//!   of its own (a connection too slow to read is cut off there, as here).
//! - **Registrations and knocks**: a host's signed device list, and a device's knock with a
//!   pairing offer, are published as the host and the device sent them; every node checks the
//!   host's signature itself before it takes one, so no node (and nothing that can publish on
//!   the subjects) can add a route the host did not sign. A node that joins (or comes back after
//!   NATS was away) says hello, and the others publish again the registrations of the hosts
//!   they hold.
//! - **Presence**: each node publishes which keys it holds, at once when that changes and in
//!   full every [`HEARTBEAT`]; a node not heard from for [`EXPIRY`] is taken for dead and its
//!   keys go offline (hosts and devices are told, as when a connection here ends).
//!
//! While NATS is away, frames for keys at other nodes are not sent (the sender is told the
//! peer is offline, as for any undelivered frame: fail closed), and the other nodes' keys go
//! offline once their presence expires. What was in flight is the resume layer's to deliver
//! again (end to end, exactly once). Without `--cluster`, none of this exists: a single relay
//! and `agent-host up` are as they were.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use protocol::relay::Side;
use protocol::{PairingToken, RelayKey};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::metrics::Metrics;
use crate::server::Inner;

/// The subjects' common prefix.
pub const SUBJECT: &str = "agent-bridge";
/// How often a node publishes every key it holds.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node is believed alive since it was last heard.
pub const EXPIRY: Duration = Duration::from_secs(3);
/// Bytes of frames for other nodes waiting to be published before more are refused (as
/// undeliverable).
pub const OUTBOX_BYTES: usize = 64 << 20;
/// Control messages waiting to be published (they go before frames).
const CONTROL_QUEUE: usize = 1024;

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {error}")]
    Connect {
        /// Where.
        url: String,
        /// What failed.
        error: async_nats::ConnectError,
    },
    /// The subjects could not be subscribed to.
    #[error("cannot subscribe at NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// NATS takes smaller messages than the relay's frames.
    #[error(
        "the NATS server takes messages up to {max_payload} bytes, less than the relay's largest \
         frame and its header ({needed} bytes): raise `max_payload` in its configuration"
    )]
    Payload {
        /// What the server takes.
        max_payload: usize,
        /// What a frame may need.
        needed: usize,
    },
}

/// What nodes tell each other on the control subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    /// A node is here (started, or back after NATS was away): the others publish their hosts'
    /// registrations and their keys again.
    Hello { node: String },
    /// Keys a node holds: all of them (`full`), or those that came and went.
    Presence {
        node: String,
        full: bool,
        online: Vec<(String, Side)>,
        #[serde(default)]
        offline: Vec<(String, Side)>,
    },
    /// A host's signed device list, as the host sent it.
    Register {
        node: String,
        host: String,
        counter: u64,
        devices: Vec<String>,
        offers: Vec<String>,
        signature: String,
    },
    /// A device knocked with a pairing offer.
    Knock { node: String, device: String, host: String, token: String },
}

impl Control {
    fn node(&self) -> &str {
        match self {
            Self::Hello { node }
            | Self::Presence { node, .. }
            | Self::Register { node, .. }
            | Self::Knock { node, .. } => node,
        }
    }
}

/// Another node, as this one knows it.
#[derive(Debug)]
struct Peer {
    last: Instant,
    keys: HashSet<(RelayKey, Side)>,
}

/// This node's part in the cluster.
pub(crate) struct Cluster {
    client: async_nats::Client,
    /// This node's id (random), which its frames carry so that it skips its own.
    id: [u8; 16],
    /// The same in hex, as the control messages name it.
    node: String,
    /// Frames for other nodes, to the publisher (bounded by [`OUTBOX_BYTES`]).
    out: mpsc::UnboundedSender<(String, Bytes)>,
    /// The bytes in `out`.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Control messages, to the publisher, which sends them first.
    control: mpsc::Sender<(String, Bytes)>,
    /// The keys with a connection here, and the task that takes their frames from NATS.
    held: tokio::sync::Mutex<HashMap<RelayKey, (Side, JoinHandle<()>)>>,
    /// The other nodes.
    peers: Mutex<HashMap<String, Peer>>,
    /// The last registration of each host held here, to publish again for nodes that join.
    registrations: Mutex<HashMap<RelayKey, Control>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key_subject(key: &RelayKey) -> String {
    format!("{SUBJECT}.key.{key}")
}

fn control_subject() -> String {
    format!("{SUBJECT}.control")
}

fn side_byte(side: Side) -> u8 {
    match side {
        Side::Host => 0,
        Side::Device => 1,
    }
}

impl Cluster {
    /// Joins the cluster at `url` for the relay `inner`: connects, subscribes to the control
    /// subject, says hello, and starts the heartbeat.
    pub(crate) async fn join(inner: &Arc<Inner>, url: &str) -> Result<Arc<Self>, ClusterError> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name("agent-bridge relay")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            })
            .connect(url)
            .await
            .map_err(|error| ClusterError::Connect { url: url.to_string(), error })?;
        // The first connection is made in the background: wait for it (a node that cannot
        // reach NATS at start says so and does not serve as a lone node).
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() > deadline {
                return Err(ClusterError::Connect {
                    url: url.to_string(),
                    error: async_nats::ConnectError::from(async_nats::ConnectErrorKind::TimedOut),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let needed = inner.config.limits.max_frame + 17;
        let max_payload = client.server_info().max_payload;
        if max_payload < needed {
            return Err(ClusterError::Payload { max_payload, needed });
        }
        let mut node_id = [0u8; 16];
        getrandom::fill(&mut node_id).expect("the system has randomness");
        let (out, mut outbox) = mpsc::unbounded_channel::<(String, Bytes)>();
        let (control_tx, mut controls) = mpsc::channel::<(String, Bytes)>(CONTROL_QUEUE);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cluster = Arc::new(Self {
            client: client.clone(),
            id: node_id,
            node: hex::encode(node_id),
            out,
            queued: queued.clone(),
            control: control_tx,
            held: tokio::sync::Mutex::default(),
            peers: Mutex::default(),
            registrations: Mutex::default(),
            tasks: Mutex::default(),
        });
        let mut control = client.subscribe(control_subject()).await?;
        let weak = Arc::downgrade(inner);
        let publisher = tokio::spawn(async move {
            loop {
                // Control first: a node whose presence waits behind frames looks dead.
                let (subject, payload, frame) = tokio::select! {
                    biased;
                    Some((subject, payload)) = controls.recv() => (subject, payload, false),
                    Some((subject, payload)) = outbox.recv() => (subject, payload, true),
                    else => return,
                };
                if frame {
                    queued.fetch_sub(payload.len(), Ordering::Relaxed);
                }
                if let Err(e) = client.publish(subject, payload).await {
                    if frame {
                        tracing::debug!("cluster: a frame not published: {e}");
                    } else {
                        tracing::warn!("cluster: a control message not published: {e}");
                    }
                }
            }
        });
        let listener = {
            let (cluster, weak) = (cluster.clone(), weak.clone());
            tokio::spawn(async move {
                while let Some(message) = control.next().await {
                    let Some(inner) = weak.upgrade() else { return };
                    match serde_json::from_slice::<Control>(&message.payload) {
                        Ok(c) if c.node() != cluster.node => cluster.take(&inner, c).await,
                        Ok(_) => {}
                        Err(e) => tracing::debug!("cluster: a control message dropped: {e}"),
                    }
                }
            })
        };
        let heartbeat = {
            let (cluster, weak) = (cluster.clone(), weak.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(HEARTBEAT);
                loop {
                    every.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    cluster.expire(&inner, Instant::now());
                    cluster.publish_keys().await;
                }
            })
        };
        let watcher = {
            let (cluster, weak) = (cluster.clone(), weak.clone());
            tokio::spawn(async move {
                // Connected after being away (the first connection is not a reconnect).
                let mut away = false;
                while let Some(event) = events.recv().await {
                    let Some(inner) = weak.upgrade() else { return };
                    match event {
                        async_nats::Event::Connected if away => {
                            away = false;
                            Metrics::inc(&inner.metrics.cluster_reconnects);
                            tracing::info!("cluster: connected to NATS again");
                            cluster.hello().await;
                        }
                        async_nats::Event::Connected => {}
                        async_nats::Event::Disconnected => {
                            away = true;
                            tracing::warn!(
                                "cluster: NATS is away; frames for other nodes fail until it is back"
                            );
                        }
                        other => tracing::debug!("cluster: {other}"),
                    }
                }
            })
        };
        lock(&cluster.tasks).extend([publisher, listener, heartbeat, watcher]);
        cluster.hello().await;
        tracing::info!(node = %cluster.node, %url, "joined the cluster");
        Ok(cluster)
    }

    /// Stops taking part (at shutdown): every task ends, the keys' subscriptions with them.
    pub(crate) async fn leave(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, (_, task)) in self.held.lock().await.drain() {
            task.abort();
        }
        // What was published goes out, unless NATS is away (then nothing waits for it).
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn publish_control(&self, control: &Control) {
        if let Ok(json) = serde_json::to_vec(control)
            && self.control.try_send((control_subject(), Bytes::from(json))).is_err()
        {
            tracing::warn!("cluster: too many control messages wait; one is dropped");
        }
    }

    /// Says hello, and everything a node that just joined needs: the keys here, and the
    /// registrations of the hosts here.
    async fn hello(&self) {
        self.publish_control(&Control::Hello { node: self.node.clone() });
        self.publish_keys().await;
        self.publish_registrations();
    }

    async fn publish_keys(&self) {
        // Queued under the lock: a change `follow` makes meanwhile goes after this snapshot,
        // never before it (where the snapshot would undo it).
        let held = self.held.lock().await;
        let online = held.iter().map(|(k, (s, _))| (k.to_string(), *s)).collect();
        self.publish_control(&Control::Presence {
            node: self.node.clone(),
            full: true,
            online,
            offline: Vec::new(),
        });
        drop(held);
    }

    fn publish_registrations(&self) {
        let registrations: Vec<Control> = lock(&self.registrations).values().cloned().collect();
        for registration in registrations {
            self.publish_control(&registration);
        }
    }

    /// Sends `frame` (as routed here: its header names the sender) to `to`'s connections at
    /// other nodes. False when it cannot go: NATS is away, or too much waits to be published.
    pub(crate) fn forward(&self, to: &RelayKey, side: Side, frame: &[u8]) -> bool {
        if !self.connected() {
            return false;
        }
        let size = 17 + frame.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > OUTBOX_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        let mut payload = Vec::with_capacity(size);
        payload.extend_from_slice(&self.id);
        payload.push(side_byte(side));
        payload.extend_from_slice(frame);
        if self.out.send((key_subject(to), Bytes::from(payload))).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A host here registered (checked, and newer than the last): the other nodes take it too.
    pub(crate) fn registered(
        &self,
        host: RelayKey,
        counter: u64,
        devices: &[String],
        offers: &[String],
        signature: &str,
    ) {
        let registration = Control::Register {
            node: self.node.clone(),
            host: host.to_string(),
            counter,
            devices: devices.to_vec(),
            offers: offers.to_vec(),
            signature: signature.to_string(),
        };
        self.publish_control(&registration);
        lock(&self.registrations).insert(host, registration);
    }

    /// A device here knocked with an open offer: the other nodes let it through too.
    pub(crate) fn knocked(&self, device: &RelayKey, host: &str, token: &str) {
        self.publish_control(&Control::Knock {
            node: self.node.clone(),
            device: device.to_string(),
            host: host.to_string(),
            token: token.to_string(),
        });
    }

    /// Follows the connections of `key` here: while there is one, frames for it come from NATS
    /// and the other nodes know it is here. Call after every change of its connections here;
    /// whatever the order of the calls, the last one leaves things as they are.
    pub(crate) async fn follow(self: &Arc<Self>, inner: &Arc<Inner>, key: RelayKey, side: Side) {
        let mut held = self.held.lock().await;
        let here = crate::server::connections_of(inner, &key) > 0;
        match (here, held.contains_key(&key)) {
            (true, false) => {
                let mut frames = match self.client.subscribe(key_subject(&key)).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("cluster: cannot take frames for {key}: {e}");
                        return;
                    }
                };
                let (cluster, weak) = (self.clone(), Arc::downgrade(inner));
                let task = tokio::spawn(async move {
                    while let Some(message) = frames.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        cluster.arrived(&inner, &key, message.payload);
                    }
                });
                held.insert(key, (side, task));
                self.publish_control(&Control::Presence {
                    node: self.node.clone(),
                    full: false,
                    online: vec![(key.to_string(), side)],
                    offline: Vec::new(),
                });
            }
            (false, true) => {
                if let Some((side, task)) = held.remove(&key) {
                    task.abort();
                    lock(&self.registrations).remove(&key);
                    self.publish_control(&Control::Presence {
                        node: self.node.clone(),
                        full: false,
                        online: Vec::new(),
                        offline: vec![(key.to_string(), side)],
                    });
                }
            }
            _ => {}
        }
    }

    /// A frame from another node for `to`, connected here.
    fn arrived(&self, inner: &Arc<Inner>, to: &RelayKey, payload: Bytes) {
        let metrics = &inner.metrics;
        if payload.len() < 17 || payload[..16] == self.id {
            return;
        }
        let side = if payload[16] == side_byte(Side::Host) { Side::Host } else { Side::Device };
        let frame = payload.slice(17..);
        // Checked again here: the shape and size of a frame, and (in the hub) the route.
        if frame.len() > inner.config.limits.max_frame {
            Metrics::inc(&metrics.drops);
            return;
        }
        let Ok((_, from, body)) = protocol::relay::split_frame(&frame) else {
            Metrics::inc(&metrics.drops);
            return;
        };
        let body_len = body.len();
        Metrics::inc(&metrics.cluster_frames_in);
        let delivered =
            crate::server::deliver_forwarded(inner, &from, to, side, Message::Binary(frame));
        if delivered == 0 {
            Metrics::inc(&metrics.drops);
        }
        metrics.frames_out.fetch_add(delivered as u64, Ordering::Relaxed);
        metrics.bytes_out.fetch_add((delivered * body_len) as u64, Ordering::Relaxed);
    }

    /// Takes what another node said.
    async fn take(&self, inner: &Arc<Inner>, control: Control) {
        let now = Instant::now();
        match control {
            Control::Hello { node } => {
                tracing::debug!(%node, "cluster: a node said hello");
                self.publish_keys().await;
                self.publish_registrations();
            }
            Control::Presence { node, full, online, offline } => {
                let parse = |list: Vec<(String, Side)>| -> HashSet<(RelayKey, Side)> {
                    list.into_iter()
                        .filter_map(|(k, s)| {
                            protocol::relay::hex32(&k, "key").ok().map(|k| (RelayKey(k), s))
                        })
                        .collect()
                };
                let (online, offline) = (parse(online), parse(offline));
                let mut changes = Vec::new();
                {
                    let mut peers = lock(&self.peers);
                    let peer = peers
                        .entry(node)
                        .or_insert_with(|| Peer { last: now, keys: HashSet::new() });
                    peer.last = now;
                    if full {
                        changes.extend(peer.keys.difference(&online).map(|k| (*k, false)));
                        changes.extend(online.difference(&peer.keys).map(|k| (*k, true)));
                        peer.keys = online;
                    } else {
                        for key in online {
                            if peer.keys.insert(key) {
                                changes.push((key, true));
                            }
                        }
                        for key in offline {
                            if peer.keys.remove(&key) {
                                changes.push((key, false));
                            }
                        }
                    }
                }
                crate::server::remote_presence(inner, &changes);
            }
            Control::Register { host, counter, devices, offers, signature, .. } => {
                let Ok(key) = protocol::relay::hex32(&host, "host") else { return };
                let Ok(public) = protocol::PublicKey::from_bytes(&key) else { return };
                // The host's own signature, checked here: no node adds a route it did not sign.
                match protocol::relay::check_register(
                    &public, counter, &devices, &offers, &signature,
                ) {
                    Ok(list) => crate::server::register(inner, RelayKey(key), counter, list),
                    Err(e) => tracing::warn!("cluster: a registration for {host} refused: {e}"),
                }
            }
            Control::Knock { device, host, token, .. } => {
                if let (Ok(device), Ok(host), Ok(token)) = (
                    protocol::relay::hex32(&device, "device"),
                    protocol::relay::hex32(&host, "host"),
                    protocol::relay::hex32(&token, "token"),
                ) {
                    crate::server::knock(
                        inner,
                        RelayKey(device),
                        &RelayKey(host),
                        &PairingToken(token),
                    );
                }
            }
        }
    }

    /// Other nodes not heard from for [`EXPIRY`] are gone: their keys go offline.
    fn expire(&self, inner: &Arc<Inner>, now: Instant) {
        let gone: Vec<(RelayKey, Side)> = {
            let mut peers = lock(&self.peers);
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.last) > EXPIRY)
                .map(|(n, _)| n.clone())
                .collect();
            dead.iter()
                .filter_map(|n| peers.remove(n))
                .inspect(|_| tracing::info!("cluster: a node went silent; its keys are offline"))
                .flat_map(|p| p.keys)
                .collect()
        };
        let changes: Vec<((RelayKey, Side), bool)> = gone.into_iter().map(|k| (k, false)).collect();
        crate::server::remote_presence(inner, &changes);
        inner
            .metrics
            .cluster_presence
            .store(crate::server::remote_keys(inner) as u64, Ordering::Relaxed);
    }
}
