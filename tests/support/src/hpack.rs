//! A literal-only HPACK encoder (RFC 7541): no Huffman, no references into the static table,
//! so each header's bytes are exactly what the test wrote.

/// An HPACK integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1).
pub fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1_usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
pub fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    string(out, name.as_bytes());
    string(out, value);
}

/// A literal header field *with* incremental indexing, new name (RFC 7541 §6.2.1): it enters
/// the peer's dynamic table.
pub fn literal_indexed(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x40);
    string(out, name.as_bytes());
    string(out, value);
}

/// A string literal: H = 0, a 7-bit length prefix, the raw bytes (RFC 7541 §5.2).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    hpack_int(out, 0, 7, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7541 Appendix C.1.
    #[test]
    fn integers_match_the_rfc_examples() {
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        hpack_int(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
    }

    // RFC 7541 Appendix C.2.1 and C.2.2.
    #[test]
    fn literals_match_the_rfc_examples() {
        let mut out = Vec::new();
        literal_indexed(&mut out, "custom-key", b"custom-header");
        assert_eq!(out[0], 0x40);
        assert_eq!(&out[1..], b"\x0acustom-key\x0dcustom-header");
        out.clear();
        literal(&mut out, "x", &[b'v'; 200]);
        assert_eq!(&out[..5], &[0x00, 1, b'x', 127, 73]);
        assert_eq!(out.len(), 5 + 200);
    }
}
