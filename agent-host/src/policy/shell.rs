//! Splits a shell command line into simple commands with a real parser (brush-parser, the
//! POSIX/bash parser of the brush shell), and works out what bash would pass to each of them.
//!
//! Only a small, well-understood subset of the shell is accepted: simple commands joined by
//! `&&`, `||`, `;`, `|`, `|&`, `&` and newlines, `!`, subshells, file redirections and
//! here-documents. Everything else (control flow, functions, `{ … }`, `[[ ]]`, bare assignments,
//! anything that does not parse) comes back as [`ShellError::Unsupported`] or
//! [`ShellError::Syntax`], and the policy asks. Substitutions (`$(…)`, backticks, `<(…)`,
//! `$((…))`) are reported apart, since they are always asked.
//!
//! Words are expanded as bash expands them where that needs no state: brace expansion (each
//! resulting word is a word of its own, as bash passes it), tilde (`~`, `~/…` from the home the
//! policy is given), `$'…'` (ASCII only), and quote removal. A word that depends on anything
//! else (parameters, `~user`) has no static value; a word with unquoted glob characters
//! carries the pattern, for the policy to expand against the directory it will run in. Where
//! the parser is known to read a line unlike bash (a line continued with a backslash, `${!}`,
//! brackets around quoted text, nested braces …), the line is refused before or after
//! parsing: see `precheck`, `expands` and `braces`.
//!
//! Each command also carries the directories it may run in: every way the `cd`s before it may
//! have gone (a `cd` that fails leaves the directory as it was; `&&` and `||` tell which way it
//! went; a `cd` in a pipeline or in `( … )` or in the background changes nothing after it).
//!
//! (tree-sitter-bash was used first; it took about 90 µs to parse a five-stage pipeline, where
//! this parser takes 4 µs: see BENCHMARKS.md.)

use std::path::Path;

use brush_parser::ast::{
    self, AndOr, AssignmentName, AssignmentValue, Command, CommandPrefixOrSuffixItem,
    CompoundCommand, IoFileRedirectKind, IoFileRedirectTarget, IoRedirect, SeparatorOperator,
};
use brush_parser::word::{TildeExpr, WordPiece, WordPieceWithSource};
use brush_parser::{Parser, ParserOptions};

/// Brace expansion may make at most this many words of one command line; more is asked.
const MAX_EXPANDED_WORDS: usize = 1024;
/// At most this many ways the `cd`s of a line may have gone are followed; more is "unknown".
const MAX_DIR_HISTORIES: usize = 16;

/// One word of a command, as written and, when it is static, as the shell would pass it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    /// The source text, quotes included (after brace expansion, the expanded source text).
    pub(crate) text: String,
    /// The value after tilde expansion and quote removal, or `None` when it depends on
    /// expansion (`$X`, `${…}`, `$'…'`, `~user`).
    pub(crate) value: Option<String>,
    /// When the word has unquoted glob characters (`*`, `?`, `[`): the pattern, with every
    /// quoted or escaped character escaped by a backslash. Bash replaces the word with the
    /// matching paths, or leaves it as it is when nothing matches.
    pub(crate) glob: Option<String>,
}

impl Word {
    /// A word with a known value and nothing to expand (an argv element).
    pub(crate) fn literal(value: &str) -> Self {
        Self { text: value.to_string(), value: Some(value.to_string()), glob: None }
    }
}

/// A file a redirection reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// `>`, `>>`, `>|`, `&>`, `&>>`, `<>`, `2>` …: a write of this file.
    Write(Word),
    /// `<`: a read of this file.
    Read(Word),
}

/// Where a command runs: each entry is one way the directory changes before it may have gone,
/// as the indices (into [`Script::commands`]) of the directory-changing commands that took
/// effect, in order; the empty list is the starting directory. `None`: too many ways to follow.
pub(crate) type Dirs = Option<Vec<Vec<usize>>>;

/// A command with its leading assignments split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimpleCommand {
    /// `NAME=value` before the command.
    pub(crate) assignments: Vec<(String, Word)>,
    /// The program and its arguments, brace-expanded.
    pub(crate) words: Vec<Word>,
    /// Changes the shell's directory when it succeeds (`cd`, `pushd`, `popd`, as the policy's
    /// classifier says), and runs in the shell itself (not in a pipeline or the background).
    pub(crate) changes_dir: bool,
    /// The directories it may run in.
    pub(crate) dirs: Dirs,
}

/// A redirection with the directories it is opened in (those in force where it is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopedRedirect {
    /// The file and how it is opened.
    pub(crate) redirect: Redirect,
    /// Where relative paths start.
    pub(crate) dirs: Dirs,
}

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Script {
    /// Every simple command, in source order.
    pub(crate) commands: Vec<SimpleCommand>,
    /// Every file redirection, in source order.
    pub(crate) redirects: Vec<ScopedRedirect>,
}

/// Why a command line is not a plain list of simple commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShellError {
    /// The parser found an error.
    #[error("the command line does not parse")]
    Syntax,
    /// `$(…)`, backticks, `<(…)`, `>(…)` or `$((…))`.
    #[error("it contains {0}")]
    Substitution(&'static str),
    /// A construct this policy does not reason about.
    #[error("it uses {0}, which the policy does not reason about")]
    Unsupported(String),
}

/// What the parser needs to know from the policy.
pub(crate) struct Context<'a> {
    /// What `~` expands to.
    pub(crate) home: &'a Path,
    /// The script is for a POSIX shell (`sh -c`, `dash -c`: dash on Debian), not bash: what
    /// only bash expands (`$'…'`, braces, `<<<`, `[[`, `&>`, `|&`, `<(…)`) is refused, since
    /// dash reads it as other text.
    pub(crate) posix: bool,
    /// Whether a command (its words, brace-expanded) changes the shell's directory when it
    /// succeeds and runs in the shell.
    pub(crate) changes_dir: &'a dyn Fn(&[Word]) -> bool,
}

/// Parses `source` as bash.
pub(crate) fn parse(source: &str, context: &Context<'_>) -> Result<Script, ShellError> {
    precheck(source, context.posix)?;
    let options = ParserOptions::default();
    let program = guarded(|| {
        Parser::new(std::io::BufReader::new(source.as_bytes()), &options).parse_program()
    })?
    .map_err(|_| ShellError::Syntax)?;
    let mut walker = Walker { options, context, script: Script::default(), expanded: 0 };
    let mut dirs: Dirs = Some(vec![Vec::new()]);
    for list in &program.complete_commands {
        dirs = walker.list(list, dirs)?;
    }
    Ok(walker.script)
}

/// Brackets of any kind may nest this deep; deeper is asked (the parser recurses on each level,
/// and a host's threads have small stacks).
const MAX_NESTING: usize = 32;

/// Keywords of compound commands (which the policy asks about anyway) a line may hold before
/// it is refused unparsed: the parser recurses on their nesting.
const MAX_KEYWORDS: usize = 32;

/// What the parser must not be given, or where it reads a line differently from bash.
fn precheck(source: &str, posix: bool) -> Result<(), ShellError> {
    let unsupported = |what: &str| Err(ShellError::Unsupported(what.into()));
    if source.contains('\0') {
        return unsupported("a NUL byte (bash never sees what follows it)");
    }
    // bash joins a line ending in a backslash to the next before it reads either, which the
    // checks here and the parser do not all do alike.
    if source.contains("\\\n") {
        return unsupported("a line continued with a backslash");
    }
    if posix {
        for bash_only in ["$'", "$\"", "{", "}", "[[", "<<<", "&>", "|&", "<(", ">("] {
            if source.contains(bash_only) {
                return Err(ShellError::Unsupported(format!(
                    "`{bash_only}` in a script for sh, which reads it unlike bash"
                )));
            }
        }
    }
    let keywords = source
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| {
            matches!(
                *w,
                "if" | "then"
                    | "elif"
                    | "else"
                    | "while"
                    | "until"
                    | "for"
                    | "do"
                    | "case"
                    | "select"
                    | "function"
                    | "coproc"
            )
        })
        .count();
    if keywords > MAX_KEYWORDS {
        return unsupported("this many compound commands");
    }
    // `<<` with no delimiter word after it sends the parser into a loop.
    let mut rest = source;
    while let Some(at) = rest.find("<<") {
        let after = &rest[at + 2..];
        if let Some(string) = after.strip_prefix('<') {
            rest = string;
            continue;
        }
        let word = after.trim_start_matches('-').trim_start_matches([' ', '\t']);
        let empty_quoted = ["''", "\"\""].iter().any(|q| {
            word.strip_prefix(q).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with([' ', '\t', '\n', ')', ';', '&', '|', '<', '>'])
            })
        });
        if word.is_empty()
            || empty_quoted
            || word.starts_with([')', ';', '&', '|', '<', '>', '\n', '(', '\\'])
        {
            return unsupported("a here-document without a delimiter");
        }
        rest = after;
    }
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    for &b in bytes {
        match b {
            b'(' | b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ShellError::Unsupported(format!(
                        "brackets nested deeper than {MAX_NESTING}"
                    )));
                }
            }
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // A long number as a descriptor or in a brace sequence: the parser panics on what does not
    // fit its integers.
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let next = bytes.get(i).copied();
        if (i - start >= 9 && matches!(next, Some(b'<' | b'>'))) || i - start >= 18 {
            return Err(ShellError::Unsupported("a number this long".into()));
        }
    }
    // `{NAME}>file` assigns a descriptor number to NAME (`{PATH}>x` changes PATH, and
    // `{a[_]}>x` evaluates a subscript), where the parser sees an argument.
    if source.contains("}>") || source.contains("}<") {
        return unsupported("a redirection to a named descriptor");
    }
    Ok(())
}

/// Runs the parser, turning a panic in it into a syntax error (it has had some on input it
/// should refuse; a host must answer every request, never crash).
fn guarded<T>(parse: impl FnOnce() -> T) -> Result<T, ShellError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).map_err(|_| ShellError::Syntax)
}

struct Walker<'a> {
    options: ParserOptions,
    context: &'a Context<'a>,
    script: Script,
    /// Words made by brace expansion so far.
    expanded: usize,
}

/// Either way of two.
fn union(a: &Dirs, b: &Dirs) -> Dirs {
    let (Some(a), Some(b)) = (a, b) else { return None };
    let mut out = a.clone();
    for h in b {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    (out.len() <= MAX_DIR_HISTORIES).then_some(out)
}

/// After the directory-changing command `index` succeeded.
fn changed(dirs: &Dirs, index: usize) -> Dirs {
    dirs.as_ref().map(|all| {
        all.iter()
            .map(|h| {
                let mut h = h.clone();
                h.push(index);
                h
            })
            .collect()
    })
}

impl Walker<'_> {
    /// Walks a list; returns the directories in force after it.
    fn list(&mut self, list: &ast::CompoundList, dirs: Dirs) -> Result<Dirs, ShellError> {
        let mut current = dirs;
        for ast::CompoundListItem(and_or, separator) in &list.0 {
            let after = self.and_or(and_or, &current)?;
            // A list run in the background is a subshell: what it changes stays there.
            if matches!(separator, SeparatorOperator::Sequence) {
                current = after;
            }
        }
        Ok(current)
    }

    /// Walks `a && b || c …`; returns the directories in force after it, whichever way each
    /// part went.
    fn and_or(&mut self, list: &ast::AndOrList, dirs: &Dirs) -> Result<Dirs, ShellError> {
        let (mut success, mut failure) = self.pipeline(&list.first, dirs)?;
        for next in &list.additional {
            match next {
                AndOr::And(p) => {
                    let (s, f) = self.pipeline(p, &success)?;
                    success = s;
                    failure = union(&failure, &f);
                }
                AndOr::Or(p) => {
                    let (s, f) = self.pipeline(p, &failure)?;
                    failure = f;
                    success = union(&success, &s);
                }
            }
        }
        Ok(union(&success, &failure))
    }

    /// Walks a pipeline; returns the directories in force after it when it succeeded and when
    /// it failed.
    fn pipeline(
        &mut self,
        pipeline: &ast::Pipeline,
        dirs: &Dirs,
    ) -> Result<(Dirs, Dirs), ShellError> {
        // Every command of a pipeline of several runs in a subshell of its own.
        let alone = pipeline.seq.len() == 1;
        let mut after = (dirs.clone(), dirs.clone());
        for command in &pipeline.seq {
            match command {
                Command::Simple(simple) => {
                    if let Some(index) = self.simple(simple, dirs, alone)? {
                        after = (changed(dirs, index), dirs.clone());
                    }
                }
                Command::Compound(CompoundCommand::Subshell(sub), redirects) => {
                    for r in redirects.iter().flat_map(|r| &r.0) {
                        self.redirect(r, dirs)?;
                    }
                    self.list(&sub.list, dirs.clone())?;
                }
                Command::Compound(compound, _) => {
                    return Err(ShellError::Unsupported(describe(compound)));
                }
                Command::Function(_) => {
                    return Err(ShellError::Unsupported("a function definition".into()));
                }
                Command::ExtendedTest(..) => {
                    return Err(ShellError::Unsupported("a `[[ … ]]` test".into()));
                }
            }
        }
        if pipeline.bang {
            after = (after.1, after.0);
        }
        Ok(after)
    }

    /// Records a simple command; returns its index when it changes the shell's directory.
    fn simple(
        &mut self,
        simple: &ast::SimpleCommand,
        dirs: &Dirs,
        in_shell: bool,
    ) -> Result<Option<usize>, ShellError> {
        let mut assignments = Vec::new();
        let mut words = Vec::new();
        let mut redirects = Vec::new();
        for item in simple.prefix.iter().flat_map(|p| &p.0) {
            match item {
                CommandPrefixOrSuffixItem::AssignmentWord(assignment, _) => {
                    let name = match &assignment.name {
                        AssignmentName::VariableName(n) => n.clone(),
                        AssignmentName::ArrayElementName(..) => {
                            return Err(ShellError::Unsupported("an array assignment".into()));
                        }
                    };
                    let value = match &assignment.value {
                        AssignmentValue::Scalar(w) => self.word(&w.value)?,
                        AssignmentValue::Array(_) => {
                            return Err(ShellError::Unsupported("an array assignment".into()));
                        }
                    };
                    assignments.push((name, value));
                }
                other => self.item(other, &mut words, &mut redirects)?,
            }
        }
        if let Some(name) = &simple.word_or_name {
            words.extend(self.expanded_word(&name.value)?);
        }
        for item in simple.suffix.iter().flat_map(|s| &s.0) {
            self.item(item, &mut words, &mut redirects)?;
        }
        for redirect in redirects {
            self.script.redirects.push(ScopedRedirect { redirect, dirs: dirs.clone() });
        }
        if words.is_empty() {
            if assignments.is_empty() {
                return Ok(None); // only redirections
            }
            return Err(ShellError::Unsupported(
                "a variable assignment that changes what later commands run".into(),
            ));
        }
        let changes_dir = in_shell && (self.context.changes_dir)(&words);
        let index = self.script.commands.len();
        self.script.commands.push(SimpleCommand {
            assignments,
            words,
            changes_dir,
            dirs: dirs.clone(),
        });
        Ok(changes_dir.then_some(index))
    }

    fn item(
        &mut self,
        item: &CommandPrefixOrSuffixItem,
        words: &mut Vec<Word>,
        redirects: &mut Vec<Redirect>,
    ) -> Result<(), ShellError> {
        match item {
            // `cmd A=b`: an argument that looks like an assignment is just an argument.
            CommandPrefixOrSuffixItem::Word(w)
            | CommandPrefixOrSuffixItem::AssignmentWord(_, w) => {
                words.extend(self.expanded_word(&w.value)?);
                Ok(())
            }
            CommandPrefixOrSuffixItem::IoRedirect(r) => {
                if let Some(redirect) = self.file_redirect(r)? {
                    redirects.push(redirect);
                }
                Ok(())
            }
            CommandPrefixOrSuffixItem::ProcessSubstitution(..) => {
                Err(ShellError::Substitution("process substitution"))
            }
        }
    }

    fn redirect(&mut self, redirect: &IoRedirect, dirs: &Dirs) -> Result<(), ShellError> {
        if let Some(redirect) = self.file_redirect(redirect)? {
            self.script.redirects.push(ScopedRedirect { redirect, dirs: dirs.clone() });
        }
        Ok(())
    }

    /// The file a redirection opens, if it opens one.
    fn file_redirect(&mut self, redirect: &IoRedirect) -> Result<Option<Redirect>, ShellError> {
        match redirect {
            IoRedirect::File(_, kind, target) => {
                let word = match target {
                    IoFileRedirectTarget::Filename(w) | IoFileRedirectTarget::Duplicate(w) => {
                        self.target(&w.value)?
                    }
                    IoFileRedirectTarget::Fd(_) => return Ok(None),
                    IoFileRedirectTarget::ProcessSubstitution(..) => {
                        return Err(ShellError::Substitution("process substitution"));
                    }
                };
                Ok(match kind {
                    // Duplicating or closing a descriptor touches no file; `>&file` writes one.
                    IoFileRedirectKind::DuplicateInput | IoFileRedirectKind::DuplicateOutput
                        if is_fd(&word) =>
                    {
                        None
                    }
                    IoFileRedirectKind::Read | IoFileRedirectKind::DuplicateInput => {
                        Some(Redirect::Read(word))
                    }
                    _ => Some(Redirect::Write(word)),
                })
            }
            IoRedirect::OutputAndError(w, _) => Ok(Some(Redirect::Write(self.target(&w.value)?))),
            IoRedirect::HereString(_, w) => self.word(&w.value).map(|_| None),
            IoRedirect::HereDocument(_, doc) => {
                // An unquoted delimiter expands the body (parameters can run code) and joins
                // lines ending in a backslash, which may end the document elsewhere than the
                // parser saw: only a quoted delimiter, or a body with nothing to expand.
                let body = &doc.doc.value;
                if doc.requires_expansion && body.contains(['$', '`', '\\']) {
                    return Err(ShellError::Unsupported(
                        "a here-document whose body expands (quote its delimiter)".into(),
                    ));
                }
                Ok(None)
            }
        }
    }

    /// A redirection's target: one word (a brace expansion into several is an error in bash).
    fn target(&mut self, source: &str) -> Result<Word, ShellError> {
        let mut words = self.expanded_word(source)?;
        match (words.pop(), words.is_empty()) {
            (Some(word), true) => Ok(word),
            _ => Err(ShellError::Unsupported("a redirection to several files".into())),
        }
    }

    /// A word brace-expanded into the words bash passes.
    fn expanded_word(&mut self, source: &str) -> Result<Vec<Word>, ShellError> {
        if !source.contains('{') {
            return Ok(vec![self.word(source)?]);
        }
        let Some(texts) = braces::expand(source, MAX_EXPANDED_WORDS)? else {
            return Ok(vec![self.word(source)?]);
        };
        self.expanded += texts.len();
        if self.expanded > MAX_EXPANDED_WORDS {
            return Err(ShellError::Unsupported(format!(
                "brace expansion into more than {MAX_EXPANDED_WORDS} words"
            )));
        }
        texts.iter().map(|t| self.word(t)).collect()
    }

    fn word(&self, source: &str) -> Result<Word, ShellError> {
        let pieces = guarded(|| brush_parser::word::parse(source, &self.options))?
            .map_err(|_| ShellError::Syntax)?;
        let mut folded = Folded {
            value: Some(String::new()),
            pattern: String::new(),
            glob: false,
            home: self.context.home,
        };
        folded.pieces(source, &pieces, false)?;
        if bracket_across_quotes(source) {
            return Err(ShellError::Unsupported(format!(
                "`{source}`, a glob bracket around quoted or escaped text"
            )));
        }
        // The parser leaves some expansions as text (`${!}` as `$` and `{!}`): a word bash
        // expands has no static value, whatever the parser made of it.
        if folded.value.is_some() && expands(source) {
            return Err(ShellError::Unsupported(format!(
                "`{source}`, which the policy cannot read as bash does"
            )));
        }
        // Bash expands `~` after the `=` (and after each `:`) of an argument shaped like an
        // assignment (`a=~/x`): not reasoned about.
        let assignment_shaped = source.split_once('=').is_some_and(|(n, _)| {
            let n = n.strip_suffix('+').unwrap_or(n);
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if assignment_shaped && source.contains('~') {
            folded.value = None;
        }
        if folded.glob && self.context.posix {
            // dash's globs match `.` and `..` (`.*`), unlike bash's.
            return Err(ShellError::Unsupported(format!("the glob `{source}` in a script for sh")));
        }
        Ok(Word {
            text: source.to_string(),
            value: folded.value,
            glob: folded.glob.then_some(folded.pattern),
        })
    }
}

/// Folds word pieces into a static value (or `None`) and a glob pattern, refusing substitutions.
struct Folded<'a> {
    value: Option<String>,
    pattern: String,
    glob: bool,
    home: &'a Path,
}

impl Folded<'_> {
    fn push(&mut self, text: Option<&str>, pattern: &str) {
        self.pattern.push_str(pattern);
        self.value = match (self.value.take(), text) {
            (Some(mut v), Some(t)) => {
                v.push_str(t);
                Some(v)
            }
            _ => None,
        };
    }

    fn pieces(
        &mut self,
        source: &str,
        pieces: &[WordPieceWithSource],
        quoted: bool,
    ) -> Result<(), ShellError> {
        for piece in pieces {
            match &piece.piece {
                WordPiece::Text(t) => {
                    // A shell with `extglob` on (as interactive ones often have) matches these.
                    if !quoted && ["@(", "?(", "*(", "+(", "!("].iter().any(|p| t.contains(p)) {
                        return Err(ShellError::Unsupported(format!(
                            "`{t}`, an extended glob where the shell has extglob on"
                        )));
                    }
                    // A `[` with no `]` after it is no glob (`[ -f x ]`).
                    let bracket = t.find('[').is_some_and(|i| t[i..].contains(']'));
                    if !quoted && (t.contains(['*', '?']) || bracket) {
                        self.glob = true;
                        // Braces left after brace expansion are literal.
                        self.push(Some(t), &t.replace('{', "\\{").replace('}', "\\}"));
                    } else {
                        self.push(Some(t), &escape_glob(t));
                    }
                }
                WordPiece::SingleQuotedText(t) => self.push(Some(t), &escape_glob(t)),
                WordPiece::EscapeSequence(e) => {
                    let t = match e.strip_prefix('\\') {
                        Some("\n") => String::new(),
                        // Inside double quotes a backslash escapes only `$`, `` ` ``, `"`, `\`.
                        Some(rest) if quoted && !matches!(rest, "$" | "`" | "\"" | "\\") => {
                            e.clone()
                        }
                        Some(rest) => rest.to_string(),
                        None => e.clone(),
                    };
                    self.push(Some(&t), &escape_glob(&t));
                }
                WordPiece::DoubleQuotedSequence(inner) => self.pieces(source, inner, true)?,
                WordPiece::TildeExpansion(TildeExpr::Home) if !quoted => {
                    let home = self.home.to_string_lossy().into_owned();
                    self.push(Some(&home), &escape_glob(&home));
                }
                WordPiece::CommandSubstitution(_) | WordPiece::BackquotedCommandSubstitution(_) => {
                    return Err(ShellError::Substitution("command substitution"));
                }
                WordPiece::ArithmeticExpression(_) => {
                    return Err(ShellError::Substitution("arithmetic expansion"));
                }
                WordPiece::ParameterExpansion(_) => {
                    // Only `$NAME`, `${NAME}` and `${#NAME}`: every other form can evaluate
                    // text as code (an array subscript or an offset is arithmetic, which runs
                    // `a[$(cmd)]` found in a variable; `${!x}`, `${x@P}`; `${x:=…}` assigns).
                    let text = source.get(piece.start_index..piece.end_index).unwrap_or(source);
                    if !plain_parameter(text) {
                        return Err(ShellError::Substitution(
                            "a parameter expansion that can run code",
                        ));
                    }
                    self.push(None, "");
                }
                WordPiece::AnsiCQuotedText(raw) => match ansi_c(raw) {
                    Some(t) => self.push(Some(&t), &escape_glob(&t)),
                    None => self.push(None, ""),
                },
                WordPiece::GettextDoubleQuotedSequence(inner) => {
                    // `$"…"` is `"…"` translated; with no translation catalogue, `"…"`.
                    self.pieces(source, inner, true)?;
                }
                WordPiece::TildeExpansion(_) => self.push(None, ""),
            }
        }
        Ok(())
    }
}

/// Whether the word, as written, has what bash expands: a `$` (not in `'…'`, not escaped)
/// before what starts a parameter, a substitution or old arithmetic (`$[…]`), or a backquote.
/// `$'…'` and `$"…"` are quoting, which the parser reads into a static value itself.
fn expands(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut double = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'\'' if !double => {
                i += bytes[i + 1..].iter().position(|b| *b == b'\'').map_or(bytes.len(), |p| p + 1);
            }
            // `$'…'`: backslash escapes inside, `\'` among them.
            b'$' if !double && bytes.get(i + 1) == Some(&b'\'') => {
                i += 2;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'$' if !double && bytes.get(i + 1) == Some(&b'"') => {
                double = true;
                i += 1;
            }
            b'"' => double = !double,
            b'$' => {
                if let Some(next) = bytes.get(i + 1)
                    && (next.is_ascii_alphanumeric() || b"_{([!@#$*?-`".contains(next))
                {
                    return true;
                }
            }
            b'`' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether an unquoted `[` is closed by an unquoted `]` with quoted or escaped text between
/// (`lin["k"]`): bash reads it as one bracket expression, the parser as separate pieces.
fn bracket_across_quotes(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut open: Option<bool> = None; // Some(whether quoting was met since the `[`)
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' | b'\'' | b'"' if open.is_some() => {
                open = Some(true);
                let quote = bytes[i];
                i += 1;
                if quote != b'\\' {
                    while i < bytes.len() && bytes[i] != quote {
                        i += if bytes[i] == b'\\' && quote == b'"' { 2 } else { 1 };
                    }
                }
            }
            b'\\' => i += 1,
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' if open.is_none() => open = Some(false),
            b']' if open == Some(true) => return true,
            b']' => open = None,
            _ => {}
        }
        i += 1;
    }
    false
}

/// `$NAME`, `${NAME}`, `${#NAME}`, or a special or positional parameter: an expansion that only
/// substitutes a value.
fn plain_parameter(text: &str) -> bool {
    let name = |n: &str| {
        (!n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            || matches!(n, "?" | "#" | "$" | "!" | "*" | "@" | "-")
    };
    match text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        Some(inner) => name(inner.strip_prefix('#').filter(|n| !n.is_empty()).unwrap_or(inner)),
        None => text.strip_prefix('$').is_some_and(name),
    }
}

/// The value of `$'…'` (bash's ANSI-C quoting), or `None` for what it does not decode as bash
/// does (a NUL, which ends the string there, or a malformed escape).
fn ansi_c(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    let digits = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, radix: u32, max: usize| {
        let mut n: u32 = 0;
        let mut count = 0;
        while count < max {
            let Some(d) = chars.peek().and_then(|c| c.to_digit(radix)) else { break };
            n = n * radix + d;
            chars.next();
            count += 1;
        }
        (count > 0).then_some(n)
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let decoded = match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'e' | 'E' => '\u{1b}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' | '\'' | '"' | '?' => e,
            '0'..='7' => {
                let mut n = e.to_digit(8)?;
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            n = n * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                char::from_u32(n & 0xff)?
            }
            'x' => char::from_u32(digits(&mut chars, 16, 2)?)?,
            'u' => char::from_u32(digits(&mut chars, 16, 4)?)?,
            'U' => char::from_u32(digits(&mut chars, 16, 8)?)?,
            // `\\cX` takes a backslash after it in ways of its own: not reasoned about.
            'c' => return None,
            other => {
                out.push('\\');
                other
            }
        };
        // A NUL ends the string in bash; a byte above 0x7f is passed as that byte, which a
        // Rust string cannot hold as such.
        if decoded == '\0' || !decoded.is_ascii() {
            return None;
        }
        out.push(decoded);
    }
    Some(out)
}

/// Escapes glob characters so that a pattern matches them literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn is_fd(word: &Word) -> bool {
    word.value
        .as_deref()
        .is_some_and(|v| v == "-" || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())))
}

fn describe(compound: &CompoundCommand) -> String {
    match compound {
        CompoundCommand::IfClause(_) => "an `if` statement",
        CompoundCommand::ForClause(_) | CompoundCommand::ArithmeticForClause(_) => "a `for` loop",
        CompoundCommand::WhileClause(_) => "a `while` loop",
        CompoundCommand::UntilClause(_) => "an `until` loop",
        CompoundCommand::CaseClause(_) => "a `case` statement",
        CompoundCommand::BraceGroup(_) => "a `{ … }` group",
        CompoundCommand::Arithmetic(_) => "an arithmetic command",
        CompoundCommand::Coprocess(_) => "a coprocess",
        CompoundCommand::Subshell(_) => "a subshell",
    }
    .into()
}

mod braces;
#[cfg(test)]
mod tests;
