//! Relay nodes sharing routing through a real `nats-server` started here on loopback: three
//! nodes in-process (real TLS, real clients), a host at one and its devices at others. Frames,
//! broadcasts, presence, pairing knocks and the limits work across nodes as on one; a frame is
//! refused at the node it was sent to; NATS restarted mid-stream delivers no frame twice or to
//! the wrong key, and frames for other nodes fail closed while it is away.
//!
//! Without `nats-server` on the PATH (the project's test command installs Debian's), each test
//! says it skipped.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::relay::{FromRelay, Side};
use protocol::{RelayKey, SecretKey};
use relay::{Config, Limits, Server};
use relay_client::{Link, authenticate, connect, next_control, pinned_config};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/nats.rs"]
mod nats;
use nats::Nats;

struct Node {
    server: Server,
    addr: String,
    pin: [u8; 32],
}

async fn node(nats: &Nats, limits: Limits) -> Node {
    let identity = relay::tls::self_signed(vec!["localhost".into()]).unwrap();
    let pin = identity.cert_sha256;
    let server = Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity,
        limits,
        origins: vec![],
        serve_web: false,
    })
    .await
    .unwrap();
    server.join_cluster(&nats.url()).await.unwrap();
    let addr = server.local_addr().to_string();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve().await });
    Node { server, addr, pin }
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

async fn join(n: &Node, secret: &SecretKey, side: Side) -> Link {
    let (mut link, cert) = connect(&n.addr, "localhost", pinned_config(n.pin)).await.unwrap();
    authenticate(&mut link, secret, side, &cert).await.unwrap();
    link
}

async fn control(link: &mut Link, message: &protocol::relay::ToRelay) {
    link.send(Message::text(serde_json::to_string(message).unwrap())).await.unwrap();
}

async fn send(link: &mut Link, kind: u8, to: &SecretKey, payload: &[u8]) {
    let frame = [&[kind][..], to.public_key().as_bytes(), payload].concat();
    link.send(Message::binary(frame)).await.unwrap();
}

/// The next data frame (source, payload) within `wait`, skipping control messages.
async fn recv_within(link: &mut Link, wait: Duration) -> Option<([u8; 32], Vec<u8>)> {
    loop {
        match tokio::time::timeout(wait, link.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) => {
                let (_, from, payload) = protocol::relay::split_frame(&frame).unwrap();
                return Some((from.0, payload.to_vec()));
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

async fn recv(link: &mut Link) -> Option<([u8; 32], Vec<u8>)> {
    recv_within(link, Duration::from_secs(5)).await
}

async fn nothing(link: &mut Link) -> bool {
    recv_within(link, Duration::from_millis(500)).await.is_none()
}

/// The next control message that `wanted` accepts, within 10 s.
async fn control_until(link: &mut Link, wanted: impl Fn(&FromRelay) -> bool) -> FromRelay {
    loop {
        let got = tokio::time::timeout(Duration::from_secs(10), next_control(link))
            .await
            .unwrap()
            .unwrap();
        if wanted(&got) {
            return got;
        }
    }
}

/// Sends `payload` from `from` to `to` until it arrives (the route across nodes is in place
/// once the registration and the presence reached every node); gives up after 10 s.
async fn until_routed(from: &mut Link, to_key: &SecretKey, to: &mut Link, payload: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        send(from, 1, to_key, payload).await;
        if let Some((_, got)) = recv_within(to, Duration::from_millis(200)).await {
            assert_eq!(got, payload);
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never routed across nodes");
    }
}

/// Waits until node `n` has taken `count` registrations (its own hosts' and those other nodes
/// published), for at most `wait`.
async fn registrations_taken(n: &Node, name: &str, count: u64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while n.server.metrics().registrations.load(Relaxed) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} took no more than {} of {count} registrations",
            n.server.metrics().registrations.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hex_of(secret: &SecretKey) -> String {
    hex::encode(secret.public_key().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_one_node_and_its_devices_at_others() {
    let Some(nats) = Nats::start() else { return };
    let (a, b, c) = (
        node(&nats, Limits::default()).await,
        node(&nats, Limits::default()).await,
        node(&nats, Limits::default()).await,
    );
    let (h, d1, d2, stranger) = (key(1), key(2), key(3), key(4));
    let mut host = join(&a, &h, Side::Host).await;
    let keys = [RelayKey::of(&d1.public_key()), RelayKey::of(&d2.public_key())];
    control(&mut host, &protocol::relay::register(&h, 1, &keys, &[])).await;
    let mut dev1 = join(&b, &d1, Side::Device).await;
    let mut dev2 = join(&c, &d2, Side::Device).await;
    let mut other = join(&c, &stranger, Side::Device).await;

    // Presence across nodes: each device hears its host is online; the host hears of both.
    for dev in [&mut dev1, &mut dev2] {
        control_until(dev, |m| matches!(m, FromRelay::HostPresence { online: true, .. })).await;
    }
    for d in [&d1, &d2] {
        let want = FromRelay::Presence { device: hex_of(d), online: true };
        control_until(&mut host, |m| *m == want).await;
    }

    // Frames both ways, and a broadcast to devices at two other nodes, each once.
    until_routed(&mut dev1, &h, &mut host, b"from d1 at B").await;
    send(&mut host, 1, &d2, b"to d2 at C").await;
    assert_eq!(recv(&mut dev2).await, Some((*h.public_key().as_bytes(), b"to d2 at C".to_vec())));
    send(&mut host, 2, &h, b"everyone").await;
    assert_eq!(recv(&mut dev1).await.unwrap().1, b"everyone");
    assert_eq!(recv(&mut dev2).await.unwrap().1, b"everyone");
    assert!(nothing(&mut dev1).await && nothing(&mut dev2).await, "a frame came twice");

    // A stranger at C reaches nobody at A, and is told it is not allowed; nor may a device
    // address another device at another node.
    send(&mut other, 1, &h, b"let me in").await;
    let refused = control_until(&mut other, |m| matches!(m, FromRelay::Undeliverable { .. })).await;
    assert_eq!(refused, FromRelay::Undeliverable { peer: hex_of(&h), offline: false });
    send(&mut dev1, 1, &d2, b"sideways").await;
    assert!(nothing(&mut host).await && nothing(&mut dev2).await);

    // A new registration without d2, taken at A, cuts d2's route at C too.
    control(&mut host, &protocol::relay::register(&h, 2, &keys[..1], &[])).await;
    registrations_taken(&c, "C", 2, Duration::from_secs(10)).await;
    send(&mut dev2, 1, &h, b"still there?").await;
    assert!(nothing(&mut host).await);

    // The figures: frames went through the cluster, and each node knows the others' keys.
    assert!(a.server.metrics().cluster_frames_out.load(Relaxed) >= 2);
    assert!(b.server.metrics().cluster_frames_in.load(Relaxed) >= 1);
    let metrics = relay_metrics(&b).await;
    assert!(metrics.contains("relay_cluster_frames_in_total"), "{metrics}");
    assert!(metrics.contains("relay_cluster_presence"), "{metrics}");

    // A device leaving C is announced to its host at A.
    dev1.close(None).await.unwrap();
    let want = FromRelay::Presence { device: hex_of(&d1), online: false };
    control_until(&mut host, |m| *m == want).await;
    for n in [a, b, c] {
        n.server.shutdown().await;
    }
}

async fn relay_metrics(n: &Node) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(&n.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(pinned_config(n.pin));
    let mut stream = tls.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// Pairing across nodes: a device at B knocks with the token of an offer its host at A
/// registered, and reaches it; a guessed token opens nothing anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pairs_through_another_node() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (node(&nats, Limits::default()).await, node(&nats, Limits::default()).await);
    let (h, newcomer) = (key(1), key(2));
    let mut host = join(&a, &h, Side::Host).await;
    let token = protocol::PairingToken([0x77; 32]);
    control(&mut host, &protocol::relay::register(&h, 1, &[], &[token])).await;
    let mut new = join(&b, &newcomer, Side::Device).await;
    registrations_taken(&b, "B", 1, Duration::from_secs(10)).await;
    let guess = protocol::relay::ToRelay::Knock { host: hex_of(&h), token: hex::encode([1; 32]) };
    control(&mut new, &guess).await;
    control_until(&mut new, |m| matches!(m, FromRelay::Refused { .. })).await;
    let knock = protocol::relay::ToRelay::Knock { host: hex_of(&h), token: hex::encode(token.0) };
    control(&mut new, &knock).await;
    until_routed(&mut new, &h, &mut host, b"pair me").await;
    // The host answers through A to the device at B.
    send(&mut host, 1, &newcomer, b"welcome").await;
    assert_eq!(recv(&mut new).await.unwrap().1, b"welcome");
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// The limits are the node's the frame was sent to: an oversized frame for a host at A is
/// refused at B with 1009, and B's rate limit cuts off a device flooding a host at A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_at_the_node_a_frame_is_sent_to() {
    let Some(nats) = Nats::start() else { return };
    let small = Limits { max_frame: 4096, frames_per_sec: 5, burst: 5, ..Limits::default() };
    let (a, b) = (node(&nats, Limits::default()).await, node(&nats, small).await);
    let (h, d) = (key(1), key(2));
    let mut host = join(&a, &h, Side::Host).await;
    control(&mut host, &protocol::relay::register(&h, 1, &[RelayKey::of(&d.public_key())], &[]))
        .await;
    let mut dev = join(&b, &d, Side::Device).await;
    until_routed(&mut dev, &h, &mut host, b"small").await;
    send(&mut dev, 1, &h, &vec![0; 8192]).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), dev.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(code, 1009);
    assert!(nothing(&mut host).await, "the oversized frame reached the host");
    // Flooding: cut off at B by B's rate.
    let mut dev = join(&b, &d, Side::Device).await;
    for _ in 0..20 {
        if dev
            .send(Message::binary([&[1][..], h.public_key().as_bytes(), b"x"].concat()))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), dev.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(code, 1008);
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// NATS restarted mid-stream: while it is away, frames for another node fail closed (the
/// sender hears its peer is offline) and none is delivered later; once it is back, frames flow
/// again, each once, to the right key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_delivers_nothing_twice_or_astray() {
    let Some(mut nats) = Nats::start() else { return };
    let (a, b) = (node(&nats, Limits::default()).await, node(&nats, Limits::default()).await);
    let (h, d1, d2, d3) = (key(1), key(2), key(3), key(4));
    let mut host = join(&a, &h, Side::Host).await;
    let keys = [d1.public_key(), d2.public_key(), d3.public_key()].map(|k| RelayKey::of(&k));
    control(&mut host, &protocol::relay::register(&h, 1, &keys, &[])).await;
    let mut dev1 = join(&b, &d1, Side::Device).await;
    let mut dev2 = join(&b, &d2, Side::Device).await;
    until_routed(&mut dev1, &h, &mut host, b"before").await;
    for i in 0..20u8 {
        send(&mut host, 1, &d1, &[i]).await;
    }
    for i in 0..20u8 {
        assert_eq!(recv(&mut dev1).await.unwrap().1, vec![i]);
    }

    nats.stop();
    // Frames for the other node now fail: the sender is told its peer is offline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        send(&mut host, 1, &d1, b"while away").await;
        let said = tokio::time::timeout(Duration::from_millis(300), next_control(&mut host)).await;
        if let Ok(Ok(FromRelay::Undeliverable { offline: true, .. })) = said {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "frames did not fail while NATS was away");
    }
    // A node without NATS still takes new connections (its subscription waits for NATS).
    let mut dev3 = tokio::time::timeout(Duration::from_secs(5), join(&b, &d3, Side::Device))
        .await
        .expect("a node without NATS did not welcome a new connection");
    nats.restart();
    // Back: the route comes back by itself (hello, presence, registrations again). A frame the
    // node took just before it saw NATS go may come first, late.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    'back: loop {
        send(&mut host, 1, &d1, b"after").await;
        while let Some((_, got)) = recv_within(&mut dev1, Duration::from_millis(200)).await {
            match got.as_slice() {
                b"after" => break 'back,
                b"while away" => {}
                other => panic!("a frame astray: {other:?}"),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never routed again");
    }
    assert!(a.server.metrics().cluster_reconnects.load(Relaxed) >= 1);
    // Nothing sent while NATS was away arrives now, and nothing reached the other device.
    for i in 0..20u8 {
        send(&mut host, 1, &d1, &[100 + i]).await;
    }
    let mut got = Vec::new();
    while let Some((_, payload)) = recv_within(&mut dev1, Duration::from_millis(500)).await {
        got.push(payload);
    }
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![100 + i]).collect();
    // (A frame the node took just before it saw NATS go may still come, late: the resume
    // layer above takes each once. The numbered ones come each once, in order.)
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .filter(|p| p.as_slice() != b"after" && p.as_slice() != b"while away")
        .collect();
    assert_eq!(got, want, "frames lost, doubled or out of order");
    assert!(nothing(&mut dev2).await, "a frame went to the wrong key");
    // The device that came while NATS was away is reached across nodes now.
    until_routed(&mut host, &d3, &mut dev3, b"to the newcomer").await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// A node that joins later learns the knocks made before it, and a device that knocked at one
/// node goes on pairing through it; a node that stops says so, and its keys go offline at once
/// (not a heartbeat expiry later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_node_knows_earlier_knocks_and_a_stopping_node_says_goodbye() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (node(&nats, Limits::default()).await, node(&nats, Limits::default()).await);
    let (h, newcomer) = (key(1), key(2));
    let mut host = join(&a, &h, Side::Host).await;
    let token = protocol::PairingToken([0x55; 32]);
    control(&mut host, &protocol::relay::register(&h, 1, &[], &[token])).await;
    let mut new = join(&b, &newcomer, Side::Device).await;
    registrations_taken(&b, "B", 1, Duration::from_secs(10)).await;
    let knock = protocol::relay::ToRelay::Knock { host: hex_of(&h), token: hex::encode(token.0) };
    control(&mut new, &knock).await;
    until_routed(&mut new, &h, &mut host, b"knocked at B").await;

    // C joins after the knock; the device moves from B to C and, without knocking again,
    // reaches its host at A, and hears from it.
    let c = node(&nats, Limits::default()).await;
    new.close(None).await.unwrap();
    let mut moved = join(&c, &newcomer, Side::Device).await;
    until_routed(&mut moved, &h, &mut host, b"through C").await;
    send(&mut host, 1, &newcomer, b"welcome at C").await;
    assert_eq!(recv(&mut moved).await.unwrap().1, b"welcome at C");

    // A registered device at C hears its host at A go when A stops: at once, by A's goodbye.
    // (Without it, A's presence would expire at C no sooner than EXPIRY after A's last
    // heartbeat, which came at most a HEARTBEAT before A stopped: two seconds at the least.)
    let d = key(3);
    let devices = [RelayKey::of(&d.public_key())];
    control(&mut host, &protocol::relay::register(&h, 2, &devices, &[])).await;
    let mut dev = join(&c, &d, Side::Device).await;
    control_until(&mut dev, |m| matches!(m, FromRelay::HostPresence { online: true, .. })).await;
    let stopped = tokio::time::Instant::now();
    let stopping = tokio::spawn(async move { a.server.shutdown().await });
    let gone = |m: &FromRelay| matches!(m, FromRelay::HostPresence { online: false, .. });
    let before_expiry =
        relay::cluster::EXPIRY - relay::cluster::HEARTBEAT - Duration::from_millis(500);
    let said =
        tokio::time::timeout_at(stopped + before_expiry, control_until(&mut dev, gone)).await;
    assert!(said.is_ok(), "no goodbye: the host went offline only {:?} later", stopped.elapsed());
    stopping.await.unwrap();
    b.server.shutdown().await;
    c.server.shutdown().await;
}

/// A node that joins a cluster whose node holds thousands of hosts learns every one: their keys
/// (a list in parts, more than one part holds) and their registrations (more than the queue of
/// control messages holds at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_learns_thousands_of_keys_and_registrations() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats, Limits::default()).await;
    let hosts = relay::cluster::SNAPSHOT_CHUNK as u64 + 500;
    let mut held = Vec::new();
    for i in 0..hosts {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        let secret = SecretKey::from_seed(&seed);
        let mut conn = a.server.connect_local();
        authenticate(&mut conn, &secret, Side::Host, &a.pin).await.unwrap();
        let register = protocol::relay::register(&secret, 1, &[], &[]);
        conn.send(Message::text(serde_json::to_string(&register).unwrap())).await.unwrap();
        held.push(conn);
    }
    // All taken at A before B joins: B learns them from A's answer to its hello.
    registrations_taken(&a, "A", hosts, Duration::from_secs(30)).await;
    let b = node(&nats, Limits::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let keys = b.server.metrics().cluster_presence.load(Relaxed);
        let registrations = b.server.metrics().registrations.load(Relaxed);
        if keys == hosts && registrations == hosts {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B learned {keys} keys and {registrations} registrations of {hosts}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// Whatever else publishes on the cluster's subjects can add no route the host did not sign: a
/// registration naming a stranger with a forged signature, one signed by the stranger itself,
/// and the host's own earlier registration replayed after a newer one dropped a device, all
/// change nothing at the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_replayed_registration_on_nats_adds_no_route() {
    let Some(nats) = Nats::start() else { return };
    let (a, b) = (node(&nats, Limits::default()).await, node(&nats, Limits::default()).await);
    let (h, dropped, stranger) = (key(1), key(2), key(3));
    let mut host = join(&a, &h, Side::Host).await;
    let old = protocol::relay::register(&h, 1, &[RelayKey::of(&dropped.public_key())], &[]);
    control(&mut host, &old).await;
    control(&mut host, &protocol::relay::register(&h, 2, &[], &[])).await;
    registrations_taken(&b, "B", 2, Duration::from_secs(10)).await;

    let publisher = async_nats::connect(nats.url()).await.unwrap();
    let publish = |registration: protocol::relay::ToRelay| {
        let mut json = serde_json::to_value(registration).unwrap();
        json["node"] = "not-a-relay".into();
        json["host"] = hex_of(&h).into();
        serde_json::to_vec(&json).unwrap()
    };
    let stranger_key = RelayKey::of(&stranger.public_key());
    let mut forged = protocol::relay::register(&h, 9, &[stranger_key], &[]);
    if let protocol::relay::ToRelay::Register { signature, .. } = &mut forged {
        *signature = hex::encode([0u8; 64]);
    }
    let by_stranger = protocol::relay::register(&stranger, 10, &[stranger_key], &[]);
    for message in [publish(forged), publish(by_stranger), publish(old)] {
        publisher.publish("agent-bridge.control", message.into()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Neither the stranger nor the dropped device reaches the host, at either node.
    for (n, secret) in [(&a, &stranger), (&b, &stranger), (&a, &dropped), (&b, &dropped)] {
        let mut device = join(n, secret, Side::Device).await;
        send(&mut device, 1, &h, b"let me in").await;
        let said =
            control_until(&mut device, |m| matches!(m, FromRelay::Undeliverable { .. })).await;
        assert_eq!(said, FromRelay::Undeliverable { peer: hex_of(&h), offline: false });
    }
    assert!(nothing(&mut host).await, "a route the host did not sign");
    assert_eq!(b.server.metrics().registrations.load(Relaxed), 2, "B took a registration");
    a.server.shutdown().await;
    b.server.shutdown().await;
}
