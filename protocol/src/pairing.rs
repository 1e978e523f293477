//! The pairing proof: a new device shows that it holds the one-time secret from the QR code,
//! bound to both public keys so that a relay in the middle cannot move the proof onto a key of
//! its own.
//!
//! ```text
//! proof = HMAC-SHA256(key = secret,
//!                     "agent-bridge pairing v1" 0x00 ‖ host key (32) ‖ device key (32)
//!                     ‖ u32 big-endian length of name ‖ name as UTF-8)
//! ```
//!
//! The device sends it in a [`crate::message::Pairing::Hello`] signed by its new key, so the
//! host also learns that the device holds that key. The secret itself never travels on the
//! wire: only the QR code or the link's fragment carries it.
//!
//! The offer is named on the wire by its [`token`], `SHA-256("agent-bridge pairing token v1" 0x00
//! ‖ secret)`: the host registers it at the relay so that a device it does not know yet may
//! reach it for this one handshake, and the hello names it so the host knows which offer a
//! wrong proof burns. Knowing the token does not help to make a proof.

use hmac::{KeyInit as _, Mac as _};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ids::{PairingProof, PairingToken};
use crate::keys::PublicKey;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of the transcript.
pub const DOMAIN: &[u8] = b"agent-bridge pairing v1\0";

/// The prefix hashed with the secret into the offer's [`token`].
pub const TOKEN_DOMAIN: &[u8] = b"agent-bridge pairing token v1\0";

/// The one-time pairing secret. Zeroized when dropped; never printed by `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PairingSecret([u8; 32]);

impl PairingSecret {
    /// Wraps 32 random bytes from the operating system's generator.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes, to put in the QR code.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for PairingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingSecret(…)")
    }
}

/// The proof was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pairing proof does not match")]
pub struct BadProof;

fn mac(secret: &PairingSecret, host: &PublicKey, device: &PublicKey, name: &str) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes cannot be refused.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(DOMAIN);
    mac.update(host.as_bytes());
    mac.update(device.as_bytes());
    mac.update(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    mac.update(name.as_bytes());
    mac
}

/// The prefix hashed with the secret into the pairing channel's pre-shared key.
pub const CHANNEL_PSK_DOMAIN: &[u8] = b"agent-bridge pairing channel psk v1\0";

/// The pre-shared key of the pairing channel ([`crate::channel`]):
/// `SHA-256("agent-bridge pairing channel psk v1" 0x00 ‖ secret)`, labelled apart from the
/// [`token`] the relay sees.
pub fn channel_psk(secret: &PairingSecret) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(CHANNEL_PSK_DOMAIN);
    hash.update(secret.as_bytes());
    hash.finalize().into()
}

/// The public name of the offer whose secret this is.
pub fn token(secret: &PairingSecret) -> PairingToken {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(TOKEN_DOMAIN);
    hash.update(secret.as_bytes());
    PairingToken(hash.finalize().into())
}

/// The device's proof.
pub fn prove(
    secret: &PairingSecret,
    host: &PublicKey,
    device: &PublicKey,
    name: &str,
) -> PairingProof {
    PairingProof(mac(secret, host, device, name).finalize().into_bytes().into())
}

/// The host's check, in constant time.
pub fn check(
    secret: &PairingSecret,
    host: &PublicKey,
    device: &PublicKey,
    name: &str,
    proof: &PairingProof,
) -> Result<(), BadProof> {
    mac(secret, host, device, name).verify_slice(&proof.0).map_err(|_| BadProof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn proof_binds_secret_keys_and_name() {
        let host = SecretKey::from_seed(&[1; 32]).public_key();
        let device = SecretKey::from_seed(&[2; 32]).public_key();
        let other = SecretKey::from_seed(&[3; 32]).public_key();
        let secret = PairingSecret::from_bytes([9; 32]);
        let proof = prove(&secret, &host, &device, "phone");
        check(&secret, &host, &device, "phone", &proof).unwrap();
        assert_eq!(check(&secret, &host, &other, "phone", &proof), Err(BadProof));
        assert_eq!(check(&secret, &other, &device, "phone", &proof), Err(BadProof));
        assert_eq!(check(&secret, &host, &device, "phone2", &proof), Err(BadProof));
        let wrong = PairingSecret::from_bytes([8; 32]);
        assert_eq!(check(&wrong, &host, &device, "phone", &proof), Err(BadProof));
    }
}
