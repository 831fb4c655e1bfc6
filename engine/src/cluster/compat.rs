//! Snapshot compatibility between clusters (the preflight of `migrate`).
//!
//! An index restores into the major version that created it and the next one only
//! (5.x → 6.x yes; 2.x → 6.x and 5.x → 7.x no), never into an older version, and indices
//! created by OpenSearch never restore into Elasticsearch. OpenSearch 1.x reads indices
//! created by Elasticsearch 6.8–7.10; OpenSearch 2.x those of Elasticsearch 7.x.

use super::ClusterVersion;

/// Checks that snapshots of indices created in `created_major` on `src` can be restored on
/// `dst`. `created_major` is the oldest index-creation major among the indices to move
/// (defaults to the source cluster's major). The error is one line for the operator.
pub fn check_restore(
    src: &ClusterVersion,
    dst: &ClusterVersion,
    created_major: Option<u32>,
) -> Result<(), String> {
    let created = created_major.unwrap_or(src.major);
    let os = |v: &ClusterVersion| v.distribution == "opensearch";
    let ok = match (os(src), os(dst)) {
        (true, false) => {
            return Err(format!(
                "indices created by OpenSearch {} cannot be restored into Elasticsearch {}; the destination must run OpenSearch",
                src.number, dst.number
            ))
        }
        (false, true) => matches!((created, dst.major), (6, 1) | (7, 1) | (7, 2)),
        _ => dst.major == created || dst.major == created + 1,
    };
    if ok {
        return Ok(());
    }
    let fam = |v: &ClusterVersion| if os(v) { "OpenSearch" } else { "Elasticsearch" };
    Err(format!(
        "indices created by {} {created}.x cannot be restored into {} {}: a snapshot restores into the version that created its indices and the next major only; upgrade or reindex through an intermediate cluster",
        fam(src),
        fam(dst),
        dst.number
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(d: &str, n: &str) -> ClusterVersion {
        ClusterVersion {
            distribution: d.into(),
            number: n.into(),
            major: n.split('.').next().unwrap().parse().unwrap(),
        }
    }

    #[test]
    fn compatibility_table() {
        let es = |n| v("elasticsearch", n);
        let os = |n| v("opensearch", n);
        let cases = [
            (es("5.6.16"), es("6.8.23"), None, true),
            (es("6.8.23"), es("7.10.2"), None, true),
            (es("7.10.2"), es("7.17.29"), None, true),
            (es("7.17.29"), es("8.19.21"), None, true),
            (es("2.4.6"), es("6.8.23"), None, false),
            (es("5.6.16"), es("7.10.2"), None, false),
            (es("8.19.21"), es("7.17.29"), None, false),
            // A 7.x cluster still holding an index created in 5.x.
            (es("7.10.2"), es("8.19.21"), Some(6), false),
            (os("2.19.6"), es("7.10.2"), None, false),
            (os("1.3.20"), os("2.19.6"), None, true),
            (os("2.19.6"), os("2.19.6"), None, true),
            (es("7.10.2"), os("2.19.6"), None, true),
            (es("7.10.2"), os("1.3.20"), None, true),
            (es("6.8.23"), os("2.19.6"), None, false),
        ];
        for (s, d, c, want) in cases {
            let got = check_restore(&s, &d, c);
            assert_eq!(
                got.is_ok(),
                want,
                "{} {} -> {} {} ({c:?}): {got:?}",
                s.distribution,
                s.number,
                d.distribution,
                d.number
            );
        }
        let e = check_restore(
            &v("opensearch", "2.19.6"),
            &v("elasticsearch", "7.10.2"),
            None,
        )
        .unwrap_err();
        assert!(e.contains("cannot be restored into Elasticsearch"), "{e}");
    }
}
