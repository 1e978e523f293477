//! A real `nats-server` for tests, on a free loopback port (shared by the relay's cluster tests
//! and the end-to-end ones, which include this file).

#![allow(dead_code, unreachable_pub)] // each test file uses what it needs

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `nats-server` on a free loopback port, stopped when dropped.
pub struct Nats {
    child: Child,
    port: u16,
    config: tempfile::NamedTempFile,
}

impl Nats {
    /// Starts one, or `None` (said) where there is no `nats-server`.
    pub fn start() -> Option<Self> {
        if Command::new("nats-server").arg("--version").output().is_err() {
            println!("skipped: no nats-server here (the project's test command installs it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = tempfile::NamedTempFile::new().unwrap();
        // Frames are up to 4 MiB: NATS must take them.
        std::fs::write(config.path(), format!("listen: 127.0.0.1:{port}\nmax_payload: 8MB\n"))
            .unwrap();
        let child = Self::spawn(config.path());
        let nats = Self { child, port, config };
        nats.wait_up();
        Some(nats)
    }

    fn spawn(config: &std::path::Path) -> Child {
        Command::new("nats-server")
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_up(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.config.path());
        self.wait_up();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
