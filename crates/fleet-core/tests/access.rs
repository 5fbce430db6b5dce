//! Roles, tokens and the fleet's own actors, script style: every command goes through
//! `State::apply_stored` in the format a coordinator writes, as the log's entries do.

use std::collections::BTreeMap;

use fleet_core::audit::AUDIT_EVENT_FORMAT;
use fleet_core::{Command, Context, CoreError, Outcome, State, StoredCommand};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SECRET_SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

struct Fleet {
    state: State,
    now: u64,
}

impl Fleet {
    /// Node 1 binds the bootstrap admin `root`, who sets up sites, both environments' clusters
    /// and workloads `web` and `api`.
    fn new() -> Fleet {
        let mut f = Fleet {
            state: State::default(),
            now: 1_000_000,
        };
        f.ok("coordinator:1", bind("root", "admin", &[], &[]));
        f.ok(
            "root",
            Command::AddSite {
                name: "oslo".into(),
            },
        );
        for (name, environment) in [("stg-1", "staging"), ("prod-1", "production")] {
            f.ok(
                "root",
                Command::RegisterCluster {
                    name: name.into(),
                    site: "oslo".into(),
                    environment: environment.into(),
                    labels: BTreeMap::new(),
                },
            );
        }
        for workload in ["web", "api"] {
            f.ok(
                "root",
                Command::CreateWorkload {
                    name: workload.into(),
                    repo_url: format!("https://git.example/{workload}.git"),
                    path_template: "overlays/{environment}".into(),
                },
            );
        }
        f
    }

    fn run(&mut self, actor: &str, command: Command) -> Result<Outcome, CoreError> {
        let ctx = Context {
            now_ms: self.now,
            actor: actor.into(),
            reason: String::new(),
        };
        self.state
            .apply_stored(&StoredCommand::new(command), &ctx, AUDIT_EVENT_FORMAT)
    }

    fn ok(&mut self, actor: &str, command: Command) -> Outcome {
        self.run(actor, command.clone())
            .unwrap_or_else(|e| panic!("{actor} {command:?}: {e}"))
    }

    /// A command refused as PermissionDenied, which changed nothing: its message.
    fn denied(&mut self, actor: &str, command: Command) -> String {
        let before = self.state.clone();
        match self.run(actor, command.clone()) {
            Err(CoreError::PermissionDenied { message, .. }) => {
                assert_eq!(self.state, before, "a refusal changes nothing");
                message
            }
            other => panic!("{actor} {command:?}: expected PermissionDenied, got {other:?}"),
        }
    }
}

fn bind(principal: &str, role: &str, environments: &[&str], workloads: &[&str]) -> Command {
    Command::BindRole {
        principal: principal.into(),
        role: role.into(),
        environments: environments.iter().map(|s| s.to_string()).collect(),
        workloads: workloads.iter().map(|s| s.to_string()).collect(),
    }
}

fn publish(workload: &str) -> Command {
    Command::PublishRelease {
        workload: workload.into(),
        revision: A.into(),
        allow_rejected: false,
        override_freeze: false,
    }
}

fn promote(environment: &str) -> Command {
    Command::Promote {
        workload: "web".into(),
        environment: environment.into(),
        revision: Some(A.into()),
        allow_rejected: false,
        override_freeze: false,
    }
}

fn token(name: &str, role: &str, workloads: &[&str], expires_at_ms: u64) -> Command {
    Command::CreateToken {
        name: name.into(),
        secret_sha256: SECRET_SHA.into(),
        role: role.into(),
        environments: Vec::new(),
        workloads: workloads.iter().map(|s| s.to_string()).collect(),
        expires_at_ms,
    }
}

#[test]
fn an_operator_without_a_role_may_do_nothing_and_the_refusal_names_what_is_missing() {
    let mut f = Fleet::new();
    let message = f.denied(
        "mallory",
        Command::AddSite {
            name: "bergen".into(),
        },
    );
    assert_eq!(
        message,
        "mallory may not add_site: that needs role operator, and it holds no role"
    );
    assert!(fleet_core::access::may_read(&f.state, "mallory", f.now).is_err());
    assert!(fleet_core::access::may_read(&f.state, "root", f.now).is_ok());
    f.ok("root", bind("mallory", "viewer", &[], &[]));
    assert!(fleet_core::access::may_read(&f.state, "mallory", f.now).is_ok());
    let message = f.denied("mallory", publish("web"));
    assert!(
        message.contains("needs role publisher for workload web, and it holds viewer"),
        "{message}"
    );
}

#[test]
fn a_promoter_scoped_to_staging_promotes_there_and_not_into_production() {
    let mut f = Fleet::new();
    f.ok("root", bind("kari", "promoter", &["staging"], &[]));
    f.ok("root", bind("kari", "publisher", &[], &["web"]));
    f.ok("kari", publish("web"));
    let message = f.denied("kari", promote("production"));
    assert!(
        message.starts_with("kari may not promote: that needs role promoter for environment production for workload web")
            && message.contains("promoter (environments staging)"),
        "{message}"
    );
    // Binding the role again replaces its scope.
    f.ok(
        "root",
        bind("kari", "promoter", &["staging", "production"], &[]),
    );
    let outcome = f.run("kari", promote("production"));
    assert!(
        !matches!(outcome, Err(CoreError::PermissionDenied { .. })),
        "{outcome:?}"
    );
}

#[test]
fn a_publisher_token_publishes_its_workload_only_and_not_after_it_expires_or_is_revoked() {
    let mut f = Fleet::new();
    f.ok(
        "root",
        token("ci-web", "publisher", &["web"], f.now + 60_000),
    );
    f.ok("token:ci-web", publish("web"));
    let message = f.denied("token:ci-web", publish("api"));
    assert!(
        message.contains("needs role publisher for workload api"),
        "{message}"
    );
    // The overrides are a promoter's.
    let message = f.denied(
        "token:ci-web",
        Command::PublishRelease {
            workload: "web".into(),
            revision: A.into(),
            allow_rejected: false,
            override_freeze: true,
        },
    );
    assert!(
        message.contains("role promoter for environment staging"),
        "{message}"
    );
    f.now += 60_000;
    let message = f.denied("token:ci-web", publish("web"));
    assert!(message.contains("unknown, revoked or expired"), "{message}");
    f.now -= 60_000;
    f.ok(
        "root",
        Command::RevokeToken {
            name: "ci-web".into(),
        },
    );
    f.denied("token:ci-web", publish("web"));
    assert!(f.state.token("ci-web").is_none());
}

#[test]
fn only_the_fleet_itself_reports_status_advances_rollouts_and_binds_the_first_admin() {
    let mut f = Fleet::new();
    let report = |cluster: &str| Command::RecordStatus {
        cluster: cluster.into(),
        report: fleet_core::StatusReport {
            workload: "web".into(),
            applied_revision: A.into(),
            desired_revision: A.into(),
            assignment_version: 1,
            render_hash: String::new(),
            sync: fleet_core::SyncState::Synced,
            health: fleet_core::HealthState::Healthy,
            error: String::new(),
            drift_count: 0,
            objects: Vec::new(),
            objects_omitted: 0,
        },
    };
    f.ok("agent:prod-1", report("prod-1"));
    let message = f.denied("agent:stg-1", report("prod-1"));
    assert!(message.contains("the agent of cluster prod-1"), "{message}");
    // Not even an admin reports for an agent.
    f.denied("root", report("prod-1"));
    // The first admin exists: no coordinator binds another.
    f.denied("coordinator:1", bind("eve", "admin", &[], &[]));
    // Tokens are an admin's to make.
    f.ok("root", bind("ola", "operator", &[], &[]));
    f.denied("ola", token("ci", "admin", &[], f.now + 1));
}

#[test]
fn the_last_admin_cannot_be_unbound() {
    let mut f = Fleet::new();
    let refused = f.run(
        "root",
        Command::UnbindRole {
            principal: "root".into(),
            role: "admin".into(),
        },
    );
    assert!(
        matches!(&refused, Err(CoreError::FailedPrecondition { message, .. }) if message.contains("last admin")),
        "{refused:?}"
    );
    f.ok("root", bind("kari", "admin", &[], &[]));
    f.ok(
        "kari",
        Command::UnbindRole {
            principal: "root".into(),
            role: "admin".into(),
        },
    );
    f.denied(
        "root",
        Command::AddSite {
            name: "bergen".into(),
        },
    );
}

#[test]
fn entries_from_before_roles_replay_without_authorization_and_plaintext_callers_are_everyone() {
    let mut state = State::default();
    let ctx = Context {
        now_ms: 1,
        actor: "kari".into(),
        reason: String::new(),
    };
    let site = StoredCommand::new(Command::AddSite {
        name: "oslo".into(),
    });
    state
        .apply_stored(&site, &ctx, 2)
        .expect("a format-2 entry needs no role");
    let bergen = StoredCommand::new(Command::AddSite {
        name: "bergen".into(),
    });
    assert!(matches!(
        state.apply_stored(&bergen, &ctx, AUDIT_EVENT_FORMAT),
        Err(CoreError::PermissionDenied { .. })
    ));
    let plaintext = Context {
        actor: "unauthenticated".into(),
        ..ctx
    };
    state
        .apply_stored(&bergen, &plaintext, AUDIT_EVENT_FORMAT)
        .expect("a plaintext node's caller");
    state.verify_audit().unwrap();
}

#[test]
fn a_revocation_refuses_the_certificates_issued_in_earlier_seconds_and_accepts_later_ones() {
    let mut f = Fleet::new();
    f.now = 1_800_000_000_500;
    f.ok(
        "root",
        Command::RevokeClusterCertificates {
            cluster: "prod-1".into(),
        },
    );
    let backdate = fleet_core::access::CERTIFICATE_BACKDATE_MS;
    // notBefore as the built-in CA writes it: whole seconds, backdated.
    let issued_at = |second: u64| second * 1000 - backdate;
    assert_eq!(
        f.state
            .cluster_certificate_revoked("prod-1", issued_at(1_799_999_999)),
        Some(f.now)
    );
    assert_eq!(
        f.state
            .cluster_certificate_revoked("prod-1", issued_at(1_800_000_000)),
        None,
        "issued in the revocation's second: a new one"
    );
    assert_eq!(
        f.state
            .cluster_certificate_revoked("stg-1", issued_at(1_000)),
        None
    );
    // An operator of the cluster's environment may revoke; one of another may not.
    f.ok("root", bind("ola", "operator", &["staging"], &[]));
    let message = f.denied(
        "ola",
        Command::RevokeClusterCertificates {
            cluster: "prod-1".into(),
        },
    );
    assert!(
        message.contains("needs role operator for environment production"),
        "{message}"
    );
}

#[test]
fn an_operator_of_staging_neither_adds_nor_lifts_a_freeze_of_production() {
    let mut f = Fleet::new();
    f.ok("root", bind("ola", "operator", &["staging"], &[]));
    let freeze = |environment: &str| Command::AddFreeze {
        environment: environment.into(),
        from_ms: 1,
        to_ms: 2_000_000_000_000,
    };
    f.ok("ola", freeze("staging"));
    let message = f.denied("ola", freeze("production"));
    assert!(message.contains("for environment production"), "{message}");
    let Outcome::FreezeAdded { id } = f.ok("root", freeze("production")) else {
        panic!("a freeze");
    };
    let message = f.denied("ola", Command::RemoveFreeze { id });
    assert!(message.contains("for environment production"), "{message}");
    f.ok("root", Command::RemoveFreeze { id });
}

#[test]
fn an_operator_of_staging_does_not_set_a_pipeline_that_reaches_production() {
    let mut f = Fleet::new();
    f.ok("root", bind("ola", "operator", &["staging"], &[]));
    let pipeline = |environments: &[&str]| Command::SetPipeline {
        workload: "web".into(),
        pipeline: fleet_core::rollout::Pipeline::default_for(
            &environments
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
        ),
    };
    let message = f.denied("ola", pipeline(&["staging", "production"]));
    assert!(
        message.contains("role operator for environment production for workload web"),
        "{message}"
    );
    f.ok(
        "root",
        bind("ola", "operator", &["staging", "production"], &[]),
    );
    f.ok("ola", pipeline(&["staging", "production"]));
}

fn join_token(cluster: &str, expires_at_ms: u64) -> Command {
    Command::CreateJoinToken {
        cluster: cluster.into(),
        secret_sha256: SECRET_SHA.into(),
        expires_at_ms,
    }
}

fn enroll(cluster: &str, secret_sha256: &str) -> Command {
    Command::EnrollCluster {
        cluster: cluster.into(),
        secret_sha256: secret_sha256.into(),
    }
}

#[test]
fn a_join_token_enrolls_its_own_cluster_once_and_not_after_it_expires() {
    let mut f = Fleet::new();
    f.ok("root", bind("stg-ops", "operator", &["staging"], &[]));
    // Making one is an operator's of the cluster's environment.
    let message = f.denied("stg-ops", join_token("prod-1", f.now + 60_000));
    assert!(message.contains("create_join_token"), "{message}");
    f.ok("stg-ops", join_token("stg-1", f.now + 60_000));
    let kept = f.state.join_token("stg-1").expect("kept");
    assert_eq!(kept.secret_sha256, SECRET_SHA);
    assert_eq!(kept.created_by, "stg-ops");

    // Only the agent of that cluster, with the secret that hashes to the kept hash.
    f.denied("agent:prod-1", enroll("stg-1", SECRET_SHA));
    f.denied("stg-ops", enroll("stg-1", SECRET_SHA));
    let wrong = f.denied("agent:stg-1", enroll("stg-1", &"0".repeat(64)));
    assert!(wrong.contains("used, expired or replaced"), "{wrong}");
    assert!(matches!(
        f.ok("agent:stg-1", enroll("stg-1", SECRET_SHA)),
        Outcome::ClusterEnrolled { .. }
    ));
    assert!(f.state.join_token("stg-1").is_none(), "used up");
    f.denied("agent:stg-1", enroll("stg-1", SECRET_SHA));

    // An expired one enrolls nobody.
    f.ok("root", join_token("prod-1", f.now + 1_000));
    f.now += 1_000;
    f.denied("agent:prod-1", enroll("prod-1", SECRET_SHA));
    assert!(
        fleet_core::access::join_token_parts(&fleet_core::access::join_token_text("prod-1", A))
            .is_none(),
        "a secret is 64 hex digits"
    );
    let text = fleet_core::access::join_token_text("prod-1", &"ab".repeat(32));
    assert_eq!(
        fleet_core::access::join_token_parts(&text),
        Some(("prod-1", "ab".repeat(32).as_str()))
    );
    // Removing the cluster drops its token.
    f.ok(
        "root",
        Command::RemoveCluster {
            name: "prod-1".into(),
        },
    );
    assert!(f.state.join_token("prod-1").is_none());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..proptest::prelude::ProptestConfig::default() })]

    /// Any text is either no token at all or exactly the parts it was made from: a token's
    /// text never parses as the other kind, and a name, cluster or secret of another shape is
    /// refused (the interceptor answers UNAUTHENTICATED), whatever bytes arrive.
    #[test]
    fn token_texts_parse_back_to_their_parts_and_nothing_else_parses(
        name in "[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?",
        secret in "[0-9a-f]{64}",
        noise in "\\PC{0,120}",
    ) {
        use fleet_core::access::*;
        let bearer = bearer_token_text(&name, &secret);
        let join = join_token_text(&name, &secret);
        proptest::prop_assert_eq!(bearer_token_parts(&bearer), Some((name.as_str(), secret.as_str())));
        proptest::prop_assert_eq!(join_token_parts(&join), Some((name.as_str(), secret.as_str())));
        proptest::prop_assert_eq!(join_token_parts(&bearer), None);
        proptest::prop_assert_eq!(bearer_token_parts(&join), None);
        for text in [noise.clone(), format!("{BEARER_TOKEN_PREFIX}{noise}"), format!("{JOIN_TOKEN_PREFIX}{noise}")] {
            if let Some((n, s)) = bearer_token_parts(&text) {
                proptest::prop_assert_eq!(bearer_token_text(n, s), text.clone());
                proptest::prop_assert_eq!(s.len(), 64);
            }
            if let Some((c, s)) = join_token_parts(&text) {
                proptest::prop_assert_eq!(join_token_text(c, s), text.clone());
                proptest::prop_assert!(fleet_core::validate::dns_label("cluster", c).is_ok());
            }
        }
    }
}
