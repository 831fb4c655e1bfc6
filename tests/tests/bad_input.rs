//! Every bad input gets one clear line, a documented exit code, and writes nothing.

use testkit::*;

#[test]
fn bad_inputs_get_one_clear_line_and_the_right_exit_code() {
    let s3 = Minio::start();
    let c = s3.client();
    let rt = rt();
    rt.block_on(async {
        create_bucket(&c, "src").await;
        create_bucket(&c, "dst").await;
        put(&c, "src", "a", data(10, 1)).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let fs_dst = dir.path().join("never-created");
    let fs_dst = fs_dst.to_str().unwrap();
    let ep = s3.endpoint.as_str();
    let closed = format!("http://127.0.0.1:{}", free_port());
    // (args, extra env, exit code, expected text)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
    // `s3://src` into `fs_dst` from the running server, with `extra` arguments.
    let from_src =
        |extra: &[&'static str]| [&["s3://src", fs_dst, "--src-endpoint", ep], extra].concat();
    let cases: Vec<Case> = vec![
        (vec!["gs://bkt", fs_dst], vec![], 2, "unknown scheme \"gs\""),
        (vec!["s3://", fs_dst], vec![], 2, "has no bucket"),
        (vec!["s3:///prefix", fs_dst], vec![], 2, "has no bucket"),
        (
            from_src(&["--part-size", "1MiB"]),
            vec![],
            2,
            "outside 5MiB..5GiB",
        ),
        (
            from_src(&["--part-size", "6GiB"]),
            vec![],
            2,
            "outside 5MiB..5GiB",
        ),
        (
            from_src(&["--part-size", "16MiB", "--multipart-threshold", "8MiB"]),
            vec![],
            2,
            "below --part-size",
        ),
        (
            from_src(&["--part-size", "lots"]),
            vec![],
            2,
            "cannot read size",
        ),
        (
            vec!["s3://src", fs_dst, "--src-endpoint", "127.0.0.1:9000"],
            vec![],
            2,
            "must start with http://",
        ),
        (
            from_src(&["--bwlimit", "fast"]),
            vec![],
            2,
            "cannot read rate",
        ),
        (
            vec!["s3://src", fs_dst, "--src-endpoint", &closed],
            vec![],
            3,
            "cannot reach store",
        ),
        (
            vec!["s3://nosuchbucket", fs_dst, "--src-endpoint", ep],
            vec![],
            3,
            "does not exist",
        ),
        (
            from_src(&[]),
            vec![(
                "SNAPFERRY_SRC_SECRET_ACCESS_KEY",
                "wrong-secret-SENTINEL-4242",
            )],
            3,
            "access denied",
        ),
        (
            from_src(&[]),
            vec![("SNAPFERRY_SRC_SECRET_ACCESS_KEY", "")],
            2,
            "SNAPFERRY_SRC_ACCESS_KEY_ID is set but SNAPFERRY_SRC_SECRET_ACCESS_KEY is not",
        ),
    ];
    for (args, env, code, text) in cases {
        let mut cmd = snapferry();
        cmd.arg("sync").args(&args).args(["--progress", "never"]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(cmd);
        let (so, se) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: stdout {so} stderr {se}"
        );
        let lines: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: want one line, got: {se}");
        assert!(lines[0].starts_with("snapferry: error: "), "{args:?}: {se}");
        assert!(lines[0].contains(text), "{args:?}: want {text:?} in {se}");
        assert!(
            !se.contains("SENTINEL") && !so.contains("SENTINEL"),
            "secret leaked: {se}"
        );
        assert!(
            !se.contains(SECRET_KEY) && !so.contains(SECRET_KEY),
            "secret leaked: {se}"
        );
        assert!(
            !std::path::Path::new(fs_dst).exists(),
            "{args:?}: destination was written"
        );
    }

    // No credentials at all (the AWS chain finds none; instance metadata is switched off
    // so that nothing leaves loopback): exit 3, one line naming the variables.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = snapferry();
    cmd.arg("sync")
        .args(from_src(&["--progress", "never"]))
        .env_remove("SNAPFERRY_SRC_ACCESS_KEY_ID")
        .env_remove("SNAPFERRY_SRC_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home.path());
    let out = run(cmd);
    let (_, se) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert_eq!(se.lines().count(), 1, "{se}");
    assert!(
        se.contains("credentials") && se.contains("SNAPFERRY_SRC_"),
        "{se}"
    );

    // Even debug logs never carry a secret.
    let mut cmd = snapferry();
    cmd.arg("sync")
        .args(from_src(&["-vv", "--progress", "never"]))
        .env(
            "SNAPFERRY_SRC_SECRET_ACCESS_KEY",
            "wrong-secret-SENTINEL-4242",
        );
    let out = run(cmd);
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(
        !se.contains("SENTINEL") && !so.contains("SENTINEL"),
        "secret leaked: {se}"
    );

    // Bad destination credentials: nothing is written to the destination bucket.
    let mut cmd = snapferry();
    cmd.args([
        "sync",
        "s3://src",
        "s3://dst",
        "--src-endpoint",
        ep,
        "--dst-endpoint",
        ep,
        "--report",
    ])
    .arg(dir.path().join("r.json"))
    .env("SNAPFERRY_DST_ACCESS_KEY_ID", "nobody");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{:?}", texts(&out));
    assert!(texts(&out).1.contains("destination"), "{:?}", texts(&out));
    assert!(rt.block_on(keys(&c, "dst", "")).is_empty());
    assert!(
        !dir.path().join("r.json").exists(),
        "no report for a run that never started"
    );

    // Clap usage errors are exit 2 too.
    let mut cmd = snapferry();
    cmd.args(["sync", "only-one-arg"]);
    assert_eq!(run(cmd).status.code(), Some(2));
    let mut cmd = snapferry();
    cmd.args(["sync", "a", "b", "--progress", "sometimes"]);
    assert_eq!(run(cmd).status.code(), Some(2));
}
