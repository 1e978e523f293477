//! A real relay in-process on 127.0.0.1:0 with real TLS, and real clients: authentication,
//! routing only between a host and the devices it registered, limits that cut off one
//! offender and keep serving everyone else, certificate pinning, health and metrics, shutdown.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::relay::{FromRelay, Side, ToRelay};
use protocol::{RelayKey, SecretKey};
use relay::{Config, Limits, Server};
use relay_client::{Link, LinkError, authenticate, connect, next_control, pinned_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

struct Relay {
    server: Server,
    addr: String,
    pin: [u8; 32],
}

async fn relay(limits: Limits) -> Relay {
    relay_serving(limits, false).await
}

/// A relay that serves the web UI too (`serve_web`) or not.
async fn relay_serving(limits: Limits, serve_web: bool) -> Relay {
    let identity = relay::tls::self_signed(vec!["localhost".into()]).unwrap();
    let pin = identity.cert_sha256;
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity,
        limits,
        origins: vec!["https://relay.test".into()],
        serve_web,
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve().await });
    Relay { server, addr, pin }
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

async fn join(r: &Relay, secret: &SecretKey, side: Side) -> Link {
    let (mut link, cert) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    authenticate(&mut link, secret, side, &cert).await.unwrap();
    link
}

async fn register(link: &mut Link, host: &SecretKey, counter: u64, devices: &[&SecretKey]) {
    let keys: Vec<RelayKey> = devices.iter().map(|d| RelayKey::of(&d.public_key())).collect();
    let message = protocol::relay::register(host, counter, &keys, &[]);
    link.send(Message::text(serde_json::to_string(&message).unwrap())).await.unwrap();
}

/// Waits until the relay has taken `n` more of what `counter` counts than `before` (a control
/// message on one connection, before a frame on another depends on it). Panics after 5 s.
async fn taken(counter: &std::sync::atomic::AtomicU64, before: u64, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter.load(std::sync::atomic::Ordering::Relaxed) < before + n {
        assert!(tokio::time::Instant::now() < deadline, "the relay did not take it");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A data frame as bytes on the wire: `kind` ‖ `to`'s key ‖ payload (kind 1: to that peer, 2:
/// to all of a host's devices), written out here so the test pins the format.
async fn send(link: &mut Link, kind: u8, to: &SecretKey, payload: &[u8]) {
    let frame = [&[kind][..], to.public_key().as_bytes(), payload].concat();
    link.send(Message::binary(frame)).await.unwrap();
}

/// The next data frame (source, payload), skipping control messages; `None` after 2 s.
async fn recv(link: &mut Link) -> Option<([u8; 32], Vec<u8>)> {
    recv_within(link, Duration::from_secs(2)).await
}

/// Expects nothing: no data frame within half a second (a routed frame takes microseconds).
async fn nothing(link: &mut Link) -> bool {
    recv_within(link, Duration::from_millis(500)).await.is_none()
}

async fn recv_within(link: &mut Link, wait: Duration) -> Option<([u8; 32], Vec<u8>)> {
    loop {
        match tokio::time::timeout(wait, link.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                let (kind, from, payload) = protocol::relay::split_frame(&frame).unwrap();
                assert_eq!(kind, protocol::relay::FrameKind::To);
                return Some((from.0, payload.to_vec()));
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

/// Reads until the relay closes; returns the close code and reason.
async fn closed(link: &mut Link) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), link.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return (f.code.into(), f.reason.to_string()),
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) => return (1005, String::new()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) => return (1006, String::new()),
            Err(_) => panic!("the relay did not close the connection"),
        }
    }
}

async fn wait_presence(link: &mut Link, device: &SecretKey, online: bool) {
    let want = FromRelay::Presence { device: hex::encode(device.public_key().as_bytes()), online };
    loop {
        let got = tokio::time::timeout(Duration::from_secs(5), next_control(link))
            .await
            .unwrap()
            .unwrap();
        if got == want {
            return;
        }
    }
}

#[tokio::test]
async fn routes_only_between_a_host_and_its_registered_devices() {
    let r = relay(Limits::default()).await;
    let (h, d1, d2, stranger) = (key(1), key(2), key(3), key(4));
    let mut host = join(&r, &h, Side::Host).await;
    let mut dev1 = join(&r, &d1, Side::Device).await;
    let mut dev2 = join(&r, &d2, Side::Device).await;
    let mut other = join(&r, &stranger, Side::Device).await;
    register(&mut host, &h, 1, &[&d1, &d2]).await;
    wait_presence(&mut host, &d1, true).await;

    send(&mut dev1, 1, &h, b"from d1").await;
    assert_eq!(recv(&mut host).await, Some((*d1.public_key().as_bytes(), b"from d1".to_vec())));
    send(&mut host, 1, &d2, b"to d2").await;
    assert_eq!(recv(&mut dev2).await, Some((*h.public_key().as_bytes(), b"to d2".to_vec())));
    send(&mut host, 2, &h, b"everyone").await;
    assert_eq!(recv(&mut dev1).await.unwrap().1, b"everyone");
    assert_eq!(recv(&mut dev2).await.unwrap().1, b"everyone");

    // A stranger cannot even deliver a frame to the host, nor the host to it.
    send(&mut other, 1, &h, b"let me in").await;
    send(&mut host, 1, &stranger, b"hello?").await;
    assert!(nothing(&mut host).await);
    assert!(nothing(&mut other).await);
    // Nor may a device address another device.
    send(&mut dev1, 1, &d2, b"sideways").await;
    assert!(nothing(&mut dev2).await);
    assert!(r.server.metrics().drops.load(std::sync::atomic::Ordering::Relaxed) >= 3);

    // A new registration without d2 cuts its route at once; an old counter is refused.
    let registrations = &r.server.metrics().registrations;
    let before = registrations.load(std::sync::atomic::Ordering::Relaxed);
    register(&mut host, &h, 2, &[&d1]).await;
    taken(registrations, before, 1).await;
    send(&mut dev2, 1, &h, b"still there?").await;
    assert!(nothing(&mut host).await);
    register(&mut host, &h, 1, &[&d1, &d2]).await;
    let refused = tokio::time::timeout(Duration::from_secs(5), next_control(&mut host))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(refused, FromRelay::Refused { ref reason } if reason.contains("not newer")),
        "{refused:?}"
    );

    // Presence: a device going away is announced to its host.
    dev1.close(None).await.unwrap();
    wait_presence(&mut host, &d1, false).await;
    r.server.shutdown().await;
}

async fn control(link: &mut Link, message: &ToRelay) {
    link.send(Message::text(serde_json::to_string(message).unwrap())).await.unwrap();
}

/// A device the host has not registered reaches it only by knocking with the token of an offer
/// the host registered, and only while that offer stays open.
#[tokio::test]
async fn a_new_device_reaches_the_host_only_through_an_open_pairing_offer() {
    let r = relay(Limits::default()).await;
    let (h, newcomer, guesser) = (key(1), key(2), key(3));
    let mut host = join(&r, &h, Side::Host).await;
    let mut new = join(&r, &newcomer, Side::Device).await;
    let mut guess = join(&r, &guesser, Side::Device).await;
    let token = [0x77; 32];
    let (registrations, knocks) = (&r.server.metrics().registrations, &r.server.metrics().knocks);
    control(&mut host, &protocol::relay::register(&h, 1, &[], &[protocol::PairingToken(token)]))
        .await;
    taken(registrations, 0, 1).await;

    // Before knocking, nothing passes; a wrong token is refused and opens nothing.
    send(&mut new, 1, &h, b"before").await;
    assert!(nothing(&mut host).await);
    let h_hex = hex::encode(h.public_key().as_bytes());
    control(&mut guess, &ToRelay::Knock { host: h_hex.clone(), token: hex::encode([1u8; 32]) })
        .await;
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(5), next_control(&mut guess))
            .await
            .unwrap()
            .unwrap()
        {
            FromRelay::Refused { reason } => break reason,
            _ => continue,
        }
    };
    assert!(refused.contains("no such pairing offer"), "{refused}");
    send(&mut guess, 1, &h, b"guessed").await;
    assert!(nothing(&mut host).await);

    // With the token, the handshake flows both ways; broadcasts still reach registered devices only.
    control(&mut new, &ToRelay::Knock { host: h_hex, token: hex::encode(token) }).await;
    taken(knocks, 0, 1).await;
    send(&mut new, 1, &h, b"hello").await;
    assert_eq!(recv(&mut host).await.unwrap().1, b"hello");
    send(&mut host, 1, &newcomer, b"welcome").await;
    assert_eq!(recv(&mut new).await.unwrap().1, b"welcome");
    send(&mut host, 2, &h, b"everyone").await;
    assert!(nothing(&mut new).await);

    // The host closes the offer: the route goes with it.
    control(&mut host, &protocol::relay::register(&h, 2, &[], &[])).await;
    taken(registrations, 1, 1).await;
    send(&mut new, 1, &h, b"after").await;
    assert!(nothing(&mut host).await);
    r.server.shutdown().await;
}

/// A browser cannot see the certificate: it binds its answer to the origin it loaded the page
/// from, which the relay accepts only for the origins it serves.
#[tokio::test]
async fn a_browser_authenticates_by_the_origin_the_relay_serves() {
    let r = relay(Limits::default()).await;
    let device = key(9);
    let (mut link, _cert) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let ours = protocol::relay::origin_binding("https://relay.test");
    authenticate(&mut link, &device, Side::Device, &ours).await.unwrap();
    let (mut link, _cert) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let theirs = protocol::relay::origin_binding("https://relay.test.evil.example");
    let refused = authenticate(&mut link, &device, Side::Device, &theirs).await;
    assert!(
        matches!(refused, Err(LinkError::Closed { code: 4003, .. })),
        "an answer bound to another origin: {refused:?}"
    );
    r.server.shutdown().await;
}

#[tokio::test]
async fn authentication_failures_are_refused() {
    let r = relay(Limits::default()).await;
    // Claiming another key than the one that signs.
    let (mut link, cert) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let FromRelay::Challenge { nonce } = next_control(&mut link).await.unwrap() else { panic!() };
    let nonce: [u8; 32] = hex::decode(nonce).unwrap().try_into().unwrap();
    let ToRelay::Hello { signature, .. } =
        protocol::relay::hello(&key(1), Side::Device, &nonce, &cert)
    else {
        panic!()
    };
    let forged = ToRelay::Hello {
        side: Side::Device,
        key: hex::encode(key(2).public_key().as_bytes()),
        signature,
    };
    link.send(Message::text(serde_json::to_string(&forged).unwrap())).await.unwrap();
    assert_eq!(closed(&mut link).await.0, 4003);

    // Replaying an answer captured on another connection (another nonce).
    let captured = protocol::relay::hello(&key(1), Side::Device, &nonce, &cert);
    let (mut link, _) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let _challenge = next_control(&mut link).await.unwrap();
    link.send(Message::text(serde_json::to_string(&captured).unwrap())).await.unwrap();
    assert_eq!(closed(&mut link).await.0, 4003);

    // An answer bound to another relay's certificate.
    let (mut link, _) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let FromRelay::Challenge { nonce } = next_control(&mut link).await.unwrap() else { panic!() };
    let nonce: [u8; 32] = hex::decode(nonce).unwrap().try_into().unwrap();
    let elsewhere = protocol::relay::hello(&key(1), Side::Device, &nonce, &[0xee; 32]);
    link.send(Message::text(serde_json::to_string(&elsewhere).unwrap())).await.unwrap();
    assert_eq!(closed(&mut link).await.0, 4003);

    // Data before authentication.
    let (mut link, _) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let _challenge = next_control(&mut link).await.unwrap();
    link.send(Message::binary(vec![1; 40])).await.unwrap();
    assert_eq!(closed(&mut link).await.0, 4003);
    assert!(r.server.metrics().auth_failures.load(std::sync::atomic::Ordering::Relaxed) >= 4);

    // The relay still serves honest clients.
    let _ok = join(&r, &key(9), Side::Host).await;
}

#[tokio::test]
async fn a_wrong_certificate_is_refused_unless_pinned() {
    let r = relay(Limits::default()).await;
    let wrong = connect(&r.addr, "localhost", pinned_config([0xab; 32])).await;
    assert!(matches!(wrong, Err(LinkError::Connect(_))), "{:?}", wrong.err());
    assert!(connect(&r.addr, "localhost", pinned_config(r.pin)).await.is_ok());
    // The system's authorities do not vouch for a self-signed relay either.
    match relay_client::system_roots_config() {
        Ok(system) => assert!(connect(&r.addr, "localhost", system).await.is_err()),
        Err(e) => println!("no system certificate authorities here ({e}): nothing to trust at all"),
    }
}

#[tokio::test]
async fn oversized_and_garbage_frames_get_a_close_code_and_others_keep_going() {
    let limits = Limits { max_frame: 64 * 1024, ..Limits::default() };
    let r = relay(limits).await;
    let (h, d) = (key(1), key(2));
    let mut host = join(&r, &h, Side::Host).await;
    let mut dev = join(&r, &d, Side::Device).await;
    register(&mut host, &h, 1, &[&d]).await;
    wait_presence(&mut host, &d, true).await;

    let mut big = join(&r, &key(5), Side::Device).await;
    let _ = big.send(Message::binary(vec![1; 128 * 1024])).await;
    assert_eq!(closed(&mut big).await.0, 1009);

    let mut short = join(&r, &key(6), Side::Device).await;
    short.send(Message::binary(vec![1; 5])).await.unwrap();
    assert_eq!(closed(&mut short).await.0, 1008);

    let mut odd = join(&r, &key(8), Side::Device).await;
    send(&mut odd, 3, &h, b"a kind no relay knows").await;
    let (code, reason) = closed(&mut odd).await;
    assert_eq!((code, reason.as_str()), (1008, "unknown data frame kind 3"));

    let mut chatter = join(&r, &key(7), Side::Device).await;
    chatter.send(Message::text("{\"type\":\"nonsense\"}")).await.unwrap();
    assert_eq!(closed(&mut chatter).await.0, 1008);

    send(&mut dev, 1, &h, b"fine").await;
    assert_eq!(recv(&mut host).await.unwrap().1, b"fine");
}

#[tokio::test]
async fn the_relay_says_what_each_connection_may_send() {
    let limits =
        Limits { frames_per_sec: 20, burst: 40, host_frames_per_sec: 50, ..Limits::default() };
    let r = relay(limits).await;
    let (h, d1, d2, d3) = (key(1), key(2), key(3), key(4));
    let mut dev = join(&r, &d1, Side::Device).await;
    let rate = |frames_per_sec, burst| FromRelay::Rate { frames_per_sec, burst };
    // The next rate the relay says, past presence notices.
    async fn said(link: &mut Link) -> FromRelay {
        loop {
            match next_control(link).await.unwrap() {
                FromRelay::Presence { .. } => continue,
                other => return other,
            }
        }
    }
    assert_eq!(said(&mut dev).await, rate(20, 40));
    // A host is a device until it registers devices; then a device's rate for each, up to its
    // most.
    let mut host = join(&r, &h, Side::Host).await;
    assert_eq!(said(&mut host).await, rate(20, 40));
    register(&mut host, &h, 1, &[&d1, &d2]).await;
    assert_eq!(said(&mut host).await, rate(40, 80));
    register(&mut host, &h, 2, &[&d1, &d2, &d3]).await;
    let most = Limits::default().host_burst;
    assert_eq!(said(&mut host).await, rate(50, 120.min(most)));
}

#[tokio::test]
async fn a_flood_is_cut_off_by_the_rate_limit() {
    let limits = Limits { frames_per_sec: 50, burst: 50, ..Limits::default() };
    let r = relay(limits).await;
    let (h, d) = (key(1), key(2));
    let mut host = join(&r, &h, Side::Host).await;
    register(&mut host, &h, 1, &[&d]).await;
    let mut dev = join(&r, &d, Side::Device).await;
    for _ in 0..500 {
        if dev
            .send(Message::binary(protocol::relay::data_frame(
                protocol::relay::FrameKind::To,
                &RelayKey::of(&h.public_key()),
                b"x",
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = closed(&mut dev).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("rate limit"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_without_slowing_its_neighbours() {
    let limits = Limits {
        max_queued: 4 << 20,
        frames_per_sec: 100_000,
        burst: 100_000,
        host_frames_per_sec: 100_000,
        host_burst: 100_000,
        ..Limits::default()
    };
    let r = relay(limits).await;
    let (h, slow_key, fast_key) = (key(1), key(2), key(3));
    let mut host = join(&r, &h, Side::Host).await;
    let mut slow = join(&r, &slow_key, Side::Device).await;
    let mut fast = join(&r, &fast_key, Side::Device).await;
    register(&mut host, &h, 1, &[&slow_key, &fast_key]).await;
    wait_presence(&mut host, &fast_key, true).await;

    // The fast device reads everything meant for it while the slow one reads nothing.
    let expected = 2000;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < expected {
            match recv(&mut fast).await {
                Some(_) => got += 1,
                None => break,
            }
        }
        got
    });
    // 2000 × 16 KiB = 32 MiB towards the slow device: far more than the socket buffers and the
    // 4 MiB queue hold. Sent at a pace the fast device keeps up with.
    let payload = vec![7u8; 16 * 1024];
    for i in 0..expected {
        send(&mut host, 1, &slow_key, &payload).await;
        send(&mut host, 1, &fast_key, &payload).await;
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let got = reader.await.unwrap();
    let m = r.server.metrics();
    assert_eq!(
        got,
        expected,
        "the fast device missed frames: in {} out {} drops {} limit {}",
        m.frames_in.load(std::sync::atomic::Ordering::Relaxed),
        m.frames_out.load(std::sync::atomic::Ordering::Relaxed),
        m.drops.load(std::sync::atomic::Ordering::Relaxed),
        m.limit_closes.load(std::sync::atomic::Ordering::Relaxed)
    );
    let (code, reason) = closed(&mut slow).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too slow"), "{reason}");
}

#[tokio::test]
async fn health_metrics_web_ui_and_per_key_cap() {
    let limits = Limits { max_per_key: 1, ..Limits::default() };
    let r = relay_serving(limits.clone(), true).await;
    let _first = join(&r, &key(1), Side::Host).await;
    let (mut second, cert) = connect(&r.addr, "localhost", pinned_config(r.pin)).await.unwrap();
    let refused = authenticate(&mut second, &key(1), Side::Host, &cert).await;
    assert!(matches!(refused, Err(LinkError::Closed { code: 4009, .. })), "{refused:?}");

    // The web UI shares the port, with its content security policy.
    for (path, expect) in [
        ("/health", "ok"),
        ("/metrics", "relay_connections_total"),
        ("/pair", "Content-Security-Policy: default-src 'none'"),
        ("/app.js", "X-Content-Type-Options: nosniff"),
    ] {
        let mut tls = tls_to(&r).await;
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        let _ = tls.read_to_string(&mut body).await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(expect), "{body}");
    }

    // Unless told to, a relay serves no code: the same requests find no page, only its health.
    let bare = relay(limits).await;
    for (path, found) in [("/health", true), ("/", false), ("/pair", false), ("/app.js", false)] {
        let mut tls = tls_to(&bare).await;
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        let _ = tls.read_to_string(&mut body).await;
        let status = if found { "HTTP/1.1 200" } else { "HTTP/1.1 404" };
        assert!(body.starts_with(status), "{path}: {body}");
    }
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_a_reason() {
    let r = relay(Limits::default()).await;
    let mut a = join(&r, &key(1), Side::Host).await;
    let mut b = join(&r, &key(2), Side::Device).await;
    r.server.shutdown().await;
    assert_eq!(closed(&mut a).await, (1001, "relay shutting down".into()));
    assert_eq!(closed(&mut b).await.0, 1001);
    assert!(connect(&r.addr, "localhost", pinned_config(r.pin)).await.is_err(), "still accepting");
}

/// One HTTPS request on its own connection; the whole answer.
/// A TLS connection to the relay, its certificate pinned.
async fn tls_to(r: &Relay) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&r.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(pinned_config(r.pin)).connect(name, tcp).await.unwrap()
}

async fn https(r: &Relay, request: &[u8]) -> String {
    let mut tls = tls_to(r).await;
    tls.write_all(request).await.unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    answer
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A client of the relay's event-stream transport, as a browser's fallback is.
struct EventStream {
    events: tokio::io::BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    path: String,
}

impl EventStream {
    async fn open(r: &Relay) -> Self {
        let mut tls = tls_to(r).await;
        tls.write_all(b"GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut stream = Self { events: tokio::io::BufReader::new(tls), path: String::new() };
        let session = stream.next().await.strip_prefix('s').unwrap().to_owned();
        stream.path = format!("/sse/{session}");
        stream
    }

    /// The next event's data.
    async fn next(&mut self) -> String {
        use tokio::io::AsyncBufReadExt as _;
        loop {
            let mut line = String::new();
            assert!(self.events.read_line(&mut line).await.unwrap() > 0, "the stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                return data.trim_end().to_owned();
            }
        }
    }

    /// Answers the challenge (the first event after the session's name) as `secret`.
    async fn authenticate(&mut self, r: &Relay, secret: &SecretKey) {
        let challenge = self.next().await;
        let Ok(FromRelay::Challenge { nonce }) =
            serde_json::from_slice(&b64(challenge.strip_prefix('t').unwrap()))
        else {
            panic!("{challenge}")
        };
        let mut nonce_bytes = [0u8; 32];
        hex::decode_to_slice(&nonce, &mut nonce_bytes).unwrap();
        let hello = protocol::relay::hello(secret, Side::Device, &nonce_bytes, &r.pin);
        let body = [b"t".as_slice(), serde_json::to_string(&hello).unwrap().as_bytes()].concat();
        assert!(https(r, &post(&self.path, &body)).await.starts_with("HTTP/1.1 204"));
        let welcome = self.next().await;
        assert!(
            matches!(
                serde_json::from_slice(&b64(welcome.strip_prefix('t').unwrap())),
                Ok(FromRelay::Welcome)
            ),
            "{welcome}"
        );
        // Then what it may send: a device's rate.
        let rate = self.next().await;
        assert_eq!(
            serde_json::from_slice::<FromRelay>(&b64(rate.strip_prefix('t').unwrap())).unwrap(),
            FromRelay::Rate { frames_per_sec: 200, burst: 400 }
        );
    }
}

fn b64(s: &str) -> Vec<u8> {
    base64_simd::STANDARD.decode_to_vec(s.as_bytes()).unwrap()
}

#[tokio::test]
async fn the_event_stream_fallback_carries_a_session_like_a_websocket() {
    let r = relay(Limits::default()).await;
    let (host, phone) = (key(1), key(2));
    let mut host_link = join(&r, &host, Side::Host).await;
    register(&mut host_link, &host, 1, &[&phone]).await;
    let mut stream = EventStream::open(&r).await;
    let path = stream.path.clone();

    // Posts to another session, over the limit, or of no known kind are refused.
    assert!(https(&r, &post("/sse/00", b"t{}")).await.starts_with("HTTP/1.1 404"));
    // (Refused on its length alone, before any of the body is read.)
    let big = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        Limits::default().max_frame + 2
    );
    assert!(https(&r, big.as_bytes()).await.starts_with("HTTP/1.1 413"));
    assert!(https(&r, &post(&path, b"x")).await.starts_with("HTTP/1.1 400"));
    stream.authenticate(&r, &phone).await;
    // Welcomed, the device hears that its host is connected.
    let presence = stream.next().await;
    assert_eq!(
        serde_json::from_slice::<FromRelay>(&b64(presence.strip_prefix('t').unwrap())).unwrap(),
        FromRelay::HostPresence { host: hex::encode(host.public_key().as_bytes()), online: true }
    );

    // Both ways, the relay naming the sender as on a WebSocket.
    let frame = protocol::relay::data_frame(
        protocol::relay::FrameKind::To,
        &RelayKey::of(&host.public_key()),
        b"from the phone",
    );
    let body = [b"b".as_slice(), &frame].concat();
    assert!(https(&r, &post(&path, &body)).await.starts_with("HTTP/1.1 204"));
    assert_eq!(
        recv(&mut host_link).await.unwrap(),
        (*phone.public_key().as_bytes(), b"from the phone".to_vec())
    );
    send(&mut host_link, 1, &phone, b"to the phone").await;
    let event = stream.next().await;
    let frame = b64(event.strip_prefix('b').unwrap());
    let (kind, from, payload) = protocol::relay::split_frame(&frame).unwrap();
    assert_eq!(
        (kind, from, payload),
        (
            protocol::relay::FrameKind::To,
            RelayKey::of(&host.public_key()),
            b"to the phone".as_slice()
        )
    );

    // Closing the event stream ends the session at once (not at the idle timeout).
    drop(stream);
    let gone = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let FromRelay::Presence { online: false, .. } =
                next_control(&mut host_link).await.unwrap()
            {
                return;
            }
        }
    });
    assert!(gone.await.is_ok(), "the host was not told that the phone went away");
}

#[tokio::test]
async fn an_event_stream_lives_while_its_client_answers_pings_and_no_longer() {
    let limits = Limits {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let r = relay(limits).await;
    let mut stream = EventStream::open(&r).await;
    stream.authenticate(&r, &key(3)).await;
    // Past several idle timeouts, answering each ping with a posted pong.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        let event = tokio::time::timeout(Duration::from_secs(1), stream.next()).await.unwrap();
        assert_eq!(event, "p", "only pings while nothing else happens");
        assert!(https(&r, &post(&stream.path, b"p")).await.starts_with("HTTP/1.1 204"));
    }
    // Silent from now on: closed for idleness, with the code and reason a WebSocket gets.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let event = stream.next().await;
            if let Some(body) = event.strip_prefix('c') {
                return String::from_utf8(b64(body)).unwrap();
            }
        }
    });
    assert_eq!(closed.await.unwrap(), "1001 idle timeout");
}

#[tokio::test]
async fn a_host_in_the_relays_own_process_gets_the_same_session_without_tls() {
    let r = relay(Limits::default()).await;
    let (host, phone, stranger) = (key(1), key(2), key(3));
    // Bound to the relay's certificate as over TLS: an answer bound to another is refused.
    let mut wrong = r.server.connect_local();
    assert!(authenticate(&mut wrong, &host, Side::Host, &[7u8; 32]).await.is_err());
    let mut local = r.server.connect_local();
    authenticate(&mut local, &host, Side::Host, &r.pin).await.unwrap();
    let message = protocol::relay::register(&host, 1, &[RelayKey::of(&phone.public_key())], &[]);
    local.send(Message::text(serde_json::to_string(&message).unwrap())).await.unwrap();
    let mut device = join(&r, &phone, Side::Device).await;
    let online =
        FromRelay::Presence { device: hex::encode(phone.public_key().as_bytes()), online: true };
    while tokio::time::timeout(Duration::from_secs(5), next_control(&mut local))
        .await
        .unwrap()
        .unwrap()
        != online
    {}
    // Both ways, between the process's own host and a device over TLS.
    send(&mut device, 1, &host, b"from the phone").await;
    let from_phone = loop {
        match tokio::time::timeout(Duration::from_secs(2), local.next()).await.unwrap() {
            Some(Ok(Message::Binary(frame))) => {
                let (_, from, payload) = protocol::relay::split_frame(&frame).unwrap();
                break (from.0, payload.to_vec());
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(from_phone, (*phone.public_key().as_bytes(), b"from the phone".to_vec()));
    let frame = protocol::relay::data_frame(
        protocol::relay::FrameKind::To,
        &RelayKey::of(&phone.public_key()),
        b"from the host",
    );
    local.send(Message::binary(frame)).await.unwrap();
    assert_eq!(
        recv(&mut device).await,
        Some((*host.public_key().as_bytes(), b"from the host".to_vec()))
    );
    // Only registered devices reach it, as over TLS.
    let mut other = join(&r, &stranger, Side::Device).await;
    send(&mut other, 1, &host, b"let me in").await;
    let nothing_came = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(Ok(Message::Binary(_))) = local.next().await {
                return;
            }
        }
    })
    .await
    .is_err();
    assert!(nothing_came, "a stranger's frame reached the host");
    // Counted, and closed with a reason at shutdown like the others.
    assert!(r.server.metrics().connections.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    r.server.shutdown().await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), local.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1001);
}

/// A burst far larger than the socket's buffers, to a device that reads all it can: every
/// frame arrives, and no one is cut off as too slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_a_device_that_reads_it_all() {
    let limits = Limits {
        max_queued: 64 << 20,
        frames_per_sec: 100_000,
        burst: 100_000,
        host_frames_per_sec: 100_000,
        host_burst: 100_000,
        ..Limits::default()
    };
    let r = relay(limits).await;
    let (h, d) = (key(1), key(2));
    let mut host = join(&r, &h, Side::Host).await;
    let mut device = join(&r, &d, Side::Device).await;
    register(&mut host, &h, 1, &[&d]).await;
    wait_presence(&mut host, &d, true).await;
    let expected = 600;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < expected {
            match recv_within(&mut device, Duration::from_secs(10)).await {
                Some(_) => got += 1,
                None => break,
            }
        }
        got
    });
    // 600 × 16 KiB, at once: the writes wait for the device to read.
    let payload = vec![9u8; 16 * 1024];
    for _ in 0..expected {
        send(&mut host, 1, &d, &payload).await;
    }
    let got = reader.await.unwrap();
    let m = r.server.metrics();
    assert_eq!(
        (got, m.limit_closes.load(std::sync::atomic::Ordering::Relaxed)),
        (expected, 0),
        "frames stalled: {got} of {expected} arrived"
    );
}
