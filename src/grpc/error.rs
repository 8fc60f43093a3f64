//! Transport and configuration errors: binding, TLS setup, handshakes, HTTP/2 connections.
//!
//! These are not RPC outcomes (those are [`Status`](crate::grpc::Status)). Like hyper's error,
//! the type is opaque: `Display` prints this level only and `source()` gives the cause; the
//! message text is not API.

use std::{error::Error as StdError, fmt};

use h2::Reason;

use crate::grpc::{
    codec::EncodeError, compression::DecompressError, frame::FrameError, status::Status,
    timeout::TimeoutError,
};

/// A transport or configuration failure.
#[derive(Debug)]
pub struct Error {
    inner: Box<ErrorImpl>,
}

#[derive(Debug)]
struct ErrorImpl {
    kind: Kind,
    context: String,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Config,
    Tls,
    Io,
    Http2,
    Timeout,
    Unavailable,
}

impl Error {
    pub(crate) fn new(kind: Kind, context: impl Into<String>) -> Self {
        Self {
            inner: Box::new(ErrorImpl {
                kind,
                context: context.into(),
                cause: None,
            }),
        }
    }

    pub(crate) fn with(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.inner.cause = Some(cause.into());
        self
    }

    pub(crate) fn config(context: impl Into<String>) -> Self {
        Self::new(Kind::Config, context)
    }

    pub(crate) fn tls(context: impl Into<String>) -> Self {
        Self::new(Kind::Tls, context)
    }

    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Self::new(Kind::Io, context).with(cause)
    }

    pub(crate) fn http2(context: impl Into<String>, cause: h2::Error) -> Self {
        Self::new(Kind::Http2, context).with(cause)
    }

    pub(crate) fn unavailable(context: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, context)
    }

    pub(crate) fn timeout(phase: &str) -> Self {
        Self::new(Kind::Timeout, format!("{phase} timed out"))
    }

    /// True when no address of a target could be connected.
    pub fn is_unavailable(&self) -> bool {
        self.inner.kind == Kind::Unavailable
    }

    /// True for an invalid configuration (a setting out of range, a missing certificate).
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// True for a TLS setup or handshake failure.
    pub fn is_tls(&self) -> bool {
        self.inner.kind == Kind::Tls
    }

    /// True for an I/O failure (bind, connect, read, write).
    pub fn is_io(&self) -> bool {
        self.inner.kind == Kind::Io
    }

    /// True when a phase (connect, handshake) ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.context)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .cause
            .as_ref()
            .map(|c| &**c as &(dyn StdError + 'static))
    }
}

/// An error and its causes on one line ("cannot connect to X: Connection refused"), for a
/// status message or a CLI message.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A failure below the status layer, described, not judged: [`WireError::into_status`] is the
/// one place where the server and the client turn one into a status code (GRPC-NOTES §1.6).
#[derive(Debug)]
pub(crate) enum WireError {
    /// The length-prefixed message stream is malformed.
    Frame(FrameError),
    /// A message payload is not a valid message of its type.
    Decode(prost::DecodeError),
    /// A compressed message cannot be inflated within the limit.
    Decompress(DecompressError),
    /// A message cannot be sent (too large, or compression failed).
    Encode(EncodeError),
    /// `grpc-encoding` names an encoding we do not support.
    UnsupportedEncoding(String),
    /// `grpc-timeout` does not parse.
    Timeout(TimeoutError),
    /// A unary side carried no message (`more == false`) or more than one.
    Cardinality { more: bool },
    /// HTTP/2 failed under the call (stream reset, connection lost).
    Transport(h2::Error),
}

/// The side that met a wire fault: the same fault can mean a different code, or different
/// words, on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

impl WireError {
    /// The status this fault means on `side` (GRPC-NOTES §1.3, §1.6 and §1.7).
    pub(crate) fn into_status(self, side: Side) -> Status {
        let (ours, theirs) = match side {
            Side::Server => ("response", "request"),
            Side::Client => ("request", "response"),
        };
        match self {
            Self::Frame(FrameError::TooLarge { len, limit }) => Status::resource_exhausted(
                format!("received message larger than max ({len} vs. {limit})"),
            ),
            Self::Frame(other) => Status::internal(other.to_string()),
            Self::Decode(e) => Status::internal(format!("failed to decode message: {e}")),
            Self::Decompress(DecompressError::TooLarge { limit }) => Status::resource_exhausted(
                format!("decompressed message larger than max ({limit} bytes)"),
            ),
            Self::Decompress(DecompressError::Corrupt(encoding, e)) => Status::internal(format!(
                "cannot decompress a {} message: {e}",
                encoding.as_str()
            )),
            Self::Encode(EncodeError::TooLarge {
                len,
                limit,
                compressed,
            }) => Status::resource_exhausted(format!(
                "{}{ours} message of {len} bytes exceeds the send limit of {limit} bytes",
                if compressed { "compressed " } else { "" }
            )),
            Self::Encode(EncodeError::Compress(e)) => {
                Status::internal(format!("cannot compress a {ours} message: {e}"))
            }
            // compression.md: a server refuses an encoding it lacks with UNIMPLEMENTED; a
            // client that is sent one it never offered has met a broken server (INTERNAL).
            Self::UnsupportedEncoding(name) if side == Side::Server => {
                Status::unimplemented(format!("message encoding {name} is not supported"))
            }
            Self::UnsupportedEncoding(name) => Status::internal(format!(
                "the server used message encoding {name}, which we did not offer"
            )),
            Self::Timeout(e) => Status::internal(format!("malformed grpc-timeout: {e}")),
            // statuscodes.md: a cardinality violation is UNIMPLEMENTED (GRPC-NOTES §1.3).
            Self::Cardinality { more } => Status::unimplemented(format!(
                "expected one {theirs} message, got {}",
                if more { "more" } else { "none" }
            )),
            Self::Transport(e) => status_from_h2(&e),
        }
    }
}

/// An h2 stream or connection error as a status (GRPC-NOTES §1.7).
fn status_from_h2(e: &h2::Error) -> Status {
    if e.is_io() {
        return Status::unavailable(format!("connection lost: {e}"));
    }
    // A connection error h2 detected itself (the peer sent bytes that are not HTTP/2, such as
    // a TLS alert to a plaintext client): the connection failed, and open calls get UNAVAILABLE
    // (GRPC-NOTES §1.1). The table below is for codes the peer sent.
    if e.is_go_away() && e.is_library() {
        return Status::unavailable(format!("connection failed: {e}"));
    }
    if e.is_go_away() && e.reason() == Some(Reason::NO_ERROR) {
        return Status::unavailable("the server is going away");
    }
    match e.reason() {
        Some(Reason::REFUSED_STREAM) => Status::unavailable(format!("stream refused: {e}")),
        Some(Reason::CANCEL) => Status::cancelled(format!("stream cancelled: {e}")),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(format!("{e}")),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(format!("{e}")),
        Some(_) => Status::internal(format!("{e}")),
        None => Status::unavailable(format!("{e}")),
    }
}
