//! Custom metadata: thin helpers over `http::HeaderMap` (GRPC-NOTES §1.4).
//!
//! Keys are lowercase `[0-9a-z_.-]+`; reserved names (`grpc-*`, `te`, `content-type`,
//! connection-specific headers, pseudo-headers) are never user metadata. Keys ending in `-bin`
//! carry binary values as base64: emitted unpadded, accepted padded or unpadded, and split on
//! `,` first because duplicates may arrive joined.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Standard alphabet; unpadded out, either padding in (GRPC-NOTES §1.4).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Suffix that marks a binary metadata key (PROTOCOL-HTTP2.md).
const BIN_SUFFIX: &str = "-bin";

/// Connection-specific headers, illegal in HTTP/2 (RFC 9113 §8.2.2); h2 rejects them.
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Why a metadata key or value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataError {
    /// The key is empty or has characters outside `[0-9a-z_.-]`.
    InvalidKey,
    /// The key is reserved for the protocol (`grpc-*`, `te`, `content-type`, ...).
    ReservedKey,
    /// The value is not allowed: not visible ASCII, surrounding whitespace, or bad base64.
    InvalidValue,
    /// The key ends in `-bin`, so only the `*_bin` methods may set it.
    BinaryKeyRequired,
    /// The key does not end in `-bin`, so the `*_bin` methods may not set it.
    AsciiKeyRequired,
}

/// `grpc-timeout`, parsed once at compile time: looking a header up by `&str` parses the
/// name on every call.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `grpc-encoding`, the message encoding of the sender.
pub(crate) const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
/// `grpc-accept-encoding`, the encodings the sender can decode.
pub(crate) const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

/// Header names a user may never set or see as metadata: `te`, `content-type`, `grpc-*`,
/// connection-specific headers and pseudo-headers.
pub(crate) fn is_reserved(name: &str) -> bool {
    // Compared without allocating: this runs for every header of every call.
    let starts_with = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    // "Names starting with grpc- are reserved" (GRPC-NOTES §1.4); pseudo-headers start with ':'.
    starts_with("grpc-")
        || name.starts_with(':')
        || name.eq_ignore_ascii_case("te")
        || name.eq_ignore_ascii_case("content-type")
        || CONNECTION_HEADERS
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
}

/// User metadata of one request or response, held as an `http::HeaderMap`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    headers: HeaderMap,
}

impl Metadata {
    /// An empty set of metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Like [`Metadata::from_headers`], taking the map: the reserved entries every call carries
    /// are removed in place, so the common case copies nothing.
    pub(crate) fn from_header_map(mut headers: HeaderMap) -> Self {
        // One pass to find the reserved names (every call has a few: te, content-type,
        // grpc-status ...), then remove just those: no lookups for names that are absent.
        let reserved: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_reserved(k.as_str()))
            .cloned()
            .collect();
        for name in reserved {
            headers.remove(name);
        }
        Self { headers }
    }

    /// User metadata taken from request/response headers or trailers: reserved names dropped.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_header_map(headers.clone())
    }

    /// The first value of an ASCII key; None for `-bin` keys or values that are not visible
    /// ASCII.
    pub fn get(&self, key: &str) -> Option<&str> {
        if is_bin(key) {
            return None;
        }
        ascii_value(self.headers.get(key)?)
    }

    /// Every visible-ASCII value of an ASCII key, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        if is_bin(key) {
            return Vec::new();
        }
        self.headers
            .get_all(key)
            .iter()
            .filter_map(ascii_value)
            .collect()
    }

    /// A `-bin` entry decoded (all values, each split on ','); padded or unpadded; None if
    /// absent or undecodable.
    pub fn get_bin(&self, key: &str) -> Option<Vec<u8>> {
        if !is_bin(key) {
            return None;
        }
        let mut values = self.headers.get_all(key).iter().peekable();
        values.peek()?;
        let mut out = Vec::new();
        for v in values {
            out.extend(decode_bin(v.as_bytes()).ok()?);
        }
        Some(out)
    }

    /// Sets an ASCII key to one value, replacing any others.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let (name, value) = ascii_entry(key, value)?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// Adds a value to an ASCII key.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let (name, value) = ascii_entry(key, value)?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Sets a `-bin` key to one binary value (stored base64 unpadded), replacing any others.
    pub fn insert_bin(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let (name, value) = bin_entry(key, value)?;
        self.headers.insert(name, value);
        Ok(())
    }

    /// Adds a binary value to a `-bin` key.
    pub fn append_bin(&mut self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let (name, value) = bin_entry(key, value)?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Removes every value of a key.
    pub fn remove(&mut self, key: &str) {
        self.headers.remove(key);
    }

    /// Number of values (a key with two values counts twice).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there is no metadata.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The distinct keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.headers.keys().map(HeaderName::as_str)
    }

    /// Appends every entry of `other` (all values of a repeated key are kept).
    pub fn extend(&mut self, other: Self) {
        if self.headers.is_empty() {
            self.headers = other.headers;
            return;
        }
        let mut name = None;
        for (key, value) in other.headers {
            if let Some(key) = key {
                name = Some(key);
            }
            if let Some(name) = &name {
                self.headers.append(name.clone(), value);
            }
        }
    }

    /// Copies every entry into `headers` (appending).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }

    /// The underlying header map.
    pub fn as_header_map(&self) -> &HeaderMap {
        &self.headers
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidKey => "invalid metadata key",
            Self::ReservedKey => "reserved metadata key",
            Self::InvalidValue => "invalid metadata value",
            Self::BinaryKeyRequired => "key ends in -bin: use the binary methods",
            Self::AsciiKeyRequired => "binary value needs a key ending in -bin",
        })
    }
}

impl std::error::Error for MetadataError {}

/// Decodes a `-bin` value: split on ',' first, then base64 with or without padding
/// (GRPC-NOTES §1.4).
pub fn decode_bin(value: &[u8]) -> Result<Vec<u8>, MetadataError> {
    let mut out = Vec::with_capacity(value.len() / 4 * 3 + 3);
    for part in value.split(|&b| b == b',') {
        // Joined duplicates may carry optional whitespace after the comma (RFC 9110 §5.3).
        let part = part.trim_ascii();
        BASE64
            .decode_vec(part, &mut out)
            .map_err(|_| MetadataError::InvalidValue)?;
    }
    Ok(out)
}

/// Encodes a `-bin` value: standard alphabet, unpadded.
pub fn encode_bin(value: &[u8]) -> String {
    BASE64.encode(value)
}

fn is_bin(key: &str) -> bool {
    key.ends_with(BIN_SUFFIX)
}

/// Checks a key against the rules, in order: syntax, reserved, then the caller checks -bin.
fn check_key(key: &str) -> Result<HeaderName, MetadataError> {
    // "Names: lowercase [0-9a-z_.-]" (GRPC-NOTES §1.4).
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'.' | b'-'));
    if !valid {
        return Err(MetadataError::InvalidKey);
    }
    if is_reserved(key) {
        return Err(MetadataError::ReservedKey);
    }
    HeaderName::from_bytes(key.as_bytes()).map_err(|_| MetadataError::InvalidKey)
}

fn ascii_entry(key: &str, value: &str) -> Result<(HeaderName, HeaderValue), MetadataError> {
    let name = check_key(key)?;
    if is_bin(key) {
        return Err(MetadataError::BinaryKeyRequired);
    }
    // "ASCII values: 0x20-0x7E, with no leading or trailing whitespace" (GRPC-NOTES §1.4).
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if !visible || value.trim_matches(' ').len() != value.len() {
        return Err(MetadataError::InvalidValue);
    }
    let value = HeaderValue::from_str(value).map_err(|_| MetadataError::InvalidValue)?;
    Ok((name, value))
}

fn bin_entry(key: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), MetadataError> {
    let name = check_key(key)?;
    if !is_bin(key) {
        return Err(MetadataError::AsciiKeyRequired);
    }
    // "-bin values: ... emit unpadded" (GRPC-NOTES §1.4).
    let value =
        HeaderValue::try_from(encode_bin(value)).map_err(|_| MetadataError::InvalidValue)?;
    Ok((name, value))
}

/// A header value as metadata text, if it is all visible ASCII (0x20..=0x7E).
fn ascii_value(value: &HeaderValue) -> Option<&str> {
    // HeaderValue::to_str also admits tab; gRPC ASCII values do not (GRPC-NOTES §1.4).
    let bytes = value.as_bytes();
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return None;
    }
    value.to_str().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // GRPC-NOTES §1.4: grpc-*, te, content-type, connection headers and pseudo-headers.
    #[test]
    fn reserved_names() {
        for name in [
            "grpc-status",
            "grpc-timeout",
            "grpc-anything",
            "te",
            "content-type",
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            ":path",
            "Content-Type",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["user-agent", "x-request-id", "grpcx", "authorization"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    // GRPC-NOTES §1.4: keys are lowercase [0-9a-z_.-]+, non-empty, not reserved.
    #[test]
    fn key_rules() {
        let mut md = Metadata::new();
        assert_eq!(md.insert("", "v"), Err(MetadataError::InvalidKey));
        assert_eq!(md.insert("X-Id", "v"), Err(MetadataError::InvalidKey));
        assert_eq!(md.insert("a b", "v"), Err(MetadataError::InvalidKey));
        assert_eq!(md.insert("grpc-x", "v"), Err(MetadataError::ReservedKey));
        assert_eq!(md.insert("te", "v"), Err(MetadataError::ReservedKey));
        assert_eq!(
            md.insert("a-bin", "v"),
            Err(MetadataError::BinaryKeyRequired)
        );
        assert_eq!(
            md.insert_bin("a", b"v"),
            Err(MetadataError::AsciiKeyRequired)
        );
        assert_eq!(
            md.insert_bin("grpc-x-bin", b"v"),
            Err(MetadataError::ReservedKey)
        );
        assert_eq!(md.insert("a_b.c-9", "v"), Ok(()));
    }

    // GRPC-NOTES §1.4: ASCII values are 0x20..=0x7E with no leading/trailing whitespace.
    #[test]
    fn value_rules() {
        let mut md = Metadata::new();
        for bad in [" x", "x ", "a\tb", "a\nb", "é", "\x7f"] {
            assert_eq!(
                md.insert("k", bad),
                Err(MetadataError::InvalidValue),
                "{bad:?}"
            );
        }
        assert_eq!(md.insert("k", "a b ~"), Ok(()));
        assert_eq!(md.insert("k", ""), Ok(()));
        assert_eq!(md.get("k"), Some(""));
    }

    #[test]
    fn insert_append_get_remove() {
        let mut md = Metadata::new();
        md.append("k", "1").unwrap();
        md.append("k", "2").unwrap();
        md.insert_bin("b-bin", b"\x00\xff").unwrap();
        assert_eq!(md.get("k"), Some("1"));
        assert_eq!(md.get_all("k"), vec!["1", "2"]);
        assert_eq!(md.len(), 3);
        assert_eq!(md.keys().collect::<Vec<_>>(), vec!["k", "b-bin"]);
        assert_eq!(md.get("b-bin"), None);
        assert_eq!(md.get_bin("k"), None);
        assert_eq!(md.get_bin("b-bin"), Some(vec![0, 0xff]));
        md.insert("k", "3").unwrap();
        assert_eq!(md.get_all("k"), vec!["3"]);
        md.remove("k");
        md.remove("b-bin");
        assert!(md.is_empty());
    }

    // GRPC-NOTES §1.4: emit unpadded; accept both paddings; split on ',' first.
    #[test]
    fn bin_values() {
        assert_eq!(encode_bin(b"a"), "YQ");
        assert_eq!(decode_bin(b"YQ"), Ok(b"a".to_vec()));
        assert_eq!(decode_bin(b"YQ=="), Ok(b"a".to_vec()));
        assert_eq!(decode_bin(b"YQ,Yg=="), Ok(b"ab".to_vec()));
        assert_eq!(decode_bin(b"YQ, Yg"), Ok(b"ab".to_vec()));
        assert_eq!(decode_bin(b""), Ok(Vec::new()));
        assert_eq!(decode_bin(b"Y"), Err(MetadataError::InvalidValue));
        assert_eq!(decode_bin(b"!!"), Err(MetadataError::InvalidValue));
        let mut md = Metadata::new();
        md.append_bin("x-bin", b"a").unwrap();
        md.append_bin("x-bin", b"b").unwrap();
        assert_eq!(md.get_bin("x-bin"), Some(b"ab".to_vec()));
    }

    // GRPC-NOTES §1.4: reserved names never become user metadata; bad values are tolerated.
    #[test]
    fn from_headers_drops_reserved() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("0"));
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-id", HeaderValue::from_static("7"));
        h.insert("x-tab", HeaderValue::from_static("a\tb"));
        h.insert("x-bin", HeaderValue::from_static("!!"));
        let md = Metadata::from_headers(&h);
        assert_eq!(md.len(), 3);
        assert_eq!(md.get("x-id"), Some("7"));
        assert_eq!(md.get("x-tab"), None);
        assert_eq!(md.get_bin("x-bin"), None);
        let mut out = HeaderMap::new();
        out.insert("x-id", HeaderValue::from_static("6"));
        md.append_to(&mut out);
        assert_eq!(out.get_all("x-id").iter().count(), 2);
        assert_eq!(md.as_header_map().len(), 3);
    }

    proptest! {
        // GRPC-NOTES §1.4: base64 round trip, padded and unpadded, and joined values.
        #[test]
        fn base64_round_trip(
            a in prop::collection::vec(any::<u8>(), 0..100),
            b in prop::collection::vec(any::<u8>(), 0..100),
        ) {
            use base64::engine::general_purpose::STANDARD;
            prop_assert_eq!(decode_bin(encode_bin(&a).as_bytes()), Ok(a.clone()));
            prop_assert_eq!(decode_bin(STANDARD.encode(&a).as_bytes()), Ok(a.clone()));
            let joined = format!("{},{}", encode_bin(&a), STANDARD.encode(&b));
            let mut ab = a;
            ab.extend_from_slice(&b);
            prop_assert_eq!(decode_bin(joined.as_bytes()), Ok(ab));
        }

        #[test]
        fn decode_bin_never_panics(v in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_bin(&v);
        }
    }
}

#[cfg(test)]
mod from_header_map_tests {
    use super::*;

    // Rule: reserved names are never exposed as user metadata (GRPC-NOTES §1.4); the in-place
    // fast path must agree with the copying one whatever the headers hold.
    #[test]
    fn agrees_with_from_headers() {
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("te", "trailers"),
                ("content-type", "application/grpc"),
                ("x-a", "1"),
            ],
            &[("grpc-timeout", "1S"), ("token", "t"), ("x-b-bin", "AAEC")],
            &[
                ("grpc-custom", "no"),
                ("x-c", "2"),
                ("keep-alive", "5"),
                ("te", "trailers"),
            ],
            &[],
        ];
        for case in cases {
            let mut map = HeaderMap::new();
            for (k, v) in *case {
                map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            assert_eq!(
                Metadata::from_header_map(map.clone()),
                Metadata::from_headers(&map)
            );
        }
    }

    #[test]
    fn reserved_names_in_any_case() {
        for name in [
            "grpc-status",
            "GRPC-Message",
            "te",
            "Content-Type",
            ":path",
            "Connection",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["x-grpc", "token", "tea", "content-typed"] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}
