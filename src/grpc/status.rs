//! RPC outcomes: the gRPC status code table and `Status`, to and from headers/trailers.
//!
//! Codes and names follow gRPC's statuscodes.md; the trailer encoding follows
//! PROTOCOL-HTTP2.md (`grpc-status`, percent-encoded `grpc-message`,
//! `grpc-status-details-bin`) and GRPC-NOTES §1.5; the HTTP fallback follows
//! http-grpc-status-mapping.md (GRPC-NOTES §1.6).

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use crate::grpc::metadata;

/// Cap on the `grpc-message` text in bytes, so trailers stay well under 8 KiB: the message is
/// often sent twice, once more inside the details (GRPC-NOTES §1.5).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_STATUS_DETAILS_BIN: HeaderName = HeaderName::from_static("grpc-status-details-bin");
const APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// A gRPC status code, numbered as in statuscodes.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error, or an error without a status.
    Unknown = 2,
    /// The client gave an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity a client tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not execute the operation.
    PermissionDenied = 7,
    /// Some resource has been exhausted (quota, message size, ...).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted (concurrency conflict, ...).
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented or not supported.
    Unimplemented = 12,
    /// An invariant expected by the system is broken.
    Internal = 13,
    /// The service is currently unavailable; retrying may help.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request has no valid authentication credentials.
    Unauthenticated = 16,
}

/// Every code with its canonical name and decimal form, indexed by number (statuscodes.md).
#[rustfmt::skip]
const CODES: [(Code, &str, &str); 17] = [
    (Code::Ok, "OK", "0"), (Code::Cancelled, "CANCELLED", "1"), (Code::Unknown, "UNKNOWN", "2"),
    (Code::InvalidArgument, "INVALID_ARGUMENT", "3"),
    (Code::DeadlineExceeded, "DEADLINE_EXCEEDED", "4"), (Code::NotFound, "NOT_FOUND", "5"),
    (Code::AlreadyExists, "ALREADY_EXISTS", "6"),
    (Code::PermissionDenied, "PERMISSION_DENIED", "7"),
    (Code::ResourceExhausted, "RESOURCE_EXHAUSTED", "8"),
    (Code::FailedPrecondition, "FAILED_PRECONDITION", "9"), (Code::Aborted, "ABORTED", "10"),
    (Code::OutOfRange, "OUT_OF_RANGE", "11"), (Code::Unimplemented, "UNIMPLEMENTED", "12"),
    (Code::Internal, "INTERNAL", "13"), (Code::Unavailable, "UNAVAILABLE", "14"),
    (Code::DataLoss, "DATA_LOSS", "15"), (Code::Unauthenticated, "UNAUTHENTICATED", "16"),
];

/// `Status` constructors, one per code: `name => Code`.
macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {$(
        $(#[$doc])*
        pub fn $name(message: impl Into<String>) -> Self {
            Self::new(Code::$code, message)
        }
    )*};
}

/// The outcome of an RPC: a code, a message and optional opaque details.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    /// Boxed so `Result<T, Status>` stays one pointer wide (tonic's choice, STYLE §5 rule 15).
    inner: Box<Inner>,
}

#[derive(Clone, PartialEq, Eq)]
struct Inner {
    code: Code,
    message: String,
    details: Bytes,
}

impl Code {
    /// The code for a number; anything outside 0..=16 is `Unknown`.
    pub fn from_i32(v: i32) -> Self {
        usize::try_from(v)
            .ok()
            .and_then(|i| CODES.get(i))
            .map_or(Self::Unknown, |&(code, ..)| code)
    }

    /// The code in a `grpc-status` value: decimal ASCII, no sign; anything bad is `Unknown`.
    pub fn from_bytes(v: &[u8]) -> Self {
        // Clients should accept unknown numbers (GRPC-NOTES §1.5); we fold them into Unknown.
        // At most two digits can name a code, so longer input cannot overflow anything.
        match v {
            [d] if d.is_ascii_digit() => Self::from_i32(i32::from(d - b'0')),
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                Self::from_i32(i32::from(a - b'0') * 10 + i32::from(b - b'0'))
            }
            _ => Self::Unknown,
        }
    }

    /// The gRPC number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with this canonical name (`"UNAVAILABLE"`), as service configs spell them.
    pub fn from_name(name: &str) -> Option<Self> {
        CODES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(code, _, _)| *code)
    }

    /// The canonical name, as in statuscodes.md (`"OUT_OF_RANGE"`).
    pub fn name(self) -> &'static str {
        CODES[self as usize].1
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Status {
    /// A status with a code and a message, and no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                code,
                message: message.into(),
                details: Bytes::new(),
            }),
        }
    }

    /// The OK status, with no message.
    pub fn ok() -> Self {
        Self::new(Code::Ok, "")
    }

    // One constructor per code, documented by the line above it.
    constructors! {
        /// A `CANCELLED` status.
        cancelled => Cancelled,
        /// An `UNKNOWN` status.
        unknown => Unknown,
        /// An `INVALID_ARGUMENT` status.
        invalid_argument => InvalidArgument,
        /// A `DEADLINE_EXCEEDED` status.
        deadline_exceeded => DeadlineExceeded,
        /// A `NOT_FOUND` status.
        not_found => NotFound,
        /// An `ALREADY_EXISTS` status.
        already_exists => AlreadyExists,
        /// A `PERMISSION_DENIED` status.
        permission_denied => PermissionDenied,
        /// A `RESOURCE_EXHAUSTED` status.
        resource_exhausted => ResourceExhausted,
        /// A `FAILED_PRECONDITION` status.
        failed_precondition => FailedPrecondition,
        /// An `ABORTED` status.
        aborted => Aborted,
        /// An `OUT_OF_RANGE` status.
        out_of_range => OutOfRange,
        /// An `UNIMPLEMENTED` status.
        unimplemented => Unimplemented,
        /// An `INTERNAL` status.
        internal => Internal,
        /// An `UNAVAILABLE` status.
        unavailable => Unavailable,
        /// A `DATA_LOSS` status.
        data_loss => DataLoss,
        /// An `UNAUTHENTICATED` status.
        unauthenticated => Unauthenticated,
    }

    /// The same status carrying `details` (sent as `grpc-status-details-bin`).
    pub fn with_details(mut self, details: Bytes) -> Self {
        self.inner.details = details;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.inner.code
    }

    /// The message text.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The opaque details (usually an encoded `google.rpc.Status`); empty when none.
    pub fn details(&self) -> &Bytes {
        &self.inner.details
    }

    /// Whether the code is `Ok`.
    pub fn is_ok(&self) -> bool {
        self.inner.code == Code::Ok
    }

    /// Inserts grpc-status, grpc-message (percent-encoded, capped at MAX_MESSAGE_BYTES on a
    /// char boundary, omitted when empty) and grpc-status-details-bin (base64 unpadded, omitted
    /// when empty) into a trailer/header map, replacing any existing values.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        // Every call ends here, so the common case (a fresh map) skips the removals and the
        // code's decimal form is a static value rather than a formatted allocation.
        if !headers.is_empty() {
            headers.remove(GRPC_MESSAGE);
            headers.remove(GRPC_STATUS_DETAILS_BIN);
        }
        // "grpc-status must be in the trailers even for OK" (GRPC-NOTES §1.5).
        headers.insert(
            GRPC_STATUS,
            HeaderValue::from_static(CODES[self.code() as usize].2),
        );
        let message = truncate(self.message(), MAX_MESSAGE_BYTES);
        if !message.is_empty() {
            // Percent-encoding leaves only visible ASCII, which a HeaderValue always accepts;
            // the `if let` just keeps a would-be bug from becoming a panic.
            if let Ok(v) = HeaderValue::try_from(percent_encode(message)) {
                headers.insert(GRPC_MESSAGE, v);
            }
        }
        if !self.details().is_empty() {
            if let Ok(v) = HeaderValue::try_from(metadata::encode_bin(self.details())) {
                headers.insert(GRPC_STATUS_DETAILS_BIN, v);
            }
        }
    }

    /// The status carried by a header or trailer map; None when there is no grpc-status.
    /// Lenient: bad percent-encoding kept literally, bad base64 details dropped; never fails.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = Code::from_bytes(headers.get(GRPC_STATUS)?.as_bytes());
        // "Decoders must be lenient and never drop the message" (GRPC-NOTES §1.5).
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        // Unlike tonic, bad base64 from a peer is dropped, never `expect`ed (STYLE §5 rule 15).
        let details = headers
            .get(GRPC_STATUS_DETAILS_BIN)
            .and_then(|v| metadata::decode_bin(v.as_bytes()).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        Some(Self::new(code, message).with_details(details))
    }

    /// Trailers-Only response head: :status 200, content-type application/grpc, the status.
    pub(crate) fn to_trailers_only(&self) -> http::Response<()> {
        // Trailers-Only must carry :status and content-type (GRPC-NOTES §1.5).
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_GRPC);
        self.write_headers(headers);
        response
    }

    /// Client mapping of an HTTP status with no grpc-status (GRPC-NOTES §1.6):
    /// 400->INTERNAL, 401->UNAUTHENTICATED, 403->PERMISSION_DENIED, 404->UNIMPLEMENTED,
    /// 429/502/503/504->UNAVAILABLE, 431->INTERNAL, else UNKNOWN; message names the HTTP status.
    pub(crate) fn from_http_status(status: http::StatusCode) -> Self {
        // Table from http-grpc-status-mapping.md.
        let code = match status.as_u16() {
            400 | 431 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        Self::new(code, format!("HTTP status {status} without grpc-status"))
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("code", &self.code())
            .field("message", &self.message())
            .field("details_len", &self.details().len())
            .finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status: {}, message: {:?}", self.code(), self.message())
    }
}

impl std::error::Error for Status {}

/// Percent-encodes a `grpc-message`: bytes outside 0x20..=0x7E and '%' become %XX uppercase.
pub fn percent_encode(message: &str) -> String {
    // PROTOCOL-HTTP2.md: "Percent-Encoded ... any byte outside %x20-%x7E, and %, as %XX".
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes a `grpc-message` leniently: a bad `%` escape is kept literally, invalid UTF-8 is
/// replaced lossily.
pub fn percent_decode(value: &[u8]) -> String {
    // PROTOCOL-HTTP2.md asks decoders to accept bad encodings rather than fail the call.
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(hi), Some(lo)) = (hex_val(value[i + 1]), hex_val(value[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Truncation used by `write_headers`, exposed for the fuzz round trip.
#[cfg(any(fuzzing, test, feature = "wire-internals"))]
pub fn capped_message(message: &str) -> &str {
    truncate(message, MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn all_codes() -> Vec<Code> {
        (0..=16).map(Code::from_i32).collect()
    }

    // statuscodes.md: numbering and names.
    // Rule: the name table is indexed by the code's number.
    #[test]
    fn every_code_round_trips_through_its_number_and_name() {
        for n in 0..17 {
            let code = Code::from_i32(n);
            assert_eq!(code.as_i32(), n);
            assert_eq!(CODES[n as usize].0, code, "{}", code.name());
        }
        assert_eq!(Code::OutOfRange.name(), "OUT_OF_RANGE");
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn codes_number_and_name() {
        for (i, c) in all_codes().into_iter().enumerate() {
            assert_eq!(c.as_i32(), i as i32);
            assert_eq!(Code::from_bytes(i.to_string().as_bytes()), c);
        }
        assert_eq!(Code::OutOfRange.name(), "OUT_OF_RANGE");
        assert_eq!(Code::DeadlineExceeded.to_string(), "DEADLINE_EXCEEDED");
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    // GRPC-NOTES §1.5: grpc-status is decimal; anything else becomes Unknown.
    #[test]
    fn code_from_bad_bytes_is_unknown() {
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"17",
            b"99",
            b"100",
            b"1a",
            b" 1",
            b"\xff",
        ] {
            assert_eq!(Code::from_bytes(bad), Code::Unknown, "{bad:?}");
        }
        assert_eq!(Code::from_bytes(b"05"), Code::NotFound);
    }

    // PROTOCOL-HTTP2.md / interop special_status_message: tabs, CRLF, ☺ and 😈 survive.
    #[test]
    fn percent_encoding_special_message() {
        let msg = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let enc = percent_encode(msg);
        assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert!(enc.starts_with("%09%0Atest with whitespace%0D%0A"));
        assert!(enc.contains("%E2%98%BA"));
        assert_eq!(percent_decode(enc.as_bytes()), msg);
        assert_eq!(percent_encode("100%"), "100%25");
    }

    // GRPC-NOTES §1.5: decoding is lenient; bad escapes are kept literally.
    #[test]
    fn percent_decode_is_lenient() {
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode(b"%41%4a"), "AJ");
        assert_eq!(percent_decode(b"%FF"), "\u{fffd}");
    }

    // GRPC-NOTES §1.5: grpc-status always present (even OK); empty message/details omitted.
    #[test]
    fn write_headers_ok_and_replace() {
        let mut h = HeaderMap::new();
        h.insert(GRPC_MESSAGE, HeaderValue::from_static("stale"));
        h.append(GRPC_STATUS, HeaderValue::from_static("13"));
        h.append(GRPC_STATUS, HeaderValue::from_static("14"));
        Status::ok().write_headers(&mut h);
        assert_eq!(h.get_all(GRPC_STATUS).iter().count(), 1);
        assert_eq!(h.get(GRPC_STATUS).unwrap(), "0");
        assert!(h.get(GRPC_MESSAGE).is_none());
        assert!(h.get(GRPC_STATUS_DETAILS_BIN).is_none());
        assert!(Status::from_headers(&h).unwrap().is_ok());
    }

    // GRPC-NOTES §1.5: message capped at MAX_MESSAGE_BYTES on a char boundary.
    #[test]
    fn message_is_capped_on_char_boundary() {
        let msg = format!("{}☺☺", "a".repeat(MAX_MESSAGE_BYTES - 2));
        let mut h = HeaderMap::new();
        Status::internal(msg).write_headers(&mut h);
        let back = Status::from_headers(&h).unwrap();
        assert_eq!(back.message(), "a".repeat(MAX_MESSAGE_BYTES - 2));
    }

    // GRPC-NOTES §1.5: details base64 unpadded on the way out, both paddings accepted back.
    #[test]
    fn details_round_trip_and_padding() {
        let s = Status::not_found("nope").with_details(Bytes::from_static(b"\x08\x05"));
        let mut h = HeaderMap::new();
        s.write_headers(&mut h);
        assert_eq!(h.get(GRPC_STATUS_DETAILS_BIN).unwrap(), "CAU");
        assert_eq!(Status::from_headers(&h), Some(s.clone()));
        h.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::from_static("CAU="));
        assert_eq!(Status::from_headers(&h), Some(s));
    }

    // STYLE §5 rule 15: bad details from a peer are dropped, never a panic.
    #[test]
    fn bad_details_dropped() {
        let mut h = HeaderMap::new();
        h.insert(GRPC_STATUS, HeaderValue::from_static("3"));
        h.insert(
            GRPC_STATUS_DETAILS_BIN,
            HeaderValue::from_static("!!notbase64"),
        );
        let s = Status::from_headers(&h).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.details().is_empty());
        assert_eq!(Status::from_headers(&HeaderMap::new()), None);
    }

    // GRPC-NOTES §1.5: Trailers-Only carries :status 200 and content-type.
    #[test]
    fn trailers_only_head() {
        let r = Status::unimplemented("no such method").to_trailers_only();
        assert_eq!(r.status(), http::StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(r.headers()[GRPC_STATUS], "12");
        assert_eq!(r.headers()[GRPC_MESSAGE], "no such method");
    }

    // GRPC-NOTES §1.6 / http-grpc-status-mapping.md.
    #[test]
    fn http_status_mapping() {
        let cases = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (431, Code::Internal),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
        ];
        for (http_code, code) in cases {
            let s = Status::from_http_status(http::StatusCode::from_u16(http_code).unwrap());
            assert_eq!(s.code(), code, "{http_code}");
            assert!(s.message().contains(&http_code.to_string()));
        }
    }

    #[test]
    fn display_and_debug() {
        let s = Status::out_of_range("x=99").with_details(Bytes::from_static(b"abc"));
        assert_eq!(s.to_string(), "status: OUT_OF_RANGE, message: \"x=99\"");
        let d = format!("{s:?}");
        assert!(d.contains("OutOfRange") && d.contains("details_len: 3"));
        assert_eq!(size_of::<Status>(), size_of::<usize>());
    }

    proptest! {
        // PROTOCOL-HTTP2.md: percent-encoding round-trips any UTF-8 string.
        #[test]
        fn percent_round_trip(s in any::<String>()) {
            let enc = percent_encode(&s);
            prop_assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(percent_decode(enc.as_bytes()), s);
        }

        // Status -> headers -> Status keeps code, (capped) message and details.
        #[test]
        fn status_header_round_trip(
            code in 0i32..=16,
            msg in ".{0,600}",
            details in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = Status::new(Code::from_i32(code), msg.clone())
                .with_details(Bytes::from(details));
            let mut h = HeaderMap::new();
            s.write_headers(&mut h);
            let back = Status::from_headers(&h).unwrap();
            prop_assert_eq!(back.code(), s.code());
            prop_assert_eq!(back.message(), capped_message(&msg));
            prop_assert_eq!(back.details(), s.details());
        }

        // Peer input: any header bytes give some status, never a panic.
        #[test]
        fn from_headers_never_panics(
            st in prop::collection::vec(any::<u8>(), 0..8),
            msg in prop::collection::vec(any::<u8>(), 0..64),
            det in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&st) { h.insert(GRPC_STATUS, v); }
            if let Ok(v) = HeaderValue::from_bytes(&msg) { h.insert(GRPC_MESSAGE, v); }
            if let Ok(v) = HeaderValue::from_bytes(&det) { h.insert(GRPC_STATUS_DETAILS_BIN, v); }
            let _ = Status::from_headers(&h);
        }
    }
}
