//! Transport and configuration errors: binding, TLS setup, handshakes, HTTP/2 connections.
//!
//! These are not RPC outcomes (those are [`Status`](crate::grpc::Status)). Like hyper's error,
//! the type is opaque: `Display` prints this level only and `source()` gives the cause; the
//! message text is not API.

use std::{error::Error as StdError, fmt};

/// A transport or configuration failure.
pub struct Error {
    inner: Box<ErrorImpl>,
}

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

    pub(crate) fn timeout(phase: &str) -> Self {
        Self::new(Kind::Timeout, format!("{phase} timed out"))
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

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("context", &self.inner.context);
        if let Some(cause) = &self.inner.cause {
            d.field("cause", cause);
        }
        d.finish()
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
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
