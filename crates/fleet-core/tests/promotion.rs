//! Promotion, script style: commands, agents' reports and planner ticks at chosen times, run
//! through the pure state exactly as the coordinator runs them.

use std::collections::BTreeMap;

use fleet_core::rollout::{Pipeline, RolloutState, RolloutStep, plan};
use fleet_core::{
    Command, Context, CoreError, HealthState, Outcome, State, StatusReport, SyncState,
};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SOAK: u64 = 10_000;

struct Fleet {
    state: State,
    now: u64,
    /// Every cluster the planner updated, in order.
    updates: Vec<String>,
}

fn ctx(now_ms: u64, actor: &str) -> Context {
    Context {
        now_ms,
        actor: actor.into(),
        reason: String::new(),
    }
}

impl Fleet {
    /// One staging cluster in oslo; production clusters as `(name, site)`; workload `web` with
    /// revision A everywhere and B published to staging.
    fn new(production: &[(&str, &str)]) -> Self {
        let mut f = Fleet {
            state: State::default(),
            now: 1_000_000,
            updates: Vec::new(),
        };
        for site in ["oslo", "bergen", "stavanger"] {
            f.ok(Command::AddSite { name: site.into() });
        }
        f.ok(Command::RegisterCluster {
            name: "stg-1".into(),
            site: "oslo".into(),
            environment: "staging".into(),
            labels: BTreeMap::new(),
        });
        for (name, site) in production {
            f.ok(Command::RegisterCluster {
                name: name.to_string(),
                site: site.to_string(),
                environment: "production".into(),
                labels: BTreeMap::from([("ring".to_string(), format!("ring-{site}"))]),
            });
        }
        f.ok(Command::CreateWorkload {
            name: "web".into(),
            repo_url: "https://git.example/web.git".into(),
            path_template: "overlays/{environment}".into(),
        });
        f.ok(Command::SetPipeline {
            workload: "web".into(),
            pipeline: Pipeline {
                soak_ms: SOAK,
                wave_order: vec!["oslo".into(), "bergen".into(), "stavanger".into()],
                ..Pipeline::default_for(&["staging".into(), "production".into()])
            },
        });
        // A reaches production the ordinary way.
        f.publish(A);
        f.verify_staging();
        f.ok(promote(None));
        f.settle();
        assert_eq!(f.rollout_state(), RolloutState::Succeeded);
        f.updates.clear();
        f.publish(B);
        f
    }

    fn run_as(&mut self, actor: &str, command: Command) -> Result<Outcome, CoreError> {
        self.state.apply(&command, &ctx(self.now, actor))
    }

    fn run(&mut self, command: Command) -> Result<Outcome, CoreError> {
        self.run_as("alice", command)
    }

    fn ok(&mut self, command: Command) -> Outcome {
        self.run(command.clone())
            .unwrap_or_else(|e| panic!("{command:?}: {e}"))
    }

    /// Runs a command that must be refused, and checks that it changed nothing.
    fn refused(&mut self, command: Command) -> String {
        let before = self.state.clone();
        let e = self.run(command).expect_err("refused");
        assert_eq!(self.state, before, "a refused command changes nothing");
        format!("{e} / {}", e.hint())
    }

    fn publish(&mut self, revision: &str) {
        self.ok(Command::PublishRelease {
            workload: "web".into(),
            revision: revision.into(),
            allow_rejected: false,
        });
    }

    fn wait(&mut self, ms: u64) {
        self.now += ms;
    }

    fn assigned(&self, cluster: &str) -> Option<String> {
        self.state
            .assignments(cluster)
            .unwrap()
            .into_iter()
            .find(|a| a.workload == "web")
            .map(|a| a.revision.0.clone())
    }

    fn report(&mut self, cluster: &str, applied: &str, sync: SyncState, health: HealthState) {
        let desired = self.assigned(cluster).unwrap_or_default();
        let report = StatusReport {
            workload: "web".into(),
            applied_revision: applied.into(),
            desired_revision: desired,
            assignment_version: 1,
            render_hash: String::new(),
            sync,
            health,
            error: if sync == SyncState::Failed {
                "commit does not exist".into()
            } else {
                String::new()
            },
            drift_count: 0,
            objects: Vec::new(),
            objects_omitted: 0,
        };
        let cluster = cluster.to_string();
        self.run_as("agent", Command::RecordStatus { cluster, report })
            .unwrap();
    }

    /// Every cluster's agent applies its assignment and reports Healthy.
    fn agents_apply(&mut self) {
        let clusters: Vec<String> = self.state.clusters().map(|c| c.name.clone()).collect();
        for c in clusters {
            if let Some(rev) = self.assigned(&c) {
                self.report(&c, &rev, SyncState::Synced, HealthState::Healthy);
            }
        }
    }

    fn verify_staging(&mut self) {
        self.agents_apply();
        self.wait(SOAK);
    }

    /// One planner tick: every step it decides, applied as the coordinator applies them.
    fn tick(&mut self) -> Vec<RolloutStep> {
        let mut steps = Vec::new();
        for command in plan(&self.state, self.now) {
            if let Command::AdvanceRollout { step, .. } = &command {
                if let RolloutStep::Update { clusters } = step {
                    self.updates.extend(clusters.iter().cloned());
                }
                steps.push(step.clone());
            }
            self.run_as("planner", command).unwrap();
        }
        steps
    }

    /// Ticks with healthy agents, one second apart, until the rollout is no longer running.
    fn settle(&mut self) {
        for _ in 0..1_000 {
            self.tick();
            if !self.rollout_state().is_active() {
                return;
            }
            self.agents_apply();
            self.wait(1_000);
        }
        panic!("the rollout did not finish");
    }

    fn rollout_state(&self) -> RolloutState {
        self.state.rollout("web", "production").unwrap().state
    }
}

fn promote(revision: Option<&str>) -> Command {
    Command::Promote {
        workload: "web".into(),
        environment: "production".into(),
        revision: revision.map(str::to_string),
        allow_rejected: false,
        override_freeze: false,
    }
}

const THREE_SITES: [(&str, &str); 3] = [
    ("prod-bergen", "bergen"),
    ("prod-oslo", "oslo"),
    ("prod-stavanger", "stavanger"),
];

#[test]
fn promotion_is_refused_until_every_staging_cluster_ran_it_healthy_for_the_soak() {
    let mut f = Fleet::new(&THREE_SITES);
    let shown = f.refused(promote(None));
    assert!(
        shown.contains("stg-1: runs aaaaaaaaaaaa, not bbbbbbbbbbbb"),
        "{shown}"
    );
    f.report("stg-1", B, SyncState::Synced, HealthState::Progressing);
    let shown = f.refused(promote(None));
    assert!(shown.contains("stg-1: not Healthy"), "{shown}");
    f.report("stg-1", B, SyncState::Synced, HealthState::Healthy);
    f.wait(SOAK / 2);
    let shown = f.refused(promote(None));
    assert!(
        shown.contains("stg-1: Healthy for 5 s of the 10 s soak"),
        "{shown}"
    );
    // A break resets the soak.
    f.report("stg-1", B, SyncState::Synced, HealthState::Degraded);
    f.report("stg-1", B, SyncState::Synced, HealthState::Healthy);
    f.wait(SOAK / 2);
    let shown = f.refused(promote(None));
    assert!(
        shown.contains("Healthy for 5 s of the 10 s soak"),
        "the break restarted it: {shown}"
    );
    f.wait(SOAK / 2);
    let outcome = f.ok(promote(None));
    assert!(
        matches!(
            outcome,
            Outcome::Rollout {
                state: RolloutState::Running,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        f.assigned("prod-oslo").as_deref(),
        Some(A),
        "nothing changes before a tick"
    );
}

#[test]
fn waves_follow_the_site_order_and_each_waits_for_the_previous_soak() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["prod-oslo".into()]
        }]
    );
    assert_eq!(f.assigned("prod-oslo").as_deref(), Some(B));
    assert_eq!(f.assigned("prod-bergen").as_deref(), Some(A));
    assert_eq!(f.tick(), [], "oslo has not applied it yet");
    f.agents_apply();
    f.wait(SOAK - 1);
    assert_eq!(f.tick(), [], "oslo is one millisecond short of the soak");
    f.wait(1);
    assert_eq!(f.tick(), [RolloutStep::StartWave { wave: 1 }]);
    f.settle();
    assert_eq!(f.rollout_state(), RolloutState::Succeeded);
    assert_eq!(f.updates, ["prod-oslo", "prod-bergen", "prod-stavanger"]);
    assert_eq!(f.state.workload("web").unwrap().desired["production"].0, B);
    f.state.verify_audit().unwrap();
    let steps = f
        .state
        .audit_events()
        .iter()
        .filter(|e| e.command.kind() == "advance_rollout" && e.actor == "planner")
        .count();
    assert!(
        steps >= 6,
        "each planner decision is an audited command ({steps})"
    );
}

#[test]
fn at_most_max_unavailable_clusters_of_a_wave_change_at_once() {
    let mut f = Fleet::new(&[("prod-1", "oslo"), ("prod-2", "oslo"), ("prod-3", "oslo")]);
    let mut p = f.state.pipeline("web");
    p.max_unavailable = 2;
    f.ok(Command::SetPipeline {
        workload: "web".into(),
        pipeline: p,
    });
    f.verify_staging();
    f.ok(promote(None));
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["prod-1".into(), "prod-2".into()]
        }]
    );
    assert_eq!(f.tick(), []);
    f.report("prod-1", B, SyncState::Synced, HealthState::Healthy);
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["prod-3".into()]
        }]
    );
}

#[test]
fn a_failure_over_the_budget_halts_rolls_back_and_the_revision_is_never_selected_again() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    assert_eq!(f.assigned("prod-oslo").as_deref(), Some(B));
    f.report("prod-oslo", A, SyncState::Failed, HealthState::Healthy);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::Halt { rollback: true, failed, .. }] if failed == &["prod-oslo"]),
        "{steps:?}"
    );
    assert_eq!(f.rollout_state(), RolloutState::RolledBack);
    assert_eq!(f.assigned("prod-oslo").as_deref(), Some(A), "rolled back");
    let r = f.state.rollout("web", "production").unwrap().clone();
    let shown: Vec<(String, &str)> = fleet_core::rollout::rollout_progress(&f.state, &r, f.now)
        .into_iter()
        .map(|(c, p)| (c, p.label()))
        .collect();
    assert_eq!(
        shown,
        [
            ("prod-oslo".to_string(), "rolled_back"),
            ("prod-bergen".to_string(), "pending"),
            ("prod-stavanger".to_string(), "pending"),
        ],
        "the changed cluster shows as set back, not as updating to the rejected revision"
    );
    assert!(
        f.state
            .rejected("web", "production")
            .unwrap()
            .contains(&fleet_core::Revision(B.into()))
    );
    assert_eq!(
        f.updates,
        ["prod-oslo"],
        "bergen and stavanger never saw it"
    );
    // Later ticks and automatic selection never bring it back.
    for _ in 0..5 {
        f.agents_apply();
        f.wait(SOAK);
        assert_eq!(f.tick(), []);
    }
    let shown = f.refused(promote(None));
    assert!(
        shown.contains("rejected") && shown.contains("--allow-rejected"),
        "{shown}"
    );
    // An operator may insist, and it is audited.
    f.ok(Command::Promote {
        workload: "web".into(),
        environment: "production".into(),
        revision: None,
        allow_rejected: true,
        override_freeze: false,
    });
    let last = f.state.audit_events().last().unwrap();
    assert!(
        last.summary.contains("promotes a rejected revision"),
        "{}",
        last.summary
    );
}

#[test]
fn within_the_budget_a_failure_does_not_halt() {
    let mut f = Fleet::new(&THREE_SITES);
    let mut p = f.state.pipeline("web");
    p.failure_budget = 1;
    p.max_unavailable = 2;
    p.wave_order = vec![];
    p.wave_label = Some("ring".into());
    f.ok(Command::SetPipeline {
        workload: "web".into(),
        pipeline: p,
    });
    f.verify_staging();
    f.ok(promote(None));
    // Waves by label value, in name order without an explicit order.
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["prod-bergen".into()]
        }]
    );
    f.report("prod-bergen", A, SyncState::Failed, HealthState::Healthy);
    assert_eq!(
        f.tick(),
        [],
        "one failure is within the budget; the wave waits"
    );
    assert_eq!(f.rollout_state(), RolloutState::Running);
}

#[test]
fn an_unreachable_cluster_is_not_unhealthy_until_the_timeout() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    // prod-oslo's agent is gone: it never reports again.
    f.wait(3 * 60_000);
    let r = f.state.rollout("web", "production").unwrap().clone();
    let progress = fleet_core::rollout::rollout_progress(&f.state, &r, f.now);
    assert_eq!(progress[0].0, "prod-oslo");
    assert_eq!(progress[0].1.label(), "unreachable");
    assert_eq!(f.tick(), [], "shown unreachable, not failed");
    assert_eq!(f.rollout_state(), RolloutState::Running);
    f.wait(2 * 60_000);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::Halt { reason, .. }] if reason.contains("unreachable for")),
        "{steps:?}"
    );
}

#[test]
fn approvals_from_distinct_operators_other_than_the_promoter_start_a_rollout() {
    let mut f = Fleet::new(&THREE_SITES);
    f.ok(Command::SetRequiredApprovals {
        environment: "production".into(),
        approvals: 2,
    });
    f.verify_staging();
    f.ok(promote(None));
    assert_eq!(f.rollout_state(), RolloutState::AwaitingApproval);
    assert_eq!(f.tick(), []);
    let approve = || Command::Approve {
        workload: "web".into(),
        environment: "production".into(),
    };
    assert!(
        f.refused(approve())
            .contains("alice started this promotion")
    );
    f.run_as("bob", approve()).unwrap();
    assert_eq!(f.rollout_state(), RolloutState::AwaitingApproval);
    let e = f.run_as("bob", approve()).unwrap_err();
    assert!(e.to_string().contains("approved rollout"), "{e}");
    f.run_as("carol", approve()).unwrap();
    assert_eq!(f.rollout_state(), RolloutState::Running);
    assert_eq!(f.tick().len(), 1);
}

#[test]
fn a_freeze_window_blocks_promotions_and_waves_unless_overridden() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    let (from, to) = (f.now, f.now + 3_600_000);
    f.ok(Command::AddFreeze {
        environment: "production".into(),
        from_ms: from,
        to_ms: to,
    });
    let shown = f.refused(promote(None));
    assert!(
        shown.contains("frozen") && shown.contains("--override-freeze"),
        "{shown}"
    );
    let until = std::time::UNIX_EPOCH + std::time::Duration::from_millis(to);
    assert!(
        shown.contains(&format!(
            "frozen until {}",
            humantime::format_rfc3339_seconds(until)
        )),
        "the end of the window as a time: {shown}"
    );
    f.ok(Command::Promote {
        workload: "web".into(),
        environment: "production".into(),
        revision: None,
        allow_rejected: false,
        override_freeze: true,
    });
    assert!(
        f.state
            .audit_events()
            .last()
            .unwrap()
            .summary
            .contains("overrides a freeze")
    );
    assert_eq!(f.tick().len(), 1, "an overriding rollout proceeds");
    f.ok(Command::AbortRollout {
        workload: "web".into(),
        environment: "production".into(),
    });

    // A rollout started before a freeze stops advancing when it begins.
    f.ok(Command::RemoveFreeze { id: 1 });
    f.ok(promote(None));
    f.ok(Command::AddFreeze {
        environment: "production".into(),
        from_ms: f.now,
        to_ms: f.now + 60_000,
    });
    assert_eq!(f.tick(), []);
    f.wait(60_000);
    assert_eq!(f.tick().len(), 1, "the window ended");
}

#[test]
fn a_planner_step_computed_on_stale_state_is_refused() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    let steps = plan(&f.state, f.now);
    assert_eq!(steps.len(), 1);
    f.ok(Command::PauseRollout {
        workload: "web".into(),
        environment: "production".into(),
    });
    let shown = f.refused(steps[0].clone());
    assert!(
        shown.contains("no active rollout") || shown.contains("paused"),
        "{shown}"
    );
    f.ok(Command::ResumeRollout {
        workload: "web".into(),
        environment: "production".into(),
    });
    f.run_as("planner", steps[0].clone()).unwrap();
    let again = f.refused(steps[0].clone());
    assert!(again.contains("no longer the planner's step"), "{again}");
}

#[test]
fn rollback_returns_every_cluster_to_the_previous_revision_and_rejects_the_bad_one() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.settle();
    assert_eq!(f.assigned("prod-bergen").as_deref(), Some(B));
    let rollback = |to: Option<&str>| Command::Rollback {
        workload: "web".into(),
        environment: "production".into(),
        to: to.map(str::to_string),
    };
    let outcome = f.ok(rollback(None));
    assert!(
        matches!(&outcome, Outcome::RolledBack { revision, clusters, .. } if revision == A && clusters.len() == 3),
        "{outcome:?}"
    );
    for (c, _) in THREE_SITES {
        assert_eq!(f.assigned(c).as_deref(), Some(A));
    }
    // Rolling back to the rejected one by name is refused; it takes a promotion.
    let shown = f.refused(rollback(Some(B)));
    assert!(
        shown.contains("rejected") && shown.contains("--allow-rejected"),
        "{shown}"
    );
    // With nothing earlier that is not rejected, the default has nowhere to go.
    let shown = f.refused(rollback(None));
    assert!(shown.contains("no earlier revision"), "{shown}");
    f.state.verify_audit().unwrap();
}

#[test]
fn history_answers_what_a_cluster_ran_at_any_time() {
    let mut f = Fleet::new(&THREE_SITES);
    let before_b = f.now;
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    let with_b = f.now;
    f.report("prod-oslo", A, SyncState::Failed, HealthState::Healthy);
    f.wait(1_000);
    f.tick(); // Halts and rolls prod-oslo back to A.
    let at = |f: &Fleet, t: u64| {
        f.state
            .cluster_history("prod-oslo", t)
            .unwrap()
            .assigned
            .get("web")
            .map(|c| c.revision.clone().unwrap().0)
    };
    assert_eq!(at(&f, 0), None, "before its first assignment");
    assert_eq!(at(&f, before_b).as_deref(), Some(A));
    assert_eq!(at(&f, with_b).as_deref(), Some(B));
    assert_eq!(at(&f, f.now).as_deref(), Some(A));
    let h = f.state.cluster_history("prod-oslo", f.now).unwrap();
    let revisions: Vec<&str> = h
        .changes
        .iter()
        .map(|c| c.revision.as_ref().unwrap().0.as_str())
        .collect();
    assert_eq!(revisions, [A, B, A]);
    // Each change points at the audit event of the command that made it.
    for c in &h.changes {
        let e = &f.state.audit_events()[c.audit_sequence as usize - 1];
        assert!(e.summary.contains("prod-oslo"), "{}", e.summary);
    }
    assert_eq!(h.kept_since_ms, 0);
}

#[test]
fn a_revision_rejected_in_the_first_environment_is_published_again_only_with_allow_rejected() {
    let mut f = Fleet::new(&THREE_SITES);
    // B is in staging; roll it back there, which rejects it.
    f.ok(Command::Rollback {
        workload: "web".into(),
        environment: "staging".into(),
        to: None,
    });
    let publish = |allow_rejected| Command::PublishRelease {
        workload: "web".into(),
        revision: B.into(),
        allow_rejected,
    };
    let shown = f.refused(publish(false));
    assert!(
        shown.contains("rejected") && shown.contains("--allow-rejected"),
        "{shown}"
    );
    f.ok(publish(true));
    let last = f.state.audit_events().last().unwrap();
    assert!(
        last.summary.contains("published with --allow-rejected"),
        "{}",
        last.summary
    );
    f.state.verify_audit().unwrap();
}

#[test]
fn a_format_0_entry_that_published_a_rejected_revision_replays_as_it_was_acknowledged() {
    let mut f = Fleet::new(&THREE_SITES);
    f.ok(Command::Rollback {
        workload: "web".into(),
        environment: "staging".into(),
        to: None,
    });
    // Written before the rule existed, without the field.
    let stored = fleet_core::StoredCommand::from_json(&format!(
        r#"{{"type":"publish_release","workload":"web","revision":"{B}"}}"#
    ))
    .unwrap();
    let mut by_new_rules = f.state.clone();
    let refused = by_new_rules
        .apply_stored(&stored, &ctx(f.now, "alice"), 1)
        .unwrap_err();
    assert!(refused.to_string().contains("rejected"), "{refused}");
    f.state
        .apply_stored(&stored, &ctx(f.now, "alice"), 0)
        .expect("a format-0 entry is applied by the rules it was written under");
    assert_eq!(f.state.audit_events().last().unwrap().format, 0);
    f.state.verify_audit().unwrap();
}

#[test]
fn approvals_compare_actors_trimmed_and_case_insensitively_so_one_person_cannot_count_twice() {
    let mut f = Fleet::new(&THREE_SITES);
    f.ok(Command::SetRequiredApprovals {
        environment: "production".into(),
        approvals: 2,
    });
    f.verify_staging();
    f.state
        .apply(&promote(None), &ctx(f.now, "unauthenticated:kari"))
        .unwrap();
    let approve = || Command::Approve {
        workload: "web".into(),
        environment: "production".into(),
    };
    for alias in [
        "unauthenticated:kari ",
        "unauthenticated:KARI",
        " unauthenticated:Kari",
    ] {
        let e = f.run_as(alias, approve()).unwrap_err();
        assert!(
            e.to_string().contains("started this promotion"),
            "{alias:?}: {e}"
        );
    }
    f.run_as("unauthenticated:kåre", approve()).unwrap();
    let e = f.run_as("unauthenticated:KÅRE", approve()).unwrap_err();
    assert!(e.to_string().contains("approved rollout"), "{e}");
    assert_eq!(f.rollout_state(), RolloutState::AwaitingApproval);
    f.run_as("unauthenticated:ola", approve()).unwrap();
    assert_eq!(f.rollout_state(), RolloutState::Running);
}

#[test]
fn control_characters_in_actors_and_reasons_are_refused_from_format_1_and_replayed_before() {
    let mut f = Fleet::new(&THREE_SITES);
    let site = |name: &str| Command::AddSite { name: name.into() };
    for (actor, reason) in [
        ("kari", "line one\nline two"),
        ("kari", "tab\there"),
        ("ka\u{0}ri", ""),
        ("kari\u{1b}[2J", ""),
    ] {
        let context = Context {
            now_ms: f.now,
            actor: actor.into(),
            reason: reason.into(),
        };
        let e = f.state.apply(&site("tromso"), &context).unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        // A format-0 entry with a newline in its reason was acknowledged then: it replays.
        if reason.contains('\n') {
            let stored = fleet_core::StoredCommand::new(site("tromso"));
            let mut replay = f.state.clone();
            replay.apply_stored(&stored, &context, 0).unwrap();
        }
    }
}
