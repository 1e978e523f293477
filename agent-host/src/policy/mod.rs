//! The policy engine: a pure function from a request and its context to allow, ask or deny,
//! with the rule or reason that decided. It reads no clock and touches the filesystem only to
//! read what it judges: resolving paths (so it sees what the kernel will open), expanding
//! globs, walking what a recursive reader reads when a Read rule may be about a file there,
//! and looking for the marks of a git directory among protected paths.
//!
//! Semantics are those of `PERMISSIONS.md` (Claude Code's permission rules): lists are checked
//! deny, then ask, then allow; compound commands are split with a real shell parser and every
//! part must be allowed; what cannot be parsed or understood is asked. On top of that the host
//! adds what that system leaves to chance:
//! - whatever runs without a rule is an allow-list: the read-only built-ins (`readonly`), each
//!   with the exact grammar of its options (`options`), every path it opens judged as a read in
//!   the directory in force for that part of the line;
//! - a broad rule never covers arguments that make a program run code it is given
//!   (`programs::literal_words_needed`);
//! - deny and ask rules match the words the shell will run (quotes removed, braces expanded,
//!   `/bin/rm` as `rm`, git's global options skipped);
//! - reads and writes are judged on where the kernel will open them as well as the written
//!   path, and protected paths always ask;
//! - an environment variable set for a command asks unless it is on a short harmless list,
//!   whoever sends it.
//!
//! SECURITY.md says what is allowed without a person and why, and what the effects oracle
//! (`agent-host/tests/oracle/`) proves. To change this module safely: every rule of
//! `PERMISSIONS.md` has a table-driven test in `agent-host/tests/policy.rs`; keep them passing,
//! add a row for each new behaviour, and run the oracle.

mod bash;
pub(crate) mod matching;
pub(crate) mod options;
pub(crate) mod programs;
mod readonly;
pub mod rules;
pub(crate) mod shell;

use std::fmt;
use std::path::{Path, PathBuf};

use matching::{Located, PathPattern, domain_matches, locate, normalize, resolve, tool_matches};
pub use rules::{Mode, Rule, RuleKind, Settings, SettingsError};

/// What is being judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A shell command line (an agent's Bash tool call).
    Bash(String),
    /// A program with exact arguments (a remote `run` request). `[sh, -c, SCRIPT]` is judged
    /// as the script.
    Argv(Vec<String>),
    /// A program with exact arguments and environment variables set for it (a `run` request
    /// with `env`): judged as the argv with `NAME=VALUE` in front, so a variable not on the
    /// harmless list asks, whoever sends it.
    ArgvEnv(Vec<String>, Vec<(String, String)>),
    /// Reading a file or listing a directory.
    Read(PathBuf),
    /// Creating, writing or editing a file.
    Edit(PathBuf),
    /// Fetching a URL.
    WebFetch(String),
    /// Any other tool by name (`mcp__server__tool`).
    Tool(String),
    /// Starting a program as a session (a device's `start_session`): `Session(…)` rules.
    Session(Vec<String>),
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
    /// For an allow: every part of it was allowed by an explicit allow rule (not by a read-only
    /// built-in, the default for reads inside the workspace, or a mode). A device's command
    /// runs unasked only when this holds.
    pub explicit: bool,
    /// The programs the policy judged as command words (wrappers and nested shells included),
    /// by name: whatever else a command runs was not judged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<String>,
}

impl Decision {
    fn new(decision: Verdict, reason: impl Into<String>, rule: Option<&Rule>) -> Self {
        Self {
            decision,
            reason: reason.into(),
            rule: rule.map(ToString::to_string),
            explicit: decision == Verdict::Allow && rule.is_some(),
            programs: Vec::new(),
        }
    }

    /// A decision made by the host's own rules rather than by policy (session input).
    pub fn fixed(decision: Verdict, reason: impl Into<String>) -> Self {
        Self::new(decision, reason, None)
    }
}

/// Entries below a directory that a recursive reader's decision looks at before it asks.
const MAX_TREE_ENTRIES: usize = 20_000;

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
    /// What `~` is, for the shell and for `~/…` rules.
    home: PathBuf,
    notes: Vec<String>,
    /// For each tool the policy asks about and each list, the rules that apply, in order
    /// (tool-name globs resolved once here rather than at every decision).
    index: Vec<(&'static str, RuleKind, Vec<usize>)>,
}

/// The tools whose rules are looked up at every decision.
const INDEXED_TOOLS: [&str; 5] = ["Bash", "Read", "Edit", "Write", "WebFetch"];

impl Policy {
    /// Merges settings files for a workspace. `mode` overrides every `defaultMode`; otherwise
    /// the most restrictive `defaultMode` of the files wins (an untrusted file's counts only
    /// when it tightens: `acceptEdits` there is ignored until the workspace is trusted).
    /// `protected` are the host's own directories (config, state, keys), which are never
    /// written without asking. Home is `$HOME` (see [`Policy::with_home`]).
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
                if rule.kind == RuleKind::Allow
                    && rule.tool == "Session"
                    && rule.specifier.as_deref().is_none_or(session_rule_open)
                {
                    notes.push(format!(
                        "allow rule {rule}: a session starts unasked only for a command line \
                         named whole (`Session(claude)`); this rule is ignored"
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
                if trust == Trust::Untrusted && more_restrictive(m, Mode::Default) != m {
                    notes.push(format!(
                        "defaultMode {m:?} in {} is ignored until the workspace is trusted",
                        settings.source.display()
                    ));
                } else {
                    file_mode = Some(file_mode.map_or(m, |old| more_restrictive(old, m)));
                }
            }
        }
        let protected = protected.iter().map(|p| resolve(&normalize(Path::new("/"), p))).collect();
        let mut policy = Self {
            rules,
            patterns: Vec::new(),
            mode: mode.or(file_mode).unwrap_or_default(),
            roots,
            protected,
            home: rules::home_dir(),
            notes,
            index: Vec::new(),
        };
        policy.compile_patterns();
        policy
    }

    /// The same policy with `home` as the user's home directory (what `~` means in commands and
    /// in `~/…` rules). Tests and the effects oracle judge a world with a home of its own.
    pub fn with_home(mut self, home: &Path) -> Self {
        self.home = resolve(&normalize(Path::new("/"), home));
        self.compile_patterns();
        self
    }

    fn compile_patterns(&mut self) {
        self.index = INDEXED_TOOLS
            .iter()
            .flat_map(|tool| {
                [RuleKind::Deny, RuleKind::Ask, RuleKind::Allow].map(|kind| {
                    let matching = self
                        .rules
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| {
                            r.kind == kind && tool_matches(&r.tool, tool, kind == RuleKind::Allow)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    (*tool, kind, matching)
                })
            })
            .collect();
        self.patterns = self
            .rules
            .iter()
            .map(|r| match (&r.specifier, r.tool.as_str()) {
                (Some(spec), "Read" | "Edit" | "Write") => {
                    PathPattern::new(spec, &r.anchor, &self.home)
                }
                _ => None,
            })
            .collect();
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
        let commands = match programs::shell_script(argv, true) {
            Some((script, posix)) => match shell::parse(script, &self.shell_context(posix)) {
                Ok(s) => s.commands.into_iter().map(|c| c.words).collect(),
                Err(_) => return false,
            },
            None => vec![argv.iter().map(|a| shell::Word::literal(a)).collect::<Vec<_>>()],
        };
        commands
            .iter()
            .any(|words| programs::network_client(&words[programs::strip_wrappers(words).start..]))
    }

    fn shell_context(&self, posix: bool) -> shell::Context<'_> {
        shell::Context { home: &self.home, posix, changes_dir: &programs::changes_dir }
    }

    /// Judges `subject` with `cwd` as the working directory.
    pub fn decide(&self, subject: &Subject, cwd: &Path) -> Decision {
        let cwd = normalize(Path::new("/"), cwd);
        let decision = match subject {
            Subject::Bash(line) => bash::decide_line(self, line, &cwd),
            Subject::Argv(argv) => bash::decide_argv(self, argv, &[], &cwd),
            Subject::ArgvEnv(argv, env) => bash::decide_argv(self, argv, env, &cwd),
            Subject::Read(path) => self.read(&locate(&cwd, path), &cwd),
            Subject::Edit(path) => self.edit(&locate(&cwd, path), &cwd),
            Subject::WebFetch(url) => self.web_fetch(url),
            Subject::Tool(name) => self.tool(name),
            Subject::Session(command) => self.session(command),
        };
        self.apply_mode(decision)
    }

    /// In `dontAsk`, whatever would be asked is denied.
    fn apply_mode(&self, decision: Decision) -> Decision {
        if self.mode == Mode::DontAsk && decision.decision == Verdict::Ask {
            return Decision {
                decision: Verdict::Deny,
                reason: format!("dontAsk mode denies what would be asked: {}", decision.reason),
                ..decision
            };
        }
        decision
    }

    fn rules_for<'a>(
        &'a self,
        tools: &'a [&'a str],
        kind: RuleKind,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        let indices = self.rule_indices(tools, kind);
        (0..indices.len()).map(move |n| &self.rules[indices[n]])
    }

    /// The indices of the rules on `kind`'s list that apply to any of `tools`, in order.
    fn rule_indices(&self, tools: &[&str], kind: RuleKind) -> std::borrow::Cow<'_, [usize]> {
        let indexed = |tool: &str| {
            self.index.iter().find(|(t, k, _)| *t == tool && *k == kind).map(|(_, _, i)| i)
        };
        if let [tool] = tools
            && let Some(indices) = indexed(tool)
        {
            return indices.as_slice().into();
        }
        let mut out: Vec<usize> = Vec::new();
        for tool in tools {
            match indexed(tool) {
                Some(indices) => out.extend(indices),
                None => out.extend(self.rules.iter().enumerate().filter_map(|(i, r)| {
                    (r.kind == kind && tool_matches(&r.tool, tool, kind == RuleKind::Allow))
                        .then_some(i)
                })),
            }
        }
        out.sort_unstable();
        out.dedup();
        out.into()
    }

    /// Whether any Read deny or ask rule exists.
    pub(crate) fn has_read_rules(&self) -> bool {
        let any = |kind| self.rules_for(&["Read"], kind).next().is_some();
        any(RuleKind::Deny) || any(RuleKind::Ask)
    }

    /// For a command that reads every file below `place` (not following symlinks met there, as
    /// `grep -r` and `rg` do not): a denial when a Read deny rule is about a file there, a
    /// question when an ask rule is or when there are more than [`MAX_TREE_ENTRIES`] entries to
    /// look at; `None` when nothing there is any rule's business.
    pub(crate) fn read_tree(&self, place: &Located, cwd: &Path) -> Option<Decision> {
        if !self.has_read_rules() {
            return None;
        }
        let mut stack = vec![place.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir.real) else { continue };
            for entry in entries.flatten() {
                seen += 1;
                if seen > MAX_TREE_ENTRIES {
                    return Some(Decision::new(
                        Verdict::Ask,
                        format!(
                            "{} holds more than {MAX_TREE_ENTRIES} entries to check against the \
                             Read rules",
                            place.lexical.display()
                        ),
                        None,
                    ));
                }
                let name = entry.file_name();
                let child =
                    Located { lexical: dir.lexical.join(&name), real: dir.real.join(&name) };
                for (kind, verdict) in
                    [(RuleKind::Deny, Verdict::Deny), (RuleKind::Ask, Verdict::Ask)]
                {
                    if let Some(r) = self.path_rule(&["Read"], kind, &child, cwd) {
                        return Some(Decision::new(
                            verdict,
                            format!(
                                "it reads every file below {}, {} among them, which {r} is about",
                                place.lexical.display(),
                                child.lexical.display()
                            ),
                            Some(r),
                        ));
                    }
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child);
                }
            }
        }
        None
    }

    fn inside_roots(&self, real: &Path) -> bool {
        self.roots.iter().any(|root| real.starts_with(root))
    }

    /// Protected paths are never written without asking, whatever the rules and the mode say:
    /// anything inside any `.git` (the file of a worktree or submodule too: hooks, config,
    /// `modules/*`, `worktrees/*`, `commondir`, in every nested repository), a file named `HEAD`
    /// and anything inside a directory that holds one (git takes such a directory for a bare
    /// repository and runs what its `config` says), the agents' own settings
    /// (`.claude/settings*.json` anywhere, `~/.claude/…` included, and `.mcp.json`, which names
    /// programs an agent starts), and the host's own directories. Names are compared without
    /// case, as a case-insensitive filesystem would.
    fn protected(&self, place: &Located) -> bool {
        let named =
            |c: &std::ffi::OsStr, name: &str| c.to_string_lossy().eq_ignore_ascii_case(name);
        let agent_or_git = |p: &Path| {
            p.components().any(|c| named(c.as_os_str(), ".git"))
                || p.file_name().is_some_and(|n| named(n, ".mcp.json") || named(n, "HEAD"))
                || (p.parent().and_then(Path::file_name).is_some_and(|d| named(d, ".claude"))
                    && p.file_name()
                        .map(|n| n.to_string_lossy().to_ascii_lowercase())
                        .is_some_and(|n| n.starts_with("settings") && n.ends_with(".json")))
                || p.ancestors()
                    .skip(1)
                    .take_while(|a| self.inside_roots(a))
                    .any(|a| a.join("HEAD").exists())
        };
        agent_or_git(&place.lexical)
            || agent_or_git(&place.real)
            || self
                .protected
                .iter()
                .any(|p| place.real.starts_with(p) || place.lexical.starts_with(p))
    }

    /// A path rule matches the written path or its resolution (for deny and ask), or both (for
    /// allow), as PERMISSIONS.md says of symlinks. `cwd` is the request's working directory,
    /// never a directory a `cd` inside the command line moved to.
    fn path_rule<'a>(
        &'a self,
        tools: &[&str],
        kind: RuleKind,
        place: &Located,
        cwd: &Path,
    ) -> Option<&'a Rule> {
        let (lexical, real) = (place.lexical.as_path(), place.real.as_path());
        self.rule_indices(tools, kind).iter().find_map(|&i| {
            let (r, pattern) = (&self.rules[i], &self.patterns[i]);
            let hit = match (&r.specifier, pattern) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(_), Some(p)) => {
                    if kind == RuleKind::Allow {
                        p.matches(cwd, lexical) && p.matches(cwd, real)
                    } else {
                        // Relative patterns count from the working directory, and for deny and
                        // ask also from each workspace root (an agent in `src/` must not dodge
                        // `Read(.env)` by reading `../.env`).
                        let matches =
                            |base: &Path| p.matches(base, lexical) || p.matches(base, real);
                        matches(cwd)
                            || (p.is_relative()
                                && self.roots.iter().any(|root| root != cwd && matches(root)))
                    }
                }
            };
            hit.then_some(r)
        })
    }

    pub(crate) fn read(&self, place: &Located, cwd: &Path) -> Decision {
        let shown = place.lexical.display();
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Deny, place, cwd) {
            return Decision::new(
                Verdict::Deny,
                format!("reading {shown} is denied by {r}"),
                Some(r),
            );
        }
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Ask, place, cwd) {
            return Decision::new(Verdict::Ask, format!("reading {shown} asks by {r}"), Some(r));
        }
        // Inside the workspace a read is allowed anyway; an allow rule only names which.
        if self.inside_roots(&place.real) {
            return Decision::new(Verdict::Allow, format!("{shown} is inside the workspace"), None);
        }
        if let Some(r) = self.path_rule(&["Read"], RuleKind::Allow, place, cwd) {
            return Decision::new(
                Verdict::Allow,
                format!("reading {shown} is allowed by {r}"),
                Some(r),
            );
        }
        Decision::new(Verdict::Ask, format!("{shown} resolves outside the workspace"), None)
    }

    pub(crate) fn edit(&self, place: &Located, cwd: &Path) -> Decision {
        let shown = place.lexical.display();
        // A Read deny also blocks writing the same path.
        if let Some(r) = self.path_rule(&["Edit", "Write", "Read"], RuleKind::Deny, place, cwd) {
            return Decision::new(
                Verdict::Deny,
                format!("writing {shown} is denied by {r}"),
                Some(r),
            );
        }
        if self.mode == Mode::Plan {
            return Decision::new(Verdict::Deny, "plan mode is read-only", None);
        }
        if self.protected(place) {
            return Decision::new(
                Verdict::Ask,
                format!("{shown} is a protected path: always asked"),
                None,
            );
        }
        if let Some(r) = self.path_rule(&["Edit", "Write"], RuleKind::Ask, place, cwd) {
            return Decision::new(Verdict::Ask, format!("writing {shown} asks by {r}"), Some(r));
        }
        if let Some(r) = self.path_rule(&["Edit", "Write"], RuleKind::Allow, place, cwd) {
            return Decision::new(
                Verdict::Allow,
                format!("writing {shown} is allowed by {r}"),
                Some(r),
            );
        }
        if self.mode == Mode::AcceptEdits && self.inside_roots(&place.real) {
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

impl Policy {
    /// Starting `command` as a session (its words). Allowed unasked only by an allow rule that
    /// names the whole command line exactly (`Session(claude)`: the words, split at spaces);
    /// open and bare allow rules are ignored ([`Policy::new`] notes them). A deny or ask rule
    /// matches more: a command whose program has the rule's program name (any directory) and
    /// whose arguments include each of the rule's (anywhere, `:*` or ` *` at the end changing
    /// nothing); bare `Session` matches every start. A deny wins; plan mode starts nothing.
    fn session(&self, command: &[String]) -> Decision {
        let shown = command.join(" ");
        let base = |word: &str| word.rsplit('/').next().unwrap_or(word).to_string();
        let words = |spec: &str| -> Vec<String> {
            let spec = spec.strip_suffix(":*").or(spec.strip_suffix(" *")).unwrap_or(spec);
            spec.split_whitespace().map(String::from).collect()
        };
        let exactly = |r: &&Rule| {
            r.specifier
                .as_deref()
                .is_some_and(|spec| !session_rule_open(spec) && words(spec) == command)
        };
        let broadly = |r: &&Rule| match r.specifier.as_deref() {
            None => true,
            Some(spec) => {
                let words = words(spec);
                words.first().is_some_and(|program| base(program) == base(&command[0]))
                    && words[1..].iter().all(|w| command[1..].contains(w))
            }
        };
        let rule = |kind, matches: &dyn Fn(&&Rule) -> bool| {
            self.rules_for(&["Session"], kind).find(|r| matches(r))
        };
        if let Some(r) = rule(RuleKind::Deny, &broadly) {
            return Decision::new(
                Verdict::Deny,
                format!("starting `{shown}` is denied by {r}"),
                Some(r),
            );
        }
        if let Some(r) = rule(RuleKind::Ask, &broadly) {
            return Decision::new(Verdict::Ask, format!("starting `{shown}` asks by {r}"), Some(r));
        }
        if self.mode == Mode::Plan {
            return Decision::new(Verdict::Deny, "plan mode starts no sessions", None);
        }
        if let Some(r) = rule(RuleKind::Allow, &exactly) {
            return Decision::new(
                Verdict::Allow,
                format!("starting `{shown}` is allowed by {r}"),
                Some(r),
            );
        }
        Decision::new(Verdict::Ask, format!("no rule allows starting `{shown}` as a session"), None)
    }
}

/// Whether a `Session(…)` specifier leaves the arguments open (`claude:*`, `claude *`).
fn session_rule_open(spec: &str) -> bool {
    spec.ends_with(":*") || spec.ends_with(" *")
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
