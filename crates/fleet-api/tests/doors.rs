//! ARCHITECTURE.md: "a `tonic::Status` is built in one place, `fleet_api::status`": no other
//! source file of the workspace calls a `Status` constructor. (Matching a status that came
//! back, or passing one on, is fine.) A plain text scan of every crate's `src/`, so a new file
//! is covered without being listed.

use std::path::{Path, PathBuf};

/// `tonic::Status`'s constructors: `new`, `with_details`, and one per gRPC code.
const CONSTRUCTORS: [&str; 20] = [
    "new(",
    "with_details(",
    "with_metadata(",
    "with_details_and_metadata(",
    "ok(",
    "cancelled(",
    "unknown(",
    "invalid_argument(",
    "deadline_exceeded(",
    "not_found(",
    "already_exists(",
    "permission_denied(",
    "resource_exhausted(",
    "failed_precondition(",
    "aborted(",
    "out_of_range(",
    "unimplemented(",
    "internal(",
    "unavailable(",
    "data_loss(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_status_is_built_outside_fleet_api_status() {
    let root = workspace();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    rust_files(&root.join("chaos-tests").join("src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let allowed = root.join("crates/fleet-api/src/status.rs");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| **f != allowed) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for constructor in CONSTRUCTORS {
                if code.contains(&format!("Status::{constructor}")) {
                    found.push(format!(
                        "{}:{}: {}",
                        file.strip_prefix(&root).unwrap().display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "build statuses with fleet_api::status::with_hint, or map an error type in fleet-node's \
         convert.rs:\n{}",
        found.join("\n")
    );
}
