//! The one path every action takes, whoever asks (the local terminal, an agent hook, a paired
//! device): policy → (if asked) a pending action that the first valid decision settles → audit
//! record flushed → sandboxed run or confined file operation → audit record of the result.
//!
//! Every step is also told to the paired devices as a host-signed event: a new pending action,
//! its decision, the result. What only concerns the requester (a refusal, a failure) is returned
//! as an [`Outcome`] for the caller to pass on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use protocol::{Action, ActionHash, Blob, ErrorCode, HostEvent, RequestId, Verdict};
use tokio::sync::oneshot;

use crate::approvals::{Pending, Requester, Resolution};
use crate::audit::Event;
use crate::exec::{Job, Limits};
use crate::host::{Host, lock};
use crate::host_core::Grant;
use crate::local_api::Door;
use crate::policy::{Subject, Verdict as PolicyVerdict};

/// The longest diff preview shown with a pending write or edit.
pub const MAX_PREVIEW: usize = protocol::limits::MAX_PREVIEW - 32;

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

/// What an allowed or approved request does.
enum Work {
    Run(Job),
    File(Action),
    /// Input for a session's terminal, with the line it was judged against.
    Input(protocol::SessionId, String, crate::session::input::Typed),
}

/// A command line for people: arguments quoted as a POSIX shell would need them.
pub fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain { a.clone() } else { format!("'{}'", a.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn diff_preview(path: &str, old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut text =
        diff.unified_diff().context_radius(3).header(path, &format!("{path} (new)")).to_string();
    if text.len() > MAX_PREVIEW {
        let mut cut = MAX_PREVIEW;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (preview cut)\n");
    }
    text
}

fn fs_code(e: &crate::confine::FsError) -> ErrorCode {
    use crate::confine::FsError;
    match e {
        FsError::OutsideWorkspace(_) | FsError::Symlink(_) | FsError::HardLinked(..) => {
            ErrorCode::OutsideWorkspace
        }
        FsError::OldTextMissing(_) | FsError::OldTextNotUnique(..) => ErrorCode::Conflict,
        FsError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            ErrorCode::NotFound
        }
        FsError::WrongType(..) | FsError::TooLarge { .. } | FsError::NotText(_) => {
            ErrorCode::BadRequest
        }
        _ => ErrorCode::Internal,
    }
}

/// What policy is asked, the one line shown to people, and a preview for writes and edits.
struct Judged {
    /// Who decides: policy, about this subject, or a fixed rule of the host's (session input).
    subject: Result<Subject, crate::policy::Decision>,
    summary: String,
    preview: Option<String>,
    work: Work,
    /// For commands: whether the command reaches the network by design.
    wants_network: bool,
}

fn judge_input(host: &Host, id: RequestId, action: &Action) -> Result<Judged, Outcome> {
    let root = host.files.root().to_path_buf();
    // A file outside the workspace can never be read or written (the kernel refuses it at the
    // moment of use, too): say so at once instead of asking a person for nothing.
    if let Action::ReadFile { path }
    | Action::ListDir { path }
    | Action::WriteFile { path, .. }
    | Action::EditFile { path, .. } = action
    {
        if !crate::policy::matching::normalize(&root, Path::new(path)).starts_with(&root) {
            return Err(Outcome::refused(
                Some(id),
                ErrorCode::OutsideWorkspace,
                format!("{path} is outside the workspace"),
            ));
        }
        // Nor a symlink, or a path through one that leads out: the kernel says so now.
        if let Err(e) = host.files.usable(Path::new(path)) {
            return Err(Outcome::refused(Some(id), fs_code(&e), e.to_string()));
        }
    }
    let shown = |p: &str| root.join(p).display().to_string();
    Ok(match action {
        Action::Run { argv, cwd, env } => {
            let Some(cwd_path) = working_dir(&host.files, host.files.root(), cwd) else {
                return Err(Outcome::refused(
                    Some(id),
                    ErrorCode::OutsideWorkspace,
                    format!("working directory {cwd} is not a directory inside the workspace"),
                ));
            };
            let mut summary = format!("run `{}` in {}", quote_argv(argv), cwd_path.display());
            if !env.is_empty() {
                let names: Vec<&str> = env.keys().map(String::as_str).collect();
                summary.push_str(&format!(" with {} set", names.join(", ")));
            }
            Judged {
                subject: Ok(run_subject(argv, env)),
                summary,
                preview: None,
                wants_network: host.config.policy.wants_network(argv),
                work: Work::Run(Job {
                    argv: argv.clone(),
                    cwd: cwd_path,
                    env: env.clone(),
                    network: false,
                    timeout: host.config.command_timeout,
                }),
            }
        }
        Action::ReadFile { path } | Action::ListDir { path } => Judged {
            subject: Ok(Subject::Read(root.join(path))),
            summary: if matches!(action, Action::ReadFile { .. }) {
                format!("read {}", shown(path))
            } else {
                format!("list {}", shown(path))
            },
            preview: None,
            wants_network: false,
            work: Work::File(action.clone()),
        },
        Action::WriteFile { path, content } => {
            let old = host.files.read(Path::new(path)).unwrap_or_default();
            let preview = match std::str::from_utf8(&content.0) {
                Ok(new) => diff_preview(path, &String::from_utf8_lossy(&old), new),
                Err(_) => format!("{} bytes of binary content", content.0.len()),
            };
            Judged {
                subject: Ok(Subject::Edit(root.join(path))),
                summary: format!("write {} bytes to {}", content.0.len(), shown(path)),
                preview: Some(preview),
                wants_network: false,
                work: Work::File(action.clone()),
            }
        }
        Action::EditFile { path, old, new } => {
            let current = host.files.read(Path::new(path)).ok();
            let preview = match current.as_deref().map(String::from_utf8_lossy) {
                Some(text) if text.matches(old.as_str()).count() == 1 => {
                    diff_preview(path, &text, &text.replacen(old.as_str(), new, 1))
                }
                _ => diff_preview(path, old, new),
            };
            Judged {
                subject: Ok(Subject::Edit(root.join(path))),
                summary: format!("edit {}", shown(path)),
                preview: Some(preview),
                wants_network: false,
                work: Work::File(action.clone()),
            }
        }
        Action::SessionInput { session, data } => {
            let live = lock(&host.sessions)
                .get(session)
                .map(|l| (l.kind, l.command.clone(), l.typed.clone()));
            let Some((kind, command, typed)) = live else {
                return Err(Outcome::refused(
                    Some(id),
                    ErrorCode::NotFound,
                    "no such session on this host (it may have ended)",
                ));
            };
            let (allow, reason) = crate::session::input::judge(kind, &typed, data);
            let decision = if allow { PolicyVerdict::Allow } else { PolicyVerdict::Ask };
            Judged {
                subject: Err(crate::policy::Decision::fixed(decision, reason)),
                summary: format!("type {data:?} into `{}`", quote_argv(&command)),
                preview: None,
                wants_network: false,
                work: Work::Input(*session, data.clone(), typed),
            }
        }
        Action::WebFetch { .. } | Action::Tool { .. } => {
            return Err(Outcome::refused(
                Some(id),
                ErrorCode::BadRequest,
                "the host fetches nothing and uses no agent's tools; these are only judged for \
                 agents that ask (agent-host hook, agent-host ask)",
            ));
        }
    })
}

/// Judges a request and, when allowed or approved, performs it. Returns the first answer, and
/// the final one still to come when a person must decide.
pub async fn submit(
    host: Arc<Host>,
    by: Requester,
    id: RequestId,
    action: Action,
) -> (Outcome, Option<Later>) {
    let judged = match judge_input(&host, id, &action) {
        Ok(j) => j,
        Err(refusal) => return (refusal, None),
    };
    let cwd = match &judged.work {
        Work::Run(job) => job.cwd.clone(),
        Work::File(_) | Work::Input(..) => host.files.root().to_path_buf(),
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
        Ok(Err(e)) => Err(Outcome::refused(Some(id), e.code(), e.to_string())),
        Err(e) => Err(Outcome::refused(Some(id), ErrorCode::Internal, e.to_string())),
    }
}

/// Who approved, or the refusal a denial or a lapse means.
fn answered(
    host: &Host,
    id: RequestId,
    resolution: Result<Resolution, oneshot::error::RecvError>,
) -> Result<String, Outcome> {
    match resolution {
        Ok(Resolution { verdict: Verdict::Approve, by: Some(by), .. }) => Ok(host.person(&by)),
        Ok(Resolution { by: Some(by), .. }) => Err(Outcome::refused(
            Some(id),
            ErrorCode::DeniedByApprover,
            format!("denied by {}", host.person(&by)),
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

/// What policy is asked about a command: its argv, and the variables it sets, judged like
/// `NAME=VALUE` in front of it (the same for every requester).
fn run_subject(argv: &[String], env: &std::collections::BTreeMap<String, String>) -> Subject {
    if env.is_empty() {
        Subject::Argv(argv.to_vec())
    } else {
        Subject::ArgvEnv(argv.to_vec(), env.iter().map(|(n, v)| (n.clone(), v.clone())).collect())
    }
}

/// What policy is asked about an action an agent performs itself.
fn subject_of(action: &Action) -> Option<Subject> {
    Some(match action {
        Action::Run { argv, env, .. } => run_subject(argv, env),
        Action::ReadFile { path } | Action::ListDir { path } => Subject::Read(path.into()),
        Action::WriteFile { path, .. } | Action::EditFile { path, .. } => {
            Subject::Edit(path.into())
        }
        Action::WebFetch { url } => Subject::WebFetch(url.clone()),
        Action::Tool { name, .. } => Subject::Tool(name.clone()),
        Action::SessionInput { .. } => return None,
    })
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

/// The one line and the preview shown for an agent's own action. A file's old content is read
/// only through the confined file API: outside the workspace nothing is read or sent.
fn describe_for_agent(
    files: &crate::confine::Workspace,
    action: &Action,
) -> (String, Option<String>) {
    let current = |path: &str| -> Option<Vec<u8>> {
        let relative = Path::new(path).strip_prefix(files.root()).ok()?;
        files.read(relative).ok()
    };
    match action {
        Action::Run { argv, cwd, .. } => match argv.as_slice() {
            [shell, flag, script] if shell == "bash" && flag == "-c" => {
                (format!("run `{script}` in {cwd}"), None)
            }
            _ => (format!("run `{}` in {cwd}", quote_argv(argv)), None),
        },
        Action::ReadFile { path } => (format!("read {path}"), None),
        Action::ListDir { path } => (format!("search {path}"), None),
        Action::WriteFile { path, content } => {
            let old = current(path).unwrap_or_default();
            let preview = match std::str::from_utf8(&content.0) {
                Ok(new) => diff_preview(path, &String::from_utf8_lossy(&old), new),
                Err(_) => format!("{} bytes of binary content", content.0.len()),
            };
            (format!("write {} bytes to {path}", content.0.len()), Some(preview))
        }
        Action::EditFile { path, old, new } => {
            let text =
                current(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            let preview = if text.contains(old.as_str()) {
                diff_preview(path, &text, &text.replacen(old.as_str(), new, 1))
            } else {
                diff_preview(path, old, new)
            };
            (format!("edit {path}"), Some(preview))
        }
        Action::WebFetch { url } => (format!("fetch {url}"), None),
        Action::Tool { name, input } => {
            let mut shown = input.clone();
            if shown.len() > 1024 {
                let mut cut = 1024;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push('…');
            }
            (format!("use {name}"), Some(shown))
        }
        Action::SessionInput { .. } => ("send input to a session".into(), None),
    }
}

/// Applies a decision by `by` (a device id or `local:…`); the first valid one wins.
pub async fn decide(
    host: &Host,
    id: RequestId,
    action_hash: &ActionHash,
    verdict: Verdict,
    by: &Requester,
) -> Result<(), DecideError> {
    Ok(host.core.decide(id, *action_hash, verdict, by.clone()).await??)
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

impl DecideError {
    /// What a device is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Decision(e) => e.code(),
            Self::Core(_) => ErrorCode::Internal,
        }
    }
}

/// The directory a command runs in: `requested` taken from `base` (an absolute directory; an
/// absolute `requested` stands alone), resolved by the kernel, and a directory inside the
/// workspace; `None` otherwise. Every requester's directory goes through here.
fn working_dir(files: &crate::confine::Workspace, base: &Path, requested: &str) -> Option<PathBuf> {
    let real = base.join(requested).canonicalize().ok()?;
    let relative = real.strip_prefix(files.root()).ok()?;
    files.is_dir(relative).ok()?;
    Some(real)
}

/// Performs an allowed or approved request: audit first (committed, with the records that led
/// here; see [`Host::commit`]), then the sandbox or the confined file operation, then the result
/// to every device, then audit.
async fn perform(host: Arc<Host>, id: RequestId, work: Work) -> Outcome {
    if let Err(e) = host.record(Event::Start { request: id.to_string() }) {
        return Outcome::refused(Some(id), ErrorCode::Internal, format!("{e}; not done"));
    }
    let worker = host.clone();
    // The commit waits for the disk off the runtime's thread, which meanwhile sends the
    // decision to the devices.
    let done = tokio::task::spawn_blocking(move || {
        worker.commit().map_err(|e| (ErrorCode::Internal, format!("{e}; not done")))?;
        Ok(act(&worker, work))
    })
    .await;
    let (exit_code, mut output, mut truncated, timed_out) = match done {
        Ok(Ok(Ok(o))) => o,
        Ok(Ok(Err((code, message)))) => {
            audit_result(&host, id, None, &format!("failed: {message}"));
            return Outcome::refused(Some(id), code, message);
        }
        Ok(Err((code, message))) => return Outcome::refused(Some(id), code, message),
        Err(e) => return Outcome::refused(Some(id), ErrorCode::Internal, e.to_string()),
    };
    if output.len() > protocol::limits::MAX_OUTPUT {
        output.truncate(protocol::limits::MAX_OUTPUT);
        truncated = true;
    }
    let summary = if timed_out {
        "killed at the timeout".to_string()
    } else {
        format!("{} bytes of output", output.len())
    };
    // The result goes out first: its record is not one an action waits for. Through the core,
    // which keeps it as the answer to a device that asks again.
    let result =
        HostEvent::ActionResult { request: id, exit_code, output: Blob(output.clone()), truncated };
    if let Err(e) = host.core.done(None, result).await {
        tracing::warn!("the result of {id} is not told: {e}");
    }
    audit_result(&host, id, exit_code, &summary);
    Outcome::Done { request: id, exit_code, output, truncated, timed_out }
}

/// What an action left: exit code, output, whether it was cut, whether it timed out.
type Ran = (Option<i32>, Vec<u8>, bool, bool);

/// Does `work`, on a thread that may block.
fn act(worker: &Host, work: Work) -> Result<Ran, (ErrorCode, String)> {
    match work {
        Work::Run(job) => {
            let roots = [worker.config.workspace.clone()];
            let cancel = Arc::new(AtomicBool::new(false));
            let redirects = crate::exec::git_redirects(&roots);
            let ran = match &worker.pool {
                Some(pool) => pool.run(&job, &cancel),
                None => crate::exec::run(
                    &worker.config.sandbox,
                    &job,
                    &worker.scope,
                    &Limits::default(),
                    &cancel,
                ),
            };
            let removed = crate::exec::remove_new_git_redirects(&roots, &redirects);
            ran.map(|o| {
                let mut output = o.output;
                for path in removed {
                    output.extend_from_slice(
                        format!(
                            "\nagent-host: removed {}, which the command created: it would \
                             point git at other config and hooks\n",
                            path.display()
                        )
                        .as_bytes(),
                    );
                }
                (o.exit_code, output, o.truncated, o.timed_out)
            })
            .map_err(|e| (ErrorCode::Internal, format!("could not run: {e}")))
        }
        Work::File(action) => file_op(&worker.files, &action)
            .map(|output| (None, output, false, false))
            .map_err(|e| (fs_code(&e), e.to_string())),
        Work::Input(session, data, judged) => match lock(&worker.sessions).get_mut(&session) {
            // Other input reached the line while this one waited: what it would do now was
            // never judged, unless it is allowed as the line is now. (Each input to a shell is
            // judged alone.)
            Some(live)
                if live.typed != judged
                    && live.kind != protocol::SessionKind::Shell
                    && !crate::session::input::judge(live.kind, &live.typed, &data).0 =>
            {
                Err((
                    ErrorCode::Conflict,
                    "other input reached the session while this one waited; nothing was typed, \
                 send it again"
                        .to_string(),
                ))
            }
            Some(live) => {
                live.typed = crate::session::input::after(&live.typed, &data);
                if live.input.send(data.into_bytes()).is_err() {
                    return Err((ErrorCode::NotFound, "the session ended".to_string()));
                }
                Ok((None, Vec::new(), false, false))
            }
            _ => Err((ErrorCode::NotFound, "the session ended".to_string())),
        },
    }
}

fn audit_result(host: &Host, id: RequestId, exit_code: Option<i32>, summary: &str) {
    if let Err(e) =
        host.record(Event::Result { request: id.to_string(), exit_code, summary: summary.into() })
    {
        tracing::error!("audit: {e}");
    }
}

fn file_op(
    files: &crate::confine::Workspace,
    action: &Action,
) -> Result<Vec<u8>, crate::confine::FsError> {
    match action {
        Action::ReadFile { path } => files.read(Path::new(path)),
        Action::ListDir { path } => Ok(files
            .list(Path::new(path))?
            .into_iter()
            .map(|e| format!("{}\t{}\n", e.kind, e.name))
            .collect::<String>()
            .into_bytes()),
        Action::WriteFile { path, content } => files.write(Path::new(path), &content.0).map(|()| {
            Vec::new() // nothing to show but success
        }),
        Action::EditFile { path, old, new } => {
            files.edit(Path::new(path), old, new).map(|()| Vec::new())
        }
        Action::Run { .. }
        | Action::SessionInput { .. }
        | Action::WebFetch { .. }
        | Action::Tool { .. } => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_quoted_for_people() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(quote_argv(&argv(&["echo", "hello"])), "echo hello");
        assert_eq!(quote_argv(&argv(&["rm", "-rf", "a b"])), "rm -rf 'a b'");
        assert_eq!(quote_argv(&argv(&["sh", "-c", "it's; ls"])), r"sh -c 'it'\''s; ls'");
        assert_eq!(quote_argv(&argv(&["printf", ""])), "printf ''");
    }

    #[test]
    fn previews_are_unified_diffs_and_bounded() {
        let p = diff_preview("a.txt", "one\ntwo\n", "one\nthree\n");
        assert!(p.contains("-two") && p.contains("+three"), "{p}");
        let big = "x\n".repeat(MAX_PREVIEW);
        assert!(diff_preview("b", "", &big).len() <= MAX_PREVIEW + 20);
    }
}
