//! The read-only built-ins of PERMISSIONS.md (and a few of the same kind from Codex's list):
//! which commands read without writing or running anything, and which of their arguments are
//! paths to judge as reads.

use super::programs::{always_asked, program, value};
use super::shell::Word;

/// A read-only built-in with read-only arguments: what it reads. `None`: not read-only.
pub(crate) struct ReadOnly<'a> {
    /// Path operands, to be judged as reads.
    pub(crate) reads: Vec<&'a Word>,
    /// For `cd`: the new directory (`None` inside means "home").
    pub(crate) cd: Option<Option<&'a Word>>,
}

/// Recognises the read-only built-ins of PERMISSIONS.md (and a few of the same kind from
/// Codex's list) when their arguments keep them read-only.
pub(crate) fn read_only(words: &[Word]) -> Option<ReadOnly<'_>> {
    let name = program(words.first()?)?;
    if words.iter().any(|w| w.value.is_none()) {
        return None;
    }
    let args = &words[1..];
    let plain = |value_options: &[&str], skip_first_operand: bool| -> ReadOnly<'_> {
        operands(args, value_options, skip_first_operand)
    };
    Some(match name {
        "echo" | "pwd" | "true" | "false" | "which" => ReadOnly { reads: Vec::new(), cd: None },
        "cd" => {
            if args.len() > 1 {
                return None;
            }
            ReadOnly { reads: Vec::new(), cd: Some(args.first()) }
        }
        "ls" | "cat" | "wc" | "stat" | "du" | "diff" | "nl" => plain(
            &[
                "-d",
                "--max-depth",
                "-I",
                "--ignore",
                "-w",
                "--width",
                "-T",
                "-c",
                "--format",
                "-b",
                "-v",
                "-s",
            ],
            false,
        ),
        "head" | "tail" => plain(&["-n", "-c", "--lines", "--bytes"], false),
        "grep" | "egrep" | "fgrep" => {
            let explicit = args.iter().any(|w| {
                let v = value(w);
                v == "-e" || v == "-f" || v.starts_with("--regexp") || v.starts_with("--file")
            });
            plain(
                &[
                    "-e",
                    "-f",
                    "-m",
                    "-A",
                    "-B",
                    "-C",
                    "--include",
                    "--exclude",
                    "--exclude-dir",
                    "--color",
                    "--colour",
                ],
                !explicit,
            )
        }
        "rg" => {
            if args.iter().any(|w| {
                let v = value(w);
                v == "-z"
                    || v.starts_with("--pre")
                    || v == "--search-zip"
                    || v.starts_with("--hostname-bin")
            }) {
                return None;
            }
            plain(
                &[
                    "-e",
                    "-f",
                    "-g",
                    "--glob",
                    "-t",
                    "--type",
                    "-T",
                    "-m",
                    "-A",
                    "-B",
                    "-C",
                    "-j",
                    "--max-depth",
                ],
                true,
            )
        }
        "base64" => {
            if args.iter().any(|w| {
                let v = value(w);
                v.starts_with("-o") || v.starts_with("--output")
            }) {
                return None;
            }
            plain(&["-w", "--wrap"], false)
        }
        "find" => {
            if always_asked(words).is_some() {
                return None;
            }
            // Starting points come before the first expression token.
            let reads = args
                .iter()
                .take_while(|w| {
                    let v = value(w);
                    !(v.starts_with('-') || v == "(" || v == "!" || v == ")")
                })
                .collect();
            ReadOnly { reads, cd: None }
        }
        "sed" => {
            // Only `sed -n` with print-only scripts (Codex's rule: `N`p or `N,M`p).
            let [n, script, files @ ..] = args else { return None };
            if value(n) != "-n" || !print_only_sed(value(script)) {
                return None;
            }
            ReadOnly { reads: files.iter().collect(), cd: None }
        }
        _ => return None,
    })
}

fn print_only_sed(script: &str) -> bool {
    let body = script.strip_suffix('p').unwrap_or("x");
    let mut parts = body.split(',');
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, None) => numeric(a),
        (Some(a), Some(b), None) => numeric(a) && (numeric(b) || b == "$"),
        _ => false,
    }
}

/// Operands of a simple command: words that are neither options nor option values.
fn operands<'a>(args: &'a [Word], value_options: &[&str], skip_first: bool) -> ReadOnly<'a> {
    let mut reads = Vec::new();
    let mut skip_next = false;
    let mut first = skip_first;
    let mut options_done = false;
    for w in args {
        let v = value(w);
        if skip_next {
            skip_next = false;
            continue;
        }
        if !options_done && v == "--" {
            options_done = true;
            continue;
        }
        if !options_done && v.starts_with('-') && v != "-" {
            skip_next = value_options.contains(&v);
            continue;
        }
        if first {
            first = false;
            continue;
        }
        reads.push(w);
    }
    ReadOnly { reads, cd: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sed_prints_only_numbered_lines() {
        assert!(print_only_sed("1,5p") && print_only_sed("3p") && print_only_sed("2,$p"));
        assert!(!print_only_sed("xp") && !print_only_sed("1e id") && !print_only_sed("p"));
    }
}
