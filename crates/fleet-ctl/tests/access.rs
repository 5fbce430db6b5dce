//! Roles and tokens, through the real `fleet-ctl` against a real coordinator over mutual TLS.

mod common;

use std::process::{Command, Output};

use fleet_testkit::ProcessCluster;

use common::{ctl, ctl_as, ok_json, ok_json_as, operator};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// fleet-ctl with a bearer token and the test CA (no certificate, no config file).
fn ctl_with_token(token: &str, endpoints: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-ctl"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env_remove("FLEET_CERT")
        .env_remove("FLEET_KEY")
        .env_remove("FLEET_CONTEXT")
        .env("FLEET_CA", fleet_testkit::pki().ca_path())
        .env("FLEET_CONFIG", "/nonexistent/fleet-test-config.yaml")
        .env("FLEET_TOKEN", token)
        .output()
        .expect("run fleet-ctl")
}

/// Waits (at most 10 s) for an open watch stream to end UNAUTHENTICATED for a revocation.
async fn ends_as_revoked(stream: &mut tonic::Streaming<fleet_api::proto::AssignmentSet>) {
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends within 10 s of the revocation")
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("revoked"), "{ended:?}");
}

/// A fleet with clusters stg-1 and prod-1 and workloads web and api (web soaks 0 s).
async fn fleet() -> (ProcessCluster, String) {
    let cluster = ProcessCluster::start(1, &[]).await;
    let ep = cluster.endpoints();
    ok_json(&ep, &["site", "add", "oslo"]);
    for (name, environment) in [("stg-1", "staging"), ("prod-1", "production")] {
        ok_json(
            &ep,
            &[
                "cluster",
                "register",
                name,
                "--site",
                "oslo",
                "--env",
                environment,
            ],
        );
    }
    for workload in ["web", "api"] {
        ok_json(
            &ep,
            &[
                "workload",
                "create",
                workload,
                "--repo",
                &format!("https://git.example/{workload}.git"),
                "--path",
                "overlays/{environment}",
            ],
        );
    }
    ok_json(
        &ep,
        &[
            "pipeline",
            "set",
            "web",
            "--environments",
            "staging,production",
            "--soak",
            "0s",
        ],
    );
    (cluster, ep)
}

/// A report that web runs `revision` Synced and Healthy on cluster `cluster`, signed with the
/// certificate of cluster `signer` (its agent's own, or another's: a forgery).
async fn report_healthy(
    address: &str,
    signer: &str,
    cluster: &str,
    revision: &str,
) -> Result<(), tonic::Status> {
    use fleet_api::proto::{HealthState, ReportStatusRequest, StatusReport, SyncState};
    let cert = fleet_testkit::pki().issue(
        &fleet_core::Principal::Cluster(signer.into()),
        &[],
        &format!("cluster-{signer}"),
    );
    let channel = fleet_testkit::channel_as(address, &fleet_testkit::pki().transport_as(&cert))
        .await
        .unwrap();
    let mut agent = fleet_api::proto::agent_service_client::AgentServiceClient::new(channel);
    agent
        .report_status(ReportStatusRequest {
            cluster: cluster.into(),
            reports: vec![StatusReport {
                workload: "web".into(),
                applied_revision: revision.into(),
                desired_revision: revision.into(),
                assignment_version: 1,
                sync: SyncState::Synced as i32,
                health: HealthState::Healthy as i32,
                ..Default::default()
            }],
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoter_for_staging_only_is_denied_production_until_it_is_bound_there() {
    let (cluster, ep) = fleet().await;
    let kari = operator("kari");

    // No role: not even a read.
    let out = ctl_as(&kari, &ep, &["site", "list"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kari may not read the fleet"),
        "{}",
        stderr(&out)
    );

    ok_json(
        &ep,
        &["role", "bind", "kari", "publisher", "--workload", "web"],
    );
    ok_json(
        &ep,
        &[
            "role",
            "bind",
            "spiffe://fleet.local/operator/kari",
            "promoter",
            "--env",
            "staging",
        ],
    );
    ok_json_as(&kari, &ep, &["release", "publish", "web", A]);
    let promote = ["promote", "web", "--to", "production", "--revision", A];

    // A Healthy report for stg-1 signed with prod-1's certificate is refused and moves no gate.
    let forged = report_healthy(&cluster.address(1), "prod-1", "stg-1", A)
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    let out = ctl(&ep, &promote);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stg-1: no report yet"),
        "{}",
        stderr(&out)
    );

    // stg-1's own agent reports it.
    report_healthy(&cluster.address(1), "stg-1", "stg-1", A)
        .await
        .unwrap();
    let out = ctl_as(&kari, &ep, &promote);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let shown = stderr(&out);
    assert!(
        shown.contains("kari may not promote: that needs role promoter for environment production")
            && shown.contains("promoter (environments staging)")
            && shown.contains("fleet-ctl role bind kari"),
        "{shown}"
    );
    assert!(
        ok_json(&ep, &["audit", "--kind", "promote"])["events"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a refused promotion leaves nothing"
    );

    // Bound for production too (binding again replaces the scope): accepted, audited as kari.
    ok_json(
        &ep,
        &[
            "role",
            "bind",
            "kari",
            "promoter",
            "--env",
            "staging",
            "--env",
            "production",
        ],
    );
    ok_json_as(&kari, &ep, &promote);
    let promoted = ok_json(&ep, &["audit", "--kind", "promote"]);
    assert_eq!(promoted["events"][0]["actor"], "kari", "{promoted}");

    let roles = ok_json_as(&kari, &ep, &["role", "list"]);
    let rows = roles["bindings"].as_array().unwrap();
    assert!(
        rows.iter().any(|b| b["principal"] == "kari"
            && b["role"] == "promoter"
            && b["environments"] == serde_json::json!(["production", "staging"])),
        "{roles}"
    );
    assert!(
        rows.iter().any(|b| b["principal"] == "admin"
            && b["role"] == "admin"
            && b["granted_by"] == "coordinator:1"),
        "{roles}"
    );

    // kari may not hand out roles or change the coordinators, and the last admin stays.
    let out = ctl_as(&kari, &ep, &["role", "bind", "kari", "admin"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = ctl_as(&kari, &ep, &["coordinator", "remove", "--id", "1"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kari may not remove_coordinator: that needs role admin"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&ep, &["role", "unbind", "admin", "admin"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("last admin"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_token_publishes_its_workload_only_and_is_unauthenticated_once_revoked() {
    let (_cluster, ep) = fleet().await;
    let created = ok_json(
        &ep,
        &[
            "token",
            "create",
            "ci-web",
            "--role",
            "publisher",
            "--workload",
            "web",
            "--ttl",
            "1h",
        ],
    );
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("fleet:ci-web:"), "{created}");
    // Plain output prints the token alone on stdout, for `TOKEN=$(fleet-ctl token create ...)`.
    let out = ctl(&ep, &["token", "create", "ci-other", "--role", "viewer"]);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.trim().starts_with("fleet:ci-other:") && printed.trim().lines().count() == 1,
        "{printed}"
    );

    let out = ctl_with_token(&token, &ep, &["release", "publish", "web", A]);
    assert!(out.status.success(), "{}", stderr(&out));
    let published = ok_json(&ep, &["audit", "--kind", "publish_release"]);
    assert_eq!(
        published["events"][0]["actor"], "token:ci-web",
        "{published}"
    );

    let out = ctl_with_token(&token, &ep, &["release", "publish", "api", A]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "token:ci-web may not publish_release: that needs role publisher for workload api"
        ),
        "{}",
        stderr(&out)
    );

    let listed = ok_json(&ep, &["token", "list"]);
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci-other", "ci-web"], "{listed}");
    assert!(
        !listed.to_string().contains(&token[13..]),
        "no secrets in the list"
    );

    // A watch stream the token holds open ends when it is revoked.
    let tls_without_cert = fleet_identity::Transport::tls(
        &fleet_identity::Trust::load(&fleet_testkit::pki().ca_path(), None).unwrap(),
        None,
    )
    .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut agent = fleet_api::proto::agent_service_client::AgentServiceClient::new(
        fleet_testkit::channel_as(&ep, &tls_without_cert)
            .await
            .unwrap(),
    );
    let mut request = tonic::Request::new(fleet_api::proto::WatchAssignmentsRequest {
        cluster: "prod-1".into(),
        since_version: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let mut stream = agent.watch_assignments(request).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the first set");

    ok_json(&ep, &["token", "revoke", "ci-web"]);
    ends_as_revoked(&mut stream).await;
    let out = ctl_with_token(&token, &ep, &["release", "publish", "web", B]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bearer token ci-web is unknown, revoked or expired"),
        "{}",
        stderr(&out)
    );
    // The same refusal on the wire is UNAUTHENTICATED, on every service.
    let channel = fleet_testkit::channel_as(&ep, &tls_without_cert)
        .await
        .unwrap();
    let mut client = fleet_api::proto::fleet_service_client::FleetServiceClient::new(channel);
    let mut request = tonic::Request::new(fleet_api::proto::ListSitesRequest::default());
    request.metadata_mut().insert("authorization", bearer);
    let status = client.list_sites(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // A token that is not of the fleet's shape is refused before anything is sent.
    let out = ctl_with_token("hunter2", &ep, &["site", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a fleet token"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_admin_is_the_operator_bootstrap_admin_names() {
    let cluster = ProcessCluster::start(
        1,
        &["--bootstrap-admin", "spiffe://fleet.local/operator/kari"],
    )
    .await;
    let ep = cluster.endpoints();
    let kari = operator("kari");
    ok_json_as(&kari, &ep, &["site", "add", "oslo"]);
    let out = ctl(&ep, &["site", "list"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "admin holds no role here: {}",
        stderr(&out)
    );
    let roles = ok_json_as(&kari, &ep, &["role", "list"]);
    assert_eq!(roles["bindings"].as_array().unwrap().len(), 1, "{roles}");
    assert_eq!(roles["bindings"][0]["principal"], "kari", "{roles}");

    // Only an operator can be the first admin.
    let dir = tempfile::tempdir().unwrap();
    let node = pki_files_for_a_node();
    let out = Command::new(fleet_testkit::fleet_node_binary())
        .args([
            "coordinator",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--tls-ca", &node.ca.display().to_string()])
        .args(["--tls-cert", &node.cert.display().to_string()])
        .args(["--tls-key", &node.key.display().to_string()])
        .args([
            "--bootstrap",
            "--bootstrap-admin",
            "spiffe://fleet.local/cluster/c1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--bootstrap-admin") && stderr(&out).contains("not an operator"),
        "{}",
        stderr(&out)
    );
}

fn pki_files_for_a_node() -> fleet_identity::TlsFiles {
    fleet_testkit::pki().issue(
        &fleet_core::Principal::Coordinator(1),
        &["127.0.0.1".into()],
        "coordinator-1-bootstrap-admin",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_certificate_is_refused_and_its_open_stream_ends_and_a_new_one_is_accepted()
{
    use fleet_api::proto::agent_service_client::AgentServiceClient;
    use fleet_api::proto::{GetAssignmentsRequest, WatchAssignmentsRequest};
    let (cluster, ep) = fleet().await;
    let address = cluster.address(1);
    let pki = fleet_testkit::pki();
    let as_agent = |name: &str| {
        pki.issue(
            &fleet_core::Principal::Cluster("prod-1".into()),
            &[],
            &format!("cluster-prod-1-{name}"),
        )
    };
    let old = as_agent("lost");
    let mut agent = AgentServiceClient::new(
        fleet_testkit::channel_as(&address, &pki.transport_as(&old))
            .await
            .unwrap(),
    );
    let mut stream = agent
        .watch_assignments(WatchAssignmentsRequest {
            cluster: "prod-1".into(),
            since_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().expect("the first set");

    // Certificates count whole seconds: the revocation falls in a later second than the issue.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ok_json(
        &ep,
        &[
            "cluster",
            "revoke-cert",
            "prod-1",
            "--reason",
            "laptop lost",
        ],
    );
    ends_as_revoked(&mut stream).await;
    // Every later call with it, on a new connection too.
    let mut again = AgentServiceClient::new(
        fleet_testkit::channel_as(&address, &pki.transport_as(&old))
            .await
            .unwrap(),
    );
    let refused = again
        .get_assignments(GetAssignmentsRequest {
            cluster: "prod-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A certificate issued after the revocation is the agent's new one.
    let new = as_agent("new");
    let mut renewed = AgentServiceClient::new(
        fleet_testkit::channel_as(&address, &pki.transport_as(&new))
            .await
            .unwrap(),
    );
    renewed
        .get_assignments(GetAssignmentsRequest {
            cluster: "prod-1".into(),
        })
        .await
        .unwrap();
    let audit = ok_json(&ep, &["audit", "--kind", "revoke_cluster_certificates"]);
    assert_eq!(audit["events"][0]["actor"], "admin", "{audit}");
    assert_eq!(audit["events"][0]["reason"], "laptop lost", "{audit}");
}
