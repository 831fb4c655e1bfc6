//! The harness's pieces without servers: the RESULTS.md merge, the profile categories,
//! the medians, and the workloads' shapes.

use std::collections::BTreeMap;
use std::path::Path;

use snapferry_bench::report::{merge, profile_categories};
use snapferry_bench::run::Results;
use snapferry_bench::stats::Spread;
use snapferry_bench::tools::{invocation, Side, Tool};
use snapferry_bench::workloads::{w1, w2, w3, w4, MIB};

#[test]
fn prose_outside_the_markers_survives_and_blocks_are_replaced() {
    let blocks = BTreeMap::from([
        ("a".to_string(), "new A".to_string()),
        ("b".to_string(), "new B".to_string()),
    ]);
    let old = "# T\n\nProse one.\n<!-- generated: a -->\nold A\n<!-- /generated -->\nProse two.\n\n<!-- generated: gone -->\nx\n<!-- /generated -->\n";
    let new = merge(Some(old), &blocks).expect("merge");
    assert_eq!(new, "# T\n\nProse one.\n<!-- generated: a -->\n\nnew A\n\n<!-- /generated -->\nProse two.\n\n<!-- generated: gone -->\n\n*Not measured in this run.*\n\n<!-- /generated -->\n\n<!-- generated: b -->\n\nnew B\n\n<!-- /generated -->\n");
    assert_eq!(
        merge(Some(&new), &blocks).expect("again"),
        new,
        "regenerating changes nothing"
    );
    assert!(merge(Some("<!-- generated: a -->\nprose lost?\n"), &blocks).is_err());
}

#[test]
fn profile_lines_fall_into_categories() {
    let lines = [
        "17.00%  [kernel.kallsyms]  [k] _copy_from_iter",
        "7.21%  [kernel.kallsyms]  [k] exc_page_fault",
        "4.72%  snapferry  [.] crc32fast::calculate",
        "3.47%  libc.so.6  [.] malloc",
        "1.00%  [kernel.kallsyms]  [k] tcp_sendmsg",
    ];
    let c = profile_categories(&lines.map(String::from));
    assert_eq!(c[0], ("kernel: copying bytes to and from sockets", 17.0));
    assert_eq!(
        c[1],
        (
            "kernel: page faults, zeroing and freeing fresh memory",
            7.21
        )
    );
    assert!(
        c.contains(&("allocator (glibc malloc/free)", 3.47))
            && c.contains(&("kernel: other (TCP, syscalls, scheduling, locks)", 1.0))
    );
}

#[test]
fn spread_takes_the_middle() {
    let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
    assert_eq!((s.med, s.min, s.max), (2.0, 1.0, 3.0));
    let s = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values");
    assert_eq!((s.med, s.show(1)), (2.5, "2.5 (1.0–4.0)".to_string()));
    assert!(Spread::of([]).is_none());
}

#[test]
fn workloads_have_their_shapes() {
    let w1 = w1(1.0);
    assert_eq!((w1.objects.len(), w1.bytes()), (8, 8 * 512 * MIB));
    let w2 = w2(1.0);
    assert_eq!(w2.objects.len(), 20_000);
    assert!(w2.objects.iter().all(|o| (4096..=65536).contains(&o.size)));
    let w4 = w4(1.0, None);
    let mut keys: Vec<&str> = w4.objects.iter().map(|o| o.key.as_str()).collect();
    keys.dedup();
    assert_eq!(keys.len(), 100_000, "keys are unique");
}

#[test]
fn w3_scales_a_real_repository_to_the_target() {
    let repo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/repos/opensearch-2.19.6/repo");
    let w = w3(&repo, 2 << 30).expect("fixture repository");
    let total = w.bytes() as f64;
    assert!((total / (2u64 << 30) as f64 - 1.0).abs() < 0.01, "{total}");
    assert!(w
        .objects
        .iter()
        .any(|o| o.key == "index.latest" && o.size == 8));
    assert!(
        w.objects.iter().any(|o| o.size > 64 * MIB),
        "some go multipart"
    );
}

#[test]
fn command_lines_are_the_ones_the_last_run_recorded() {
    let json = Path::new(env!("CARGO_MANIFEST_DIR")).join("results.json");
    let r: Results = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for s in &r.workloads[0].series {
        let bin = s.command.split(' ').next().unwrap();
        let tool = Tool {
            id: s.tool,
            bin: Some(tmp.path().join(bin)),
            version: String::new(),
            unavailable: None,
        };
        let bucket = format!("bench-{}", r.workloads[0].id.to_lowercase());
        let (src, dst) = (
            Side("http://127.0.0.1:1", &bucket),
            Side("http://127.0.0.1:2", &bucket),
        );
        let (home, report) = (tmp.path().join("home"), tmp.path().join("r.json"));
        let inv = invocation(&tool, src, dst, r.knobs, &home, &report).unwrap();
        assert_eq!(inv.shown, s.command);
        let env: Vec<String> = inv
            .cmd
            .get_envs()
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect();
        assert!(
            env.iter().any(|e| e.contains(testkit::SECRET_KEY)),
            "{env:?}"
        );
        assert!(!env.iter().any(|e| e.contains('{')), "unfilled: {env:?}");
    }
}
