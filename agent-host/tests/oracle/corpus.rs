//! The corpus: command lines generated from every option the read-only programs list in their
//! own help, from every sed command and find primary, and from the shell shapes that turn a
//! harmless-looking line into something else. Deterministic for a given set of installed
//! programs; each line says where it came from.

use std::collections::{BTreeSet, HashSet};
use std::process::{Command, Stdio};

use crate::sandbox::World;

/// One command line to judge.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) line: String,
    /// Which generator made it (`options:ls`, `sed`, `shell`, ...).
    pub(crate) origin: String,
    /// An allow rule the line is judged under (`Bash(git status *)`), if any.
    pub(crate) rule: Option<String>,
}

/// The programs the policy may allow without rules.
pub(crate) const READ_ONLY: &str = "ls cat tac head tail wc stat du diff cmp nl od grep egrep \
    fgrep rg base64 base32 sort uniq cut tr md5sum sha1sum sha256sum sha512sum b2sum readlink \
    realpath basename dirname uname whoami id date file find sed echo printf pwd which true false cd \
    sha224sum sha384sum type command test";

/// The issue's own examples, verbatim (also asked about in `tests/policy.rs`).
pub(crate) const ISSUE: &str = include_str!("../corpus/issue-examples.txt");

/// Lines that once got past the policy and did harm (the test rows in `tests/policy.rs` say why
/// each is refused now).
fn known_attacks(world: &World) -> Vec<String> {
    let key = world.id_rsa.display();
    let mut lines: Vec<String> = [
        "cat <<EOF\nEO\\\nF\ntouch pwned\nEOF",
        "cat <<EOF\n$\\\n(touch pwned)\nEOF",
        "echo 'a[$(touch pwned)]' >/dev/null; cat <<EOF\n${!_}\nEOF",
        "echo '$(touch pwned)' >/dev/null; cat <<< ${_@P}",
        "echo 'a[$(touch pwned)]' >/dev/null; cat <<< ${HOME:_}",
        "true <<<${CDPATH:=../home}; cd .ssh && cat id_rsa",
        "cd && grep -d recurse x",
        "cd && grep --directories=recurse x",
        "cd src && command -- cd .. && cat ../home/.ssh/id_rsa",
        "cd src && command -p cd .. && cat ../outside/secret.txt",
        "cd src && builtin -- cd .. && cat ../home/.ssh/id_rsa",
        "zsh -c 'ls *(e:\"touch pwned\":)'",
        "cat a=~/.ssh/id_rsa",
        "echo {PATH}>/dev/null; ls",
        "echo hi | tac",
        "sort -S 100K README.md",
        "sort --batch-size=2 -m README.md README.md README.md",
        "echo push origin main | xargs git",
        "echo {01..03}",
        "echo \"a[\\$(touch pwned)]\" >/dev/null; ls {a[_]}>/dev/null",
        "sed -n -e {,} '1e touch pwned' README.md",
        "cd {-L,} && cat .ssh/id_rsa",
        "cat {..{,}}/home/.ssh/id_rsa",
        "sed s{1,{}a1b1';#{e' <<< 'touch pwned 1,'",
        "cd ${!} && cat .ssh/id_rsa",
        "sh -c \"echo \\$'\\\\' ; touch pwned ; echo ' #'\"",
        "cat [[=l=]]ink-out/id_rsa",
        "cd src && cat /proc/self/cwd/../link-out/id_rsa",
        "echo 'TZ=\"../home/.ssh/id_rsa\" 2020-01-01' | date -f -",
        "test -v 'a[$(touch pwned)]'",
        "cat .*/home/.ssh/id_rsa",
        "sh -c 'cat .*/home/.ssh/id_rsa'",
        "echo 'a[$(touch pwned)]' >/dev/null; cat {$,$}'\\'$[_]'\\'",
        "sed -n $'p #\\\n1e touch pwned' README.md",
        "echo \"a[\\$(touch pwned)]\" >/dev/null; ls {a[_]}\\\n>/dev/null",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    lines.push(format!("date -d 'TZ=\"{key}\" now'"));
    lines.push(format!("find . -newermt 'TZ=\"{key}\" now'"));
    lines
}

/// A shell word for `s`: as it is when it needs no quoting, else single-quoted.
pub(crate) fn sq(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./~+-=,:@%^".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Canary paths, each as a line would write it (the tilde and `$HOME` forms expand).
fn canary_words(world: &World) -> Vec<String> {
    vec![
        "~/.ssh/id_rsa".into(),
        "../home/.ssh/id_rsa".into(),
        world.id_rsa.display().to_string(),
        "keylink".into(),
        "link-out/id_rsa".into(),
    ]
}

const WRITE_TARGETS: &[&str] = &["out.txt", "/tmp/pwned", ".git/config", ".git/hooks/pre-commit"];

const COMMANDS: &[&str] = &[
    "touch pwned",
    "sh -c 'touch pwned'",
    "1e touch pwned",
    "e touch pwned",
    "w out.txt",
    "s/a/b/w out.txt",
    "s/a/b/e",
];

/// The bad values tried with the `k`th option spelling of `program`, as shell words: two canary
/// spellings and two write targets (rotating, so that every spelling meets every few options),
/// the commands (all of them for sed, whose scripts take them), and `-`.
fn bad_values(world: &World, program: &str, k: usize) -> Vec<String> {
    let canaries = canary_words(world);
    let mut v = vec![
        canaries[k % canaries.len()].clone(),
        canaries[(k + 2) % canaries.len()].clone(),
        WRITE_TARGETS[k % WRITE_TARGETS.len()].to_string(),
        WRITE_TARGETS[(k + 1) % WRITE_TARGETS.len()].to_string(),
    ];
    let commands = if program == "sed" { COMMANDS } else { &COMMANDS[..2] };
    v.extend(commands.iter().map(|s| sq(s)));
    v.push("-".into());
    v
}

/// The operands a program needs for a line to do something; options go before or after.
fn operands(program: &str) -> &'static str {
    match program {
        "ls" | "du" | "realpath" | "cd" => "src",
        "diff" | "cmp" => "a.txt b.txt",
        "grep" | "egrep" | "fgrep" => "fn src/main.rs",
        "rg" => "fn .",
        "sed" => "-n 1p README.md",
        "tr" => "a b",
        "cut" => "-d, -f1 data.csv",
        "sort" | "uniq" => "data.csv",
        "readlink" => "keylink",
        "basename" | "dirname" => "src/main.rs",
        "which" => "ls",
        "echo" => "hello",
        "printf" => r"'%s\n' hello",
        "uname" | "whoami" | "id" | "date" | "pwd" | "true" | "false" => "",
        _ => "README.md",
    }
}

/// What keeps a line with this option from waiting forever: `tail -f` stops at once when
/// told to follow a process that does not exist.
fn guard(program: &str, option: &str) -> &'static str {
    let follows = ["-f", "-F", "--f"].iter().any(|f| option.starts_with(f));
    if program == "tail" && follows { "--pid=2147483647 " } else { "" }
}

/// A program's help text, or `None` when it is not installed. Builtins answer `help NAME`.
pub(crate) fn help_text(program: &str) -> Option<String> {
    let kind = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", r#"type -t "$1""#, "type", program])
        .env("LANG", "C")
        .output()
        .ok()?;
    let kind = String::from_utf8_lossy(&kind.stdout).trim().to_string();
    let output = match kind.as_str() {
        "builtin" => Command::new("bash")
            .args(["--noprofile", "--norc", "-c", r#"help "$1""#, "help", program])
            .env("LANG", "C")
            .output(),
        "file" => Command::new(program)
            .arg(if program == "find" { "-help" } else { "--help" })
            .env("LANG", "C")
            .stdin(Stdio::null())
            .output(),
        _ => return None,
    }
    .ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(text)
}

/// Every option a help text lists: short spellings (`-x`) and long names (`--name`).
pub(crate) fn options(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut shorts = BTreeSet::new();
    let mut longs = BTreeSet::new();
    for (n, line) in help.lines().enumerate() {
        let t = line.trim_start();
        // An option table row: `-a, --all  text`, `-e script, --expression=script  text`.
        if t.starts_with('-') {
            let spec = t.split("  ").next().unwrap_or("").split('\t').next().unwrap_or("");
            for item in spec.split(',') {
                let item = item.trim();
                if item.starts_with("--") {
                    continue; // found below, with the ones in prose
                }
                let mut cs = item.chars().skip(1);
                if let Some(c) = cs.next()
                    && (c.is_ascii_alphanumeric() || c == '@')
                    && cs.next().is_none_or(|d| d == ' ' || d == '[')
                {
                    shorts.insert(format!("-{c}"));
                }
            }
        }
        // A synopsis: `Usage: od [-abcdfilosx]...`, `echo: echo [-neE] [arg ...]`.
        if line.contains("Usage:") || line.trim_start().starts_with("or:") || n == 0 {
            for word in line.split(|c: char| c.is_whitespace() || "[]|".contains(c)) {
                if let Some(letters) = word.strip_prefix('-')
                    && !letters.starts_with('-')
                {
                    let letters: String = letters
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '@')
                        .collect();
                    if letters.chars().all(|c| !c.is_ascii_uppercase() || letters.len() == 1) {
                        shorts.extend(letters.chars().map(|c| format!("-{c}")));
                    }
                }
            }
        }
        // Long options anywhere, tables and prose alike.
        for (i, _) in line.match_indices("--") {
            let before = line[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
                continue;
            }
            let name: String = line[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name.len() > 1 && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                longs.insert(name.trim_end_matches('-').to_string());
            }
        }
    }
    (shorts, longs)
}

/// GNU getopt accepts any unique prefix of a long option: the shortest, and one a bit longer.
pub(crate) fn abbreviations(name: &str, all: &BTreeSet<String>) -> Vec<String> {
    let unique = |k: usize| all.iter().filter(|o| o.starts_with(&name[..k])).count() == 1;
    let Some(k) = (1..name.len()).find(|&k| unique(k)) else { return Vec::new() };
    let mut out = vec![name[..k].to_string()];
    let longer = k + (name.len() - k).div_ceil(2);
    if longer > k && longer < name.len() {
        out.push(name[..longer].to_string());
    }
    out
}

/// Builds the corpus, printing which programs were skipped as not installed.
pub(crate) fn generate(world: &World) -> Vec<Entry> {
    let mut c = Corpus::default();
    for line in ISSUE.lines() {
        c.add("issue", line.to_string());
    }
    for line in known_attacks(world) {
        c.add("attack", line);
    }
    for program in READ_ONLY.split_whitespace() {
        if program == "find" {
            continue;
        }
        match help_text(program) {
            Some(help) => option_lines(&mut c, world, program, &help),
            None => println!("skipped {program}: not installed"),
        }
    }
    match help_text("find") {
        Some(help) => find_lines(&mut c, world, &help),
        None => println!("skipped find: not installed"),
    }
    sed_lines(&mut c, world);
    shell_lines(&mut c, world);
    c.entries
}

#[derive(Default)]
struct Corpus {
    entries: Vec<Entry>,
    seen: HashSet<String>,
}

impl Corpus {
    fn add(&mut self, origin: &str, line: String) {
        if self.seen.insert(line.clone()) {
            self.entries.push(Entry { line, origin: origin.to_string(), rule: None });
        }
    }
}

fn option_lines(c: &mut Corpus, world: &World, program: &str, help: &str) {
    let (shorts, longs) = options(help);
    let origin = format!("options:{program}");
    let ops = operands(program);
    let tail = if program == "cd" { " && ls" } else { "" };
    let place = |c: &mut Corpus, opt: &str, after_too: bool| {
        let join = |parts: &[&str]| {
            parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" ")
        };
        let opt = &format!("{}{opt}", guard(program, opt));
        c.add(&origin, format!("{}{tail}", join(&[program, opt, ops])));
        if after_too && !ops.is_empty() {
            c.add(&origin, format!("{}{tail}", join(&[program, ops, opt])));
        }
    };
    let mut k = 0;
    for short in &shorts {
        place(c, short, true);
        k += 1;
        for v in bad_values(world, program, k) {
            place(c, &format!("{short} {v}"), true);
            place(c, &format!("{short}{v}"), false);
        }
    }
    for long in &longs {
        let spelled = format!("--{long}");
        place(c, &spelled, true);
        k += 1;
        let abbrevs = abbreviations(long, &longs);
        for a in &abbrevs {
            place(c, &format!("--{a}"), false);
        }
        for (i, v) in bad_values(world, program, k).into_iter().enumerate() {
            place(c, &format!("--{long} {v}"), true);
            place(c, &format!("--{long}={v}"), false);
            // The abbreviations take turns: the shortest with `=`, the longer one apart.
            match (i % 2, abbrevs.as_slice()) {
                (0, [a, ..]) => place(c, &format!("--{a}={v}"), false),
                (_, [a]) | (_, [_, a]) => place(c, &format!("--{a} {v}"), false),
                _ => {}
            }
        }
    }
}

/// find's expression language, from `find -help`: each primary with the argument it takes.
pub(crate) fn find_primaries(help: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let body = help.split("Other common options").next().unwrap_or(help);
    let words: Vec<&str> = body.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let w = w.trim_start_matches('[').trim_end_matches(']');
        let Some(name) = w.strip_prefix('-') else { continue };
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            continue;
        }
        let arg = words.get(i + 1).filter(|a| {
            let a = a.trim_start_matches("[-/]");
            a.starts_with(|c: char| c.is_ascii_uppercase() || c == '[') && !a.starts_with("EXPR")
        });
        let arg = arg.map(|a| (*a).to_string());
        if !out.iter().any(|(n, _)| n == w) {
            out.push((w.to_string(), arg));
        }
    }
    out
}

fn find_lines(c: &mut Corpus, world: &World, help: &str) {
    let canaries = canary_words(world);
    let files: Vec<String> = canaries
        .iter()
        .cloned()
        .chain(WRITE_TARGETS.iter().map(|s| (*s).to_string()))
        .chain(["-".to_string(), "README.md".to_string()])
        .collect();
    let commands: Vec<String> = [
        r"touch pwned \;",
        r"touch pwned {} +",
        r"sh -c 'touch pwned' \;",
        r"cat {} \;",
        r"cat ~/.ssh/id_rsa \;",
        r"echo {} \;",
        r"ls {} +",
        r"true \;",
        r"grep -l fn {} +",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let fixed = |xs: &[&str]| xs.iter().map(|s| (*s).to_string()).collect::<Vec<String>>();
    for (primary, arg) in find_primaries(help) {
        let values: Vec<String> = match (primary.as_str(), arg.as_deref()) {
            ("-exec" | "-execdir" | "-ok" | "-okdir", _) => commands.clone(),
            ("-fprintf", _) => files.iter().map(|f| format!(r"{f} '%p\n'")).collect(),
            ("-regextype", _) => fixed(&["posix-egrep", "emacs"]),
            (_, None) => vec![String::new()],
            (_, Some("FILE")) => files.clone(),
            (_, Some("N" | "LEVELS")) => fixed(&["0", "1", "+1", "-1"]),
            (_, Some("PATTERN")) => fixed(&[r"'*.rs'", "'*'", "id_rsa"]),
            (_, Some("NAME")) => fixed(&["root", "nobody"]),
            (_, Some(a)) if a.contains("MODE") => fixed(&["644", "-u+x", "/222"]),
            (_, Some(a)) if a.contains("FORMAT") => fixed(&[r"'%p\n'", r"'%f %s\n'"]),
            (_, Some(a)) if a.starts_with('[') => fixed(&["f", "d", "l"]),
            (_, Some(a)) if a.starts_with('N') => fixed(&["1", "+1k", "-1M"]),
            (_, Some(_)) => fixed(&["x", "1"]),
        };
        for v in values {
            let expr = if v.is_empty() { primary.clone() } else { format!("{primary} {v}") };
            for path in [".", "src", "", "-L .", "link-out"] {
                let line = if path.is_empty() {
                    format!("find {expr}")
                } else {
                    format!("find {path} -maxdepth 1 {expr}")
                };
                c.add("find", line);
            }
        }
    }
    for line in [
        "find -H link-out",
        "find -L link-out",
        "find -L . -name id_rsa",
        "find -P link-out",
        "find -L . -maxdepth 2",
        "find -D help",
        "find -D exec . -maxdepth 0",
        "find -O3 . -maxdepth 0",
        "find . -maxdepth 0 -exec touch pwned ;",
        r"find . -maxdepth 0 -exec touch pwned \; -quit",
        r"find src -name '*.rs' -exec grep -l fn {} +",
        "find . -newer ~/.ssh/id_rsa -maxdepth 0",
        "find . -files0-from keylink",
        "find -files0-from ~/.ssh/id_rsa",
        r"find / -maxdepth 0 -fprint /tmp/pwned",
        "find .. -maxdepth 1",
        "find ~ -maxdepth 1",
        "find ~/.ssh",
        "find ../outside",
    ] {
        c.add("find", line.to_string());
    }
}

fn sed_lines(c: &mut Corpus, world: &World) {
    let addresses =
        ["", "1", "$", "/a/", "1,2", "1~2", "0,/a/", "1,+1", "/a/,/b/", r"\%a%", "/a/I", "2!"];
    let mut commands: Vec<String> = "= p P l d D g G h H n N x z F q q5 Q Q5 y/ab/ba/ s/a/b/ \
        s/a/b/g s/a/b/p s/a/b/I s/a/b/m s/a/b/2 b t T v {p} {p;p} e #n s/a/b/e"
        .split_whitespace()
        .chain(["l 5", "a foo", "i foo", "c foo", "e id", "e touch pwned", "s/a/b/ew out.txt"])
        .chain(["s/.*/touch pwned/e"])
        .map(String::from)
        .collect();
    let readable: Vec<String> = canary_words(world)
        .into_iter()
        .chain(["/dev/stdin", "README.md", "/etc/passwd"].map(String::from))
        .collect();
    let writable: Vec<String> = WRITE_TARGETS
        .iter()
        .map(|s| (*s).to_string())
        .chain(["/dev/stdout", "/dev/stderr", "~/.ssh/id_rsa", "keylink"].map(String::from))
        .collect();
    for f in &readable {
        commands.push(format!("r {f}"));
        commands.push(format!("R {f}"));
    }
    for f in &writable {
        commands.push(format!("w {f}"));
        commands.push(format!("W {f}"));
        commands.push(format!("s/a/b/w {f}"));
        commands.push(format!("s/a/b/gw {f}"));
    }
    for addr in addresses {
        for cmd in &commands {
            let script = sq(&format!("{addr}{cmd}"));
            c.add("sed", format!("sed -n {script} README.md"));
            c.add("sed", format!("sed -e {script} README.md"));
        }
    }
    for line in [
        "sed -n 1p -e 'w out.txt' README.md",
        "sed -n -e 1p -e '1e touch pwned' README.md",
        "sed --sandbox -n '1e touch pwned' README.md",
        "sed -n 1p -s README.md keylink",
        "sed -n p keylink",
        "sed -f keylink README.md",
        "sed -n 1p --in-place README.md",
        "sed -n 1p -i.bak README.md",
        "sed -n 1p -Ei README.md",
        "sed -ni 1p README.md",
        "sed -n 1p -z README.md",
        "sed -n --debug 1p README.md",
        "sed -n --follow-symlinks 1p keylink",
        "sed -E -n '/(a)/p' README.md",
        "sed -n $'1e touch pwned' README.md",
        "sed -n '1e\\\ntouch pwned' README.md",
        "sed -n '1{e touch pwned\n}' README.md",
        "sed -n '1 e touch pwned' README.md",
        "sed -n '1;e touch pwned' README.md",
        "sed -n 'e' keylink",
    ] {
        c.add("sed", line.to_string());
    }
}

fn shell_lines(c: &mut Corpus, world: &World) {
    let abs = world.id_rsa.display().to_string();
    let readers: Vec<&str> = "cat|head|tail|wc|grep x|sort|od -c|base64|nl|tac|cut -c1-3|md5sum|\
        file|stat|diff README.md|cmp README.md|sed -n 1p|uniq|ls"
        .split('|')
        .collect();
    let targets = [
        "README.md".to_string(),
        "keylink".to_string(),
        "~/.ssh/id_rsa".to_string(),
        "../outside/secret.txt".to_string(),
        "$HOME/.ssh/id_rsa".to_string(),
        "${HOME}/.ssh/id_rsa".to_string(),
        "\"$HOME\"/.aws/credentials".to_string(),
        "~/.netrc".to_string(),
        "~/.config/gh/hosts.yml".to_string(),
        "~/.gnupg/secring".to_string(),
        "link-out/id_rsa".to_string(),
        abs.clone(),
    ];
    let wrappers = "|env |env -i |env -S |env -C / |env -u HOME |timeout 5 |nice -n 1 |nohup |\
        stdbuf -o0 |command |time |builtin |exec |xargs -a /dev/null ";
    for w in wrappers.split('|') {
        for r in &readers {
            for t in targets.iter().take(3) {
                c.add("wrapper", format!("{w}{r} {t}"));
            }
        }
    }
    for r in &readers {
        for t in &targets {
            c.add("target", format!("{r} {t}"));
        }
        for shell in ["bash -c", "sh -c", "bash -lc", "bash --norc -c", "bash -c -- "] {
            c.add("shell", format!("{shell} '{r} README.md'"));
            c.add("shell", format!("{shell} '{r} keylink'"));
            c.add("shell", format!("{shell} '{r} README.md; touch pwned'"));
        }
        for redirect in [
            "> out.txt",
            ">> .git/config",
            "2> x",
            "&> y",
            "< ~/.ssh/id_rsa",
            "<keylink",
            "<> f",
            ">| f",
            "1>&2",
            "2>&1",
            "> /dev/null",
            "2>/dev/null",
            ">/tmp/pwned",
            "> .git/hooks/pre-commit",
            "3<keylink",
            "<<< x",
            "< README.md",
            "&>>out.txt",
            "> /dev/stderr",
            "2>&-",
        ] {
            c.add("redirect", format!("{r} README.md {redirect}"));
        }
    }
    let prefixed = [
        "ls",
        "cat README.md",
        "grep x README.md",
        "bash -c ls",
        "sh -c ls",
        "sort data.csv",
        "find . -maxdepth 0",
        "env ls",
        "sed -n 1p README.md",
        "date",
    ];
    for prefix in [
        "BASH_ENV=./x.sh",
        "ENV=./x.sh",
        "LD_PRELOAD=./x.so",
        "LD_LIBRARY_PATH=.",
        "PATH=.:$PATH",
        "PATH=bin:$PATH",
        "PATH=./bin",
        "LANG=/x",
        "LC_ALL=C",
        "GREP_OPTIONS='-f keylink'",
        "GREP_COLOR='1;32'",
        "POSIXLY_CORRECT=1",
        "TMPDIR=.",
        "SHELLOPTS=xtrace PS4='$(touch pwned)'",
        "BASHOPTS=extglob",
        "HOME=/",
        "IFS=/",
        "PROMPT_COMMAND='touch pwned'",
        "LOCPATH=.",
        "GCONV_PATH=.",
        "MAGIC=keylink",
        "TZ=../../../home/.ssh/id_rsa",
        "TZDIR=.",
        "SED_OPTIONS=-i",
        "RIPGREP_CONFIG_PATH=keylink",
        "BASH_FUNC_ls%%='() { touch pwned; }'",
        "PAGER='touch pwned'",
    ] {
        for cmd in prefixed {
            c.add("env-prefix", format!("{prefix} {cmd}"));
        }
    }
    let mut fixed = vec![
        // brace expansion
        r"find . -maxdepth 0 {-exec,touch,pwned,\;}",
        "{cat,keylink}",
        "{cat,README.md}",
        "cat {README.md,keylink}",
        "cat {a,b}.txt",
        "ls {src,docs}",
        "{ls,-la}",
        "echo {1..3}",
        "cat {README.md,~/.ssh/id_rsa}",
        "sed -n {1p,-i} README.md",
        "sort {-o,out.txt} data.csv",
        // tilde, parameters, substitutions
        "cat ~/.ssh/id_rsa",
        "cat ~root/x",
        "cat ~+/README.md",
        "cat ~-/x",
        "echo ~",
        "ls ~",
        "ls -a ~",
        "echo $HOME",
        "cat $HOME/.ssh/id_rsa",
        "cat ${HOME}/.ssh/id_rsa",
        "cat ${HOME:-x}/.aws/credentials",
        "cat ${X:-keylink}",
        "cat ${X:=keylink}",
        "echo ${X=$(touch pwned)}",
        "cat $(echo keylink)",
        "cat $(echo README.md)",
        "echo $(touch pwned)",
        "cat `echo keylink`",
        "echo `touch pwned`",
        "cat <(cat keylink)",
        "cat <(touch pwned)",
        "diff <(cat a.txt) b.txt",
        "cat >(touch pwned)",
        "echo $((1))",
        "echo $((x=1))",
        "echo $((a[$(touch pwned)]))",
        "cat $'README.md'",
        "cat $'\\x6beylink'",
        "cat $'\\x7e/.ssh/id_rsa'",
        "cat \"keylink\"",
        "cat 'keylink'",
        "cat k\\eylink",
        "cat k''eylink",
        "cat k\"\"eylink",
        "echo $0",
        "echo $-",
        "echo $$",
        "echo \"$@\"",
        "printf -v x %s y",
        "printf '%s' $(cat keylink)",
        "printf %q $(touch pwned)",
        "echo ${!HOME}",
        "echo ${PATH//:/ }",
        "x=keylink; cat $x",
        "x=README.md; cat $x",
        "declare -x y=1; ls",
        "read x < keylink",
        "mapfile a < keylink",
        "source x.sh",
        ". x.sh",
        "exec 3<keylink",
        "exec > out.txt",
        "echo x > /dev/tcp/127.0.0.1/9",
        "cat < /dev/tcp/127.0.0.1/9",
        "cat /dev/udp/127.0.0.1/53",
        // globs
        "cat *",
        "cat *.txt",
        "cat link-out/*",
        "cat /e*/passwd",
        "cat /e*/shadow",
        "ls ../*",
        "ls ../*/*",
        "cat ../*/secret.txt",
        "cat ../o*/*",
        "cat ~/.s*/*",
        "cat ~/.*/*",
        "ls -d .*",
        "cat .??*",
        "cat [k]eylink",
        "cat ?eylink",
        "cat keyl*",
        "grep x *",
        "grep x -- *",
        "wc *",
        "wc -- *",
        "head *",
        "cat **",
        "shopt -s globstar; cat **/*",
        "shopt -s dotglob; cat *",
        "shopt -s extglob; cat @(keylink)",
        "shopt -s nullglob; cat *.nothing",
        "shopt -s failglob; cat *.nothing",
        "file -z logs/app.log.gz",
        "file -Z logs/app.log.gz",
        "rg -z alpha logs",
        "rg --search-zip alpha",
        "rg --pre cat alpha logs",
        "grep -r alpha logs",
        "zcat logs/app.log.gz",
        "cd inj && grep x *",
        "cd inj && grep x -- *",
        "cd inj && wc *",
        "cd inj && wc -- *",
        "cd inj && sed -n 1p *",
        "cd inj && sed -n 1p -- *",
        "cd inj && diff *",
        "cd inj && ls *",
        "cd inj && cat *",
        "cd inj && sort *",
        "cd inj && find *",
        "cd inj && du *",
        "cd inj && head *",
        "cd inj && file *",
        "ls inj/*",
        "cat inj/*",
        "grep x inj/*",
        "wc inj/*",
        // stdin-fed arguments
        "echo ' -exec touch pwned ;' | xargs find .",
        "echo keylink | xargs cat",
        "echo README.md | xargs cat",
        "echo README.md | xargs -I{} cat {}",
        "echo -i | xargs sed -n 1p README.md",
        "echo sh -c touch | xargs",
        "printf 'keylink\\0' | xargs -0 cat",
        "find . -name '*.md' | xargs cat",
        "find . -name '*.md' -print0 | xargs -0 grep -l x",
        "ls | xargs wc -l",
        "cat README.md | xargs echo",
        "xargs -a keylink echo",
        "xargs cat < README.md",
        // functions, aliases, traps
        "f(){ touch x; }; f",
        "f(){ cat README.md; }; f",
        "ls(){ touch pwned; }; ls",
        "cat(){ touch pwned; }; cat README.md",
        "function f { cat keylink; }; f",
        "alias ls='touch pwned'; ls",
        "shopt -s expand_aliases; alias ls='touch pwned'\nls",
        "shopt -s expand_aliases\nalias cat='cat keylink'\ncat README.md",
        "trap 'touch pwned' EXIT; ls",
        "trap 'touch pwned' DEBUG; ls",
        "trap 'touch pwned' ERR; false",
        "trap 'cat keylink' EXIT",
        "enable -n echo; echo x",
        "enable -f ./x.so x",
        "set -x; ls",
        "set -o history; ls",
        "command -v ls",
        "command -p cat README.md",
        "type ls",
        "hash -p /usr/bin/touch ls; ls pwned",
        "eval cat keylink",
        "eval 'touch pwned'",
        "eval ls",
        "let 'x=1'",
        "exec ls",
        "exec -a ls cat README.md",
        "coproc cat README.md",
        "ulimit -n",
        "umask 000; ls",
        "history -w h",
        "fc -l",
        "kill -0 $$",
        // cd chains
        "cd src && cat ../../home/.ssh/id_rsa",
        "cd src && cat ../README.md",
        "cd src && ls",
        "cd src; cat main.rs",
        "cd link-out && cat id_rsa",
        "cd link-out && cat ../.aws/credentials",
        "cd link-out && ls",
        "cd link-out && pwd",
        "cd -P link-out && cat ../.netrc",
        "cd -L link-out/.. && ls",
        "cd nonexistent; cat ../outside/secret.txt",
        "cd nonexistent || cat ~/.ssh/id_rsa",
        "cd src | cat ../.env",
        "cd src | cat .env",
        "(cd .git && cat config)",
        "cd .git && echo x >> config",
        "cd .git && cat config",
        "cd .git/hooks && ls",
        "cd .. && cat outside/secret.txt",
        "cd .. && ls",
        "cd ~ && cat .netrc",
        "cd && cat .ssh/id_rsa",
        "cd / && cat etc/passwd",
        "cd /tmp && ls",
        "cd - && ls",
        "CDPATH=.. cd outside && cat secret.txt",
        "cd $HOME/.aws; cat credentials",
        "pushd link-out && cat id_rsa",
        "cd src && cd .. && cd .. && cat outside/secret.txt",
        "cd sub/dir && cat ../../../outside/secret.txt",
        "cd sub && cd dir && cat file.txt",
        // subshells, groups, operators, control flow
        "(cat README.md)",
        "(cat keylink)",
        "{ cat README.md; }",
        "{ cat keylink; }",
        "( ( cat README.md ) )",
        "ls && cat keylink",
        "ls || cat keylink",
        "false || cat keylink",
        "ls; cat keylink",
        "ls | cat keylink",
        "ls & cat README.md",
        "ls & cat keylink",
        "cat README.md &",
        "! ls",
        "ls |& cat",
        "ls | tee out.txt",
        "cat README.md | grep x | sort | uniq -c",
        "if true; then cat keylink; fi",
        "if cat README.md; then ls; fi",
        "for f in *; do cat \"$f\"; done",
        "for f in a.txt b.txt; do cat \"$f\"; done",
        "for f in keylink; do cat $f; done",
        "while read l; do echo $l; done < README.md",
        "while read l; do cat \"$l\"; done <<< keylink",
        "until true; do ls; done",
        "case x in x) cat keylink;; esac",
        "case x in x) cat README.md;; esac",
        "[[ -f README.md ]] && cat README.md",
        "[[ $(touch pwned) ]]",
        "[ -f README.md ] && cat README.md",
        "test -f README.md && cat keylink",
        "select x in a; do ls; done",
        "time cat README.md",
        "time -p ls",
        "cat <<EOF\nhello\nEOF",
        "cat <<EOF\n$(touch pwned)\nEOF",
        "cat <<'EOF'\n$(touch pwned)\nEOF",
        "cat <<EOF > out.txt\nx\nEOF",
        "ls\ncat keylink",
        "ls # ; cat keylink",
        "ls;;",
        "ls \\\n src",
        "echo done",
        "true && echo ok",
        "ls -la && pwd",
        "pwd; ls; echo done",
    ];
    let owned: Vec<String> = [
        format!("cat {abs}"),
        format!("cd {} && cat id_rsa", world.home.join(".ssh").display()),
        format!("ls {}", world.home.display()),
        format!("ls -R {}", world.home.display()),
        format!("du -a {}", world.home.display()),
        format!("grep -r x {}", world.home.display()),
        format!("find {} -maxdepth 2", world.home.display()),
    ]
    .into_iter()
    .collect();
    fixed.extend(owned.iter().map(String::as_str));
    for line in fixed {
        c.add("shell", line.to_string());
    }
}

/// Parses the everyday corpus: one line per command, `#` comments, and an optional leading
/// `[Bash(RULE)] ` saying the line is judged under that allow rule.
pub(crate) fn everyday(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (rule, line) = match l.strip_prefix("[Bash(").and_then(|r| r.split_once(")] ")) {
                Some((rule, line)) => (Some(format!("Bash({rule})")), line),
                None => (None, l),
            };
            Entry { line: line.to_string(), origin: "everyday".into(), rule }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_option_tables_synopses_and_prose() {
        let help = "Usage: od [OPTION]... [FILE]...\n  or:  od [-abcdfilosx]... [FILE]\n\
            \x20 -A, --address-radix=RADIX   output format\n\
            \x20 -S BYTES, --strings[=BYTES]  output strings\n\
            \x20 -w[BYTES], --width[=BYTES]  width\n\
            \x20     --traditional           accept\n\
            \x20 -NUM   same as --context=NUM\n\
            See also --block-size, and 'x--y'.\n";
        let (shorts, longs) = options(help);
        let shorts: Vec<&str> = shorts.iter().map(String::as_str).collect();
        let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
        assert_eq!(
            shorts,
            ["-A", "-S", "-a", "-b", "-c", "-d", "-f", "-i", "-l", "-o", "-s", "-w", "-x"]
        );
        assert_eq!(
            longs,
            ["address-radix", "block-size", "context", "strings", "traditional", "width"]
        );
    }

    #[test]
    fn abbreviates_long_options_uniquely() {
        let all: BTreeSet<String> =
            ["output", "output-delimiter", "only-matching", "null"].map(String::from).into();
        assert_eq!(abbreviations("null", &all), ["n", "nul"]);
        assert_eq!(abbreviations("only-matching", &all), ["on", "only-mat"]);
        assert!(abbreviations("output", &all).is_empty()); // a prefix of output-delimiter
        assert_eq!(abbreviations("output-delimiter", &all), ["output-", "output-delim"]);
    }

    #[test]
    fn reads_find_primaries() {
        let help = "Usage: find [-H] [-L] [-P] [-Olevel] [-D debugopts] [path...] [expression]\n\
            Normal options: -depth -files0-from FILE -maxdepth LEVELS\n\
            Tests: -perm [-/]MODE -type [bcdpflsD] -empty -regex PATTERN\n\
            Actions: -exec COMMAND ; -fprintf FILE FORMAT -delete\n\
            Other common options:\n      --help\n";
        let found = find_primaries(help);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.join(" "),
            "-depth -files0-from -maxdepth -perm -type -empty -regex -exec -fprintf -delete"
        );
        assert_eq!(found[1].1.as_deref(), Some("FILE"));
        assert_eq!(found[3].1.as_deref(), Some("[-/]MODE"));
        assert_eq!(found[5].1, None);
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(sq("~/.ssh/id_rsa"), "~/.ssh/id_rsa");
        assert_eq!(sq("touch pwned"), "'touch pwned'");
        assert_eq!(sq("sh -c 'x'"), r"'sh -c '\''x'\'''");
    }

    #[test]
    fn parses_everyday_rules() {
        let e = everyday("# c\n\nls\n[Bash(git status *)] git status\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].rule.as_deref(), Some("Bash(git status *)"));
        assert_eq!(e[1].line, "git status");
    }
}
