//! The Connect protocol's own parts (connectrpc.com/docs/protocol): code names and their HTTP
//! statuses, the JSON error body, `connect-timeout-ms`, and the end-of-stream message of a
//! streaming response. Sans-IO.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::grpc::{
    metadata::Metadata,
    status::{Code, Status},
};

/// Envelope flag: the payload is compressed.
pub(crate) const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
pub(crate) const FLAG_END_STREAM: u8 = 0x02;

/// A code's Connect name: gRPC's, lower-case, with `canceled` spelled the American way.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary error (the protocol's table).
pub(crate) fn http_status(code: Code) -> StatusCode {
    let n = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    };
    StatusCode::from_u16(n).expect("a valid status")
}

/// The JSON form of an error: `{"code", "message", "details"}`.
pub(crate) fn error_json(status: &Status) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), json!(code_name(status.code())));
    if !status.message().is_empty() {
        error.insert("message".into(), json!(status.message()));
    }
    if !status.details().is_empty() {
        // grpc-status-details-bin is a google.rpc.Status; Connect wants its details one by
        // one, which needs that message decoded. Until then they travel whole, typed as such.
        error.insert(
            "details".into(),
            json!([{
                "type": "google.rpc.Status",
                "value": STANDARD_NO_PAD.encode(status.details()),
            }]),
        );
    }
    Value::Object(error)
}

/// A unary error body.
pub(crate) fn error_body(status: &Status) -> Bytes {
    Bytes::from(error_json(status).to_string())
}

/// `connect-timeout-ms`: at most 10 digits (the protocol's limit).
pub(crate) fn parse_timeout(value: &[u8]) -> Result<Duration, String> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "connect-timeout-ms must be 1 to 10 digits, got {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    let ms: u64 = std::str::from_utf8(value)
        .expect("digits")
        .parse()
        .expect("at most 10 digits fit");
    Ok(Duration::from_millis(ms))
}

/// The end-of-stream envelope: the error (when not OK) and the trailing metadata.
pub(crate) fn end_stream(status: &Status, trailers: &Metadata) -> Bytes {
    let mut end = Map::new();
    if !status.is_ok() {
        end.insert("error".into(), error_json(status));
    }
    let mut headers = http::HeaderMap::new();
    trailers.append_to(&mut headers);
    let mut metadata = Map::new();
    // `-bin` values are already base64 in header form, as the protocol wants them here.
    for (key, value) in &headers {
        let values = metadata
            .entry(key.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let (Value::Array(list), Ok(value)) = (values, value.to_str()) {
            list.push(json!(value));
        }
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), Value::Object(metadata));
    }
    let payload = Value::Object(end).to_string();
    envelope(FLAG_END_STREAM, payload.as_bytes())
}

/// One envelope: flags, big-endian length, payload.
pub(crate) fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_protocols_names_and_statuses() {
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(code_name(Code::OutOfRange), "out_of_range");
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn errors_and_end_of_stream_are_json() {
        let status = Status::out_of_range("x = 80 is off the map");
        let body: Value = serde_json::from_slice(&error_body(&status)).unwrap();
        assert_eq!(
            body,
            json!({"code": "out_of_range", "message": "x = 80 is off the map"})
        );

        let mut trailers = Metadata::new();
        trailers.append("x-cells", "2560").unwrap();
        let end = end_stream(&Status::ok(), &trailers);
        assert_eq!(end[0], FLAG_END_STREAM);
        let json: Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(json, json!({"metadata": {"x-cells": ["2560"]}}));
        let end = end_stream(&status, &Metadata::new());
        let json: Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(json["error"]["code"], "out_of_range");
    }

    #[test]
    fn timeouts_take_at_most_ten_digits() {
        assert_eq!(parse_timeout(b"1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_timeout(b"9999999999").unwrap(),
            Duration::from_millis(9_999_999_999)
        );
        for bad in [&b""[..], b"12345678901", b"-1", b"1.5", b" 1"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }
}
