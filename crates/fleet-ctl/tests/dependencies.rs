//! ARCHITECTURE.md: fleet-ctl links the wire (fleet-api), the domain (fleet-core), etcd's disk
//! check (fleet-disk) and gix, and none of the coordinator's storage, consensus or Kubernetes
//! client. Read from `cargo tree`, so a dependency that arrives through another one counts.

use std::collections::BTreeSet;
use std::process::Command;

/// `cargo tree --offline --prefix none ARGS`, run in this crate, as lines.
fn cargo_tree(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--prefix", "none"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The packages in `package`'s tree of normal dependencies (not dev, not build), by name.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    cargo_tree(&["-p", package, "-e", "normal", "--format", "{p}"])
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn fleet_ctl_links_neither_storage_nor_consensus_nor_a_kubernetes_client() {
    let tree = normal_dependencies("fleet-ctl");
    assert!(
        tree.contains("fleet-api") && tree.contains("fleet-core"),
        "{tree:?}"
    );
    for banned in [
        "fleet-node",
        "fleet-coordinator",
        "fleet-agent",
        "sled",
        "openraft",
        "kube",
        "k8s-openapi",
        "etcd-client",
    ] {
        assert!(
            !tree.contains(banned),
            "fleet-ctl depends on {banned}; it must link fleet-api and fleet-core only"
        );
    }
}

#[test]
fn fleet_api_links_the_domain_and_the_wire_only() {
    let tree = normal_dependencies("fleet-api");
    for banned in [
        "fleet-node",
        "fleet-coordinator",
        "fleet-agent",
        "sled",
        "openraft",
        "kube",
        "etcd-client",
        "gix",
    ] {
        assert!(!tree.contains(banned), "fleet-api depends on {banned}");
    }
}

#[test]
fn the_agent_links_no_consensus_or_storage_and_the_coordinator_no_git_or_kubernetes_client() {
    // ARCHITECTURE.md: the agent talks to the coordinators over the wire only; the coordinator
    // never reads Git or talks to a Kubernetes API server.
    let agent = normal_dependencies("fleet-agent");
    for banned in [
        "fleet-coordinator",
        "sled",
        "openraft",
        "etcd-client",
        "fail",
    ] {
        assert!(!agent.contains(banned), "fleet-agent depends on {banned}");
    }
    let coordinator = normal_dependencies("fleet-coordinator");
    for banned in ["fleet-agent", "gix", "kube", "k8s-openapi", "etcd-client"] {
        assert!(
            !coordinator.contains(banned),
            "fleet-coordinator depends on {banned}"
        );
    }
}

#[test]
fn fleet_core_has_no_runtime_wire_storage_or_consensus_dependency() {
    // ARCHITECTURE.md: "No tokio, tonic, prost, sled, openraft or filesystem in its
    // dependencies."
    let tree = normal_dependencies("fleet-core");
    for banned in [
        "tokio", "tonic", "prost", "sled", "openraft", "hyper", "gix",
    ] {
        assert!(!tree.contains(banned), "fleet-core depends on {banned}");
    }
}

/// The features of `package` that a build of it alone turns on (no dev-dependencies), as
/// `cargo tree -e features` prints them: `fail feature "failpoints"`.
fn enabled_features(package: &str, of: &str) -> Vec<String> {
    cargo_tree(&["-p", package, "-e", "normal,features", "-i", of])
        .into_iter()
        .filter(|l| l.starts_with(&format!("{of} feature")))
        .collect()
}

#[test]
fn the_product_fleet_node_build_has_no_failpoints() {
    // `cargo build --release -p fleet-node` resolves fleet-node's normal dependencies only;
    // the `fail` crate compiles its failpoints to nothing without its `failpoints` feature.
    let node = enabled_features("fleet-node", "fail");
    assert!(
        !node.iter().any(|f| f.contains("\"failpoints\"")),
        "fleet-node alone turns on failpoints: {node:?}"
    );
    // The harness does turn them on, so the test build has them (a check of the check).
    let testkit = enabled_features("fleet-testkit", "fail");
    assert!(
        testkit.iter().any(|f| f.contains("\"failpoints\"")),
        "fleet-testkit does not turn on failpoints: {testkit:?}"
    );
}
