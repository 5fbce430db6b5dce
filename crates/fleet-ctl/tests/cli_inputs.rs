//! The real `fleet-ctl` against real coordinator processes, with inputs modelled on public
//! reports against peer tools: times as operators write them, revisions that name a tag, a
//! tree or a blob, a closed pipe, an unknown event kind, a long audit log, and endpoints that
//! are dead or hung (a stopped process still completes the TCP handshake).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_api::proto::PublishReleaseRequest;
use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_testkit::{AgentProcess, ProcessCluster, free_port};
use nix::sys::signal::Signal;

use common::{ctl, git, ok_json};

/// One coordinator process with the workload `web`; its endpoints.
async fn one_node_with_web() -> (ProcessCluster, String) {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    ok_json(
        &ep,
        &[
            "workload",
            "create",
            "web",
            "--repo",
            "https://git.example/web.git",
            "--path",
            "app",
        ],
    );
    (cluster, ep)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_with_any_rfc3339_offset_are_accepted_and_times_without_a_zone_are_refused() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    // The report's input: an offset other than Z.
    ok_json(
        &ep,
        &[
            "freeze",
            "add",
            "production",
            "--from",
            "2026-11-30T15:34:27+05:30",
            "--to",
            "2026-11-30T16:34:27.5+05:30",
        ],
    );
    let list = ok_json(&ep, &["freeze", "list"]);
    let freeze = &list["freezes"][0];
    // 2026-11-30T10:04:27Z, computed independently (Python's datetime).
    assert_eq!(freeze["from_ms"], 1_796_033_067_000u64, "{list}");
    assert_eq!(freeze["to_ms"], 1_796_036_667_500u64, "{list}");
    for since in [
        "2026-11-30T15:34:27+05:30",
        "2026-11-30T10:04:27Z",
        "2026-11-30t10:04:27z",
        "2026-11-30T05:04:27-05:00",
    ] {
        ok_json(&ep, &["audit", "--since", since]);
    }
    // Without a zone the time is refused, naming the fix, and nothing is written.
    for args in [
        &[
            "freeze",
            "add",
            "production",
            "--from",
            "2030-06-01T10:00:00",
            "--to",
            "2030-06-01T11:00:00Z",
        ][..],
        &["audit", "--since", "2030-06-01T10:00:00"][..],
        &["history", "c1", "--at", "2030-06-01T10:00:00"][..],
    ] {
        let out = ctl(&ep, args);
        let shown = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(
            shown.contains("no zone offset") && shown.contains("Z"),
            "{shown}"
        );
    }
    let out = ctl(&ep, &["audit", "--since", "30.11.2026 10:00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an RFC 3339 time"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok_json(&ep, &["freeze", "list"])["freezes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_on_the_first_environment_blocks_publishing_unless_overridden() {
    let (_coordinator, ep) = one_node_with_web().await;
    let now = std::time::SystemTime::now();
    let at = |offset: Duration| humantime::format_rfc3339_seconds(now + offset).to_string();
    ok_json(
        &ep,
        &[
            "freeze",
            "add",
            "staging",
            "--from",
            &at(Duration::ZERO),
            "--to",
            &at(Duration::from_secs(3600)),
            "--reason",
            "julebord",
        ],
    );
    let sha = "1111111111111111111111111111111111111111";
    let out = ctl(&ep, &["release", "publish", "web", sha]);
    let shown = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("staging is frozen until") && shown.contains("julebord"),
        "{shown}"
    );
    assert!(shown.contains("--override-freeze"), "{shown}");
    ok_json(
        &ep,
        &["release", "publish", "web", sha, "--override-freeze"],
    );
    let events = ok_json(&ep, &["audit", "--kind", "publish_release"]);
    let summary = events["events"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("overrides a freeze window of staging"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_repo_peels_an_annotated_tag_and_refuses_a_tree_or_a_blob() {
    let (_coordinator, ep) = one_node_with_web().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.join("app")).unwrap();
    std::fs::write(repo.join("app/a.conf"), "a\n").unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "one"]);
    git(repo, &["tag", "-a", "v1", "-m", "release 1"]);
    let commit = git(repo, &["rev-parse", "HEAD"]);
    let tag = git(repo, &["rev-parse", "v1"]);
    assert_ne!(tag, commit, "an annotated tag is an object of its own");
    let tree = git(repo, &["rev-parse", "HEAD^{tree}"]);
    let blob = git(repo, &["rev-parse", "HEAD:app/a.conf"]);
    let repo_arg = repo.to_str().unwrap();
    let published = ok_json(
        &ep,
        &["release", "publish", "web", &tag, "--repo", repo_arg],
    );
    assert_eq!(published["revision"], commit.as_str(), "{published}");
    for (sha, what) in [(&tree, "names a tree"), (&blob, "names a blob")] {
        let out = ctl(&ep, &["release", "publish", "web", sha, "--repo", repo_arg]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
    }
    let releases = ok_json(&ep, &["release", "list", "web"]);
    assert_eq!(
        releases["releases"].as_array().unwrap().len(),
        1,
        "{releases}"
    );
}

/// Publishes `n` releases of `web` straight through the API (each one audit event).
async fn publish_many(address: &str, n: usize) {
    let mut client = FleetServiceClient::new(fleet_testkit::channel(address).await.unwrap());
    for i in 0..n {
        client
            .publish_release(PublishReleaseRequest {
                workload: "web".into(),
                revision: format!("{:040x}", i + 1),
                reason: String::new(),
                allow_rejected: false,
                override_freeze: false,
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_the_newest_page_says_how_to_page_and_exits_quietly_on_a_closed_pipe() {
    let (cluster, ep) = one_node_with_web().await;
    publish_many(&cluster.nodes[0].address, 1_200).await;
    // The bootstrap admin's binding, the workload, the releases.
    let total = 1_202u64;

    let out = ctl(&ep, &["audit", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1000);
    assert_eq!(
        events[0]["sequence"],
        total - 999,
        "the newest page, oldest first"
    );
    assert_eq!(events[999]["sequence"], total);
    let hint = stderr(&out);
    assert!(
        hint.contains(&format!("showing 1000 of {total} matching events"))
            && hint.contains(&format!("fleet-ctl audit --before {}", total - 999)),
        "{hint}"
    );
    let older = ok_json(&ep, &["audit", "--before", &(total - 999).to_string()]);
    let older = older["events"].as_array().unwrap();
    assert_eq!(older.len(), (total - 1000) as usize);
    assert_eq!(older[0]["sequence"], 1);
    let first = ok_json(&ep, &["audit", "--after", "0", "--limit", "5"]);
    assert_eq!(first["events"][4]["sequence"], 5);
    let kind = ok_json(&ep, &["audit", "--kind", "create_workload"]);
    assert_eq!(kind["events"].as_array().unwrap().len(), 1);

    // An unknown kind is refused, listing the kinds.
    let out = ctl(&ep, &["audit", "--kind", "publish"]);
    assert_eq!(out.status.code(), Some(2));
    let shown = stderr(&out);
    assert!(
        shown.contains("publish_release") && shown.contains("advance_rollout"),
        "{shown}"
    );

    // The report's input: `fleet-ctl audit | head -1`, the table far larger than a pipe holds.
    let script = format!(
        "{} --endpoints {ep} audit | head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2",
        env!("CARGO_BIN_EXE_fleet-ctl")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_remove("FLEET_ENDPOINTS")
        .envs(fleet_testkit::TestPki::ctl_env(
            fleet_testkit::pki().admin(),
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let shown = stderr(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "head printed its line"
    );
    assert!(
        !shown.contains("panicked") && !shown.contains("Broken pipe"),
        "{shown}"
    );
    assert!(
        shown.contains("status 141") || shown.contains("status 0"),
        "ended by SIGPIPE as `cat` is (141), or done first: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_pass_over_dead_and_hung_endpoints_and_a_write_never_runs_twice() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    ok_json(&cluster.endpoints(), &["site", "add", "oslo"]);
    let hung_id = cluster.others(leader)[0];
    let hung = cluster.address(hung_id);
    let live = cluster.address(leader);
    let dead = format!("127.0.0.1:{}", free_port());
    cluster.node(hung_id).signal(Signal::SIGSTOP);

    // The report's input: dead, hung, live.
    let endpoints = format!("{dead},{hung},{live}");
    let start = Instant::now();
    let out = ctl(&endpoints, &["site", "list", "-o", "json"]);
    let took = start.elapsed();
    let shown = stderr(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("warning: {hung} did not answer")),
        "the hung endpoint is named: {shown}"
    );
    assert!(
        took < Duration::from_secs(12),
        "an attempt has its own deadline, well under the call's 15 s: {took:?}"
    );
    let sites: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sites["sites"][0]["name"], "oslo");

    // A write meets the hung node before anything is sent: the kernel takes the TCP connection,
    // but the stopped process never answers the TLS handshake, so the write surely was not
    // sent there and the next endpoint takes it, once. (A write sent on a connection that then
    // gets no answer is reported as an unknown outcome, exit 6:
    // `a_write_whose_answer_is_lost_is_reported_as_an_unknown_outcome_and_never_sent_twice`.)
    let start = Instant::now();
    let out = ctl(
        &format!("{hung},{live}"),
        &["site", "add", "bergen", "--timeout-s", "4", "-o", "json"],
    );
    let shown = stderr(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("warning: {hung} did not answer")),
        "{shown}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    let sites = ok_json(&live, &["site", "list"]);
    let bergen = sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "bergen")
        .count();
    assert_eq!(bergen, 1, "{sites}");
    // A write to a dead endpoint surely was not sent: the next one takes it.
    ok_json(&format!("{dead},{live}"), &["site", "add", "tromso"]);
    // Nobody answers: exit 5.
    let out = ctl(
        &format!("{dead},{hung}"),
        &["site", "list", "--timeout-s", "4"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // The agent's endpoint rotation passes over the hung node the same way.
    ok_json(
        &live,
        &[
            "cluster", "register", "c1", "--site", "oslo", "--env", "staging",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("app/a.conf"), "a\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    ok_json(
        &live,
        &["workload", "create", "web", "--repo", &url, "--path", "app"],
    );
    ok_json(&live, &["release", "publish", "web", &sha]);
    let agent = AgentProcess::start(dir.path(), "c1", &format!("{hung},{live}"), "1s");
    let start = Instant::now();
    while agent.file("web", "a.conf").as_deref() != Some("a\n") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent never reached the live node: {}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.node(hung_id).signal(Signal::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_reported_as_an_unknown_outcome_and_never_sent_twice() {
    let cluster = ProcessCluster::start(3, &["--allow-failpoint-rpc"]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.address(cluster.others(leader)[0]);
    let other = cluster.address(cluster.others(leader)[1]);
    // Every answer of the leader to a forwarded write is lost: the follower the write was sent
    // to has applied it through the leader, but cannot say so.
    fleet_testkit::set_failpoint(&cluster.address(leader), "propose-answer-lost", "return")
        .await
        .unwrap();
    let out = ctl(
        &format!("{follower},{other}"),
        &["site", "add", "bergen", "--timeout-s", "3"],
    );
    let shown = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{shown}");
    assert!(
        shown.contains(&format!("the write was sent to {follower}"))
            && shown.contains("may or may not have been applied")
            && shown.contains("fleet-ctl audit"),
        "{shown}"
    );
    fleet_testkit::set_failpoint(&cluster.address(leader), "propose-answer-lost", "off")
        .await
        .unwrap();
    // It was applied, once: the second endpoint was never tried.
    let audit = ok_json(&cluster.endpoints(), &["audit", "--kind", "add_site"]);
    let bergen = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["command"].to_string().contains("bergen"))
        .count();
    assert_eq!(bergen, 1, "{audit}");
}
