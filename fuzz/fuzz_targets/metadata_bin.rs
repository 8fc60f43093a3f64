#![no_main]
//! Fuzz target: see `satellite::grpc::fuzzing::metadata_bin` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzzing::metadata_bin(data));
