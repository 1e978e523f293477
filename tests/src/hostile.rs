//! A hostile relay: it speaks the relay protocol well enough for hosts and devices to connect
//! (a pinned self-signed certificate, the challenge, the welcome), and then does whatever the
//! test tells it with the frames that pass: forward, drop, tamper, redirect, record, replay,
//! inject its own. It never checks a signature and routes anyone to anyone: it is the relay a
//! thief or an insider would run. It runs on a runtime of its own, so tests stay plain
//! blocking code that drives the real binaries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::relay::{FromRelay, ToRelay};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A frame as it passed: who sent it, to whom, and its end-to-end payload (a frame of the
/// end-to-end channel, `protocol::channel`).
#[derive(Debug, Clone)]
pub struct Seen {
    /// The sending connection's key.
    pub from: [u8; 32],
    /// The addressee named in the routing header.
    pub to: [u8; 32],
    /// The payload.
    pub payload: Vec<u8>,
}

/// What to do with a frame: a list of (deliver as from, deliver to, payload).
pub type Rule = Box<dyn FnMut(&Seen) -> Vec<([u8; 32], [u8; 32], Vec<u8>)> + Send>;

#[derive(Default)]
struct State {
    conns: HashMap<[u8; 32], Vec<mpsc::UnboundedSender<Vec<u8>>>>,
    log: Vec<Seen>,
    rule: Option<Rule>,
}

/// The running hostile relay.
pub struct Hostile {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Its certificate's SHA-256, hex (what a host pins).
    pub cert_sha256: String,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hostile {
    /// Starts it on an ephemeral loopback port, forwarding everything honestly.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let identity = relay::tls::self_signed(vec!["localhost".into()]).unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
        let shared = state.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(acceptor, tcp, state).await;
                });
            }
        });
        Self { addr, cert_sha256: hex::encode(identity.cert_sha256), state, _runtime: runtime }
    }

    /// Replaces what is done with each frame (`None`: forward it unchanged).
    pub fn set_rule(&self, rule: Option<Rule>) {
        lock(&self.state).rule = rule;
    }

    /// Every frame that passed so far.
    pub fn log(&self) -> Vec<Seen> {
        lock(&self.state).log.clone()
    }

    /// Forgets the frames seen so far.
    pub fn clear_log(&self) {
        lock(&self.state).log.clear();
    }

    /// Delivers a frame of its own making to `to`, claiming it comes from `from`.
    pub fn inject(&self, from: [u8; 32], to: [u8; 32], payload: &[u8]) {
        deliver(&lock(&self.state), from, to, payload);
    }

    /// Whether a connection with this key is open.
    pub fn connected(&self, key: &[u8; 32]) -> bool {
        lock(&self.state).conns.get(key).is_some_and(|c| c.iter().any(|tx| !tx.is_closed()))
    }
}

fn deliver(state: &State, from: [u8; 32], to: [u8; 32], payload: &[u8]) {
    for tx in state.conns.get(&to).into_iter().flatten() {
        let _ = tx.send(protocol::relay::data_frame(
            protocol::relay::FrameKind::To,
            &protocol::RelayKey(from),
            payload,
        ));
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let mut ws = tokio_tungstenite::accept_async(tls).await?;
    let challenge = FromRelay::Challenge { nonce: hex::encode([7u8; 32]) };
    ws.send(Message::text(serde_json::to_string(&challenge)?)).await?;
    // Whatever key the client claims is taken as is: this relay checks nothing.
    let key = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ToRelay::Hello { key, .. }) = serde_json::from_str(&text) {
                    break protocol::relay::hex32(&key, "key")
                        .map_err(|_| anyhow::anyhow!("bad key"))?;
                }
            }
            Some(Ok(_)) => {}
            _ => return Ok(()),
        }
    };
    ws.send(Message::text(serde_json::to_string(&FromRelay::Welcome)?)).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    lock(&state).conns.entry(key).or_default().push(tx);
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(frame) = out else { break };
                ws.send(Message::binary(frame)).await?;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(frame))) => {
                    let Ok((_, to, payload)) = protocol::relay::split_frame(&frame) else { continue };
                    let seen = Seen { from: key, to: to.0, payload: payload.to_vec() };
                    let mut state = lock(&state);
                    state.log.push(seen.clone());
                    let out = match state.rule.as_mut() {
                        Some(rule) => rule(&seen),
                        None => vec![(seen.from, seen.to, seen.payload.clone())],
                    };
                    for (from, to, payload) in out {
                        deliver(&state, from, to, &payload);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    }
    Ok(())
}

/// Wraps an envelope as the first message of a new resume stream, in the clear, as a relay
/// would forge one: a receiver refuses it as no channel frame before any envelope check.
pub fn fresh_stream(envelope: &[u8]) -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    protocol::resume::Frame::Data { epoch, seq: 1, base: 1, message: envelope }.encode()
}
