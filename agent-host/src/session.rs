//! Sessions: a program in a pseudo-terminal, run by `agent-host run` at this machine's
//! terminal and shared through the host with paired devices.
//!
//! `agent-host run -- CMD` makes the pseudo-terminal and starts the program in it (as the
//! leader of a new session with the terminal as its controlling one, through `setsid --ctty`, so
//! Ctrl-C and hang-ups reach it as they would in a terminal). The person at the machine keeps
//! full control: the local terminal is switched to raw mode and mirrored both ways, and its size
//! is followed. Output also goes to the host over the local socket (batched every 50 ms), which
//! keeps the last [`SCROLLBACK`] bytes and sends them to devices as numbered, host-signed
//! `output` events; a device that connects or syncs later gets the scrollback again.
//!
//! Input from a device is a `session_input` request, judged like any other, as the program will
//! read it after its line editing ([`input`]): for an agent, prompt text is allowed (its own
//! tool calls go through the hook), but shell escapes, slash commands outside a short list,
//! menu answers and keys that are not text ask; for a shell or an interpreter each input is
//! asked, because typing into a shell is performing; an interrupt alone (Ctrl-C) is always
//! allowed. What is allowed or approved is written into the terminal by `agent-host run`.

pub mod input;

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::{Blob, SessionId, SessionKind};
use serde::{Deserialize, Serialize};

use crate::local_api::{ApiRequest, ApiResponse};

/// How much output the host keeps per session for devices that join later.
pub const SCROLLBACK: usize = 64 << 10;
/// The largest output chunk sent at once.
const CHUNK: usize = 32 << 10;
/// How long output is gathered before it is sent.
const BATCH: Duration = Duration::from_millis(50);

/// What `agent-host run` tells the host after the session opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionUpdate {
    /// Output of the program.
    Output {
        /// The bytes.
        data: Blob,
    },
    /// The terminal changed size.
    Resized {
        /// Its new size.
        size: protocol::TermSize,
    },
    /// The program ended.
    Ended {
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
    },
}

/// The kind a program is, when not given: known coding agents are agents, anything else is
/// treated as a shell.
pub fn kind_of(program: &str) -> SessionKind {
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    match name {
        "claude" | "codex" | "aider" | "gemini" | "opencode" | "goose" | "amp" => {
            SessionKind::Agent
        }
        _ => SessionKind::Shell,
    }
}

/// Why input was not typed into a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// The session ended.
    #[error("the session ended")]
    Ended,
    /// Other input reached the line since this was judged.
    #[error(
        "other input reached the session while this one waited; nothing was typed, send it again"
    )]
    Conflict,
    /// The terminal has not taken the input before ([`crate::host_core::MAX_SESSION_INPUTS`] wait).
    #[error("the session's terminal is not taking input; nothing was typed, send it again")]
    Busy,
}

/// A session as the host's core keeps it ([`crate::host_core`]).
#[derive(Debug)]
pub struct Live {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Its kind.
    pub kind: SessionKind,
    /// The last output chunks, numbered.
    pub scrollback: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    next_seq: u64,
    /// What device input left unsubmitted in the program's line.
    pub typed: input::Typed,
    /// Its terminal's size, when known.
    pub size: Option<protocol::TermSize>,
}

impl Live {
    /// A new session.
    pub fn new(command: Vec<String>, kind: SessionKind) -> Self {
        Self {
            command,
            kind,
            scrollback: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            typed: input::Typed::default(),
            size: None,
        }
    }

    /// Keeps a chunk of output (dropping the oldest past [`SCROLLBACK`]); returns its number.
    pub fn push(&mut self, data: Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += data.len();
        self.scrollback.push_back((seq, data));
        while self.bytes > SCROLLBACK && self.scrollback.len() > 1 {
            if let Some((_, old)) = self.scrollback.pop_front() {
                self.bytes -= old.len();
            }
        }
        seq
    }
}

/// Restores the local terminal's settings when dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(&stdin) {
            return Self(None);
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else { return Self(None) };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// What the output side passes to the thread that talks to the host.
enum Piece {
    Output(Vec<u8>),
    End(Option<i32>),
}

fn send(stream: &mut UnixStream, update: &SessionUpdate) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(update)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Why `agent-host run` could not share its session, or run its program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The host's socket could not be reached.
    #[error("cannot reach the host at {}: {error} (is it running?)", socket.display())]
    Unreachable {
        /// The socket.
        socket: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Another host than the first answers at the socket.
    #[error(
        "another host answers now (host {host}, workspace {workspace}): this session stays unshared"
    )]
    OtherHost {
        /// The host's id.
        host: String,
        /// Its workspace.
        workspace: String,
    },
    /// The host refused the session.
    #[error("{0}")]
    Refused(String),
    /// The host answered something else than the API says.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The connection or the terminal failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The pseudo-terminal could not be made.
    #[error("the pseudo-terminal: {0}")]
    Pty(#[from] rustix::io::Errno),
    /// A line from the host was not the API's.
    #[error("a line that is not the local API's: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The terminal's name is not UTF-8.
    #[error("the pseudo-terminal's name is not UTF-8")]
    PtyName,
    /// The program could not be started.
    #[error("cannot start {program}: {error}")]
    Start {
        /// The program.
        program: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// How often `agent-host run` tries to reach a host that went away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// `agent-host run`'s side of the sharing: the connection to the host, made again (as a new
/// session) when the host restarts, and the program's last output, which a new registration
/// starts with so that devices see the screen as it is.
struct Sharing {
    socket: std::path::PathBuf,
    command: Vec<String>,
    kind: SessionKind,
    /// Where output goes; `None` while the host is away.
    writer: std::sync::Mutex<Option<UnixStream>>,
    /// The last [`SCROLLBACK`] bytes of output (changed under `writer`'s lock).
    tail: std::sync::Mutex<VecDeque<u8>>,
    /// The program ended: no more registering.
    ended: std::sync::atomic::AtomicBool,
    /// The terminal's size as last told (changed under `writer`'s lock).
    size: std::sync::Mutex<Option<protocol::TermSize>>,
    /// The host first registered with (its id and workspace): a session is shared again only
    /// with the same host for the same workspace, not whatever answers at the socket later.
    host: std::sync::Mutex<Option<(String, String)>>,
    /// End the program when the host goes, instead of waiting to share it again.
    end_with_host: bool,
    /// The host went, and `end_with_host` says the program ends with it.
    host_gone: std::sync::atomic::AtomicBool,
}

impl Sharing {
    /// Registers the session at the host; returns its id and the host's side to read input
    /// from, and makes the connection the one output goes to, after the output kept so far.
    fn register(&self) -> Result<(SessionId, BufReader<UnixStream>), SessionError> {
        let answering = self.status()?;
        match &mut *lock(&self.host) {
            Some(first) if *first != answering => {
                let (host, workspace) = answering;
                return Err(SessionError::OtherHost { host, workspace });
            }
            Some(_) => {}
            none => *none = Some(answering),
        }
        let mut host = UnixStream::connect(&self.socket)
            .map_err(|error| SessionError::Unreachable { socket: self.socket.clone(), error })?;
        let size = *lock(&self.size);
        let request = ApiRequest::Session { command: self.command.clone(), kind: self.kind, size };
        let mut line = serde_json::to_vec(&request)?;
        line.push(b'\n');
        host.write_all(&line)?;
        let mut from_host = BufReader::new(host.try_clone()?);
        let mut first = String::new();
        from_host.read_line(&mut first)?;
        let session: SessionId = match serde_json::from_str(&first)? {
            ApiResponse::SessionOpened { session } => session,
            ApiResponse::Error { message } => return Err(SessionError::Refused(message)),
            other => return Err(SessionError::Unexpected(format!("{other:?}"))),
        };
        let mut writer = lock(&self.writer);
        let tail: Vec<u8> = lock(&self.tail).iter().copied().collect();
        for piece in tail.chunks(CHUNK) {
            send(&mut host, &SessionUpdate::Output { data: Blob(piece.to_vec()) })?;
        }
        // A resize while this registered.
        if let Some(now) = *lock(&self.size)
            && Some(now) != size
        {
            send(&mut host, &SessionUpdate::Resized { size: now })?;
        }
        *writer = Some(host);
        Ok((session, from_host))
    }

    /// Which host answers at the socket, and for which workspace.
    fn status(&self) -> Result<(String, String), SessionError> {
        let mut host = UnixStream::connect(&self.socket)
            .map_err(|error| SessionError::Unreachable { socket: self.socket.clone(), error })?;
        let mut line = serde_json::to_vec(&ApiRequest::Status)?;
        line.push(b'\n');
        host.write_all(&line)?;
        let mut answer = String::new();
        BufReader::new(host).read_line(&mut answer)?;
        match serde_json::from_str(&answer)? {
            ApiResponse::Status { host_id, workspace, .. } => Ok((host_id, workspace)),
            other => Err(SessionError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends output to the host if it is there, and keeps it for a later registration.
    fn output(&self, data: &[u8]) {
        let mut writer = lock(&self.writer);
        {
            let mut tail = lock(&self.tail);
            tail.extend(data);
            let excess = tail.len().saturating_sub(SCROLLBACK);
            tail.drain(..excess);
        }
        for piece in data.chunks(CHUNK) {
            let update = SessionUpdate::Output { data: Blob(piece.to_vec()) };
            if let Some(host) = writer.as_mut()
                && send(host, &update).is_err()
            {
                *writer = None;
            }
        }
    }

    /// Tells the host the terminal's size when it changed.
    fn resized(&self, size: protocol::TermSize) {
        // Looked at alone first: the writer may be busy with a host that reads slowly, and the
        // caller follows the program's end too.
        if *lock(&self.size) == Some(size) {
            return;
        }
        let mut writer = lock(&self.writer);
        *lock(&self.size) = Some(size);
        if let Some(host) = writer.as_mut()
            && send(host, &SessionUpdate::Resized { size }).is_err()
        {
            *writer = None;
        }
    }

    /// Tells the host that the program ended, and registers no more.
    fn end(&self, exit_code: Option<i32>) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(host) = lock(&self.writer).as_mut() {
            let _ = send(host, &SessionUpdate::Ended { exit_code });
        }
    }

    /// Writes approved input from the host into the program, and, when the host goes away,
    /// says so at this terminal and registers again once it is back (a new session, which
    /// devices see start with the screen as it is), until the program ends.
    fn keep(&self, mut from_host: BufReader<UnixStream>, mut input_to: std::fs::File) {
        let ended = || self.ended.load(std::sync::atomic::Ordering::SeqCst);
        loop {
            let mut line = String::new();
            while matches!(from_host.read_line(&mut line), Ok(n) if n > 0) {
                if let Ok(ApiResponse::SessionInput { data }) = serde_json::from_str(&line)
                    && input_to.write_all(&data.0).is_err()
                {
                    return;
                }
                line.clear();
            }
            *lock(&self.writer) = None;
            if ended() {
                return;
            }
            if self.end_with_host {
                self.host_gone.store(true, std::sync::atomic::Ordering::SeqCst);
                // (Not `eprint!`: the host that read this standard error may be gone, and a
                // failed write must not panic this thread.)
                let _ = write!(
                    std::io::stderr(),
                    "\r\nagent-host: the host went away; the session ends with it\r\n"
                );
                return;
            }
            eprint!(
                "\r\nagent-host: the host went away; this session is not shared until it is back\r\n"
            );
            let mut said = false;
            from_host = loop {
                std::thread::sleep(RECONNECT_EVERY);
                if ended() {
                    return;
                }
                match self.register() {
                    Ok((session, reader)) => {
                        eprint!("\r\nagent-host: shared again, as session {session}\r\n");
                        break reader;
                    }
                    Err(e) if !said && e.to_string().starts_with("another host") => {
                        eprint!("\r\nagent-host: {e}\r\n");
                        said = true;
                    }
                    Err(_) => {}
                }
            };
        }
    }
}

/// The size of a session's terminal when `agent-host run` has none of its own.
const HEADLESS: protocol::TermSize = protocol::TermSize { cols: 100, rows: 30 };

/// This terminal's size, if it is a terminal with one.
fn terminal_size() -> Option<protocol::TermSize> {
    let size = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    let size = protocol::TermSize { cols: size.ws_col, rows: size.ws_row };
    size.check().is_ok().then_some(size)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `agent-host run`: runs `argv` in a pseudo-terminal shared through the host at `socket`,
/// inside `jail` when there is one. Returns the program's exit status. If the host goes away
/// meanwhile, the program goes on, the terminal says sharing stopped, and the session is
/// registered again when the host is back; with `end_with_host`, the program is killed instead.
pub fn run(
    socket: &Path,
    argv: Vec<String>,
    kind: SessionKind,
    jail: Option<&crate::jail::Jail>,
    end_with_host: bool,
) -> Result<ExitCode, SessionError> {
    // Without a terminal here (a session a device started), the devices are its screen.
    let headless = terminal_size().is_none();
    let sharing = std::sync::Arc::new(Sharing {
        socket: socket.to_path_buf(),
        command: argv.clone(),
        kind,
        writer: std::sync::Mutex::new(None),
        tail: std::sync::Mutex::new(VecDeque::new()),
        ended: std::sync::atomic::AtomicBool::new(false),
        size: std::sync::Mutex::new(terminal_size().or(headless.then_some(HEADLESS))),
        host: std::sync::Mutex::new(None),
        end_with_host,
        host_gone: std::sync::atomic::AtomicBool::new(false),
    });
    let (session, from_host) = sharing.register()?;

    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    // Close-on-exec: the program (and a jail) gets the terminal's other end only.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new().read(true).write(true).open(std::ffi::OsStr::new(
        std::str::from_utf8(name.as_bytes()).map_err(|_| SessionError::PtyName)?,
    ))?;
    let follow_size = |master: &std::fs::File, sharing: &Sharing| {
        if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdin()) {
            let _ = rustix::termios::tcsetwinsize(master, size);
        }
        if let Some(size) = terminal_size() {
            sharing.resized(size);
        }
    };
    let master = std::fs::File::from(master);
    if headless {
        let size = rustix::termios::Winsize {
            ws_row: HEADLESS.rows,
            ws_col: HEADLESS.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(&master, size);
    }
    follow_size(&master, &sharing);
    let mut launch: Vec<std::ffi::OsString> = jail.map(|j| j.argv()).unwrap_or_default();
    launch.extend(["setsid".into(), "--ctty".into(), "--".into()]);
    launch.extend(argv.iter().map(Into::into));
    let mut child = Command::new(&launch[0])
        .args(&launch[1..])
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .spawn()
        .map_err(|error| SessionError::Start { program: argv[0].clone(), error })?;
    eprintln!("agent-host: session {session} shared with paired devices\r");
    let raw = RawMode::enter();

    // Output: to this terminal at once, to the host in batches.
    let (out_tx, out_rx) = mpsc::channel::<Piece>();
    let end_tx = out_tx.clone();
    let mut reader = master.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        loop {
            match reader.read(&mut buf) {
                // EIO: every holder of the terminal's other end is gone.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                    if out_tx.send(Piece::Output(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let to_host = sharing.clone();
    let batcher = std::thread::spawn(move || {
        let mut batch: Vec<u8> = Vec::new();
        let mut since: Option<Instant> = None;
        let flush = |batch: &mut Vec<u8>, to_host: &Sharing| {
            if !batch.is_empty() {
                to_host.output(batch);
            }
            batch.clear();
        };
        loop {
            let wait =
                since.map_or(Duration::from_secs(3600), |t| BATCH.saturating_sub(t.elapsed()));
            match out_rx.recv_timeout(wait) {
                Ok(Piece::Output(chunk)) => {
                    since.get_or_insert_with(Instant::now);
                    batch.extend_from_slice(&chunk);
                }
                Ok(Piece::End(exit_code)) => {
                    flush(&mut batch, &to_host);
                    to_host.end(exit_code);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if batch.len() >= CHUNK || since.is_some_and(|t| t.elapsed() >= BATCH) {
                flush(&mut batch, &to_host);
                since = None;
            }
        }
    });
    // This terminal's keys go to the program as they are.
    let mut keys_to = master.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || keys_to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    // Approved input from devices, and the host's comings and goings.
    let input_to = master.try_clone()?;
    let keeper = sharing.clone();
    std::thread::spawn(move || keeper.keep(from_host, input_to));
    // The terminal's size, followed; and what a jailed program would point git at removed as
    // soon as it appears (a read-only mount cannot keep a file from being made).
    let roots: Vec<std::path::PathBuf> =
        jail.map(|j| vec![j.workspace.clone()]).unwrap_or_default();
    let redirects = crate::exec::git_redirects(&roots);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if sharing.host_gone.load(std::sync::atomic::Ordering::SeqCst) {
            // The jail dies with it (bubblewrap's --die-with-parent).
            let _ = child.kill();
        }
        for path in crate::exec::remove_new_git_redirects(&roots, &redirects) {
            eprintln!(
                "\r\nagent-host: removed {}, which the jailed program made: it would point git \
                 at other config and hooks\r",
                path.display()
            );
        }
        follow_size(&master, &sharing);
        std::thread::sleep(Duration::from_millis(200));
    };
    for path in crate::exec::remove_new_git_redirects(&roots, &redirects) {
        eprintln!("\r\nagent-host: removed {}, which the jailed program made\r", path.display());
    }
    // Let the last output drain (a background process may hold the terminal open: not forever).
    std::thread::sleep(BATCH * 2);
    let _ = end_tx.send(Piece::End(status.code()));
    let _ = batcher.join();
    drop(raw);
    Ok(ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_agents_are_agents_and_anything_else_a_shell() {
        assert_eq!(kind_of("/usr/local/bin/claude"), SessionKind::Agent);
        assert_eq!(kind_of("bash"), SessionKind::Shell);
        assert_eq!(kind_of("python3"), SessionKind::Shell);
    }

    #[test]
    fn scrollback_keeps_the_latest_output_within_its_bound() {
        let mut live = Live::new(vec!["sh".into()], SessionKind::Shell);
        for i in 0..100u64 {
            assert_eq!(live.push(vec![b'x'; 4096]), i);
        }
        assert!(live.bytes <= SCROLLBACK);
        assert_eq!(live.scrollback.back().map(|(seq, _)| *seq), Some(99));
        assert_eq!(live.scrollback.len(), SCROLLBACK / 4096);
    }
}
