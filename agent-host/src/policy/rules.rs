//! Permission rules and the settings files that hold them, in the shape of Claude Code's
//! `permissions` block.
//!
//! A settings file is JSON with an optional `permissions` object: `allow`, `ask`, `deny` (lists of
//! rules), `defaultMode` and `additionalDirectories`. Other top-level keys belong to other tools
//! and are ignored; unknown keys *inside* `permissions` are refused, so a misspelt `deny` cannot
//! silently drop a user's denials.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Which list a rule is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// Let it happen without asking.
    Allow,
    /// Ask a person first.
    Ask,
    /// Never.
    Deny,
}

/// One rule: `Tool` or `Tool(specifier)`, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The tool name or glob (`Bash`, `Read`, `mcp__github__*`).
    pub tool: String,
    /// What is inside the parentheses, if anything.
    pub specifier: Option<String>,
    /// Which list.
    pub kind: RuleKind,
    /// The directory `/path` patterns are anchored at (see [`Settings::load`]).
    pub anchor: PathBuf,
    /// The file it came from, for messages.
    pub source: PathBuf,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.specifier {
            Some(s) => write!(f, "{}({s})", self.tool),
            None => f.write_str(&self.tool),
        }
    }
}

/// The four modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
#[value(rename_all = "camelCase")]
pub enum Mode {
    /// Ask whatever no rule allows.
    #[default]
    Default,
    /// Edits inside the workspace are allowed.
    AcceptEdits,
    /// Read-only: nothing that writes or executes.
    Plan,
    /// Whatever no rule allows is denied.
    DontAsk,
}

/// Why a settings file could not be used. The host refuses to start on any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    permissions: Option<Permissions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Permissions {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    ask: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    default_mode: Option<String>,
    #[serde(default)]
    additional_directories: Vec<String>,
    // Claude Code's own switch; it has no meaning here, since bypass modes do not exist.
    #[serde(default)]
    #[allow(dead_code)]
    disable_bypass_permissions_mode: Option<serde_json::Value>,
}

/// The rules of one settings file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every rule, in file order (deny, ask, allow lists).
    pub rules: Vec<Rule>,
    /// `defaultMode`, if set.
    pub default_mode: Option<Mode>,
    /// `additionalDirectories`, resolved against the anchor.
    pub additional_directories: Vec<PathBuf>,
    /// The file it was read from, for messages.
    pub source: PathBuf,
}

impl Settings {
    /// Reads one settings file. `/path` rules are anchored at the file's directory, except for
    /// a file inside a `.claude` directory, whose rules are anchored at the project directory
    /// that holds `.claude` (so `.claude/settings.json` and Claude Code agree on `/src/**`).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SettingsError::Read { path: path.to_path_buf(), error })?;
        Self::parse(&text, path)
    }

    /// Parses settings text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let invalid =
            |message: String| SettingsError::Invalid { path: path.to_path_buf(), message };
        let file: File = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let Some(p) = file.permissions else {
            return Ok(Self { source: path.to_path_buf(), ..Self::default() });
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        let anchor = if dir.file_name().is_some_and(|n| n == ".claude") {
            dir.parent().unwrap_or(dir).to_path_buf()
        } else {
            dir.to_path_buf()
        };
        let mut rules = Vec::new();
        for (kind, list) in
            [(RuleKind::Deny, &p.deny), (RuleKind::Ask, &p.ask), (RuleKind::Allow, &p.allow)]
        {
            for text in list {
                let (tool, specifier) =
                    parse_rule(text).map_err(|m| invalid(format!("rule `{text}`: {m}")))?;
                rules.push(Rule {
                    tool,
                    specifier,
                    kind,
                    anchor: anchor.clone(),
                    source: path.to_path_buf(),
                });
            }
        }
        let default_mode = match p.default_mode.as_deref() {
            None => None,
            Some("default") => Some(Mode::Default),
            Some("acceptEdits") => Some(Mode::AcceptEdits),
            Some("plan") => Some(Mode::Plan),
            Some("dontAsk") => Some(Mode::DontAsk),
            Some("bypassPermissions") => {
                return Err(invalid(
                    "defaultMode `bypassPermissions` is not offered by this host".into(),
                ));
            }
            Some(other) => return Err(invalid(format!("unknown defaultMode `{other}`"))),
        };
        let additional_directories =
            p.additional_directories.iter().map(|d| expand_home(d, &anchor)).collect();
        Ok(Self { rules, default_mode, additional_directories, source: path.to_path_buf() })
    }
}

fn expand_home(dir: &str, anchor: &Path) -> PathBuf {
    match dir.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None => anchor.join(dir),
    }
}

/// The user's home directory (`$HOME`; `/` when unset).
pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// Splits `Tool(specifier)`.
pub(crate) fn parse_rule(text: &str) -> Result<(String, Option<String>), &'static str> {
    let text = text.trim();
    let (tool, specifier) = match text.find('(') {
        None => (text, None),
        Some(open) => {
            let Some(inner) = text[open + 1..].strip_suffix(')') else {
                return Err("a specifier must end with `)`");
            };
            (&text[..open], Some(inner.to_string()))
        }
    };
    if tool.is_empty()
        || !tool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*'))
    {
        return Err("the tool name must be letters, digits, `_`, `-` or `*`");
    }
    Ok((tool.to_string(), specifier.filter(|s| !s.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(parse_rule("Bash").unwrap(), ("Bash".into(), None));
        assert_eq!(
            parse_rule("Bash(npm run *)").unwrap(),
            ("Bash".into(), Some("npm run *".into()))
        );
        assert_eq!(parse_rule("Bash(echo (x))").unwrap().1.as_deref(), Some("echo (x)"));
        assert!(parse_rule("Bash(ls").is_err());
        assert!(parse_rule("(ls)").is_err());
    }

    #[test]
    fn settings_files_are_strict_inside_permissions() {
        let path = Path::new("/p/.claude/settings.json");
        let s = Settings::parse(
            r#"{"hooks":{},"permissions":{"deny":["Read(.env)"],"defaultMode":"plan"}}"#,
            path,
        )
        .unwrap();
        assert_eq!(s.rules[0].anchor, Path::new("/p"));
        assert_eq!(s.default_mode, Some(Mode::Plan));
        let typo = Settings::parse(r#"{"permissions":{"denny":["Bash"]}}"#, path).unwrap_err();
        assert!(typo.to_string().contains("denny"), "{typo}");
        assert!(
            Settings::parse(r#"{"permissions":{"defaultMode":"bypassPermissions"}}"#, path)
                .is_err()
        );
        assert!(Settings::parse("{not json", path).is_err());
    }
}
