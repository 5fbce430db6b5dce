//! Checking and applying the promotion commands; the rules themselves are in [`crate::rollout`].

use std::collections::BTreeMap;

use crate::command::{Command, Context, Outcome};
use crate::error::CoreError;
use crate::model::Revision;
use crate::rollout::{
    self, MAX_FINISHED_ROLLOUTS_KEPT, MAX_FREEZES, Rollout, RolloutState, RolloutStep, frozen,
    gate_failures, short,
};
use crate::state::State;
use crate::validate;

fn precondition(message: impl Into<String>, hint: impl Into<String>) -> CoreError {
    CoreError::FailedPrecondition {
        message: message.into(),
        hint: hint.into(),
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC, to the second (pure: no clock is read).
pub(crate) fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What a promotion would do, computed without committing anything.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionPlan {
    pub revision: Revision,
    pub waves: Vec<rollout::Wave>,
    /// Each cluster's revision now.
    pub from: BTreeMap<String, Option<Revision>>,
    /// Why `Promote` would be refused now.
    pub blocked: Option<CoreError>,
}

impl State {
    /// What promoting `revision` (default: the previous environment's) of `workload` into
    /// `environment` would do at `now_ms`. An error when there is nothing to plan.
    pub fn plan_promotion(
        &self,
        workload: &str,
        environment: &str,
        revision: Option<&str>,
        now_ms: u64,
    ) -> Result<PromotionPlan, CoreError> {
        let w = self.require_workload(workload)?;
        self.require_environment(environment)?;
        let previous = self.previous_environment(workload, environment)?;
        let revision = match revision {
            Some(r) => validate::revision_in("revision", r)?,
            None => w.desired.get(&previous).cloned().ok_or_else(|| {
                precondition(
                    format!("{workload} has no revision in {previous} to promote"),
                    "publish a release first",
                )
            })?,
        };
        let (waves, from) = self.layout(workload, environment);
        let promote = Command::Promote {
            workload: workload.to_string(),
            environment: environment.to_string(),
            revision: Some(revision.to_string()),
            allow_rejected: false,
            override_freeze: false,
        };
        let ctx = Context {
            now_ms,
            actor: "plan".into(),
            reason: String::new(),
        };
        Ok(PromotionPlan {
            revision,
            waves,
            from,
            blocked: self.check(&promote, &ctx).err(),
        })
    }

    /// The waves of an environment's clusters and each cluster's current revision.
    fn layout(
        &self,
        workload: &str,
        environment: &str,
    ) -> (Vec<rollout::Wave>, BTreeMap<String, Option<Revision>>) {
        let pipeline = self.pipeline(workload);
        let clusters: Vec<_> = self
            .clusters()
            .filter(|c| c.environment == environment)
            .collect();
        let waves = rollout::waves(&pipeline, clusters.iter().copied());
        let from = clusters
            .iter()
            .map(|c| {
                let current = self
                    .assignments(&c.name)
                    .ok()
                    .and_then(|a| a.into_iter().find(|a| a.workload == workload))
                    .map(|a| a.revision.clone());
                (c.name.clone(), current)
            })
            .collect();
        (waves, from)
    }

    /// The environment before `environment` in the workload's pipeline; an error when it is
    /// not in the pipeline or is its first environment.
    fn previous_environment(&self, workload: &str, environment: &str) -> Result<String, CoreError> {
        let pipeline = self.pipeline(workload);
        match pipeline.environments.iter().position(|e| e == environment) {
            None => Err(CoreError::invalid(
                "environment",
                format!(
                    "{environment} is not in the pipeline of {workload} ({})",
                    pipeline.environments.join(" → ")
                ),
                "promote into one of the pipeline's environments, or change it with \
                 `fleet-ctl pipeline set`",
            )),
            Some(0) => Err(precondition(
                format!("{environment} is the first environment of {workload}'s pipeline"),
                "releases reach it by `fleet-ctl release publish`",
            )),
            Some(i) => Ok(pipeline.environments[i - 1].clone()),
        }
    }

    fn active_rollout(&self, workload: &str, environment: &str) -> Option<&Rollout> {
        self.rollout(workload, environment)
            .filter(|r| r.state.is_active())
    }

    fn require_active_rollout(
        &self,
        workload: &str,
        environment: &str,
        states: &[RolloutState],
    ) -> Result<&Rollout, CoreError> {
        let Some(r) = self.active_rollout(workload, environment) else {
            return Err(precondition(
                format!("{workload} has no active rollout into {environment}"),
                "start one with `fleet-ctl promote`",
            ));
        };
        if !states.contains(&r.state) {
            return Err(precondition(
                format!(
                    "rollout {} of {workload} into {environment} is {}",
                    r.id,
                    r.state.as_str()
                ),
                format!(
                    "this needs it to be {}",
                    states
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        Ok(r)
    }

    fn rollout_mut(&mut self, workload: &str, environment: &str) -> &mut Rollout {
        self.rollouts
            .get_mut(workload)
            .and_then(|e| e.get_mut(environment))
            .and_then(|v| v.last_mut())
            .expect("checked: the rollout exists")
    }

    pub(crate) fn is_rejected(
        &self,
        workload: &str,
        environment: &str,
        revision: &Revision,
    ) -> bool {
        self.rejected(workload, environment)
            .is_some_and(|r| r.contains(revision))
    }

    /// The revision a rollback replaces and the one it goes to.
    fn rollback_plan(
        &self,
        workload: &str,
        environment: &str,
        to: Option<&str>,
    ) -> Result<(Revision, Revision), CoreError> {
        let w = self.require_workload(workload)?;
        let bad = match self.active_rollout(workload, environment) {
            Some(r) => r.revision.clone(),
            None => w.desired.get(environment).cloned().ok_or_else(|| {
                precondition(
                    format!("{workload} has no revision in {environment} to roll back"),
                    "nothing to do",
                )
            })?,
        };
        let target = match to {
            Some(to) => {
                let to = validate::revision_in("to", to)?;
                if to == bad {
                    return Err(CoreError::invalid(
                        "to",
                        format!("{} is the revision being rolled back", short(&to)),
                        "name an earlier revision",
                    ));
                }
                if self.is_rejected(workload, environment, &to) {
                    return Err(precondition(
                        format!("{} was rolled back in {environment} and is rejected", short(&to)),
                        "to run it again, promote it with --allow-rejected",
                    ));
                }
                to
            }
            None => self
                .desired_history(workload, environment)
                .iter()
                .rev()
                .find(|r| **r != bad && !self.is_rejected(workload, environment, r))
                .cloned()
                .ok_or_else(|| {
                    precondition(
                        format!(
                            "{workload} has no earlier revision in {environment} that is not rejected"
                        ),
                        "name one with --to SHA",
                    )
                })?,
        };
        Ok((bad, target))
    }

    /// The promotion commands' checks against the state, by the rules of entry format
    /// `format` (see `State::apply_stored`).
    pub(crate) fn check_promotion(
        &self,
        command: &Command,
        ctx: &Context,
        format: u32,
    ) -> Result<(), CoreError> {
        // From format 1 on, actors are compared trimmed and case-insensitively.
        let same = |a: &str, b: &str| {
            if format >= 1 {
                validate::same_actor(a, b)
            } else {
                a == b
            }
        };
        match command {
            Command::SetPipeline { workload, pipeline } => {
                self.require_workload(workload)?;
                rollout::validate_pipeline(self, pipeline)?;
                // Since format 2: format-1 entries were accepted without this check.
                if format >= rollout::ROLLOUT_RULES_V2 {
                    let running = self
                        .rollouts
                        .get(workload)
                        .into_iter()
                        .flat_map(|by_env| by_env.values())
                        .filter_map(|list| list.last())
                        .find(|r| {
                            r.state.is_active() && !pipeline.environments.contains(&r.environment)
                        });
                    if let Some(r) = running {
                        return Err(precondition(
                            format!(
                                "the new pipeline leaves out {}, where rollout {} of {workload} is {}",
                                r.environment,
                                r.id,
                                r.state.as_str()
                            ),
                            format!(
                                "let it finish, or abort it first with `fleet-ctl rollout abort {workload} --env {}`",
                                r.environment
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Command::SetRequiredApprovals { environment, .. } => {
                self.require_environment(environment).map(|_| ())
            }
            Command::Promote {
                workload,
                environment,
                revision,
                allow_rejected,
                override_freeze,
            } => {
                let w = self.require_workload(workload)?;
                self.require_environment(environment)?;
                let previous = self.previous_environment(workload, environment)?;
                if let Some(r) = self.active_rollout(workload, environment) {
                    return Err(precondition(
                        format!(
                            "rollout {} of {} into {environment} is {}",
                            r.id,
                            short(&r.revision),
                            r.state.as_str()
                        ),
                        "wait for it to finish, or stop it with `fleet-ctl rollout abort`",
                    ));
                }
                let revision = match revision {
                    Some(r) => validate::revision_in("revision", r)?,
                    None => w.desired.get(&previous).cloned().ok_or_else(|| {
                        precondition(
                            format!("{workload} has no revision in {previous} to promote"),
                            "publish a release first",
                        )
                    })?,
                };
                if !allow_rejected && self.is_rejected(workload, environment, &revision) {
                    return Err(precondition(
                        format!(
                            "{} was rolled back in {environment} and is rejected",
                            short(&revision)
                        ),
                        "promote it anyway with --allow-rejected (audited), or promote a fix",
                    ));
                }
                if w.desired.get(environment) == Some(&revision) {
                    return Err(precondition(
                        format!("{environment} already runs {}", short(&revision)),
                        "nothing to do",
                    ));
                }
                if !override_freeze && let Some(f) = frozen(self.freezes(), environment, ctx.now_ms)
                {
                    return Err(precondition(
                        f.refusal(environment),
                        "wait for the window to end, or pass --override-freeze (audited)",
                    ));
                }
                let soak = self.pipeline(workload).soak_ms;
                let failures =
                    gate_failures(self, workload, &previous, &revision, soak, ctx.now_ms);
                if !failures.is_empty() {
                    return Err(precondition(
                        format!(
                            "{} is not verified in {previous}: {}",
                            short(&revision),
                            failures.join("; ")
                        ),
                        format!(
                            "every cluster of {previous} must run it Synced and Healthy for the \
                             {} s soak; watch `fleet-ctl status`",
                            soak / 1000
                        ),
                    ));
                }
                Ok(())
            }
            Command::Approve {
                workload,
                environment,
            } => {
                let r = self.require_active_rollout(
                    workload,
                    environment,
                    &[RolloutState::AwaitingApproval],
                )?;
                if same(&r.started_by, &ctx.actor) {
                    return Err(precondition(
                        format!("{} started this promotion", ctx.actor),
                        "approval must come from another operator",
                    ));
                }
                if r.approvals.iter().any(|a| same(a, &ctx.actor)) {
                    return Err(precondition(
                        format!("{} has approved rollout {} already", ctx.actor, r.id),
                        "approvals must come from distinct operators",
                    ));
                }
                Ok(())
            }
            Command::PauseRollout {
                workload,
                environment,
            } => self
                .require_active_rollout(workload, environment, &[RolloutState::Running])
                .map(|_| ()),
            Command::ResumeRollout {
                workload,
                environment,
            } => self
                .require_active_rollout(workload, environment, &[RolloutState::Paused])
                .map(|_| ()),
            Command::AbortRollout {
                workload,
                environment,
            } => self
                .require_active_rollout(
                    workload,
                    environment,
                    &[
                        RolloutState::AwaitingApproval,
                        RolloutState::Running,
                        RolloutState::Paused,
                    ],
                )
                .map(|_| ()),
            Command::Rollback {
                workload,
                environment,
                to,
            } => {
                self.require_environment(environment)?;
                self.rollback_plan(workload, environment, to.as_deref())
                    .map(|_| ())
            }
            Command::AddFreeze { environment, .. } => {
                self.require_environment(environment)?;
                if self.freezes.len() >= MAX_FREEZES {
                    return Err(precondition(
                        format!("the fleet has {MAX_FREEZES} freeze windows, the limit"),
                        "remove windows that have ended with `fleet-ctl freeze remove ID`",
                    ));
                }
                Ok(())
            }
            Command::RemoveFreeze { id } => {
                if !self.freezes.contains_key(id) {
                    return Err(CoreError::not_found(
                        "freeze",
                        &id.to_string(),
                        "list them with `fleet-ctl freeze list`",
                    ));
                }
                Ok(())
            }
            Command::AdvanceRollout {
                workload,
                environment,
                rollout,
                step,
            } => {
                let r =
                    self.require_active_rollout(workload, environment, &[RolloutState::Running])?;
                if r.id != *rollout
                    || rollout::next_step(self, r, ctx.now_ms).as_ref() != Some(step)
                {
                    return Err(precondition(
                        format!(
                            "step {step:?} of rollout {rollout} is no longer the planner's step"
                        ),
                        "the planner decides again on its next tick",
                    ));
                }
                Ok(())
            }
            _ => unreachable!("State::check handles {}", command.kind()),
        }
    }

    /// Applies a checked promotion command; returns its outcome and audit summary.
    pub(crate) fn apply_promotion(
        &mut self,
        command: &Command,
        ctx: &Context,
        format: u32,
    ) -> (Outcome, String) {
        match command {
            Command::SetPipeline { workload, pipeline } => {
                self.pipelines.insert(workload.clone(), pipeline.clone());
                (
                    Outcome::PipelineSet {
                        workload: workload.clone(),
                    },
                    format!(
                        "pipeline of {workload}: {}, soak {} s, waves by {}{}, max unavailable {}, \
                         failure budget {}, auto rollback {}",
                        pipeline.environments.join(" → "),
                        pipeline.soak_ms / 1000,
                        pipeline.wave_label.as_deref().map_or("site", |l| l),
                        if pipeline.wave_order.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", pipeline.wave_order.join(", "))
                        },
                        pipeline.max_unavailable,
                        pipeline.failure_budget,
                        pipeline.auto_rollback
                    ),
                )
            }
            Command::SetRequiredApprovals {
                environment,
                approvals,
            } => {
                let before = self.required_approvals(environment);
                self.required_approvals
                    .insert(environment.clone(), *approvals);
                (
                    Outcome::RequiredApprovalsSet {
                        environment: environment.clone(),
                        approvals: *approvals,
                    },
                    format!("approvals required for {environment}: {before} → {approvals}"),
                )
            }
            Command::Promote {
                workload,
                environment,
                revision,
                allow_rejected,
                override_freeze,
            } => {
                let previous = self
                    .previous_environment(workload, environment)
                    .expect("checked");
                let w = &self.workloads[workload];
                let revision = match revision {
                    Some(r) => validate::revision(r).expect("checked"),
                    None => w.desired[&previous].clone(),
                };
                let (waves, from) = self.layout(workload, environment);
                let required = self.required_approvals(environment);
                self.last_rollout_id += 1;
                let r = Rollout {
                    id: self.last_rollout_id,
                    workload: workload.clone(),
                    environment: environment.clone(),
                    revision: revision.clone(),
                    from,
                    waves,
                    wave: 0,
                    updated: Default::default(),
                    state: if required > 0 {
                        RolloutState::AwaitingApproval
                    } else {
                        RolloutState::Running
                    },
                    required_approvals: required,
                    approvals: Default::default(),
                    started_by: ctx.actor.clone(),
                    started_at_ms: ctx.now_ms,
                    finished_at_ms: None,
                    override_freeze: *override_freeze,
                    allow_rejected: *allow_rejected,
                    message: String::new(),
                    rules: format,
                    pipeline: (format >= rollout::ROLLOUT_RULES_V2)
                        .then(|| self.pipeline(workload)),
                    updated_at_ms: Default::default(),
                    set_aside: Default::default(),
                };
                let waves: Vec<String> = r
                    .waves
                    .iter()
                    .map(|w| format!("{} ({})", w.name, w.clusters.join(", ")))
                    .collect();
                let mut summary = format!(
                    "rollout {} of {workload} {} → {environment} started from {}: waves {}",
                    r.id,
                    short(&revision),
                    self.workloads[workload]
                        .desired
                        .get(environment)
                        .map_or_else(|| "nothing".into(), short),
                    if waves.is_empty() {
                        "none".into()
                    } else {
                        waves.join(", ")
                    }
                );
                if let Some(p) = &r.pipeline {
                    summary.push_str(&format!(
                        "; runs with soak {} s, max unavailable {}, failure budget {}, auto rollback {}, progress deadline {} s",
                        p.soak_ms / 1000,
                        p.max_unavailable,
                        p.failure_budget,
                        p.auto_rollback,
                        p.progress_deadline_ms / 1000
                    ));
                }
                if required > 0 {
                    summary.push_str(&format!("; awaiting {required} approvals"));
                }
                if *allow_rejected && self.is_rejected(workload, environment, &revision) {
                    summary.push_str("; promotes a rejected revision (--allow-rejected)");
                }
                if *override_freeze && frozen(self.freezes(), environment, ctx.now_ms).is_some() {
                    summary.push_str("; overrides a freeze window (--override-freeze)");
                }
                let outcome = rollout_outcome(&r, Vec::new());
                self.push_rollout(r);
                (outcome, summary)
            }
            Command::Approve {
                workload,
                environment,
            } => {
                let r = self.rollout_mut(workload, environment);
                r.approvals.insert(ctx.actor.clone());
                if r.approvals.len() as u32 >= r.required_approvals {
                    r.state = RolloutState::Running;
                }
                let summary = format!(
                    "{} approved rollout {} of {workload} into {environment} ({} of {}){}",
                    ctx.actor,
                    r.id,
                    r.approvals.len(),
                    r.required_approvals,
                    if r.state == RolloutState::Running {
                        "; it starts"
                    } else {
                        ""
                    }
                );
                (rollout_outcome(r, Vec::new()), summary)
            }
            Command::PauseRollout {
                workload,
                environment,
            }
            | Command::ResumeRollout {
                workload,
                environment,
            }
            | Command::AbortRollout {
                workload,
                environment,
            } => {
                let r = self.rollout_mut(workload, environment);
                let before = r.state;
                r.state = match command {
                    Command::PauseRollout { .. } => RolloutState::Paused,
                    Command::ResumeRollout { .. } => RolloutState::Running,
                    _ => {
                        r.finished_at_ms = Some(ctx.now_ms);
                        RolloutState::Aborted
                    }
                };
                let summary = format!(
                    "rollout {} of {workload} into {environment}: {} → {} ({} of its clusters updated)",
                    r.id,
                    before.as_str(),
                    r.state.as_str(),
                    r.updated.len()
                );
                (rollout_outcome(r, Vec::new()), summary)
            }
            Command::Rollback {
                workload,
                environment,
                to,
            } => {
                let (bad, target) = self
                    .rollback_plan(workload, environment, to.as_deref())
                    .expect("checked");
                if self.active_rollout(workload, environment).is_some() {
                    let r = self.rollout_mut(workload, environment);
                    r.state = RolloutState::RolledBack;
                    r.finished_at_ms = Some(ctx.now_ms);
                    r.message = format!("rolled back by {}", ctx.actor);
                }
                self.reject(workload, environment, &bad);
                let clusters: Vec<String> = self
                    .clusters()
                    .filter(|c| &c.environment == environment)
                    .map(|c| c.name.clone())
                    .collect();
                let changed: Vec<String> = clusters
                    .into_iter()
                    .filter(|c| self.assign(c, workload, &target, ctx))
                    .collect();
                self.set_desired(workload, environment, &target);
                let summary = format!(
                    "{workload} in {environment} rolled back {} → {} on {} clusters; {} is rejected",
                    short(&bad),
                    short(&target),
                    changed.len(),
                    short(&bad)
                );
                (
                    Outcome::RolledBack {
                        workload: workload.clone(),
                        environment: environment.clone(),
                        revision: target.to_string(),
                        rejected: bad.to_string(),
                        clusters: changed,
                    },
                    summary,
                )
            }
            Command::AddFreeze {
                environment,
                from_ms,
                to_ms,
            } => {
                self.last_freeze_id += 1;
                let id = self.last_freeze_id;
                self.freezes.insert(
                    id,
                    rollout::Freeze {
                        id,
                        environment: environment.clone(),
                        from_ms: *from_ms,
                        to_ms: *to_ms,
                        reason: ctx.reason.clone(),
                        created_by: ctx.actor.clone(),
                    },
                );
                (
                    Outcome::FreezeAdded { id },
                    format!(
                        "freeze {id} of {environment} from {} to {}",
                        time(*from_ms),
                        time(*to_ms)
                    ),
                )
            }
            Command::RemoveFreeze { id } => {
                let f = self.freezes.remove(id).expect("checked");
                (
                    Outcome::FreezeRemoved { id: *id },
                    format!(
                        "freeze {id} of {} from {} to {} removed",
                        f.environment,
                        time(f.from_ms),
                        time(f.to_ms)
                    ),
                )
            }
            Command::AdvanceRollout {
                workload,
                environment,
                step,
                ..
            } => self.advance(workload, environment, step, ctx),
            _ => unreachable!("State::apply handles {}", command.kind()),
        }
    }

    fn advance(
        &mut self,
        workload: &str,
        environment: &str,
        step: &RolloutStep,
        ctx: &Context,
    ) -> (Outcome, String) {
        let r = self.rollout_mut(workload, environment).clone();
        let head = format!("rollout {} of {workload} into {environment}", r.id);
        let wave_name = |i: u32| r.waves.get(i as usize).map_or("-", |w| w.name.as_str());
        let (changed, summary, state) = match step {
            RolloutStep::Update { clusters } => {
                let mut moves = Vec::new();
                let mut changed = Vec::new();
                for c in clusters {
                    let from = r.from.get(c).cloned().flatten();
                    if self.assign(c, workload, &r.revision, ctx) {
                        changed.push(c.clone());
                    }
                    moves.push(format!(
                        "{c} {} → {}",
                        from.as_ref().map_or_else(|| "nothing".into(), short),
                        short(&r.revision)
                    ));
                }
                let rm = self.rollout_mut(workload, environment);
                rm.updated.extend(clusters.iter().cloned());
                if rm.follows_v2() {
                    for c in clusters {
                        rm.updated_at_ms.insert(c.clone(), ctx.now_ms);
                    }
                }
                (
                    changed,
                    format!("{head}, wave {}: {}", wave_name(r.wave), moves.join(", ")),
                    RolloutState::Running,
                )
            }
            RolloutStep::StartWave { wave } => {
                self.rollout_mut(workload, environment).wave = *wave;
                (
                    Vec::new(),
                    format!(
                        "{head}: wave {} Healthy for the soak; wave {} starts",
                        wave_name(r.wave),
                        wave_name(*wave)
                    ),
                    RolloutState::Running,
                )
            }
            RolloutStep::SetAside { clusters, why } => {
                let budget = r.settings(self).failure_budget;
                let rm = self.rollout_mut(workload, environment);
                for (c, why) in clusters.iter().zip(why) {
                    rm.set_aside.insert(c.clone(), why.clone());
                }
                let used = rm.set_aside.len();
                let detail: Vec<String> = clusters
                    .iter()
                    .zip(why)
                    .map(|(c, why)| format!("{c} failed ({why})"))
                    .collect();
                (
                    Vec::new(),
                    format!(
                        "{head}, wave {}: {}; set aside, {used} of the failure budget of {budget} used",
                        wave_name(r.wave),
                        detail.join(", ")
                    ),
                    RolloutState::Running,
                )
            }
            RolloutStep::Succeed => {
                self.set_desired(workload, environment, &r.revision);
                if r.set_aside.is_empty() {
                    (
                        Vec::new(),
                        format!(
                            "{head}: succeeded; {environment} runs {}",
                            short(&r.revision)
                        ),
                        RolloutState::Succeeded,
                    )
                } else {
                    let detail: Vec<String> = r
                        .set_aside
                        .iter()
                        .map(|(c, why)| format!("{c} ({why})"))
                        .collect();
                    let message = format!(
                        "{} failed within the failure budget and do not run {}: {}",
                        r.set_aside.len(),
                        short(&r.revision),
                        detail.join("; ")
                    );
                    self.rollout_mut(workload, environment).message = message.clone();
                    (
                        Vec::new(),
                        format!(
                            "{head}: succeeded with failures; {environment} is assigned {}; {message}",
                            short(&r.revision)
                        ),
                        RolloutState::SucceededWithFailures,
                    )
                }
            }
            RolloutStep::Halt {
                reason, rollback, ..
            } => {
                let mut changed = Vec::new();
                if *rollback {
                    for c in &r.updated {
                        if self.cluster(c).is_err() {
                            continue;
                        }
                        let moved = match r.from.get(c).cloned().flatten() {
                            Some(previous) => self.assign(c, workload, &previous, ctx),
                            None => self.unassign(c, workload, ctx),
                        };
                        if moved {
                            changed.push(c.clone());
                        }
                    }
                    self.reject(workload, environment, &r.revision);
                }
                self.rollout_mut(workload, environment).message = reason.clone();
                let (state, what) = if *rollback {
                    (
                        RolloutState::RolledBack,
                        format!(
                            "rolled back {} clusters; {} is rejected",
                            changed.len(),
                            short(&r.revision)
                        ),
                    )
                } else {
                    (RolloutState::Halted, "halted".to_string())
                };
                (changed, format!("{head}: {reason}; {what}"), state)
            }
        };
        let r = self.rollout_mut(workload, environment);
        r.state = state;
        if !state.is_active() {
            r.finished_at_ms = Some(ctx.now_ms);
        }
        (rollout_outcome(r, changed), summary)
    }

    /// A cluster just registered in `environment` joins every active rollout into it that
    /// follows rules 2: its wave when that wave has not finished, otherwise the current wave,
    /// as a pending cluster from the revision it was just assigned. Returns a phrase per
    /// rollout joined, for the audit summary.
    pub(crate) fn join_rollouts(&mut self, cluster: &str) -> Vec<String> {
        let c = self.cluster(cluster).expect("just registered").clone();
        let assigned: BTreeMap<String, Revision> = self
            .assignments(cluster)
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.workload.clone(), a.revision.clone()))
            .collect();
        let mut joined = Vec::new();
        let workloads: Vec<String> = self.rollouts.keys().cloned().collect();
        for workload in workloads {
            let Some(r) = self.active_rollout(&workload, &c.environment) else {
                continue;
            };
            if !r.follows_v2() {
                continue;
            }
            let key = rollout::wave_name(&r.settings(self), &c);
            let r = self.rollout_mut(&workload, &c.environment);
            let at = match r.waves.iter().position(|w| w.name == key) {
                Some(i) if i >= r.wave as usize => i,
                Some(_) => r.wave as usize,
                None => {
                    r.waves.push(rollout::Wave {
                        name: key,
                        clusters: Vec::new(),
                    });
                    r.waves.len() - 1
                }
            };
            let wave = &mut r.waves[at];
            wave.clusters.push(cluster.to_string());
            wave.clusters.sort();
            r.from
                .insert(cluster.to_string(), assigned.get(&workload).cloned());
            joined.push(format!(
                "joins rollout {} of {workload} in wave {}",
                r.id, wave.name
            ));
        }
        joined
    }

    /// A cluster just removed leaves every rollout that follows rules 2 (older rollouts skip
    /// removed clusters when they look at them).
    pub(crate) fn leave_rollouts(&mut self, cluster: &str) {
        for r in self
            .rollouts
            .values_mut()
            .flat_map(|by_env| by_env.values_mut())
            .filter_map(|list| list.last_mut())
            .filter(|r| r.state.is_active() && r.follows_v2())
        {
            for w in &mut r.waves {
                w.clusters.retain(|c| c != cluster);
            }
            r.from.remove(cluster);
            r.updated.remove(cluster);
            r.updated_at_ms.remove(cluster);
            r.set_aside.remove(cluster);
        }
    }

    fn reject(&mut self, workload: &str, environment: &str, revision: &Revision) {
        self.rejected
            .entry(workload.to_string())
            .or_default()
            .entry(environment.to_string())
            .or_default()
            .insert(revision.clone());
    }

    fn set_desired(&mut self, workload: &str, environment: &str, revision: &Revision) {
        self.workloads
            .get_mut(workload)
            .expect("checked")
            .desired
            .insert(environment.to_string(), revision.clone());
        self.record_desired(workload, environment, revision);
    }

    fn push_rollout(&mut self, r: Rollout) {
        let list = self
            .rollouts
            .entry(r.workload.clone())
            .or_default()
            .entry(r.environment.clone())
            .or_default();
        list.push(r);
        if list.len() > MAX_FINISHED_ROLLOUTS_KEPT + 1 {
            list.remove(0);
        }
    }
}

fn rollout_outcome(r: &Rollout, clusters: Vec<String>) -> Outcome {
    Outcome::Rollout {
        workload: r.workload.clone(),
        environment: r.environment.clone(),
        rollout: r.id,
        revision: r.revision.to_string(),
        state: r.state,
        clusters,
    }
}
