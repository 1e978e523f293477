//! What hosts and devices say to the relay (not to each other): authentication by challenge,
//! the host's signed list of devices, presence, and the small routing header of data frames.
//!
//! Control messages are JSON in WebSocket text frames. Data frames are binary:
//!
//! ```text
//! to the relay:    kind (1 byte) ‖ destination key (32) ‖ payload     kind 1: to that peer
//!                                                                      kind 2: host → all its devices (key ignored)
//! from the relay:  1 ‖ source key (32) ‖ payload
//! ```
//!
//! The payload is opaque to the relay: an end-to-end signed envelope ([`crate::envelope`]).
//! The relay only ever learns who talks to whom.
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
pub fn register_message(counter: u64, devices: &[[u8; 32]], offers: &[[u8; 32]]) -> Vec<u8> {
    let mut out = REGISTER_DOMAIN.to_vec();
    out.extend_from_slice(&counter.to_be_bytes());
    for list in [devices, offers] {
        out.extend_from_slice(&(list.len() as u32).to_be_bytes());
        for item in list {
            out.extend_from_slice(item);
        }
    }
    out
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
    devices: &[[u8; 32]],
    offers: &[[u8; 32]],
) -> ToRelay {
    ToRelay::Register {
        counter,
        devices: devices.iter().map(hex::encode).collect(),
        offers: offers.iter().map(hex::encode).collect(),
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
    pub devices: Vec<[u8; 32]>,
    /// Tokens of its open pairing offers.
    pub offers: Vec<[u8; 32]>,
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
    let devices = devices.iter().map(|d| hex32(d, "device key")).collect::<Result<Vec<_>, _>>()?;
    let offers = offers.iter().map(|t| hex32(t, "offer token")).collect::<Result<Vec<_>, _>>()?;
    host.verify(&register_message(counter, &devices, &offers), &hex64(signature)?)?;
    Ok(Registration { devices, offers })
}

/// Builds a data frame for the relay.
pub fn data_frame(kind: u8, peer: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(peer);
    out.extend_from_slice(payload);
    out
}

/// Splits a data frame into kind, peer and payload; `None` if shorter than the header.
pub fn split_frame(frame: &[u8]) -> Option<(u8, [u8; 32], &[u8])> {
    if frame.len() < HEADER {
        return None;
    }
    let mut peer = [0u8; 32];
    peer.copy_from_slice(&frame[1..HEADER]);
    Some((frame[0], peer, &frame[HEADER..]))
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
        let devices = [[7u8; 32], [8u8; 32]];
        let offers = [[9u8; 32]];
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
        let f = data_frame(1, &[3; 32], b"hi");
        assert_eq!(split_frame(&f), Some((1, [3; 32], &b"hi"[..])));
        assert_eq!(split_frame(&f[..10]), None);
    }
}
