//! Envelope decode + verify on arbitrary bytes: must never panic, and must never verify a frame
//! that the fixed device key did not sign.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::envelope::{Sealed, VerifyContext};
use protocol::{PublicKey, ReplayWindow, SecretKey};

/// The golden files' "now"; the corpus holds their frames.
const NOW_MS: u64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let host = SecretKey::from_seed(&[0x22; 32]).public_key();
    let device = SecretKey::from_seed(&[0x11; 32]).public_key();
    let Ok(sealed) = Sealed::decode(data) else { return };
    // As the pairing flow would: accept the claimed key only through key acceptance.
    let Ok(claimed) = PublicKey::from_bytes(sealed.sender()) else { return };
    let ctx = VerifyContext::new(&host, NOW_MS);
    if let Ok(verified) = sealed.verify(&claimed, &ctx, &mut ReplayWindow::new()) {
        // Only frames signed with a key whose secret the fuzzer cannot know verify, so anything
        // that verifies here must be one of the corpus frames, signed by the device.
        assert_eq!(verified.sender(), &device);
    }
});
