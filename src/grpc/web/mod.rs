//! The browser protocols beside gRPC: gRPC-Web (binary and text) and Connect (unary and
//! streaming, binary and JSON). This layer holds their sans-IO parts: body framing, base64,
//! error and end-of-stream encodings, and the JSON form of messages.
// The web gateway that drives these (issue 13) lands in steps; until it does, only the unit
// tests call them.
#![allow(dead_code)]

pub(crate) mod connect;
pub(crate) mod grpc_web;
pub(crate) mod json;
