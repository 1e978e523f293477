//! End-to-end channel frames, one after another, into the host's side of a channel (see `protocol_fuzz::channel_frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::channel_frames(data));
