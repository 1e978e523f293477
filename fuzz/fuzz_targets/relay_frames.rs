//! The relay's routing header and its JSON control messages, both ways (see `protocol_fuzz::relay_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::relay_frames(data));
