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
//! - **Presence**: each node publishes the keys that come and go as they do, and every
//!   [`HEARTBEAT`] how many keys it holds with a digest of them (a few bytes, however many
//!   keys). A node whose own view of another disagrees with that asks it for its whole list,
//!   which comes in parts of [`SNAPSHOT_CHUNK`] keys (as it does to a node that says hello), so
//!   no message grows with the number of keys past NATS's limit. A node not heard from for
//!   [`EXPIRY`] is taken for dead and its keys go offline (hosts and devices are told, as when
//!   a connection here ends); a node that stops says goodbye, and its keys go offline at once.
//! - **Knocks**: the node holding a host publishes, for a node that joins, each device that
//!   knocked at the host's open offers right after the host's registration (which opens them),
//!   so that a device that knocked at one node may go on pairing through a node that came
//!   later. The knocks made here are kept too, for [`KNOCK_KEEP`] (the newest
//!   [`KEPT_KNOCKS`]), and published again, for a host's node that missed them. How many devices
//!   may knock with one offer (four) is counted at each node: a device
//!   over the limit at the host's node gets no frame to the host there.
//!
//! While NATS is away, frames for keys at other nodes are not sent (the sender is told the
//! peer is offline, as for any undelivered frame: fail closed), control messages are not queued
//! (the hello on return publishes the state again), a key whose subscription fails is tried
//! again at each heartbeat, and the other nodes' keys go offline once their presence expires. What was in flight is the resume layer's to deliver
//! again (end to end, exactly once). Without `--cluster`, none of this exists: a single relay
//! and `agent-host up` are as they were.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Keys in one part of a node's whole list (about 80 bytes each).
pub const SNAPSHOT_CHUNK: usize = 2048;
/// The most keys taken from one node's list (its connections at most, and a node takes
/// 20,000 by default).
pub const MAX_SNAPSHOT_KEYS: usize = 1 << 20;
/// The knocks made here kept for nodes that join: the newest this many...
pub const KEPT_KNOCKS: usize = 1024;
/// ...for at most this long.
pub const KNOCK_KEEP: Duration = Duration::from_secs(600);
/// How long a session waits for room to publish its host's registration or its knock.
const CONTROL_WAIT: Duration = Duration::from_secs(5);
/// How long subscribing to a key's subject may take before it is tried again at the next
/// heartbeat (it waits while NATS is away).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// A node is here (started, or back after NATS was away): the others publish their keys,
    /// their hosts' registrations and their knocks again.
    Hello { node: String },
    /// A node is alive, and holds `keys` keys whose [`digest`] is `digest`.
    Alive { node: String, keys: usize, digest: u64 },
    /// Keys that came to a node and went from it.
    Presence {
        node: String,
        online: Vec<(String, Side)>,
        #[serde(default)]
        offline: Vec<(String, Side)>,
    },
    /// One part of all the keys a node holds: parts `0..` of snapshot `id`, the `last` ending it.
    Snapshot { node: String, id: u64, part: u32, last: bool, online: Vec<(String, Side)> },
    /// Node `node` asks node `of` for a snapshot (its view of `of` disagrees with `of`'s).
    Sync { node: String, of: String },
    /// A node stops: its keys are offline now.
    Bye { node: String },
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
            | Self::Alive { node, .. }
            | Self::Presence { node, .. }
            | Self::Snapshot { node, .. }
            | Self::Sync { node, .. }
            | Self::Bye { node }
            | Self::Register { node, .. }
            | Self::Knock { node, .. } => node,
        }
    }
}

/// A key held at a node, with its side.
type Entry = (RelayKey, Side);

/// An order-free digest of one entry: a set's digest is the XOR of its entries', so it is kept
/// up to date as entries come and go.
fn digest(entry: &Entry) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&entry.0.0[..8]);
    u64::from_le_bytes(first) ^ u64::from(side_byte(entry.1)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn entries(list: Vec<(String, Side)>) -> HashSet<Entry> {
    list.into_iter()
        .filter_map(|(k, s)| protocol::relay::hex32(&k, "key").ok().map(|k| (RelayKey(k), s)))
        .collect()
}

/// What this node believes another holds: kept by its changes, replaced by its snapshots, and
/// checked against its heartbeats. Pure bookkeeping: each call returns the keys that came
/// (`true`) or went.
#[derive(Debug, Default)]
struct View {
    keys: HashSet<Entry>,
    digest: u64,
    /// A snapshot being received: its id, the part expected next, the keys so far.
    pending: Option<(u64, u32, HashSet<Entry>)>,
}

impl View {
    fn change(&mut self, online: HashSet<Entry>, offline: HashSet<Entry>) -> Vec<(Entry, bool)> {
        let mut changes = Vec::new();
        for entry in online {
            if self.keys.insert(entry) {
                self.digest ^= digest(&entry);
                changes.push((entry, true));
            }
        }
        for entry in offline {
            if self.keys.remove(&entry) {
                self.digest ^= digest(&entry);
                changes.push((entry, false));
            }
        }
        changes
    }

    /// Part `part` of snapshot `id`: kept until the `last` part, which replaces the view. A
    /// part out of order drops the snapshot (the next heartbeat asks again).
    fn snapshot(
        &mut self,
        id: u64,
        part: u32,
        last: bool,
        keys: HashSet<Entry>,
    ) -> Vec<(Entry, bool)> {
        let mut so_far = match self.pending.take() {
            _ if part == 0 => HashSet::new(),
            Some((pending, next, so_far)) if pending == id && next == part => so_far,
            _ => return Vec::new(),
        };
        so_far.extend(keys);
        if so_far.len() > MAX_SNAPSHOT_KEYS {
            tracing::warn!("cluster: a node's list is over {MAX_SNAPSHOT_KEYS} keys; dropped");
            return Vec::new();
        }
        if !last {
            self.pending = part.checked_add(1).map(|next| (id, next, so_far));
            return Vec::new();
        }
        let mut changes: Vec<(Entry, bool)> =
            self.keys.difference(&so_far).map(|e| (*e, false)).collect();
        changes.extend(so_far.difference(&self.keys).map(|e| (*e, true)));
        self.digest = so_far.iter().map(digest).fold(0, |a, b| a ^ b);
        self.keys = so_far;
        changes
    }

    /// Whether a heartbeat saying `keys` keys of digest `digest` agrees with this view.
    fn agrees(&self, keys: usize, digest: u64) -> bool {
        self.keys.len() == keys && self.digest == digest
    }

    /// The node is gone: every key it held goes.
    fn gone(self) -> Vec<(Entry, bool)> {
        self.keys.into_iter().map(|e| (e, false)).collect()
    }
}

/// Another node, as this one knows it.
#[derive(Debug)]
struct Peer {
    last: Instant,
    view: View,
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
    /// Presence (changes, heartbeats, snapshots, sync requests), to the publisher, which sends
    /// them first of all: never waited for, and never behind a long state dump, so that a node
    /// publishing its state still looks alive.
    presence: mpsc::Sender<(String, Bytes)>,
    /// Other control messages (hello, registrations, knocks), to the publisher, which sends them
    /// before frames.
    control: mpsc::Sender<(String, Bytes)>,
    /// The keys with a connection here, and the task that takes their frames from NATS.
    held: tokio::sync::Mutex<HashMap<RelayKey, (Side, JoinHandle<()>)>>,
    /// The other nodes.
    peers: Mutex<HashMap<String, Peer>>,
    /// The last registration of each host held here, to publish again for nodes that join.
    registrations: Mutex<HashMap<RelayKey, Control>>,
    /// The knocks made here, to publish again for nodes that join (see [`KEPT_KNOCKS`]).
    knocks: Mutex<VecDeque<(Instant, Control)>>,
    /// Keys here whose subscription failed, to try again at the next heartbeat.
    retry: Mutex<HashSet<Entry>>,
    /// Another node asked for a snapshot: the next heartbeat sends one.
    sync_wanted: AtomicBool,
    /// A node said hello: the state publisher publishes this node's state.
    state_wanted: tokio::sync::Notify,
    /// The last snapshot's id.
    snapshots: AtomicU64,
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
        let (presence_tx, mut presences) = mpsc::channel::<(String, Bytes)>(CONTROL_QUEUE);
        let (control_tx, mut controls) = mpsc::channel::<(String, Bytes)>(CONTROL_QUEUE);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cluster = Arc::new(Self {
            client: client.clone(),
            id: node_id,
            node: hex::encode(node_id),
            out,
            queued: queued.clone(),
            presence: presence_tx,
            control: control_tx,
            held: tokio::sync::Mutex::default(),
            peers: Mutex::default(),
            registrations: Mutex::default(),
            knocks: Mutex::default(),
            retry: Mutex::default(),
            sync_wanted: AtomicBool::new(false),
            state_wanted: tokio::sync::Notify::new(),
            snapshots: AtomicU64::new(0),
            tasks: Mutex::default(),
        });
        let mut control = client.subscribe(control_subject()).await?;
        let weak = Arc::downgrade(inner);
        let publisher = tokio::spawn(async move {
            loop {
                // Presence first, then control: a node whose presence waits behind frames or a
                // state dump looks dead.
                let (subject, payload, frame) = tokio::select! {
                    biased;
                    Some((subject, payload)) = presences.recv() => (subject, payload, false),
                    Some((subject, payload)) = controls.recv() => (subject, payload, false),
                    Some((subject, payload)) = outbox.recv() => (subject, payload, true),
                    else => return,
                };
                if frame {
                    queued.fetch_sub(payload.len(), Ordering::Relaxed);
                }
                // While NATS is away nothing is queued at the client (its queue would fill and
                // stall the subscriptions behind it): frames fail, and the hello on return
                // publishes the state again.
                if client.connection_state() != async_nats::connection::State::Connected {
                    continue;
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
                    if cluster.sync_wanted.swap(false, Ordering::Relaxed) {
                        cluster.publish_snapshot().await;
                    }
                    cluster.publish_alive().await;
                    // Keys whose subscription failed, until one fails again (NATS is not
                    // taking them yet: the rest wait for the next heartbeat).
                    let retry: Vec<Entry> = lock(&cluster.retry).drain().collect();
                    for (key, side) in retry {
                        if lock(&cluster.retry).is_empty() {
                            cluster.follow(&inner, key, side).await;
                        } else {
                            lock(&cluster.retry).insert((key, side));
                        }
                    }
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
                            cluster.hello(&inner).await;
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
        let state = {
            let (cluster, weak) = (cluster.clone(), weak.clone());
            tokio::spawn(async move {
                loop {
                    cluster.state_wanted.notified().await;
                    let Some(inner) = weak.upgrade() else { return };
                    cluster.publish_state(&inner).await;
                }
            })
        };
        lock(&cluster.tasks).extend([publisher, listener, heartbeat, watcher, state]);
        cluster.hello(inner).await;
        tracing::info!(node = %cluster.node, %url, "joined the cluster");
        Ok(cluster)
    }

    /// Stops taking part (at shutdown): every task ends, the keys' subscriptions with them,
    /// and the other nodes are told this one's keys are gone.
    pub(crate) async fn leave(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        for (_, (_, task)) in self.held.lock().await.drain() {
            task.abort();
        }
        // What was published goes out, unless NATS is away (then nothing waits for it).
        let bye = serde_json::to_vec(&Control::Bye { node: self.node.clone() });
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if let Ok(bye) = bye {
                let _ = self.client.publish(control_subject(), Bytes::from(bye)).await;
            }
            self.client.flush().await
        })
        .await;
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Queues a presence message (see [`Cluster::presence`]), or drops it when too many wait
    /// (a dropped one shows in the next heartbeat's digest).
    fn publish_presence(&self, control: &Control) {
        if let Ok(json) = serde_json::to_vec(control)
            && self.presence.try_send((control_subject(), Bytes::from(json))).is_err()
        {
            tracing::warn!("cluster: too many presence messages wait; one is dropped");
        }
    }

    /// Queues `control`, waiting for room (for what must not be dropped: a node's state for
    /// another that joins, however many hosts it holds).
    async fn publish_waiting(&self, control: &Control) {
        if let Ok(json) = serde_json::to_vec(control) {
            let _ = self.control.send((control_subject(), Bytes::from(json))).await;
        }
    }

    /// [`Cluster::publish_waiting`] for at most [`CONTROL_WAIT`] (a session waits on it: NATS
    /// stalled must not stall the session); then it waits for the next publishing of the
    /// whole state (it is kept here: registrations and knocks are part of it).
    async fn publish_within(&self, control: &Control) {
        if tokio::time::timeout(CONTROL_WAIT, self.publish_waiting(control)).await.is_err() {
            tracing::warn!(
                "cluster: NATS takes no control message; a registration or knock waits for the \
                 next publishing of this node's state"
            );
            self.state_wanted.notify_one();
        }
    }

    /// Says hello, and everything a node that just joined needs: the keys here, and the
    /// registrations and knocks of the hosts and devices here.
    async fn hello(&self, inner: &Arc<Inner>) {
        self.publish_waiting(&Control::Hello { node: self.node.clone() }).await;
        self.publish_state(inner).await;
    }

    async fn publish_state(&self, inner: &Arc<Inner>) {
        self.publish_snapshot().await;
        let registrations: Vec<(RelayKey, Control)> =
            lock(&self.registrations).iter().map(|(k, c)| (*k, c.clone())).collect();
        for (host, registration) in registrations {
            self.publish_waiting(&registration).await;
            // The devices that knocked at the host's open offers (wherever they knocked), right
            // after the registration that opens them: a knock that came first would find no
            // offer at a node that just joined.
            for (token, device) in crate::server::knocks_at(inner, &host) {
                self.publish_waiting(&Control::Knock {
                    node: self.node.clone(),
                    device: device.to_string(),
                    host: host.to_string(),
                    token: hex::encode(token.0),
                })
                .await;
            }
        }
        let knocks: Vec<Control> = {
            let mut knocks = lock(&self.knocks);
            keep_fresh(&mut knocks, Instant::now());
            knocks.iter().map(|(_, k)| k.clone()).collect()
        };
        for knock in knocks {
            self.publish_waiting(&knock).await;
        }
    }

    /// Every key here, in parts of [`SNAPSHOT_CHUNK`].
    async fn publish_snapshot(&self) {
        // Queued under the lock: a change `follow` makes meanwhile goes after this snapshot,
        // never before it or between its parts. Not waited for (the lock is the one every
        // new connection takes): a part dropped when the queue is full drops the snapshot at
        // the other nodes, whose next look at the heartbeat asks for another.
        let held = self.held.lock().await;
        let id = self.snapshots.fetch_add(1, Ordering::Relaxed) + 1;
        let all: Vec<(String, Side)> = held.iter().map(|(k, (s, _))| (k.to_string(), *s)).collect();
        let parts = all.len().div_ceil(SNAPSHOT_CHUNK).max(1);
        let mut chunks = all.chunks(SNAPSHOT_CHUNK);
        for part in 0..parts {
            self.publish_presence(&Control::Snapshot {
                node: self.node.clone(),
                id,
                part: u32::try_from(part).unwrap_or(u32::MAX),
                last: part + 1 == parts,
                online: chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
            });
        }
        drop(held);
    }

    /// How many keys are here, and their digest.
    async fn publish_alive(&self) {
        let held = self.held.lock().await;
        let digest = held.iter().map(|(k, (s, _))| digest(&(*k, *s))).fold(0, |a, b| a ^ b);
        self.publish_presence(&Control::Alive {
            node: self.node.clone(),
            keys: held.len(),
            digest,
        });
        drop(held);
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

    /// A host here registered (checked, and newer than the last): the other nodes take it too
    /// (waiting for room in the queue: nothing else would publish it again until a node joins).
    pub(crate) async fn registered(
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
        lock(&self.registrations).insert(host, registration.clone());
        self.publish_within(&registration).await;
    }

    /// A device here knocked with an open offer: the other nodes let it through too.
    pub(crate) async fn knocked(&self, device: &RelayKey, host: &str, token: &str) {
        let knock = Control::Knock {
            node: self.node.clone(),
            device: device.to_string(),
            host: host.to_string(),
            token: token.to_string(),
        };
        {
            let now = Instant::now();
            let mut knocks = lock(&self.knocks);
            knocks.push_back((now, knock.clone()));
            keep_fresh(&mut knocks, now);
        }
        self.publish_within(&knock).await;
    }

    /// Follows the connections of `key` here: while there is one, frames for it come from NATS
    /// and the other nodes know it is here. Call after every change of its connections here;
    /// whatever the order of the calls, the last one leaves things as they are: what to do is
    /// decided, and done, under the lock, from the connections here at that moment, and the
    /// subscription (which may wait for NATS) is made outside it, then taken only if still
    /// wanted.
    pub(crate) async fn follow(self: &Arc<Self>, inner: &Arc<Inner>, key: RelayKey, side: Side) {
        let mut subscribed: Option<async_nats::Subscriber> = None;
        loop {
            let mut held = self.held.lock().await;
            let here = crate::server::connections_of(inner, &key) > 0;
            match (here, held.contains_key(&key), subscribed.take()) {
                (true, false, None) => {
                    drop(held);
                    let subscribing = self.client.subscribe(key_subject(&key));
                    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribing).await {
                        Ok(Ok(frames)) => subscribed = Some(frames),
                        failed => {
                            let why = failed.map_or_else(
                                |_| "timed out".to_string(),
                                |r| r.err().map(|e| e.to_string()).unwrap_or_default(),
                            );
                            tracing::warn!(
                                "cluster: cannot take frames for {key} yet ({why}); will retry"
                            );
                            lock(&self.retry).insert((key, side));
                            return;
                        }
                    }
                }
                (true, false, Some(mut frames)) => {
                    let (cluster, weak) = (self.clone(), Arc::downgrade(inner));
                    let task = tokio::spawn(async move {
                        while let Some(message) = frames.next().await {
                            let Some(inner) = weak.upgrade() else { return };
                            cluster.arrived(&inner, &key, message.payload);
                        }
                    });
                    held.insert(key, (side, task));
                    // Not waited for (a connection's welcome waits for this): one dropped when
                    // the queue is full shows in the next heartbeat's digest, and the others
                    // ask for the whole list.
                    self.publish_presence(&Control::Presence {
                        node: self.node.clone(),
                        online: vec![(key.to_string(), side)],
                        offline: Vec::new(),
                    });
                    return;
                }
                (false, true, _) => {
                    if let Some((side, task)) = held.remove(&key) {
                        task.abort();
                        lock(&self.registrations).remove(&key);
                        self.publish_presence(&Control::Presence {
                            node: self.node.clone(),
                            online: Vec::new(),
                            offline: vec![(key.to_string(), side)],
                        });
                    }
                    return;
                }
                // As it should be (a subscription made meanwhile is dropped, and with it
                // unsubscribed).
                _ => return,
            }
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
        let changes = match control {
            Control::Hello { node } => {
                // This node's state, from the task that publishes it (the listener goes on
                // hearing the others meanwhile: a node not heard from for EXPIRY is dead);
                // several hellos while it does are answered once more, not once each.
                tracing::debug!(%node, "cluster: a node said hello");
                self.state_wanted.notify_one();
                return;
            }
            Control::Sync { of, .. } => {
                if of == self.node {
                    self.sync_wanted.store(true, Ordering::Relaxed);
                }
                return;
            }
            Control::Alive { node, keys, digest } => {
                let agrees = self.peer(node.clone(), now, |view| view.agrees(keys, digest));
                if !agrees {
                    // Something was lost on the way (or this node just came): ask for it all.
                    tracing::debug!(%node, "cluster: presence out of step; asking for it all");
                    // (Not waited for: asked again at the next heartbeat if dropped.)
                    self.publish_presence(&Control::Sync { node: self.node.clone(), of: node });
                }
                return;
            }
            Control::Presence { node, online, offline } => {
                self.peer(node, now, |view| view.change(entries(online), entries(offline)))
            }
            Control::Snapshot { node, id, part, last, online } => {
                self.peer(node, now, |view| view.snapshot(id, part, last, entries(online)))
            }
            Control::Bye { node } => {
                tracing::info!(%node, "cluster: a node stopped; its keys are offline");
                lock(&self.peers).remove(&node).map(|p| p.view.gone()).unwrap_or_default()
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
                return;
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
                return;
            }
        };
        crate::server::remote_presence(inner, &changes);
        self.count_presence(inner);
    }

    /// `f` on the view of `node`, heard from `now`.
    fn peer<T>(&self, node: String, now: Instant, f: impl FnOnce(&mut View) -> T) -> T {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(node).or_insert_with(|| Peer { last: now, view: View::default() });
        peer.last = now;
        f(&mut peer.view)
    }

    fn count_presence(&self, inner: &Arc<Inner>) {
        inner
            .metrics
            .cluster_presence
            .store(crate::server::remote_keys(inner) as u64, Ordering::Relaxed);
    }

    /// Other nodes not heard from for [`EXPIRY`] are gone: their keys go offline.
    fn expire(&self, inner: &Arc<Inner>, now: Instant) {
        let gone: Vec<(Entry, bool)> = {
            let mut peers = lock(&self.peers);
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.last) > EXPIRY)
                .map(|(n, _)| n.clone())
                .collect();
            dead.iter()
                .filter_map(|n| peers.remove(n))
                .inspect(|_| tracing::info!("cluster: a node went silent; its keys are offline"))
                .flat_map(|p| p.view.gone())
                .collect()
        };
        crate::server::remote_presence(inner, &gone);
        self.count_presence(inner);
    }
}

/// Drops the knocks kept past [`KNOCK_KEEP`] or past the newest [`KEPT_KNOCKS`].
fn keep_fresh(knocks: &mut VecDeque<(Instant, Control)>, now: Instant) {
    while knocks.len() > KEPT_KNOCKS
        || knocks.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > KNOCK_KEEP)
    {
        knocks.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u8, side: Side) -> Entry {
        (RelayKey([seed; 32]), side)
    }

    fn set(entries: &[Entry]) -> HashSet<Entry> {
        entries.iter().copied().collect()
    }

    fn sorted(mut changes: Vec<(Entry, bool)>) -> Vec<(Entry, bool)> {
        changes.sort_by_key(|((k, s), online)| (k.0, side_byte(*s), *online));
        changes
    }

    /// What a node holding `entries` says in its heartbeat.
    fn alive(entries: &[Entry]) -> (usize, u64) {
        (entries.len(), entries.iter().map(digest).fold(0, |a, b| a ^ b))
    }

    #[test]
    fn changes_keep_the_view_in_step_with_the_heartbeat() {
        let (a, b, c) = (entry(1, Side::Host), entry(2, Side::Device), entry(3, Side::Device));
        let mut view = View::default();
        assert!(view.agrees(0, 0));
        assert_eq!(sorted(view.change(set(&[a, b]), set(&[]))), vec![(a, true), (b, true)]);
        let (keys, sum) = alive(&[a, b]);
        assert!(view.agrees(keys, sum));
        // A change heard twice, or a key going that was never here, changes nothing.
        assert!(view.change(set(&[a]), set(&[c])).is_empty());
        assert_eq!(view.change(set(&[]), set(&[a])), vec![(a, false)]);
        assert!(view.agrees(alive(&[b]).0, alive(&[b]).1));
        // A lost change shows in the next heartbeat (the same count, another digest).
        assert!(!view.agrees(alive(&[c]).0, alive(&[c]).1));
        // The same key as host and as device are two entries.
        assert_ne!(digest(&entry(4, Side::Host)), digest(&entry(4, Side::Device)));
    }

    #[test]
    fn a_snapshot_in_parts_replaces_the_view_only_when_whole() {
        let (a, b, c, d) = (
            entry(1, Side::Host),
            entry(2, Side::Device),
            entry(3, Side::Device),
            entry(4, Side::Host),
        );
        let mut view = View::default();
        view.change(set(&[a, b]), set(&[]));
        // Parts 0 and 1 of snapshot 7 change nothing yet; the last part replaces the view.
        assert!(view.snapshot(7, 0, false, set(&[b])).is_empty());
        assert!(view.snapshot(7, 1, false, set(&[c])).is_empty());
        assert!(view.agrees(alive(&[a, b]).0, alive(&[a, b]).1));
        assert_eq!(
            sorted(view.snapshot(7, 2, true, set(&[d]))),
            vec![(a, false), (c, true), (d, true)]
        );
        let (keys, sum) = alive(&[b, c, d]);
        assert!(view.agrees(keys, sum));
        // A part missing (2 after 0): the snapshot is dropped, the view stays.
        assert!(view.snapshot(8, 0, false, set(&[a])).is_empty());
        assert!(view.snapshot(8, 2, true, set(&[])).is_empty());
        assert!(view.agrees(keys, sum));
        // A new snapshot starts over whatever was pending, and may be empty.
        assert!(view.snapshot(9, 0, false, set(&[a])).is_empty());
        let all_gone = view.snapshot(10, 0, true, set(&[]));
        assert_eq!(all_gone.len(), 3);
        assert!(all_gone.iter().all(|(_, online)| !online));
        assert!(view.agrees(0, 0));
        // A node gone takes its keys with it.
        view.change(set(&[a]), set(&[]));
        assert_eq!(view.gone(), vec![(a, false)]);
    }

    #[test]
    fn kept_knocks_are_the_newest_and_fresh() {
        let knock = |n: usize| Control::Knock {
            node: String::new(),
            device: n.to_string(),
            host: String::new(),
            token: String::new(),
        };
        let t0 = Instant::now();
        let mut knocks: VecDeque<(Instant, Control)> =
            (0..KEPT_KNOCKS + 5).map(|n| (t0, knock(n))).collect();
        keep_fresh(&mut knocks, t0);
        assert_eq!(knocks.len(), KEPT_KNOCKS);
        assert!(matches!(&knocks[0].1, Control::Knock { device, .. } if device == "5"));
        knocks.push_back((t0 + KNOCK_KEEP, knock(0)));
        keep_fresh(&mut knocks, t0 + KNOCK_KEEP + Duration::from_secs(1));
        assert_eq!(knocks.len(), 1);
    }
}
