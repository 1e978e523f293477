//! Command-line grammars: the exact options a program accepts, each with its arity and what its
//! value is, parsed the way GNU `getopt_long` parses them (short options clustered, a value
//! attached or in the next word, long options abbreviated to any unique prefix, options after
//! operands, `--` ending options).
//!
//! A grammar is an allow-list: a word that is not one of its options makes the whole command
//! unknown, and the policy asks. Whatever a grammar lists must exist in the real program with the
//! arity given here, and no option the program has but the grammar leaves out may have a full
//! name that is a prefix of a listed one (the program would take it exactly; the tables' test
//! `LEFT_OUT` checks this): that is what makes prefix resolution safe (an abbreviation unique
//! among the listed options is either unique in the program too, or an error there). Programs
//! that take no abbreviations (ripgrep) only refuse more.

/// What an option's value (or an operand) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    /// Free text the program does not open (a pattern, a format, a number, a name).
    Text,
    /// A file or directory the program reads (opens, lists or stats): judged as a read.
    Path,
}

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// No value.
    Flag,
    /// A value, attached (`-n5`, `--lines=5`) or in the next word (`-n 5`, `--lines 5`).
    Required(Val),
    /// A value only when attached (`--color=auto`); `--color auto` makes `auto` an operand.
    Optional(Val),
}

/// One option: its long name (without `--`; empty when it has none), its short letter (`'\0'`
/// when it has none) and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opt {
    pub(crate) long: &'static str,
    pub(crate) short: char,
    pub(crate) arg: Arg,
}

impl Opt {
    /// Whether it is called `name`: its long name, or its short letter when it has no long one.
    pub(crate) fn named(&self, name: &str) -> bool {
        if self.long.is_empty() {
            let mut chars = name.chars();
            chars.next() == Some(self.short) && chars.next().is_none()
        } else {
            self.long == name
        }
    }
}

/// A flag: `flag("all", 'a')`.
pub(crate) const fn flag(long: &'static str, short: char) -> Opt {
    Opt { long, short, arg: Arg::Flag }
}

/// An option with a required value: `value("lines", 'n', Val::Text)`.
pub(crate) const fn value(long: &'static str, short: char, val: Val) -> Opt {
    Opt { long, short, arg: Arg::Required(val) }
}

/// An option whose value must be attached: `optional("color", '\0', Val::Text)`.
pub(crate) const fn optional(long: &'static str, short: char, val: Val) -> Opt {
    Opt { long, short, arg: Arg::Optional(val) }
}

/// What the words that are not options are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operands {
    /// Every operand is a file or directory the program reads.
    Paths,
    /// Operands are text the program does not open (`echo`, `basename`).
    Text,
    /// The first operand is a pattern unless an option in `Grammar::pattern_options` gave one;
    /// the rest are paths (`grep`, `rg`).
    PatternThenPaths,
    /// Only the first `n` operands are paths; later ones are text (`cmp A B SKIP1 SKIP2`).
    FirstPaths(usize),
    /// No operands at all.
    None,
}

/// The grammar of one program.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grammar {
    /// Every option the program may be given without asking.
    pub(crate) options: &'static [Opt],
    /// What its operands are.
    pub(crate) operands: Operands,
    /// At most this many operands (`uniq`'s second operand is an output file: at most one).
    pub(crate) max_operands: Option<usize>,
    /// `-NUM` as one option (`head -20`, `grep -3`).
    pub(crate) numeric_option: bool,
    /// Long names (as in `options`) of the options that supply the pattern, for
    /// [`Operands::PatternThenPaths`]: when one is given, every operand is a path.
    pub(crate) pattern_options: &'static [&'static str],
    /// Long names of options after which no operand is read at all (`rg --files` lists files,
    /// so its operands are all paths; `--type-list` reads none). For `PatternThenPaths` only.
    pub(crate) no_pattern_options: &'static [&'static str],
}

impl Grammar {
    /// A grammar whose operands are all paths, with no further limits.
    pub(crate) const fn paths(options: &'static [Opt]) -> Self {
        Self {
            options,
            operands: Operands::Paths,
            max_operands: None,
            numeric_option: false,
            pattern_options: &[],
            no_pattern_options: &[],
        }
    }
}

/// What a command line means under a grammar.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    /// Files and directories the program reads: path-valued options' values and path operands.
    pub(crate) paths: Vec<&'a str>,
    /// Every operand, in order.
    pub(crate) operands: Vec<&'a str>,
    /// Each option given, in order.
    pub(crate) given: Vec<&'static Opt>,
    /// Text values of options, in order (for checks a grammar cannot express).
    pub(crate) values: Vec<(&'static Opt, &'a str)>,
}

impl Parsed<'_> {
    /// Whether the option with this long name (or, for one without, this short letter) was
    /// given.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.given.iter().any(|o| o.named(name))
    }
}

/// Why a command line is outside a grammar: the program may do something the grammar does not
/// allow, so the policy asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// An option the grammar does not list.
    #[error("option `{0}` is not one it may take unasked")]
    Unknown(String),
    /// A long option abbreviated to a prefix of several.
    #[error("option `{0}` is ambiguous")]
    Ambiguous(String),
    /// A value where none is taken, or none where one is needed.
    #[error("option `{0}` is given wrongly")]
    Malformed(String),
    /// More operands than it may take.
    #[error("it takes at most {0} operands here")]
    TooManyOperands(usize),
}

/// The option `-NUM` stands for, in grammars that take it.
static NUMERIC: Opt = value("", '#', Val::Text);

/// Resolves a long option name as `getopt_long` does: an exact match, else a unique prefix.
fn long_option(grammar: &Grammar, name: &str) -> Result<&'static Opt, Refused> {
    let listed = grammar.options.iter().filter(|o| !o.long.is_empty());
    if let Some(exact) = listed.clone().find(|o| o.long == name) {
        return Ok(exact);
    }
    let mut matches = listed.filter(|o| o.long.starts_with(name));
    match (matches.next(), matches.next()) {
        (Some(one), None) if !name.is_empty() => Ok(one),
        (Some(_), Some(_)) => Err(Refused::Ambiguous(format!("--{name}"))),
        _ => Err(Refused::Unknown(format!("--{name}"))),
    }
}

/// Parses `args` (the words after the program name) under `grammar`, as GNU `getopt_long`
/// with argument permutation does.
pub(crate) fn parse<'a>(grammar: &Grammar, args: &'a [&'a str]) -> Result<Parsed<'a>, Refused> {
    parse_with(grammar, args, false).map(|(parsed, _)| parsed)
}

/// Parses options up to the first operand (or `--`), as `getopt` in POSIX mode and shell
/// builtins do; returns them and the index of the first word after them. The operands are left
/// unparsed (and not judged): the caller says what they are.
pub(crate) fn parse_prefix<'a>(
    grammar: &Grammar,
    args: &'a [&'a str],
) -> Result<(Parsed<'a>, usize), Refused> {
    parse_with(&Grammar { operands: Operands::None, max_operands: None, ..*grammar }, args, true)
}

fn parse_with<'a>(
    grammar: &Grammar,
    args: &'a [&'a str],
    stop_at_operand: bool,
) -> Result<(Parsed<'a>, usize), Refused> {
    let mut out = Parsed::default();
    let mut i = 0;
    let mut options_done = false;
    let take_value = |out: &mut Parsed<'a>, opt: &'static Opt, val: Val, value: &'a str| match val {
        Val::Path => out.paths.push(value),
        Val::Text => out.values.push((opt, value)),
    };
    while let Some(&arg) = args.get(i) {
        i += 1;
        if options_done || arg == "-" || !arg.starts_with('-') {
            if stop_at_operand {
                return Ok((out, i - 1));
            }
            out.operands.push(arg);
            continue;
        }
        if arg == "--" {
            if stop_at_operand {
                return Ok((out, i));
            }
            options_done = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let opt = long_option(grammar, name)?;
            out.given.push(opt);
            match (opt.arg, attached) {
                (Arg::Flag, None) => {}
                (Arg::Flag, Some(_)) => return Err(Refused::Malformed(arg.to_string())),
                (Arg::Required(val) | Arg::Optional(val), Some(v)) => {
                    take_value(&mut out, opt, val, v);
                }
                (Arg::Required(val), None) => {
                    let Some(&v) = args.get(i) else {
                        return Err(Refused::Malformed(arg.to_string()));
                    };
                    i += 1;
                    take_value(&mut out, opt, val, v);
                }
                (Arg::Optional(_), None) => {}
            }
            continue;
        }
        // A cluster of short options: `-abc`, `-n5`, `-n 5`, `-20`.
        let cluster = &arg[1..];
        for (at, c) in cluster.char_indices() {
            if grammar.numeric_option && c.is_ascii_digit() {
                // `-NUM`: the digits are one option's value, and must end the word (`head -5c`
                // and `tail -5f` are other options in the obsolete syntax).
                if !cluster[at..].bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refused::Malformed(arg.to_string()));
                }
                out.given.push(&NUMERIC);
                break;
            }
            let Some(opt) = grammar.options.iter().find(|o| o.short == c && c != '\0') else {
                return Err(Refused::Unknown(format!("-{c}")));
            };
            out.given.push(opt);
            let rest = &cluster[at + c.len_utf8()..];
            match opt.arg {
                Arg::Flag => continue,
                Arg::Required(val) if !rest.is_empty() => take_value(&mut out, opt, val, rest),
                Arg::Required(val) => {
                    let Some(&v) = args.get(i) else {
                        return Err(Refused::Malformed(arg.to_string()));
                    };
                    i += 1;
                    take_value(&mut out, opt, val, v);
                }
                Arg::Optional(val) => {
                    if !rest.is_empty() {
                        take_value(&mut out, opt, val, rest);
                    }
                }
            }
            break;
        }
    }
    if let Some(max) = grammar.max_operands
        && out.operands.len() > max
    {
        return Err(Refused::TooManyOperands(max));
    }
    let pattern_given = grammar.pattern_options.iter().any(|p| out.has(p))
        || grammar.no_pattern_options.iter().any(|p| out.has(p));
    let paths: Vec<&'a str> = match grammar.operands {
        Operands::Paths => out.operands.clone(),
        Operands::Text => Vec::new(),
        Operands::PatternThenPaths if pattern_given => out.operands.clone(),
        Operands::PatternThenPaths => out.operands.iter().skip(1).copied().collect(),
        Operands::FirstPaths(n) => out.operands.iter().take(n).copied().collect(),
        Operands::None if !out.operands.is_empty() => return Err(Refused::TooManyOperands(0)),
        Operands::None => Vec::new(),
    };
    // `-` is standard input, not a file.
    out.paths.extend(paths.into_iter().filter(|p| *p != "-"));
    Ok((out, args.len()))
}
