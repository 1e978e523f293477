//! The host's decision state, without I/O and without a clock: [`HostCore`].
//!
//! It holds what waits for a person and what was allowed to run later: the pending actions (the
//! [`Broker`] and its rule that the first valid decision wins), when the next of them lapses, and
//! the commands agents were allowed to run through the sandbox ([`Grant`]s). Callers pass the time
//! in; what must happen as a result comes out of [`HostCore::poll_effect`] as [`Effect`]s, in the
//! order they must take place: a decision's audit record comes before the devices hear of it, and
//! both before the requester is woken to act on it. One driver task owns the core
//! (`crate::driver::drive`); everything else talks to it over a bounded channel
//! ([`CoreHandle`]), so no lock guards this state and no timer polls it.
//!
//! It also takes what paired devices send, from the bytes the relay delivered
//! ([`HostCore::handle_frame`]): it holds each device's role and replay window, and the recent
//! requests of devices with their answers (`inbound.rs`); and it pairs new devices: open offers,
//! the hellos that name them, who is online (`pairing.rs`); and the sessions shared by
//! `agent-host run`, with their scrollback and the line device input left (`sessions.rs`).
//!
//! It must not hold sockets, files, the audit log or the runtime: those are the driver's. Still
//! outside it: the local API's requests are served by their connections' tasks, which call the
//! core's commands.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use protocol::{
    Action, ActionHash, DeviceId, HostEvent, Message, Pairing, PairingToken, PublicKey,
    ReplayState, RequestId, Verdict,
};

use crate::approvals::{Broker, DecisionError, Pending, Requester, Resolution};
use crate::audit::Event;
use crate::devices::Device;

mod delivery;
mod handle;
mod inbound;
mod pairing;
mod sessions;
pub use crate::session::TypeError;
pub use delivery::{
    ACK_WAIT_MS, KEPT_SETTLED, PushChange, PushOutcome, PushState, RETRY_MAX_MS, RETRY_MIN_MS,
    Stage, Track, newest,
};
pub use handle::{Command, CoreError, CoreHandle, Waiters, apply};
pub use inbound::REMEMBERED;
pub use pairing::{
    MAX_OFFER_SECS, MAX_PAIR_EVENTS, MIN_CONFIRM_MS, OfferError, OfferTerms, PairEvent,
};
pub use sessions::{MAX_SESSION_INPUTS, SessionState};

/// How long an allowed command waits for its run through the sandbox.
pub const GRANT_FOR_MS: u64 = 5 * 60 * 1000;
/// The most allowed commands waiting for their run (the oldest go first).
pub const MAX_GRANTS: usize = 256;
/// The most requests waiting for the core at once; past this a sender waits.
pub const MAX_QUEUED: usize = 1024;

/// A command an agent was allowed, waiting for its run through the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What was judged: only this action runs.
    pub action_hash: ActionHash,
    /// The directory judged, as the kernel resolved it.
    pub cwd: PathBuf,
    /// Whether the command may reach the network.
    pub network: bool,
    /// When it lapses (set by [`HostCore::grant`]).
    pub expires_at_ms: u64,
}

/// What the driver must do, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write this audit record.
    Audit(Event),
    /// Show a new pending action to every device.
    Pending(Box<Pending>),
    /// Tell every device how a pending action was decided (`by` is `None` when it lapsed).
    Decided {
        /// The request.
        request: RequestId,
        /// Approved or denied.
        verdict: Verdict,
        /// Who decided.
        by: Option<Requester>,
        /// What they said with it.
        note: Option<String>,
    },
    /// Wake whoever waits for this pending action: it is settled.
    Settled(Box<Resolution>),
    /// Send `device` what waits (then the rest of the host's state), in order with every
    /// other effect: a decision taken before this reaches the device before the list, one
    /// taken after it comes after.
    Sync {
        /// To whom.
        device: DeviceId,
        /// The device's sync request, when it asked.
        request: Option<RequestId>,
        /// What waits now.
        pending: Vec<Pending>,
        /// The live sessions (started, then their scrollback).
        sessions: Vec<HostEvent>,
    },
    /// Refuse what `claimed` sent, and write why to the audit log.
    Refuse {
        /// Who sent it, as far as is known (a device id, or the key the relay named).
        claimed: String,
        /// Why it was refused.
        reason: String,
    },
    /// Make a device's replay window durable, then hand `message` back to
    /// [`HostCore::handle_message`]; if it cannot be written, refuse the message.
    Persist {
        /// The device.
        device: DeviceId,
        /// Its window after the message.
        rx: ReplayState,
        /// When the message came (Unix ms).
        at: u64,
        /// The verified message, to act on once the window is on disk.
        message: Box<Message>,
    },
    /// Record a newly paired device (the device list, the audit log), then call
    /// [`HostCore::paired`] or [`HostCore::pair_failed`].
    Pair {
        /// The offer it used.
        token: PairingToken,
        /// Its key, to answer it.
        key: PublicKey,
        /// The device, as it will be kept.
        device: Device,
    },
    /// Tell the client of an offer.
    OfferEvent {
        /// The offer.
        token: PairingToken,
        /// What happened.
        event: PairEvent,
    },
    /// Send a pairing answer to a key (paired or not yet).
    SendPairing {
        /// To whom.
        key: PublicKey,
        /// The answer.
        answer: Pairing,
    },
    /// Register these devices and offers at the relay (what it routes to this host).
    Register {
        /// The paired devices' keys.
        devices: Vec<protocol::RelayKey>,
        /// The open offers' tokens.
        offers: Vec<PairingToken>,
        /// The pre-shared keys of the pairing channels the open offers take (not those whose
        /// hello is under way: their channel is open already).
        psks: Vec<(PairingToken, zeroize::Zeroizing<[u8; 32]>)>,
    },
    /// Judge a device's request and carry it out (the one path of `crate::actions`); what it
    /// comes to returns through [`HostCore::handle_done`].
    Submit {
        /// The device that asked.
        device: DeviceId,
        /// Its request.
        id: RequestId,
        /// What it asks for.
        action: Box<Action>,
    },
    /// Send one device an event.
    Send {
        /// To whom.
        device: DeviceId,
        /// What.
        event: HostEvent,
    },
    /// Tell every device.
    Broadcast(HostEvent),
    /// Push a notification of what waits (`pending`, newest last) to `device`'s subscription;
    /// what becomes of it returns through [`HostCore::pushed`].
    Push {
        /// To whom.
        device: DeviceId,
        /// Which of its subscriptions (for [`HostCore::pushed`]).
        generation: u64,
        /// Everything that waits.
        pending: Vec<Pending>,
    },
    /// Forget `device`'s push subscription (the push service ended it).
    DropPush {
        /// The device.
        device: DeviceId,
    },
    /// Check and keep (or, with `None`, clear) a device's push subscription, then call
    /// [`HostCore::push_changed`].
    SetPush {
        /// The device.
        device: DeviceId,
        /// Its request, to answer.
        request: RequestId,
        /// The subscription.
        subscription: Option<protocol::PushSubscription>,
    },
    /// Tell the person at the host's terminal (its log).
    Report(String),
    /// Tell every device how far an action got on each device it reached.
    Progress {
        /// The request.
        request: RequestId,
        /// Each device, and how far.
        devices: Vec<(DeviceId, Stage)>,
    },
}

/// The host's decision state (see the module notes).
#[derive(Debug)]
pub struct HostCore {
    broker: Broker,
    approval_timeout_ms: u64,
    grants: HashMap<RequestId, Grant>,
    effects: VecDeque<Effect>,
    /// This host's key, to which every device's frame must be addressed.
    me: PublicKey,
    /// The paired devices.
    devices: HashMap<DeviceId, inbound::Peer>,
    recent: inbound::Recent,
    requested_before: HashSet<(DeviceId, RequestId)>,
    /// The host's name, told to a new device.
    host_name: String,
    /// The host's static channel key, told to devices at pairing.
    channel_key: Option<protocol::ChannelKey>,
    /// Open pairing offers.
    offers: HashMap<PairingToken, OfferTerms>,
    /// Hellos waiting for the person's yes, by device.
    confirming: HashMap<DeviceId, pairing::Confirming>,
    /// Hellos accepted, being recorded by the driver: their offers, by device.
    pairing: HashMap<DeviceId, PairingToken>,
    /// The devices online, as the relay says.
    online: HashSet<DeviceId>,
    /// Sessions shared by `agent-host run`.
    sessions: HashMap<protocol::SessionId, crate::session::Live>,
    /// Where each pending action got on each device; pushes.
    delivery: delivery::Deliveries,
}

impl HostCore {
    /// The core of the host whose key is `me`, whose pending actions lapse
    /// `approval_timeout_ms` after they are asked, under the two-person rule when `two_person`
    /// ([`Broker::two_person`]). No device is paired yet ([`HostCore::load_device`]).
    pub fn new(me: PublicKey, approval_timeout_ms: u64, two_person: bool) -> Self {
        Self {
            broker: Broker::new().two_person(two_person),
            approval_timeout_ms,
            grants: HashMap::new(),
            effects: VecDeque::new(),
            me,
            devices: HashMap::new(),
            recent: inbound::Recent::default(),
            requested_before: HashSet::new(),
            host_name: String::new(),
            channel_key: None,
            offers: HashMap::new(),
            confirming: HashMap::new(),
            pairing: HashMap::new(),
            online: HashSet::new(),
            sessions: HashMap::new(),
            delivery: delivery::Deliveries::default(),
        }
    }

    /// The host's name, as a newly paired device is told.
    pub fn named(mut self, host_name: impl Into<String>) -> Self {
        self.host_name = host_name.into();
        self
    }

    /// The host's channel key ([`protocol::channel`]), as a newly paired device is told.
    pub fn with_channel_key(mut self, key: protocol::ChannelKey) -> Self {
        self.channel_key = Some(key);
        self
    }

    /// Makes `pending` wait for a person from `now` (its `expires_at_ms` is set here) and shows
    /// it to the devices. Returns it as shown.
    pub fn ask(&mut self, now: u64, mut pending: Pending) -> Result<Pending, DecisionError> {
        pending.expires_at_ms = now.saturating_add(self.approval_timeout_ms);
        self.broker.add(pending.clone())?;
        self.effects.push_back(Effect::Pending(Box::new(pending.clone())));
        self.track(now, &pending);
        self.judged(now, pending.id, &pending.requested_by);
        Ok(pending)
    }

    /// A decision by `by` (a device id or `local:…`); the first valid one wins.
    pub fn decide(
        &mut self,
        now: u64,
        id: RequestId,
        action_hash: &ActionHash,
        verdict: Verdict,
        by: &Requester,
    ) -> Result<(), DecisionError> {
        self.decide_with(now, id, action_hash, verdict, by, None)
    }

    /// [`HostCore::decide`], with what the person said (a denial's reason, an approval's
    /// note): recorded with the decision, told to the devices and to whoever asked.
    pub fn decide_with(
        &mut self,
        now: u64,
        id: RequestId,
        action_hash: &ActionHash,
        verdict: Verdict,
        by: &Requester,
        note: Option<String>,
    ) -> Result<(), DecisionError> {
        match self.broker.decide(id, action_hash, verdict, by, now) {
            Ok(mut resolution) => {
                resolution.note = note;
                self.settle(resolution);
                Ok(())
            }
            Err(e) => {
                // A decision that came after the deadline, before the timer fired: the lapse
                // is settled now, recorded and told like any other.
                if matches!(e, DecisionError::Lapsed(_)) {
                    self.handle_timeout(now);
                }
                Err(e)
            }
        }
    }

    /// Denies `id` for `by` whatever action it names, if it is pending and (with `own_only`)
    /// was requested by `by`: a requester withdrawing its own request, or giving up on it.
    pub fn withdraw(
        &mut self,
        now: u64,
        id: RequestId,
        by: &Requester,
        own_only: bool,
    ) -> Result<(), DecisionError> {
        let hash = match self.broker.get(&id) {
            Some(p) if !own_only || p.requested_by == *by => p.action_hash,
            _ => return Err(DecisionError::NotPending(id)),
        };
        self.decide(now, id, &hash, Verdict::Deny, by)
    }

    /// What is waiting, oldest id first.
    pub fn pending(&self) -> Vec<Pending> {
        self.broker.list()
    }

    /// Brings `device` up to date ([`Effect::Sync`]).
    pub fn sync(&mut self, device: DeviceId, request: Option<RequestId>) {
        let pending = self.broker.list();
        let sessions = self.session_events();
        self.issued(device, &pending);
        self.effects.push_back(Effect::Sync { device, request, pending, sessions });
    }

    /// Lets the command judged under `id` run once through the sandbox, until [`GRANT_FOR_MS`]
    /// from `now`. The oldest grants go when there are [`MAX_GRANTS`].
    pub fn grant(&mut self, now: u64, id: RequestId, grant: Grant) {
        self.grants.retain(|_, g| g.expires_at_ms > now);
        while self.grants.len() >= MAX_GRANTS {
            let oldest = self.grants.iter().min_by_key(|(_, g)| g.expires_at_ms).map(|(id, _)| *id);
            let Some(oldest) = oldest else { break };
            self.grants.remove(&oldest);
        }
        let expires_at_ms = now.saturating_add(GRANT_FOR_MS);
        self.grants.insert(id, Grant { expires_at_ms, ..grant });
    }

    /// Takes the grant made under `id`, unless it lapsed: it is used up either way.
    pub fn take_grant(&mut self, now: u64, id: RequestId) -> Option<Grant> {
        self.grants.remove(&id).filter(|g| g.expires_at_ms > now)
    }

    /// Settles what lapsed by `now`: each pending action is a denial by nobody; pairing offers
    /// and questions about new devices go.
    pub fn handle_timeout(&mut self, now: u64) {
        for resolution in self.broker.expire(now) {
            self.settle(resolution);
        }
        self.expire_pairing(now);
        self.delivery_timeout(now);
    }

    /// When [`HostCore::handle_timeout`] has something to do next (Unix ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        let next = self.broker.next_expiry().into_iter().chain(self.next_pairing_timeout());
        next.chain(self.next_delivery_timeout()).min()
    }

    /// The next thing the driver must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn settle(&mut self, resolution: Resolution) {
        let id = resolution.pending.id;
        let (verdict, by) = (resolution.verdict, resolution.by.clone());
        self.effects.push_back(Effect::Audit(Event::Approval {
            request: id.to_string(),
            verdict: if resolution.verdict == Verdict::Approve { "approve" } else { "deny" }.into(),
            by: resolution.by.as_ref().map_or_else(|| "nobody (lapsed)".into(), Requester::label),
            action_hash: resolution.pending.action_hash.to_string(),
            note: resolution.note.clone(),
        }));
        self.effects.push_back(Effect::Decided {
            request: id,
            verdict: resolution.verdict,
            by: resolution.by.clone(),
            note: resolution.note.clone(),
        });
        self.effects.push_back(Effect::Settled(Box::new(resolution)));
        // Where it got: told after it was settled.
        self.track_settled(id, verdict, by.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A requester by label; `dev1x` and `dev1y` stand for two devices.
    fn who(label: &str) -> Requester {
        let device = |n| {
            Requester::Device(DeviceId::new(protocol::SecretKey::from_seed(&[n; 32]).public_key()))
        };
        match label {
            "dev1x" => device(1),
            "dev1y" => device(2),
            other => Requester::from_label(other).unwrap(),
        }
    }

    fn pending(n: u8, by: &str) -> Pending {
        let action = Action::Run {
            argv: vec!["rm".into(), n.to_string()],
            cwd: ".".into(),
            env: Default::default(),
        };
        Pending {
            id: RequestId([n; 16]),
            action_hash: protocol::action_hash(&action),
            action,
            summary: format!("rm {n}"),
            reason: "asked".into(),
            preview: None,
            requested_by: who(by),
            expires_at_ms: 0,
        }
    }

    fn core(timeout_ms: u64) -> HostCore {
        HostCore::new(protocol::SecretKey::from_seed(&[7; 32]).public_key(), timeout_ms, false)
    }

    fn effects(core: &mut HostCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    /// "The audit record is on disk before the action runs": the record of a decision comes
    /// before the devices hear of it, and both before the requester is woken to act.
    #[test]
    fn a_decision_is_recorded_then_told_then_acted_on() {
        let mut core = core(1000);
        let p = core.ask(10, pending(1, "dev1x")).unwrap();
        assert_eq!(p.expires_at_ms, 1010);
        assert_eq!(effects(&mut core), [Effect::Pending(Box::new(p.clone()))]);
        core.decide(20, p.id, &p.action_hash, Verdict::Approve, &who("local:terminal")).unwrap();
        let got = effects(&mut core);
        assert!(matches!(&got[0], Effect::Audit(Event::Approval { verdict, by, .. })
            if verdict == "approve" && by == "local:terminal"));
        assert_eq!(
            got[1],
            Effect::Decided {
                request: p.id,
                verdict: Verdict::Approve,
                by: Some(who("local:terminal")),
                note: None,
            }
        );
        assert!(matches!(&got[2], Effect::Settled(r) if r.verdict == Verdict::Approve));
        assert_eq!(got.len(), 3);
        // Once: a second decision finds nothing, and says nothing.
        let again = core.decide(21, p.id, &p.action_hash, Verdict::Deny, &who("dev1y"));
        assert_eq!(again, Err(DecisionError::NotPending(p.id)));
        assert!(effects(&mut core).is_empty());
    }

    #[test]
    fn the_timer_points_at_the_next_lapse_and_a_lapse_is_a_denial_by_nobody() {
        let mut core = core(1000);
        assert_eq!(core.poll_timeout(), None);
        core.ask(0, pending(1, "local:agent")).unwrap();
        core.ask(500, pending(2, "local:agent")).unwrap();
        assert_eq!(core.poll_timeout(), Some(1000));
        effects(&mut core);
        core.handle_timeout(999);
        assert!(effects(&mut core).is_empty(), "nothing lapsed yet");
        core.handle_timeout(1000);
        let got = effects(&mut core);
        assert!(matches!(&got[0], Effect::Audit(Event::Approval { by, verdict, .. })
            if by == "nobody (lapsed)" && verdict == "deny"));
        assert!(matches!(got[1], Effect::Decided { by: None, verdict: Verdict::Deny, .. }));
        assert!(matches!(&got[2], Effect::Settled(r) if r.by.is_none()));
        assert_eq!(core.poll_timeout(), Some(1500));
    }

    /// Found by the simulation: a decision arriving at or after the deadline, before the timer
    /// fired, dropped the pending action with no record, no word to the devices, and its
    /// requester never answered.
    #[test]
    fn a_late_decision_settles_the_lapse_instead_of_dropping_it() {
        let mut core = core(1000);
        let p = core.ask(0, pending(1, "local:agent")).unwrap();
        effects(&mut core);
        let late = core.decide(1000, p.id, &p.action_hash, Verdict::Approve, &who("dev1x"));
        assert_eq!(late, Err(DecisionError::Lapsed(p.id)));
        let got = effects(&mut core);
        assert!(
            matches!(&got[0], Effect::Audit(Event::Approval { by, .. }) if by == "nobody (lapsed)")
        );
        assert!(
            matches!(&got[2], Effect::Settled(r) if r.by.is_none() && r.verdict == Verdict::Deny)
        );
        assert!(core.pending().is_empty());
    }

    #[test]
    fn only_the_requester_withdraws_its_own_request() {
        let mut core = core(1000);
        let p = core.ask(0, pending(1, "dev1x")).unwrap();
        assert_eq!(
            core.withdraw(1, p.id, &who("dev1y"), true),
            Err(DecisionError::NotPending(p.id))
        );
        assert_eq!(core.pending().len(), 1);
        core.withdraw(1, p.id, &who("dev1x"), true).unwrap();
        assert!(core.pending().is_empty());
        // Giving up on a question (the asker hung up) withdraws it whoever asked.
        let q = core.ask(2, pending(2, "local:hook")).unwrap();
        core.withdraw(3, q.id, &who("local:hook (stopped waiting)"), false).unwrap();
        assert!(core.pending().is_empty());
    }

    #[test]
    fn a_grant_runs_once_and_lapses() {
        let mut core = core(1000);
        let grant = Grant {
            action_hash: ActionHash([1; 32]),
            cwd: "/w".into(),
            network: false,
            expires_at_ms: 0,
        };
        let id = RequestId([1; 16]);
        core.grant(0, id, grant.clone());
        assert_eq!(core.take_grant(1, id).map(|g| g.expires_at_ms), Some(GRANT_FOR_MS));
        assert_eq!(core.take_grant(2, id), None, "used up");
        core.grant(0, id, grant.clone());
        assert_eq!(core.take_grant(GRANT_FOR_MS, id), None, "lapsed");
        for n in 0..=MAX_GRANTS as u64 {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            core.grant(n, RequestId(bytes), grant.clone());
        }
        assert_eq!(core.grants.len(), MAX_GRANTS);
        assert_eq!(core.take_grant(10, RequestId([0; 16])), None, "the oldest went first");
    }
}
