//! Splits a shell command line into simple commands with a real parser (tree-sitter-bash).
//!
//! Only a small, well-understood subset of the shell is accepted: simple commands joined by
//! `&&`, `||`, `;`, `|`, `|&`, `&` and newlines, `!`, subshells, file redirections and
//! here-documents. Everything else (control flow, functions, `[[ ]]`, `export`, bare assignments,
//! anything the parser flags as an error) comes back as [`ShellError::Unsupported`] or
//! [`ShellError::Syntax`], and the policy asks. Substitutions (`$(…)`, backticks, `<(…)`, `$((…))`)
//! are reported apart, since they are always asked.

use tree_sitter::{Node, Parser};

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

thread_local! {
    /// One parser per thread: making one and loading the grammar costs more than a short parse.
    static PARSER: std::cell::RefCell<Option<Parser>> = const { std::cell::RefCell::new(None) };
}

/// Parses `source` as bash.
pub(crate) fn parse(source: &str) -> Result<Script, ShellError> {
    let tree = PARSER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut parser = Parser::new();
            parser.set_language(&tree_sitter_bash::LANGUAGE.into()).map_err(|_| {
                ShellError::Unsupported("a shell grammar that failed to load".into())
            })?;
            *slot = Some(parser);
        }
        slot.as_mut().and_then(|p| p.parse(source, None)).ok_or(ShellError::Syntax)
    })?;
    let root = tree.root_node();
    scan(root)?;
    let mut script = Script::default();
    Walker { source, script: &mut script }.statements(root, false)?;
    Ok(script)
}

/// Refuses errors and substitutions anywhere in the tree, before any interpretation.
fn scan(node: Node<'_>) -> Result<(), ShellError> {
    if node.is_error() || node.is_missing() {
        return Err(ShellError::Syntax);
    }
    let found = match node.kind() {
        "command_substitution" => Some("command substitution"),
        "process_substitution" => Some("process substitution"),
        "arithmetic_expansion" => Some("arithmetic expansion"),
        _ => None,
    };
    if let Some(what) = found {
        return Err(ShellError::Substitution(what));
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        scan(child)?;
    }
    Ok(())
}

struct Walker<'a> {
    source: &'a str,
    script: &'a mut Script,
}

impl Walker<'_> {
    fn text(&self, node: Node<'_>) -> &str {
        // Node ranges fall on character boundaries of valid UTF-8; `get` keeps a surprise from
        // becoming a panic on input a peer controls.
        self.source.get(node.byte_range()).unwrap_or_default()
    }

    fn statements(&mut self, node: Node<'_>, in_subshell: bool) -> Result<(), ShellError> {
        let mut cursor = node.walk();
        for child in node.named_children(&mut cursor) {
            self.statement(child, in_subshell)?;
        }
        Ok(())
    }

    fn statement(&mut self, node: Node<'_>, in_subshell: bool) -> Result<(), ShellError> {
        match node.kind() {
            "comment" => Ok(()),
            "list" | "pipeline" | "negated_command" => self.statements(node, in_subshell),
            "subshell" => self.statements(node, true),
            "redirected_statement" => {
                let mut cursor = node.walk();
                for child in node.named_children(&mut cursor) {
                    match child.kind() {
                        "file_redirect" | "heredoc_redirect" | "herestring_redirect" => {
                            self.redirect(child)?
                        }
                        _ => self.statement(child, in_subshell)?,
                    }
                }
                Ok(())
            }
            "command" => self.command(node, in_subshell),
            "variable_assignment" | "variable_assignments" => Err(ShellError::Unsupported(
                "a variable assignment that changes what later commands run".into(),
            )),
            other => Err(ShellError::Unsupported(describe(other))),
        }
    }

    fn command(&mut self, node: Node<'_>, in_subshell: bool) -> Result<(), ShellError> {
        let mut command = SimpleCommand { assignments: Vec::new(), words: Vec::new(), in_subshell };
        let mut cursor = node.walk();
        for child in node.named_children(&mut cursor) {
            match child.kind() {
                "variable_assignment" => {
                    let name = child
                        .child_by_field_name("name")
                        .map(|n| self.text(n).to_string())
                        .unwrap_or_default();
                    let value = match child.child_by_field_name("value") {
                        Some(v) => self.word(v)?,
                        None => {
                            Word { text: String::new(), value: Some(String::new()), glob: false }
                        }
                    };
                    command.assignments.push((name, value));
                }
                "command_name" => {
                    let inner = child.named_child(0).unwrap_or(child);
                    command.words.push(self.word(inner)?);
                }
                "file_redirect" | "heredoc_redirect" | "herestring_redirect" => {
                    self.redirect(child)?
                }
                "comment" => {}
                _ => command.words.push(self.word(child)?),
            }
        }
        self.script.commands.push(command);
        Ok(())
    }

    fn redirect(&mut self, node: Node<'_>) -> Result<(), ShellError> {
        if node.kind() != "file_redirect" {
            // Here-documents and here-strings feed standard input; their bodies were scanned
            // for substitutions already.
            return Ok(());
        }
        let mut operator = String::new();
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            if !child.is_named() {
                operator.push_str(self.text(child));
            }
        }
        let Some(destination) = node.child_by_field_name("destination") else {
            return Err(ShellError::Syntax);
        };
        let target = self.word(destination)?;
        match operator.as_str() {
            // Duplicating or closing a descriptor touches no file.
            ">&" | "<&" | ">&-" | "<&-" if is_fd(&target) => Ok(()),
            "<" => {
                self.script.redirects.push(Redirect::Read(target));
                Ok(())
            }
            ">" | ">>" | ">|" | "&>" | "&>>" | ">&" => {
                self.script.redirects.push(Redirect::Write(target));
                Ok(())
            }
            "<>" => {
                self.script.redirects.push(Redirect::Write(target));
                Ok(())
            }
            other => Err(ShellError::Unsupported(format!("the redirection `{other}`"))),
        }
    }

    fn word(&self, node: Node<'_>) -> Result<Word, ShellError> {
        let text = self.text(node).to_string();
        let (value, glob) = self.value(node)?;
        Ok(Word { text, value, glob })
    }

    /// The static value of a word node and whether it globs.
    fn value(&self, node: Node<'_>) -> Result<(Option<String>, bool), ShellError> {
        let text = self.text(node);
        Ok(match node.kind() {
            "word" | "number" => unescape_word(text),
            "raw_string" => {
                (Some(text.trim_start_matches('\'').trim_end_matches('\'').to_string()), false)
            }
            "string" => {
                let mut out = String::new();
                let mut cursor = node.walk();
                for child in node.named_children(&mut cursor) {
                    match child.kind() {
                        "string_content" => out.push_str(&unescape_double(self.text(child))),
                        _ => return Ok((None, false)),
                    }
                }
                (Some(out), false)
            }
            "concatenation" => {
                let mut out = Some(String::new());
                let mut glob = false;
                let mut cursor = node.walk();
                for child in node.named_children(&mut cursor) {
                    let (v, g) = self.value(child)?;
                    glob |= g;
                    out = match (out, v) {
                        (Some(mut o), Some(v)) => {
                            o.push_str(&v);
                            Some(o)
                        }
                        _ => None,
                    };
                }
                // Unnamed pieces (braces of a brace expansion) make it expand.
                glob |= node.child_count() != node.named_child_count();
                (out, glob)
            }
            "simple_expansion" | "expansion" | "ansi_c_string" | "translated_string" => {
                (None, false)
            }
            other => return Err(ShellError::Unsupported(describe(other))),
        })
    }
}

fn is_fd(word: &Word) -> bool {
    word.value.as_deref().is_some_and(|v| v == "-" || v.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes backslash escapes from an unquoted word; reports unescaped glob characters.
fn unescape_word(text: &str) -> (Option<String>, bool) {
    let mut out = String::with_capacity(text.len());
    let mut glob = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '*' | '?' | '[' | '{' => {
                glob = true;
                out.push(c);
            }
            '$' => return (None, glob),
            _ => out.push(c),
        }
    }
    (Some(out), glob)
}

/// Inside double quotes a backslash escapes only `$`, `` ` ``, `"`, `\` and a newline.
fn unescape_double(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('$' | '`' | '"' | '\\') => {
                    out.extend(chars.next());
                    continue;
                }
                Some('\n') => {
                    chars.next();
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

fn describe(kind: &str) -> String {
    match kind {
        "if_statement" => "an `if` statement".into(),
        "for_statement" | "c_style_for_statement" => "a `for` loop".into(),
        "while_statement" => "a `while` loop".into(),
        "case_statement" => "a `case` statement".into(),
        "function_definition" => "a function definition".into(),
        "compound_statement" => "a `{ … }` group".into(),
        "test_command" => "a `[[ … ]]` test".into(),
        "declaration_command" => "a declaration (`export`, `declare`, `local` …)".into(),
        "unset_command" => "`unset`".into(),
        other => format!("`{other}`"),
    }
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
