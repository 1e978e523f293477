//! Relay nodes in a cluster, with the real binaries: three `relay --cluster` processes sharing
//! one certificate and a real `nats-server`, a host (`agent-host serve --relay A,B,C`) and
//! `remote` devices paired through a link that names all three. The node everyone is connected
//! to is killed with SIGKILL while an approval waits: host and devices move to the next node,
//! and the action runs exactly once after the approval.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{World, eventually, pending_ids, text};

#[path = "../../relay/tests/support/nats.rs"]
mod nats;

/// A relay node (the binary), killed when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn start(world: &World, nats: &nats::Nats, name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(world.base.join(format!("relay-{name}.log"))).unwrap();
        let child = Command::new(e2e::bin("relay"))
            .args(["--listen", &addr, "--cluster", &nats.url()])
            .arg("--cert")
            .arg(world.base.join("relay.pem"))
            .arg("--key")
            .arg(world.base.join("relay.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(&addr).is_ok()),
            "relay node {name} did not start"
        );
        Self { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One certificate for every node (as behind one name), written where [`Node::start`] takes
/// it; its SHA-256, which the pairing links pin.
fn shared_certificate(world: &World) -> [u8; 32] {
    let (cert, key) = relay::tls::self_signed_pem(vec!["127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (world.base.join("relay.pem"), world.base.join("relay.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    relay::tls::from_pem_files(&cert_file, &key_file).unwrap().cert_sha256
}

#[test]
fn a_node_killed_while_an_approval_waits_loses_nothing_and_runs_it_once() {
    let Some(nats) = nats::Nats::start() else { return };
    let world = World::new();
    let pin = hex::encode(shared_certificate(&world));
    let mut a = Node::start(&world, &nats, "a");
    let (b, c) = (Node::start(&world, &nats, "b"), Node::start(&world, &nats, "c"));
    let nodes = format!("{},{},{}", a.addr, b.addr, c.addr);
    let _host = world.serve(&nodes, &pin, &[]);
    let (op, approver) = (world.device("op"), world.device("approver"));
    world.pair(&op, "operator");
    world.pair(&approver, "approver");

    // Everyone is at A, the first node; an action waits for a person.
    let waiting = op.spawn(&["run", "--", "touch", "ran-once"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let id = pending_ids(&world).remove(0);
    a.kill();

    // The approver reaches the host through another node; the host and the waiting device
    // moved there by themselves.
    let out = approver.run(&["approve", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(world.ws().join("ran-once").exists());
    // Exactly once: one start, one result, for that request.
    let audit = world.audit();
    let starts = audit.lines().filter(|l| l.contains(&id[..8]) && l.contains("start")).count();
    assert_eq!(starts, 1, "{audit}");
    // And the devices still work through the nodes left.
    let out = op.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    drop((b, c));
}

/// A host at node A, its devices at node B: pairing, requests, approvals, results and a
/// session cross NATS.
#[test]
fn a_host_at_one_node_and_its_devices_at_another() {
    let Some(nats) = nats::Nats::start() else { return };
    let world = World::new();
    let certificate = shared_certificate(&world);
    let pin = hex::encode(certificate);
    let (a, b) = (Node::start(&world, &nats, "a"), Node::start(&world, &nats, "b"));
    // The host at A (the first it names); each device given a link that names B first pairs
    // through B (a link's relay list is only where to connect: the pairing is end to end), and
    // keeps to B.
    let _host = world.serve(&format!("{},{}", a.addr, b.addr), &pin, &[]);
    let b_first = |link: &str| {
        let edited = link.replace(
            &format!("relay={},{}", a.addr, b.addr),
            &format!("relay={},{}", b.addr, a.addr),
        );
        assert_ne!(edited, link, "the link names no relay list: {link}");
        edited
    };
    let (op, approver) = (world.device("op"), world.device("approver"));
    world.pair_through(&op, "operator", b_first);
    world.pair_through(&approver, "approver", b_first);
    let waiting = op.spawn(&["run", "--", "touch", "across-nodes"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    let listed = approver.run(&["pending"]);
    assert!(text(&listed).contains("across-nodes"), "{}", text(&listed));
    let out = approver.run(&["approve", &pending_ids(&world).remove(0)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(world.ws().join("across-nodes").exists());
    // Read back through the other node: the result came across.
    std::fs::write(world.ws().join("note.txt"), "from A to B\n").unwrap();
    let out = op.run(&["read", "note.txt"]);
    assert!(out.status.success() && text(&out).contains("from A to B"), "{}", text(&out));
    // A session at the host, watched and typed into from B.
    let jail: &[&str] = if e2e::sandbox_available() { &[] } else { &["--no-jail"] };
    let mut program =
        world.agent_host_child(&[&["run"], jail, &["--shell", "--", "python3", "-q"]].concat());
    let mut watching = op.spawn(&["--json", "watch"]);
    let lines = std::io::BufRead::lines(std::io::BufReader::new(watching.stdout.take().unwrap()));
    let (tx, seen) = std::sync::mpsc::channel::<protocol::HostEvent>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line)
                && tx.send(event).is_err()
            {
                return;
            }
        }
    });
    let session = loop {
        match seen.recv_timeout(Duration::from_secs(20)).unwrap() {
            protocol::HostEvent::SessionStarted { session, .. } => break session.to_string(),
            _ => continue,
        }
    };
    let typing = op.spawn(&["send", &session, "print(6 * 7, 'across nodes')"]);
    assert!(eventually(Duration::from_secs(20), || pending_ids(&world).len() == 1));
    assert!(world.agent_host(&["approve", &pending_ids(&world).remove(0)]).status.success());
    assert!(typing.wait_with_output().unwrap().status.success());
    let mut output = Vec::new();
    while !String::from_utf8_lossy(&output).contains("42 across nodes") {
        if let protocol::HostEvent::Output { data, .. } =
            seen.recv_timeout(Duration::from_secs(20)).unwrap()
        {
            output.extend_from_slice(&data.0);
        }
    }
    let _ = program.kill();
    let _ = program.wait();
    let _ = watching.kill();
    let _ = watching.wait();
    // And it went through NATS: each node forwarded frames to the other.
    for node in [&a, &b] {
        let figures = metrics(&node.addr, certificate);
        let count = |name: &str| -> u64 {
            figures.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0)
        };
        assert!(count("relay_cluster_frames_out_total ") > 0, "{figures}");
        assert!(count("relay_cluster_frames_in_total ") > 0, "{figures}");
    }
}

/// A node's `/metrics`.
fn metrics(addr: &str, pin: [u8; 32]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(relay_client::pinned_config(pin));
        let mut stream = tls.connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").await.unwrap();
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut body)).await;
        String::from_utf8_lossy(&body).into_owned()
    })
}
