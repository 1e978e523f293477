//! What the policy knows about particular programs: wrappers to look through, what is always
//! asked, and which arguments make a program run code it is given. (The read-only built-ins
//! are in `builtins`.)
//!
//! The lists of programs that can run other programs, reach the network or take dangerous
//! arguments come from GTFOBins and SonarSource's argument-injection vectors (see
//! `policy/data/README.md`); the per-program rules below are for the tools a coding agent uses
//! every day, where a blanket "exact rules only" would make broad rules useless.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::shell::Word;

/// The program name of a word: its value's last path component (`/usr/bin/git` → `git`).
pub(crate) fn program(word: &Word) -> Option<&str> {
    let value = word.value.as_deref()?;
    Some(value.rsplit('/').next().unwrap_or(value))
}

pub(crate) fn value(word: &Word) -> &str {
    word.value.as_deref().unwrap_or("\u{0}dynamic")
}

/// Strips wrappers that only change how a command runs (`timeout 5`, `nice -n 2`, `nohup`, bare
/// `xargs` …) and returns the index of the real command's first word.
pub(crate) fn strip_wrappers(words: &[Word]) -> usize {
    let mut i = 0;
    while let Some(name) = words.get(i).and_then(program) {
        let (takes_value, positional): (&[&str], usize) = match name {
            "timeout" => (&["-k", "--kill-after", "-s", "--signal"], 1),
            "time" | "nohup" | "builtin" | "noglob" => (&[], 0),
            "command" => {
                // `command -v x` asks what x is; it runs nothing.
                if words.get(i + 1).is_some_and(|w| matches!(value(w), "-v" | "-V")) {
                    return i;
                }
                (&[], 0)
            }
            "nice" => (&["-n", "--adjustment"], 0),
            "stdbuf" => (&["-i", "-o", "-e", "--input", "--output", "--error"], 0),
            "xargs" => {
                // Only bare xargs is looked through; with flags it is its own program.
                if words.get(i + 1).is_some_and(|w| value(w).starts_with('-')) {
                    return i;
                }
                (&[], 0)
            }
            _ => return i,
        };
        let mut j = i + 1;
        while let Some(w) = words.get(j) {
            let v = value(w);
            if v == "--" {
                j += 1;
                break;
            }
            if !v.starts_with('-') || v == "-" {
                break;
            }
            j += if takes_value.contains(&v) { 2 } else { 1 };
        }
        j += positional;
        if j >= words.len() {
            // A wrapper with nothing to wrap is itself the command.
            return i;
        }
        i = j;
    }
    i
}

/// Environment variables an allow rule may look past: they change no program's behaviour in a
/// way that runs other code.
pub(crate) fn harmless_env(name: &str) -> bool {
    matches!(
        name,
        "NODE_ENV"
            | "RUST_LOG"
            | "RUST_BACKTRACE"
            | "CI"
            | "NO_COLOR"
            | "FORCE_COLOR"
            | "CLICOLOR"
            | "TERM"
            | "LANG"
            | "LANGUAGE"
            | "TZ"
            | "DEBUG"
            | "VERBOSE"
            | "PYTHONUNBUFFERED"
            | "PYTHONDONTWRITEBYTECODE"
            | "CARGO_TERM_COLOR"
    ) || name.starts_with("LC_")
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
    let all = words.len();
    let Some(name) = words.first().and_then(program) else { return EXACT };
    // A dynamic word anywhere in a code-running program could be anything.
    let dynamic = words.iter().any(|w| w.value.is_none());
    let by_program = match name {
        "git" => git(words),
        "sed" => sed(words),
        "awk" | "gawk" | "mawk" | "nawk" => awk(words),
        "npm" | "pnpm" | "yarn" | "bun" | "npx" | "bunx" | "cargo" | "make" => {
            if dynamic || words.iter().any(|w| dangerous_build_option(value(w))) {
                return EXACT;
            }
            // The subcommand must be spelt out, and for package managers the script or package
            // it runs: `Bash(npm *)` does not cover `npm run build`, `Bash(npm run build *)` does.
            let Some(sub) =
                words.iter().skip(1).position(|w| !value(w).starts_with('-')).map(|p| p + 1)
            else {
                return 1;
            };
            let runs_named = matches!(name, "npm" | "pnpm" | "yarn" | "bun")
                && matches!(value(&words[sub]), "run" | "run-script" | "exec" | "x" | "dlx");
            let needed = match name {
                "make" => 1,
                _ if runs_named => sub + 2,
                _ => sub + 1,
            };
            needed.min(all)
        }
        n if INTERPRETERS.contains(&n) => interpreter(words),
        n if exec_capable().contains(n) => EXACT,
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

fn dangerous_build_option(v: &str) -> bool {
    [
        "--config",
        "-Z",
        "--eval",
        "-E",
        "--node-options",
        "--require",
        "-r",
        "--prefix",
        "--call",
        "-c",
    ]
    .iter()
    .any(|o| v == *o || v.starts_with(&format!("{o}=")))
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

/// git: global options that change config or paths, subcommands that run helpers or pagers, and
/// options that run programs or write files must all be spelt out by the rule.
fn git(words: &[Word]) -> usize {
    let all = words.len();
    const GLOBAL_DANGER: [&str; 9] = [
        "-c",
        "--config-env",
        "--exec-path",
        "-p",
        "--paginate",
        "--git-dir",
        "--work-tree",
        "--namespace",
        "--super-prefix",
    ];
    const SUBCOMMAND_DANGER: [&str; 16] = [
        "help",
        "difftool",
        "mergetool",
        "filter-branch",
        "submodule",
        "bisect",
        "config",
        "daemon",
        "instaweb",
        "web--browse",
        "send-email",
        "credential",
        "hook",
        "archimport",
        "cvsimport",
        "svn",
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
    for (i, w) in words.iter().enumerate().skip(1) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        match subcommand {
            None if v.starts_with('-') => {
                if GLOBAL_DANGER.iter().any(|o| v == *o || v.starts_with(&format!("{o}="))) {
                    needed = i + 2;
                }
            }
            None => {
                subcommand = Some(v);
                if SUBCOMMAND_DANGER.contains(&v) {
                    return EXACT;
                }
            }
            Some(sub) => {
                let long = OPTION_DANGER.iter().any(|o| v == *o || v.starts_with(&format!("{o}=")));
                let short = match sub {
                    "clone" | "fetch" | "pull" | "ls-remote" | "archive" | "push" => {
                        v.starts_with("-u") || v.starts_with("-o")
                    }
                    "grep" => v.starts_with("-O"),
                    "rebase" => v == "-x",
                    "tag" | "commit" | "notes" => v.starts_with("-F"),
                    _ => false,
                };
                if long || short {
                    needed = i + 1;
                }
            }
        }
    }
    needed.min(all)
}

/// sed: `-i`, `-f`, and scripts with `e`, `w`, `r` or `W` commands need the rule to spell them.
fn sed(words: &[Word]) -> usize {
    let all = words.len();
    let mut needed = 0;
    let mut script_seen = false;
    let mut i = 1;
    while let Some(w) = words.get(i) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        if v == "-e" || v == "--expression" {
            let Some(script) = words.get(i + 1).and_then(|w| w.value.as_deref()) else {
                return EXACT;
            };
            if !simple_sed_script(script) {
                needed = i + 2;
            }
            script_seen = true;
            i += 2;
            continue;
        }
        if v.starts_with("-i")
            || v.starts_with("--in-place")
            || v.starts_with("-f")
            || v.starts_with("--file")
        {
            needed = i + 1;
        } else if let Some(script) = v.strip_prefix("--expression=") {
            if !simple_sed_script(script) {
                needed = i + 1;
            }
            script_seen = true;
        } else if !v.starts_with('-') && !script_seen {
            if !simple_sed_script(v) {
                needed = i + 1;
            }
            script_seen = true;
        }
        i += 1;
    }
    needed.min(all)
}

/// A sed script of print, delete and substitution commands only, with no `e`, `w` or `r`.
pub(crate) fn simple_sed_script(script: &str) -> bool {
    script.split([';', '\n']).map(str::trim).filter(|c| !c.is_empty()).all(|command| {
        let body = command
            .trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, ',' | '$' | ' '));
        match body.chars().next() {
            Some('p' | 'd' | 'q' | '=') => body.len() == 1,
            Some('s') => substitution_flags(&body[1..])
                .is_some_and(|f| f.chars().all(|c| "gpiI0123456789".contains(c))),
            _ => false,
        }
    })
}

/// The flags of `s<d>pattern<d>replacement<d>flags`, honouring backslash escapes.
fn substitution_flags(rest: &str) -> Option<&str> {
    let mut chars = rest.char_indices();
    let (_, delimiter) = chars.next()?;
    if delimiter == '\\' || delimiter == '\n' {
        return None;
    }
    let mut seen = 0;
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delimiter {
            seen += 1;
            if seen == 2 {
                return Some(&rest[i + c.len_utf8()..]);
            }
        }
    }
    None
}

/// awk: a program that can call `system`, pipe to a command or write files must be spelt out.
fn awk(words: &[Word]) -> usize {
    for (i, w) in words.iter().enumerate().skip(1) {
        let Some(v) = w.value.as_deref() else { return EXACT };
        if v == "-f" || v.starts_with("--file") || v == "-E" || v.starts_with("--exec") {
            return EXACT;
        }
        if v == "-v" || v == "-F" {
            continue;
        }
        if !v.starts_with('-') {
            let risky =
                ["system", "|", ">", "getline", "close", "fflush"].iter().any(|k| v.contains(k));
            return if risky { i + 1 } else { 0 };
        }
    }
    0
}

/// `[sh|bash|zsh|dash, -c|-lc|-cl, SCRIPT]` exactly: the script, to be judged as a command line.
pub(crate) fn shell_script(argv: &[String]) -> Option<&str> {
    let [shell, flag, script] = argv else { return None };
    let name = shell.rsplit('/').next().unwrap_or(shell);
    (matches!(name, "sh" | "bash" | "zsh" | "dash")
        && matches!(flag.as_str(), "-c" | "-lc" | "-cl"))
    .then_some(script.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<Word> {
        s.iter()
            .map(|v| Word { text: v.to_string(), value: Some(v.to_string()), glob: false })
            .collect()
    }

    #[test]
    fn wrappers_are_looked_through() {
        let w = words(&["timeout", "-s", "KILL", "5", "nice", "-n", "2", "rm", "x"]);
        assert_eq!(strip_wrappers(&w), 7);
        assert_eq!(strip_wrappers(&words(&["xargs", "grep", "foo"])), 1);
        assert_eq!(strip_wrappers(&words(&["xargs", "-n1", "grep", "foo"])), 0);
        assert_eq!(strip_wrappers(&words(&["time"])), 0);
        assert_eq!(strip_wrappers(&words(&["nohup", "--", "ls"])), 2);
    }

    #[test]
    fn code_running_arguments_need_literal_rules() {
        let n = |s: &[&str]| literal_words_needed(&words(s));
        assert_eq!(n(&["python3", "-c", "print(1)"]), EXACT);
        assert_eq!(n(&["python3", "-m", "pytest", "-k", "x"]), 3);
        assert_eq!(n(&["python3", "script.py", "--flag"]), 2);
        assert_eq!(n(&["git", "status"]), 0);
        assert_eq!(n(&["git", "-c", "core.pager=sh", "log"]), 3);
        assert_eq!(n(&["git", "log", "--output=/tmp/x"]), 3);
        assert_eq!(n(&["git", "help", "config"]), EXACT);
        assert_eq!(n(&["npm", "run", "build"]), 3);
        assert_eq!(n(&["sed", "-n", "1,5p", "f"]), 0);
        assert_eq!(n(&["sed", "1e id", "f"]), 2);
        assert_eq!(n(&["sed", "-i", "s/a/b/", "f"]), 2);
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
    fn sed_scripts() {
        assert!(simple_sed_script("s/a/b/g"));
        assert!(simple_sed_script("1,5p; 3d"));
        assert!(!simple_sed_script("s/a/b/e"));
        assert!(!simple_sed_script("s/a/b/w out"));
        assert!(!simple_sed_script("1e id"));
        assert!(simple_sed_script("s/a\\/x/b/"));
    }
}
