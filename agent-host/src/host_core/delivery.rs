//! Where each pending action got on each device, and the pushes that carry it to devices whose
//! page is closed: [`HostCore::receipt`], [`HostCore::pushed`] and what [`Effect::Push`] asks.
//!
//! A pending action goes, per device: issued (the host sent it: on the link to a device online,
//! or a push service took the push), delivered (the device said it has it), shown (the device
//! said its person saw it: a notification, or the page in view), decided (this device answered
//! it), applied (what it approved was carried out). The stages only go forward.
//!
//! A device with a push subscription is pushed to as soon as an action starts to wait; one push
//! says everything that waits (a notification counts them). If the push service refuses, or
//! the device does not acknowledge every waiting action within the acknowledgement time, the
//! host says so ([`Effect::Report`]) and pushes again, waiting twice as long each time (up to
//! [`RETRY_MAX_MS`]) until the device acknowledges or nothing waits. A push service that says
//! the subscription is gone (404, 410) ends it ([`Effect::DropPush`]).
//!
//! Settled actions are kept, with their stages, for the last [`KEPT_SETTLED`], so that
//! `agent-host approvals` can say where an answer came from and that it was applied.

use std::collections::{BTreeMap, HashMap, VecDeque};

use protocol::{DeviceId, ReceiptStage, RequestId, Verdict};

use super::{Effect, HostCore};
use crate::approvals::{Pending, Requester};

/// How long a device has to acknowledge what was pushed to it, by default.
pub const ACK_WAIT_MS: u64 = 30_000;
/// The first wait before a push the push service refused is tried again.
pub const RETRY_MIN_MS: u64 = 5_000;
/// The longest wait between pushes to one device.
pub const RETRY_MAX_MS: u64 = 5 * 60_000;
/// How many settled actions are kept with their stages.
pub const KEPT_SETTLED: usize = 64;

pub use crate::approvals::{PushState, Stage, Track};

/// The stages of every pending action and recently settled one, and the pushes under way.
#[derive(Debug)]
pub(super) struct Deliveries {
    tracks: HashMap<RequestId, Track>,
    settled: VecDeque<RequestId>,
    push: HashMap<DeviceId, PushState>,
    ack_wait_ms: u64,
    generations: u64,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            tracks: HashMap::new(),
            settled: VecDeque::new(),
            push: HashMap::new(),
            ack_wait_ms: ACK_WAIT_MS,
            generations: 0,
        }
    }
}

/// What a device's [`protocol::Request::Push`] changed, once checked and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushChange {
    /// The same subscription as before (a page that subscribes at each load).
    Unchanged,
    /// A new subscription; its notices name the actions unless `hide_detail`.
    Set {
        /// Notices count the actions only.
        hide_detail: bool,
    },
    /// No more pushes.
    Cleared,
}

/// What became of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The push service took it.
    Taken,
    /// The push service says the subscription is no more (404, 410).
    Gone(String),
    /// It could not be pushed now (refused, unreachable, too many requests).
    Failed(String),
}

/// The actions a notice names: the newest [`protocol::limits::MAX_NOTICE_ACTIONS`] of
/// `pending` (by when they lapse, which is when they were asked plus the same wait), newest
/// first.
pub fn newest(pending: &[Pending]) -> impl Iterator<Item = &Pending> {
    let mut sorted: Vec<&Pending> = pending.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse((p.expires_at_ms, p.id)));
    sorted.into_iter().take(protocol::limits::MAX_NOTICE_ACTIONS)
}

impl Track {
    /// Moves `device` on to `stage`; whether that changed anything.
    fn raise(&mut self, device: DeviceId, stage: Stage) -> bool {
        match self.devices.get_mut(&device) {
            Some(at) if *at >= stage => false,
            Some(at) => {
                *at = stage;
                true
            }
            None => {
                self.devices.insert(device, stage);
                true
            }
        }
    }
}

impl HostCore {
    /// How long a device has to acknowledge a push before the host pushes again.
    pub fn push_ack_wait(mut self, ms: u64) -> Self {
        self.delivery.ack_wait_ms = ms.max(1);
        self
    }

    /// Whether `device` has a (new) push subscription, and whether its notices hide the actions
    /// (`Some(hide_detail)`), or none (`None`): pushes go to it from now on, or no more. What
    /// becomes of a push to the one it had is not this one's.
    pub fn set_push(&mut self, now: u64, device: DeviceId, subscribed: Option<bool>) {
        let Some(hide_detail) = subscribed else {
            self.delivery.push.remove(&device);
            return;
        };
        self.delivery.generations += 1;
        let generation = self.delivery.generations;
        // A push on its way to the one it replaces is waited for: one at a time per device.
        let (in_flight, again) =
            self.delivery.push.get(&device).map_or((false, false), |s| (s.in_flight, s.in_flight));
        let state = PushState { generation, in_flight, again, hide_detail, ..PushState::default() };
        self.delivery.push.insert(device, state);
        // What waits already is pushed at once.
        if self.unacknowledged(device) {
            self.push_to(now, device);
        }
    }

    /// Every pending action's delivery, then the settled ones kept, newest last.
    pub fn deliveries(&self) -> Vec<Track> {
        let mut out: Vec<Track> = self
            .broker
            .list()
            .iter()
            .filter_map(|p| self.delivery.tracks.get(&p.id).cloned())
            .collect();
        out.extend(
            self.delivery.settled.iter().filter_map(|id| self.delivery.tracks.get(id)).cloned(),
        );
        out
    }

    /// Where pushes to each device stand.
    pub fn push_states(&self) -> BTreeMap<DeviceId, PushState> {
        self.delivery.push.iter().map(|(d, s)| (*d, s.clone())).collect()
    }

    /// A device says how far `requests` got on it. A receipt for the last notice pushed to it
    /// (exactly the actions it named, or none when the device hides detail: a notice names at
    /// most a few and counts the rest) covers every action that notice counted; a receipt for
    /// an older notice, only what it names.
    pub fn receipt(&mut self, device: DeviceId, requests: &[RequestId], stage: ReceiptStage) {
        let stage = match stage {
            ReceiptStage::Delivered => Stage::Delivered,
            ReceiptStage::Shown => Stage::Shown,
        };
        let (last, named) = self
            .delivery
            .push
            .get(&device)
            .map(|s| (s.last_pushed.clone(), s.last_named.clone()))
            .unwrap_or_default();
        let same = |a: &[RequestId], b: &[RequestId]| {
            a.len() == b.len() && a.iter().all(|r| b.contains(r))
        };
        let requests = if same(requests, &named) { &last[..] } else { requests };
        for request in requests {
            // Only actions it was sent (a receipt for another is ignored).
            if self.delivery.tracks.get(request).is_some_and(|t| t.devices.contains_key(&device)) {
                self.raise(*request, device, stage);
            }
        }
        if !self.unacknowledged(device)
            && let Some(state) = self.delivery.push.get_mut(&device)
        {
            state.attempts = 0;
            state.last_error = None;
            state.next_at_ms = None;
        }
    }

    /// What became of the push of `requests` to `device`'s subscription `generation`.
    pub fn pushed(
        &mut self,
        now: u64,
        device: DeviceId,
        generation: u64,
        requests: &[RequestId],
        outcome: PushOutcome,
    ) {
        let pending = self.broker.list();
        let Some(state) = self.delivery.push.get_mut(&device) else { return };
        state.in_flight = false;
        if state.generation != generation {
            // A push to the subscription this one replaced: nothing of it is this one's, but
            // what waited for it to end goes now.
            if std::mem::take(&mut state.again) {
                self.push_to(now, device);
            }
            return;
        }
        let again = std::mem::take(&mut state.again);
        let wait = |first: u64, attempts: u32| {
            first.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(RETRY_MAX_MS)
        };
        match outcome {
            PushOutcome::Taken => {
                state.last_error = None;
                state.last_pushed = requests.to_vec();
                let sent: Vec<Pending> =
                    pending.into_iter().filter(|p| requests.contains(&p.id)).collect();
                state.last_named = if state.hide_detail {
                    Vec::new()
                } else {
                    newest(&sent).map(|p| p.id).collect()
                };
                state.next_at_ms =
                    Some(now.saturating_add(wait(self.delivery.ack_wait_ms, state.attempts)));
                for request in requests {
                    self.raise(*request, device, Stage::Issued);
                }
            }
            PushOutcome::Gone(why) => {
                self.delivery.push.remove(&device);
                self.effects.push_back(Effect::Report(format!(
                    "the push service ended device {device}'s subscription ({why}): it gets no more notifications until its page subscribes again"
                )));
                self.effects.push_back(Effect::DropPush { device });
                return;
            }
            PushOutcome::Failed(why) => {
                let next = now.saturating_add(wait(RETRY_MIN_MS, state.attempts));
                self.effects.push_back(Effect::Report(format!(
                    "a push to device {device} failed ({why}); trying again in {} s",
                    next.saturating_sub(now) / 1000
                )));
                state.last_error = Some(why);
                state.next_at_ms = Some(next);
                // What else came meanwhile goes with the retry, after the wait.
                return;
            }
        }
        if again {
            self.push_to(now, device);
        }
    }

    /// Pushes what lapsed by `now` and looks for pushes not acknowledged.
    pub(super) fn delivery_timeout(&mut self, now: u64) {
        let due: Vec<DeviceId> = self
            .delivery
            .push
            .iter()
            .filter(|(_, s)| s.next_at_ms.is_some_and(|at| at <= now) && !s.in_flight)
            .map(|(d, _)| *d)
            .collect();
        for device in due {
            let unacknowledged = self.unacknowledged(device);
            let Some(state) = self.delivery.push.get_mut(&device) else { continue };
            state.next_at_ms = None;
            if !unacknowledged {
                state.attempts = 0;
                continue;
            }
            if state.last_error.is_none() {
                self.effects.push_back(Effect::Report(format!(
                    "device {device} did not acknowledge its notification; pushing again"
                )));
            }
            self.push_to(now, device);
        }
    }

    /// When [`Self::delivery_timeout`] has something to do.
    pub(super) fn next_delivery_timeout(&self) -> Option<u64> {
        self.delivery.push.values().filter(|s| !s.in_flight).filter_map(|s| s.next_at_ms).min()
    }

    /// A new pending action: issued to the devices online, pushed to those subscribed.
    pub(super) fn track(&mut self, now: u64, pending: &Pending) {
        let mut track = Track {
            request: pending.id,
            summary: pending.summary.clone(),
            verdict: None,
            decided_by: None,
            applied: false,
            devices: BTreeMap::new(),
        };
        for device in self.devices.keys().filter(|d| self.online.contains(d)) {
            track.raise(*device, Stage::Issued);
        }
        self.delivery.tracks.insert(pending.id, track);
        let subscribed: Vec<DeviceId> = self.delivery.push.keys().copied().collect();
        for device in subscribed {
            if let Some(state) = self.delivery.push.get_mut(&device) {
                if state.last_error.is_some() {
                    // A push service that refused waits out its backoff: the retry takes
                    // this one too.
                    continue;
                }
                // A fresh action is news: the count of tries starts again.
                state.attempts = 0;
            }
            self.push_to(now, device);
        }
    }

    /// The pending actions sent to `device` in a sync: issued.
    pub(super) fn issued(&mut self, device: DeviceId, pending: &[Pending]) {
        for p in pending {
            self.raise(p.id, device, Stage::Issued);
        }
    }

    /// A pending action was settled.
    pub(super) fn track_settled(
        &mut self,
        id: RequestId,
        verdict: Verdict,
        by: Option<&Requester>,
    ) {
        let Some(track) = self.delivery.tracks.get_mut(&id) else { return };
        track.verdict = Some(verdict);
        track.decided_by = Some(by.map_or_else(|| "nobody (lapsed)".into(), Requester::label));
        if let Some(device) = by.and_then(Requester::device) {
            self.raise(id, device, Stage::Decided);
        }
        self.delivery.settled.push_back(id);
        while self.delivery.settled.len() > KEPT_SETTLED {
            if let Some(old) = self.delivery.settled.pop_front() {
                self.delivery.tracks.remove(&old);
            }
        }
    }

    /// What was approved under `id` was carried out.
    pub fn applied(&mut self, id: RequestId) {
        let Some(track) = self.delivery.tracks.get_mut(&id) else { return };
        if track.verdict != Some(Verdict::Approve) {
            return;
        }
        track.applied = true;
        let decider = track.devices.iter().find(|(_, s)| **s == Stage::Decided).map(|(d, _)| *d);
        if let Some(device) = decider {
            self.raise(id, device, Stage::Applied);
        }
    }

    /// Moves `device` on to `stage` for `request`; a change is told to the devices.
    fn raise(&mut self, request: RequestId, device: DeviceId, stage: Stage) {
        let Some(track) = self.delivery.tracks.get_mut(&request) else { return };
        if track.raise(device, stage) {
            let devices = track.devices.iter().map(|(d, s)| (*d, *s)).collect();
            self.effects.push_back(Effect::Progress { request, devices });
        }
    }

    /// A device is no longer paired.
    pub(super) fn forget_delivery(&mut self, device: DeviceId) {
        self.delivery.push.remove(&device);
    }

    /// Whether an action waits that `device` has not acknowledged.
    fn unacknowledged(&self, device: DeviceId) -> bool {
        self.broker.list().iter().any(|p| {
            self.delivery
                .tracks
                .get(&p.id)
                .is_some_and(|t| t.devices.get(&device).is_none_or(|s| *s < Stage::Delivered))
        })
    }

    /// Pushes everything that waits to `device` (once the push on its way is done, if one is).
    fn push_to(&mut self, _now: u64, device: DeviceId) {
        let Some(state) = self.delivery.push.get_mut(&device) else { return };
        if state.in_flight {
            state.again = true;
            return;
        }
        let pending = self.broker.list();
        if pending.is_empty() {
            return;
        }
        state.in_flight = true;
        state.attempts = state.attempts.saturating_add(1);
        state.next_at_ms = None;
        let generation = state.generation;
        self.effects.push_back(Effect::Push { device, generation, pending });
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Action, ActionHash, SecretKey};

    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::new(SecretKey::from_seed(&[n; 32]).public_key())
    }

    fn pending(n: u8) -> Pending {
        let action = Action::ReadFile { path: format!("f{n}") };
        Pending {
            id: RequestId([n; 16]),
            action_hash: protocol::action_hash(&action),
            action,
            summary: format!("read f{n}"),
            reason: "asked".into(),
            preview: None,
            requested_by: Requester::Local("terminal".into()),
            expires_at_ms: 0,
        }
    }

    fn core() -> HostCore {
        let mut core = HostCore::new(SecretKey::from_seed(&[7; 32]).public_key(), 600_000, false)
            .push_ack_wait(1000);
        core.load_device(device(1), protocol::Role::Approver, Default::default());
        core.set_push(0, device(1), Some(false));
        core
    }

    fn effects(core: &mut HostCore) -> Vec<Effect> {
        std::iter::from_fn(|| core.poll_effect()).collect()
    }

    fn pushes(effects: &[Effect]) -> Vec<usize> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Push { pending, .. } => Some(pending.len()),
                _ => None,
            })
            .collect()
    }

    fn reports(effects: &[Effect]) -> usize {
        effects.iter().filter(|e| matches!(e, Effect::Report(_))).count()
    }

    #[test]
    fn an_action_is_pushed_and_a_receipt_ends_the_retries() {
        let mut core = core();
        let p = core.ask(0, pending(1)).unwrap();
        assert_eq!(pushes(&effects(&mut core)), [1]);
        // A second action while the first push is on its way: pushed once that one is done,
        // both in one notice.
        core.ask(10, pending(2)).unwrap();
        assert!(pushes(&effects(&mut core)).is_empty());
        core.pushed(20, device(1), 1, &[p.id], PushOutcome::Taken);
        assert_eq!(pushes(&effects(&mut core)), [2]);
        core.pushed(30, device(1), 1, &[p.id, RequestId([2; 16])], PushOutcome::Taken);
        assert_eq!(core.deliveries()[0].devices[&device(1)], Stage::Issued);
        assert_eq!(core.poll_timeout(), Some(1030), "the acknowledgement is awaited");
        core.receipt(device(1), &[p.id, RequestId([2; 16])], ReceiptStage::Shown);
        assert_eq!(core.deliveries()[1].devices[&device(1)], Stage::Shown);
        assert_eq!(core.poll_timeout(), Some(600_000), "only the lapse is left");
        // Every device hears how far each got.
        let told = effects(&mut core);
        assert!(told.iter().any(|e| matches!(e, Effect::Progress { request, devices }
            if *request == p.id && devices == &[(device(1), Stage::Shown)])));
        core.handle_timeout(5000);
        assert!(effects(&mut core).is_empty());
    }

    #[test]
    fn a_push_not_acknowledged_is_said_and_pushed_again_later_each_time() {
        let mut core = core();
        let p = core.ask(0, pending(1)).unwrap();
        effects(&mut core);
        core.pushed(0, device(1), 1, &[p.id], PushOutcome::Taken);
        let mut at = 0;
        for wait in [1000, 2000, 4000] {
            assert_eq!(core.poll_timeout(), Some(at + wait));
            at += wait;
            core.handle_timeout(at);
            let got = effects(&mut core);
            assert_eq!((reports(&got), pushes(&got)), (1, vec![1]), "at {at}");
            core.pushed(at, device(1), 1, &[p.id], PushOutcome::Taken);
        }
        // Delivered is enough to stop.
        core.receipt(device(1), &[p.id], ReceiptStage::Delivered);
        assert_eq!(core.push_states()[&device(1)].attempts, 0);
    }

    #[test]
    fn a_refused_push_is_tried_again_and_a_gone_subscription_dropped() {
        let mut core = core();
        let p = core.ask(0, pending(1)).unwrap();
        effects(&mut core);
        core.pushed(0, device(1), 1, &[p.id], PushOutcome::Failed("HTTP 503".into()));
        assert_eq!(reports(&effects(&mut core)), 1);
        assert_eq!(core.poll_timeout(), Some(RETRY_MIN_MS));
        assert_eq!(core.push_states()[&device(1)].last_error.as_deref(), Some("HTTP 503"));
        assert!(core.deliveries()[0].devices.is_empty(), "not issued");
        core.handle_timeout(RETRY_MIN_MS);
        let got = effects(&mut core);
        assert_eq!((reports(&got), pushes(&got)), (0, vec![1]), "said once, when it failed");
        core.pushed(RETRY_MIN_MS, device(1), 1, &[p.id], PushOutcome::Gone("HTTP 410".into()));
        let got = effects(&mut core);
        assert!(got.contains(&Effect::DropPush { device: device(1) }));
        assert!(core.push_states().is_empty());
        assert_eq!(core.poll_timeout(), Some(600_000));
    }

    #[test]
    fn a_receipt_for_a_notice_that_names_few_covers_all_it_counted() {
        let mut core = core();
        let ids: Vec<RequestId> = (1..=6).map(|n| core.ask(0, pending(n)).unwrap().id).collect();
        effects(&mut core);
        // The first push named one; the rest came while it was on its way.
        core.pushed(0, device(1), 1, &ids[..1], PushOutcome::Taken);
        core.pushed(0, device(1), 1, &ids, PushOutcome::Taken);
        // The notice named the newest four; a receipt for those covers all six.
        let named: Vec<RequestId> = newest(&core.pending()).map(|p| p.id).collect();
        assert_eq!(named.len(), 4);
        core.receipt(device(1), &named, ReceiptStage::Shown);
        assert!(core.deliveries().iter().all(|t| t.devices[&device(1)] == Stage::Shown));
        assert_eq!(core.poll_timeout(), Some(600_000), "nothing left to push");
        // A notice that named none (hidden detail): an empty receipt stands for it.
        core.set_push(1, device(1), Some(true));
        let q = core.ask(1, pending(7)).unwrap();
        core.pushed(1, device(1), 2, &[q.id], PushOutcome::Taken);
        core.receipt(device(1), &[], ReceiptStage::Delivered);
        assert_eq!(core.deliveries()[6].devices[&device(1)], Stage::Delivered);
        // A receipt for an older notice covers only what it names: one that named the first
        // action alone, come late after a notice of two.
        let r = core.ask(2, pending(8)).unwrap();
        core.pushed(2, device(1), 2, &[q.id, r.id], PushOutcome::Taken);
        core.receipt(device(1), &[q.id], ReceiptStage::Shown);
        let stage = |core: &HostCore, id| {
            core.deliveries().iter().find(|t| t.request == id).map(|t| t.devices[&device(1)])
        };
        assert_eq!(stage(&core, q.id), Some(Stage::Shown));
        assert_eq!(stage(&core, r.id), Some(Stage::Issued), "never shown");
        // A receipt that names both covers both.
        core.receipt(device(1), &[r.id, q.id], ReceiptStage::Shown);
        assert_eq!(stage(&core, r.id), Some(Stage::Shown));
    }

    #[test]
    fn what_a_push_to_a_replaced_subscription_comes_to_is_not_the_new_ones() {
        let mut core = core();
        let p = core.ask(0, pending(1)).unwrap();
        effects(&mut core);
        // The page subscribes again (generation 2) while the push to the first is on its way:
        // the new one waits for it (one at a time), and its end ends nothing of the new one.
        core.set_push(1, device(1), Some(false));
        assert!(pushes(&effects(&mut core)).is_empty());
        core.pushed(2, device(1), 1, &[p.id], PushOutcome::Gone("HTTP 410".into()));
        let got = effects(&mut core);
        assert_eq!((pushes(&got), reports(&got)), (vec![1], 0));
        assert!(!got.contains(&Effect::DropPush { device: device(1) }));
        assert!(core.push_states().contains_key(&device(1)));
        core.pushed(3, device(1), 2, &[p.id], PushOutcome::Taken);
        assert_eq!(core.deliveries()[0].devices[&device(1)], Stage::Issued);
    }

    #[test]
    fn the_stages_go_forward_to_decided_and_applied() {
        let mut core = core();
        let p = core.ask(0, pending(1)).unwrap();
        core.pushed(0, device(1), 1, &[p.id], PushOutcome::Taken);
        core.receipt(device(1), &[p.id], ReceiptStage::Shown);
        core.receipt(device(1), &[p.id], ReceiptStage::Delivered);
        assert_eq!(core.deliveries()[0].devices[&device(1)], Stage::Shown, "never back");
        // A receipt for an action it was never sent is ignored.
        core.receipt(device(2), &[p.id], ReceiptStage::Shown);
        assert!(!core.deliveries()[0].devices.contains_key(&device(2)));
        let by = Requester::Device(device(1));
        core.decide(1, p.id, &p.action_hash, Verdict::Approve, &by).unwrap();
        assert_eq!(core.deliveries()[0].devices[&device(1)], Stage::Decided);
        core.applied(p.id);
        let track = &core.deliveries()[0];
        assert_eq!((track.devices[&device(1)], track.applied), (Stage::Applied, true));
        assert_eq!(track.verdict, Some(Verdict::Approve));
        // A denial is never applied.
        let q = core.ask(2, pending(2)).unwrap();
        core.decide(3, q.id, &ActionHash(q.action_hash.0), Verdict::Deny, &by).unwrap();
        core.applied(q.id);
        assert!(!core.deliveries()[1].applied);
    }
}
