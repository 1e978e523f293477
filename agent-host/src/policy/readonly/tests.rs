use super::*;

fn ro(line: &str) -> Result<Vec<String>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (program, args) = words.split_first().unwrap();
    read_only(program, args).map(|r| r.reads.iter().map(|s| s.to_string()).collect())
}

#[test]
fn options_that_take_a_path_are_judged() {
    assert_eq!(ro("cat -v /secret").unwrap(), ["/secret"], "-v is a flag of cat");
    assert_eq!(ro("grep -e. /secret").unwrap(), ["/secret"], "-e. is the pattern");
    assert_eq!(ro("grep -f /pats x").unwrap(), ["/pats", "x"]);
    assert_eq!(ro("grep pat a b").unwrap(), ["a", "b"]);
    assert_eq!(ro("diff --from-file=/etc/shadow README.md").unwrap(), ["/etc/shadow", "README.md"]);
    assert_eq!(ro("diff --from=/etc/shadow a").unwrap(), ["/etc/shadow", "a"], "a unique prefix");
    assert_eq!(ro("rg --files /").unwrap(), ["/"]);
    assert_eq!(ro("head -n 5 a").unwrap(), ["a"]);
    assert_eq!(ro("head -20 a").unwrap(), ["a"]);
    assert_eq!(ro("ls").unwrap(), Vec::<String>::new(), "where it runs is judged by the caller");
    assert_eq!(ro("find src -newer /x -name y").unwrap(), ["src", "/x"]);
    assert_eq!(ro("nl -nrz Cargo.toml").unwrap(), ["Cargo.toml"]);
}

#[test]
fn what_is_outside_the_grammars_is_refused() {
    for line in [
        "sed -n 1p -e 1e\\ touch -e x README.md",
        "sed -n 1p -i README.md",
        "sed -n 1e README.md",
        "sed s/a/b/w README.md",
        "sed s/a/b/e README.md",
        "sed --in-place s/a/b/ README.md",
        "sed -f script README.md",
        "find . -exec touch x ;",
        "find . -delete",
        "find -L .",
        "find . -fprint x",
        "sort -o out a",
        "sort --compress-program=sh a",
        "uniq a b",
        "rg --pre sh x",
        "rg -z x",
        "grep -R x .",
        "diff -r a b",
        "diff -l a b",
        "tail -f a",
        "wc --files0-from=list",
        "date 010203042030",
        "./cat a",
        "/tmp/cat a",
        "xargs cat",
        "git status",
        "awk {print} a",
        "printf -v x y",
        "command ls",
        "cd -",
        "cat --no-such-option a",
        "tac",
        "date -d TZ=\"/home/u/.ssh/id_rsa\"",
        "find . -newermt TZ=\"/x\"",
        "sort -S 1K a",
        "head -5c a",
        "tail -5f a",
        "tail +5 a",
    ] {
        let words: Vec<&str> = line.split(' ').collect();
        let (program, args) = words.split_first().unwrap();
        assert!(read_only(program, args).is_err(), "`{line}` must not be read-only");
    }
}

#[test]
fn sed_scripts_of_reading_commands_only() {
    for ok in [
        "1,5p",
        "3p",
        "2,$p",
        "s/a/b/g",
        "/x/,/y/ { s|a|b|2p; y/ab/cd/ }",
        "$!N;P;D",
        "0~3d",
        "1,+2p",
        ":a;N;ba",
        "s/a\\/b/c/",
        "#n\np",
    ] {
        assert!(sed::check_script(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "1e id",
        "e id",
        "s/a/b/e",
        "s/a/b/w out",
        "w out",
        "r /etc/passwd",
        "R x",
        "W x",
        "a text",
        "s/a/b/;e id",
        "s/a\\/b/e",
        "{p",
        "p}",
        "s/a/b",
        "v",
        "1,5p;x;e",
    ] {
        assert!(sed::check_script(bad).is_err(), "{bad:?}");
    }
}
