//! The checksummed metadata envelope of snapshot repositories, and Lucene file footers.
//!
//! Envelope (Elasticsearch/OpenSearch `ChecksumBlobStoreFormat`, Lucene `CodecUtil`):
//! ```text
//! header:  BE i32 0x3FD76C17 | VInt length + codec name | BE i32 version
//! body:    "DFL\0" + raw DEFLATE of SMILE   or   raw SMILE
//! footer:  BE i32 0xC02893E8 | BE i32 0 (algorithm) | BE i64 CRC32 of all but the last 8 bytes
//! ```
//! Data blobs are raw Lucene files: their last 16 bytes are the same footer, and the
//! repository records the CRC32 as a base-36 string.

use std::io::Read;

use crate::error::{Error, Result};

/// Lucene's codec header magic.
pub const CODEC_MAGIC: u32 = 0x3FD7_6C17;
/// Lucene's footer magic.
pub const FOOTER_MAGIC: u32 = 0xC028_93E8;
const FOOTER_LEN: usize = 16;

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Codec name (`snapshot`, `metadata`, `index-metadata`, `snapshots`, ...).
    pub codec: String,
    /// Codec version.
    pub version: u32,
    /// The SMILE body, inflated if it was compressed.
    pub smile: Vec<u8>,
    /// Whether the body was DEFLATE-compressed.
    pub compressed: bool,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a Lucene-style footer over a whole buffer: magic, algorithm 0, and the CRC32 of
/// everything before the last 8 bytes. Returns the stored checksum.
pub fn check_footer(what: &str, b: &[u8]) -> Result<u64> {
    check_footer_inner(what, b).map_err(|e| e.at_key(what))
}

fn check_footer_inner(what: &str, b: &[u8]) -> Result<u64> {
    if b.len() < FOOTER_LEN {
        return Err(Error::checksum(format!(
            "{what}: {} bytes is too short for a footer",
            b.len()
        )));
    }
    let f = b.len() - FOOTER_LEN;
    if be32(b, f) != FOOTER_MAGIC {
        return Err(Error::checksum(format!(
            "{what}: footer magic is {:#010x}, not {FOOTER_MAGIC:#010x}",
            be32(b, f)
        )));
    }
    if be32(b, f + 4) != 0 {
        return Err(Error::checksum(format!(
            "{what}: unknown checksum algorithm {}",
            be32(b, f + 4)
        )));
    }
    let stored = u64::from_be_bytes(b[b.len() - 8..].try_into().unwrap_or([0; 8]));
    let actual = crc32fast::hash(&b[..b.len() - 8]) as u64;
    if stored != actual {
        return Err(Error::checksum(format!(
            "{what}: stored CRC32 {stored:08x}, computed {actual:08x}"
        )));
    }
    Ok(stored)
}

/// Parses and verifies an envelope.
pub fn parse_envelope(what: &str, b: &[u8]) -> Result<Envelope> {
    parse_envelope_inner(what, b).map_err(|e| e.at_key(what))
}

fn parse_envelope_inner(what: &str, b: &[u8]) -> Result<Envelope> {
    check_footer(what, b)?;
    let bad = |m: String| Error::checksum(format!("{what}: {m}"));
    if b.len() < 9 || be32(b, 0) != CODEC_MAGIC {
        return Err(bad("not a checksummed blob (no codec header)".into()));
    }
    // VInt length of the codec name (Lucene DataOutput.writeString).
    let mut i = 4;
    let mut len: usize = 0;
    let mut shift = 0;
    loop {
        let byte = *b
            .get(i)
            .ok_or_else(|| bad("truncated codec header".into()))?;
        i += 1;
        len |= ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return Err(bad("bad codec name length".into()));
        }
    }
    let name = b
        .get(i..i + len)
        .ok_or_else(|| bad("truncated codec name".into()))?;
    let codec = String::from_utf8_lossy(name).into_owned();
    i += len;
    if i + 4 > b.len() - FOOTER_LEN {
        return Err(bad("truncated codec version".into()));
    }
    let version = be32(b, i);
    i += 4;
    let body = &b[i..b.len() - FOOTER_LEN];
    if body.starts_with(b"ZSTD\0") || body.starts_with(b"ZSTD") {
        return Err(Error::invalid_input(format!(
            "{what}: zstd-compressed metadata (OpenSearch 2.x `zstd`) is not supported; re-register the repository with compress: deflate or none"
        )));
    }
    let (smile, compressed) = if let Some(raw) = body.strip_prefix(b"DFL\0") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("DEFLATE body does not inflate: {e}")))?;
        (out, true)
    } else {
        (body.to_vec(), false)
    };
    Ok(Envelope {
        codec,
        version,
        smile,
        compressed,
    })
}

/// Decodes an envelope's SMILE body into `T`.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, env: &Envelope) -> Result<T> {
    serde_smile::from_slice(&env.smile).map_err(|e| {
        Error::repository(format!("{what}: cannot read its SMILE body: {e}")).at_key(what)
    })
}

/// Writes an envelope around a raw (uncompressed) SMILE body: the inverse of
/// [`parse_envelope`] for bodies that were not DEFLATE-compressed.
///
/// Lucene's `CodecUtil.writeHeader` (magic, `writeString` = VInt length + UTF-8 name,
/// BE version) and `writeFooter` (magic, algorithm 0, the CRC32 of every byte before the
/// checksum, as a BE long). Readers detect compression from the body's `DFL\0` marker,
/// not from the repository's `compress` setting, so an uncompressed body is valid in any
/// repository.
pub fn write_envelope(codec: &str, version: u32, smile: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 5 + codec.len() + 4 + smile.len() + FOOTER_LEN);
    b.extend_from_slice(&CODEC_MAGIC.to_be_bytes());
    let mut len = codec.len();
    while len >= 0x80 {
        b.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    b.push(len as u8);
    b.extend_from_slice(codec.as_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(smile);
    b.extend_from_slice(&FOOTER_MAGIC.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    let crc = crc32fast::hash(&b) as u64;
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// A SMILE document as a generic value that keeps what a JSON value would lose: binary
/// values stay binary (`meta_hash`, `writer_uuid`), `int`/`long`/`float`/`double`/big
/// numbers keep their SMILE types, object keys keep their order.
pub type SmileValue = serde_smile::value::Value;

/// Encodes a SMILE document the way Elasticsearch's `SmileXContent` writes one as far as a
/// reader can tell: the `:)\n` header, binary values raw (`ENCODE_BINARY_AS_7BIT` off, so the
/// header's raw-binary bit is set), no shared string values. Property names are written in
/// full, never as back-references (shared names are an optional size optimisation the
/// header declares off; Jackson's `SmileParser.handleSignature` then keeps no name table
/// at all), so no reader's name table can disagree with ours.
pub fn encode_smile(what: &str, v: &SmileValue) -> Result<Vec<u8>> {
    use serde::Serialize as _;
    let mut ser = serde_smile::Serializer::builder()
        .raw_binary(true)
        .shared_strings(false)
        .shared_properties(false)
        .build(Vec::new());
    v.serialize(&mut ser)
        .map_err(|e| Error::repository(format!("{what}: cannot encode its SMILE body: {e}")))?;
    Ok(ser.into_inner())
}

/// Lucene's checksum string (`Long.toString(crc, 36)`).
pub fn base36(mut n: u64) -> String {
    const D: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(D[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(codec: &str, body: &[u8]) -> Vec<u8> {
        let mut b = CODEC_MAGIC.to_be_bytes().to_vec();
        b.push(codec.len() as u8);
        b.extend_from_slice(codec.as_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&FOOTER_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&b) as u64;
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn envelope_round_trip_and_corruption() {
        let b = envelope("snapshot", b":)\n\x00\xfa\xfb");
        let e = parse_envelope("t", &b).unwrap();
        assert_eq!(
            (e.codec.as_str(), e.version, e.compressed),
            ("snapshot", 1, false)
        );
        assert_eq!(e.smile, b":)\n\x00\xfa\xfb");
        let mut bad = b.clone();
        bad[12] ^= 1;
        assert_eq!(
            parse_envelope("t", &bad).unwrap_err().kind(),
            crate::error::ErrorKind::ChecksumMismatch
        );
        assert!(parse_envelope("t", &b[..10]).is_err());
        let z = envelope("snapshot", b"ZSTD\0xxxx");
        assert_eq!(
            parse_envelope("t", &z).unwrap_err().kind(),
            crate::error::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn written_envelopes_parse_back() {
        // The test helper above writes the same layout by hand; a long codec name takes a
        // two-byte VInt.
        let b = write_envelope("snapshot", 1, b":)\n\x04\xfa\xfb");
        assert_eq!(b, envelope("snapshot", b":)\n\x04\xfa\xfb"));
        let long = "c".repeat(200);
        let e = parse_envelope("t", &write_envelope(&long, 7, b"xyz")).unwrap();
        assert_eq!(
            (e.codec, e.version, e.smile, e.compressed),
            (long, 7, b"xyz".to_vec(), false)
        );
    }

    #[test]
    fn base36_matches_java() {
        // Long.toString(x, 36) for a few values.
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(4294967295), "1z141z3");
    }
}
