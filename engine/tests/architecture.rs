//! Two structural promises of the engine, checked on its sources:
//! - errors are classified from types and status codes, never from message text;
//! - the retry policy is applied in exactly one place, the request layer.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `engine/src`, with its text up to the first `#[cfg(test)]`
/// (unit tests may well look at message text).
fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files: Vec<_> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("walk engine/src").into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            (p, code)
        })
        .collect();
    assert!(
        files.len() > 5,
        "only {} sources found under engine/src",
        files.len()
    );
    files
}

#[test]
fn no_error_is_classified_by_its_message_text() {
    // What classifying by text looks like: looking inside an error's rendering.
    let patterns = [
        "to_string().contains(",
        "message().contains(",
        "root_cause(&err).contains(",
        "DisplayErrorContext(&err).to_string().contains(",
        "text.contains(",
        "chain.contains(",
        "m.contains(\"",
        "starts_with(\"HTTP",
    ];
    let mut found = Vec::new();
    for (p, code) in sources() {
        for (n, line) in code.lines().enumerate() {
            if patterns.iter().any(|pat| line.contains(pat)) {
                found.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "classification by message text:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_retry_policy_runs_only_in_the_request_layer() {
    let mut callers = Vec::new();
    for (p, code) in sources() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "retry.rs" {
            continue; // where it is defined
        }
        // `RetryPolicy::run(cancel, retries, idempotency, op)` is the only way to retry.
        for (n, line) in code.lines().enumerate() {
            if line.contains(".run(") && (line.contains("cancel") || line.contains("retries")) {
                callers.push(format!("{name}:{}", n + 1));
            }
        }
    }
    assert_eq!(callers.len(), 1, "retry loops: {callers:?}");
    assert!(callers[0].starts_with("layer.rs:"), "{callers:?}");
}
