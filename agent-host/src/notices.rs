//! What the host tells people through push services, and when the core says so: the notice a
//! push carries ([`notice`]), sealed to its device (`push`); and the content-free "needs
//! you" to an ntfy-style topic (`ntfy`).
//!
//! A push says what waits as a [`HostEvent::Notice`] sealed to the device, lapsing with the
//! last action it names; the device's role says whether it gets buttons, its subscription
//! whether the notice names the actions. The push service's answer goes back to the core
//! ([`crate::host_core::HostCore::pushed`]): 201 (or any 2xx) taken, 404 and 410 the end of the
//! subscription, anything else a failure to try again. Redirects are not followed.
//!
//! Bounded: the core keeps at most one push on its way per device, and the host at most
//! [`MAX_SENDING`] requests at once; an ntfy post that finds every slot taken is dropped (and
//! said so).

use std::sync::Arc;

use base64_simd::URL_SAFE_NO_PAD as B64;
use protocol::{DeviceId, HostEvent, Message, NoticeAction, RequestId, Role};

use crate::approvals::Pending;
use crate::host::{Host, lock};
use crate::host_core::PushOutcome;
use crate::push::{MAX_PAYLOAD, MAX_SENDING, NTFY_BODY, Subscription};

/// The longest summary a notice quotes, in characters.
const MAX_SUMMARY: usize = 160;
/// The longest name of who asked, in characters.
const MAX_NAME: usize = 60;

/// What a notice of `pending` (oldest first) says to a device of `role`: the newest first,
/// none of them when it hides detail. Buttons (`can_decide`) only for an approver or an
/// operator, and only when the one action waiting is shown whole: a summary cut short, or
/// with characters that could make it read as something else (line breaks, other control and
/// bidirectional characters, shown escaped), is there to be read on the page.
pub fn notice(host: &Host, role: Role, hide_detail: bool, pending: &[Pending]) -> HostEvent {
    let home = std::env::var("HOME").ok().filter(|h| h.len() > 1);
    let mut whole = true;
    let actions = if hide_detail {
        Vec::new()
    } else {
        crate::host_core::newest(pending)
            .map(|p| {
                let (line, counted) = one_line(p, home.as_deref());
                let (summary, as_is) = shown(&line, MAX_SUMMARY);
                let (requested_by, name_as_is) = shown(&asker(host, &p.requested_by), MAX_NAME);
                whole &= as_is && counted && name_as_is;
                NoticeAction {
                    request: p.id,
                    action_hash: p.action_hash,
                    summary,
                    requested_by,
                    expires_at_ms: p.expires_at_ms,
                }
            })
            .collect()
    };
    HostEvent::Notice {
        host_name: shown(&host.config.host_name, MAX_NAME).0,
        waiting: u32::try_from(pending.len()).unwrap_or(u32::MAX),
        actions,
        can_decide: role >= Role::Approver && whole,
    }
}

/// `text` for a notification, cut at `most` characters with `…`, with what could change how it
/// reads escaped (a line break as `⏎`; control, format, bidirectional and line or paragraph
/// separator characters as `\u{…}`); and whether it is plain printable ASCII shown whole, the
/// only text a notification offers buttons for (an allow-list: a name or a path in another
/// script is shown, and answered on the page).
fn shown(text: &str, most: usize) -> (String, bool) {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}')
    };
    let mut out = String::new();
    let mut as_is = true;
    for c in text.chars() {
        if c == '\n' {
            out.push('⏎');
        } else if unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
        as_is &= c == ' ' || c.is_ascii_graphic();
    }
    if out.chars().count() > most {
        out = out.chars().take(most).collect();
        out.push('…');
        as_is = false;
    }
    (out, as_is)
}

/// An action in one line for a small screen: its summary with the home directory as `~` where
/// the summary names a directory or a file (not inside the command's own words), and for a
/// write or an edit how many lines it adds and removes (`edit ~/proj/src/main.rs (+12 −3)`);
/// and whether those counts are whole (not from a preview cut short, or of binary content).
pub fn one_line(p: &Pending, home: Option<&str>) -> (String, bool) {
    let mut line = p.summary.clone();
    if let Some(home) = home {
        let home = format!(" {}/", home.trim_end_matches('/'));
        // After the command's closing backquote, if it has one.
        let from = line.rfind('`').map_or(0, |i| i + 1);
        let tail = line.split_off(from).replace(&home, " ~/");
        line.push_str(&tail);
    }
    if let (Some(diff), protocol::Action::WriteFile { .. } | protocol::Action::EditFile { .. }) =
        (&p.preview, &p.action)
    {
        // The two header lines (`--- path`, `+++ path (new)`), then the hunks.
        let lines = || diff.lines().skip(2);
        if !diff.starts_with("--- ") || diff.contains("\n… (preview cut)\n") {
            return (line, false);
        }
        let count = |sign: char| lines().filter(|l| l.starts_with(sign)).count();
        line.push_str(&format!(" (+{} −{})", count('+'), count('-')));
    }
    (line, true)
}

/// Who asked, as a notification names them: a device by its name, else its id; the terminal or
/// an agent's hook by what it is.
fn asker(host: &Host, who: &crate::approvals::Requester) -> String {
    match host.actor(who) {
        protocol::Actor::Device { name: Some(name), .. } => name,
        protocol::Actor::Device { id, .. } => id.to_string(),
        protocol::Actor::Local { name } => name,
    }
}

/// What a push carries: `notice` sealed to `device`, lapsing at `expires_at_ms`, as base64url
/// text; actions are left out, the oldest named first, until it fits.
fn payload(
    host: &Host,
    device: &DeviceId,
    mut notice: HostEvent,
    expires_at_ms: u64,
) -> Option<Vec<u8>> {
    loop {
        let message = Message::Event(notice.clone());
        let frame = crate::link::seal_until(host, &device.key(), &message, expires_at_ms)?;
        let text = B64.encode_to_string(&frame).into_bytes();
        if text.len() <= MAX_PAYLOAD {
            return Some(text);
        }
        let HostEvent::Notice { actions, .. } = &mut notice else { return None };
        actions.pop()?;
    }
}

/// Pushes what waits (`pending`) to `device`, for the core's [`crate::host_core::Effect::Push`]:
/// what becomes of it goes back to the core. What cannot even be sent is told at once.
pub(crate) fn push(
    host: &Arc<Host>,
    device: DeviceId,
    generation: u64,
    pending: Vec<Pending>,
) -> Result<(), PushOutcome> {
    let Some(pusher) = &host.pusher else {
        return Err(PushOutcome::Gone("this host does not push".into()));
    };
    let (role, subscription) = {
        let devices = lock(&host.devices);
        let d = devices.get(&device).ok_or_else(|| PushOutcome::Gone("not paired".into()))?;
        (d.role, d.push.clone().ok_or_else(|| PushOutcome::Gone("no subscription".into()))?)
    };
    let target = Subscription::from_wire(&subscription)
        .and_then(|s| s.check_service(&host.config.push.allow).map(|()| s))
        .map_err(|e| PushOutcome::Gone(e.to_string()))?;
    let notice = notice(host, role, subscription.hide_detail, &pending);
    let expires = pending.iter().map(|p| p.expires_at_ms).max().unwrap_or_default();
    let body = payload(host, &device, notice, expires)
        .ok_or_else(|| PushOutcome::Failed("the notice could not be sealed".into()))?;
    let request = crate::push::request(&pusher.key, &target, &pusher.contact, &body)
        .map_err(|e| PushOutcome::Failed(e.to_string()))?;
    let requests: Vec<RequestId> = pending.iter().map(|p| p.id).collect();
    let (agent, sending, host) = (pusher.agent.clone(), pusher.sending.clone(), host.clone());
    tokio::spawn(async move {
        let outcome = match sending.acquire_owned().await {
            Ok(permit) => {
                let sent = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    agent.run(request).map(|r| r.status())
                })
                .await;
                match sent {
                    Ok(Ok(status)) if status.is_success() => PushOutcome::Taken,
                    Ok(Ok(status)) if status.as_u16() == 404 || status.as_u16() == 410 => {
                        PushOutcome::Gone(format!("HTTP {status}"))
                    }
                    Ok(Ok(status)) => {
                        PushOutcome::Failed(format!("the push service answered HTTP {status}"))
                    }
                    Ok(Err(e)) => PushOutcome::Failed(e.to_string()),
                    Err(e) => PushOutcome::Failed(e.to_string()),
                }
            }
            Err(_) => PushOutcome::Failed("the host is stopping".into()),
        };
        let _ = host.core.pushed(device, generation, requests, outcome).await;
    });
    Ok(())
}

/// Posts the content-free "needs you" to the ntfy-style topic, if the host has one.
pub(crate) fn ntfy(host: &Host) {
    let Some(pusher) = &host.pusher else { return };
    let Some(url) = pusher.ntfy.clone() else { return };
    let Ok(permit) = pusher.sending.clone().try_acquire_owned() else {
        tracing::warn!("ntfy: {MAX_SENDING} requests are on their way; this one is dropped");
        return;
    };
    let agent = pusher.agent.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match agent.post(&url).send(NTFY_BODY) {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!("ntfy: {url} answered HTTP {}", r.status()),
            Err(e) => tracing::warn!("ntfy: {url}: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use protocol::{Action, RequestId};

    use super::*;
    use crate::approvals::Requester;

    fn pending(action: Action, summary: &str, preview: Option<&str>) -> Pending {
        Pending {
            id: RequestId([1; 16]),
            action_hash: protocol::action_hash(&action),
            action,
            summary: summary.into(),
            reason: "asked".into(),
            preview: preview.map(Into::into),
            requested_by: Requester::Local("terminal".into()),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn one_line_says_home_as_a_tilde_and_counts_an_edits_lines() {
        let run = Action::Run {
            argv: vec!["cargo".into(), "test".into()],
            cwd: ".".into(),
            env: Default::default(),
        };
        let p = pending(run, "run `cargo test` in /home/ana/proj", None);
        assert_eq!(one_line(&p, Some("/home/ana")).0, "run `cargo test` in ~/proj");
        assert_eq!(one_line(&p, Some("/home/an")).0, "run `cargo test` in /home/ana/proj");
        assert_eq!(one_line(&p, None).0, "run `cargo test` in /home/ana/proj");
        let edit =
            Action::EditFile { path: "src/main.rs".into(), old: "a".into(), new: "b".into() };
        let diff = "--- src/main.rs\n+++ src/main.rs (new)\n@@ -1,3 +1,2 @@\n-a\n---b\n+c\n ctx\n";
        let p = pending(edit.clone(), "edit /home/ana/proj/src/main.rs", Some(diff));
        let line = one_line(&p, Some("/home/ana/"));
        assert_eq!(
            line,
            ("edit ~/proj/src/main.rs (+1 −2)".into(), true),
            "a line of `--b` removed counts"
        );
        let cut = format!("{diff}\n… (preview cut)\n");
        assert!(!one_line(&pending(edit.clone(), "edit x", Some(&cut)), None).1);
        assert!(!one_line(&pending(edit, "edit x", Some("12 bytes of binary content")), None).1);
        // Not inside the command's own words.
        let run = Action::Run { argv: vec!["rm".into()], cwd: ".".into(), env: Default::default() };
        let p = pending(run, "run `rm /home/ana/x` in /home/ana/proj", None);
        assert_eq!(one_line(&p, Some("/home/ana")).0, "run `rm /home/ana/x` in ~/proj");
    }

    #[test]
    fn a_summary_that_could_read_as_something_else_is_escaped_and_gets_no_buttons() {
        assert_eq!(shown("run `ls`", 160), ("run `ls`".into(), true));
        let (text, as_is) = shown("run `true\nasked by terminal; 1:59 left\n`", 160);
        assert_eq!(text, "run `true⏎asked by terminal; 1:59 left⏎`");
        assert!(!as_is);
        let (text, as_is) = shown("run `echo \u{202e}txt.exe`", 160);
        assert_eq!((text.as_str(), as_is), ("run `echo \\u{202e}txt.exe`", false));
        for sneaky in ["\u{2028}", "\u{2029}", "\u{200b}", "\u{feff}", "\u{e0041}", "\u{00ad}"] {
            let (text, as_is) = shown(&format!("run `a{sneaky}b`"), 160);
            assert!(!as_is && text.contains("\\u{"), "{sneaky:?}: {text}");
        }
        // Another script is shown as it is, without buttons.
        assert_eq!(shown("edit café.txt", 160), ("edit café.txt".into(), false));
        let (text, as_is) = shown(&"x".repeat(200), 160);
        assert_eq!((text.chars().count(), as_is), (161, false));
        assert!(text.ends_with('…'));
    }
}
