//! Exactly-once delivery through the real relay across dropped connections and a relay
//! restart: 1,000 messages each way between a host and a device, 5 random drops, one restart;
//! every one in the end-to-end channel, which each connection of the device opens anew.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use protocol::relay::Side;
use protocol::{RelayKey, SecretKey};
use relay::{Config, Limits, Server};
use relay_client::{ChannelSetup, Client, ClientConfig, Inbound, pinned_config};

async fn start(addr: std::net::SocketAddr, identity: relay::tls::Identity) -> Server {
    // The clients pace themselves below this rate, resent backlogs included.
    let limits = Limits {
        frames_per_sec: 2_000,
        burst: 2_000,
        host_frames_per_sec: 2_000,
        host_burst: 2_000,
        ..Limits::default()
    };
    let server = Server::bind(Config {
        listen: addr,
        identity,
        limits,
        origins: Vec::new(),
        serve_web: false,
    })
    .await
    .unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve().await });
    server
}

/// The static channel keys of the host (seed 1) and the device (seed 2).
fn statics(seed: u8) -> ([u8; 32], [u8; 32]) {
    let private = [seed + 0x40; 32];
    (private, protocol::channel::public_of(&private).unwrap())
}

fn client(addr: &str, pin: [u8; 32], seed: u8, side: Side, devices: Vec<RelayKey>) -> Client {
    let (private, _) = statics(seed);
    let channel = match side {
        Side::Host => ChannelSetup::Host { local_static: private.into() },
        Side::Device => ChannelSetup::Device {
            local_static: private.into(),
            host: RelayKey::of(&SecretKey::from_seed(&[1; 32]).public_key()),
            host_static: statics(1).1,
        },
    };
    let mut config = ClientConfig::new(
        addr.into(),
        "localhost".into(),
        pinned_config(pin),
        SecretKey::from_seed(&[seed; 32]),
        side,
        channel,
    );
    config.devices = devices.into_iter().map(|d| (d, statics(2).1)).collect();
    config.rto = Duration::from_millis(200);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config.max_frames_per_sec = 1_500;
    Client::start(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_each_way_survive_drops_and_a_relay_restart() {
    let identity = relay::tls::self_signed(vec!["localhost".into()]).unwrap();
    let pin = identity.cert_sha256;
    let server = start("127.0.0.1:0".parse().unwrap(), identity.clone()).await;
    let addr = server.local_addr();
    let (host_key, device_key) =
        (SecretKey::from_seed(&[1; 32]).public_key(), SecretKey::from_seed(&[2; 32]).public_key());
    let (h, d) = (RelayKey::of(&host_key), RelayKey::of(&device_key));
    let mut host = client(&addr.to_string(), pin, 1, Side::Host, vec![d]);
    let mut device = client(&addr.to_string(), pin, 2, Side::Device, Vec::new());
    // Start once both are linked: a device joins the host's stream where it connects (what was
    // sent to its key before is for an earlier process of it; see relay_client::resume).
    while device.next().await.unwrap() != Inbound::Connected {}
    while host.next().await.unwrap() != (Inbound::Presence { device: d, online: true }) {}

    const N: u32 = 1000;
    let mut server = Some(server);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let drops_at: Vec<u32> = (0..5).map(|_| (next() % u64::from(N)) as u32).collect();
    for i in 0..N {
        host.send(d, format!("h{i}").into_bytes()).unwrap();
        device.send(h, format!("d{i}").into_bytes()).unwrap();
        if drops_at.contains(&i) {
            if next() % 2 == 0 { host.drop_connection() } else { device.drop_connection() }
        }
        if i == N / 2 {
            // Restart the relay on the same address with the same certificate.
            server.take().unwrap().shutdown().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            server = Some(start(addr, identity.clone()).await);
        }
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    let collect = |mut c: Client, prefix: &'static str, from: RelayKey| async move {
        let mut got = Vec::new();
        while got.len() < N as usize {
            let (peer, message) = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .expect("stalled")
                .unwrap();
            assert_eq!(peer, from);
            got.push(String::from_utf8(message).unwrap());
        }
        // Nothing more arrives: no duplicates trailing behind.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), c.recv()).await.is_err(),
            "a duplicate arrived"
        );
        let expected: Vec<String> = (0..N).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(got, expected);
        c
    };
    let (host, device) = tokio::join!(collect(host, "d", d), collect(device, "h", h));
    drop((host, device));
    let server = server.unwrap();
    // Paced: the relay (since its restart) never had to cut anyone off for rate.
    assert_eq!(server.metrics().limit_closes.load(std::sync::atomic::Ordering::Relaxed), 0);
    server.shutdown().await;
}
