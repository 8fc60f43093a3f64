//! Generates the protobuf message types (no service code) from `proto/` with protox, so no
//! system `protoc` is needed, and keeps the descriptor set for reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(["satellite.proto"], ["proto"])?;
    fs::write(
        out.join("satellite_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)?;
    Ok(())
}
