#![no_main]
//! Fuzz target: input layout and invariants at `satellite_testkit::server_e2e`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite_testkit::server_e2e(data));
