//! The Satellite map service: the map, the gRPC handlers, the client, the CLI and the demo PKI.

pub mod certs;
pub mod cli;
pub mod client;
pub mod map;
pub mod page;
pub mod render;
pub mod service;

/// The protobuf messages generated from `proto/satellite.proto` (`Location`, `Area`, `Image`).
pub mod pb {
    #![allow(missing_docs, clippy::all, unreachable_pub, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/satellite.rs"));
}

/// The encoded `FileDescriptorSet` of `proto/satellite.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));
