use std::path::Path;

use super::*;

fn context() -> Context<'static> {
    Context {
        home: Path::new("/home/u"),
        posix: false,
        changes_dir: &|w: &[Word]| w.first().and_then(|w| w.value.as_deref()) == Some("cd"),
    }
}

fn parse(source: &str) -> Result<Script, ShellError> {
    super::parse(source, &context())
}

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
fn redirections_are_reported_with_where_they_open() {
    let s = parse("echo hi > out.txt 2>&1 && cd sub && sort < in.txt >> log 2>/dev/null").unwrap();
    let targets: Vec<_> = s
        .redirects
        .iter()
        .map(|r| match &r.redirect {
            Redirect::Write(w) => format!("w {}", w.text),
            Redirect::Read(w) => format!("r {}", w.text),
        })
        .collect();
    assert_eq!(targets, ["w out.txt", "r in.txt", "w log", "w /dev/null"]);
    assert_eq!(s.redirects[0].dirs, Some(vec![vec![]]));
    // `sort` runs after `cd sub` (command 1) succeeded.
    assert_eq!(s.redirects[1].dirs, Some(vec![vec![1]]));
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
fn words_are_expanded_as_bash_expands_them() {
    let s = parse("FOO=1 ls $HOME \"$X\" *.rs a\\ b ~/x '~/y' \"a\\b\" ~root").unwrap();
    let c = &s.commands[0];
    assert_eq!(c.assignments[0].0, "FOO");
    assert_eq!(c.words[1].value, None);
    assert_eq!(c.words[2].value, None);
    assert_eq!(c.words[3].glob.as_deref(), Some("*.rs"));
    assert_eq!(c.words[4].value.as_deref(), Some("a b"));
    assert_eq!(c.words[5].value.as_deref(), Some("/home/u/x"), "tilde");
    assert_eq!(c.words[6].value.as_deref(), Some("~/y"), "a quoted tilde stays");
    assert_eq!(c.words[7].value.as_deref(), Some("a\\b"), "a backslash in double quotes stays");
    assert_eq!(c.words[8].value, None, "~user is not known");
    let ansi = parse(r"$'rm' $'\x72\155' $'a\tb' $'\0x'").unwrap();
    assert!(parse(r"cat $'\xff'").unwrap().commands[0].words[1].value.is_none(), "not ASCII");
    assert!(parse(r"cat $'\c\\x41'").unwrap().commands[0].words[1].value.is_none());
    let values: Vec<_> = ansi.commands[0].words.iter().map(|w| w.value.clone()).collect();
    assert_eq!(values, [Some("rm".into()), Some("rm".into()), Some("a\tb".into()), None]);
}

#[test]
fn braces_expand_into_words() {
    let s =
        parse("find . -maxdepth 0 {-exec,touch,/tmp/pwned,\\;} x{a,b}y '{c,d}' {1..3} {}").unwrap();
    assert_eq!(
        argv(&s.commands[0]),
        [
            "find",
            ".",
            "-maxdepth",
            "0",
            "-exec",
            "touch",
            "/tmp/pwned",
            ";",
            "xay",
            "xby",
            "{c,d}",
            "1",
            "2",
            "3",
            "{}"
        ]
    );
    assert!(parse("echo {1..100000}").is_err(), "too many words");
    let s = parse("{cat,README.md}").unwrap();
    assert_eq!(argv(&s.commands[0]), ["cat", "README.md"]);
}

#[test]
fn directories_follow_the_cds_that_took_effect() {
    let dirs = |line: &str| -> Vec<Dirs> {
        parse(line).unwrap().commands.iter().map(|c| c.dirs.clone()).collect()
    };
    // `&&`: only after a successful cd.
    assert_eq!(dirs("cd a && cat x"), [Some(vec![vec![]]), Some(vec![vec![0]])]);
    // `;`: the cd may have failed.
    assert_eq!(dirs("cd a; cat x")[1], Some(vec![vec![0], vec![]]));
    // `||`: only when it failed.
    assert_eq!(dirs("cd a || cat x")[1], Some(vec![vec![]]));
    // A pipeline, a subshell or the background keeps nothing.
    assert_eq!(dirs("cd a | cat x")[1], Some(vec![vec![]]));
    assert_eq!(dirs("(cd a); cat x")[1], Some(vec![vec![]]));
    assert_eq!(dirs("cd a & cat x")[1], Some(vec![vec![]]));
    // Inside a subshell it holds until the subshell ends.
    assert_eq!(dirs("(cd a && cat x); cat y")[1..], [Some(vec![vec![0]]), Some(vec![vec![]])]);
    // `! cd a` succeeds when cd fails.
    assert_eq!(dirs("! cd a && cat x")[1], Some(vec![vec![]]));
}

#[test]
fn nesting_as_deep_as_allowed_fits_a_small_thread_stack() {
    // A host decides on runtime threads with 2 MiB stacks; the deepest nesting the precheck lets
    // through must come back there (refused or not) without overflowing the stack, in a debug
    // build, whose frames are larger.
    let depth = MAX_NESTING - 1;
    let lines = [
        format!("echo {}x{}", "${x:-".repeat(depth), "}".repeat(depth)),
        format!("echo {}x{}", "\"$(".repeat(depth / 2), ")\"".repeat(depth / 2)),
        format!("{}echo x{}", "(true; ".repeat(depth), ")".repeat(depth)),
        format!("echo '{}x{}'", "(".repeat(depth), ")".repeat(depth)),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || lines.iter().filter(|l| parse(l).is_ok()).count())
        .unwrap();
    assert_eq!(
        handle.join().unwrap(),
        2,
        "the subshells and the braces parse; the rest is refused"
    );
    assert!(parse(&format!("echo {}x{}", "${x:-".repeat(40), "}".repeat(40))).is_err());
}

#[test]
fn what_the_parser_reads_unlike_bash_is_refused() {
    for line in [
        "cd ${!} && cat x",
        "cd ${4294967296} && cat x",
        "cat ${@@}",
        "cat ${4294967296x}",
        "echo {PATH}>/dev/null",
        "ls {a[_]}>/dev/null",
        "echo $( << ) ",
        "cat x\0; rm -rf y",
        &"if true; then :; fi; ".repeat(10),
    ] {
        assert!(parse(line).is_err(), "{line:?}");
    }
    // A `$` that starts nothing stays.
    let s = parse("grep 'a$' \"b$\" c$ $/ x").unwrap();
    assert_eq!(argv(&s.commands[0]), ["grep", "a$", "b$", "c$", "$/", "x"]);
    // A script for sh may use nothing only bash expands.
    let posix = Context { posix: true, ..context() };
    for line in ["echo $'x'", "echo {a,b}", "cat <<< x", "ls &> x", "[[ -f x ]]"] {
        assert!(super::parse(line, &posix).is_err(), "{line:?}");
    }
    assert!(super::parse("ls -la | wc -l", &posix).is_ok());
}
