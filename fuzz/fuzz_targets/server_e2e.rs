#![no_main]
//! Fuzz target: see `satellite::grpc::fuzzing::server_e2e` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzzing::server_e2e(data));
