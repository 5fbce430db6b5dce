//! `FleetService`: sites, environments, clusters, workloads, releases, status, the
//! coordinators and the audit log, for clients. Handlers translate through [`crate::convert`]
//! and call the [`Coordinator`].

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Command, Outcome};
use tonic::{Request, Response, Status};

use crate::convert::{self, consistency, write_result};
use crate::coordinator::Coordinator;
use crate::coordinator::now_ms;
use crate::error::NodeError;
use crate::grpc::auth::{actor, may_change_membership, may_read};
pub use crate::limits::MAX_AUDIT_EVENTS_PER_PAGE;
use fleet_api::proto::fleet_service_server::{FleetService, FleetServiceServer};
use fleet_api::proto::*;

use fleet_api::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use fleet_core::limits::{MAX_JOIN_TOKEN_TTL_MS, MAX_TOKEN_TTL_MS};

use super::Reply;

pub fn fleet_server(c: Arc<Coordinator>) -> FleetServiceServer<FleetApi> {
    FleetServiceServer::new(FleetApi(c))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

pub struct FleetApi(Arc<Coordinator>);

impl FleetApi {
    async fn write(
        &self,
        command: Command,
        actor: String,
        reason: String,
    ) -> Result<(u64, Outcome), Status> {
        Ok(self.0.write(command, actor, reason).await?)
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn add_site(&self, request: Request<AddSiteRequest>) -> Reply<AddSiteResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::AddSite { name: r.name }, actor, r.reason)
            .await?;
        Ok(Response::new(AddSiteResponse {
            result: write_result(index),
        }))
    }

    async fn list_sites(&self, request: Request<ListSitesRequest>) -> Reply<ListSitesResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let sites = self
            .0
            .read(consistency(r.consistency), |s| {
                s.sites().map(convert::site).collect()
            })
            .await?;
        Ok(Response::new(ListSitesResponse { sites }))
    }

    async fn add_environment(
        &self,
        request: Request<AddEnvironmentRequest>,
    ) -> Reply<AddEnvironmentResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (index, outcome) = self
            .write(Command::AddEnvironment { name: r.name }, actor, r.reason)
            .await?;
        let environment = match outcome {
            Outcome::EnvironmentAdded { name, position } => Some(Environment { name, position }),
            _ => None,
        };
        Ok(Response::new(AddEnvironmentResponse {
            result: write_result(index),
            environment,
        }))
    }

    async fn list_environments(
        &self,
        request: Request<ListEnvironmentsRequest>,
    ) -> Reply<ListEnvironmentsResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let environments = self
            .0
            .read(consistency(r.consistency), |s| {
                s.environments().iter().map(convert::environment).collect()
            })
            .await?;
        Ok(Response::new(ListEnvironmentsResponse { environments }))
    }

    async fn register_cluster(
        &self,
        request: Request<RegisterClusterRequest>,
    ) -> Reply<RegisterClusterResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::RegisterCluster {
            name: r.name,
            site: r.site,
            environment: r.environment,
            labels: r.labels.into_iter().collect(),
        };
        let (index, outcome) = self.write(command, actor, r.reason).await?;
        let assignments = match outcome {
            Outcome::ClusterRegistered { assignments, .. } => assignments,
            _ => 0,
        };
        Ok(Response::new(RegisterClusterResponse {
            result: write_result(index),
            assignments,
        }))
    }

    async fn remove_cluster(
        &self,
        request: Request<RemoveClusterRequest>,
    ) -> Reply<RemoveClusterResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::RemoveCluster { name: r.name }, actor, r.reason)
            .await?;
        Ok(Response::new(RemoveClusterResponse {
            result: write_result(index),
        }))
    }

    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Reply<ListClustersResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let clusters = self
            .0
            .read(consistency(r.consistency), |s| {
                s.clusters().map(convert::cluster).collect()
            })
            .await?;
        Ok(Response::new(ListClustersResponse { clusters }))
    }

    async fn get_cluster(&self, request: Request<GetClusterRequest>) -> Reply<GetClusterResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let response = self
            .0
            .read(consistency(r.consistency), |s| {
                let cluster = s.cluster(&r.name)?;
                let assignments = s.assignments(&r.name)?;
                let reports = s.reports(&r.name)?;
                Ok::<_, fleet_core::CoreError>(GetClusterResponse {
                    cluster: Some(convert::cluster(cluster)),
                    assignments: assignments.into_iter().map(convert::assignment).collect(),
                    reports: reports
                        .into_iter()
                        .map(|rep| {
                            let seen = self.0.heartbeats.last_seen(
                                &r.name,
                                &rep.report.workload,
                                rep.reported_at_ms,
                            );
                            convert::reported_status(rep, seen)
                        })
                        .collect(),
                })
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(response))
    }

    async fn create_workload(
        &self,
        request: Request<CreateWorkloadRequest>,
    ) -> Reply<CreateWorkloadResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::CreateWorkload {
            name: r.name,
            repo_url: r.repo_url,
            path_template: r.path_template,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(CreateWorkloadResponse {
            result: write_result(index),
        }))
    }

    async fn list_workloads(
        &self,
        request: Request<ListWorkloadsRequest>,
    ) -> Reply<ListWorkloadsResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let workloads = self
            .0
            .read(consistency(r.consistency), |s| {
                s.workloads().map(|w| convert::workload(w, s)).collect()
            })
            .await?;
        Ok(Response::new(ListWorkloadsResponse { workloads }))
    }

    async fn publish_release(
        &self,
        request: Request<PublishReleaseRequest>,
    ) -> Reply<PublishReleaseResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::PublishRelease {
            workload: r.workload,
            revision: r.revision,
            allow_rejected: r.allow_rejected,
            override_freeze: r.override_freeze,
        };
        let (index, outcome) = self.write(command, actor, r.reason).await?;
        let (environment, clusters) = match outcome {
            Outcome::ReleasePublished {
                environment,
                clusters,
                ..
            } => (environment, clusters),
            _ => Default::default(),
        };
        Ok(Response::new(PublishReleaseResponse {
            result: write_result(index),
            environment,
            clusters,
        }))
    }

    async fn list_releases(
        &self,
        request: Request<ListReleasesRequest>,
    ) -> Reply<ListReleasesResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let releases = self
            .0
            .read(consistency(r.consistency), |s| {
                s.releases(&r.workload)
                    .map(|rs| rs.iter().map(convert::release).collect::<Vec<_>>())
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(ListReleasesResponse { releases }))
    }

    async fn get_cluster_history(
        &self,
        request: Request<GetClusterHistoryRequest>,
    ) -> Reply<GetClusterHistoryResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let at = if r.at_ms == 0 { now_ms() } else { r.at_ms };
        let reply = self
            .0
            .read(consistency(r.consistency), |s| {
                s.cluster_history(&r.cluster, at)
                    .map(|h| GetClusterHistoryResponse {
                        assigned: h
                            .assigned
                            .values()
                            .map(convert::assignment_change)
                            .collect(),
                        changes: h.changes.iter().map(convert::assignment_change).collect(),
                        kept_since_ms: h.kept_since_ms,
                    })
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(reply))
    }

    async fn get_status(&self, request: Request<GetStatusRequest>) -> Reply<GetStatusResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let rows = self
            .0
            .read(consistency(r.consistency), |s| {
                let now = now_ms();
                s.status_rows()
                    .iter()
                    .filter_map(|row| {
                        let last_seen = match (&row.workload, &row.report) {
                            (Some(w), Some(r)) => {
                                self.0
                                    .heartbeats
                                    .last_seen(&row.cluster, w, r.reported_at_ms)
                            }
                            _ => 0,
                        };
                        // An agent that stopped reporting a workload no longer assigned has
                        // pruned it (or is gone): the row goes.
                        let silent = now.saturating_sub(last_seen)
                            >= fleet_core::rollout::UNREACHABLE_AFTER_MS;
                        (!(row.not_assigned && silent)).then(|| convert::status_row(row, last_seen))
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(GetStatusResponse { rows }))
    }

    async fn get_coordinator_status(
        &self,
        _request: Request<GetCoordinatorStatusRequest>,
    ) -> Reply<GetCoordinatorStatusResponse> {
        // Any authenticated caller, with or without a role: it names nodes, terms and log
        // indexes, nothing of the fleet (as etcd's maintenance Status).
        let m = self.0.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| CoordinatorMember {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Ok(Response::new(GetCoordinatorStatusResponse {
            node_id: self.0.id,
            leader_id: m.current_leader,
            term: m.current_term,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            role: Coordinator::role(m.state).to_string(),
            members,
            disk: convert::disk_health(&self.0.health.report()),
            cluster_id: self.0.cluster_id.clone(),
            now_ms: now_ms(),
            clock_offset_ms: self.0.clock.offset_ms(),
            clock_skewed: self.0.clock.skewed(),
            max_clock_offset_ms: self.0.clock.max_offset_ms(),
            clocks_compared: self.0.clock.compared(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Reply<ListAuditEventsResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let max = match r.max_events {
            0 => MAX_AUDIT_EVENTS_PER_PAGE,
            n if n as usize <= MAX_AUDIT_EVENTS_PER_PAGE => n as usize,
            n => {
                return Err(NodeError::InvalidArgument {
                    field: "max_events",
                    message: format!("{n} is over the limit of {MAX_AUDIT_EVENTS_PER_PAGE}"),
                    hint: "page with after_sequence".into(),
                }
                .into());
            }
        };
        if !r.kind.is_empty() && !fleet_core::Command::KINDS.contains(&r.kind.as_str()) {
            return Err(NodeError::InvalidArgument {
                field: "kind",
                message: format!("{:?} is not a command kind", r.kind),
                hint: format!("use one of {}", fleet_core::Command::KINDS.join(", ")),
            }
            .into());
        }
        let response = self
            .0
            .read(consistency(r.consistency), |s| {
                let all = s.audit_events();
                let start = (r.after_sequence as usize).min(all.len());
                let end = match r.before_sequence {
                    0 => all.len(),
                    before => (before.saturating_sub(1) as usize).clamp(start, all.len()),
                };
                let matching: Vec<&fleet_core::AuditEvent> = all[start..end]
                    .iter()
                    .filter(|e| r.kind.is_empty() || e.command.kind() == r.kind)
                    .collect();
                let page = if r.newest {
                    &matching[matching.len().saturating_sub(max)..]
                } else {
                    &matching[..matching.len().min(max)]
                };
                ListAuditEventsResponse {
                    events: page.iter().map(|e| convert::audit_event(e)).collect(),
                    last_sequence: all.len() as u64,
                    matching: matching.len() as u64,
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn add_coordinator(
        &self,
        request: Request<AddCoordinatorRequest>,
    ) -> Reply<AddCoordinatorResponse> {
        let joining = Some(request.get_ref().id);
        may_change_membership(&self.0, &request, "add_coordinator", joining)?;
        let r = request.into_inner();
        let catch_up = match r.catch_up_timeout_ms {
            0 => crate::coordinator::DEFAULT_CATCH_UP_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        if catch_up > crate::coordinator::MAX_CATCH_UP_TIMEOUT {
            return Err(NodeError::InvalidArgument {
                field: "catch_up_timeout_ms",
                message: format!("{} ms is over the limit", r.catch_up_timeout_ms),
                hint: format!(
                    "at most {} ms",
                    crate::coordinator::MAX_CATCH_UP_TIMEOUT.as_millis()
                ),
            }
            .into());
        }
        let index = self.0.add_coordinator(r.id, r.address, catch_up).await?;
        Ok(Response::new(AddCoordinatorResponse {
            result: write_result(index),
        }))
    }

    async fn remove_coordinator(
        &self,
        request: Request<RemoveCoordinatorRequest>,
    ) -> Reply<RemoveCoordinatorResponse> {
        may_change_membership(&self.0, &request, "remove_coordinator", None)?;
        let r = request.into_inner();
        let index = self.0.remove_coordinator(r.id, r.force).await?;
        Ok(Response::new(RemoveCoordinatorResponse {
            result: write_result(index),
        }))
    }

    async fn bind_role(&self, request: Request<BindRoleRequest>) -> Reply<BindRoleResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::BindRole {
            principal: r.principal,
            role: r.role,
            environments: r.environments,
            workloads: r.workloads,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(BindRoleResponse {
            result: write_result(index),
        }))
    }

    async fn unbind_role(&self, request: Request<UnbindRoleRequest>) -> Reply<UnbindRoleResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::UnbindRole {
            principal: r.principal,
            role: r.role,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(UnbindRoleResponse {
            result: write_result(index),
        }))
    }

    async fn list_role_bindings(
        &self,
        request: Request<ListRoleBindingsRequest>,
    ) -> Reply<ListRoleBindingsResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let bindings = self
            .0
            .read(consistency(r.consistency), |s| {
                s.role_bindings()
                    .map(|(principal, grants)| convert::role_binding(principal, grants))
                    .collect()
            })
            .await?;
        Ok(Response::new(ListRoleBindingsResponse { bindings }))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Reply<CreateTokenResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let expires_at_ms = expiry(
            r.ttl_ms,
            MAX_TOKEN_TTL_MS,
            "give a lifetime of at most 366 days, e.g. --ttl 90d",
        )?;
        fleet_core::principal::operator_name("name", &r.name).map_err(NodeError::from)?;
        let (token, secret_sha256) =
            fleet_identity::pki::new_bearer_token(&r.name).map_err(no_secret)?;
        let command = Command::CreateToken {
            name: r.name,
            secret_sha256,
            role: r.role,
            environments: r.environments,
            workloads: r.workloads,
            expires_at_ms,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(CreateTokenResponse {
            result: write_result(index),
            token,
            expires_at_ms,
        }))
    }

    async fn list_tokens(&self, request: Request<ListTokensRequest>) -> Reply<ListTokensResponse> {
        may_read(&self.0, &request)?;
        let r = request.into_inner();
        let tokens = self
            .0
            .read(consistency(r.consistency), |s| {
                s.tokens().map(convert::token_info).collect()
            })
            .await?;
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Reply<RevokeTokenResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::RevokeToken { name: r.name }, actor, r.reason)
            .await?;
        Ok(Response::new(RevokeTokenResponse {
            result: write_result(index),
        }))
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Reply<CreateJoinTokenResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let expires_at_ms = expiry(
            r.ttl_ms,
            MAX_JOIN_TOKEN_TTL_MS,
            "give a lifetime of at most 7 days, e.g. --ttl 1h",
        )?;
        fleet_core::validate::dns_label("cluster", &r.cluster).map_err(NodeError::from)?;
        let (token, secret_sha256) =
            fleet_identity::pki::new_join_token(&r.cluster).map_err(no_secret)?;
        let command = Command::CreateJoinToken {
            cluster: r.cluster,
            secret_sha256,
            expires_at_ms,
        };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(CreateJoinTokenResponse {
            result: write_result(index),
            token,
            expires_at_ms,
        }))
    }

    async fn revoke_cluster_certificates(
        &self,
        request: Request<RevokeClusterCertificatesRequest>,
    ) -> Reply<RevokeClusterCertificatesResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let command = Command::RevokeClusterCertificates { cluster: r.cluster };
        let (index, _) = self.write(command, actor, r.reason).await?;
        Ok(Response::new(RevokeClusterCertificatesResponse {
            result: write_result(index),
        }))
    }
}

/// When a token with a lifetime of `ttl_ms` (1 to `max_ms`) made now expires, in milliseconds
/// since the Unix epoch; INVALID_ARGUMENT naming `ttl_ms` with `hint` otherwise.
fn expiry(ttl_ms: u64, max_ms: u64, hint: &str) -> Result<u64, Status> {
    if ttl_ms == 0 || ttl_ms > max_ms {
        return Err(NodeError::InvalidArgument {
            field: "ttl_ms",
            message: format!("{ttl_ms} ms is not 1 to {max_ms} ms"),
            hint: hint.into(),
        }
        .into());
    }
    Ok(now_ms().saturating_add(ttl_ms))
}

/// The refusal when the secure random source fails to make a token's secret.
fn no_secret(error: fleet_identity::IdentityError) -> NodeError {
    NodeError::FailedPrecondition {
        message: error.to_string(),
        hint: "see the node's log".into(),
    }
}
