//! Properties of the rollout planner over fleets too many to list: random sites, clusters,
//! wave settings, budgets, max-unavailable, freeze windows, clusters that join and leave
//! during the rollout, and per-cluster outcomes of the new revision (applied and Healthy,
//! failed to apply, Degraded, never Healthy, agent gone silent).
//!
//! The agents here are the outcomes above turned into the status reports an agent commits
//! (`RecordStatus`), as `fleet-node agent` reports them; everything else is the real
//! coordinator logic: commands applied to `State`, planner steps from `rollout::plan`
//! committed as `AdvanceRollout`, exactly as the leader's planner task does.
//!
//! "Runs a revision" below means "is assigned it" (what the coordinator decides); whether the
//! agent applied it is what `status` and the rollout's per-cluster progress show.

use std::collections::{BTreeMap, BTreeSet};

use fleet_core::rollout::{Pipeline, RolloutState, RolloutStep, frozen, plan};
use fleet_core::{Command, Context, HealthState, State, StatusReport, SyncState};
use proptest::prelude::*;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SITES: [&str; 4] = ["s0", "s1", "s2", "s3"];
/// Planner ticks are this far apart (the leader ticks every second; larger steps keep the
/// property fast and change nothing the planner decides on).
const TICK_MS: u64 = 5_000;

/// What a cluster's agent does with revision B (A always applies and is Healthy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Healthy,
    FailsToApply,
    Degraded,
    NeverHealthy,
    Silent,
}

impl Outcome {
    fn fails(self) -> bool {
        self != Outcome::Healthy
    }
}

#[derive(Debug, Clone)]
struct Member {
    site: usize,
    ring: Option<u8>,
    outcome: Outcome,
}

#[derive(Debug, Clone)]
enum Change {
    Join(Member),
    /// Removes the production cluster at this index (modulo their number) of those present.
    Leave(usize),
}

#[derive(Debug, Clone)]
struct Case {
    members: Vec<Member>,
    soak_s: u64,
    max_unavailable: u32,
    failure_budget: u32,
    auto_rollback: bool,
    by_label: bool,
    wave_order: Vec<usize>,
    /// (first tick, ticks) of a freeze window on production.
    freeze: Option<(u64, u64)>,
    /// (tick, change): clusters joining and leaving, all within the first 40 ticks.
    changes: Vec<(u64, Change)>,
}

fn member() -> impl Strategy<Value = Member> {
    (
        0..SITES.len(),
        prop::option::of(0u8..3),
        prop_oneof![
            6 => Just(Outcome::Healthy),
            1 => Just(Outcome::FailsToApply),
            1 => Just(Outcome::Degraded),
            1 => Just(Outcome::NeverHealthy),
            1 => Just(Outcome::Silent),
        ],
    )
        .prop_map(|(site, ring, outcome)| Member {
            site,
            ring,
            outcome,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(member(), 0..8),
        0u64..40,
        1u32..4,
        0u32..3,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(0..SITES.len(), 0..3),
        prop::option::of((1u64..30, 1u64..30)),
        prop::collection::vec(
            (
                0u64..40,
                prop_oneof![
                    member().prop_map(Change::Join),
                    (0usize..8).prop_map(Change::Leave)
                ],
            ),
            0..4,
        ),
    )
        .prop_map(
            |(
                members,
                soak_s,
                max_unavailable,
                failure_budget,
                auto_rollback,
                by_label,
                wave_order,
                freeze,
                changes,
            )| {
                let mut wave_order: Vec<usize> = wave_order;
                wave_order.dedup();
                let mut seen = BTreeSet::new();
                wave_order.retain(|s| seen.insert(*s));
                Case {
                    members,
                    soak_s,
                    max_unavailable,
                    failure_budget,
                    auto_rollback,
                    by_label,
                    wave_order,
                    freeze,
                    changes,
                }
            },
        )
}

struct Sim {
    state: State,
    now: u64,
    outcomes: BTreeMap<String, Outcome>,
}

impl Sim {
    fn run(&mut self, actor: &str, command: Command) {
        let ctx = Context {
            now_ms: self.now,
            actor: actor.into(),
            reason: String::new(),
        };
        self.state
            .apply(&command, &ctx)
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }

    fn register(&mut self, name: &str, env: &str, m: &Member) {
        let labels = m
            .ring
            .map(|r| BTreeMap::from([("ring".to_string(), format!("r{r}"))]))
            .unwrap_or_default();
        self.run(
            "alice",
            Command::RegisterCluster {
                name: name.into(),
                site: SITES[m.site].into(),
                environment: env.into(),
                labels,
            },
        );
        self.outcomes.insert(name.into(), m.outcome);
    }

    fn assigned(&self, cluster: &str) -> Option<String> {
        self.state
            .assignments(cluster)
            .ok()?
            .into_iter()
            .find(|a| a.workload == "web")
            .map(|a| a.revision.to_string())
    }

    fn production(&self) -> Vec<String> {
        self.state
            .clusters()
            .filter(|c| c.environment == "production")
            .map(|c| c.name.clone())
            .collect()
    }

    /// Every agent that is not silent reports what it makes of its assignment.
    fn agents_report(&mut self) {
        let clusters: Vec<String> = self.state.clusters().map(|c| c.name.clone()).collect();
        for c in clusters {
            let Some(desired) = self.assigned(&c) else {
                continue;
            };
            let outcome = if desired == B {
                self.outcomes[&c]
            } else {
                Outcome::Healthy
            };
            let (applied, sync, health) = match outcome {
                Outcome::Silent => continue,
                Outcome::Healthy => (desired.clone(), SyncState::Synced, HealthState::Healthy),
                Outcome::FailsToApply => (A.to_string(), SyncState::Failed, HealthState::Healthy),
                Outcome::Degraded => (desired.clone(), SyncState::Synced, HealthState::Degraded),
                Outcome::NeverHealthy => {
                    (desired.clone(), SyncState::Synced, HealthState::Progressing)
                }
            };
            let report = StatusReport {
                workload: "web".into(),
                applied_revision: applied,
                desired_revision: desired,
                assignment_version: 1,
                render_hash: String::new(),
                sync,
                health,
                error: if sync == SyncState::Failed {
                    "apply failed".into()
                } else {
                    String::new()
                },
                drift_count: 0,
                objects: Vec::new(),
                objects_omitted: 0,
            };
            self.run("agent", Command::RecordStatus { cluster: c, report });
        }
    }
}

fn promote() -> Command {
    Command::Promote {
        workload: "web".into(),
        environment: "production".into(),
        revision: None,
        allow_rejected: false,
        override_freeze: false,
    }
}

/// A fleet whose production runs A (every cluster Healthy on it), with B verified in staging
/// and the case's pipeline set.
fn fleet(case: &Case) -> Sim {
    let mut sim = Sim {
        state: State::default(),
        now: 1_000_000_000,
        outcomes: BTreeMap::new(),
    };
    for s in SITES {
        sim.run("alice", Command::AddSite { name: s.into() });
    }
    let staging = Member {
        site: 0,
        ring: None,
        outcome: Outcome::Healthy,
    };
    sim.register("stg", "staging", &staging);
    for (i, m) in case.members.iter().enumerate() {
        sim.register(&format!("p{i}"), "production", m);
    }
    sim.run(
        "alice",
        Command::CreateWorkload {
            name: "web".into(),
            repo_url: "https://git.example/web.git".into(),
            path_template: "overlays/{environment}".into(),
        },
    );
    let mut pipeline = Pipeline::default_for(&["staging".into(), "production".into()]);
    pipeline.soak_ms = 0;
    sim.run(
        "alice",
        Command::SetPipeline {
            workload: "web".into(),
            pipeline: pipeline.clone(),
        },
    );
    // A everywhere, the ordinary way.
    for revision in [A, B] {
        sim.run(
            "alice",
            Command::PublishRelease {
                workload: "web".into(),
                revision: revision.into(),
                allow_rejected: false,
                override_freeze: false,
            },
        );
        sim.agents_report();
        if revision == B {
            break;
        }
        sim.run("alice", promote());
        for _ in 0..100 {
            for command in plan(&sim.state, sim.now) {
                sim.run("planner", command);
            }
            sim.agents_report();
            sim.now += TICK_MS;
        }
        let r = sim.state.rollout("web", "production").unwrap();
        assert_eq!(r.state, RolloutState::Succeeded, "A reaches production");
    }
    pipeline.soak_ms = case.soak_s * 1000;
    pipeline.max_unavailable = case.max_unavailable;
    pipeline.failure_budget = case.failure_budget;
    pipeline.auto_rollback = case.auto_rollback;
    pipeline.unreachable_timeout_ms = 120_000;
    pipeline.progress_deadline_ms = 60_000;
    if case.by_label {
        pipeline.wave_label = Some("ring".into());
        pipeline.wave_order = case.wave_order.iter().map(|r| format!("r{r}")).collect();
    } else {
        pipeline.wave_order = case.wave_order.iter().map(|s| SITES[*s].into()).collect();
    }
    sim.run(
        "alice",
        Command::SetPipeline {
            workload: "web".into(),
            pipeline,
        },
    );
    // B verified in staging for the soak.
    sim.agents_report();
    sim.now += case.soak_s * 1000;
    sim.agents_report();
    sim
}

/// Most ticks a rollout may take once the clusters stop changing: every wave soaks and every
/// cluster may run into the longest timeout, one after the other.
fn tick_bound(case: &Case, clusters: usize) -> u64 {
    let per_cluster_ms = 120_000 + 60_000 + 2 * TICK_MS;
    let freeze = case.freeze.map_or(0, |(from, ticks)| from + ticks);
    let ms = (clusters as u64 + 1) * (per_cluster_ms + case.soak_s * 1000 + TICK_MS);
    40 + freeze + ms / TICK_MS
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let mut sim = fleet(&case);
    let freeze = case.freeze.map(|(from, ticks)| {
        let from_ms = sim.now + from * TICK_MS;
        (from_ms, from_ms + ticks * TICK_MS)
    });
    if let Some((from_ms, to_ms)) = freeze {
        sim.run(
            "alice",
            Command::AddFreeze {
                environment: "production".into(),
                from_ms,
                to_ms,
            },
        );
    }
    sim.run("alice", promote());
    let mut steps = 0usize;
    let mut ever_in_rollout: BTreeSet<String> = sim.production().into_iter().collect();
    let mut joined = 0;
    let mut tick = 0u64;
    loop {
        for (_, change) in case.changes.iter().filter(|(at, _)| *at == tick) {
            match change {
                Change::Join(m) => {
                    let name = format!("j{joined}");
                    joined += 1;
                    sim.register(&name, "production", m);
                    ever_in_rollout.insert(name);
                }
                Change::Leave(i) => {
                    let present = sim.production();
                    if !present.is_empty() {
                        let name = present[i % present.len()].clone();
                        sim.run("alice", Command::RemoveCluster { name });
                    }
                }
            }
        }
        let r = sim.state.rollout("web", "production").unwrap().clone();
        for command in plan(&sim.state, sim.now) {
            let Command::AdvanceRollout { step, .. } = &command else {
                unreachable!()
            };
            steps += 1;
            let in_freeze = frozen(sim.state.freezes(), "production", sim.now).is_some();
            match step {
                RolloutStep::Update { clusters } => {
                    prop_assert!(!in_freeze, "no update during a freeze");
                    let wave = &r.waves[r.wave as usize].clusters; // An update has a wave.
                    prop_assert!(
                        clusters.iter().all(|c| wave.contains(c)),
                        "updates only the current wave: {clusters:?} of {wave:?}"
                    );
                }
                RolloutStep::StartWave { .. } => {
                    prop_assert!(!in_freeze, "no wave starts during a freeze")
                }
                _ => {}
            }
            sim.run("planner", command);
        }
        let r = sim.state.rollout("web", "production").unwrap().clone();
        // Never more set aside than the budget, and never a cluster that did not fail.
        prop_assert!(r.set_aside.len() as u32 <= case.failure_budget);
        for c in r.set_aside.keys() {
            prop_assert!(sim.outcomes[c].fails(), "{c} set aside but Healthy");
        }
        if let Some(wave) = r.waves.get(r.wave as usize)
            && r.state == RolloutState::Running
        {
            let progress: BTreeMap<String, String> =
                fleet_core::rollout::rollout_progress(&sim.state, &r, sim.now)
                    .into_iter()
                    .map(|(c, p)| (c, p.label().to_string()))
                    .collect();
            let changing = wave
                .clusters
                .iter()
                .filter(|c| {
                    matches!(
                        progress.get(*c).map(String::as_str),
                        Some("updating" | "unreachable" | "failed")
                    )
                })
                .count();
            prop_assert!(
                changing as u32 <= case.max_unavailable,
                "{changing} changing, max unavailable {}",
                case.max_unavailable
            );
        }
        if !r.state.is_active() {
            let production = sim.production();
            let desired = sim.state.workload("web").unwrap().desired["production"].to_string();
            let failing: Vec<&String> = production
                .iter()
                .filter(|c| sim.outcomes[*c].fails())
                .collect();
            match r.state {
                RolloutState::Succeeded | RolloutState::SucceededWithFailures => {
                    prop_assert_eq!(&desired, B);
                    for c in &production {
                        // The environment reports B: every one of its clusters is assigned B.
                        prop_assert_eq!(sim.assigned(c), Some(B.to_string()), "{}", c);
                    }
                    let set_aside: Vec<&String> = r.set_aside.keys().collect();
                    prop_assert_eq!(&set_aside, &failing, "the failed clusters are set aside");
                    prop_assert_eq!(r.state == RolloutState::Succeeded, failing.is_empty());
                    for c in &set_aside {
                        prop_assert!(r.message.contains(c.as_str()), "{}", r.message);
                    }
                }
                RolloutState::RolledBack | RolloutState::Halted => {
                    prop_assert!(case.failure_budget < failing.len() as u32);
                    prop_assert_eq!(r.state == RolloutState::RolledBack, case.auto_rollback);
                    prop_assert_eq!(&desired, A);
                    if r.state == RolloutState::RolledBack {
                        for c in &production {
                            prop_assert_eq!(sim.assigned(c), Some(A.to_string()), "{}", c);
                        }
                    }
                }
                other => prop_assert!(false, "ended {other:?}"),
            }
            // Ends within a bounded number of committed planner steps: per cluster an update
            // and a set-aside, per wave a start, and the last step.
            let bound = 2 * ever_in_rollout.len() + r.waves.len() + 1;
            prop_assert!(steps <= bound, "{steps} steps, bound {bound}");
            sim.state.verify_audit().unwrap();
            return Ok(());
        }
        prop_assert!(
            tick <= tick_bound(&case, ever_in_rollout.len()),
            "the rollout did not end within {tick} ticks: {:?}, held by {:?}",
            r.state,
            fleet_core::rollout::hold(&sim.state, &r, sim.now).map(|h| h.to_string())
        );
        sim.agents_report();
        sim.now += TICK_MS;
        tick += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_rollout_ends_and_never_reports_a_revision_a_cluster_of_the_environment_does_not_run(
        case in case()
    ) {
        check(case)?;
    }
}
