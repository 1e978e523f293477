//! Exact command-line grammars of the programs the policy lets run without asking because they
//! only read (`ls`, `cat`, `grep`, `rg`, `sort`, …): for each, every option it may be given, with
//! the program's own arity, and what its operands are. They are written for the versions on
//! Debian 12 (GNU coreutils 9.1, grep 3.8, diffutils 3.8, file 5.44) and ripgrep 13 and 14, and
//! checked against their `--help` and their option tables in the sources.
//!
//! The rule for adding an option (or a program): list it only if, whatever its value, the
//! program with it (a) writes no file anywhere; (b) runs no other program (no pager,
//! decompressor, preprocessor or helper); (c) reads no file or directory that is not named on
//! the command line as that option's value or as an operand — so nothing that follows symlinks
//! found while recursing, reads names or arguments from a file or stdin, or opens a config file
//! or a file the environment names; and (d) does not wait forever or poll. Give it exactly the
//! program's arity (a value-taking option listed as a flag would make the policy misread the
//! next word), mark a value the program opens as `Val::Path`, and make sure no real option left
//! out has a long name that is a prefix of a listed one (`getopt_long` prefers an exact match
//! to an abbreviation, and ripgrep takes only exact names: `du --dereference` is `-L`, not an
//! abbreviation of `--dereference-args`); the `LEFT_OUT` test list checks that. Above each table
//! a comment names the options left out and why.

use super::super::options::{Grammar, Operands, Opt, Val, flag, optional, value};

/// The grammar of a read-only program by its name, if it is one.
pub(crate) fn grammar(name: &str) -> Option<Grammar> {
    match name {
        "ls" => Some(LS),
        "cat" => Some(CAT),
        "tac" => Some(TAC),
        "head" => Some(HEAD),
        "tail" => Some(TAIL),
        "wc" => Some(WC),
        "stat" => Some(STAT),
        "du" => Some(DU),
        "diff" => Some(DIFF),
        "cmp" => Some(CMP),
        "nl" => Some(NL),
        "od" => Some(OD),
        // egrep and fgrep are `grep -E` and `grep -F` (shell scripts in grep 3.8).
        "grep" | "egrep" | "fgrep" => Some(GREP),
        "rg" => Some(RG),
        "base64" | "base32" => Some(BASENC),
        "sort" => Some(SORT),
        "uniq" => Some(UNIQ),
        "cut" => Some(CUT),
        "tr" => Some(TR),
        "md5sum" | "sha1sum" | "sha224sum" | "sha256sum" | "sha384sum" | "sha512sum" => {
            Some(DIGEST)
        }
        "b2sum" => Some(B2SUM),
        "readlink" => Some(READLINK),
        "realpath" => Some(REALPATH),
        "basename" => Some(BASENAME),
        "dirname" => Some(DIRNAME),
        "uname" => Some(UNAME),
        "whoami" => Some(WHOAMI),
        "id" => Some(ID),
        "date" => Some(DATE),
        "file" => Some(FILE),
        _ => None,
    }
}

// ls. Left out:
//   -L, --dereference: follows every listed entry's symlink (stats what the links point to).
//   --dereference-command-line (long name only; -H is listed) and
//   --dereference-command-line-symlink-to-dir: `--dereference` is a prefix of both names, and
//     ls takes it as -L.
const LS_OPTIONS: &[Opt] = &[
    flag("all", 'a'),
    flag("almost-all", 'A'),
    flag("author", '\0'),
    flag("escape", 'b'),
    value("block-size", '\0', Val::Text),
    flag("ignore-backups", 'B'),
    flag("", 'c'),
    flag("", 'C'),
    optional("color", '\0', Val::Text),
    flag("directory", 'd'),
    flag("dired", 'D'),
    flag("", 'f'),
    // -F takes no value; --classify[=WHEN] takes an attached one.
    flag("", 'F'),
    optional("classify", '\0', Val::Text),
    flag("file-type", '\0'),
    value("format", '\0', Val::Text),
    flag("full-time", '\0'),
    flag("", 'g'),
    flag("group-directories-first", '\0'),
    flag("no-group", 'G'),
    flag("human-readable", 'h'),
    flag("si", '\0'),
    flag("", 'H'),
    value("hide", '\0', Val::Text),
    optional("hyperlink", '\0', Val::Text),
    value("indicator-style", '\0', Val::Text),
    flag("inode", 'i'),
    value("ignore", 'I', Val::Text),
    flag("kibibytes", 'k'),
    flag("", 'l'),
    flag("", 'm'),
    flag("numeric-uid-gid", 'n'),
    flag("literal", 'N'),
    flag("", 'o'),
    flag("", 'p'),
    flag("hide-control-chars", 'q'),
    flag("show-control-chars", '\0'),
    flag("quote-name", 'Q'),
    value("quoting-style", '\0', Val::Text),
    flag("reverse", 'r'),
    flag("recursive", 'R'),
    flag("size", 's'),
    flag("", 'S'),
    value("sort", '\0', Val::Text),
    value("time", '\0', Val::Text),
    value("time-style", '\0', Val::Text),
    flag("", 't'),
    value("tabsize", 'T', Val::Text),
    flag("", 'u'),
    flag("", 'U'),
    flag("", 'v'),
    value("width", 'w', Val::Text),
    flag("", 'x'),
    flag("", 'X'),
    flag("context", 'Z'),
    flag("zero", '\0'),
    flag("", '1'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const LS: Grammar = Grammar::paths(LS_OPTIONS);

// cat. Nothing left out.
const CAT_OPTIONS: &[Opt] = &[
    flag("show-all", 'A'),
    flag("number-nonblank", 'b'),
    flag("", 'e'),
    flag("show-ends", 'E'),
    flag("number", 'n'),
    flag("squeeze-blank", 's'),
    flag("", 't'),
    flag("show-tabs", 'T'),
    flag("", 'u'),
    flag("show-nonprinting", 'v'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const CAT: Grammar = Grammar::paths(CAT_OPTIONS);

// tac. Nothing left out; but tac copies what it cannot seek in (standard input, a pipe) into a
// temporary file, so the policy allows it only with file operands (`readonly::read_only`).
const TAC_OPTIONS: &[Opt] = &[
    flag("before", 'b'),
    flag("regex", 'r'),
    value("separator", 's', Val::Text),
    flag("help", '\0'),
    flag("version", '\0'),
];
const TAC: Grammar = Grammar::paths(TAC_OPTIONS);

// head (also `-NUM`). Left out:
//   ---presume-input-pipe: undocumented, for tests.
// `-NUM` followed by letters (`head -5c FILE`, the obsolete syntax, where FILE is an operand)
// is refused by the parser (digits must end a `-NUM`), so `-c` can be listed.
const HEAD_OPTIONS: &[Opt] = &[
    // `-c` is safe for head: its obsolete `-NUMc` form is refused (digits must end a `-NUM`).
    value("bytes", 'c', Val::Text),
    value("lines", 'n', Val::Text),
    flag("quiet", 'q'),
    flag("silent", '\0'),
    flag("verbose", 'v'),
    flag("zero-terminated", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const HEAD: Grammar = Grammar { numeric_option: true, ..Grammar::paths(HEAD_OPTIONS) };

// tail (also `-NUM`). Left out:
//   -f, --follow[=HOW], -F: wait for the file to grow, forever.
//   --retry, --pid=PID, -s/--sleep-interval=N, --max-unchanged-stats=N: only for following.
//   -c (the short name only; --bytes is listed): tail takes a lone first argument
//     `-[NUM][bcl][f]` in the obsolete syntax, so `tail -cf FILE` follows FILE forever (it is
//     not `-c f`) and `tail -5c FILE` reads FILE as an operand, not as -c's value.
//   ---disable-inotify, ---presume-input-pipe: undocumented, for tests.
// (`tail +NUM FILE` is the obsolete syntax too; the policy judges `+NUM` as a path: harmless.)
const TAIL_OPTIONS: &[Opt] = &[
    value("bytes", '\0', Val::Text),
    value("lines", 'n', Val::Text),
    flag("quiet", 'q'),
    flag("silent", '\0'),
    flag("verbose", 'v'),
    flag("zero-terminated", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const TAIL: Grammar = Grammar { numeric_option: true, ..Grammar::paths(TAIL_OPTIONS) };

// wc. Left out:
//   --files0-from=F: reads the names of the files to count from F (or stdin).
//   --debug: undocumented.
// (--total=WHEN is newer than coreutils 9.1.)
const WC_OPTIONS: &[Opt] = &[
    flag("bytes", 'c'),
    flag("chars", 'm'),
    flag("lines", 'l'),
    flag("max-line-length", 'L'),
    flag("words", 'w'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const WC: Grammar = Grammar::paths(WC_OPTIONS);

// stat. Nothing left out (-L only follows the operands, which the policy resolves).
const STAT_OPTIONS: &[Opt] = &[
    flag("dereference", 'L'),
    flag("file-system", 'f'),
    value("cached", '\0', Val::Text),
    value("format", 'c', Val::Text),
    value("printf", '\0', Val::Text),
    flag("terse", 't'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const STAT: Grammar = Grammar::paths(STAT_OPTIONS);

// du. Left out:
//   -L, --dereference: follows symlinks found while descending.
//   --dereference-args (long name only; -D and -H are listed): `--dereference` is a prefix of
//     it, and du takes that as -L.
//   --files0-from=F: reads the names of the files from F (or stdin).
const DU_OPTIONS: &[Opt] = &[
    flag("null", '0'),
    flag("all", 'a'),
    flag("apparent-size", '\0'),
    value("block-size", 'B', Val::Text),
    flag("bytes", 'b'),
    flag("total", 'c'),
    flag("", 'D'),
    value("max-depth", 'd', Val::Text),
    flag("", 'H'),
    flag("human-readable", 'h'),
    flag("inodes", '\0'),
    flag("", 'k'),
    flag("count-links", 'l'),
    flag("", 'm'),
    flag("no-dereference", 'P'),
    flag("separate-dirs", 'S'),
    flag("si", '\0'),
    flag("summarize", 's'),
    value("threshold", 't', Val::Text),
    optional("time", '\0', Val::Text),
    value("time-style", '\0', Val::Text),
    value("exclude-from", 'X', Val::Path),
    value("exclude", '\0', Val::Text),
    flag("one-file-system", 'x'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const DU: Grammar = Grammar::paths(DU_OPTIONS);

// diff (also `-NUM`, the obsolete context length). Left out:
//   -r, --recursive: descends into subdirectories and follows the symlinks it finds there.
//   -N, --new-file; --unidirectional-new-file (-P): for files missing from one directory.
//   -x, --exclude=PAT; -X, --exclude-from=FILE; -S, --starting-file=FILE: directory walks.
//   -l, --paginate: runs `pr`.
//   -f, --forward-ed; --binary; --inhibit-hunk-merge; --sdiff-merge-assist;
//     ---presume-output-tty: undocumented (obsolete, no-ops, or for sdiff and tests).
// -L (for --label) and -H (for --speed-large-files) are short names the help leaves out.
// Beware: even without -r, a directory operand makes diff open files in it, following symlinks:
// `diff DIR FILE` reads DIR/FILE, and `diff DIR1 DIR2` every file at the top of both.
const DIFF_OPTIONS: &[Opt] = &[
    flag("normal", '\0'),
    flag("brief", 'q'),
    flag("report-identical-files", 's'),
    // -c and -u take no value, -C and -U a required one, --context and --unified an optional
    // attached one.
    flag("", 'c'),
    value("", 'C', Val::Text),
    optional("context", '\0', Val::Text),
    flag("", 'u'),
    value("", 'U', Val::Text),
    optional("unified", '\0', Val::Text),
    flag("ed", 'e'),
    flag("rcs", 'n'),
    flag("side-by-side", 'y'),
    value("width", 'W', Val::Text),
    flag("left-column", '\0'),
    flag("suppress-common-lines", '\0'),
    flag("show-c-function", 'p'),
    value("show-function-line", 'F', Val::Text),
    value("label", 'L', Val::Text),
    flag("expand-tabs", 't'),
    flag("initial-tab", 'T'),
    value("tabsize", '\0', Val::Text),
    flag("suppress-blank-empty", '\0'),
    flag("no-dereference", '\0'),
    flag("ignore-file-name-case", '\0'),
    flag("no-ignore-file-name-case", '\0'),
    value("from-file", '\0', Val::Path),
    value("to-file", '\0', Val::Path),
    flag("ignore-case", 'i'),
    flag("ignore-tab-expansion", 'E'),
    flag("ignore-trailing-space", 'Z'),
    flag("ignore-space-change", 'b'),
    flag("ignore-all-space", 'w'),
    flag("ignore-blank-lines", 'B'),
    value("ignore-matching-lines", 'I', Val::Text),
    flag("text", 'a'),
    flag("strip-trailing-cr", '\0'),
    value("ifdef", 'D', Val::Text),
    value("old-group-format", '\0', Val::Text),
    value("new-group-format", '\0', Val::Text),
    value("changed-group-format", '\0', Val::Text),
    value("unchanged-group-format", '\0', Val::Text),
    value("line-format", '\0', Val::Text),
    value("old-line-format", '\0', Val::Text),
    value("new-line-format", '\0', Val::Text),
    value("unchanged-line-format", '\0', Val::Text),
    flag("minimal", 'd'),
    value("horizon-lines", '\0', Val::Text),
    flag("speed-large-files", 'H'),
    optional("color", '\0', Val::Text),
    value("palette", '\0', Val::Text),
    flag("help", '\0'),
    flag("version", 'v'),
];
const DIFF: Grammar =
    Grammar { max_operands: Some(2), numeric_option: true, ..Grammar::paths(DIFF_OPTIONS) };

// cmp: `cmp FILE1 [FILE2 [SKIP1 [SKIP2]]]`. Left out:
//   -c, --print-chars: undocumented (obsolete spelling of -b).
const CMP_OPTIONS: &[Opt] = &[
    flag("print-bytes", 'b'),
    value("ignore-initial", 'i', Val::Text),
    flag("verbose", 'l'),
    value("bytes", 'n', Val::Text),
    flag("quiet", 's'),
    flag("silent", '\0'),
    flag("help", '\0'),
    flag("version", 'v'),
];
const CMP: Grammar = Grammar {
    operands: Operands::FirstPaths(2),
    max_operands: Some(4),
    ..Grammar::paths(CMP_OPTIONS)
};

// nl. Nothing left out.
const NL_OPTIONS: &[Opt] = &[
    value("body-numbering", 'b', Val::Text),
    value("section-delimiter", 'd', Val::Text),
    value("footer-numbering", 'f', Val::Text),
    value("header-numbering", 'h', Val::Text),
    value("line-increment", 'i', Val::Text),
    value("join-blank-lines", 'l', Val::Text),
    value("number-format", 'n', Val::Text),
    flag("no-renumber", 'p'),
    value("number-separator", 's', Val::Text),
    value("starting-line-number", 'v', Val::Text),
    value("number-width", 'w', Val::Text),
    flag("help", '\0'),
    flag("version", '\0'),
];
const NL: Grammar = Grammar::paths(NL_OPTIONS);

// od. Left out:
//   -B -D -e -F -H -h -I -L -O -X: undocumented traditional format letters.
// Its `+OFFSET` and `--traditional` LABEL operands are judged as paths (harmlessly strict).
const OD_OPTIONS: &[Opt] = &[
    value("address-radix", 'A', Val::Text),
    value("endian", '\0', Val::Text),
    value("skip-bytes", 'j', Val::Text),
    value("read-bytes", 'N', Val::Text),
    // -S takes a required value, --strings an optional attached one.
    value("", 'S', Val::Text),
    optional("strings", '\0', Val::Text),
    value("format", 't', Val::Text),
    flag("output-duplicates", 'v'),
    optional("width", 'w', Val::Text),
    flag("traditional", '\0'),
    flag("", 'a'),
    flag("", 'b'),
    flag("", 'c'),
    flag("", 'd'),
    flag("", 'f'),
    flag("", 'i'),
    flag("", 'l'),
    flag("", 'o'),
    flag("", 's'),
    flag("", 'x'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const OD: Grammar = Grammar::paths(OD_OPTIONS);

// grep, egrep, fgrep (also `-NUM`, the context). Left out:
//   -R, --dereference-recursive: follows symlinks found while recursing (-r does not).
//   -D, --devices=ACTION: `-D read` opens the FIFOs found while recursing and waits on them.
//   --fixed-regexp (-F), -u/--unix-byte-offsets, -y, -X MATCHER: undocumented.
const GREP_OPTIONS: &[Opt] = &[
    flag("extended-regexp", 'E'),
    flag("fixed-strings", 'F'),
    flag("basic-regexp", 'G'),
    flag("perl-regexp", 'P'),
    value("regexp", 'e', Val::Text),
    value("file", 'f', Val::Path),
    flag("ignore-case", 'i'),
    flag("no-ignore-case", '\0'),
    flag("word-regexp", 'w'),
    flag("line-regexp", 'x'),
    flag("null-data", 'z'),
    flag("no-messages", 's'),
    flag("invert-match", 'v'),
    flag("version", 'V'),
    flag("help", '\0'),
    value("max-count", 'm', Val::Text),
    flag("byte-offset", 'b'),
    flag("line-number", 'n'),
    flag("line-buffered", '\0'),
    flag("with-filename", 'H'),
    flag("no-filename", 'h'),
    value("label", '\0', Val::Text),
    flag("only-matching", 'o'),
    flag("quiet", 'q'),
    flag("silent", '\0'),
    value("binary-files", '\0', Val::Text),
    flag("text", 'a'),
    flag("", 'I'),
    value("directories", 'd', Val::Text),
    flag("recursive", 'r'),
    value("include", '\0', Val::Text),
    value("exclude", '\0', Val::Text),
    value("exclude-from", '\0', Val::Path),
    value("exclude-dir", '\0', Val::Text),
    flag("files-without-match", 'L'),
    flag("files-with-matches", 'l'),
    flag("count", 'c'),
    flag("initial-tab", 'T'),
    flag("null", 'Z'),
    value("before-context", 'B', Val::Text),
    value("after-context", 'A', Val::Text),
    value("context", 'C', Val::Text),
    value("group-separator", '\0', Val::Text),
    flag("no-group-separator", '\0'),
    optional("color", '\0', Val::Text),
    optional("colour", '\0', Val::Text),
    flag("binary", 'U'),
];
const GREP: Grammar = Grammar {
    operands: Operands::PatternThenPaths,
    numeric_option: true,
    pattern_options: &["regexp", "file"],
    ..Grammar::paths(GREP_OPTIONS)
};

// rg (ripgrep 13 and 14; names only 14 has are errors in 13). ripgrep takes only exact long
// names, never abbreviations. Left out:
//   --pre=COMMAND, --pre-glob=GLOB: run a preprocessor program.
//   -z, --search-zip: runs decompression programs.
//   --hostname-bin=COMMAND: runs a program.
//   -L, --follow: follows symlinks found while recursing.
//   --pretty (long name only; -p is listed): ripgrep takes `--pre` exactly, and it is a prefix
//     of `--pretty`.
// Beware: whatever the options, rg reads the file $RIPGREP_CONFIG_PATH names (unless
// --no-config), the global gitignore (unless --no-ignore-global) and ignore files in the
// searched paths' parent directories (unless --no-ignore-parent).
const RG_OPTIONS: &[Opt] = &[
    value("after-context", 'A', Val::Text),
    flag("auto-hybrid-regex", '\0'),
    flag("no-auto-hybrid-regex", '\0'),
    value("before-context", 'B', Val::Text),
    flag("binary", '\0'),
    flag("no-binary", '\0'),
    flag("block-buffered", '\0'),
    flag("no-block-buffered", '\0'),
    flag("byte-offset", 'b'),
    flag("no-byte-offset", '\0'),
    flag("case-sensitive", 's'),
    value("color", '\0', Val::Text),
    value("colors", '\0', Val::Text),
    flag("column", '\0'),
    flag("no-column", '\0'),
    value("context", 'C', Val::Text),
    value("context-separator", '\0', Val::Text),
    flag("no-context-separator", '\0'),
    flag("count", 'c'),
    flag("count-matches", '\0'),
    flag("crlf", '\0'),
    flag("no-crlf", '\0'),
    flag("debug", '\0'),
    value("dfa-size-limit", '\0', Val::Text),
    value("encoding", 'E', Val::Text),
    flag("no-encoding", '\0'),
    value("engine", '\0', Val::Text),
    value("field-context-separator", '\0', Val::Text),
    value("field-match-separator", '\0', Val::Text),
    value("file", 'f', Val::Path),
    flag("files", '\0'),
    flag("files-with-matches", 'l'),
    flag("files-without-match", '\0'),
    flag("fixed-strings", 'F'),
    flag("no-fixed-strings", '\0'),
    flag("no-follow", '\0'),
    value("generate", '\0', Val::Text),
    value("glob", 'g', Val::Text),
    flag("glob-case-insensitive", '\0'),
    flag("no-glob-case-insensitive", '\0'),
    flag("heading", '\0'),
    flag("no-heading", '\0'),
    flag("help", 'h'),
    flag("hidden", '.'),
    flag("no-hidden", '\0'),
    value("hyperlink-format", '\0', Val::Text),
    value("iglob", '\0', Val::Text),
    flag("ignore-case", 'i'),
    value("ignore-file", '\0', Val::Path),
    flag("ignore-file-case-insensitive", '\0'),
    flag("no-ignore-file-case-insensitive", '\0'),
    flag("include-zero", '\0'),
    flag("no-include-zero", '\0'),
    flag("invert-match", 'v'),
    flag("no-invert-match", '\0'),
    flag("json", '\0'),
    flag("no-json", '\0'),
    flag("line-buffered", '\0'),
    flag("no-line-buffered", '\0'),
    flag("line-number", 'n'),
    flag("no-line-number", 'N'),
    flag("line-regexp", 'x'),
    value("max-columns", 'M', Val::Text),
    flag("max-columns-preview", '\0'),
    flag("no-max-columns-preview", '\0'),
    value("max-count", 'm', Val::Text),
    value("max-depth", 'd', Val::Text),
    value("maxdepth", '\0', Val::Text),
    value("max-filesize", '\0', Val::Text),
    flag("mmap", '\0'),
    flag("no-mmap", '\0'),
    flag("multiline", 'U'),
    flag("no-multiline", '\0'),
    flag("multiline-dotall", '\0'),
    flag("no-multiline-dotall", '\0'),
    flag("no-config", '\0'),
    flag("no-ignore", '\0'),
    flag("ignore", '\0'),
    flag("no-ignore-dot", '\0'),
    flag("ignore-dot", '\0'),
    flag("no-ignore-exclude", '\0'),
    flag("ignore-exclude", '\0'),
    flag("no-ignore-files", '\0'),
    flag("ignore-files", '\0'),
    flag("no-ignore-global", '\0'),
    flag("ignore-global", '\0'),
    flag("no-ignore-messages", '\0'),
    flag("ignore-messages", '\0'),
    flag("no-ignore-parent", '\0'),
    flag("ignore-parent", '\0'),
    flag("no-ignore-vcs", '\0'),
    flag("ignore-vcs", '\0'),
    flag("no-messages", '\0'),
    flag("messages", '\0'),
    flag("no-pcre2-unicode", '\0'),
    flag("pcre2-unicode", '\0'),
    flag("no-require-git", '\0'),
    flag("require-git", '\0'),
    flag("no-unicode", '\0'),
    flag("unicode", '\0'),
    flag("null", '0'),
    flag("null-data", '\0'),
    flag("one-file-system", '\0'),
    flag("no-one-file-system", '\0'),
    flag("only-matching", 'o'),
    value("path-separator", '\0', Val::Text),
    flag("passthru", '\0'),
    flag("passthrough", '\0'),
    flag("pcre2", 'P'),
    flag("no-pcre2", '\0'),
    flag("pcre2-version", '\0'),
    flag("no-pre", '\0'),
    flag("", 'p'),
    flag("quiet", 'q'),
    value("regex-size-limit", '\0', Val::Text),
    value("regexp", 'e', Val::Text),
    value("replace", 'r', Val::Text),
    flag("no-search-zip", '\0'),
    flag("smart-case", 'S'),
    flag("sort-files", '\0'),
    flag("no-sort-files", '\0'),
    value("sort", '\0', Val::Text),
    value("sortr", '\0', Val::Text),
    flag("stats", '\0'),
    flag("no-stats", '\0'),
    flag("stop-on-nonmatch", '\0'),
    flag("text", 'a'),
    flag("no-text", '\0'),
    value("threads", 'j', Val::Text),
    flag("trace", '\0'),
    flag("trim", '\0'),
    flag("no-trim", '\0'),
    value("type", 't', Val::Text),
    value("type-add", '\0', Val::Text),
    value("type-clear", '\0', Val::Text),
    value("type-not", 'T', Val::Text),
    flag("type-list", '\0'),
    flag("unrestricted", 'u'),
    flag("version", 'V'),
    flag("vimgrep", '\0'),
    flag("with-filename", 'H'),
    flag("no-filename", 'I'),
    flag("word-regexp", 'w'),
];
const RG: Grammar = Grammar {
    operands: Operands::PatternThenPaths,
    pattern_options: &["regexp", "file"],
    no_pattern_options: &["files", "type-list"],
    ..Grammar::paths(RG_OPTIONS)
};

// base64, base32: `[FILE]`. Nothing left out.
const BASENC_OPTIONS: &[Opt] = &[
    flag("decode", 'd'),
    flag("ignore-garbage", 'i'),
    value("wrap", 'w', Val::Text),
    flag("help", '\0'),
    flag("version", '\0'),
];
const BASENC: Grammar = Grammar { max_operands: Some(1), ..Grammar::paths(BASENC_OPTIONS) };

// sort. Left out:
//   -o, --output=FILE: writes FILE.
//   -T, --temporary-directory=DIR: writes temporary files in DIR.
//   --compress-program=PROG: runs PROG.
//   --files0-from=F: reads the names of the files from F (or stdin).
//   -y: undocumented, ignored.
//   -S, --buffer-size=SIZE and --batch-size=N: a small buffer or batch makes it write
//     temporary files in $TMPDIR.
// Beware: sort writes temporary files in $TMPDIR when its input outgrows its (default) buffer,
// or more than 16 inputs are merged, whatever the options.
const SORT_OPTIONS: &[Opt] = &[
    flag("ignore-leading-blanks", 'b'),
    flag("dictionary-order", 'd'),
    flag("ignore-case", 'f'),
    flag("general-numeric-sort", 'g'),
    flag("ignore-nonprinting", 'i'),
    flag("month-sort", 'M'),
    flag("human-numeric-sort", 'h'),
    flag("numeric-sort", 'n'),
    flag("random-sort", 'R'),
    value("random-source", '\0', Val::Path),
    flag("reverse", 'r'),
    value("sort", '\0', Val::Text),
    flag("version-sort", 'V'),
    // -c and -C take no value; --check takes an optional attached one.
    flag("", 'c'),
    flag("", 'C'),
    optional("check", '\0', Val::Text),
    flag("debug", '\0'),
    value("key", 'k', Val::Text),
    flag("merge", 'm'),
    flag("stable", 's'),
    value("field-separator", 't', Val::Text),
    value("parallel", '\0', Val::Text),
    flag("unique", 'u'),
    flag("zero-terminated", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
/// At most 16 inputs: merging more makes sort write a temporary file.
const SORT: Grammar = Grammar { max_operands: Some(16), ..Grammar::paths(SORT_OPTIONS) };

// uniq: `[INPUT]` only, since its second operand is an OUTPUT file it writes (also `-NUM`, the
// obsolete -f NUM). Nothing left out.
// Beware: with POSIXLY_CORRECT set, uniq takes every word after its first operand as an
// operand, so `uniq in -c` would write a file named `-c`.
const UNIQ_OPTIONS: &[Opt] = &[
    flag("count", 'c'),
    flag("repeated", 'd'),
    // -D takes no value; --all-repeated takes an optional attached one.
    flag("", 'D'),
    optional("all-repeated", '\0', Val::Text),
    value("skip-fields", 'f', Val::Text),
    optional("group", '\0', Val::Text),
    flag("ignore-case", 'i'),
    value("skip-chars", 's', Val::Text),
    flag("unique", 'u'),
    flag("zero-terminated", 'z'),
    value("check-chars", 'w', Val::Text),
    flag("help", '\0'),
    flag("version", '\0'),
];
const UNIQ: Grammar =
    Grammar { max_operands: Some(1), numeric_option: true, ..Grammar::paths(UNIQ_OPTIONS) };

// cut. Nothing left out.
const CUT_OPTIONS: &[Opt] = &[
    value("bytes", 'b', Val::Text),
    value("characters", 'c', Val::Text),
    value("delimiter", 'd', Val::Text),
    value("fields", 'f', Val::Text),
    flag("", 'n'),
    flag("complement", '\0'),
    flag("only-delimited", 's'),
    value("output-delimiter", '\0', Val::Text),
    flag("zero-terminated", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const CUT: Grammar = Grammar::paths(CUT_OPTIONS);

// tr: `STRING1 [STRING2]`, reading only stdin. Left out:
//   -A: undocumented.
// (tr stops reading options at its first operand; a later `-d` is text to it.)
const TR_OPTIONS: &[Opt] = &[
    flag("complement", 'c'),
    flag("", 'C'),
    flag("delete", 'd'),
    flag("squeeze-repeats", 's'),
    flag("truncate-set1", 't'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const TR: Grammar =
    Grammar { operands: Operands::Text, max_operands: Some(2), ..Grammar::paths(TR_OPTIONS) };

// md5sum, sha1sum, sha224sum, sha256sum, sha384sum, sha512sum (one table: the same options).
// Left out:
//   -c, --check: opens every file named in the checksum files.
// (--ignore-missing, --quiet, --status, --strict and -w only matter with --check; without it
// they are an error.)
const DIGEST_OPTIONS: &[Opt] = &[
    flag("binary", 'b'),
    flag("tag", '\0'),
    flag("text", 't'),
    flag("zero", 'z'),
    flag("ignore-missing", '\0'),
    flag("quiet", '\0'),
    flag("status", '\0'),
    flag("strict", '\0'),
    flag("warn", 'w'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const DIGEST: Grammar = Grammar::paths(DIGEST_OPTIONS);

// b2sum: the digest options and -l. Left out:
//   -c, --check: opens every file named in the checksum files.
const B2SUM_OPTIONS: &[Opt] = &[
    flag("binary", 'b'),
    value("length", 'l', Val::Text),
    flag("tag", '\0'),
    flag("text", 't'),
    flag("zero", 'z'),
    flag("ignore-missing", '\0'),
    flag("quiet", '\0'),
    flag("status", '\0'),
    flag("strict", '\0'),
    flag("warn", 'w'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const B2SUM: Grammar = Grammar::paths(B2SUM_OPTIONS);

// readlink. Nothing left out.
const READLINK_OPTIONS: &[Opt] = &[
    flag("canonicalize", 'f'),
    flag("canonicalize-existing", 'e'),
    flag("canonicalize-missing", 'm'),
    flag("no-newline", 'n'),
    flag("quiet", 'q'),
    flag("silent", 's'),
    flag("verbose", 'v'),
    flag("zero", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const READLINK: Grammar = Grammar::paths(READLINK_OPTIONS);

// realpath. Nothing left out.
const REALPATH_OPTIONS: &[Opt] = &[
    flag("canonicalize-existing", 'e'),
    flag("canonicalize-missing", 'm'),
    flag("logical", 'L'),
    flag("physical", 'P'),
    flag("quiet", 'q'),
    value("relative-to", '\0', Val::Path),
    value("relative-base", '\0', Val::Path),
    flag("strip", 's'),
    flag("no-symlinks", '\0'),
    flag("zero", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const REALPATH: Grammar = Grammar::paths(REALPATH_OPTIONS);

// basename: names, not files. Nothing left out.
// (basename stops reading options at its first operand.)
const BASENAME_OPTIONS: &[Opt] = &[
    flag("multiple", 'a'),
    value("suffix", 's', Val::Text),
    flag("zero", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const BASENAME: Grammar = Grammar { operands: Operands::Text, ..Grammar::paths(BASENAME_OPTIONS) };

// dirname: names, not files. Nothing left out.
const DIRNAME_OPTIONS: &[Opt] = &[flag("zero", 'z'), flag("help", '\0'), flag("version", '\0')];
const DIRNAME: Grammar = Grammar { operands: Operands::Text, ..Grammar::paths(DIRNAME_OPTIONS) };

// uname: no operands. Left out:
//   --sysname (-s), --release (-r): undocumented obsolete names.
const UNAME_OPTIONS: &[Opt] = &[
    flag("all", 'a'),
    flag("kernel-name", 's'),
    flag("nodename", 'n'),
    flag("kernel-release", 'r'),
    flag("kernel-version", 'v'),
    flag("machine", 'm'),
    flag("processor", 'p'),
    flag("hardware-platform", 'i'),
    flag("operating-system", 'o'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const UNAME: Grammar = Grammar { operands: Operands::None, ..Grammar::paths(UNAME_OPTIONS) };

// whoami: no operands. Nothing left out.
const WHOAMI_OPTIONS: &[Opt] = &[flag("help", '\0'), flag("version", '\0')];
const WHOAMI: Grammar = Grammar { operands: Operands::None, ..Grammar::paths(WHOAMI_OPTIONS) };

// id: `[USER]`, a user name (coreutils 9.1 takes several; one is enough). Nothing left out.
const ID_OPTIONS: &[Opt] = &[
    flag("", 'a'),
    flag("context", 'Z'),
    flag("group", 'g'),
    flag("groups", 'G'),
    flag("name", 'n'),
    flag("real", 'r'),
    flag("user", 'u'),
    flag("zero", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const ID: Grammar =
    Grammar { operands: Operands::Text, max_operands: Some(1), ..Grammar::paths(ID_OPTIONS) };

// date: `[+FORMAT]`. Left out:
//   -s, --set=STRING: sets the clock.
//   --uct, --rfc-822, --rfc-2822: undocumented other names of -u and -R.
//   -f, --file=FILE: each line of FILE is a date, and a date may name a time zone file
//     (`TZ="/path" now`), which date then reads.
// Beware: a `-d` value with `TZ="…"` reads that file (the caller refuses it), and an operand
// that does not start with `+` (`MMDDhhmm[[CC]YY][.ss]`) SETS the clock;
// the grammar cannot say so, so the caller must allow only a `+FORMAT` operand.
const DATE_OPTIONS: &[Opt] = &[
    value("date", 'd', Val::Text),
    flag("debug", '\0'),
    optional("iso-8601", 'I', Val::Text),
    flag("resolution", '\0'),
    flag("rfc-email", 'R'),
    value("rfc-3339", '\0', Val::Text),
    value("reference", 'r', Val::Path),
    flag("utc", 'u'),
    flag("universal", '\0'),
    flag("help", '\0'),
    flag("version", '\0'),
];
const DATE: Grammar =
    Grammar { operands: Operands::Text, max_operands: Some(1), ..Grammar::paths(DATE_OPTIONS) };

// file. Left out:
//   -z, --uncompress; -Z, --uncompress-noreport: run decompression programs.
//   -C, --compile: writes a compiled magic file.
//   -f, --files-from=FILE: reads the names of the files from FILE.
//   -p, --preserve-date: writes the files' access times back.
//   -S, --no-sandbox: drops the system-call sandbox.
//   -m, --magic-file=LIST: LIST is a colon-separated list of files and directories (all of
//     whose files are read), which a single `Val::Path` cannot describe.
// Beware: file reads $MAGIC or ~/.magic.mgc as well as the system magic whatever the options.
const FILE_OPTIONS: &[Opt] = &[
    flag("help", '\0'),
    flag("version", 'v'),
    flag("brief", 'b'),
    flag("checking-printout", 'c'),
    flag("debug", 'd'),
    flag("", 'E'),
    value("exclude", 'e', Val::Text),
    value("exclude-quiet", '\0', Val::Text),
    value("separator", 'F', Val::Text),
    flag("mime", 'i'),
    flag("apple", '\0'),
    flag("extension", '\0'),
    flag("mime-type", '\0'),
    flag("mime-encoding", '\0'),
    flag("keep-going", 'k'),
    flag("list", 'l'),
    flag("dereference", 'L'),
    flag("no-dereference", 'h'),
    flag("no-buffer", 'n'),
    flag("no-pad", 'N'),
    flag("print0", '0'),
    value("parameter", 'P', Val::Text),
    flag("raw", 'r'),
    flag("special-files", 's'),
];
const FILE: Grammar = Grammar::paths(FILE_OPTIONS);

#[cfg(test)]
mod tests {
    use super::super::super::options::parse;
    use super::*;

    /// Every name [`grammar`] knows.
    const PROGRAMS: &[&str] = &[
        "ls",
        "cat",
        "tac",
        "head",
        "tail",
        "wc",
        "stat",
        "du",
        "diff",
        "cmp",
        "nl",
        "od",
        "grep",
        "egrep",
        "fgrep",
        "rg",
        "base64",
        "base32",
        "sort",
        "uniq",
        "cut",
        "tr",
        "md5sum",
        "sha1sum",
        "sha224sum",
        "sha256sum",
        "sha384sum",
        "sha512sum",
        "b2sum",
        "readlink",
        "realpath",
        "basename",
        "dirname",
        "uname",
        "whoami",
        "id",
        "date",
        "file",
    ];

    /// The real long options each program has that its table leaves out (including
    /// undocumented ones). None may be listed, and none may be a prefix of a listed long name:
    /// the program would take it exactly while the policy might read it as an abbreviation.
    const LEFT_OUT: &[(&str, &[&str])] = &[
        (
            "ls",
            &["dereference", "dereference-command-line", "dereference-command-line-symlink-to-dir"],
        ),
        ("head", &["-presume-input-pipe"]),
        (
            "tail",
            &[
                "follow",
                "max-unchanged-stats",
                "-disable-inotify",
                "pid",
                "-presume-input-pipe",
                "retry",
                "sleep-interval",
            ],
        ),
        ("wc", &["debug", "files0-from"]),
        ("du", &["dereference", "dereference-args", "files0-from"]),
        (
            "diff",
            &[
                "binary",
                "exclude",
                "exclude-from",
                "forward-ed",
                "inhibit-hunk-merge",
                "new-file",
                "paginate",
                "recursive",
                "sdiff-merge-assist",
                "starting-file",
                "unidirectional-new-file",
                "-presume-output-tty",
            ],
        ),
        ("cmp", &["print-chars"]),
        ("grep", &["dereference-recursive", "devices", "fixed-regexp", "unix-byte-offsets"]),
        ("rg", &["follow", "hostname-bin", "pre", "pre-glob", "pretty", "search-zip"]),
        (
            "sort",
            &[
                "compress-program",
                "files0-from",
                "output",
                "temporary-directory",
                "buffer-size",
                "batch-size",
            ],
        ),
        ("md5sum", &["check"]),
        ("b2sum", &["check"]),
        ("uname", &["release", "sysname"]),
        ("date", &["rfc-822", "rfc-2822", "set", "uct", "file"]),
        (
            "file",
            &[
                "compile",
                "files-from",
                "magic-file",
                "no-sandbox",
                "preserve-date",
                "uncompress",
                "uncompress-noreport",
            ],
        ),
    ];

    fn table(name: &str) -> Grammar {
        grammar(name).unwrap_or_else(|| panic!("{name} has no grammar"))
    }

    #[test]
    fn unknown_programs_have_no_grammar() {
        for name in ["sh", "find", "xargs", "sed", "awk", "less", "tee", "touch", ""] {
            assert!(grammar(name).is_none(), "{name}");
        }
    }

    #[test]
    fn no_two_options_share_a_name_or_a_letter() {
        for name in PROGRAMS {
            let options = table(name).options;
            for (i, a) in options.iter().enumerate() {
                assert!(!a.long.is_empty() || a.short != '\0', "{name}: an option with no name");
                assert!(
                    !a.long.starts_with('-'),
                    "{name}: --{} is written with its dashes",
                    a.long
                );
                for b in &options[i + 1..] {
                    assert!(a.long.is_empty() || a.long != b.long, "{name}: --{} twice", a.long);
                    assert!(a.short == '\0' || a.short != b.short, "{name}: -{} twice", a.short);
                }
            }
        }
    }

    #[test]
    fn pattern_options_are_listed_long_names() {
        for name in PROGRAMS {
            let g = table(name);
            let names = g.pattern_options.iter().chain(g.no_pattern_options);
            if g.operands == Operands::PatternThenPaths {
                assert!(!g.pattern_options.is_empty(), "{name}");
                for long in names {
                    assert!(g.options.iter().any(|o| o.long == *long), "{name}: --{long}");
                }
            } else {
                assert_eq!(names.count(), 0, "{name}");
            }
        }
    }

    #[test]
    fn no_left_out_option_is_listed_or_a_prefix_of_a_listed_one() {
        for (name, left_out) in LEFT_OUT {
            let options = table(name).options;
            for out in *left_out {
                for o in options.iter().filter(|o| !o.long.is_empty()) {
                    assert!(!o.long.starts_with(out), "{name}: --{out} vs --{}", o.long);
                }
            }
        }
    }

    #[test]
    fn operand_limits() {
        assert_eq!(table("uniq").max_operands, Some(1));
        assert_eq!(table("base64").max_operands, Some(1));
        assert_eq!(table("date").max_operands, Some(1));
        assert_eq!(table("id").max_operands, Some(1));
        assert_eq!(table("diff").max_operands, Some(2));
        assert_eq!(table("tr").max_operands, Some(2));
        assert_eq!(table("cmp").operands, Operands::FirstPaths(2));
        assert_eq!(table("cmp").max_operands, Some(4));
    }

    #[test]
    fn dangerous_spellings_are_refused() {
        let refused: &[(&str, &[&str])] = &[
            ("ls", &["-L", "."]),
            ("ls", &["--dereference", "."]),
            ("du", &["--dereference", "."]),
            ("du", &["-L", "."]),
            ("du", &["--files0-from=list"]),
            ("wc", &["--files0-from=-"]),
            ("head", &["-5c", "secret"]),
            ("tail", &["-f", "log"]),
            ("tail", &["-cf", "log"]),
            ("tail", &["-5c", "log"]),
            ("tail", &["--follow=name", "log"]),
            ("diff", &["-r", "a", "b"]),
            ("diff", &["-l", "a", "b"]),
            ("grep", &["-R", "x", "."]),
            ("grep", &["--dereference-recursive", "x", "."]),
            ("rg", &["--pre", "sh", "x"]),
            ("rg", &["--pre-glob=*", "x"]),
            ("rg", &["-z", "x"]),
            ("rg", &["-L", "x"]),
            ("sort", &["-o", "out", "in"]),
            ("sort", &["--compress-program=sh", "in"]),
            ("sort", &["-T", "/tmp", "in"]),
            ("uniq", &["in", "out"]),
            ("md5sum", &["-c", "sums"]),
            ("date", &["-s", "now"]),
            ("file", &["-z", "x"]),
            ("file", &["-C", "-m", "magic"]),
            ("file", &["-f", "names"]),
            ("whoami", &["x"]),
        ];
        for (name, args) in refused {
            assert!(parse(&table(name), args).is_err(), "{name} {args:?}");
        }
    }

    #[test]
    fn paths_are_found() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("head", &["-20", "f"], &["f"]),
            ("ls", &["--color", "-la", "d"], &["d"]),
            ("grep", &["-rn", "-e", "x", "src"], &["src"]),
            ("grep", &["-3", "x", "a", "b"], &["a", "b"]),
            ("grep", &["--exclude-from", "ex", "x", "a"], &["ex", "a"]),
            ("rg", &["--files", "src"], &["src"]),
            ("rg", &["-f", "pats", "src"], &["pats", "src"]),
            ("cmp", &["a", "b", "10", "20"], &["a", "b"]),
            ("diff", &["-U", "5", "a", "b"], &["a", "b"]),
            ("sort", &["-k", "2", "-t", ",", "f"], &["f"]),
            ("date", &["-r", "f", "+%s"], &["f"]),
            ("tr", &["a-z", "A-Z"], &[]),
        ];
        for (name, args, paths) in cases {
            let parsed = parse(&table(name), args);
            assert_eq!(parsed.map(|p| p.paths), Ok(paths.to_vec()), "{name} {args:?}");
        }
    }
}
