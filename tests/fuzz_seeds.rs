//! Every fuzz target's committed seeds, run under stable `cargo test`.
//!
//! The fuzz logic lives in the dev-only `satellite-testkit` crate (tests/support), which both
//! these tests and `fuzz/fuzz_targets/*.rs` call.

use std::path::PathBuf;

use satellite_testkit::{
    server_e2e,
    wire::{frame_decoder, grpc_timeout, metadata_bin, status_trailers},
};

#[test]
fn seeds_server_e2e() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/server_e2e");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        println!("seed {}", path.display());
        server_e2e(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "{} has only {n} seeds", dir.display());
}

#[test]
fn server_e2e_valid_unary_and_streaming_calls_end_with_trailers() {
    server_e2e(&[1, 0]);
    server_e2e(&[3, 0]);
}

/// Runs every committed seed of one target through its fuzz function.
fn run_seeds(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "{} has only {n} seeds", dir.display());
}

#[test]
fn seeds_frame_decoder() {
    run_seeds("frame_decoder", frame_decoder);
}

#[test]
fn seeds_grpc_timeout() {
    run_seeds("grpc_timeout", grpc_timeout);
}

#[test]
fn seeds_status_trailers() {
    run_seeds("status_trailers", status_trailers);
}

#[test]
fn seeds_metadata_bin() {
    run_seeds("metadata_bin", metadata_bin);
}

// Regression: a chunk schedule of only zeros looped forever pushing empty chunks (found by
// cargo fuzz as a hang, not a crash: libFuzzer's default timeout is 20 minutes).
#[test]
fn frame_decoder_all_zero_schedule_terminates() {
    frame_decoder(b"\x00\x64\x00\x02\x00\x00\x00\x00\x00\x00\x01x");
    frame_decoder(b"\x00\x64\x00\x01\x00");
}

#[test]
fn short_and_empty_inputs() {
    for data in [&b""[..], b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00"] {
        frame_decoder(data);
        grpc_timeout(data);
        status_trailers(data);
        metadata_bin(data);
    }
}
