//! `PromotionService`, and the `rollout-planner` task that advances running rollouts on the
//! leader. The rules are fleet-core's (`fleet_core::rollout`); this is the IO around them.

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Command, CoreError, Outcome};
use tonic::{Request, Response, Status};

use crate::convert::{self, actor, consistency, write_result};
use crate::coordinator::{Coordinator, now_ms};
use crate::error::NodeError;
use crate::proto::promotion_service_server::{PromotionService, PromotionServiceServer};
use crate::proto::*;
use crate::service::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// How often the leader's planner looks for rollout steps; the soak and wave timing is
/// accurate to about this much.
pub const PLANNER_TICK: Duration = Duration::from_secs(1);
/// The actor of every planner step in the audit log.
pub const PLANNER_ACTOR: &str = "planner";

pub fn promotion_server(c: Arc<Coordinator>) -> PromotionServiceServer<PromotionApi> {
    PromotionServiceServer::new(PromotionApi(c))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

/// On the leader, every [`PLANNER_TICK`]: plan against the applied state and propose each
/// step. A step that went stale before it was applied is refused by the state machine and
/// planned again on the next tick.
pub async fn run_planner(c: Arc<Coordinator>) {
    let mut tick = tokio::time::interval(PLANNER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A skewed clock decides nothing: soaks and freezes would be judged by a wrong time.
        if c.leader().map(|(id, _)| id) != Some(c.id) || !c.clock.may_stamp(now_ms()) {
            continue;
        }
        // Never earlier than a committed time: a report stamped by the previous leader is not
        // "in the future" of this decision.
        let now = c.stamp_ms();
        let steps = c.read_state(|s| fleet_core::rollout::plan(s, now));
        for step in steps {
            let kind = format!("{step:?}");
            match c
                .write(step, PLANNER_ACTOR.into(), "automatic rollout step".into())
                .await
            {
                Ok((index, _)) => tracing::info!(index, step = %kind, "rollout step"),
                Err(NodeError::Core(e)) => {
                    tracing::debug!(error = %e, "rollout step went stale; planning again")
                }
                Err(error) => tracing::warn!(%error, "rollout step not committed"),
            }
        }
    }
}

pub struct PromotionApi(Arc<Coordinator>);

type Reply<T> = Result<Response<T>, Status>;

fn optional(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

impl PromotionApi {
    async fn write(
        &self,
        command: Command,
        actor: String,
        reason: String,
    ) -> Result<(u64, Outcome), Status> {
        Ok(self.0.write(command, actor, reason).await?)
    }

    /// The newest rollout of a workload into an environment, from this node's state.
    fn rollout_now(&self, workload: &str, environment: &str) -> Result<Rollout, Status> {
        let found = self.0.read_state(|s| {
            s.rollout(workload, environment)
                .map(|r| convert::rollout(s, r, now_ms()))
        });
        found.ok_or_else(|| {
            Status::from(NodeError::from(CoreError::not_found(
                "rollout",
                &format!("{workload}/{environment}"),
                "start one with `fleet-ctl promote WORKLOAD --to ENV`",
            )))
        })
    }
}

#[tonic::async_trait]
impl PromotionService for PromotionApi {
    async fn set_pipeline(
        &self,
        request: Request<SetPipelineRequest>,
    ) -> Reply<SetPipelineResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let pipeline = r.pipeline.ok_or_else(|| {
            Status::from(NodeError::from(CoreError::invalid(
                "pipeline",
                "is missing",
                "send the pipeline to set",
            )))
        })?;
        let command = Command::SetPipeline {
            workload: r.workload,
            pipeline: convert::pipeline_from_wire(pipeline),
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(SetPipelineResponse {
            result: write_result(index),
        }))
    }

    async fn get_pipeline(
        &self,
        request: Request<GetPipelineRequest>,
    ) -> Reply<GetPipelineResponse> {
        let r = request.into_inner();
        let reply = self
            .0
            .read(consistency(r.consistency), |s| {
                s.workload(&r.workload).map(|_| {
                    let p = s.pipeline(&r.workload);
                    let approvals = p
                        .environments
                        .iter()
                        .map(|e| (e.clone(), s.required_approvals(e)))
                        .collect();
                    GetPipelineResponse {
                        pipeline: Some(convert::pipeline(&p)),
                        required_approvals: approvals,
                    }
                })
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(reply))
    }

    async fn set_required_approvals(
        &self,
        request: Request<SetRequiredApprovalsRequest>,
    ) -> Reply<SetRequiredApprovalsResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let command = Command::SetRequiredApprovals {
            environment: r.environment,
            approvals: r.approvals,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(SetRequiredApprovalsResponse {
            result: write_result(index),
        }))
    }

    async fn promote(&self, request: Request<PromoteRequest>) -> Reply<RolloutResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let command = Command::Promote {
            workload: r.workload.clone(),
            environment: r.environment.clone(),
            revision: optional(r.revision),
            allow_rejected: r.allow_rejected,
            override_freeze: r.override_freeze,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(RolloutResponse {
            result: write_result(index),
            rollout: Some(self.rollout_now(&r.workload, &r.environment)?),
        }))
    }

    async fn plan(&self, request: Request<PlanRequest>) -> Reply<PlanResponse> {
        let r = request.into_inner();
        let revision = optional(r.revision);
        let plan = self
            .0
            .read(crate::coordinator::Consistency::Linearizable, |s| {
                s.plan_promotion(&r.workload, &r.environment, revision.as_deref(), now_ms())
                    .map(|p| convert::promotion_plan(&p))
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(plan))
    }

    async fn get_rollout(&self, request: Request<GetRolloutRequest>) -> Reply<RolloutResponse> {
        let r = request.into_inner();
        self.0.read_barrier(consistency(r.consistency)).await?;
        Ok(Response::new(RolloutResponse {
            result: None,
            rollout: Some(self.rollout_now(&r.workload, &r.environment)?),
        }))
    }

    async fn change_rollout(
        &self,
        request: Request<ChangeRolloutRequest>,
    ) -> Reply<RolloutResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let (workload, environment) = (r.workload.clone(), r.environment.clone());
        let command = match RolloutAction::try_from(r.action) {
            Ok(RolloutAction::Pause) => Command::PauseRollout {
                workload,
                environment,
            },
            Ok(RolloutAction::Resume) => Command::ResumeRollout {
                workload,
                environment,
            },
            Ok(RolloutAction::Abort) => Command::AbortRollout {
                workload,
                environment,
            },
            Ok(RolloutAction::Approve) => Command::Approve {
                workload,
                environment,
            },
            _ => {
                return Err(NodeError::from(CoreError::invalid(
                    "action",
                    format!("{} is not a rollout action", r.action),
                    "use PAUSE, RESUME, ABORT or APPROVE",
                ))
                .into());
            }
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(RolloutResponse {
            result: write_result(index),
            rollout: Some(self.rollout_now(&r.workload, &r.environment)?),
        }))
    }

    async fn rollback(&self, request: Request<RollbackRequest>) -> Reply<RollbackResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let command = Command::Rollback {
            workload: r.workload,
            environment: r.environment,
            to: optional(r.to),
        };
        let (index, outcome) = self.write(command, actor, r.reason).await?;
        let mut reply = RollbackResponse {
            result: write_result(index),
            ..Default::default()
        };
        if let Outcome::RolledBack {
            revision,
            rejected,
            clusters,
            ..
        } = outcome
        {
            reply.revision = revision;
            reply.rejected = rejected;
            reply.clusters = clusters;
        }
        Ok(Response::new(reply))
    }

    async fn add_freeze(&self, request: Request<AddFreezeRequest>) -> Reply<AddFreezeResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let command = Command::AddFreeze {
            environment: r.environment,
            from_ms: r.from_ms,
            to_ms: r.to_ms,
        };
        let (index, outcome) = self.write(command, actor, r.reason).await?;
        let id = match outcome {
            Outcome::FreezeAdded { id } => id,
            _ => 0,
        };
        Ok(Response::new(AddFreezeResponse {
            result: write_result(index),
            id,
        }))
    }

    async fn list_freezes(
        &self,
        request: Request<ListFreezesRequest>,
    ) -> Reply<ListFreezesResponse> {
        let r = request.into_inner();
        let freezes = self
            .0
            .read(consistency(r.consistency), |s| {
                s.freezes().map(convert::freeze).collect()
            })
            .await?;
        Ok(Response::new(ListFreezesResponse { freezes }))
    }

    async fn remove_freeze(
        &self,
        request: Request<RemoveFreezeRequest>,
    ) -> Reply<RemoveFreezeResponse> {
        let actor = actor(&request);
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::RemoveFreeze { id: r.id }, actor, r.reason)
            .await?;
        Ok(Response::new(RemoveFreezeResponse {
            result: write_result(index),
        }))
    }
}
