//! Where the runtime's log events go.

/// The `tracing` target of wire-level events (headers, each message, trailers), all at debug:
/// enable it with a filter such as `wire=debug`. When it is off each event costs one check.
pub const WIRE_TARGET: &str = "wire";
