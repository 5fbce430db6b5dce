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

/// stg-1's agent (its own certificate) reports `revision` of web Synced and Healthy.
async fn staging_runs(address: &str, revision: &str) {
    use fleet_api::proto::{HealthState, ReportStatusRequest, StatusReport, SyncState};
    let cert = fleet_testkit::pki().issue(
        &fleet_core::Principal::Cluster("stg-1".into()),
        &[],
        "cluster-stg-1",
    );
    let channel = fleet_testkit::channel_as(address, &fleet_testkit::pki().transport_as(&cert))
        .await
        .unwrap();
    let mut agent = fleet_api::proto::agent_service_client::AgentServiceClient::new(channel);
    let assigned = agent
        .get_assignments(fleet_api::proto::GetAssignmentsRequest {
            cluster: "stg-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let version = assigned
        .assignments
        .iter()
        .find(|a| a.workload == "web")
        .map_or(0, |a| a.version);
    agent
        .report_status(ReportStatusRequest {
            cluster: "stg-1".into(),
            reports: vec![StatusReport {
                workload: "web".into(),
                applied_revision: revision.into(),
                desired_revision: revision.into(),
                assignment_version: version,
                sync: SyncState::Synced as i32,
                health: HealthState::Healthy as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap();
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
    staging_runs(&cluster.address(1), A).await;
    let promote = ["promote", "web", "--to", "production", "--revision", A];
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

    // kari may not hand out roles, and the last admin stays.
    let out = ctl_as(&kari, &ep, &["role", "bind", "kari", "admin"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
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

    ok_json(&ep, &["token", "revoke", "ci-web"]);
    let out = ctl_with_token(&token, &ep, &["release", "publish", "web", B]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bearer token ci-web is unknown, revoked or expired"),
        "{}",
        stderr(&out)
    );
    // The same refusal on the wire is UNAUTHENTICATED, on every service.
    let channel = fleet_testkit::channel_as(
        &ep,
        &fleet_identity::Transport::tls(
            &fleet_identity::Trust::load(&fleet_testkit::pki().ca_path(), None).unwrap(),
            None,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let mut client = fleet_api::proto::fleet_service_client::FleetServiceClient::new(channel);
    let mut request = tonic::Request::new(fleet_api::proto::ListSitesRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
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
