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

use protocol::{Action, ActionHash, Actor, RequestId, Verdict};
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
    pub requested_by: String,
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
    pub by: Option<String>,
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

impl DecisionError {
    /// What a device is told: the one place this error meets the wire.
    pub fn code(&self) -> protocol::ErrorCode {
        use protocol::ErrorCode;
        match self {
            Self::WrongAction(_) | Self::Duplicate(_) | Self::Full => ErrorCode::Conflict,
            Self::Lapsed(_) => ErrorCode::Expired,
            Self::OwnRequest(_) => ErrorCode::Forbidden,
            Self::NotPending(_) => ErrorCode::NotFound,
        }
    }
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
    /// Requests made at this machine (`local:…`) are not a device's.
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
        by: &str,
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
            && pending.requested_by == by
            && !by.starts_with("local:")
        {
            return Err(DecisionError::OwnRequest(id));
        }
        let pending = self.pending.remove(&id).ok_or(DecisionError::NotPending(id))?;
        Ok(Resolution { pending, verdict, by: Some(by.to_string()) })
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
            .map(|pending| Resolution { pending, verdict: Verdict::Deny, by: None })
            .collect()
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// Someone at this machine (`terminal`, `hook claude-code`).
    Local(String),
    /// A paired device.
    Device(protocol::DeviceId),
}

impl Requester {
    /// The name the audit log and the broker use: `local:terminal`, `dev1…`.
    pub fn label(&self) -> String {
        match self {
            Self::Local(name) => format!("local:{name}"),
            Self::Device(id) => id.to_string(),
        }
    }
}

/// The actor a label stands for, as devices are told, with the device's name from `name_of`.
pub fn actor(label: &str, name_of: impl FnOnce(&protocol::DeviceId) -> Option<String>) -> Actor {
    match label.parse() {
        Ok(id) => Actor::Device { name: name_of(&id), id },
        Err(_) => Actor::Local { name: label.strip_prefix("local:").unwrap_or(label).into() },
    }
}

/// Who a label stands for, as people read it: a device by its name (its id when it has none),
/// someone at the machine by what they are.
pub fn person(label: &str, name_of: impl FnOnce(&protocol::DeviceId) -> Option<String>) -> String {
    match actor(label, name_of) {
        Actor::Device { name: Some(name), .. } => format!("{name} (a paired device)"),
        Actor::Device { id, name: None } => format!("device {id}"),
        Actor::Local { name } => format!("{name} at the host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_map_to_actors() {
        assert_eq!(actor("local:terminal", |_| None), Actor::Local { name: "terminal".into() });
        let id = protocol::DeviceId::new(protocol::SecretKey::from_seed(&[1; 32]).public_key());
        let named = |_: &protocol::DeviceId| Some("phone".to_string());
        assert_eq!(actor(&id.to_string(), named), Actor::Device { id, name: Some("phone".into()) });
        assert_eq!(person(&id.to_string(), named), "phone (a paired device)");
        assert_eq!(person(&id.to_string(), |_| None), format!("device {id}"));
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
            requested_by: "dev1x".into(),
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
            b.decide(p.id, &wrong, Verdict::Approve, "x", 10),
            Err(DecisionError::WrongAction(p.id))
        );
        let r = b.decide(p.id, &p.action_hash, Verdict::Approve, "terminal", 10).unwrap();
        assert_eq!((r.verdict, r.by.as_deref()), (Verdict::Approve, Some("terminal")));
        assert_eq!(
            b.decide(p.id, &p.action_hash, Verdict::Deny, "phone", 11),
            Err(DecisionError::NotPending(p.id))
        );
    }

    #[test]
    fn under_two_persons_a_device_does_not_approve_its_own_request() {
        let p = pending(1, 1000);
        let mut alone = Broker::new();
        alone.add(p.clone()).unwrap();
        assert!(alone.decide(p.id, &p.action_hash, Verdict::Approve, "dev1x", 10).is_ok());
        let mut b = Broker::new().two_person(true);
        b.add(p.clone()).unwrap();
        assert_eq!(
            b.decide(p.id, &p.action_hash, Verdict::Approve, "dev1x", 10),
            Err(DecisionError::OwnRequest(p.id))
        );
        // Still pending: another device approves it.
        let r = b.decide(p.id, &p.action_hash, Verdict::Approve, "dev1y", 10).unwrap();
        assert_eq!(r.by.as_deref(), Some("dev1y"));
        // Its own deny withdraws it.
        b.add(p.clone()).unwrap();
        let r = b.decide(p.id, &p.action_hash, Verdict::Deny, "dev1x", 10).unwrap();
        assert_eq!(r.verdict, Verdict::Deny);
        // The person at the machine approves what the terminal asked.
        let mut local = Broker::new().two_person(true);
        let mine = Pending { requested_by: "local:terminal".into(), ..p.clone() };
        local.add(mine).unwrap();
        assert!(local.decide(p.id, &p.action_hash, Verdict::Approve, "local:terminal", 10).is_ok());
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
            b.decide(p.id, &p.action_hash, Verdict::Approve, "x", 200),
            Err(DecisionError::Lapsed(p.id))
        );
        assert_eq!(b.expire(200).len(), 1, "a lapsed one is settled by expire, not dropped");
        assert!(b.list().is_empty());
    }
}
