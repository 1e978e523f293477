//! Sessions shared by `agent-host run`, as the core keeps them: the program, its kind, its
//! terminal's size, the last output ([`crate::session::SCROLLBACK`] bytes, numbered) and what
//! device input left unsubmitted in its line. Devices hear of every change as a broadcast, and a
//! device that syncs gets every live session with its scrollback.
//!
//! Input typed into a session is checked here against what was judged
//! ([`HostCore::type_into`]): the core is the one place that knows the line as it is now.
//!
//! It must not hold the way to the terminal (the driver keeps each session's input channel).

use protocol::{Blob, HostEvent, SessionId, SessionKind, TermSize};

use super::{Effect, HostCore};
use crate::session::input::{self, Typed};
use crate::session::{Live, TypeError};

/// What judging input for a session needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Its kind.
    pub kind: SessionKind,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// What device input left unsubmitted in its line.
    pub typed: Typed,
}

/// The most inputs waiting for a session's terminal (the `agent-host run` that holds it): past
/// this, input is refused ([`TypeError::Busy`]) before anything of it counts as typed.
pub const MAX_SESSION_INPUTS: usize = 64;

impl HostCore {
    /// A session opened: devices are told.
    pub fn session_started(
        &mut self,
        session: SessionId,
        command: Vec<String>,
        kind: SessionKind,
        size: Option<TermSize>,
    ) {
        let mut live = Live::new(command.clone(), kind);
        live.size = size;
        self.sessions.insert(session, live);
        let started = HostEvent::SessionStarted { session, command, kind, size };
        self.effects.push_back(Effect::Broadcast(started));
    }

    /// Output of a session: kept for later devices, and told to every device.
    pub fn session_output(&mut self, session: SessionId, data: Vec<u8>) {
        let Some(live) = self.sessions.get_mut(&session) else { return };
        let seq = live.push(data.clone());
        let output = HostEvent::Output { session, seq, data: Blob(data) };
        self.effects.push_back(Effect::Broadcast(output));
    }

    /// A session's terminal changed size.
    pub fn session_resized(&mut self, session: SessionId, size: TermSize) {
        let Some(live) = self.sessions.get_mut(&session) else { return };
        live.size = Some(size);
        self.effects.push_back(Effect::Broadcast(HostEvent::SessionResized { session, size }));
    }

    /// A session ended (or its `agent-host run` hung up).
    pub fn session_ended(&mut self, session: SessionId, exit_code: Option<i32>) {
        if self.sessions.remove(&session).is_some() {
            let ended = HostEvent::SessionEnded { session, exit_code };
            self.effects.push_back(Effect::Broadcast(ended));
        }
    }

    /// What judging input for `session` needs, if it is live.
    pub fn session(&self, session: SessionId) -> Option<SessionState> {
        self.sessions.get(&session).map(|live| SessionState {
            kind: live.kind,
            command: live.command.clone(),
            typed: live.typed.clone(),
        })
    }

    /// Input allowed or approved for `session` against the line as it was (`judged`): taken
    /// unless other input reached the line meanwhile and what this would do now was never
    /// judged (each input to a shell is judged alone).
    pub fn type_into(
        &mut self,
        session: SessionId,
        data: &str,
        judged: &Typed,
    ) -> Result<(), TypeError> {
        let live = self.sessions.get_mut(&session).ok_or(TypeError::Ended)?;
        if live.typed != *judged
            && live.kind != SessionKind::Shell
            && !input::judge(live.kind, &live.typed, data).0
        {
            return Err(TypeError::Conflict);
        }
        live.typed = input::after(&live.typed, data);
        Ok(())
    }

    /// Every live session as a device that syncs is told: started, then its scrollback.
    pub(super) fn session_events(&self) -> Vec<HostEvent> {
        self.sessions
            .iter()
            .flat_map(|(id, live)| {
                let started = HostEvent::SessionStarted {
                    session: *id,
                    command: live.command.clone(),
                    kind: live.kind,
                    size: live.size,
                };
                let output = live.scrollback.iter().map(|(seq, data)| HostEvent::Output {
                    session: *id,
                    seq: *seq,
                    data: Blob(data.clone()),
                });
                std::iter::once(started).chain(output).collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> HostCore {
        HostCore::new(protocol::SecretKey::from_seed(&[7; 32]).public_key(), 1000, false)
    }

    fn effects(core: &mut HostCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    #[test]
    fn a_session_is_told_kept_for_later_devices_and_forgotten_when_it_ends() {
        let mut core = core();
        let id = SessionId([1; 16]);
        core.session_started(id, vec!["claude".into()], SessionKind::Agent, None);
        core.session_output(id, b"hello".to_vec());
        core.session_output(SessionId([2; 16]), b"nobody".to_vec());
        let got = effects(&mut core);
        assert!(matches!(&got[0], Effect::Broadcast(HostEvent::SessionStarted { .. })));
        assert!(matches!(&got[1], Effect::Broadcast(HostEvent::Output { seq: 0, .. })));
        assert_eq!(got.len(), 2, "output of no session is dropped");
        // A device that syncs gets it, with its scrollback.
        let device = protocol::DeviceId::new(protocol::SecretKey::from_seed(&[3; 32]).public_key());
        core.sync(device, None);
        let got = effects(&mut core);
        let [Effect::Sync { sessions, .. }] = &got[..] else { panic!("{got:?}") };
        assert!(matches!(&sessions[..], [
            HostEvent::SessionStarted { .. },
            HostEvent::Output { data, .. }
        ] if data.0 == b"hello"));
        core.session_ended(id, Some(0));
        let got = effects(&mut core);
        assert!(matches!(
            &got[..],
            [Effect::Broadcast(HostEvent::SessionEnded { exit_code: Some(0), .. })]
        ));
        assert_eq!(core.session(id), None);
        assert_eq!(core.type_into(id, "x", &Typed::default()), Err(TypeError::Ended));
    }

    /// Input judged against the line as it was is refused if other input changed the line
    /// meanwhile and what it would do now was never judged.
    #[test]
    fn input_is_typed_only_against_the_line_it_was_judged_against() {
        let mut core = core();
        let id = SessionId([1; 16]);
        core.session_started(id, vec!["claude".into()], SessionKind::Agent, None);
        let empty = core.session(id).unwrap().typed;
        core.type_into(id, "fix the tests ", &empty).unwrap();
        let with_text = core.session(id).unwrap().typed;
        core.type_into(id, "\r", &with_text).unwrap();
        // Judged against the line with text, where `!rm` and Enter submit prompt text; the
        // line is empty now, where they submit a shell command: refused.
        assert_eq!(core.type_into(id, "!rm\r", &with_text), Err(TypeError::Conflict));
        // What would be allowed as the line is now goes through all the same.
        assert_eq!(core.type_into(id, "more text", &with_text), Ok(()));
        // Ctrl-C is always allowed.
        assert_eq!(core.type_into(id, "\u{3}", &empty), Ok(()));
    }
}
