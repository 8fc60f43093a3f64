#![no_main]
//! Fuzz target: input layout and invariants at `satellite::grpc::fuzz_bridge::metadata_bin`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzz_bridge::metadata_bin(data));
