//! End-to-end resume payloads, one after another, into a receiving peer (see `protocol_fuzz::resume_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::resume_frames(data));
