//! The jail a session's program runs in (`agent-host run`): bubblewrap, like the sandbox of
//! commands, but shaped for an agent that works in the workspace and talks to its model.
//!
//! Inside the jail:
//! - the whole filesystem is read-only, with fresh `/dev` and `/proc` and a private `/tmp`;
//! - the workspace is writable, except git's hooks and config and the agents' settings in it
//!   ([`crate::exec::AGENT_SETTINGS`]: `.claude`, `.mcp.json`, …), which stay read-only;
//! - in the home directory, only the agents' own state is writable ([`AGENT_STATE`]), and
//!   their settings files in it ([`HOME_SETTINGS`]), where their hooks are configured, are
//!   read-only again;
//! - the host's config and state directories are empty (no key, no audit log, no device list,
//!   no owner socket), except the agent socket's directory, bound in read-only: the program
//!   and everything it starts can ask the host, never decide;
//! - the `agent-host` binary is bound in at its own path, so that the agent's hook runs
//!   wherever the binary was installed;
//! - the network is shared (an agent must reach its model); every other namespace is new, and
//!   the jail dies with `agent-host run`.
//!
//! The program keeps the environment it was started with, and its terminal: the jail makes no
//! new terminal session, so the program is the pseudo-terminal's own (whose only reader is the
//! program itself).
//!
//! What the jail does not cover: what the agent writes to its own state (`~/.claude`, …) is
//! read by the same agent later, jailed or not; files a jailed program creates in the workspace
//! run outside it only when someone runs them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::dirs::Dirs;

/// What agents keep under the home directory and must write: Claude Code (its directory, its
/// config file and that file's backup, its version locks), Codex, Gemini CLI. (Claude Code
/// saves its config by writing a temporary file beside it and renaming; in the read-only home
/// that fails and it writes the file in place instead.)
pub const AGENT_STATE: &[&str] =
    &[".claude", ".claude.json", ".claude.json.backup", ".local/state/claude", ".codex", ".gemini"];

/// The agents' settings files under the home directory: read-only inside the jail.
pub const HOME_SETTINGS: &[&str] = &[
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".codex/config.toml",
    ".gemini/settings.json",
];

/// Everything a jail is made from.
#[derive(Debug, Clone)]
pub struct Jail {
    /// bubblewrap.
    pub bwrap: PathBuf,
    /// The workspace root (writable).
    pub workspace: PathBuf,
    /// The host's directories (hidden), and the agent socket's (bound in).
    pub dirs: Dirs,
    /// The home directory, if there is one.
    pub home: Option<PathBuf>,
    /// The `agent-host` binary, bound in at its path.
    pub exe: Option<PathBuf>,
}

impl Jail {
    /// bubblewrap's command line up to and including `--`; the program follows.
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.bwrap.clone().into()];
        let mut push = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
            argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        };
        push(&[&"--die-with-parent", &"--unshare-all", &"--share-net"]);
        push(&[&"--ro-bind", &"/", &"/", &"--dev", &"/dev", &"--proc", &"/proc"]);
        push(&[&"--tmpfs", &"/tmp"]);
        if let Some(home) = &self.home {
            for state in AGENT_STATE {
                let path = home.join(state);
                push(&[&"--bind-try", &path, &path]);
            }
            for file in HOME_SETTINGS {
                let path = home.join(file);
                push(&[&"--ro-bind-try", &path, &path]);
            }
        }
        let ws = &self.workspace;
        push(&[&"--bind", ws, ws]);
        for path in crate::exec::protected_in(std::slice::from_ref(ws)) {
            push(&[&"--ro-bind", &path, &path]);
        }
        for dir in self.dirs.all() {
            push(&[&"--tmpfs", &dir]);
        }
        let agent = crate::daemon::agent_socket_dir(&self.dirs);
        push(&[&"--ro-bind", &agent, &agent]);
        if let Some(exe) = &self.exe {
            push(&[&"--ro-bind", exe, exe]);
        }
        push(&[&"--chdir", &current_dir_in(ws)]);
        argv.push("--".into());
        argv
    }
}

/// Where the program starts: the current directory when it lies in the workspace, the
/// workspace root otherwise.
fn current_dir_in(ws: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok())
        .filter(|d| d.starts_with(ws))
        .unwrap_or_else(|| ws.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_hidden_after_everything_it_could_be_under() {
        let dirs =
            Dirs { config: "/h/.config/agent-host".into(), state: "/h/.local/state/ah".into() };
        let jail = Jail {
            bwrap: "/usr/bin/bwrap".into(),
            workspace: "/w".into(),
            dirs,
            home: Some("/h".into()),
            exe: Some("/tmp/x/agent-host".into()),
        };
        let argv: Vec<String> =
            jail.argv().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = |s: &str| argv.iter().position(|a| a == s).unwrap();
        // The host's directories are hidden after the home's and the workspace's binds, and
        // the agent socket's directory comes back after them; /tmp is private before the
        // binary is bound in.
        assert!(at("/h/.local/state/ah") > at("/h/.claude"));
        assert!(at("/h/.local/state/ah") > at("/w"));
        assert!(at("/h/.local/state/ah/agent") > at("/h/.local/state/ah"));
        assert!(at("/tmp/x/agent-host") > at("/tmp"));
        assert!(argv.contains(&"--share-net".to_string()));
        assert!(!argv.contains(&"--new-session".to_string()));
        assert_eq!(argv.last().map(String::as_str), Some("--"));
    }
}
