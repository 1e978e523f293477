//! `find` as a read-only built-in: its global options, starting points and an expression made
//! only of the tests, options, operators and printing actions listed here. Left out, so asked:
//! the actions that run programs or write (`-exec`, `-execdir`, `-ok`, `-okdir`, `-delete`,
//! `-fls`, `-fprint`, `-fprint0`, `-fprintf`), following symlinks (`-L`, `-follow`), debug
//! output (`-D`), and names read from a file (`-files0-from`).

/// Primaries that take no value.
const NO_VALUE: &[&str] = &[
    // Options.
    "-daystart",
    "-warn",
    "-nowarn",
    "-ignore_readdir_race",
    "-noignore_readdir_race",
    "-mount",
    "-xdev",
    "-noleaf",
    "-depth",
    "-d",
    "-help",
    "--help",
    "-version",
    "--version",
    // Tests.
    "-empty",
    "-executable",
    "-false",
    "-nogroup",
    "-nouser",
    "-readable",
    "-true",
    "-writable",
    // Actions that print.
    "-print",
    "-print0",
    "-ls",
    "-prune",
    "-quit",
    // Operators.
    "(",
    ")",
    "!",
    "-not",
    "-a",
    "-and",
    "-o",
    "-or",
    ",",
];

/// Primaries whose value is text (a pattern, a number, a name, a format).
const TEXT_VALUE: &[&str] = &[
    "-regextype",
    "-maxdepth",
    "-mindepth",
    "-amin",
    "-atime",
    "-cmin",
    "-context",
    "-ctime",
    "-fstype",
    "-gid",
    "-group",
    "-ilname",
    "-iname",
    "-inum",
    "-ipath",
    "-iregex",
    "-iwholename",
    "-links",
    "-lname",
    "-mmin",
    "-mtime",
    "-name",
    "-path",
    "-perm",
    "-regex",
    "-size",
    "-type",
    "-uid",
    "-used",
    "-user",
    "-wholename",
    "-xtype",
    "-printf",
];

/// Primaries whose value is a file that is stat'ed (judged as a read).
const PATH_VALUE: &[&str] = &["-anewer", "-cnewer", "-newer", "-samefile"];

/// What a `find` command reads, or why it is not read-only.
pub(super) fn reads<'a>(args: &'a [&'a str]) -> Result<Vec<&'a str>, String> {
    let mut i = 0;
    // Global options come first.
    while let Some(&arg) = args.get(i) {
        match arg {
            "-H" | "-P" | "-O0" | "-O1" | "-O2" | "-O3" => i += 1,
            "-L" => return Err("`find -L` follows symbolic links out of where it looks".into()),
            _ if arg.starts_with("-D") || arg.starts_with("-O") => {
                return Err(format!("`find {arg}` is not an option it may take unasked"));
            }
            _ => break,
        }
    }
    let mut reads = Vec::new();
    // Starting points: up to the first word that starts an expression.
    while let Some(&arg) = args.get(i) {
        if arg.starts_with('-') || matches!(arg, "(" | ")" | "!" | ",") {
            break;
        }
        reads.push(arg);
        i += 1;
    }
    if reads.is_empty() {
        reads.push(".");
    }
    while let Some(&arg) = args.get(i) {
        i += 1;
        if NO_VALUE.contains(&arg) {
            continue;
        }
        let takes = if TEXT_VALUE.contains(&arg) {
            Some(false)
        } else if PATH_VALUE.contains(&arg) {
            Some(true)
        } else {
            newer_xy(arg)
        };
        let Some(is_path) = takes else {
            return Err(format!("`find {arg}` is not a primary it may take unasked"));
        };
        let Some(&value) = args.get(i) else {
            return Err(format!("`find {arg}` lacks its value"));
        };
        i += 1;
        if is_path {
            reads.push(value);
        } else if arg.starts_with("-newer") && value.contains("TZ=") {
            return Err("a `TZ=` in a date makes `find` read that time zone file".into());
        }
    }
    Ok(reads)
}

/// `-newerXY REFERENCE`: `Some(true)` when the reference is a file, `Some(false)` when it is a
/// time (`Y` is `t`), `None` when this is not such a primary.
fn newer_xy(arg: &str) -> Option<bool> {
    let xy = arg.strip_prefix("-newer")?.as_bytes();
    let valid = |c: u8| matches!(c, b'a' | b'B' | b'c' | b'm');
    match xy {
        [x, b't'] if valid(*x) => Some(false),
        [x, y] if valid(*x) && valid(*y) => Some(true),
        _ => None,
    }
}
