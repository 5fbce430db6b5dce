//! Who may call what, over real mutual TLS to real coordinator processes: every request needs a
//! certificate of the fleet's CA that is valid now and names a SPIFFE ID of the trust domain;
//! RaftService serves member coordinators only, each in its own name; plaintext exists only
//! on loopback and only when asked for.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{add_site, client};
use fleet_api::proto::agent_service_client::AgentServiceClient;
use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::promotion_service_client::PromotionServiceClient;
use fleet_api::proto::raft_service_client::RaftServiceClient;
use fleet_api::proto::*;
use fleet_core::{Principal, TrustDomain};
use fleet_identity::pki::{Ca, Validity};
use fleet_identity::{Transport, Trust};
use fleet_testkit::{ProcessCluster, channel_as, fleet_node_binary, free_port, pki};
use tonic::Code;
use tonic::transport::Channel;

/// A channel to `address` that presents no client certificate.
async fn without_certificate(address: &str) -> Channel {
    let trust = Trust::load(&pki().ca_path(), None).unwrap();
    channel_as(address, &Transport::tls(&trust, None).unwrap())
        .await
        .unwrap()
}

/// A channel to `address` that presents the certificate `files`.
async fn as_holder_of(address: &str, files: &fleet_identity::TlsFiles) -> Channel {
    channel_as(address, &pki().transport_as(files))
        .await
        .unwrap()
}

/// Asserts UNAUTHENTICATED whose message contains `says`.
fn assert_unauthenticated<T: std::fmt::Debug>(result: Result<T, tonic::Status>, says: &str) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
    assert!(
        fleet_api::status::hint(&status).is_some(),
        "a refusal says what to do: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_certificate_or_with_a_foreign_or_expired_one_are_unauthenticated() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);

    // No certificate: every service refuses, before any handler runs.
    let bare = without_certificate(&address).await;
    assert_unauthenticated(
        FleetServiceClient::new(bare.clone())
            .add_site(AddSiteRequest {
                name: "oslo".into(),
                reason: String::new(),
            })
            .await,
        "no client certificate",
    );
    assert_unauthenticated(
        FleetServiceClient::new(bare.clone())
            .list_sites(ListSitesRequest::default())
            .await,
        "no client certificate",
    );
    assert_unauthenticated(
        AgentServiceClient::new(bare.clone())
            .get_assignments(GetAssignmentsRequest {
                cluster: "c1".into(),
            })
            .await,
        "no client certificate",
    );
    assert_unauthenticated(
        PromotionServiceClient::new(bare.clone())
            .list_freezes(ListFreezesRequest::default())
            .await,
        "no client certificate",
    );
    assert_unauthenticated(
        RaftServiceClient::new(bare)
            .identify(IdentifyRequest {})
            .await,
        "no client certificate",
    );

    // A certificate from another CA, with the same trust domain and the same SPIFFE ID.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = Ca::generate(&TrustDomain::default()).unwrap();
    let (cert, key) = other_ca
        .issue(
            &Principal::Operator("admin".into()),
            &[],
            Validity::from_now(Duration::from_secs(3600)),
        )
        .unwrap()
        .write(dir.path(), "impostor")
        .unwrap();
    let impostor = fleet_identity::TlsFiles {
        ca: pki().ca_path(),
        cert,
        key,
    };
    let mut c = FleetServiceClient::new(as_holder_of(&address, &impostor).await);
    assert_unauthenticated(
        c.add_site(AddSiteRequest {
            name: "oslo".into(),
            reason: String::new(),
        })
        .await,
        "not issued by a CA of trust domain fleet.local",
    );

    // An expired certificate of the right CA.
    let now = Validity::from_now(Duration::ZERO).not_after_s;
    let expired = pki().issue_with(
        &Principal::Operator("kari".into()),
        &[],
        "expired",
        Validity {
            not_before_s: now - 7200,
            not_after_s: now - 60,
        },
    );
    let mut c = FleetServiceClient::new(as_holder_of(&address, &expired).await);
    assert_unauthenticated(
        c.add_site(AddSiteRequest {
            name: "oslo".into(),
            reason: String::new(),
        })
        .await,
        "expired",
    );

    // None of it changed anything.
    let mut admin = client(&address).await;
    let sites = admin
        .list_sites(ListSitesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(sites.sites.is_empty(), "{sites:?}");
    let audit = admin
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Only the bootstrap admin's binding, by the coordinator at --bootstrap.
    assert_eq!(audit.events.len(), 1, "{audit:?}");
    assert_eq!(audit.events[0].kind, "bind_role", "{audit:?}");
    assert_eq!(audit.events[0].actor, "coordinator:1", "{audit:?}");

    // A plaintext client gets no gRPC answer at all from a TLS node.
    let plain = channel_as(&address, &Transport::Plaintext).await;
    let answered = match plain {
        Ok(channel) => FleetServiceClient::new(channel)
            .list_sites(ListSitesRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a TLS node answered a plaintext call");
}

fn raft_payload(cluster_id: &str, from_node: u64, json: &serde_json::Value) -> RaftPayload {
    RaftPayload {
        json: serde_json::to_vec(json).unwrap(),
        cluster_id: cluster_id.into(),
        from_node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_coordinators_that_are_not_members_are_denied_raft_and_nothing_changes() {
    let cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let follower = cluster.others(leader)[0];
    let address = cluster.address(follower);
    let mut admin = client(&cluster.address(leader)).await;
    add_site(&mut admin, "oslo").await.unwrap();
    let before = cluster.status(leader).await.unwrap();
    let status = before.clone();
    let cluster_id = status.cluster_id.clone();
    let vote = serde_json::json!({"leader_id": {"term": status.term + 1, "node_id": leader}, "committed": true});
    let append = serde_json::json!({"vote": vote, "prev_log_id": null, "entries": [], "leader_commit": null});
    let election = serde_json::json!({"vote": {"leader_id": {"term": status.term + 1, "node_id": leader}, "committed": false}, "last_log_id": null});

    let mut callers: Vec<(String, RaftServiceClient<Channel>, u64)> = Vec::new();
    // An operator: the admin of the fleet itself, signing as the leader.
    callers.push((
        "operator admin".into(),
        RaftServiceClient::new(fleet_testkit::channel(&address).await.unwrap()),
        leader,
    ));
    // A coordinator of the fleet's CA that is not a member.
    let stranger = pki().issue(
        &Principal::Coordinator(9),
        &["127.0.0.1".into()],
        "coordinator-9",
    );
    callers.push((
        "coordinator 9".into(),
        RaftServiceClient::new(as_holder_of(&address, &stranger).await),
        9,
    ));
    // A member that signs in another member's name.
    let member = pki().issue(
        &Principal::Coordinator(follower),
        &["127.0.0.1".into()],
        "member",
    );
    callers.push((
        format!("coordinator {follower} as {leader}"),
        RaftServiceClient::new(as_holder_of(&address, &member).await),
        leader,
    ));
    // An agent.
    let agent = pki().issue(&Principal::Cluster("c1".into()), &[], "cluster-c1");
    callers.push((
        "the agent of c1".into(),
        RaftServiceClient::new(as_holder_of(&address, &agent).await),
        leader,
    ));

    for (who, mut raft, from) in callers {
        let denied = |what: &str, result: Result<tonic::Response<RaftPayload>, tonic::Status>| {
            let status = result.expect_err(&format!("{who}: {what} must be refused"));
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{who}: {what}: {status:?}"
            );
            assert!(status.message().contains("nothing changed"), "{status:?}");
        };
        denied(
            "AppendEntries",
            raft.append_entries(raft_payload(&cluster_id, from, &append))
                .await,
        );
        denied(
            "Vote",
            raft.vote(raft_payload(&cluster_id, from, &election)).await,
        );
        denied(
            "InstallSnapshot",
            raft.install_snapshot(InstallSnapshotChunk {
                cluster_id: cluster_id.clone(),
                from_node: from,
                vote_json: serde_json::to_vec(&vote).unwrap(),
                meta_json: b"{}".to_vec(),
                offset: 0,
                data: vec![0; 1600],
                done: true,
            })
            .await,
        );
        denied(
            "Propose",
            raft.propose(raft_payload(
                &cluster_id,
                from,
                &serde_json::json!({"command": {"add_site": {"name": "forged"}}, "actor": "planner", "reason": ""}),
            ))
            .await,
        );
        denied(
            "TakeLeadership",
            raft.take_leadership(raft_payload(&cluster_id, from, &serde_json::json!({})))
                .await,
        );
    }

    // Nothing changed: the same leader in the same term, the same log, no forged site.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cluster.status(leader).await.unwrap();
    assert_eq!(after.leader_id, before.leader_id);
    assert_eq!(after.term, before.term);
    assert_eq!(after.members, before.members);
    let sites = admin
        .list_sites(ListSitesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = sites.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["oslo"]);
}

/// Runs `fleet-node coordinator` with `args` and returns its exit status and output; it must
/// exit by itself within 20 s.
fn start_refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(fleet_node_binary())
        .arg("coordinator")
        .args(["--id", "1", "--bootstrap", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status, text);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fleet-node {args:?} did not exit by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_without_tls_starts_only_on_loopback_and_only_when_asked() {
    let port = free_port();
    // On every address of the machine: refused, with the reason and the way out.
    let (status, text) = start_refused(&[
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--insecure-plaintext",
    ]);
    assert!(!status.success());
    assert!(
        text.contains("only allowed when every address is loopback") && text.contains("--tls-cert"),
        "{text}"
    );
    // On loopback, but advertised elsewhere: refused too.
    let (status, text) = start_refused(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--advertise",
        &format!("10.1.2.3:{port}"),
        "--insecure-plaintext",
    ]);
    assert!(!status.success());
    assert!(text.contains("10.1.2.3"), "{text}");
    // Neither TLS nor --insecure-plaintext: a usage error naming the TLS flags.
    let (status, text) = start_refused(&["--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("--tls-cert"), "{text}");
    // Another node's certificate: refused, naming whose it is.
    let other = pki().issue(&Principal::Coordinator(2), &["127.0.0.1".into()], "node-2");
    let (status, text) = start_refused(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--tls-cert",
        other.cert.to_str().unwrap(),
        "--tls-key",
        other.key.to_str().unwrap(),
        "--tls-ca",
        other.ca.to_str().unwrap(),
    ]);
    assert!(!status.success());
    assert!(text.contains("not coordinator 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_node_on_loopback_serves_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(fleet_node_binary())
        .arg("coordinator")
        .args(["--id", "1", "--bootstrap", "--listen", &address])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--insecure-plaintext")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = None;
    for _ in 0..200 {
        if let Ok(channel) = channel_as(&address, &Transport::Plaintext).await
            && let Ok(r) = FleetServiceClient::new(channel)
                .add_site(AddSiteRequest {
                    name: "oslo".into(),
                    reason: String::new(),
                })
                .await
        {
            answered = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered.is_some(), "the plaintext node never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_and_reports_only_its_own_cluster_and_nobody_else_reports_for_it() {
    let cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);
    let mut admin = client(&address).await;
    add_site(&mut admin, "oslo").await.unwrap();
    common::register(&mut admin, "a", "oslo").await.unwrap();
    common::register(&mut admin, "b", "oslo").await.unwrap();
    let agent_a = pki().issue(&Principal::Cluster("a".into()), &[], "cluster-a");
    let mut as_a = AgentServiceClient::new(as_holder_of(&address, &agent_a).await);
    let denied = |what: &str, status: tonic::Status| {
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(
            fleet_api::status::hint(&status).is_some(),
            "{what}: {status:?}"
        );
    };

    // Its own cluster: read, watch and report.
    as_a.get_assignments(GetAssignmentsRequest {
        cluster: "a".into(),
    })
    .await
    .unwrap();
    as_a.watch_assignments(WatchAssignmentsRequest {
        cluster: "a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    as_a.report_status(ReportStatusRequest {
        cluster: "a".into(),
        reports: Vec::new(),
    })
    .await
    .unwrap();

    // Another cluster: nothing.
    denied(
        "GetAssignments b",
        as_a.get_assignments(GetAssignmentsRequest {
            cluster: "b".into(),
        })
        .await
        .unwrap_err(),
    );
    denied(
        "WatchAssignments b",
        as_a.watch_assignments(WatchAssignmentsRequest {
            cluster: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    denied(
        "ReportStatus b",
        as_a.report_status(ReportStatusRequest {
            cluster: "b".into(),
            reports: Vec::new(),
        })
        .await
        .unwrap_err(),
    );
    // Operators read any cluster, but report for none.
    let mut as_admin = AgentServiceClient::new(fleet_testkit::channel(&address).await.unwrap());
    as_admin
        .get_assignments(GetAssignmentsRequest {
            cluster: "b".into(),
        })
        .await
        .unwrap();
    denied(
        "ReportStatus by an operator",
        as_admin
            .report_status(ReportStatusRequest {
                cluster: "a".into(),
                reports: Vec::new(),
            })
            .await
            .unwrap_err(),
    );
}
