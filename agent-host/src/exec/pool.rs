//! [`WarmPool`]: one bubblewrap sandbox started ahead of the next job, with a launcher (this
//! `agent-host` binary) waiting inside for what to run, used only while it still matches what a
//! sandbox started for the job would be. It must not decide what a sandbox shows: it asks
//! [`super::Scope`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// How long a sandbox started ahead may wait for its job: what it hid was hidden as things
/// were when it started, and a secret replaced on the machine since would show through it
/// (its identity is compared too, but a name can be replaced and replaced back).
pub(super) const WARM_MAX_AGE: Duration = Duration::from_secs(60);

/// How long the pool waits after a job before starting the next sandbox.
pub(super) const REFILL_DELAY: Duration = Duration::from_millis(10);

/// Where a warm sandbox's launcher (this `agent-host` binary) is bound inside it.
pub(super) const LAUNCHER_INSIDE: &str = "/tmp/.agent-host-launcher";

/// What a warm sandbox's launcher is told to run (as JSON on its channel). Nothing else: a
/// message from another version (one that still sent the places to hide here) is refused, and
/// its job not run.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Launch {
    argv: Vec<String>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
}

/// The most a launcher reads from its channel.
pub(super) const MAX_LAUNCH: u64 = 4 << 20;

/// The byte a launcher writes on its channel once it is running inside its sandbox.
pub(super) const LAUNCHER_READY: u8 = 0x06;

/// What starts a launcher's report of its job's exit code (then the code, 4 bytes big-endian).
pub(super) const LAUNCHER_REPORT: u8 = b'X';

/// The exit code a launcher reports when it cannot start the command.
pub(super) const CANNOT_LAUNCH: i32 = 125;

/// Where `program` is: itself if it names a path, else the first executable file of that name
/// in `path`'s directories (as `execvp` looks), else itself (for the error to name).
pub(super) fn find_program(program: &str, path: &str) -> PathBuf {
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
pub(super) fn parse_report(bytes: &[u8]) -> Option<i32> {
    match bytes {
        [LAUNCHER_REPORT, a, b, c, d, ..] => Some(i32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The launcher inside a warm sandbox (`agent-host __launch -- HIDDEN...`). First it keeps the
/// `hidden` places unreadable with Landlock too ([`crate::landlock_sandbox::hide_layer`]), on
/// itself and so on every command it starts: the ruleset is made while the sandbox waits, not
/// while a job does. Its standard input is its channel to the pool, a socket: it says it is
/// ready, reads what to run (to the end of what the pool sends), starts it with standard input
/// from `/dev/null`, standard output and error its own (the job's output pipe), in its
/// directory, with exactly its environment; waits for it and reports its exit code (128 + the
/// signal that killed it, as shells do) on the channel. The pool has its answer then, without
/// waiting for bubblewrap to end. The launcher (and with it the sandbox) ends when the pool
/// hangs up, which the pool does once the result is on its way: taking the sandbox down is
/// work for the CPU that can wait. If the places could not be hidden, the job is not run and
/// the report says it could not be launched. Returns the launcher's own exit code.
pub fn launch_in_sandbox(hidden: &[PathBuf]) -> u8 {
    use std::os::fd::AsFd as _;
    use std::os::unix::process::ExitStatusExt as _;
    // The second wall on the secrets, before anything of the job is read.
    let walled = if hidden.is_empty() {
        Ok(())
    } else {
        crate::landlock_sandbox::hide_layer(hidden).map(drop)
    };
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
    if let Err(e) = walled {
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
pub(super) struct Warm {
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
    pub(super) fn discard(mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// What every sandbox of a pool is made of.
#[derive(Debug, Clone)]
pub(super) struct PoolSpec {
    bwrap: PathBuf,
    launcher: PathBuf,
    scope: Scope,
    limits: Limits,
}

impl PoolSpec {
    pub(super) fn start(&self) -> std::io::Result<Warm> {
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
            ["/bin/sh", "-c", "exec >&3 2>&3 3>&- && exec \"$0\" __launch -- \"$@\""]
                .map(OsString::from),
        );
        argv.push(LAUNCHER_INSIDE.into());
        argv.extend(mounts.layer.iter().map(OsString::from));
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

    pub(super) fn send(&self, task: PoolTask) {
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

    pub(super) fn run_warm(
        &self,
        warm: Warm,
        job: &Job,
        cancel: &Arc<AtomicBool>,
    ) -> std::io::Result<Outcome> {
        use std::io::Write as _;
        let Warm { child, mut channel, output, cgroup, .. } = warm;
        let mut argv: Vec<String> = nproc_prefix(cgroup.as_ref(), &self.spec.limits)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.extend(job.argv.iter().cloned());
        let launch = Launch { argv, cwd: job.cwd.clone(), env: self.spec.scope.env(job) };
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
pub(super) enum PoolTask {
    /// End the used sandboxes and start the next one (unless one is waiting), after
    /// [`REFILL_DELAY`].
    Refill,
    /// A used sandbox, to end at the next refill.
    Reap(Used),
}

/// A sandbox whose job has reported.
pub(super) struct Used {
    child: std::process::Child,
    cgroup: Option<PidsCgroup>,
    /// Its launcher waits for this to close before it ends.
    channel: std::os::unix::net::UnixStream,
}

impl Used {
    /// Hangs up on its launcher, waits for the sandbox to end, and removes its cgroup.
    pub(super) fn end(self) {
        let Self { child, cgroup, channel } = self;
        drop(channel);
        reap(child);
        drop(cgroup);
    }
}

/// Waits for a used sandbox to end. The sandbox ends with its launcher, which ends when the
/// pool hangs up; one still running after [`OUTPUT_GRACE`] (a job that reported for its
/// launcher) is ended.
pub(super) fn reap(mut child: std::process::Child) {
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

pub(super) fn lock_slot(
    slot: &std::sync::Mutex<Option<Warm>>,
) -> std::sync::MutexGuard<'_, Option<Warm>> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
