//! Envelope decode + verify on arbitrary bytes (see `protocol_fuzz::envelope_open`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::envelope_open(data));
