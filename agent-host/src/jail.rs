//! The jail a session's program runs in (`agent-host run`): bubblewrap, like the sandbox of
//! commands, but shaped for an agent that works in the workspace and talks to its model.
//!
//! Inside the jail:
//! - the whole filesystem is read-only, with fresh `/dev` and `/proc` and a private `/tmp`;
//!   the user's runtime sockets ([`crate::exec::hide_runtime_sockets`]: the session bus,
//!   through which systemd would run anything outside; key agents; multiplexers; container
//!   engines) are hidden, and the variables that name them unset ([`UNSET`]);
//! - the workspace is writable (bound after the agents' state and before everything
//!   read-only, so that no later bind undoes an earlier one), except git's hooks and config and the agents' settings in it
//!   ([`crate::exec::AGENT_SETTINGS`]: `.claude`, `.mcp.json`, …), which stay read-only, and
//!   `.git`, pinned so that it cannot be moved aside and remade;
//! - in the home directory, only the agents' own state is writable ([`AGENT_STATE`]); their
//!   settings files in it ([`HOME_SETTINGS`]), where their hooks are configured, are read-only
//!   again (made empty first where the agent's directory lacks one,
//!   [`Jail::ensure_home_settings`]); the user's secrets are hidden as from jobs
//!   ([`crate::userenv::SECRETS`]: keys, cloud and forge tokens, browser profiles, histories)
//!   but for the agents' own logins, and the X cookie is hidden; a workspace that holds the
//!   home directory, or whose protected names are symbolic links, gets no jail
//!   ([`Jail::unfit`]);
//! - the host's config and state directories are empty (no key, no audit log, no device list,
//!   no owner socket), except the agent socket's directory, bound in read-only: the program
//!   and everything it starts can ask the host, never decide;
//! - the `agent-host` binary is bound in at its own path, so that the agent's hook runs
//!   wherever the binary was installed;
//! - the network is shared (an agent must reach its model), and with it the abstract unix
//!   sockets, which Landlock's scoping keeps out of reach where the kernel has it (Linux 6.12;
//!   `agent-host __scope` says so where not); every other namespace is new, and the jail dies
//!   with `agent-host run`.
//!
//! The program keeps the rest of the environment it was started with, and its terminal: the
//! jail makes no new terminal session, so the program is the pseudo-terminal's own (whose only
//! reader is the program itself; the other end is not passed in).
//!
//! What the jail does not cover: what the agent writes to its own state (`~/.claude`,
//! `~/.claude.json`, where its MCP servers are listed) is read by the same agent later, jailed
//! or not; files a jailed program creates in the workspace run outside it only when someone
//! runs them, and a settings name that does not exist in the workspace (`.mcp.json`,
//! `.codex`, `.gemini`, `.git` where there is no repository) can be created.

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
    /// Where the user's secrets may be: hidden where they exist ([`Jail::secrets_of`]).
    pub secrets: Vec<PathBuf>,
}

impl Jail {
    /// bubblewrap's command line up to and including `--`, then the scoping step
    /// (`agent-host __scope --`) where the binary is known; the program follows.
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.bwrap.clone().into()];
        let mut push = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
            argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        };
        push(&[&"--die-with-parent", &"--unshare-all", &"--share-net"]);
        push(&[&"--ro-bind", &"/", &"/", &"--dev", &"/dev", &"--proc", &"/proc"]);
        push(&[&"--tmpfs", &"/tmp"]);
        for arg in crate::exec::hide_runtime_sockets() {
            push(&[&arg]);
        }
        // What is writable first, widest first, and what is read-only inside it after: a
        // later bind is never undone by an earlier one.
        let home = self.home.as_ref();
        for state in AGENT_STATE.iter().filter_map(|s| home.map(|h| h.join(s))) {
            push(&[&"--bind-try", &state, &state]);
        }
        let ws = &self.workspace;
        push(&[&"--bind", ws, ws]);
        let protected = crate::exec::protected_in(std::slice::from_ref(ws));
        for path in &protected.pinned {
            push(&[&"--bind", path, path]);
        }
        for path in &protected.read_only {
            push(&[&"--ro-bind", path, path]);
        }
        for file in HOME_SETTINGS.iter().filter_map(|f| home.map(|h| h.join(f))) {
            push(&[&"--ro-bind-try", &file, &file]);
        }
        // The user's secrets, as jobs have them hidden, but the agents' own logins.
        for (secret, dir) in crate::userenv::present(self.secrets.iter().cloned()) {
            match dir {
                true => push(&[&"--tmpfs", &secret]),
                false => push(&[&"--ro-bind", &"/dev/null", &secret]),
            }
        }
        // As the kernel resolves them (a link on the way would not lead anywhere in the jail).
        let real = |p: PathBuf| p.canonicalize().unwrap_or(p);
        for dir in self.dirs.all().into_iter().map(real) {
            push(&[&"--tmpfs", &dir]);
        }
        let agent = real(crate::dirs::agent_socket_dir(&self.dirs));
        push(&[&"--ro-bind", &agent, &agent]);
        if let Some(exe) = &self.exe {
            push(&[&"--ro-bind", exe, exe]);
        }
        for name in UNSET {
            push(&[&"--unsetenv", name]);
        }
        push(&[&"--chdir", &current_dir_in(ws), &"--"]);
        // Abstract unix sockets are not files: the jail shares the machine's network, so
        // Landlock keeps its processes from those made outside it (an X server's, a bus's).
        if let Some(exe) = &self.exe {
            push(&[exe, &"__scope", &"--"]);
        }
        argv
    }

    /// Why no jail can keep this workspace's promises, if so: the workspace holds the home
    /// directory (its shell's startup files would be writable), or a protected name in it is a
    /// symbolic link ([`crate::exec::Protected::refusal`]).
    pub fn unfit(&self) -> Option<String> {
        if let Some(refusal) =
            crate::exec::protected_in(std::slice::from_ref(&self.workspace)).refusal()
        {
            return Some(refusal);
        }
        let home = self.home.as_ref()?;
        home.starts_with(&self.workspace).then(|| {
            format!(
                "the workspace {} holds your home directory: a jail would leave your shell's \
                 startup files writable; serve a project directory instead",
                self.workspace.display()
            )
        })
    }

    /// The secret places a jail hides: those jobs have hidden ([`crate::userenv::UserEnv`],
    /// with the settings' `sandbox.hide`), but the agents' own logins, which the agent needs.
    pub fn secrets_of(user: &crate::userenv::UserEnv) -> Vec<PathBuf> {
        let logins: Vec<PathBuf> = user
            .home
            .iter()
            .flat_map(|h| crate::userenv::AGENT_LOGINS.iter().map(move |l| h.join(l)))
            .collect();
        user.secrets.iter().filter(|s| !logins.contains(s)).cloned().collect()
    }

    /// Makes the agents' settings files that are missing where the agent's directory exists
    /// (`~/.claude/settings.json` as `{}`, …), so that they are read-only inside the jail
    /// instead of free to be created.
    pub fn ensure_home_settings(&self) -> std::io::Result<()> {
        let Some(home) = &self.home else { return Ok(()) };
        for (file, empty) in [
            (".claude/settings.json", "{}\n"),
            (".codex/config.toml", ""),
            (".gemini/settings.json", "{}\n"),
        ] {
            let path = home.join(file);
            if path.parent().is_some_and(Path::is_dir) && path.symlink_metadata().is_err() {
                crate::fsutil::write_atomic(&path, empty.as_bytes(), 0o600)?;
            }
        }
        Ok(())
    }
}

/// Variables unset inside the jail: where the session bus, the display and the key agents are.
pub const UNSET: &[&str] = &[
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "SSH_AUTH_SOCK",
    "GPG_AGENT_INFO",
];

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
            secrets: Vec::new(),
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

    #[test]
    fn the_users_secrets_are_hidden_but_the_agents_logins() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().canonicalize().unwrap();
        for dir in [".ssh", ".claude"] {
            std::fs::create_dir_all(h.join(dir)).unwrap();
        }
        for file in [".netrc", ".claude/.credentials.json", ".claude.json"] {
            std::fs::write(h.join(file), "x").unwrap();
        }
        let dirs = Dirs { config: h.join("cfg"), state: h.join("st") };
        let settings =
            crate::userenv::SandboxSettings { hide: vec!["~/vault".into()], ..Default::default() };
        std::fs::write(h.join("vault"), "x").unwrap();
        let user = crate::userenv::UserEnv::new(
            [("HOME".to_string(), h.display().to_string())],
            &settings,
            None,
        );
        let jail = Jail {
            bwrap: "/usr/bin/bwrap".into(),
            workspace: h.join("ws"),
            dirs,
            home: Some(h.clone()),
            exe: None,
            secrets: Jail::secrets_of(&user),
        };
        let argv: Vec<OsString> = jail.argv();
        let after = |flag: &str, path: &Path| {
            argv.windows(2).any(|w| w[0] == *flag && w[1] == *path.as_os_str())
                || argv.windows(3).any(|w| w[0] == *flag && w[2] == *path.as_os_str())
        };
        assert!(after("--tmpfs", &h.join(".ssh")));
        assert!(after("--ro-bind", &h.join(".netrc")));
        assert!(after("--ro-bind", &h.join("vault")), "the settings' places too");
        assert!(!argv.iter().any(|a| *a == *h.join(".claude/.credentials.json").as_os_str()));
        assert!(!after("--ro-bind", &h.join(".claude.json")));
    }
}
