//! The replay guard for one (sender, recipient) pair.
//!
//! Senders number their messages 1, 2, 3, … and never reuse a number (they persist the counter
//! before sending). The receiver keeps the highest counter seen and a bitmap of the
//! [`WINDOW`] counters below it, so messages reordered by up to [`WINDOW`] positions are still
//! accepted once each, while anything older, anything seen, and any jump further ahead than
//! [`ReplayWindow::max_ahead`] is refused.
//!
//! [`ReplayWindow::check`] only looks; [`ReplayWindow::commit`] records. The envelope checks
//! first, verifies the rest, and commits last, so a message that fails later does not burn a
//! counter. The state exports as [`ReplayState`] so the host persists it across restarts.

use serde::{Deserialize, Serialize};

/// How far below the highest counter seen a message may arrive and still be accepted.
pub const WINDOW: u64 = 64;

/// How far above the highest counter seen a message may jump, by default.
pub const DEFAULT_MAX_AHEAD: u64 = 1 << 20;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Older than the window (or zero, which is never sent).
    #[error("counter {counter} is stale (highest seen {highest})")]
    Stale {
        /// The counter received.
        counter: u64,
        /// The highest counter accepted so far.
        highest: u64,
    },
    /// Already accepted once.
    #[error("counter {counter} was already seen")]
    Duplicate {
        /// The counter received.
        counter: u64,
    },
    /// Further ahead than a sender could honestly have got.
    #[error("counter {counter} is too far ahead of {highest}")]
    TooFarAhead {
        /// The counter received.
        counter: u64,
        /// The highest counter accepted so far.
        highest: u64,
    },
}

/// The persisted form of a [`ReplayWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayState {
    /// The highest counter accepted (0: none yet).
    pub highest: u64,
    /// Bit `i` set: counter `highest - i` was accepted.
    pub seen: u64,
}

/// Accepts each counter at most once; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    state: ReplayState,
    max_ahead: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub fn new() -> Self {
        Self::restore(ReplayState::default())
    }

    /// A window continuing from persisted state.
    pub fn restore(state: ReplayState) -> Self {
        Self { state, max_ahead: DEFAULT_MAX_AHEAD }
    }

    /// Sets how far ahead of the highest counter a message may jump.
    pub fn with_max_ahead(mut self, max_ahead: u64) -> Self {
        self.max_ahead = max_ahead;
        self
    }

    /// The largest jump allowed.
    pub fn max_ahead(&self) -> u64 {
        self.max_ahead
    }

    /// The state to persist.
    pub fn export(&self) -> ReplayState {
        self.state
    }

    /// Would `counter` be accepted now? Records nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let ReplayState { highest, seen } = self.state;
        if counter == 0 {
            return Err(ReplayError::Stale { counter, highest });
        }
        if counter > highest {
            return if counter - highest > self.max_ahead {
                Err(ReplayError::TooFarAhead { counter, highest })
            } else {
                Ok(())
            };
        }
        let age = highest - counter;
        if age >= WINDOW {
            Err(ReplayError::Stale { counter, highest })
        } else if seen & (1 << age) != 0 {
            Err(ReplayError::Duplicate { counter })
        } else {
            Ok(())
        }
    }

    /// Checks `counter` and records it as seen.
    pub fn commit(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        let state = &mut self.state;
        if counter > state.highest {
            let shift = counter - state.highest;
            state.seen = if shift >= WINDOW { 0 } else { state.seen << shift };
            state.seen |= 1;
            state.highest = counter;
        } else {
            state.seen |= 1 << (state.highest - counter);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reordered_and_replayed() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.commit(0), Err(ReplayError::Stale { counter: 0, highest: 0 }));
        w.commit(1).unwrap();
        w.commit(3).unwrap();
        w.commit(2).unwrap(); // reordered, inside the window
        assert_eq!(w.commit(2), Err(ReplayError::Duplicate { counter: 2 }));
        assert_eq!(w.commit(3), Err(ReplayError::Duplicate { counter: 3 }));
        w.commit(3 + WINDOW).unwrap();
        assert_eq!(w.commit(3), Err(ReplayError::Stale { counter: 3, highest: 3 + WINDOW }));
        w.commit(4).unwrap(); // exactly WINDOW - 1 behind
        assert!(matches!(w.commit(u64::MAX), Err(ReplayError::TooFarAhead { .. })));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::new();
        w.check(5).unwrap();
        w.check(5).unwrap();
        w.commit(5).unwrap();
        assert!(w.check(5).is_err());
    }

    #[test]
    fn state_survives_export_and_restore() {
        let mut w = ReplayWindow::new();
        for c in [1, 2, 5, 9] {
            w.commit(c).unwrap();
        }
        let mut restored = ReplayWindow::restore(w.export());
        for c in [1, 2, 5, 9] {
            assert_eq!(restored.commit(c), Err(ReplayError::Duplicate { counter: c }));
        }
        restored.commit(3).unwrap();
    }

    #[test]
    fn far_jump_is_refused_at_the_configured_bound() {
        let mut w = ReplayWindow::new().with_max_ahead(10);
        w.commit(10).unwrap();
        assert!(matches!(w.commit(21), Err(ReplayError::TooFarAhead { .. })));
        w.commit(20).unwrap();
    }
}
