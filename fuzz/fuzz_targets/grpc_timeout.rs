#![no_main]
//! Fuzz target: input layout and invariants at `satellite_testkit::wire::grpc_timeout`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite_testkit::wire::grpc_timeout(data));
