//! How a rule's specifier matches: Bash command patterns, gitignore-style path patterns and
//! WebFetch domains.

use std::path::{Component, Path, PathBuf};

use globset::GlobBuilder;

#[cfg(test)]
use super::rules::home_dir;

/// `*` matches any run of characters (spaces included); everything else is literal.
pub(crate) fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether some text matches both patterns, where `*` in either matches any run of characters
/// (spaces included) and everything else is literal: how a deny or ask rule is matched against
/// a command with a word the policy cannot know (`$X`, a glob it does not expand), written as
/// `*` there.
pub(crate) fn wildcards_intersect(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // reach[i][j]: the first i bytes of `a` and the first j of `b` can match one same text.
    let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
    reach[0][0] = true;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            if !reach[i][j] {
                continue;
            }
            let (x, y) = (a.get(i), b.get(j));
            // A star may stop matching, or keep matching what the other side gives.
            if x == Some(&b'*') {
                reach[i + 1][j] = true;
                if j < b.len() {
                    reach[i][j + 1] = true;
                }
            }
            if y == Some(&b'*') {
                reach[i][j + 1] = true;
                if i < a.len() {
                    reach[i + 1][j] = true;
                }
            }
            if let (Some(x), Some(y)) = (x, y)
                && x == y
            {
                reach[i + 1][j + 1] = true;
            }
        }
    }
    reach[a.len()][b.len()]
}

/// Does a Bash specifier match some command the pattern `command` (with `*` for words not
/// known) stands for? The same reading of the specifier as [`bash_matches`].
pub(crate) fn bash_may_match(spec: &str, command: &str) -> bool {
    let spec = normalize_bash(spec);
    spec.strip_suffix(" *").is_some_and(|prefix| wildcards_intersect(prefix, command))
        || wildcards_intersect(&spec, command)
}

/// A Bash specifier in its matching form: the legacy `prefix:*` becomes `prefix *`.
pub(crate) fn normalize_bash(spec: &str) -> String {
    match spec.strip_suffix(":*") {
        Some(prefix) => format!("{prefix} *"),
        None => spec.to_string(),
    }
}

/// Does the Bash specifier match the command text? A trailing ` *` also matches nothing, so
/// `ls *` matches `ls` (but not `lsof`).
pub(crate) fn bash_matches(spec: &str, command: &str) -> bool {
    // Only the rare legacy form pays for a normalized copy.
    if spec.ends_with(":*") {
        return bash_matches(&normalize_bash(spec), command);
    }
    if let Some(prefix) = spec.strip_suffix(" *")
        && wildcard(prefix, command)
    {
        return true;
    }
    wildcard(spec, command)
}

/// The part of a Bash specifier before its first wildcard: what the rule spells out.
pub(crate) fn literal_prefix(spec: &str) -> String {
    let spec = normalize_bash(spec);
    match spec.find('*') {
        Some(i) => spec[..i].to_string(),
        None => spec,
    }
}

/// A path pattern (gitignore syntax, anchored as PERMISSIONS.md says), compiled once.
#[derive(Debug, Clone)]
pub(crate) struct PathPattern {
    matcher: globset::GlobMatcher,
    /// Relative patterns match the path relative to the working directory.
    relative: bool,
    /// `dir/**` also names `dir` itself, as in gitignore.
    dir_itself: Option<PathBuf>,
}

impl PathPattern {
    /// Compiles `spec`; `anchor` is where `/path` patterns start, `home` where `~/path` ones do.
    /// `None`: not a valid glob.
    pub(crate) fn new(spec: &str, anchor: &Path, home: &Path) -> Option<Self> {
        let (glob, relative) = if let Some(rest) = spec.strip_prefix("//") {
            (format!("/{rest}"), false)
        } else if let Some(rest) = spec.strip_prefix("~/") {
            (format!("{}/{rest}", escape(home)), false)
        } else if spec == "~" {
            (escape(home), false)
        } else if let Some(rest) = spec.strip_prefix('/') {
            (format!("{}/{rest}", escape(anchor)), false)
        } else {
            let rest = spec.strip_prefix("./").unwrap_or(spec);
            // A bare name matches at any depth below the working directory.
            (if rest.contains('/') { rest.to_string() } else { format!("**/{rest}") }, true)
        };
        let glob = glob.trim_end_matches('/').to_string();
        let matcher = GlobBuilder::new(&glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .ok()?
            .compile_matcher();
        let dir_itself = glob.strip_suffix("/**").map(PathBuf::from);
        Some(Self { matcher, relative, dir_itself })
    }

    /// Whether it counts from the working directory (`path`, `./path`), not from a fixed place.
    pub(crate) fn is_relative(&self) -> bool {
        self.relative
    }

    /// Does it match `path` (absolute, normalized) with `cwd` as the working directory?
    pub(crate) fn matches(&self, cwd: &Path, path: &Path) -> bool {
        let candidate = if self.relative {
            match path.strip_prefix(cwd) {
                Ok(rel) => rel,
                Err(_) => return false,
            }
        } else {
            path
        };
        self.matcher.is_match(candidate) || self.dir_itself.as_deref() == Some(candidate)
    }
}

/// Compiles and matches in one go (for tests and one-off checks).
#[cfg(test)]
pub(crate) fn path_matches(spec: &str, anchor: &Path, cwd: &Path, path: &Path) -> bool {
    PathPattern::new(spec, anchor, &home_dir()).is_some_and(|p| p.matches(cwd, path))
}

fn escape(path: &Path) -> String {
    globset::escape(&path.to_string_lossy())
}

/// Does a WebFetch specifier (`domain:example.com`, `domain:*.example.com`) match `host`?
pub(crate) fn domain_matches(spec: &str, host: &str) -> bool {
    let Some(pattern) = spec.strip_prefix("domain:") else { return false };
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
        None => pattern == host,
    }
}

/// Does a tool-name pattern match? Globs count in deny and ask rules; in allow rules they are
/// ignored, except after a literal `mcp__server__` prefix.
pub(crate) fn tool_matches(pattern: &str, tool: &str, in_allow: bool) -> bool {
    if !pattern.contains('*') {
        return pattern == tool;
    }
    if in_allow && !allow_glob_honoured(pattern) {
        return false;
    }
    wildcard(pattern, tool)
}

/// Whether an allow rule's tool name is usable: no glob, or a glob after a literal
/// `mcp__server__` prefix.
pub(crate) fn allow_glob_honoured(pattern: &str) -> bool {
    !pattern.contains('*')
        || pattern
            .strip_prefix("mcp__")
            .and_then(|rest| rest.find("__").map(|i| &rest[..i]))
            .is_some_and(|server| !server.is_empty() && !server.contains('*'))
}

/// Makes `path` absolute against `cwd` and removes `.` and `..` lexically.
pub(crate) fn normalize(cwd: &Path, path: &Path) -> PathBuf {
    let joined = cwd.join(path);
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Resolves `path` (absolute, possibly with `.`, `..` and symlinks anywhere) the way the kernel
/// will when it is opened: component by component, following each symlink where it is met and
/// taking `..` from the directory actually reached (so `link/../x` is the parent of the link's
/// target, not the link's own directory). Past the first component that does not exist, the
/// rest is taken as written (opening it would fail there anyway); so is everything in `/proc`.
/// A chain of more than 40 links resolves to where it stopped, as `ELOOP` would.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    resolve_from(&Resolved { real: PathBuf::from("/"), exists: true }, path).real
}

/// A path as [`resolve`] left it, and whether all of it exists (past a missing component the
/// rest is as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) real: PathBuf,
    pub(crate) exists: bool,
}

/// [`resolve`] of `base` joined with `path`, given `base` already resolved: the same answer,
/// since resolving walks `base` first and arrives where `base` resolved to. An absolute
/// `path` starts from the root.
pub(crate) fn resolve_from(base: &Resolved, path: &Path) -> Resolved {
    let (mut out, mut missing) = if path.is_absolute() {
        (PathBuf::from("/"), false)
    } else {
        (base.real.clone(), !base.exists)
    };
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&name);
        // `/proc` links (`/proc/self/cwd`, `/proc/self/fd/N`, what `/dev/fd` leads to) lead
        // somewhere for the process that opens them, not for the policy: taken as written.
        if missing || next.starts_with("/proc") {
            out = next;
            missing = true;
            continue;
        }
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() && links < 40 => {
                links += 1;
                let Ok(target) = std::fs::read_link(&next) else {
                    out = next;
                    missing = true;
                    continue;
                };
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => out = next,
            Err(_) => {
                out = next;
                missing = true;
            }
        }
    }
    Resolved { real: out, exists: !missing }
}

/// Where a path written in a command or a request leads, from the directory it is used in:
/// the path as written (made absolute, `.` and `..` removed as text), and where the kernel will
/// open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// `dir` joined with the path, normalized as text.
    pub(crate) lexical: PathBuf,
    /// The same path resolved by [`resolve`].
    pub(crate) real: PathBuf,
}

/// Locates `path` as used from `dir`.
pub(crate) fn locate(dir: &Path, path: &Path) -> Located {
    Located { lexical: normalize(dir, path), real: resolve(&dir.join(path)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_patterns_follow_the_table() {
        assert!(bash_matches("npm run build", "npm run build"));
        assert!(!bash_matches("npm run build", "npm run build --prod"));
        assert!(bash_matches("npm run test *", "npm run test"));
        assert!(bash_matches("npm run test *", "npm run test --watch"));
        assert!(!bash_matches("npm run test *", "npm run testx"));
        assert!(bash_matches("ls *", "ls"));
        assert!(bash_matches("ls *", "ls -la"));
        assert!(!bash_matches("ls *", "lsof"));
        assert!(bash_matches("ls*", "ls -la"));
        assert!(bash_matches("ls*", "lsof"));
        assert!(bash_matches("git * main", "git checkout main"));
        assert!(bash_matches("git * main", "git push origin main"));
        assert!(bash_matches("ls:*", "ls -la"));
        assert!(bash_matches("ls:*", "ls"));
        assert!(!bash_matches("ls:*", "lsof"));
        assert_eq!(literal_prefix("npm run test *"), "npm run test ");
        assert_eq!(literal_prefix("ls:*"), "ls ");
    }

    #[test]
    fn path_patterns_are_anchored() {
        let (anchor, cwd) = (Path::new("/proj"), Path::new("/proj"));
        assert!(path_matches(".env", anchor, cwd, Path::new("/proj/a/b/.env")));
        assert!(path_matches(".env", anchor, cwd, Path::new("/proj/.env")));
        assert!(path_matches("src/**", anchor, cwd, Path::new("/proj/src/x/y.rs")));
        assert!(!path_matches("src/**", anchor, cwd, Path::new("/proj/vendor/pkg/src/x")));
        assert!(path_matches(
            "/docs/*.md",
            anchor,
            Path::new("/proj/sub"),
            Path::new("/proj/docs/a.md")
        ));
        assert!(!path_matches("/docs/*.md", anchor, cwd, Path::new("/proj/docs/x/a.md")));
        assert!(path_matches("//etc/**", anchor, cwd, Path::new("/etc/passwd")));
        assert!(path_matches("*.env", anchor, cwd, Path::new("/proj/deep/prod.env")));
    }

    #[test]
    fn domains_and_tools() {
        assert!(domain_matches("domain:*.example.com", "a.b.example.com"));
        assert!(!domain_matches("domain:*.example.com", "example.com"));
        assert!(!domain_matches("domain:example.*", "example.evil.com"));
        assert!(domain_matches("domain:Example.COM", "example.com"));
        assert!(tool_matches("mcp__*", "mcp__github__create", false));
        assert!(!tool_matches("mcp__*", "mcp__github__create", true));
        assert!(tool_matches("mcp__github__*", "mcp__github__create", true));
        assert!(!tool_matches("*", "Bash", true));
    }

    #[test]
    fn wildcards_meet() {
        assert!(wildcards_intersect("rm *", "* -rf x"));
        assert!(wildcards_intersect("git push *", "git * origin main"));
        assert!(!wildcards_intersect("rm *", "ls *"));
        assert!(wildcards_intersect("*", ""));
        assert!(!wildcards_intersect("a", "b"));
        assert!(bash_may_match("rm *", "*"));
        assert!(bash_may_match("ls *", "ls"));
        assert!(!bash_may_match("git push *", "git status *"));
    }

    #[test]
    fn wildcard_backtracks() {
        assert!(wildcard("a*b*c", "aXbYbZc"));
        assert!(!wildcard("a*b*c", "aXbYbZ"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("", "x"));
    }
}
