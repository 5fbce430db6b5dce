//! Agents end to end: real coordinator processes, real `fleet-node agent` processes on files
//! targets, a real Git repository made here, and the real `fleet-ctl` to publish and to read
//! status back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_testkit::{AgentProcess, ProcessCluster};
use serde_json::Value;

use common::{git, ok_json};

/// Polls `check` every 20 ms until it holds; panics with `what` after `timeout`.
async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn write(repo: &Path, path: &str, content: &str) {
    let file = repo.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, content).unwrap();
}

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The `fleet-ctl status -o json` row of one cluster.
fn status_of(ep: &str, cluster: &str) -> Value {
    let status = ok_json(ep, &["status"]);
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["cluster"] == cluster)
        .cloned()
        .unwrap_or(Value::Null)
}

fn publish(ep: &str, sha: &str) {
    ok_json(ep, &["release", "publish", "web", sha]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_apply_releases_repair_drift_prune_and_refuse_bad_revisions() {
    let coordinators = ProcessCluster::start(3, &[]).await;
    let ep = coordinators.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "base/nginx.conf", "worker_processes 1;\n");
    write(&repo, "overlays/staging/nginx.conf", "listen 80; # v1\n");
    write(&repo, "overlays/staging/conf.d/extra.conf", "gzip on;\n");
    let c1 = commit(&repo, "v1");

    ok_json(&ep, &["site", "add", "oslo"]);
    for name in ["stg-a", "stg-b"] {
        ok_json(
            &ep,
            &[
                "cluster", "register", name, "--site", "oslo", "--env", "staging",
            ],
        );
    }
    let url = format!("file://{}", repo.display());
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
    // Each agent gets the endpoints in a different order, so they stream from different nodes.
    let addresses: Vec<String> = coordinators
        .nodes
        .iter()
        .map(|n| n.address.clone())
        .collect();
    let a = AgentProcess::start(dir.path(), "stg-a", &addresses.join(","), "1s");
    let reversed: Vec<String> = addresses.iter().rev().cloned().collect();
    let b = AgentProcess::start(dir.path(), "stg-b", &reversed.join(","), "1s");
    // Both agents are connected once their (empty) first set arrived: give them a moment.
    wait_until(Duration::from_secs(10), "agents watching", || {
        a.log().contains("watching assignments") && b.log().contains("watching assignments")
    })
    .await;

    // A release reaches both roots within 2 s.
    publish(&ep, &c1);
    let took = wait_until(Duration::from_secs(2), "release v1 on both roots", || {
        [&a, &b].iter().all(|agent| {
            agent.file("web", "nginx.conf").as_deref() == Some("listen 80; # v1\n")
                && agent.file("web", "conf.d/extra.conf").is_some()
        })
    })
    .await;
    eprintln!("release v1 reached both agents in {took:?}");
    // Only the staging overlay is rendered, not the base.
    assert!(a.file("web", "base/nginx.conf").is_none());

    // Status through fleet-ctl: applied = desired, Synced, Healthy.
    wait_until(
        Duration::from_secs(5),
        "both agents report v1 as synced",
        || {
            ["stg-a", "stg-b"].iter().all(|c| {
                let row = status_of(&ep, c);
                row["report"]["applied_revision"] == c1.as_str()
                    && row["report"]["sync"] == "Synced"
            })
        },
    )
    .await;
    let row = status_of(&ep, "stg-a");
    assert_eq!(row["report"]["health"], "Healthy");
    assert_eq!(row["report"]["render_hash"].as_str().unwrap().len(), 64);
    assert!(row["last_seen_ms"].as_u64().unwrap() > 0);

    // A hand edit is reverted within one resync (1 s, plus the pass itself).
    std::fs::write(a.root.join("web/nginx.conf"), "listen 8080; # hand edit\n").unwrap();
    wait_until(Duration::from_secs(3), "hand edit reverted", || {
        a.file("web", "nginx.conf").as_deref() == Some("listen 80; # v1\n")
    })
    .await;
    wait_until(Duration::from_secs(5), "drift reported", || {
        status_of(&ep, "stg-a")["report"]["drift_count"].as_u64() == Some(1)
    })
    .await;
    // A file the agent does not own is left alone.
    std::fs::write(a.root.join("web/local.conf"), "mine\n").unwrap();

    // A file deleted in a later commit is removed, with its now empty directory.
    git(&repo, &["rm", "-q", "overlays/staging/conf.d/extra.conf"]);
    write(&repo, "overlays/staging/nginx.conf", "listen 80; # v2\n");
    let c2 = commit(&repo, "v2: no extra.conf");
    publish(&ep, &c2);
    wait_until(
        Duration::from_secs(5),
        "v2 applied and extra.conf removed",
        || {
            [&a, &b].iter().all(|agent| {
                agent.file("web", "nginx.conf").as_deref() == Some("listen 80; # v2\n")
                    && agent.file("web", "conf.d/extra.conf").is_none()
            })
        },
    )
    .await;
    assert!(
        !a.root.join("web/conf.d").exists(),
        "the emptied directory is removed"
    );
    assert_eq!(a.file("web", "local.conf").as_deref(), Some("mine\n"));

    // An unknown SHA is reported Failed, naming it; the files stay as they are.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    publish(&ep, unknown);
    wait_until(
        Duration::from_secs(10),
        "unknown SHA reported failed",
        || {
            let row = status_of(&ep, "stg-a");
            row["report"]["sync"] == "Failed"
                && row["report"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(unknown))
        },
    )
    .await;
    let row = status_of(&ep, "stg-a");
    assert_eq!(row["report"]["applied_revision"], c2.as_str());
    assert_eq!(row["report"]["desired_revision"], unknown);
    assert_eq!(
        a.file("web", "nginx.conf").as_deref(),
        Some("listen 80; # v2\n")
    );

    // A revision with a symlink that escapes the root is refused; nothing of it is written.
    write(&repo, "overlays/staging/nginx.conf", "listen 80; # v3\n");
    std::os::unix::fs::symlink(
        "../../../../etc/passwd",
        repo.join("overlays/staging/passwd"),
    )
    .unwrap();
    let c3 = commit(&repo, "v3: escaping symlink");
    publish(&ep, &c3);
    wait_until(Duration::from_secs(10), "escaping symlink refused", || {
        let row = status_of(&ep, "stg-b");
        row["report"]["desired_revision"] == c3.as_str()
            && row["report"]["sync"] == "Failed"
            && row["report"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("symlink") && e.contains("passwd"))
    })
    .await;
    for agent in [&a, &b] {
        assert_eq!(
            agent.file("web", "nginx.conf").as_deref(),
            Some("listen 80; # v2\n")
        );
        assert!(std::fs::symlink_metadata(agent.root.join("web/passwd")).is_err());
    }

    // `cluster describe` shows the last report.
    let described = ok_json(&ep, &["cluster", "describe", "stg-b"]);
    let report = &described["reports"][0];
    assert_eq!(report["workload"], "web");
    assert_eq!(report["sync"], "Failed");
    assert_eq!(report["applied_revision"], c2.as_str());
    assert!(
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "nginx.conf")
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_enforcing_from_its_cache_while_every_coordinator_is_down() {
    let mut coordinators = ProcessCluster::start(1, &[]).await;
    let ep = coordinators.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "site/nginx.conf", "listen 80;\n");
    write(&repo, "site/html/index.html", "<h1>fleet</h1>\n");
    let c1 = commit(&repo, "v1");
    ok_json(&ep, &["site", "add", "oslo"]);
    ok_json(
        &ep,
        &[
            "cluster", "register", "stg-a", "--site", "oslo", "--env", "staging",
        ],
    );
    let url = format!("file://{}", repo.display());
    ok_json(
        &ep,
        &[
            "workload", "create", "web", "--repo", &url, "--path", "site",
        ],
    );
    let mut agent = AgentProcess::start(dir.path(), "stg-a", &ep, "500ms");
    publish(&ep, &c1);
    wait_until(Duration::from_secs(5), "v1 applied and reported", || {
        status_of(&ep, "stg-a")["report"]["applied_revision"] == c1.as_str()
    })
    .await;

    // Every coordinator down: drift is still repaired.
    coordinators.node(1).kill();
    std::fs::write(agent.root.join("web/nginx.conf"), "listen 8080;\n").unwrap();
    wait_until(
        Duration::from_secs(3),
        "drift repaired without coordinators",
        || agent.file("web", "nginx.conf").as_deref() == Some("listen 80;\n"),
    )
    .await;

    // Restarted while the coordinators are down, and with the Git origin gone too: the agent
    // re-applies from its cache.
    agent.kill();
    std::fs::rename(&repo, dir.path().join("repo-away")).unwrap();
    std::fs::remove_file(agent.root.join("web/html/index.html")).unwrap();
    agent.restart();
    wait_until(
        Duration::from_secs(5),
        "restarted agent re-applies from cache",
        || agent.file("web", "html/index.html").as_deref() == Some("<h1>fleet</h1>\n"),
    )
    .await;
    assert!(agent.log().contains("starting from the cached assignments"));

    // The coordinators return: the agent reports again.
    let back = now_ms();
    coordinators.node(1).restart();
    coordinators.wait_for_leader(Duration::from_secs(10)).await;
    wait_until(
        Duration::from_secs(10),
        "agent reports after the return",
        || {
            let row = status_of(&ep, "stg-a");
            row["last_seen_ms"].as_u64().is_some_and(|t| t >= back)
                && row["report"]["sync"] == "Synced"
                && row["report"]["applied_revision"] == c1.as_str()
        },
    )
    .await;
}

/// The report's input: `cluster remove c1` then `cluster register c1 --env production`, where
/// nothing is assigned. The empty set used to have version 0, below the agent's own, so the
/// agent kept enforcing the old workload, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_removed_and_registered_again_reaches_its_agent_as_a_newer_empty_set() {
    let coordinator = ProcessCluster::start(1, &[]).await;
    let ep = coordinator.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "app/app.conf", "one\n");
    let sha = commit(&repo, "one");
    ok_json(&ep, &["site", "add", "oslo"]);
    ok_json(
        &ep,
        &[
            "cluster", "register", "c1", "--site", "oslo", "--env", "staging",
        ],
    );
    let url = format!("file://{}", repo.display());
    ok_json(
        &ep,
        &["workload", "create", "web", "--repo", &url, "--path", "app"],
    );
    publish(&ep, &sha);
    let mut agent = AgentProcess::start(dir.path(), "c1", &ep, "1s");
    wait_until(Duration::from_secs(15), "web applied on c1", || {
        agent.file("web", "app.conf").as_deref() == Some("one\n")
    })
    .await;

    ok_json(&ep, &["cluster", "remove", "c1"]);
    ok_json(
        &ep,
        &[
            "cluster",
            "register",
            "c1",
            "--site",
            "oslo",
            "--env",
            "production",
        ],
    );
    wait_until(Duration::from_secs(15), "web pruned from c1", || {
        !agent.root.join("web").join("app.conf").exists()
    })
    .await;
    agent.kill();
    agent.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !agent.root.join("web").join("app.conf").exists(),
        "still pruned after a restart: {}",
        agent.log()
    );
    let row = status_of(&ep, "c1");
    assert_eq!(row["workload"], Value::Null, "{row}");
    assert_eq!(row["not_assigned"], false, "{row}");
}
