//! What the policy knows about particular programs: wrappers to look through, what is always
//! asked, and which arguments make a program run code it is given. (The read-only built-ins
//! are in `readonly`.)
//!
//! The lists of programs that can run other programs, reach the network or take dangerous
//! arguments come from GTFOBins and SonarSource's argument-injection vectors (see
//! `policy/data/README.md`); the per-program rules below are for the tools a coding agent uses
//! every day, where a blanket "exact rules only" would make broad rules useless.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::options::{self, Grammar, Val, flag, value as valued};
use super::shell::Word;

/// The program name of a word: its value's last path component (`/usr/bin/git` → `git`).
pub(crate) fn program(word: &Word) -> Option<&str> {
    let value = word.value.as_deref()?;
    Some(value.rsplit('/').next().unwrap_or(value))
}

pub(crate) fn value(word: &Word) -> &str {
    word.value.as_deref().unwrap_or("\u{0}dynamic")
}

/// What stripping the wrappers in front of a command found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wrapped {
    /// The index of the real command's first word.
    pub(crate) start: usize,
    /// The wrappers looked through, by name, outermost first.
    pub(crate) wrappers: Vec<String>,
    /// Variables set by `env NAME=VALUE` in front of the command.
    pub(crate) env: Vec<(String, Option<String>)>,
    /// The command's further arguments come from standard input (bare `xargs`).
    pub(crate) stdin_args: bool,
}

/// Wrappers a read-only built-in may be run through: they change how, never what, and write
/// nothing (`nohup` writes `nohup.out` when its output is a terminal; `xargs` takes arguments
/// from standard input).
pub(crate) const READ_ONLY_WRAPPERS: [&str; 7] =
    ["timeout", "nice", "command", "builtin", "env", "stdbuf", "time"];

const TIMEOUT: Grammar = Grammar::paths(&[
    valued("kill-after", 'k', Val::Text),
    valued("signal", 's', Val::Text),
    flag("preserve-status", '\0'),
    flag("foreground", '\0'),
    flag("verbose", 'v'),
]);
const NICE: Grammar =
    Grammar { numeric_option: true, ..Grammar::paths(&[valued("adjustment", 'n', Val::Text)]) };
const STDBUF: Grammar = Grammar::paths(&[
    valued("input", 'i', Val::Text),
    valued("output", 'o', Val::Text),
    valued("error", 'e', Val::Text),
]);
/// GNU `time` without `-o`/`-a` (they write a file).
const TIME: Grammar = Grammar::paths(&[
    flag("portability", 'p'),
    flag("verbose", 'v'),
    flag("quiet", 'q'),
    valued("format", 'f', Val::Text),
]);
const COMMAND: Grammar = Grammar::paths(&[flag("", 'p')]);
const NONE: Grammar = Grammar::paths(&[]);
/// `env` without `-C` (changes directory), `-S` (splits a string into a command line), `-0`
/// and the signal options.
const ENV: Grammar = Grammar::paths(&[
    flag("ignore-environment", 'i'),
    valued("unset", 'u', Val::Text),
    flag("debug", 'v'),
]);

/// Strips wrappers that only change how a command runs (`timeout 5`, `nice -n 2`, `env -u X`,
/// bare `xargs` …), each looked through only with options its own grammar knows, and returns
/// where the real command starts. A wrapper with an option it does not know, or with nothing to
/// wrap, is itself the command.
pub(crate) fn strip_wrappers(words: &[Word]) -> Wrapped {
    let mut out = Wrapped::default();
    let mut i = 0;
    loop {
        let Some(name) = words.get(i).and_then(program) else { return out };
        let Some(rest) =
            words[i + 1..].iter().map(|w| w.value.as_deref()).collect::<Option<Vec<_>>>()
        else {
            return out;
        };
        let (grammar, operands) = match name {
            "timeout" => (&TIMEOUT, 1),
            "nice" => (&NICE, 0),
            "stdbuf" => (&STDBUF, 0),
            "time" => (&TIME, 0),
            "command" => (&COMMAND, 0),
            "nohup" | "builtin" => (&NONE, 0),
            "env" => (&ENV, 0),
            // Only bare xargs is looked through; with flags it is its own program.
            "xargs" if rest.first().is_some_and(|w| !w.starts_with('-')) => {
                out.stdin_args = true;
                (&NONE, 0)
            }
            _ => return out,
        };
        let Ok((_, next)) = options::parse_prefix(grammar, &rest) else { return out };
        let mut j = i + 1 + next + operands;
        if name == "env" {
            // `env` with `-` alone empties the environment too; then NAME=VALUE words.
            if words.get(j).is_some_and(|w| value(w) == "-") {
                j += 1;
            }
            while let Some((n, v)) = words.get(j).and_then(|w| assignment(value(w))) {
                out.env.push((n.to_string(), Some(v.to_string())));
                j += 1;
            }
        }
        if j >= words.len() {
            // A wrapper with nothing to wrap is itself the command.
            return out;
        }
        out.wrappers.push(name.to_string());
        out.start = j;
        i = j;
    }
}

/// `NAME=VALUE` as `env` reads it.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some((name, value))
}

/// The environment variables a command may set without asking: they change no program's
/// behaviour in a way that runs other code or reads other files. The value must be static and
/// plain (letters, digits and `._,:=@+*-`): a path in `LANG` or `TZ` would make programs load
/// files from it. Anything else — `BASH_ENV`, `LD_PRELOAD`, `PATH`, `NODE_OPTIONS`,
/// `GIT_CONFIG_*`, `PAGER` … — asks.
pub(crate) fn harmless_env(name: &str, value: Option<&str>) -> bool {
    let listed = matches!(
        name,
        "NODE_ENV"
            | "RUST_LOG"
            | "RUST_BACKTRACE"
            | "CI"
            | "NO_COLOR"
            | "FORCE_COLOR"
            | "CLICOLOR"
            | "CLICOLOR_FORCE"
            | "TERM"
            | "LANG"
            | "LANGUAGE"
            | "TZ"
            | "DEBUG"
            | "VERBOSE"
            | "PYTHONUNBUFFERED"
            | "PYTHONDONTWRITEBYTECODE"
            | "CARGO_TERM_COLOR"
            | "COLUMNS"
            | "LINES"
    ) || name.starts_with("LC_");
    listed
        && value.is_some_and(|v| {
            v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._,:=@+*-".contains(&b))
        })
}

/// Whether a command changes the shell's directory when it succeeds: `cd`, `pushd` or `popd`,
/// run by the shell itself (see [`shell_builtin`]).
pub(crate) fn changes_dir(words: &[Word]) -> bool {
    shell_builtin(words)
        .is_some_and(|i| matches!(words[i].value.as_deref(), Some("cd" | "pushd" | "popd")))
}

/// Where the command the shell itself runs starts, past `builtin [--]` and `command [-p] [--]`
/// in front of it (a directory change or a builtin run that way is still the shell's own).
/// `None`: `command -v`/`-V` (which runs nothing), an option they do not take, a word that
/// expands, or nothing left.
pub(crate) fn shell_builtin(words: &[Word]) -> Option<usize> {
    let mut i = 0;
    loop {
        match words.get(i)?.value.as_deref()? {
            "builtin" | "command" => {
                let command = words[i].value.as_deref() == Some("command");
                i += 1;
                while let Some(v) = words.get(i).and_then(|w| w.value.as_deref()) {
                    match v {
                        "--" => {
                            i += 1;
                            break;
                        }
                        "-p" if command => i += 1,
                        _ if v.starts_with('-') => return None,
                        _ => break,
                    }
                }
            }
            _ => return Some(i),
        }
    }
}

/// Programs that are always asked, whatever the allow rules say.
pub(crate) fn always_asked(words: &[Word]) -> Option<String> {
    let name = program(words.first()?)?;
    match name {
        "watch" | "setsid" | "flock" | "sudo" | "doas" | "su" | "pkexec" | "eval" | "exec"
        | "source" | "." => return Some(format!("`{name}` is always asked")),
        "find" => {
            for w in &words[1..] {
                let v = value(w);
                if matches!(
                    v,
                    "-exec"
                        | "-execdir"
                        | "-ok"
                        | "-okdir"
                        | "-delete"
                        | "-fls"
                        | "-fprint"
                        | "-fprint0"
                        | "-fprintf"
                ) {
                    return Some(format!("`find {v}` is always asked"));
                }
            }
        }
        _ => {}
    }
    None
}

/// For `rm`/`rmdir`: the operands (paths to check against the critical list).
pub(crate) fn removal_targets(words: &[Word]) -> Option<&[Word]> {
    match program(words.first()?)? {
        "rm" | "rmdir" => Some(&words[1..]),
        _ => None,
    }
}

fn list(text: &'static str) -> HashSet<&'static str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// Whether a command is one that reaches the network by design: a network client (GTFOBins'
/// network list), a package manager, or git talking to a remote. The executor gives such a
/// command the network only when an explicit rule allowed it or a person approved it.
pub(crate) fn network_client(words: &[Word]) -> bool {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let clients = SET.get_or_init(|| list(include_str!("data/binaries_with_network.txt")));
    let Some(name) = words.first().and_then(program) else { return false };
    let sub = words.iter().skip(1).map(value).find(|v| !v.starts_with('-')).unwrap_or("");
    // `python3.11` and `python3` are `python` in the list.
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    clients.contains(name)
        || clients.contains(base)
        || matches!(
            name,
            "npm"
                | "pnpm"
                | "yarn"
                | "bun"
                | "npx"
                | "bunx"
                | "pip"
                | "pip3"
                | "uv"
                | "cargo"
                | "go"
                | "gem"
                | "bundle"
                | "composer"
        )
        || (name == "git"
            && matches!(sub, "clone" | "fetch" | "pull" | "push" | "ls-remote" | "submodule"))
}

/// Programs that can run other programs or code they are given, reach the network, or take
/// arguments that do either (GTFOBins, the argument-injection vectors, and interpreters).
fn exec_capable() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = list(include_str!("data/binaries_that_can_exec.txt"));
        set.extend(list(include_str!("data/binaries_with_network.txt")));
        set.extend(list(include_str!("data/argument_injection_binaries.txt")));
        set.extend(INTERPRETERS);
        set.extend(SHELLS);
        set.extend([
            "npx", "pnpm", "bunx", "deno", "bun", "cargo", "rustc", "curl", "env", "xargs",
        ]);
        // Programs whose arguments are another command line.
        set.extend(["dbus-run-session", "systemd-cat", "runcon", "sandbox", "ssh-agent"]);
        set.extend([
            "setarch",
            "linux32",
            "linux64",
            "i386",
            "x86_64",
            "prlimit",
            "setpriv",
            "chroot",
            "runuser",
            "unshare",
            "nsenter",
            "capsh",
            "systemd-run",
            "chrt",
            "ionice",
            "taskset",
            "numactl",
            "cgexec",
            "firejail",
            "bwrap",
            "sudo",
            "doas",
            "su",
            "pkexec",
            "sg",
            "newgrp",
            "script",
            "expect",
            "parallel",
            "watch",
            "flock",
            "setsid",
            "stdbuf",
            "timeout",
            "nice",
            "nohup",
            "time",
            "strace",
            "ltrace",
            "gdb",
            "valgrind",
            "perf",
            "entr",
            "inotifywait",
            "dbus-launch",
            "xvfb-run",
            "faketime",
            "catchsegv",
            "torsocks",
            "proxychains",
            "proxychains4",
            "eatmydata",
            "fakeroot",
            "unbuffer",
            "chpst",
        ]);
        set
    })
}

const SHELLS: [&str; 11] =
    ["sh", "bash", "zsh", "dash", "ash", "ksh", "mksh", "fish", "csh", "tcsh", "busybox"];
const INTERPRETERS: [&str; 20] = [
    "python",
    "python2",
    "python3",
    "node",
    "nodejs",
    "ruby",
    "perl",
    "php",
    "lua",
    "luajit",
    "R",
    "Rscript",
    "tclsh",
    "julia",
    "pwsh",
    "osascript",
    "irb",
    "jshell",
    "deno",
    "bun",
];

/// Returned by [`literal_words_needed`] when only an exact rule (no wildcard) covers the command.
pub(crate) const EXACT: usize = usize::MAX;

/// How many leading words of this command a broad allow rule must spell out literally before
/// its wildcard may cover the rest. 0 or 1: any matching rule covers it. [`EXACT`]: only a rule
/// without a wildcard covers it (every word decides what runs, or the code comes from stdin).
///
/// This is how "a broad prefix rule never covers a program that runs code it is given" works:
/// `Bash(python3 *)` does not cover `python3 -c '…'`, but `Bash(python3 -m pytest *)` covers
/// `python3 -m pytest -k slow`, because the rule itself names what runs.
pub(crate) fn literal_words_needed(words: &[Word]) -> usize {
    let Some(name) = words.first().and_then(program) else { return EXACT };
    // A dynamic word anywhere in a code-running program could be anything.
    let dynamic = words.iter().any(|w| w.value.is_none());
    let by_program = match name {
        "git" => git(words),
        "sed" => sed(words),
        "awk" | "gawk" | "mawk" | "nawk" => awk(words),
        "npm" | "pnpm" | "yarn" | "bun" | "npx" | "bunx" | "cargo" | "make" => {
            if dynamic {
                return EXACT;
            }
            build_tool(name, words)
        }
        n if INTERPRETERS.contains(&n) => interpreter(words),
        // git's own programs run by their path (`/usr/lib/git-core/git-push`).
        n if n.starts_with("git-") => EXACT,
        n if exec_capable().contains(n) => EXACT,
        // A read-only built-in with options that run programs or write, given what its
        // grammar does not allow (`rg --pre`, `diff -l`, `sort -o`): only an exact rule
        // covers it.
        n if super::readonly::may_run_or_write(n) => {
            let args: Option<Vec<&str>> = words[1..].iter().map(|w| w.value.as_deref()).collect();
            match args {
                Some(args) if super::readonly::read_only(n, &args).is_ok() => 0,
                _ => EXACT,
            }
        }
        _ => 0,
    };
    by_program.max(dangerous_anywhere(words))
}

/// Options that make many unrelated programs run a command or load code (Chromium and Electron
/// apps, Qt apps, ssh, tar, rsync, zip …): wherever they appear, the rule must spell them out.
fn dangerous_anywhere(words: &[Word]) -> usize {
    const PREFIXES: [&str; 16] = [
        "--eval",
        "--exec",
        "--gpu-launcher",
        "--renderer-cmd-prefix",
        "--browser-subprocess-path",
        "--utility-cmd-prefix",
        "-platformpluginpath",
        "-plugin",
        "-oProxyCommand",
        "-oLocalCommand",
        "--checkpoint-action",
        "--use-compress-program",
        "--rsh",
        "--split-string",
        "--to-command",
        "--info-script",
    ];
    words
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, w)| {
            let v = value(w);
            PREFIXES.iter().any(|p| v.starts_with(p))
                || (v.starts_with("-o") && v.contains("Command"))
        })
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(0)
}

/// Package managers and build tools. The subcommand must be spelt out, and for package
/// managers the script or package it runs: `Bash(npm *)` does not cover `npm run build`,
/// `Bash(npm run build *)` does. Their own options are an allow-list: any other option (before a
/// `--`, after which words go to the script) must be spelt out too, since options and
/// `NAME=VALUE` words configure what runs (npm turns every `--flag` into configuration such as
/// `--script-shell` or `--prefix`, also `-C`; make takes `SHELL=…`, `-f`, `-C`, `--eval`; cargo
/// `--config`, `-Z`, `--manifest-path`), and for make every target (each runs its own recipe).
fn build_tool(name: &str, words: &[Word]) -> usize {
    let all = words.len();
    let harmless = |v: &str| -> bool {
        match name {
            "npm" | "pnpm" | "yarn" | "bun" | "npx" | "bunx" => {
                matches!(v, "--silent" | "-s" | "--if-present" | "--no-color" | "--quiet")
            }
            "make" => {
                matches!(
                    v,
                    "-k" | "--keep-going"
                        | "-s"
                        | "--silent"
                        | "--quiet"
                        | "-B"
                        | "--always-make"
                        | "--no-print-directory"
                        | "-w"
                        | "--print-directory"
                        | "-j"
                        | "--jobs"
                ) || v.strip_prefix("-j").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    || v.strip_prefix("--jobs=")
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            }
            // cargo: everything but what loads configuration or another project.
            _ => {
                let cluster = v.starts_with('-') && !v.starts_with("--");
                !(["--config", "--manifest-path"]
                    .iter()
                    .any(|o| v == *o || v.starts_with(&format!("{o}=")))
                    || (cluster && v[1..].contains(['Z', 'C'])))
            }
        }
    };
    // make reads `VAR=…` and targets after `--` too: for make every word counts.
    let end = if name == "make" {
        all
    } else {
        words.iter().position(|w| value(w) == "--").unwrap_or(all)
    };
    let mut needed = 1;
    for (i, w) in words.iter().enumerate().take(end).skip(1) {
        let v = value(w);
        let jobs_value = name == "make"
            && v.bytes().all(|b| b.is_ascii_digit())
            && matches!(words.get(i - 1).map(value), Some("-j" | "--jobs"));
        // For make, every target must be spelt out too: each runs its own recipe.
        let configures = (v.starts_with('-') && !harmless(v))
            || (name == "make" && !v.starts_with('-') && !jobs_value);
        if configures {
            needed = i + 1;
        }
    }
    let sub =
        words.iter().take(end).skip(1).position(|w| !value(w).starts_with('-')).map(|p| p + 1);
    if let Some(sub) = sub {
        let runs_named = matches!(name, "npm" | "pnpm" | "yarn" | "bun")
            && matches!(value(&words[sub]), "run" | "run-script" | "exec" | "x" | "dlx");
        // The script or package is the next word that is not an option (`run --if-present X`).
        let named = words
            .iter()
            .enumerate()
            .take(end)
            .skip(sub + 1)
            .find(|(_, w)| !value(w).starts_with('-'))
            .map_or(sub + 2, |(i, _)| i + 1);
        needed = needed.max(match name {
            "make" => 1,
            _ if runs_named => named,
            _ => sub + 1,
        });
    }
    needed.min(all)
}

/// Interpreters: code flags need an exact rule; otherwise the script or module must be named.
fn interpreter(words: &[Word]) -> usize {
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        match v {
            "-c" | "-e" | "-E" | "--eval" | "-p" | "--print" | "-r" | "--require" | "-i" | "-x" => {
                return EXACT;
            }
            "-m" => return (i + 2).min(words.len()),
            _ if v.starts_with('-') => i += 1,
            _ => return i + 1,
        }
    }
    // No script named: the code comes from standard input.
    EXACT
}

/// git: global options other than a few harmless ones (they change config, paths or the
/// repository: `-c`, `-C`, `--git-dir` …), subcommands that run helpers or pagers, and options
/// that run programs or write files must all be spelt out by the rule. git takes any unique
/// prefix of a long option (`--outp=F` is `--output=F`), so a prefix of a dangerous option is
/// dangerous.
fn git(words: &[Word]) -> usize {
    let all = words.len();
    const GLOBAL_WITH_VALUE: [&str; 8] = [
        "-C",
        "-c",
        "--git-dir",
        "--work-tree",
        "--namespace",
        "--super-prefix",
        "--config-env",
        "--attr-source",
    ];
    const GLOBAL_HARMLESS: [&str; 9] = [
        "--no-pager",
        "-P",
        "--no-replace-objects",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-optional-locks",
        "--no-advice",
    ];
    // The subcommands a broad rule covers (their options still checked below); any other
    // (plumbing such as `remote-ext`, `config`, `help`, helpers, aliases) needs an exact rule.
    const SUBCOMMANDS: [&str; 50] = [
        "status",
        "log",
        "diff",
        "show",
        "branch",
        "checkout",
        "switch",
        "restore",
        "add",
        "commit",
        "push",
        "pull",
        "fetch",
        "merge",
        "rebase",
        "reset",
        "stash",
        "tag",
        "remote",
        "clone",
        "init",
        "mv",
        "rm",
        "grep",
        "blame",
        "describe",
        "rev-parse",
        "rev-list",
        "ls-files",
        "ls-tree",
        "cat-file",
        "shortlog",
        "reflog",
        "cherry-pick",
        "revert",
        "clean",
        "notes",
        "am",
        "apply",
        "format-patch",
        "archive",
        "show-ref",
        "for-each-ref",
        "merge-base",
        "name-rev",
        "cherry",
        "range-diff",
        "check-ignore",
        "version",
        "gc",
    ];
    const OPTION_DANGER: [&str; 12] = [
        "--output",
        "--upload-pack",
        "--receive-pack",
        "--exec",
        "--open-files-in-pager",
        "--ext-diff",
        "--textconv",
        "--file",
        "--help",
        "--template",
        "--separate-git-dir",
        "--config",
    ];
    let mut needed = 0;
    let mut subcommand: Option<&str> = None;
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        match subcommand {
            None if v.starts_with('-') => {
                if GLOBAL_WITH_VALUE.contains(&v) {
                    i += 1;
                    needed = i + 1;
                } else if !GLOBAL_HARMLESS.contains(&v) {
                    needed = i + 1;
                }
            }
            None => {
                subcommand = Some(v);
                if !SUBCOMMANDS.contains(&v) {
                    return EXACT;
                }
            }
            Some(sub) => {
                // A prefix of a dangerous option is that option to git; a longer name that
                // starts with one (`--output-directory`) is of the same kind.
                let long = v.starts_with("--") && {
                    let name = v.split_once('=').map_or(v, |(n, _)| n);
                    name.len() > 2
                        && OPTION_DANGER.iter().any(|o| o.starts_with(name) || name.starts_with(o))
                };
                // Short options cluster (`-nO'cmd'`) and take attached values (`-x'cmd'`): a
                // dangerous letter anywhere in a cluster counts (a value that happens to hold
                // one makes the rule spell it out, which is only stricter).
                let letters: &str = match sub {
                    "clone" => "uoc",
                    "fetch" | "pull" | "ls-remote" | "archive" | "push" => "uo",
                    "grep" => "O",
                    "rebase" => "x",
                    "tag" | "notes" => "F",
                    "commit" => "Ft",
                    "format-patch" => "o",
                    _ => "",
                };
                let short = v.starts_with('-')
                    && !v.starts_with("--")
                    && v[1..].chars().any(|c| letters.contains(c));
                if long || short {
                    needed = i + 1;
                }
            }
        }
        i += 1;
    }
    needed.min(all)
}

/// git's global options, skipped to reach the subcommand (for deny and ask rules, which match
/// `git -C dir push` as `git push`): the index of the subcommand's word, if there is one.
pub(crate) fn git_subcommand(words: &[Word]) -> Option<usize> {
    let mut i = 1;
    while let Some(v) = words.get(i).map(value) {
        if !v.starts_with('-') {
            return Some(i);
        }
        let takes_next = matches!(
            v,
            "-C" | "-c"
                | "--git-dir"
                | "--work-tree"
                | "--namespace"
                | "--super-prefix"
                | "--config-env"
                | "--attr-source"
        );
        i += if takes_next { 2 } else { 1 };
    }
    None
}

/// sed: `-i`, `-f`, an option it does not know, and a script that is not made only of the
/// commands the read-only grammar accepts (no `e`, `r`, `w` …) need the rule to spell them.
/// Options are read as GNU sed reads them (clusters, attached values, unique prefixes of long
/// names, options after operands).
fn sed(words: &[Word]) -> usize {
    const LONG: [&str; 16] = [
        "quiet",
        "silent",
        "debug",
        "expression",
        "file",
        "follow-symlinks",
        "in-place",
        "line-length",
        "posix",
        "regexp-extended",
        "separate",
        "sandbox",
        "unbuffered",
        "null-data",
        "help",
        "version",
    ];
    let all = words.len();
    let mut needed = 0;
    // (index of the word holding it, script) for each -e; the operands' indices.
    let mut scripts: Vec<(usize, &str)> = Vec::new();
    let mut operands: Vec<usize> = Vec::new();
    let mut options_done = false;
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        let here = i;
        i += 1;
        if options_done || v == "-" || !v.starts_with('-') {
            operands.push(here);
            continue;
        }
        if v == "--" {
            options_done = true;
            continue;
        }
        if let Some(long) = v.strip_prefix("--") {
            let (name, attached) = long.split_once('=').map_or((long, None), |(n, a)| (n, Some(a)));
            let matches: Vec<&str> = LONG.iter().copied().filter(|o| o.starts_with(name)).collect();
            let resolved = if LONG.contains(&name) {
                Some(name)
            } else if matches.len() == 1 {
                Some(matches[0])
            } else {
                None
            };
            match (resolved, attached) {
                (Some("expression"), Some(script)) => scripts.push((here, script)),
                (Some("expression"), None) => {
                    let Some(script) = words.get(i).and_then(|w| w.value.as_deref()) else {
                        return EXACT;
                    };
                    scripts.push((i, script));
                    i += 1;
                }
                (Some("line-length"), None) => i += 1,
                (Some("file"), None) => {
                    i += 1;
                    needed = i;
                }
                (Some("in-place" | "file"), _) | (None, _) => needed = here + 1,
                _ => {}
            }
            continue;
        }
        let cluster = &v[1..];
        for (at, c) in cluster.char_indices() {
            let rest = &cluster[at + c.len_utf8()..];
            match c {
                'n' | 'E' | 'r' | 's' | 'u' | 'z' => continue,
                'e' | 'l' | 'f' if rest.is_empty() => {
                    let Some(value) = words.get(i).and_then(|w| w.value.as_deref()) else {
                        return EXACT;
                    };
                    match c {
                        'e' => scripts.push((i, value)),
                        'f' => needed = i + 1,
                        _ => {}
                    }
                    i += 1;
                }
                'e' => scripts.push((here, rest)),
                'l' => {}
                _ => needed = here + 1,
            }
            break;
        }
    }
    if scripts.is_empty()
        && let Some(&first) = operands.first()
    {
        scripts.push((first, value(&words[first])));
    }
    for (index, script) in scripts {
        if super::readonly::sed_script_is_read_only(script).is_err() {
            needed = needed.max(index + 1);
        }
    }
    needed.min(all)
}

/// awk: options that load code (`-f`, `-e`, `-i`, `-l`, `--source` …) need an exact rule, and
/// a program text that can call `system`, pipe to a command, read or write files must be spelt
/// out, wherever it is among the words (after `-v x=1` too).
fn awk(words: &[Word]) -> usize {
    const LOADS: [&str; 7] = ["-f", "-e", "-i", "-l", "-E", "--source", "--include"];
    let mut needed = 0;
    for (i, w) in words.iter().enumerate().skip(1) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        let long = v.starts_with("--")
            && ["--file", "--source", "--include", "--load", "--exec"]
                .iter()
                .any(|o| o.starts_with(v.split('=').next().unwrap_or(v)) || v.starts_with(o));
        let short = v.starts_with('-')
            && !v.starts_with("--")
            && LOADS.iter().any(|o| v[1..].contains(&o[1..]));
        if long || short {
            return EXACT;
        }
        // `@load` and `@include` load code from inside the program.
        let risky =
            ["system", "|", ">", "<", "getline", "close", "fflush", "ENVIRON", "PROCINFO", "@"]
                .iter()
                .any(|k| v.contains(k));
        if risky {
            needed = i + 1;
        }
    }
    needed
}

/// `[sh|bash|dash, -c, SCRIPT]` exactly, the shell found on `PATH` or in `/bin` or `/usr/bin`:
/// the script, to be judged as a command line. With `login`, also `-lc`/`-cl` (the shape agents
/// such as Codex send their commands in): a login shell first runs the user's own profile,
/// which no requester can change, so it is looked through for argv requests; inside a command
/// line it is not. zsh is not looked through: its globs run code (`*(e:…:)`) and a bare
/// `<file` runs a pager, so a bash reading of its script proves nothing.
/// The second value says whether the shell is a POSIX one (sh, dash) rather than bash.
pub(crate) fn shell_script(argv: &[String], login: bool) -> Option<(&str, bool)> {
    let [shell, flag, script] = argv else { return None };
    let name = super::readonly::system_program(shell)?;
    let flag_ok = flag == "-c" || (login && matches!(flag.as_str(), "-lc" | "-cl"));
    (matches!(name, "sh" | "bash" | "dash") && flag_ok).then_some((script.as_str(), name != "bash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<Word> {
        s.iter().map(|v| Word::literal(v)).collect()
    }

    #[test]
    fn wrappers_are_looked_through_with_their_own_grammar() {
        let start = |s: &[&str]| strip_wrappers(&words(s)).start;
        assert_eq!(start(&["timeout", "-s", "KILL", "5", "nice", "-n", "2", "rm", "x"]), 7);
        assert_eq!(start(&["xargs", "grep", "foo"]), 1);
        assert!(strip_wrappers(&words(&["xargs", "grep", "foo"])).stdin_args);
        assert_eq!(start(&["xargs", "-n1", "grep", "foo"]), 0);
        assert_eq!(start(&["time"]), 0);
        assert_eq!(start(&["nohup", "--", "ls"]), 2);
        assert_eq!(start(&["timeout", "--kill-a=1", "5", "ls"]), 3, "a unique prefix");
        assert_eq!(start(&["env", "-S", "ls -la"]), 0, "-S is not looked through");
        assert_eq!(start(&["env", "-C", "/", "ls"]), 0, "-C is not looked through");
        assert_eq!(start(&["time", "-o", "out", "ls"]), 0, "time -o writes");
        let env = strip_wrappers(&words(&["env", "-i", "A=1", "B=x/y", "ls"]));
        assert_eq!(env.start, 4);
        assert_eq!(env.env, vec![("A".into(), Some("1".into())), ("B".into(), Some("x/y".into()))]);
        assert_eq!(env.wrappers, vec!["env".to_string()]);
    }

    #[test]
    fn harmless_variables_need_plain_values() {
        assert!(harmless_env("NODE_ENV", Some("test")));
        assert!(harmless_env("RUST_LOG", Some("my_crate::db=debug,info")));
        assert!(!harmless_env("LANG", Some("/tmp/locale")));
        assert!(!harmless_env("LANG", None));
        assert!(!harmless_env("BASH_ENV", Some("x")));
        assert!(!harmless_env("LD_PRELOAD", Some("x")));
    }

    #[test]
    fn code_running_arguments_need_literal_rules() {
        let n = |s: &[&str]| literal_words_needed(&words(s));
        assert_eq!(n(&["python3", "-c", "print(1)"]), EXACT);
        assert_eq!(n(&["python3", "-m", "pytest", "-k", "x"]), 3);
        assert_eq!(n(&["python3", "script.py", "--flag"]), 2);
        assert_eq!(n(&["git", "status"]), 0);
        assert_eq!(n(&["git", "-c", "core.pager=sh", "log"]), 3);
        assert_eq!(n(&["git", "-C", "..", "log"]), 3);
        assert_eq!(n(&["git", "--no-pager", "log"]), 0);
        assert_eq!(n(&["git", "log", "--output=/tmp/x"]), 3);
        assert_eq!(n(&["git", "log", "--outp=/tmp/x"]), 3, "a prefix of --output");
        assert_eq!(n(&["git", "log", "--oneline"]), 0);
        assert_eq!(n(&["git", "help", "config"]), EXACT);
        assert_eq!(n(&["npm", "run", "build"]), 3);
        assert_eq!(n(&["npm", "run", "test", "-C", ".."]), 4);
        assert_eq!(n(&["npm", "run", "test", "--", "-C", ".."]), 3, "after --: the script's");
        assert_eq!(n(&["make", "test", "SHELL=./x.sh"]), 3);
        assert_eq!(n(&["make", "-j4", "test"]), 3, "every target is spelt out");
        assert_eq!(n(&["make", "test", "-j", "4"]), 2);
        assert_eq!(n(&["make", "test", "deploy"]), 3);
        assert_eq!(n(&["make", "test", "--", "SHELL=/usr/bin/id"]), 4, "make reads it after --");
        assert_eq!(n(&["git", "clone", "-c", "protocol.ext.allow=always", "ext::x"]), 3);
        assert_eq!(n(&["git", "format-patch", "--output-directory=/x"]), 3);
        assert_eq!(n(&["git", "maintenance", "start"]), EXACT);
        assert_eq!(n(&["cargo", "test", "--config", "x"]), 3);
        assert_eq!(n(&["cargo", "test", "--release"]), 2);
        assert_eq!(n(&["sed", "-n", "1,5p", "f"]), 0);
        assert_eq!(n(&["sed", "1e id", "f"]), 2);
        assert_eq!(n(&["sed", "-i", "s/a/b/", "f"]), 2);
        assert_eq!(n(&["sed", "-n", "1p", "-e", "1e touch x", "f"]), 5);
        assert_eq!(n(&["sed", "--in-pl", "s/a/b/", "f"]), 2, "a prefix of --in-place");
        assert_eq!(n(&["awk", "{print $1}", "f"]), 0);
        assert_eq!(n(&["awk", "BEGIN{system(\"id\")}"]), 2);
        assert_eq!(n(&["tar", "-xf", "a.tar"]), EXACT);
        assert_eq!(n(&["m4"]), EXACT);
        assert_eq!(n(&["python3"]), EXACT);
        assert_eq!(n(&["ls", "-la"]), 0);
    }

    #[test]
    fn network_clients() {
        let yes = |s: &[&str]| network_client(&words(s));
        assert!(yes(&["curl", "https://example.com"]) && yes(&["/usr/bin/python3.11", "x.py"]));
        assert!(yes(&["git", "fetch", "origin"]) && yes(&["npm", "install"]));
        assert!(!yes(&["git", "status"]) && !yes(&["ls"]) && !yes(&["echo", "curl"]));
    }

    #[test]
    fn git_global_options_are_skipped_to_the_subcommand() {
        let sub = |s: &[&str]| git_subcommand(&words(s));
        assert_eq!(sub(&["git", "-C", ".", "push"]), Some(3));
        assert_eq!(sub(&["git", "--git-dir=x", "push"]), Some(2));
        assert_eq!(sub(&["git", "-c", "a=b", "--no-pager", "push"]), Some(4));
        assert_eq!(sub(&["git"]), None);
    }
}
