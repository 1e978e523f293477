//! What a sandbox shows a job and what it hides: the protected paths inside the workspace, the
//! runtime sockets, the host's own directories, the user's secrets and caches ([`Scope`],
//! `Mounts`), and bubblewrap's arguments that make it so. It must not start processes: the
//! executor and the pool do.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{Job, UserEnv};

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
pub(super) fn shared_tmp(keep: &[PathBuf]) -> Vec<PathBuf> {
    pub(super) fn walk(dir: &Path, keep: &[&PathBuf], out: &mut Vec<PathBuf>) {
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
pub(super) fn runtime_dirs() -> Vec<PathBuf> {
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
pub(super) struct JobTmp {
    pub(super) path: PathBuf,
}

impl Drop for JobTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub(super) fn tempdir_for_job() -> std::io::Result<JobTmp> {
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
    pub(super) fn env(&self, job: &Job) -> BTreeMap<String, String> {
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
    pub(super) fn mounts(&self) -> Mounts {
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

    pub(super) fn mounts_by_name(&self) -> Mounts {
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
        // Many secret places share their directories: each is looked at once.
        let mut resolver = crate::userenv::Resolver::default();
        let secrets: Vec<(PathBuf, bool)> = resolver
            .present(self.user.secrets.iter().cloned())
            .into_iter()
            .filter(|(p, _)| !in_private_tmp(p))
            .collect();
        let mut layer: Vec<PathBuf> = self
            .user
            .secrets
            .iter()
            .filter_map(|p| resolver.place(p))
            .filter(|p| !in_private_tmp(p) && !in_written(p))
            .collect();
        layer.sort();
        layer.dedup();
        let home_real = home.as_deref().and_then(|h| resolver.canonical(h));
        let listings = listings(&layer, home_real.as_deref());
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
            listings,
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

/// One directory the Landlock layer lists, and what it grants there: the entries (name and
/// inode) that are neither symbolic links nor a hidden place or on the way to one; `None` if
/// it cannot be read.
pub(super) type Listing = (PathBuf, Option<Vec<(OsString, u64)>>);

/// What the Landlock layer grants, entry by entry, in the directories above the hidden places
/// (`layer`) that lie in the `home` ([`crate::landlock_sandbox::readable_roots`]). The layer
/// of a sandbox started ahead lists them when it starts: a file made or replaced there since
/// has no rule and would read as denied, so the sandbox is used only while these are the same.
/// A hidden place saved anew (an agent's settings written to a new file and renamed) changes
/// nothing here (what the hidden places are is checked apart, by their identities). Directories outside the home are left out: what lies above it changes seldom,
/// and the sandbox's private `/tmp` and runtime directories are not what the layer lists.
pub(super) fn listings(layer: &[PathBuf], home: Option<&Path>) -> Vec<Listing> {
    use std::os::unix::fs::DirEntryExt as _;
    let Some(home) = home else { return Vec::new() };
    let mut listed: Vec<&Path> = layer
        .iter()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|dir| dir.starts_with(home))
        .collect();
    listed.sort();
    listed.dedup();
    listed
        .into_iter()
        .map(|dir| {
            let entries = std::fs::read_dir(dir).ok().map(|entries| {
                let mut granted: Vec<(OsString, u64)> = entries
                    .flatten()
                    .filter(|e| !e.file_type().is_ok_and(|t| t.is_symlink()))
                    .filter(|e| {
                        let path = e.path();
                        !layer.iter().any(|hidden| hidden.starts_with(&path))
                    })
                    .map(|e| (e.file_name(), e.ino()))
                    .collect();
                granted.sort();
                granted
            });
            (dir.to_path_buf(), entries)
        })
        .collect()
}

/// What a bubblewrap sandbox mounts besides the roots, found on disk when it starts: a sandbox
/// started ahead is used only while these are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mounts {
    /// Inside the roots.
    pub(super) protected: Protected,
    /// The host's directories that exist.
    pub(super) hidden: Vec<PathBuf>,
    /// The arguments that hide the user's runtime sockets.
    pub(super) runtime: Vec<OsString>,
    /// The user's home, bound read-only again over the private `/tmp` should it lie there.
    pub(super) home: Option<PathBuf>,
    /// With the home hidden: what of it is shown.
    pub(super) shown: Option<Vec<PathBuf>>,
    /// The user's secret places that exist, and whether each is a directory.
    pub(super) secrets: Vec<(PathBuf, bool)>,
    /// The places the Landlock layer keeps unreadable: the secret places, present or not,
    /// resolved ([`crate::userenv::resolve_place`]), but for those where jobs write or in the
    /// private `/tmp`.
    pub(super) layer: Vec<PathBuf>,
    /// What the layer grants in the directories of the home it lists ([`listings`]).
    pub(super) listings: Vec<Listing>,
    /// What the hidden directories, the secrets and the runtime sockets were (device and
    /// inode), in that order.
    pub(super) identities: Vec<(u64, u64)>,
    /// The jobs' cache.
    pub(super) cache: Option<PathBuf>,
    /// The user's places made writable.
    pub(super) writable: Vec<PathBuf>,
}

/// bubblewrap's arguments up to `--`: the mounts (the protected paths inside the writable
/// `roots`, the runtime sockets and the host's directories under empty tmpfs mounts, the
/// writable caches, the user's secrets hidden last), the namespaces, the working directory,
/// and a clean environment holding `env` only.
pub(super) fn bwrap_args(
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
