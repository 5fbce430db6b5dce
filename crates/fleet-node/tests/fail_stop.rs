//! Fail-stop: a node whose flush fails (the `log-flush` failpoint, set through FAILPOINTS in a
//! real process) exits with code 74, acknowledges nothing it could not persist, and the others
//! keep serving.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{add_site, assert_has_all, client, register};
use fleet_api::proto::ReadConsistency;
use fleet_coordinator::store::EXIT_STORAGE_FAILURE;
use fleet_testkit::ProcessCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_with_failing_fsync_exits_and_the_others_keep_serving_without_loss() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let failing = cluster.others(leader)[0];
    let healthy = cluster.others(leader)[1];
    let mut c = client(&cluster.address(leader)).await;
    add_site(&mut c, "oslo").await.unwrap();

    cluster.node(failing).kill();
    cluster
        .node(failing)
        .restart_with_env(&[("FAILPOINTS", "log-flush=10*off->return")]);

    let mut acknowledged = BTreeSet::new();
    let started = Instant::now();
    let status = loop {
        let name = format!("w-{}", acknowledged.len());
        register(&mut c, &name, "oslo")
            .await
            .expect("the leader keeps serving");
        acknowledged.insert(name);
        if let Some(status) = cluster.node(failing).exit_status() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the failing node did not stop"
        );
    };
    assert_eq!(
        status.code(),
        Some(EXIT_STORAGE_FAILURE),
        "exit status {status:?}"
    );
    let log = cluster.node(failing).log();
    assert!(
        log.contains("storage failure"),
        "no ERROR about the storage failure:\n{log}"
    );

    // The two others are a majority: writes go on, and nothing acknowledged is missing.
    for i in 0..20 {
        let name = format!("after-{i}");
        register(&mut c, &name, "oslo").await.expect("writes go on");
        acknowledged.insert(name);
    }
    for id in [leader, healthy] {
        let what = format!("node {id}");
        assert_has_all(
            &cluster.address(id),
            ReadConsistency::Linearizable,
            &acknowledged,
            &what,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_with_failing_fsync_acknowledges_nothing_it_could_not_persist() {
    let mut cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);
    add_site(&mut client(&address).await, "bergen")
        .await
        .unwrap();
    cluster.node(1).kill();
    cluster
        .node(1)
        .restart_with_env(&[("FAILPOINTS", "log-flush=15*off->return")]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;

    let mut c = client(&address).await;
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for i in 0..200 {
        let name = format!("w-{i}");
        match register(&mut c, &name, "bergen").await {
            Ok(_) => {
                acknowledged.insert(name);
            }
            Err(_) => {
                refused += 1;
                break;
            }
        }
    }
    assert_eq!(
        refused, 1,
        "the write in flight at the failure must not be acknowledged"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.node(1).exit_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(EXIT_STORAGE_FAILURE));

    cluster.node(1).restart();
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_has_all(
        &address,
        ReadConsistency::Linearizable,
        &acknowledged,
        "after restart",
    )
    .await;
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before the failure"
    );
}
