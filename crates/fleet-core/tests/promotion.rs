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
            override_freeze: false,
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
            .map(|a| a.revision.to_string())
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

    /// Every cluster's agent applies its assignment and reports Healthy, except the agents
    /// of `failing`, which fail to apply whatever they are asked for.
    fn agents_apply_except(&mut self, failing: &[&str]) {
        let clusters: Vec<String> = self.state.clusters().map(|c| c.name.clone()).collect();
        for c in clusters {
            if failing.contains(&c.as_str()) {
                self.report(&c, A, SyncState::Failed, HealthState::Healthy);
            } else if let Some(rev) = self.assigned(&c) {
                self.report(&c, &rev, SyncState::Synced, HealthState::Healthy);
            }
        }
    }

    /// [`Fleet::settle`] with the agents of `failing` failing.
    fn settle_failing(&mut self, failing: &[&str]) {
        for _ in 0..1_000 {
            self.tick();
            if !self.rollout_state().is_active() {
                return;
            }
            self.agents_apply_except(failing);
            self.wait(1_000);
        }
        panic!("the rollout did not finish");
    }

    fn rollout(&self) -> fleet_core::rollout::Rollout {
        self.state.rollout("web", "production").unwrap().clone()
    }

    /// What holds the production rollout now, as `rollout status` shows it.
    fn hold(&self) -> Option<String> {
        fleet_core::rollout::hold(&self.state, &self.rollout(), self.now)
            .map(|h| format!("{}: {h}", h.kind()))
    }

    fn set_pipeline(&mut self, change: impl FnOnce(&mut Pipeline)) -> Result<Outcome, CoreError> {
        let mut p = self.state.pipeline("web");
        change(&mut p);
        self.run(Command::SetPipeline {
            workload: "web".into(),
            pipeline: p,
        })
    }

    /// `cluster remove prod-oslo`, then `cluster register prod-oslo` in the environment
    /// `lab`, where nothing is assigned.
    fn move_prod_oslo_to_lab(&mut self) {
        self.ok(Command::RemoveCluster {
            name: "prod-oslo".into(),
        });
        self.ok(Command::RegisterCluster {
            name: "prod-oslo".into(),
            site: "oslo".into(),
            environment: "lab".into(),
            labels: BTreeMap::new(),
        });
    }

    fn register(&mut self, name: &str, site: &str) {
        self.ok(Command::RegisterCluster {
            name: name.into(),
            site: site.into(),
            environment: "production".into(),
            labels: BTreeMap::new(),
        });
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
    assert_eq!(
        f.state.workload("web").unwrap().desired["production"].as_str(),
        B
    );
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
            .contains(&B.parse::<fleet_core::Revision>().unwrap())
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

/// p1a and p1b in oslo, p2 in bergen: the fleet of the report where a tolerated failure kept
/// the wave's only max-unavailable slot for ever.
const TWO_SITES: [(&str, &str); 3] = [("p1a", "oslo"), ("p1b", "oslo"), ("p2", "bergen")];

#[test]
fn a_failure_within_the_budget_is_set_aside_and_the_rollout_ends_naming_the_failed_cluster() {
    let mut f = Fleet::new(&TWO_SITES);
    f.set_pipeline(|p| {
        p.failure_budget = 1;
        p.max_unavailable = 1;
    })
    .unwrap();
    f.verify_staging();
    f.ok(promote(None));
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["p1a".into()]
        }]
    );
    f.agents_apply_except(&["p1a"]);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::SetAside { clusters, why }]
            if clusters == &["p1a"] && why[0].contains("commit does not exist")),
        "the failure is recorded by a committed step: {steps:?}"
    );
    let event = f.state.audit_events().last().unwrap().summary.clone();
    assert!(
        event.contains("p1a failed") && event.contains("1 of the failure budget of 1"),
        "{event}"
    );
    assert_eq!(
        f.tick(),
        [RolloutStep::Update {
            clusters: vec!["p1b".into()]
        }],
        "the failed cluster no longer holds the wave's only slot"
    );
    f.settle_failing(&["p1a"]);
    let r = f.rollout();
    assert_eq!(r.state, RolloutState::SucceededWithFailures);
    assert!(r.message.contains("p1a"), "{}", r.message);
    assert_eq!(f.updates, ["p1a", "p1b", "p2"]);
    for c in ["p1a", "p1b", "p2"] {
        assert_eq!(f.assigned(c).as_deref(), Some(B), "{c}");
    }
    assert_eq!(
        f.state.workload("web").unwrap().desired["production"].as_str(),
        B
    );
    let progress = fleet_core::rollout::rollout_progress(&f.state, &r, f.now);
    assert_eq!(progress[0].0, "p1a");
    assert_eq!(progress[0].1.label(), "set_aside");
}

#[test]
fn a_failure_beyond_those_set_aside_halts_and_rolls_back_every_updated_cluster() {
    let mut f = Fleet::new(&TWO_SITES);
    f.set_pipeline(|p| p.failure_budget = 1).unwrap();
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    f.agents_apply_except(&["p1a"]);
    assert!(matches!(&f.tick()[..], [RolloutStep::SetAside { .. }]));
    f.tick();
    f.agents_apply_except(&["p1a", "p1b"]);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::Halt { failed, rollback: true, reason }]
            if failed == &["p1a", "p1b"] && reason.contains("2 failed clusters")),
        "{steps:?}"
    );
    assert_eq!(f.rollout_state(), RolloutState::RolledBack);
    for c in ["p1a", "p1b", "p2"] {
        assert_eq!(f.assigned(c).as_deref(), Some(A), "{c}");
    }
}

#[test]
fn an_updated_cluster_not_healthy_by_the_progress_deadline_counts_as_failed() {
    let mut f = Fleet::new(&THREE_SITES);
    f.set_pipeline(|p| p.progress_deadline_ms = 120_000)
        .unwrap();
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    // prod-oslo's agent reports every minute, but B never becomes Healthy there.
    for _ in 0..2 {
        f.report("prod-oslo", B, SyncState::Synced, HealthState::Progressing);
        assert_eq!(f.tick(), []);
        f.wait(60_000);
    }
    f.report("prod-oslo", B, SyncState::Synced, HealthState::Progressing);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::Halt { reason, .. }] if reason.contains("progress deadline 120 s")),
        "{steps:?}"
    );
}

#[test]
fn rollout_status_names_what_holds_a_rollout() {
    let mut f = Fleet::new(&TWO_SITES);
    f.ok(Command::SetRequiredApprovals {
        environment: "production".into(),
        approvals: 1,
    });
    f.verify_staging();
    f.ok(promote(None));
    assert_eq!(
        f.hold().as_deref(),
        Some("approval: approval: 0 of 1 approvals; `fleet-ctl approve`")
    );
    f.run_as(
        "bob",
        Command::Approve {
            workload: "web".into(),
            environment: "production".into(),
        },
    )
    .unwrap();
    assert_eq!(f.hold(), None, "a step to take is not a hold");
    f.tick();
    let held = f.hold().unwrap();
    assert!(
        held.starts_with("max_unavailable:") && held.contains("p1a"),
        "{held}"
    );
    f.agents_apply();
    f.tick();
    f.agents_apply();
    let held = f.hold().unwrap();
    assert!(
        held.starts_with("soak:") && held.contains("wave oslo"),
        "{held}"
    );
    f.wait(SOAK);
    // The report's input: a freeze holds wave 2, and says so.
    f.ok(Command::AddFreeze {
        environment: "production".into(),
        from_ms: f.now,
        to_ms: f.now + 60_000,
    });
    assert_eq!(f.tick(), []);
    let held = f.hold().unwrap();
    assert!(held.starts_with("freeze: freeze 1 until "), "{held}");
    f.ok(Command::PauseRollout {
        workload: "web".into(),
        environment: "production".into(),
    });
    assert_eq!(
        f.hold().unwrap(),
        "paused: paused: `fleet-ctl rollout resume` continues it"
    );
    f.ok(Command::ResumeRollout {
        workload: "web".into(),
        environment: "production".into(),
    });
    f.wait(60_000);
    assert_eq!(f.tick(), [RolloutStep::StartWave { wave: 1 }]);
    f.tick();
    let held = f.hold().unwrap();
    assert!(
        held.starts_with("max_unavailable:") || held.starts_with("changing:"),
        "{held}"
    );
    f.settle();
    assert_eq!(f.hold(), None, "a finished rollout is held by nothing");
}

#[test]
fn a_running_rollout_keeps_the_pipeline_it_started_with() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    // A longer soak and a budget set during the rollout do not apply to it.
    f.set_pipeline(|p| {
        p.soak_ms = 3_600_000;
        p.failure_budget = 5;
    })
    .unwrap();
    assert_eq!(f.rollout().pipeline.as_ref().unwrap().soak_ms, SOAK);
    f.agents_apply();
    f.wait(SOAK);
    assert_eq!(
        f.tick(),
        [RolloutStep::StartWave { wave: 1 }],
        "the soak it started with"
    );
    f.tick();
    f.agents_apply_except(&["prod-bergen"]);
    let steps = f.tick();
    assert!(
        matches!(&steps[..], [RolloutStep::Halt { .. }]),
        "the budget it started with (0): {steps:?}"
    );
}

#[test]
fn a_pipeline_change_that_leaves_out_an_environment_with_an_active_rollout_is_refused() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    let mut p = f.state.pipeline("web");
    p.environments = vec!["staging".into()];
    let shown = f.refused(Command::SetPipeline {
        workload: "web".into(),
        pipeline: p.clone(),
    });
    assert!(
        shown.contains("leaves out production")
            && shown.contains("rollout abort web --env production"),
        "{shown}"
    );
    f.ok(Command::AbortRollout {
        workload: "web".into(),
        environment: "production".into(),
    });
    f.ok(Command::SetPipeline {
        workload: "web".into(),
        pipeline: p,
    });
}

#[test]
fn a_cluster_registered_mid_rollout_joins_its_wave_and_the_environment_never_reports_a_revision_it_does_not_run()
 {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    // The report's input: registered while wave oslo runs, its site's wave not started.
    f.register("prod-bergen-2", "bergen");
    assert_eq!(f.assigned("prod-bergen-2").as_deref(), Some(A));
    let event = f.state.audit_events().last().unwrap().summary.clone();
    assert!(
        event.contains("joins rollout 2 of web in wave bergen"),
        "{event}"
    );
    f.agents_apply();
    f.wait(SOAK);
    assert_eq!(f.tick(), [RolloutStep::StartWave { wave: 1 }]);
    // Registered in oslo after wave oslo finished: it joins the wave that runs now.
    f.register("prod-oslo-2", "oslo");
    let r = f.rollout();
    assert_eq!(
        r.waves[1].clusters,
        ["prod-bergen", "prod-bergen-2", "prod-oslo-2"]
    );
    // A site with no wave yet gets one after the others.
    f.ok(Command::AddSite {
        name: "tromso".into(),
    });
    f.register("prod-tromso", "tromso");
    assert_eq!(f.rollout().waves.last().unwrap().name, "tromso");
    f.settle();
    assert_eq!(f.rollout_state(), RolloutState::Succeeded);
    for c in f.state.clusters().filter(|c| c.environment == "production") {
        assert_eq!(f.assigned(&c.name).as_deref(), Some(B), "{}", c.name);
    }
    let shown = f.refused(promote(None));
    assert!(shown.contains("already runs"), "{shown}");
}

#[test]
fn a_cluster_removed_mid_rollout_leaves_it_and_can_join_again() {
    let mut f = Fleet::new(&THREE_SITES);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    f.ok(Command::RemoveCluster {
        name: "prod-oslo".into(),
    });
    assert!(f.rollout().waves[0].clusters.is_empty());
    assert!(!f.rollout().updated.contains("prod-oslo"));
    f.register("prod-oslo", "oslo");
    assert_eq!(
        f.rollout().from["prod-oslo"].as_ref().map(|r| r.as_str()),
        Some(A),
        "from what production ran when it registered"
    );
    assert!(
        !f.rollout().updated.contains("prod-oslo"),
        "pending again in its wave"
    );
    f.settle();
    assert_eq!(f.rollout_state(), RolloutState::Succeeded);
    assert_eq!(f.assigned("prod-oslo").as_deref(), Some(B));
}

#[test]
fn a_rollout_started_by_a_format_1_entry_replays_with_the_planner_of_format_1() {
    let mut f = Fleet::new(&TWO_SITES);
    f.set_pipeline(|p| p.failure_budget = 1).unwrap();
    f.verify_staging();
    f.state
        .apply_stored(
            &fleet_core::StoredCommand::new(promote(None)),
            &ctx(f.now, "alice"),
            1,
        )
        .unwrap();
    let r = f.rollout();
    assert_eq!((r.rules, r.pipeline.is_some()), (1, false));
    f.tick();
    f.agents_apply_except(&["p1a"]);
    assert_eq!(
        f.tick(),
        [],
        "as format 1 decided: a failure within the budget holds the wave"
    );
    // A format-1 pipeline change was not checked against active rollouts.
    let mut p = f.state.pipeline("web");
    p.environments = vec!["staging".into()];
    let change = fleet_core::StoredCommand::new(Command::SetPipeline {
        workload: "web".into(),
        pipeline: p,
    });
    let mut by_new_rules = f.state.clone();
    assert!(
        by_new_rules
            .apply_stored(&change, &ctx(f.now, "alice"), 2)
            .is_err()
    );
    f.state
        .apply_stored(&change, &ctx(f.now, "alice"), 1)
        .unwrap();
    f.state.verify_audit().unwrap();
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
            .map(|c| c.revision.clone().unwrap().to_string())
    };
    assert_eq!(at(&f, 0), None, "before its first assignment");
    assert_eq!(at(&f, before_b).as_deref(), Some(A));
    assert_eq!(at(&f, with_b).as_deref(), Some(B));
    assert_eq!(at(&f, f.now).as_deref(), Some(A));
    let h = f.state.cluster_history("prod-oslo", f.now).unwrap();
    let revisions: Vec<&str> = h
        .changes
        .iter()
        .map(|c| c.revision.as_ref().unwrap().as_str())
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
        override_freeze: false,
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

#[test]
fn every_change_of_a_clusters_assignment_set_has_a_higher_version_also_remove_and_register() {
    let mut f = Fleet::new(&THREE_SITES);
    let held = f.state.assignment_set_version("prod-oslo");
    assert!(held > 0);
    assert_eq!(f.assigned("prod-oslo").as_deref(), Some(A));
    // The report's input: removed, then registered again where nothing is assigned.
    f.ok(Command::AddEnvironment { name: "lab".into() });
    f.move_prod_oslo_to_lab();
    assert_eq!(f.assigned("prod-oslo"), None);
    let empty = f.state.assignment_set_version("prod-oslo");
    assert!(
        empty > held,
        "the empty set ({empty}) is newer than the set its agent holds ({held})"
    );
    // A set that loses its last assignment is newer too.
    f.ok(Command::RemoveCluster {
        name: "prod-oslo".into(),
    });
    f.register("prod-oslo", "oslo");
    let with_a = f.state.assignment_set_version("prod-oslo");
    assert!(with_a > empty);
    f.verify_staging();
    f.ok(promote(None));
    f.tick();
    f.report("prod-oslo", A, SyncState::Failed, HealthState::Healthy);
    f.tick(); // Halts and sets prod-oslo back to A: a change, so a newer version.
    assert!(f.state.assignment_set_version("prod-oslo") > with_a);
}

#[test]
fn a_cluster_registered_by_a_format_1_entry_keeps_the_versions_it_was_acknowledged_with() {
    let mut f = Fleet::new(&THREE_SITES);
    let before = f.state.last_assignment_version();
    f.ok(Command::AddEnvironment { name: "lab".into() });
    f.state
        .apply_stored(
            &fleet_core::StoredCommand::new(Command::RegisterCluster {
                name: "lab-1".into(),
                site: "oslo".into(),
                environment: "lab".into(),
                labels: BTreeMap::new(),
            }),
            &ctx(f.now, "alice"),
            1,
        )
        .unwrap();
    assert_eq!(f.state.last_assignment_version(), before);
    assert_eq!(f.state.cluster("lab-1").unwrap().registered_version, 0);
}

#[test]
fn status_shows_an_agent_that_still_reports_a_workload_no_longer_assigned() {
    let mut f = Fleet::new(&THREE_SITES);
    f.ok(Command::AddEnvironment { name: "lab".into() });
    f.wait(1_000);
    f.move_prod_oslo_to_lab();
    let rows = |f: &Fleet| -> Vec<fleet_core::StatusRow> {
        f.state
            .status_rows()
            .into_iter()
            .filter(|r| r.cluster == "prod-oslo")
            .collect()
    };
    assert!(rows(&f).iter().all(|r| !r.not_assigned));
    // Its agent has not heard of the change and reports web at A.
    f.wait(1_000);
    f.report("prod-oslo", A, SyncState::Synced, HealthState::Healthy);
    let shown = rows(&f);
    let row = shown
        .iter()
        .find(|r| r.not_assigned)
        .expect("a not-assigned row");
    assert_eq!(row.workload.as_deref(), Some("web"));
    assert_eq!(row.desired_revision, None);
    assert_eq!(row.report.as_ref().unwrap().report.applied_revision, A);
}

#[test]
fn a_freeze_on_the_first_environment_blocks_publishing_unless_overridden() {
    let mut f = Fleet::new(&THREE_SITES);
    f.ok(Command::AddFreeze {
        environment: "staging".into(),
        from_ms: f.now,
        to_ms: f.now + 3_600_000,
    });
    let publish = |override_freeze| Command::PublishRelease {
        workload: "web".into(),
        revision: "cccccccccccccccccccccccccccccccccccccccc".into(),
        allow_rejected: false,
        override_freeze,
    };
    let shown = f.refused(publish(false));
    assert!(
        shown.contains("staging is frozen until") && shown.contains("--override-freeze"),
        "{shown}"
    );
    // Written before the rule, a publish during a freeze replays as it was acknowledged.
    let mut by_format_1 = f.state.clone();
    by_format_1
        .apply_stored(
            &fleet_core::StoredCommand::new(publish(false)),
            &ctx(f.now, "alice"),
            1,
        )
        .unwrap();
    f.ok(publish(true));
    let event = &f.state.audit_events().last().unwrap().summary;
    assert!(
        event.contains("overrides a freeze window of staging"),
        "{event}"
    );
    assert_eq!(
        f.assigned("stg-1").as_deref(),
        Some("cccccccccccccccccccccccccccccccccccccccc")
    );
}

#[test]
fn committed_time_never_goes_backwards_from_format_2() {
    let mut f = Fleet::new(&THREE_SITES);
    let last = f.state.last_time_ms();
    let site = |name: &str| fleet_core::StoredCommand::new(Command::AddSite { name: name.into() });
    // Stamped a second earlier than the last entry (a new leader a little behind, or two
    // writes appended in the other order than they were stamped).
    let earlier = ctx(last - 1_000, "alice");
    let mut by_format_1 = f.state.clone();
    by_format_1
        .apply_stored(&site("tromso"), &earlier, 1)
        .unwrap();
    assert_eq!(
        by_format_1.audit_events().last().unwrap().time_ms,
        last - 1_000
    );
    f.state.apply_stored(&site("tromso"), &earlier, 2).unwrap();
    assert_eq!(f.state.audit_events().last().unwrap().time_ms, last);
    assert_eq!(f.state.last_time_ms(), last);
    f.state.verify_audit().unwrap();
}
