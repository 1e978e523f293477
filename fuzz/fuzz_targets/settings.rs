//! A settings file: rules, a decision under them, and the sandbox object (see `protocol_fuzz::settings`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::settings(data));
