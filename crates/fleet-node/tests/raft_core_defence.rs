//! The layer beneath peer authentication: a Raft message no real peer could send is refused
//! before openraft sees it, and a Raft core that dies (a panic) takes its process with it,
//! exit code 75, instead of leaving a live process that serves a dead node's state. Real
//! coordinator processes on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{add_site, client};
use fleet_api::proto::RaftPayload;
use fleet_api::proto::raft_service_client::RaftServiceClient;
use fleet_coordinator::serve::EXIT_RAFT_FATAL;
use fleet_coordinator::types::TypeConfig;
use fleet_testkit::ProcessCluster;
use openraft::Vote;
use openraft::raft::{AppendEntriesRequest, VoteRequest};

/// A Raft message naming `from_node` of `cluster_id` as its sender.
fn payload<T: serde::Serialize>(rpc: &T, cluster_id: &str, from_node: u64) -> RaftPayload {
    RaftPayload {
        json: serde_json::to_vec(rpc).unwrap(),
        cluster_id: cluster_id.to_string(),
        from_node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_messages_with_an_impossible_term_or_from_another_cluster_or_a_non_member_are_refused_and_writes_go_on()
 {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.others(leader)[0];
    // The forger holds a certificate of a member (the leader's id): these checks are what is
    // left when a member's key is stolen or a member misbehaves.
    let leader_cert = fleet_testkit::pki().issue(
        &fleet_core::Principal::Coordinator(leader),
        &["127.0.0.1".to_string()],
        "forger",
    );
    let as_leader = fleet_testkit::pki().transport_as(&leader_cert);
    let mut raft = RaftServiceClient::new(
        fleet_testkit::channel_as(&cluster.address(follower), &as_leader)
            .await
            .unwrap(),
    );
    let cluster_id = cluster.status(leader).await.unwrap().cluster_id;
    assert_eq!(cluster_id.len(), 32, "{cluster_id:?}");
    // The term openraft would overflow on (`u64::MAX`), in the leader's name.
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(u64::MAX, leader),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let refused = raft
        .append_entries(payload(&append, &cluster_id, leader))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("term"), "{refused:?}");
    // Below the absolute cap, but a million elections ahead of the cluster.
    let vote = VoteRequest::<u64> {
        vote: Vote::new(1 << 40, leader),
        last_log_id: None,
    };
    let refused = raft
        .vote(payload(&vote, &cluster_id, leader))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // A plausible term, from another cluster.
    let current = cluster.status(leader).await.unwrap().term;
    let vote = VoteRequest::<u64> {
        vote: Vote::new(current + 1, leader),
        last_log_id: None,
    };
    let refused = raft
        .vote(payload(&vote, "0123456789abcdef0123456789abcdef", leader))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("cluster"), "{refused:?}");
    // A plausible term, in this cluster's name, from a node that is no member (with a
    // certificate of the fleet's CA for that node).
    let stranger = fleet_testkit::pki().issue(
        &fleet_core::Principal::Coordinator(99),
        &["127.0.0.1".to_string()],
        "stranger",
    );
    let mut stranger = RaftServiceClient::new(
        fleet_testkit::channel_as(
            &cluster.address(follower),
            &fleet_testkit::pki().transport_as(&stranger),
        )
        .await
        .unwrap(),
    );
    let refused = stranger
        .append_entries(payload(
            &AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(current + 1, 99),
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            },
            &cluster_id,
            99,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("node 99 is not a member"),
        "{refused:?}"
    );

    // Nothing changed: every node runs, the leader is a member, writes go on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        assert!(cluster.node(id).is_running(), "node {id} stopped");
    }
    let now = cluster.wait_for_leader(Duration::from_secs(10)).await;
    assert!((1..=3).contains(&now), "leader {now}");
    let mut c = client(&cluster.address(now)).await;
    add_site(&mut c, "oslo").await.expect("writes go on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_raft_core_ends_the_process_with_exit_code_75() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let doomed = cluster.others(leader)[0];
    // Test-only failpoint: the next vote this node persists panics inside openraft's core
    // (save_vote runs on the core task).
    cluster.node(doomed).kill();
    cluster
        .node(doomed)
        .restart_with_env(&[("FAILPOINTS", "vote-flush=panic")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // An election makes every surviving node persist a new vote.
    cluster.node(leader).kill();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = cluster.node(doomed).exit_status() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node with a dead raft core is still running:\n{}",
            cluster.node(doomed).log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.code(),
        Some(EXIT_RAFT_FATAL),
        "exit status {status:?}"
    );
    let log = cluster.node(doomed).log();
    assert!(log.contains("raft core is gone"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_vote_with_an_impossible_term_is_refused_at_start_with_the_way_to_recover() {
    let mut cluster = ProcessCluster::start(1, &[]).await;
    cluster.node(1).kill();
    {
        // As a node that accepted such a vote before terms were capped would have stored it.
        let db = fleet_coordinator::store::open_db(&cluster.node(1).data_dir).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            "vote",
            serde_json::to_vec(&Vote::new(u64::MAX, 99u64)).unwrap(),
        )
        .unwrap();
        db.flush().unwrap();
    }
    cluster.node(1).restart();
    let status = cluster
        .node(1)
        .wait_exit(Duration::from_secs(20))
        .expect("the node refuses to start");
    assert!(!status.success(), "{status:?}");
    let log = cluster.node(1).log();
    assert!(
        log.contains("stored vote has term") && log.contains("coordinator remove --id 1"),
        "{log}"
    );
}
