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
    let files = workspace_sources(&root);
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
        "build statuses with fleet_api::status::with_hint, or map an error type in fleet-coordinator's \
         convert.rs:\n{}",
        found.join("\n")
    );
}

/// The `.rs` files under `crates/NAME/src` of every crate, and `chaos-tests/src`.
fn workspace_sources(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    rust_files(&root.join("chaos-tests").join("src"), &mut files);
    files
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap().display().to_string()
}

#[test]
fn proto_types_are_named_only_in_fleet_api_and_the_grpc_modules() {
    // ARCHITECTURE.md: behind the wire, the coordinator and the agent work with fleet-core's
    // types; a proto message is named only in fleet-api, in `convert.rs`, and in the gRPC
    // modules (the coordinator's `grpc/`, the agent's `grpc.rs`). fleet-core, fleet-disk and
    // the fleet-node binary name none. (fleet-ctl, the harness, the benchmarks and the chaos
    // suite are gRPC clients as a whole and are not checked.)
    let root = workspace();
    let checked = [
        "crates/fleet-core/",
        "crates/fleet-disk/",
        "crates/fleet-node/",
        "crates/fleet-coordinator/",
        "crates/fleet-agent/",
    ];
    let allowed = [
        "crates/fleet-coordinator/src/grpc/",
        "crates/fleet-coordinator/src/convert.rs",
        "crates/fleet-agent/src/grpc.rs",
    ];
    let mut seen = 0;
    let mut found = Vec::new();
    for file in workspace_sources(&root) {
        let name = relative(&root, &file);
        if !checked.iter().any(|c| name.starts_with(c)) {
            continue;
        }
        seen += 1;
        if allowed.iter().any(|a| name.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            if code.contains("proto::") || code.contains("fleet_api::proto") {
                found.push(format!("{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(seen > 30, "checked only {seen} files");
    assert!(
        found.is_empty(),
        "convert at the edge (fleet_api::convert, the crate's grpc module) and pass domain \
         types in:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_limit_constant_is_defined_in_a_limits_module() {
    // ARCHITECTURE.md: "every limit is named once, in its crate's `limits.rs`". A limit is a
    // constant named MAX_* or MIN_*; other modules re-export the ones they enforce.
    let root = workspace();
    let mut found = Vec::new();
    let mut limits_files = 0;
    for file in workspace_sources(&root) {
        let name = relative(&root, &file);
        if file.file_name().is_some_and(|f| f == "limits.rs") {
            limits_files += 1;
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            let code = code
                .strip_prefix("pub(crate) ")
                .or_else(|| code.strip_prefix("pub "))
                .unwrap_or(code);
            if code.starts_with("const MAX_") || code.starts_with("const MIN_") {
                found.push(format!("{name}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(limits_files >= 4, "found {limits_files} limits modules");
    assert!(
        found.is_empty(),
        "define limits in the crate's limits.rs (and re-export them where they are enforced):\n{}",
        found.join("\n")
    );
}

/// A declaration in a .proto file that must carry a comment: a service, an rpc, a field, an
/// enum value, and a message or enum (a `*Request`/`*Response` message is described by its
/// rpc's comment).
fn must_be_commented(line: &str) -> bool {
    let t = line.trim();
    let word = |w: &str| t.starts_with(w) && t[w.len()..].starts_with(' ');
    if word("service") || word("rpc") || word("enum") {
        return true;
    }
    if word("message") {
        let name = t["message".len()..]
            .trim()
            .split([' ', '{'])
            .next()
            .unwrap_or("");
        return !(name.ends_with("Request") || name.ends_with("Response"));
    }
    // `TYPE name = N;`, `repeated TYPE name = N;`, `map<K, V> name = N;`, `NAME = N;`.
    if t.starts_with("//") || t.starts_with("option") || t.starts_with("reserved") {
        return false;
    }
    t.ends_with(';') && t.contains(" = ") && !t.starts_with("syntax") && !t.starts_with("package")
}

#[test]
fn every_proto_service_rpc_message_field_and_enum_value_is_commented() {
    // ARCHITECTURE.md: "every RPC and field of proto/ has a comment" (units, limits, what empty
    // means): the .proto files are the API's reference for other tooling.
    let root = workspace();
    let dir = root.join("proto/fleet/v1");
    let mut found = Vec::new();
    let mut declarations = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "proto") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if !must_be_commented(line) {
                continue;
            }
            declarations += 1;
            let trailing = line.contains("//");
            let above = n > 0 && lines[n - 1].trim().starts_with("//");
            if !trailing && !above {
                found.push(format!(
                    "{}:{}: {}",
                    relative(&root, &file),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(declarations > 300, "found only {declarations} declarations");
    assert!(
        found.is_empty(),
        "comment these (units, limits, what empty or 0 means):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_test_the_docs_cite_exists() {
    // ARCHITECTURE.md, docs/GLOSSARY.md and README.md name the tests that keep their claims
    // (`a_name_with_at_least_four_underscores`); a renamed or deleted test must not leave a
    // claim pointing at nothing.
    let root = workspace();
    let mut sources = workspace_sources(&root);
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let tests = entry.unwrap().path().join("tests");
        if tests.is_dir() {
            rust_files(&tests, &mut sources);
        }
    }
    rust_files(&root.join("chaos-tests").join("tests"), &mut sources);
    let code: String = sources
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut cited = 0;
    let mut missing = Vec::new();
    for doc in ["ARCHITECTURE.md", "docs/GLOSSARY.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        // Inline code spans, outside fenced blocks (a span may wrap onto the next line).
        let mut prose = String::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                prose.push_str(line);
                prose.push('\n');
            }
        }
        for name in prose.split('`').skip(1).step_by(2) {
            let is_name = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !is_name || name.matches('_').count() < 4 {
                continue;
            }
            cited += 1;
            if !code.contains(&format!("fn {name}(")) {
                missing.push(format!("{doc}: {name}"));
            }
        }
    }
    assert!(cited > 20, "found only {cited} cited tests");
    assert!(
        missing.is_empty(),
        "cited, but no such function in the workspace:\n{}",
        missing.join("\n")
    );
}
