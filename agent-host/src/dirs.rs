//! Where the host keeps its files: the platform's config and state directories (through the
//! `directories` crate), or `$AGENT_HOST_HOME/config` and `$AGENT_HOST_HOME/state` when that
//! variable is set (tests, or several hosts on one machine).
//!
//! Nothing inside a workspace can move these: they come from the environment of the person who
//! starts the host, never from a settings file.

use std::path::{Path, PathBuf};

/// Why the host's directories or its list of trusted workspaces could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirsError {
    /// No home directory to put them in.
    #[error("no home directory: set AGENT_HOST_HOME")]
    NoHome,
    /// A file or directory could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The trusted-workspace list is not what this host writes (or a path in it cannot be
    /// written: not UTF-8).
    #[error("{}: {error}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DirsError + '_ {
    move |error| DirsError::Io { path: path.to_path_buf(), error }
}

/// The host's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Settings (`settings.json`) and the identity key (`host.key`).
    pub config: PathBuf,
    /// State: trusted workspaces, the audit log, the local socket, paired devices and counters.
    pub state: PathBuf,
}

impl Dirs {
    /// The directories for this user.
    pub fn discover() -> Result<Self, DirsError> {
        if let Some(home) = std::env::var_os("AGENT_HOST_HOME") {
            let home = PathBuf::from(home);
            return Ok(Self { config: home.join("config"), state: home.join("state") });
        }
        let project =
            directories::ProjectDirs::from("", "", "agent-host").ok_or(DirsError::NoHome)?;
        let state = project.state_dir().unwrap_or_else(|| project.data_local_dir()).to_path_buf();
        Ok(Self { config: project.config_dir().to_path_buf(), state })
    }

    /// The user's settings file.
    pub fn user_settings(&self) -> PathBuf {
        self.config.join("settings.json")
    }

    /// The list of workspaces the user trusts.
    pub fn trusted_workspaces(&self) -> PathBuf {
        self.state.join("trusted-workspaces.json")
    }

    /// The audit log (`audit.head` sits beside it).
    pub fn audit_log(&self) -> PathBuf {
        self.state.join("audit.jsonl")
    }

    /// The jobs' own caches (see [`crate::userenv`]): inside the state directory, which jobs
    /// do not see, one for each workspace (a job in one must not leave a build result for
    /// another to pick up), bound back into each job writable.
    pub fn sandbox_cache_for(&self, workspace: &Path) -> PathBuf {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        self.state.join("sandbox-cache").join(hex::encode(&digest[..8]))
    }

    /// Both, for the policy's protected paths.
    pub fn all(&self) -> Vec<PathBuf> {
        vec![self.config.clone(), self.state.clone()]
    }
}

/// Reads the trusted-workspace list. A missing file is an empty list; an unreadable or invalid
/// one is an error (the host refuses to guess).
pub fn trusted(dirs: &Dirs) -> Result<Vec<PathBuf>, DirsError> {
    let path = dirs.trusted_workspaces();
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|error| DirsError::Damaged { path, error })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(DirsError::Io { path, error }),
    }
}

/// Adds `workspace` (canonicalized) to the trusted list.
pub fn trust(dirs: &Dirs, workspace: &Path) -> Result<PathBuf, DirsError> {
    let workspace = workspace.canonicalize().map_err(io(workspace))?;
    let mut list = trusted(dirs)?;
    if !list.contains(&workspace) {
        list.push(workspace.clone());
    }
    std::fs::create_dir_all(&dirs.state).map_err(io(&dirs.state))?;
    let path = dirs.trusted_workspaces();
    // (A path that is not UTF-8 cannot be written in the list.)
    let bytes = serde_json::to_vec_pretty(&list)
        .map_err(|error| DirsError::Damaged { path: path.clone(), error })?;
    crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(io(&path))?;
    Ok(workspace)
}

/// The owner socket of the host whose state is in `dirs` (see the module notes).
pub fn owner_socket(dirs: &Dirs) -> PathBuf {
    dirs.state.join("host.sock")
}

/// The directory of the agent socket, which a jail binds in.
pub fn agent_socket_dir(dirs: &Dirs) -> PathBuf {
    dirs.state.join("agent")
}

/// The agent socket of the host whose state is in `dirs` (see the module notes).
pub fn agent_socket(dirs: &Dirs) -> PathBuf {
    agent_socket_dir(dirs).join("agent.sock")
}
