//! The state-free part of checking a command: `validate::command` refuses malformed fields the
//! same way whatever the state, which is what lets a node refuse them without a leader.

use std::collections::BTreeMap;

use fleet_core::rollout::Pipeline;
use fleet_core::{Command, Context, CoreError, State, validate};

const SHA: &str = "3f2a000000000000000000000000000000000001";

fn ctx(actor: &str, reason: &str) -> Context {
    Context {
        now_ms: 1_000,
        actor: actor.to_string(),
        reason: reason.to_string(),
    }
}

/// A fleet (with the default environments staging and production) holding one of everything
/// the malformed commands below could refer to.
fn populated() -> State {
    let mut state = State::default();
    let c = ctx("test", "");
    for command in [
        Command::AddSite {
            name: "oslo".into(),
        },
        Command::RegisterCluster {
            name: "web-1".into(),
            site: "oslo".into(),
            environment: "staging".into(),
            labels: BTreeMap::new(),
        },
        Command::CreateWorkload {
            name: "web".into(),
            repo_url: "https://git.example.no/web.git".into(),
            path_template: "overlays/{environment}".into(),
        },
    ] {
        state.apply(&command, &c).unwrap();
    }
    state
}

fn pipeline(change: impl FnOnce(&mut Pipeline)) -> Command {
    let mut p = Pipeline::default_for(&["staging".to_string(), "production".to_string()]);
    change(&mut p);
    Command::SetPipeline {
        workload: "web".into(),
        pipeline: p,
    }
}

fn field(e: &CoreError) -> &str {
    match e {
        CoreError::InvalidArgument { field, .. } => field,
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn malformed_fields_are_refused_alike_by_a_new_and_a_populated_fleet() {
    let populated = populated();
    let new = State::default();
    let cases: Vec<(Command, Context, &str)> = vec![
        (
            Command::AddSite {
                name: "Oslo".into(),
            },
            ctx("test", ""),
            "site",
        ),
        (
            Command::AddSite {
                name: "bergen".into(),
            },
            ctx("", ""),
            "actor",
        ),
        (
            Command::AddSite {
                name: "bergen".into(),
            },
            ctx("test", &"x".repeat(2000)),
            "reason",
        ),
        (
            Command::RegisterCluster {
                name: "web_2".into(),
                site: "oslo".into(),
                environment: "staging".into(),
                labels: BTreeMap::new(),
            },
            ctx("test", ""),
            "name",
        ),
        (
            Command::RemoveCluster {
                name: "-web".into(),
            },
            ctx("test", ""),
            "name",
        ),
        (
            Command::CreateWorkload {
                name: "api".into(),
                repo_url: "git.example.no/api".into(),
                path_template: "deploy".into(),
            },
            ctx("test", ""),
            "repo_url",
        ),
        (
            Command::PublishRelease {
                workload: "web".into(),
                revision: "main".into(),
                allow_rejected: false,
                override_freeze: false,
            },
            ctx("test", ""),
            "revision",
        ),
        (
            pipeline(|p| p.max_unavailable = 0),
            ctx("test", ""),
            "max_unavailable",
        ),
        (
            pipeline(|p| p.environments.push("staging".into())),
            ctx("test", ""),
            "environments",
        ),
        (
            pipeline(|p| p.wave_order = (0..2000).map(|i| format!("w{i}")).collect()),
            ctx("test", ""),
            "wave_order",
        ),
        (
            Command::SetRequiredApprovals {
                environment: "production".into(),
                approvals: 1000,
            },
            ctx("test", ""),
            "approvals",
        ),
        (
            Command::Promote {
                workload: "web".into(),
                environment: "production".into(),
                revision: Some("abc123".into()),
                allow_rejected: false,
                override_freeze: false,
            },
            ctx("test", ""),
            "revision",
        ),
        (
            Command::Approve {
                workload: "web".into(),
                environment: "Production".into(),
            },
            ctx("test", ""),
            "environment",
        ),
        (
            Command::Rollback {
                workload: "web".into(),
                environment: "production".into(),
                to: Some("HEAD~1".into()),
            },
            ctx("test", ""),
            "to",
        ),
        (
            Command::AddFreeze {
                environment: "production".into(),
                from_ms: 5_000,
                to_ms: 5_000,
            },
            ctx("test", ""),
            "to",
        ),
        (
            Command::RecordLeadershipHandover {
                from_node: 2,
                to_node: 2,
                term: 3,
                from_p99s_us: vec![20_000],
                to_p99_us: 900,
                limit_us: 10_000,
            },
            ctx("node-2", ""),
            "to_node",
        ),
    ];
    for (command, context, expected_field) in cases {
        let refused = validate::command(&command, &context.actor, &context.reason)
            .expect_err(&format!("{command:?} must be refused"));
        assert_eq!(field(&refused), expected_field, "{command:?}: {refused}");
        assert_eq!(new.check(&command, &context), Err(refused.clone()));
        assert_eq!(populated.check(&command, &context), Err(refused));
    }
}

#[test]
fn well_formed_commands_pass_validation_and_are_then_judged_by_the_state() {
    let populated = populated();
    let c = ctx("test", "");
    // Well formed, but the state says no: these refusals need the current state.
    let cases: Vec<(Command, &str)> = vec![
        (
            Command::RemoveCluster {
                name: "web-9".into(),
            },
            "not found",
        ),
        (
            Command::RegisterCluster {
                name: "web-1".into(),
                site: "oslo".into(),
                environment: "staging".into(),
                labels: BTreeMap::new(),
            },
            "already exists",
        ),
        (
            Command::PublishRelease {
                workload: "api".into(),
                revision: SHA.into(),
                allow_rejected: false,
                override_freeze: false,
            },
            "not found",
        ),
        (pipeline(|p| p.environments.push("qa".into())), "not found"),
    ];
    for (command, words) in cases {
        validate::command(&command, &c.actor, &c.reason)
            .unwrap_or_else(|e| panic!("{command:?} is well formed, yet: {e}"));
        let refused = populated
            .check(&command, &c)
            .expect_err(&format!("{command:?} must be refused by the state"));
        assert!(
            refused.to_string().contains(words),
            "{command:?}: {refused}"
        );
    }
}

#[test]
fn every_wave_name_is_bounded_in_both_wave_modes_from_format_2() {
    let long = "w".repeat(64);
    for label in [None, Some("rack".to_string())] {
        for bad in [long.as_str(), "a b", ""] {
            let command = pipeline(|p| {
                p.wave_label = label.clone();
                p.wave_order = vec!["oslo".into(), bad.into()];
            });
            let refusal = validate::command(&command, "test", "")
                .expect_err("an unbounded wave name is refused");
            assert_eq!(
                field(&refusal),
                "wave_order",
                "{label:?} {bad:?}: {refusal}"
            );
            // A format-1 entry that carried one replays as it was acknowledged.
            if label.is_some() {
                assert!(
                    validate::command_in(&command, "test", "", 1).is_ok(),
                    "{bad:?}"
                );
            }
        }
        let fine = pipeline(|p| {
            p.wave_label = label.clone();
            p.wave_order = vec!["oslo".into(), "w".repeat(63)];
        });
        assert!(validate::command(&fine, "test", "").is_ok(), "{label:?}");
    }
}
