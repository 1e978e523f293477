//! Judging command lines and argv: split, then deny anywhere → deny; ask anywhere → ask; every
//! part allowed → allow; otherwise ask.
//!
//! A part is allowed by an explicit allow rule that matches what the shell will run and spells
//! out every word that decides what code runs, or as a read-only built-in when its whole command
//! line is inside that program's grammar and every path it opens is a read the policy allows in
//! each directory the part may run in. Environment variables, whoever sets them (a prefix, `env`,
//! a request's `env`), must be harmless for either.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use super::matching::{
    Located, Resolved, bash_matches, bash_may_match, literal_prefix, normalize, resolve,
    resolve_from,
};
use super::programs::{self, READ_ONLY_WRAPPERS, Wrapped};
use super::readonly;
use super::rules::{Mode, Rule, RuleKind};
use super::shell::{Redirect, Script, SimpleCommand, Word};
use super::{Decision, Policy, Verdict};

/// Longer command lines are always asked (PERMISSIONS.md).
const MAX_COMMAND: usize = 10_000;
/// `bash -c 'bash -c …'` is looked into this many times, then asked.
const MAX_NESTING: usize = 2;
/// A glob may match at most this many paths; more is asked.
const MAX_GLOB_MATCHES: usize = 1024;

pub(super) fn decide_line(policy: &Policy, line: &str, cwd: &Path) -> Decision {
    decide_nested(policy, line, false, cwd, 0)
}

/// Judges a line as bash reads it, or with `posix` as sh (dash) reads it.
fn decide_nested(policy: &Policy, line: &str, posix: bool, cwd: &Path, depth: usize) -> Decision {
    if line.len() > MAX_COMMAND {
        return Decision::new(
            Verdict::Ask,
            format!("the command is over {MAX_COMMAND} characters"),
            None,
        );
    }
    match super::shell::parse(line, &policy.shell_context(posix)) {
        Ok(script) => decide_script(policy, &script, cwd, depth),
        Err(e) => Decision::new(Verdict::Ask, format!("asked because {e}"), None),
    }
}

pub(super) fn decide_argv(
    policy: &Policy,
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Decision {
    if argv.is_empty() {
        return Decision::new(Verdict::Deny, "an empty command", None);
    }
    if let Some((script, posix)) = programs::shell_script(argv, true) {
        let mut decision = decide_nested(policy, script, posix, cwd, 1);
        let shell = argv[0].rsplit('/').next().unwrap_or(&argv[0]);
        decision.programs.insert(0, shell.to_string());
        if decision.decision == Verdict::Allow
            && let Some((name, _)) = env.iter().find(|(n, v)| !programs::harmless_env(n, Some(v)))
        {
            decision.decision = Verdict::Ask;
            decision.reason = format!("it sets {name}, which no rule looks past");
            decision.explicit = false;
            decision.rule = None;
        }
        return decision;
    }
    let size = argv.iter().chain(env.iter().map(|(_, v)| v)).map(|a| a.len() + 1).sum::<usize>();
    if size > MAX_COMMAND {
        return Decision::new(
            Verdict::Ask,
            format!("the command is over {MAX_COMMAND} characters"),
            None,
        );
    }
    let script = Script {
        commands: vec![SimpleCommand {
            assignments: env.iter().map(|(n, v)| (n.clone(), Word::literal(v))).collect(),
            words: argv.iter().map(|a| Word::literal(a)).collect(),
            changes_dir: false,
            dirs: Some(vec![Vec::new()]),
        }],
        redirects: Vec::new(),
    };
    decide_script(policy, &script, cwd, 1)
}

/// Shell-quotes one argument for display and rule matching.
pub(crate) fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

/// One command as the rules see it.
struct Part<'a> {
    wrapped: Wrapped,
    /// The words after wrappers (`timeout 5`, `nice` …).
    core: &'a [Word],
    /// What allow rules match: `core` as the shell passes it, quoted where needed.
    text: String,
    /// What deny and ask rules match: the forms of the words the shell will run.
    forms: Vec<String>,
    /// When a word is not known (`$X`, a glob the policy does not expand): the command with
    /// `*` for each such word, which a deny or ask rule matches if it may match what it stands
    /// for.
    unknown: Option<String>,
    /// For a command with globs: its words as bash will pass them, in each directory it may
    /// run in (`None`: not known, or the line may create files before it runs).
    expansions: Option<Vec<Vec<Word>>>,
    /// The directories it may run in (`None`: not known, after a `cd` the policy cannot follow).
    dirs: Option<Vec<PathBuf>>,
    /// Every variable set for it: assignments in front, and `env NAME=VALUE`.
    env: Vec<(String, Option<String>)>,
    /// As a read-only built-in: the policy's verdict on each path it opens, in each directory;
    /// `Err`, why it is not one.
    read_only: Result<Vec<Decision>, String>,
}

/// The reads judged so far in one decision, by the path as the command joins it (the same file
/// is often read by several parts: `cd src && ls`).
struct Reads<'p> {
    policy: &'p Policy,
    cwd: &'p Path,
    judged: std::cell::RefCell<std::collections::HashMap<PathBuf, (Located, Decision)>>,
    /// How many paths the line's globs have matched so far.
    globbed: Cell<usize>,
    /// What each directory walked for the Read rules held.
    trees: std::cell::RefCell<std::collections::HashMap<PathBuf, Option<Decision>>>,
    /// Each directory's resolution.
    resolved: std::cell::RefCell<std::collections::HashMap<PathBuf, Resolved>>,
    /// Where each way the line's `cd`s may have gone leads (`None`: not followed).
    dirs: std::cell::RefCell<std::collections::HashMap<Vec<usize>, Option<PathBuf>>>,
}

impl Reads<'_> {
    /// Where `path`, used from `dir`, leads: resolved from `dir`'s own resolution, which is
    /// remembered (most paths of a line start from one or two directories).
    fn locate(&self, dir: &Path, path: &str) -> Located {
        let known = self.resolved.borrow().get(dir).cloned();
        let base = known.unwrap_or_else(|| {
            let base = resolve_from(&Resolved { real: "/".into(), exists: true }, dir);
            self.resolved.borrow_mut().insert(dir.to_path_buf(), base.clone());
            base
        });
        let path = Path::new(path);
        Located { lexical: normalize(dir, path), real: resolve_from(&base, path).real }
    }

    /// What a walk below `path` (from `dir`) found for the Read rules, once per directory.
    fn tree(&self, dir: &Path, path: &str) -> Option<Decision> {
        let place = self.read(dir, path).0;
        if let Some(known) = self.trees.borrow().get(&place.real) {
            return known.clone();
        }
        let found = self.policy.read_tree(&place, self.cwd);
        self.trees.borrow_mut().insert(place.real, found.clone());
        found
    }

    /// The policy's decision on reading `path` from `dir`, and where it leads.
    fn read(&self, dir: &Path, path: &str) -> (Located, Decision) {
        let joined = dir.join(path);
        if let Some(hit) = self.judged.borrow().get(&joined) {
            return hit.clone();
        }
        let place = self.locate(dir, path);
        let decision = self.policy.read(&place, self.cwd);
        let judged = (place, decision);
        self.judged.borrow_mut().insert(joined, judged.clone());
        judged
    }
}

fn decide_script(policy: &Policy, script: &Script, cwd: &Path, depth: usize) -> Decision {
    let reads = Reads {
        policy,
        cwd,
        judged: Default::default(),
        globbed: Cell::new(0),
        trees: Default::default(),
        resolved: Default::default(),
        dirs: Default::default(),
    };
    // A line that may create files (a redirection that writes, a program that is not a
    // read-only built-in) may create one a later glob matches, after the policy looked: its
    // globs are not expanded, so not trusted.
    let may_write = script
        .redirects
        .iter()
        .any(|r| matches!(&r.redirect, Redirect::Write(w) if !harmless_target(w)))
        || script.commands.iter().any(|c| {
            let core = &c.words[programs::strip_wrappers(&c.words).start..];
            !core.first().and_then(programs::program).is_some_and(readonly::is_read_only_program)
        });
    let parts: Vec<Part<'_>> =
        script.commands.iter().map(|c| part(&reads, script, c, may_write)).collect();
    let bash_rules = |kind| policy.rules_for(&["Bash"], kind);

    // 1. Deny anywhere wins. Deny rules look past every assignment and wrapper, and match any
    //    form of the words the shell will run.
    for part in &parts {
        if let Some(rule) = bash_rules(RuleKind::Deny).find(|r| rule_hits(r, part)) {
            return Decision::new(
                Verdict::Deny,
                format!("`{}` is denied by {rule}", part.text),
                Some(rule),
            );
        }
        if let Ok(reads) = &part.read_only
            && let Some(deny) = reads.iter().find(|d| d.decision == Verdict::Deny)
        {
            return deny.clone();
        }
        if let Some(d) = unparsed_reads(&reads, part)
            && d.decision == Verdict::Deny
        {
            return d;
        }
    }
    let mut pending: Option<Decision> = None;
    // A write a redirection makes unasked without an Edit rule (in acceptEdits mode).
    let mut implicit_write = false;
    for scoped in &script.redirects {
        let (word, is_write) = match &scoped.redirect {
            Redirect::Write(w) => (w, true),
            Redirect::Read(w) => (w, false),
        };
        if harmless_target(word) {
            continue;
        }
        let dirs = scoped.dirs.as_ref().and_then(|d| directories(&reads, script, d));
        let (Some(v), None, Some(dirs)) = (&word.value, &word.glob, dirs) else {
            pending.get_or_insert(Decision::new(
                Verdict::Ask,
                format!(
                    "the redirection target `{}` is not a plain path in a known place",
                    word.text
                ),
                None,
            ));
            continue;
        };
        for dir in &dirs {
            let place = reads.locate(dir, v);
            let d = if is_write { policy.edit(&place, cwd) } else { policy.read(&place, cwd) };
            match d.decision {
                Verdict::Deny => return d,
                Verdict::Ask => {
                    pending.get_or_insert(d);
                }
                Verdict::Allow => implicit_write |= is_write && !d.explicit,
            }
        }
    }

    // 2. Ask rules and what is always asked.
    for part in &parts {
        if let Some(rule) = bash_rules(RuleKind::Ask).find(|r| rule_hits(r, part)) {
            return Decision::new(
                Verdict::Ask,
                format!("`{}` asks by {rule}", part.text),
                Some(rule),
            );
        }
        // A read an ask rule is about asks, whatever allows the command.
        if let Ok(reads) = &part.read_only
            && let Some(asked) =
                reads.iter().find(|d| d.decision == Verdict::Ask && d.rule.is_some())
        {
            return asked.clone();
        }
        if let Some(d) = unparsed_reads(&reads, part) {
            return d;
        }
        if let Some(reason) = programs::always_asked(part.core) {
            return Decision::new(Verdict::Ask, reason, None);
        }
        if let Some(targets) = programs::removal_targets(part.core)
            && let Some(critical) = critical_removal(policy, targets, part.dirs.as_deref())
        {
            return Decision::new(Verdict::Ask, critical, None);
        }
    }
    if let Some(d) = pending {
        return d;
    }

    // 3. Every part must be allowed.
    let mut used: Vec<&Rule> = Vec::new();
    let mut nested: Vec<String> = Vec::new();
    let mut programs: Vec<String> = Vec::new();
    let mut builtins = false;
    let mut explicit = true;
    for part in &parts {
        programs.extend(part.wrapped.wrappers.iter().cloned());
        if let Some(name) = part.core.first().and_then(programs::program) {
            programs.push(name.to_string());
            // Debian's egrep and fgrep are scripts that run grep.
            if matches!(name, "egrep" | "fgrep") {
                programs.push("grep".into());
            }
        }
        let read_only = part.read_only.clone();
        if policy.mode == Mode::Plan && read_only.is_err() {
            return Decision::new(
                Verdict::Deny,
                format!("plan mode is read-only: `{}` may write or execute", part.text),
                None,
            );
        }
        if let Some((name, _)) =
            part.env.iter().find(|(n, v)| !programs::harmless_env(n, v.as_deref()))
        {
            return Decision::new(
                Verdict::Ask,
                format!("`{}` sets {name}, which no rule looks past", part.text),
                None,
            );
        }
        if let Some((script, posix)) = nested_script(part.core) {
            if depth >= MAX_NESTING {
                return Decision::new(Verdict::Ask, "shells nested this deep are asked", None);
            }
            let dir = match part.dirs.as_deref() {
                Some([dir]) => dir.clone(),
                _ => {
                    return Decision::new(
                        Verdict::Ask,
                        format!("`{}` runs where the policy cannot tell", part.text),
                        None,
                    );
                }
            };
            let inner = decide_nested(policy, &script, posix, &dir, depth + 1);
            if inner.decision != Verdict::Allow {
                return inner;
            }
            explicit &= inner.explicit;
            programs.extend(inner.programs);
            nested.push(format!("inside `{}`: {}", part.core[0].text, inner.reason));
            continue;
        }
        if let Some(rule) = allowing_rule(policy, part) {
            used.push(rule);
            continue;
        }
        match read_only {
            Ok(reads)
                if !part.wrapped.stdin_args
                    && part
                        .wrapped
                        .wrappers
                        .iter()
                        .all(|w| READ_ONLY_WRAPPERS.contains(&w.as_str())) =>
            {
                if let Some(not_allowed) = reads.into_iter().find(|d| d.decision != Verdict::Allow)
                {
                    return not_allowed;
                }
                builtins = true;
                explicit = false;
            }
            _ => {
                let why = if rule_would_match(policy, part) {
                    format!(
                        "`{}` runs code it is given, which a broad rule does not cover",
                        part.text
                    )
                } else {
                    match &part.read_only {
                        Err(e)
                            if part
                                .core
                                .first()
                                .and_then(programs::program)
                                .is_some_and(readonly::is_read_only_program) =>
                        {
                            format!("no rule allows `{}`, and {e}", part.text)
                        }
                        _ => format!("no rule allows `{}`", part.text),
                    }
                };
                return Decision::new(Verdict::Ask, why, None);
            }
        }
    }
    used.dedup_by(|a, b| a == b);
    let rule = (used.len() == 1).then(|| used[0]);
    let mut reasons: Vec<String> = used.iter().map(|r| format!("allowed by {r}")).collect();
    if builtins {
        reasons.push("read-only built-ins".into());
    }
    reasons.extend(nested);
    if reasons.is_empty() {
        reasons.push("nothing to run".into());
    }
    programs.dedup();
    Decision {
        decision: Verdict::Allow,
        reason: reasons.join("; "),
        rule: rule.map(ToString::to_string),
        explicit: explicit && !implicit_write && !parts.is_empty(),
        programs,
    }
}

/// Builds the policy's view of one command.
fn part<'a>(
    reads: &Reads<'_>,
    script: &Script,
    command: &'a SimpleCommand,
    may_write: bool,
) -> Part<'a> {
    let wrapped = programs::strip_wrappers(&command.words);
    let core = &command.words[wrapped.start..];
    let dirs = command.dirs.as_ref().and_then(|d| directories(reads, script, d));
    let mut env: Vec<(String, Option<String>)> =
        command.assignments.iter().map(|(n, w)| (n.clone(), w.value.clone())).collect();
    env.extend(wrapped.env.iter().cloned());
    let read_only = read_only_reads(reads, core, dirs.as_deref(), may_write);
    // The forms of the words as bash passes them: globs expanded in each directory the part
    // may run in; a word still not known stands for anything.
    let mut forms = Vec::new();
    let mut unknown = command.words.iter().any(|w| w.value.is_none());
    let mut expansions = None;
    if command.words.iter().any(|w| w.glob.is_some()) {
        let expanded = dirs.as_deref().filter(|_| !may_write).map(|dirs| {
            dirs.iter()
                .map(|dir| expand_words(&command.words, dir, &reads.globbed))
                .collect::<Result<Vec<_>, _>>()
        });
        match expanded {
            Some(Ok(expanded)) => {
                for words in &expanded {
                    let start = programs::strip_wrappers(words).start;
                    forms.extend(self::forms(words, start));
                }
                expansions = Some(expanded);
            }
            _ => unknown = true,
        }
    }
    forms.extend(self::forms(&command.words, wrapped.start));
    let unknown = unknown.then(|| {
        command
            .words
            .iter()
            .map(|w| match (&w.value, &w.glob) {
                (Some(v), None) => v.as_str(),
                _ => "*",
            })
            .collect::<Vec<_>>()
            .join(" ")
    });
    Part {
        text: join_quoted(core),
        forms,
        unknown,
        expansions,
        core,
        wrapped,
        dirs,
        env,
        read_only,
    }
}

/// Whether a deny or ask rule is about this part: it matches one of its forms, or may match
/// what a word the policy does not know stands for.
fn rule_hits(rule: &Rule, part: &Part<'_>) -> bool {
    part.forms.iter().any(|f| spec_matches(rule, f))
        || part.unknown.as_deref().is_some_and(|pattern| {
            rule.specifier.as_deref().is_none_or(|spec| bash_may_match(spec, pattern))
        })
}

/// For a read-only program outside its grammar (so allowed, if at all, by an explicit rule,
/// `grep -y PAT .env`): when Read deny or ask rules exist, every word it is given may name a
/// file it reads (an option's `=value` too, and a directory for the recursive readers), so each
/// is judged against them; a word that expands may name anything and asks. `None`: no rule is
/// about any of them.
fn unparsed_reads(judge: &Reads<'_>, part: &Part<'_>) -> Option<Decision> {
    let policy = judge.policy;
    let program = part.core.first().and_then(programs::program)?;
    if part.read_only.is_ok()
        || !readonly::is_read_only_program(program)
        || !policy.has_read_rules()
    {
        return None;
    }
    if let Some(word) = part.core.iter().find(|w| w.value.is_none() || w.glob.is_some()) {
        return Some(Decision::new(
            Verdict::Ask,
            format!("`{}` may name any file, and a Read rule is about some", word.text),
            None,
        ));
    }
    let Some(dirs) = part.dirs.as_deref() else {
        return Some(Decision::new(
            Verdict::Ask,
            "it runs where the policy cannot tell, and a Read rule is about some files",
            None,
        ));
    };
    let recursive = matches!(program, "grep" | "egrep" | "fgrep" | "rg" | "diff");
    let mut asked = None;
    for word in &part.core[1..] {
        let value = word.value.as_deref().unwrap_or_default();
        // The word itself, an option's `=value`, and a short option's attached value
        // (`-f.env`).
        let mut paths = vec![value, value.split_once('=').map_or("", |(_, v)| v)];
        if let Some(rest) = value.strip_prefix('-').filter(|r| !r.starts_with('-')) {
            paths.push(rest.get(1..).unwrap_or_default());
        }
        for (dir, path) in dirs.iter().flat_map(|d| paths.iter().map(move |p| (d, *p))) {
            if path.is_empty() {
                continue;
            }
            let decision = judge.read(dir, path).1;
            // What a rule says of the path itself (not that it lies outside the workspace: the
            // allow rule covers that), and anything the walk below it found.
            let about = (decision.rule.is_some()).then_some(decision);
            let tree = if recursive { judge.tree(dir, path) } else { None };
            for d in [about, tree].into_iter().flatten() {
                match d.decision {
                    Verdict::Deny => return Some(d),
                    Verdict::Ask => {
                        asked.get_or_insert(d);
                    }
                    Verdict::Allow => {}
                }
            }
        }
    }
    asked
}

/// The words with each glob replaced by what it matches from `dir` (or kept, when nothing
/// matches, as bash keeps it).
fn expand_words(words: &[Word], dir: &Path, budget: &Cell<usize>) -> Result<Vec<Word>, String> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let (Some(pattern), Some(_)) = (&word.glob, &word.value) else {
            out.push(word.clone());
            continue;
        };
        let matches = expand_glob(pattern, dir, budget)?;
        if matches.is_empty() {
            out.push(Word { glob: None, ..word.clone() });
        } else {
            out.extend(matches.iter().map(|m| Word::literal(m)));
        }
    }
    Ok(out)
}

/// The words joined as a shell would show them: static values quoted where needed, dynamic
/// words as written.
fn join_quoted(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.value.as_deref().map_or_else(|| w.text.clone(), quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every form of a command a deny or ask rule is matched against: the words after wrappers and
/// the whole command, each as written, as values, and as quoted values; each also with the
/// program's path reduced to its name (`/bin/rm` as `rm`) and, for git, global options skipped
/// (`git -C dir push` as `git push`).
fn forms(words: &[Word], start: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    let slices: &[&[Word]] = if start == 0 { &[words] } else { &[&words[start..], words] };
    for slice in slices {
        let Some(first) = slice.first() else { continue };
        let mut variants: Vec<std::borrow::Cow<'_, [Word]>> = vec![(*slice).into()];
        // `/bin/rm` as `rm`.
        let named = match (programs::program(first), &first.value) {
            (Some(name), Some(value)) if name != value => {
                let mut named = slice.to_vec();
                named[0] = Word::literal(name);
                variants.push(named.into());
                variants.last().map(|v| v[0].clone())
            }
            _ => None,
        };
        let program = named.as_ref().unwrap_or(first);
        // git's own programs by their path: `git-push x` is `git push x`.
        if let Some(sub) = programs::program(program).and_then(|p| p.strip_prefix("git-")) {
            let mut git = vec![Word::literal("git"), Word::literal(sub)];
            git.extend(slice[1..].iter().cloned());
            variants.push(git.into());
        }
        if programs::program(program) == Some("git")
            && let Some(sub) = programs::git_subcommand(slice)
            && sub > 1
        {
            let mut skipped = vec![program.clone()];
            skipped.extend(slice[sub..].iter().cloned());
            variants.push(skipped.into());
        }
        for v in &variants {
            add(v.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "));
            // Quotes and escapes removed, and shell-quoted again: only when they change it.
            if v.iter().any(|w| w.value.as_deref() != Some(w.text.as_str())) {
                add(v
                    .iter()
                    .map(|w| w.value.as_deref().unwrap_or(&w.text))
                    .collect::<Vec<_>>()
                    .join(" "));
                add(join_quoted(v));
            }
        }
    }
    out
}

/// The directories each way of `cd`s gives, or `None` when one of them cannot be followed.
fn directories(
    judge: &Reads<'_>,
    script: &Script,
    histories: &[Vec<usize>],
) -> Option<Vec<PathBuf>> {
    let mut out = Vec::new();
    for history in histories {
        let known = judge.dirs.borrow().get(history).cloned();
        let dir = match known {
            Some(dir) => dir?,
            None => {
                let mut dir = Some(judge.cwd.to_path_buf());
                for &index in history {
                    dir = dir.and_then(|d| {
                        changed_dir(judge.policy, &script.commands.get(index)?.words, &d)
                    });
                }
                judge.dirs.borrow_mut().insert(history.clone(), dir.clone());
                dir?
            }
        };
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    Some(out)
}

/// Where a successful `cd` leads (as bash keeps it: logical, or physical with `-P`); `None` for
/// what the policy cannot follow (`pushd`, `popd`, `cd -`, a target that expands).
fn changed_dir(policy: &Policy, words: &[Word], dir: &Path) -> Option<PathBuf> {
    let start = programs::shell_builtin(words)?;
    let values: Vec<&str> = words[start..]
        .iter()
        .map(|w| if w.glob.is_some() { None } else { w.value.as_deref() })
        .collect::<Option<_>>()?;
    let (name, args) = values.split_first()?;
    if *name != "cd" {
        return None;
    }
    let cd = readonly::read_only("cd", args).ok()?;
    match cd.cd? {
        None => Some(policy.home.clone()),
        Some(target) if cd.physical => Some(resolve(&dir.join(target))),
        Some(target) => {
            // bash keeps the path as written (`..` taken as text), and when that is no
            // directory it tries the path as the kernel resolves it.
            let logical = normalize(dir, Path::new(target));
            Some(if logical.is_dir() { logical } else { resolve(&dir.join(target)) })
        }
    }
}

/// For a part that is a read-only built-in: the policy's verdict on each path it opens, in each
/// directory it may run in. `Err`: why it is not a read-only built-in (or cannot be judged).
fn read_only_reads(
    judge: &Reads<'_>,
    core: &[Word],
    dirs: Option<&[PathBuf]>,
    may_write: bool,
) -> Result<Vec<Decision>, String> {
    let policy = judge.policy;
    let Some((program, _)) = core.split_first() else { return Err("nothing runs".into()) };
    let Some(program_value) = program.value.as_deref().filter(|_| program.glob.is_none()) else {
        return Err(format!("the program `{}` expands", program.text));
    };
    if let Some(word) = core.iter().find(|w| w.value.is_none()) {
        return Err(format!("`{}` expands", word.text));
    }
    let mut words = Vec::with_capacity(core.len());
    for word in &core[1..] {
        let Some(pattern) = &word.glob else {
            words.push(word.clone());
            continue;
        };
        if may_write {
            return Err(format!(
                "`{}` expands after something in the line that may create files",
                word.text
            ));
        }
        let Some([dir]) = dirs else {
            return Err(format!("`{}` expands where the policy cannot tell", word.text));
        };
        let matches = expand_glob(pattern, dir, &judge.globbed)?;
        if let Some(option) = matches.iter().find(|m| m.starts_with('-')) {
            return Err(format!("`{}` expands to `{option}`, which reads as an option", word.text));
        }
        if matches.is_empty() {
            words.push(Word { glob: None, ..word.clone() });
        }
        words.extend(matches.iter().map(|m| Word::literal(m)));
    }
    let args: Vec<&str> = words.iter().map(|w| w.value.as_deref().unwrap_or_default()).collect();
    let ro = readonly::read_only(program_value, &args)?;
    let Some(dirs) = dirs else {
        return Err("it runs after a `cd` whose target is not known".into());
    };
    // Every read-only command reads where it runs (`ls`, `grep -r` and `find` without a path,
    // `rg`); judging it for all is harmless. `cd` alone goes home.
    if ro.files_only {
        for dir in dirs {
            for read in &ro.reads {
                if judge.read(dir, read).0.real.is_dir() {
                    return Err(format!(
                        "`{program_value}` given the directory `{read}` reads files in it"
                    ));
                }
            }
        }
    }
    let home = policy.home.to_string_lossy();
    let mut reads: Vec<&str> = ro.reads.clone();
    reads.push(".");
    if ro.cd == Some(None) {
        reads.push(&home);
    }
    let mut out = Vec::new();
    for dir in dirs {
        for read in &reads {
            out.push(judge.read(dir, read).1);
        }
        for tree in &ro.trees {
            if let Some(d) = judge.tree(dir, tree) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// The paths a glob matches from `dir`, as bash would pass them (sorted; hidden names only when
/// the pattern's component starts with `.`). Empty: nothing matches (bash then passes the word
/// as it is).
fn expand_glob(pattern: &str, dir: &Path, budget: &Cell<usize>) -> Result<Vec<String>, String> {
    let unsupported = || format!("the glob `{pattern}` is not one the policy expands");
    if !plain_brackets(pattern) || pattern.contains("**") {
        return Err(unsupported());
    }
    let absolute = pattern.starts_with('/');
    // (the path as bash prints it, the directory it names)
    let mut found: Vec<(String, PathBuf)> = vec![(
        if absolute { "/".into() } else { String::new() },
        if absolute { PathBuf::from("/") } else { dir.to_path_buf() },
    )];
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    // `*/` matches directories only, and bash passes them with the slash.
    let dirs_only = pattern.ends_with('/');
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len() && !dirs_only;
        let is_glob = has_glob(component);
        let mut next = Vec::new();
        for (shown, real) in &found {
            let join = |name: &str| {
                let sep = if shown.is_empty() || shown.ends_with('/') { "" } else { "/" };
                (format!("{shown}{sep}{name}"), real.join(name))
            };
            if !is_glob {
                let name = unescape(component);
                let (s, r) = join(&name);
                if last || r.is_dir() {
                    next.push((s, r));
                }
                continue;
            }
            let matcher = globset::GlobBuilder::new(component)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|_| unsupported())?
                .compile_matcher();
            let Ok(entries) = std::fs::read_dir(real) else { continue };
            let mut names: Vec<String> = Vec::new();
            // bash before 5.2 (and sh) lets `.*` match `.` and `..`: they count here too.
            if component.starts_with('.') {
                names.extend(
                    [".", ".."].into_iter().filter(|d| matcher.is_match(d)).map(String::from),
                );
            }
            for entry in entries {
                let name = entry.map_err(|_| unsupported())?.file_name();
                // A name that is not UTF-8 would be passed as bytes the policy cannot judge.
                let name = name.into_string().map_err(|_| unsupported())?;
                if (!name.starts_with('.') || component.starts_with('.')) && matcher.is_match(&name)
                {
                    names.push(name);
                }
            }
            names.sort();
            for name in names {
                let (s, r) = join(&name);
                if last || r.is_dir() {
                    next.push((s, r));
                }
            }
            if next.len() > MAX_GLOB_MATCHES {
                return Err(format!("`{pattern}` matches more than {MAX_GLOB_MATCHES} paths"));
            }
        }
        found = next;
    }
    // All the globs of a decision together match at most this many paths.
    budget.set(budget.get() + found.len());
    if budget.get() > MAX_GLOB_MATCHES * 4 {
        return Err(format!(
            "the globs of this line match more than {} paths",
            MAX_GLOB_MATCHES * 4
        ));
    }
    let slash = if dirs_only { "/" } else { "" };
    Ok(found.into_iter().map(|(shown, _)| format!("{shown}{slash}")).collect())
}

/// Whether every bracket expression of a glob is a plain set (`[abc]`, `[a-z]`, `[!x]`), read
/// alike by bash and the glob matcher: no classes (`[[:alpha:]]`, `[[=o=]]`, `[[.o.]]`), no
/// escapes or `]` inside, no `^` for negation.
fn plain_brackets(pattern: &str) -> bool {
    let mut rest = pattern;
    let mut escaped = false;
    while let Some((i, c)) = rest.char_indices().next() {
        rest = &rest[i + c.len_utf8()..];
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => {
                let Some(end) = rest.find(']') else { continue };
                let set = &rest[..end];
                let body = set.strip_prefix('!').unwrap_or(set);
                if body.is_empty() || set.starts_with('^') || body.contains(['[', '\\']) {
                    return false;
                }
                rest = &rest[end + 1..];
            }
            _ => {}
        }
    }
    true
}

fn has_glob(component: &str) -> bool {
    let mut escaped = false;
    for c in component.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

fn unescape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    let mut escaped = false;
    for c in component.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// A redirection that opens no file of the workspace's: `/dev/null`, or the command's own output
/// streams.
fn harmless_target(word: &Word) -> bool {
    matches!(
        word.value.as_deref(),
        Some("/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/fd/1" | "/dev/fd/2")
    ) && word.glob.is_none()
}

fn spec_matches(rule: &Rule, text: &str) -> bool {
    rule.specifier.as_deref().is_none_or(|spec| bash_matches(spec, text))
}

/// The allow rule that covers this part, if any: it matches what the shell will run, and it
/// spells out every word that decides what code runs. A command whose further arguments come
/// from standard input (bare `xargs`) is covered only by a rule ending in a wildcard, and only
/// when no argument can make it run code.
fn allowing_rule<'a>(policy: &'a Policy, part: &Part<'_>) -> Option<&'a Rule> {
    let needed = programs::literal_words_needed(part.core);
    if part.wrapped.stdin_args {
        // Words from standard input may be anything: only a program no argument can make run
        // code (one that would need no word spelt out even with an unknown one) is covered,
        // and only when no Read rule is about anything (they may name any file).
        let mut with_stdin = part.core.to_vec();
        with_stdin.push(Word { text: "$STDIN".into(), value: None, glob: None });
        if programs::literal_words_needed(&with_stdin) != 0 || policy.has_read_rules() {
            return None;
        }
    }
    // Globs count as the words bash will pass: known, none read as an option, and spelt out as
    // far as the program needs.
    let mut needed = needed;
    if part.core.iter().any(|w| w.glob.is_some()) {
        let expansions = part.expansions.as_ref()?;
        for words in expansions {
            let core = &words[programs::strip_wrappers(words).start..];
            let globbed = core.iter().filter(|w| !part.core.contains(w));
            if globbed.clone().any(|w| w.value.as_deref().is_some_and(|v| v.starts_with('-'))) {
                return None;
            }
            needed = needed.max(programs::literal_words_needed(core));
        }
    }
    let must_spell = if needed == programs::EXACT {
        String::new()
    } else {
        join_quoted(&part.core[..needed.min(part.core.len())])
    };
    // A rule written with quotes (`Bash(git commit -m "wip")`) matches the line as written too;
    // what decides is still the words the shell passes (`must_spell` above).
    let written = part.core.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
    policy.rules_for(&["Bash"], RuleKind::Allow).find(|rule| {
        if !spec_matches(rule, &part.text) && !spec_matches(rule, &written) {
            return false;
        }
        let spec = rule.specifier.as_deref().unwrap_or("*");
        if part.wrapped.stdin_args {
            return spec.ends_with('*');
        }
        if needed == 0 {
            return true;
        }
        if !spec.contains('*') {
            return true; // an exact rule spells out everything
        }
        if needed == programs::EXACT {
            // Every word decides what runs (or, with no arguments, standard input does, as in
            // `echo CODE | m4`): only an exact rule covers it.
            return false;
        }
        let literal = literal_prefix(spec);
        literal == must_spell
            || literal.strip_prefix(&must_spell).is_some_and(|rest| rest.starts_with(' '))
    })
}

/// Would an allow rule have matched if code-running arguments were not special? (For the reason.)
fn rule_would_match(policy: &Policy, part: &Part<'_>) -> bool {
    policy.rules_for(&["Bash"], RuleKind::Allow).any(|r| spec_matches(r, &part.text))
}

/// `rm`/`rmdir` of `/`, home, a workspace root or one of its parents.
fn critical_removal(policy: &Policy, targets: &[Word], dirs: Option<&[PathBuf]>) -> Option<String> {
    let home = resolve(&policy.home);
    for word in targets {
        let (Some(v), None) = (&word.value, &word.glob) else {
            return Some(format!("`rm` of `{}`, which expands, is always asked", word.text));
        };
        if v.starts_with('-') {
            continue;
        }
        let Some(dirs) = dirs else {
            return Some("`rm` after a `cd` whose target is not known is always asked".into());
        };
        for dir in dirs {
            let real = resolve(&dir.join(v));
            let critical = real == Path::new("/")
                || real == home
                || policy.roots.iter().any(|root| root.starts_with(&real));
            if critical {
                return Some(format!(
                    "removing {} (the root, home, or a workspace or its parent) is always asked",
                    real.display()
                ));
            }
        }
    }
    None
}

/// `bash -c SCRIPT` and friends inside a command line: the script, to be judged itself.
fn nested_script(core: &[Word]) -> Option<(String, bool)> {
    let argv: Option<Vec<String>> =
        core.iter().map(|w| if w.glob.is_some() { None } else { w.value.clone() }).collect();
    programs::shell_script(&argv?, false).map(|(s, posix)| (s.to_string(), posix))
}
