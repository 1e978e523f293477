//! The canonical bytes of an action and their SHA-256, so that an approval binds to exactly one
//! action.
//!
//! The form is deliberately simple, so that the browser computes the same bytes with a
//! `DataView` and no JSON canonicalization:
//!
//! ```text
//! canonical = "agent-bridge action v1" 0x00 ‖ field(type) ‖ body
//! field(b)  = u32 big-endian length of b ‖ b          (strings as UTF-8)
//! count(n)  = u32 big-endian n
//! h(b)      = field(SHA-256(b))                       (32 raw bytes, so a field of length 32)
//!
//! run            field("run") ‖ count(argc) ‖ field(arg)… ‖ field(cwd)
//!                ‖ count(env) ‖ (field(name) ‖ field(value))…   env sorted by name, bytewise
//! read_file      field("read_file") ‖ field(path)
//! write_file     field("write_file") ‖ field(path) ‖ h(content)
//! edit_file      field("edit_file") ‖ field(path) ‖ h(old) ‖ h(new)
//! list_dir       field("list_dir") ‖ field(path)
//! session_input  field("session_input") ‖ field(session id, 16 raw bytes) ‖ h(data)
//! web_fetch      field("web_fetch") ‖ field(url)
//! tool           field("tool") ‖ field(name) ‖ h(input)
//! start_session  field("start_session") ‖ count(argc) ‖ field(arg)…
//! ```
//!
//! The type names are the JSON `type` tags. Content is bound by its hash, so the canonical form
//! stays small whatever the file size. Env names are ASCII (the message check enforces it), so
//! sorting by bytes and by UTF-16 code units agree.

use sha2::{Digest as _, Sha256};

use crate::ids::ActionHash;
use crate::message::Action;

/// The prefix that makes these bytes mean "an action" and nothing else.
pub const DOMAIN: &[u8] = b"agent-bridge action v1\0";

/// The canonical bytes of `action`.
pub fn canonical_bytes(action: &Action) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(DOMAIN);
    match action {
        Action::Run { argv, cwd, env } => {
            field(&mut out, b"run");
            count(&mut out, argv.len());
            for arg in argv {
                field(&mut out, arg.as_bytes());
            }
            field(&mut out, cwd.as_bytes());
            // A BTreeMap iterates in byte order of its String keys already.
            count(&mut out, env.len());
            for (name, value) in env {
                field(&mut out, name.as_bytes());
                field(&mut out, value.as_bytes());
            }
        }
        Action::ReadFile { path } => {
            field(&mut out, b"read_file");
            field(&mut out, path.as_bytes());
        }
        Action::WriteFile { path, content } => {
            field(&mut out, b"write_file");
            field(&mut out, path.as_bytes());
            hashed(&mut out, &content.0);
        }
        Action::EditFile { path, old, new } => {
            field(&mut out, b"edit_file");
            field(&mut out, path.as_bytes());
            hashed(&mut out, old.as_bytes());
            hashed(&mut out, new.as_bytes());
        }
        Action::ListDir { path } => {
            field(&mut out, b"list_dir");
            field(&mut out, path.as_bytes());
        }
        Action::SessionInput { session, data } => {
            field(&mut out, b"session_input");
            field(&mut out, &session.0);
            hashed(&mut out, data.as_bytes());
        }
        Action::WebFetch { url } => {
            field(&mut out, b"web_fetch");
            field(&mut out, url.as_bytes());
        }
        Action::Tool { name, input } => {
            field(&mut out, b"tool");
            field(&mut out, name.as_bytes());
            hashed(&mut out, input.as_bytes());
        }
        Action::StartSession { command } => {
            field(&mut out, b"start_session");
            count(&mut out, command.len());
            for arg in command {
                field(&mut out, arg.as_bytes());
            }
        }
    }
    out
}

/// SHA-256 of the canonical bytes of `action`.
pub fn action_hash(action: &Action) -> ActionHash {
    ActionHash(Sha256::digest(canonical_bytes(action)).into())
}

fn count(out: &mut Vec<u8>, n: usize) {
    // Message limits keep every length far below 4 GiB; saturating keeps this total anyway.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    count(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn hashed(out: &mut Vec<u8>, bytes: &[u8]) {
    field(out, &Sha256::digest(bytes));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::Blob;

    fn run(argv: &[&str], cwd: &str) -> Action {
        Action::Run {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: cwd.into(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn boundaries_between_arguments_count() {
        // Plain concatenation would make these equal; length prefixes keep them apart.
        assert_ne!(action_hash(&run(&["ab", "c"], ".")), action_hash(&run(&["a", "bc"], ".")));
        assert_ne!(action_hash(&run(&["a"], "b")), action_hash(&run(&["a", "b"], "")));
        assert_ne!(action_hash(&run(&["ls"], "/a")), action_hash(&run(&["ls"], "/b")));
    }

    #[test]
    fn content_and_kind_are_bound() {
        let write = |c: &[u8]| Action::WriteFile { path: "f".into(), content: Blob(c.to_vec()) };
        assert_ne!(action_hash(&write(b"a")), action_hash(&write(b"b")));
        let read = Action::ReadFile { path: "f".into() };
        let list = Action::ListDir { path: "f".into() };
        assert_ne!(action_hash(&read), action_hash(&list));
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1".to_string());
        let with_env = Action::Run { argv: vec!["ls".into()], cwd: ".".into(), env };
        assert_ne!(action_hash(&with_env), action_hash(&run(&["ls"], ".")));
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = canonical_bytes(&Action::ReadFile { path: "ab".into() });
        let mut expected = DOMAIN.to_vec();
        expected.extend_from_slice(&[0, 0, 0, 9]);
        expected.extend_from_slice(b"read_file");
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"ab");
        assert_eq!(bytes, expected);
    }
}
