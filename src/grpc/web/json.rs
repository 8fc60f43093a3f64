//! Messages in protobuf's canonical JSON mapping, for Connect's and gRPC-Web's JSON codecs:
//! a method's request and response types come from the service's descriptor set, and
//! prost-reflect does the mapping (lowerCamelCase names, defaults omitted, `bytes` as base64,
//! 64-bit integers as strings), so nothing here is written by hand.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::grpc::error::Error;

/// The JSON codec of one server: the descriptors of the services it serves.
#[derive(Debug, Clone)]
pub(crate) struct JsonCodec {
    pool: DescriptorPool,
}

/// A [`JsonCodec`] built on the first JSON call. The descriptor pool was the largest thing a
/// server allocated at start (about 0.4 MiB of heap, built twice), and most servers never see
/// a JSON call.
#[derive(Debug)]
pub(crate) struct LazyJson {
    set: &'static [u8],
    codec: OnceLock<Option<JsonCodec>>,
}

impl LazyJson {
    /// A codec over `set`, an encoded `FileDescriptorSet`, built when first asked for.
    pub(crate) fn new(set: &'static [u8]) -> Self {
        Self {
            set,
            codec: OnceLock::new(),
        }
    }

    /// The codec; `None` when the set does not build into a pool (logged once), so JSON calls
    /// are refused as they are without descriptors.
    pub(crate) fn get(&self) -> Option<&JsonCodec> {
        self.codec
            .get_or_init(|| match JsonCodec::new(self.set) {
                Ok(codec) => Some(codec),
                Err(e) => {
                    tracing::error!(error = %e, "JSON calls refused: the descriptor set does not build");
                    None
                }
            })
            .as_ref()
    }
}

/// Checks that `set` is an encoded `FileDescriptorSet`, without building the pool: what a
/// configuration check can afford at start.
pub(crate) fn check(set: &[u8]) -> Result<(), Error> {
    prost_types::FileDescriptorSet::decode(set)
        .map(drop)
        .map_err(|e| Error::config("the descriptor set does not decode").with(e))
}

/// A method's message types.
#[derive(Debug, Clone)]
pub(crate) struct MethodTypes {
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
}

impl JsonCodec {
    /// A codec over an encoded `FileDescriptorSet` (what `protox`/`protoc` write).
    pub(crate) fn new(descriptor_set: &[u8]) -> Result<Self, Error> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| Error::config("the descriptor set does not decode").with(e))?;
        Ok(Self { pool })
    }

    /// The message types of the method at `/package.Service/Method`.
    pub(crate) fn method(&self, path: &str) -> Option<MethodTypes> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let method = self
            .pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)?;
        Some(MethodTypes {
            input: method.input(),
            output: method.output(),
        })
    }
}

/// JSON to the binary encoding of `message`; the error says what is wrong with the JSON.
/// serde_json's recursion limit (128) bounds nesting, so deep JSON is an error, not a crash.
pub(crate) fn to_binary(message: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let decoded = DynamicMessage::deserialize(message.clone(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| format!("invalid JSON for {}: {e}", message.full_name()))?;
    Ok(decoded.encode_to_vec())
}

/// The binary encoding of `message` to JSON.
pub(crate) fn to_json(message: &MessageDescriptor, binary: &[u8]) -> Result<Vec<u8>, String> {
    let decoded = DynamicMessage::decode(message.clone(), binary)
        .map_err(|e| format!("cannot decode a {}: {e}", message.full_name()))?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    decoded
        .serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| format!("cannot write a {} as JSON: {e}", message.full_name()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

    #[test]
    fn maps_messages_both_ways_in_the_canonical_form() {
        let codec = JsonCodec::new(SET).unwrap();
        let types = codec.method("/satellite.Satellite/GetImage").unwrap();
        assert_eq!(types.input.full_name(), "satellite.Location");
        assert_eq!(types.output.full_name(), "satellite.Image");
        let binary = to_binary(&types.input, br#"{"x": 3, "y": 4}"#).unwrap();
        assert_eq!(binary, [0x08, 3, 0x10, 4]);
        // Defaults are omitted; bytes are base64.
        let image = [0x08, 0, 0x10, 5, 0x1a, 1, b'#'];
        assert_eq!(
            to_json(&types.output, &image).unwrap(),
            br#"{"y":5,"img":"Iw=="}"#
        );
        assert!(codec.method("/satellite.Satellite/Nope").is_none());
        assert!(codec.method("nonsense").is_none());
    }

    #[test]
    fn refuses_bad_and_deeply_nested_json() {
        let codec = JsonCodec::new(SET).unwrap();
        let area = codec
            .method("/satellite.Satellite/GetImages")
            .unwrap()
            .input;
        for bad in [
            &b"{"[..],
            b"[1]",
            br#"{"x": "three"}"#,
            br#"{"nope": 1}"#,
            b"{} {}",
        ] {
            let e = to_binary(&area, bad).unwrap_err();
            assert!(e.contains("satellite.Area"), "{e}");
        }
        let deep = format!("{}{}", r#"{"ll":"#.repeat(10_000), "}".repeat(10_000));
        assert!(to_binary(&area, deep.as_bytes()).is_err());
        let ok = to_binary(&area, br#"{"ll": {"x": 1}, "ur": {"x": 2, "y": 3}}"#).unwrap();
        assert!(!ok.is_empty());
    }
}
