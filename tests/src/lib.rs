//! End-to-end tests of the whole bridge: they start the real `agent-host` and `remote` binaries
//! on loopback (the relay embedded by `agent-host up`, or a hostile one from [`hostile`]), pair
//! devices, and check what reaches whom. No component of ours is mocked here.
//!
//! This library holds the harness: where the binaries are, a host in a temporary home and
//! workspace, pairing offers, and `remote` devices with their own profiles.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test harness: a panic is the report

pub mod hostile;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A binary of this workspace, built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// Whether a sandbox works here (`agent-host doctor`); without one, hosts run with
/// `--allow-unsandboxed` and say so.
pub fn sandbox_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = Command::new(bin("agent-host"))
            .arg("doctor")
            .env("AGENT_HOST_HOME", std::env::temp_dir().join("e2e-doctor"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!("no sandbox here: hosts run with --allow-unsandboxed");
        }
        ok
    })
}

/// The settings every test host runs with: `printf` is allowed by an explicit rule, `rm` is
/// denied, everything else follows the defaults.
pub const SETTINGS: &str = r#"{"permissions":{"allow":["Bash(printf *)"],"deny":["Bash(rm *)"]}}"#;

/// A temporary world: a host home, a workspace, device homes.
pub struct World {
    _dir: tempfile::TempDir,
    /// The base directory.
    pub base: PathBuf,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A fresh world.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("ws")).unwrap();
        std::fs::write(base.join("settings.json"), SETTINGS).unwrap();
        Self { _dir: dir, base }
    }

    /// The host's home (`AGENT_HOST_HOME`).
    pub fn home(&self) -> PathBuf {
        self.base.join("home")
    }

    /// The workspace.
    pub fn ws(&self) -> PathBuf {
        self.base.join("ws")
    }

    /// A device with its own profile directory.
    pub fn device(&self, name: &str) -> Device {
        Device { home: self.base.join("devices"), profile: name.into() }
    }

    fn host_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("agent-host"));
        cmd.args(args)
            .arg("--settings")
            .arg(self.base.join("settings.json"))
            .current_dir(self.ws())
            .env("AGENT_HOST_HOME", self.home())
            .env("RUST_LOG", "info");
        if !sandbox_available() {
            cmd.arg("--allow-unsandboxed");
        }
        cmd
    }

    /// `agent-host up` on loopback (`port` 0: any), without a pairing link at start.
    pub fn up(&self, port: u16, extra: &[&str]) -> Host {
        let port = port.to_string();
        let mut args = vec!["up", "--no-pair", "--port", &port];
        args.extend_from_slice(extra);
        Host::spawn(self, self.host_command(&args))
    }

    /// `agent-host up` as [`World::up`] does, with these variables set for the host (its
    /// `HOME`, say: what jobs see of the user's machine comes from the host's environment).
    pub fn up_with_env(&self, extra: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> Host {
        let mut args = vec!["up", "--no-pair", "--port", "0"];
        args.extend_from_slice(extra);
        let mut cmd = self.host_command(&args);
        cmd.envs(vars.iter().copied());
        Host::spawn(self, cmd)
    }

    /// `agent-host serve --relay ADDR --relay-cert SHA256` (a relay of the test's choosing).
    pub fn serve(&self, relay: &str, cert_sha256: &str, extra: &[&str]) -> Host {
        let mut args = vec!["serve", "--relay", relay, "--relay-cert", cert_sha256];
        args.extend_from_slice(extra);
        Host::spawn(self, self.host_command(&args))
    }

    /// Runs an `agent-host` command against this world's host.
    pub fn agent_host(&self, args: &[&str]) -> Output {
        Command::new(bin("agent-host"))
            .args(args)
            .current_dir(self.ws())
            .env("AGENT_HOST_HOME", self.home())
            .output()
            .unwrap()
    }

    /// Starts an `agent-host` command against this world's host, with its standard streams
    /// piped (stdin stays open until the caller takes and drops it).
    pub fn agent_host_child(&self, args: &[&str]) -> Child {
        Command::new(bin("agent-host"))
            .args(args)
            .current_dir(self.ws())
            .env("AGENT_HOST_HOME", self.home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// What the host logged on stderr so far.
    pub fn host_log(&self) -> String {
        std::fs::read_to_string(self.base.join("host.log")).unwrap_or_default()
    }

    /// The audit log, readably.
    pub fn audit(&self) -> String {
        let out = self.agent_host(&["audit", "tail", "-n", "100000"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens a pairing offer (`agent-host pair`), returning once its link is printed.
    pub fn offer(&self, args: &[&str]) -> Offer {
        let mut child = self.agent_host_child(&[&["pair"], args].concat());
        let lines = lines_of(child.stdout.take().unwrap());
        // Owned by the offer at once, so that a failure below still reaps the process.
        let mut offer = Offer { child, link: String::new(), lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let line = offer
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no pairing link; the pair command printed {seen:?}"));
            if let Some(at) = line.find("https://") {
                let link = line[at..].split_whitespace().next().unwrap().trim_end_matches('\'');
                offer.link = link.to_string();
                return offer;
            }
            seen.push(line);
        }
    }

    /// Pairs a device with an offer opened `--yes` for `role`; panics unless it works.
    pub fn pair(&self, device: &Device, role: &str) {
        self.pair_through(device, role, |link| link.to_string());
    }

    /// [`World::pair`], with the link the device is given made by `edit` from the host's.
    pub fn pair_through(&self, device: &Device, role: &str, edit: impl Fn(&str) -> String) {
        let offer = self.offer(&["--yes", "--role", role]);
        let out = device.run(&["pair", &edit(&offer.link), "--name", &device.profile]);
        assert!(out.status.success(), "pairing failed: {}", text(&out));
        let host = offer.finish();
        assert!(host.contains("paired"), "{host}");
    }
}

/// Everything a command printed, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A running host; killed when dropped.
pub struct Host {
    child: Child,
    /// The relay's `host:port` (for `up`) as printed.
    pub relay: Option<String>,
    /// Its id.
    pub id: String,
}

impl Host {
    fn spawn(world: &World, mut cmd: Command) -> Self {
        // The host's log goes to a file beside the workspace, for a failing test to show.
        let log = std::fs::File::create(world.base.join("host.log")).unwrap();
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut relay, mut id) = (None, None);
        let socket = world.home().join("state/host.sock");
        let wants_relay = cmd.get_args().any(|a| a == "up");
        while id.is_none() || !socket.exists() || (wants_relay && relay.is_none()) {
            let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let status = child.try_wait();
                panic!("the host did not start ({status:?})");
            };
            if let Some(rest) = line.strip_prefix("relay:  wss://") {
                relay = rest.split_whitespace().next().map(String::from);
            }
            if let Some(at) = line.find(" as host1") {
                id = Some(line[at + 4..].trim().to_string());
            }
        }
        // Keep draining stdout so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, relay, id: id.unwrap() }
    }

    /// The relay's port (for `up`).
    pub fn port(&self) -> u16 {
        self.relay.as_deref().and_then(|r| r.rsplit_once(':')).unwrap().1.parse().unwrap()
    }

    /// Stops the host with SIGTERM and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An open pairing offer (`agent-host pair` still running).
pub struct Offer {
    child: Child,
    /// The link it printed.
    pub link: String,
    lines: mpsc::Receiver<String>,
}

impl Offer {
    /// Answers the host's question on the pair command's stdin.
    pub fn answer(&mut self, yes: bool) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", if yes { "y" } else { "n" }).unwrap();
    }

    /// Waits for the question "pair …?" and returns it.
    pub fn question(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            let line = line.expect("the host never asked");
            if line.contains("pair \"") {
                return line;
            }
        }
    }

    /// Waits for the pair command to end; returns what it printed from then on, and stderr.
    pub fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        let mut out: Vec<String> = self.lines.try_iter().collect();
        let mut err = String::new();
        use std::io::Read as _;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        out.push(err);
        out.push(format!("exit {status}"));
        out.join("\n")
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `remote` device: one profile.
#[derive(Debug, Clone)]
pub struct Device {
    /// `REMOTE_HOME`.
    pub home: PathBuf,
    /// The profile.
    pub profile: String,
}

impl Device {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("remote"));
        cmd.arg("--profile").arg(&self.profile).args(args).env("REMOTE_HOME", &self.home);
        cmd
    }

    /// Runs `remote ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs `remote ARGS` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `remote ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// This profile's directory.
    pub fn dir(&self) -> PathBuf {
        self.home.join(&self.profile)
    }
}

/// Waits until `f` holds, up to `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The ids of the actions pending at the host (`agent-host approvals --json`).
pub fn pending_ids(world: &World) -> Vec<String> {
    let out = world.agent_host(&["approvals", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}
