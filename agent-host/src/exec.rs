//! The executor: runs one command that policy (or a person) allowed, inside the workspace,
//! under an operating-system sandbox, with a timeout, an output cap and a process limit.
//!
//! The sandbox is bubblewrap: the whole filesystem read-only, the workspace roots writable, a
//! private `/tmp`, fresh `/dev` and `/proc`, every namespace unshared (so no network unless the
//! request allows it, and a pid namespace whose processes all die with the sandbox), the host's
//! own config and state directories hidden under empty tmpfs mounts, and a clean environment.
//! Where bubblewrap cannot run, [`Sandbox::detect`] says why, and commands run only after an
//! explicit, local opt-in ([`Sandbox::Unsandboxed`]), which `agent-host doctor` states loudly.
//!
//! The process limit uses a pids cgroup when one can be created (cgroup v2 with delegation, or
//! v1's pids hierarchy), joined before bubblewrap starts; otherwise `prlimit --nproc` inside
//! the sandbox (which the kernel does not apply to root).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
                "bubblewrap ({}): read-only system, writable workspace (but .git/hooks and .git/config), private /tmp, no network unless allowed, host state hidden",
                p.display()
            ),
            Self::Landlock(_) => "Landlock + seccomp: system read-only, host state unreadable, writable workspace and private temp directory, no network unless allowed (no pid or mount namespace; .git/hooks and .git/config are protected by policy only)".into(),
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

/// The paths inside the workspace roots that a job may never write, whatever policy allowed:
/// git's hooks and config (writing them is running code later, outside any sandbox). Only
/// those that exist when the job starts.
pub fn protected_in(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .flat_map(|root| [root.join(".git/hooks"), root.join(".git/config")])
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
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

/// The environment every job starts from.
fn clean_env(job: &Job) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    env.insert("HOME".into(), job.cwd.display().to_string());
    env.insert("TMPDIR".into(), "/tmp".into());
    env.insert("LANG".into(), std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()));
    env.insert("TERM".into(), "dumb".into());
    env.extend(job.env.clone());
    env
}

/// The `prlimit` prefix that limits processes where no cgroup does (see the module notes).
fn nproc_prefix(cgroup: Option<&PidsCgroup>, limits: &Limits) -> Vec<OsString> {
    if cgroup.is_none() && !rustix::process::getuid().is_root() {
        vec!["prlimit".into(), format!("--nproc={}", limits.max_processes).into(), "--".into()]
    } else {
        Vec::new()
    }
}

/// bubblewrap's arguments up to `--`: the mounts (`protected` read-only inside the writable
/// `roots`, `hidden` under empty tmpfs mounts), the namespaces, the working directory, and a
/// clean environment holding `env` only.
fn bwrap_args(
    bwrap: &Path,
    network: bool,
    roots: &[PathBuf],
    protected: &[PathBuf],
    hidden: &[PathBuf],
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Vec<OsString> {
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
    for root in roots {
        argv.extend(["--bind".into(), root.into(), root.into()]);
    }
    // Protected paths stay read-only even inside a writable root.
    for path in protected {
        argv.extend(["--ro-bind".into(), path.into(), path.into()]);
    }
    for dir in hidden {
        argv.extend(["--tmpfs".into(), dir.into()]);
    }
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

/// Runs `job` under `sandbox`. `roots` are made writable; `hidden` (the host's own directories)
/// are hidden. `cancel` kills the job when set.
pub fn run(
    sandbox: &Sandbox,
    job: &Job,
    roots: &[PathBuf],
    hidden: &[PathBuf],
    limits: &Limits,
    cancel: &Arc<AtomicBool>,
) -> std::io::Result<Outcome> {
    if job.argv.is_empty() {
        return Err(std::io::Error::other("empty command"));
    }
    let cgroup = PidsCgroup::create(limits.max_processes);
    // Outside bubblewrap, the job gets a private temporary directory of its own.
    let private_tmp = match sandbox {
        Sandbox::Bubblewrap(_) => None,
        _ => Some(tempdir_for_job()?),
    };
    let mut env = clean_env(job);
    if let Some(tmp) = &private_tmp {
        env.insert("TMPDIR".into(), tmp.path.display().to_string());
    }
    let mut argv: Vec<OsString> = Vec::new();
    match sandbox {
        Sandbox::Bubblewrap(bwrap) => {
            let hidden: Vec<PathBuf> = hidden.iter().filter(|d| d.exists()).cloned().collect();
            argv = bwrap_args(
                bwrap,
                job.network,
                roots,
                &protected_in(roots),
                &hidden,
                &job.cwd,
                &env,
            );
        }
        Sandbox::Landlock(helper) => {
            argv.extend([helper.into(), "__sandbox".into()]);
            for root in roots.iter().chain(private_tmp.as_ref().map(|t| &t.path)) {
                argv.extend(["--write".into(), root.into()]);
            }
            for dir in hidden {
                argv.extend(["--hide".into(), dir.into()]);
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
    let outcome = finish(child, reader, job.timeout, cancel, limits.output_cap);
    drop(cgroup);
    drop(private_tmp);
    outcome
}

/// Waits for a started job: its output collected up to `cap`, killed at `timeout` or when
/// `cancel` is set.
fn finish(
    mut child: std::process::Child,
    reader: std::io::PipeReader,
    timeout: Duration,
    cancel: &Arc<AtomicBool>,
    cap: usize,
) -> std::io::Result<Outcome> {
    let (collected_tx, collected) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let _ = collected_tx.send(collect(reader, cap));
    });

    // This thread waits for the command (no polling, so a quick command returns at once); a
    // watchdog kills its process group at the timeout or on cancellation.
    let deadline = Instant::now() + timeout;
    let (exited_tx, exited) = std::sync::mpsc::channel::<()>();
    let (pid, cancel_flag) = (child.id(), cancel.clone());
    let watchdog = std::thread::spawn(move || {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match exited.recv_timeout(left.min(Duration::from_millis(20))) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // Exited (or the waiting side is gone): nothing to kill.
                _ => return (false, false),
            }
            let cancelled = cancel_flag.load(Ordering::Relaxed);
            if cancelled || Instant::now() >= deadline {
                kill_group(pid);
                return (!cancelled, cancelled);
            }
        }
    });
    let status = child.wait();
    let _ = exited_tx.send(());
    let (timed_out, cancelled) = watchdog.join().unwrap_or((false, false));
    let status = status?;
    // In the sandbox every process dies with it. Without one, a background process can outlive
    // the command and hold the pipe open: while it does, the group id is still its own, so
    // killing the group cannot hit anyone else.
    let collected = match collected.recv_timeout(Duration::from_millis(200)) {
        Ok(c) => c,
        Err(_) => {
            kill_group(pid);
            collected.recv().map_err(|_| std::io::Error::other("output reader panicked"))?
        }
    };
    let _ = collector.join();
    let (mut output, dropped) = collected;
    let truncated = dropped > 0;
    if truncated {
        output.extend_from_slice(
            format!("\n[output truncated: {dropped} more bytes not shown]\n").as_bytes(),
        );
    }
    Ok(Outcome { exit_code: status.code(), output, truncated, timed_out, cancelled })
}

fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Reads everything, keeping the first `cap` bytes; returns them and how many were dropped.
fn collect(mut reader: std::io::PipeReader, cap: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += (n - room) as u64;
            }
        }
    }
    (kept, dropped)
}
