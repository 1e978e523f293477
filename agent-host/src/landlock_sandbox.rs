//! The fallback sandbox where bubblewrap cannot run: Landlock for the filesystem, seccomp for
//! the network.
//!
//! `agent-host` re-runs itself as a helper (`agent-host __sandbox …`, hidden from `--help`)
//! that restricts itself and then `exec`s the command, so no `unsafe` `pre_exec` is needed:
//! - Landlock: read and execute everywhere except the hidden directories (the host's own
//!   config and state), write only in the workspace roots, the job's private temporary
//!   directory and `/dev/null`-like devices; TCP bind and connect refused when the network is
//!   off. The ruleset must be fully enforced, or the helper refuses to run anything.
//! - seccomp: `socket()` for unix sockets always (Landlock does not keep a path's socket from
//!   `connect()`, and the host's owner socket, a session bus or an agent's socket would be in
//!   reach; `socketpair()` still works), without network for IPv4, IPv6 and netlink, and
//!   `io_uring_setup` always (it opens and connects sockets on its own), fail with `EACCES`.
//!
//! Landlock grants by allow-list, so "everything but X" is spelt as the siblings of X and of each
//! of its ancestors ([`readable_roots`]). Its rights are inherited by every descendant, so a
//! writable workspace cannot keep `.git/hooks` and `.git/config` read-only here as bubblewrap's
//! read-only mounts do: under this fallback they are protected by policy alone (it always asks).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible as _, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _, RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The Landlock ABI whose features are required: filesystem rights including truncate and
/// ioctl on devices, and TCP.
const REQUIRED: ABI = ABI::V5;

/// What the helper is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct HelperArgs {
    /// A directory the command may write (repeatable).
    #[arg(long = "write", value_name = "DIR")]
    pub write: Vec<PathBuf>,
    /// A directory the command may not even read (repeatable).
    #[arg(long = "hide", value_name = "DIR")]
    pub hide: Vec<PathBuf>,
    /// The user's home, hidden but for the `--show` places.
    #[arg(long = "home", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A place in the hidden home the command may read all the same, but for the hidden
    /// places inside it (repeatable).
    #[arg(long = "show", value_name = "PATH")]
    pub show: Vec<PathBuf>,
    /// Leave the network on.
    #[arg(long)]
    pub network: bool,
    /// Inside bubblewrap, which has made its mounts: only keep the `--hide` places unreadable
    /// ([`hide_layer`]), and run the command even where Landlock is missing.
    #[arg(long)]
    pub layer: bool,
    /// The command.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Why the sandbox was not set up, or its command not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The sandbox could not be set up: nothing ran.
    #[error("the Landlock sandbox could not be set up; nothing was run: {0}")]
    NotSetUp(Box<Self>),
    /// Landlock refused the ruleset.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The seccomp filter could not be made.
    #[error("seccomp: {0}")]
    Filter(#[from] seccompiler::BackendError),
    /// The seccomp filter could not be applied.
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// A hidden place lies in a writable one: Landlock cannot keep it hidden.
    #[error("{} would be writable (it lies in {}), which Landlock cannot keep hidden", hidden.display(), writable.display())]
    HiddenInWritable {
        /// The hidden place.
        hidden: PathBuf,
        /// The writable place it lies in.
        writable: PathBuf,
    },
    /// This kernel enforces Landlock only in part.
    #[error("Landlock is not fully enforced here ({0:?})")]
    NotEnforced(RulesetStatus),
    /// No command was given.
    #[error("no command")]
    NoCommand,
    /// The command could not be run.
    #[error("cannot run {program}: {error}")]
    Exec {
        /// The program.
        program: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// Restricts this process as asked, then becomes the command. Returns only on failure.
pub fn run_helper(args: &HelperArgs) -> SandboxError {
    if let Err(e) = restrict(args) {
        return SandboxError::NotSetUp(Box::new(e));
    }
    let Some((program, rest)) = args.argv.split_first() else {
        return SandboxError::NoCommand;
    };
    let error = std::process::Command::new(program).args(rest).exec();
    SandboxError::Exec { program: program.clone(), error }
}

/// `agent-host __scope -- ARGV` (inside a jail): keeps the command and everything it starts
/// from abstract unix sockets made outside (Landlock's scoping, Linux 6.12 and later), then
/// becomes the command. Where the kernel cannot, it says so once and runs the command all the
/// same (the jail's other walls stand). Returns only on failure.
pub fn scope_then_run(argv: &[String]) -> SandboxError {
    let scoped = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::AbstractUnixSocket)
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match scoped {
        Ok(status) if status.ruleset == RulesetStatus::FullyEnforced => {}
        _ => eprintln!(
            "agent-host: this kernel cannot keep the jail from abstract unix sockets (Landlock \
             ABI 6, Linux 6.12); the jail's other walls stand\r"
        ),
    }
    let Some((program, rest)) = argv.split_first() else {
        return SandboxError::NoCommand;
    };
    let error = std::process::Command::new(program).args(rest).exec();
    SandboxError::Exec { program: program.clone(), error }
}

/// What the layer handles ([`hide_layer`]).
const LAYER_RIGHTS: landlock::BitFlags<AccessFs> =
    landlock::make_bitflags!(AccessFs::{ReadFile | ReadDir | Refer});

/// Whether this kernel can hold [`hide_layer`] (Landlock with the "refer" right, Linux 5.19):
/// asked without restricting anything.
pub fn layer_available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(LAYER_RIGHTS)
        .and_then(|r| r.create())
        .is_ok()
}

/// A second wall inside a bubblewrap sandbox: the `hidden` places (the user's secrets, which
/// bubblewrap hid by mounting over them) stay unreadable by what they are, not only by the mount
/// that lies on their name. A mount is dropped when its name is renamed over or removed on the
/// machine (a history saved, a login rewritten), and a secret made after the sandbox started was
/// never mounted over; Landlock's rules are on the hidden places' siblings, so neither is
/// readable through them. Only reading is handled here (bubblewrap's mounts say what is
/// writable), with moving files between directories (Landlock's "refer"), which a ruleset that
/// does not grant it forbids. Where the kernel has no Landlock, or one older than that right
/// (Linux 5.19), this wall is missing and the command runs with bubblewrap's alone; the result
/// says which.
pub fn hide_layer(hidden: &[PathBuf]) -> Result<RulesetStatus, SandboxError> {
    let rights = LAYER_RIGHTS;
    // A place that does not exist yet is kept too: its nearest existing ancestor is then listed
    // entry by entry, and what is made there later has no rule.
    let hidden: Vec<PathBuf> =
        hidden.iter().filter_map(|h| crate::userenv::resolve_place(h)).collect();
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(rights)
        .and_then(|r| r.create());
    let Ok(ruleset) = created else { return Ok(RulesetStatus::NotEnforced) };
    let status =
        ruleset.add_rules(path_beneath_rules(readable_roots(&hidden), rights))?.restrict_self()?;
    Ok(status.ruleset)
}

fn restrict(args: &HelperArgs) -> Result<(), SandboxError> {
    if args.layer {
        hide_layer(&args.hide)?;
        return Ok(());
    }
    let all = AccessFs::from_all(REQUIRED);
    let read = AccessFs::from_read(REQUIRED);
    let hidden: Vec<PathBuf> = args.hide.iter().filter_map(|h| h.canonicalize().ok()).collect();
    let home = args.home.as_ref().and_then(|h| h.canonicalize().ok());
    let shown: Vec<PathBuf> = match &home {
        Some(home) => {
            let shown: Vec<PathBuf> = args
                .show
                .iter()
                .filter_map(|s| s.canonicalize().ok())
                .filter(|s| s.starts_with(home))
                .collect();
            // Less what is hidden in them (or a place that lies in something hidden).
            except(&shown, &hidden)
        }
        None => Vec::new(),
    };
    let unreadable: Vec<PathBuf> = hidden.iter().cloned().chain(home).collect();
    // A rule grants everything below it: a hidden place inside a writable one cannot be kept
    // hidden, so nothing runs.
    let write: Vec<PathBuf> = args.write.iter().filter_map(|w| w.canonicalize().ok()).collect();
    if let Some((h, w)) =
        hidden.iter().find_map(|h| write.iter().find(|w| h.starts_with(w)).map(|w| (h, w)))
    {
        return Err(SandboxError::HiddenInWritable { hidden: h.clone(), writable: w.clone() });
    }
    let mut ruleset =
        Ruleset::default().set_compatibility(CompatLevel::HardRequirement).handle_access(all)?;
    if !args.network {
        ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
    }
    let devices =
        ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/urandom", "/dev/random"];
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(readable_roots(&unreadable), read))?
        .add_rules(path_beneath_rules(shown, read))?
        .add_rules(path_beneath_rules(&write, all))?
        .add_rules(path_beneath_rules(devices, AccessFs::from_all(REQUIRED) & !AccessFs::Execute))?
        .restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(SandboxError::NotEnforced(status.ruleset));
    }
    let filter: BpfProgram = socket_filter(args.network)?.try_into()?;
    seccompiler::apply_filter(&filter)?;
    Ok(())
}

fn socket_filter(network: bool) -> Result<SeccompFilter, SandboxError> {
    let family = |f: i32| -> Result<SeccompRule, SandboxError> {
        Ok(SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            f as u64,
        )?])?)
    };
    let mut rules = BTreeMap::new();
    let mut families = vec![family(libc::AF_UNIX)?];
    if !network {
        families.extend([
            family(libc::AF_INET)?,
            family(libc::AF_INET6)?,
            family(libc::AF_NETLINK)?,
        ]);
    }
    rules.insert(libc::SYS_socket, families);
    // io_uring opens and connects sockets without `socket()`.
    rules.insert(libc::SYS_io_uring_setup, Vec::new());
    Ok(SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        std::env::consts::ARCH.try_into()?,
    )?)
}

/// Directories (and files) to grant read access to so that everything is readable except the
/// `hidden` paths: `/` itself, or, where a hidden path lies below, the siblings along the way.
pub fn readable_roots(hidden: &[PathBuf]) -> Vec<PathBuf> {
    except(&[PathBuf::from("/")], hidden)
}

/// `roots`, less the `excluded` paths below them, spelt as the siblings along the way.
fn except(roots: &[PathBuf], excluded: &[PathBuf]) -> Vec<PathBuf> {
    let mut allowed = roots.to_vec();
    for h in excluded {
        let mut next = Vec::new();
        for p in allowed {
            if p.starts_with(h) {
                // Inside it (an earlier exclusion below it spelt it out): gone with it.
            } else if h.starts_with(&p) {
                expand(&p, h, &mut next);
            } else {
                next.push(p);
            }
        }
        allowed = next;
    }
    allowed
}

/// `dir`'s entries but `hidden` and its ancestors, whose own entries are looked at in turn.
/// Symbolic links are left out: a rule is made on what a path opens to, so a rule for a link
/// would grant its target, hidden or not (a link in the home to a secret, or into the host's
/// state); what a link leads to is granted, or not, where it lies.
fn expand(dir: &Path, hidden: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        let child = entry.path();
        if hidden.starts_with(&child) {
            if child != hidden {
                expand(&child, hidden, out);
            }
        } else {
            out.push(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_hidden_path_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        for d in ["a/secret/deep", "a/public", "b"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("a/file"), "x").unwrap();
        std::os::unix::fs::symlink(base.join("a/secret/deep"), base.join("a/link")).unwrap();
        let roots = readable_roots(&[base.join("a/secret")]);
        // A link's rule would be its target's.
        assert!(!roots.contains(&base.join("a/link")));
        // A path hidden after one below it was: nothing of it stays.
        let both = readable_roots(&[base.join("a/secret/deep"), base.join("a")]);
        assert!(!both.iter().any(|r| r.starts_with(base.join("a"))), "{both:?}");
        assert!(roots.contains(&base.join("a/public")));
        assert!(roots.contains(&base.join("a/file")));
        assert!(roots.contains(&base.join("b")));
        assert!(
            !roots
                .iter()
                .any(|r| r.starts_with(base.join("a/secret"))
                    || base.join("a/secret").starts_with(r))
        );
    }
}
