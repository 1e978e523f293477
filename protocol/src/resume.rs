//! End-to-end resume between two peers (a host and a device), through a relay that keeps no
//! delivery state: sequence numbers and acknowledgements per direction, so each application
//! message is delivered exactly once, in order, across dropped connections and relay restarts.
//!
//! Sans-IO: the caller passes the time in and carries the bytes. Each data frame's payload is
//!
//! ```text
//! 0 ‖ epoch (u64 BE) ‖ seq (u64 BE) ‖ base (u64 BE) ‖ message    a message, numbered from 1
//! 1 ‖ epoch (u64 BE) ‖ seq (u64 BE)        "of your stream `epoch`, I have everything up to seq"
//! ```
//!
//! `epoch` names the sender's incarnation (a process start: it grows across restarts), so a
//! peer that restarts (a `remote` command run again, a host restarted) starts a fresh stream
//! and is not mistaken for a replay of the old one. A receiver follows each incarnation of a
//! peer that sends to it as a stream of its own (up to [`MAX_STREAMS`]), so two processes
//! holding the same key (a `remote watch` and a `remote approve`) can both talk to the host.
//! Past that many, the oldest is forgotten, and if it speaks again it is joined afresh at its
//! `base`: what it still holds may be delivered a second time. Exactly once is the resume
//! layer's promise to well-behaved peers only; a relay can always make up streams, and what
//! refuses a message delivered twice is the envelope's replay window ([`crate::replay`]).
//! Where a receiver starts in a stream it has not seen:
//! - if it has followed a stream of this peer before (the peer restarted), at `base`, the oldest
//!   message the peer still holds, so nothing the new incarnation sent is skipped;
//! - if it just started itself, as its [`Join`] says: a host at `base` (what a device sent while
//!   the host was away is still for it), a device at the first frame that arrives (what the host
//!   sent before was for an earlier process of the device, or for another process of the same
//!   key, which acknowledges it on its own).
//!
//! The payloads are [`Frame`]s: [`Frame::decode`] and [`Frame::encode`] are the only code that
//! reads or writes them here, and `protocol/golden/resume.json` pins their bytes for the
//! browser's copy (`web/src/protocol.js`).
//!
//! The sender keeps what is not yet acknowledged; [`Peer::poll_send`] hands out what is due
//! (never sent, or sent longer ago than the retransmission timeout, or everything after
//! [`Peer::reconnected`]) up to a budget, so the caller can pace itself below the relay's rate
//! limit. The receiver delivers only the next number in sequence, drops duplicates and anything
//! after a gap (it will come again), and acknowledges what it holds.

use std::collections::VecDeque;

/// The most unacknowledged messages kept per peer; past this, [`Peer::push`] refuses.
pub const MAX_UNACKED: usize = 4096;

/// The most incarnations of one peer followed at once; the oldest is forgotten first.
pub const MAX_STREAMS: usize = 8;

/// The bytes before a data frame's message.
pub const DATA_HEADER: usize = 25;
/// The length of an acknowledgement.
pub const ACK_LEN: usize = 17;

/// One resume payload, as it travels inside a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Message number `seq` of the sender's stream `epoch`; `base` is the oldest it still holds
    /// (`1 ≤ base ≤ seq`).
    Data {
        /// The sender's incarnation.
        epoch: u64,
        /// This message's number, from 1.
        seq: u64,
        /// The oldest message the sender still holds.
        base: u64,
        /// The application message.
        message: &'a [u8],
    },
    /// "Of your stream `epoch`, I have everything up to `seq`."
    Ack {
        /// The stream acknowledged (the receiver's incarnation).
        epoch: u64,
        /// Everything up to here was delivered.
        seq: u64,
    },
}

/// Why a payload is not a resume frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its kind's header, or an acknowledgement with bytes after it.
    #[error("a resume frame of the wrong length")]
    Length,
    /// Neither a data frame (0) nor an acknowledgement (1).
    #[error("an unknown resume frame kind {0}")]
    Kind(u8),
    /// A data frame whose base is 0 or past its own number.
    #[error("a resume data frame whose base is not within 1..=seq")]
    Base,
}

impl<'a> Frame<'a> {
    /// Reads a payload.
    pub fn decode(payload: &'a [u8]) -> Result<Self, FrameError> {
        let (&kind, _) = payload.split_first().ok_or(FrameError::Length)?;
        match kind {
            0 => {
                let (Some(epoch), Some(seq), Some(base)) =
                    (be_u64(payload, 1), be_u64(payload, 9), be_u64(payload, 17))
                else {
                    return Err(FrameError::Length);
                };
                if base == 0 || base > seq {
                    return Err(FrameError::Base);
                }
                Ok(Self::Data { epoch, seq, base, message: &payload[DATA_HEADER..] })
            }
            1 => match (payload.len(), be_u64(payload, 1), be_u64(payload, 9)) {
                (ACK_LEN, Some(epoch), Some(seq)) => Ok(Self::Ack { epoch, seq }),
                _ => Err(FrameError::Length),
            },
            other => Err(FrameError::Kind(other)),
        }
    }

    /// Writes a payload.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Self::Data { epoch, seq, base, message } => {
                let mut out = Vec::with_capacity(DATA_HEADER + message.len());
                out.push(0);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&base.to_be_bytes());
                out.extend_from_slice(message);
                out
            }
            Self::Ack { epoch, seq } => {
                let mut out = Vec::with_capacity(ACK_LEN);
                out.push(1);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out
            }
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_UNACKED} messages are waiting for acknowledgement")]
pub struct Backlog;

/// Where this side, just started, joins a peer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// At the oldest message the peer still holds.
    AtBase,
    /// At the first frame that arrives.
    AtFirstFrame,
}

/// One incarnation of the peer, as received.
#[derive(Debug, Clone, Copy)]
struct Stream {
    epoch: u64,
    delivered: u64,
    ack_due: bool,
}

/// Resume state with one peer.
#[derive(Debug)]
pub struct Peer {
    epoch: u64,
    join: Join,
    next_seq: u64,
    /// (seq, message, last sent at ms)
    unacked: VecDeque<(u64, Vec<u8>, Option<u64>)>,
    /// The peer's incarnations being received.
    streams: Vec<Stream>,
    /// Whether any stream of this peer was ever followed.
    followed: bool,
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

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

impl Peer {
    /// Resume state for a sender whose incarnation is `epoch` (larger than any before it), that
    /// joins the peer's streams as `join` says.
    pub fn new(epoch: u64, join: Join) -> Self {
        Self {
            epoch,
            join,
            next_seq: 0,
            unacked: VecDeque::new(),
            streams: Vec::new(),
            followed: false,
        }
    }

    /// Numbers a message and keeps it until acknowledged; [`Peer::poll_send`] hands it out.
    pub fn push(&mut self, message: &[u8]) -> Result<u64, Backlog> {
        if self.unacked.len() >= MAX_UNACKED {
            return Err(Backlog);
        }
        self.next_seq += 1;
        self.unacked.push_back((self.next_seq, message.to_vec(), None));
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
        match Frame::decode(payload) {
            Ok(Frame::Data { epoch, seq, base, message }) => {
                let at = match self.streams.iter().position(|s| s.epoch == epoch) {
                    Some(at) => at,
                    None => {
                        let start = if self.followed || self.join == Join::AtBase {
                            base - 1
                        } else {
                            seq - 1
                        };
                        if self.streams.len() >= MAX_STREAMS
                            && let Some(oldest) =
                                (0..self.streams.len()).min_by_key(|&i| self.streams[i].epoch)
                        {
                            self.streams.swap_remove(oldest);
                        }
                        self.followed = true;
                        self.streams.push(Stream { epoch, delivered: start, ack_due: false });
                        self.streams.len() - 1
                    }
                };
                let stream = &mut self.streams[at];
                // What the sender no longer holds (below `base`, its oldest) will never come:
                // another process of this key acknowledged it (each sees the same stream). So
                // this one goes on from there instead of waiting for it for ever. With one
                // process per key this never happens: only it acknowledges.
                if stream.delivered < base - 1 {
                    stream.delivered = base - 1;
                }
                // A duplicate (already delivered) or ahead of a gap gets an acknowledgement of
                // what is held, so the sender knows where to resume.
                stream.ack_due = true;
                // A stream that reached the last number delivers nothing more.
                if stream.delivered.checked_add(1) == Some(seq) {
                    stream.delivered = seq;
                    Incoming::Deliver(message.to_vec())
                } else {
                    Incoming::Nothing
                }
            }
            Ok(Frame::Ack { epoch, seq }) => {
                if epoch == self.epoch {
                    while self.unacked.front().is_some_and(|(s, _, _)| *s <= seq) {
                        self.unacked.pop_front();
                    }
                }
                Incoming::Nothing
            }
            Err(_) => Incoming::Malformed,
        }
    }

    /// The acknowledgements to send (one per stream that has news).
    pub fn poll_acks(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for stream in self.streams.iter_mut().filter(|s| s.ack_due) {
            stream.ack_due = false;
            out.push(Frame::Ack { epoch: stream.epoch, seq: stream.delivered }.encode());
        }
        out
    }

    /// Up to `budget` payloads that are due, oldest first: never sent yet, or sent more than
    /// `rto_ms` ago without an acknowledgement.
    pub fn poll_send(&mut self, now_ms: u64, rto_ms: u64, budget: usize) -> Vec<Vec<u8>> {
        let Some(&(base, _, _)) = self.unacked.front() else { return Vec::new() };
        let mut out = Vec::new();
        for (seq, message, sent) in &mut self.unacked {
            if out.len() >= budget {
                break;
            }
            if sent.is_none_or(|t| now_ms.saturating_sub(t) >= rto_ms) {
                *sent = Some(now_ms);
                out.push(Frame::Data { epoch: self.epoch, seq: *seq, base, message }.encode());
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
        let (mut a, mut b) = (Peer::new(1, Join::AtBase), Peer::new(2, Join::AtBase));
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
            wire_ba.extend(b.poll_acks());
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
        let mut p = Peer::new(1, Join::AtBase);
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

    /// Two processes of one device key hear the same stream; what one acknowledged is not sent
    /// again, so the other, joined at a frame sent again, must not wait for it for ever.
    #[test]
    fn a_second_process_of_a_key_goes_on_past_what_the_first_acknowledged() {
        let mut host = Peer::new(1, Join::AtBase);
        let (mut first, mut second) =
            (Peer::new(2, Join::AtFirstFrame), Peer::new(3, Join::AtFirstFrame));
        for i in 1..=3u8 {
            host.push(&[i]).unwrap();
        }
        let sent = host.poll_send(0, 1000, 100);
        // The second process's channel opens as the first frame is sent again (the others
        // were not sealed for it).
        for frame in &sent {
            assert!(matches!(first.receive(frame), Incoming::Deliver(_)));
        }
        assert!(matches!(second.receive(&sent[0]), Incoming::Deliver(m) if m == [1]));
        // The first acknowledges all three; the host sends on, from 4.
        for ack in first.poll_acks() {
            host.receive(&ack);
        }
        host.push(&[4]).unwrap();
        let next = host.poll_send(1, 1000, 100);
        assert_eq!(next.len(), 1, "2 and 3 are acknowledged: not sent again");
        assert!(matches!(second.receive(&next[0]), Incoming::Deliver(m) if m == [4]));
        assert!(matches!(first.receive(&next[0]), Incoming::Deliver(m) if m == [4]));
    }

    #[test]
    fn malformed_payloads_are_named() {
        let mut p = Peer::new(1, Join::AtBase);
        assert_eq!(p.receive(&[]), Incoming::Malformed);
        assert_eq!(p.receive(&[0, 1, 2]), Incoming::Malformed);
        assert_eq!(p.receive(&[9; 9]), Incoming::Malformed);
        assert_eq!(p.receive(&[0; 17]), Incoming::Malformed, "a message without its base");
    }

    /// Found by the fuzzer: a stream that reached the last number took the next as 0 + 1.
    #[test]
    fn a_stream_at_the_last_number_delivers_nothing_more() {
        let mut p = Peer::new(1, Join::AtFirstFrame);
        let last = |message: &'static [u8]| {
            Frame::Data { epoch: 9, seq: u64::MAX, base: u64::MAX, message }.encode()
        };
        assert_eq!(p.receive(&last(b"a")), Incoming::Deliver(b"a".to_vec()));
        assert_eq!(p.receive(&last(b"b")), Incoming::Nothing);
    }

    /// A side that joins a stream late (a new process for a key another process of the same key
    /// keeps acknowledging) starts at the first frame it gets instead of waiting for messages
    /// the peer no longer holds.
    #[test]
    fn a_late_joiner_starts_at_the_first_frame_it_gets() {
        let mut host = Peer::new(100, Join::AtBase);
        let mut watcher = Peer::new(7, Join::AtFirstFrame);
        for m in [b"one", b"two"] {
            host.push(m).unwrap();
        }
        let early = host.poll_send(0, 1000, 10);
        // Nobody acknowledges these yet; a new process of the same key joins now.
        let mut joiner = Peer::new(8, Join::AtFirstFrame);
        host.push(b"three").unwrap();
        let late = host.poll_send(1, 1000, 10);
        assert_eq!(late.len(), 1);
        assert_eq!(joiner.receive(&late[0]), Incoming::Deliver(b"three".to_vec()));
        // The watcher saw everything and acknowledges for the key; the joiner's old frames
        // are duplicates to it now.
        for f in early.iter().chain(&late) {
            assert!(matches!(watcher.receive(f), Incoming::Deliver(_)));
        }
        for ack in watcher.poll_acks() {
            host.receive(&ack);
        }
        assert_eq!(host.unacked(), 0);
        assert_eq!(joiner.receive(&early[0]), Incoming::Nothing);
    }

    /// A peer that restarts (a new epoch) starts a new stream at the other side, which neither
    /// waits for what went to the old incarnation nor mistakes the new one for duplicates.
    #[test]
    fn a_restarted_peer_starts_a_fresh_stream() {
        let mut host = Peer::new(100, Join::AtBase);
        let mut old = Peer::new(5, Join::AtFirstFrame);
        for m in [b"a", b"b"] {
            old.push(m).unwrap();
        }
        let old_frames = old.poll_send(0, 1000, 10);
        for f in &old_frames {
            assert!(matches!(host.receive(f), Incoming::Deliver(_)));
        }
        // The host sends two messages that the old device never acknowledges.
        host.push(b"for the old one").unwrap();
        host.push(b"also").unwrap();
        let _ = host.poll_send(0, 1000, 10);
        let mut new = Peer::new(6, Join::AtFirstFrame);
        new.push(b"first of the new one").unwrap();
        for f in new.poll_send(1, 1000, 10) {
            assert_eq!(host.receive(&f), Incoming::Deliver(b"first of the new one".to_vec()));
        }
        // A late copy of the old incarnation's frame is a duplicate in its own stream; and that
        // incarnation (another process of the same key, still running) is still heard.
        assert_eq!(host.receive(&old_frames[0]), Incoming::Nothing);
        old.push(b"c").unwrap();
        let more = old.poll_send(2, 1000, 10);
        assert_eq!(host.receive(more.last().unwrap()), Incoming::Deliver(b"c".to_vec()));
        // What the host still holds reaches the new incarnation from its oldest unacknowledged.
        host.push(b"new news").unwrap();
        let got: Vec<Incoming> =
            host.poll_send(5000, 1000, 10).iter().map(|f| new.receive(f)).collect();
        assert_eq!(
            got,
            [b"for the old one".as_slice(), b"also", b"new news"]
                .map(|m| Incoming::Deliver(m.to_vec()))
        );
        for ack in new.poll_acks() {
            host.receive(&ack);
        }
        assert_eq!(host.unacked(), 0);
    }
}
