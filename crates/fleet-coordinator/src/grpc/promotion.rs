//! `PromotionService`: pipelines, approvals, promotion in waves, rollback and freeze windows.
//! The rules are fleet-core's (`fleet_core::rollout`); the planner that advances rollouts is
//! [`crate::planner`].

use std::sync::Arc;

use fleet_core::{Command, CoreError, Outcome};
use tonic::{Request, Response, Status};

use crate::convert::{self, consistency, write_result};
use crate::coordinator::{Coordinator, now_ms};
use crate::error::NodeError;
use crate::grpc::auth::{actor, may_read};
use fleet_api::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use fleet_api::proto::promotion_service_server::{PromotionService, PromotionServiceServer};
use fleet_api::proto::*;

use super::Reply;

pub fn promotion_server(c: Arc<Coordinator>) -> PromotionServiceServer<PromotionApi> {
    PromotionServiceServer::new(PromotionApi(c))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

pub struct PromotionApi(Arc<Coordinator>);

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
        let actor = actor(&request)?;
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
        may_read(&self.0, &request)?;
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
        let actor = actor(&request)?;
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
        let actor = actor(&request)?;
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
        may_read(&self.0, &request)?;
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
        may_read(&self.0, &request)?;
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
        let actor = actor(&request)?;
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
        let actor = actor(&request)?;
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
        let actor = actor(&request)?;
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
        may_read(&self.0, &request)?;
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
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::RemoveFreeze { id: r.id }, actor, r.reason)
            .await?;
        Ok(Response::new(RemoveFreezeResponse {
            result: write_result(index),
        }))
    }
}
