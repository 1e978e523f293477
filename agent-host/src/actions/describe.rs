//! What a request is, as people are shown it and as policy is asked about it: the one line and
//! the diff preview, the subject policy judges, and what would be done if it is allowed
//! ([`Judged`]).
//!
//! It must not decide or do anything: [`super`] asks policy and a person, [`super::perform`]
//! acts.

use std::path::Path;

use protocol::{Action, ErrorCode, RequestId};

use super::Outcome;
use super::perform::{Work, working_dir};
use crate::exec::Job;
use crate::host::Host;
use crate::policy::{Subject, Verdict as PolicyVerdict};

/// The longest diff preview shown with a pending write or edit.
pub const MAX_PREVIEW: usize = protocol::limits::MAX_PREVIEW - 32;

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

/// What policy is asked, the one line shown to people, and a preview for writes and edits.
pub(super) struct Judged {
    /// Who decides: policy, about this subject, or a fixed rule of the host's (session input).
    pub(super) subject: Result<Subject, crate::policy::Decision>,
    /// The one line shown.
    pub(super) summary: String,
    /// For writes and edits: a diff preview.
    pub(super) preview: Option<String>,
    /// What would be done.
    pub(super) work: Work,
    /// For commands: whether the command reaches the network by design.
    pub(super) wants_network: bool,
}

/// `session` is the state of the session a `SessionInput` names, as the core had it.
pub(super) fn judge_input(
    host: &Host,
    id: RequestId,
    action: &Action,
    session: Option<crate::host_core::SessionState>,
) -> Result<Judged, Outcome> {
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
            return Err(Outcome::refused(Some(id), (&e).into(), e.to_string()));
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
        Action::SessionInput { session: id_of_session, data } => {
            let live = session.map(|s| (s.kind, s.command, s.typed));
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
                work: Work::Input(*id_of_session, data.clone(), typed),
            }
        }
        Action::StartSession { command } => {
            let kind = started_kind(&command[0], &root);
            let as_what = match kind {
                protocol::SessionKind::Agent => "an agent",
                _ => "a shell (each input to it is asked)",
            };
            Judged {
                subject: Ok(Subject::Session(command.clone())),
                summary: format!("start `{}` as a session, as {as_what}", quote_argv(command)),
                preview: None,
                wants_network: false,
                work: Work::Session(command.clone(), kind),
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

/// The kind of a session a device starts: an agent (whose prompt text is typed unasked) only
/// when the program is a known agent named bare (no `/`) and found on `PATH` outside the
/// workspace, where a device could have written a program of that name; a shell otherwise.
fn started_kind(program: &str, workspace: &Path) -> protocol::SessionKind {
    let agent = crate::session::kind_of(program) == protocol::SessionKind::Agent;
    let found = || {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
    };
    let outside = |p: std::path::PathBuf| {
        let real = p.canonicalize().unwrap_or(p);
        !real.starts_with(workspace) && real.is_absolute()
    };
    if agent && !program.contains('/') && found().is_some_and(outside) {
        protocol::SessionKind::Agent
    } else {
        protocol::SessionKind::Shell
    }
}

/// What policy is asked about a command: its argv, and the variables it sets, judged like
/// `NAME=VALUE` in front of it (the same for every requester).
pub(super) fn run_subject(
    argv: &[String],
    env: &std::collections::BTreeMap<String, String>,
) -> Subject {
    if env.is_empty() {
        Subject::Argv(argv.to_vec())
    } else {
        Subject::ArgvEnv(argv.to_vec(), env.iter().map(|(n, v)| (n.clone(), v.clone())).collect())
    }
}

/// What policy is asked about an action an agent performs itself.
pub(super) fn subject_of(action: &Action) -> Option<Subject> {
    Some(match action {
        Action::Run { argv, env, .. } => run_subject(argv, env),
        Action::ReadFile { path } | Action::ListDir { path } => Subject::Read(path.into()),
        Action::WriteFile { path, .. } | Action::EditFile { path, .. } => {
            Subject::Edit(path.into())
        }
        Action::WebFetch { url } => Subject::WebFetch(url.clone()),
        Action::Tool { name, .. } => Subject::Tool(name.clone()),
        // Not an agent's own action: only devices start sessions, through the host.
        Action::SessionInput { .. } | Action::StartSession { .. } => return None,
    })
}

/// The one line and the preview shown for an agent's own action. A file's old content is read
/// only through the confined file API: outside the workspace nothing is read or sent.
pub(super) fn describe_for_agent(
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
        Action::StartSession { command } => {
            (format!("start `{}` as a session", quote_argv(command)), None)
        }
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
