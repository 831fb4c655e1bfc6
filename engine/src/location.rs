//! Store URLs: `s3://BUCKET[/PREFIX]`, `file:///DIR`, or a plain path.
//!
//! Parsing is pure and strict: anything it cannot map to a backend is an
//! [`Error::InvalidInput`] whose message names the problem and the fix.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where one side of a sync lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 (or S3-compatible) bucket and a prefix ("" or ending in `/`).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Root prefix, normalised to end with `/` unless empty.
        prefix: String,
    },
    /// An Alibaba Cloud OSS bucket and a prefix ("" or ending in `/`).
    Oss {
        /// Bucket name.
        bucket: String,
        /// Root prefix, normalised to end with `/` unless empty.
        prefix: String,
    },
    /// A local directory.
    Fs {
        /// The directory.
        path: PathBuf,
    },
}

impl Location {
    /// Parses a user-given URL or path.
    pub fn parse(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Err(Error::InvalidInput(
                "empty location; give s3://BUCKET[/PREFIX], file:///DIR or a directory path".into(),
            ));
        }
        for (scheme, is_oss) in [("s3://", false), ("oss://", true)] {
            let Some(rest) = s.strip_prefix(scheme) else {
                continue;
            };
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{s:?} has no bucket; write {scheme}BUCKET[/PREFIX]"
                )));
            }
            if !valid_bucket(bucket) || (is_oss && bucket.contains('.')) {
                return Err(Error::InvalidInput(format!(
                    "{bucket:?} is not a valid bucket name (3-63 characters: lower-case letters, digits, '-'{}); fix the URL {s:?}",
                    if is_oss { "" } else { ", '.'" }
                )));
            }
            let prefix = prefix.trim_start_matches('/');
            let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                prefix.to_string()
            } else {
                format!("{prefix}/")
            };
            let bucket = bucket.to_string();
            return Ok(if is_oss {
                Location::Oss { bucket, prefix }
            } else {
                Location::S3 { bucket, prefix }
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(Error::InvalidInput(format!(
                    "{s:?} is not an absolute file URL; write file:///ABSOLUTE/DIR or a plain path"
                )));
            }
            return Ok(Location::Fs {
                path: PathBuf::from(rest),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(Error::InvalidInput(format!(
                "unknown scheme {scheme:?} in {s:?}; use s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path"
            )));
        }
        Ok(Location::Fs {
            path: PathBuf::from(s),
        })
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases: &[(&str, Option<Location>)] = &[
            (
                "s3://bkt",
                Some(Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "".into(),
                }),
            ),
            (
                "s3://bkt/",
                Some(Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "".into(),
                }),
            ),
            (
                "s3://bkt/a/b",
                Some(Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "a/b/".into(),
                }),
            ),
            (
                "s3://bkt/a/b/",
                Some(Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "a/b/".into(),
                }),
            ),
            (
                "file:///tmp/x",
                Some(Location::Fs {
                    path: "/tmp/x".into(),
                }),
            ),
            (
                "rel/dir",
                Some(Location::Fs {
                    path: "rel/dir".into(),
                }),
            ),
            ("s3://", None),
            ("s3:///prefix", None),
            ("s3://Bad_Bucket", None),
            ("gs://bkt", None),
            (
                "oss://bkt/snap",
                Some(Location::Oss {
                    bucket: "bkt".into(),
                    prefix: "snap/".into(),
                }),
            ),
            ("oss://", None),
            ("oss://has.dot", None),
            ("file://relative", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = Location::parse(input).ok();
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = Location::parse("s3://").unwrap_err().to_string();
        assert!(e.contains("no bucket") && e.contains("s3://BUCKET"), "{e}");
        let e = Location::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains("unknown scheme \"ftp\""), "{e}");
    }
}
