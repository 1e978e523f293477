//! Attacks on the envelope, each of which must be refused with the error that names it: what a
//! hostile relay or network can do to a frame (tamper, truncate, extend, replay, redirect, hold
//! back) and what a confused or malicious sender can put in one.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use protocol::envelope::{
    EnvelopeError, HEADER_LEN, MIN_FRAME, SealContext, VERSION, VerifyContext, seal,
};
use protocol::limits::MAX_FRAME;
use protocol::message::PayloadError;
use protocol::replay::ReplayError;
use protocol::{Action, Message, ReplayWindow, Request, SecretKey};

fn open(frame: &[u8]) -> Result<Message, EnvelopeError> {
    open_at_host(frame, NOW_MS, &mut ReplayWindow::new())
}

#[test]
fn the_untouched_frame_opens() {
    let frame = request_frame(1);
    let Message::Request(Request::Action { action: Action::ReadFile { path }, .. }) =
        open(&frame).unwrap()
    else {
        panic!("wrong message")
    };
    assert_eq!(path, "README.md");
}

#[test]
fn every_single_byte_tamper_is_refused_with_the_right_error() {
    let frame = request_frame(1);
    let mut tried = 0;
    for at in 0..frame.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = frame.clone();
            bad[at] ^= flip;
            let err =
                open(&bad).expect_err(&format!("tamper at byte {at} with {flip:#x} accepted"));
            let ok = match at {
                0 => matches!(err, EnvelopeError::UnknownVersion(_)),
                // Another known kind is signed over, so it fails the signature; an unknown one
                // fails before.
                1 => matches!(err, EnvelopeError::UnknownKind(_) | EnvelopeError::BadSignature(_)),
                2..34 => matches!(err, EnvelopeError::UnexpectedSender),
                34..66 => matches!(err, EnvelopeError::WrongRecipient),
                66..90 => matches!(err, EnvelopeError::BadSignature(_)),
                90..94 => matches!(err, EnvelopeError::Truncated | EnvelopeError::TrailingBytes(_)),
                // Payload and signature bytes.
                _ => matches!(err, EnvelopeError::BadSignature(_)),
            };
            assert!(ok, "tamper at byte {at} with {flip:#x}: unexpected error {err:?}");
            tried += 1;
        }
    }
    assert_eq!(tried, frame.len() * 3);
}

#[test]
fn a_frame_for_another_recipient_is_refused() {
    let other = SecretKey::from_seed(&[0x44; 32]).public_key();
    let frame = seal(&device(), &to_host(&other, 1), &read_message()).unwrap();
    assert!(matches!(open(&frame), Err(EnvelopeError::WrongRecipient)));
}

fn read_message() -> Message {
    Message::Request(Request::Action {
        id: request_id(9),
        action: Action::ReadFile { path: "x".into() },
    })
}

#[test]
fn duplicate_stale_and_far_future_counters_are_refused() {
    let mut window = ReplayWindow::new();
    open_at_host(&request_frame(1), NOW_MS, &mut window).unwrap();
    assert!(matches!(
        open_at_host(&request_frame(1), NOW_MS, &mut window),
        Err(EnvelopeError::Replay(ReplayError::Duplicate { counter: 1 }))
    ));
    open_at_host(&request_frame(100), NOW_MS, &mut window).unwrap();
    // Reordered inside the window: fine once.
    open_at_host(&request_frame(99), NOW_MS, &mut window).unwrap();
    // Older than the window.
    assert!(matches!(
        open_at_host(&request_frame(2), NOW_MS, &mut window),
        Err(EnvelopeError::Replay(ReplayError::Stale { counter: 2, highest: 100 }))
    ));
    let far = 100 + window.max_ahead() + 1;
    assert!(matches!(
        open_at_host(&request_frame(far), NOW_MS, &mut window),
        Err(EnvelopeError::Replay(ReplayError::TooFarAhead { .. }))
    ));
}

#[test]
fn a_refused_frame_does_not_burn_its_counter() {
    // A replayed counter must stay refused, but a frame that fails for another reason (here:
    // expired) must not record its counter, or a relay could burn a device's future counters.
    let mut window = ReplayWindow::new();
    let late = NOW_MS + LIFETIME_MS + 3_600_000;
    assert!(open_at_host(&request_frame(5), late, &mut window).is_err());
    open_at_host(&request_frame(5), NOW_MS, &mut window).unwrap();
}

#[test]
fn counters_survive_a_restart_of_the_receiver() {
    let mut window = ReplayWindow::new();
    open_at_host(&request_frame(7), NOW_MS, &mut window).unwrap();
    let persisted = serde_json::to_string(&window.export()).unwrap();
    let mut restarted = ReplayWindow::restore(serde_json::from_str(&persisted).unwrap());
    assert!(matches!(
        open_at_host(&request_frame(7), NOW_MS, &mut restarted),
        Err(EnvelopeError::Replay(ReplayError::Duplicate { counter: 7 }))
    ));
}

#[test]
fn expiry_and_issue_time_are_enforced_with_skew() {
    let frame = request_frame(1);
    let skew = VerifyContext::new(&host().public_key(), 0).max_skew_ms;
    let expires = NOW_MS + LIFETIME_MS;
    // Just inside the skew after expiry: accepted. Just outside: expired.
    open_at_host(&frame, expires + skew, &mut ReplayWindow::new()).unwrap();
    assert!(matches!(
        open_at_host(&frame, expires + skew + 1, &mut ReplayWindow::new()),
        Err(EnvelopeError::Expired { .. })
    ));
    // Issued in the future beyond the skew (the receiver's clock is behind).
    open_at_host(&frame, NOW_MS - skew, &mut ReplayWindow::new()).unwrap();
    assert!(matches!(
        open_at_host(&frame, NOW_MS - skew - 1, &mut ReplayWindow::new()),
        Err(EnvelopeError::IssuedInFuture { ahead_ms }) if ahead_ms == skew + 1
    ));
}

#[test]
fn lifetimes_that_are_empty_inverted_or_too_long_are_refused() {
    let host_key = host().public_key();
    let max = VerifyContext::new(&host_key, 0).max_lifetime_ms;
    for (issued, expires) in [(NOW_MS, NOW_MS), (NOW_MS, NOW_MS - 1), (NOW_MS, NOW_MS + max + 1)] {
        let ctx = SealContext {
            recipient: &host_key,
            counter: 1,
            issued_at_ms: issued,
            expires_at_ms: expires,
        };
        let frame = seal(&device(), &ctx, &read_message()).unwrap();
        assert!(
            matches!(open(&frame), Err(EnvelopeError::BadLifetime { .. })),
            "issued {issued}, expires {expires}"
        );
    }
}

#[test]
fn unknown_version_and_kind_are_refused() {
    let mut frame = request_frame(1);
    frame[0] = VERSION + 1;
    assert!(matches!(open(&frame), Err(EnvelopeError::UnknownVersion(2))));
    // A future version is refused as such even when its layout is shorter.
    assert!(matches!(open(&[VERSION + 1]), Err(EnvelopeError::UnknownVersion(2))));
    let mut frame = request_frame(1);
    frame[1] = 0x7f;
    assert!(matches!(open(&frame), Err(EnvelopeError::UnknownKind(0x7f))));
}

#[test]
fn truncated_frames_are_refused_at_every_length() {
    let frame = request_frame(1);
    for len in 0..frame.len() {
        let err = open(&frame[..len]).expect_err("truncated frame accepted");
        assert!(matches!(err, EnvelopeError::Truncated), "length {len}: {err:?}");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut frame = request_frame(1);
    frame.push(0);
    assert!(matches!(open(&frame), Err(EnvelopeError::TrailingBytes(1))));
}

#[test]
fn oversized_frames_are_refused_before_parsing() {
    // Garbage of more than the limit: refused for its size, not for its (absent) structure.
    let huge = vec![0u8; MAX_FRAME + 1];
    assert!(matches!(
        open(&huge),
        Err(EnvelopeError::Oversized { len, max: MAX_FRAME }) if len == MAX_FRAME + 1
    ));
    // A header that claims a payload larger than the frame limit is truncated, not allocated.
    let mut frame = request_frame(1);
    frame[90..94].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(open(&frame), Err(EnvelopeError::Truncated)));
}

#[test]
fn a_signed_payload_of_the_wrong_kind_is_refused() {
    // A genuine signature over a payload that is not a message of its declared kind: the
    // signature passes, the payload does not.
    let frame = resign(request_frame(1), |f| f[1] = protocol::MessageKind::Decision as u8);
    assert!(matches!(open(&frame), Err(EnvelopeError::Payload(PayloadError::Syntax(_)))));
}

#[test]
fn a_signed_payload_over_a_limit_is_refused() {
    let frame = resign(request_frame(1), |f| {
        let payload = br#"{"type":"action","id":"01010101010101010101010101010101","action":{"type":"run","argv":[],"cwd":"."}}"#;
        f.truncate(HEADER_LEN);
        f[90..94].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
    });
    assert!(matches!(open(&frame), Err(EnvelopeError::Payload(PayloadError::Invalid(_)))));
}

/// Edits the unsigned part of `frame` and signs it again with the device key, as a sender
/// (not the relay) could.
fn resign(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    frame.truncate(frame.len() - 64);
    edit(&mut frame);
    let mut signed = protocol::envelope::DOMAIN.to_vec();
    signed.extend_from_slice(&frame);
    let signature = device().sign(&signed);
    frame.extend_from_slice(&signature);
    frame
}

#[test]
fn a_frame_signed_by_another_key_is_refused() {
    // A stranger (or the relay) signs a perfect frame with its own key: the header names the
    // stranger, not the device the receiver holds a key for.
    let stranger = SecretKey::from_seed(&[0x55; 32]);
    let host_key = host().public_key();
    let frame = seal(&stranger, &to_host(&host_key, 1), &read_message()).unwrap();
    assert!(matches!(open(&frame), Err(EnvelopeError::UnexpectedSender)));
    // Claiming the device's key in the header while signing with another key fails the
    // signature check instead.
    let mut forged = frame;
    forged[2..34].copy_from_slice(device().public_key().as_bytes());
    assert!(matches!(open(&forged), Err(EnvelopeError::BadSignature(_))));
}

#[test]
fn a_small_order_key_is_refused_when_first_seen() {
    // An unknown sender's key is only ever accepted by the pairing flow, through key acceptance.
    // The identity point would make a "signature" with S = 0 valid for any message under a
    // cofactorless check; it never becomes a key to verify with.
    let mut frame = request_frame(1);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    frame[2..34].copy_from_slice(&identity);
    let sealed = protocol::Sealed::decode(&frame).unwrap();
    assert_eq!(
        protocol::PublicKey::from_bytes(sealed.sender()),
        Err(protocol::keys::KeyError::SmallOrder)
    );
}

#[test]
fn sealing_checks_limits_too() {
    let host_key = host().public_key();
    let bad = Message::Request(Request::Action {
        id: request_id(1),
        action: Action::Run { argv: vec![], cwd: ".".into(), env: Default::default() },
    });
    assert!(seal(&device(), &to_host(&host_key, 1), &bad).is_err());
    assert!(MIN_FRAME < request_frame(1).len());
}
