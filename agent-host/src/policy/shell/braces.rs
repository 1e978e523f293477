//! Brace expansion, as bash does it, for the forms the policy reasons about: groups that do not
//! nest (`x{a,b}y`, `{1..5}`, `{a..e..2}`, several side by side), whose results are words of
//! their own. Everything bash treats differently from a plain reading — nested or unbalanced
//! braces, zero-padded or signed sequences, letter sequences across punctuation — is refused,
//! since a mistake here decides which words a program gets (`{-exec,touch,x,\;}`).
//!
//! The scan skips what is quoted or escaped (`'{a,b}'`, `\{`), and `${…}` and `$(…)`, which are
//! not brace expansions. A result that is empty (not even quotes) is dropped, as bash drops an
//! empty unquoted word: `cd {-L,}` is `cd -L`.

use super::ShellError;

/// The expansions of a raw word (quotes still in), or `None` when it has no brace expansion.
pub(super) fn expand(raw: &str, max_words: usize) -> Result<Option<Vec<String>>, ShellError> {
    let groups = groups(raw)?;
    let expanding: Vec<&Group> = groups.iter().filter(|g| g.alternatives.is_some()).collect();
    if expanding.is_empty() {
        return Ok(None);
    }
    // The results are read again as words, which bash does not do: a `$` that a group's edge
    // would join to what follows (`{$,$}'x'` is `$` then `'x'` to bash, `$'x'` when read
    // again) is not reasoned about.
    for group in &expanding {
        let before = raw[..group.open].ends_with('$');
        let inside = group.alternatives.iter().flatten().any(|a| a.ends_with('$'));
        if before || inside {
            return Err(unsupported("a `$` at the edge of a brace group"));
        }
    }
    let mut texts = vec![String::new()];
    let mut at = 0;
    for group in expanding {
        let literal = &raw[at..group.open];
        texts.iter_mut().for_each(|t| t.push_str(literal));
        let alternatives = group.alternatives.as_ref().map_or(&[][..], Vec::as_slice);
        let mut next = Vec::with_capacity(texts.len() * alternatives.len());
        for t in &texts {
            for a in alternatives {
                next.push(format!("{t}{a}"));
            }
        }
        if next.len() > max_words {
            return Err(too_many(max_words));
        }
        texts = next;
        at = group.close + 1;
    }
    let rest = &raw[at..];
    texts.iter_mut().for_each(|t| t.push_str(rest));
    texts.retain(|t| !t.is_empty());
    Ok(Some(texts))
}

fn too_many(max: usize) -> ShellError {
    ShellError::Unsupported(format!("brace expansion into more than {max} words"))
}

/// One `{…}` at the top level of a word: where it opens and closes, and what it expands to
/// (`None`: it is literal, as `{}` and `{x}` are).
struct Group {
    open: usize,
    close: usize,
    alternatives: Option<Vec<String>>,
}

fn unsupported(what: &str) -> ShellError {
    ShellError::Unsupported(format!("{what}, which brace expansion reads its own way"))
}

/// Finds the brace groups of a word, skipping quoted and escaped text and `${…}`, `$(…)`.
fn groups(raw: &str) -> Result<Vec<Group>, ShellError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut commas: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' => i = skip_to(bytes, i + 1, b'\'')? + 1,
            b'"' => i = skip_double(bytes, i + 1)? + 1,
            b'$' if bytes.get(i + 1) == Some(&b'\'') => {
                i = skip_ansi(bytes, i + 2)? + 1;
            }
            b'$' if matches!(bytes.get(i + 1), Some(b'{' | b'(')) => {
                i = skip_nested(bytes, i + 1)? + 1;
            }
            b'{' => {
                if open.is_some() {
                    return Err(unsupported("nested braces"));
                }
                open = Some(i);
                commas.clear();
                i += 1;
            }
            b',' if open.is_some() => {
                commas.push(i);
                i += 1;
            }
            b'}' => {
                if let Some(start) = open.take() {
                    out.push(Group {
                        open: start,
                        close: i,
                        alternatives: alternatives(raw, start, i, &commas)?,
                    });
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    if open.is_some() {
        return Err(unsupported("an unclosed brace"));
    }
    Ok(out)
}

/// What `raw[open..=close]` expands to.
fn alternatives(
    raw: &str,
    open: usize,
    close: usize,
    commas: &[usize],
) -> Result<Option<Vec<String>>, ShellError> {
    if !commas.is_empty() {
        let mut out = Vec::with_capacity(commas.len() + 1);
        let mut start = open + 1;
        for &comma in commas {
            out.push(raw[start..comma].to_string());
            start = comma + 1;
        }
        out.push(raw[start..close].to_string());
        return Ok(Some(out));
    }
    sequence(&raw[open + 1..close])
}

/// `{A..B}` or `{A..B..STEP}` with plain numbers or letters of one case; `None` for a group that
/// is not a sequence (so literal).
fn sequence(inner: &str) -> Result<Option<Vec<String>>, ShellError> {
    let parts: Vec<&str> = inner.split("..").collect();
    if !(2..=3).contains(&parts.len()) {
        return Ok(None);
    }
    let number = |s: &str| -> Option<i64> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let plain = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !(digits.len() > 1 && digits.starts_with('0'))
            && s != "-0";
        if plain { s.parse().ok() } else { None }
    };
    let step = match parts.get(2) {
        None => 1,
        Some(s) => match number(s) {
            Some(n) => n.checked_abs().filter(|n| *n != 0).unwrap_or(1),
            None if looks_like_sequence(parts[0], parts[1]) => {
                return Err(unsupported("a brace sequence with an unusual step"));
            }
            None => return Ok(None),
        },
    };
    if let (Some(a), Some(b)) = (number(parts[0]), number(parts[1])) {
        return numbers(a, b, step).map(Some);
    }
    let letter = |s: &str| {
        let mut chars = s.chars();
        chars.next().filter(|c| c.is_ascii_alphabetic() && chars.next().is_none())
    };
    if let (Some(a), Some(b)) = (letter(parts[0]), letter(parts[1])) {
        if a.is_ascii_lowercase() != b.is_ascii_lowercase() {
            return Err(unsupported("a letter sequence across cases"));
        }
        let seq = numbers(i64::from(a as u8), i64::from(b as u8), step)?;
        return Ok(Some(
            seq.iter()
                .filter_map(|n| n.parse::<u8>().ok().map(|b| char::from(b).to_string()))
                .collect(),
        ));
    }
    if looks_like_sequence(parts[0], parts[1]) {
        return Err(unsupported("a zero-padded, signed or unusual brace sequence"));
    }
    Ok(None)
}

/// Both ends made of digits, signs or one letter: bash may read it as a sequence in a way the
/// plain reading does not (`{01..03}` pads, `{+1..3}`).
fn looks_like_sequence(a: &str, b: &str) -> bool {
    let end = |s: &str| {
        !s.is_empty()
            && (s.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
                || (s.len() == 1 && s.as_bytes()[0].is_ascii_alphabetic()))
    };
    end(a) && end(b)
}

fn numbers(a: i64, b: i64, step: i64) -> Result<Vec<String>, ShellError> {
    const MAX: u64 = 1024;
    let count = (a.abs_diff(b) / step.unsigned_abs()).saturating_add(1);
    if count > MAX {
        return Err(too_many(MAX as usize));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut n = a;
    for i in 0..count {
        out.push(n.to_string());
        if i + 1 < count {
            n = if a <= b { n.checked_add(step) } else { n.checked_sub(step) }
                .ok_or_else(|| too_many(MAX as usize))?;
        }
    }
    Ok(out)
}

fn unterminated() -> ShellError {
    ShellError::Syntax
}

/// The index of the next `end` byte from `from`.
fn skip_to(bytes: &[u8], from: usize, end: u8) -> Result<usize, ShellError> {
    bytes[from.min(bytes.len())..]
        .iter()
        .position(|b| *b == end)
        .map(|p| from + p)
        .ok_or_else(unterminated)
}

/// The index of the `"` that closes a double-quoted string starting at `from`.
fn skip_double(bytes: &[u8], from: usize) -> Result<usize, ShellError> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i),
            b'$' if matches!(bytes.get(i + 1), Some(b'{' | b'(')) => {
                i = skip_nested(bytes, i + 1)? + 1;
            }
            _ => i += 1,
        }
    }
    Err(unterminated())
}

/// The index of the `'` that closes `$'…'` starting at `from` (backslash escapes inside).
fn skip_ansi(bytes: &[u8], from: usize) -> Result<usize, ShellError> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' => return Ok(i),
            _ => i += 1,
        }
    }
    Err(unterminated())
}

/// The index of the bracket that closes the one at `open` (`{` or `(`), counting nested ones
/// and skipping quotes.
fn skip_nested(bytes: &[u8], open: usize) -> Result<usize, ShellError> {
    let (opening, closing) = if bytes[open] == b'{' { (b'{', b'}') } else { (b'(', b')') };
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'\'' => i = skip_to(bytes, i + 1, b'\'')?,
            b'"' => i = skip_double(bytes, i + 1)?,
            b if b == opening => depth += 1,
            b if b == closing => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(unterminated())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(raw: &str) -> Option<Vec<String>> {
        expand(raw, 1024).unwrap()
    }

    #[test]
    fn plain_groups_expand_as_bash_expands_them() {
        assert_eq!(words("{-exec,touch,x,\\;}").unwrap(), ["-exec", "touch", "x", "\\;"]);
        assert_eq!(words("a{b,c}d{1,2}").unwrap(), ["abd1", "abd2", "acd1", "acd2"]);
        assert_eq!(words("{1..3}").unwrap(), ["1", "2", "3"]);
        assert_eq!(words("{5..1..2}").unwrap(), ["5", "3", "1"]);
        assert_eq!(words("{a..c}").unwrap(), ["a", "b", "c"]);
        assert_eq!(words("f{,.bak}").unwrap(), ["f", "f.bak"]);
        assert_eq!(words("{,}").unwrap(), Vec::<String>::new(), "empty words are dropped");
        assert_eq!(words("{-L,}").unwrap(), ["-L"]);
        assert_eq!(words("{a,'b c'}").unwrap(), ["a", "'b c'"]);
    }

    #[test]
    fn what_is_not_an_expansion_stays() {
        for raw in
            ["{}", "{x}", "'{a,b}'", "\"{a,b}\"", "\\{a,b}", "${x}", "x", "{a\\,b}", "$'{a,b}'"]
        {
            assert_eq!(words(raw), None, "{raw}");
        }
    }

    #[test]
    fn what_bash_reads_its_own_way_is_refused() {
        for raw in
            ["{..{,}}", "{1,{}", "{a,{b,c}}", "{01..03}", "{+1..3}", "{Z..a}", "{a,b", "{1..3..x}"]
        {
            assert!(expand(raw, 1024).is_err(), "{raw}");
        }
        assert!(expand("{1..5000}", 1024).is_err());
        assert!(expand("{9223372036854775806..9223372036854775807}", 1024).is_ok());
    }
}
