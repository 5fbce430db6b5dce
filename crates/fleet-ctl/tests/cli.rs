//! The real `fleet-ctl` binary against real coordinator processes.

mod common;

use std::process::Command;
use std::time::Duration;

use fleet_testkit::{ProcessCluster, free_port};
use serde_json::Value;

use common::{ctl, ctl_as, git, ok_json, ok_json_as, operator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_registers_publishes_by_ref_and_reports_status_as_json() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    ok_json(&ep, &["role", "bind", "alice", "operator"]);
    ok_json_as(
        &operator("alice"),
        &ep,
        &["site", "add", "oslo", "--reason", "new site"],
    );
    ok_json(
        &ep,
        &[
            "cluster", "register", "web-1", "--site", "oslo", "--env", "staging", "--label",
            "tier=web",
        ],
    );
    ok_json(
        &ep,
        &[
            "cluster",
            "register",
            "web-2",
            "--site",
            "oslo",
            "--env",
            "production",
        ],
    );

    let clusters = ok_json(&ep, &["cluster", "list"]);
    assert_eq!(clusters["clusters"][0]["name"], "web-1");
    assert_eq!(clusters["clusters"][0]["labels"]["tier"], "web");
    assert_eq!(clusters["clusters"][1]["environment"], "production");

    // A Git repository made by the test; the ref is resolved locally to the full SHA.
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.path().join("overlays/staging")).unwrap();
    std::fs::write(
        repo.path().join("overlays/staging/app.yaml"),
        "kind: ConfigMap\n",
    )
    .unwrap();
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "first"]);
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.path().display());
    ok_json(
        &ep,
        &[
            "workload",
            "create",
            "web",
            "--repo",
            &url,
            "--path",
            "overlays/{environment}",
        ],
    );
    let published = ok_json(
        &ep,
        &[
            "release",
            "publish",
            "web",
            "main",
            "--repo",
            repo.path().to_str().unwrap(),
        ],
    );
    assert_eq!(published["revision"], head.as_str());
    assert_eq!(published["environment"], "staging");
    assert_eq!(published["clusters"], serde_json::json!(["web-1"]));

    let status = ok_json(&ep, &["status"]);
    let rows = status["clusters"].as_array().unwrap();
    let web1 = rows.iter().find(|r| r["cluster"] == "web-1").unwrap();
    assert_eq!(web1["desired_revision"], head.as_str());
    let web2 = rows.iter().find(|r| r["cluster"] == "web-2").unwrap();
    assert!(
        web2["desired_revision"].is_null(),
        "production got a staging release: {web2}"
    );

    let described = ok_json(&ep, &["cluster", "describe", "web-1"]);
    assert_eq!(described["assignments"][0]["path"], "overlays/staging");

    let table = ctl(&ep, &["status"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("CLUSTER"), "{text}");
    // The table shows revisions shortened to 12 hex digits; JSON has them whole.
    assert!(text.contains(&head[..12]), "{text}");
    assert!(
        text.contains("APPLIED") && text.contains("LAST SEEN"),
        "{text}"
    );

    // Every change above is in the audit log, in order, chained by hash.
    let audit = ok_json(&ep, &["audit"]);
    let events = audit["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(events[0]["actor"], "coordinator:1", "the bootstrap admin");
    assert_eq!(events[1]["actor"], "admin");
    let events = &events[2..];
    assert_eq!(
        kinds[2..],
        [
            "add_site",
            "register_cluster",
            "register_cluster",
            "create_workload",
            "publish_release"
        ]
    );
    assert_eq!(events[0]["actor"], "alice", "the certificate's operator");
    assert_eq!(events[0]["reason"], "new site");
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let releases = ok_json(&ep, &["audit", "--kind", "publish_release"]);
    let releases = releases["events"].as_array().unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["command"]["revision"], head.as_str());
    let later = ok_json(&ep, &["audit", "--after", "3"]);
    assert_eq!(later["events"][0]["sequence"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_errors_carry_a_hint_and_an_exit_code_scripts_can_trust() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();

    let out = ctl(
        &ep,
        &[
            "cluster", "register", "web-1", "--site", "nowhere", "--env", "staging",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "unknown site is NOT_FOUND");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: site \"nowhere\" not found"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: add it first"), "{stderr}");
    assert!(out.stdout.is_empty(), "errors go to stderr only");

    ok_json(&ep, &["site", "add", "oslo"]);
    let out = ctl(&ep, &["site", "add", "oslo"]);
    assert_eq!(out.status.code(), Some(4), "duplicate is ALREADY_EXISTS");

    let out = ctl(&ep, &["release", "publish", "web", "not-a-sha"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "malformed SHA is INVALID_ARGUMENT"
    );

    let dead = format!("127.0.0.1:{}", free_port());
    let out = ctl(&dead, &["status"]);
    assert_eq!(out.status.code(), Some(5), "nothing reachable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: check --endpoints"));

    // Failover: a dead endpoint first in the list is skipped.
    let both = format!("{dead},{ep}");
    let sites = ok_json(&both, &["site", "list"]);
    assert_eq!(sites["sites"][0]["name"], "oslo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_coordinator_status_names_the_leader_and_fails_over_when_it_is_killed() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let status = ok_json(&cluster.endpoints(), &["coordinator", "status"]);
    assert_eq!(status["leader_id"], leader);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(status["term"].as_u64().unwrap() >= 1);

    // The killed leader is first in the list; fleet-ctl moves on and the write succeeds.
    let mut endpoints = vec![cluster.address(leader)];
    endpoints.extend(
        cluster
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.address.clone()),
    );
    let endpoints = endpoints.join(",");
    cluster.node(leader).kill();
    ok_json(&endpoints, &["site", "add", "bergen"]);
    let status = ok_json(&endpoints, &["coordinator", "status"]);
    assert_ne!(status["leader_id"], leader);
    let members = status["members"].as_array().unwrap();
    let killed = members.iter().find(|m| m["id"] == leader).unwrap();
    assert_eq!(killed["role"], "unreachable");
}

#[test]
fn ctl_disk_bench_reports_fdatasync_percentiles_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .args([
            "disk-bench",
            "--dir",
            dir.path().to_str().unwrap(),
            "--size",
            "256k",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["writes"], 256 * 1024 / 2300);
    let p50 = v["fdatasync_p50_us"].as_u64().unwrap();
    let p99 = v["fdatasync_p99_us"].as_u64().unwrap();
    let max = v["fdatasync_max_us"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{v}");
    assert!(v["verdict"] == "ok" || v["verdict"] == "too_slow");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the bench file is removed"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .args([
            "disk-bench",
            "--dir",
            dir.path().to_str().unwrap(),
            "--size",
            "1k",
            "--block-size",
            "4096",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--block-size"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_coordinator_disk_shows_each_nodes_probe_and_verdict() {
    let cluster = ProcessCluster::start(
        3,
        &[
            "--disk-probe-interval-ms",
            "100",
            "--disk-probe-writes",
            "5",
        ],
    )
    .await;
    let ep = cluster.endpoints();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let v = ok_json(&ep, &["coordinator", "disk"]);
        let nodes = v["nodes"].as_array().unwrap().clone();
        if nodes
            .iter()
            .all(|n| n["probe_fdatasync_1m"]["count"].as_u64().unwrap_or(0) >= 10)
        {
            break nodes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no probe samples: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        assert!(n["verdict"] == "ok" || n["verdict"] == "too_slow", "{n}");
        assert_eq!(n["p99_limit_us"], 10_000);
        let p = &n["probe_fdatasync_1m"];
        assert!(
            p["p50_us"].as_u64().unwrap() <= p["p99_us"].as_u64().unwrap(),
            "{n}"
        );
    }
    let table = ctl(&ep, &["coordinator", "disk"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.starts_with("ID") && text.contains("PROBE P99") && text.lines().count() == 4,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_actors_are_the_certificates_operators_and_control_characters_in_reasons_are_refused() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    for name in ["kari", "ola.nordmann"] {
        ok_json(&ep, &["role", "bind", name, "operator"]);
    }
    ok_json_as(&operator("kari"), &ep, &["site", "add", "oslo"]);
    ok_json_as(&operator("ola.nordmann"), &ep, &["site", "add", "bergen"]);
    let audit = ok_json(&ep, &["audit", "--kind", "add_site"]);
    assert_eq!(audit["events"][0]["actor"], "kari", "{audit}");
    assert_eq!(audit["events"][1]["actor"], "ola.nordmann");
    // `--as` is gone: the actor is who the certificate says, nothing else.
    let out = ctl_as(
        &operator("kari"),
        &ep,
        &["--as", "per", "site", "add", "tromso"],
    );
    assert_eq!(out.status.code(), Some(2), "--as is refused as unknown");

    // A reason with a newline once made `freeze list` show a freeze that did not exist.
    let out = ctl(
        &ep,
        &[
            "--reason",
            "xmas\n2  production  2030-01-01T00:00:00Z",
            "site",
            "add",
            "tromso",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "a newline is INVALID_ARGUMENT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reason") && stderr.contains("control character"),
        "{stderr}"
    );
    // (NUL cannot be a process argument; the core tests refuse it.)
    for reason in ["ka\u{1b}[2Jri", "kari\u{7}"] {
        let out = ctl(&ep, &["--reason", reason, "site", "add", "tromso"]);
        assert_eq!(out.status.code(), Some(2), "{reason:?}");
    }
    let sites = ok_json(&ep, &["site", "list"]);
    assert_eq!(sites["sites"].as_array().unwrap().len(), 2, "{sites}");
}

/// An audit head kept outside the coordinators: `audit head` prints SEQ:HASH, and `audit verify
/// --head` passes on the live log (also after later writes) and fails once the node's data dir
/// holds another history: here the same node at the same address, started with --bootstrap on
/// its emptied data dir, so that its new log verifies on its own but no longer holds the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_with_a_kept_head_fails_on_a_replaced_or_truncated_log() {
    let mut cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    for site in ["oslo", "bergen", "stavanger", "tromso"] {
        ok_json(&ep, &["site", "add", site]);
    }
    let out = ctl(&ep, &["audit", "head"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (sequence, hash) = head.split_once(':').expect("SEQ:HASH");
    let sequence: u64 = sequence.parse().expect("a sequence number");
    assert!(sequence >= 4 && hash.len() == 64, "{head}");
    let as_json = ok_json(&ep, &["audit", "head"]);
    assert_eq!(as_json["head"], head.as_str(), "{as_json}");

    let verified = ok_json(&ep, &["audit", "verify", "--head", &head]);
    assert_eq!(verified["verified"], true, "{verified}");
    ok_json(&ep, &["site", "add", "bodo"]);
    let verified = ok_json(&ep, &["audit", "verify", "--head", &head]);
    assert_eq!(
        verified["verified"], true,
        "a later write keeps the head: {verified}"
    );

    // A malformed head is refused before anything is fetched.
    let out = ctl(
        &ep,
        &["audit", "verify", "--head", &format!("{sequence}:abc")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("64 hex digits"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The log replaced by a shorter one: the kept event is gone.
    cluster.node(1).kill();
    cluster.node(1).wipe_data_dir();
    cluster.node(1).restart_with_args(&["--bootstrap"], &[]);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    ok_json(&ep, &["site", "add", "oslo"]);
    let verified = ok_json(&ep, &["audit", "verify"]);
    assert_eq!(
        verified["verified"], true,
        "the new log verifies on its own"
    );
    let out = ctl(&ep, &["audit", "verify", "--head", &head]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a truncated log must fail: {stderr}");
    assert!(stderr.contains("truncated or replaced"), "{stderr}");

    // ... and by one as long, whose event at that sequence is another.
    for site in ["bergen", "stavanger", "tromso", "bodo", "alta"] {
        ok_json(&ep, &["site", "add", site]);
    }
    let out = ctl(&ep, &["audit", "verify", "--head", &head]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a replaced log must fail: {stderr}");
    assert!(
        stderr.contains(&format!("event {sequence} has hash")) && stderr.contains("replaced"),
        "{stderr}"
    );
}
