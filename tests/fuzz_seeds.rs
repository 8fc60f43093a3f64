//! The `server_e2e` fuzz target's committed seeds, run under stable `cargo test`.
//!
//! The fuzz logic lives in the dev-only `satellite-testkit` crate (tests/support), which both
//! this test and `fuzz/fuzz_targets/server_e2e.rs` call. The sans-IO targets' seeds run as unit
//! tests of `satellite::grpc::fuzz_bridge`.

use std::path::PathBuf;

use satellite_testkit::server_e2e;

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
