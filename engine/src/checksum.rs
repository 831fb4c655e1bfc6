//! Hashing off the async reactor, shared by the pipeline and the stores.
//!
//! Checksums of large buffers (a 64 MiB part is milliseconds of CRC and far more of MD5)
//! run on tokio's blocking pool so that no reactor thread stalls; small buffers are
//! hashed inline, where a thread hop would cost more than the hash.

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::store::{normalize_etag, CompletedPart};

/// Buffers up to this size are hashed inline.
pub const INLINE_HASH_LIMIT: usize = 256 << 10;

/// Runs `f` over `data`, inline when small, else on the blocking pool.
pub async fn hash<T: Send + 'static>(
    data: &Bytes,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> T {
    if data.len() <= INLINE_HASH_LIMIT {
        return f(data);
    }
    let d = data.clone();
    match tokio::task::spawn_blocking(move || f(&d)).await {
        Ok(v) => v,
        // Only a panic inside `f` gets here; hashing does not panic, so re-raise it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Checks that `data` still has the CRC32 the pipeline computed when it read the bytes
/// (the storage trait's integrity contract) and, in the same pass, computes the digest
/// the destination protocol wants (CRC-64 for OSS, MD5 for Content-MD5).
pub async fn verify_crc32_then<T: Send + 'static>(
    ctx: &str,
    data: &Bytes,
    crc32: u32,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T> {
    let (got, out) = hash(data, move |d| (crc32fast::hash(d), f(d))).await;
    if got != crc32 {
        return Err(Error::checksum(format!(
            "{ctx}: bytes have crc32 {got:08x}, expected {crc32:08x} (changed after they were read)"
        )));
    }
    Ok(out)
}

/// MD5 of `data`, lower-case hex: a single-part object's ETag as S3 and OSS compute it.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// CRC32 as S3 writes it in `x-amz-checksum-crc32` (base64 of the big-endian value).
pub fn crc32_b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The whole-object CRC32 a store may report for an object completed from `parts`:
/// (composite `base64(crc32 of the part CRCs)-N`, full-object `base64(crc32)`). S3
/// reports one or the other depending on the checksum type; both follow from the part
/// CRCs without re-reading.
pub fn crc32_of_parts(parts: &[CompletedPart]) -> (String, String) {
    let mut composite = crc32fast::Hasher::new();
    for p in parts {
        composite.update(&p.crc32.to_be_bytes());
    }
    (
        format!("{}-{}", crc32_b64(composite.finalize()), parts.len()),
        crc32_b64(crc32_concat(parts.iter().map(|p| (p.crc32, p.size)))),
    )
}

/// The CRC-64/XZ of an object completed from `parts` (OSS), when every part has one.
pub fn crc64_of_parts(parts: &[CompletedPart]) -> Option<u64> {
    parts
        .iter()
        .map(|p| Some((p.crc64?, p.size)))
        .collect::<Option<Vec<_>>>()
        .map(crc64_concat)
}

/// The CRC32 of pieces laid end to end, from each piece's CRC32 and length.
pub fn crc32_concat(pieces: impl IntoIterator<Item = (u32, u64)>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (c, n) in pieces {
        h.combine(&crc32fast::Hasher::new_with_initial_len(c, n));
    }
    h.finalize()
}

/// The CRC-64/XZ (OSS's) of pieces laid end to end, from each piece's and its length.
pub fn crc64_concat(pieces: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    pieces
        .into_iter()
        .fold(0, |acc, (c, n)| crate::store::oss::crc64_combine(acc, c, n))
}

/// The CRC-64/NVME (S3's) of pieces laid end to end, from each piece's and its length.
pub fn crc64nvme_concat(pieces: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let alg = crc_fast::CrcAlgorithm::Crc64Nvme;
    pieces
        .into_iter()
        .fold(crc_fast::checksum(alg, b""), |acc, (c, n)| {
            crc_fast::checksum_combine(alg, acc, c, n)
        })
}

/// The S3-style multipart ETag (`hex(md5(md5(part1) ++ ...))-N`, normalised), when every
/// part's ETag is an MD5.
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut h = Md5::new();
    for p in parts {
        let e = normalize_etag(&p.etag);
        let raw = hex::decode(&e).ok().filter(|b| b.len() == 16)?;
        h.update(&raw);
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_and_blocking_paths_agree_and_mismatch_is_reported() {
        for len in [0, 10, INLINE_HASH_LIMIT, INLINE_HASH_LIMIT + 1, 3 << 20] {
            let d = Bytes::from(vec![7u8; len]);
            assert_eq!(hash(&d, crc32fast::hash).await, crc32fast::hash(&d));
            let c = crc32fast::hash(&d);
            assert_eq!(
                verify_crc32_then("t", &d, c, |x| x.len()).await.unwrap(),
                len
            );
            let e = verify_crc32_then("t", &d, c ^ 1, |x| x.len())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::ChecksumMismatch);
        }
    }
}
