//! The rules of one authenticated connection, without I/O and without a clock: what each
//! message a client sends turns into ([`Step`]), given the time it arrived.
//!
//! It holds the connection's rate limit (a token bucket of data frames), the shape checks of data
//! frames and the control messages each side may send. It must not hold routing state, sockets or
//! timers: the hub routes, and the session in [`crate::server`] carries bytes and passes the
//! time in, so every rule here is tested without TLS or a WebSocket.

use std::time::{Duration, Instant};

use protocol::relay::{CloseCode, FrameKind, Side, ToRelay};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::server::Limits;

/// How often a connection is told, at most, that a frame of its went undelivered.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// What a message from the client asks of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Route a data frame: to `peer`, or (`broadcast`) to all of a host's devices.
    Route {
        /// To all the devices the sending host registered.
        broadcast: bool,
        /// The addressee (ignored for a broadcast).
        peer: protocol::RelayKey,
        /// The payload's length, for the figures.
        payload_len: usize,
    },
    /// A host's signed device list, to check and apply.
    Register {
        /// Its counter.
        counter: u64,
        /// Device keys, hex.
        devices: Vec<String>,
        /// Offer tokens, hex.
        offers: Vec<String>,
        /// Its signature, hex.
        signature: String,
    },
    /// A new device asks to reach a host through an open pairing offer.
    Knock {
        /// The host's key, hex.
        host: String,
        /// The offer's token, hex.
        token: String,
    },
    /// Nothing to do (a ping, a pong).
    Nothing,
    /// The client closed.
    End,
    /// Close the connection with this code and reason.
    Close(CloseCode, String),
}

/// One authenticated connection's state.
#[derive(Debug)]
pub struct State {
    side: Side,
    /// A device's rate and burst: every connection's until a host registers devices.
    device: (u32, u32),
    /// The most a host's may grow to.
    host_max: (u32, u32),
    frames_per_sec: u32,
    burst: u32,
    tokens: f64,
    refilled: Instant,
    last_notice: Option<Instant>,
}

impl State {
    /// A connection of `side`, authenticated at `now`, under `limits`.
    pub fn new(side: Side, limits: &Limits, now: Instant) -> Self {
        Self {
            side,
            device: (limits.frames_per_sec, limits.burst),
            host_max: (limits.host_frames_per_sec, limits.host_burst),
            frames_per_sec: limits.frames_per_sec,
            burst: limits.burst,
            tokens: f64::from(limits.burst),
            refilled: now,
            last_notice: None,
        }
    }

    /// What this connection may send now: data frames per second and the burst.
    pub fn rate(&self) -> (u32, u32) {
        (self.frames_per_sec, self.burst)
    }

    /// A host registered `devices` (distinct keys): its rate becomes
    /// [`protocol::relay::host_rate`]'s, if that is more than it has; it is not lowered while
    /// the connection lasts (the host would be cut off for frames it sent at the old rate before
    /// it heard the new one, and a host could keep the keys it registered anyway). The new
    /// rate, if it changed.
    pub fn registered(&mut self, devices: usize) -> Option<(u32, u32)> {
        if self.side != Side::Host {
            return None;
        }
        let rate = protocol::relay::host_rate(self.device.0, devices, self.host_max.0);
        let burst = protocol::relay::host_rate(self.device.1, devices, self.host_max.1);
        if rate <= self.frames_per_sec && burst <= self.burst {
            return None;
        }
        self.frames_per_sec = self.frames_per_sec.max(rate);
        self.burst = self.burst.max(burst);
        Some(self.rate())
    }

    /// What `message`, arrived at `now`, asks of the relay.
    pub fn handle(&mut self, now: Instant, message: &Message) -> Step {
        match message {
            Message::Binary(frame) => self.data(now, frame),
            Message::Text(text) => match serde_json::from_str::<ToRelay>(text) {
                Ok(ToRelay::Register { counter, devices, offers, signature })
                    if self.side == Side::Host =>
                {
                    Step::Register { counter, devices, offers, signature }
                }
                Ok(ToRelay::Knock { host, token }) if self.side == Side::Device => {
                    Step::Knock { host, token }
                }
                _ => Step::Close(CloseCode::Policy, "unexpected control message".into()),
            },
            Message::Close(_) => Step::End,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Step::Nothing,
        }
    }

    fn data(&mut self, now: Instant, frame: &[u8]) -> Step {
        let refill = now.saturating_duration_since(self.refilled).as_secs_f64()
            * f64::from(self.frames_per_sec);
        self.tokens = (self.tokens + refill).min(f64::from(self.burst));
        self.refilled = now;
        if self.tokens < 1.0 {
            let reason = format!("rate limit: over {} frames per second", self.frames_per_sec);
            return Step::Close(CloseCode::Policy, reason);
        }
        self.tokens -= 1.0;
        match protocol::relay::split_frame(frame) {
            Ok((kind, peer, payload)) => Step::Route {
                broadcast: kind == FrameKind::Broadcast,
                peer,
                payload_len: payload.len(),
            },
            Err(e) => Step::Close(CloseCode::Policy, e.to_string()),
        }
    }

    /// Whether a frame that went undelivered at `now` is to be reported (at most once per
    /// [`NOTICE_INTERVAL`]).
    pub fn notice_due(&mut self, now: Instant) -> bool {
        let due =
            self.last_notice.is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_INTERVAL);
        if due {
            self.last_notice = Some(now);
        }
        due
    }
}

/// How a broken read ends the connection: the close for what the client did wrong, or `None`
/// when the connection itself failed (nothing to say).
pub fn close_for(error: &WsError) -> Option<(CloseCode, String)> {
    match error {
        WsError::Capacity(e) => Some((CloseCode::TooBig, format!("frame too large: {e}"))),
        WsError::Protocol(e) => Some((CloseCode::ProtocolError, format!("protocol error: {e}"))),
        WsError::Utf8(_) => Some((CloseCode::InvalidData, "text frame is not UTF-8".into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            frames_per_sec: 10,
            burst: 3,
            host_frames_per_sec: 10,
            host_burst: 3,
            ..Limits::default()
        }
    }

    fn frame(kind: u8, len: usize) -> Message {
        let mut bytes = vec![kind];
        bytes.extend([7; 32]);
        bytes.extend(vec![0; len]);
        Message::binary(bytes)
    }

    #[test]
    fn data_frames_route_within_the_rate_and_close_past_it() {
        let t0 = Instant::now();
        let mut conn = State::new(Side::Host, &limits(), t0);
        let to =
            Step::Route { broadcast: false, peer: protocol::RelayKey([7; 32]), payload_len: 5 };
        for _ in 0..3 {
            assert_eq!(conn.handle(t0, &frame(1, 5)), to);
        }
        let Step::Close(code, reason) = conn.handle(t0, &frame(1, 5)) else { panic!() };
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Policy, "rate limit: over 10 frames per second")
        );
        // A tenth of a second later there is room for one more, and a broadcast is a broadcast.
        let mut conn = State::new(Side::Host, &limits(), t0);
        for _ in 0..3 {
            conn.handle(t0, &frame(1, 0));
        }
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            conn.handle(later, &frame(2, 0)),
            Step::Route { broadcast: true, peer: protocol::RelayKey([7; 32]), payload_len: 0 }
        );
        assert!(matches!(conn.handle(later, &frame(1, 0)), Step::Close(CloseCode::Policy, _)));
        // A clock that steps back refills nothing and breaks nothing.
        assert!(matches!(conn.handle(t0, &frame(1, 0)), Step::Close(CloseCode::Policy, _)));
    }

    #[test]
    fn a_host_sends_a_devices_rate_for_each_device_it_registered() {
        let t0 = Instant::now();
        let limits = Limits { host_frames_per_sec: 25, host_burst: 7, ..limits() };
        let mut host = State::new(Side::Host, &limits, t0);
        let mut device = State::new(Side::Device, &limits, t0);
        // Before it registers, a host is a device.
        assert_eq!(host.rate(), (10, 3));
        assert_eq!(device.registered(5), None);
        assert_eq!(host.registered(0), None);
        assert_eq!(host.registered(2), Some((20, 6)));
        assert_eq!(host.registered(2), None);
        // Up to the most a host may send.
        assert_eq!(host.registered(200), Some((25, 7)));
        for _ in 0..3 {
            assert!(matches!(device.handle(t0, &frame(1, 0)), Step::Route { .. }));
        }
        assert!(matches!(device.handle(t0, &frame(1, 0)), Step::Close(CloseCode::Policy, _)));
        // The bucket fills at the new rate (it does not start full again).
        let later = t0 + Duration::from_millis(1_000);
        for _ in 0..7 {
            assert!(matches!(host.handle(later, &frame(1, 0)), Step::Route { .. }));
        }
        let Step::Close(_, reason) = host.handle(later, &frame(1, 0)) else { panic!() };
        assert_eq!(reason, "rate limit: over 25 frames per second");
        // Fewer devices: the rate stays while the connection lasts.
        assert_eq!(host.registered(1), None);
        assert_eq!(host.rate(), (25, 7));
    }

    #[test]
    fn malformed_frames_close_with_a_reason() {
        let t0 = Instant::now();
        let mut conn = State::new(Side::Device, &limits(), t0);
        assert_eq!(
            conn.handle(t0, &Message::binary(vec![1; 5])),
            Step::Close(CloseCode::Policy, "data frame shorter than its routing header".into())
        );
        assert_eq!(
            conn.handle(t0, &frame(9, 1)),
            Step::Close(CloseCode::Policy, "unknown data frame kind 9".into())
        );
        assert_eq!(
            conn.handle(t0, &Message::text("{\"type\":\"nonsense\"}")),
            Step::Close(CloseCode::Policy, "unexpected control message".into())
        );
    }

    #[test]
    fn each_side_sends_only_its_own_control_messages() {
        let t0 = Instant::now();
        let register = Message::text(
            r#"{"type":"register","counter":1,"devices":[],"offers":[],"signature":"00"}"#,
        );
        let knock = Message::text(r#"{"type":"knock","host":"aa","token":"bb"}"#);
        let mut host = State::new(Side::Host, &limits(), t0);
        assert!(matches!(host.handle(t0, &register), Step::Register { counter: 1, .. }));
        assert!(matches!(host.handle(t0, &knock), Step::Close(CloseCode::Policy, _)));
        let mut device = State::new(Side::Device, &limits(), t0);
        assert_eq!(
            device.handle(t0, &knock),
            Step::Knock { host: "aa".into(), token: "bb".into() }
        );
        assert!(matches!(device.handle(t0, &register), Step::Close(CloseCode::Policy, _)));
        // A hello after the handshake is no control message either.
        let hello =
            Message::text(r#"{"type":"hello","side":"device","key":"aa","signature":"bb"}"#);
        assert!(matches!(device.handle(t0, &hello), Step::Close(CloseCode::Policy, _)));
        assert_eq!(device.handle(t0, &Message::Ping(Default::default())), Step::Nothing);
        assert_eq!(device.handle(t0, &Message::Close(None)), Step::End);
    }

    #[test]
    fn undelivered_notices_come_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut conn = State::new(Side::Device, &limits(), t0);
        assert!(conn.notice_due(t0));
        assert!(!conn.notice_due(t0 + Duration::from_millis(999)));
        assert!(conn.notice_due(t0 + NOTICE_INTERVAL));
    }

    #[test]
    fn broken_reads_get_their_close_codes() {
        use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
        let big = WsError::Capacity(CapacityError::MessageTooLong { size: 9, max_size: 1 });
        assert_eq!(close_for(&big).map(|c| c.0), Some(CloseCode::TooBig));
        let broken = WsError::Protocol(ProtocolError::NonZeroReservedBits);
        assert_eq!(close_for(&broken).map(|c| c.0), Some(CloseCode::ProtocolError));
        assert_eq!(close_for(&WsError::ConnectionClosed), None);
    }
}
