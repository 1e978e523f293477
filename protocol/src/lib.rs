//! The bridge's wire protocol: identifiers, messages, the signed envelope, the replay guard, the
//! canonical action hash, the pairing proof, and what hosts and devices say to the relay
//! ([`relay`]).
//!
//! This crate is sans-IO. It has no sockets, no async runtime, no clock and no filesystem: the
//! current time and all randomness are passed in by the caller (but for the end-to-end
//! [`channel`]'s keys, which `snow` draws from the operating system; its tests fix them), so
//! every rule here can be tested deterministically and reused by the host, the relay client and
//! (through the golden files) the browser. It decides what a valid frame is; it never decides what the host should *do*.
//!
//! Receiving a frame: [`Sealed::decode`] → look up the sender → [`Sealed::verify`], which runs
//! `verify_strict` before a byte of payload is parsed and is the only way to get a [`Verified`].
//! Sending one: [`seal`].

#![forbid(unsafe_code)]

pub mod action;
pub mod channel;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod link;
pub mod message;
pub mod pairing;
pub mod relay;
pub mod replay;
pub mod resume;

pub use action::action_hash;
pub use envelope::{
    EnvelopeError, Header, SealContext, SealError, Sealed, Verified, VerifyContext, seal,
};
pub use ids::{ActionHash, ChannelKey, PairingProof, PairingToken, RelayKey, RequestId, SessionId};
pub use keys::{DeviceId, Fingerprint, HostId, PublicKey, SecretKey};
pub use link::PairingLink;
pub use message::{
    Action, Actor, Blob, Decision, DeliveryStage, DeviceProgress, ErrorCode, HostEvent, Message,
    MessageKind, NoticeAction, Pairing, PushSubscription, ReceiptStage, Request, Role, SessionKind,
    TermSize, Verdict, check_note,
};
pub use replay::{ReplayState, ReplayWindow};
