//! How the rest of the host reaches the core: the [`Command`]s its one driver task applies,
//! sent over a bounded channel through a [`CoreHandle`].
//!
//! It must not decide anything: each command is one call into [`HostCore`].

use std::collections::{BTreeMap, HashMap};

use protocol::{
    ActionHash, DeviceId, HostEvent, PairingToken, PublicKey, ReplayState, RequestId, Role,
    SessionId, SessionKind, TermSize, Verdict,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Grant, HostCore, MAX_QUEUED, OfferError, OfferTerms, PairEvent, SessionState, TypeError,
};
use crate::approvals::{DecisionError, Pending, Requester, Resolution};
use crate::devices::Device;
use crate::session::input::Typed;

/// What the rest of the host asks of the core's driver.
#[derive(Debug)]
pub enum Command {
    /// [`HostCore::ask`]; the answer carries where the resolution will arrive.
    Ask {
        /// The action, as it will be shown.
        pending: Box<Pending>,
        /// The action as shown, and its resolution to come.
        reply: oneshot::Sender<Result<(Pending, oneshot::Receiver<Resolution>), DecisionError>>,
    },
    /// [`HostCore::decide`].
    Decide {
        /// The request.
        id: RequestId,
        /// What the decision names.
        action_hash: ActionHash,
        /// Approve or deny.
        verdict: Verdict,
        /// Who decides.
        by: Requester,
        /// What the person said with it.
        note: Option<String>,
        /// Whether it was taken.
        reply: oneshot::Sender<Result<(), DecisionError>>,
    },
    /// [`HostCore::withdraw`].
    Withdraw {
        /// The request.
        id: RequestId,
        /// Who withdraws it.
        by: Requester,
        /// Only a request of `by`'s own.
        own_only: bool,
        /// Whether it was withdrawn.
        reply: oneshot::Sender<Result<(), DecisionError>>,
    },
    /// [`HostCore::pending`].
    Pending {
        /// The list.
        reply: oneshot::Sender<Vec<Pending>>,
    },
    /// [`HostCore::pushed`].
    Pushed {
        /// To whom.
        device: DeviceId,
        /// Which of its subscriptions.
        generation: u64,
        /// What the push named.
        requests: Vec<RequestId>,
        /// What became of it.
        outcome: super::PushOutcome,
    },
    /// [`HostCore::deliveries`] and [`HostCore::push_states`].
    Deliveries {
        /// Both.
        reply: oneshot::Sender<(Vec<super::Track>, BTreeMap<DeviceId, super::PushState>)>,
    },
    /// [`HostCore::sync`].
    Sync {
        /// To whom.
        device: DeviceId,
        /// The device's sync request, when it asked.
        request: Option<RequestId>,
    },
    /// [`HostCore::grant`].
    Grant {
        /// The request judged.
        id: RequestId,
        /// What may run.
        grant: Grant,
    },
    /// [`HostCore::take_grant`].
    TakeGrant {
        /// The request judged.
        id: RequestId,
        /// The grant, if there is one.
        reply: oneshot::Sender<Option<Grant>>,
    },
    /// [`HostCore::handle_frame`].
    Frame {
        /// The key the relay says sent it.
        from: protocol::RelayKey,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// [`HostCore::handle_done`].
    Done {
        /// The device that made the request, or `None` for every device.
        to: Option<DeviceId>,
        /// What it came to.
        event: Box<HostEvent>,
    },
    /// [`HostCore::set_device`].
    Device {
        /// The device.
        id: DeviceId,
        /// Its role now, or `None` once it is no longer paired.
        role: Option<Role>,
        /// Its replay window on disk.
        rx: ReplayState,
        /// Answered once the core acts on it.
        reply: oneshot::Sender<()>,
    },
    /// [`HostCore::open_offer`]; what becomes of it goes to `events`.
    OpenOffer {
        /// The offer's token.
        token: PairingToken,
        /// What it grants.
        terms: Box<OfferTerms>,
        /// Where its client hears what happens.
        events: mpsc::Sender<PairEvent>,
        /// Whether it opened.
        reply: oneshot::Sender<Result<(), OfferError>>,
    },
    /// [`HostCore::close_offer`].
    CloseOffer {
        /// The offer's token.
        token: PairingToken,
    },
    /// [`HostCore::confirm`].
    Confirm {
        /// The offer whose client answers.
        token: PairingToken,
        /// The new device.
        device: DeviceId,
        /// The person's answer.
        accept: bool,
    },
    /// [`HostCore::paired`] (`Ok`) or [`HostCore::pair_failed`].
    Paired {
        /// The offer used.
        token: PairingToken,
        /// The new key.
        key: PublicKey,
        /// The device recorded, or why not.
        device: Result<Box<Device>, String>,
    },
    /// [`HostCore::allowed`].
    Allowed {
        /// The device that asked.
        device: DeviceId,
        /// Its request.
        id: RequestId,
    },
    /// [`HostCore::handle_presence`].
    Presence {
        /// The device.
        device: DeviceId,
        /// Online or gone.
        online: bool,
    },
    /// [`HostCore::online`].
    Online {
        /// The devices online.
        reply: oneshot::Sender<Vec<DeviceId>>,
    },
    /// [`HostCore::session_started`]; approved input for it goes to `input`.
    SessionStarted {
        /// The session.
        session: SessionId,
        /// The program and its arguments.
        command: Vec<String>,
        /// Its kind.
        kind: SessionKind,
        /// Its terminal's size, when known.
        size: Option<TermSize>,
        /// To the `agent-host run` that holds the terminal.
        input: mpsc::Sender<Vec<u8>>,
    },
    /// [`HostCore::session_output`].
    SessionOutput {
        /// The session.
        session: SessionId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// [`HostCore::session_resized`].
    SessionResized {
        /// The session.
        session: SessionId,
        /// Its new size.
        size: TermSize,
    },
    /// [`HostCore::session_ended`].
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
    },
    /// [`HostCore::session`].
    Session {
        /// The session.
        session: SessionId,
        /// What judging input needs of it, if it is live.
        reply: oneshot::Sender<Option<SessionState>>,
    },
    /// [`HostCore::type_into`], then the input to the session's terminal.
    Type {
        /// The session.
        session: SessionId,
        /// The input.
        data: String,
        /// The line as the input was judged against.
        judged: Box<Typed>,
        /// Whether it was typed.
        reply: oneshot::Sender<Result<(), TypeError>>,
    },
}

/// What the driver keeps beside the core: who waits for what the core settles.
#[derive(Debug, Default)]
pub struct Waiters {
    /// The requester of each pending action.
    pub resolutions: HashMap<RequestId, oneshot::Sender<Resolution>>,
    /// The client of each open offer.
    pub offers: HashMap<PairingToken, mpsc::Sender<PairEvent>>,
    /// The way to each live session's terminal.
    pub sessions: HashMap<SessionId, mpsc::Sender<Vec<u8>>>,
}

/// Why the core did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The driver stopped (the host is stopping).
    #[error("the host stopped")]
    Stopped,
}

/// How the rest of the host reaches the core's driver.
#[derive(Debug, Clone)]
pub struct CoreHandle {
    commands: mpsc::Sender<Command>,
}

impl CoreHandle {
    /// A handle, and what the driver receives.
    pub fn channel() -> (Self, mpsc::Receiver<Command>) {
        let (commands, rx) = mpsc::channel(MAX_QUEUED);
        (Self { commands }, rx)
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| CoreError::Stopped)?;
        answer.await.map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Ask`].
    pub async fn ask(
        &self,
        pending: Pending,
    ) -> Result<Result<(Pending, oneshot::Receiver<Resolution>), DecisionError>, CoreError> {
        self.call(|reply| Command::Ask { pending: Box::new(pending), reply }).await
    }

    /// See [`Command::Decide`].
    pub async fn decide(
        &self,
        id: RequestId,
        action_hash: ActionHash,
        verdict: Verdict,
        by: Requester,
        note: Option<String>,
    ) -> Result<Result<(), DecisionError>, CoreError> {
        self.call(|reply| Command::Decide { id, action_hash, verdict, by, note, reply }).await
    }

    /// See [`Command::Withdraw`].
    pub async fn withdraw(
        &self,
        id: RequestId,
        by: Requester,
        own_only: bool,
    ) -> Result<Result<(), DecisionError>, CoreError> {
        self.call(|reply| Command::Withdraw { id, by, own_only, reply }).await
    }

    /// See [`Command::Pending`].
    pub async fn pending(&self) -> Result<Vec<Pending>, CoreError> {
        self.call(|reply| Command::Pending { reply }).await
    }

    /// See [`Command::Pushed`].
    pub async fn pushed(
        &self,
        device: DeviceId,
        generation: u64,
        requests: Vec<RequestId>,
        outcome: super::PushOutcome,
    ) -> Result<(), CoreError> {
        let command = Command::Pushed { device, generation, requests, outcome };
        self.commands.send(command).await.map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Deliveries`].
    pub async fn deliveries(
        &self,
    ) -> Result<(Vec<super::Track>, BTreeMap<DeviceId, super::PushState>), CoreError> {
        self.call(|reply| Command::Deliveries { reply }).await
    }

    /// See [`Command::Grant`].
    pub async fn grant(&self, id: RequestId, grant: Grant) -> Result<(), CoreError> {
        self.commands.send(Command::Grant { id, grant }).await.map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Frame`]. Waits while the core is busy.
    pub async fn frame(&self, from: protocol::RelayKey, bytes: Vec<u8>) -> Result<(), CoreError> {
        self.commands.send(Command::Frame { from, bytes }).await.map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Done`].
    pub async fn done(&self, to: Option<DeviceId>, event: HostEvent) -> Result<(), CoreError> {
        self.commands
            .send(Command::Done { to, event: Box::new(event) })
            .await
            .map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Device`]; returns once every frame the core takes after it is judged by
    /// the change.
    pub async fn set_device(
        &self,
        id: DeviceId,
        role: Option<Role>,
        rx: ReplayState,
    ) -> Result<(), CoreError> {
        self.call(|reply| Command::Device { id, role, rx, reply }).await
    }

    /// See [`Command::OpenOffer`].
    pub async fn open_offer(
        &self,
        token: PairingToken,
        terms: OfferTerms,
        events: mpsc::Sender<PairEvent>,
    ) -> Result<Result<(), OfferError>, CoreError> {
        self.call(|reply| Command::OpenOffer { token, terms: Box::new(terms), events, reply }).await
    }

    /// Sends `command`, waiting while the core is busy.
    pub async fn send(&self, command: Command) -> Result<(), CoreError> {
        self.commands.send(command).await.map_err(|_| CoreError::Stopped)
    }

    /// See [`Command::Session`].
    pub async fn session(&self, session: SessionId) -> Result<Option<SessionState>, CoreError> {
        self.call(|reply| Command::Session { session, reply }).await
    }

    /// See [`Command::Type`].
    pub async fn type_into(
        &self,
        session: SessionId,
        data: String,
        judged: Typed,
    ) -> Result<Result<(), TypeError>, CoreError> {
        self.call(|reply| Command::Type { session, data, judged: Box::new(judged), reply }).await
    }

    /// See [`Command::Online`].
    pub async fn online(&self) -> Result<Vec<DeviceId>, CoreError> {
        self.call(|reply| Command::Online { reply }).await
    }

    /// See [`Command::TakeGrant`].
    pub async fn take_grant(&self, id: RequestId) -> Result<Option<Grant>, CoreError> {
        self.call(|reply| Command::TakeGrant { id, reply }).await
    }
}

/// Applies `command` to `core` at `now`; what the caller waits for is answered through its
/// reply, a new pending action's waiter is kept in `waiters` until its
/// [`super::Effect::Settled`] wakes it, and an offer's client until its offer is done.
pub fn apply(core: &mut HostCore, waiters: &mut Waiters, now: u64, command: Command) {
    match command {
        Command::Ask { pending, reply } => {
            let asked = core.ask(now, *pending).map(|pending| {
                let (tx, rx) = oneshot::channel();
                waiters.resolutions.insert(pending.id, tx);
                (pending, rx)
            });
            let _ = reply.send(asked);
        }
        Command::Decide { id, action_hash, verdict, by, note, reply } => {
            let _ = reply.send(core.decide_with(now, id, &action_hash, verdict, &by, note));
        }
        Command::Withdraw { id, by, own_only, reply } => {
            let _ = reply.send(core.withdraw(now, id, &by, own_only));
        }
        Command::Pending { reply } => {
            let _ = reply.send(core.pending());
        }
        Command::Pushed { device, generation, requests, outcome } => {
            core.pushed(now, device, generation, &requests, outcome);
        }
        Command::Deliveries { reply } => {
            let _ = reply.send((core.deliveries(), core.push_states()));
        }
        Command::Sync { device, request } => core.sync(device, request),
        Command::Grant { id, grant } => core.grant(now, id, grant),
        Command::TakeGrant { id, reply } => {
            let _ = reply.send(core.take_grant(now, id));
        }
        Command::Frame { from, bytes } => core.handle_frame(now, from, &bytes),
        Command::Done { to, event } => core.handle_done(to, *event),
        Command::Device { id, role, rx, reply } => {
            core.set_device(id, role, rx);
            let _ = reply.send(());
        }
        Command::OpenOffer { token, terms, events, reply } => {
            let opened = core.open_offer(token, *terms);
            if opened.is_ok() {
                waiters.offers.insert(token, events);
            }
            let _ = reply.send(opened);
        }
        Command::CloseOffer { token } => {
            core.close_offer(token);
            waiters.offers.remove(&token);
        }
        Command::Confirm { token, device, accept } => core.confirm(token, device, accept),
        Command::Paired { token, key, device } => match device {
            Ok(device) => core.paired(token, key, *device),
            Err(why) => core.pair_failed(token, key, why),
        },
        Command::Allowed { device, id } => core.allowed(device, id),
        Command::Presence { device, online } => core.handle_presence(device, online),
        Command::Online { reply } => {
            let _ = reply.send(core.online());
        }
        Command::SessionStarted { session, command, kind, size, input } => {
            waiters.sessions.insert(session, input);
            core.session_started(session, command, kind, size);
        }
        Command::SessionOutput { session, data } => core.session_output(session, data),
        Command::SessionResized { session, size } => core.session_resized(session, size),
        Command::SessionEnded { session, exit_code } => {
            waiters.sessions.remove(&session);
            core.session_ended(session, exit_code);
        }
        Command::Session { session, reply } => {
            let _ = reply.send(core.session(session));
        }
        Command::Type { session, data, judged, reply } => {
            // Room at the terminal first: the core counts the input as typed only if it goes.
            let typed = waiters
                .sessions
                .get(&session)
                .ok_or(TypeError::Ended)
                .and_then(|terminal| {
                    terminal.try_reserve().map_err(|e| match e {
                        mpsc::error::TrySendError::Full(()) => TypeError::Busy,
                        mpsc::error::TrySendError::Closed(()) => TypeError::Ended,
                    })
                })
                .and_then(|room| {
                    core.type_into(session, &data, &judged)?;
                    room.send(data.into_bytes());
                    Ok(())
                });
            let _ = reply.send(typed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_into(
        core: &mut HostCore,
        waiters: &mut Waiters,
        session: SessionId,
        data: &str,
    ) -> Result<(), TypeError> {
        let (reply, mut answer) = oneshot::channel();
        let judged = Box::new(core.session(session).map(|s| s.typed).unwrap_or_default());
        apply(core, waiters, 0, Command::Type { session, data: data.into(), judged, reply });
        answer.try_recv().unwrap()
    }

    /// Input the terminal has no room for is refused before the core counts it as typed.
    #[test]
    fn input_a_terminal_has_no_room_for_is_not_typed() {
        let mut core =
            HostCore::new(protocol::SecretKey::from_seed(&[7; 32]).public_key(), 1000, false);
        let mut waiters = Waiters::default();
        let session = SessionId([1; 16]);
        let (input, mut terminal) = mpsc::channel(1);
        let command = vec!["claude".to_string()];
        let kind = SessionKind::Agent;
        apply(
            &mut core,
            &mut waiters,
            0,
            Command::SessionStarted { session, command, kind, size: None, input },
        );
        assert_eq!(type_into(&mut core, &mut waiters, session, "ab"), Ok(()));
        let line = core.session(session).unwrap().typed;
        assert_eq!(type_into(&mut core, &mut waiters, session, "cd"), Err(TypeError::Busy));
        assert_eq!(core.session(session).unwrap().typed, line, "counted as typed");
        assert_eq!(terminal.try_recv().unwrap(), b"ab");
        assert_eq!(type_into(&mut core, &mut waiters, session, "cd"), Ok(()));
        assert_eq!(terminal.try_recv().unwrap(), b"cd");
        drop(terminal);
        assert_eq!(type_into(&mut core, &mut waiters, session, "e"), Err(TypeError::Ended));
    }
}
