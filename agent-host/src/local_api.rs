//! The local API: JSON lines over the host's unix sockets (mode 0600, peer uid checked), spoken
//! by the `agent-host` CLI, agent hooks, `agent-host ask` and `agent-host run`. Two sockets
//! serve it ([`Door`]): the owner socket takes every request, the agent socket only those that
//! do not grant or change authority ([`ApiRequest::needs_owner`]). One request per
//! connection; the answer is one line, or for a waiting `exec` or `judge` a `pending` line
//! followed by the outcome; a shared session streams both ways until it ends. `pair` is a
//! short conversation: the link, then (unless `yes`) the question "pair this device?" that the
//! client answers with one [`PairAnswer`] line, then the outcome.

use std::path::Path;

use protocol::{ActionHash, Blob, RequestId, Role, Verdict};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::approvals::Pending;

/// The longest request line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// What a local client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Run a command through policy, approval, sandbox and audit.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Working directory inside the workspace (default: its root).
        cwd: Option<String>,
        /// Wait for the outcome (otherwise answer `pending` and go on in the background).
        wait: bool,
    },
    /// Judge an action a local agent will perform itself (a hook, `agent-host ask`): the
    /// answer is `allowed` or `denied` (after `pending` when a person must decide).
    Judge {
        /// The action.
        action: protocol::Action,
        /// Who asks, for people and the audit log (`hook claude-code`).
        requester: String,
        /// The agent's working directory (absolute).
        cwd: String,
    },
    /// Share a session that `agent-host run` holds: the answer is `session_opened`; then the
    /// client sends [`crate::session::SessionUpdate`] lines and receives `session_input` lines.
    Session {
        /// The program and its arguments.
        command: Vec<String>,
        /// Its kind.
        kind: protocol::SessionKind,
        /// Its terminal's size, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<protocol::TermSize>,
    },
    /// Run, through the host's sandbox, a command an agent was allowed under `id` (by
    /// `judge`): the action must be exactly the one judged (the same action hash), and runs
    /// once. The answer is `done`.
    RunAllowed {
        /// The request the command was judged under.
        id: RequestId,
        /// The command, as judged.
        action: protocol::Action,
    },
    /// List pending actions.
    Approvals,
    /// Answer a pending action, naming the action hash that was shown.
    Decide {
        /// The request.
        id: RequestId,
        /// The hash of the action shown to the person.
        action_hash: ActionHash,
        /// Approve or deny.
        verdict: Verdict,
        /// What the person says with it (a denial's reason, an approval's note), for the
        /// audit log and whoever asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Who and where the host is.
    Status,
    /// Open a pairing offer and see it through.
    Pair {
        /// The role the device will have.
        role: Role,
        /// The name to register the device under (default: the name it gives itself).
        name: Option<String>,
        /// How long the offer stays open, in seconds.
        expires_secs: u64,
        /// Accept a device with a valid proof without asking.
        yes: bool,
    },
    /// List the paired devices.
    Devices,
    /// Change a paired device.
    Device {
        /// Its id (a unique prefix is enough).
        id: String,
        /// What to change.
        change: DeviceChange,
    },
}

/// Which socket a request came in at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The owner socket: the person at the machine (hidden from every sandbox and jail).
    Owner,
    /// The agent socket: agents, their hooks, sessions (bound into jails).
    Agent,
}

impl Door {
    /// Who asks through this door, as the audit log names them (`local:terminal`).
    pub fn asker(self) -> &'static str {
        match self {
            Self::Owner => "terminal",
            Self::Agent => "agent",
        }
    }
}

impl ApiRequest {
    /// Whether only the owner socket takes this request: it decides, pairs, or lists or
    /// changes devices and what waits for a decision.
    pub fn needs_owner(&self) -> bool {
        match self {
            Self::Approvals
            | Self::Decide { .. }
            | Self::Pair { .. }
            | Self::Devices
            | Self::Device { .. } => true,
            Self::Exec { .. }
            | Self::Judge { .. }
            | Self::RunAllowed { .. }
            | Self::Session { .. }
            | Self::Status => false,
        }
    }

    /// The request's name on the wire (`decide`).
    pub fn op(&self) -> &'static str {
        match self {
            Self::Exec { .. } => "exec",
            Self::Judge { .. } => "judge",
            Self::RunAllowed { .. } => "run_allowed",
            Self::Session { .. } => "session",
            Self::Approvals => "approvals",
            Self::Decide { .. } => "decide",
            Self::Status => "status",
            Self::Pair { .. } => "pair",
            Self::Devices => "devices",
            Self::Device { .. } => "device",
        }
    }
}

/// A change to a paired device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceChange {
    /// Remove it: cut off at once.
    Revoke,
    /// Give it another name.
    Rename {
        /// The new name.
        name: String,
    },
    /// Give it another role.
    SetRole {
        /// The new role.
        role: Role,
    },
}

/// The pairing client's answer to [`ApiResponse::PairConfirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairAnswer {
    /// Yes, pair it.
    pub accept: bool,
}

/// A paired device as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `dev1…`
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its key's fingerprint, to compare with the device's screen.
    pub fingerprint: String,
    /// When it was paired (Unix ms).
    pub paired_at_ms: u64,
    /// When a verified message from it last arrived (Unix ms).
    pub last_seen_ms: Option<u64>,
    /// Connected to the relay now (as far as the host knows).
    pub online: bool,
    /// It told its end-to-end channel key at pairing (devices paired before the channel did
    /// not, and must pair again to use it).
    #[serde(default)]
    pub channel_key: bool,
}

/// What the host answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ApiResponse {
    /// The command ran.
    Done {
        /// The request.
        request: RequestId,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
        /// Output, up to the cap.
        output: Blob,
        /// Whether output was cut.
        truncated: bool,
        /// Whether it was killed at the timeout.
        timed_out: bool,
    },
    /// Waiting for a person.
    Pending {
        /// The request.
        request: RequestId,
        /// What an approval must name.
        action_hash: ActionHash,
        /// One line for people.
        summary: String,
        /// Why policy asked.
        reason: String,
    },
    /// Allowed for the agent to perform (nothing ran at the host).
    Allowed {
        /// The request.
        request: RequestId,
        /// Why: the rule, or who approved.
        reason: String,
    },
    /// Not run.
    Denied {
        /// The request, if one was made.
        request: Option<RequestId>,
        /// Why.
        reason: String,
    },
    /// The session is shared under this id.
    SessionOpened {
        /// Its id.
        session: protocol::SessionId,
    },
    /// Approved input for the session's terminal.
    SessionInput {
        /// The bytes.
        data: Blob,
    },
    /// The pending actions.
    Approvals {
        /// Oldest id first.
        pending: Vec<Pending>,
        /// Where each pending action, then each settled lately, got on each device.
        #[serde(default)]
        delivery: Vec<crate::approvals::Track>,
        /// The pushes to each device with a push subscription.
        #[serde(default)]
        push: std::collections::BTreeMap<protocol::DeviceId, crate::approvals::PushState>,
    },
    /// A decision was taken.
    Decided {
        /// The request.
        request: RequestId,
        /// What was decided.
        verdict: Verdict,
    },
    /// Status.
    Status {
        /// `host1…`
        host_id: String,
        /// The workspace root.
        workspace: String,
        /// The sandbox in force.
        sandbox: String,
    },
    /// A pairing offer is open: show this link (and its QR code).
    PairLink {
        /// The link.
        link: String,
        /// When the offer lapses (Unix ms).
        expires_at_ms: u64,
    },
    /// A device proved it holds the secret: pair it? Answer with a [`PairAnswer`] line.
    PairConfirm {
        /// `dev1…`
        device: String,
        /// The name it gave.
        name: String,
        /// Its key's fingerprint, as the device shows it.
        fingerprint: String,
        /// The role it would get.
        role: Role,
    },
    /// Paired.
    Paired {
        /// `dev1…`
        device: String,
        /// Its name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// The pairing did not happen.
    PairFailed {
        /// Why.
        reason: String,
    },
    /// The paired devices.
    Devices {
        /// By id.
        devices: Vec<DeviceInfo>,
    },
    /// Done.
    Ok {
        /// What was done, for people.
        message: String,
    },
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// Why a local connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalApiError {
    /// The host's socket could not be reached.
    #[error("cannot reach the host at {}: {error} (is `agent-host serve` running?)", socket.display())]
    Unreachable {
        /// The socket.
        socket: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("the local connection: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not one of the API's messages.
    #[error("a line that is not the local API's: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A line longer than [`MAX_LINE`].
    #[error("a line over {MAX_LINE} bytes")]
    TooLong,
    /// The host could not make an id (no randomness).
    #[error(transparent)]
    Id(#[from] crate::identity::IdentityError),
    /// A client of another user (the sockets are the owner's alone).
    #[error("refused a local client of uid {0}")]
    NotTheOwner(u32),
}

/// Sends one request and returns every answer line until the host closes the connection
/// (`on_line` sees each as it arrives).
pub async fn call(
    socket: &Path,
    request: &ApiRequest,
    mut on_line: impl FnMut(&ApiResponse),
) -> Result<Vec<ApiResponse>, LocalApiError> {
    converse(socket, request, |r| {
        on_line(r);
        None
    })
    .await
}

/// Like [`call`], but `on_line` may answer a line (a pairing question) with a [`PairAnswer`].
pub async fn converse(
    socket: &Path,
    request: &ApiRequest,
    mut on_line: impl FnMut(&ApiResponse) -> Option<PairAnswer>,
) -> Result<Vec<ApiResponse>, LocalApiError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|error| LocalApiError::Unreachable { socket: socket.to_path_buf(), error })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    let mut out = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let response: ApiResponse = serde_json::from_str(&line)?;
        if let Some(answer) = on_line(&response) {
            let mut line = serde_json::to_vec(&answer)?;
            line.push(b'\n');
            write.write_all(&line).await?;
        }
        out.push(response);
    }
    Ok(out)
}

/// One local client's connection: one request, then one or more answers (and, while pairing,
/// the person's yes or no).
pub(crate) struct LocalConn {
    read: BufReader<OwnedReadHalf>,
    /// Bytes read but not yet a whole line.
    partial: Vec<u8>,
    write: OwnedWriteHalf,
}

impl LocalConn {
    /// A connection over an accepted stream.
    pub(crate) fn new(stream: UnixStream) -> Self {
        let (read, write) = stream.into_split();
        Self { read: BufReader::new(read), partial: Vec::new(), write }
    }

    pub(crate) async fn send(&mut self, response: &ApiResponse) -> Result<(), LocalApiError> {
        let mut bytes = serde_json::to_vec(response)?;
        bytes.push(b'\n');
        self.write.write_all(&bytes).await?;
        Ok(())
    }

    /// The next line from the client (at most [`MAX_LINE`] bytes), parsed; `None` when it hung
    /// up. Cancel-safe: what was read stays for the next call.
    pub(crate) async fn next<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<Option<T>, LocalApiError> {
        loop {
            if let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=at).collect();
                return Ok(Some(serde_json::from_slice(&line[..at])?));
            }
            if self.partial.len() > MAX_LINE {
                return Err(LocalApiError::TooLong);
            }
            let buf = self.read.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf.len().min(MAX_LINE + 1);
            self.partial.extend_from_slice(&buf[..n]);
            self.read.consume(n);
        }
    }
}
