//! A pairing link (see `protocol_fuzz::pairing_link`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::pairing_link(data));
