//! The audit log, verified and opened (see `protocol_fuzz::audit_log`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol_fuzz::audit_log(data));
