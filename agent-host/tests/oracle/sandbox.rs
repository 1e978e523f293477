//! The sample world, and the runner: lines run in batches, one throwaway bubblewrap sandbox per
//! batch, each line under `strace -f` with its own trace, stdout and stderr.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system calls traced: everything that runs, opens, changes the filesystem or the system,
/// or talks to a socket.
pub(crate) const TRACED: &str = "execve,execveat,open,openat,openat2,creat,mkdir,mkdirat,\
    unlink,unlinkat,rmdir,rename,renameat,renameat2,link,linkat,symlink,symlinkat,chmod,fchmod,\
    fchmodat,chown,fchown,fchownat,lchown,truncate,ftruncate,utime,utimes,utimensat,futimesat,\
    mknod,mknodat,setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr,\
    settimeofday,clock_settime,sethostname,setdomainname,connect,bind,sendto,sendmsg,sendmmsg";

/// Lines per sandbox.
const BATCH: usize = 200;
/// Sandboxes at once.
const WORKERS: usize = 2;
/// Seconds a line may run before it is killed.
pub(crate) const LINE_TIMEOUT: u32 = 10;

/// A workspace, a home holding canary secrets, and a secret outside both, in one directory
/// that is mounted read-only into every sandbox at its own path.
pub(crate) struct World {
    _dir: tempfile::TempDir,
    /// The whole world (canonical).
    pub(crate) root: PathBuf,
    /// The workspace: the policy's root and every line's working directory.
    pub(crate) ws: PathBuf,
    /// HOME, for the policy and in the sandbox.
    pub(crate) home: PathBuf,
    /// The host's own state directory, protected by the policy.
    pub(crate) host_state: PathBuf,
    /// Canary files and directories: nothing may open anything under them.
    pub(crate) canaries: Vec<PathBuf>,
    /// The random token in each canary file.
    pub(crate) tokens: Vec<String>,
    /// The absolute path of the main canary, `home/.ssh/id_rsa`.
    pub(crate) id_rsa: PathBuf,
}

fn token() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

impl World {
    /// Builds the world; the workspace is a git repository with one commit.
    pub(crate) fn build() -> Self {
        let dir = tempfile::Builder::new().prefix("oracle-world").tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let ws = root.join("ws");
        let home = root.join("home");
        let host_state = root.join("host-state");
        std::fs::create_dir_all(&host_state).unwrap();

        let mut tokens = Vec::new();
        let mut canary = |path: &Path| {
            let t = token();
            write(path, &format!("canary {t}\n"));
            tokens.push(t);
        };
        let id_rsa = home.join(".ssh/id_rsa");
        canary(&id_rsa);
        canary(&home.join(".aws/credentials"));
        canary(&home.join(".netrc"));
        canary(&home.join(".config/gh/hosts.yml"));
        canary(&home.join(".gnupg/secring"));
        canary(&root.join("outside/secret.txt"));
        let canaries = [".ssh", ".aws", ".gnupg", ".config/gh", ".netrc"]
            .iter()
            .map(|p| home.join(p))
            .chain([root.join("outside")])
            .collect();

        let files: &[(&str, &str)] = &[
            (
                "README.md",
                "# sample\n\nA sample project.\n\nRun `cargo build`. a b c\nTODO: docs\n",
            ),
            ("src/main.rs", "fn main() {\n    println!(\"{}\", sample::greet(\"world\"));\n}\n"),
            (
                "src/lib.rs",
                "//! Sample.\n\n// TODO: handle errors\npub fn greet(name: &str) -> String {\n    \
                 format!(\"hello {name}\")\n}\n\nfn helper() {}\n",
            ),
            ("docs/guide.md", "# Guide\n\nStep one: read the README.\nStep two: a b.\n"),
            ("a.txt", "alpha\nbeta\ngamma\n"),
            ("b.txt", "alpha\nbeta\ndelta\n"),
            ("data.csv", "name,count\nalpha,1\nbeta,2\nalpha,3\ngamma,4\nbeta,5\n"),
            (".env", "API_KEY=workspace-not-secret\n"),
            ("sub/dir/file.txt", "nested a\n"),
            ("x.so", "not a library\n"),
            ("inj/a.txt", "a\n"),
            // Names that are options when a glob puts them on a command line.
            ("inj/-fk", "x\n"),
            ("inj/--files0-from=k", "x\n"),
            ("inj/--from-file=k", "x\n"),
            ("inj/-i", "x\n"),
        ];
        for (name, text) in files {
            write(&ws.join(name), text);
        }
        // Programs that would run from the workspace if a line let them.
        executable(&ws.join("x.sh"), "#!/bin/sh\ntouch pwned\n");
        executable(&ws.join("bin/ls"), "#!/bin/sh\ntouch pwned\n");
        executable(&ws.join("bin/cat"), "#!/bin/sh\ntouch pwned\n");
        // A compressed file: reading inside it makes some programs run a decompressor.
        let gz = Command::new("gzip").arg("-c").arg(ws.join("a.txt")).output();
        if let Some(gz) = gz.ok().filter(|o| o.status.success()) {
            std::fs::create_dir_all(ws.join("logs")).unwrap();
            std::fs::write(ws.join("logs/app.log.gz"), gz.stdout).unwrap();
        }
        symlink("../home/.ssh", &ws.join("link-out"));
        symlink("../home/.ssh/id_rsa", &ws.join("keylink"));
        symlink("../../home/.ssh/id_rsa", &ws.join("inj/k"));

        let git = |args: &[&str]| {
            let status = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(&ws)
                .env("HOME", &home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "init"]);

        Self { _dir: dir, root, ws, home, host_state, canaries, tokens, id_rsa }
    }
}

/// What one line left behind.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) trace: String,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// `timeout strace bash` exit status, as the driver saw it; `None` if the line never ran.
    pub(crate) status: Option<i32>,
    pub(crate) seconds: f64,
    /// Where stdout and stderr went, as the line saw them.
    pub(crate) outputs: Vec<PathBuf>,
}

impl Outcome {
    /// Killed by the timeout (`timeout -s KILL` exits 137).
    pub(crate) fn timed_out(&self) -> bool {
        self.status == Some(137)
    }
}

/// The sandbox's driver: reads NUL-separated lines and runs each under strace, killed with its
/// whole process group after `limit` seconds. strace keeps its `+++ exited` lines (quiet only
/// about attaching), so a trace cut short can be told from a finished one; `--seccomp-bpf`
/// stops only at the traced calls, which makes tracing about four times cheaper. The file-size
/// and memory limits keep a runaway line from filling the disk or the memory.
const DRIVER: &str = r#"
d=$1 traced=$2 limit=$3
ulimit -f 65536
ulimit -v 4194304
i=0
while IFS= read -r -d '' line; do
  s=$EPOCHREALTIME
  timeout -s KILL "$limit" \
    strace -f --quiet=attach,personality -y --seccomp-bpf -e trace="$traced" -o "$d/t.$i" \
    -- bash --noprofile --norc -c "$line" </dev/null >"$d/o.$i" 2>"$d/e.$i"
  rc=$?
  printf '%s %s %s %s\n' "$i" "$rc" "$s" "$EPOCHREALTIME" >>"$d/status"
  i=$((i+1))
done <"$d/lines"
"#;

fn bwrap(world: &World, traces: &Path) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    cmd.arg("--ro-bind").arg(&world.root).arg(&world.root);
    cmd.arg("--bind").arg(traces).arg(traces);
    cmd.args(["--unshare-all", "--die-with-parent", "--clearenv"]);
    cmd.args(["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]);
    cmd.arg("--setenv").arg("HOME").arg(&world.home);
    cmd.args(["--setenv", "LANG", "C.UTF-8"]);
    cmd.arg("--chdir").arg(&world.ws);
    cmd.stdin(Stdio::null());
    cmd
}

/// Whether lines can be run here; `Err` says why not.
pub(crate) fn probe(world: &World) -> Result<(), String> {
    for tool in ["bwrap", "strace"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!("{tool} is not installed"));
        }
    }
    let dir = tempfile::Builder::new().prefix("oracle-probe").tempdir().unwrap();
    let traces = dir.path().canonicalize().unwrap();
    let out = bwrap(world, &traces)
        .args(["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve", "-o"])
        .arg(traces.join("t"))
        .args(["--", "true"])
        .output()
        .map_err(|e| format!("bwrap did not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bwrap could not make its namespaces or strace could not trace in them: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs every line and hands each outcome, with the line's index, to `judge` (on the worker
/// thread, so traces need not all be held at once). Results come back in line order.
pub(crate) fn run<R: Send>(
    world: &World,
    lines: &[&str],
    judge: impl Fn(usize, Outcome) -> R + Sync,
) -> Vec<R> {
    for line in lines {
        assert!(!line.contains('\0'), "a command line cannot hold NUL: {line:?}");
    }
    let dir = tempfile::Builder::new().prefix("oracle-traces").tempdir().unwrap();
    let traces = dir.path().canonicalize().unwrap();
    let batches: Vec<&[&str]> = lines.chunks(BATCH).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..lines.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    let Some(batch) = batches.get(b) else { break };
                    let bdir = traces.join(format!("b{b}"));
                    std::fs::create_dir(&bdir).unwrap();
                    let outcomes = run_batch(world, &bdir, batch);
                    let judged: Vec<(usize, R)> = outcomes
                        .into_iter()
                        .enumerate()
                        .map(|(i, o)| (b * BATCH + i, judge(b * BATCH + i, o)))
                        .collect();
                    std::fs::remove_dir_all(&bdir).unwrap();
                    let mut results = results.lock().unwrap();
                    for (i, r) in judged {
                        results[i] = Some(r);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(Option::unwrap).collect()
}

fn run_batch(world: &World, dir: &Path, lines: &[&str]) -> Vec<Outcome> {
    let mut list = Vec::new();
    for line in lines {
        list.extend_from_slice(line.as_bytes());
        list.push(0);
    }
    std::fs::write(dir.join("lines"), list).unwrap();
    let out = bwrap(world, dir)
        .args(["bash", "--noprofile", "--norc", "-c", DRIVER, "driver"])
        .arg(dir)
        .arg(TRACED)
        .arg(LINE_TIMEOUT.to_string())
        .output()
        .unwrap();
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let mut ran: Vec<Option<(i32, f64)>> = vec![None; lines.len()];
    for row in status.lines() {
        let f: Vec<&str> = row.split(' ').collect();
        if let [i, rc, start, end] = f[..] {
            let (Ok(i), Ok(rc)) = (i.parse::<usize>(), rc.parse::<i32>()) else { continue };
            let secs = end.parse::<f64>().unwrap_or(0.0) - start.parse::<f64>().unwrap_or(0.0);
            if let Some(slot) = ran.get_mut(i) {
                *slot = Some((rc, secs));
            }
        }
    }
    if ran.iter().any(Option::is_none) {
        eprintln!(
            "a sandbox stopped early ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    ran.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let Some((rc, seconds)) = r else { return Outcome::default() };
            let read = |p: &str| std::fs::read(dir.join(format!("{p}.{i}"))).unwrap_or_default();
            Outcome {
                trace: String::from_utf8_lossy(&read("t")).into_owned(),
                stdout: read("o"),
                stderr: read("e"),
                status: Some(rc),
                seconds,
                outputs: vec![dir.join(format!("o.{i}")), dir.join(format!("e.{i}"))],
            }
        })
        .collect()
}
