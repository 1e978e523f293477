//! The local API's JSON lines, both ways (see `protocol_fuzz::local_api_lines`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::local_api_lines(data));
