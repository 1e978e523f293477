//! Fixed-length byte strings that travel as lowercase hex: request and session ids, action
//! hashes and pairing proofs.
//!
//! Each has exactly one spelling (lowercase, full length), so two clients that agree on the
//! bytes agree on the string, and a string compared by a person or a program means one value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A printed hex identifier was not the right length or not lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} lowercase hex digits")]
pub struct HexError {
    /// How many hex digits were expected.
    pub expected: usize,
}

macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                let err = HexError { expected: 2 * $len };
                if s.len() != 2 * $len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(err);
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| err)?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// A request's identifier: 16 random bytes chosen by the device that asks.
    RequestId,
    16
);
hex_bytes!(
    /// A session: a program running in a pseudo-terminal under the host.
    SessionId,
    16
);
hex_bytes!(
    /// SHA-256 of an action's canonical bytes (see [`crate::action`]).
    ActionHash,
    32
);
hex_bytes!(
    /// A device's proof that it knows the pairing secret (see [`crate::pairing`]).
    PairingProof,
    32
);
hex_bytes!(
    /// A key the relay routes by: the public key a host or a device proved to the relay (its
    /// challenge), as the 32 bytes of the routing header. The relay checks nothing else about
    /// it; the host and devices check every frame's signature themselves.
    RelayKey,
    32
);
hex_bytes!(
    /// Names one pairing offer without revealing its secret: SHA-256 of a domain prefix and the
    /// secret (see [`crate::pairing::token`]). The relay sees it; it cannot be turned into a proof.
    PairingToken,
    32
);

hex_bytes!(
    /// A static X25519 public key of the end-to-end channel ([`crate::channel`]): each side's
    /// own, apart from its Ed25519 identity, told to the other at pairing inside a message the
    /// identity signs.
    ChannelKey,
    32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_only() {
        let id = RequestId([0xab; 16]);
        assert_eq!(id.to_string().parse::<RequestId>().unwrap(), id);
        assert_eq!("AB".repeat(16).parse::<RequestId>(), Err(HexError { expected: 32 }));
        assert!("ab".repeat(15).parse::<RequestId>().is_err());
        assert!("ab".repeat(17).parse::<RequestId>().is_err());
        assert!(format!("+{}", "a".repeat(31)).parse::<RequestId>().is_err());
        let json = serde_json::to_string(&ActionHash([1; 32])).unwrap();
        assert_eq!(json, format!("\"{}\"", "01".repeat(32)));
    }
}
