//! The policy engine: a pure function from a request and its context to allow, ask or deny,
//! with the rule or reason that decided. It reads no clock and touches the filesystem only to
//! resolve symlinks in the paths it judges (so it sees what the kernel will open).
//!
//! Semantics are those of `PERMISSIONS.md` (Claude Code's permission rules): lists are checked
//! deny, then ask, then allow; compound commands are split with a real shell parser and every
//! part must be allowed; what cannot be parsed or understood is asked. On top of that the host
//! adds what that system leaves to chance: a broad rule never covers arguments that make a
//! program run code it is given (`programs::literal_words_needed`), reads and writes are
//! judged on the resolved path as well as the written one, and protected paths always ask.
//!
//! To change it safely: every rule of `PERMISSIONS.md` has a table-driven test in
//! `agent-host/tests/policy.rs`; keep them passing and add a row for each new behaviour.

mod bash;
mod builtins;
pub(crate) mod matching;
pub(crate) mod programs;
pub mod rules;
pub(crate) mod shell;

use std::fmt;
use std::path::{Path, PathBuf};

use matching::{PathPattern, domain_matches, normalize, resolve, tool_matches};
pub use rules::{Mode, Rule, RuleKind, Settings, SettingsError};

/// What is being judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A shell command line (an agent's Bash tool call).
    Bash(String),
    /// A program with exact arguments (a remote `run` request). `[sh, -c, SCRIPT]` is judged
    /// as the script.
    Argv(Vec<String>),
    /// Reading a file or listing a directory.
    Read(PathBuf),
    /// Creating, writing or editing a file.
    Edit(PathBuf),
    /// Fetching a URL.
    WebFetch(String),
    /// Any other tool by name (`mcp__server__tool`).
    Tool(String),
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// A person must approve first.
    Ask,
    /// Never.
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Ask => "ask",
            Self::Deny => "deny",
        })
    }
}

/// A verdict with the reason for it and the rule that decided, if one did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allow, ask or deny.
    pub decision: Verdict,
    /// For people: why.
    pub reason: String,
    /// The rule that decided, as written (`Bash(npm run test *)`), if one did.
    pub rule: Option<String>,
}

impl Decision {
    fn new(decision: Verdict, reason: impl Into<String>, rule: Option<&Rule>) -> Self {
        Self { decision, reason: reason.into(), rule: rule.map(ToString::to_string) }
    }
}

/// Whether a settings file's allow rules count (see invariant 6 of DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The user's own files and `--settings`: everything counts.
    Trusted,
    /// A workspace nobody has trusted yet: its deny and ask rules count, its allow rules and
    /// extra directories do not.
    Untrusted,
}

/// The merged rules, the mode and the workspace: everything [`Policy::decide`] needs besides
/// the subject and the working directory.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Each rule's specifier compiled as a path pattern, for the path tools.
    patterns: Vec<Option<PathPattern>>,
    mode: Mode,
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
    notes: Vec<String>,
}

impl Policy {
    /// Merges settings files for a workspace. `mode` overrides every `defaultMode`; otherwise
    /// the most restrictive `defaultMode` of the files wins. `protected` are the host's own
    /// directories (config, state, keys), which are never written without asking.
    pub fn new(
        workspace: &Path,
        files: Vec<(Settings, Trust)>,
        mode: Option<Mode>,
        protected: Vec<PathBuf>,
    ) -> Self {
        let mut rules = Vec::new();
        let mut roots = vec![resolve(&normalize(Path::new("/"), workspace))];
        let mut notes = Vec::new();
        let mut file_mode: Option<Mode> = None;
        for (settings, trust) in files {
            for rule in settings.rules {
                if rule.kind == RuleKind::Allow && trust == Trust::Untrusted {
                    notes.push(format!(
                        "allow rule {rule} in {} is ignored until the workspace is trusted",
                        rule.source.display()
                    ));
                    continue;
                }
                if rule.kind == RuleKind::Allow && !matching::allow_glob_honoured(&rule.tool) {
                    notes.push(format!(
                        "allow rule {rule}: tool-name globs are ignored in allow rules"
                    ));
                    continue;
                }
                rules.push(rule);
            }
            if trust == Trust::Trusted {
                roots.extend(settings.additional_directories.iter().map(|d| resolve(d)));
            }
            if let Some(m) = settings.default_mode {
                file_mode = Some(file_mode.map_or(m, |old| more_restrictive(old, m)));
            }
        }
        let protected = protected.iter().map(|p| resolve(&normalize(Path::new("/"), p))).collect();
        let patterns = rules
            .iter()
            .map(|r| match (&r.specifier, r.tool.as_str()) {
                (Some(spec), "Read" | "Edit" | "Write") => PathPattern::new(spec, &r.anchor),
                _ => None,
            })
            .collect();
        Self {
            rules,
            patterns,
            mode: mode.or(file_mode).unwrap_or_default(),
            roots,
            protected,
            notes,
        }
    }

    /// Warnings from merging (ignored rules), for `agent-host check` to show.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a command reaches the network by design (a network client, a package manager,
    /// git talking to a remote). The executor turns the network on for it only when it was
    /// allowed by an explicit rule or approved by a person; otherwise it runs offline.
    pub fn wants_network(&self, argv: &[String]) -> bool {
        let script = match programs::shell_script(argv) {
            Some(script) => shell::parse(script).ok(),
            None => Some(shell::Script {
                commands: vec![shell::SimpleCommand {
                    assignments: Vec::new(),
                    words: argv
                        .iter()
                        .map(|a| shell::Word {
                            text: a.clone(),
                            value: Some(a.clone()),
                            glob: false,
                        })
                        .collect(),
                    in_subshell: false,
                }],
                redirects: Vec::new(),
            }),
        };
        script.is_some_and(|s| {
            s.commands
                .iter()
                .any(|c| programs::network_client(&c.words[programs::strip_wrappers(&c.words)..]))
        })
    }

    /// Judges `subject` with `cwd` as the working directory.
    pub fn decide(&self, subject: &Subject, cwd: &Path) -> Decision {
        let cwd = normalize(Path::new("/"), cwd);
        let decision = match subject {
            Subject::Bash(line) => bash::decide_line(self, line, &cwd),
            Subject::Argv(argv) => bash::decide_argv(self, argv, &cwd),
            Subject::Read(path) => self.read(&normalize(&cwd, path), &cwd),
            Subject::Edit(path) => self.edit(&normalize(&cwd, path), &cwd),
            Subject::WebFetch(url) => self.web_fetch(url),
            Subject::Tool(name) => self.tool(name),
        };
        self.apply_mode(decision)
    }

    /// In `dontAsk`, whatever would be asked is denied.
    fn apply_mode(&self, decision: Decision) -> Decision {
        if self.mode == Mode::DontAsk && decision.decision == Verdict::Ask {
            return Decision {
                decision: Verdict::Deny,
                reason: format!("dontAsk mode denies what would be asked: {}", decision.reason),
                rule: decision.rule,
            };
        }
        decision
    }

    fn rules_for<'a>(
        &'a self,
        tools: &'a [&'a str],
        kind: RuleKind,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            r.kind == kind
                && tools.iter().any(|t| tool_matches(&r.tool, t, kind == RuleKind::Allow))
        })
    }

    fn inside_roots(&self, real: &Path) -> bool {
        self.roots.iter().any(|root| real.starts_with(root))
    }

    fn protected(&self, lexical: &Path, real: &Path) -> bool {
        let git_internal = |p: &Path| {
            self.roots.iter().any(|root| {
                p.strip_prefix(root).is_ok_and(|rel| {
                    rel.starts_with(".git/hooks")
                        || rel == Path::new(".git/config")
                        || rel.starts_with(".git/config")
                })
            })
        };
        git_internal(lexical)
            || git_internal(real)
            || self.protected.iter().any(|p| real.starts_with(p) || lexical.starts_with(p))
    }

    /// A path rule matches the written path or its resolution (for deny and ask), or both (for
    /// allow), as PERMISSIONS.md says of symlinks.
    fn path_rule<'a>(
        &'a self,
        tools: &[&str],
        kind: RuleKind,
        lexical: &Path,
        real: &Path,
        cwd: &Path,
    ) -> Option<&'a Rule> {
        self.rules.iter().zip(&self.patterns).find_map(|(r, pattern)| {
            if r.kind != kind
                || !tools.iter().any(|t| tool_matches(&r.tool, t, kind == RuleKind::Allow))
            {
                return None;
            }
            let hit = match (&r.specifier, pattern) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(_), Some(p)) => {
                    let m = |path: &Path| p.matches(cwd, path);
                    if kind == RuleKind::Allow {
                        m(lexical) && m(real)
                    } else {
                        m(lexical) || m(real)
                    }
                }
            };
            hit.then_some(r)
        })
    }

    pub(crate) fn read(&self, lexical: &Path, cwd: &Path) -> Decision {
        let real = resolve(lexical);
        let shown = lexical.display();
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Deny, lexical, &real, cwd) {
            return Decision::new(
                Verdict::Deny,
                format!("reading {shown} is denied by {r}"),
                Some(r),
            );
        }
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Ask, lexical, &real, cwd) {
            return Decision::new(Verdict::Ask, format!("reading {shown} asks by {r}"), Some(r));
        }
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Allow, lexical, &real, cwd) {
            return Decision::new(
                Verdict::Allow,
                format!("reading {shown} is allowed by {r}"),
                Some(r),
            );
        }
        if self.inside_roots(&real) {
            return Decision::new(Verdict::Allow, format!("{shown} is inside the workspace"), None);
        }
        Decision::new(Verdict::Ask, format!("{shown} resolves outside the workspace"), None)
    }

    pub(crate) fn edit(&self, lexical: &Path, cwd: &Path) -> Decision {
        let real = resolve(lexical);
        let shown = lexical.display();
        // A Read deny also blocks writing the same path.
        if let Some(r) =
            self.path_rule(&["Edit", "Write", "Read"], RuleKind::Deny, lexical, &real, cwd)
        {
            return Decision::new(
                Verdict::Deny,
                format!("writing {shown} is denied by {r}"),
                Some(r),
            );
        }
        if self.mode == Mode::Plan {
            return Decision::new(Verdict::Deny, "plan mode is read-only", None);
        }
        if self.protected(lexical, &real) {
            return Decision::new(
                Verdict::Ask,
                format!("{shown} is a protected path: always asked"),
                None,
            );
        }
        if let Some(r) = self.path_rule(&["Edit", "Write"], RuleKind::Ask, lexical, &real, cwd) {
            return Decision::new(Verdict::Ask, format!("writing {shown} asks by {r}"), Some(r));
        }
        if let Some(r) = self.path_rule(&["Edit", "Write"], RuleKind::Allow, lexical, &real, cwd) {
            return Decision::new(
                Verdict::Allow,
                format!("writing {shown} is allowed by {r}"),
                Some(r),
            );
        }
        if self.mode == Mode::AcceptEdits && self.inside_roots(&real) {
            return Decision::new(
                Verdict::Allow,
                format!("acceptEdits mode: {shown} is inside the workspace"),
                None,
            );
        }
        Decision::new(Verdict::Ask, format!("no rule allows writing {shown}"), None)
    }

    fn web_fetch(&self, url: &str) -> Decision {
        let Some(host) = url_host(url) else {
            return Decision::new(Verdict::Ask, format!("cannot tell the host of `{url}`"), None);
        };
        let matching = |kind| {
            self.rules_for(&["WebFetch"], kind)
                .find(|r| r.specifier.as_deref().is_none_or(|s| domain_matches(s, &host)))
        };
        if let Some(r) = matching(RuleKind::Deny) {
            return Decision::new(
                Verdict::Deny,
                format!("fetching from {host} is denied by {r}"),
                Some(r),
            );
        }
        if let Some(r) = matching(RuleKind::Ask) {
            return Decision::new(
                Verdict::Ask,
                format!("fetching from {host} asks by {r}"),
                Some(r),
            );
        }
        if let Some(r) = matching(RuleKind::Allow) {
            return Decision::new(
                Verdict::Allow,
                format!("fetching from {host} is allowed by {r}"),
                Some(r),
            );
        }
        Decision::new(Verdict::Ask, format!("no rule allows fetching from {host}"), None)
    }

    fn tool(&self, name: &str) -> Decision {
        let tools = [name];
        let plain = |kind| self.rules_for(&tools, kind).find(|r| r.specifier.is_none());
        if let Some(r) = plain(RuleKind::Deny) {
            return Decision::new(Verdict::Deny, format!("{name} is denied by {r}"), Some(r));
        }
        if let Some(r) = plain(RuleKind::Ask) {
            return Decision::new(Verdict::Ask, format!("{name} asks by {r}"), Some(r));
        }
        if self.mode == Mode::Plan {
            return Decision::new(Verdict::Deny, "plan mode allows reads only", None);
        }
        if let Some(r) = plain(RuleKind::Allow) {
            return Decision::new(Verdict::Allow, format!("{name} is allowed by {r}"), Some(r));
        }
        Decision::new(Verdict::Ask, format!("no rule allows {name}"), None)
    }
}

/// The stricter of two modes: plan, then dontAsk, then default, then acceptEdits.
fn more_restrictive(a: Mode, b: Mode) -> Mode {
    let rank = |m| match m {
        Mode::Plan => 0,
        Mode::DontAsk => 1,
        Mode::Default => 2,
        Mode::AcceptEdits => 3,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// The host of an `http(s)` URL, lowercased, without port or credentials.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = if host.starts_with('[') {
        host.split(']').next()?.trim_start_matches('[')
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}
