//! The signed envelope: the one frame format every request, decision, event and pairing
//! message travels in.
//!
//! ```text
//! offset  size  field
//!      0     1  version            1
//!      1     1  kind               MessageKind as u8
//!      2    32  sender             Ed25519 public key
//!     34    32  recipient          Ed25519 public key
//!     66     8  counter            u64 big-endian, per (sender, recipient), from 1
//!     74     8  issued_at_ms       u64 big-endian, Unix time in milliseconds
//!     82     8  expires_at_ms      u64 big-endian
//!     90     4  payload_len        u32 big-endian
//!     94     n  payload            JSON (see crate::message)
//!   94+n    64  signature          Ed25519 over DOMAIN ‖ bytes[0 .. 94+n]
//! ```
//!
//! The signature covers the exact bytes that travel, behind a domain-separation prefix, so it
//! cannot be mistaken for a signature over anything else, and no re-encoding sits between what
//! was signed and what is checked.
//!
//! Receiving is two steps. [`Sealed::decode`] checks the frame's shape (size, version, kind,
//! lengths) and parses nothing else. The caller then looks up the claimed [`Sealed::sender`] among
//! the keys it already accepted (a paired device, the host from the pairing link) together with
//! that sender's replay window; a key it has never seen is accepted only by the pairing flow,
//! through [`PublicKey::from_bytes`] (which refuses small-order and non-canonical keys).
//! [`Sealed::verify`] is then given that vetted key: it checks sender and recipient, runs
//! `verify_strict`, checks the times and the counter, and only then parses the payload. Only it
//! makes a [`Verified`] value. Taking the key from the caller also means a known key is
//! decompressed once, not once per frame.

use crate::keys::{BadSignature, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, SecretKey};
use crate::limits::MAX_FRAME;
use crate::message::{Message, MessageError, MessageKind, PayloadError};
use crate::replay::{ReplayError, ReplayWindow};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The prefix signed before the frame bytes.
pub const DOMAIN: &[u8] = b"agent-bridge envelope v1\0";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 94;
/// The smallest possible frame: a header, an empty payload and a signature.
pub const MIN_FRAME: usize = HEADER_LEN + SIGNATURE_LEN;

/// Why a frame was refused. Everything a peer can get wrong has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than [`MAX_FRAME`]; nothing was parsed.
    #[error("frame of {len} bytes is over the limit of {max}")]
    Oversized {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its header or its declared payload and signature.
    #[error("frame is truncated")]
    Truncated,
    /// Bytes after the signature.
    #[error("{0} bytes after the signature")]
    TrailingBytes(usize),
    /// A protocol version this side does not speak.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    /// A message kind this version does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Signed by another key than the one the receiver expected from this sender.
    #[error("frame is not from the expected sender")]
    UnexpectedSender,
    /// Addressed to someone else.
    #[error("frame is addressed to another recipient")]
    WrongRecipient,
    /// The signature does not verify under the sender's key.
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    /// `expires_at` is not after `issued_at`, or the lifetime is longer than allowed.
    #[error("lifetime from {issued_at_ms} to {expires_at_ms} is not allowed")]
    BadLifetime {
        /// Claimed issue time.
        issued_at_ms: u64,
        /// Claimed expiry.
        expires_at_ms: u64,
    },
    /// Issued further in the future than the allowed clock skew.
    #[error("issued {ahead_ms} ms in the future")]
    IssuedInFuture {
        /// How far ahead of the receiver's clock.
        ahead_ms: u64,
    },
    /// Expired (beyond the allowed clock skew).
    #[error("expired {ago_ms} ms ago")]
    Expired {
        /// How long ago, by the receiver's clock.
        ago_ms: u64,
    },
    /// Stale, duplicate or far-future counter.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The payload does not parse as its kind, or breaks a limit.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// Why a message could not be sealed (local misuse, never a peer's fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The message breaks a limit or holds an impossible value.
    #[error(transparent)]
    Invalid(#[from] MessageError),
    /// The frame would exceed [`MAX_FRAME`].
    #[error("frame of {0} bytes would be over the limit of {MAX_FRAME}")]
    Oversized(usize),
}

/// The signed context of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: MessageKind,
    /// Who signed it (claimed until verified; see [`Verified::sender`]).
    pub sender: [u8; PUBLIC_KEY_LEN],
    /// To whom (checked equal to the receiver's own key by `verify`).
    pub recipient: [u8; PUBLIC_KEY_LEN],
    /// The sender's counter for this recipient.
    pub counter: u64,
    /// When it was signed (Unix ms, by the sender's clock).
    pub issued_at_ms: u64,
    /// When it stops being valid (Unix ms).
    pub expires_at_ms: u64,
}

/// What a sender puts in the header besides its own key and the kind.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    /// The recipient.
    pub recipient: &'a PublicKey,
    /// The next counter for this recipient, persisted by the sender before the frame leaves.
    pub counter: u64,
    /// Now, by the sender's clock (Unix ms).
    pub issued_at_ms: u64,
    /// When the frame lapses (Unix ms).
    pub expires_at_ms: u64,
}

/// Signs `message` into a frame.
pub fn seal(
    secret: &SecretKey,
    ctx: &SealContext<'_>,
    message: &Message,
) -> Result<Vec<u8>, SealError> {
    message.check()?;
    let payload = message.to_payload();
    let len = MIN_FRAME + payload.len();
    if len > MAX_FRAME {
        return Err(SealError::Oversized(len));
    }
    let payload_len = u32::try_from(payload.len()).map_err(|_| SealError::Oversized(len))?;
    let mut frame = Vec::with_capacity(len);
    frame.push(VERSION);
    frame.push(message.kind() as u8);
    frame.extend_from_slice(secret.public_key().as_bytes());
    frame.extend_from_slice(ctx.recipient.as_bytes());
    frame.extend_from_slice(&ctx.counter.to_be_bytes());
    frame.extend_from_slice(&ctx.issued_at_ms.to_be_bytes());
    frame.extend_from_slice(&ctx.expires_at_ms.to_be_bytes());
    frame.extend_from_slice(&payload_len.to_be_bytes());
    frame.extend_from_slice(&payload);
    let signature = secret.sign(&signed_bytes(&frame));
    frame.extend_from_slice(&signature);
    Ok(frame)
}

/// `DOMAIN ‖ frame-without-signature`: the exact bytes the signature covers.
fn signed_bytes(unsigned: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + unsigned.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(unsigned);
    out
}

/// A frame whose shape is right and whose signature is not yet checked.
#[derive(Debug)]
pub struct Sealed<'a> {
    header: Header,
    signed: &'a [u8],
    payload: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

/// What the receiver knows that the frame does not say.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// The receiver's own key: frames for anyone else are refused.
    pub me: &'a PublicKey,
    /// Now, by the receiver's clock (Unix ms).
    pub now_ms: u64,
    /// Allowed disagreement between clocks, applied to issue and expiry alike.
    pub max_skew_ms: u64,
    /// The longest lifetime (expiry − issue) accepted.
    pub max_lifetime_ms: u64,
}

impl<'a> VerifyContext<'a> {
    /// Two minutes of skew and ten minutes of lifetime.
    pub fn new(me: &'a PublicKey, now_ms: u64) -> Self {
        Self { me, now_ms, max_skew_ms: 120_000, max_lifetime_ms: 600_000 }
    }

    /// How long after its acceptance a frame may still verify: it was issued at most
    /// `max_skew_ms` ahead, lives at most `max_lifetime_ms`, and is taken up to `max_skew_ms`
    /// after it expired.
    pub fn replayable_for_ms(&self) -> u64 {
        self.max_lifetime_ms + 2 * self.max_skew_ms
    }
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(out)
}

impl<'a> Sealed<'a> {
    /// Checks the frame's shape without trusting anything in it.
    pub fn decode(frame: &'a [u8]) -> Result<Self, EnvelopeError> {
        if frame.len() > MAX_FRAME {
            return Err(EnvelopeError::Oversized { len: frame.len(), max: MAX_FRAME });
        }
        // The version decides the layout, so it is read before anything else.
        let &version = frame.first().ok_or(EnvelopeError::Truncated)?;
        if version != VERSION {
            return Err(EnvelopeError::UnknownVersion(version));
        }
        if frame.len() < MIN_FRAME {
            return Err(EnvelopeError::Truncated);
        }
        let kind = MessageKind::from_byte(frame[1]).ok_or(EnvelopeError::UnknownKind(frame[1]))?;
        let payload_len = u32::from_be_bytes([frame[90], frame[91], frame[92], frame[93]]) as usize;
        let end = HEADER_LEN + payload_len + SIGNATURE_LEN;
        if frame.len() < end {
            return Err(EnvelopeError::Truncated);
        }
        if frame.len() > end {
            return Err(EnvelopeError::TrailingBytes(frame.len() - end));
        }
        let mut sender = [0u8; PUBLIC_KEY_LEN];
        sender.copy_from_slice(&frame[2..34]);
        let mut recipient = [0u8; PUBLIC_KEY_LEN];
        recipient.copy_from_slice(&frame[34..66]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&frame[end - SIGNATURE_LEN..]);
        Ok(Self {
            header: Header {
                kind,
                sender,
                recipient,
                counter: be_u64(frame, 66),
                issued_at_ms: be_u64(frame, 74),
                expires_at_ms: be_u64(frame, 82),
            },
            signed: &frame[..end - SIGNATURE_LEN],
            payload: &frame[HEADER_LEN..end - SIGNATURE_LEN],
            signature,
        })
    }

    /// The claimed sender's key bytes, to look up its vetted key and replay window.
    /// Unverified until [`Sealed::verify`].
    pub fn sender(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.header.sender
    }

    /// The claimed header, unverified. For routing and logging only.
    pub fn unverified_header(&self) -> &Header {
        &self.header
    }

    /// Verifies the frame as sent by `sender` (the vetted key the receiver holds for the claimed
    /// [`Sealed::sender`]) and, on success, parses its payload and records its counter in
    /// `window` (the window of this sender at this receiver).
    pub fn verify(
        self,
        sender: &PublicKey,
        ctx: &VerifyContext<'_>,
        window: &mut ReplayWindow,
    ) -> Result<Verified<Message>, EnvelopeError> {
        let h = &self.header;
        if h.sender != *sender.as_bytes() {
            return Err(EnvelopeError::UnexpectedSender);
        }
        if h.recipient != *ctx.me.as_bytes() {
            return Err(EnvelopeError::WrongRecipient);
        }
        sender.verify(&signed_bytes(self.signed), &self.signature)?;
        check_times(h, ctx)?;
        window.check(h.counter)?;
        let message = Message::from_payload(h.kind, self.payload)?;
        window.commit(h.counter)?;
        Ok(Verified { header: self.header, sender: *sender, message })
    }
}

fn check_times(h: &Header, ctx: &VerifyContext<'_>) -> Result<(), EnvelopeError> {
    let lifetime = h.expires_at_ms.checked_sub(h.issued_at_ms).filter(|&l| l > 0);
    if lifetime.is_none_or(|l| l > ctx.max_lifetime_ms) {
        return Err(EnvelopeError::BadLifetime {
            issued_at_ms: h.issued_at_ms,
            expires_at_ms: h.expires_at_ms,
        });
    }
    if h.issued_at_ms > ctx.now_ms.saturating_add(ctx.max_skew_ms) {
        return Err(EnvelopeError::IssuedInFuture { ahead_ms: h.issued_at_ms - ctx.now_ms });
    }
    if ctx.now_ms > h.expires_at_ms.saturating_add(ctx.max_skew_ms) {
        return Err(EnvelopeError::Expired { ago_ms: ctx.now_ms - h.expires_at_ms });
    }
    Ok(())
}

/// A value that came out of a frame whose signature, recipient, times and counter all checked
/// out. Only [`Sealed::verify`] makes one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    header: Header,
    sender: PublicKey,
    message: T,
}

impl<T> Verified<T> {
    /// The verified context: who sent it, to whom, when, with which counter.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The key that signed it.
    pub fn sender(&self) -> &PublicKey {
        &self.sender
    }

    /// The verified message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// The verified message, keeping the header alongside.
    pub fn into_parts(self) -> (Header, T) {
        (self.header, self.message)
    }
}
