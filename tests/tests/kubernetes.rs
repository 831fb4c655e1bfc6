//! deploy/kubernetes: the manifests conform to the Kubernetes API schema (the official
//! Python client's models), say what the round needs (Indexed, exit 2 not retried,
//! Forbid), and their pods' command lines, run here unit by unit in shuffled order with
//! `JOB_COMPLETION_INDEX` set, make the repository one whole sync makes.

use std::path::PathBuf;
use std::process::Command;

use rand::seq::SliceRandom;
use serde_json::Value;
use testkit::*;

fn manifests() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/kubernetes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "the manifests: {v:?}");
    v
}

fn validator(args: &[&str], files: &[PathBuf]) -> std::process::Output {
    let mut c = Command::new(oss_python());
    c.arg(repo_root().join("deploy/kubernetes/validate.py"));
    c.args(args).args(files);
    run(c)
}

fn json_of(out: &std::process::Output) -> Value {
    let (so, se) = texts(out);
    assert_eq!(out.status.code(), Some(0), "validate.py: {se}");
    serde_json::from_str(&so).unwrap_or_else(|e| panic!("{e}: {so}"))
}

#[test]
fn the_manifests_conform_to_the_api_schema_and_a_typo_does_not() {
    let files = manifests();
    let out = validator(&[], &files);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    // The check can fail: a misspelt field, a string for a number, a container without
    // its name.
    let dir = tempfile::tempdir().unwrap();
    let units =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/units-job.yaml")).unwrap();
    for (from, to, says) in [
        (
            "completionMode",
            "completionsMode",
            "no such field in V1JobSpec",
        ),
        ("parallelism: 4", "parallelism: four", "parallelism"),
        (
            "        - name: snapferry\n          image",
            "        - image",
            "name",
        ),
    ] {
        assert!(units.contains(from), "{from}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, units.replace(from, to)).unwrap();
        let out = validator(&[], &[bad]);
        assert_eq!(out.status.code(), Some(1), "{to}: {}", texts(&out).1);
        assert!(texts(&out).1.contains(says), "{to}: {}", texts(&out).1);
    }
}

#[test]
fn the_manifests_say_what_a_round_needs() {
    let docs = json_of(&validator(&["--docs"], &manifests()));
    let docs = docs.as_array().unwrap();
    let named = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let config = &named("ConfigMap", "snapferry-round")["data"];
    let units = &named("Job", "snapferry-units")["spec"];
    assert_eq!(units["completionMode"], "Indexed");
    assert_eq!(
        units["completions"].to_string(),
        config["UNITS"].as_str().unwrap(),
        "completions equal the plan's units"
    );
    assert!(units["parallelism"].as_u64().unwrap() >= 1);
    assert!(units["backoffLimitPerIndex"].as_u64().unwrap() >= 1);
    assert_eq!(
        units["maxFailedIndexes"], 0,
        "a unit failed for good fails the Job"
    );
    let rules = units["podFailurePolicy"]["rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["action"] == "FailIndex"
            && r["onExitCodes"]["operator"] == "In"
            && r["onExitCodes"]["values"]
                .as_array()
                .unwrap()
                .contains(&Value::from(2))),
        "exit 2 is not retried: {rules:?}"
    );
    for d in docs.iter().filter(|d| d["kind"] == "Job") {
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Never", "{}", d["metadata"]["name"]);
        assert!(spec["containers"][0]["resources"]["requests"]["memory"].is_string());
    }
    let cron = &named("CronJob", "snapferry-incremental")["spec"];
    assert_eq!(cron["concurrencyPolicy"], "Forbid");
    assert_eq!(
        cron["suspend"], true,
        "suspended until the baseline commits"
    );
    let unit_cmd = units["template"]["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap();
    assert!(
        unit_cmd.iter().any(|a| a == "--lease-wait"),
        "a replacement pod waits for a dead pod's unit lease: {unit_cmd:?}"
    );
    // The example's plan URL follows from its DST, CONTROL and PLAN_ID.
    let dst = config["DST"].as_str().unwrap();
    let bucket = dst.split("://").nth(1).unwrap().split('/').next().unwrap();
    let scheme = dst.split("://").next().unwrap();
    assert_eq!(
        config["PLAN_URL"].as_str().unwrap(),
        format!(
            "{scheme}://{bucket}/{}/plans/{}/plan.json",
            config["CONTROL"].as_str().unwrap(),
            config["PLAN_ID"].as_str().unwrap()
        )
    );
}

#[test]
fn the_pods_command_lines_run_unit_by_unit_in_shuffled_order_make_the_whole_sync_result() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(async {
        for b in ["src", "whole", "dst"] {
            create_bucket(&c, b).await;
        }
    });
    let fixture = fixture_dir("opensearch").join("repo");
    let ep = s3.endpoint.clone();
    for (from, to) in [
        (fixture.to_str().unwrap(), "s3://src/repo"),
        ("s3://src/repo", "s3://whole/repo"),
    ] {
        let mut sync = snapferry();
        sync.args([
            "sync",
            from,
            to,
            "--dst-endpoint",
            &ep,
            "--progress",
            "never",
        ]);
        if from.starts_with("s3://") {
            sync.args(["--src-endpoint", &ep]);
        }
        let out = run(sync);
        assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    }
    let url = "s3://dst/repo.snapferry/plans/k8s-round/plan.json";
    let sets = [
        "SRC=s3://src/repo".to_string(),
        "DST=s3://dst/repo".to_string(),
        format!("SRC_ENDPOINT={ep}"),
        format!("DST_ENDPOINT={ep}"),
        "PLAN_ID=k8s-round".to_string(),
        "CONTROL=repo.snapferry".to_string(),
        format!("PLAN_URL={url}"),
    ];
    let mut args = vec!["--commands"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let cmds = json_of(&validator(&args, &manifests()));
    let argv = |job: &str| -> Vec<String> {
        let v: Vec<String> = cmds[job]
            .as_array()
            .unwrap_or_else(|| panic!("no command of {job}: {cmds}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(v[0], "snapferry", "{job}");
        assert!(
            !v.iter().any(|a| a.contains("$(")),
            "{job}: unexpanded {v:?}"
        );
        v
    };
    let pod = |job: &str, index: Option<usize>| {
        let mut c = snapferry();
        c.args(&argv(job)[1..]);
        if let Some(i) = index {
            c.env("JOB_COMPLETION_INDEX", i.to_string());
        }
        run(c)
    };
    let out = pod("snapferry-plan", None);
    assert_eq!(out.status.code(), Some(0), "plan: {}", texts(&out).1);
    assert!(texts(&out).1.contains(url), "{}", texts(&out).1);
    // The plan Job retried: the same plan, not a second one.
    let out = pod("snapferry-plan", None);
    assert_eq!(out.status.code(), Some(0), "plan again: {}", texts(&out).1);
    assert!(
        texts(&out).1.contains("exists; using it"),
        "{}",
        texts(&out).1
    );

    let completions: usize = 16;
    let mut order: Vec<usize> = (0..completions).collect();
    order.shuffle(&mut rand::rng());
    for (n, i) in order.iter().enumerate() {
        if n == completions / 2 {
            // Half-way: the commit Job refuses, naming what is missing.
            let out = pod("snapferry-commit", None);
            assert_eq!(out.status.code(), Some(1), "{}", texts(&out).1);
            assert!(
                texts(&out).1.contains("have not finished"),
                "{}",
                texts(&out).1
            );
        }
        let out = pod("snapferry-units", Some(*i));
        assert_eq!(out.status.code(), Some(0), "unit {i}: {}", texts(&out).1);
    }
    let out = pod("snapferry-commit", None);
    assert_eq!(out.status.code(), Some(0), "commit: {}", texts(&out).1);
    // The CronJob's incremental round right after: nothing to copy.
    let out = pod("snapferry-incremental", None);
    assert_eq!(out.status.code(), Some(0), "incremental: {}", texts(&out).1);
    assert!(
        texts(&out).1.contains("copied 0 objects"),
        "{}",
        texts(&out).1
    );

    rt().block_on(assert_same_repository(
        (&c, "whole", "repo/"),
        (&c, "dst", "repo/"),
    ));
}
