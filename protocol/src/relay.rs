//! What hosts and devices say to the relay (not to each other): authentication by challenge,
//! the host's signed list of devices, presence, and the small routing header of data frames.
//!
//! Control messages are JSON in WebSocket text frames. Data frames are binary:
//!
//! ```text
//! to the relay:    kind (1 byte) ‖ destination key (32) ‖ payload     kind 1: to that peer
//!                                                                      kind 2: host → all its devices (key ignored)
//!                                                                      ([`FrameKind`])
//! from the relay:  1 ‖ source key (32) ‖ payload
//! ```
//!
//! The payload is opaque to the relay: a frame of the end-to-end channel ([`crate::channel`]),
//! which seals resume payloads ([`crate::resume`]) that carry signed envelopes
//! ([`crate::envelope`]). The relay learns who talks to whom, when, and how much.
//!
//! Pairing: a device the host has not registered yet reaches it only through an open pairing
//! offer. The host lists the offers' [`crate::pairing::token`]s in its signed registration; the
//! new device sends [`ToRelay::Knock`] naming the host and the token from its link, and the relay
//! then routes between that device and the host for as long as the host keeps the token
//! registered (the host drops it once the offer is used, burned or expired).
//!
//! Authentication: the relay sends a fresh 32-byte nonce; the client signs
//! `AUTH_DOMAIN ‖ nonce ‖ side ‖ binding` with its key, where the binding names the relay it
//! talks to: the SHA-256 of the relay's certificate as the client saw it, so a relay in the
//! middle cannot pass a challenge through to another relay and use the answer there. A browser
//! cannot see the certificate; it binds instead to what it can know: the certificate hash from
//! the pairing link (a self-signed relay, which the person compared when the browser warned), or
//! [`origin_binding`] of the page's origin (a relay with a public certificate, which the browser
//! checked). The relay accepts its certificate's hash and the bindings of the origins it is
//! configured to serve.

use serde::{Deserialize, Serialize};

use crate::ids::{PairingToken, RelayKey};
use crate::keys::{BadSignature, PublicKey, SecretKey};

/// Prefix of the signed challenge answer.
pub const AUTH_DOMAIN: &[u8] = b"agent-bridge relay auth v1\0";
/// Prefix hashed with an origin into an [`origin_binding`].
pub const ORIGIN_DOMAIN: &[u8] = b"agent-bridge origin v1\0";

/// Prefix of a host's signed device list.
pub const REGISTER_DOMAIN: &[u8] = b"agent-bridge relay register v1\0";
/// The most devices a host may register.
pub const MAX_DEVICES: usize = 256;
/// The most open pairing offers a host may register.
pub const MAX_OFFERS: usize = 16;
/// Length of the routing header of a data frame.
pub const HEADER: usize = 33;
/// Data frames per second a device's connection may send, by default (a burst of twice that).
pub const FRAMES_PER_SEC: u32 = 200;
/// The most data frames per second a host's connection may send, by default (a burst of twice
/// that): see [`host_rate`].
pub const HOST_FRAMES_PER_SEC: u32 = 1_000;

/// A host's rate: one host answers every device it registered over one connection, so it may
/// send a device's rate for each of them (at least one), up to `host_max`; then one busy
/// device cannot use up what the others' answers need, and a key that registers no devices
/// gets no more than a device.
pub fn host_rate(device_rate: u32, devices: usize, host_max: u32) -> u32 {
    let devices = u32::try_from(devices.max(1)).unwrap_or(u32::MAX);
    device_rate.saturating_mul(devices).min(host_max.max(device_rate))
}

/// Which side of the bridge a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A host: may register devices and send to them.
    Host,
    /// A device: may send to hosts that registered it.
    Device,
}

/// Relay → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromRelay {
    /// The first message of every connection.
    Challenge {
        /// 32 fresh random bytes, hex.
        nonce: String,
    },
    /// Authentication succeeded.
    Welcome,
    /// What this connection may send now: data frames per second and the burst. Sent after
    /// the welcome, and again when it changes (a host's grows with the devices it registered,
    /// [`host_rate`]). A client that does not know this message ignores it.
    Rate {
        /// Data frames per second, sustained.
        frames_per_sec: u32,
        /// Data frames at once.
        burst: u32,
    },
    /// A registered device came online or went away (to its hosts only).
    Presence {
        /// The device's key, hex.
        device: String,
        /// Online now?
        online: bool,
    },
    /// A host that registered this device connected (its first connection) or went away (its
    /// last); and after the welcome of each connection of a device, for each host that
    /// registered it. Like all of the
    /// relay's own messages it proves nothing: a device treats it as a hint for people.
    HostPresence {
        /// The host's key, hex.
        host: String,
        /// Connected now?
        online: bool,
    },
    /// A data frame was not delivered (sent at most once a second per connection).
    Undeliverable {
        /// The addressee's key, hex.
        peer: String,
        /// True: the route exists but the peer is not connected. False: there is no route (a
        /// device the host has not registered, or no longer).
        offline: bool,
    },
    /// A request was refused; the connection stays open.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Client → relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToRelay {
    /// The answer to the challenge.
    Hello {
        /// Host or device.
        side: Side,
        /// The client's public key, hex.
        key: String,
        /// Signature over [`auth_message`], hex.
        signature: String,
    },
    /// A host's list of the devices that may reach it (replaces the previous list).
    Register {
        /// Increases with every registration of this host.
        counter: u64,
        /// Device keys, hex.
        devices: Vec<String>,
        /// Tokens of the open pairing offers, hex.
        #[serde(default)]
        offers: Vec<String>,
        /// Signature over [`register_message`], hex.
        signature: String,
    },
    /// A device not yet registered asks to reach a host for pairing.
    Knock {
        /// The host's key, hex.
        host: String,
        /// The offer's token from the pairing link, hex.
        token: String,
    },
}

/// What a browser binds its challenge answer to when it cannot see the relay's certificate:
/// `SHA-256(ORIGIN_DOMAIN ‖ origin)`, the origin as the browser writes it
/// (`https://relay.example.com`, with a port only when not 443).
pub fn origin_binding(origin: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(ORIGIN_DOMAIN);
    hash.update(origin.as_bytes());
    hash.finalize().into()
}

/// The bytes a client signs to answer a challenge; `binding` names the relay (see the module
/// documentation).
pub fn auth_message(nonce: &[u8; 32], side: Side, binding: &[u8; 32]) -> Vec<u8> {
    let mut out = AUTH_DOMAIN.to_vec();
    out.extend_from_slice(nonce);
    out.push(match side {
        Side::Host => b'h',
        Side::Device => b'd',
    });
    out.extend_from_slice(binding);
    out
}

/// The bytes a host signs to register devices and open pairing offers.
pub fn register_message(counter: u64, devices: &[RelayKey], offers: &[PairingToken]) -> Vec<u8> {
    let mut out = REGISTER_DOMAIN.to_vec();
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&(devices.len() as u32).to_be_bytes());
    for device in devices {
        out.extend_from_slice(&device.0);
    }
    out.extend_from_slice(&(offers.len() as u32).to_be_bytes());
    for offer in offers {
        out.extend_from_slice(&offer.0);
    }
    out
}

impl RelayKey {
    /// The routing key of a public key.
    pub fn of(key: &PublicKey) -> Self {
        Self(*key.as_bytes())
    }
}

/// Builds a signed `Hello`.
pub fn hello(secret: &SecretKey, side: Side, nonce: &[u8; 32], cert_sha256: &[u8; 32]) -> ToRelay {
    ToRelay::Hello {
        side,
        key: hex::encode(secret.public_key().as_bytes()),
        signature: hex::encode(secret.sign(&auth_message(nonce, side, cert_sha256))),
    }
}

/// Builds a signed `Register`.
pub fn register(
    secret: &SecretKey,
    counter: u64,
    devices: &[RelayKey],
    offers: &[PairingToken],
) -> ToRelay {
    ToRelay::Register {
        counter,
        devices: devices.iter().map(ToString::to_string).collect(),
        offers: offers.iter().map(ToString::to_string).collect(),
        signature: hex::encode(secret.sign(&register_message(counter, devices, offers))),
    }
}

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayAuthError {
    /// A key or signature is not hex of the right length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The key is not acceptable.
    #[error("key refused: {0}")]
    Key(#[from] crate::keys::KeyError),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] BadSignature),
    /// Too many devices.
    #[error("at most {MAX_DEVICES} devices")]
    TooMany,
    /// Too many open pairing offers.
    #[error("at most {MAX_OFFERS} open pairing offers")]
    TooManyOffers,
}

/// Decodes 32 bytes of hex (a key, a token).
pub fn hex32(s: &str, what: &'static str) -> Result<[u8; 32], RelayAuthError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| RelayAuthError::Malformed(what))?;
    Ok(out)
}

fn hex64(s: &str) -> Result<[u8; 64], RelayAuthError> {
    let mut out = [0u8; 64];
    hex::decode_to_slice(s, &mut out).map_err(|_| RelayAuthError::Malformed("signature"))?;
    Ok(out)
}

/// The relay's check of a `Hello` bound to `binding`: returns the authenticated key.
pub fn check_hello(
    side: Side,
    key: &str,
    signature: &str,
    nonce: &[u8; 32],
    binding: &[u8; 32],
) -> Result<PublicKey, RelayAuthError> {
    check_hello_any(side, key, signature, nonce, std::slice::from_ref(binding))
}

/// The relay's check of a `Hello` bound to any of `bindings` (its certificate's hash first, then
/// the origins it serves).
pub fn check_hello_any(
    side: Side,
    key: &str,
    signature: &str,
    nonce: &[u8; 32],
    bindings: &[[u8; 32]],
) -> Result<PublicKey, RelayAuthError> {
    let key = PublicKey::from_bytes(&hex32(key, "key")?)?;
    let signature = hex64(signature)?;
    let mut result = Err(BadSignature);
    for binding in bindings {
        result = key.verify(&auth_message(nonce, side, binding), &signature);
        if result.is_ok() {
            break;
        }
    }
    result?;
    Ok(key)
}

/// A host's checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The devices that may reach the host.
    pub devices: Vec<RelayKey>,
    /// Tokens of its open pairing offers.
    pub offers: Vec<PairingToken>,
}

/// The relay's check of a `Register` from an authenticated host.
pub fn check_register(
    host: &PublicKey,
    counter: u64,
    devices: &[String],
    offers: &[String],
    signature: &str,
) -> Result<Registration, RelayAuthError> {
    if devices.len() > MAX_DEVICES {
        return Err(RelayAuthError::TooMany);
    }
    if offers.len() > MAX_OFFERS {
        return Err(RelayAuthError::TooManyOffers);
    }
    let devices = devices
        .iter()
        .map(|d| hex32(d, "device key").map(RelayKey))
        .collect::<Result<Vec<_>, _>>()?;
    let offers = offers
        .iter()
        .map(|t| hex32(t, "offer token").map(PairingToken))
        .collect::<Result<Vec<_>, _>>()?;
    host.verify(&register_message(counter, &devices, &offers), &hex64(signature)?)?;
    Ok(Registration { devices, offers })
}

/// What a data frame asks of the relay (its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// To the peer it names; from the relay, always this, naming the sender.
    To = 1,
    /// From a host to all its registered devices (the key is ignored).
    Broadcast = 2,
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;

    fn try_from(byte: u8) -> Result<Self, FrameError> {
        match byte {
            1 => Ok(Self::To),
            2 => Ok(Self::Broadcast),
            other => Err(FrameError::Kind(other)),
        }
    }
}

/// Why bytes are not a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than the routing header.
    #[error("data frame shorter than its routing header")]
    Short,
    /// A first byte that is no [`FrameKind`].
    #[error("unknown data frame kind {0}")]
    Kind(u8),
}

/// Builds a data frame for the relay.
pub fn data_frame(kind: FrameKind, peer: &RelayKey, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&peer.0);
    out.extend_from_slice(payload);
    out
}

/// Splits a data frame into kind, peer and payload.
pub fn split_frame(frame: &[u8]) -> Result<(FrameKind, RelayKey, &[u8]), FrameError> {
    let (header, payload) = frame.split_at_checked(HEADER).ok_or(FrameError::Short)?;
    let kind = FrameKind::try_from(header[0])?;
    let mut peer = [0u8; 32];
    peer.copy_from_slice(&header[1..]);
    Ok((kind, RelayKey(peer), payload))
}

/// The close codes the relay ends a connection with (RFC 6455 §7.4, and 4000–4999 for its own),
/// in one place: each says to a client whether to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum CloseCode {
    /// The client closed, or the relay answered its close.
    Normal = 1000,
    /// The relay is shutting down, or the connection was idle too long: come back.
    GoingAway = 1001,
    /// The WebSocket was broken.
    ProtocolError = 1002,
    /// Never sent: the connection ended without a close frame (a client's own name for that).
    Abnormal = 1006,
    /// A text frame that is not UTF-8.
    InvalidData = 1007,
    /// A limit or a rule was broken: the rate, a slow reader's queue, a frame's shape, an
    /// unexpected control message.
    Policy = 1008,
    /// A frame over the size limit.
    TooBig = 1009,
    /// The relay failed.
    Internal = 1011,
    /// The challenge was not answered with a valid signature: do not retry with the same key.
    AuthFailed = 4003,
    /// The challenge was not answered in time.
    AuthTimeout = 4008,
    /// This key has as many connections as it may.
    TooManyConnections = 4009,
}

impl CloseCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code a number stands for, if the relay sends it.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::GoingAway,
            Self::ProtocolError,
            Self::Abnormal,
            Self::InvalidData,
            Self::Policy,
            Self::TooBig,
            Self::Internal,
            Self::AuthFailed,
            Self::AuthTimeout,
            Self::TooManyConnections,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_binds_nonce_side_and_certificate() {
        let secret = SecretKey::from_seed(&[5; 32]);
        let (nonce, cert) = ([1; 32], [2; 32]);
        let ToRelay::Hello { key, signature, .. } = hello(&secret, Side::Device, &nonce, &cert)
        else {
            panic!()
        };
        assert!(check_hello(Side::Device, &key, &signature, &nonce, &cert).is_ok());
        assert!(check_hello(Side::Host, &key, &signature, &nonce, &cert).is_err());
        assert!(check_hello(Side::Device, &key, &signature, &[9; 32], &cert).is_err());
        assert!(check_hello(Side::Device, &key, &signature, &nonce, &[9; 32]).is_err());
        assert!(check_hello(Side::Device, "zz", &signature, &nonce, &cert).is_err());
    }

    #[test]
    fn a_browser_binds_to_an_origin_the_relay_serves() {
        let secret = SecretKey::from_seed(&[5; 32]);
        let (nonce, cert) = ([1; 32], [2; 32]);
        let ours = origin_binding("https://relay.example.com");
        let ToRelay::Hello { key, signature, .. } = hello(&secret, Side::Device, &nonce, &ours)
        else {
            panic!()
        };
        assert!(check_hello_any(Side::Device, &key, &signature, &nonce, &[cert, ours]).is_ok());
        // Bound to another origin (a phishing copy of the page): refused.
        let theirs = origin_binding("https://relay.example.com.evil.test");
        assert!(check_hello_any(Side::Device, &key, &signature, &nonce, &[cert, theirs]).is_err());
        assert!(check_hello_any(Side::Device, &key, &signature, &nonce, &[]).is_err());
    }

    #[test]
    fn registration_is_signed_by_the_host() {
        let host = SecretKey::from_seed(&[5; 32]);
        let other = SecretKey::from_seed(&[6; 32]);
        let devices = [RelayKey([7u8; 32]), RelayKey([8u8; 32])];
        let offers = [PairingToken([9u8; 32])];
        let ToRelay::Register { counter, devices: d, offers: o, signature } =
            register(&host, 3, &devices, &offers)
        else {
            panic!()
        };
        let checked = check_register(&host.public_key(), counter, &d, &o, &signature).unwrap();
        assert_eq!((checked.devices, checked.offers), (devices.to_vec(), offers.to_vec()));
        assert!(check_register(&other.public_key(), counter, &d, &o, &signature).is_err());
        assert!(check_register(&host.public_key(), counter + 1, &d, &o, &signature).is_err());
        // An offer cannot be added or moved into the device list behind the host's back.
        assert!(check_register(&host.public_key(), counter, &d, &[], &signature).is_err());
        let mut moved = d;
        moved.extend(o.iter().cloned());
        assert!(check_register(&host.public_key(), counter, &moved, &[], &signature).is_err());
    }

    #[test]
    fn frames_split() {
        let f = data_frame(FrameKind::To, &RelayKey([3; 32]), b"hi");
        assert_eq!(split_frame(&f), Ok((FrameKind::To, RelayKey([3; 32]), &b"hi"[..])));
        assert_eq!(split_frame(&f[..10]), Err(FrameError::Short));
        let b = data_frame(FrameKind::Broadcast, &RelayKey([0; 32]), b"");
        assert_eq!(split_frame(&b), Ok((FrameKind::Broadcast, RelayKey([0; 32]), &b""[..])));
        let mut odd = f;
        odd[0] = 3;
        assert_eq!(split_frame(&odd), Err(FrameError::Kind(3)));
        for code in [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 4003, 4008, 4009] {
            assert_eq!(CloseCode::from_code(code).map(CloseCode::code), Some(code));
        }
        assert_eq!(CloseCode::from_code(1003), None);
    }
}
