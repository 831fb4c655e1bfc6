//! Sizes and rates as users write them: `64MiB`, `1GB`, `1048576`, `200MiB/s`.

use crate::error::{Error, Result};

/// Parses a size: plain bytes, or a number with a unit (`KiB`, `MiB`, `GiB`, `TiB`
/// binary; `KB`, `MB`, `GB`, `TB` decimal; `k`/`M`/`G` as binary, like rclone).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || {
        Error::invalid_input(format!(
            "cannot read size {s:?}; write bytes or a number with a unit, e.g. 64MiB, 1GB, 1048576"
        ))
    };
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    // Single-letter suffixes are binary, as in rclone's --bwlimit and part sizes.
    let t = match t.strip_suffix(['k', 'K', 'M', 'G', 'T']) {
        Some(num) if num.parse::<f64>().is_ok() => {
            format!("{num}{}iB", &t[num.len()..].to_uppercase())
        }
        _ => t.to_string(),
    };
    let parsed: bytesize::ByteSize = t.parse().map_err(|_| bad())?;
    Ok(parsed.as_u64())
}

/// Parses a rate: a size per second (`200MiB/s`, `200MiB`, `0` = unlimited).
pub fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    parse_size(t).map_err(|_| {
        Error::invalid_input(format!(
            "cannot read rate {s:?}; write a size per second, e.g. 200MiB/s or 50MB/s"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1048576", Some(1 << 20)),
            ("64MiB", Some(64 << 20)),
            ("1GB", Some(1_000_000_000)),
            ("5GiB", Some(5 << 30)),
            ("8M", Some(8 << 20)),
            ("16k", Some(16 << 10)),
            ("0", Some(0)),
            ("ten", None),
            ("-5MiB", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).ok(), *want, "{s:?}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("200MiB/s").unwrap(), 200 << 20);
        assert_eq!(parse_rate("50MB").unwrap(), 50_000_000);
        assert!(parse_rate("fast").is_err());
    }
}
