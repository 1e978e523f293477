//! What paired devices send, from the bytes the relay delivered to what the host does about it:
//! [`HostCore::handle_frame`] and [`HostCore::handle_message`].
//!
//! Everything that arrives is checked before anything acts on it, in this order: the frame's
//! shape; that it was signed by the key the relay says sent it; that the key is a paired device
//! (or, for a pairing hello only, a new key); `verify_strict` over the exact bytes; recipient
//! (this host), issue and expiry times, and the device's counter against its replay window,
//! which the core holds. The window goes to disk ([`Effect::Persist`]) before the message is
//! acted on: the driver hands the message back once it is written. Then the device's role: a
//! viewer only syncs, an approver also decides, an operator also requests and withdraws its own
//! requests. Every refusal is an [`Effect::Refuse`] (written to the audit log); a refusal of a
//! request is also told to its device.
//!
//! A request a device sends again (its frame retransmitted under a new counter, or replayed
//! across a restart of the device) is never run twice: the core remembers the last
//! [`REMEMBERED`] requests and their answers ([`HostCore::handle_done`]) and sends the answer
//! again, and refuses a request of the last host's run that the audit log names
//! ([`HostCore::requested_before`]).
//!
//! A hello from a new key goes to pairing ([`super::pairing`]).

use std::collections::{HashMap, VecDeque};

use protocol::{
    DeviceId, ErrorCode, HostEvent, Message, Pairing, PublicKey, ReplayState, ReplayWindow,
    Request, RequestId, Role, Sealed, VerifyContext,
};

use super::{Effect, HostCore};
use crate::approvals::Requester;
use crate::devices::role_name;

/// How many (device, request) ids the core remembers, to answer a retransmitted request with
/// its result instead of running it again.
pub const REMEMBERED: usize = 1024;

/// A paired device, as the core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) role: Role,
    /// What it sent: the window its next frame is checked against.
    pub(super) rx: ReplayState,
}

/// Where a recent request of a device stands.
#[derive(Debug, Clone)]
enum Stage {
    /// Being judged (policy, the audit record); `withdrawn` once its device withdrew it, which
    /// takes effect if it comes to wait for a person.
    Judging { withdrawn: bool },
    /// Asked of a person, or allowed: the broker (or the run) has it.
    Asked,
    /// What it came to, to send again.
    Answered(Box<HostEvent>),
}

/// Recent requests of devices and where each stands, to send the answer again when a device
/// repeats a request instead of running it twice.
#[derive(Debug, Default)]
pub(super) struct Recent {
    order: VecDeque<(DeviceId, RequestId)>,
    stages: HashMap<(DeviceId, RequestId), Stage>,
}

impl Recent {
    /// Remembers a new request; false if it is already known.
    fn start(&mut self, key: (DeviceId, RequestId)) -> bool {
        if self.stages.contains_key(&key) {
            return false;
        }
        if self.order.len() >= REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.stages.remove(&old);
        }
        self.order.push_back(key);
        self.stages.insert(key, Stage::Judging { withdrawn: false });
        true
    }

    /// Marks a request being judged as withdrawn; false if it is not being judged.
    fn withdraw_early(&mut self, key: &(DeviceId, RequestId)) -> bool {
        match self.stages.get_mut(key) {
            Some(Stage::Judging { withdrawn }) => {
                *withdrawn = true;
                true
            }
            _ => false,
        }
    }

    /// A request judged: it now waits for a person. Returns whether its device had withdrawn it.
    fn asked(&mut self, key: &(DeviceId, RequestId)) -> bool {
        match self.stages.get_mut(key) {
            Some(stage @ Stage::Judging { .. }) => {
                let withdrawn = matches!(stage, Stage::Judging { withdrawn: true });
                *stage = Stage::Asked;
                withdrawn
            }
            _ => false,
        }
    }

    /// Keeps `event` as the answer to its request, for `device` (or every device that made it).
    fn record(&mut self, device: Option<DeviceId>, event: &HostEvent) {
        let Some(request) = answered_request(event) else { return };
        for ((d, r), stage) in &mut self.stages {
            if *r == request && device.is_none_or(|device| device == *d) {
                *stage = Stage::Answered(Box::new(event.clone()));
            }
        }
    }
}

/// The request an event answers (its result, or a refusal of it).
fn answered_request(event: &HostEvent) -> Option<RequestId> {
    match event {
        HostEvent::ActionResult { request, .. } => Some(*request),
        HostEvent::Error { request: Some(request), .. } => Some(*request),
        _ => None,
    }
}

impl HostCore {
    /// Makes `id` a paired device with `role` whose next frame is checked against `rx` (from
    /// the state directory, when the host starts).
    pub fn load_device(&mut self, id: DeviceId, role: Role, rx: ReplayState) {
        self.devices.insert(id, Peer { role, rx });
    }

    /// A change of the paired devices made at this machine: `id` now has `role` (a device the
    /// core did not know, newly paired, is checked against `rx`, its window on disk), or with
    /// `None` it is no longer paired and every frame it sends from now on is refused.
    pub fn set_device(&mut self, id: DeviceId, role: Option<Role>, rx: ReplayState) {
        match role {
            Some(role) => {
                if let Some(peer) = self.devices.get_mut(&id) {
                    peer.role = role;
                } else {
                    self.devices.insert(id, Peer { role, rx });
                    self.register();
                }
            }
            None => {
                if self.devices.remove(&id).is_some() {
                    self.revoked(id);
                    self.register();
                }
            }
        }
    }

    /// The requests paired devices made shortly before this host started, which a relay could
    /// still deliver again (`crate::host::recent_request`): refused if they come.
    pub fn requested_before(
        mut self,
        requests: impl IntoIterator<Item = (DeviceId, RequestId)>,
    ) -> Self {
        self.requested_before.extend(requests);
        self
    }

    /// A frame the relay delivered from the key `from` (see the module notes).
    pub fn handle_frame(&mut self, now: u64, from: protocol::RelayKey, bytes: &[u8]) {
        let claimed = from.to_string();
        let sealed = match Sealed::decode(bytes) {
            Ok(s) => s,
            Err(e) => return self.refuse(claimed, e),
        };
        if *sealed.sender() != from.0 {
            return self.refuse(claimed, "signed by another key than the connection that sent it");
        }
        let key = match PublicKey::from_bytes(sealed.sender()) {
            Ok(k) => k,
            Err(e) => return self.refuse(claimed, e),
        };
        let id = DeviceId::new(key);
        let ctx = VerifyContext::new(&self.me, now);
        let Some(peer) = self.devices.get_mut(&id) else {
            // Only a pairing hello may come from a key this host does not know.
            if sealed.unverified_header().kind != protocol::MessageKind::Pairing {
                return self.refuse(id.to_string(), "not a paired device");
            }
            let verified = match sealed.verify(&key, &ctx, &mut ReplayWindow::new()) {
                Ok(v) => v,
                Err(e) => return self.refuse(id.to_string(), e),
            };
            let (_, message) = verified.into_parts();
            let Message::Pairing(Pairing::Hello { token, name, proof, channel_key }) = message
            else {
                return self.refuse(id.to_string(), "a pairing message other than a hello");
            };
            return self.hello(now, key, token, name, proof, channel_key);
        };
        let mut window = ReplayWindow::restore(peer.rx);
        match sealed.verify(&key, &ctx, &mut window) {
            Ok(verified) => {
                // Taken in memory at once: a frame that comes again while this one is being
                // written is a replay.
                peer.rx = window.export();
                let (_, message) = verified.into_parts();
                self.effects.push_back(Effect::Persist {
                    device: id,
                    rx: peer.rx,
                    at: now,
                    message: Box::new(message),
                });
            }
            Err(e) => self.refuse(id.to_string(), e),
        }
    }

    /// A verified message from `device` whose counter is on disk ([`Effect::Persist`]).
    pub fn handle_message(&mut self, now: u64, device: DeviceId, message: Message) {
        let label = device.to_string();
        let who = Requester::Device(device);
        // Revoked (or its role changed) while its counter was being written: as it is now.
        let Some(role) = self.devices.get(&device).map(|p| p.role) else {
            return self.refuse(label, "not a paired device");
        };
        let needs = |needs: Role| (role < needs).then_some(needs);
        match message {
            Message::Request(Request::Sync { id }) => self.sync(device, Some(id)),
            // Any role: a viewer is told what waits too (its notifications have no buttons).
            Message::Request(Request::Push { id, subscription }) => {
                self.effects.push_back(Effect::SetPush { device, request: id, subscription });
            }
            Message::Request(Request::Receipt { id: _, requests, stage }) => {
                self.receipt(device, &requests, stage);
            }
            Message::Request(Request::Action { id, action }) => {
                if let Some(needs) = needs(Role::Operator) {
                    return self.forbidden(device, role, needs, Some(id));
                }
                if self.requested_before.contains(&(device, id)) {
                    let what = "a request made before the host restarted, sent again";
                    return self.refuse_request(device, id, ErrorCode::Conflict, what);
                }
                if !self.recent.start((device, id)) {
                    // Asked before: send the answer again, never run it twice.
                    if let Some(Stage::Answered(answer)) = self.recent.stages.get(&(device, id)) {
                        let event = (**answer).clone();
                        self.effects.push_back(Effect::Send { device, event });
                    }
                    return;
                }
                self.effects.push_back(Effect::Submit { device, id, action: Box::new(action) });
            }
            Message::Request(Request::Cancel { id: _, target }) => {
                if let Some(needs) = needs(Role::Operator) {
                    return self.forbidden(device, role, needs, Some(target));
                }
                // Only a request of this device's own.
                if self.withdraw(now, target, &who, true).is_ok() {
                    return;
                }
                if self.recent.withdraw_early(&(device, target)) {
                    // Still being judged (the cancel overtook it): withdrawn as soon as it
                    // waits for a person ([`HostCore::ask`]). A request that policy allows or
                    // denies without a person ends as policy says.
                    return;
                }
                self.not_found(device, target);
            }
            Message::Decision(d) => {
                if let Some(needs) = needs(Role::Approver) {
                    return self.forbidden(device, role, needs, Some(d.request));
                }
                let note = d.note;
                if let Err(e) =
                    self.decide_with(now, d.request, &d.action_hash, d.verdict, &who, note)
                {
                    self.refuse_request(device, d.request, (&e).into(), &e.to_string());
                }
            }
            Message::Event(_) | Message::Pairing(_) => self
                .refuse(label, "devices do not send host events or pairing messages once paired"),
        }
    }

    /// A device's push subscription was kept, cleared or found unchanged, as it asked with
    /// `request`; or it was refused (the error says why) and nothing changed.
    pub fn push_changed(
        &mut self,
        now: u64,
        device: DeviceId,
        request: RequestId,
        outcome: Result<super::PushChange, String>,
    ) {
        match outcome {
            Ok(change) => {
                match change {
                    super::PushChange::Unchanged => {}
                    super::PushChange::Set { hide_detail } => {
                        self.set_push(now, device, Some(hide_detail));
                    }
                    super::PushChange::Cleared => self.set_push(now, device, None),
                }
                self.sync(device, Some(request));
            }
            Err(why) => self.refuse_request(device, request, ErrorCode::BadRequest, &why),
        }
    }

    /// What a request came to: its result, for every device (`to` is `None`), or a refusal of
    /// it for the device that made it. Kept as the answer to send again if the request comes
    /// again, and sent.
    pub fn handle_done(&mut self, to: Option<DeviceId>, event: HostEvent) {
        self.recent.record(to, &event);
        if let HostEvent::ActionResult { request, .. } = &event {
            self.applied(*request);
        }
        self.effects.push_back(match to {
            Some(device) => Effect::Send { device, event },
            None => Effect::Broadcast(event),
        });
    }

    /// A device's request that policy allowed: it runs, with nothing to withdraw. A withdrawal
    /// that came while it was being judged is told so.
    pub fn allowed(&mut self, device: DeviceId, id: RequestId) {
        if self.recent.asked(&(device, id)) {
            self.not_found(device, id);
        }
    }

    fn not_found(&mut self, device: DeviceId, target: RequestId) {
        let what = "no pending request of this device has that id";
        let event = HostEvent::Error {
            request: Some(target),
            code: ErrorCode::NotFound,
            message: what.into(),
        };
        self.effects.push_back(Effect::Send { device, event });
    }

    /// A request `ask`ed of a person: if a device asked it and withdrew it meanwhile, it is
    /// withdrawn now.
    pub(super) fn judged(&mut self, now: u64, id: RequestId, requested_by: &Requester) {
        let Some(device) = requested_by.device() else { return };
        if self.recent.asked(&(device, id)) {
            let _ = self.withdraw(now, id, requested_by, true);
        }
    }

    fn refuse(&mut self, claimed: String, reason: impl std::fmt::Display) {
        self.effects.push_back(Effect::Refuse { claimed, reason: reason.to_string() });
    }

    /// Refuses a device's request (or decision) and tells it why.
    fn refuse_request(&mut self, device: DeviceId, id: RequestId, code: ErrorCode, what: &str) {
        self.refuse(device.to_string(), what);
        let event = HostEvent::Error { request: Some(id), code, message: what.into() };
        self.effects.push_back(Effect::Send { device, event });
    }

    fn forbidden(&mut self, device: DeviceId, role: Role, needs: Role, request: Option<RequestId>) {
        let what = format!("a {} may not do this (needs {})", role_name(role), role_name(needs));
        self.refuse(device.to_string(), &what);
        let event = HostEvent::Error { request, code: ErrorCode::Forbidden, message: what };
        self.effects.push_back(Effect::Send { device, event });
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Action, Decision, SealContext, SecretKey, Verdict};

    use super::*;
    use crate::approvals::Pending;
    use crate::audit::Event;

    const NOW: u64 = 1_000_000;

    struct Peer {
        key: SecretKey,
        counter: u64,
    }

    impl Peer {
        fn new(seed: u8) -> Self {
            Self { key: SecretKey::from_seed(&[seed; 32]), counter: 0 }
        }

        fn id(&self) -> DeviceId {
            DeviceId::new(self.key.public_key())
        }

        fn from(&self) -> protocol::RelayKey {
            protocol::RelayKey::of(&self.key.public_key())
        }

        fn seal_to(&mut self, to: &PublicKey, message: &Message) -> Vec<u8> {
            self.counter += 1;
            let ctx = SealContext {
                recipient: to,
                counter: self.counter,
                issued_at_ms: NOW,
                expires_at_ms: NOW + 60_000,
            };
            protocol::seal(&self.key, &ctx, message).unwrap()
        }
    }

    fn host() -> (HostCore, PublicKey) {
        let me = SecretKey::from_seed(&[1; 32]).public_key();
        (HostCore::new(me, 10_000, false), me)
    }

    fn effects(core: &mut HostCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    /// Carries out the core's effects as the driver does: a persisted window hands its message
    /// back. Returns every other effect.
    fn drive(core: &mut HostCore) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(effect) = core.poll_effect() {
            match effect {
                Effect::Persist { device, message, .. } => {
                    core.handle_message(NOW, device, *message)
                }
                other => out.push(other),
            }
        }
        out
    }

    fn refusals(effects: &[Effect]) -> Vec<&str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Refuse { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    fn ask(core: &mut HostCore, n: u8, by: &str) -> Pending {
        let action = Action::Run {
            argv: vec!["rm".into(), n.to_string()],
            cwd: ".".into(),
            env: Default::default(),
        };
        let pending = Pending {
            id: RequestId([n; 16]),
            action_hash: protocol::action_hash(&action),
            action,
            summary: "rm".into(),
            reason: "asked".into(),
            preview: None,
            requested_by: Requester::from_label(by).unwrap(),
            expires_at_ms: 0,
        };
        let p = core.ask(NOW, pending).unwrap();
        effects(core);
        p
    }

    fn decision(p: &Pending, verdict: Verdict) -> Message {
        Message::Decision(Decision::new(p.id, p.action_hash, verdict))
    }

    /// The replay window is on disk before anything acts: a verified frame leaves as a
    /// `Persist` alone, and only the message handed back decides.
    #[test]
    fn a_decision_is_persisted_before_it_decides_and_counts_once() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        core.load_device(phone.id(), Role::Approver, ReplayState::default());
        let p = ask(&mut core, 1, "local:agent");
        let frame = phone.seal_to(&me, &decision(&p, Verdict::Approve));
        core.handle_frame(NOW, phone.from(), &frame);
        let got = effects(&mut core);
        assert_eq!(got.len(), 1);
        let Effect::Persist { device, rx, message, .. } = &got[0] else { panic!("{got:?}") };
        assert_eq!((*device, rx.highest), (phone.id(), 1));
        assert_eq!(core.pending().len(), 1, "nothing decided before the window is on disk");
        core.handle_message(NOW, *device, (**message).clone());
        let got = effects(&mut core);
        assert!(
            matches!(&got[0], Effect::Audit(Event::Approval { by, .. }) if *by == phone.id().to_string())
        );
        assert!(core.pending().is_empty());
        // The same frame again is a replay, refused before it is persisted or acted on.
        core.handle_frame(NOW, phone.from(), &frame);
        let got = effects(&mut core);
        assert_eq!(refusals(&got).len(), 1, "{got:?}");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn frames_not_from_a_paired_device_or_not_for_this_host_are_refused() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        let mut stranger = Peer::new(3);
        core.load_device(phone.id(), Role::Operator, ReplayState::default());
        let sync = Message::Request(Request::Sync { id: RequestId([5; 16]) });
        // Not paired.
        let frame = stranger.seal_to(&me, &sync);
        core.handle_frame(NOW, stranger.from(), &frame);
        assert_eq!(refusals(&drive(&mut core)), ["not a paired device"]);
        // Signed by a paired device, sent by another connection.
        let frame = phone.seal_to(&me, &sync);
        core.handle_frame(NOW, stranger.from(), &frame);
        assert_eq!(
            refusals(&drive(&mut core)),
            ["signed by another key than the connection that sent it"]
        );
        // For another host.
        let other = SecretKey::from_seed(&[4; 32]).public_key();
        let frame = phone.seal_to(&other, &sync);
        core.handle_frame(NOW, phone.from(), &frame);
        assert_eq!(refusals(&drive(&mut core)).len(), 1);
        // Garbage.
        core.handle_frame(NOW, phone.from(), b"not a frame");
        assert_eq!(refusals(&drive(&mut core)).len(), 1);
        // A pairing hello from a new key goes to pairing, and nothing else does.
        let hello = Message::Pairing(Pairing::Hello {
            token: protocol::PairingToken([6; 32]),
            name: "tablet".into(),
            proof: protocol::PairingProof([7; 32]),
            channel_key: None,
        });
        let frame = stranger.seal_to(&me, &hello);
        core.handle_frame(NOW, stranger.from(), &frame);
        // (with no offer open, it is refused, and told why)
        let got = drive(&mut core);
        assert!(
            matches!(
                &got[..],
                [
                    Effect::Refuse { .. },
                    Effect::SendPairing { answer: Pairing::Rejected { .. }, .. }
                ]
            ),
            "{got:?}"
        );
        // The paired device is still served.
        let frame = phone.seal_to(&me, &sync);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(matches!(&drive(&mut core)[..], [Effect::Sync { .. }]));
    }

    #[test]
    fn each_role_does_only_what_it_may() {
        let (mut core, me) = host();
        let mut viewer = Peer::new(2);
        let mut approver = Peer::new(3);
        core.load_device(viewer.id(), Role::Viewer, ReplayState::default());
        core.load_device(approver.id(), Role::Approver, ReplayState::default());
        let p = ask(&mut core, 1, "local:agent");
        let action = Message::Request(Request::Action {
            id: RequestId([9; 16]),
            action: Action::ReadFile { path: "x".into() },
        });
        let cancel = Message::Request(Request::Cancel { id: RequestId([8; 16]), target: p.id });
        for (is_viewer, message) in [
            (true, decision(&p, Verdict::Approve)),
            (true, action.clone()),
            (false, action),
            (false, cancel),
        ] {
            let device = if is_viewer { &mut viewer } else { &mut approver };
            let frame = device.seal_to(&me, &message);
            core.handle_frame(NOW, device.from(), &frame);
            let got = drive(&mut core);
            assert_eq!(refusals(&got).len(), 1, "{got:?}");
            let forbidden = |e: &Effect| {
                matches!(
                    e,
                    Effect::Send { event: HostEvent::Error { code: ErrorCode::Forbidden, .. }, .. }
                )
            };
            assert!(got.iter().any(forbidden), "{got:?}");
        }
        assert_eq!(core.pending().len(), 1, "nothing was decided");
        // A role changed at the machine applies to the next frame.
        core.set_device(viewer.id(), Some(Role::Approver), ReplayState::default());
        let frame = viewer.seal_to(&me, &decision(&p, Verdict::Deny));
        core.handle_frame(NOW, viewer.from(), &frame);
        drive(&mut core);
        assert!(core.pending().is_empty());
        // Revoked while its frame was being written: not acted on.
        let q = ask(&mut core, 2, "local:agent");
        let frame = approver.seal_to(&me, &decision(&q, Verdict::Approve));
        core.handle_frame(NOW, approver.from(), &frame);
        let persisted = effects(&mut core);
        core.set_device(approver.id(), None, ReplayState::default());
        let Effect::Persist { device, message, .. } = &persisted[0] else { panic!() };
        core.handle_message(NOW, *device, (**message).clone());
        assert_eq!(refusals(&effects(&mut core)), ["not a paired device"]);
        assert_eq!(core.pending().len(), 1);
        // And its next frames are refused outright.
        let frame = approver.seal_to(&me, &decision(&q, Verdict::Approve));
        core.handle_frame(NOW, approver.from(), &frame);
        assert_eq!(refusals(&drive(&mut core)), ["not a paired device"]);
    }

    #[test]
    fn a_request_sent_again_runs_once_and_gets_its_answer_again() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        core.load_device(phone.id(), Role::Operator, ReplayState::default());
        let id = RequestId([3; 16]);
        let request =
            Message::Request(Request::Action { id, action: Action::ReadFile { path: "a".into() } });
        let frame = phone.seal_to(&me, &request);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(matches!(&drive(&mut core)[..], [Effect::Submit { id: i, .. }] if *i == id));
        // Sent again under a new counter while it runs: nothing, neither run nor answer yet.
        let frame = phone.seal_to(&me, &request);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(drive(&mut core).is_empty());
        let result = HostEvent::ActionResult {
            request: id,
            exit_code: None,
            output: protocol::Blob(b"a".to_vec()),
            truncated: false,
        };
        core.handle_done(None, result.clone());
        assert_eq!(drive(&mut core), [Effect::Broadcast(result.clone())]);
        let frame = phone.seal_to(&me, &request);
        core.handle_frame(NOW, phone.from(), &frame);
        assert_eq!(drive(&mut core), [Effect::Send { device: phone.id(), event: result }]);
        // A request the last run of the host took is refused, not run.
        let (core2, _) = host();
        let mut core2 = core2.requested_before([(phone.id(), id)]);
        core2.load_device(phone.id(), Role::Operator, ReplayState::default());
        let frame = phone.seal_to(&me, &request);
        core2.handle_frame(NOW, phone.from(), &frame);
        let got = drive(&mut core2);
        assert!(
            got.iter().any(|e| matches!(
                e,
                Effect::Send { event: HostEvent::Error { code: ErrorCode::Conflict, .. }, .. }
            )),
            "{got:?}"
        );
        assert!(!got.iter().any(|e| matches!(e, Effect::Submit { .. })));
    }

    /// A cancel that overtakes its request (the request is still being judged when it comes)
    /// withdraws it as soon as it waits for a person; before, it found nothing.
    #[test]
    fn a_cancel_right_behind_its_request_withdraws_it() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        let mut other = Peer::new(3);
        core.load_device(phone.id(), Role::Operator, ReplayState::default());
        core.load_device(other.id(), Role::Operator, ReplayState::default());
        let id = RequestId([3; 16]);
        let request =
            Message::Request(Request::Action { id, action: Action::ReadFile { path: "a".into() } });
        let cancel = Message::Request(Request::Cancel { id: RequestId([4; 16]), target: id });
        let frame = phone.seal_to(&me, &request);
        core.handle_frame(NOW, phone.from(), &frame);
        drive(&mut core);
        // Another device cannot withdraw it.
        let frame = other.seal_to(&me, &cancel);
        core.handle_frame(NOW, other.from(), &frame);
        assert!(matches!(
            &drive(&mut core)[..],
            [Effect::Send { event: HostEvent::Error { code: ErrorCode::NotFound, .. }, .. }]
        ));
        let frame = phone.seal_to(&me, &cancel);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(drive(&mut core).is_empty());
        // Policy asks: it waits, and is withdrawn at once, by the device.
        let action = Action::Run {
            argv: vec!["rm".into(), "3".into()],
            cwd: ".".into(),
            env: Default::default(),
        };
        let pending = Pending {
            id,
            action_hash: protocol::action_hash(&action),
            action,
            summary: "rm".into(),
            reason: "asked".into(),
            preview: None,
            requested_by: Requester::Device(phone.id()),
            expires_at_ms: 0,
        };
        core.ask(NOW, pending).unwrap();
        let got = effects(&mut core);
        assert!(
            got.iter().any(|e| matches!(e, Effect::Audit(Event::Approval { by, verdict, .. })
                if *by == phone.id().to_string() && verdict == "deny")),
            "{got:?}"
        );
        assert!(core.pending().is_empty());
        // Its requester is told, through the core; then a cancel finds nothing.
        let denied = HostEvent::Error {
            request: Some(id),
            code: ErrorCode::DeniedByApprover,
            message: "denied".into(),
        };
        core.handle_done(Some(phone.id()), denied);
        drive(&mut core);
        let frame = phone.seal_to(&me, &cancel);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(matches!(
            &drive(&mut core)[..],
            [Effect::Send { event: HostEvent::Error { code: ErrorCode::NotFound, .. }, .. }]
        ));
    }

    /// Only its own: another operator's withdrawal of a request that waits finds nothing.
    #[test]
    fn an_operator_withdraws_only_its_own_requests() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        let mut other = Peer::new(3);
        core.load_device(phone.id(), Role::Operator, ReplayState::default());
        core.load_device(other.id(), Role::Operator, ReplayState::default());
        let p = ask(&mut core, 1, &phone.id().to_string());
        let cancel = Message::Request(Request::Cancel { id: RequestId([4; 16]), target: p.id });
        let frame = other.seal_to(&me, &cancel);
        core.handle_frame(NOW, other.from(), &frame);
        assert!(matches!(
            &drive(&mut core)[..],
            [Effect::Send { event: HostEvent::Error { code: ErrorCode::NotFound, .. }, .. }]
        ));
        assert_eq!(core.pending().len(), 1);
        let frame = phone.seal_to(&me, &cancel);
        core.handle_frame(NOW, phone.from(), &frame);
        drive(&mut core);
        assert!(core.pending().is_empty());
    }

    /// A withdrawal that overtook a request policy then allows finds nothing, and says so
    /// once it is known.
    #[test]
    fn a_cancel_of_a_request_that_policy_allows_says_it_found_nothing() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        core.load_device(phone.id(), Role::Operator, ReplayState::default());
        let id = RequestId([3; 16]);
        let request =
            Message::Request(Request::Action { id, action: Action::ReadFile { path: "a".into() } });
        let frame = phone.seal_to(&me, &request);
        core.handle_frame(NOW, phone.from(), &frame);
        drive(&mut core);
        let cancel = Message::Request(Request::Cancel { id: RequestId([4; 16]), target: id });
        let frame = phone.seal_to(&me, &cancel);
        core.handle_frame(NOW, phone.from(), &frame);
        assert!(drive(&mut core).is_empty());
        core.allowed(phone.id(), id);
        assert!(matches!(
            &drive(&mut core)[..],
            [Effect::Send { event: HostEvent::Error { code: ErrorCode::NotFound, .. }, .. }]
        ));
        // While it runs, a withdrawal says so at once.
        let frame = phone.seal_to(&me, &cancel);
        core.handle_frame(NOW, phone.from(), &frame);
        assert_eq!(drive(&mut core).len(), 1);
    }

    /// The window a device had when the host stopped holds across the restart, and a frame
    /// that fails its checks moves it not at all.
    #[test]
    fn the_window_loaded_at_start_holds_and_refusals_leave_it_as_it_was() {
        let (mut core, me) = host();
        let mut phone = Peer::new(2);
        let mut window = ReplayWindow::new();
        for counter in 1..=5 {
            window.commit(counter).unwrap();
        }
        core.load_device(phone.id(), Role::Viewer, window.export());
        let sync = Message::Request(Request::Sync { id: RequestId([5; 16]) });
        phone.counter = 4;
        let old = phone.seal_to(&me, &sync);
        core.handle_frame(NOW, phone.from(), &old);
        assert_eq!(refusals(&drive(&mut core)).len(), 1, "counter 5 came before the restart");
        let next = phone.seal_to(&me, &sync);
        let mut tampered = next.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        core.handle_frame(NOW, phone.from(), &tampered);
        assert_eq!(refusals(&drive(&mut core)).len(), 1);
        core.handle_frame(NOW, phone.from(), &next);
        assert!(matches!(&drive(&mut core)[..], [Effect::Sync { .. }]), "counter 6 is still new");
    }
}
