//! Agents that enroll with a one-time join token: real coordinator processes that hold the
//! CA key (`--ca-key`), real `fleet-node agent` processes, the real `fleet-ctl` for the token,
//! and direct gRPC calls for what the binaries would never send.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_api::proto::agent_service_client::AgentServiceClient;
use fleet_api::proto::{RequestCertificateRequest, WatchAssignmentsRequest};
use fleet_core::Principal;
use fleet_identity::{Credentials, TlsFiles};
use fleet_testkit::{AgentProcess, ProcessCluster, pki};
use tonic::Code;

use common::{git, ok_json};

async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Coordinators that sign agents' requests, with agent certificates of `ttl`.
async fn signing_cluster(size: usize, ttl: &str) -> ProcessCluster {
    let key = pki().ca_key_path().display().to_string();
    ProcessCluster::start(size, &["--ca-key", &key, "--agent-certificate-ttl", ttl]).await
}

fn join_token(ep: &str, cluster: &str) -> String {
    let made = ok_json(ep, &["cluster", "join-token", cluster, "--ttl", "10m"]);
    made["token"].as_str().expect("a token").to_string()
}

/// Site oslo, cluster stg-a in staging, and workload web from a new repository at `repo`
/// whose staging overlay holds `app.conf` = "v1": that commit.
fn staging_fleet(ep: &str, repo: &Path) -> String {
    std::fs::create_dir_all(repo.join("overlays/staging")).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    let v1 = commit_app_conf(repo, "v1");
    ok_json(ep, &["site", "add", "oslo"]);
    ok_json(
        ep,
        &[
            "cluster", "register", "stg-a", "--site", "oslo", "--env", "staging",
        ],
    );
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
    v1
}

/// Commits `app.conf` = "VERSION\n" in the staging overlay: the commit.
fn commit_app_conf(repo: &Path, version: &str) -> String {
    std::fs::write(
        repo.join("overlays/staging/app.conf"),
        format!("{version}\n"),
    )
    .unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", version]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The agent's kept certificate: who it names and when it expires.
fn kept_certificate(state_dir: &Path) -> (Principal, i64) {
    let files = TlsFiles {
        ca: pki().ca_path(),
        cert: state_dir.join("tls/agent.pem"),
        key: state_dir.join("tls/agent-key.pem"),
    };
    let own = Credentials::load(&files, None).expect("the kept certificate loads");
    let validity = fleet_identity::tls::validity(&own.chain[0]).expect("parses");
    (own.principal, validity.not_after_s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_with_a_join_token_restarts_without_it_and_renews_its_certificate() {
    let coordinators = signing_cluster(1, "9s").await;
    let ep = coordinators.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let v1 = staging_fleet(&ep, &repo);

    let token = join_token(&ep, "stg-a");
    assert!(token.starts_with("fleet-join:stg-a:"), "{token}");
    let mut agent = AgentProcess::start_enrolling(dir.path(), "stg-a", &ep, "1s", &token);
    wait_until(
        Duration::from_secs(20),
        "the agent enrolls and watches",
        || {
            let log = agent.log();
            log.contains("enrolled with the join token") && log.contains("watching assignments")
        },
    )
    .await;
    let enrolled_at = Instant::now();
    // Its own key, readable by the agent only, and a certificate for its cluster from the CA.
    let key = agent.state_dir.join("tls/agent-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let (principal, first_not_after) = kept_certificate(&agent.state_dir);
    assert_eq!(principal, Principal::Cluster("stg-a".into()));
    ok_json(&ep, &["release", "publish", "web", &v1]);
    wait_until(Duration::from_secs(10), "v1 applied", || {
        agent.file("web", "app.conf").as_deref() == Some("v1\n")
    })
    .await;

    // A second use of the token, by another agent process of the same cluster: refused, and
    // the process exits saying what to do.
    let other = tempfile::tempdir().unwrap();
    let mut thief = AgentProcess::start_enrolling(other.path(), "stg-a", &ep, "1s", &token);
    wait_until(Duration::from_secs(15), "the second use exits", || {
        !thief.is_running()
    })
    .await;
    let log = thief.log();
    assert!(log.contains("the join token was refused"), "{log}");
    assert!(log.contains("fleet-ctl cluster join-token stg-a"), "{log}");
    assert!(!other.path().join("stg-a-state/tls/agent.pem").exists());

    // Renewed at two thirds of 9 s, then working on after the first certificate expired.
    wait_until(
        Duration::from_secs(20),
        "the certificate is renewed",
        || agent.log().contains("renewed the certificate"),
    )
    .await;
    let (_, renewed_not_after) = kept_certificate(&agent.state_dir);
    assert!(renewed_not_after > first_not_after, "a new certificate");
    let left = Duration::from_secs(10).saturating_sub(enrolled_at.elapsed());
    tokio::time::sleep(left).await;
    let v2 = commit_app_conf(&repo, "v2");
    ok_json(&ep, &["release", "publish", "web", &v2]);
    wait_until(
        Duration::from_secs(10),
        "v2 applied after the first cert expired",
        || agent.file("web", "app.conf").as_deref() == Some("v2\n"),
    )
    .await;

    // A restart without the token uses the kept certificate.
    agent.kill();
    agent.restart();
    wait_until(
        Duration::from_secs(20),
        "the restarted agent watches",
        || {
            let log = agent.log();
            log.contains("using the certificate in the state directory")
                && log.contains("watching assignments")
        },
    )
    .await;

    // Revoked: its stream ends; a new token (the old one stays in its unit file) enrolls it
    // again, with a certificate the revocation does not cover.
    ok_json(&ep, &["cluster", "revoke-cert", "stg-a"]);
    wait_until(
        Duration::from_secs(10),
        "the revoked agent's stream ends",
        || agent.log().contains("revoked"),
    )
    .await;
    let renewed_token = join_token(&ep, "stg-a");
    agent.kill();
    agent.restart_with_join_token(&renewed_token);
    wait_until(
        Duration::from_secs(20),
        "enrolled again and watching",
        || {
            let log = agent.log();
            log.contains("enrolling again with the new join token")
                && log.contains("enrolled with the join token")
                && log.contains("watching assignments")
        },
    )
    .await;
    let v3 = commit_app_conf(&repo, "v3");
    ok_json(&ep, &["release", "publish", "web", &v3]);
    wait_until(
        Duration::from_secs(10),
        "v3 applied with the new certificate",
        || agent.file("web", "app.conf").as_deref() == Some("v3\n"),
    )
    .await;

    // Audited: the tokens made by the admin, each used by the agent once.
    let audit = ok_json(&ep, &["audit", "--kind", "enroll_cluster"]);
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{audit}");
    assert_eq!(events[0]["actor"], "agent:stg-a", "{audit}");
    let made = ok_json(&ep, &["audit", "--kind", "create_join_token"]);
    assert_eq!(made["events"][0]["actor"], "admin", "{made}");
    ok_json(&ep, &["audit", "verify"]);
}

/// Asks `address` for a certificate for a new key with `token` as the bearer.
async fn request_with(address: &str, token: &str) -> Result<String, tonic::Status> {
    let endpoint = fleet_identity::Transport::endpoint(address).unwrap();
    let anonymous = fleet_identity::Trust::load(&pki().ca_path(), None)
        .and_then(|trust| fleet_identity::Transport::tls(&trust, None))
        .unwrap();
    let channel = anonymous.connect(endpoint).await.unwrap();
    let (_, csr_pem) = fleet_identity::pki::cluster_request("stg-a").unwrap();
    let mut request = tonic::Request::new(RequestCertificateRequest { csr_pem });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    AgentServiceClient::new(channel)
        .request_certificate(request)
        .await
        .map(|r| r.into_inner().certificate_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_sent_to_two_coordinators_at_once_enrolls_exactly_once() {
    let coordinators = signing_cluster(3, "1h").await;
    let ep = coordinators.endpoints();
    ok_json(&ep, &["site", "add", "oslo"]);
    ok_json(
        &ep,
        &[
            "cluster", "register", "stg-a", "--site", "oslo", "--env", "staging",
        ],
    );
    let (one, two) = (coordinators.address(1), coordinators.address(2));
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let token = join_token(&ep, "stg-a");
        // Both nodes have applied the token before either is asked.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (a, b) = tokio::join!(request_with(&one, &token), request_with(&two, &token));
        let signed: Vec<&String> = [&a, &b].into_iter().flatten().collect();
        assert_eq!(signed.len(), 1, "round {round}: {a:?} / {b:?}");
        let refused = [&a, &b].into_iter().find_map(|r| r.as_ref().err()).unwrap();
        eprintln!(
            "round {round}: the other node answered {:?}",
            refused.code()
        );
        assert!(
            matches!(
                refused.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ),
            "round {round}: {refused:?}"
        );
        assert!(
            refused.message().contains("join token of cluster stg-a"),
            "{refused:?}"
        );
        // A third try, later, on the third node: used up everywhere.
        let late = request_with(&coordinators.address(3), &token)
            .await
            .unwrap_err();
        assert_eq!(late.code(), Code::Unauthenticated, "{late:?}");
    }
    let audit = ok_json(&ep, &["audit", "--kind", "enroll_cluster"]);
    assert_eq!(audit["events"].as_array().unwrap().len(), ROUNDS, "{audit}");

    // A join token opens nothing but RequestCertificate.
    let token = join_token(&ep, "stg-a");
    let endpoint = fleet_identity::Transport::endpoint(&one).unwrap();
    let anonymous = fleet_identity::Trust::load(&pki().ca_path(), None)
        .and_then(|trust| fleet_identity::Transport::tls(&trust, None))
        .unwrap();
    let mut client = AgentServiceClient::new(anonymous.connect(endpoint).await.unwrap());
    let mut watch = tonic::Request::new(WatchAssignmentsRequest {
        cluster: "stg-a".into(),
        since_version: 0,
    });
    watch
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let refused = client.watch_assignments(watch).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A malformed request spends nothing: the token still enrolls afterwards.
    let mut bad = tonic::Request::new(RequestCertificateRequest {
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
    });
    bad.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let invalid = client.request_certificate(bad).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    assert!(invalid.message().contains("csr_pem"), "{invalid:?}");
    request_with(&one, &token).await.expect("still valid");
}

/// The recovery README.md documents: an agent whose certificate expired while no coordinator
/// was reachable keeps enforcing what it has and says, in its log, that it needs a new join
/// token; restarted with one, it enrolls again and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_expired_while_cut_off_keeps_enforcing_and_reenrolls_with_a_new_token()
 {
    let mut coordinators = signing_cluster(1, "6s").await;
    let ep = coordinators.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let v1 = staging_fleet(&ep, &repo);
    ok_json(&ep, &["release", "publish", "web", &v1]);
    let token = join_token(&ep, "stg-a");
    let mut agent = AgentProcess::start_enrolling(dir.path(), "stg-a", &ep, "500ms", &token);
    wait_until(Duration::from_secs(20), "v1 applied", || {
        agent.file("web", "app.conf").as_deref() == Some("v1\n")
    })
    .await;

    // Cut off until the certificate has expired.
    coordinators.node(1).terminate(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(20),
        "the agent says it needs a join token",
        || agent.log().contains("certificate has expired"),
    )
    .await;
    assert!(
        agent.log().contains("fleet-ctl cluster join-token stg-a"),
        "{}",
        agent.log()
    );
    // Still enforcing its cached assignment: drift is repaired with no coordinator.
    std::fs::write(agent.root.join("web/app.conf"), "edited by hand\n").unwrap();
    wait_until(
        Duration::from_secs(10),
        "drift repaired while cut off",
        || agent.file("web", "app.conf").as_deref() == Some("v1\n"),
    )
    .await;

    // Back: the coordinator refuses the expired certificate; a new token enrolls it again.
    coordinators.node(1).restart();
    coordinators.wait_for_leader(Duration::from_secs(30)).await;
    let token = join_token(&ep, "stg-a");
    agent.kill();
    agent.restart_with_join_token(&token);
    wait_until(Duration::from_secs(20), "re-enrolled and watching", || {
        let log = agent.log();
        log.contains("enrolling again")
            && log.contains("enrolled with the join token")
            && log.contains("watching assignments")
    })
    .await;
}
