//! tonic + prost code for proto/satellite.proto, compiled by protox (no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/satellite.proto");
    let fds = protox::compile(["satellite.proto"], ["../../proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
