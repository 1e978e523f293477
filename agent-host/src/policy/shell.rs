//! Splits a shell command line into simple commands with a real parser (brush-parser, the
//! POSIX/bash parser of the brush shell).
//!
//! Only a small, well-understood subset of the shell is accepted: simple commands joined by
//! `&&`, `||`, `;`, `|`, `|&`, `&` and newlines, `!`, subshells, file redirections and
//! here-documents. Everything else (control flow, functions, `{ … }`, `[[ ]]`, bare assignments,
//! anything that does not parse) comes back as [`ShellError::Unsupported`] or
//! [`ShellError::Syntax`], and the policy asks. Substitutions (`$(…)`, backticks, `<(…)`,
//! `$((…))`) are reported apart, since they are always asked.
//!
//! (tree-sitter-bash was used first; it took about 90 µs to parse a five-stage pipeline, where
//! this parser takes 4 µs: see BENCHMARKS.md.)

use brush_parser::ast::{
    self, AndOr, AssignmentName, AssignmentValue, Command, CommandPrefixOrSuffixItem,
    CompoundCommand, IoFileRedirectKind, IoFileRedirectTarget, IoRedirect,
};
use brush_parser::word::{TildeExpr, WordPiece, WordPieceWithSource};
use brush_parser::{Parser, ParserOptions};

/// One word of a command, as written and, when it is static, as the shell would pass it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    /// The source text, quotes included.
    pub(crate) text: String,
    /// The value after quote removal, or `None` when it depends on expansion (`$X`, `${…}`).
    pub(crate) value: Option<String>,
    /// Contains an unquoted glob (`*`, `?`, `[`) or brace expansion.
    pub(crate) glob: bool,
}

/// A file a redirection reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// `>`, `>>`, `>|`, `&>`, `&>>`, `2>` …: a write of this file.
    Write(Word),
    /// `<`: a read of this file.
    Read(Word),
}

/// A command with its leading assignments split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimpleCommand {
    /// `NAME=value` before the command.
    pub(crate) assignments: Vec<(String, Word)>,
    /// The program and its arguments.
    pub(crate) words: Vec<Word>,
    /// Inside `( … )`.
    pub(crate) in_subshell: bool,
}

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Script {
    /// Every simple command, in source order.
    pub(crate) commands: Vec<SimpleCommand>,
    /// Every file redirection, in source order.
    pub(crate) redirects: Vec<Redirect>,
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

/// Parses `source` as bash.
pub(crate) fn parse(source: &str) -> Result<Script, ShellError> {
    let options = ParserOptions::default();
    let program = Parser::new(std::io::BufReader::new(source.as_bytes()), &options)
        .parse_program()
        .map_err(|_| ShellError::Syntax)?;
    let mut walker = Walker { options, script: Script::default() };
    for list in &program.complete_commands {
        walker.list(list, false)?;
    }
    Ok(walker.script)
}

struct Walker {
    options: ParserOptions,
    script: Script,
}

impl Walker {
    fn list(&mut self, list: &ast::CompoundList, in_subshell: bool) -> Result<(), ShellError> {
        for item in &list.0 {
            let and_or = &item.0;
            self.pipeline(&and_or.first, in_subshell)?;
            for next in &and_or.additional {
                match next {
                    AndOr::And(p) | AndOr::Or(p) => self.pipeline(p, in_subshell)?,
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, pipeline: &ast::Pipeline, in_subshell: bool) -> Result<(), ShellError> {
        for command in &pipeline.seq {
            match command {
                Command::Simple(simple) => self.simple(simple, in_subshell)?,
                Command::Compound(CompoundCommand::Subshell(sub), redirects) => {
                    self.list(&sub.list, true)?;
                    for r in redirects.iter().flat_map(|r| &r.0) {
                        self.redirect(r)?;
                    }
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
        Ok(())
    }

    fn simple(&mut self, simple: &ast::SimpleCommand, in_subshell: bool) -> Result<(), ShellError> {
        let mut command = SimpleCommand { assignments: Vec::new(), words: Vec::new(), in_subshell };
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
                        AssignmentValue::Scalar(w) => self.word(w)?,
                        AssignmentValue::Array(_) => {
                            return Err(ShellError::Unsupported("an array assignment".into()));
                        }
                    };
                    command.assignments.push((name, value));
                }
                other => self.item(other, &mut command)?,
            }
        }
        if let Some(name) = &simple.word_or_name {
            command.words.push(self.word(name)?);
        }
        for item in simple.suffix.iter().flat_map(|s| &s.0) {
            match item {
                // `cmd A=b`: an argument that looks like an assignment is just an argument.
                CommandPrefixOrSuffixItem::AssignmentWord(_, word) => {
                    command.words.push(self.word(word)?)
                }
                other => self.item(other, &mut command)?,
            }
        }
        if command.words.is_empty() {
            if command.assignments.is_empty() {
                return Ok(()); // only redirections
            }
            return Err(ShellError::Unsupported(
                "a variable assignment that changes what later commands run".into(),
            ));
        }
        self.script.commands.push(command);
        Ok(())
    }

    fn item(
        &mut self,
        item: &CommandPrefixOrSuffixItem,
        command: &mut SimpleCommand,
    ) -> Result<(), ShellError> {
        match item {
            CommandPrefixOrSuffixItem::Word(w)
            | CommandPrefixOrSuffixItem::AssignmentWord(_, w) => {
                command.words.push(self.word(w)?);
                Ok(())
            }
            CommandPrefixOrSuffixItem::IoRedirect(r) => self.redirect(r),
            CommandPrefixOrSuffixItem::ProcessSubstitution(..) => {
                Err(ShellError::Substitution("process substitution"))
            }
        }
    }

    fn redirect(&mut self, redirect: &IoRedirect) -> Result<(), ShellError> {
        match redirect {
            IoRedirect::File(_, kind, target) => {
                let word = match target {
                    IoFileRedirectTarget::Filename(w) | IoFileRedirectTarget::Duplicate(w) => {
                        self.word(w)?
                    }
                    IoFileRedirectTarget::Fd(_) => return Ok(()),
                    IoFileRedirectTarget::ProcessSubstitution(..) => {
                        return Err(ShellError::Substitution("process substitution"));
                    }
                };
                match kind {
                    // Duplicating or closing a descriptor touches no file; `>&file` writes one.
                    IoFileRedirectKind::DuplicateInput | IoFileRedirectKind::DuplicateOutput
                        if is_fd(&word) => {}
                    IoFileRedirectKind::Read | IoFileRedirectKind::DuplicateInput => {
                        self.script.redirects.push(Redirect::Read(word));
                    }
                    _ => self.script.redirects.push(Redirect::Write(word)),
                }
                Ok(())
            }
            IoRedirect::OutputAndError(w, _) => {
                let word = self.word(w)?;
                self.script.redirects.push(Redirect::Write(word));
                Ok(())
            }
            IoRedirect::HereString(_, w) => self.word(w).map(|_| ()),
            IoRedirect::HereDocument(_, doc) => {
                // An unquoted delimiter expands the body; only substitutions matter there.
                let body = &doc.doc.value;
                if doc.requires_expansion
                    && (body.contains("$(") || body.contains('`') || body.contains("$["))
                {
                    return Err(ShellError::Substitution("a substitution in a here-document"));
                }
                Ok(())
            }
        }
    }

    fn word(&self, word: &ast::Word) -> Result<Word, ShellError> {
        let pieces = brush_parser::word::parse(&word.value, &self.options)
            .map_err(|_| ShellError::Syntax)?;
        let mut value = Some(String::new());
        let mut glob = false;
        pieces_value(&word.value, &pieces, false, &mut value, &mut glob)?;
        Ok(Word { text: word.value.clone(), value, glob })
    }
}

/// Folds word pieces into a static value (or `None`), noting globs, refusing substitutions.
fn pieces_value(
    source: &str,
    pieces: &[WordPieceWithSource],
    quoted: bool,
    value: &mut Option<String>,
    glob: &mut bool,
) -> Result<(), ShellError> {
    for piece in pieces {
        let static_text: Option<String> = match &piece.piece {
            WordPiece::Text(t) => {
                if !quoted && t.contains(['*', '?', '[', '{']) {
                    *glob = true;
                }
                Some(t.clone())
            }
            WordPiece::SingleQuotedText(t) => Some(t.clone()),
            WordPiece::EscapeSequence(e) => Some(match e.strip_prefix('\\') {
                Some("\n") => String::new(),
                Some(rest) => rest.to_string(),
                None => e.clone(),
            }),
            WordPiece::DoubleQuotedSequence(inner) => {
                pieces_value(source, inner, true, value, glob)?;
                continue;
            }
            WordPiece::TildeExpansion(TildeExpr::Home) => Some("~".into()),
            WordPiece::CommandSubstitution(_) | WordPiece::BackquotedCommandSubstitution(_) => {
                return Err(ShellError::Substitution("command substitution"));
            }
            WordPiece::ArithmeticExpression(_) => {
                return Err(ShellError::Substitution("arithmetic expansion"));
            }
            WordPiece::ParameterExpansion(_) => {
                // `${x:-$(cmd)}` hides a substitution inside an expansion.
                let text = source.get(piece.start_index..piece.end_index).unwrap_or(source);
                if text.contains("$(") || text.contains('`') {
                    return Err(ShellError::Substitution("command substitution"));
                }
                None
            }
            WordPiece::AnsiCQuotedText(_)
            | WordPiece::GettextDoubleQuotedSequence(_)
            | WordPiece::TildeExpansion(_) => None,
        };
        *value = match (value.take(), static_text) {
            (Some(mut v), Some(t)) => {
                v.push_str(&t);
                Some(v)
            }
            _ => None,
        };
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &SimpleCommand) -> Vec<String> {
        c.words.iter().map(|w| w.value.clone().unwrap_or_else(|| format!("<{}>", w.text))).collect()
    }

    #[test]
    fn splits_compound_commands() {
        let s = parse("a 1 && b 'x y' || c \"q\\\"\" ; d | e |& f & g\nh").unwrap();
        let all: Vec<_> = s.commands.iter().map(argv).collect();
        assert_eq!(
            all,
            vec![
                vec!["a", "1"],
                vec!["b", "x y"],
                vec!["c", "q\""],
                vec!["d"],
                vec!["e"],
                vec!["f"],
                vec!["g"],
                vec!["h"]
            ]
        );
    }

    #[test]
    fn redirections_are_reported() {
        let s = parse("echo hi > out.txt 2>&1 && sort < in.txt >> log 2>/dev/null").unwrap();
        assert_eq!(
            s.redirects,
            vec![
                Redirect::Write(Word {
                    text: "out.txt".into(),
                    value: Some("out.txt".into()),
                    glob: false
                }),
                Redirect::Read(Word {
                    text: "in.txt".into(),
                    value: Some("in.txt".into()),
                    glob: false
                }),
                Redirect::Write(Word {
                    text: "log".into(),
                    value: Some("log".into()),
                    glob: false
                }),
                Redirect::Write(Word {
                    text: "/dev/null".into(),
                    value: Some("/dev/null".into()),
                    glob: false
                }),
            ]
        );
    }

    #[test]
    fn substitutions_and_unknown_constructs_are_refused() {
        assert_eq!(parse("echo $(id)"), Err(ShellError::Substitution("command substitution")));
        assert_eq!(parse("echo `id`"), Err(ShellError::Substitution("command substitution")));
        assert_eq!(parse("diff <(ls) b"), Err(ShellError::Substitution("process substitution")));
        assert_eq!(parse("echo $((1+2))"), Err(ShellError::Substitution("arithmetic expansion")));
        assert!(matches!(parse("if true; then ls; fi"), Err(ShellError::Unsupported(_))));
        assert!(matches!(parse("PATH=/tmp; ls"), Err(ShellError::Unsupported(_))));
        assert!(matches!(parse("f() { ls; }"), Err(ShellError::Unsupported(_))));
        assert_eq!(parse("ls 'unterminated"), Err(ShellError::Syntax));
        // A substitution hidden in a here-document body is found too.
        assert!(parse("cat <<EOF\n$(id)\nEOF").is_err());
    }

    #[test]
    fn words_know_when_they_are_dynamic() {
        let s = parse("FOO=1 ls $HOME \"$X\" *.rs a\\ b ~/x {a,b}").unwrap();
        let c = &s.commands[0];
        assert_eq!(c.assignments[0].0, "FOO");
        assert_eq!(c.words[1].value, None);
        assert_eq!(c.words[2].value, None);
        assert!(c.words[3].glob);
        assert_eq!(c.words[4].value.as_deref(), Some("a b"));
        assert_eq!(c.words[5].value.as_deref(), Some("~/x"));
        assert!(c.words[6].glob);
        let sub = parse("(cd x; ls)").unwrap();
        assert!(sub.commands.iter().all(|c| c.in_subshell));
    }
}
