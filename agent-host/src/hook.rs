//! Agents asking the host before they act: `agent-host hook claude-code` (Claude Code's
//! PreToolUse and PermissionRequest hooks, as `PERMISSIONS.md` describes them) and
//! `agent-host ask` (one action as JSON, for any other agent or script).
//!
//! Both map the agent's own action to a host action, ask the running host over its socket
//! (policy, then if it asks, a pending action answered at the terminal or from a paired device),
//! and print the decision. The agent performs the action itself, except an allowed Bash command,
//! which the hook hands back rewritten to run through the host's sandbox ([`through_sandbox`])
//! unless told `--in-place`. They never fall silent: when the host cannot be reached, the input is not understood, or nobody
//! answers before the deadline, the answer is an explicit deny with the reason.

use std::path::Path;
use std::time::Duration;

use protocol::{Action, Blob};
use serde_json::{Value, json};

use crate::local_api::{ApiRequest, ApiResponse};

/// The most input read from stdin.
pub const MAX_INPUT: usize = 4 << 20;

/// A decision for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Go ahead?
    pub allow: bool,
    /// Why, for the agent and the person.
    pub reason: String,
    /// The host's request id, when one was made.
    pub request: Option<String>,
    /// Whether the host answered at all (false: unreachable or no answer in time).
    pub reached: bool,
}

impl Answer {
    /// A deny, with why; `reached`: whether the host answered.
    pub fn deny(reason: impl Into<String>, reached: bool) -> Self {
        Self { allow: false, reason: reason.into(), request: None, reached }
    }
}

fn text(input: &Value, key: &str) -> Result<String, String> {
    input
        .get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("the tool input has no `{key}` text"))
}

/// The host action for one of Claude Code's tool calls. Tools without a closer match (MCP
/// tools, web search, notebooks, …) are judged by name, with their input shown to the person.
pub fn claude_code_action(tool: &str, input: &Value, cwd: &str) -> Result<Action, String> {
    Ok(match tool {
        "Bash" => Action::Run {
            argv: vec!["bash".into(), "-c".into(), text(input, "command")?],
            cwd: cwd.into(),
            env: Default::default(),
        },
        "Read" => Action::ReadFile { path: text(input, "file_path")? },
        "Write" => Action::WriteFile {
            path: text(input, "file_path")?,
            content: Blob(text(input, "content")?.into_bytes()),
        },
        "Edit" => {
            let (path, old) = (text(input, "file_path")?, text(input, "old_string")?);
            let new = text(input, "new_string")?;
            if old.is_empty() {
                Action::WriteFile { path, content: Blob(new.into_bytes()) }
            } else {
                Action::EditFile { path, old, new }
            }
        }
        "MultiEdit" => {
            let edits = input.get("edits").and_then(Value::as_array).ok_or("no `edits`")?;
            let pick = |key: &str| -> Result<String, String> {
                let parts: Result<Vec<String>, String> =
                    edits.iter().map(|e| text(e, key)).collect();
                Ok(parts?.join("\n…\n"))
            };
            Action::EditFile {
                path: text(input, "file_path")?,
                old: pick("old_string")?,
                new: pick("new_string")?,
            }
        }
        "Glob" | "Grep" | "LS" => Action::ListDir {
            path: input.get("path").and_then(Value::as_str).unwrap_or(cwd).to_string(),
        },
        "WebFetch" => Action::WebFetch { url: text(input, "url")? },
        _ => Action::Tool { name: tool.into(), input: input.to_string() },
    })
}

/// Asks the host at `socket` about `action`, waiting up to `deadline` for a person if policy
/// asks.
pub async fn ask_host(
    socket: &Path,
    action: Action,
    requester: &str,
    cwd: &str,
    deadline: Duration,
) -> Answer {
    let request = ApiRequest::Judge { action, requester: requester.into(), cwd: cwd.into() };
    let call = crate::local_api::call(socket, &request, |_| {});
    let lines = match tokio::time::timeout(deadline, call).await {
        Err(_) => {
            return Answer::deny(
                format!("nobody answered within {} s; denied", deadline.as_secs()),
                false,
            );
        }
        Ok(Err(e)) => {
            return Answer::deny(format!("agent-host cannot be asked ({e}); denied"), false);
        }
        Ok(Ok(lines)) => lines,
    };
    match lines.last() {
        Some(ApiResponse::Allowed { request, reason }) => Answer {
            allow: true,
            reason: reason.clone(),
            request: Some(request.to_string()),
            reached: true,
        },
        Some(ApiResponse::Denied { request, reason }) => Answer {
            allow: false,
            reason: reason.clone(),
            request: request.map(|r| r.to_string()),
            reached: true,
        },
        Some(ApiResponse::Error { message }) => Answer::deny(message.clone(), true),
        other => Answer::deny(format!("the host gave no decision ({other:?}); denied"), true),
    }
}

/// Claude Code's answer for `event` (`PreToolUse` or `PermissionRequest`); an allow may hand
/// back `updated`, the tool input the agent then uses instead of its own.
pub fn claude_code_output(event: &str, answer: &Answer, updated: Option<Value>) -> Value {
    let reason = format!("agent-host: {}", answer.reason);
    let updated = updated.filter(|_| answer.allow);
    if event == "PermissionRequest" {
        let mut decision = if answer.allow {
            json!({"behavior": "allow"})
        } else {
            json!({"behavior": "deny", "message": reason})
        };
        if let Some(updated) = updated {
            decision["updatedInput"] = updated;
        }
        json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}})
    } else {
        let mut output = json!({
            "hookEventName": "PreToolUse",
            "permissionDecision": if answer.allow { "allow" } else { "deny" },
            "permissionDecisionReason": reason,
        });
        if let Some(updated) = updated {
            output["updatedInput"] = updated;
        }
        json!({ "hookSpecificOutput": output })
    }
}

/// The Bash tool input that runs an allowed `command` through the host's sandbox:
/// `agent-host run-allowed`, bound to the request it was judged under (the host runs only that
/// command, once, in that directory). The rest of the input (description, timeout) is kept.
pub fn through_sandbox(exe: &Path, input: &Value, request: &str, cwd: &str) -> Option<Value> {
    let command = input.get("command")?.as_str()?;
    let argv: Vec<String> = vec![
        exe.to_string_lossy().into_owned(),
        "run-allowed".into(),
        "--request".into(),
        request.into(),
        "--cwd".into(),
        cwd.into(),
        "--".into(),
        "bash".into(),
        "-c".into(),
        command.into(),
    ];
    let mut updated = input.clone();
    updated["command"] = Value::String(crate::actions::quote_argv(&argv));
    Some(updated)
}

/// One hook call: the input as Claude Code sends it, the output it reads. With `sandbox` (the
/// `agent-host` binary), an allowed Bash command comes back rewritten to run through the host's
/// sandbox ([`through_sandbox`]).
pub async fn claude_code(
    input: &[u8],
    socket: &Path,
    deadline: Duration,
    sandbox: Option<&Path>,
) -> Value {
    let parsed: Result<Value, _> = serde_json::from_slice(input);
    let Ok(call) = parsed else {
        return claude_code_output(
            "PreToolUse",
            &Answer::deny("the hook input is not JSON; denied", false),
            None,
        );
    };
    let event = call.get("hook_event_name").and_then(Value::as_str).unwrap_or("PreToolUse");
    let cwd = call.get("cwd").and_then(Value::as_str).unwrap_or_default();
    let tool = call.get("tool_name").and_then(Value::as_str).unwrap_or_default();
    let tool_input = call.get("tool_input").cloned().unwrap_or(Value::Null);
    if cwd.is_empty() || tool.is_empty() {
        let answer = Answer::deny("the hook input lacks `cwd` or `tool_name`; denied", false);
        return claude_code_output(event, &answer, None);
    }
    let answer = match claude_code_action(tool, &tool_input, cwd) {
        Ok(action) => ask_host(socket, action, "hook claude-code", cwd, deadline).await,
        Err(e) => Answer::deny(format!("{tool}: {e}; denied"), false),
    };
    let updated = match (sandbox, &answer.request) {
        (Some(exe), Some(request)) if tool == "Bash" && answer.allow => {
            match through_sandbox(exe, &tool_input, request, cwd) {
                Some(updated) => Some(updated),
                None => {
                    let no = Answer::deny("the Bash input has no command to run; denied", true);
                    return claude_code_output(event, &no, None);
                }
            }
        }
        _ => None,
    };
    claude_code_output(event, &answer, updated)
}

/// `agent-host ask`'s input: one action, and optionally where the agent works and its name.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskInput {
    /// The action, as in the protocol (`{"type":"run","argv":[…],"cwd":"…"}`, …).
    pub action: Action,
    /// The agent's working directory (default: the current directory).
    pub cwd: Option<String>,
    /// Who asks (default `ask`).
    pub requester: Option<String>,
}

/// `agent-host ask`'s output.
pub fn ask_output(answer: &Answer) -> Value {
    json!({
        "decision": if answer.allow { "allow" } else { "deny" },
        "reason": answer.reason,
        "request": answer.request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_map_to_actions() {
        let bash = claude_code_action("Bash", &json!({"command": "ls -la"}), "/w").unwrap();
        assert!(matches!(bash, Action::Run { ref argv, .. } if argv == &["bash", "-c", "ls -la"]));
        let create = claude_code_action(
            "Edit",
            &json!({"file_path": "/w/a", "old_string": "", "new_string": "x"}),
            "/w",
        )
        .unwrap();
        assert!(matches!(create, Action::WriteFile { .. }));
        let mcp = claude_code_action("mcp__gh__merge", &json!({"pr": 7}), "/w").unwrap();
        assert_eq!(
            mcp,
            Action::Tool { name: "mcp__gh__merge".into(), input: r#"{"pr":7}"#.into() }
        );
        assert!(claude_code_action("Read", &json!({}), "/w").is_err());
    }

    #[test]
    fn answers_are_explicit() {
        let no = Answer::deny("why", false);
        let pre = claude_code_output("PreToolUse", &no, Some(json!({"command": "x"})));
        assert_eq!(pre["hookSpecificOutput"]["permissionDecision"], "deny");
        assert!(pre["hookSpecificOutput"].get("updatedInput").is_none(), "{pre}");
        let perm = claude_code_output("PermissionRequest", &no, None);
        assert_eq!(perm["hookSpecificOutput"]["decision"]["behavior"], "deny");
        assert_eq!(ask_output(&no)["decision"], "deny");
    }
}
