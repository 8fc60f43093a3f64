#![no_main]
//! Fuzz target: input layout and invariants at `satellite_testkit::wire::status_trailers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite_testkit::wire::status_trailers(data));
