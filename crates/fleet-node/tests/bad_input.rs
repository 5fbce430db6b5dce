//! Bad input through gRPC against a real coordinator process: the right status code, a message
//! naming the field, a hint, and no change to the state or the log.

mod common;

use std::time::Duration;

use common::{add_site, client, register};
use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::*;
use fleet_api::status::HINT_METADATA;
use fleet_testkit::ProcessCluster;
use tonic::Code;
use tonic::transport::Channel;

/// Everything a client can see of the state, plus the node's last log index.
async fn snapshot(c: &mut FleetServiceClient<Channel>) -> (String, u64) {
    let sites = c
        .list_sites(ListSitesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let clusters = c
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let workloads = c
        .list_workloads(ListWorkloadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let status = c
        .get_status(GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let raft = c
        .get_coordinator_status(GetCoordinatorStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (
        format!("{sites:?}{clusters:?}{workloads:?}{status:?}"),
        raft.last_log_index,
    )
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, words: &[&str]) {
    let status = result.expect_err("bad input must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for word in words {
        assert!(
            status.message().contains(word),
            "message {:?} does not name {word:?}",
            status.message()
        );
    }
    assert!(
        status.metadata().get(HINT_METADATA).is_some(),
        "no hint in {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_named_and_changes_nothing() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let mut c = client(&cluster.address(1)).await;
    add_site(&mut c, "oslo").await.unwrap();
    register(&mut c, "web-1", "oslo").await.unwrap();
    c.create_workload(CreateWorkloadRequest {
        name: "web".into(),
        repo_url: "https://git.example.no/web.git".into(),
        path_template: "overlays/{environment}".into(),
        reason: String::new(),
    })
    .await
    .unwrap();
    let before = snapshot(&mut c).await;

    // Malformed SHA.
    let r = c
        .publish_release(PublishReleaseRequest {
            workload: "web".into(),
            revision: "main".into(),
            reason: String::new(),
            allow_rejected: false,
            override_freeze: false,
        })
        .await;
    assert_refused(r, Code::InvalidArgument, &["revision", "40 hex"]);
    let r = c
        .publish_release(PublishReleaseRequest {
            workload: "web".into(),
            revision: "3f2a00000000000000000000000000000000000z".into(),
            reason: String::new(),
            allow_rejected: false,
            override_freeze: false,
        })
        .await;
    assert_refused(r, Code::InvalidArgument, &["revision"]);

    // Unknown site, unknown workload, unknown cluster.
    assert_refused(
        register(&mut c, "web-2", "tromso").await,
        Code::NotFound,
        &["site", "tromso"],
    );
    let r = c
        .publish_release(PublishReleaseRequest {
            workload: "api".into(),
            revision: "3f2a000000000000000000000000000000000001".into(),
            reason: String::new(),
            allow_rejected: false,
            override_freeze: false,
        })
        .await;
    assert_refused(r, Code::NotFound, &["workload", "api"]);
    let r = c
        .get_cluster(GetClusterRequest {
            name: "nope".into(),
            consistency: 0,
        })
        .await;
    assert_refused(r, Code::NotFound, &["cluster", "nope"]);

    // Duplicate cluster.
    assert_refused(
        register(&mut c, "web-1", "oslo").await,
        Code::AlreadyExists,
        &["cluster", "web-1"],
    );

    // Over-limit: too many labels, an overlong name, an oversized reason.
    let r = c
        .register_cluster(RegisterClusterRequest {
            name: "web-3".into(),
            site: "oslo".into(),
            environment: "staging".into(),
            labels: (0..33)
                .map(|i| (format!("k{i}"), "v".to_string()))
                .collect(),
            reason: String::new(),
        })
        .await;
    assert_refused(r, Code::InvalidArgument, &["labels", "limit of 32"]);
    let long_name = "a".repeat(64);
    assert_refused(
        register(&mut c, &long_name, "oslo").await,
        Code::InvalidArgument,
        &["name", "limit of 63"],
    );
    let r = c
        .add_site(AddSiteRequest {
            name: "tromso".into(),
            reason: "x".repeat(2000),
        })
        .await;
    assert_refused(r, Code::InvalidArgument, &["reason", "limit of 1024"]);

    // Over the request size limit (1 MiB): refused by the transport before any handler runs.
    let r = c
        .add_site(AddSiteRequest {
            name: "tromso".into(),
            reason: "x".repeat(2 << 20),
        })
        .await;
    let status = r.expect_err("an oversized request must be refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Nothing changed: same state, and no refused command reached the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(snapshot(&mut c).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_through_a_follower_is_refused_like_on_the_leader() {
    let cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.others(leader)[0];
    let mut c = client(&cluster.address(follower)).await;
    add_site(&mut c, "oslo").await.unwrap();
    register(&mut c, "web-1", "oslo").await.unwrap();
    let before = snapshot(&mut c).await;
    assert_refused(
        register(&mut c, "web-1", "oslo").await,
        Code::AlreadyExists,
        &["web-1"],
    );
    assert_refused(
        register(&mut c, "web-2", "narvik").await,
        Code::NotFound,
        &["site", "narvik"],
    );
    assert_eq!(snapshot(&mut c).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_registrations_admit_exactly_one() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);
    add_site(&mut client(&address).await, "oslo").await.unwrap();
    // Many writers at once, so that several of them share one log entry.
    let mut writers = Vec::new();
    for i in 0..32 {
        let address = address.clone();
        writers.push(tokio::spawn(async move {
            let mut c = client(&address).await;
            let unique = register(&mut c, &format!("unique-{i}"), "oslo").await;
            let contended = register(&mut c, "contended", "oslo").await;
            (unique.is_ok(), contended.map_err(|s| s.code()))
        }));
    }
    let mut admitted = 0;
    for writer in writers {
        let (unique_ok, contended) = writer.await.unwrap();
        assert!(unique_ok, "a unique registration was refused");
        match contended {
            Ok(_) => admitted += 1,
            Err(code) => assert_eq!(code, Code::AlreadyExists),
        }
    }
    assert_eq!(
        admitted, 1,
        "exactly one registration of the same name is admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_refused_by_a_node_that_has_lost_its_quorum() {
    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let survivor = cluster.others(leader)[0];
    let mut c = client(&cluster.address(survivor)).await;
    add_site(&mut c, "oslo").await.unwrap();
    for id in [1, 2, 3] {
        if id != survivor {
            cluster.node(id).kill();
        }
    }
    // Malformed fields do not depend on the state: refused as such, with no leader to ask.
    assert_refused(
        register(&mut c, "Web_1", "oslo").await,
        Code::InvalidArgument,
        &["name", "Web_1"],
    );
    let r = c
        .publish_release(PublishReleaseRequest {
            workload: "web".into(),
            revision: "main".into(),
            reason: String::new(),
            allow_rejected: false,
            override_freeze: false,
        })
        .await;
    assert_refused(r, Code::InvalidArgument, &["revision", "40 hex"]);
    // A well-formed write needs the leader, and there is none.
    let status = register(&mut c, "web-1", "oslo")
        .await
        .expect_err("no write can be committed without a quorum");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[test]
fn an_address_flag_that_is_not_host_port_is_refused_with_a_message_not_a_panic() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let cases: [&[&str]; 3] = [
        &[
            "coordinator",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--join",
            "a b",
        ],
        &[
            "agent",
            "--cluster",
            "c",
            "--endpoints",
            "127.0.0.1:7400,a b",
            "--target",
            "files:/nonexistent",
            "--state-dir",
            data_dir,
        ],
        &[
            "coordinator",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--join",
            "127.0.0.1",
        ],
    ];
    for args in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-node"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not HOST:PORT") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("--join") || stderr.contains("--endpoints"),
            "the flag is named: {stderr}"
        );
    }
    // Nothing was written for the refused start.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}
