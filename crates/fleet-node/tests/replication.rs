//! Three coordinators as separate OS processes on loopback: acknowledged writes survive SIGKILL
//! of the leader, writes resume within 3 s, and a killed node catches up by log or snapshot.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{add_site, assert_has_all, client, cluster_names, register};
use fleet_api::proto::{ListAuditEventsRequest, ReadConsistency};
use fleet_testkit::{ProcessCluster, set_failpoint};

/// Writes `names` through `address`, returning the names acknowledged and the highest index.
async fn write_all(address: &str, names: &[String]) -> (BTreeSet<String>, u64) {
    let mut c = client(address).await;
    let mut acknowledged = BTreeSet::new();
    let mut max_index = 0;
    for name in names {
        let index = register(&mut c, name, "oslo")
            .await
            .expect("write acknowledged");
        acknowledged.insert(name.clone());
        max_index = max_index.max(index);
    }
    (acknowledged, max_index)
}

async fn assert_node_has(
    cluster: &ProcessCluster,
    id: u64,
    index: u64,
    expected: &BTreeSet<String>,
) {
    cluster
        .wait_for_applied(id, index, Duration::from_secs(20))
        .await;
    let what = format!("node {id}");
    assert_has_all(
        &cluster.address(id),
        ReadConsistency::Stale,
        expected,
        &what,
    )
    .await;
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_through_a_follower_survive_leader_sigkill_and_node_catches_up_by_log()
{
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.others(leader)[0];
    add_site(&mut client(&cluster.address(follower)).await, "oslo")
        .await
        .unwrap();
    let (mut acknowledged, _) = write_all(&cluster.address(follower), &names("before", 30)).await;

    cluster.node(leader).kill();
    let killed_at = Instant::now();
    // Write through the survivors until one write is acknowledged.
    let survivors: Vec<u64> = cluster.others(leader);
    let mut c = client(&cluster.address(follower)).await;
    let first_after = loop {
        match register(&mut c, "after-kill", "oslo").await {
            Ok(index) => break index,
            Err(status) => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(10),
                    "no write after kill: {status}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let recovery = killed_at.elapsed();
    eprintln!("writes resumed {recovery:?} after SIGKILL of leader {leader}");
    assert!(
        recovery < Duration::from_secs(3),
        "writes resumed only after {recovery:?}"
    );
    acknowledged.insert("after-kill".into());
    let other = survivors
        .iter()
        .copied()
        .find(|id| *id != follower)
        .unwrap();
    let (more, index) = write_all(&cluster.address(other), &names("after", 30)).await;
    acknowledged.extend(more);
    let index = index.max(first_after);

    for id in &survivors {
        assert_node_has(&cluster, *id, index, &acknowledged).await;
    }

    cluster.node(leader).restart();
    assert_node_has(&cluster, leader, index, &acknowledged).await;
    let log = cluster.node(leader).log();
    assert!(
        !log.contains("snapshot installed"),
        "expected catch-up by log, log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_catches_up_by_snapshot_after_log_compaction() {
    let mut cluster = ProcessCluster::start(
        3,
        &[
            "--snapshot-after-logs",
            "20",
            "--logs-kept-after-snapshot",
            "0",
        ],
    )
    .await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let lagging = cluster.others(leader)[0];
    add_site(&mut client(&cluster.address(leader)).await, "oslo")
        .await
        .unwrap();
    cluster.node(lagging).kill();

    let (acknowledged, index) = write_all(&cluster.address(leader), &names("compacted", 80)).await;
    // The leader compacts: its snapshot covers entries the lagging node never received.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = cluster.status(leader).await.expect("leader answers");
        if s.snapshot_index >= 60 {
            break;
        }
        assert!(Instant::now() < deadline, "leader built no snapshot: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.node(lagging).restart();
    assert_node_has(&cluster, lagging, index, &acknowledged).await;
    let log = cluster.node(lagging).log();
    assert!(
        log.contains("snapshot installed"),
        "expected catch-up by snapshot, log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_is_visible_to_an_immediate_linearizable_read_on_any_other() {
    let cluster = ProcessCluster::start(3, &[]).await;
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut clients = Vec::new();
    for id in &ids {
        clients.push(client(&cluster.address(*id)).await);
    }
    add_site(&mut clients[0], "oslo").await.unwrap();
    for i in 0..30 {
        let writer = i % 3;
        let reader = (i + 1 + i / 3 % 2) % 3;
        assert_ne!(writer, reader);
        let name = format!("lin-{i}");
        register(&mut clients[writer], &name, "oslo")
            .await
            .expect("write");
        let seen = cluster_names(&mut clients[reader], ReadConsistency::Linearizable)
            .await
            .expect("linearizable read");
        assert!(
            seen.contains(&name),
            "write {name} through node {} not visible to a read through node {}",
            ids[writer],
            ids[reader]
        );
    }
}

/// The `add_site` events for `name` in the audit log, read through `address`.
async fn add_site_events(address: &str, name: &str) -> usize {
    let events = client(address)
        .await
        .list_audit_events(ListAuditEventsRequest {
            kind: "add_site".into(),
            ..Default::default()
        })
        .await
        .expect("audit log")
        .into_inner()
        .events;
    events
        .iter()
        .filter(|e| e.command_json.contains(&format!("\"{name}\"")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_answer_is_lost_is_retried_and_applied_once() {
    let cluster = ProcessCluster::start(3, &["--allow-failpoint-rpc"]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.address(cluster.others(leader)[0]);

    // Every answer of the leader is lost: the follower retries the same write until its
    // deadline, then says the outcome is unknown. The write was applied, and only once.
    set_failpoint(&cluster.address(leader), "propose-answer-lost", "return")
        .await
        .unwrap();
    let started = Instant::now();
    let lost = add_site(&mut client(&follower).await, "bergen")
        .await
        .expect_err("no answer reached the follower");
    assert_eq!(lost.code(), tonic::Code::DeadlineExceeded, "{lost:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the follower gave up after {:?}, before its deadline",
        started.elapsed()
    );
    assert_eq!(add_site_events(&follower, "bergen").await, 1);

    // The first answer is lost, the retry is answered with what the first attempt did.
    set_failpoint(&cluster.address(leader), "propose-answer-lost", "1*return")
        .await
        .unwrap();
    let index = add_site(&mut client(&follower).await, "stavanger")
        .await
        .expect("the retry is answered, not refused as already existing");
    assert!(index > 0);
    assert_eq!(add_site_events(&follower, "stavanger").await, 1);
    // A new write of the same site is a new write, and is refused.
    let again = add_site(&mut client(&follower).await, "stavanger")
        .await
        .expect_err("the site exists");
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
}
