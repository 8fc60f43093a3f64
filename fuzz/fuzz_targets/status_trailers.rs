#![no_main]
//! Fuzz target: see `satellite::grpc::fuzzing::status_trailers` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzzing::status_trailers(data));
