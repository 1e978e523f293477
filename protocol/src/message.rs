//! The messages, version 1.
//!
//! Each message is the JSON payload of an [`crate::envelope`]; the envelope header's kind byte
//! says which of the four top-level types it is, so a payload is only ever parsed as the type its
//! signer declared. Objects are tagged by a `type` field that comes first; fields follow in the
//! order they are declared here (that is the order `serde_json` writes, and the order a browser
//! must use to reproduce the golden files byte for byte). Unknown types and unknown fields are
//! refused: a peer that speaks a newer dialect gets an error, not a guess.
//!
//! Byte strings (file content, output) travel as standard base64 with padding.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{ActionHash, ChannelKey, PairingProof, PairingToken, RequestId, SessionId};
use crate::keys::DeviceId;
use crate::limits::{self, LimitError};

/// Which top-level message an envelope carries (the header's kind byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum MessageKind {
    /// [`Request`]: a device asks the host for something.
    Request = 1,
    /// [`Decision`]: a device answers a pending action.
    Decision = 2,
    /// [`HostEvent`]: the host tells devices what happened.
    Event = 3,
    /// [`Pairing`]: the pairing handshake.
    Pairing = 4,
}

impl MessageKind {
    /// The kind for a header byte, if it is one this version knows.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Request,
            2 => Self::Decision,
            3 => Self::Event,
            4 => Self::Pairing,
            _ => return None,
        })
    }
}

/// A message of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A device asks.
    Request(Request),
    /// A device answers a pending action.
    Decision(Decision),
    /// The host reports.
    Event(HostEvent),
    /// Pairing handshake.
    Pairing(Pairing),
}

/// What is wrong with a parsed message beyond its syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A field is over its size limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A field holds a value that can never be valid (an empty argv, a NUL byte in a path, …).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, named as on the wire.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Message {
    /// The kind byte this message travels under.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Request(_) => MessageKind::Request,
            Self::Decision(_) => MessageKind::Decision,
            Self::Event(_) => MessageKind::Event,
            Self::Pairing(_) => MessageKind::Pairing,
        }
    }

    /// Checks every size limit and every value that can never be valid.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            Self::Request(Request::Action { action, .. }) => action.check(),
            Self::Request(Request::Push { subscription: Some(s), .. }) => s.check(),
            Self::Request(Request::Receipt { requests, .. }) => {
                Ok(limits::check("request.requests", requests.len(), limits::MAX_RECEIPTS)?)
            }
            Self::Request(Request::Cancel { .. } | Request::Sync { .. } | Request::Push { .. }) => {
                Ok(())
            }
            Self::Decision(d) => d.check(),
            Self::Event(event) => event.check(),
            Self::Pairing(pairing) => pairing.check(),
        }
    }

    /// The JSON payload bytes.
    pub fn to_payload(&self) -> Vec<u8> {
        let bytes = match self {
            Self::Request(m) => serde_json::to_vec(m),
            Self::Decision(m) => serde_json::to_vec(m),
            Self::Event(m) => serde_json::to_vec(m),
            Self::Pairing(m) => serde_json::to_vec(m),
        };
        // These types hold only strings, integers, maps with string keys and byte strings that
        // serialize as strings: serde_json cannot fail on them.
        bytes.expect("message types always serialize")
    }

    /// Parses a payload as the given kind, then checks it. Only [`crate::envelope`] calls this,
    /// after the signature has been verified.
    pub(crate) fn from_payload(kind: MessageKind, payload: &[u8]) -> Result<Self, PayloadError> {
        let message = match kind {
            MessageKind::Request => Self::Request(serde_json::from_slice(payload)?),
            MessageKind::Decision => Self::Decision(serde_json::from_slice(payload)?),
            MessageKind::Event => Self::Event(serde_json::from_slice(payload)?),
            MessageKind::Pairing => Self::Pairing(serde_json::from_slice(payload)?),
        };
        message.check()?;
        Ok(message)
    }
}

/// A payload that is not a valid message of its declared kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or not the declared type (an unknown `type`, an unknown or missing field).
    #[error("payload does not parse: {0}")]
    Syntax(#[from] serde_json::Error),
    /// Parses, but breaks a limit or holds an impossible value.
    #[error(transparent)]
    Invalid(#[from] MessageError),
}

/// A device asks the host for something. Nothing here is a command: the host judges every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Asks for an action to be judged by policy and, if allowed or approved, performed.
    Action {
        /// Chosen by the device; unique per device.
        id: RequestId,
        /// What to do.
        action: Action,
    },
    /// Asks to cancel an earlier request of the same device (pending or running).
    Cancel {
        /// This request's own id.
        id: RequestId,
        /// The request to cancel.
        target: RequestId,
    },
    /// Asks for the host's status and every pending action the device may see; the host
    /// answers with an [`HostEvent::ActionPending`] for each, then [`HostEvent::Status`].
    Sync {
        /// This request's own id, echoed in the status.
        id: RequestId,
    },
    /// Sets where the host pushes this device's notifications (a browser's Web Push
    /// subscription), or with none stops them. The host answers with [`HostEvent::Status`].
    Push {
        /// This request's own id, echoed in the status.
        id: RequestId,
        /// The subscription; absent to stop.
        subscription: Option<PushSubscription>,
    },
    /// Says how far pending actions got on this device: shown to its person, or only received.
    /// Not answered.
    Receipt {
        /// This request's own id.
        id: RequestId,
        /// The pending actions, at most [`limits::MAX_RECEIPTS`].
        requests: Vec<RequestId>,
        /// How far.
        stage: ReceiptStage,
    },
}

/// A browser's Web Push subscription (`PushSubscription.toJSON()`), and how its notifications
/// are to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// The push service's URL for this browser.
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's authentication secret, base64url.
    pub auth: String,
    /// Notifications say only how many actions wait, for a locked screen.
    pub hide_detail: bool,
}

/// How far a pending action got on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStage {
    /// The device has it.
    Delivered,
    /// Its person was shown it (a notification, or the page in view).
    Shown,
}

/// One thing the host might do. Its canonical bytes (see [`crate::action`]) are what an approval
/// binds to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Run a program with exactly these arguments (no shell unless argv names one).
    Run {
        /// Program and arguments; never empty.
        argv: Vec<String>,
        /// Working directory, resolved beneath a workspace root by the host.
        cwd: String,
        /// Environment variables to set on top of the host's sanitized environment.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// Read a file.
    ReadFile {
        /// The file.
        path: String,
    },
    /// Create or replace a file with this content.
    WriteFile {
        /// The file.
        path: String,
        /// The whole new content.
        content: Blob,
    },
    /// Replace the one occurrence of `old` with `new`; fails if `old` is missing or not unique.
    EditFile {
        /// The file.
        path: String,
        /// The exact text to replace; must occur exactly once.
        old: String,
        /// Its replacement.
        new: String,
    },
    /// List a directory.
    ListDir {
        /// The directory.
        path: String,
    },
    /// Send input to a session (a prompt to an agent, or keystrokes to a shell).
    SessionInput {
        /// The session.
        session: SessionId,
        /// The input, sent as is.
        data: String,
    },
    /// Fetch a URL. Judged for an agent that fetches it itself (`agent-host hook`, `ask`); the
    /// host does not fetch.
    WebFetch {
        /// The URL.
        url: String,
    },
    /// Use another tool of an agent (an MCP tool, `mcp__server__tool`). Judged only: the agent
    /// uses the tool itself.
    Tool {
        /// The tool's name.
        name: String,
        /// Its input as the agent gave it (JSON text).
        input: String,
    },
    /// Start a program as a session on the host (as `agent-host run -- COMMAND` would, in the
    /// host's jail, in the workspace), shared with every device. Judged by `Session(…)` rules;
    /// the host decides the session's kind from the program (a known agent, else a shell).
    StartSession {
        /// Program and arguments; never empty.
        command: Vec<String>,
    },
}

impl Action {
    fn check(&self) -> Result<(), MessageError> {
        match self {
            Self::Run { argv, cwd, env } => {
                check_argv(
                    [
                        "action.argv",
                        "action.argv (count)",
                        "action.argv (one argument)",
                        "action.argv (all arguments)",
                    ],
                    argv,
                )?;
                check_path("action.cwd", cwd)?;
                limits::check("action.env (count)", env.len(), limits::MAX_ENV)?;
                for (name, value) in env {
                    limits::check("action.env (name)", name.len(), limits::MAX_ENV_ENTRY)?;
                    limits::check("action.env (value)", value.len(), limits::MAX_ENV_ENTRY)?;
                    if !is_env_name(name) {
                        return Err(invalid("action.env", "names are [A-Za-z_][A-Za-z0-9_]*"));
                    }
                    no_nul("action.env", value)?;
                }
                Ok(())
            }
            Self::ReadFile { path } | Self::ListDir { path } => check_path("action.path", path),
            Self::WriteFile { path, content } => {
                check_path("action.path", path)?;
                Ok(limits::check("action.content", content.0.len(), limits::MAX_CONTENT)?)
            }
            Self::EditFile { path, old, new } => {
                check_path("action.path", path)?;
                if old.is_empty() {
                    return Err(invalid("action.old", "must not be empty"));
                }
                limits::check("action.old", old.len(), limits::MAX_CONTENT)?;
                Ok(limits::check("action.new", new.len(), limits::MAX_CONTENT)?)
            }
            Self::SessionInput { data, .. } => {
                Ok(limits::check("action.data", data.len(), limits::MAX_INPUT)?)
            }
            Self::WebFetch { url } => {
                if url.is_empty() {
                    return Err(invalid("action.url", "must not be empty"));
                }
                limits::check("action.url", url.len(), limits::MAX_URL)?;
                no_nul("action.url", url)
            }
            Self::StartSession { command } => check_argv(
                [
                    "action.command",
                    "action.command (count)",
                    "action.command (one argument)",
                    "action.command (all arguments)",
                ],
                command,
            ),
            Self::Tool { name, input } => {
                if name.is_empty() || name.chars().any(char::is_control) {
                    return Err(invalid("action.name", "a tool name is printable text"));
                }
                limits::check("action.name", name.len(), limits::MAX_TOOL_NAME)?;
                Ok(limits::check("action.input", input.len(), limits::MAX_CONTENT)?)
            }
        }
    }
}

fn invalid(field: &'static str, reason: &'static str) -> MessageError {
    MessageError::Invalid { field, reason }
}

fn no_nul(field: &'static str, s: &str) -> Result<(), MessageError> {
    if s.contains('\0') { Err(invalid(field, "must not contain NUL")) } else { Ok(()) }
}

/// A program and its arguments: a program named, within the limits, no NUL. `fields`: the
/// field's name, then as its count, one argument and all arguments are named in errors.
fn check_argv(fields: [&'static str; 4], argv: &[String]) -> Result<(), MessageError> {
    let [field, count, one, all] = fields;
    if argv.is_empty() {
        return Err(invalid(field, "must name a program"));
    }
    limits::check(count, argv.len(), limits::MAX_ARGS)?;
    let mut total = 0;
    for arg in argv {
        limits::check(one, arg.len(), limits::MAX_ARG)?;
        no_nul(field, arg)?;
        total += arg.len();
    }
    Ok(limits::check(all, total, limits::MAX_ARGV_BYTES)?)
}

fn check_path(field: &'static str, path: &str) -> Result<(), MessageError> {
    if path.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    limits::check(field, path.len(), limits::MAX_PATH)?;
    no_nul(field, path)
}

fn check_text(field: &'static str, text: &str) -> Result<(), MessageError> {
    Ok(limits::check(field, text.len(), limits::MAX_TEXT)?)
}

impl PushSubscription {
    fn check(&self) -> Result<(), MessageError> {
        limits::check("subscription.endpoint", self.endpoint.len(), limits::MAX_URL)?;
        no_nul("subscription.endpoint", &self.endpoint)?;
        limits::check("subscription.p256dh", self.p256dh.len(), limits::MAX_PUSH_KEY)?;
        Ok(limits::check("subscription.auth", self.auth.len(), limits::MAX_PUSH_KEY)?)
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A device's answer to a pending action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The pending request answered.
    pub request: RequestId,
    /// The hash of the exact action the device was shown and approves or denies.
    pub action_hash: ActionHash,
    /// The answer.
    pub verdict: Verdict,
    /// A few words for whoever asked (a denial's reason, an approval's note), at most
    /// [`limits::MAX_NOTE`] bytes: the audit log keeps them, and an agent is told them ("use
    /// cargo nextest instead").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Decision {
    /// The decision on `request` (whose action hashes to `action_hash`), without a note.
    pub fn new(request: RequestId, action_hash: ActionHash, verdict: Verdict) -> Self {
        Self { request, action_hash, verdict, note: None }
    }

    fn check(&self) -> Result<(), MessageError> {
        self.note.as_deref().map_or(Ok(()), check_note)
    }
}

/// Checks a decision's note: at most [`limits::MAX_NOTE`] bytes of one line of text, without
/// control characters or bidirectional overrides (it is shown at terminals, in the audit log,
/// and to an agent, where such characters could make it read as something else).
pub fn check_note(note: &str) -> Result<(), MessageError> {
    limits::check("decision.note", note.len(), limits::MAX_NOTE)?;
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}');
    if note.chars().any(|c| c.is_control() || bidi(c)) {
        return Err(invalid(
            "decision.note",
            "one line, without control or bidirectional characters",
        ));
    }
    Ok(())
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Go ahead with exactly this action.
    Approve,
    /// Do not.
    Deny,
}

/// Who asked for, or answered, an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Actor {
    /// A paired device.
    Device {
        /// The device.
        id: DeviceId,
        /// Its name at the host, for people (the host's registry; absent when it has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Someone or something on the host machine: the terminal, an agent hook.
    Local {
        /// What it is, for people (`terminal`, `hook claude-code`).
        name: String,
    },
}

/// What the host reports to devices. Signed by the host like everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostEvent {
    /// An action waits for an approver.
    ActionPending {
        /// The request.
        request: RequestId,
        /// Who asked.
        requested_by: Actor,
        /// Exactly what would run.
        action: Action,
        /// SHA-256 of the action's canonical bytes; a device recomputes it before approving.
        action_hash: ActionHash,
        /// One line for people ("run `cargo test` in /src/app").
        summary: String,
        /// Why policy asks (the rule or default that decided).
        reason: String,
        /// For writes and edits: a unified diff of the file as it is against what it would
        /// become, possibly cut short.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
        /// When the pending action lapses and counts as denied (Unix time, milliseconds).
        expires_at_ms: u64,
    },
    /// A pending action was answered (or lapsed).
    ActionDecided {
        /// The request.
        request: RequestId,
        /// The outcome.
        verdict: Verdict,
        /// Who answered; absent when the action lapsed unanswered.
        decided_by: Option<Actor>,
        /// What they said with it (a denial's reason, an approval's note).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An action finished.
    ActionResult {
        /// The request.
        request: RequestId,
        /// The exit code of a command; absent for file operations or when killed by a signal.
        exit_code: Option<i32>,
        /// Output or file content, up to the cap.
        output: Blob,
        /// Whether `output` was cut at the cap.
        truncated: bool,
    },
    /// A session started under the host (or is running, when a device syncs).
    SessionStarted {
        /// The session.
        session: SessionId,
        /// The program and its arguments.
        command: Vec<String>,
        /// What kind of program it is, which decides how input to it is judged.
        kind: SessionKind,
        /// The size of its terminal at the host, when known: what the program draws for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<TermSize>,
    },
    /// A session's terminal at the host changed size.
    SessionResized {
        /// The session.
        session: SessionId,
        /// Its new size.
        size: TermSize,
    },
    /// A session ended.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// The program's exit code; absent when killed by a signal.
        exit_code: Option<i32>,
    },
    /// A piece of a session's output.
    Output {
        /// The session.
        session: SessionId,
        /// Position of this chunk in the session's stream, from 0 without gaps.
        seq: u64,
        /// The bytes.
        data: Blob,
    },
    /// Who and where the host is, and what this device may do there. Follows the pending
    /// actions it counts.
    Status {
        /// The [`Request::Sync`] answered; absent when the host sends it unasked (a device came
        /// online).
        request: Option<RequestId>,
        /// The host's name, for people.
        host_name: String,
        /// The workspace root.
        workspace: String,
        /// The sandbox in force, for people.
        sandbox: String,
        /// This device's role.
        role: Role,
        /// How many pending actions were sent just before.
        pending: u32,
        /// The host's Web Push key (VAPID, P-256, base64url): a browser subscribes with it.
        /// Absent when the host does not push.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push_key: Option<String>,
        /// Whether the host pushes to this device (it holds its subscription).
        #[serde(default, skip_serializing_if = "is_false")]
        push: bool,
    },
    /// How far a pending action (or one settled a moment ago) got on each device it reached;
    /// sent when that changes.
    ActionProgress {
        /// The request.
        request: RequestId,
        /// The devices, at most [`crate::relay::MAX_DEVICES`].
        devices: Vec<DeviceProgress>,
    },
    /// What a push notification shows: sent through a push service, not the relay, to a device
    /// that subscribed ([`Request::Push`]), when an action starts to wait.
    Notice {
        /// The host's name, for people.
        host_name: String,
        /// How many actions wait for a person now.
        waiting: u32,
        /// The newest of them, at most [`limits::MAX_NOTICE_ACTIONS`]; none for a device that
        /// hides detail.
        actions: Vec<NoticeAction>,
        /// Whether this device may answer them (an approver or an operator).
        can_decide: bool,
    },
    /// Something went wrong with a request, or with the link.
    Error {
        /// The request it concerns, if any.
        request: Option<RequestId>,
        /// What kind of failure.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

impl HostEvent {
    fn check(&self) -> Result<(), MessageError> {
        match self {
            Self::ActionPending { requested_by, action, summary, reason, preview, .. } => {
                check_actor(requested_by)?;
                action.check()?;
                check_text("event.summary", summary)?;
                check_text("event.reason", reason)?;
                let preview = preview.as_deref().unwrap_or_default();
                Ok(limits::check("event.preview", preview.len(), limits::MAX_PREVIEW)?)
            }
            Self::ActionDecided { decided_by, note, .. } => {
                note.as_deref().map_or(Ok(()), check_note)?;
                decided_by.as_ref().map_or(Ok(()), check_actor)
            }
            Self::ActionResult { output, .. } => {
                Ok(limits::check("event.output", output.0.len(), limits::MAX_OUTPUT)?)
            }
            Self::Output { data, .. } => {
                Ok(limits::check("event.data", data.0.len(), limits::MAX_OUTPUT)?)
            }
            Self::SessionStarted { command, size, .. } => {
                limits::check("event.command (count)", command.len(), limits::MAX_ARGS)?;
                let total: usize = command.iter().map(String::len).sum();
                limits::check("event.command", total, limits::MAX_ARGV_BYTES)?;
                size.as_ref().map_or(Ok(()), TermSize::check)
            }
            Self::SessionResized { size, .. } => size.check(),
            Self::SessionEnded { .. } => Ok(()),
            Self::Status { host_name, workspace, sandbox, .. } => {
                check_text("event.host_name", host_name)?;
                check_text("event.workspace", workspace)?;
                check_text("event.sandbox", sandbox)
            }
            Self::Error { message, .. } => check_text("event.message", message),
            Self::ActionProgress { devices, .. } => {
                limits::check("event.devices", devices.len(), crate::relay::MAX_DEVICES)?;
                for d in devices {
                    d.name.as_deref().map_or(Ok(()), |n| check_text("event.devices.name", n))?;
                }
                Ok(())
            }
            Self::Notice { host_name, actions, .. } => {
                check_text("event.host_name", host_name)?;
                limits::check("event.actions", actions.len(), limits::MAX_NOTICE_ACTIONS)?;
                for a in actions {
                    check_text("event.actions.summary", &a.summary)?;
                    check_text("event.actions.requested_by", &a.requested_by)?;
                }
                Ok(())
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How far an action got on one device: issued (the host sent it), delivered (the device has
/// it), shown (its person saw it), decided (this device answered it), applied (what it
/// approved was carried out). Only ever forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStage {
    /// The host sent it.
    Issued,
    /// The device has it.
    Delivered,
    /// Its person was shown it.
    Shown,
    /// This device answered it.
    Decided,
    /// What this device approved was carried out.
    Applied,
}

/// One device in an [`HostEvent::ActionProgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProgress {
    /// The device.
    pub device: DeviceId,
    /// Its name at the host, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How far.
    pub stage: DeliveryStage,
}

/// One pending action as a notification shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeAction {
    /// The request.
    pub request: RequestId,
    /// What a decision from the notification names.
    pub action_hash: ActionHash,
    /// One line for people.
    pub summary: String,
    /// Who asked, for people.
    pub requested_by: String,
    /// When it lapses (Unix time, milliseconds).
    pub expires_at_ms: u64,
}

fn check_actor(actor: &Actor) -> Result<(), MessageError> {
    match actor {
        Actor::Device { name: None, .. } => Ok(()),
        Actor::Device { name: Some(name), .. } => check_text("actor.name", name),
        Actor::Local { name } => check_text("actor.name", name),
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermSize {
    /// Columns, 1 to [`limits::MAX_TERM_COLS`].
    pub cols: u16,
    /// Rows, 1 to [`limits::MAX_TERM_ROWS`].
    pub rows: u16,
}

impl TermSize {
    /// Within the limits, and not zero.
    pub fn check(&self) -> Result<(), MessageError> {
        limits::check("size.cols", usize::from(self.cols), limits::MAX_TERM_COLS)?;
        limits::check("size.rows", usize::from(self.rows), limits::MAX_TERM_ROWS)?;
        if self.cols == 0 || self.rows == 0 {
            return Err(MessageError::Invalid { field: "size", reason: "a terminal of no cells" });
        }
        Ok(())
    }
}

/// What runs in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A coding agent: prompt text is allowed by default (its own tool calls go through the
    /// host's hook).
    Agent,
    /// A shell or an interpreter: each input is an action that needs approval, because typing
    /// into a shell is performing.
    Shell,
}

/// Typed failures, so a device can say exactly what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or broke a limit.
    BadRequest,
    /// The device's role does not allow this.
    Forbidden,
    /// The device was revoked.
    Revoked,
    /// Policy denies the action.
    DeniedByPolicy,
    /// An approver denied the action.
    DeniedByApprover,
    /// Nobody answered before the pending action lapsed.
    Expired,
    /// The request id, session or file does not exist.
    NotFound,
    /// An edit's old text is missing or not unique, or a request id was reused.
    Conflict,
    /// The path resolves outside the workspace.
    OutsideWorkspace,
    /// Too many requests; try later.
    RateLimited,
    /// The host failed in a way that is not the device's fault.
    Internal,
}

/// What a device may do; set at the host when pairing, changed only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees output, pending actions and results.
    Viewer,
    /// A viewer that also answers pending actions.
    Approver,
    /// An approver that also sends input and requests actions.
    Operator,
}

/// The pairing handshake (see [`crate::pairing`] for the proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pairing {
    /// Device → host, signed by the new device key: "I hold the pairing secret".
    Hello {
        /// Which offer (the token of its secret, from the link).
        token: PairingToken,
        /// The name the device gives itself, shown at the host for the yes/no.
        name: String,
        /// HMAC-SHA256 under the pairing secret over a transcript of both keys and the name.
        proof: PairingProof,
        /// The device's static key for the end-to-end channel; absent from devices that do not
        /// speak it yet. Bound to the device by the hello's signature.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_key: Option<ChannelKey>,
    },
    /// Host → device: the person at the host said yes.
    Accepted {
        /// The role granted.
        role: Role,
        /// The host's name, for the device's list.
        host_name: String,
        /// The host's static key for the end-to-end channel, bound to the host by the answer's
        /// signature.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_key: Option<ChannelKey>,
    },
    /// Host → device: refused (wrong proof, expired or used secret, the person said no).
    Rejected {
        /// Why, for people.
        reason: String,
    },
}

impl Pairing {
    fn check(&self) -> Result<(), MessageError> {
        match self {
            Self::Hello { name, .. } => {
                if name.trim().is_empty() {
                    return Err(invalid("pairing.name", "must not be empty"));
                }
                if name.chars().any(char::is_control) {
                    return Err(invalid("pairing.name", "must not contain control characters"));
                }
                check_text("pairing.name", name)
            }
            Self::Accepted { host_name, .. } => check_text("pairing.host_name", host_name),
            Self::Rejected { reason } => check_text("pairing.reason", reason),
        }
    }
}

/// Bytes that travel as standard base64 with padding.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl From<&[u8]> for Blob {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64_simd::STANDARD.encode_to_string(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64;
        impl serde::de::Visitor<'_> for Base64 {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            // Borrowed or not, the string is decoded in place: no intermediate copy of what can
            // be megabytes of output.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Blob, E> {
                base64_simd::STANDARD.decode_to_vec(s.as_bytes()).map(Blob).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Base64)
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn a_note_is_one_line_of_text_within_its_limit() {
        assert!(check_note("use cargo nextest instead").is_ok());
        assert!(check_note("écrire « ceci » 日本").is_ok());
        for bad in
            ["two\nlines", "\u{1b}[2Jclear", "back\rover", "\u{202e}txt", "nul\0", "a\u{2028}b"]
        {
            assert!(check_note(bad).is_err(), "{bad:?}");
        }
        assert!(check_note(&"x".repeat(limits::MAX_NOTE)).is_ok());
        assert!(check_note(&"x".repeat(limits::MAX_NOTE + 1)).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Action {
        Action::Run {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: ".".into(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        let ok = br#"{"type":"read_file","path":"a"}"#;
        assert!(serde_json::from_slice::<Action>(ok).is_ok());
        assert!(serde_json::from_slice::<Action>(br#"{"type":"execute","path":"a"}"#).is_err());
        assert!(
            serde_json::from_slice::<Action>(br#"{"type":"read_file","path":"a","x":1}"#).is_err()
        );
        assert!(
            serde_json::from_slice::<Decision>(
                format!(
                    r#"{{"request":"{}","action_hash":"{}","verdict":"maybe"}}"#,
                    "0".repeat(32),
                    "0".repeat(64)
                )
                .as_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn limits_name_the_field() {
        assert_eq!(run(&[]).check(), Err(invalid("action.argv", "must name a program")));
        let many = vec!["x"; limits::MAX_ARGS + 1];
        assert!(matches!(
            run(&many).check(),
            Err(MessageError::Limit(LimitError { field: "action.argv (count)", .. }))
        ));
        let long = "x".repeat(limits::MAX_ARG + 1);
        assert!(matches!(
            run(&[&long]).check(),
            Err(MessageError::Limit(LimitError { field: "action.argv (one argument)", .. }))
        ));
        assert_eq!(run(&["a\0b"]).check(), Err(invalid("action.argv", "must not contain NUL")));
        let edit = Action::EditFile { path: "f".into(), old: String::new(), new: "x".into() };
        assert_eq!(edit.check(), Err(invalid("action.old", "must not be empty")));
        let mut env = BTreeMap::new();
        env.insert("BAD-NAME".to_string(), "1".to_string());
        let with_env = Action::Run { argv: vec!["true".into()], cwd: ".".into(), env };
        assert!(matches!(with_env.check(), Err(MessageError::Invalid { field: "action.env", .. })));
    }

    #[test]
    fn blob_is_base64() {
        let json = serde_json::to_string(&Blob(b"hi\n".to_vec())).unwrap();
        assert_eq!(json, "\"aGkK\"");
        assert!(serde_json::from_str::<Blob>("\"not base64!\"").is_err());
        // One spelling per value: no missing padding, no stray bits after the last byte.
        assert!(serde_json::from_str::<Blob>("\"aGkK\"").is_ok());
        assert!(serde_json::from_str::<Blob>("\"aGk\"").is_err());
        assert!(serde_json::from_str::<Blob>("\"aGl=\"").is_err());
    }
}
