//! The read-only built-ins: programs that run without asking when their whole command line is
//! inside an exact grammar (every option, its arity, what its value is), and what they read.
//!
//! Everything here is an allow-list. A program is read-only only if it is listed; an option
//! only if its grammar lists it; a `sed` script or `find` expression only if every part of it
//! parses as one of the listed commands or primaries. The paths such a command opens (operands
//! and path-valued options) come back to be judged as reads, in the directory the command runs
//! in. Programs that run programs, write, or take their arguments from standard input are
//! never here (`xargs`, `git`, `awk`, `tar`, pagers, interpreters, shells).

mod find;
mod sed;
mod tables;

use super::options::{self, Grammar, Operands, Opt, Refused, flag};

/// What a read-only command reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReadOnly<'a> {
    /// Files and directories it opens, lists or stats, as written (relative to where it runs).
    pub(crate) reads: Vec<&'a str>,
    /// For `cd`: the new directory as written, `None` for home.
    pub(crate) cd: Option<Option<&'a str>>,
    /// For `cd -P`: the new directory is the physical one.
    pub(crate) physical: bool,
    /// The paths must not be directories: `diff DIR FILE` compares `DIR/FILE`, a path nobody
    /// judged, following symlinks.
    pub(crate) files_only: bool,
    /// The directories whose every file it reads (a recursive `grep`, `rg`): a path rule
    /// about any file below them is about this command too.
    pub(crate) trees: Vec<&'a str>,
}

/// Whether `program` (a name, or a path in the system's own `bin` directories) with `args` is a
/// read-only command, and if so what it reads. `Err`: why it is not.
pub(crate) fn read_only<'a>(program: &'a str, args: &'a [&'a str]) -> Result<ReadOnly<'a>, String> {
    let Some(name) = system_program(program) else {
        return Err(format!("`{program}` is not a program from the system's own directories"));
    };
    let refused = |e: Refused| format!("`{name}`: {e}");
    let nothing = || Ok(ReadOnly::default());
    match name {
        "echo" | "true" | "false" | ":" => nothing(),
        "test" | "[" => {
            // Every operand may be a path it stats (`-f x`, `x -nt y`); operators and strings
            // are judged as paths too, which costs nothing inside the workspace.
            let operands = if name == "[" {
                match args.split_last() {
                    Some((&"]", rest)) => rest,
                    _ => return Err("`[` without its closing `]`".into()),
                }
            } else {
                args
            };
            // `-v NAME` evaluates an array subscript in NAME as arithmetic, which runs code.
            if operands.contains(&"-v") {
                return Err("`test -v` evaluates what it is given".into());
            }
            let reads = operands.iter().copied().filter(|a| !a.starts_with('-')).collect();
            Ok(ReadOnly { reads, ..ReadOnly::default() })
        }
        "printf" => {
            // The `printf -v NAME` builtin sets a variable.
            if args.first().is_some_and(|a| a.starts_with("-v")) {
                return Err("`printf -v` sets a shell variable".into());
            }
            nothing()
        }
        "pwd" => {
            parse(&PWD, args).map_err(refused)?;
            nothing()
        }
        "which" => {
            // Debian's `which` is a shell script taking `-a` and `-s` before the names.
            parse_posix(&WHICH, args).map_err(refused)?;
            nothing()
        }
        "type" => {
            parse_posix(&TYPE, args).map_err(refused)?;
            nothing()
        }
        "command" => {
            // `command -v NAME` and `command -V NAME` say what NAME is; they run nothing.
            let parsed = parse_posix(&COMMAND, args).map_err(refused)?;
            if !parsed.has("v") && !parsed.has("V") {
                return Err("`command` without -v or -V runs its command".into());
            }
            nothing()
        }
        "cd" => {
            let parsed = parse_posix(&CD, args).map_err(refused)?;
            let target = parsed.operands.first().copied();
            if target == Some("-") {
                return Err("`cd -` goes back to a directory the policy does not know".into());
            }
            // The last of `-L` and `-P` counts.
            let physical = parsed.given.iter().rev().find(|o| o.named("L") || o.named("P"));
            Ok(ReadOnly {
                reads: target.into_iter().collect(),
                cd: Some(target),
                physical: physical.is_some_and(|o| o.named("P")),
                ..ReadOnly::default()
            })
        }
        "find" => find::reads(args).map(|reads| ReadOnly { reads, ..ReadOnly::default() }),
        "sed" => sed::reads(args).map(|reads| ReadOnly { reads, ..ReadOnly::default() }),
        _ => {
            let Some(grammar) = tables::grammar(name) else {
                return Err(format!("`{name}` is not a read-only built-in"));
            };
            let parsed = options::parse(&grammar, args).map_err(refused)?;
            if name == "date" && parsed.operands.iter().any(|o| !o.starts_with('+')) {
                return Err("`date` with an operand that is not `+FORMAT` sets the clock".into());
            }
            if name == "tail" && parsed.operands.iter().any(|o| o.starts_with('+')) {
                return Err("`tail +…` is the obsolete syntax, which may follow forever".into());
            }
            if name == "tac" && (parsed.operands.is_empty() || parsed.operands.contains(&"-")) {
                return Err("`tac` copies standard input into a temporary file".into());
            }
            if name == "date" && parsed.values.iter().any(|(_, v)| v.contains("TZ=")) {
                return Err("a `TZ=` in a date makes `date` read that time zone file".into());
            }
            // Recursive readers open every file below the directories they are given (or the
            // one they run in), which no single path judged.
            let recursive = match name {
                "rg" => true,
                "grep" | "egrep" | "fgrep" => {
                    parsed.has("recursive")
                        || parsed.values.iter().any(|(o, v)| {
                            o.named("directories") && "recurse".starts_with(*v) && !v.is_empty()
                        })
                }
                _ => false,
            };
            let trees = if recursive {
                let skip = usize::from(
                    !grammar.pattern_options.iter().any(|p| parsed.has(p))
                        && !grammar.no_pattern_options.iter().any(|p| parsed.has(p)),
                );
                let operands: Vec<&str> = parsed.operands.iter().skip(skip).copied().collect();
                if operands.is_empty() { vec!["."] } else { operands }
            } else {
                Vec::new()
            };
            Ok(ReadOnly {
                reads: parsed.paths,
                files_only: name == "diff",
                trees,
                ..ReadOnly::default()
            })
        }
    }
}

/// Whether `name` is one of the read-only built-ins (with some command line).
pub(crate) fn is_read_only_program(name: &str) -> bool {
    matches!(
        name,
        "echo"
            | "true"
            | "false"
            | ":"
            | "test"
            | "["
            | "printf"
            | "pwd"
            | "which"
            | "type"
            | "command"
            | "cd"
            | "find"
            | "sed"
    ) || tables::grammar(name).is_some()
}

/// Whether `name` is a read-only built-in that, given options its grammar leaves out, runs
/// programs or writes (`rg --pre`, `sort -o`, `diff -l`, `file -z`, `find -exec`, `sed e`,
/// `uniq IN OUT`, `tac` from a pipe, `date -s`); the others only read more.
pub(crate) fn may_run_or_write(name: &str) -> bool {
    matches!(name, "rg" | "sort" | "diff" | "file" | "find" | "sed" | "uniq" | "tac" | "date")
}

/// Whether a sed script is made only of the commands the read-only grammar accepts.
pub(crate) fn sed_script_is_read_only(script: &str) -> Result<(), String> {
    sed::check_script(script)
}

/// The program's name when it is a bare name (found on `PATH`) or a path in `/bin` or
/// `/usr/bin`; `None` for anything else (`./cat` may be anything).
pub(crate) fn system_program(word: &str) -> Option<&str> {
    if !word.contains('/') {
        return Some(word);
    }
    ["/bin/", "/usr/bin/"]
        .iter()
        .find_map(|dir| word.strip_prefix(dir))
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

fn parse<'a>(grammar: &Grammar, args: &'a [&'a str]) -> Result<options::Parsed<'a>, Refused> {
    options::parse(grammar, args)
}

/// Parses options before the first operand (POSIX `getopts`, as shell builtins and scripts
/// do): a later word that looks like an option is an operand.
fn parse_posix<'a>(grammar: &Grammar, args: &'a [&'a str]) -> Result<options::Parsed<'a>, Refused> {
    let (mut parsed, next) = options::parse_prefix(grammar, args)?;
    let rest = &args[next..];
    if let Some(max) = grammar.max_operands
        && rest.len() > max
    {
        return Err(Refused::TooManyOperands(max));
    }
    parsed.operands = rest.to_vec();
    if grammar.operands == Operands::Paths {
        parsed.paths.extend(rest.iter().copied().filter(|p| *p != "-"));
    }
    Ok(parsed)
}

const fn text_operands(options: &'static [Opt], max: Option<usize>) -> Grammar {
    Grammar { operands: Operands::Text, max_operands: max, ..Grammar::paths(options) }
}

const PWD: Grammar = text_operands(&[flag("", 'L'), flag("", 'P')], Some(0));
const WHICH: Grammar = text_operands(&[flag("", 'a'), flag("", 's')], None);
const TYPE: Grammar = text_operands(
    &[flag("", 'a'), flag("", 'f'), flag("", 'p'), flag("", 'P'), flag("", 't')],
    None,
);
const COMMAND: Grammar = text_operands(&[flag("", 'p'), flag("", 'v'), flag("", 'V')], None);
const CD: Grammar = Grammar {
    operands: Operands::Paths,
    max_operands: Some(1),
    ..Grammar::paths(&[flag("", 'L'), flag("", 'P'), flag("", 'e'), flag("", '@')])
};

#[cfg(test)]
mod tests;
