//! Reading `strace -f -y` output and judging what a line did.
//!
//! A trace line is `PID name(args) = result`; a call that another process interrupted is split
//! into `PID name(args <unfinished ...>` and, later, `PID <... name resumed>rest) = result`,
//! which are joined per PID. With `-y`, descriptors carry the path they refer to (`3</a/b>`,
//! `AT_FDCWD</cwd>`), including a returned one (`= 3</a/b>`), with `<` and `>` in the path
//! escaped as octal, like any other byte strace does not print as itself.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// One system call, with its halves joined if strace split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) pid: u32,
    pub(crate) name: String,
    /// The top-level arguments as strace printed them.
    pub(crate) args: Vec<String>,
    pub(crate) ret: Ret,
    /// The whole call as one line, for reports.
    pub(crate) text: String,
}

/// A call's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ret {
    /// Success; `fd_path` is the path `-y` gave a returned descriptor.
    Ok { value: String, fd_path: Option<PathBuf> },
    /// Failure with this errno name (`ENOENT`).
    Err(String),
    /// `= ?`, or the call never returned (the process was killed inside it).
    Unknown,
}

impl Ret {
    fn attempted_exec(&self) -> bool {
        // A failed lookup ran nothing; any other outcome may have (or tried to) run the file.
        !matches!(self, Self::Err(e) if e == "ENOENT" || e == "ENOTDIR")
    }
}

/// Parses a whole trace file; lines that are not calls (signals, exits) are skipped.
pub(crate) fn parse(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<u32, String> = HashMap::new();
    for raw in text.lines() {
        let (pid, rest) = split_pid(raw.trim_end());
        if rest.starts_with("---") || rest.starts_with("+++") || rest.is_empty() {
            continue;
        }
        let joined = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some(at) = resumed.find(" resumed>") else { continue };
            let name = &resumed[..at];
            let tail = &resumed[at + " resumed>".len()..];
            let head = pending.remove(&pid).unwrap_or_else(|| format!("{name}("));
            // A call resumed only to be killed reads `<... x resumed> <unfinished ...>) = ?`.
            format!("{head}{}", tail.replacen(" <unfinished ...>", "", 1))
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, head.to_string());
            continue;
        } else {
            rest.to_string()
        };
        calls.extend(parse_call(pid, &joined));
    }
    // Calls that never returned (the process died inside them) still happened.
    let mut left: Vec<(u32, String)> = pending.into_iter().collect();
    left.sort();
    for (pid, head) in left {
        calls.extend(parse_call(pid, &format!("{head}) = ?")));
    }
    calls
}

fn split_pid(line: &str) -> (u32, &str) {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    match line[..digits].parse() {
        Ok(pid) => (pid, line[digits..].trim_start()),
        Err(_) => (0, line),
    }
}

fn parse_call(pid: u32, text: &str) -> Option<Call> {
    let open = text.find('(')?;
    let name = &text[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let (args, after) = split_args(&text[open + 1..]);
    let ret = parse_ret(after);
    Some(Call { pid, name: name.to_string(), args, ret, text: text.to_string() })
}

/// Splits `a, {b, c}, "d,e")` at top-level commas; returns the arguments and what follows the
/// closing parenthesis.
fn split_args(s: &str) -> (Vec<String>, &str) {
    let bytes = s.as_bytes();
    let mut args = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    let mut in_str = false;
    let mut in_deco = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            match b {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
        } else if in_deco {
            if b == b'>' {
                in_deco = false;
            }
        } else {
            match b {
                b'"' => in_str = true,
                b'<' if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') => {
                    in_deco = true;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' if depth == 0 => {
                    let last = s[start..i].trim();
                    if !last.is_empty() || !args.is_empty() {
                        args.push(last.to_string());
                    }
                    return (args, &s[i + 1..]);
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    args.push(s[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        args.push(last.to_string());
    }
    (args, "")
}

fn parse_ret(after: &str) -> Ret {
    let Some(r) = after.trim_start().strip_prefix("= ") else { return Ret::Unknown };
    if r.starts_with('?') {
        return Ret::Unknown;
    }
    if let Some(neg) = r.strip_prefix('-') {
        let errno = neg.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
        let errno = errno.split_whitespace().next().unwrap_or("");
        if errno.starts_with('E') {
            return Ret::Err(errno.to_string());
        }
    }
    let value: String = r.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    let fd_path = r[value.len()..].strip_prefix('<').and_then(|d| {
        let end = d.find('>')?;
        Some(PathBuf::from(OsString::from_vec(unescape(&d[..end]))))
    });
    Ret::Ok { value, fd_path }
}

/// Undoes strace's escapes (`\n`, `\"`, `\\`, octal `\33`, hex `\x1b`) into raw bytes.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'v' => out.push(0x0b),
            b'f' => out.push(0x0c),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'e' => out.push(0x1b),
            b'x' => {
                let hex: String = b[i..]
                    .iter()
                    .take(2)
                    .take_while(|c| c.is_ascii_hexdigit())
                    .map(|&c| c as char)
                    .collect();
                i += hex.len();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'x'));
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
            }
            other => out.push(other),
        }
    }
    out
}

/// The bytes of a quoted string argument (`"a\nb"` or `"abc"...`), if it is one.
pub(crate) fn string_arg(arg: &str) -> Option<PathBuf> {
    let inner = arg.strip_prefix('"')?;
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(PathBuf::from(OsString::from_vec(unescape(&inner[..i])))),
            _ => i += 1,
        }
    }
    None
}

/// The path `-y` attached to a descriptor argument (`AT_FDCWD</x>`, `3</x>`).
pub(crate) fn fd_arg(arg: &str) -> Option<PathBuf> {
    let start = arg.find('<')?;
    let end = arg.rfind('>')?;
    (end > start).then(|| PathBuf::from(OsString::from_vec(unescape(&arg[start + 1..end]))))
}

/// `a/./b/../c` to `a/c` without touching the filesystem.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The filesystem's view: symlinks of the longest existing prefix resolved.
fn physical(path: &Path) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let mut p = path.to_path_buf();
    loop {
        if let Ok(real) = p.canonicalize() {
            return Some(missing.iter().rev().fold(real, |acc: PathBuf, name| acc.join(name)));
        }
        missing.push(p.file_name()?.to_os_string());
        p = p.parent()?.to_path_buf();
    }
}

/// What kind of effect a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Ran a program the policy did not judge, or one from the sample world.
    Exec,
    /// Wrote, or tried to write, anything (the sandbox is read-only, so attempts fail).
    Write,
    /// Opened a canary secret, or printed its token.
    Canary,
    /// Reached for the network.
    Network,
    /// The harness could not observe the line (no trace, trace cut short).
    Unobserved,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exec => "exec",
            Self::Write => "write",
            Self::Canary => "canary",
            Self::Network => "network",
            Self::Unobserved => "unobserved",
        })
    }
}

/// One thing a line did that a read-only line must not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) kind: Kind,
    pub(crate) detail: String,
}

/// What the judge needs to know about the world.
pub(crate) struct Rules<'a> {
    /// The sample world: no program may run from inside it.
    pub(crate) world: &'a Path,
    /// Canary files and directories: nothing under them may be opened.
    pub(crate) canaries: &'a [PathBuf],
    /// Canary tokens: none may appear in a line's output.
    pub(crate) tokens: &'a [String],
}

/// What one line left behind.
pub(crate) struct Observed<'a> {
    pub(crate) calls: &'a [Call],
    /// Where the line's stdout and stderr went (writes there are its output, not effects).
    pub(crate) outputs: &'a [PathBuf],
    pub(crate) stdout: &'a [u8],
    pub(crate) stderr: &'a [u8],
}

/// Syscalls that change the filesystem or the system whatever their arguments.
const ALWAYS_WRITES: &str = "mkdir mkdirat unlink unlinkat rmdir rename renameat renameat2 link \
    linkat symlink symlinkat chmod fchmod fchmodat chown fchown fchownat lchown truncate ftruncate \
    utime utimes utimensat futimesat mknod mknodat setxattr lsetxattr fsetxattr removexattr \
    lremovexattr fremovexattr settimeofday clock_settime sethostname setdomainname";

/// glibc asks the name-service cache daemon before reading /etc/passwd (bash, ls, id do).
const NSCD: &[&str] = &["/var/run/nscd/socket", "/run/nscd/socket"];

const WRITE_FLAGS: &[&str] = &["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE"];

/// Everything a read-only line must not have done; empty when it behaved.
pub(crate) fn judge(programs: &[String], seen: &Observed<'_>, rules: &Rules<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut allowed: Vec<&str> =
        programs.iter().map(|p| p.rsplit('/').next().unwrap_or(p)).collect();
    allowed.push("bash");
    for (i, call) in seen.calls.iter().enumerate() {
        let name = call.name.as_str();
        match name {
            "execve" | "execveat" => exec(seen.calls, i, &allowed, rules, &mut out),
            "open" | "openat" | "openat2" | "creat" => open(call, seen.outputs, rules, &mut out),
            "connect" | "bind" | "sendto" | "sendmsg" | "sendmmsg" => network(call, &mut out),
            _ if ALWAYS_WRITES.split_whitespace().any(|w| w == name) => {
                out.push(Finding { kind: Kind::Write, detail: short(&call.text) });
            }
            _ => {}
        }
    }
    for (stream, bytes) in [("stdout", seen.stdout), ("stderr", seen.stderr)] {
        for token in rules.tokens {
            if contains(bytes, token.as_bytes()) {
                out.push(Finding {
                    kind: Kind::Canary,
                    detail: format!("a canary token appeared on {stream}"),
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|f| seen.insert((f.kind, f.detail.clone())));
    out
}

fn exec(calls: &[Call], i: usize, allowed: &[&str], rules: &Rules<'_>, out: &mut Vec<Finding>) {
    let call = &calls[i];
    let (base, path) = if call.name == "execveat" {
        (call.args.first().and_then(|a| fd_arg(a)), call.args.get(1).and_then(|a| string_arg(a)))
    } else {
        (None, call.args.first().and_then(|a| string_arg(a)))
    };
    let Some(path) = path else {
        out.push(Finding {
            kind: Kind::Exec,
            detail: format!("unreadable: {}", short(&call.text)),
        });
        return;
    };
    if !call.ret.attempted_exec() {
        return;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !allowed.contains(&name.as_str()) {
        out.push(Finding {
            kind: Kind::Exec,
            detail: format!("ran {} ({}), which the policy did not judge", name, path.display()),
        });
    }
    // A relative path is looked up from the working directory, which the same process shows
    // on its next (or, failing that, previous) `AT_FDCWD</cwd>` argument.
    let full = if path.is_absolute() {
        Some(path.clone())
    } else {
        let base = base.or_else(|| cwd_near(calls, i));
        base.map(|b| b.join(&path))
    };
    match full {
        Some(full) => {
            let inside = |p: &Path| p.starts_with(rules.world);
            if inside(&lexical(&full)) || physical(&full).is_some_and(|p| inside(&p)) {
                out.push(Finding {
                    kind: Kind::Exec,
                    detail: format!(
                        "ran a program from the sample world: {}",
                        lexical(&full).display()
                    ),
                });
            }
        }
        None => out.push(Finding {
            kind: Kind::Exec,
            detail: format!("ran {} from an unknown working directory", path.display()),
        }),
    }
}

fn cwd_near(calls: &[Call], i: usize) -> Option<PathBuf> {
    let pid = calls[i].pid;
    let cwd = |c: &Call| {
        let first = c.args.first()?;
        first.starts_with("AT_FDCWD<").then(|| fd_arg(first)).flatten()
    };
    let after = calls[i + 1..].iter().filter(|c| c.pid == pid).find_map(cwd);
    after.or_else(|| calls[..i].iter().rev().filter(|c| c.pid == pid).find_map(cwd))
}

fn open(call: &Call, outputs: &[PathBuf], rules: &Rules<'_>, out: &mut Vec<Finding>) {
    let (dir, path, flags) = match call.name.as_str() {
        "open" => (None, call.args.first(), call.args.get(1).map(String::as_str)),
        "creat" => (None, call.args.first(), Some("O_CREAT|O_WRONLY|O_TRUNC")),
        "openat2" => (
            call.args.first().and_then(|a| fd_arg(a)),
            call.args.get(1),
            call.args.get(2).and_then(|a| a.split("flags=").nth(1)),
        ),
        _ => (
            call.args.first().and_then(|a| fd_arg(a)),
            call.args.get(1),
            call.args.get(2).map(String::as_str),
        ),
    };
    let Some(path) = path.and_then(|p| string_arg(p)) else {
        out.push(Finding {
            kind: Kind::Write,
            detail: format!("unreadable: {}", short(&call.text)),
        });
        return;
    };
    let full = match (&dir, path.is_absolute()) {
        (Some(d), false) => lexical(&d.join(&path)),
        _ => lexical(&path),
    };
    let resolved = match &call.ret {
        Ret::Ok { fd_path, .. } => fd_path.clone(),
        _ => None,
    };
    if writes(flags.unwrap_or("")) {
        let harmless = ["/dev/null", "/dev/tty"].iter().any(|d| path == Path::new(d))
            || resolved
                .as_ref()
                .is_some_and(|r| r == Path::new("/dev/null") || outputs.contains(r));
        if !harmless {
            out.push(Finding { kind: Kind::Write, detail: short(&call.text) });
        }
    }
    let mut candidates = vec![full.clone()];
    candidates.extend(resolved);
    // O_NOFOLLOW opens a symlink itself (and fails), never what it points to.
    let nofollow = flags.is_some_and(|f| f.contains("O_NOFOLLOW"));
    let physical = match (nofollow, full.parent(), full.file_name()) {
        (true, Some(parent), Some(name)) => physical(parent).map(|p| p.join(name)),
        _ => physical(&full),
    };
    candidates.extend(physical);
    if candidates.iter().any(|c| rules.canaries.iter().any(|k| c.starts_with(k))) {
        out.push(Finding { kind: Kind::Canary, detail: format!("opened {}", short(&call.text)) });
    }
}

fn writes(flags: &str) -> bool {
    let flags = flags.split([',', '}', ' ']).next().unwrap_or("");
    flags.split('|').any(|f| {
        WRITE_FLAGS.contains(&f)
            || f.strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .is_some_and(|v| v & 0o3 != 0 || v & (0o100 | 0o1000 | 0o2000) != 0)
    })
}

fn network(call: &Call, out: &mut Vec<Finding>) {
    let text = call.args.join(", ");
    for family in text.split("sa_family=").skip(1) {
        let fam: String =
            family.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let bad = match fam.as_str() {
            "AF_INET" | "AF_INET6" => true,
            "AF_UNIX" => {
                let path = family.split("sun_path=").nth(1).and_then(string_arg);
                !path.is_some_and(|p| NSCD.iter().any(|n| p == Path::new(n)))
            }
            _ => false,
        };
        if bad {
            out.push(Finding { kind: Kind::Network, detail: short(&call.text) });
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn short(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `strace -f -qq -y --seccomp-bpf` inside the sandbox (paths shortened).
    const SAMPLE: &str = r#"7     execve("/usr/bin/bash", ["bash", "--noprofile", "--norc", "-c", "ls /; cat /etc/hostname > /tmp/o"...], 0x7ffe868b8088 /* 4 vars */) = 0
7     openat(AT_FDCWD</w/ws>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>
7     openat(AT_FDCWD</w/ws>, "/dev/tty", O_RDWR|O_NONBLOCK) = -1 ENXIO (No such device or address)
7     connect(3<socket:[27735]>, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT (No such file or directory)
8     execve("/usr/bin/ls", ["ls", "/"], 0x555635591570 /* 4 vars */) = 0
8     openat(AT_FDCWD</w/ws>, "/", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 3</>
7     --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=8, si_uid=0, si_status=0, si_utime=0, si_stime=0} ---
9     openat(AT_FDCWD</w/ws>, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</tmp/x>
9     execve("/usr/bin/cat", ["cat", "/etc/hostname"], 0x555635594110 /* 4 vars */) = 0
9     +++ exited with 0 +++
"#;

    #[test]
    fn parses_calls_and_skips_signals() {
        let calls = parse(SAMPLE);
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["execve", "openat", "openat", "connect", "execve", "openat", "openat", "execve"]
        );
        assert_eq!(calls[0].pid, 7);
        assert_eq!(string_arg(&calls[0].args[0]), Some(PathBuf::from("/usr/bin/bash")));
        assert_eq!(calls[1].args.len(), 3);
        assert_eq!(fd_arg(&calls[1].args[0]), Some(PathBuf::from("/w/ws")));
        assert_eq!(
            calls[1].ret,
            Ret::Ok { value: "3".into(), fd_path: Some(PathBuf::from("/etc/ld.so.cache")) }
        );
        assert_eq!(calls[2].ret, Ret::Err("ENXIO".into()));
        assert_eq!(calls[3].args.len(), 3);
        assert_eq!(calls[4].ret, Ret::Ok { value: "0".into(), fd_path: None });
        assert_eq!(calls[5].ret, Ret::Ok { value: "3".into(), fd_path: Some(PathBuf::from("/")) });
    }

    #[test]
    fn joins_unfinished_and_resumed_per_pid() {
        let text = "\
12 openat(AT_FDCWD</w>, \"a, b)\", O_RDONLY <unfinished ...>
13 execve(\"/usr/bin/sh\", [\"sh\"], 0x1 /* 2 vars */ <unfinished ...>
12 <... openat resumed>) = 4</w/a, b)>
13 <... execve resumed>) = 0
14 wait4(-1,  <unfinished ...>
15 openat(AT_FDCWD</w>, \"x\", O_WRONLY|O_CREAT <unfinished ...>
14 <... wait4 resumed> <unfinished ...>) = ?
";
        let calls = parse(text);
        assert_eq!(calls.len(), 4, "{calls:#?}");
        assert_eq!(calls[0].pid, 12);
        assert_eq!(calls[0].args.len(), 3);
        assert_eq!(string_arg(&calls[0].args[1]), Some(PathBuf::from("a, b)")));
        assert_eq!(
            calls[0].ret,
            Ret::Ok { value: "4".into(), fd_path: Some(PathBuf::from("/w/a, b)")) }
        );
        assert_eq!(calls[1].name, "execve");
        assert_eq!(calls[1].ret, Ret::Ok { value: "0".into(), fd_path: None });
        assert_eq!(calls[2].name, "wait4");
        assert_eq!(calls[2].ret, Ret::Unknown);
        // Never resumed: the process died inside it; it still counts.
        assert_eq!(calls[3].name, "openat");
        assert_eq!(calls[3].ret, Ret::Unknown);
        assert_eq!(calls[3].args[2], "O_WRONLY|O_CREAT");
    }

    #[test]
    fn unescapes_strings_and_decorations() {
        let line = r#"14303 openat(AT_FDCWD</w/ws/we\74i\76rd dir>, "a\nb\"c\\d\33\303\251", O_RDONLY) = 3</w/ws/we\74i\76rd dir/a\nb"c\\d\33\303\251>"#;
        let calls = parse(line);
        assert_eq!(fd_arg(&calls[0].args[0]), Some(PathBuf::from("/w/ws/we<i>rd dir")));
        let expected = OsString::from_vec(b"a\nb\"c\\d\x1b\xc3\xa9".to_vec());
        assert_eq!(string_arg(&calls[0].args[1]), Some(PathBuf::from(expected)));
        assert_eq!(unescape(r"\x41\101\0"), b"AA\0");
    }

    fn judged(text: &str, programs: &[&str]) -> Vec<Kind> {
        let calls = parse(text);
        let canaries = [PathBuf::from("/w/home/.ssh"), PathBuf::from("/w/outside")];
        let tokens = ["c0ffee".to_string()];
        let rules = Rules { world: Path::new("/w"), canaries: &canaries, tokens: &tokens };
        let outputs = [PathBuf::from("/t/o.1"), PathBuf::from("/t/e.1")];
        let seen = Observed { calls: &calls, outputs: &outputs, stdout: b"", stderr: b"" };
        let programs: Vec<String> = programs.iter().map(ToString::to_string).collect();
        judge(&programs, &seen, &rules).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn judges_the_sample() {
        // `ls` and `cat` were judged; the write to /tmp/x is flagged, /dev/tty and nscd are not.
        assert_eq!(judged(SAMPLE, &["ls", "cat"]), [Kind::Write]);
        assert_eq!(judged(SAMPLE, &["ls"]), [Kind::Write, Kind::Exec]);
    }

    #[test]
    fn judges_each_kind() {
        let exec_sh = r#"5 execve("/bin/sh", ["sh", "-c", "touch x"], 0x1 /* 3 vars */) = 0"#;
        assert_eq!(judged(exec_sh, &["sed"]), [Kind::Exec]);
        let missing = r#"5 execve("/usr/local/bin/sh", ["sh"], 0x1 /* 3 vars */) = -1 ENOENT (No such file or directory)"#;
        assert_eq!(judged(missing, &["sed"]), []);
        let world_prog = "5 execve(\"bin/ls\", [\"ls\"], 0x1 /* 3 vars */) = 0\n\
            5 openat(AT_FDCWD</w/ws>, \"/etc/ld.so.cache\", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>";
        assert_eq!(judged(world_prog, &["ls"]), [Kind::Exec]);
        let rofs = r#"5 openat(AT_FDCWD</w/ws>, "out.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = -1 EROFS (Read-only file system)"#;
        assert_eq!(judged(rofs, &[]), [Kind::Write]);
        let null = r#"5 openat(AT_FDCWD</w/ws>, "/dev/null", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</dev/null>"#;
        assert_eq!(judged(null, &[]), []);
        let stdout = r#"5 openat(AT_FDCWD</w/ws>, "/dev/stdout", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</t/o.1>"#;
        assert_eq!(judged(stdout, &[]), []);
        let unlink = r#"5 unlinkat(AT_FDCWD</w/ws>, "a", 0) = -1 EROFS (Read-only file system)"#;
        assert_eq!(judged(unlink, &[]), [Kind::Write]);
        let o2 = r#"5 openat2(AT_FDCWD</w/ws>, "a", {flags=O_RDWR|O_CLOEXEC, resolve=0, mode=0}, 24) = -1 EROFS (Read-only file system)"#;
        assert_eq!(judged(o2, &[]), [Kind::Write]);
        let creat = r#"5 creat("/tmp/x", 0644) = 3</tmp/x>"#;
        assert_eq!(judged(creat, &[]), [Kind::Write]);
        let canary = r#"5 openat(AT_FDCWD</w/ws>, "../home/.ssh/id_rsa", O_RDONLY) = 3</w/home/.ssh/id_rsa>"#;
        assert_eq!(judged(canary, &[]), [Kind::Canary]);
        let via_link = r#"5 openat(AT_FDCWD</w/ws>, "keylink", O_RDONLY) = 3</w/home/.ssh/id_rsa>"#;
        assert_eq!(judged(via_link, &[]), [Kind::Canary]);
        let nofollow = r#"5 openat(4</w/ws>, "keylink", O_RDONLY|O_NOFOLLOW) = -1 ELOOP (Too many levels of symbolic links)"#;
        assert_eq!(judged(nofollow, &[]), []);
        let failed =
            r#"5 openat(3</w/outside>, "nope", O_RDONLY) = -1 ENOENT (No such file or directory)"#;
        assert_eq!(judged(failed, &[]), [Kind::Canary]);
        let inet = r#"5 connect(3<socket:[1]>, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("127.0.0.1")}, 16) = -1 ENETUNREACH (Network is unreachable)"#;
        assert_eq!(judged(inet, &[]), [Kind::Network]);
        let unix = r#"5 connect(3<socket:[1]>, {sa_family=AF_UNIX, sun_path="/run/dbus/system_bus_socket"}, 110) = -1 ENOENT (No such file or directory)"#;
        assert_eq!(judged(unix, &[]), [Kind::Network]);
        let netlink = r#"5 sendto(3<socket:[1]>, [{nlmsg_len=20}], 20, 0, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 20"#;
        assert_eq!(judged(netlink, &[]), []);
        let egrep = r#"5 execve("/usr/bin/grep", ["grep", "-E", "x"], 0x1 /* 3 vars */) = 0"#;
        assert_eq!(judged(egrep, &["egrep"]), [Kind::Exec], "egrep runs grep: the policy says so");
        assert_eq!(judged(egrep, &["egrep", "grep"]), []);
    }

    #[test]
    fn finds_the_token_in_output() {
        let canaries = [];
        let tokens = ["c0ffee".to_string()];
        let rules = Rules { world: Path::new("/w"), canaries: &canaries, tokens: &tokens };
        let seen = Observed { calls: &[], outputs: &[], stdout: b"x c0ffee y", stderr: b"" };
        let found = judge(&[], &seen, &rules);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Canary);
    }
}
