//! Fixed keys and one sample of every message, shared by the golden, attack and property tests.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;

use protocol::envelope::{SealContext, Sealed, VerifyContext, seal};
use protocol::pairing::{self, PairingSecret};
use protocol::{
    Action, Actor, Blob, Decision, DeliveryStage, DeviceId, DeviceProgress, ErrorCode, HostEvent,
    Message, NoticeAction, Pairing, PublicKey, PushSubscription, ReceiptStage, ReplayWindow,
    Request, RequestId, Role, SecretKey, SessionId, SessionKind, TermSize, Verdict, action_hash,
};

/// The device's seed in every golden file.
pub(crate) const DEVICE_SEED: [u8; 32] = [0x11; 32];
/// The host's seed in every golden file.
pub(crate) const HOST_SEED: [u8; 32] = [0x22; 32];
/// A fixed "now" (2026-01-01T00:00:00Z).
pub(crate) const NOW_MS: u64 = 1_767_225_600_000;
/// A lifetime of one minute.
pub(crate) const LIFETIME_MS: u64 = 60_000;

pub(crate) fn device() -> SecretKey {
    SecretKey::from_seed(&DEVICE_SEED)
}

pub(crate) fn host() -> SecretKey {
    SecretKey::from_seed(&HOST_SEED)
}

pub(crate) fn request_id(n: u8) -> RequestId {
    RequestId([n; 16])
}

pub(crate) fn session_id() -> SessionId {
    SessionId([0x5e; 16])
}

/// One of each action, named as in the golden files.
pub(crate) fn actions() -> Vec<(&'static str, Action)> {
    let mut env = BTreeMap::new();
    env.insert("RUST_LOG".to_string(), "debug".to_string());
    env.insert("CI".to_string(), "1".to_string());
    vec![
        (
            "run",
            Action::Run {
                argv: vec!["cargo".into(), "test".into(), "--".into(), "--nocapture".into()],
                cwd: "crates/app".into(),
                env: BTreeMap::new(),
            },
        ),
        (
            "run_with_env",
            Action::Run {
                argv: vec!["echo".into(), "héllo wörld".into(), "".into()],
                cwd: ".".into(),
                env,
            },
        ),
        ("read_file", Action::ReadFile { path: "src/main.rs".into() }),
        (
            "write_file",
            Action::WriteFile {
                path: "notes/todo.md".into(),
                content: Blob(b"- ship it\n\x00\xff".to_vec()),
            },
        ),
        (
            "edit_file",
            Action::EditFile {
                path: "src/lib.rs".into(),
                old: "fn old() {}".into(),
                new: "fn new() {}\n".into(),
            },
        ),
        ("list_dir", Action::ListDir { path: "src".into() }),
        (
            "session_input",
            Action::SessionInput { session: session_id(), data: "fix the failing test\n".into() },
        ),
        ("web_fetch", Action::WebFetch { url: "https://docs.rs/tokio/latest/tokio/".into() }),
        (
            "tool",
            Action::Tool {
                name: "mcp__github__create_issue".into(),
                input: r#"{"title":"Flaky test","body":"It fails 1 in 20 runs."}"#.into(),
            },
        ),
        (
            "start_session",
            Action::StartSession {
                command: vec!["claude".into(), "--model".into(), "ünï".into()]
            },
        ),
    ]
}

/// One of each message (every request, decision, event and pairing variant).
pub(crate) fn messages() -> Vec<(String, Message)> {
    let device_id = DeviceId::new(device().public_key());
    let mut out: Vec<(String, Message)> = Vec::new();
    for (name, action) in actions() {
        out.push((
            format!("request_action_{name}"),
            Message::Request(Request::Action { id: request_id(1), action }),
        ));
    }
    out.push((
        "request_cancel".into(),
        Message::Request(Request::Cancel { id: request_id(2), target: request_id(1) }),
    ));
    out.push(("request_sync".into(), Message::Request(Request::Sync { id: request_id(3) })));
    out.push((
        "request_push".into(),
        Message::Request(Request::Push {
            id: request_id(4),
            subscription: Some(PushSubscription {
                endpoint: "https://push.example.net/wpush/v2/gAAAAABl".into(),
                p256dh: "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4".into(),
                auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
                hide_detail: true,
            }),
        }),
    ));
    out.push((
        "request_push_stop".into(),
        Message::Request(Request::Push { id: request_id(5), subscription: None }),
    ));
    out.push((
        "request_receipt".into(),
        Message::Request(Request::Receipt {
            id: request_id(6),
            requests: vec![request_id(1), request_id(2)],
            stage: ReceiptStage::Shown,
        }),
    ));
    let (_, run) = actions().swap_remove(0);
    let (_, edit) = actions().into_iter().find(|(name, _)| *name == "edit_file").unwrap();
    for verdict in [Verdict::Approve, Verdict::Deny] {
        out.push((
            format!("decision_{}", if verdict == Verdict::Approve { "approve" } else { "deny" }),
            Message::Decision(Decision::new(request_id(1), action_hash(&run), verdict)),
        ));
    }
    out.push((
        "decision_deny_with_reason".into(),
        Message::Decision(Decision {
            note: Some("use cargo nextest instead".into()),
            ..Decision::new(request_id(1), action_hash(&run), Verdict::Deny)
        }),
    ));
    let events = [
        (
            "event_action_pending",
            HostEvent::ActionPending {
                request: request_id(1),
                requested_by: Actor::Device { id: device_id, name: None },
                action_hash: action_hash(&run),
                action: run.clone(),
                summary: "run `cargo test -- --nocapture` in crates/app".into(),
                reason: "no rule allows Bash(cargo test *)".into(),
                preview: None,
                expires_at_ms: NOW_MS + 300_000,
            },
        ),
        (
            "event_action_pending_edit",
            HostEvent::ActionPending {
                request: request_id(2),
                requested_by: Actor::Local { name: "hook claude-code".into() },
                action_hash: action_hash(&edit),
                action: edit.clone(),
                summary: "edit /home/ana/src/app/src/lib.rs".into(),
                reason: "edits ask by default".into(),
                preview: Some(
                    "--- src/lib.rs\n+++ src/lib.rs (new)\n@@ -1 +1,2 @@\n-fn old() {}\n+fn new() {}\n+\n"
                        .into(),
                ),
                expires_at_ms: NOW_MS + 300_000,
            },
        ),
        (
            "event_action_decided",
            HostEvent::ActionDecided {
                request: request_id(1),
                verdict: Verdict::Approve,
                decided_by: Some(Actor::Local { name: "terminal".into() }),
                note: None,
            },
        ),
        (
            "event_action_decided_with_reason",
            HostEvent::ActionDecided {
                request: request_id(1),
                verdict: Verdict::Deny,
                decided_by: Some(Actor::Device { id: device_id, name: Some("Ana's phone".into()) }),
                note: Some("use cargo nextest instead".into()),
            },
        ),
        (
            "event_action_result",
            HostEvent::ActionResult {
                request: request_id(1),
                exit_code: Some(101),
                output: Blob(b"test result: FAILED\n".to_vec()),
                truncated: false,
            },
        ),
        (
            "event_output",
            HostEvent::Output {
                session: session_id(),
                seq: 42,
                data: Blob(b"\x1b[32m$\x1b[0m ".to_vec()),
            },
        ),
        (
            "event_session_started",
            HostEvent::SessionStarted {
                session: session_id(),
                command: vec!["claude".into(), "--model".into(), "opus".into()],
                kind: SessionKind::Agent,
                size: Some(TermSize { cols: 120, rows: 40 }),
            },
        ),
        (
            "event_session_resized",
            HostEvent::SessionResized {
                session: session_id(),
                size: TermSize { cols: 80, rows: 24 },
            },
        ),
        ("event_session_ended", HostEvent::SessionEnded { session: session_id(), exit_code: Some(0) }),
        (
            "event_status",
            HostEvent::Status {
                request: Some(request_id(3)),
                host_name: "workstation".into(),
                workspace: "/home/ana/src/app".into(),
                sandbox: "bubblewrap".into(),
                role: Role::Operator,
                pending: 1,
                push_key: None,
                push: false,
            },
        ),
        (
            "event_status_push",
            HostEvent::Status {
                request: None,
                host_name: "workstation".into(),
                workspace: "/home/ana/src/app".into(),
                sandbox: "bubblewrap".into(),
                role: Role::Approver,
                pending: 0,
                push_key: Some("BDd3_hVL9fZi9Ybo2UUzA284WG5FZR30_95YeZJsiApwXKpNcF1rRPF3foIiBHXRdJI2Qhumhf6_LFTeZaNndIo".into()),
                push: true,
            },
        ),
        (
            "event_action_progress",
            HostEvent::ActionProgress {
                request: request_id(1),
                devices: vec![
                    DeviceProgress {
                        device: device_id,
                        name: Some("Ana's phone".into()),
                        stage: DeliveryStage::Shown,
                    },
                    DeviceProgress { device: device_id, name: None, stage: DeliveryStage::Applied },
                ],
            },
        ),
        (
            "event_notice",
            HostEvent::Notice {
                host_name: "workstation".into(),
                waiting: 2,
                actions: vec![NoticeAction {
                    request: request_id(1),
                    action_hash: action_hash(&run),
                    summary: "run `cargo test -- --nocapture` in crates/app".into(),
                    requested_by: "hook claude-code".into(),
                    expires_at_ms: NOW_MS + 300_000,
                }],
                can_decide: true,
            },
        ),
        (
            "event_error",
            HostEvent::Error {
                request: Some(request_id(1)),
                code: ErrorCode::DeniedByPolicy,
                message: "denied by rule Bash(rm *)".into(),
            },
        ),
    ];
    for (name, event) in events {
        out.push((name.into(), Message::Event(event)));
    }
    let secret = PairingSecret::from_bytes([0x33; 32]);
    let proof =
        pairing::prove(&secret, &host().public_key(), &device().public_key(), "Ana's phone");
    out.push((
        "pairing_hello".into(),
        Message::Pairing(Pairing::Hello {
            token: pairing::token(&secret),
            name: "Ana's phone".into(),
            proof,
            channel_key: Some(protocol::ChannelKey([0x44; 32])),
        }),
    ));
    out.push((
        "pairing_accepted".into(),
        Message::Pairing(Pairing::Accepted {
            role: Role::Approver,
            host_name: "workstation".into(),
            channel_key: Some(protocol::ChannelKey([0x45; 32])),
        }),
    ));
    out.push((
        "pairing_rejected".into(),
        Message::Pairing(Pairing::Rejected { reason: "the pairing code has expired".into() }),
    ));
    out
}

/// The context a device uses to seal for the host.
pub(crate) fn to_host(host: &PublicKey, counter: u64) -> SealContext<'_> {
    SealContext {
        recipient: host,
        counter,
        issued_at_ms: NOW_MS,
        expires_at_ms: NOW_MS + LIFETIME_MS,
    }
}

/// A request frame from the device to the host with the given counter.
pub(crate) fn request_frame(counter: u64) -> Vec<u8> {
    let host = host().public_key();
    let message = Message::Request(Request::Action {
        id: request_id(1),
        action: Action::ReadFile { path: "README.md".into() },
    });
    seal(&device(), &to_host(&host, counter), &message).unwrap()
}

/// Decodes and verifies `frame` at the host, at `now_ms`, with `window`.
pub(crate) fn open_at_host(
    frame: &[u8],
    now_ms: u64,
    window: &mut ReplayWindow,
) -> Result<Message, protocol::EnvelopeError> {
    let host = host().public_key();
    let sealed = Sealed::decode(frame)?;
    let verified =
        sealed.verify(&device().public_key(), &VerifyContext::new(&host, now_ms), window)?;
    Ok(verified.into_parts().1)
}
