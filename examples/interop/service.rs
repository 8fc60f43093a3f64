//! The `grpc.testing` service, declared once for the interop server and client: its messages
//! and its methods. Each binary uses part of it.
#![allow(dead_code)]

use satellite::grpc::{BidiStreaming, ClientStreaming, Method, ServerStreaming, Unary};

/// The generated `grpc.testing` messages.
pub(crate) mod pb {
    #![allow(
        missing_docs,
        clippy::all,
        unreachable_pub,
        unused_qualifications,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/grpc.testing.rs"));
}

use pb::{
    Empty, SimpleRequest, SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

pub(crate) const EMPTY_CALL: Method<Empty, Empty, Unary> =
    Method::unary("/grpc.testing.TestService/EmptyCall");
pub(crate) const UNARY_CALL: Method<SimpleRequest, SimpleResponse, Unary> =
    Method::unary("/grpc.testing.TestService/UnaryCall");
pub(crate) const STREAMING_OUTPUT_CALL: Method<
    StreamingOutputCallRequest,
    StreamingOutputCallResponse,
    ServerStreaming,
> = Method::server_streaming("/grpc.testing.TestService/StreamingOutputCall");
pub(crate) const STREAMING_INPUT_CALL: Method<
    StreamingInputCallRequest,
    StreamingInputCallResponse,
    ClientStreaming,
> = Method::client_streaming("/grpc.testing.TestService/StreamingInputCall");
pub(crate) const FULL_DUPLEX_CALL: Method<
    StreamingOutputCallRequest,
    StreamingOutputCallResponse,
    BidiStreaming,
> = Method::bidi_streaming("/grpc.testing.TestService/FullDuplexCall");
pub(crate) const HALF_DUPLEX_CALL: Method<
    StreamingOutputCallRequest,
    StreamingOutputCallResponse,
    BidiStreaming,
> = Method::bidi_streaming("/grpc.testing.TestService/HalfDuplexCall");
/// A method the test service does not implement (unimplemented_method).
pub(crate) const UNIMPLEMENTED_CALL: Method<Empty, Empty, Unary> =
    Method::unary("/grpc.testing.TestService/UnimplementedCall");
/// A service the server does not have at all (unimplemented_service).
pub(crate) const UNIMPLEMENTED_SERVICE_CALL: Method<Empty, Empty, Unary> =
    Method::unary("/grpc.testing.UnimplementedService/UnimplementedCall");
