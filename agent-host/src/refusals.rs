//! How many refusals may still be written to the audit log one by one (`RefusalBudget`).

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
