//! The server: one TLS port with `/health`, `/metrics`, the WebSocket endpoint `/ws`, its
//! event-stream fallback for browsers (`/sse`, see [`crate::sse`]), and, when its operator says
//! so ([`Config::serve_web`]), the web UI (`/`, `/pair` and its files, see [`crate::web`]).
//!
//! Each connection: TLS handshake, one HTTP request head (at most 8 KiB), then either a plain
//! answer or the WebSocket upgrade ([`crate::http`]); then here the challenge, the client's
//! signed answer, and frames until either side closes. Every step has a time limit, every frame a size limit, every
//! connection a rate and a queue limit; breaking one closes that connection with a code and a
//! reason, and nothing else.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::relay::{CloseCode, FrameKind, FromRelay, ToRelay};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::coop::unconstrained;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::conn::Step;
use crate::hub::{Conn, Hub, Kick, NoRoute};
use crate::metrics::Metrics;
use crate::tls::Identity;

/// Limits on every connection and on the whole relay.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest WebSocket message (a data frame: routing header and envelope).
    pub max_frame: usize,
    /// Bytes queued towards one connection before it is cut off as too slow.
    pub max_queued: usize,
    /// Data frames per second one device's connection may send (sustained).
    pub frames_per_sec: u32,
    /// Data frames one device's connection may send in a burst.
    pub burst: u32,
    /// The most data frames per second one host's connection may send (sustained): a host
    /// answers all its devices over one connection, and may send `frames_per_sec` for each
    /// device it registered up to this, and never less than `frames_per_sec`
    /// ([`protocol::relay::host_rate`]).
    pub host_frames_per_sec: u32,
    /// The most data frames one host's connection may send in a burst.
    pub host_burst: u32,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once for one key.
    pub max_per_key: usize,
    /// Time allowed for the TLS handshake, the HTTP head and the challenge answer.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// How often the relay pings.
    pub ping_interval: Duration,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // An envelope, the routing header, and the end-to-end resume header (25 bytes)
            // that relay-client puts before each envelope, with room to spare.
            max_frame: protocol::limits::MAX_FRAME + protocol::relay::HEADER + 64,
            max_queued: 8 << 20,
            frames_per_sec: protocol::relay::FRAMES_PER_SEC,
            burst: 2 * protocol::relay::FRAMES_PER_SEC,
            host_frames_per_sec: protocol::relay::HOST_FRAMES_PER_SEC,
            host_burst: 2 * protocol::relay::HOST_FRAMES_PER_SEC,
            max_connections: 20_000,
            max_per_key: 4,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            ping_interval: Duration::from_secs(25),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// How the relay is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The TLS certificate and key.
    pub identity: Identity,
    /// The limits.
    pub limits: Limits,
    /// The origins browsers reach this relay at; a challenge answer bound to one of them is
    /// accepted besides one bound to the certificate (see `protocol::relay`).
    pub origins: Vec<String>,
    /// Serve the web UI ([`crate::web`]) too. Off unless its operator says so: the page holds
    /// a device's key, so it must come from an origin the device's person trusts (their own
    /// machine's relay, as `agent-host up` runs it, or one they host), never from a relay they
    /// merely route through (SECURITY.md).
    pub serve_web: bool,
}

/// The relay's shared state (the connections' HTTP side, [`crate::http`], reads its config,
/// metrics and event-stream sessions).
pub(crate) struct Inner {
    pub(crate) config: Config,
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    hub: Mutex<Hub>,
    pub(crate) metrics: Metrics,
    open: AtomicUsize,
    pub(crate) sse: Arc<crate::sse::Sessions>,
    stop: watch::Sender<bool>,
    /// The cluster this node shares routing with, if any ([`Server::join_cluster`]).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// A relay. Cloning gives another handle to the same relay.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server({})", self.inner.local_addr)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few map operations; a panic in one is a bug, and the maps
    // stay consistent enough to keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Server {
    /// Binds the listening socket (port 0 picks a free one).
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, _) = watch::channel(false);
        let hub = Hub::new(config.limits.max_queued);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                listener: Mutex::new(Some(listener)),
                local_addr,
                hub: Mutex::new(hub),
                metrics: Metrics::default(),
                open: AtomicUsize::new(0),
                sse: Arc::default(),
                stop,
                cluster: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The counters behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Shares routing with the other nodes of the cluster at NATS `url` (see
    /// [`crate::cluster`]), before [`Server::serve`]. Fails when NATS cannot be reached within
    /// seconds, or takes smaller messages than the relay's frames.
    pub async fn join_cluster(&self, url: &str) -> Result<(), crate::cluster::ClusterError> {
        let cluster = crate::cluster::Cluster::join(&self.inner, url).await?;
        if let Err(cluster) = self.inner.cluster.set(cluster) {
            cluster.leave().await;
        }
        Ok(())
    }

    /// Accepts connections until [`Server::shutdown`].
    pub async fn serve(&self) -> std::io::Result<()> {
        let listener = lock(&self.inner.listener)
            .take()
            .ok_or_else(|| std::io::Error::other("already serving"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.inner.config.identity.config.clone());
        let mut stop = self.inner.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let inner = self.inner.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let open = Open::count(&inner);
                        if let Err(e) = crate::http::connection(&inner, acceptor, tcp, open.0).await {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// A connection from this same process, for a host whose relay is embedded: the session
    /// a TLS WebSocket client gets (challenge, hello bound to this relay's certificate, limits,
    /// routing, presence), carried by two channels instead of TLS and a socket. Closed at once
    /// once the relay is shutting down.
    pub fn connect_local(&self) -> crate::local::LocalConn {
        let (client, relay) = crate::local::pair();
        if !*self.inner.stop.borrow() {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let _open = Open::count(&inner);
                let (sink, stream) = relay;
                if let Err(e) = session(&inner, Joined(sink, stream)).await {
                    tracing::debug!("local connection ended: {e}");
                }
            });
        }
        crate::local::LocalConn::new(client)
    }

    /// Stops accepting, closes every connection with 1001 "relay shutting down", and waits for
    /// them to go (at most the drain timeout).
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.leave().await;
        }
        for kick in lock(&self.inner.hub).all_kicks() {
            let _ = kick.send(Some((CloseCode::GoingAway, "relay shutting down".into())));
        }
        let deadline = Instant::now() + self.inner.config.limits.drain_timeout;
        while self.inner.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How many connections of `key` are here.
pub(crate) fn connections_of(inner: &Inner, key: &protocol::RelayKey) -> usize {
    lock(&inner.hub).connections_of(key)
}

/// Keys connected at other nodes.
pub(crate) fn remote_keys(inner: &Inner) -> usize {
    lock(&inner.hub).remote_keys()
}

/// A frame another node forwarded: see [`Hub::deliver_forwarded`].
pub(crate) fn deliver_forwarded(
    inner: &Inner,
    from: &protocol::RelayKey,
    to: &protocol::RelayKey,
    side: protocol::relay::Side,
    frame: Message,
) -> usize {
    lock(&inner.hub).deliver_forwarded(from, to, side, frame, &inner.metrics)
}

/// Keys that came (`true`) to another node or went from it.
pub(crate) fn remote_presence(
    inner: &Inner,
    changes: &[((protocol::RelayKey, protocol::relay::Side), bool)],
) {
    if changes.is_empty() {
        return;
    }
    let mut hub = lock(&inner.hub);
    for ((key, side), online) in changes {
        hub.remote_presence(*key, *side, *online, &inner.metrics);
    }
}

/// A registration another node took (signature checked there and here).
pub(crate) fn register(
    inner: &Inner,
    host: protocol::RelayKey,
    counter: u64,
    list: protocol::relay::Registration,
) {
    if lock(&inner.hub).register(host, counter, list, &inner.metrics) {
        Metrics::inc(&inner.metrics.registrations);
    }
}

/// A knock another node let through.
pub(crate) fn knock(
    inner: &Inner,
    device: protocol::RelayKey,
    host: &protocol::RelayKey,
    token: &protocol::PairingToken,
) {
    lock(&inner.hub).knock(device, host, token);
}

/// The devices that knocked at `host`'s open offers here, with the offer's token.
pub(crate) fn knocks_at(
    inner: &Inner,
    host: &protocol::RelayKey,
) -> Vec<(protocol::PairingToken, protocol::RelayKey)> {
    lock(&inner.hub).knocks_at(host)
}

/// A connection counted as open (in the metrics and for the drain at shutdown) while it lives;
/// holds how many were open with it.
struct Open(usize, Arc<Inner>);

impl Open {
    fn count(inner: &Arc<Inner>) -> Self {
        Metrics::inc(&inner.metrics.connections_total);
        let open = inner.open.fetch_add(1, Ordering::Relaxed) + 1;
        inner.metrics.connections.store(open as u64, Ordering::Relaxed);
        Self(open, inner.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let open = self.1.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.1.metrics.connections.store(open as u64, Ordering::Relaxed);
    }
}

/// The WebSocket settings of every connection: the frame limit, and small buffers (an idle
/// connection should cost little memory).
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame))
        .max_frame_size(Some(limits.max_frame))
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Why a connection ended before its time (logged at debug level: a client's fault or the
/// network's, never the relay's state).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The TLS handshake or the request head took too long.
    #[error("timed out")]
    Timeout(#[from] tokio::time::error::Elapsed),
    /// The request head was not one.
    #[error("{0}")]
    Head(&'static str),
    /// The request head did not parse.
    #[error("bad request head: {0}")]
    Http(#[from] httparse::Error),
    /// Not a WebSocket upgrade where one was expected.
    #[error("not a WebSocket upgrade")]
    NotUpgrade,
    /// The WebSocket failed.
    #[error(transparent)]
    WebSocket(#[from] WsError),
    /// A message could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// No randomness for a challenge or a session name.
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
}

fn close(code: CloseCode, reason: impl Into<String>) -> Message {
    Message::Close(Some(CloseFrame { code: code.code().into(), reason: reason.into().into() }))
}

/// A sink and a stream joined into one connection (the event-stream fallback's two halves, a
/// local connection's two channels), for [`session`].
pub(crate) struct Joined<K, T>(pub(crate) K, pub(crate) T);

impl<K, T> futures_util::Sink<Message> for Joined<K, T>
where
    K: futures_util::Sink<Message, Error = WsError> + Unpin,
    T: Unpin,
{
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        Pin::new(&mut self.0).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl<K, T> futures_util::Stream for Joined<K, T>
where
    K: Unpin,
    T: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.1).poll_next(cx)
    }
}

/// What woke a session's loop.
enum Woke {
    /// The connection is being closed by the relay (too slow, shutdown).
    Kicked,
    /// Writing failed: the connection is gone.
    Broken,
    /// The idle timer fired.
    Idle,
    /// The client sent something (or its stream ended).
    Read(Option<Result<Message, WsError>>),
}

/// Messages fed to the connection before one flush.
const BATCH: usize = 64;
/// Flushed batches in one wake of a session's loop, at most (then it reads, and comes back).
const ROUNDS: usize = 2;

/// The writing half of a session's loop: what the hub queued for the connection, and pings.
struct Outgoing {
    rx: mpsc::UnboundedReceiver<Message>,
    /// Taken from `rx` (or a ping), waiting for the connection to take it.
    next: Option<Message>,
    /// Bytes in `rx`, in `next`, and fed but not yet flushed (the hub's queue limit counts
    /// them).
    queued: Arc<AtomicUsize>,
    /// Bytes fed since the last flush, and how many messages.
    unflushed: usize,
    batch: usize,
    ping_due: bool,
}

impl Outgoing {
    /// What the hub queues in `rx` (its bytes counted in `queued`), nothing fed yet.
    fn new(rx: mpsc::UnboundedReceiver<Message>, queued: Arc<AtomicUsize>) -> Self {
        Self { rx, next: None, queued, unflushed: 0, batch: 0, ping_due: false }
    }

    /// Writes what is queued, as far as the connection takes it now, [`BATCH`] messages to a
    /// flush: never waits (a peer that reads slowly leaves the rest queued, and the loop goes
    /// on reading). False when the connection failed.
    fn poll_write<C>(&mut self, conn: &mut C, cx: &mut Context<'_>) -> bool
    where
        C: futures_util::Sink<Message, Error = WsError> + Unpin,
    {
        for _ in 0..ROUNDS {
            while self.batch < BATCH {
                if self.next.is_none() {
                    self.next = if std::mem::take(&mut self.ping_due) {
                        Some(Message::Ping(Default::default()))
                    } else {
                        match self.rx.poll_recv(cx) {
                            Poll::Ready(Some(m)) => Some(m),
                            Poll::Ready(None) | Poll::Pending => None,
                        }
                    };
                }
                let Some(message) = self.next.take() else { break };
                match Pin::new(&mut *conn).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return false,
                    Poll::Pending => {
                        self.next = Some(message);
                        break;
                    }
                }
                self.unflushed += message.len();
                self.batch += 1;
                if Pin::new(&mut *conn).start_send(message).is_err() {
                    return false;
                }
            }
            if self.batch == 0 {
                return true;
            }
            match Pin::new(&mut *conn).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.queued.fetch_sub(self.unflushed, Ordering::Relaxed);
                    (self.unflushed, self.batch) = (0, 0);
                    // Round again, until the queue or the connection says Pending (and so
                    // will wake the loop): more may wait, and a message taken while the
                    // connection had no room waits in `next`.
                }
                Poll::Ready(Err(_)) => return false,
                Poll::Pending => return true,
            }
        }
        // Enough for one wake: the client's side gets its turn, and the loop comes back here.
        cx.waker().wake_by_ref();
        true
    }
}

/// The session of one client, over a WebSocket or the event-stream fallback
/// ([`crate::sse`]): authenticate, then route until either side closes. One task reads,
/// routes and writes: what the hub queues for the connection wakes it, as a frame from the
/// client does.
pub(crate) async fn session<C>(inner: &Arc<Inner>, mut conn: C) -> Result<(), ConnError>
where
    C: futures_util::Sink<Message, Error = WsError>
        + futures_util::Stream<Item = Result<Message, WsError>>
        + Unpin,
{
    let limits = inner.config.limits.clone();
    let metrics = &inner.metrics;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce)?;
    conn.send(Message::text(serde_json::to_string(&FromRelay::Challenge {
        nonce: hex::encode(nonce),
    })?))
    .await?;

    let answer = tokio::time::timeout(limits.handshake_timeout, conn.next()).await;
    let (side, key) = match answer {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ToRelay>(&text) {
            Ok(ToRelay::Hello { side, key, signature }) => {
                let bindings: Vec<[u8; 32]> = std::iter::once(inner.config.identity.cert_sha256)
                    .chain(inner.config.origins.iter().map(|o| protocol::relay::origin_binding(o)))
                    .collect();
                match protocol::relay::check_hello_any(side, &key, &signature, &nonce, &bindings) {
                    Ok(key) => (side, protocol::RelayKey::of(&key)),
                    Err(e) => {
                        Metrics::inc(&metrics.auth_failures);
                        conn.send(close(
                            CloseCode::AuthFailed,
                            format!("authentication failed: {e}"),
                        ))
                        .await?;
                        return Ok(());
                    }
                }
            }
            _ => {
                Metrics::inc(&metrics.auth_failures);
                conn.send(close(CloseCode::AuthFailed, "authentication failed: expected a hello"))
                    .await?;
                return Ok(());
            }
        },
        Ok(_) => {
            Metrics::inc(&metrics.auth_failures);
            conn.send(close(CloseCode::AuthFailed, "authentication failed: expected a hello"))
                .await?;
            return Ok(());
        }
        Err(_) => {
            Metrics::inc(&metrics.auth_failures);
            conn.send(close(CloseCode::AuthTimeout, "authentication timeout")).await?;
            return Ok(());
        }
    };

    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let queued = Arc::new(AtomicUsize::new(0));
    let (kick, mut kicked) = watch::channel::<Kick>(None);
    // Everything queued for the connection is counted, so that the accounting balances.
    let enqueue = |message: Message| {
        queued.fetch_add(message.len(), Ordering::Relaxed);
        let _ = tx.send(message);
    };
    // The welcome and the rate first, before the hub can queue anything for this connection.
    let mut rules = crate::conn::State::new(side, &limits, Instant::now());
    let welcome = serde_json::to_string(&FromRelay::Welcome)?;
    let (frames_per_sec, burst) = rules.rate();
    let rate = serde_json::to_string(&FromRelay::Rate { frames_per_sec, burst })?;
    let added = {
        let mut hub = lock(&inner.hub);
        (hub.connections_of(&key) < limits.max_per_key).then(|| {
            enqueue(Message::text(welcome));
            enqueue(Message::text(rate));
            let conn =
                Conn { key, side, tx: tx.clone(), queued: queued.clone(), kick: kick.clone() };
            hub.add(conn, metrics)
        })
    };
    let Some(id) = added else {
        Metrics::inc(&metrics.limit_closes);
        conn.send(close(CloseCode::TooManyConnections, "too many connections for this key"))
            .await?;
        return Ok(());
    };
    let cluster = inner.cluster.get().cloned();
    if let Some(cluster) = &cluster {
        cluster.follow(inner, key, side).await;
    }
    lock(&inner.hub).greet(id, metrics);

    let mut out = Outgoing::new(rx, queued.clone());

    // The timers (the idle timeout after the last message heard, the next ping) are armed,
    // polled once to be woken by, and moved only when they are due; on other wakes the loop
    // reads the clock instead of polling them. Likewise the kick: its watch is polled once to
    // be woken by, then its version is read. Those single polls are made outside the task's
    // budget: a timer or a watch polled with the budget spent says Pending without taking the
    // waker, and would never wake the loop.
    let mut heard = tokio::time::Instant::now();
    let idle = tokio::time::sleep_until(heard + limits.idle_timeout);
    tokio::pin!(idle);
    let mut next_ping = heard + limits.ping_interval;
    let ping = tokio::time::sleep_until(next_ping);
    tokio::pin!(ping);
    let mut armed = false;
    let probe = kick.subscribe();
    let stopped = kicked.changed();
    tokio::pin!(stopped);
    let mut watching = false;
    let mut broken = false;
    let outcome: Option<(CloseCode, String)> = loop {
        let woke = std::future::poll_fn(|cx| {
            if !watching {
                let stopping = unconstrained(stopped.as_mut());
                if std::pin::pin!(stopping).poll(cx).is_ready() {
                    return Poll::Ready(Woke::Kicked);
                }
                watching = true;
            } else if probe.has_changed().unwrap_or(true) {
                return Poll::Ready(Woke::Kicked);
            }
            let now = tokio::time::Instant::now();
            let mut idle_due = now >= idle.deadline();
            let mut ping_due = now >= next_ping;
            // (Twice at most: a ping timer re-armed is a ping interval away.)
            for _ in 0..2 {
                if ping_due {
                    out.ping_due = true;
                    next_ping = now + limits.ping_interval;
                    ping.as_mut().reset(next_ping);
                    armed = false;
                }
                if armed {
                    break;
                }
                // A timer that is due as it is armed says so here, and takes no waker.
                ping_due = std::pin::pin!(unconstrained(ping.as_mut())).poll(cx).is_ready();
                idle_due |= std::pin::pin!(unconstrained(idle.as_mut())).poll(cx).is_ready();
                armed = !ping_due;
            }
            if !out.poll_write(&mut conn, cx) {
                return Poll::Ready(Woke::Broken);
            }
            if let Poll::Ready(next) = Pin::new(&mut conn).poll_next(cx) {
                return Poll::Ready(Woke::Read(next));
            }
            if idle_due {
                return Poll::Ready(Woke::Idle);
            }
            Poll::Pending
        })
        .await;
        let next = match woke {
            Woke::Kicked => break None,
            Woke::Broken => {
                broken = true;
                break None;
            }
            Woke::Idle => {
                let deadline = heard + limits.idle_timeout;
                if deadline <= tokio::time::Instant::now() {
                    break Some((CloseCode::GoingAway, "idle timeout".into()));
                }
                idle.as_mut().reset(deadline);
                armed = false;
                continue;
            }
            Woke::Read(next) => next,
        };
        heard = tokio::time::Instant::now();
        let message = match next {
            None => break None,
            Some(Err(e)) => break crate::conn::close_for(&e),
            Some(Ok(m)) => m,
        };
        let now = heard.into_std();
        match rules.handle(now, &message) {
            Step::Route { broadcast, peer, payload_len } => {
                let Message::Binary(frame) = message else { continue };
                Metrics::inc(&metrics.frames_in);
                metrics.bytes_in.fetch_add(payload_len as u64, Ordering::Relaxed);
                // Forward the received buffer itself, its routing header rewritten to name the
                // sender (the same size), instead of copying the payload into a new frame.
                let forwarded = match frame.try_into_mut() {
                    Ok(mut buffer) => {
                        buffer[0] = FrameKind::To as u8;
                        buffer[1..protocol::relay::HEADER].copy_from_slice(&key.0);
                        Message::Binary(buffer.freeze())
                    }
                    Err(frame) => Message::binary(protocol::relay::data_frame(
                        FrameKind::To,
                        &key,
                        &frame[protocol::relay::HEADER..],
                    )),
                };
                let routed = lock(&inner.hub).route(
                    &key,
                    side,
                    broadcast,
                    &peer,
                    forwarded.clone(),
                    metrics,
                );
                // To the keys' connections at other nodes, through the cluster.
                let routed = routed.and_then(|routed| {
                    let Message::Binary(frame) = &forwarded else { return Ok(routed.local) };
                    let mut n = routed.local;
                    for (to, to_side) in &routed.remote {
                        if cluster.as_ref().is_some_and(|c| c.forward(to, *to_side, frame)) {
                            Metrics::inc(&metrics.cluster_frames_out);
                            n += 1;
                        }
                    }
                    if n == 0 { Err(NoRoute::Offline) } else { Ok(n) }
                });
                match routed {
                    Ok(n) => {
                        metrics.frames_out.fetch_add(n as u64, Ordering::Relaxed);
                        metrics.bytes_out.fetch_add((n * payload_len) as u64, Ordering::Relaxed);
                    }
                    Err(no_route) => {
                        Metrics::inc(&metrics.drops);
                        // Say so, at most once a second, so a sender learns why it hears nothing.
                        if rules.notice_due(now) {
                            let notice = FromRelay::Undeliverable {
                                peer: peer.to_string(),
                                offline: no_route == NoRoute::Offline,
                            };
                            enqueue(Message::text(serde_json::to_string(&notice)?));
                        }
                    }
                }
            }
            Step::Register { counter, devices, offers, signature } => {
                let Ok(host) = protocol::PublicKey::from_bytes(&key.0) else {
                    break Some((CloseCode::Internal, "internal error".into()));
                };
                let checked =
                    protocol::relay::check_register(&host, counter, &devices, &offers, &signature);
                let refusal = match checked {
                    Ok(list) => {
                        let distinct =
                            list.devices.iter().collect::<std::collections::HashSet<_>>().len();
                        let fresh = lock(&inner.hub).register(key, counter, list, metrics);
                        if fresh {
                            Metrics::inc(&metrics.registrations);
                            if let Some(cluster) = &cluster {
                                cluster
                                    .registered(key, counter, &devices, &offers, &signature)
                                    .await;
                            }
                        }
                        if fresh && let Some((frames_per_sec, burst)) = rules.registered(distinct) {
                            let rate = FromRelay::Rate { frames_per_sec, burst };
                            enqueue(Message::text(serde_json::to_string(&rate)?));
                        }
                        (!fresh).then(|| {
                            format!("registration counter {counter} is not newer than the last")
                        })
                    }
                    Err(e) => Some(format!("registration refused: {e}")),
                };
                if let Some(reason) = refusal {
                    enqueue(Message::text(serde_json::to_string(&FromRelay::Refused { reason })?));
                }
            }
            Step::Knock { host, token } => {
                let open = match (
                    protocol::relay::hex32(&host, "host"),
                    protocol::relay::hex32(&token, "token"),
                ) {
                    (Ok(host), Ok(token)) => lock(&inner.hub).knock(
                        key,
                        &protocol::RelayKey(host),
                        &protocol::PairingToken(token),
                    ),
                    _ => false,
                };
                if open {
                    Metrics::inc(&metrics.knocks);
                    if let Some(cluster) = &cluster {
                        cluster.knocked(&key, &host, &token).await;
                    }
                } else {
                    enqueue(Message::text(serde_json::to_string(&FromRelay::Refused {
                        reason: "no such pairing offer is open at that host".into(),
                    })?));
                }
            }
            Step::Nothing => {}
            Step::End => break None,
            Step::Close(code, reason) => break Some((code, reason)),
        }
    };
    if outcome.as_ref().is_some_and(|(code, _)| *code != CloseCode::Normal) {
        Metrics::inc(&metrics.limit_closes);
    }
    // A kick already in place (too slow, shutdown) keeps its reason.
    let kicked_for = kick.borrow().clone();
    let (code, reason) =
        kicked_for.or(outcome).unwrap_or_else(|| (CloseCode::Normal, "bye".into()));
    // Whatever else would kick it (too slow, shutdown) finds it closing already.
    kick.send_if_modified(|current| {
        if current.is_none() {
            *current = Some((code, reason.clone()));
            true
        } else {
            false
        }
    });
    if !broken {
        // A peer too slow to read may never take this; the time limit ends it.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.send(close(code, reason))).await;
    }
    lock(&inner.hub).remove(id, metrics);
    if let Some(cluster) = &cluster {
        cluster.follow(inner, key, side).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that takes every message at once and whose flushes wait, one in two (or
    /// never, when `quick`).
    #[derive(Default)]
    struct Slow {
        sent: Vec<Message>,
        flushes: usize,
        quick: bool,
    }

    impl futures_util::Sink<Message> for Slow {
        type Error = WsError;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.sent.push(item);
            Ok(())
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            self.flushes += 1;
            if !self.quick && self.flushes % 2 == 1 { Poll::Pending } else { Poll::Ready(Ok(())) }
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// `total` messages queued for a connection, and its writing half.
    fn queued(total: usize) -> (Outgoing, Arc<AtomicUsize>, mpsc::UnboundedSender<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        for i in 0..total {
            let message = Message::binary(vec![u8::try_from(i % 256).unwrap(); 3]);
            queued.fetch_add(message.len(), Ordering::Relaxed);
            tx.send(message).unwrap();
        }
        (Outgoing::new(rx, queued.clone()), queued, tx)
    }

    #[test]
    fn a_full_batch_whose_flush_waited_is_followed_by_the_rest() {
        let total = BATCH + 10;
        let (mut out, queued, _tx) = queued(total);
        let mut conn = Slow::default();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // A full batch goes, and its flush waits.
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!(conn.sent.len(), BATCH);
        // Woken by the connection: the flush ends, and the rest goes in the same wake (nothing
        // else would wake the loop for what was already queued).
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!(conn.sent.len(), total);
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!(queued.load(Ordering::Relaxed), 0, "every byte flushed is counted off");
        assert_eq!(out.batch, 0);
    }

    /// Counts its wakes.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_long_queue_goes_a_few_batches_a_wake_and_the_loop_comes_back() {
        let (mut out, queued, _tx) = queued(5 * BATCH);
        let mut conn = Slow { quick: true, ..Slow::default() };
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        // Two batches, then the client's side gets its turn, and the loop is woken again.
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!((conn.sent.len(), wakes.0.load(Ordering::Relaxed)), (ROUNDS * BATCH, 1));
        assert!(out.poll_write(&mut conn, &mut cx));
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!(conn.sent.len(), 5 * BATCH);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        // Nothing more queued: no wake asked for.
        let before = wakes.0.load(Ordering::Relaxed);
        assert!(out.poll_write(&mut conn, &mut cx));
        assert_eq!(wakes.0.load(Ordering::Relaxed), before);
    }
}
