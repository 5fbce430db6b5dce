//! Promotion end to end: a real coordinator process, one staging and three production agents
//! (`fleet-node agent` processes on files targets) in three sites, a Git repository made here,
//! and the real `fleet-ctl`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::{AgentProcess, ProcessCluster, set_failpoint};
use serde_json::Value;

use common::{ctl, git, ok_json};

const PRODUCTION: [&str; 3] = ["prod-oslo", "prod-bergen", "prod-stavanger"];

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

/// Each cluster's `fleet-ctl status -o json` row.
fn rows(ep: &str) -> BTreeMap<String, Value> {
    ok_json(ep, &["status"])["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cluster"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

fn applied(row: &Value) -> &str {
    row["report"]["applied_revision"].as_str().unwrap_or("")
}

/// A Git repository under `dir` whose first commit, returned, holds version 1 of the staging
/// and production overlays.
fn repo_with_v1(dir: &Path) -> (std::path::PathBuf, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "overlays/staging/app.conf", "version 1\n");
    write(&repo, "overlays/production/app.conf", "version 1\n");
    let v1 = commit(&repo, "v1");
    (repo, v1)
}

/// Registers `(name, site, environment)` clusters and creates the workload `web` from `repo`
/// at `overlays/{environment}`.
fn register_with_web(ep: &str, clusters: &[(&str, &str, &str)], repo: &Path) {
    for (name, site, env) in clusters {
        ok_json(
            ep,
            &["cluster", "register", name, "--site", site, "--env", env],
        );
    }
    let url = format!("file://{}", repo.display());
    ok_json(
        ep,
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
}

async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `fleet-ctl promote` until the gate holds (the staging soak), failing on any other refusal.
async fn promote_when_verified(ep: &str) -> Value {
    let start = Instant::now();
    loop {
        let out = ctl(ep, &["promote", "web", "--to", "production", "-o", "json"]);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(stderr.contains("is not verified in staging"), "{stderr}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gate never held: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn watch(ep: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .args([
            "--endpoints",
            ep,
            "rollout",
            "status",
            "web",
            "--env",
            "production",
        ])
        .args(["--watch", "-o", "json"])
        .env_remove("FLEET_ENDPOINTS")
        .envs(fleet_testkit::TestPki::ctl_env(
            fleet_testkit::pki().admin(),
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a `rollout status --watch` to end; returns its success and JSON.
async fn watched(child: Child) -> (bool, Value) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "watch printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_goes_wave_by_wave_and_a_failing_revision_is_rolled_back_for_good() {
    let coordinator = ProcessCluster::start(1, &["--allow-failpoint-rpc"]).await;
    let ep = coordinator.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let (repo, v1) = repo_with_v1(dir.path());

    for site in ["oslo", "bergen", "stavanger"] {
        ok_json(&ep, &["site", "add", site]);
    }
    let mut clusters = vec![("stg-1", "oslo", "staging")];
    clusters.extend([
        ("prod-oslo", "oslo", "production"),
        ("prod-bergen", "bergen", "production"),
        ("prod-stavanger", "stavanger", "production"),
    ]);
    register_with_web(&ep, &clusters, &repo);
    ok_json(
        &ep,
        &[
            "pipeline",
            "set",
            "web",
            "--environments",
            "staging,production",
            "--soak",
            "1s",
            "--wave-order",
            "oslo,bergen,stavanger",
        ],
    );
    let _agents: Vec<AgentProcess> = clusters
        .iter()
        .map(|(name, ..)| AgentProcess::start(dir.path(), name, &ep, "1s"))
        .collect();

    // v1: staging, then production in wave order, observed from the agents' reports.
    ok_json(&ep, &["release", "publish", "web", &v1]);
    let plan = ok_json(&ep, &["plan", "web", "--to", "production"]);
    let waves: Vec<&str> = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(waves, ["oslo", "bergen", "stavanger"]);
    let started = promote_when_verified(&ep).await;
    assert_eq!(started["state"], "running");
    let watcher = watch(&ep);
    let mut first_applied: BTreeMap<String, Instant> = BTreeMap::new();
    wait_until(
        Duration::from_secs(40),
        "v1 on every production cluster",
        || {
            for (name, row) in rows(&ep) {
                if applied(&row) == v1 {
                    first_applied.entry(name).or_insert_with(Instant::now);
                }
            }
            PRODUCTION.iter().all(|c| first_applied.contains_key(*c))
        },
    )
    .await;
    let at: Vec<Instant> = PRODUCTION.iter().map(|c| first_applied[*c]).collect();
    assert!(
        at[0] + Duration::from_millis(800) <= at[1] && at[1] + Duration::from_millis(800) <= at[2],
        "waves oslo → bergen → stavanger, each after the previous one's 1 s soak: {:?}",
        [at[1] - at[0], at[2] - at[1]]
    );
    let (ok, json) = watched(watcher).await;
    assert!(ok, "{json}");
    assert_eq!(json["state"], "succeeded");

    // v2 is fine in staging but its production overlay holds a symlink out of the root, so
    // the first production wave fails.
    write(&repo, "overlays/staging/app.conf", "version 2\n");
    write(&repo, "overlays/production/app.conf", "version 2\n");
    std::os::unix::fs::symlink(
        "../../../../../etc/passwd",
        repo.join("overlays/production/passwd"),
    )
    .unwrap();
    let v2 = commit(&repo, "v2 with a bad production overlay");
    ok_json(&ep, &["release", "publish", "web", &v2]);
    promote_when_verified(&ep).await;
    let (ok, json) = watched(watch(&ep)).await;
    assert!(!ok, "a rolled-back rollout exits non-zero: {json}");
    assert_eq!(json["state"], "rolled_back", "{json}");
    assert!(
        json["message"].as_str().unwrap().contains("prod-oslo"),
        "{json}"
    );
    let oslo = &json["waves"][0]["clusters"][0];
    assert_eq!(oslo["progress"], "rolled_back", "{json}");
    assert_eq!(oslo["message"], format!("set back to {v1}"), "{json}");
    assert_eq!(json["waves"][1]["clusters"][0]["progress"], "pending");

    // Back on v1 everywhere, and no later step brings v2 back.
    wait_until(
        Duration::from_secs(10),
        "prod-oslo assigned v1 again",
        || rows(&ep)["prod-oslo"]["desired_revision"] == v1.as_str(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = rows(&ep);
    for c in PRODUCTION {
        assert_eq!(now[c]["desired_revision"], v1.as_str(), "{c}");
        assert_eq!(applied(&now[c]), v1, "{c}");
    }
    for line in ok_json(&ep, &["audit", "--workload", "web"])["events"]
        .as_array()
        .unwrap()
    {
        let summary = line["summary"].as_str().unwrap();
        if line["kind"] == "advance_rollout" && summary.contains(&v2[..12]) {
            assert!(
                !summary.contains("prod-bergen") && !summary.contains("prod-stavanger"),
                "later waves never saw v2: {summary}"
            );
        }
    }
    // History: v1, then v2 (the first wave), then v1 again, each tied to its audit event.
    let history = ok_json(&ep, &["history", "prod-oslo"]);
    let revisions: Vec<&str> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revisions, [v1.as_str(), v2.as_str(), v1.as_str()]);
    let v2_at = history["changes"][1]["time_ms"].as_u64().unwrap();
    let at = |ms: u64| {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
        humantime::format_rfc3339_millis(t).to_string()
    };
    let then = ok_json(&ep, &["history", "prod-oslo", "--at", &at(v2_at)]);
    assert_eq!(then["assigned"][0]["revision"], v2.as_str(), "{then}");
    let before = ok_json(&ep, &["history", "prod-oslo", "--at", &at(v2_at - 1)]);
    assert_eq!(before["assigned"][0]["revision"], v1.as_str(), "{before}");

    let again = ctl(&ep, &["promote", "web", "--to", "production"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("rejected") && stderr.contains("--allow-rejected"),
        "{stderr}"
    );

    // The audit chain verifies, and stops verifying when one stored event is altered.
    let verified = ok_json(&ep, &["audit", "verify"]);
    assert_eq!(verified["verified"], true);
    set_failpoint(&coordinator.nodes[0].address, "audit-tamper", "1*return(3)")
        .await
        .unwrap();
    ok_json(&ep, &["site", "add", "tromso"]); // Any write runs the hook.
    let out = ctl(&ep, &["audit", "verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered chain must not verify");
    assert!(stderr.contains("audit event 3"), "{stderr}");
}

/// The reports this test is modelled on: a failure within the budget that kept the wave's only
/// max-unavailable slot for ever; a pipeline change that pulled the ground from under a
/// running rollout; a cluster registered mid-rollout that was left on the old revision while
/// the rollout reported the environment on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_within_the_budget_is_set_aside_and_a_cluster_joining_mid_rollout_gets_the_new_revision()
 {
    let coordinator = ProcessCluster::start(1, &[]).await;
    let ep = coordinator.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let (repo, v1) = repo_with_v1(dir.path());
    for site in ["s1", "s2"] {
        ok_json(&ep, &["site", "add", site]);
    }
    let clusters = [
        ("stg-1", "s1", "staging"),
        ("p1a", "s1", "production"),
        ("p1b", "s1", "production"),
        ("p2", "s2", "production"),
    ];
    register_with_web(&ep, &clusters, &repo);
    let pipeline = [
        "pipeline",
        "set",
        "web",
        "--environments",
        "staging,production",
        "--soak",
        "1s",
        "--wave-order",
        "s1,s2",
        "--failure-budget",
        "1",
        "--max-unavailable",
        "1",
    ];
    ok_json(&ep, &pipeline);
    let mut agents: Vec<AgentProcess> = clusters
        .iter()
        .map(|(name, ..)| AgentProcess::start(dir.path(), name, &ep, "1s"))
        .collect();
    ok_json(&ep, &["release", "publish", "web", &v1]);
    promote_when_verified(&ep).await;
    let (ok, json) = watched(watch(&ep)).await;
    assert!(ok && json["state"] == "succeeded", "{json}");

    // v2 adds a file that someone made by hand on p1a only: p1a's agent refuses to overwrite
    // what it does not own, so v2 fails there and nowhere else.
    let p1a_root = agents[1].root.clone();
    std::fs::write(p1a_root.join("web/extra.conf"), "made by hand\n").unwrap();
    write(&repo, "overlays/staging/app.conf", "version 2\n");
    write(&repo, "overlays/production/app.conf", "version 2\n");
    write(&repo, "overlays/production/extra.conf", "extra\n");
    let v2 = commit(&repo, "v2");
    ok_json(&ep, &["release", "publish", "web", &v2]);
    promote_when_verified(&ep).await;
    let (ok, json) = watched(watch(&ep)).await;
    assert!(ok, "within the failure budget the rollout succeeds: {json}");
    assert_eq!(json["state"], "succeeded_with_failures", "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.contains("p1a"),
        "the failed cluster is named: {json}"
    );
    let p1a = &json["waves"][0]["clusters"][0];
    assert_eq!(
        (&p1a["cluster"], &p1a["progress"]),
        (&"p1a".into(), &"set_aside".into())
    );
    wait_until(Duration::from_secs(15), "v2 on p1b and p2", || {
        let rows = rows(&ep);
        applied(&rows["p1b"]) == v2 && applied(&rows["p2"]) == v2
    })
    .await;
    let now = rows(&ep);
    assert_eq!(now["p1a"]["desired_revision"], v2.as_str());
    assert_eq!(applied(&now["p1a"]), v1, "p1a still runs v1");
    let set_aside = ok_json(&ep, &["audit", "--workload", "web"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| {
            let s = e["summary"].as_str().unwrap();
            s.contains("p1a failed") && s.contains("1 of the failure budget of 1 used")
        });
    assert!(set_aside, "the set-aside is an audited planner step");
    // Once the file made by hand is gone, p1a's agent applies v2 like the others.
    std::fs::remove_file(p1a_root.join("web/extra.conf")).unwrap();
    wait_until(Duration::from_secs(15), "v2 on p1a", || {
        applied(&rows(&ep)["p1a"]) == v2
    })
    .await;

    // v3: held (paused) in its first wave while the ground shifts.
    write(&repo, "overlays/staging/app.conf", "version 3\n");
    write(&repo, "overlays/production/app.conf", "version 3\n");
    let v3 = commit(&repo, "v3");
    ok_json(&ep, &["release", "publish", "web", &v3]);
    promote_when_verified(&ep).await;
    ok_json(&ep, &["rollout", "pause", "web", "--env", "production"]);
    let out = ctl(
        &ep,
        &["pipeline", "set", "web", "--environments", "staging"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("leaves out production") && stderr.contains("rollout abort"),
        "{stderr}"
    );
    // A longer soak is accepted, and applies to later rollouts only.
    let mut longer = pipeline.to_vec();
    longer[6] = "1h";
    ok_json(&ep, &longer);
    ok_json(
        &ep,
        &[
            "cluster",
            "register",
            "p2b",
            "--site",
            "s2",
            "--env",
            "production",
        ],
    );
    agents.push(AgentProcess::start(dir.path(), "p2b", &ep, "1s"));
    let status = ok_json(&ep, &["rollout", "status", "web", "--env", "production"]);
    assert_eq!(status["hold"], "paused", "{status}");
    assert_eq!(status["pipeline"]["soak_ms"], 1000, "{status}");
    assert_eq!(status["pipeline_kept"], true, "{status}");
    let wave2: Vec<&str> = status["waves"][1]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(wave2, ["p2", "p2b"], "p2b joins its site's wave: {status}");
    let out = ctl(&ep, &["rollout", "status", "web", "--env", "production"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("held by: paused"), "{table}");
    assert!(
        table.contains("soak 1 s") && table.contains("as it was when the rollout started"),
        "{table}"
    );
    ok_json(&ep, &["rollout", "resume", "web", "--env", "production"]);
    let (ok, json) = watched(watch(&ep)).await;
    assert!(ok && json["state"] == "succeeded", "{json}");
    wait_until(
        Duration::from_secs(15),
        "v3 on every production cluster",
        || {
            let rows = rows(&ep);
            ["p1a", "p1b", "p2", "p2b"]
                .iter()
                .all(|c| applied(&rows[*c]) == v3)
        },
    )
    .await;
    let again = ctl(&ep, &["promote", "web", "--to", "production"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already runs"), "{stderr}");
}
