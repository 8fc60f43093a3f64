//! Generates the protobuf message types (no service code) from `proto/` with protox, so no
//! system `protoc` is needed, and keeps the descriptor set for server reflection.

use std::{env, fs, path::PathBuf};

/// Every .proto we serve or call: the map service, and the standard health and reflection
/// services the runtime provides.
const PROTOS: &[&str] = &[
    "satellite.proto",
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
    "grpc/testing/empty.proto",
    "grpc/testing/messages.proto",
    "grpc/testing/test.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    fs::write(
        out.join("descriptor_set.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
