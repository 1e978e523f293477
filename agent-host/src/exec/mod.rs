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
//!
//! Here: the job, the sandbox's kind, one run and its end. In `scope`: what a sandbox shows and
//! hides, and bubblewrap's arguments. In `cgroup`: the process limit. In `pool`: the sandbox
//! started ahead and its launcher.

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

mod cgroup;
mod pool;
mod scope;

pub use cgroup::process_limit_available;
use cgroup::{PidsCgroup, command_in, nproc_prefix};
use pool::{LAUNCHER_INSIDE, parse_report};
pub use pool::{WarmPool, launch_in_sandbox};
pub use scope::{
    AGENT_SETTINGS, GIT_REDIRECTS, PROTECTED, Protected, Scope, ensure_agent_settings_dir,
    git_redirects, hide_runtime_sockets, protected_in, remove_new_git_redirects,
};
use scope::{Mounts, bwrap_args, runtime_dirs, shared_tmp, tempdir_for_job};

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

fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
