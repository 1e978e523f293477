//! End-to-end resume between two peers (a host and a device), through a relay that keeps no
//! delivery state: sequence numbers and acknowledgements per direction, so each application
//! message is delivered exactly once, in order, across dropped connections and relay restarts.
//!
//! Sans-IO: the caller passes the time in and carries the bytes. Each data frame's payload is
//!
//! ```text
//! 0 ‖ seq (u64 BE) ‖ message        a message, numbered from 1 per direction
//! 1 ‖ seq (u64 BE)                  "I have everything up to and including seq"
//! ```
//!
//! The sender keeps what is not yet acknowledged; [`Peer::poll_send`] hands out what is due
//! (never sent, or sent longer ago than the retransmission timeout, or everything after
//! [`Peer::reconnected`]) up to a budget, so the caller can pace itself below the relay's rate
//! limit. The receiver delivers only the
//! next number in sequence, drops duplicates and anything after a gap (it will come again), and
//! acknowledges what it holds.

use std::collections::VecDeque;

/// The most unacknowledged messages kept per peer; past this, [`Peer::push`] refuses.
pub const MAX_UNACKED: usize = 4096;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_UNACKED} messages are waiting for acknowledgement")]
pub struct Backlog;

/// Resume state with one peer.
#[derive(Debug, Default)]
pub struct Peer {
    next_seq: u64,
    /// (seq, encoded frame payload, last sent at ms)
    unacked: VecDeque<(u64, Vec<u8>, Option<u64>)>,
    delivered: u64,
    ack_due: bool,
}

/// What a received payload turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A new message, in order: hand it to the application.
    Deliver(Vec<u8>),
    /// A duplicate, an acknowledgement, or a message after a gap: nothing to hand over.
    Nothing,
    /// Not a resume payload.
    Malformed,
}

impl Peer {
    /// Numbers a message and keeps it until acknowledged; [`Peer::poll_send`] hands it out.
    pub fn push(&mut self, message: &[u8]) -> Result<u64, Backlog> {
        if self.unacked.len() >= MAX_UNACKED {
            return Err(Backlog);
        }
        self.next_seq += 1;
        let mut payload = Vec::with_capacity(9 + message.len());
        payload.push(0);
        payload.extend_from_slice(&self.next_seq.to_be_bytes());
        payload.extend_from_slice(message);
        self.unacked.push_back((self.next_seq, payload, None));
        Ok(self.next_seq)
    }

    /// After a new connection: everything unacknowledged is due again.
    pub fn reconnected(&mut self) {
        for (_, _, sent) in &mut self.unacked {
            *sent = None;
        }
    }

    /// Handles a payload from the peer.
    pub fn receive(&mut self, payload: &[u8]) -> Incoming {
        let Some((&kind, rest)) = payload.split_first() else { return Incoming::Malformed };
        let Some(seq) = rest.get(..8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
        else {
            return Incoming::Malformed;
        };
        match kind {
            0 => {
                if seq == self.delivered + 1 {
                    self.delivered = seq;
                    self.ack_due = true;
                    Incoming::Deliver(rest[8..].to_vec())
                } else {
                    // A duplicate (already delivered) or ahead of a gap: acknowledge what we have
                    // so the sender knows where to resume.
                    self.ack_due = true;
                    Incoming::Nothing
                }
            }
            1 => {
                while self.unacked.front().is_some_and(|(s, _, _)| *s <= seq) {
                    self.unacked.pop_front();
                }
                Incoming::Nothing
            }
            _ => Incoming::Malformed,
        }
    }

    /// The acknowledgement to send, if one is due.
    pub fn poll_ack(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.ack_due) {
            return None;
        }
        let mut payload = vec![1];
        payload.extend_from_slice(&self.delivered.to_be_bytes());
        Some(payload)
    }

    /// Up to `budget` payloads that are due, oldest first: never sent yet, or sent more than
    /// `rto_ms` ago without an acknowledgement.
    pub fn poll_send(&mut self, now_ms: u64, rto_ms: u64, budget: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (_, payload, sent) in &mut self.unacked {
            if out.len() >= budget {
                break;
            }
            if sent.is_none_or(|t| now_ms.saturating_sub(t) >= rto_ms) {
                *sent = Some(now_ms);
                out.push(payload.clone());
            }
        }
        out
    }

    /// How many messages wait for acknowledgement.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two peers over a lossy, duplicating, reordering channel, with a simulated clock: every
    /// message arrives exactly once and in order.
    #[test]
    fn exactly_once_over_a_bad_channel() {
        let (mut a, mut b) = (Peer::default(), Peer::default());
        let mut wire_ab: Vec<Vec<u8>> = Vec::new();
        let mut wire_ba: Vec<Vec<u8>> = Vec::new();
        let mut got = Vec::new();
        let mut rng = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut sent = 0u32;
        for now in 0..20_000u64 {
            if sent < 500 && next() % 3 == 0 {
                a.push(&sent.to_be_bytes()).unwrap();
                sent += 1;
            }
            wire_ab.extend(a.poll_send(now, 50, 4));
            // The channel: loses a third, duplicates some, swaps neighbours.
            let mut delivered_now = Vec::new();
            for p in wire_ab.drain(..) {
                match next() % 10 {
                    0..=2 => {}
                    3 => {
                        delivered_now.push(p.clone());
                        delivered_now.push(p);
                    }
                    _ => delivered_now.push(p),
                }
            }
            if delivered_now.len() > 1 && next() % 4 == 0 {
                delivered_now.swap(0, 1);
            }
            for p in delivered_now {
                if let Incoming::Deliver(m) = b.receive(&p) {
                    got.push(u32::from_be_bytes(m.try_into().unwrap()));
                }
            }
            wire_ba.extend(b.poll_ack());
            for p in wire_ba.drain(..) {
                if next() % 3 != 0 {
                    a.receive(&p);
                }
            }
        }
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!(a.unacked(), 0);
    }

    #[test]
    fn sending_respects_the_budget_and_a_reconnect_makes_everything_due() {
        let mut p = Peer::default();
        for i in 0..10u8 {
            p.push(&[i]).unwrap();
        }
        assert_eq!(p.poll_send(0, 1000, 4).len(), 4);
        assert_eq!(p.poll_send(0, 1000, 100).len(), 6);
        assert!(p.poll_send(10, 1000, 100).is_empty(), "nothing due before the timeout");
        assert_eq!(p.poll_send(1000, 1000, 100).len(), 10, "all due after the timeout");
        p.reconnected();
        assert_eq!(p.poll_send(1001, 1000, 3).len(), 3);
    }

    #[test]
    fn malformed_payloads_are_named() {
        let mut p = Peer::default();
        assert_eq!(p.receive(&[]), Incoming::Malformed);
        assert_eq!(p.receive(&[0, 1, 2]), Incoming::Malformed);
        assert_eq!(p.receive(&[9; 9]), Incoming::Malformed);
    }
}
