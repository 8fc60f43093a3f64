#![no_main]
//! Fuzz target: input layout and invariants at `satellite::grpc::fuzz_bridge::frame_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| satellite::grpc::fuzz_bridge::frame_decoder(data));
