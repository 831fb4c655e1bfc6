//! Structural promises of the binary, checked on its sources:
//! - it builds no store, calls no cluster and sends no raw HTTP request: the engine does
//!   (`store::open`, the typed calls of `cluster`, the `migrate` workflow);
//! - its modules depend one way, `main` → `commands` → {`args`, `output`, `exit`}: the
//!   leaves name neither the commands nor each other.

use std::path::Path;

/// Every `.rs` file under `cli/src`, relative to it, with its text, in path order.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files: Vec<_> = walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.expect("walk cli/src").into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            let rel = p.strip_prefix(&root).expect("under src");
            let text = std::fs::read_to_string(&p).expect("read source");
            (rel.to_string_lossy().into_owned(), text)
        })
        .collect();
    assert!(
        files.len() > 5,
        "only {} sources found under cli/src",
        files.len()
    );
    files
}

#[test]
fn the_binary_builds_no_store_and_calls_no_cluster() {
    let banned = [
        "Method",
        "S3Store",
        "OssStore",
        "FsStore",
        "Layered",
        "Cluster::new",
        "cluster::",
        ".call(",
    ];
    let mut found = Vec::new();
    for (file, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            for b in banned.iter().filter(|b| line.contains(*b)) {
                found.push(format!("{file}:{}: {b}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "engine work in cli/:\n{}",
        found.join("\n")
    );
}

#[test]
fn modules_depend_one_way() {
    // (module file prefix, what it must not name)
    let rules: &[(&str, &[&str])] = &[
        (
            "args.rs",
            &["crate::commands", "crate::output", "crate::exit"],
        ),
        (
            "exit.rs",
            &["crate::commands", "crate::output", "crate::args"],
        ),
        ("output", &["crate::commands", "crate::args", "crate::exit"]),
        // The crate root holds only `main` and `run`; nothing reaches back into it.
        ("commands", &["crate::run", "crate::main"]),
    ];
    let mut found = Vec::new();
    for (file, text) in sources() {
        for (prefix, banned) in rules {
            if !file.starts_with(prefix) {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                for b in banned.iter().filter(|b| line.contains(*b)) {
                    found.push(format!("{file}:{}: names {b}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a dependency against the flow:\n{}",
        found.join("\n")
    );
}

#[test]
fn main_stays_thin() {
    let (_, main) = sources()
        .into_iter()
        .find(|(f, _)| f == "main.rs")
        .expect("main.rs");
    let lines = main.lines().count();
    assert!(lines < 100, "main.rs has {lines} lines");
}
