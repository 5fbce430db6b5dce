//! Promotion across environments: pipelines, the promotion gate, rollouts in waves, rollback
//! that sticks, approvals and freeze windows.
//!
//! The planner is pure. [`plan`] looks at the state and a time and returns the steps to take
//! as commands ([`Command::AdvanceRollout`]); the node proposes them, and applying one checks
//! that it is still exactly the step the planner takes at the command's time, so a step
//! computed on stale state is refused and changes nothing. Every decision is therefore a
//! committed, audited command.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::error::CoreError;
use crate::limits::STATUS_REFRESH_MS;
use crate::model::{HealthState, Revision, SyncState, TimeMs};
use crate::state::State;

/// Default time a revision must stay applied and Healthy before it counts as verified.
pub const DEFAULT_SOAK_MS: u64 = 60_000;
/// Longest soak a pipeline may ask for (7 days).
pub const MAX_SOAK_MS: u64 = 7 * 24 * 3600 * 1000;
/// Default time after which an unreachable cluster counts against the failure budget.
pub const DEFAULT_UNREACHABLE_TIMEOUT_MS: u64 = 5 * 60_000;
/// A cluster whose agent has committed no report for this long is shown as unreachable (an
/// agent that is alive commits at least every [`STATUS_REFRESH_MS`]).
pub const UNREACHABLE_AFTER_MS: u64 = 2 * STATUS_REFRESH_MS;
/// Most freeze windows in the fleet.
pub const MAX_FREEZES: usize = 256;
/// Most approvals an environment may require.
pub const MAX_REQUIRED_APPROVALS: u32 = 16;
/// Desired revisions remembered per workload and environment (for rollback targets).
pub const MAX_HISTORY_PER_ENVIRONMENT: usize = 100;
/// Finished rollouts kept per workload and environment.
pub const MAX_FINISHED_ROLLOUTS_KEPT: usize = 20;

/// How a workload moves through the environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// In order; a published release goes to the first.
    pub environments: Vec<String>,
    /// How long a revision must be applied and Healthy everywhere in an environment (or a wave)
    /// before the next environment (or wave) may take it.
    pub soak_ms: u64,
    /// Waves by site in this order; sites not listed follow in name order.
    pub wave_order: Vec<String>,
    /// When set, waves are by the value of this cluster label instead of by site (clusters
    /// without the label form the last wave, named `-`).
    pub wave_label: Option<String>,
    /// Most clusters of a wave that change (are updated and not yet Healthy) at once.
    pub max_unavailable: u32,
    /// Failed, Degraded or long-unreachable clusters a rollout tolerates; one more halts it.
    pub failure_budget: u32,
    /// Roll back every cluster the rollout changed when it halts.
    pub auto_rollback: bool,
    /// After this long without a report, an unreachable cluster counts against the budget.
    pub unreachable_timeout_ms: u64,
}

impl Pipeline {
    /// All environments in fleet order, one-minute soak, waves by site in name order, one
    /// cluster at a time, no failure tolerated, automatic rollback.
    pub fn default_for(environments: &[String]) -> Self {
        Pipeline {
            environments: environments.to_vec(),
            soak_ms: DEFAULT_SOAK_MS,
            wave_order: Vec::new(),
            wave_label: None,
            max_unavailable: 1,
            failure_budget: 0,
            auto_rollback: true,
            unreachable_timeout_ms: DEFAULT_UNREACHABLE_TIMEOUT_MS,
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    AwaitingApproval,
    Running,
    Paused,
    /// Stopped on the failure budget without rolling back.
    Halted,
    /// Stopped on the failure budget and every changed cluster set back.
    RolledBack,
    Succeeded,
    Aborted,
}

impl RolloutState {
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RolloutState::AwaitingApproval | RolloutState::Running | RolloutState::Paused
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::AwaitingApproval => "awaiting_approval",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// The site, or the label value.
    pub name: String,
    /// In name order.
    pub clusters: Vec<String>,
}

/// One promotion of a revision into one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    pub workload: String,
    pub environment: String,
    pub revision: Revision,
    /// Each cluster's revision when the rollout started (none: it had no assignment).
    pub from: BTreeMap<String, Option<Revision>>,
    pub waves: Vec<Wave>,
    /// Index of the current wave.
    pub wave: u32,
    /// Clusters assigned the new revision so far.
    pub updated: BTreeSet<String>,
    pub state: RolloutState,
    pub required_approvals: u32,
    pub approvals: BTreeSet<String>,
    pub started_by: String,
    pub started_at_ms: TimeMs,
    pub finished_at_ms: Option<TimeMs>,
    pub override_freeze: bool,
    pub allow_rejected: bool,
    /// Why it halted or was rolled back.
    pub message: String,
}

/// A freeze window: no promotion into `environment` starts or advances between `from_ms` and
/// `to_ms` unless it overrides the freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub id: u64,
    pub environment: String,
    pub from_ms: TimeMs,
    pub to_ms: TimeMs,
    pub reason: String,
    pub created_by: String,
}

/// One step of a rollout, decided by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum RolloutStep {
    /// Assign the new revision to these clusters of the current wave.
    Update { clusters: Vec<String> },
    /// The current wave has been Healthy for the soak time; start the next one.
    StartWave { wave: u32 },
    /// The last wave has been Healthy for the soak time.
    Succeed,
    /// Over the failure budget.
    Halt {
        reason: String,
        failed: Vec<String>,
        rollback: bool,
    },
}

/// A cluster's part in a rollout, from its agent's committed reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not assigned the new revision yet.
    Pending,
    /// Assigned, not yet applied and Healthy.
    Updating,
    /// Applied and Healthy since this time.
    Healthy { since_ms: TimeMs },
    /// Failed to apply it, or it runs Degraded.
    Failed { why: String },
    /// No report for [`UNREACHABLE_AFTER_MS`]; `silent_ms` since the last one.
    Unreachable { silent_ms: u64 },
    /// The rollout was rolled back and this cluster set back to its revision from before.
    RolledBack,
}

impl Progress {
    pub fn label(&self) -> &'static str {
        match self {
            Progress::Pending => "pending",
            Progress::Updating => "updating",
            Progress::Healthy { .. } => "healthy",
            Progress::Failed { .. } => "failed",
            Progress::Unreachable { .. } => "unreachable",
            Progress::RolledBack => "rolled_back",
        }
    }
}

/// How `cluster` stands with `revision` of `workload` at `now_ms`, from its committed reports.
pub fn cluster_progress(
    state: &State,
    cluster: &str,
    workload: &str,
    revision: &Revision,
    since_ms: TimeMs,
    now_ms: TimeMs,
) -> Progress {
    let report = state.report(cluster, workload);
    let last = report.map_or(since_ms, |r| r.reported_at_ms);
    let silent_ms = now_ms.saturating_sub(last);
    let Some(r) = report else {
        return if silent_ms >= UNREACHABLE_AFTER_MS {
            Progress::Unreachable { silent_ms }
        } else {
            Progress::Updating
        };
    };
    let about_it = r.report.desired_revision == revision.0;
    if about_it && r.report.sync == SyncState::Failed {
        return Progress::Failed {
            why: r.report.error.clone(),
        };
    }
    if r.report.applied_revision == revision.0 && r.report.health == HealthState::Degraded {
        return Progress::Failed {
            why: "Degraded".into(),
        };
    }
    if silent_ms >= UNREACHABLE_AFTER_MS {
        return Progress::Unreachable { silent_ms };
    }
    match (r.report.applied_revision == revision.0, r.healthy_since_ms) {
        (true, Some(since_ms)) => Progress::Healthy { since_ms },
        _ => Progress::Updating,
    }
}

/// The rollout's clusters as the planner sees them, in wave order.
pub fn rollout_progress(state: &State, r: &Rollout, now_ms: TimeMs) -> Vec<(String, Progress)> {
    r.waves
        .iter()
        .flat_map(|w| w.clusters.iter())
        // A cluster removed during the rollout drops out of it.
        .filter(|c| state.cluster(c).is_ok())
        .map(|c| {
            let p = if r.state == RolloutState::RolledBack && r.updated.contains(c) {
                Progress::RolledBack
            } else if r.updated.contains(c) {
                cluster_progress(state, c, &r.workload, &r.revision, r.started_at_ms, now_ms)
            } else {
                Progress::Pending
            };
            (c.clone(), p)
        })
        .collect()
}

/// Whether a freeze window covers `environment` at `now_ms`.
pub fn frozen<'a>(
    freezes: impl IntoIterator<Item = &'a Freeze>,
    environment: &str,
    now_ms: TimeMs,
) -> Option<&'a Freeze> {
    freezes
        .into_iter()
        .find(|f| f.environment == environment && f.from_ms <= now_ms && now_ms < f.to_ms)
}

/// The next step of a running rollout at `now_ms`, if any.
pub fn next_step(state: &State, r: &Rollout, now_ms: TimeMs) -> Option<RolloutStep> {
    if r.state != RolloutState::Running {
        return None;
    }
    let pipeline = state.pipeline(&r.workload);
    let progress: BTreeMap<String, Progress> =
        rollout_progress(state, r, now_ms).into_iter().collect();
    let failed: Vec<(&String, String)> = progress
        .iter()
        .filter_map(|(c, p)| match p {
            Progress::Failed { why } => Some((c, why.clone())),
            Progress::Unreachable { silent_ms }
                if *silent_ms >= pipeline.unreachable_timeout_ms =>
            {
                Some((c, format!("unreachable for {} s", silent_ms / 1000)))
            }
            _ => None,
        })
        .collect();
    if failed.len() as u32 > pipeline.failure_budget {
        let detail: Vec<String> = failed
            .iter()
            .map(|(c, why)| format!("{c}: {why}"))
            .collect();
        return Some(RolloutStep::Halt {
            reason: format!(
                "{} failed clusters, over the failure budget of {}: {}",
                failed.len(),
                pipeline.failure_budget,
                detail.join("; ")
            ),
            failed: failed.iter().map(|(c, _)| (*c).clone()).collect(),
            rollback: pipeline.auto_rollback,
        });
    }
    let blocked = !r.override_freeze && frozen(state.freezes(), &r.environment, now_ms).is_some();
    let Some(wave) = r.waves.get(r.wave as usize) else {
        return Some(RolloutStep::Succeed); // No clusters in the environment.
    };
    let in_flight = wave
        .clusters
        .iter()
        .filter(|c| {
            matches!(
                progress.get(*c),
                Some(Progress::Updating | Progress::Failed { .. } | Progress::Unreachable { .. })
            )
        })
        .count() as u32;
    let pending: Vec<&String> = wave
        .clusters
        .iter()
        .filter(|c| matches!(progress.get(*c), Some(Progress::Pending)))
        .collect();
    if !pending.is_empty() {
        let room = pipeline.max_unavailable.saturating_sub(in_flight) as usize;
        if blocked || room == 0 {
            return None;
        }
        return Some(RolloutStep::Update {
            clusters: pending.into_iter().take(room).cloned().collect(),
        });
    }
    if in_flight > 0 {
        return None;
    }
    let healthy_since = wave
        .clusters
        .iter()
        .filter_map(|c| match progress.get(c) {
            Some(Progress::Healthy { since_ms }) => Some(*since_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if now_ms.saturating_sub(healthy_since) < pipeline.soak_ms {
        return None;
    }
    if r.wave as usize + 1 >= r.waves.len() {
        Some(RolloutStep::Succeed)
    } else if blocked {
        None
    } else {
        Some(RolloutStep::StartWave { wave: r.wave + 1 })
    }
}

/// Every step to take now, one per running rollout, as commands to propose.
pub fn plan(state: &State, now_ms: TimeMs) -> Vec<Command> {
    state
        .rollouts()
        .filter_map(|r| {
            next_step(state, r, now_ms).map(|step| Command::AdvanceRollout {
                workload: r.workload.clone(),
                environment: r.environment.clone(),
                rollout: r.id,
                step,
            })
        })
        .collect()
}

/// The waves of `clusters` (all in one environment) under `pipeline`.
pub fn waves<'a>(
    pipeline: &Pipeline,
    clusters: impl IntoIterator<Item = &'a crate::model::Cluster>,
) -> Vec<Wave> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in clusters {
        let key = match &pipeline.wave_label {
            Some(label) => c.labels.get(label).cloned().unwrap_or_else(|| "-".into()),
            None => c.site.clone(),
        };
        groups.entry(key).or_default().push(c.name.clone());
    }
    let mut out = Vec::new();
    for name in &pipeline.wave_order {
        if let Some(mut clusters) = groups.remove(name) {
            clusters.sort();
            out.push(Wave {
                name: name.clone(),
                clusters,
            });
        }
    }
    let unlabelled = groups.remove("-").filter(|_| pipeline.wave_label.is_some());
    for (name, mut clusters) in groups
        .into_iter()
        .chain(unlabelled.map(|c| ("-".into(), c)))
    {
        clusters.sort();
        out.push(Wave { name, clusters });
    }
    out
}

/// Why promoting `revision` of `workload` into the environment after `previous` is not allowed
/// yet: one line per cluster of `previous` that has not verified it.
pub fn gate_failures(
    state: &State,
    workload: &str,
    previous: &str,
    revision: &Revision,
    soak_ms: u64,
    now_ms: TimeMs,
) -> Vec<String> {
    let clusters: Vec<&crate::model::Cluster> = state
        .clusters()
        .filter(|c| c.environment == previous)
        .collect();
    if clusters.is_empty() {
        return vec![format!(
            "{previous} has no clusters to verify {} on",
            short(revision)
        )];
    }
    let mut out = Vec::new();
    for c in clusters {
        let Some(r) = state.report(&c.name, workload) else {
            out.push(format!("{}: no report yet", c.name));
            continue;
        };
        let rep = &r.report;
        if rep.applied_revision != revision.0 {
            let applied = if rep.applied_revision.is_empty() {
                "nothing".to_string()
            } else {
                rep.applied_revision.chars().take(12).collect()
            };
            out.push(format!(
                "{}: runs {applied}, not {}",
                c.name,
                short(revision)
            ));
            continue;
        }
        match r.healthy_since_ms {
            None => out.push(format!(
                "{}: not Healthy and Synced (health {:?}, sync {:?})",
                c.name, rep.health, rep.sync
            )),
            Some(since) if now_ms.saturating_sub(since) < soak_ms => out.push(format!(
                "{}: Healthy for {} s of the {} s soak",
                c.name,
                now_ms.saturating_sub(since) / 1000,
                soak_ms / 1000
            )),
            Some(_) => {
                if now_ms.saturating_sub(r.reported_at_ms) >= UNREACHABLE_AFTER_MS {
                    out.push(format!(
                        "{}: unreachable (no report for {} s)",
                        c.name,
                        now_ms.saturating_sub(r.reported_at_ms) / 1000
                    ));
                }
            }
        }
    }
    out
}

pub fn short(revision: &Revision) -> String {
    revision.0.chars().take(12).collect()
}

/// Checks a pipeline against the fleet: its environments exist and, when waves are by site,
/// the sites of its wave order. Its shape is checked by [`crate::validate::pipeline`].
pub fn validate_pipeline(state: &State, p: &Pipeline) -> Result<(), CoreError> {
    for e in &p.environments {
        if state.environment(e).is_none() {
            return Err(CoreError::not_found(
                "environment",
                e,
                "add it with `fleet-ctl environment add NAME` or leave it out",
            ));
        }
    }
    if p.wave_label.is_none() {
        for s in &p.wave_order {
            if state.sites().all(|site| &site.name != s) {
                return Err(CoreError::not_found(
                    "site",
                    s,
                    "--wave-order lists sites; list them with `fleet-ctl site list`",
                ));
            }
        }
    }
    Ok(())
}
