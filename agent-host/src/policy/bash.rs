//! Judging command lines and argv: split, then deny anywhere → deny; ask anywhere → ask; every
//! part allowed → allow; otherwise ask.

use std::path::{Path, PathBuf};

use super::builtins::{self, ReadOnly};
use super::matching::{bash_matches, literal_prefix, normalize, resolve};
use super::programs;
use super::rules::{Mode, Rule, RuleKind, home_dir};
use super::shell::{self, Redirect, Script, SimpleCommand, Word};
use super::{Decision, Policy, Verdict};

/// Longer command lines are always asked (PERMISSIONS.md).
const MAX_COMMAND: usize = 10_000;
/// `bash -c 'bash -c …'` is looked into this many times, then asked.
const MAX_NESTING: usize = 2;

pub(super) fn decide_line(policy: &Policy, line: &str, cwd: &Path) -> Decision {
    decide_nested(policy, line, cwd, 0)
}

fn decide_nested(policy: &Policy, line: &str, cwd: &Path, depth: usize) -> Decision {
    if line.len() > MAX_COMMAND {
        return Decision::new(
            Verdict::Ask,
            format!("the command is over {MAX_COMMAND} characters"),
            None,
        );
    }
    match shell::parse(line) {
        Ok(script) => decide_script(policy, &script, cwd, depth),
        Err(e) => Decision::new(Verdict::Ask, format!("asked because {e}"), None),
    }
}

pub(super) fn decide_argv(policy: &Policy, argv: &[String], cwd: &Path) -> Decision {
    if argv.is_empty() {
        return Decision::new(Verdict::Deny, "an empty command", None);
    }
    if let Some(script) = programs::shell_script(argv) {
        return decide_nested(policy, script, cwd, 1);
    }
    if argv.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_COMMAND {
        return Decision::new(
            Verdict::Ask,
            format!("the command is over {MAX_COMMAND} characters"),
            None,
        );
    }
    let words =
        argv.iter().map(|a| Word { text: quote(a), value: Some(a.clone()), glob: false }).collect();
    let script = Script {
        commands: vec![SimpleCommand { assignments: Vec::new(), words, in_subshell: false }],
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
    command: &'a SimpleCommand,
    /// The words after wrappers (`timeout 5`, `nice` …).
    core: &'a [Word],
    /// `core` joined: what rules match.
    text: String,
    /// The whole command without its assignments, wrappers included.
    full: String,
    /// The working directory it runs in, if known.
    cwd: Option<PathBuf>,
    /// What it reads, if it is a read-only built-in.
    read_only: Option<ReadOnly<'a>>,
    /// The policy's verdict on each path it reads (`None`: the path expands, or the directory
    /// is not known), computed once in the deny pass.
    reads: Vec<(&'a Word, Option<Decision>)>,
}

fn join(words: &[Word]) -> String {
    words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ")
}

fn decide_script(policy: &Policy, script: &Script, cwd: &Path, depth: usize) -> Decision {
    let parts = parts(script, cwd);
    let bash_rules = |kind| policy.rules_for(&["Bash"], kind);

    // 1. Deny anywhere wins. Deny rules look past every assignment and wrapper.
    for part in &parts {
        for rule in bash_rules(RuleKind::Deny) {
            if spec_matches(rule, &part.text) || spec_matches(rule, &part.full) {
                return Decision::new(
                    Verdict::Deny,
                    format!("`{}` is denied by {rule}", part.text),
                    Some(rule),
                );
            }
        }
    }
    let mut pending: Option<Decision> = None;
    let mut ask = |d: Decision| {
        if pending.is_none() {
            pending = Some(d);
        }
    };
    for redirect in &script.redirects {
        let (word, is_write) = match redirect {
            Redirect::Write(w) => (w, true),
            Redirect::Read(w) => (w, false),
        };
        if word.value.as_deref() == Some("/dev/null") {
            continue;
        }
        match (&word.value, word.glob) {
            (Some(v), false) => {
                let path = normalize(cwd, Path::new(v));
                let d = if is_write { policy.edit(&path, cwd) } else { policy.read(&path, cwd) };
                match d.decision {
                    Verdict::Deny => return d,
                    Verdict::Ask => ask(d),
                    Verdict::Allow => {}
                }
            }
            _ => ask(Decision::new(
                Verdict::Ask,
                format!("the redirection target `{}` is not a plain path", word.text),
                None,
            )),
        }
    }
    let mut parts = parts;
    for part in &mut parts {
        let Some(ro) = &part.read_only else { continue };
        let operands = ro.reads.iter().copied().chain(ro.cd.flatten());
        let judged: Vec<_> = operands
            .map(|word| {
                let d = match (&word.value, word.glob, &part.cwd) {
                    (Some(v), false, Some(dir)) => {
                        Some(policy.read(&normalize(dir, Path::new(v)), dir))
                    }
                    _ => None,
                };
                (word, d)
            })
            .collect();
        if let Some(deny) =
            judged.iter().find_map(|(_, d)| d.as_ref().filter(|d| d.decision == Verdict::Deny))
        {
            return deny.clone();
        }
        part.reads = judged;
    }

    // 2. Ask rules and what is always asked.
    for part in &parts {
        if let Some(rule) = bash_rules(RuleKind::Ask)
            .find(|r| spec_matches(r, &part.text) || spec_matches(r, &part.full))
        {
            return Decision::new(
                Verdict::Ask,
                format!("`{}` asks by {rule}", part.text),
                Some(rule),
            );
        }
        if let Some(reason) = programs::always_asked(part.core) {
            return Decision::new(Verdict::Ask, reason, None);
        }
        if let Some(targets) = programs::removal_targets(part.core)
            && let Some(critical) = critical_removal(policy, targets, part.cwd.as_deref())
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
    let mut builtins = false;
    for part in &parts {
        let read_only = if part.command.in_subshell { None } else { part.read_only.as_ref() };
        if policy.mode == Mode::Plan && read_only.is_none() {
            return Decision::new(
                Verdict::Deny,
                format!("plan mode is read-only: `{}` may write or execute", part.text),
                None,
            );
        }
        if let Some(script) = nested_script(part.core) {
            if depth >= MAX_NESTING {
                return Decision::new(Verdict::Ask, "shells nested this deep are asked", None);
            }
            let inner =
                decide_nested(policy, &script, part.cwd.as_deref().unwrap_or(cwd), depth + 1);
            if inner.decision != Verdict::Allow {
                return inner;
            }
            nested.push(format!("inside `{}`: {}", part.core[0].text, inner.reason));
            continue;
        }
        if let Some(rule) = allowing_rule(policy, part) {
            used.push(rule);
            continue;
        }
        match read_only.map(|_| builtin_reads_allowed(part)) {
            Some(Ok(())) => builtins = true,
            Some(Err(d)) => return d,
            None => {
                let why =
                    if part.command.assignments.iter().any(|(n, _)| !programs::harmless_env(n)) {
                        format!(
                            "`{}` sets environment variables no allow rule looks past",
                            part.text
                        )
                    } else if rule_would_match(policy, part) {
                        format!(
                            "`{}` runs code it is given, which a broad rule does not cover",
                            part.text
                        )
                    } else {
                        format!("no rule allows `{}`", part.text)
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
    Decision::new(Verdict::Allow, reasons.join("; "), rule)
}

/// Splits the script into parts and follows `cd` to know each part's directory.
fn parts<'a>(script: &'a Script, cwd: &Path) -> Vec<Part<'a>> {
    let mut dir = Some(cwd.to_path_buf());
    let mut out = Vec::new();
    for command in &script.commands {
        let start = programs::strip_wrappers(&command.words);
        let core = &command.words[start..];
        out.push(Part {
            command,
            core,
            text: join(core),
            full: join(&command.words),
            cwd: dir.clone(),
            read_only: builtins::read_only(core),
            reads: Vec::new(),
        });
        if core.first().and_then(programs::program) == Some("cd") {
            dir = match (command.in_subshell, core.get(1), &dir) {
                // A `cd` inside `( … )` ends with it; what follows is not known to be where.
                (true, _, _) => None,
                (false, None, _) => Some(home_dir()),
                (false, Some(Word { value: Some(v), glob: false, .. }), Some(d)) => {
                    Some(normalize(d, Path::new(v)))
                }
                _ => None,
            };
        }
    }
    out
}

fn spec_matches(rule: &Rule, text: &str) -> bool {
    rule.specifier.as_deref().is_none_or(|spec| bash_matches(spec, text))
}

/// The allow rule that covers this part, if any: it matches, the assignments before the part
/// are harmless, and the rule spells out every word that decides what code runs.
fn allowing_rule<'a>(policy: &'a Policy, part: &Part<'_>) -> Option<&'a Rule> {
    if part.command.assignments.iter().any(|(n, _)| !programs::harmless_env(n)) {
        return None;
    }
    let needed = programs::literal_words_needed(part.core);
    let must_spell = if needed == programs::EXACT {
        String::new()
    } else {
        join(&part.core[..needed.min(part.core.len())])
    };
    policy.rules_for(&["Bash"], RuleKind::Allow).find(|rule| {
        if !spec_matches(rule, &part.text) {
            return false;
        }
        if needed == 0 {
            return true;
        }
        let spec = rule.specifier.as_deref().unwrap_or("*");
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

/// A read-only built-in is allowed when every path it reads is (as judged in the deny pass).
fn builtin_reads_allowed(part: &Part<'_>) -> Result<(), Decision> {
    if part.command.assignments.iter().any(|(n, _)| !programs::harmless_env(n)) {
        return Err(Decision::new(
            Verdict::Ask,
            format!("`{}` sets environment variables", part.text),
            None,
        ));
    }
    for (word, decision) in &part.reads {
        match decision {
            Some(d) if d.decision == Verdict::Allow => {}
            Some(d) => return Err(d.clone()),
            None if part.cwd.is_none() => {
                return Err(Decision::new(
                    Verdict::Ask,
                    format!("`{}` runs after a `cd` whose target is not known", part.text),
                    None,
                ));
            }
            None => {
                return Err(Decision::new(
                    Verdict::Ask,
                    format!("`{}` reads `{}`, which expands", part.text, word.text),
                    None,
                ));
            }
        }
    }
    Ok(())
}

/// `rm`/`rmdir` of `/`, home, a workspace root or one of its parents.
fn critical_removal(policy: &Policy, targets: &[Word], cwd: Option<&Path>) -> Option<String> {
    let home = resolve(&home_dir());
    for word in targets {
        let Some(v) = &word.value else {
            return Some(format!("`rm` of `{}`, which expands, is always asked", word.text));
        };
        if v.starts_with('-') {
            continue;
        }
        let Some(dir) = cwd else {
            return Some("`rm` after a `cd` whose target is not known is always asked".into());
        };
        let real = resolve(&normalize(dir, Path::new(v)));
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
    None
}

/// `bash -c SCRIPT` and friends inside a command line: the script, to be judged itself.
fn nested_script(core: &[Word]) -> Option<String> {
    let argv: Option<Vec<String>> = core.iter().map(|w| w.value.clone()).collect();
    programs::shell_script(&argv?).map(str::to_string)
}
