//! The `relay` binary as an operator runs it: help, a self-signed start that prints the
//! fingerprint to pin, health over real TLS, and a clean stop on Ctrl-C.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[test]
fn help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--cert",
        "--key",
        "--self-signed",
        "--serve-web",
        "--max-frame",
        "--rate",
        "--idle-timeout",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}:\n{text}");
    }
}

#[tokio::test]
async fn self_signed_start_health_and_clean_stop() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--self-signed", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let hex_pin =
        line.trim().strip_prefix("self-signed certificate, SHA-256 ").unwrap().to_string();
    let pin: [u8; 32] = hex::decode(&hex_pin).unwrap().try_into().unwrap();

    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(relay_client::pinned_config(pin))
                .connect(name, tcp)
                .await
                .unwrap();
            tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
            let _ = tls.read_to_string(&mut body).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.starts_with("HTTP/1.1 200") && body.ends_with("ok\n"), "{body}");

    // A service manager's SIGTERM stops it cleanly, as Ctrl-C does.
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
