//! Coordinator nodes that know who they are, and membership changes the openraft way: a node
//! that lost its disk cannot help elect a leader that lacks acknowledged writes, nodes join as
//! learners and become voters once caught up, members can be removed, and the adds that would
//! hurt are refused. Real coordinator processes on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{add_site, client, cluster_names, register};
use fleet_api::proto::{AddCoordinatorRequest, ReadConsistency, RemoveCoordinatorRequest};
use fleet_testkit::ProcessCluster;
use nix::sys::signal::Signal;

/// Members of the leader's membership: (id, voter).
async fn members(cluster: &ProcessCluster) -> Vec<(u64, bool)> {
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let status = cluster.status(leader).await.expect("the leader answers");
    let mut members: Vec<(u64, bool)> = status.members.iter().map(|m| (m.id, m.voter)).collect();
    members.sort();
    members
}

async fn add(
    cluster: &ProcessCluster,
    through: u64,
    id: u64,
    address: &str,
    catch_up_ms: u64,
) -> Result<u64, tonic::Status> {
    let mut c = client(&cluster.address(through)).await;
    c.add_coordinator(AddCoordinatorRequest {
        id,
        address: address.to_string(),
        catch_up_timeout_ms: catch_up_ms,
    })
    .await
    .map(|r| r.into_inner().result.map_or(0, |w| w.log_index))
}

async fn remove(
    cluster: &ProcessCluster,
    through: u64,
    id: u64,
    force: bool,
) -> Result<u64, tonic::Status> {
    let mut c = client(&cluster.address(through)).await;
    c.remove_coordinator(RemoveCoordinatorRequest { id, force })
        .await
        .map(|r| r.into_inner().result.map_or(0, |w| w.log_index))
}

/// The sequence, modelled on the openraft FAQ's warning: node 2 misses an acknowledged
/// write, the only other holder of it (node 3) loses its disk and the leader (node 1) dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_lost_its_disk_cannot_elect_a_stale_leader_and_comes_back_by_remove_and_join()
{
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let first = cluster.address(1);
    let mut c1 = client(&first).await;
    add_site(&mut c1, "oslo").await.unwrap();

    cluster.node(2).signal(Signal::SIGSTOP);
    register(&mut c1, "w-acked", "oslo")
        .await
        .expect("acknowledged by nodes 1 and 3");
    cluster.node(1).kill();
    cluster.node(3).kill();
    cluster.node(3).wipe_data_dir();

    // Node 3 comes back under its old id with an empty data dir: it refuses to start.
    cluster.node(3).restart();
    let status = cluster
        .node(3)
        .wait_exit(Duration::from_secs(20))
        .expect("node 3 refuses to start on an empty data dir");
    assert!(!status.success(), "{status:?}");
    let log = cluster.node(3).log();
    assert!(
        log.contains("is empty") && log.contains("coordinator remove --id 3"),
        "{log}"
    );
    assert!(
        !cluster.node(3).data_dir.join("identity.json").exists(),
        "a refused start writes no identity"
    );

    // Node 2 alone (it never had w-acked) must not lead.
    cluster.node(2).signal(Signal::SIGCONT);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Some(s) = cluster.status(2).await {
            assert_ne!(s.role, "Leader", "node 2 was elected without node 1");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node 1 returns: the acknowledged write is there.
    cluster.node(1).restart();
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut c2 = client(&cluster.address(2)).await;
    let names = cluster_names(&mut c2, ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert!(names.contains("w-acked"), "{names:?}");

    // --join under the old id while the cluster still counts node 3 as a voter: refused
    // before the node serves anything.
    cluster.node(3).restart_with_args(&["--join", &first], &[]);
    let status = cluster
        .node(3)
        .wait_exit(Duration::from_secs(20))
        .expect("a join under an id still in use is refused");
    assert!(!status.success());
    let log = cluster.node(3).log();
    assert!(
        log.contains("still a member") && log.contains("coordinator remove --id 3"),
        "{log}"
    );
    assert!(!cluster.node(3).data_dir.join("identity.json").exists());

    // The documented recovery: remove node 3 from a healthy member, then --join.
    remove(&cluster, 2, 3, false).await.expect("node 3 removed");
    assert_eq!(members(&cluster).await, vec![(1, true), (2, true)]);
    cluster.node(3).restart_with_args(&["--join", &first], &[]);
    cluster.wait_for_voters(3, Duration::from_secs(60)).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let applied = cluster.status(leader).await.unwrap().applied_index;
    cluster
        .wait_for_applied(3, applied, Duration::from_secs(20))
        .await;
    let mut c3 = client(&cluster.address(3)).await;
    let names = cluster_names(&mut c3, ReadConsistency::Stale)
        .await
        .unwrap();
    assert!(
        names.contains("w-acked"),
        "node 3 has every entry: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_never_catches_up_stays_a_learner_and_writes_go_on_with_a_voter_down() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let first = cluster.address(1);
    let mut c1 = client(&first).await;
    add_site(&mut c1, "oslo").await.unwrap();

    // Node 4 answers as itself but cannot persist what it is sent, so it never catches up.
    cluster.spawn_node(
        4,
        &["--join", &first],
        &[("FAILPOINTS", "log-flush=sleep(600000)")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members(&cluster).await.contains(&(4, false)) {
        assert!(Instant::now() < deadline, "node 4 never became a learner");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        members(&cluster).await.contains(&(4, false)),
        "a node that has not caught up is not a voter"
    );

    // One of the three voters stops: the learner does not count, a quorum is left.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let stopped = cluster.others(leader)[0];
    cluster.node(stopped).kill();
    let mut c = client(&cluster.address(leader)).await;
    for i in 0..5 {
        register(&mut c, &format!("w{i}"), "oslo")
            .await
            .expect("writes go on with 2 of 3 voters");
    }

    // The learner can be removed.
    remove(&cluster, leader, 4, false)
        .await
        .expect("a learner is removed");
    assert!(!members(&cluster).await.iter().any(|(id, _)| *id == 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_a_voter_once_caught_up_and_a_member_can_be_removed() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let first = cluster.address(1);
    let mut c1 = client(&first).await;
    add_site(&mut c1, "oslo").await.unwrap();
    for i in 0..20 {
        register(&mut c1, &format!("c{i}"), "oslo").await.unwrap();
    }
    cluster.spawn_node(4, &["--join", &first], &[]);
    cluster.wait_for_voters(4, Duration::from_secs(60)).await;
    let mut c4 = client(&cluster.address(4)).await;
    let names = cluster_names(&mut c4, ReadConsistency::Stale)
        .await
        .unwrap();
    assert_eq!(names.len(), 20, "a voter has caught up first: {names:?}");

    // Remove a voter: three voters remain and writes go on.
    remove(&cluster, 4, 2, false).await.expect("node 2 removed");
    assert_eq!(
        members(&cluster).await,
        vec![(1, true), (3, true), (4, true)]
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let mut c = client(&cluster.address(leader)).await;
    register(&mut c, "after-remove", "oslo").await.unwrap();

    register(&mut c, "after-remove-2", "oslo").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_of_a_used_id_a_used_address_or_an_address_that_does_not_answer_are_refused() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let before = members(&cluster).await;
    let second = cluster.address(2);

    // An id in use, with a new address.
    let refused = add(&cluster, 1, 2, "127.0.0.1:1", 1000).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains("already a voter"), "{refused:?}");
    // A new id with a member's address.
    let refused = add(&cluster, 1, 6, &second, 1000).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("address of node 2"),
        "{refused:?}"
    );
    // Nothing answers at the address.
    let nothing = format!("127.0.0.1:{}", fleet_testkit::free_port());
    let refused = add(&cluster, 1, 4, &nothing, 1000).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("nothing answers"), "{refused:?}");

    // A node started with a mistyped --advertise: its join is refused and it stops.
    let first = cluster.address(1);
    let wrong = format!("127.0.0.1:{}", fleet_testkit::free_port());
    let node = cluster.spawn_node(5, &["--join", &first, "--advertise", &wrong], &[]);
    let status = node
        .wait_exit(Duration::from_secs(30))
        .expect("a join with a wrong advertised address stops the node");
    assert!(!status.success());
    assert!(
        node.log().contains("nothing answers as node 5"),
        "{}",
        node.log()
    );

    assert_eq!(
        members(&cluster).await,
        before,
        "no refused add changed the membership"
    );

    // A removal that would leave no reachable quorum is refused unless forced.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let others = cluster.others(leader);
    cluster.node(others[0]).kill();
    let refused = remove(&cluster, leader, others[1], false)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("quorum"), "{refused:?}");
    assert_eq!(members(&cluster).await, before);
}
