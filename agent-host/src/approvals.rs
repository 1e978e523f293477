//! The approvals broker: actions waiting for a person, and the rule that the first valid
//! decision wins, once.
//!
//! Pure state, no I/O and no clock: [`crate::host_core::HostCore`] holds it and passes the time in.
//! A decision is valid only if it names a pending request, carries that request's action hash
//! (so it approves exactly what was shown), and arrives before the request lapses. Deciding
//! removes the request, so a second decision (a duplicate, a replay, or a loser of a race
//! between the phone and the terminal) finds nothing and is refused. A request nobody answers
//! lapses into a denial.
//!
//! Under the two-person rule ([`Broker::two_person`]) a device may not approve what it
//! requested itself: someone else must (another device, or the person at the machine). It may
//! still deny, which withdraws its own request. Off by default: one person with one phone is
//! the common case.

use std::collections::BTreeMap;

use protocol::{Action, ActionHash, Actor, DeviceId, RequestId, Verdict};
use serde::{Deserialize, Serialize};

/// An action waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The request.
    pub id: RequestId,
    /// Exactly what would run.
    pub action: Action,
    /// Its canonical hash: what a decision must name.
    pub action_hash: ActionHash,
    /// One line for people.
    pub summary: String,
    /// Why policy asked.
    pub reason: String,
    /// For writes and edits: a diff preview.
    pub preview: Option<String>,
    /// Who asked.
    pub requested_by: Requester,
    /// When it lapses (Unix ms).
    pub expires_at_ms: u64,
}

/// How a pending action was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The request.
    pub pending: Pending,
    /// Approved or denied.
    pub verdict: Verdict,
    /// Who decided; `None` when it lapsed.
    pub by: Option<Requester>,
    /// What they said with it (a denial's reason, an approval's note).
    pub note: Option<String>,
}

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// No such pending request: never asked, already decided, or lapsed.
    #[error("request {0} is not pending (never asked, already decided, or lapsed)")]
    NotPending(RequestId),
    /// The decision names another action than the one pending.
    #[error("the decision names another action than the one pending for {0}")]
    WrongAction(RequestId),
    /// The request lapsed before the decision arrived.
    #[error("request {0} lapsed before the decision arrived")]
    Lapsed(RequestId),
    /// A request with this id is already pending.
    #[error("request {0} is already pending")]
    Duplicate(RequestId),
    /// Under the two-person rule, the device that requested an action approved it.
    #[error(
        "request {0} was made by this device; under the two-person rule another must approve it"
    )]
    OwnRequest(RequestId),
    /// As many actions as may wait for a person already wait.
    #[error("{MAX_PENDING} actions already wait for a person; answer some first")]
    Full,
}

/// The most actions waiting for a person at once.
pub const MAX_PENDING: usize = 1024;

/// The pending actions.
#[derive(Debug, Default)]
pub struct Broker {
    pending: BTreeMap<RequestId, Pending>,
    two_person: bool,
}

impl Broker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker under which a device may not approve its own requests (see the module notes).
    /// Requests made at this machine ([`Requester::Local`]) are not a device's.
    pub fn two_person(mut self, on: bool) -> Self {
        self.two_person = on;
        self
    }

    /// Adds an action to wait for a person.
    pub fn add(&mut self, pending: Pending) -> Result<(), DecisionError> {
        if self.pending.contains_key(&pending.id) {
            return Err(DecisionError::Duplicate(pending.id));
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(DecisionError::Full);
        }
        self.pending.insert(pending.id, pending);
        Ok(())
    }

    /// What is waiting, oldest id first.
    pub fn list(&self) -> Vec<Pending> {
        self.pending.values().cloned().collect()
    }

    /// One pending action.
    pub fn get(&self, id: &RequestId) -> Option<&Pending> {
        self.pending.get(id)
    }

    /// Applies a decision. The first valid one wins; the request is then gone.
    pub fn decide(
        &mut self,
        id: RequestId,
        action_hash: &ActionHash,
        verdict: Verdict,
        by: &Requester,
        now_ms: u64,
    ) -> Result<Resolution, DecisionError> {
        let pending = self.pending.get(&id).ok_or(DecisionError::NotPending(id))?;
        if pending.action_hash != *action_hash {
            return Err(DecisionError::WrongAction(id));
        }
        if now_ms >= pending.expires_at_ms {
            // Left for [`Broker::expire`], which settles it as lapsed: removed here, it would
            // end with no record and nobody woken.
            return Err(DecisionError::Lapsed(id));
        }
        if self.two_person
            && verdict == Verdict::Approve
            && by.device().is_some()
            && pending.requested_by == *by
        {
            return Err(DecisionError::OwnRequest(id));
        }
        let pending = self.pending.remove(&id).ok_or(DecisionError::NotPending(id))?;
        Ok(Resolution { pending, verdict, by: Some(by.clone()), note: None })
    }

    /// When the next pending action lapses (Unix ms).
    pub fn next_expiry(&self) -> Option<u64> {
        self.pending.values().map(|p| p.expires_at_ms).min()
    }

    /// Removes what lapsed by `now_ms`: each is a denial.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Resolution> {
        let lapsed: Vec<RequestId> =
            self.pending.values().filter(|p| now_ms >= p.expires_at_ms).map(|p| p.id).collect();
        lapsed
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|pending| Resolution { pending, verdict: Verdict::Deny, by: None, note: None })
            .collect()
    }
}

/// Who asks, or decides: someone at this machine, or a paired device. The audit log, the local
/// API and the broker's records write it as a label (`local:terminal`, `dev1…`), and read it
/// back from one ([`Requester::from_label`]); inside the host it is this type, never a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requester {
    /// Someone at this machine (`terminal`, `hook claude-code`).
    Local(String),
    /// A paired device.
    Device(DeviceId),
}

impl Requester {
    /// The name the audit log and the broker use: `local:terminal`, `dev1…`.
    pub fn label(&self) -> String {
        match self {
            Self::Local(name) => format!("local:{name}"),
            Self::Device(id) => id.to_string(),
        }
    }

    /// The requester a label names: `local:…` at this machine, else a device id. `None` for
    /// anything else.
    pub fn from_label(label: &str) -> Option<Self> {
        match label.strip_prefix("local:") {
            Some(name) => Some(Self::Local(name.into())),
            None => label.parse().ok().map(Self::Device),
        }
    }

    /// The device, when it is one.
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            Self::Device(id) => Some(*id),
            Self::Local(_) => None,
        }
    }

    /// The actor it is, as devices are told, with the device's name from `name_of`.
    pub fn actor(&self, name_of: impl FnOnce(&DeviceId) -> Option<String>) -> Actor {
        match self {
            Self::Device(id) => Actor::Device { name: name_of(id), id: *id },
            Self::Local(name) => Actor::Local { name: name.clone() },
        }
    }

    /// Who it is, as people read it: a device by its name (its id when it has none), someone
    /// at the machine by what they are.
    pub fn person(&self, name_of: impl FnOnce(&DeviceId) -> Option<String>) -> String {
        match self.actor(name_of) {
            Actor::Device { name: Some(name), .. } => format!("{name} (a paired device)"),
            Actor::Device { id, name: None } => format!("device {id}"),
            Actor::Local { name } => format!("{name} at the host"),
        }
    }
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Serialize for Requester {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.label())
    }
}

impl<'de> Deserialize<'de> for Requester {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let label = String::deserialize(deserializer)?;
        Self::from_label(&label).ok_or_else(|| {
            serde::de::Error::custom(format!("{label:?} is neither local:… nor a device id"))
        })
    }
}

/// How far a pending action got on one device (the protocol's, which devices are told).
pub use protocol::DeliveryStage as Stage;

/// Where a push to a device stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushState {
    /// Pushes made since the device last acknowledged everything.
    pub attempts: u32,
    /// What went wrong with the last, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the host looks again (Unix ms): to push again, or to see whether the device
    /// acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<u64>,
    /// A push is on its way to the push service.
    #[serde(skip)]
    pub(crate) in_flight: bool,
    /// Another push is wanted once the one on its way is done.
    #[serde(skip)]
    pub(crate) again: bool,
    /// Which subscription of the device this is: what a push to one it replaced comes to is
    /// not this one's.
    #[serde(skip)]
    pub(crate) generation: u64,
    /// What the last push the push service took named.
    #[serde(skip)]
    pub(crate) last_pushed: Vec<RequestId>,
    /// What it named (a notice names the newest few).
    #[serde(skip)]
    pub(crate) last_named: Vec<RequestId>,
    /// The device's notices name no action.
    #[serde(skip)]
    pub(crate) hide_detail: bool,
}

/// One action's delivery, as `agent-host approvals --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// The request.
    pub request: RequestId,
    /// One line for people.
    pub summary: String,
    /// How it was settled: absent while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Who settled it, as the audit log names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Whether what was approved was carried out.
    pub applied: bool,
    /// How far it got on each device it reached.
    pub devices: BTreeMap<DeviceId, Stage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> Requester {
        Requester::Device(DeviceId::new(protocol::SecretKey::from_seed(&[n; 32]).public_key()))
    }

    fn local(name: &str) -> Requester {
        Requester::Local(name.into())
    }

    #[test]
    fn requesters_are_written_as_labels_and_read_back() {
        let id = DeviceId::new(protocol::SecretKey::from_seed(&[1; 32]).public_key());
        for who in [local("terminal"), local("hook claude-code"), Requester::Device(id)] {
            assert_eq!(Requester::from_label(&who.label()), Some(who.clone()));
            let json = serde_json::to_string(&who).unwrap();
            assert_eq!(json, format!("\"{}\"", who.label()));
            assert_eq!(serde_json::from_str::<Requester>(&json).unwrap(), who);
        }
        assert_eq!(Requester::from_label("dev1x"), None);
        assert!(serde_json::from_str::<Requester>("\"terminal\"").is_err());
        assert_eq!(local("terminal").actor(|_| None), Actor::Local { name: "terminal".into() });
        let named = |_: &DeviceId| Some("phone".to_string());
        let phone = Requester::Device(id);
        assert_eq!(phone.actor(named), Actor::Device { id, name: Some("phone".into()) });
        assert_eq!(phone.person(named), "phone (a paired device)");
        assert_eq!(phone.person(|_| None), format!("device {id}"));
        assert_eq!(local("terminal").person(|_| None), "terminal at the host");
    }

    fn pending(n: u8, expires_at_ms: u64) -> Pending {
        let action = Action::Run {
            argv: vec!["rm".into(), n.to_string()],
            cwd: ".".into(),
            env: Default::default(),
        };
        Pending {
            id: RequestId([n; 16]),
            action_hash: protocol::action_hash(&action),
            action,
            summary: String::new(),
            reason: String::new(),
            preview: None,
            requested_by: device(1),
            expires_at_ms,
        }
    }

    #[test]
    fn first_valid_decision_wins_once() {
        let mut b = Broker::new();
        let p = pending(1, 1000);
        b.add(p.clone()).unwrap();
        assert_eq!(b.add(p.clone()), Err(DecisionError::Duplicate(p.id)));
        let wrong = ActionHash([0; 32]);
        assert_eq!(
            b.decide(p.id, &wrong, Verdict::Approve, &local("terminal"), 10),
            Err(DecisionError::WrongAction(p.id))
        );
        let r = b.decide(p.id, &p.action_hash, Verdict::Approve, &local("terminal"), 10).unwrap();
        assert_eq!((r.verdict, r.by), (Verdict::Approve, Some(local("terminal"))));
        assert_eq!(
            b.decide(p.id, &p.action_hash, Verdict::Deny, &device(2), 11),
            Err(DecisionError::NotPending(p.id))
        );
    }

    #[test]
    fn under_two_persons_a_device_does_not_approve_its_own_request() {
        let p = pending(1, 1000);
        let mut alone = Broker::new();
        alone.add(p.clone()).unwrap();
        assert!(alone.decide(p.id, &p.action_hash, Verdict::Approve, &device(1), 10).is_ok());
        let mut b = Broker::new().two_person(true);
        b.add(p.clone()).unwrap();
        assert_eq!(
            b.decide(p.id, &p.action_hash, Verdict::Approve, &device(1), 10),
            Err(DecisionError::OwnRequest(p.id))
        );
        // Still pending: another device approves it.
        let r = b.decide(p.id, &p.action_hash, Verdict::Approve, &device(2), 10).unwrap();
        assert_eq!(r.by, Some(device(2)));
        // Its own deny withdraws it.
        b.add(p.clone()).unwrap();
        let r = b.decide(p.id, &p.action_hash, Verdict::Deny, &device(1), 10).unwrap();
        assert_eq!(r.verdict, Verdict::Deny);
        // The person at the machine approves what the terminal asked.
        let mut at_machine = Broker::new().two_person(true);
        let mine = Pending { requested_by: local("terminal"), ..p.clone() };
        at_machine.add(mine).unwrap();
        let approved =
            at_machine.decide(p.id, &p.action_hash, Verdict::Approve, &local("terminal"), 10);
        assert!(approved.is_ok());
    }

    #[test]
    fn unanswered_requests_lapse_into_denial() {
        let mut b = Broker::new();
        b.add(pending(1, 100)).unwrap();
        b.add(pending(2, 200)).unwrap();
        let lapsed = b.expire(150);
        assert_eq!(lapsed.len(), 1);
        assert_eq!((lapsed[0].verdict, &lapsed[0].by), (Verdict::Deny, &None));
        let p = pending(2, 200);
        assert_eq!(
            b.decide(p.id, &p.action_hash, Verdict::Approve, &device(2), 200),
            Err(DecisionError::Lapsed(p.id))
        );
        assert_eq!(b.expire(200).len(), 1, "a lapsed one is settled by expire, not dropped");
        assert!(b.list().is_empty());
    }
}
