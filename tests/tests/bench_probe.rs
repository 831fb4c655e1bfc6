//! `snapferry bench probe` between two real MinIO servers: its prediction against a real
//! sync of the predicted size, its refusal of a location that holds data, and no scratch
//! object or upload left behind.

use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use testkit::*;

const MIB: usize = 1 << 20;

/// The tests of this file run one at a time: the prediction test times a sync, and the
/// other test's servers would compete with it for the CPU.
static SERIAL: Mutex<()> = Mutex::new(());

fn probe_cmd(src: &Minio, dst: &Minio, s: &str, d: &str) -> Command {
    let mut c = snapferry();
    c.args([
        "bench",
        "probe",
        s,
        d,
        "--src-endpoint",
        &src.endpoint,
        "--dst-endpoint",
        &dst.endpoint,
    ]);
    c
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("probe JSON: {e}\n{stdout}"))
}

#[test]
fn probe_prediction_is_within_25_percent_of_a_real_sync() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b) = (Minio::start(), Minio::start());
    let (ca, cb) = (a.client(), b.client());
    let rt = rt();
    // What is moved: snapshot data blobs, a few large objects of the probe's default
    // object size (128 MiB), 512 MiB in all.
    const OBJECT: usize = 128 * MIB;
    const SIZE: usize = 4 * OBJECT;
    rt.block_on(async {
        create_bucket(&ca, "src").await;
        create_bucket(&cb, "dst").await;
        for i in 0..SIZE / OBJECT {
            let key = format!("repo/indices/Jq3x/0/__blob-{i}");
            put(&ca, "src", &key, data(OBJECT, i as u64)).await;
        }
    });

    // The probe runs in empty prefixes of the same buckets, right before the sync.
    let out = run({
        let mut c = probe_cmd(&a, &b, "s3://src/probe", "s3://dst/probe");
        c.args([
            "--json",
            "--size",
            &SIZE.to_string(),
            "--duration",
            "3s",
            "--max-concurrency",
            "8",
            "--list-objects",
            "200",
        ]);
        c
    });
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stdout: {so}\nstderr: {se}");
    assert!(!so.contains(SECRET_KEY) && !se.contains(SECRET_KEY));
    let r = json(&so);
    assert_eq!(
        r["object_size_bytes"], OBJECT,
        "the data is shaped as the probe assumed"
    );
    assert_eq!(r["size_bytes"], SIZE);
    let conc = r["recommended_concurrency"].as_u64().expect("concurrency");
    let part = r["recommended_part_size_bytes"]
        .as_u64()
        .expect("part size");
    let predicted = r["predicted_seconds"].as_f64().expect("prediction");
    assert!(r["copy_rate_bytes_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["list_rate_keys_per_sec"].as_f64().unwrap() > 0.0);
    let levels = r["levels"].as_array().expect("levels");
    let sweep: Vec<_> = levels
        .iter()
        .filter(|l| l["sweep"] == "concurrency")
        .collect();
    assert!(sweep.len() >= 2, "at least two concurrency levels: {so}");
    assert_eq!(sweep[0]["concurrency"], 1);
    assert_eq!(levels.last().unwrap()["sweep"], "confirm");
    assert_eq!(levels.last().unwrap()["concurrency"], conc);
    for l in &sweep {
        for side in ["get", "put"] {
            assert!(l[side]["bytes_per_sec"].as_f64().unwrap() > 0.0, "{l}");
            assert!(l[side]["p99_ms"].as_f64().unwrap() >= l[side]["p50_ms"].as_f64().unwrap());
        }
    }
    // Nothing of the probe remains on either side.
    rt.block_on(async {
        assert!(keys(&ca, "src", "probe/").await.is_empty());
        assert!(keys(&cb, "dst", "").await.is_empty());
        assert!(pending_uploads(&ca, "src").await.is_empty());
        assert!(pending_uploads(&cb, "dst").await.is_empty());
    });

    // The real sync with the recommended settings.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("sync.json");
    let mut c = snapferry();
    c.args([
        "sync",
        "s3://src/repo",
        "s3://dst/repo",
        "--src-endpoint",
        &a.endpoint,
        "--dst-endpoint",
        &b.endpoint,
        "--progress",
        "never",
        "--concurrency",
        &conc.to_string(),
        "--part-size",
        &part.to_string(),
        "--report",
    ])
    .arg(&report);
    let t = Instant::now();
    let out = run(c);
    let actual = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(read_report(&report)["copied_bytes"], SIZE);
    let err = (predicted - actual) / actual;
    let copies: Vec<String> = levels
        .iter()
        .map(|l| {
            format!(
                "{} c{} p{}MiB {:.0}MiB/s",
                l["sweep"].as_str().unwrap_or("?"),
                l["concurrency"],
                l["part_size_bytes"].as_u64().unwrap_or(0) >> 20,
                l["copy"]["bytes_per_sec"].as_f64().unwrap_or(0.0) / MIB as f64
            )
        })
        .collect();
    eprintln!(
        "bench probe: --concurrency {conc} --part-size {} MiB: predicted {predicted:.2} s, actual {actual:.2} s ({:+.1}%); levels: {}",
        part >> 20,
        err * 100.0,
        copies.join(", ")
    );
    assert!(
        err.abs() <= 0.25,
        "predicted {predicted:.2} s, the sync took {actual:.2} s ({:+.1}%)\nprobe: {so}",
        err * 100.0
    );
}

#[test]
fn probe_refuses_a_location_holding_data_and_leaves_nothing_behind() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        put(
            &ca,
            "src",
            "repo/index.latest",
            vec![0, 0, 0, 0, 0, 0, 0, 3],
        )
        .await;
        put(&ca, "src", "repo/indices/x/0/__a", data(3 * MIB, 1)).await;
        put(&ca, "src", "repo/tmp/leftover", vec![1]).await;
        put(
            &cb,
            "dst",
            "repo/index.latest",
            vec![0, 0, 0, 0, 0, 0, 0, 2],
        )
        .await;
    });
    let snapshot = || {
        rt.block_on(async {
            (
                keys(&ca, "src", "").await,
                keys(&cb, "dst", "").await,
                pending_uploads(&ca, "src").await,
                pending_uploads(&cb, "dst").await,
            )
        })
    };
    let before = snapshot();
    let short = [
        "--duration",
        "1s",
        "--max-concurrency",
        "2",
        "--object-size",
        "16MiB",
        "--max-scratch",
        "64MiB",
        "--list-objects",
        "20",
    ];

    // (locations, arguments, exit code, text in the one line); each fails before measuring.
    type Case<'a> = ((&'a str, &'a str), Vec<&'a str>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            ("s3://src/repo", "s3://dst/new"),
            vec![],
            2,
            "already holds objects",
        ),
        (
            ("s3://src/new", "s3://dst/repo"),
            vec![],
            2,
            "the destination",
        ),
        (
            ("s3://src/repo", "s3://dst/repo"),
            vec!["--scratch-prefix", "tmp"],
            2,
            "--scratch-prefix tmp/ already holds objects on the source",
        ),
        (
            ("s3://src/repo", "s3://dst/repo"),
            vec!["--scratch-prefix", "../up"],
            2,
            "not a usable prefix",
        ),
        (
            ("s3://src/new", "s3://dst/new"),
            vec!["--size", "ten"],
            2,
            "--size",
        ),
        (
            ("s3://src/new", "s3://dst/new"),
            vec!["--duration", "soon"],
            2,
            "--duration",
        ),
        (
            ("s3://src/new", "s3://dst/new"),
            vec!["--part-size", "1MiB"],
            2,
            "outside 5MiB..5GiB",
        ),
        (
            ("s3://src/new", "s3://dst/new"),
            vec!["--object-size", "2GiB"],
            2,
            "--max-scratch",
        ),
        (("s3://nosuch", "s3://dst/new"), vec![], 3, "does not exist"),
    ];
    for ((s, d), extra, code, text) in cases {
        let out = run({
            let mut c = probe_cmd(&a, &b, s, d);
            c.args(&extra);
            c
        });
        let (so, se) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{s} {d} {extra:?}: {so}\n{se}"
        );
        assert!(so.is_empty(), "{extra:?}: nothing on stdout: {so}");
        assert_eq!(se.trim().lines().count(), 1, "{extra:?}: one line: {se}");
        assert!(se.contains(text), "{extra:?}: {se}");
        assert!(!se.contains(SECRET_KEY));
        assert_eq!(snapshot(), before, "{extra:?}: nothing written");
    }

    // With an empty --scratch-prefix the probe runs beside the repository, predicts the
    // source's size, and leaves both buckets exactly as they were.
    let out = run({
        let mut c = probe_cmd(&a, &b, "s3://src/repo", "s3://dst/repo");
        c.args(short)
            .args(["--scratch-prefix", "probe-tmp", "--from-source", "--json"]);
        c
    });
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    let r = json(&so);
    assert_eq!(r["scratch_prefix"], "probe-tmp/");
    assert_eq!(r["size_from"], "source");
    assert_eq!(r["size_bytes"], 8 + 3 * MIB + 1);
    assert_eq!(r["source_listing"]["objects"], 3);
    assert_eq!(r["source_listing"]["small_objects"], 3);
    assert!(r["predicted_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["small_object_rate_objects_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["scratch_bytes_written"].as_u64().unwrap() >= 32 * MIB as u64);
    assert_eq!(snapshot(), before, "the scratch objects are all gone");

    // The human output names the recommendation and the prediction.
    let out = run({
        let mut c = probe_cmd(&a, &b, "s3://src/fresh", "s3://dst/fresh");
        c.args(short).args(["--size", "12TiB"]);
        c
    });
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(so.contains("recommended:  --concurrency "), "{so}");
    assert!(so.contains("prediction:   12.0 TiB: "), "{so}");
    assert!(se.contains("concurrency   1, part "), "{se}");
    assert_eq!(snapshot(), before, "the scratch objects are all gone");
}
