//! The device registry's files, loaded (see `protocol_fuzz::device_state`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::device_state(data));
