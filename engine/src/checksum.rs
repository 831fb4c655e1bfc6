//! Hashing off the async reactor, shared by the pipeline and the stores.
//!
//! Checksums of large buffers (a 64 MiB part is milliseconds of CRC and far more of MD5)
//! run on tokio's blocking pool so that no reactor thread stalls; small buffers are
//! hashed inline, where a thread hop would cost more than the hash.

use bytes::Bytes;

use crate::error::{Error, Result};

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
        return Err(Error::ChecksumMismatch(format!(
            "{ctx}: bytes have crc32 {got:08x}, expected {crc32:08x} (changed after they were read)"
        )));
    }
    Ok(out)
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
            assert!(matches!(e, Error::ChecksumMismatch(_)));
        }
    }
}
