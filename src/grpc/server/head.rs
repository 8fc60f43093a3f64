//! The request head of one stream: the checks that say whether it is a gRPC call we can take,
//! and the [`CallHead`] the rest of the call works from. Not generic, no I/O.

use std::sync::Arc;

use http::{header, request::Parts, Method, StatusCode};
use tokio::time::Instant;

use crate::grpc::{
    compression::Encoding,
    error::WireError,
    intercept::CallHead,
    log::WIRE_TARGET,
    metadata::{Metadata, GRPC_ACCEPT_ENCODING, GRPC_TIMEOUT},
    request::Peer,
    timeout,
};

/// Why a request head is refused before any handler is chosen.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Not a gRPC request: answered with a bare HTTP status.
    Http(StatusCode),
    /// A gRPC request we cannot take: answered Trailers-Only.
    Wire(WireError),
}

/// Checks a request head (PROTOCOL-HTTP2.md) and builds the call's head from it.
pub(crate) fn check(head: Parts, peer: &Arc<Peer>) -> Result<CallHead, Rejection> {
    // PROTOCOL-HTTP2.md: ":method POST"; anything else is not a gRPC call.
    if head.method != Method::POST {
        tracing::debug!(method = %head.method, "rejecting non-POST request");
        return Err(Rejection::Http(StatusCode::METHOD_NOT_ALLOWED));
    }
    // PROTOCOL-HTTP2.md: a content-type that does not begin with "application/grpc" SHOULD get
    // HTTP 415 (GRPC-NOTES §1.2).
    let grpc_content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc_content_type {
        tracing::debug!("rejecting request with a non-gRPC content-type");
        return Err(Rejection::Http(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    tracing::debug!(target: WIRE_TARGET, peer = ?peer.addr, path = head.uri.path(), headers = ?head.headers, "recv headers");
    // compression.md: an encoding the server does not support is UNIMPLEMENTED, and the
    // response lists what it accepts.
    let encoding = Encoding::of_head(&head.headers)
        .map_err(|name| Rejection::Wire(WireError::UnsupportedEncoding(name)))?;
    let deadline = match head
        .headers
        .get(GRPC_TIMEOUT)
        .map(|v| timeout::parse(v.as_bytes()))
    {
        None => None,
        Some(Ok(t)) => Instant::now().checked_add(t),
        // grpc-go fails a malformed timeout rather than ignoring it (GRPC-NOTES §1.2, [S5]).
        Some(Err(e)) => return Err(Rejection::Wire(WireError::Timeout(e))),
    };
    Ok(CallHead {
        uri: head.uri,
        accept: head.headers.get(GRPC_ACCEPT_ENCODING).cloned(),
        metadata: Metadata::from_header_map(head.headers),
        deadline,
        peer: peer.clone(),
        response_metadata: Metadata::new(),
        encoding,
    })
}
