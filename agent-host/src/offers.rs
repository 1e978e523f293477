//! What the host keeps for its link besides the devices: the open pairing offers, which devices
//! are online, and how many refusals may still be written one by one. Plain state; the link and
//! the local API change it through [`crate::host::Host`].

use std::collections::{HashMap, HashSet};

use protocol::pairing::PairingSecret;
use protocol::{DeviceId, PairingToken, Role};
use tokio::sync::{mpsc, oneshot};

use crate::devices::Device;

/// The longest a pairing offer may stay open.
pub const MAX_OFFER_SECS: u64 = 60 * 60;

/// What a pairing offer tells the client that opened it.
pub(crate) enum PairEvent {
    /// A device proved the secret: yes or no?
    Confirm { device: DeviceId, name: String, role: Role, answer: oneshot::Sender<bool> },
    /// Over.
    Done(Result<Device, String>),
}

/// An open pairing offer.
pub(crate) struct Offer {
    pub(crate) secret: PairingSecret,
    pub(crate) role: Role,
    pub(crate) name: Option<String>,
    pub(crate) expires_at_ms: u64,
    pub(crate) yes: bool,
    pub(crate) events: mpsc::UnboundedSender<PairEvent>,
}

/// The open pairing offers, who is online, and how many refusals may still be written.
#[derive(Default)]
pub(crate) struct Offers {
    pub(crate) open: HashMap<PairingToken, Offer>,
    pub(crate) online: HashSet<DeviceId>,
    pub(crate) refusals: RefusalBudget,
}

/// Refused frames are audited one by one up to [`REFUSALS_PER_SEC`] (and a burst of as many
/// again); past that, a flood (a hostile relay can send anything) is counted, and the count is
/// written with the next refusal that fits, so the log and the disk stay bounded and nothing
/// goes unmentioned.
#[derive(Debug)]
pub(crate) struct RefusalBudget {
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

/// Refusals audited one by one per second.
pub const REFUSALS_PER_SEC: f64 = 50.0;

impl Default for RefusalBudget {
    fn default() -> Self {
        Self { tokens: 2.0 * REFUSALS_PER_SEC, last: std::time::Instant::now(), suppressed: 0 }
    }
}

impl RefusalBudget {
    /// `None`: over the rate, counted. `Some(n)`: write it, noting `n` refusals counted before.
    pub(crate) fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * REFUSALS_PER_SEC;
        self.tokens = (self.tokens + refill).min(2.0 * REFUSALS_PER_SEC);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Offers {
    pub(crate) fn tokens(&self) -> Vec<[u8; 32]> {
        self.open.keys().map(|t| t.0).collect()
    }

    /// Drops lapsed offers; true if any was dropped (the registration must change).
    pub(crate) fn expire(&mut self, now_ms: u64) -> bool {
        let lapsed: Vec<PairingToken> =
            self.open.iter().filter(|(_, o)| now_ms >= o.expires_at_ms).map(|(t, _)| *t).collect();
        for token in &lapsed {
            if let Some(offer) = self.open.remove(token) {
                let _ = offer.events.send(PairEvent::Done(Err("the offer expired unused".into())));
            }
        }
        !lapsed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_of_refusals_is_counted_not_written_one_by_one() {
        let mut budget = RefusalBudget::default();
        let written = (0..1000).filter(|_| budget.take().is_some()).count();
        assert!((100..=102).contains(&written), "{written} written");
        // A second later there is room again, and the count comes with the next record.
        budget.last -= Duration::from_secs(1);
        assert_eq!(budget.take(), Some(1000 - written as u64));
        assert_eq!(budget.take(), Some(0));
    }
}
