//! Load tool: the relay path (device → relay → host → relay → device, TLS on both legs), the same
//! with every message sealed and opened in the end-to-end channel (`protocol::channel`, one
//! handshake per pair) at both ends, and a direct TLS WebSocket echo (same client, no relay),
//! side by side in one run, with the processor time each side used per round trip; then the
//! relay's resident memory per idle authenticated connection.
//!
//! Run: `cargo run --release -p relay --example load` (`-- --seconds 3 --idle 10000` are the
//! defaults; `--pairs N` runs one row alone; `--sealed BYTES` sets the message the channel
//! carries, 1,024 by default, which goes padded as 1,088). Results go in BENCHMARKS.md.
//!
//! `-- --processor [--runs 5]`: the relay's processor time per round trip beside the direct
//! echo's, for 10 and 100 pairs, alternating, each run in new children; medians of the runs.
//! The echo serves as many clients as there are pairs, and also twice as many: the relay holds
//! two connections per pair (the host's and the device's), so at 100 pairs it serves 200.
//!
//! `-- --cluster [--runs 3]`: relay nodes sharing routing through a `nats-server` started here
//! (on the PATH): the same 1 KiB round trip with host and device at one node, with the host at
//! node A and the device at node B, and through NATS alone (request and reply through the same
//! `nats-server`), for 1, 10 and 100 pairs, the three alternating, each run anew; medians of
//! the runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::channel::{self, Channel, ChannelId, ChannelKeys, Frame};
use protocol::relay::{FrameKind, Side};
use protocol::{RelayKey, SecretKey};
use relay::{Config, Limits, Server};
use relay_client::{Link, authenticate, connect, pinned_config};
use tokio_tungstenite::tungstenite::Message;

const FRAME: usize = 1024;

fn secret(kind: u8, i: u32) -> SecretKey {
    let mut seed = [kind; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    SecretKey::from_seed(&seed)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

fn limits() -> Limits {
    Limits {
        frames_per_sec: 1_000_000,
        burst: 1_000_000,
        host_frames_per_sec: 1_000_000,
        host_burst: 1_000_000,
        max_connections: 30_000,
        ..Limits::default()
    }
}

async fn join(addr: &str, pin: [u8; 32], key: &SecretKey, side: Side) -> anyhow::Result<Link> {
    let (mut link, cert) = connect(addr, "localhost", pinned_config(pin)).await?;
    authenticate(&mut link, key, side, &cert).await?;
    Ok(link)
}

/// What a device sends: a frame as it is, or a payload sealed in its channel with the host.
enum Sends {
    Frame(Vec<u8>),
    Sealed { channel: Box<Channel>, host: RelayKey, message: Vec<u8> },
}

/// The relay frames of one message (sealed anew each time, as a device does).
fn frames_of(sends: &mut Sends) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(match sends {
        Sends::Frame(frame) => vec![frame.clone()],
        Sends::Sealed { channel, host, message } => channel
            .seal(message)?
            .iter()
            .map(|f| protocol::relay::data_frame(FrameKind::To, host, f))
            .collect(),
    })
}

/// Whether a frame from the relay completes the answer (a sealed one once it opens whole).
fn answered(sends: &mut Sends, frame: &[u8]) -> anyhow::Result<bool> {
    let Sends::Sealed { channel, .. } = sends else { return Ok(true) };
    let (_, _, payload) = protocol::relay::split_frame(frame)?;
    match Frame::decode(payload)? {
        Frame::Data { nonce, ciphertext, .. } => Ok(channel.open(nonce, ciphertext)?.is_some()),
        _ => Ok(false),
    }
}

/// Closed loop until `end`: send the message, wait for it to come back. Returns round-trip
/// times.
async fn ping_loop(link: &mut Link, sends: &mut Sends, end: Instant) -> anyhow::Result<Vec<u32>> {
    let mut rtts = Vec::new();
    loop {
        let start = Instant::now();
        for frame in frames_of(sends)? {
            link.send(Message::binary(frame)).await?;
        }
        loop {
            match link.next().await {
                Some(Ok(Message::Binary(frame))) if answered(sends, &frame)? => break,
                Some(Ok(_)) => {}
                _ => anyhow::bail!("link closed"),
            }
        }
        rtts.push(start.elapsed().as_micros() as u32);
        if Instant::now() >= end {
            return Ok(rtts);
        }
    }
}

/// What one row measured: every round-trip time, and the processor time (user and system)
/// the server child and this process (the clients, and the hosts on the relay path) used.
struct Row {
    rtts: Vec<u32>,
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
}

/// Processor time a process has used so far, from `/proc/PID/stat` (Linux counts it in
/// hundredths of a second).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Each link (with the frame it sends) in its closed loop, all at once, for `seconds`, after
/// one warm-up round trip each (which also shows a host's registration is in).
async fn run(links: Vec<(Link, Sends)>, server: u32, seconds: u64) -> anyhow::Result<Row> {
    run_on(links, &[server], seconds).await
}

/// [`run`], with the processor time of every server process (relay nodes, NATS) summed.
async fn run_on(links: Vec<(Link, Sends)>, servers: &[u32], seconds: u64) -> anyhow::Result<Row> {
    let mut ready = Vec::new();
    for (mut link, mut sends) in links {
        ping_loop(&mut link, &mut sends, Instant::now()).await?;
        ready.push((link, sends));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let servers: Vec<String> = servers.iter().map(u32::to_string).collect();
    let server_cpu = || servers.iter().map(|s| cpu_time(s)).sum::<Duration>();
    let client = "self";
    let (server_before, client_before) = (server_cpu(), cpu_time(client));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(mut link, mut sends)| {
            tokio::spawn(async move { ping_loop(&mut link, &mut sends, end).await })
        })
        .collect();
    let mut rtts = Vec::new();
    for t in tasks {
        rtts.extend(t.await??);
    }
    Ok(Row {
        rtts,
        elapsed: start.elapsed(),
        server_cpu: server_cpu().saturating_sub(server_before),
        client_cpu: cpu_time(client).saturating_sub(client_before),
    })
}

/// What a host answers a frame from `from` with: the frame itself, or (in the channel) its
/// answer to a hello and each message opened and sealed again.
fn echo(channel: &mut Option<(ChannelKeys, Option<Channel>)>, payload: &[u8]) -> Vec<Vec<u8>> {
    let Some((keys, open)) = channel else { return vec![payload.to_vec()] };
    match (Frame::decode(payload), open) {
        (Ok(Frame::Hello { id, message }), open) => {
            let Ok((channel, answer, _)) = channel::respond(keys, id, message, 1 << 20) else {
                return Vec::new();
            };
            *open = Some(channel);
            vec![answer]
        }
        (Ok(Frame::Data { nonce, ciphertext, .. }), Some(channel)) => {
            match channel.open(nonce, ciphertext) {
                Ok(Some(message)) => channel.seal(&message).unwrap_or_default(),
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// `pairs` devices, each with its own host, through the relay at `addr`; the hosts echo, in
/// the end-to-end channel when `sealed` (each pair shakes hands first).
async fn relay_links(
    addr: &str,
    pin: [u8; 32],
    pairs: u32,
    sealed: bool,
) -> anyhow::Result<Vec<(Link, Sends)>> {
    relay_links_at((addr, pin), (addr, pin), 0..pairs, sealed).await
}

/// [`relay_links`] with the hosts at one relay (node) and the devices at another, for the pairs
/// numbered `numbers` (each number a key pair of its own).
async fn relay_links_at(
    (addr, pin): (&str, [u8; 32]),
    (device_addr, device_pin): (&str, [u8; 32]),
    numbers: std::ops::Range<u32>,
    sealed: bool,
) -> anyhow::Result<Vec<(Link, Sends)>> {
    let mut links = Vec::new();
    for i in numbers {
        let (h, d) = (secret(1, i), secret(2, i));
        let (hk, dk) = (RelayKey::of(&h.public_key()), RelayKey::of(&d.public_key()));
        let ((host_x, host_xp), (device_x, device_xp)) =
            (channel::generate_static()?, channel::generate_static()?);
        let (host_id, device_id) = (h.public_key(), d.public_key());
        let mut at_host = sealed.then(|| {
            let keys = ChannelKeys {
                local_static: host_x,
                remote_static: device_xp,
                host: host_id,
                device: device_id,
            };
            (keys, None)
        });
        let mut host = join(addr, pin, &h, Side::Host).await?;
        let register = protocol::relay::register(&h, 1, &[dk], &[]);
        host.send(Message::text(serde_json::to_string(&register)?)).await?;
        tokio::spawn(async move {
            while let Some(Ok(message)) = host.next().await {
                let Message::Binary(frame) = message else { continue };
                let Ok((_, from, payload)) = protocol::relay::split_frame(&frame) else { continue };
                for answer in echo(&mut at_host, payload) {
                    let frame = protocol::relay::data_frame(FrameKind::To, &from, &answer);
                    if host.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut device = join(device_addr, device_pin, &d, Side::Device).await?;
        if device_addr != addr {
            // Across nodes the route is in place once the registration and the presence have
            // reached the device's node: until then a frame is undeliverable.
            let probe = protocol::relay::data_frame(FrameKind::To, &hk, b"probe");
            let deadline = Instant::now() + Duration::from_secs(10);
            'routed: loop {
                anyhow::ensure!(Instant::now() < deadline, "never routed across nodes");
                device.send(Message::binary(probe.clone())).await?;
                let wait = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => continue 'routed,
                        next = device.next() => match next {
                            Some(Ok(Message::Binary(_))) => break 'routed,
                            Some(Ok(_)) => {}
                            _ => anyhow::bail!("link closed"),
                        }
                    }
                }
            }
            // Probes answered late are left behind.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(150), device.next()).await
            {}
        }
        let sends = if sealed {
            let keys = ChannelKeys {
                local_static: device_x,
                remote_static: host_xp,
                host: host_id,
                device: device_id,
            };
            let (mut initiator, hello) = channel::initiate(&keys, ChannelId([1; 8]), 1, 1 << 20)?;
            device
                .send(Message::binary(protocol::relay::data_frame(FrameKind::To, &hk, &hello)))
                .await?;
            let channel = loop {
                let frame = match device.next().await {
                    Some(Ok(Message::Binary(frame))) => frame,
                    Some(Ok(_)) => continue,
                    _ => anyhow::bail!("no answer to the hello"),
                };
                let (_, _, payload) = protocol::relay::split_frame(&frame)?;
                if let Ok(Frame::Answer { message, .. }) = Frame::decode(payload) {
                    break initiator.finish(message)?;
                }
            };
            let message = vec![0x5a; arg("--sealed", FRAME as u64) as usize];
            Sends::Sealed { channel: Box::new(channel), host: hk, message }
        } else {
            Sends::Frame(protocol::relay::data_frame(FrameKind::To, &hk, &[0x5a; FRAME]))
        };
        links.push((device, sends));
    }
    Ok(links)
}

/// `pairs` clients of the direct echo at `addr`, sending frames of the relay path's size.
async fn echo_links(addr: &str, pin: [u8; 32], pairs: u32) -> anyhow::Result<Vec<(Link, Sends)>> {
    let mut links = Vec::new();
    for _ in 0..pairs {
        let (link, _) = connect(addr, "localhost", pinned_config(pin)).await?;
        let frame = protocol::relay::data_frame(FrameKind::To, &RelayKey([0; 32]), &[0x5a; FRAME]);
        links.push((link, Sends::Frame(frame)));
    }
    Ok(links)
}

/// A TLS WebSocket echo with the relay's WebSocket settings.
async fn serve_echo_tls(listener: tokio::net::TcpListener, identity: relay::tls::Identity) {
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
    let config = relay::server::ws_config(&limits());
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tls, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() && ws.send(m).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Messages per second, p50 and p99 in µs, and the server's and the client's processor time
/// per round trip in µs.
type Summary = (f64, u32, u32, f64, f64);

/// A row's [`Summary`].
fn summary(row: Row) -> Summary {
    let Row { mut rtts, elapsed, server_cpu, client_cpu } = row;
    rtts.sort_unstable();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let n = rtts.len().max(1) as f64;
    let per_trip = |cpu: Duration| cpu.as_secs_f64() * 1e6 / n;
    (
        rtts.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        per_trip(server_cpu),
        per_trip(client_cpu),
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: a relay or the direct echo alone in its own process, as in a deployment (and
/// so that its memory can be read). Prints the certificate's SHA-256, then serves.
async fn serve_child(mode: &str, port: u16) -> anyhow::Result<()> {
    raise_fd_limit();
    let identity = relay::tls::self_signed(vec!["localhost".into()])?;
    println!("{}", hex::encode(identity.cert_sha256));
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    if mode == "echo" {
        serve_echo_tls(tokio::net::TcpListener::bind(listen).await?, identity).await;
        return Ok(());
    }
    let cluster = std::env::var("LOAD_CLUSTER").ok();
    let server = Server::bind(Config {
        listen,
        identity,
        limits: limits(),
        origins: Vec::new(),
        serve_web: false,
    })
    .await?;
    if let Some(url) = cluster.filter(|_| mode == "node") {
        server.join_cluster(&url).await?;
    }
    server.serve().await?;
    Ok(())
}

/// Starts a child server; returns it, its address and its certificate pin.
async fn spawn_child(mode: &str) -> anyhow::Result<(tokio::process::Child, String, [u8; 32])> {
    spawn_child_with(mode, &[]).await
}

/// [`spawn_child`] with these variables set for it (`LOAD_CLUSTER` for a node).
async fn spawn_child_with(
    mode: &str,
    vars: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, String, [u8; 32])> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--child", mode, &port.to_string()])
        .envs(vars.iter().copied())
        // Relay and echo alike get one worker thread: on two cores shared with the clients,
        // a second one mostly adds cross-thread wake-ups to the tail.
        .env("TOKIO_WORKER_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out =
        tokio::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await?;
    let pin: [u8; 32] =
        hex::decode(line.trim())?.try_into().map_err(|_| anyhow::anyhow!("bad pin"))?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, addr, pin))
}

fn child_pid(child: &tokio::process::Child) -> anyhow::Result<u32> {
    child.id().ok_or_else(|| anyhow::anyhow!("no pid"))
}

async fn idle_memory(count: u32) -> anyhow::Result<(u64, u64)> {
    let (mut child, addr, pin) = spawn_child("relay").await?;
    let pid = child_pid(&child)?;
    // Warm up with a few connections so that start-up allocations are not counted.
    let mut links = Vec::new();
    for i in 0..16 {
        links.push(join(&addr, pin, &secret(3, 1_000_000 + i), Side::Device).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..count {
        let (addr, semaphore) = (addr.clone(), semaphore.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await;
            join(&addr, pin, &secret(4, i), Side::Device).await
        }));
    }
    for t in tasks {
        links.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    drop(links);
    let _ = child.kill().await;
    Ok((before, after))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mode = args.get(i + 1).cloned().unwrap_or_default();
        let port =
            args.get(i + 2).and_then(|p| p.parse().ok()).ok_or_else(|| anyhow::anyhow!("port"))?;
        return serve_child(&mode, port).await;
    }
    raise_fd_limit();
    let seconds = arg("--seconds", 3);
    if args.iter().any(|a| a == "--cluster") {
        return cluster::compare(seconds, arg("--runs", 3) as usize).await;
    }
    if args.iter().any(|a| a == "--processor") {
        return processor(seconds, arg("--runs", 5) as usize).await;
    }
    let idle = arg("--idle", 10_000) as u32;
    println!(
        "1 KiB frames, closed loop, {seconds} s per row; relay path, the same in the end-to-end \
         channel, and a direct TLS WebSocket echo\n"
    );
    println!(
        "| pairs | path | messages/s | p50 | p99 | server CPU per trip | client CPU per trip | relay/direct msgs/s | relay/direct p99 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    // `--pairs N` measures that one row alone (to profile it, say).
    let rows = match arg("--pairs", 0) as u32 {
        0 => vec![1, 10, 100],
        n => vec![n],
    };
    for pairs in rows {
        let (relay_child, addr, pin) = spawn_child("relay").await?;
        let pid = child_pid(&relay_child)?;
        let relayed =
            summary(run(relay_links(&addr, pin, pairs, false).await?, pid, seconds).await?);
        drop(relay_child);
        let (relay_child, addr, pin) = spawn_child("relay").await?;
        let pid = child_pid(&relay_child)?;
        let sealed = summary(run(relay_links(&addr, pin, pairs, true).await?, pid, seconds).await?);
        drop(relay_child);
        let (echo_child, addr, pin) = spawn_child("echo").await?;
        let pid = child_pid(&echo_child)?;
        let direct = summary(run(echo_links(&addr, pin, pairs).await?, pid, seconds).await?);
        drop(echo_child);
        let rows = [("relay", relayed), ("relay, channel", sealed), ("direct", direct)];
        for (name, (rate, p50, p99, server, client)) in rows {
            println!(
                "| {pairs} | {name} | {rate:.0} | {p50} µs | {p99} µs | {server:.1} µs | {client:.1} µs | | |"
            );
        }
        println!(
            "| {pairs} | ratio | | | | | | {:.2} | {:.2} |",
            relayed.0 / direct.0,
            f64::from(relayed.2) / f64::from(direct.2.max(1))
        );
        println!(
            "| {pairs} | channel/relay | | | | | | {:.2} | {:.2} |",
            sealed.0 / relayed.0,
            f64::from(sealed.2) / f64::from(relayed.2.max(1))
        );
    }
    let (before, after) = idle_memory(idle).await?;
    println!(
        "\nidle authenticated connections: {idle}; relay RSS {before} KiB before, {after} KiB after: {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / f64::from(idle)
    );
    Ok(())
}

/// `--processor`: the relay's server time per round trip against the echo's, with as many
/// echo clients as pairs and with twice as many.
async fn processor(seconds: u64, runs: usize) -> anyhow::Result<()> {
    println!(
        "1 KiB round trips, closed loop, {seconds} s per row, {runs} runs alternating; medians \
         of the server's processor time per round trip\n"
    );
    println!(
        "| pairs | relay | echo, as many clients | echo, twice as many | relay / echo | relay / echo at twice |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for pairs in [10u32, 100] {
        let (mut relayed, mut direct, mut doubled) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (child, addr, pin) = spawn_child("relay").await?;
            let pid = child_pid(&child)?;
            relayed.push(
                summary(run(relay_links(&addr, pin, pairs, false).await?, pid, seconds).await?).3,
            );
            drop(child);
            for (clients, into) in [(pairs, &mut direct), (2 * pairs, &mut doubled)] {
                let (child, addr, pin) = spawn_child("echo").await?;
                let pid = child_pid(&child)?;
                into.push(
                    summary(run(echo_links(&addr, pin, clients).await?, pid, seconds).await?).3,
                );
                drop(child);
            }
        }
        let (r, e, d) =
            (cluster::median(relayed), cluster::median(direct), cluster::median(doubled));
        println!(
            "| {pairs} | {r:.1} µs | {e:.1} µs | {d:.1} µs | {:.2} | {:.2} |",
            r / e.max(f64::MIN_POSITIVE),
            r / d.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}

/// `--cluster`: one node, two nodes, and NATS alone, side by side.
mod cluster {
    use super::*;

    /// A `nats-server` on a free port, with frames' room (`max_payload: 8MB`); stopped when
    /// dropped.
    struct Nats {
        child: std::process::Child,
        url: String,
        _config: std::path::PathBuf,
    }

    impl Nats {
        fn start() -> anyhow::Result<Self> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let config =
                std::env::temp_dir().join(format!("load-nats-{}.conf", std::process::id()));
            std::fs::write(&config, format!("listen: 127.0.0.1:{port}\nmax_payload: 8MB\n"))?;
            let child = std::process::Command::new("nats-server")
                .arg("-c")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("nats-server: {e} (is it installed?)"))?;
            let addr = format!("127.0.0.1:{port}");
            for _ in 0..250 {
                if std::net::TcpStream::connect(&addr).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Self { child, url: format!("nats://{addr}"), _config: config })
        }
    }

    impl Drop for Nats {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self._config);
        }
    }

    /// The same closed loop as the relay path's, through NATS alone: each pair a requester
    /// and a responder (in this process, as the hosts are) on one `nats-server`.
    async fn nats_alone(url: &str, pairs: u32, server: u32, seconds: u64) -> anyhow::Result<Row> {
        let mut requesters = Vec::new();
        for i in 0..pairs {
            let responder = async_nats::connect(url).await?;
            let mut inbox = responder.subscribe(format!("load.{i}")).await?;
            tokio::spawn(async move {
                while let Some(message) = inbox.next().await {
                    if let Some(reply) = message.reply {
                        let _ = responder.publish(reply, message.payload).await;
                    }
                }
            });
            let requester = async_nats::connect(url).await?;
            requester.flush().await?;
            requesters.push((requester, format!("load.{i}")));
        }
        let payload = tokio_tungstenite::tungstenite::Bytes::from(vec![0x5a; FRAME]);
        for (requester, subject) in &requesters {
            requester.request(subject.clone(), payload.clone()).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (server_pid, client) = (server.to_string(), "self");
        let (server_before, client_before) = (cpu_time(&server_pid), cpu_time(client));
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = requesters
            .into_iter()
            .map(|(requester, subject)| {
                let payload = payload.clone();
                tokio::spawn(async move {
                    let mut rtts = Vec::new();
                    loop {
                        let t = Instant::now();
                        requester.request(subject.clone(), payload.clone()).await?;
                        rtts.push(t.elapsed().as_micros() as u32);
                        if Instant::now() >= end {
                            return anyhow::Ok(rtts);
                        }
                    }
                })
            })
            .collect();
        let mut rtts = Vec::new();
        for t in tasks {
            rtts.extend(t.await??);
        }
        Ok(Row {
            rtts,
            elapsed: start.elapsed(),
            server_cpu: cpu_time(&server_pid).saturating_sub(server_before),
            client_cpu: cpu_time(client).saturating_sub(client_before),
        })
    }

    pub(super) fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    }

    pub(super) async fn compare(seconds: u64, runs: usize) -> anyhow::Result<()> {
        println!(
            "1 KiB round trips, closed loop, {seconds} s per row, {runs} runs alternating; medians \
             (server CPU: both relay nodes and nats-server for the cross-node path)\n"
        );
        println!(
            "| pairs | path | messages/s | p50 | p99 | server CPU per trip | client CPU per trip |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|");
        let mut results: std::collections::BTreeMap<(u32, &str), Vec<Summary>> = Default::default();
        let mut number = 0u32;
        for _ in 0..runs {
            let nats = Nats::start()?;
            let nats_pid = nats.child.id();
            let vars = [("LOAD_CLUSTER", nats.url.as_str())];
            let (a, a_addr, a_pin) = spawn_child_with("node", &vars).await?;
            let (b, b_addr, b_pin) = spawn_child_with("node", &vars).await?;
            let (a_pid, b_pid) = (child_pid(&a)?, child_pid(&b)?);
            for pairs in [1u32, 10, 100] {
                let numbers = number..number + pairs;
                number += pairs;
                let links =
                    relay_links_at((&a_addr, a_pin), (&a_addr, a_pin), numbers, false).await?;
                let same = summary(run_on(links, &[a_pid, b_pid, nats_pid], seconds).await?);
                let numbers = number..number + pairs;
                number += pairs;
                let links =
                    relay_links_at((&a_addr, a_pin), (&b_addr, b_pin), numbers, false).await?;
                let cross = summary(run_on(links, &[a_pid, b_pid, nats_pid], seconds).await?);
                let alone = summary(nats_alone(&nats.url, pairs, nats_pid, seconds).await?);
                for (path, row) in
                    [("same node", same), ("cross-node", cross), ("NATS alone", alone)]
                {
                    results.entry((pairs, path)).or_default().push(row);
                }
            }
            drop((a, b, nats));
        }
        for pairs in [1u32, 10, 100] {
            for path in ["same node", "cross-node", "NATS alone"] {
                let rows = &results[&(pairs, path)];
                let m =
                    |f: fn(&(f64, u32, u32, f64, f64)) -> f64| median(rows.iter().map(f).collect());
                println!(
                    "| {pairs} | {path} | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.1} µs |",
                    m(|r| r.0),
                    m(|r| f64::from(r.1)),
                    m(|r| f64::from(r.2)),
                    m(|r| r.3),
                    m(|r| r.4)
                );
            }
        }
        Ok(())
    }
}
