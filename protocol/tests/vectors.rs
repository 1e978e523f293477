//! Known-answer Ed25519 vectors through the protocol's one verification path: key acceptance
//! ([`PublicKey::from_slice`]: canonical, not of small order) followed by
//! [`PublicKey::verify`] (`verify_strict`), exactly as [`protocol::Sealed`] does for every frame.
//!
//! Sources (see `tests/vectors/README.md`): RFC 8032 section 7.1, Wycheproof `ed25519_test.json`,
//! ed25519-speccheck `cases.json`, and the CCTV `ed25519vectors.json` corner cases. The RFC 8032
//! and CCTV files carry no licence, so they are read from the shared vector directory beside the
//! repository and the test says so when it is absent; Wycheproof's and speccheck's are committed
//! with their licences.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use protocol::PublicKey;
use protocol::keys::SIGNATURE_LEN;
use serde_json::Value;

/// The verification path under test. `Err` carries the stage that refused.
fn accept(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), &'static str> {
    let key = PublicKey::from_slice(public_key).map_err(|_| "key refused")?;
    let signature: &[u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| "signature length")?;
    key.verify(message, signature).map_err(|_| "signature refused")
}

fn committed(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A licence-less vector file from the shared directory beside the repository, if present.
fn shared(relative: &str) -> Option<Value> {
    let path: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors").join(relative);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(_) => {
            println!(
                "SKIPPED: {relative} is not in the repository (it carries no licence) and the \
                 shared vector directory is absent ({}); these vectors did not run",
                path.display()
            );
            None
        }
    }
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn rfc8032_section_7_1() {
    // Expected: every vector signs to the given signature (Ed25519 is deterministic) and verifies.
    let Some(file) = shared("rfc8032_ed25519.json") else { return };
    let mut ran = 0;
    for v in file["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let seed: [u8; 32] = hex(&v["secret_key"]).try_into().unwrap();
        let secret = protocol::SecretKey::from_seed(&seed);
        let (public, message, signature) =
            (hex(&v["public_key"]), hex(&v["message"]), hex(&v["signature"]));
        assert_eq!(
            secret.public_key().as_bytes().as_slice(),
            public.as_slice(),
            "{name}: public key"
        );
        assert_eq!(secret.sign(&message).as_slice(), signature.as_slice(), "{name}: signature");
        assert_eq!(accept(&public, &message, &signature), Ok(()), "{name}");
        ran += 1;
    }
    assert_eq!(ran, 5);
    println!("RFC 8032: ran {ran} vectors, all accepted as expected");
}

#[test]
fn wycheproof_ed25519() {
    // Expected: exactly Wycheproof's verdict. No Wycheproof key is of small order or
    // non-canonical, so key acceptance never changes a verdict here (asserted below).
    let file = committed("wycheproof/ed25519_test.json");
    let (mut ran, mut valid, mut invalid) = (0, 0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let public = hex(&group["publicKey"]["pk"]);
        assert!(PublicKey::from_slice(&public).is_ok(), "every Wycheproof key is acceptable");
        for t in group["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let outcome = accept(&public, &hex(&t["msg"]), &hex(&t["sig"]));
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(outcome, Ok(()), "tcId {id} ({}) must verify", t["comment"]);
                    valid += 1;
                }
                "invalid" => {
                    assert!(outcome.is_err(), "tcId {id} ({}) must be refused", t["comment"]);
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other}"),
            }
            ran += 1;
        }
    }
    assert_eq!(ran, file["numberOfTests"].as_u64().unwrap());
    println!(
        "Wycheproof: ran {ran} vectors ({valid} accepted, {invalid} refused), all as expected"
    );
}

#[test]
fn ed25519_speccheck() {
    // Expected: the "Dalek strict" row of speccheck's results.md, with reasons.
    let expected: [(bool, &str); 12] = [
        (false, "0: small-order A and R, S = 0: refused (small-order key)"),
        (false, "1: small-order A, mixed-order R: refused (small-order key)"),
        (false, "2: mixed-order A, small-order R: refused (verify_strict rejects small-order R)"),
        (true, "3: mixed-order A and R, passes cofactored and cofactorless checks: accepted"),
        (false, "4: passes only the cofactored equation: refused"),
        (false, "5: passes only the cofactored equation: refused"),
        (false, "6: S > L (malleable): refused"),
        (false, "7: S much larger than L: refused"),
        (false, "8: non-canonical R: refused"),
        (false, "9: non-canonical R: refused"),
        (false, "10: non-canonical small-order A: refused at key acceptance"),
        (false, "11: non-canonical small-order A: refused at key acceptance"),
    ];
    let file = committed("ed25519-speccheck/cases.json");
    let cases = file.as_array().unwrap();
    assert_eq!(cases.len(), expected.len());
    for (case, (accepted, why)) in cases.iter().zip(expected) {
        let outcome =
            accept(&hex(&case["pub_key"]), &hex(&case["message"]), &hex(&case["signature"]));
        assert_eq!(outcome.is_ok(), accepted, "case {why}; got {outcome:?}");
    }
    println!("ed25519-speccheck: ran {} cases, 1 accepted and 11 refused as expected", cases.len());
}

#[test]
fn cctv_ed25519_corner_cases() {
    // Expected: accepted exactly when the vector's only edge cases are a low-order *component*
    // of A or R (which no blocklist can see and verify_strict allows); refused when A or R is a
    // small-order point, is non-canonically encoded, or the low-order parts do not cancel
    // (`low_order_residue`, which only a cofactored check would accept).
    let Some(file) = shared("cctv-ed25519/ed25519vectors.json") else { return };
    let tolerated: BTreeSet<&str> = ["low_order_component_A", "low_order_component_R"].into();
    let (mut ran, mut accepted) = (0, 0);
    for v in file.as_array().unwrap() {
        let flags: BTreeSet<&str> = v["flags"]
            .as_array()
            .map(|f| f.iter().map(|x| x.as_str().unwrap()).collect())
            .unwrap_or_default();
        let expect_ok = flags.is_subset(&tolerated);
        let outcome =
            accept(&hex(&v["key"]), v["msg"].as_str().unwrap().as_bytes(), &hex(&v["sig"]));
        assert_eq!(
            outcome.is_ok(),
            expect_ok,
            "vector {} with flags {flags:?}: {outcome:?}",
            v["number"]
        );
        // A key that is a small-order point or non-canonically encoded never gets past acceptance.
        if flags.contains("low_order_A") || flags.contains("non_canonical_A") {
            assert_eq!(outcome, Err("key refused"), "vector {}", v["number"]);
        }
        ran += 1;
        accepted += usize::from(expect_ok);
    }
    assert_eq!(ran, 914);
    println!(
        "CCTV: ran {ran} vectors ({accepted} accepted, {} refused), all as expected",
        ran - accepted
    );
}
