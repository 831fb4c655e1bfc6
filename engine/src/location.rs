//! Store URLs: `s3://BUCKET[/PREFIX]`, `oss://BUCKET[/PREFIX]`, `file:///DIR`, or a plain
//! path; and whether two locations overlap.
//!
//! Parsing is pure and strict: anything it cannot map to a backend is an
//! [`ErrorKind::InvalidInput`](crate::error::ErrorKind) error whose message names the
//! problem and the corrected form. Near-misses are caught rather than taken for local
//! paths: `s3:/bucket` (one slash), `S3://bucket` (upper case), a bucket's `https://`
//! address pasted from a console. A location is never echoed with userinfo or a query
//! string (they may hold secrets).

use std::path::{Component, Path, PathBuf};

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

const FORMS: &str = "s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a directory path";

/// `s` with any `user:password@` and query string removed, for messages: whatever stands
/// between a `/` (or the start) and an `@` is redacted, wherever it is, so that a
/// malformed URL (`s3:/AKID:SECRET@bucket`) cannot carry a secret into a message either.
pub fn redact_url(s: &str) -> String {
    let (body, query) = match s.find(['?', '#']) {
        Some(i) => (&s[..i], true),
        None => (s, false),
    };
    let mut out = String::with_capacity(body.len());
    let mut segment = String::new();
    for c in body.chars() {
        match c {
            '/' => {
                out.push_str(&segment);
                out.push('/');
                segment.clear();
            }
            '@' => {
                segment = "<redacted>@".into();
            }
            c => segment.push(c),
        }
    }
    out.push_str(&segment);
    if query {
        out.push_str("?<redacted>");
    }
    out
}

/// The `s3://`/`oss://` form of a bucket's web address, when `s` is one.
fn from_web_address(s: &str) -> Option<String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.rsplit('@').next().unwrap_or(host).to_ascii_lowercase();
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_matches('/');
    let join = |scheme: &str, bucket: &str, prefix: &str| {
        if prefix.is_empty() {
            format!("{scheme}://{bucket}")
        } else {
            format!("{scheme}://{bucket}/{prefix}")
        }
    };
    if host.ends_with(".amazonaws.com") {
        // Virtual-hosted (`bucket.s3[.region].amazonaws.com`) or path-style
        // (`s3[.region].amazonaws.com/bucket`).
        if let Some(i) = host.find(".s3.").or_else(|| host.find(".s3-")) {
            let region = host[i + 4..]
                .strip_suffix(".amazonaws.com")
                .filter(|r| !r.is_empty() && *r != "amazonaws.com")
                .map(|r| format!(" with --src-region/--dst-region {r}"))
                .unwrap_or_default();
            return Some(format!("{}{region}", join("s3", &host[..i], path)));
        }
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if !bucket.is_empty() {
            return Some(join("s3", bucket, prefix));
        }
    }
    if host.ends_with(".aliyuncs.com") {
        if let Some((bucket, ep)) = host.split_once('.') {
            if ep.starts_with("oss-") {
                return Some(format!(
                    "{} with --src-endpoint/--dst-endpoint {ep}",
                    join("oss", bucket, path)
                ));
            }
        }
    }
    None
}

impl Location {
    /// Parses a user-given URL or path.
    pub fn parse(s: &str) -> Result<Self> {
        let shown = redact_url(s);
        if s.trim().is_empty() {
            return Err(Error::invalid_input(format!(
                "empty location; give {FORMS}"
            )));
        }
        if let Some(fixed) = from_web_address(s) {
            return Err(Error::invalid_input(format!(
                "{shown:?} is a web address, not a location; write {fixed}"
            )));
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            let lower = scheme.to_ascii_lowercase();
            if lower != scheme && matches!(lower.as_str(), "s3" | "oss" | "file") {
                return Err(Error::invalid_input(format!(
                    "{shown:?}: the scheme is written in lower case; write {lower}://{}",
                    redact_url(rest)
                )));
            }
        } else {
            // `s3:/bucket`, `s3:bucket`, `file:/dir`: a scheme with too few slashes is a
            // typo, never a local directory named `s3:`.
            if let Some((scheme, rest)) = s.split_once(':') {
                let lower = scheme.to_ascii_lowercase();
                if matches!(lower.as_str(), "s3" | "oss" | "file") {
                    let rest = rest.trim_start_matches('/');
                    let fixed = redact_url(&if lower == "file" {
                        format!("file:///{rest}")
                    } else {
                        format!("{lower}://{rest}")
                    });
                    return Err(Error::invalid_input(format!(
                        "{shown:?} is not a valid location (a scheme needs \"://\"); write {fixed}"
                    )));
                }
            }
        }
        for (scheme, is_oss) in [("s3://", false), ("oss://", true)] {
            let Some(rest) = s.strip_prefix(scheme) else {
                continue;
            };
            if rest.contains(['?', '#']) || rest.split('/').next().is_some_and(|b| b.contains('@'))
            {
                return Err(Error::invalid_input(format!(
                    "{shown:?} has a query string or credentials in it; write {scheme}BUCKET[/PREFIX] and give credentials in the environment (SNAPFERRY_SRC_/DST_ACCESS_KEY_ID and _SECRET_ACCESS_KEY)"
                )));
            }
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid_input(format!(
                    "{shown:?} has no bucket; write {scheme}BUCKET[/PREFIX]"
                )));
            }
            if !valid_bucket(bucket) || (is_oss && bucket.contains('.')) {
                return Err(Error::invalid_input(format!(
                    "{bucket:?} is not a valid bucket name (3-63 characters: lower-case letters, digits, '-'{}); fix the URL {shown:?}",
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
                return Err(Error::invalid_input(format!(
                    "{shown:?} is not an absolute file URL; write file:///ABSOLUTE/DIR or a plain path"
                )));
            }
            return Ok(Location::Fs {
                path: PathBuf::from(rest),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(Error::invalid_input(format!(
                "unknown scheme {:?} in {shown:?}; use {FORMS}",
                redact_url(scheme)
            )));
        }
        Ok(Location::Fs {
            path: PathBuf::from(s),
        })
    }

    /// The location as a URL (`s3://bucket/prefix/`, `oss://…`, or the directory).
    pub fn url(&self) -> String {
        match self {
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Location::Oss { bucket, prefix } => format!("oss://{bucket}/{prefix}"),
            Location::Fs { path } => path.display().to_string(),
        }
    }

    /// The location with a directory made absolute (against the working directory), so
    /// that it names the same place from any other: what a plan records.
    pub fn absolute(&self) -> Result<Location> {
        match self {
            Location::Fs { path } => Ok(Location::Fs {
                path: std::path::absolute(path)
                    .map_err(|e| Error::invalid_input(format!("{}: {e}", path.display())))?,
            }),
            other => Ok(other.clone()),
        }
    }

    /// `sub` (relative, ending in `/`) below this location.
    pub fn join(&self, sub: &str) -> Location {
        match self {
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: format!("{prefix}{sub}"),
            },
            Location::Oss { bucket, prefix } => Location::Oss {
                bucket: bucket.clone(),
                prefix: format!("{prefix}{sub}"),
            },
            Location::Fs { path } => Location::Fs {
                path: path.join(sub.trim_end_matches('/')),
            },
        }
    }

    /// Where a distributed round's plans live for this destination: `control` (a prefix
    /// of the same bucket, or a directory), by default the destination's own prefix with
    /// `.snapferry` appended (`s3://b/repo/` → `s3://b/repo.snapferry/`): beside the
    /// repository, never inside it, where a restore or a repository cleanup could meet it.
    pub fn control(&self, control: Option<&str>) -> Result<Location> {
        let inside = |prefix: &str, c: &str| !prefix.is_empty() && c.starts_with(prefix);
        let prefixed = |prefix: &str| -> Result<String> {
            match control {
                Some(c) => {
                    let c = format!("{}/", c.trim_matches('/'));
                    if c == "/" {
                        return Err(Error::invalid_input(
                            "--control is empty; give a prefix of the destination bucket outside the repository, e.g. snapferry-control/",
                        ));
                    }
                    if inside(prefix, &c) || inside(&c, prefix) {
                        return Err(Error::invalid_input(format!(
                            "--control {c} lies inside the repository's prefix {prefix} (or holds it); give a prefix beside it, e.g. {}.snapferry/",
                            prefix.trim_end_matches('/')
                        )));
                    }
                    Ok(c)
                }
                None if prefix.is_empty() => Err(Error::invalid_input(
                    "the destination is a bucket's root, so its plans have no place beside the repository; pass --control PREFIX (a prefix of that bucket that the repository does not use, e.g. snapferry-control/)",
                )),
                None => Ok(format!("{}.snapferry/", prefix.trim_end_matches('/'))),
            }
        };
        Ok(match self {
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: prefixed(prefix)?,
            },
            Location::Oss { bucket, prefix } => Location::Oss {
                bucket: bucket.clone(),
                prefix: prefixed(prefix)?,
            },
            Location::Fs { path } => {
                let dir = match control {
                    Some(c) if c.trim().is_empty() => {
                        return Err(Error::invalid_input(
                            "--control is empty; give a directory beside the repository's",
                        ))
                    }
                    Some(c) => PathBuf::from(c),
                    None => {
                        let mut name = path.as_os_str().to_os_string();
                        name.push(".snapferry");
                        PathBuf::from(name)
                    }
                };
                if dir.starts_with(path) || path.starts_with(&dir) {
                    return Err(Error::invalid_input(format!(
                        "--control {} lies inside the repository's directory {} (or holds it); give a directory beside it",
                        dir.display(),
                        path.display()
                    )));
                }
                Location::Fs { path: dir }
            }
        })
    }

    /// Whether `self` (reached through `self_endpoint`) and `other` (through
    /// `other_endpoint`) are the same location or one lies inside the other: a sync
    /// between them would copy into its own source, or delete it.
    pub fn overlaps(
        &self,
        self_endpoint: Option<&str>,
        other: &Location,
        other_endpoint: Option<&str>,
    ) -> bool {
        let nested = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
        // Bucket names are global on AWS and on Alibaba Cloud: any of their endpoints
        // (regions, -internal, accelerate) reaches the same bucket. Elsewhere (MinIO, a
        // gateway) the endpoint itself names the server.
        let same_ep = || {
            let norm = |e: Option<&str>| match e {
                None => "cloud".to_string(),
                Some(e) => {
                    let host = e
                        .trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_ascii_lowercase();
                    if host.ends_with(".amazonaws.com") || host.ends_with(".aliyuncs.com") {
                        "cloud".to_string()
                    } else {
                        host
                    }
                }
            };
            norm(self_endpoint) == norm(other_endpoint)
        };
        match (self, other) {
            (
                Location::S3 {
                    bucket: a,
                    prefix: pa,
                },
                Location::S3 {
                    bucket: b,
                    prefix: pb,
                },
            )
            | (
                Location::Oss {
                    bucket: a,
                    prefix: pa,
                },
                Location::Oss {
                    bucket: b,
                    prefix: pb,
                },
            ) => a == b && same_ep() && nested(pa, pb),
            (Location::Fs { path: a }, Location::Fs { path: b }) => {
                let (a, b) = (resolve(a), resolve(b));
                a.starts_with(&b) || b.starts_with(&a)
            }
            _ => false,
        }
    }
}

/// An absolute, symlink-free form of `p` even when it does not exist yet: the deepest
/// existing ancestor canonicalised, the rest appended (`.` dropped, `..` folded).
fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    for anc in abs.ancestors() {
        if let Ok(mut out) = anc.canonicalize() {
            let rest = abs.strip_prefix(anc).unwrap_or(Path::new(""));
            for c in rest.components() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
    }
    abs
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
        let s3 = |b: &str, p: &str| {
            Some(Location::S3 {
                bucket: b.into(),
                prefix: p.into(),
            })
        };
        let cases: &[(&str, Option<Location>)] = &[
            ("s3://bkt", s3("bkt", "")),
            ("s3://bkt/", s3("bkt", "")),
            ("s3://bkt/a/b", s3("bkt", "a/b/")),
            ("s3://bkt/a/b/", s3("bkt", "a/b/")),
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
    fn near_misses_get_the_corrected_form() {
        let cases = [
            ("s3:/bucket/p", "write s3://bucket/p"),
            ("s3:bucket", "write s3://bucket"),
            ("oss:/b-1/x", "write oss://b-1/x"),
            ("S3://bucket/p", "write s3://bucket/p"),
            ("OSS://bucket", "write oss://bucket"),
            ("file:/tmp/x", "write file:///tmp/x"),
            (
                "https://snaps.s3.us-west-2.amazonaws.com/prod",
                "write s3://snaps/prod with --src-region/--dst-region us-west-2",
            ),
            ("https://s3.amazonaws.com/snaps/prod", "write s3://snaps/prod"),
            (
                "https://es-hz.oss-cn-hangzhou.aliyuncs.com/prod/",
                "write oss://es-hz/prod with --src-endpoint/--dst-endpoint oss-cn-hangzhou.aliyuncs.com",
            ),
            ("s3://", "has no bucket"),
            ("ftp://x", "unknown scheme \"ftp\""),
        ];
        for (input, want) in cases {
            let e = Location::parse(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn secrets_in_urls_are_never_echoed() {
        for input in [
            "s3://AKID:SENTINEL@bucket/p",
            "s3://bucket/p?X-Amz-Signature=SENTINEL",
            "gs://u:SENTINEL@x/y",
            "https://u:SENTINEL@snaps.s3.amazonaws.com/p",
            "S3://u:SENTINEL@bucket",
            "s3:/AKID:SENTINEL@bucket/p",
            "s3:AKID:SENTINEL@bucket",
            "oss:/x/y?token=SENTINEL",
        ] {
            let e = Location::parse(input).unwrap_err().to_string();
            assert!(!e.contains("SENTINEL"), "{input}: {e}");
        }
        assert_eq!(
            redact_url("http://u:pw@host:9200/x?token=1"),
            "http://<redacted>@host:9200/x?<redacted>"
        );
        assert_eq!(redact_url("u:pw@host:9200"), "<redacted>@host:9200");
        assert_eq!(redact_url("http://host:9200"), "http://host:9200");
    }

    #[test]
    fn overlap_of_stores_and_directories() {
        let p = |s: &str| Location::parse(s).unwrap();
        let ep = Some("http://127.0.0.1:9000");
        assert!(p("s3://bkt/x").overlaps(ep, &p("s3://bkt/x"), ep));
        assert!(p("s3://bkt/x").overlaps(ep, &p("s3://bkt/x/y"), ep));
        assert!(p("s3://bkt").overlaps(ep, &p("s3://bkt/x"), ep));
        assert!(!p("s3://bkt/x").overlaps(ep, &p("s3://bkt/xy"), ep));
        assert!(!p("s3://bkt/x").overlaps(ep, &p("s3://cbk/x"), ep));
        assert!(!p("s3://bkt/x").overlaps(ep, &p("s3://bkt/x"), Some("http://127.0.0.1:9001")));
        assert!(!p("s3://bkt/x").overlaps(None, &p("oss://bkt/x"), None));
        // One cloud bucket through two of its endpoints.
        assert!(p("oss://bkt/x").overlaps(
            Some("oss-cn-hangzhou.aliyuncs.com"),
            &p("oss://bkt/x/y"),
            Some("oss-cn-hangzhou-internal.aliyuncs.com")
        ));
        assert!(p("oss://bkt/x").overlaps(
            None,
            &p("oss://bkt"),
            Some("https://oss-cn-hangzhou.aliyuncs.com")
        ));
        assert!(p("s3://bkt/x").overlaps(
            None,
            &p("s3://bkt/x"),
            Some("https://s3.us-west-2.amazonaws.com")
        ));
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        std::fs::create_dir_all(d.path().join("data/sub")).unwrap();
        let f = |rel: &str| Location::Fs {
            path: d.path().join(rel),
        };
        assert!(f("data").overlaps(None, &f("data/sub"), None));
        assert!(f("data/sub").overlaps(None, &f("data"), None));
        assert!(f("data").overlaps(None, &f("data/not-yet/zz"), None));
        assert!(f("data/./sub/..").overlaps(None, &f("data"), None));
        assert!(!f("data/sub").overlaps(None, &f("data/subway"), None));
        assert!(!f("data").overlaps(None, &f("other"), None));
        std::os::unix::fs::symlink(d.path().join("data"), d.path().join("link")).unwrap();
        assert!(f("link/sub").overlaps(None, &f("data"), None));
        let _ = root;
    }
}
