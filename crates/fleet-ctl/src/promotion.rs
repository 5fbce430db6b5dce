//! `fleet-ctl pipeline | promote | plan | rollout | rollback | approve | freeze`.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use fleet_api::proto::*;
use serde_json::json;

use crate::client::{Client, CtlError, Req};
use crate::output::{Table, format_time_ms};

#[derive(Subcommand)]
pub enum PipelineCmd {
    /// Set how WORKLOAD moves through the environments.
    Set(PipelineArgs),
    /// Show WORKLOAD's pipeline (the default one when none was set).
    Show { workload: String },
}

#[derive(Args)]
pub struct PipelineArgs {
    workload: String,
    /// Environments in order; a published release goes to the first.
    #[arg(long, value_delimiter = ',', required = true)]
    environments: Vec<String>,
    /// How long a revision must run Synced and Healthy before the next environment or wave
    /// takes it, e.g. 10s, 5m, 1h.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    soak: Duration,
    /// Sites in wave order; sites not listed follow in name order.
    #[arg(long, value_delimiter = ',')]
    wave_order: Vec<String>,
    /// Waves by the value of this cluster label instead of by site.
    #[arg(long)]
    wave_label: Option<String>,
    /// Most clusters of a wave changing at once.
    #[arg(long, default_value_t = 1)]
    max_unavailable: u32,
    /// Failed, Degraded, long-unreachable or past-deadline clusters tolerated (set aside, the
    /// waves go on); one more halts the rollout.
    #[arg(long, default_value_t = 0)]
    failure_budget: u32,
    /// Roll back every cluster the rollout changed when it halts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_rollback: bool,
    /// After this long without a report, an unreachable cluster counts as failed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    unreachable_timeout: Duration,
    /// An updated cluster still not Healthy this long after its update counts as failed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    progress_deadline: Duration,
}

#[derive(Args)]
pub struct PromoteArgs {
    workload: String,
    /// The environment to promote into.
    #[arg(long)]
    to: String,
    /// A full 40-hex SHA; default: the previous environment's desired revision.
    #[arg(long)]
    revision: Option<String>,
    /// Promote a revision that was rolled back in this environment (audited).
    #[arg(long)]
    allow_rejected: bool,
    /// Promote during a freeze window (audited).
    #[arg(long)]
    override_freeze: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    workload: String,
    #[arg(long)]
    to: String,
    #[arg(long)]
    revision: Option<String>,
}

#[derive(Args)]
pub struct Target {
    workload: String,
    #[arg(long)]
    env: String,
}

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// The newest rollout into ENV: state, waves, each cluster's progress. With --watch,
    /// progress bars until it ends; exits non-zero unless it succeeded.
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        watch: bool,
    },
    /// Stop taking steps until resumed.
    Pause(Target),
    Resume(Target),
    /// Stop where it is; clusters already updated keep the new revision.
    Abort(Target),
}

#[derive(Args)]
pub struct RollbackArgs {
    workload: String,
    #[arg(long)]
    env: String,
    /// A full SHA; default: the newest earlier revision that is not rejected.
    #[arg(long)]
    to: Option<String>,
}

#[derive(Subcommand)]
pub enum FreezeCmd {
    /// Block promotions into ENV between two RFC 3339 times.
    Add {
        environment: String,
        #[arg(long, value_parser = crate::parse_rfc3339_ms)]
        from: u64,
        #[arg(long, value_parser = crate::parse_rfc3339_ms)]
        to: u64,
    },
    List,
    Remove {
        id: u64,
    },
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn written(json: bool, message: &str, result: Option<WriteResult>) -> anyhow::Result<()> {
    crate::written(json, message, result)
}

pub async fn pipeline(
    client: &Client,
    cmd: PipelineCmd,
    reason: String,
    consistency: i32,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        PipelineCmd::Set(a) => {
            let pipeline = Pipeline {
                environments: a.environments,
                soak_ms: a.soak.as_millis() as u64,
                wave_order: a.wave_order,
                wave_label: a.wave_label.unwrap_or_default(),
                max_unavailable: a.max_unavailable,
                failure_budget: a.failure_budget,
                auto_rollback: a.auto_rollback,
                unreachable_timeout_ms: a.unreachable_timeout.as_millis() as u64,
                progress_deadline_ms: a.progress_deadline.as_millis() as u64,
            };
            let r = client
                .promotion(|mut p, req: Req| {
                    let request = req.wrap(SetPipelineRequest {
                        workload: a.workload.clone(),
                        pipeline: Some(pipeline.clone()),
                        reason: reason.clone(),
                    });
                    async move { p.set_pipeline(request).await }
                })
                .await?;
            written(json, "pipeline set", r.result)
        }
        PipelineCmd::Show { workload } => {
            let r = client
                .promotion_read(|mut p, req: Req| {
                    let request = req.wrap(GetPipelineRequest {
                        workload: workload.clone(),
                        consistency,
                    });
                    async move { p.get_pipeline(request).await }
                })
                .await?;
            let p = r.pipeline.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&{
                        let mut shown = pipeline_json(&p);
                        shown["required_approvals"] = json!(r.required_approvals);
                        shown
                    })?
                );
            } else {
                let approvals: Vec<String> = p
                    .environments
                    .iter()
                    .map(|e| format!("{e}:{}", r.required_approvals.get(e).unwrap_or(&0)))
                    .collect();
                println!("environments:        {}", p.environments.join(" → "));
                println!("soak:                {} s", p.soak_ms / 1000);
                println!(
                    "waves:               by {}{}",
                    if p.wave_label.is_empty() {
                        "site"
                    } else {
                        &p.wave_label
                    },
                    if p.wave_order.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", p.wave_order.join(", "))
                    }
                );
                println!("max unavailable:     {}", p.max_unavailable);
                println!("failure budget:      {}", p.failure_budget);
                println!("auto rollback:       {}", p.auto_rollback);
                println!("unreachable timeout: {} s", p.unreachable_timeout_ms / 1000);
                println!("progress deadline:   {} s", p.progress_deadline_ms / 1000);
                println!("approvals required:  {}", approvals.join(", "));
            }
            Ok(())
        }
    }
}

pub async fn promote(
    client: &Client,
    a: PromoteArgs,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .promotion(|mut p, req: Req| {
            let request = req.wrap(PromoteRequest {
                workload: a.workload.clone(),
                environment: a.to.clone(),
                revision: a.revision.clone().unwrap_or_default(),
                allow_rejected: a.allow_rejected,
                override_freeze: a.override_freeze,
                reason: reason.clone(),
            });
            async move { p.promote(request).await }
        })
        .await?;
    let rollout = r.rollout.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&rollout_json(&rollout))?);
    } else {
        eprintln!(
            "rollout {} of {} {} → {} {} (log index {}); follow it with `fleet-ctl rollout status {} --env {} --watch`",
            rollout.id,
            rollout.workload,
            short(&rollout.revision),
            rollout.environment,
            rollout.state,
            r.result.map_or(0, |w| w.log_index),
            rollout.workload,
            rollout.environment
        );
    }
    Ok(())
}

fn waves_table(waves: &[RolloutWave], with_progress: bool) -> Table {
    let mut t = if with_progress {
        Table::new(&["WAVE", "CLUSTER", "FROM", "TO", "PROGRESS", "MESSAGE"])
    } else {
        Table::new(&["WAVE", "CLUSTER", "FROM", "TO"])
    };
    for (i, w) in waves.iter().enumerate() {
        for c in &w.clusters {
            let mut row = vec![
                format!("{} {}", i + 1, w.name),
                c.cluster.clone(),
                or_dash(short(&c.from_revision)),
                short(&c.to_revision).to_string(),
            ];
            if with_progress {
                row.push(c.progress.clone());
                row.push(or_dash(&c.message));
            }
            t.row(row);
        }
    }
    t
}

fn waves_json(waves: &[RolloutWave]) -> serde_json::Value {
    json!(
        waves
            .iter()
            .map(|w| json!({
                "name": w.name,
                "clusters": w.clusters.iter().map(|c| json!({
                    "cluster": c.cluster, "from": c.from_revision, "to": c.to_revision,
                    "progress": c.progress, "message": c.message,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()
    )
}

fn pipeline_json(p: &Pipeline) -> serde_json::Value {
    json!({
        "environments": p.environments, "soak_ms": p.soak_ms,
        "wave_order": p.wave_order, "wave_label": p.wave_label,
        "max_unavailable": p.max_unavailable, "failure_budget": p.failure_budget,
        "auto_rollback": p.auto_rollback,
        "unreachable_timeout_ms": p.unreachable_timeout_ms,
        "progress_deadline_ms": p.progress_deadline_ms,
    })
}

fn rollout_json(r: &Rollout) -> serde_json::Value {
    json!({
        "id": r.id, "workload": r.workload, "environment": r.environment,
        "revision": r.revision, "state": r.state, "wave": r.wave,
        "waves": waves_json(&r.waves), "required_approvals": r.required_approvals,
        "approvals": r.approvals, "started_by": r.started_by,
        "started_at_ms": r.started_at_ms,
        "finished_at_ms": (r.finished_at_ms > 0).then_some(r.finished_at_ms),
        "message": r.message,
        "hold": (!r.hold.is_empty()).then_some(&r.hold),
        "held_by": (!r.held_by.is_empty()).then_some(&r.held_by),
        "pipeline": r.pipeline.as_ref().map(pipeline_json),
        "pipeline_kept": r.pipeline_kept,
    })
}

pub async fn plan(client: &Client, a: PlanArgs, json: bool) -> anyhow::Result<()> {
    let r = client
        .promotion_read(|mut p, req: Req| {
            let request = req.wrap(PlanRequest {
                workload: a.workload.clone(),
                environment: a.to.clone(),
                revision: a.revision.clone().unwrap_or_default(),
            });
            async move { p.plan(request).await }
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "revision": r.revision, "waves": waves_json(&r.waves),
                "blocked": (!r.blocked.is_empty()).then_some(&r.blocked),
                "hint": (!r.hint.is_empty()).then_some(&r.hint),
            }))?
        );
    } else {
        println!(
            "promote {} {} → {}: {} waves, {} clusters",
            a.workload,
            short(&r.revision),
            a.to,
            r.waves.len(),
            r.waves.iter().map(|w| w.clusters.len()).sum::<usize>()
        );
        waves_table(&r.waves, false).print();
        if r.blocked.is_empty() {
            println!(
                "the gate holds: `fleet-ctl promote {} --to {}` would start now",
                a.workload, a.to
            );
        } else {
            println!("blocked now: {}", r.blocked);
            if !r.hint.is_empty() {
                println!("hint: {}", r.hint);
            }
        }
    }
    Ok(())
}

async fn get_rollout(client: &Client, t: &Target, consistency: i32) -> Result<Rollout, CtlError> {
    let r = client
        .promotion_read(|mut p, req: Req| {
            let request = req.wrap(GetRolloutRequest {
                workload: t.workload.clone(),
                environment: t.env.clone(),
                consistency,
            });
            async move { p.get_rollout(request).await }
        })
        .await?;
    Ok(r.rollout.unwrap_or_default())
}

fn print_rollout(r: &Rollout) {
    println!(
        "rollout {} of {} {} → {}: {}{}",
        r.id,
        r.workload,
        short(&r.revision),
        r.environment,
        r.state,
        if r.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.message)
        }
    );
    if !r.held_by.is_empty() {
        println!("held by: {}", r.held_by);
    }
    if let Some(p) = &r.pipeline {
        println!(
            "runs with: soak {} s, max unavailable {}, failure budget {}, auto rollback {}, progress deadline {} s ({})",
            p.soak_ms / 1000,
            p.max_unavailable,
            p.failure_budget,
            p.auto_rollback,
            p.progress_deadline_ms / 1000,
            if r.pipeline_kept {
                "the pipeline as it was when the rollout started"
            } else {
                "the workload's pipeline now"
            }
        );
    }
    if r.required_approvals > 0 {
        println!(
            "approvals: {} of {} ({})",
            r.approvals.len(),
            r.required_approvals,
            r.approvals.join(", ")
        );
    }
    waves_table(&r.waves, true).print();
}

/// Exit status of `rollout status`: only a succeeded (or still healthy and running, without
/// --watch) rollout is success.
fn finished_ok(r: &Rollout) -> anyhow::Result<()> {
    use fleet_api::proto::RolloutState as S;
    match r.rollout_state() {
        S::Succeeded => Ok(()),
        S::SucceededWithFailures => {
            // Within the failure budget the operator chose: success, said on stderr.
            eprintln!("warning: rollout {} {}", r.id, r.message);
            Ok(())
        }
        S::Halted | S::RolledBack | S::Aborted => Err(anyhow!(
            "rollout {} {}: {}",
            r.id,
            r.state.replace('_', " "),
            r.message
        )),
        _ => Ok(()),
    }
}

pub async fn rollout(
    client: &Client,
    cmd: RolloutCmd,
    reason: String,
    consistency: i32,
    json: bool,
) -> anyhow::Result<()> {
    let (target, action) = match cmd {
        RolloutCmd::Status { target, watch } => {
            if watch {
                return watch_rollout(client, &target, json).await;
            }
            let r = get_rollout(client, &target, consistency).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rollout_json(&r))?);
            } else {
                print_rollout(&r);
            }
            return finished_ok(&r);
        }
        RolloutCmd::Pause(t) => (t, RolloutAction::Pause),
        RolloutCmd::Resume(t) => (t, RolloutAction::Resume),
        RolloutCmd::Abort(t) => (t, RolloutAction::Abort),
    };
    change(client, target, action, reason, json).await
}

pub async fn change(
    client: &Client,
    target: Target,
    action: RolloutAction,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .promotion(|mut p, req: Req| {
            let request = req.wrap(ChangeRolloutRequest {
                workload: target.workload.clone(),
                environment: target.env.clone(),
                action: action as i32,
                reason: reason.clone(),
            });
            async move { p.change_rollout(request).await }
        })
        .await?;
    let rollout = r.rollout.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&rollout_json(&rollout))?);
    } else {
        eprintln!(
            "rollout {} is {} (log index {})",
            rollout.id,
            rollout.state,
            r.result.map_or(0, |w| w.log_index)
        );
    }
    Ok(())
}

/// Progress bars per wave on a terminal until the rollout ends; elsewhere (a log, a pipe) one
/// line per change. Then the final state: the table (or JSON) on stdout.
async fn watch_rollout(client: &Client, target: &Target, json: bool) -> anyhow::Result<()> {
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    let first = get_rollout(client, target, ReadConsistency::Linearizable as i32).await?;
    let draw = if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    // Without a terminal indicatif draws nothing; then progress is written as lines.
    let lines = !json && draw.is_hidden();
    let multi = MultiProgress::with_draw_target(draw);
    let style = ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} healthy  {msg}")
        .context("progress template")?
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = first
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let bar = multi.add(ProgressBar::new(w.clusters.len() as u64));
            bar.set_style(style.clone());
            bar.set_prefix(format!("wave {} {}", i + 1, w.name));
            bar
        })
        .collect();
    let mut last_state = String::new();
    let mut last_hold = String::new();
    let mut last_lines: Vec<String> = vec![String::new(); bars.len()];
    loop {
        let r = get_rollout(client, target, ReadConsistency::Stale as i32).await?;
        if r.id != first.id {
            return Err(anyhow!(
                "rollout {} was replaced by rollout {}",
                first.id,
                r.id
            ));
        }
        if r.state != last_state {
            let line = format!("rollout {}: {}", r.id, r.state);
            if lines {
                eprintln!("{line}");
            } else {
                multi.println(line)?;
            }
            last_state = r.state.clone();
        }
        if r.hold != last_hold {
            if !r.held_by.is_empty() {
                let line = format!("rollout {} held by {}", r.id, r.held_by);
                if lines {
                    eprintln!("{line}");
                } else {
                    multi.println(line)?;
                }
            }
            last_hold = r.hold.clone();
        }
        for (i, (bar, w)) in bars.iter().zip(&r.waves).enumerate() {
            let healthy = w
                .clusters
                .iter()
                .filter(|c| c.cluster_progress() == ClusterProgress::Healthy)
                .count();
            // A cluster that joins the environment joins its wave.
            bar.set_length(w.clusters.len() as u64);
            bar.set_position(healthy as u64);
            let mut notes: Vec<String> = w
                .clusters
                .iter()
                .filter(|c| {
                    !matches!(
                        c.cluster_progress(),
                        ClusterProgress::Healthy | ClusterProgress::Pending
                    )
                })
                .map(|c| format!("{} {}", c.cluster, c.progress))
                .collect();
            notes.truncate(4);
            bar.set_message(notes.join(", "));
            if lines {
                let line = format!(
                    "wave {} {}: {healthy}/{} healthy  {}",
                    i + 1,
                    w.name,
                    w.clusters.len(),
                    notes.join(", ")
                );
                if line != last_lines[i] {
                    eprintln!("{}", line.trim_end());
                    last_lines[i] = line;
                }
            }
        }
        if !matches!(
            r.rollout_state(),
            RolloutState::Running | RolloutState::Paused | RolloutState::AwaitingApproval
        ) {
            for bar in &bars {
                bar.finish();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rollout_json(&r))?);
            } else {
                print_rollout(&r);
            }
            return finished_ok(&r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn rollback(
    client: &Client,
    a: RollbackArgs,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .promotion(|mut p, req: Req| {
            let request = req.wrap(RollbackRequest {
                workload: a.workload.clone(),
                environment: a.env.clone(),
                to: a.to.clone().unwrap_or_default(),
                reason: reason.clone(),
            });
            async move { p.rollback(request).await }
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "log_index": r.result.map_or(0, |w| w.log_index),
                "revision": r.revision, "rejected": r.rejected, "clusters": r.clusters,
            }))?
        );
    } else {
        eprintln!(
            "{} in {} rolled back to {} on {} clusters; {} is rejected",
            a.workload,
            a.env,
            short(&r.revision),
            r.clusters.len(),
            short(&r.rejected)
        );
    }
    Ok(())
}

pub async fn freeze(
    client: &Client,
    cmd: FreezeCmd,
    reason: String,
    consistency: i32,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        FreezeCmd::Add {
            environment,
            from,
            to,
        } => {
            let r = client
                .promotion(|mut p, req: Req| {
                    let request = req.wrap(AddFreezeRequest {
                        environment: environment.clone(),
                        from_ms: from,
                        to_ms: to,
                        reason: reason.clone(),
                    });
                    async move { p.add_freeze(request).await }
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"id": r.id}))?);
            } else {
                eprintln!("freeze {} added", r.id);
            }
            Ok(())
        }
        FreezeCmd::List => {
            let r = client
                .promotion_read(|mut p, req: Req| {
                    let request = req.wrap(ListFreezesRequest { consistency });
                    async move { p.list_freezes(request).await }
                })
                .await?;
            let mut t = Table::new(&["ID", "ENVIRONMENT", "FROM", "TO", "BY", "REASON"]);
            let mut items = Vec::new();
            for f in &r.freezes {
                t.row(vec![
                    f.id.to_string(),
                    f.environment.clone(),
                    format_time_ms(f.from_ms),
                    format_time_ms(f.to_ms),
                    f.created_by.clone(),
                    or_dash(&f.reason),
                ]);
                items.push(json!({"id": f.id, "environment": f.environment, "from_ms": f.from_ms,
                                  "to_ms": f.to_ms, "created_by": f.created_by, "reason": f.reason}));
            }
            crate::emit(json, t, json!({ "freezes": items }))
        }
        FreezeCmd::Remove { id } => {
            let r = client
                .promotion(|mut p, req: Req| {
                    let request = req.wrap(RemoveFreezeRequest {
                        id,
                        reason: reason.clone(),
                    });
                    async move { p.remove_freeze(request).await }
                })
                .await?;
            written(json, &format!("freeze {id} removed"), r.result)
        }
    }
}

pub async fn set_approvals(
    client: &Client,
    environment: String,
    approvals: u32,
    reason: String,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .promotion(|mut p, req: Req| {
            let request = req.wrap(SetRequiredApprovalsRequest {
                environment: environment.clone(),
                approvals,
                reason: reason.clone(),
            });
            async move { p.set_required_approvals(request).await }
        })
        .await?;
    written(
        json,
        &format!("{environment} requires {approvals} approvals"),
        r.result,
    )
}
