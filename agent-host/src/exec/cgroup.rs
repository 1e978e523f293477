//! The process limit of a job: a pids cgroup when one can be made (cgroup v2 with delegation,
//! or v1's pids hierarchy), joined before bubblewrap starts; otherwise `prlimit --nproc` inside
//! the sandbox. It must not decide what a job sees: that is [`super::scope`]'s.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use super::Limits;

/// A pids cgroup for one job, removed when dropped.
#[derive(Debug)]
pub(super) struct PidsCgroup {
    pub(super) dir: PathBuf,
}

impl PidsCgroup {
    /// Creates a cgroup limited to `max` processes, if this machine lets us.
    pub(super) fn create(max: u32) -> Option<Self> {
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

    pub(super) fn procs(&self) -> PathBuf {
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
pub(super) fn pids_parents() -> Vec<PathBuf> {
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

/// Whether [`super::run`] can limit processes on this machine (for `doctor` and the tests).
pub fn process_limit_available() -> Option<&'static str> {
    if PidsCgroup::create(16).is_some() {
        Some("pids cgroup")
    } else if rustix::process::getuid().is_root() {
        None
    } else {
        Some("prlimit --nproc")
    }
}

/// The `prlimit` prefix that limits processes where no cgroup does (see the module notes).
pub(super) fn nproc_prefix(cgroup: Option<&PidsCgroup>, limits: &Limits) -> Vec<OsString> {
    if cgroup.is_none() && !rustix::process::getuid().is_root() {
        vec!["prlimit".into(), format!("--nproc={}", limits.max_processes).into(), "--".into()]
    } else {
        Vec::new()
    }
}

/// The command for `argv`, joining `cgroup` first when there is one.
pub(super) fn command_in(cgroup: Option<&PidsCgroup>, argv: &[OsString]) -> Command {
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
