//! README's layout table matches the tree: every path it names exists, every top-level
//! folder has a row, and every module of the engine, the binary and the test kit, and
//! every fixture, is named in its folder's rows — so a file added or moved without the
//! table saying where it lives fails here, not in a newcomer's head.

use std::collections::BTreeSet;

use testkit::repo_root;

/// The rows of README's `## Layout` table: (the paths of the first cell, the row's text).
fn rows() -> Vec<(Vec<String>, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let table = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a ## Layout section");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            let mut cells = l.trim_matches('|').splitn(2, '|');
            let first = cells.next().unwrap_or_default();
            let paths = first
                .split(',')
                .map(|p| p.trim().trim_matches('`').to_string())
                .filter(|p| !p.is_empty())
                .collect();
            (paths, l.to_string())
        })
        .collect()
}

#[test]
fn every_path_the_layout_table_names_exists() {
    let rows = rows();
    assert!(rows.len() >= 5, "{rows:?}");
    for (paths, _) in &rows {
        for p in paths {
            assert!(
                repo_root().join(p).exists(),
                "README's layout names {p}, which is not in the tree"
            );
        }
    }
}

#[test]
fn every_top_level_folder_has_a_row() {
    let named: BTreeSet<String> = rows()
        .into_iter()
        .flat_map(|(p, _)| p)
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    for e in std::fs::read_dir(repo_root()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && name != "target" && !name.starts_with('.') {
            assert!(
                named.contains(&name),
                "the folder {name}/ has no row in README's layout table"
            );
        }
    }
}

#[test]
fn every_module_and_fixture_is_named_in_its_folders_rows() {
    let rows = rows();
    for (dir, top) in [
        ("engine/src", "engine/"),
        ("cli/src", "cli/"),
        ("testkit/src", "testkit/"),
        ("fixtures", "fixtures/"),
    ] {
        let text: String = rows
            .iter()
            .filter(|(paths, _)| paths.iter().any(|p| p.starts_with(top)))
            .map(|(_, t)| t.as_str())
            .collect();
        for e in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.trim_end_matches(".rs");
            if ["lib", "main", "mod", "__pycache__"].contains(&stem) {
                continue;
            }
            assert!(
                text.contains(stem),
                "{dir}/{name} is not named in README's layout rows for {top}"
            );
        }
    }
}
