#![no_main]
//! Fuzz target: see `satellite::grpc::fuzzing::grpc_timeout` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzzing::grpc_timeout(data));
