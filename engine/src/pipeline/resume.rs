//! Resuming multipart uploads a killed run left behind.
//!
//! A run that is killed (SIGKILL, OOM, a preempted pod) leaves its uploads. Aborting them
//! and starting over makes a 50 GiB blob cost its whole size again on every kill; the
//! OSS SDKs and ossutil checkpoint parts instead. Here:
//!
//! - When a multipart copy starts, a small **resume record** is written next to the
//!   destination's lease, `.snapferry-resume/<hash of the upload id>.json`: the key, the
//!   upload id, the source version (ETag, LastModified, size) and the part size.
//! - A later run, once it holds the lease, keeps the uploads whose writer is gone and that
//!   have a record, instead of aborting them. When it copies that key and the source is
//!   still the recorded version (same ETag, LastModified and size — a part is only ever
//!   cut from that version with `If-Match`), it lists the upload's parts (ListParts) and
//!   keeps every part of the planned size that the store kept a checksum for (the CRC32
//!   S3 checked it against, the CRC-64 OSS computed): those bytes are exactly that range
//!   of that version. Only the missing parts are fetched and sent; then it completes.
//! - An upload whose source changed, whose record is unreadable, or whose key this run
//!   does not copy, is aborted (at the end of the run for the last).
//!
//! The record is written once per upload and removed with it: a couple of small requests
//! per multipart object, against the whole object re-sent after a kill.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::ObjectMeta;

/// Where resume records live (a reserved name: never listed for copying, never deleted
/// by `--delete`).
pub const RESUME_DIR: &str = ".snapferry-resume";

/// What a resumed upload must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// Record format.
    pub version: u32,
    /// The object key (relative).
    pub key: String,
    /// The destination's upload id.
    pub upload_id: String,
    /// The source version the parts were cut from.
    pub src_etag: Option<String>,
    /// Its LastModified (Unix ms).
    pub src_mtime_ms: Option<i64>,
    /// Its size.
    pub size: u64,
    /// The part size the upload was cut into.
    pub part_size: u64,
}

impl ResumeRecord {
    /// The record of a new upload of `src` in parts of `part_size`.
    pub fn new(src: &ObjectMeta, upload_id: &str, part_size: u64) -> Self {
        ResumeRecord {
            version: 1,
            key: src.key.clone(),
            upload_id: upload_id.to_string(),
            src_etag: src.etag.clone(),
            src_mtime_ms: src.mtime_ms,
            size: src.size,
            part_size,
        }
    }

    /// Whether the upload was cut from this very version of `src`: same ETag (a
    /// directory source has none: then its millisecond LastModified), same LastModified,
    /// same size. A version that cannot be told apart is never resumed.
    pub fn matches(&self, src: &ObjectMeta) -> bool {
        let versioned = self.src_etag.is_some() || self.src_mtime_ms.is_some();
        self.key == src.key
            && self.size == src.size
            && versioned
            && self.src_etag == src.etag
            && self.src_mtime_ms == src.mtime_ms
            && self.part_size > 0
    }
}

/// The key of the resume record of `upload_id` (hashed: upload ids are long and may hold
/// any character).
pub fn record_key(upload_id: &str) -> String {
    let h = Sha256::digest(upload_id.as_bytes());
    format!("{RESUME_DIR}/{}.json", hex::encode(&h[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_matches_only_the_version_it_was_cut_from() {
        let src = ObjectMeta {
            key: "indices/x/0/__big".into(),
            size: 100 << 20,
            mtime_ms: Some(1_700_000_000_000),
            etag: Some("abc-7".into()),
            ..Default::default()
        };
        let r = ResumeRecord::new(&src, "UPLOAD", 16 << 20);
        assert!(r.matches(&src));
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<ResumeRecord>(&json).unwrap(), r);
        for changed in [
            ObjectMeta {
                size: src.size + 1,
                ..src.clone()
            },
            ObjectMeta {
                etag: Some("def-7".into()),
                ..src.clone()
            },
            ObjectMeta {
                mtime_ms: Some(1),
                ..src.clone()
            },
            ObjectMeta {
                key: "other".into(),
                ..src.clone()
            },
        ] {
            assert!(!r.matches(&changed), "{changed:?}");
        }
        let unversioned = ObjectMeta {
            etag: None,
            mtime_ms: None,
            ..src.clone()
        };
        assert!(!ResumeRecord::new(&unversioned, "U", 1).matches(&unversioned));
        assert!(record_key("UPLOAD").starts_with(".snapferry-resume/"));
        assert_ne!(record_key("a"), record_key("b"));
    }
}
