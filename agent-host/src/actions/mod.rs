//! The one path every action takes, whoever asks (the local terminal, an agent hook, a paired
//! device): policy → (if asked) a pending action that the first valid decision settles → audit
//! record flushed → sandboxed run or confined file operation → audit record of the result.
//!
//! Every step is also told to the paired devices as a host-signed event: a new pending action,
//! its decision, the result. What only concerns the requester (a refusal, a failure) is returned
//! as an [`Outcome`] for the caller to pass on.

use std::path::PathBuf;
use std::sync::Arc;

use protocol::{Action, ActionHash, ErrorCode, HostEvent, RequestId, Verdict};
use tokio::sync::oneshot;

use crate::approvals::{Pending, Requester, Resolution};
use crate::audit::Event;
use crate::exec::Job;
use crate::host::Host;
use crate::host_core::Grant;
use crate::local_api::Door;
use crate::policy::Verdict as PolicyVerdict;

mod describe;
mod perform;

use describe::{Judged, describe_for_agent, judge_input, subject_of};
pub use describe::{MAX_PREVIEW, quote_argv};
use perform::{Work, perform, working_dir};

/// Where a request stands, as its requester is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for a person.
    Pending(Box<Pending>),
    /// Done (ran, or the file operation succeeded).
    Done {
        /// The request.
        request: RequestId,
        /// The command's exit code; `None` for file operations or a killed command.
        exit_code: Option<i32>,
        /// Output, file content or listing, up to the cap.
        output: Vec<u8>,
        /// Whether output was cut.
        truncated: bool,
        /// Killed at the timeout.
        timed_out: bool,
    },
    /// Allowed for an agent that performs the action itself (nothing ran here).
    Allowed {
        /// The request.
        request: RequestId,
        /// Why: the rule, or who approved.
        reason: String,
    },
    /// Not done: denied, lapsed, or failed.
    Refused {
        /// The request, once one was made.
        request: Option<RequestId>,
        /// What kind of refusal.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

impl Outcome {
    fn refused(request: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused { request, code, message: message.into() }
    }

    /// The event that tells the requester about a refusal (others learn of the rest by
    /// broadcast).
    pub fn error_event(&self) -> Option<HostEvent> {
        match self {
            Self::Refused { request, code, message } => {
                Some(HostEvent::Error { request: *request, code: *code, message: message.clone() })
            }
            _ => None,
        }
    }
}

/// The final outcome, still to come when a person must decide.
pub type Later = tokio::task::JoinHandle<Outcome>;

/// Judges a request and, when allowed or approved, performs it. Returns the first answer, and
/// the final one still to come when a person must decide.
pub async fn submit(
    host: Arc<Host>,
    by: Requester,
    id: RequestId,
    action: Action,
) -> (Outcome, Option<Later>) {
    // Input for a session is judged against the line as the core has it now.
    let session = match &action {
        Action::SessionInput { session, .. } => host.core.session(*session).await.ok().flatten(),
        _ => None,
    };
    let judged = match judge_input(&host, id, &action, session) {
        Ok(j) => j,
        Err(refusal) => return (refusal, None),
    };
    let cwd = match &judged.work {
        Work::Run(job) => job.cwd.clone(),
        Work::File(_) | Work::Input(..) | Work::Session(..) => host.files.root().to_path_buf(),
    };
    let mut decision = match &judged.subject {
        Ok(subject) => host.config.policy.decide(subject, &cwd),
        Err(fixed) => fixed.clone(),
    };
    // A device runs a command without a person's yes only when every part of it is allowed by
    // an explicit allow rule: the built-in allowances for read-only commands serve agents at
    // this machine, not a phone that may be lost.
    if matches!(by, Requester::Device(_))
        && matches!(action, Action::Run { .. })
        && decision.decision == PolicyVerdict::Allow
        && !decision.explicit
    {
        decision.decision = PolicyVerdict::Ask;
        decision.reason = format!(
            "a device's command runs unasked only under an explicit allow rule ({})",
            decision.reason
        );
    }
    let label = by.label();
    if let Err(refusal) = audit_request(&host, id, &label, &action, &decision) {
        return (refusal, None);
    }
    // The network is on only for a command that reaches it by design and that an explicit rule
    // allowed (here) or a person approved (set when the approval arrives).
    let Judged { summary, preview, mut work, wants_network, .. } = judged;
    if let Work::Run(job) = &mut work {
        job.network = wants_network && decision.explicit;
    }
    match decision.decision {
        PolicyVerdict::Deny => {
            (Outcome::refused(Some(id), ErrorCode::DeniedByPolicy, decision.reason), None)
        }
        PolicyVerdict::Allow => {
            // A device's withdrawal that overtook it finds nothing to withdraw, and says so.
            if let Requester::Device(device) = &by {
                let device = *device;
                let _ = host.core.send(crate::host_core::Command::Allowed { device, id }).await;
            }
            (perform(host, id, work).await, None)
        }
        PolicyVerdict::Ask => {
            let shown = Shown { summary, reason: decision.reason, preview, requested_by: by };
            let runner = host.clone();
            ask_then(&host, id, action, shown, move |_| async move {
                if let Work::Run(job) = &mut work {
                    job.network = wants_network;
                }
                perform(runner, id, work).await
            })
            .await
        }
    }
}

/// Makes an action wait for a person; once approved, `then` (given who approved) gives the
/// final outcome; a denial or a lapse is the final outcome itself.
async fn ask_then<F, Fut>(
    host: &Arc<Host>,
    id: RequestId,
    action: Action,
    shown: Shown,
    then: F,
) -> (Outcome, Option<Later>)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let (pending, rx) = match open_pending(host, id, action, shown).await {
        Ok(opened) => opened,
        Err(refusal) => return (refusal, None),
    };
    let host = host.clone();
    let later = tokio::spawn(async move {
        match answered(&host, id, rx.await) {
            Ok(by) => then(by).await,
            Err(refusal) => refusal,
        }
    });
    (Outcome::Pending(Box::new(pending)), Some(later))
}

/// Writes the audit record of a judged request (durable before anything takes effect).
fn audit_request(
    host: &Host,
    id: RequestId,
    label: &str,
    action: &Action,
    decision: &crate::policy::Decision,
) -> Result<(), Outcome> {
    host.record(Event::Request {
        request: id.to_string(),
        actor: label.into(),
        action: serde_json::to_value(action).unwrap_or_default(),
        action_hash: protocol::action_hash(action).to_string(),
        decision: decision.decision.to_string(),
        reason: decision.reason.clone(),
        rule: decision.rule.clone(),
    })
    .map(|_| ())
    .map_err(|e| {
        Outcome::refused(Some(id), ErrorCode::Internal, format!("audit log: {e}; not done"))
    })
}

/// What people are shown of a pending action.
struct Shown {
    summary: String,
    reason: String,
    preview: Option<String>,
    requested_by: Requester,
}

/// Makes an action wait for a person, shows it to every device, and returns it with where its
/// resolution will arrive.
async fn open_pending(
    host: &Host,
    id: RequestId,
    action: Action,
    shown: Shown,
) -> Result<(Pending, oneshot::Receiver<Resolution>), Outcome> {
    let pending = Pending {
        id,
        action_hash: protocol::action_hash(&action),
        action,
        summary: shown.summary,
        reason: shown.reason,
        preview: shown.preview,
        requested_by: shown.requested_by,
        // Set by the core, from the time it takes the question.
        expires_at_ms: 0,
    };
    match host.core.ask(pending).await {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(e)) => Err(Outcome::refused(Some(id), (&e).into(), e.to_string())),
        Err(e) => Err(Outcome::refused(Some(id), ErrorCode::Internal, e.to_string())),
    }
}

/// What a person said with a decision, as whoever asked is told it, quoted (a note is one line
/// without control characters: `protocol::check_note`): `, who says: "use cargo nextest"`.
fn said(note: Option<&str>) -> String {
    note.map(|n| format!(", who says: {n:?}")).unwrap_or_default()
}

/// Who approved, or the refusal a denial or a lapse means.
fn answered(
    host: &Host,
    id: RequestId,
    resolution: Result<Resolution, oneshot::error::RecvError>,
) -> Result<String, Outcome> {
    match resolution {
        Ok(Resolution { verdict: Verdict::Approve, by: Some(by), note, .. }) => {
            Ok(host.person(&by) + &said(note.as_deref()))
        }
        Ok(Resolution { by: Some(by), note, .. }) => Err(Outcome::refused(
            Some(id),
            ErrorCode::DeniedByApprover,
            format!("denied by {}{}", host.person(&by), said(note.as_deref())),
        )),
        Ok(Resolution { by: None, .. }) => Err(Outcome::refused(
            Some(id),
            ErrorCode::Expired,
            "nobody approved before the request lapsed",
        )),
        Err(_) => Err(Outcome::refused(
            Some(id),
            ErrorCode::Internal,
            "the host could not settle it (it is stopping, or its audit log failed); nothing was done",
        )),
    }
}

/// Judges an action that a local agent will perform itself (`agent-host hook`, `agent-host
/// ask`): policy, then, if it asks, a pending action that the first valid decision settles,
/// from the terminal or a paired device. Nothing is run here. `cwd` is the agent's working
/// directory; it must lie inside the workspace this host serves.
pub async fn judge(
    host: Arc<Host>,
    by: Requester,
    id: RequestId,
    action: Action,
    cwd: PathBuf,
) -> (Outcome, Option<Later>) {
    let Some(subject) = subject_of(&action) else {
        return (Outcome::refused(Some(id), ErrorCode::BadRequest, "nothing to judge"), None);
    };
    // The same check as for a device's command: the directory, as the kernel resolves it, lies
    // inside the workspace; a command's own `cwd` is taken from the agent's.
    let root = host.files.root();
    let dir =
        working_dir(&host.files, root, &cwd.to_string_lossy()).and_then(
            |agent_dir| match &action {
                Action::Run { cwd: run_dir, .. } => working_dir(&host.files, &agent_dir, run_dir),
                _ => Some(agent_dir),
            },
        );
    let Some(cwd) = dir else {
        let message = format!(
            "the agent works in {}, not a directory inside the workspace this host serves ({})",
            cwd.display(),
            root.display()
        );
        return (Outcome::refused(Some(id), ErrorCode::OutsideWorkspace, message), None);
    };
    let decision = host.config.policy.decide(&subject, &cwd);
    let label = by.label();
    if let Err(refusal) = audit_request(&host, id, &label, &action, &decision) {
        return (refusal, None);
    }
    // A command may then run through the sandbox, once, in the directory judged; with the
    // network as for a device's command (an explicit rule, or a person's yes).
    let grant = match &action {
        Action::Run { argv, .. } => Some(Grant {
            action_hash: protocol::action_hash(&action),
            cwd,
            network: host.config.policy.wants_network(argv),
            expires_at_ms: 0,
        }),
        _ => None,
    };
    match decision.decision {
        PolicyVerdict::Deny => {
            (Outcome::refused(Some(id), ErrorCode::DeniedByPolicy, decision.reason), None)
        }
        PolicyVerdict::Allow => {
            let explicit = decision.explicit;
            let grant = grant.map(|g| Grant { network: g.network && explicit, ..g });
            if let Err(refusal) = grant_run(&host, id, grant).await {
                return (refusal, None);
            }
            (allowed(&host, id, decision.reason), None)
        }
        PolicyVerdict::Ask => {
            let (summary, preview) = describe_for_agent(&host.files, &action);
            let summary = format!("{summary} (by {})", host.person(&by));
            let shown = Shown { summary, reason: decision.reason, preview, requested_by: by };
            let answering = host.clone();
            ask_then(&host, id, action, shown, move |by| async move {
                if let Err(refusal) = grant_run(&answering, id, grant).await {
                    return refusal;
                }
                allowed(&answering, id, format!("approved by {by}"))
            })
            .await
        }
    }
}

/// Lets the command judged under `id` run once through the sandbox (when it is a command).
async fn grant_run(host: &Host, id: RequestId, grant: Option<Grant>) -> Result<(), Outcome> {
    let Some(grant) = grant else { return Ok(()) };
    host.core
        .grant(id, grant)
        .await
        .map_err(|e| Outcome::refused(Some(id), ErrorCode::Internal, format!("{e}; not allowed")))
}

/// Runs, through the sandbox, the command an agent was allowed under `id` (see
/// [`crate::local_api::ApiRequest::RunAllowed`]): only the action judged, only once, in the
/// directory judged. Anything else is refused and audited.
pub async fn run_allowed(host: Arc<Host>, door: Door, id: RequestId, action: Action) -> Outcome {
    let grant = match host.core.take_grant(id).await {
        Ok(grant) => grant,
        Err(e) => return Outcome::refused(Some(id), ErrorCode::Internal, format!("{e}; not run")),
    };
    let refuse = |code, message: String| {
        crate::host::refuse(&host, &format!("local:{}", door.asker()), &message);
        Outcome::refused(Some(id), code, message)
    };
    let Some(grant) = grant else {
        return refuse(
            ErrorCode::NotFound,
            format!("no command waits to run under request {id} (never allowed, run, or lapsed)"),
        );
    };
    let Action::Run { argv, env, .. } = action.clone() else {
        return refuse(ErrorCode::BadRequest, "only a command runs through the sandbox".into());
    };
    if protocol::action_hash(&action) != grant.action_hash {
        return refuse(
            ErrorCode::Conflict,
            format!("this is not the command allowed under request {id}; nothing ran"),
        );
    }
    let job = Job {
        argv,
        cwd: grant.cwd,
        env,
        network: grant.network,
        timeout: host.config.command_timeout,
    };
    perform(host, id, Work::Run(job)).await
}

/// An agent's yes, once what led to it is on disk (the agent acts on it at once).
fn allowed(host: &Host, id: RequestId, reason: String) -> Outcome {
    match host.commit() {
        Ok(()) => Outcome::Allowed { request: id, reason },
        Err(e) => Outcome::refused(Some(id), ErrorCode::Internal, format!("{e}; not allowed")),
    }
}

/// Applies a decision by `by` (a device id or `local:…`), with what they said (`note`); the
/// first valid one wins.
pub async fn decide(
    host: &Host,
    id: RequestId,
    action_hash: &ActionHash,
    verdict: Verdict,
    by: &Requester,
    note: Option<String>,
) -> Result<(), DecideError> {
    Ok(host.core.decide(id, *action_hash, verdict, by.clone(), note).await??)
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// The broker refused it.
    #[error(transparent)]
    Decision(#[from] crate::approvals::DecisionError),
    /// The core could not take it.
    #[error(transparent)]
    Core(#[from] crate::host_core::CoreError),
}

impl From<&DecideError> for ErrorCode {
    fn from(e: &DecideError) -> Self {
        match e {
            DecideError::Decision(e) => e.into(),
            // The host is stopping.
            DecideError::Core(_) => Self::Internal,
        }
    }
}
