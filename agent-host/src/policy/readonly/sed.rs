//! `sed` as a read-only built-in: GNU sed's options that neither edit in place nor read a script
//! from a file, and a script made only of commands that print, select and transform the
//! stream. Left out, so asked: `-i`/`--in-place`, `-f`/`--file`, and the commands `e` (runs a
//! command), `r`/`R` (read a file the policy would not judge), `w`/`W` (write a file), `a`/`i`/`c`
//! (text, not worth the parsing), `v`; and the `s` flags `e` and `w`.
//!
//! The script is scanned as GNU sed's own compiler scans it (`compile.c`): a regex or
//! replacement ends at the first delimiter not escaped by a backslash, and an unescaped newline
//! inside one is an error. Whatever this module accepts, sed reads the same way; whatever it
//! does not recognise is asked.

use super::super::options::{self, Grammar, Operands, Val, flag, value};

const OPTIONS: &[options::Opt] = &[
    flag("quiet", 'n'),
    flag("silent", '\0'),
    flag("debug", '\0'),
    value("expression", 'e', Val::Text),
    flag("follow-symlinks", '\0'),
    value("line-length", 'l', Val::Text),
    flag("posix", '\0'),
    flag("regexp-extended", 'E'),
    flag("", 'r'),
    flag("separate", 's'),
    flag("sandbox", '\0'),
    flag("unbuffered", 'u'),
    flag("null-data", 'z'),
    flag("help", '\0'),
    flag("version", '\0'),
];

const SED: Grammar = Grammar {
    operands: Operands::Text,
    pattern_options: &["expression"],
    ..Grammar::paths(OPTIONS)
};

/// What a `sed` command reads, or why it is not read-only.
pub(super) fn reads<'a>(args: &'a [&'a str]) -> Result<Vec<&'a str>, String> {
    let parsed = options::parse(&SED, args).map_err(|e| format!("`sed`: {e}"))?;
    let scripts: Vec<&str> =
        parsed.values.iter().filter(|(o, _)| o.named("expression")).map(|(_, v)| *v).collect();
    let (script, files) = if scripts.is_empty() {
        match parsed.operands.split_first() {
            Some((script, files)) => (script.to_string(), files),
            None => return Err("`sed` without a script".into()),
        }
    } else {
        (scripts.join("\n"), &parsed.operands[..])
    };
    check_script(&script).map_err(|e| format!("`sed` script: {e}"))?;
    Ok(files.iter().copied().filter(|f| *f != "-").collect())
}

/// Checks that a sed script uses only the commands listed in the module's doc.
pub(crate) fn check_script(script: &str) -> Result<(), String> {
    let mut s = Scanner { chars: script.chars().collect(), at: 0 };
    let mut depth = 0usize;
    loop {
        s.skip(|c| c.is_whitespace() || c == ';');
        let Some(c) = s.peek() else { break };
        if c == '#' {
            s.skip(|c| c != '\n');
            continue;
        }
        if c == '}' {
            depth = depth.checked_sub(1).ok_or("an unmatched `}`")?;
            s.at += 1;
            s.end_of_command()?;
            continue;
        }
        s.addresses()?;
        s.skip_blank();
        while s.peek() == Some('!') {
            s.at += 1;
            s.skip_blank();
        }
        let command = s.next().ok_or("an address without a command")?;
        match command {
            '{' => depth += 1,
            '=' | 'd' | 'D' | 'F' | 'g' | 'G' | 'h' | 'H' | 'n' | 'N' | 'p' | 'P' | 'x' | 'z' => {
                s.end_of_command()?;
            }
            'l' | 'q' | 'Q' => {
                s.skip_blank();
                s.skip(|c| c.is_ascii_digit());
                s.end_of_command()?;
            }
            'b' | 't' | 'T' | ':' => {
                s.skip_blank();
                let label = s.take_while(|c| !c.is_whitespace() && c != ';');
                if command == ':' && label.is_empty() {
                    return Err("a `:` without a label".into());
                }
                s.end_of_command()?;
            }
            's' => {
                let delimiter = s.delimiter()?;
                s.delimited(delimiter)?;
                s.delimited(delimiter)?;
                let flags = s.take_while(|c| "gpiImM0123456789".contains(c));
                if flags.contains("0") && !flags.chars().any(|c| ('1'..='9').contains(&c)) {
                    return Err("the `s` flag 0".into());
                }
                s.end_of_command().map_err(|_| "an `s` flag other than g, p, i, m or N")?;
            }
            'y' => {
                let delimiter = s.delimiter()?;
                s.delimited(delimiter)?;
                s.delimited(delimiter)?;
                s.end_of_command()?;
            }
            other => return Err(format!("the command `{other}`")),
        }
    }
    if depth != 0 {
        return Err("an unclosed `{`".into());
    }
    Ok(())
}

struct Scanner {
    chars: Vec<char>,
    at: usize,
}

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn skip(&mut self, while_: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&while_) {
            self.at += 1;
        }
    }

    fn skip_blank(&mut self) {
        self.skip(|c| c == ' ' || c == '\t');
    }

    fn take_while(&mut self, while_: impl Fn(char) -> bool) -> String {
        let start = self.at;
        self.skip(while_);
        self.chars[start..self.at].iter().collect()
    }

    /// After a command: blanks, then the end, a newline, `;`, or a `}` or `#` left for the
    /// next round.
    fn end_of_command(&mut self) -> Result<(), String> {
        self.skip_blank();
        match self.peek() {
            None | Some('}' | '#') => Ok(()),
            Some('\n' | ';') => {
                self.at += 1;
                Ok(())
            }
            Some(c) => Err(format!("`{c}` after a command")),
        }
    }

    /// The delimiter of an `s` or `y` command: any character but a newline or a backslash.
    fn delimiter(&mut self) -> Result<char, String> {
        match self.next() {
            Some('\n' | '\\') | None => Err("a missing or invalid delimiter".into()),
            Some(c) => Ok(c),
        }
    }

    /// Up to and past the next `delimiter` not escaped by a backslash (sed's `match_slash`).
    fn delimited(&mut self, delimiter: char) -> Result<(), String> {
        loop {
            match self.next() {
                None | Some('\n') => return Err("an unterminated regex or replacement".into()),
                Some('\\') => {
                    self.next().ok_or("a backslash at the end")?;
                }
                Some(c) if c == delimiter => return Ok(()),
                Some(_) => {}
            }
        }
    }

    /// `[ADDR1[,ADDR2]]`, where an address is `N`, `N~M`, `$`, `/RE/` or `\cREc` with `I`/`M`
    /// flags, and the second may also be `+N` or `~N`.
    fn addresses(&mut self) -> Result<(), String> {
        if !self.address(false)? {
            return Ok(());
        }
        self.skip_blank();
        if self.peek() == Some(',') {
            self.at += 1;
            self.skip_blank();
            if !self.address(true)? {
                return Err("a `,` without a second address".into());
            }
        }
        Ok(())
    }

    fn address(&mut self, second: bool) -> Result<bool, String> {
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                self.skip(|c| c.is_ascii_digit());
                if self.peek() == Some('~') {
                    self.at += 1;
                    self.skip(|c| c.is_ascii_digit());
                }
                Ok(true)
            }
            Some('+' | '~') if second => {
                self.at += 1;
                if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                    return Err("a `+` or `~` without a number".into());
                }
                Ok(true)
            }
            Some('$') => {
                self.at += 1;
                Ok(true)
            }
            Some('/') => {
                self.at += 1;
                self.regex_address('/')
            }
            Some('\\') => {
                self.at += 1;
                let delimiter = self.delimiter()?;
                self.regex_address(delimiter)
            }
            _ => Ok(false),
        }
    }

    fn regex_address(&mut self, delimiter: char) -> Result<bool, String> {
        self.delimited(delimiter)?;
        self.skip(|c| c == 'I' || c == 'M');
        Ok(true)
    }
}
