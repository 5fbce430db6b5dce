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
pub use crate::limits::{
    MAX_CLUSTERS_IN_REASON, MAX_CLUSTERS_PER_STEP, MAX_FINISHED_ROLLOUTS_KEPT, MAX_FREEZES,
    MAX_HISTORY_PER_ENVIRONMENT, MAX_REQUIRED_APPROVALS, MAX_SOAK_MS, MAX_WHY_CHARS,
};
use crate::model::{HealthState, Revision, SyncState, TimeMs};
use crate::state::State;

/// Default time a revision must stay applied and Healthy before it counts as verified.
pub const DEFAULT_SOAK_MS: u64 = 60_000;
/// Default time after which an unreachable cluster counts against the failure budget.
pub const DEFAULT_UNREACHABLE_TIMEOUT_MS: u64 = 5 * 60_000;
/// A cluster whose agent has committed no report for this long is shown as unreachable (an
/// agent that is alive commits at least every [`STATUS_REFRESH_MS`]).
pub const UNREACHABLE_AFTER_MS: u64 = 2 * STATUS_REFRESH_MS;
/// Default time an updated cluster has to become Healthy before it counts as failed (Argo
/// Rollouts' `progressDeadlineSeconds` defaults to the same 10 minutes).
pub const DEFAULT_PROGRESS_DEADLINE_MS: u64 = 10 * 60_000;
/// The entry format from which a rollout follows the planner rules of this build: it keeps
/// the pipeline it started with, a failure within the budget is set aside, a cluster that
/// joins the environment joins the rollout, and an updated cluster has a progress deadline.
/// A rollout started by an older entry keeps the rules it started under (see [`Rollout::rules`]),
/// so a log replayed by this build reaches the state that was acknowledged.
pub const ROLLOUT_RULES_V2: u32 = 2;

fn default_progress_deadline_ms() -> u64 {
    DEFAULT_PROGRESS_DEADLINE_MS
}

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
    /// Failed, Degraded, long-unreachable or past-deadline clusters a rollout tolerates (from
    /// rules 2 they are set aside and the waves go on); one more halts it.
    pub failure_budget: u32,
    /// Roll back every cluster the rollout changed when it halts.
    pub auto_rollback: bool,
    /// After this long without a report, an unreachable cluster counts against the budget.
    pub unreachable_timeout_ms: u64,
    /// An updated cluster that is still not Healthy this long after its update counts against
    /// the budget (rollouts started from entry format 2). Absent in pipelines set before it
    /// existed: [`DEFAULT_PROGRESS_DEADLINE_MS`].
    #[serde(default = "default_progress_deadline_ms")]
    pub progress_deadline_ms: u64,
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
            progress_deadline_ms: DEFAULT_PROGRESS_DEADLINE_MS,
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
    /// Every wave done, with clusters that failed within the failure budget set aside
    /// ([`Rollout::set_aside`] names them): they are assigned the revision but do not run it.
    SucceededWithFailures,
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
            RolloutState::SucceededWithFailures => "succeeded_with_failures",
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
    /// The rules it follows: the entry format of the `Promote` that started it (0 in rollouts
    /// from before this field). From [`ROLLOUT_RULES_V2`] on, the rules of this build.
    #[serde(default)]
    pub rules: u32,
    /// The pipeline settings it runs with, as they were when it started (rules 2 on); absent:
    /// the workload's pipeline now.
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// When each updated cluster was assigned the revision (rules 2 on).
    #[serde(default)]
    pub updated_at_ms: BTreeMap<String, TimeMs>,
    /// Clusters that failed within the failure budget, and why (rules 2 on). They keep the
    /// revision's assignment, count against the budget and no longer hold their wave.
    #[serde(default)]
    pub set_aside: BTreeMap<String, String>,
}

impl Rollout {
    /// The pipeline settings this rollout runs with: those it started with, or for a rollout
    /// from before rules 2, the workload's pipeline now.
    pub fn settings(&self, state: &State) -> Pipeline {
        self.pipeline
            .clone()
            .unwrap_or_else(|| state.pipeline(&self.workload))
    }

    /// Whether it follows the rules of this build ([`ROLLOUT_RULES_V2`]).
    pub fn follows_v2(&self) -> bool {
        self.rules >= ROLLOUT_RULES_V2
    }
}

/// A freeze window: between `from_ms` and `to_ms` no promotion into `environment` starts or
/// advances, and (from entry format 2) no release is published into it where it is a
/// workload's first environment, unless the command overrides the freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub id: u64,
    pub environment: String,
    pub from_ms: TimeMs,
    pub to_ms: TimeMs,
    pub reason: String,
    pub created_by: String,
}

impl Freeze {
    /// Why a command into `environment` is refused during this window: "ENV is frozen until
    /// TIME (freeze ID: REASON)".
    pub fn refusal(&self, environment: &str) -> String {
        format!(
            "{environment} is frozen until {} (freeze {}{})",
            crate::promotion::time(self.to_ms),
            self.id,
            if self.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", self.reason)
            }
        )
    }
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
    /// These clusters failed, within the failure budget: record them and go on without them
    /// (rules 2 on). `why` is one line per cluster, in the order of `clusters`.
    SetAside {
        clusters: Vec<String>,
        why: Vec<String>,
    },
    /// Over the failure budget. `failed` names at most [`MAX_CLUSTERS_PER_STEP`] clusters.
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
    /// It failed within the failure budget and the rollout went on without it.
    SetAside { why: String },
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
            Progress::SetAside { .. } => "set_aside",
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
    let about_it = r.report.desired_revision == *revision.as_str();
    if about_it && r.report.sync == SyncState::Failed {
        return Progress::Failed {
            why: r.report.error.clone(),
        };
    }
    if r.report.applied_revision == *revision.as_str() && r.report.health == HealthState::Degraded {
        return Progress::Failed {
            why: "Degraded".into(),
        };
    }
    if silent_ms >= UNREACHABLE_AFTER_MS {
        return Progress::Unreachable { silent_ms };
    }
    match (
        r.report.applied_revision == *revision.as_str(),
        r.healthy_since_ms,
    ) {
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
            } else if let Some(why) = r.set_aside.get(c) {
                Progress::SetAside { why: why.clone() }
            } else if r.updated.contains(c) {
                let since = r.updated_at_ms.get(c).copied().unwrap_or(r.started_at_ms);
                cluster_progress(state, c, &r.workload, &r.revision, since, now_ms)
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

/// The next step of a running rollout at `now_ms`, if any, by the rules the rollout follows.
pub fn next_step(state: &State, r: &Rollout, now_ms: TimeMs) -> Option<RolloutStep> {
    if r.follows_v2() {
        decide(state, r, now_ms).ok()
    } else {
        next_step_v1(state, r, now_ms)
    }
}

/// What holds a rollout at `now_ms`: why the planner takes no step. `None` while it has a
/// step to take and once it has finished.
pub fn hold(state: &State, r: &Rollout, now_ms: TimeMs) -> Option<Hold> {
    if !r.state.is_active() || next_step(state, r, now_ms).is_some() {
        return None;
    }
    decide(state, r, now_ms).err()
}

/// Why a rollout takes no step now; shown by `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// It waits for approvals.
    Approval { have: u32, need: u32 },
    /// An operator paused it.
    Paused,
    /// A freeze window covers the environment.
    Freeze {
        id: u64,
        until_ms: TimeMs,
        reason: String,
    },
    /// Clusters of the wave wait while `changing` use all `max_unavailable` slots.
    MaxUnavailable {
        changing: Vec<String>,
        max_unavailable: u32,
        waiting: u32,
    },
    /// Every cluster of the wave is updated; these are not Healthy yet.
    Changing { clusters: Vec<String> },
    /// The wave is Healthy and soaks; `remaining_ms` to go.
    Soak { wave: String, remaining_ms: u64 },
    /// Not running and not waiting for anything the planner can see.
    Finished,
}

impl Hold {
    /// Short name: approval, paused, freeze, max_unavailable, changing, soak or finished.
    pub fn kind(&self) -> &'static str {
        match self {
            Hold::Approval { .. } => "approval",
            Hold::Paused => "paused",
            Hold::Freeze { .. } => "freeze",
            Hold::MaxUnavailable { .. } => "max_unavailable",
            Hold::Changing { .. } => "changing",
            Hold::Soak { .. } => "soak",
            Hold::Finished => "finished",
        }
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Approval { have, need } => {
                write!(
                    f,
                    "approval: {have} of {need} approvals; `fleet-ctl approve`"
                )
            }
            Hold::Paused => write!(f, "paused: `fleet-ctl rollout resume` continues it"),
            Hold::Freeze {
                id,
                until_ms,
                reason,
            } => {
                write!(
                    f,
                    "freeze {id} until {}{}",
                    crate::promotion::time(*until_ms),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                )
            }
            Hold::MaxUnavailable {
                changing,
                max_unavailable,
                waiting,
            } => write!(
                f,
                "max unavailable {max_unavailable}: {waiting} clusters wait while {} change",
                changing.join(", ")
            ),
            Hold::Changing { clusters } => {
                write!(f, "changing: {} not Healthy yet", clusters.join(", "))
            }
            Hold::Soak { wave, remaining_ms } => write!(
                f,
                "soak: wave {wave} Healthy, {} s of the soak to go",
                remaining_ms.div_ceil(1000)
            ),
            Hold::Finished => write!(f, "finished"),
        }
    }
}

/// The planner by the rules of entry format 2 on (the rollout's [`Rollout::rules`]): the next
/// step, or what holds the rollout.
///
/// 1. A cluster that failed (sync Failed on this revision, Degraded on it, unreachable for the
///    pipeline's `unreachable_timeout_ms`, or not Healthy `progress_deadline_ms` after its
///    update) and is not set aside yet counts against the failure budget together with those
///    set aside before: over the budget the rollout halts (rolling back if the pipeline says
///    so), within it the new failures are set aside.
/// 2. In the current wave, pending clusters are updated while fewer than `max_unavailable`
///    are changing (updated, not yet Healthy, not set aside). A freeze window holds updates.
/// 3. When no cluster of the wave is pending or changing, and the wave's Healthy clusters
///    have been Healthy for the soak, the next wave starts (a freeze holds it), or after the
///    last wave the rollout succeeds.
fn decide(state: &State, r: &Rollout, now_ms: TimeMs) -> Result<RolloutStep, Hold> {
    match r.state {
        RolloutState::Running => {}
        RolloutState::AwaitingApproval => {
            return Err(Hold::Approval {
                have: r.approvals.len() as u32,
                need: r.required_approvals,
            });
        }
        RolloutState::Paused => return Err(Hold::Paused),
        _ => return Err(Hold::Finished),
    }
    let pipeline = r.settings(state);
    let progress: BTreeMap<String, Progress> =
        rollout_progress(state, r, now_ms).into_iter().collect();
    let mut failed: Vec<(String, String)> = Vec::new();
    for (c, p) in &progress {
        let why = match p {
            Progress::Failed { why } => why.clone(),
            Progress::Unreachable { silent_ms }
                if *silent_ms >= pipeline.unreachable_timeout_ms =>
            {
                format!("unreachable for {} s", silent_ms / 1000)
            }
            Progress::Updating => {
                let since = r.updated_at_ms.get(c).copied().unwrap_or(r.started_at_ms);
                let for_ms = now_ms.saturating_sub(since);
                if for_ms < pipeline.progress_deadline_ms {
                    continue;
                }
                format!(
                    "not Healthy {} s after its update (progress deadline {} s)",
                    for_ms / 1000,
                    pipeline.progress_deadline_ms / 1000
                )
            }
            _ => continue,
        };
        failed.push((c.clone(), why.chars().take(MAX_WHY_CHARS).collect()));
    }
    let total = r.set_aside.len() + failed.len();
    if total as u32 > pipeline.failure_budget {
        let mut detail: Vec<String> = r
            .set_aside
            .iter()
            .map(|(c, why)| format!("{c}: {why} (set aside before)"))
            .chain(failed.iter().map(|(c, why)| format!("{c}: {why}")))
            .take(MAX_CLUSTERS_IN_REASON)
            .collect();
        if total > MAX_CLUSTERS_IN_REASON {
            detail.push(format!("and {} more", total - MAX_CLUSTERS_IN_REASON));
        }
        let mut names: Vec<String> = r.set_aside.keys().cloned().collect();
        names.extend(failed.iter().map(|(c, _)| c.clone()));
        names.truncate(MAX_CLUSTERS_PER_STEP);
        return Ok(RolloutStep::Halt {
            reason: format!(
                "{total} failed clusters, over the failure budget of {}: {}",
                pipeline.failure_budget,
                detail.join("; ")
            ),
            failed: names,
            rollback: pipeline.auto_rollback,
        });
    }
    if !failed.is_empty() {
        failed.truncate(MAX_CLUSTERS_PER_STEP);
        let (clusters, why) = failed.into_iter().unzip();
        return Ok(RolloutStep::SetAside { clusters, why });
    }
    let freeze = if r.override_freeze {
        None
    } else {
        frozen(state.freezes(), &r.environment, now_ms)
    };
    let freeze_hold = |f: &Freeze| Hold::Freeze {
        id: f.id,
        until_ms: f.to_ms,
        reason: f.reason.clone(),
    };
    let Some(wave) = r.waves.get(r.wave as usize) else {
        return Ok(RolloutStep::Succeed); // No clusters in the environment.
    };
    let in_wave = |want: fn(&Progress) -> bool| -> Vec<String> {
        wave.clusters
            .iter()
            .filter(|c| progress.get(*c).is_some_and(want))
            .cloned()
            .collect()
    };
    let changing = in_wave(|p| matches!(p, Progress::Updating | Progress::Unreachable { .. }));
    let pending = in_wave(|p| matches!(p, Progress::Pending));
    if !pending.is_empty() {
        if let Some(f) = freeze {
            return Err(freeze_hold(f));
        }
        let room = (pipeline
            .max_unavailable
            .saturating_sub(changing.len() as u32) as usize)
            .min(MAX_CLUSTERS_PER_STEP);
        if room == 0 {
            return Err(Hold::MaxUnavailable {
                waiting: pending.len() as u32,
                changing,
                max_unavailable: pipeline.max_unavailable,
            });
        }
        return Ok(RolloutStep::Update {
            clusters: pending.into_iter().take(room).collect(),
        });
    }
    if !changing.is_empty() {
        return Err(Hold::Changing { clusters: changing });
    }
    let healthy_since = healthy_since(wave, &progress);
    let soaked_ms = now_ms.saturating_sub(healthy_since);
    if soaked_ms < pipeline.soak_ms {
        return Err(Hold::Soak {
            wave: wave.name.clone(),
            remaining_ms: pipeline.soak_ms - soaked_ms,
        });
    }
    if r.wave as usize + 1 >= r.waves.len() {
        Ok(RolloutStep::Succeed)
    } else if let Some(f) = freeze {
        Err(freeze_hold(f))
    } else {
        Ok(RolloutStep::StartWave { wave: r.wave + 1 })
    }
}

/// When the last of the wave's Healthy clusters became Healthy (0 when none is).
fn healthy_since(wave: &Wave, progress: &BTreeMap<String, Progress>) -> TimeMs {
    wave.clusters
        .iter()
        .filter_map(|c| match progress.get(c) {
            Some(Progress::Healthy { since_ms }) => Some(*since_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The planner of rollouts started by entries of format 0 and 1, kept unchanged so that their
/// logs replay as they were acknowledged.
fn next_step_v1(state: &State, r: &Rollout, now_ms: TimeMs) -> Option<RolloutStep> {
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
    let healthy_since = healthy_since(wave, &progress);
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

/// The wave a cluster belongs to under `pipeline`: its site, or its value of the wave label
/// (`-` without one).
pub fn wave_name(pipeline: &Pipeline, cluster: &crate::model::Cluster) -> String {
    match &pipeline.wave_label {
        Some(label) => cluster
            .labels
            .get(label)
            .cloned()
            .unwrap_or_else(|| "-".into()),
        None => cluster.site.clone(),
    }
}

/// The waves of `clusters` (all in one environment) under `pipeline`.
pub fn waves<'a>(
    pipeline: &Pipeline,
    clusters: impl IntoIterator<Item = &'a crate::model::Cluster>,
) -> Vec<Wave> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in clusters {
        groups
            .entry(wave_name(pipeline, c))
            .or_default()
            .push(c.name.clone());
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
        if rep.applied_revision != revision.as_str() {
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
    revision.as_str().chars().take(12).collect()
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
