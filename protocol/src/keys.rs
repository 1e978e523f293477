//! Keys and the identifiers derived from them.
//!
//! A host or device *is* its Ed25519 public key. [`PublicKey`] can only be made from bytes that
//! pass the acceptance checks (a canonical encoding of a point on the curve that is not of small
//! order), so every key the rest of the protocol holds has already been vetted.
//!
//! [`HostId`] and [`DeviceId`] print the key as bech32m (`host1…`, `dev1…`): the checksum catches
//! a mistyped or truncated identifier, and the human-readable prefix catches a host id pasted
//! where a device id belongs. [`Fingerprint`] is the short form people compare by eye at pairing.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Why a public key or a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not the encoding of a point on the curve.
    #[error("public key is not a valid curve point")]
    NotAPoint,
    /// The point has another, canonical encoding (a y coordinate of p or more, or x = -0).
    #[error("public key is not canonically encoded")]
    NonCanonical,
    /// The point has small order: a signature under it can be valid for many messages.
    #[error("public key has small order")]
    SmallOrder,
    /// The key was not 32 bytes long.
    #[error("public key must be {PUBLIC_KEY_LEN} bytes")]
    Length,
}

/// The signature did not verify (the reason is deliberately opaque, as in ed25519-dalek).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature verification failed")]
pub struct BadSignature;

/// An Ed25519 public key that passed the acceptance checks.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Accepts a key only if it is a canonical encoding of a point that is not of small order.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        // Decompression tolerates y >= p and x = -0; re-encoding shows whether the input was
        // the one canonical encoding of its point.
        if key.to_edwards().compress().to_bytes() != *bytes {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self { key })
    }

    /// Like [`PublicKey::from_bytes`] for a slice of unknown length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: &[u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Length)?;
        Self::from_bytes(bytes)
    }

    /// The 32 bytes of the key, exactly as accepted.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.as_bytes()
    }

    /// Verifies `signature` over `message` with `verify_strict`: the one verification path of
    /// the protocol (envelopes use it, the known-answer vector tests exercise it).
    ///
    /// `verify_strict` refuses small-order `R` values and non-canonical scalars, so a signature
    /// cannot be mauled into a second valid one for the same message.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), BadSignature> {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &signature).map_err(|_| BadSignature)
    }

    /// The short form people compare by eye.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.as_bytes()))
    }
}

/// An Ed25519 signing key. The secret is zeroized when dropped and never printed.
pub struct SecretKey {
    key: SigningKey,
}

impl SecretKey {
    /// Makes a key from 32 bytes of seed. The caller supplies the randomness (this crate has no
    /// source of its own): use the operating system's generator.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(seed) }
    }

    /// The seed, for storing the key in a file of mode 0600.
    pub fn to_seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        // A key derived from a secret scalar is a multiple of the base point: canonical and of
        // prime order, so the acceptance checks cannot fail for it.
        PublicKey { key: self.key.verifying_key() }
    }

    /// Signs `message` (deterministic, as Ed25519 is).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("public", &self.public_key()).finish_non_exhaustive()
    }
}

/// Why a printed identifier could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not bech32m, or the checksum does not match: a typo or a truncated copy.
    #[error("not a valid identifier (checksum mismatch or malformed): {0}")]
    Malformed(String),
    /// A valid identifier of another kind (for example a host id where a device id belongs).
    #[error("expected an identifier starting with `{expected}1`, got `{found}1…`")]
    WrongKind {
        /// The prefix this identifier must have.
        expected: &'static str,
        /// The prefix it has.
        found: String,
    },
    /// The identifier decodes, but not to an acceptable public key.
    #[error("identifier does not hold an acceptable public key: {0}")]
    Key(#[from] KeyError),
}

macro_rules! key_id {
    ($(#[$doc:meta])* $name:ident, $hrp:literal) => {
        $(#[$doc])*
        ///
        /// Holds the key's 32 bytes (small enough to sit in every message); they always are an
        /// acceptable key, since only an accepted [`PublicKey`] or a parse that accepts one
        /// makes an identifier.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; PUBLIC_KEY_LEN]);

        impl $name {
            /// The printed prefix (before the `1` separator).
            pub const PREFIX: &'static str = $hrp;

            /// The identifier of this key.
            pub fn new(key: PublicKey) -> Self {
                Self(*key.as_bytes())
            }

            /// The public key the identifier stands for (decompressed anew: keep the
            /// [`PublicKey`] where it is used often).
            pub fn key(&self) -> PublicKey {
                PublicKey::from_bytes(&self.0)
                    .unwrap_or_else(|_| unreachable!("identifiers hold accepted keys only"))
            }

            /// The key's bytes.
            pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
                &self.0
            }
        }

        impl From<PublicKey> for $name {
            fn from(key: PublicKey) -> Self {
                Self::new(key)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let hrp = Hrp::parse_unchecked($hrp);
                // 32 bytes are far below bech32's length limit; the only error left is the formatter's.
                bech32::encode_lower_to_fmt::<Bech32m, _>(f, hrp, &self.0).map_err(|_| fmt::Error)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let key = decode_id(s, $hrp)?;
                Ok(Self::new(key))
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

key_id!(
    /// A host, named by its public key; printed `host1…` (bech32m).
    HostId,
    "host"
);
key_id!(
    /// A paired device, named by its public key; printed `dev1…` (bech32m).
    DeviceId,
    "dev"
);

fn decode_id(s: &str, expected: &'static str) -> Result<PublicKey, IdError> {
    // Longer than any identifier: refuse before the decoder does any work.
    if s.len() > 100 {
        return Err(IdError::Malformed("too long".into()));
    }
    let checked =
        CheckedHrpstring::new::<Bech32m>(s).map_err(|e| IdError::Malformed(e.to_string()))?;
    let found = checked.hrp().to_lowercase();
    if found != expected {
        return Err(IdError::WrongKind { expected, found });
    }
    let bytes: Vec<u8> = checked.byte_iter().collect();
    Ok(PublicKey::from_slice(&bytes)?)
}

/// A short, human-comparable digest of a public key: the first 80 bits of
/// SHA-256("agent-bridge fingerprint v1\0" ‖ key), as four-character groups of base32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint([u8; 10]);

impl Fingerprint {
    const DOMAIN: &'static [u8] = b"agent-bridge fingerprint v1\0";

    /// The fingerprint of `key`.
    pub fn of(key: &PublicKey) -> Self {
        let digest =
            Sha256::new().chain_update(Self::DOMAIN).chain_update(key.as_bytes()).finalize();
        let mut out = [0u8; 10];
        out.copy_from_slice(&digest[..10]);
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 4648 base32 alphabet: no 0/1/8/9 to confuse with O/I/B/g when read aloud.
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut bits: u128 = 0;
        for b in self.0 {
            bits = (bits << 8) | u128::from(b);
        }
        for i in 0..16 {
            if i > 0 && i % 4 == 0 {
                f.write_str("-")?;
            }
            let index = ((bits >> (75 - 5 * i)) & 31) as usize;
            write!(f, "{}", ALPHABET[index] as char)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        SecretKey::from_seed(&[seed; 32]).public_key()
    }

    #[test]
    fn ids_round_trip_and_catch_typos() {
        let id = DeviceId::new(key(7));
        let printed = id.to_string();
        assert!(printed.starts_with("dev1"), "{printed}");
        assert_eq!(printed.parse::<DeviceId>().unwrap(), id);

        // Every single-character substitution is caught by the checksum.
        let alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        for (i, c) in printed.char_indices().skip(4) {
            for r in alphabet.chars().filter(|&r| r != c) {
                let mut typo = printed.clone();
                typo.replace_range(i..i + 1, &r.to_string());
                assert!(typo.parse::<DeviceId>().is_err(), "typo {typo} accepted");
            }
        }
        // Truncation is caught too.
        assert!(printed[..printed.len() - 1].parse::<DeviceId>().is_err());
    }

    #[test]
    fn a_host_id_is_not_a_device_id() {
        let host = HostId::new(key(1)).to_string();
        assert!(matches!(
            host.parse::<DeviceId>(),
            Err(IdError::WrongKind { expected: "dev", .. })
        ));
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_refused() {
        // The identity point, and its non-canonical encoding with y = p + 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::SmallOrder));
        let mut y_over_p = [0xff; 32];
        y_over_p[0] = 0xee;
        y_over_p[31] = 0x7f;
        assert_eq!(PublicKey::from_bytes(&y_over_p), Err(KeyError::NonCanonical));
        // An order-8 point.
        let order8 =
            hex::decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
                .unwrap();
        assert_eq!(PublicKey::from_slice(&order8), Err(KeyError::SmallOrder));
        assert_eq!(PublicKey::from_slice(&[1, 2, 3]), Err(KeyError::Length));
    }

    #[test]
    fn fingerprint_is_stable_and_grouped() {
        let fp = key(3).fingerprint().to_string();
        assert_eq!(fp.len(), 19);
        assert_eq!(fp.matches('-').count(), 3);
        assert_ne!(fp, key(4).fingerprint().to_string());
    }
}
