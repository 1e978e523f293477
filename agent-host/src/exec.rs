//! The executor: runs one command that policy (or a person) allowed, inside the workspace,
//! under an operating-system sandbox, with a timeout, an output cap and a process limit.
//!
//! The sandbox is bubblewrap: the whole filesystem read-only, the workspace roots writable but
//! for the protected paths in them ([`protected_in`]: git's hooks and config, `.git` pinned,
//! the agents' settings), a private `/tmp`, fresh `/dev` and `/proc`, the user's runtime
//! sockets hidden ([`hide_runtime_sockets`]), every namespace unshared (so no network unless
//! the request allows it, and a pid namespace whose processes all die with the sandbox), the
//! host's own config and state directories hidden under empty tmpfs mounts, and the user's
//! environment as [`UserEnv`] makes it: their `PATH` and toolchains, their home read-only with
//! its secrets hidden, and the jobs' own writable caches ([`Scope`]).
//! Where bubblewrap cannot run, [`Sandbox::detect`] says why, and commands run only after an
//! explicit, local opt-in ([`Sandbox::Unsandboxed`]), which `agent-host doctor` states loudly.
//!
//! The process limit uses a pids cgroup when one can be created (cgroup v2 with delegation, or
//! v1's pids hierarchy), joined before bubblewrap starts; otherwise `prlimit --nproc` inside
//! the sandbox (which the kernel does not apply to root).
//!
//! [`WarmPool`] keeps one bubblewrap sandbox started ahead of the next job, with a launcher
//! waiting inside for what to run, and uses it only while it still matches what a sandbox
//! started for the job would be.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crate::userenv::UserEnv;

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory: a directory inside a workspace root (checked by the caller through
    /// [`crate::confine`]).
    pub cwd: PathBuf,
    /// Variables set on top of the clean environment.
    pub env: BTreeMap<String, String>,
    /// Whether the command may use the network.
    pub network: bool,
    /// Killed after this long.
    pub timeout: Duration,
}

/// Limits that apply to every job.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of output kept; the rest is counted and dropped.
    pub output_cap: usize,
    /// Processes (and threads) the job may have at once.
    pub max_processes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { output_cap: protocol::limits::MAX_OUTPUT - 256, max_processes: 256 }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Output (stdout and stderr interleaved), up to the cap, then a marker if cut.
    pub output: Vec<u8>,
    /// Whether output was cut at the cap.
    pub truncated: bool,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// Killed because it was cancelled.
    pub cancelled: bool,
}

/// Which sandbox is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bubblewrap at this path, checked to work on this kernel.
    Bubblewrap(PathBuf),
    /// Landlock and seccomp, applied by this `agent-host` binary re-run as a helper
    /// (see [`crate::landlock_sandbox`]), checked to be fully enforced on this kernel.
    Landlock(PathBuf),
    /// No sandbox: the person at the machine opted in locally.
    Unsandboxed,
}

/// Why no sandbox is available.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no sandbox can run here: {0}")]
pub struct NoSandbox(pub String);

impl Sandbox {
    /// bubblewrap if it works here, otherwise Landlock + seccomp through `helper` (the
    /// `agent-host` binary) if that is fully enforced here.
    pub fn detect(helper: Option<&Path>) -> Result<Self, NoSandbox> {
        let bwrap = match Self::bubblewrap() {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        match helper {
            Some(helper) => {
                Self::landlock(helper).map_err(|l| NoSandbox(format!("{}; and {}", bwrap.0, l.0)))
            }
            None => Err(bwrap),
        }
    }

    /// Landlock + seccomp through `helper`, checked by running `true` under it.
    pub fn landlock(helper: &Path) -> Result<Self, NoSandbox> {
        let probe = Command::new(helper)
            .args(["__sandbox", "--", "/bin/true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NoSandbox(format!("{} does not start: {e}", helper.display())))?;
        if !probe.status.success() {
            return Err(NoSandbox(format!(
                "Landlock cannot be enforced here: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            )));
        }
        Ok(Self::Landlock(helper.to_path_buf()))
    }

    /// bubblewrap, checked to create its namespaces here.
    pub fn bubblewrap() -> Result<Self, NoSandbox> {
        let bwrap = ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                NoSandbox(
                    "bubblewrap (bwrap) is not installed; install the bubblewrap package".into(),
                )
            })?;
        let probe = Command::new(&bwrap)
            .args(["--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NoSandbox(format!("{} does not start: {e}", bwrap.display())))?;
        if !probe.status.success() {
            return Err(NoSandbox(format!(
                "{} cannot create namespaces here: {}",
                bwrap.display(),
                String::from_utf8_lossy(&probe.stderr).trim()
            )));
        }
        Ok(Self::Bubblewrap(bwrap))
    }

    /// The sandbox to use: bubblewrap if it works here; otherwise no sandbox only if the
    /// person at the machine opted in (`allow_unsandboxed`), else the reason none can run.
    pub fn choose(allow_unsandboxed: bool) -> Result<Self, NoSandbox> {
        let helper = std::env::current_exe().ok();
        match Self::detect(helper.as_deref()) {
            Ok(s) => Ok(s),
            Err(_) if allow_unsandboxed => Ok(Self::Unsandboxed),
            Err(e) => Err(e),
        }
    }

    /// One line for `agent-host doctor`.
    pub fn describe(&self) -> String {
        match self {
            Self::Bubblewrap(p) => format!(
                "bubblewrap ({}): read-only system and home (the user's secrets hidden), writable workspace (but .git/hooks, .git/config and the agents' settings) and jobs' own caches, private /tmp, the user's runtime sockets hidden, no network unless allowed, host state hidden",
                p.display()
            ),
            Self::Landlock(_) => "Landlock + seccomp: system and home read-only, host state and the user's secrets unreadable, writable workspace, jobs' own caches and private temp directory, no unix sockets, no network unless allowed (no pid or mount namespace; .git/hooks, .git/config and the agents' settings are protected by policy only)".into(),
            Self::Unsandboxed => {
                "NONE: commands run unsandboxed, with this user's full rights (opted in locally)"
                    .into()
            }
        }
    }
}

/// A pids cgroup for one job, removed when dropped.
#[derive(Debug)]
struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// Creates a cgroup limited to `max` processes, if this machine lets us.
    fn create(max: u32) -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name =
            format!("agent-host-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        for parent in pids_parents() {
            let dir = parent.join(&name);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            if std::fs::write(dir.join("pids.max"), max.to_string()).is_ok() {
                return Some(Self { dir });
            }
            let _ = std::fs::remove_dir(&dir);
        }
        None
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // Empty by now (every process of the job was killed or exited and reaped).
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where a pids cgroup may be created: our own cgroup v2 directory (if delegated), then v1's
/// pids hierarchy.
fn pids_parents() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") {
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("0::") {
                for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    let dir = Path::new(mount).join(path.trim_start_matches('/'));
                    let controllers = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                        .unwrap_or_default();
                    if controllers.split_whitespace().any(|c| c == "pids") {
                        out.push(dir);
                    }
                }
            }
            if let Some(path) =
                line.split(':').nth(2).filter(|_| line.split(':').nth(1) == Some("pids"))
            {
                out.push(Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/')));
            }
        }
    }
    out
}

/// Whether [`run`] can limit processes on this machine (for `doctor` and the tests).
pub fn process_limit_available() -> Option<&'static str> {
    if PidsCgroup::create(16).is_some() {
        Some("pids cgroup")
    } else if rustix::process::getuid().is_root() {
        None
    } else {
        Some("prlimit --nproc")
    }
}

/// What inside a workspace a job may never write, whatever policy allowed: git's hooks and
/// config (writing them is running code later, outside any sandbox), and the agents' settings
/// ([`AGENT_SETTINGS`]: their hooks, their permission rules, which the host reads too, their
/// MCP servers).
pub const PROTECTED: &[&str] = &[".git/hooks", ".git/config"];

/// The agents' settings in a workspace, read-only to every job and jail. The host makes
/// `.claude` when the workspace has none ([`ensure_agent_settings_dir`]), so that a settings
/// file cannot be created where none was.
pub const AGENT_SETTINGS: &[&str] = &[".claude", ".mcp.json", ".codex", ".gemini"];

/// What a sandbox or jail mounts inside the writable workspace roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Bound onto themselves, writable, so that they cannot be renamed or replaced (`.git`,
    /// whose hooks and config are read-only inside it).
    pub pinned: Vec<PathBuf>,
    /// Read-only.
    pub read_only: Vec<PathBuf>,
    /// Protected names that are symbolic links (or lie through one): a link in a writable
    /// directory can be replaced, so nothing runs while one is there.
    pub linked: Vec<PathBuf>,
}

impl Protected {
    /// Why no job or jail may start, if one may not.
    pub fn refusal(&self) -> Option<String> {
        let linked = self.linked.first()?;
        Some(format!(
            "{} is a symbolic link (or lies through one), which a sandbox cannot keep read-only: \
             replace it with the file or directory itself",
            linked.display()
        ))
    }
}

/// The protected paths ([`PROTECTED`], [`AGENT_SETTINGS`]) inside the workspace roots (which
/// are canonical), and `.git` to pin: those that exist when the job starts. One that is a
/// symbolic link, or lies through one, is `linked` instead: bubblewrap would follow it (a link
/// to `/tmp` would bind the machine's `/tmp` back in), and the link itself could be replaced.
pub fn protected_in(roots: &[PathBuf]) -> Protected {
    let mut out = Protected::default();
    for root in roots {
        for (name, pin) in
            PROTECTED.iter().chain(AGENT_SETTINGS).map(|n| (*n, false)).chain([(".git", true)])
        {
            let path = root.join(name);
            if path.symlink_metadata().is_err() {
                continue;
            }
            if path.canonicalize().ok().as_ref() != Some(&path) {
                out.linked.push(path);
            } else if !pin {
                out.read_only.push(path);
            } else if path.is_dir() {
                out.pinned.push(path);
            }
        }
    }
    out
}

/// Directories of sockets through which a program could act as the user outside any sandbox
/// (the session bus, and through it systemd; gpg and ssh agents; terminal multiplexers),
/// container engines' sockets, and the X cookie: bubblewrap's arguments that hide those
/// present, the directories under empty tmpfs mounts, the files under `/dev/null`.
pub fn hide_runtime_sockets() -> Vec<OsString> {
    const SOCKETS: &[&str] = &[
        "/run/docker.sock",
        "/var/run/docker.sock",
        "/run/podman/podman.sock",
        "/run/containerd/containerd.sock",
    ];
    let dirs = runtime_dirs();
    // As the kernel resolves them, once each: bubblewrap resolves a destination inside the
    // new root, where an absolute link (Debian's `/var/run -> /run`) does not lead anywhere.
    let real = |paths: Vec<PathBuf>, kind: fn(&Path) -> bool| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> =
            paths.iter().filter(|p| kind(p)).filter_map(|p| p.canonicalize().ok()).collect();
        out.sort();
        out.dedup();
        out
    };
    let mut argv: Vec<OsString> = Vec::new();
    for dir in real(dirs, Path::is_dir) {
        argv.extend(["--tmpfs".into(), dir.into()]);
    }
    // The X server's cookie too: with it, a program could type into any window.
    let mut files: Vec<PathBuf> = SOCKETS.iter().map(PathBuf::from).collect();
    files.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".Xauthority")));
    for file in real(files, Path::exists) {
        argv.extend(["--ro-bind".into(), "/dev/null".into(), file.into()]);
    }
    argv
}

/// What of the machine's `/tmp` a Landlock job may not read (bubblewrap gives a job a
/// private one): all of it but the places in `keep` that lie there (the job's own temporary
/// directory, a root, a home) and the way to them. Links are left alone: hiding one would
/// hide what it leads to.
fn shared_tmp(keep: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, keep: &[&PathBuf], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_symlink()) || keep.contains(&&path) {
                continue;
            }
            if keep.iter().any(|k| k.starts_with(&path)) {
                walk(&path, keep, out);
            } else {
                out.push(path);
            }
        }
    }
    let tmp = Path::new("/tmp");
    let inside: Vec<&PathBuf> = keep.iter().filter(|k| k.starts_with(tmp)).collect();
    if inside.is_empty() {
        return vec![tmp.to_path_buf()];
    }
    let mut out = Vec::new();
    walk(tmp, &inside, &mut out);
    out
}

/// The directories of the user's runtime sockets ([`hide_runtime_sockets`]), as named.
fn runtime_dirs() -> Vec<PathBuf> {
    const DIRS: &[&str] = &["/run/user", "/run/dbus", "/run/screen", "/var/run/screen"];
    let mut dirs: Vec<PathBuf> = DIRS.iter().map(PathBuf::from).collect();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && runtime.is_absolute()
        && !dirs.iter().any(|d| runtime.starts_with(d))
    {
        dirs.push(runtime);
    }
    dirs
}

/// Files in a repository's `.git` that point git at another directory's config and hooks
/// (`commondir`, as a linked worktree's has) or add config (`config.worktree`): a job could
/// create them where they do not exist, and a read-only mount cannot stop that.
pub const GIT_REDIRECTS: &[&str] = &[".git/commondir", ".git/config.worktree"];

/// The [`GIT_REDIRECTS`] present in the roots.
pub fn git_redirects(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .flat_map(|root| GIT_REDIRECTS.iter().map(move |name| root.join(name)))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// Removes the [`GIT_REDIRECTS`] that were not there `before` (a job or a session made them);
/// returns them.
pub fn remove_new_git_redirects(roots: &[PathBuf], before: &[PathBuf]) -> Vec<PathBuf> {
    let new: Vec<PathBuf> =
        git_redirects(roots).into_iter().filter(|p| !before.contains(p)).collect();
    for path in &new {
        if let Err(e) = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path)) {
            tracing::error!("cannot remove {}: {e}", path.display());
        }
    }
    new
}

/// Makes the workspace's `.claude` directory when it has none (see [`AGENT_SETTINGS`]).
pub fn ensure_agent_settings_dir(root: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(root.join(".claude")) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// A job's private temporary directory, removed when dropped.
#[derive(Debug)]
struct JobTmp {
    path: PathBuf,
}

impl Drop for JobTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempdir_for_job() -> std::io::Result<JobTmp> {
    use std::os::unix::fs::DirBuilderExt as _;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "agent-host-job-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    Ok(JobTmp { path })
}

/// Where jobs run and what they see: the workspace roots (writable), the host's own
/// directories (hidden), and the user's machine as [`UserEnv`] makes it.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The workspace roots, canonical.
    pub roots: Vec<PathBuf>,
    /// The host's config and state directories.
    pub hidden: Vec<PathBuf>,
    /// `PATH`, variables, home, secrets and caches.
    pub user: UserEnv,
    /// This `agent-host` binary, when known: bound into bubblewrap sandboxes, where it keeps
    /// the secrets unreadable by Landlock as well (`__sandbox --layer`,
    /// [`crate::landlock_sandbox::hide_layer`]).
    pub layer: Option<PathBuf>,
}

impl Scope {
    /// The environment `job` starts from: the user's ([`UserEnv::job_env`]), then its own.
    /// `PATH` loses the directories a job can write (in a root, a writable place or the
    /// jobs' cache): a program left there by one job would run for the next under the name of
    /// a program policy knows.
    fn env(&self, job: &Job) -> BTreeMap<String, String> {
        let mut env = self.user.job_env();
        let present = self.user.writable_present().into_iter().chain(self.user.cache_present());
        let writable: Vec<PathBuf> = self
            .roots
            .iter()
            .chain(&self.user.writable)
            .chain(&self.user.cache)
            .cloned()
            .chain(present)
            .collect();
        let path: Vec<&str> = self
            .user
            .path
            .split(':')
            .filter(|dir| {
                let real = Path::new(dir).canonicalize().unwrap_or_else(|_| PathBuf::from(dir));
                !writable.iter().any(|w| real.starts_with(w) || Path::new(dir).starts_with(w))
            })
            .collect();
        env.insert("PATH".into(), path.join(":"));
        env.extend(job.env.clone());
        env
    }

    /// What a bubblewrap sandbox for these roots mounts, as things are on disk now.
    fn mounts(&self) -> Mounts {
        let mut mounts = self.mounts_by_name();
        // A mount sits on what a name led to when it was made: were the file or directory
        // replaced since (an editor saving a history by renaming), the name would lead past it.
        // The runtime sockets too: a socket made again (a service restarted) would be reachable.
        let runtime = mounts
            .runtime
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p != Path::new("/dev/null"));
        let hidden = mounts
            .hidden
            .iter()
            .cloned()
            .chain(mounts.secrets.iter().map(|(p, _)| p.clone()))
            .chain(runtime);
        mounts.identities = hidden
            .map(|p| {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::metadata(p).map_or((0, 0), |m| (m.dev(), m.ino()))
            })
            .collect();
        mounts
    }

    fn mounts_by_name(&self) -> Mounts {
        let (cache, writable) = (self.user.cache_present(), self.user.writable_present());
        let home = self.user.home.clone().filter(|h| h.is_dir());
        // Where jobs write: a secret there is hidden by its mount alone (a Landlock layer
        // around it would leave the job's own new files there unreadable).
        let written: Vec<&PathBuf> = self.roots.iter().chain(&writable).chain(&cache).collect();
        let in_written = |p: &Path| written.iter().any(|w| p.starts_with(w));
        // A private /tmp hides what lies in the machine's, unless bound back (a home or root
        // there).
        let bound_back =
            |p: &Path| home.iter().chain(written.iter().copied()).any(|k| p.starts_with(k));
        let in_private_tmp = |p: &Path| p.starts_with("/tmp") && !bound_back(p);
        let secrets: Vec<(PathBuf, bool)> =
            self.user.secrets_present().into_iter().filter(|(p, _)| !in_private_tmp(p)).collect();
        let mut layer: Vec<PathBuf> = self
            .user
            .secrets
            .iter()
            .filter_map(|p| crate::userenv::resolve_place(p))
            .filter(|p| !in_private_tmp(p) && !in_written(p))
            .collect();
        layer.sort();
        layer.dedup();
        Mounts {
            protected: protected_in(&self.roots),
            // As the kernel resolves them: bubblewrap makes a mount point inside the new root,
            // where a link on the way (an absolute one) does not lead anywhere.
            hidden: self.hidden.iter().filter_map(|d| d.canonicalize().ok()).collect(),
            runtime: hide_runtime_sockets(),
            home,
            shown: self.user.shown.as_ref().map(|_| self.user.shown_present()),
            secrets,
            layer,
            identities: Vec::new(),
            cache,
            writable,
        }
    }

    /// Why no job can run in this scope, if so ([`UserEnv::unfit`]).
    pub fn unfit(&self) -> Option<String> {
        self.user.unfit(&self.roots, &self.hidden)
    }
}

/// What a bubblewrap sandbox mounts besides the roots, found on disk when it starts: a sandbox
/// started ahead is used only while these are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mounts {
    /// Inside the roots.
    protected: Protected,
    /// The host's directories that exist.
    hidden: Vec<PathBuf>,
    /// The arguments that hide the user's runtime sockets.
    runtime: Vec<OsString>,
    /// The user's home, bound read-only again over the private `/tmp` should it lie there.
    home: Option<PathBuf>,
    /// With the home hidden: what of it is shown.
    shown: Option<Vec<PathBuf>>,
    /// The user's secret places that exist, and whether each is a directory.
    secrets: Vec<(PathBuf, bool)>,
    /// The places the Landlock layer keeps unreadable: the secret places, present or not,
    /// resolved ([`crate::userenv::resolve_place`]), but for those where jobs write or in the
    /// private `/tmp`.
    layer: Vec<PathBuf>,
    /// What the hidden directories, the secrets and the runtime sockets were (device and
    /// inode), in that order.
    identities: Vec<(u64, u64)>,
    /// The jobs' cache.
    cache: Option<PathBuf>,
    /// The user's places made writable.
    writable: Vec<PathBuf>,
}

/// The `prlimit` prefix that limits processes where no cgroup does (see the module notes).
fn nproc_prefix(cgroup: Option<&PidsCgroup>, limits: &Limits) -> Vec<OsString> {
    if cgroup.is_none() && !rustix::process::getuid().is_root() {
        vec!["prlimit".into(), format!("--nproc={}", limits.max_processes).into(), "--".into()]
    } else {
        Vec::new()
    }
}

/// bubblewrap's arguments up to `--`: the mounts (the protected paths inside the writable
/// `roots`, the runtime sockets and the host's directories under empty tmpfs mounts, the
/// writable caches, the user's secrets hidden last), the namespaces, the working directory,
/// and a clean environment holding `env` only.
fn bwrap_args(
    bwrap: &Path,
    network: bool,
    roots: &[PathBuf],
    mounts: &Mounts,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Vec<OsString> {
    let Mounts { protected, hidden, runtime, home, shown, secrets, cache, writable, .. } = mounts;
    let mut argv: Vec<OsString> = vec![bwrap.into()];
    for arg in ["--die-with-parent", "--new-session", "--unshare-all"] {
        argv.push(arg.into());
    }
    if network {
        argv.push("--share-net".into());
    }
    for arg in ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"] {
        argv.push(arg.into());
    }
    // The job's temporary files in a directory of their own, there before the job starts: the
    // Landlock layer's rules are made on what exists then ([`crate::landlock_sandbox::hide_layer`]).
    argv.extend(["--dir".into(), crate::userenv::JOB_TMP.into()]);
    // Before the roots, which usually lie in the home.
    match (home, shown) {
        (Some(home), Some(shown)) => {
            argv.extend(["--tmpfs".into(), home.into()]);
            for place in shown {
                argv.extend(["--ro-bind".into(), place.into(), place.into()]);
            }
        }
        (Some(home), None) if home.starts_with("/tmp") => {
            argv.extend(["--ro-bind".into(), home.into(), home.into()]);
        }
        _ => {}
    }
    for root in roots {
        argv.extend(["--bind".into(), root.into(), root.into()]);
    }
    // The user's writable places like the roots: what is protected or hidden comes after.
    for place in writable {
        argv.extend(["--bind".into(), place.into(), place.into()]);
    }
    // Protected paths stay read-only even inside a writable root.
    for path in &protected.pinned {
        argv.extend(["--bind".into(), path.into(), path.into()]);
    }
    for path in &protected.read_only {
        argv.extend(["--ro-bind".into(), path.into(), path.into()]);
    }
    for dir in hidden {
        argv.extend(["--tmpfs".into(), dir.into()]);
    }
    // After the host's directories: the jobs' cache lies in their state.
    if let Some(cache) = cache {
        argv.extend(["--bind".into(), cache.into(), cache.into()]);
    }
    // Last, so that no bind above shows one again.
    for (secret, dir) in secrets {
        match dir {
            true => argv.extend(["--tmpfs".into(), secret.into()]),
            false => argv.extend(["--ro-bind".into(), "/dev/null".into(), secret.into()]),
        }
    }
    argv.extend(runtime.iter().cloned());
    argv.extend(["--chdir".into(), cwd.into(), "--clearenv".into()]);
    for (k, v) in env {
        argv.extend(["--setenv".into(), k.into(), v.into()]);
    }
    argv.push("--".into());
    argv
}

/// The command for `argv`, joining `cgroup` first when there is one.
fn command_in(cgroup: Option<&PidsCgroup>, argv: &[OsString]) -> Command {
    match cgroup {
        Some(cg) => {
            // Join the cgroup before anything else starts, then become the real command.
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "echo $$ > \"$1\" && shift && exec \"$@\"", "agent-host-job"])
                .arg(cg.procs());
            c.args(argv);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    }
}

/// Runs `job` under `sandbox`, in `scope`. `cancel` kills the job when set.
pub fn run(
    sandbox: &Sandbox,
    job: &Job,
    scope: &Scope,
    limits: &Limits,
    cancel: &Arc<AtomicBool>,
) -> std::io::Result<Outcome> {
    let roots = &scope.roots;
    if job.argv.is_empty() {
        return Err(std::io::Error::other("empty command"));
    }
    let cgroup = PidsCgroup::create(limits.max_processes);
    // Outside bubblewrap, the job gets a private temporary directory of its own.
    let private_tmp = match sandbox {
        Sandbox::Bubblewrap(_) => None,
        _ => Some(tempdir_for_job()?),
    };
    let mut env = scope.env(job);
    if let Some(tmp) = &private_tmp {
        if scope.user.home.is_none() {
            env.insert("HOME".into(), tmp.path.display().to_string());
        }
        env.insert("TMPDIR".into(), tmp.path.display().to_string());
    }
    let mut argv: Vec<OsString> = Vec::new();
    match sandbox {
        Sandbox::Bubblewrap(bwrap) => {
            if let Some(refusal) = scope.unfit() {
                return Err(std::io::Error::other(refusal));
            }
            let mounts = scope.mounts();
            if let Some(refusal) = mounts.protected.refusal() {
                return Err(std::io::Error::other(refusal));
            }
            argv = bwrap_args(bwrap, job.network, roots, &mounts, &job.cwd, &env);
            // The second wall on the secrets: this binary, bound in, restricts itself and
            // becomes the command.
            if let Some(layer) = scope.layer.as_ref().filter(|_| !mounts.layer.is_empty()) {
                let end = argv.len() - 1; // before bubblewrap's `--`
                argv.splice(end..end, ["--ro-bind".into(), layer.into(), LAUNCHER_INSIDE.into()]);
                argv.extend([LAUNCHER_INSIDE.into(), "__sandbox".into(), "--layer".into()]);
                for secret in &mounts.layer {
                    argv.extend(["--hide".into(), secret.into()]);
                }
                argv.push("--".into());
            }
        }
        Sandbox::Landlock(helper) => {
            if let Some(refusal) = scope.unfit() {
                return Err(std::io::Error::other(refusal));
            }
            argv.extend([helper.into(), "__sandbox".into()]);
            let mut writable = scope.user.writable_present();
            writable.extend(scope.user.cache_present());
            for root in roots.iter().chain(private_tmp.as_ref().map(|t| &t.path)).chain(&writable) {
                argv.extend(["--write".into(), root.into()]);
            }
            // What bubblewrap hides with a private /tmp and empty runtime directories, hidden
            // too (the job's own temporary directory, and a root there, are written).
            let secrets = scope.user.secrets_present().into_iter().map(|(p, _)| p);
            let keep: Vec<PathBuf> = roots
                .iter()
                .chain(private_tmp.as_ref().map(|t| &t.path))
                .chain(&writable)
                .chain(&scope.user.home)
                .cloned()
                .collect();
            let machine = runtime_dirs().into_iter().chain(shared_tmp(&keep));
            for dir in scope.hidden.iter().cloned().chain(secrets).chain(machine) {
                argv.extend(["--hide".into(), dir.into()]);
            }
            if let (Some(home), Some(_)) = (&scope.user.home, &scope.user.shown) {
                argv.extend(["--home".into(), home.into()]);
                for place in scope.user.shown_present() {
                    argv.extend(["--show".into(), place.into()]);
                }
            }
            // Landlock rights are inherited by every descendant, so a writable root cannot
            // keep `.git/hooks` read-only: under this fallback they are protected by policy
            // only (it always asks before writing them), as `describe` says.
            if job.network {
                argv.push("--network".into());
            }
            argv.push("--".into());
        }
        Sandbox::Unsandboxed => {}
    }
    argv.extend(nproc_prefix(cgroup.as_ref(), limits));
    argv.extend(job.argv.iter().map(Into::into));
    let mut command = command_in(cgroup.as_ref(), &argv);
    if !matches!(sandbox, Sandbox::Bubblewrap(_)) {
        command.current_dir(&job.cwd).env_clear().envs(&env);
    }

    let (reader, writer) = std::io::pipe()?;
    command.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer).process_group(0);
    let child = command.spawn()?;
    // Our copies of the write end are gone with `command`: EOF comes when the job's are.
    drop(command);
    let outcome =
        finish(child, reader, None, job.timeout, cancel, limits.output_cap).map(|(o, _)| o);
    drop(cgroup);
    drop(private_tmp);
    outcome
}

/// How often a waiting job looks at its cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

/// How long the output may stay open after the command exited (a background process holding
/// it, outside a sandbox) before its process group is killed.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Where a job's exit status comes from.
enum Exit {
    /// The process waited for (bubblewrap, or the command itself).
    Waited(std::process::ExitStatus),
    /// The code a warm sandbox's launcher reported for the command.
    Reported(i32),
}

/// What [`finish`] leaves: the outcome, and the started process if it still has to be reaped
/// (a warm sandbox that reported its job's status before it ended).
type Finished = (Outcome, Option<std::process::Child>);

/// Waits for a started job: its output collected up to `cap`, killed at `timeout` or when
/// `cancel` is set. One thread does it all, woken by the output, by the process's exit (a
/// pidfd) and, for a warm sandbox, by its launcher's report on `report`, so a quick command
/// returns at once and no thread is started per job.
fn finish(
    mut child: std::process::Child,
    mut reader: std::io::PipeReader,
    mut report: Option<&mut std::os::unix::net::UnixStream>,
    timeout: Duration,
    cancel: &Arc<AtomicBool>,
    cap: usize,
) -> std::io::Result<Finished> {
    use rustix::event::{PollFd, PollFlags};
    let pid = child.id();
    // Without pidfds (Linux before 5.3) the exit is looked for at each wake-up instead.
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    let deadline = Instant::now() + timeout;
    let (mut output, mut dropped) = (Vec::new(), 0u64);
    let mut buf = vec![0u8; 16 * 1024];
    let mut reported = Vec::new();
    let (mut status, mut exited_at, mut eof) = (None, None, false);
    let (mut timed_out, mut cancelled, mut group_killed) = (false, false, false);
    while status.is_none() || !eof {
        let now = Instant::now();
        if status.is_none() && !timed_out && !cancelled {
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
                kill_group(pid);
            } else if now >= deadline {
                timed_out = true;
                kill_group(pid);
            }
            // A killed sandbox's launcher reports nothing: its end is what counts.
            if timed_out || cancelled {
                report = None;
            }
        }
        // In the sandbox every process dies with it. Without one, a background process can
        // outlive the command and hold the pipe open: while it does, the group id is still
        // its own, so killing the group cannot hit anyone else.
        // A process that left the group keeps the output open for good: stop reading.
        if let Some(at) = exited_at
            && !eof
            && now.duration_since(at) >= OUTPUT_GRACE
        {
            if group_killed && now.duration_since(at) >= 2 * OUTPUT_GRACE {
                break;
            }
            if !group_killed {
                group_killed = true;
                kill_group(pid);
            }
        }
        let mut wait = if status.is_some() { OUTPUT_GRACE } else { CANCEL_CHECK };
        if pidfd.is_none() && status.is_none() {
            wait = Duration::from_millis(2);
        }
        if status.is_none() && !timed_out {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        let mut fds = Vec::with_capacity(3);
        if !eof {
            fds.push(PollFd::new(&reader, PollFlags::IN));
        }
        let watch_report = status.is_none() && report.is_some();
        if let (true, Some(channel)) = (watch_report, &report) {
            fds.push(PollFd::new(channel, PollFlags::IN));
        }
        if let (Some(fd), None) = (&pidfd, &status) {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let timeout = rustix::event::Timespec::try_from(wait).ok();
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let readable = !eof && !fds[0].revents().is_empty();
        let report_ready = watch_report && !fds[usize::from(!eof)].revents().is_empty();
        let exit_seen = pidfd.is_none() || fds.last().is_some_and(|fd| !fd.revents().is_empty());
        drop(fds);
        if readable {
            match reader.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    let room = cap.saturating_sub(output.len()).min(n);
                    output.extend_from_slice(&buf[..room]);
                    dropped += (n - room) as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => eof = true,
            }
        }
        if report_ready && let Some(channel) = report.as_mut() {
            let mut byte = [0u8; 8];
            match channel.read(&mut byte) {
                Ok(n) if n > 0 => {
                    reported.extend_from_slice(&byte[..n]);
                    if let Some(code) = parse_report(&reported) {
                        status = Some(Exit::Reported(code));
                        exited_at = Some(Instant::now());
                        // A process the job left behind holds its output: hanging up now
                        // ends the sandbox, and that process with it.
                        if !eof {
                            let _ = channel.shutdown(std::net::Shutdown::Both);
                        }
                    } else if reported.len() >= 5 {
                        // Not a report: the process's end says how it went.
                        report = None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Gone without a word: the process's end says how it went.
                _ => report = None,
            }
        }
        if status.is_none()
            && exit_seen
            && let Some(s) = child.try_wait()?
        {
            status = Some(Exit::Waited(s));
            exited_at = Some(Instant::now());
        }
    }
    let status = status.ok_or_else(|| std::io::Error::other("no exit status"))?;
    let truncated = dropped > 0;
    if truncated {
        output.extend_from_slice(
            format!("\n[output truncated: {dropped} more bytes not shown]\n").as_bytes(),
        );
    }
    let (exit_code, unreaped) = match status {
        Exit::Waited(s) => (s.code(), None),
        Exit::Reported(code) => (Some(code), Some(child)),
    };
    Ok((Outcome { exit_code, output, truncated, timed_out, cancelled }, unreaped))
}

/// How long a sandbox started ahead may wait for its job: what it hid was hidden as things
/// were when it started, and a secret replaced on the machine since would show through it
/// (its identity is compared too, but a name can be replaced and replaced back).
const WARM_MAX_AGE: Duration = Duration::from_secs(60);

/// How long the pool waits after a job before starting the next sandbox.
const REFILL_DELAY: Duration = Duration::from_millis(10);

/// Where a warm sandbox's launcher (this `agent-host` binary) is bound inside it.
const LAUNCHER_INSIDE: &str = "/tmp/.agent-host-launcher";

/// What a warm sandbox's launcher is told to run (as JSON on its channel).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Launch {
    argv: Vec<String>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    /// The places to keep unreadable with Landlock too ([`crate::landlock_sandbox::hide_layer`]).
    #[serde(default)]
    hide: Vec<PathBuf>,
}

/// The most a launcher reads from its channel.
const MAX_LAUNCH: u64 = 4 << 20;

/// The byte a launcher writes on its channel once it is running inside its sandbox.
const LAUNCHER_READY: u8 = 0x06;

/// What starts a launcher's report of its job's exit code (then the code, 4 bytes big-endian).
const LAUNCHER_REPORT: u8 = b'X';

/// The exit code a launcher reports when it cannot start the command.
const CANNOT_LAUNCH: i32 = 125;

/// Where `program` is: itself if it names a path, else the first executable file of that name
/// in `path`'s directories (as `execvp` looks), else itself (for the error to name).
fn find_program(program: &str, path: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate.is_file()
                && rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The exit code in a launcher's report, once it is whole.
fn parse_report(bytes: &[u8]) -> Option<i32> {
    match bytes {
        [LAUNCHER_REPORT, a, b, c, d, ..] => Some(i32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The launcher inside a warm sandbox (`agent-host __launch`). Its standard input is its
/// channel to the pool, a socket: it says it is ready, reads what to run (to the end of what
/// the pool sends), starts it with standard input from `/dev/null`, standard output and error
/// its own (the job's output pipe), in its directory, with exactly its environment; waits for
/// it and reports its exit code (128 + the signal that killed it, as shells do) on the
/// channel. The pool has its answer then, without waiting for bubblewrap to end. The launcher
/// (and with it the sandbox) ends when the pool hangs up, which the pool does once the
/// result is on its way: taking the sandbox down is work for the CPU that can wait. Returns
/// the launcher's own exit code.
pub fn launch_in_sandbox() -> u8 {
    use std::os::fd::AsFd as _;
    use std::os::unix::process::ExitStatusExt as _;
    let stdin = std::io::stdin();
    let report = |code: i32| {
        let mut message = vec![LAUNCHER_REPORT];
        message.extend_from_slice(&code.to_be_bytes());
        let _ = rustix::io::write(stdin.as_fd(), &message);
    };
    if rustix::io::write(stdin.as_fd(), &[LAUNCHER_READY]).is_err() {
        return 1;
    }
    let mut input = Vec::new();
    if let Err(e) = stdin.lock().take(MAX_LAUNCH).read_to_end(&mut input) {
        eprintln!("agent-host: reading the job: {e}");
        report(CANNOT_LAUNCH);
        return 1;
    }
    let launch: Launch = match serde_json::from_slice(&input) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agent-host: the job does not parse: {e}");
            report(CANNOT_LAUNCH);
            return 1;
        }
    };
    let Some((program, args)) = launch.argv.split_first() else {
        eprintln!("agent-host: no command");
        report(CANNOT_LAUNCH);
        return 1;
    };
    // The second wall on the secrets, on this process and so on the command it starts.
    if !launch.hide.is_empty()
        && let Err(e) = crate::landlock_sandbox::hide_layer(&launch.hide)
    {
        eprintln!("agent-host: cannot keep the secrets unreadable: {e}; nothing was run");
        report(CANNOT_LAUNCH);
        return 1;
    }
    // Found here in the job's own PATH, so that the command is spawned (vfork and exec)
    // rather than forked from this process.
    let path = launch.env.get("PATH").map_or("", String::as_str);
    let started = Command::new(find_program(program, path))
        .arg0(program)
        .args(args)
        .current_dir(&launch.cwd)
        .env_clear()
        .envs(&launch.env)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match started {
        Ok(child) => child,
        Err(e) => {
            eprintln!("agent-host: cannot run {program}: {e}");
            report(CANNOT_LAUNCH);
            return 1;
        }
    };
    // The output is the job's alone from now on: its end comes with the job's, not later
    // with this process's.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null).and_then(|()| rustix::stdio::dup2_stderr(&null));
    }
    let code = match child.wait() {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => CANNOT_LAUNCH,
    };
    report(code);
    // Until the pool hangs up (or is gone): the hang-up, not a byte, is what is waited for.
    let mut hangup = [rustix::event::PollFd::new(&stdin, rustix::event::PollFlags::empty())];
    while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut hangup, None) {}
    0
}

/// A bubblewrap sandbox started before its job: namespaces made, mounts in place, cgroup
/// joined, and inside it the launcher waiting for what to run.
#[derive(Debug)]
struct Warm {
    child: std::process::Child,
    /// To the launcher: the job goes one way, ready and the report the other.
    channel: std::os::unix::net::UnixStream,
    output: std::io::PipeReader,
    cgroup: Option<PidsCgroup>,
    /// What it mounted as things were on disk when it started.
    mounts: Mounts,
    /// When it started: it is used only within [`WARM_MAX_AGE`] of that.
    started: Instant,
}

impl Warm {
    /// Stops it unused.
    fn discard(mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// What every sandbox of a pool is made of.
#[derive(Debug, Clone)]
struct PoolSpec {
    bwrap: PathBuf,
    launcher: PathBuf,
    scope: Scope,
    limits: Limits,
}

impl PoolSpec {
    fn start(&self) -> std::io::Result<Warm> {
        if let Some(refusal) = self.scope.unfit() {
            return Err(std::io::Error::other(refusal));
        }
        let cgroup = PidsCgroup::create(self.limits.max_processes);
        let mounts = self.scope.mounts();
        if let Some(refusal) = mounts.protected.refusal() {
            return Err(std::io::Error::other(refusal));
        }
        let mut argv = bwrap_args(
            &self.bwrap,
            false,
            &self.scope.roots,
            &mounts,
            Path::new("/"),
            &BTreeMap::new(),
        );
        // The launcher is bound at a fixed place in the sandbox's own `/tmp`: where it lies on
        // the machine may be hidden there (a build under `/tmp`, whose `/tmp` is private).
        let end = argv.len() - 1; // before bubblewrap's `--`
        argv.splice(
            end..end,
            ["--ro-bind".into(), self.launcher.clone().into(), LAUNCHER_INSIDE.into()],
        );
        // bubblewrap keeps descriptors 0-2 open in its own two processes (the one outside and
        // the sandbox's init) until the sandbox ends, and closes the others there. So the
        // output pipe reaches it as descriptor 3, and only the launcher makes it its standard
        // output and error: the pipe's end then comes with the job's processes alone, and the
        // launcher's report, on a socket as its standard input, comes before bubblewrap ends.
        argv.extend(
            ["/bin/sh", "-c", "exec >&3 2>&3 3>&- && exec \"$0\" __launch"].map(OsString::from),
        );
        argv.push(LAUNCHER_INSIDE.into());
        let mut outer: Vec<OsString> =
            ["/bin/sh", "-c", "exec 3>&1 >/dev/null && exec \"$@\"", "agent-host-launch"]
                .map(OsString::from)
                .into();
        outer.extend(argv);
        let mut command = command_in(cgroup.as_ref(), &outer);
        let (channel, launcher_end) = std::os::unix::net::UnixStream::pair()?;
        let (output, writer) = std::io::pipe()?;
        command
            .stdin(std::os::fd::OwnedFd::from(launcher_end))
            .stdout(writer)
            .stderr(Stdio::null())
            .process_group(0);
        let child = command.spawn()?;
        drop(command);
        let mut warm = Warm { child, channel, output, cgroup, mounts, started: Instant::now() };
        // Ready once the launcher runs inside: namespaces, mounts and cgroup all made.
        let mut ready = [0u8; 1];
        match warm.channel.read_exact(&mut ready) {
            Ok(()) if ready[0] == LAUNCHER_READY => Ok(warm),
            Ok(()) => {
                warm.discard();
                Err(std::io::Error::other("the launcher said something else than ready"))
            }
            Err(e) => {
                warm.discard();
                Err(std::io::Error::other(format!("the sandbox did not start: {e}")))
            }
        }
    }
}

/// One bubblewrap sandbox kept started ahead of the next job, so that a job does not wait for
/// namespaces, mounts and a cgroup to be made (10-25 ms on a busy machine; the job itself
/// then starts in about a millisecond).
///
/// A sandbox serves one job and is replaced after it: 10 ms after the job, once its result is
/// on its way, the pool takes it down (ending any process the job left behind; at once instead
/// if such a process holds the job's output) and starts the next one. It is used only if
/// nothing it was made from has changed on disk since (the protected paths that exist, the hidden directories that exist) and the job needs no network;
/// otherwise the job starts a sandbox of its own as [`run`] does, with the same result.
/// Sandboxes are started by one thread of the pool's own, which lives as long as the pool:
/// bubblewrap's `--die-with-parent` ties each one to that thread, so they all end with the
/// pool (or the host).
#[derive(Debug)]
pub struct WarmPool {
    spec: PoolSpec,
    sandbox: Sandbox,
    ready: Arc<std::sync::Mutex<Option<Warm>>>,
    tasks: std::sync::Mutex<std::sync::mpsc::Sender<PoolTask>>,
    warm_runs: std::sync::atomic::AtomicU64,
}

impl WarmPool {
    /// A pool for jobs in `scope`, run by the `launcher` binary (this `agent-host`, bound into
    /// each sandbox); `None` unless `sandbox` is bubblewrap and the launcher lies outside the
    /// hidden directories.
    pub fn start(
        sandbox: &Sandbox,
        launcher: &Path,
        scope: &Scope,
        limits: &Limits,
    ) -> Option<Self> {
        let Sandbox::Bubblewrap(bwrap) = sandbox else { return None };
        let secrets = scope.user.secrets.iter();
        if scope.hidden.iter().chain(secrets).any(|h| launcher.starts_with(h)) {
            return None;
        }
        let spec = PoolSpec {
            bwrap: bwrap.clone(),
            launcher: launcher.to_path_buf(),
            scope: scope.clone(),
            limits: limits.clone(),
        };
        let ready: Arc<std::sync::Mutex<Option<Warm>>> = Arc::default();
        let (tasks, todo) = std::sync::mpsc::channel::<PoolTask>();
        let (slot, making) = (ready.clone(), spec.clone());
        std::thread::Builder::new()
            .name("warm-sandbox".into())
            .spawn(move || {
                let mut used = Vec::new();
                while let Ok(task) = todo.recv() {
                    if let PoolTask::Reap(sandbox) = task {
                        used.push(sandbox);
                        continue;
                    }
                    // The job that used the last one is reporting its result now: ending that
                    // sandbox and starting the next (each CPU-heavy for a few milliseconds)
                    // can wait for that.
                    std::thread::sleep(REFILL_DELAY);
                    used.drain(..).for_each(Used::end);
                    if lock_slot(&slot).is_some() {
                        continue;
                    }
                    match making.start() {
                        Ok(warm) => *lock_slot(&slot) = Some(warm),
                        Err(e) => tracing::warn!("could not start a sandbox ahead: {e}"),
                    }
                }
                used.into_iter().for_each(Used::end);
                if let Some(warm) = lock_slot(&slot).take() {
                    warm.discard();
                }
            })
            .ok()?;
        let _ = tasks.send(PoolTask::Refill);
        Some(Self {
            spec,
            sandbox: sandbox.clone(),
            ready,
            tasks: std::sync::Mutex::new(tasks),
            warm_runs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Waits until a sandbox is started and waiting, up to `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if lock_slot(&self.ready).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// How many jobs ran in a sandbox started ahead.
    pub fn warm_runs(&self) -> u64 {
        self.warm_runs.load(Ordering::Relaxed)
    }

    fn send(&self, task: PoolTask) {
        let sender = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = sender.send(task);
    }

    /// Runs `job`: in the sandbox started ahead if there is one and it still fits, otherwise
    /// as [`run`] does. Then starts the next one.
    pub fn run(&self, job: &Job, cancel: &Arc<AtomicBool>) -> std::io::Result<Outcome> {
        let warm = if job.network { None } else { lock_slot(&self.ready).take() };
        let warm = warm.and_then(|mut w| {
            let fits = w.started.elapsed() < WARM_MAX_AGE
                && w.mounts == self.spec.scope.mounts()
                && matches!(w.child.try_wait(), Ok(None));
            if fits {
                Some(w)
            } else {
                w.discard();
                None
            }
        });
        let outcome = match warm {
            Some(warm) if !job.argv.is_empty() => {
                self.warm_runs.fetch_add(1, Ordering::Relaxed);
                self.run_warm(warm, job, cancel)
            }
            other => {
                if let Some(warm) = other {
                    warm.discard();
                }
                run(&self.sandbox, job, &self.spec.scope, &self.spec.limits, cancel)
            }
        };
        self.send(PoolTask::Refill);
        outcome
    }

    fn run_warm(
        &self,
        warm: Warm,
        job: &Job,
        cancel: &Arc<AtomicBool>,
    ) -> std::io::Result<Outcome> {
        use std::io::Write as _;
        let Warm { child, mut channel, output, cgroup, mounts, .. } = warm;
        let mut argv: Vec<String> = nproc_prefix(cgroup.as_ref(), &self.spec.limits)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.extend(job.argv.iter().cloned());
        let hide = mounts.layer;
        let launch = Launch { argv, cwd: job.cwd.clone(), env: self.spec.scope.env(job), hide };
        let bytes = serde_json::to_vec(&launch).map_err(std::io::Error::other)?;
        let sent =
            channel.write_all(&bytes).and_then(|()| channel.shutdown(std::net::Shutdown::Write));
        if let Err(e) = sent {
            kill_group(child.id());
            self.send(PoolTask::Reap(Used { child, cgroup, channel }));
            return Err(e);
        }
        let cap = self.spec.limits.output_cap;
        let (outcome, unreaped) =
            finish(child, output, Some(&mut channel), job.timeout, cancel, cap)?;
        match unreaped {
            // Reported before bubblewrap ended: its launcher waits for the pool to hang up.
            Some(child) => self.send(PoolTask::Reap(Used { child, cgroup, channel })),
            None => drop(cgroup),
        }
        Ok(outcome)
    }
}

/// What the pool's thread does.
enum PoolTask {
    /// End the used sandboxes and start the next one (unless one is waiting), after
    /// [`REFILL_DELAY`].
    Refill,
    /// A used sandbox, to end at the next refill.
    Reap(Used),
}

/// A sandbox whose job has reported.
struct Used {
    child: std::process::Child,
    cgroup: Option<PidsCgroup>,
    /// Its launcher waits for this to close before it ends.
    channel: std::os::unix::net::UnixStream,
}

impl Used {
    /// Hangs up on its launcher, waits for the sandbox to end, and removes its cgroup.
    fn end(self) {
        let Self { child, cgroup, channel } = self;
        drop(channel);
        reap(child);
        drop(cgroup);
    }
}

/// Waits for a used sandbox to end. The sandbox ends with its launcher, which ends when the
/// pool hangs up; one still running after [`OUTPUT_GRACE`] (a job that reported for its
/// launcher) is ended.
fn reap(mut child: std::process::Child) {
    let deadline = Instant::now() + OUTPUT_GRACE;
    loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                kill_group(child.id());
                let _ = child.wait();
                return;
            }
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

fn lock_slot(slot: &std::sync::Mutex<Option<Warm>>) -> std::sync::MutexGuard<'_, Option<Warm>> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
