#![no_main]
//! Fuzz target: input layout and invariants at `satellite_testkit::wire::frame_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite_testkit::wire::frame_decoder(data));
