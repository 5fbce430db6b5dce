//! The gRPC services: `FleetService` and `AgentService` for clients, `RaftService` between
//! coordinators. Handlers translate through [`crate::convert`] and call the [`Coordinator`].

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Command, Outcome};
use openraft::raft::InstallSnapshotRequest;
use tonic::{Request, Response, Status};

use crate::convert::{self, actor, consistency, write_result};
use crate::coordinator::now_ms;
use crate::coordinator::{Consistency, Coordinator, ForwardedReply, ForwardedWrite};
use crate::error::NodeError;
use crate::leadership::{HandoverReply, HandoverRequest};
use crate::network::MAX_RAFT_MESSAGE_BYTES;
use crate::proto::agent_service_server::{AgentService, AgentServiceServer};
use crate::proto::fleet_service_server::{FleetService, FleetServiceServer};
use crate::proto::raft_service_server::{RaftService, RaftServiceServer};
use crate::proto::*;
use crate::tasks::spawn_named;
use crate::types::TypeConfig;
use fleet_core::limits::{MAX_RAFT_TERM, MAX_RAFT_TERM_STEP, MAX_REPORTS_PER_CALL};
use tokio_stream::wrappers::ReceiverStream;

pub use fleet_api::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
/// Most audit events in one `ListAuditEvents` page.
pub const MAX_AUDIT_EVENTS_PER_PAGE: usize = 1000;

pub fn fleet_server(c: Arc<Coordinator>) -> FleetServiceServer<FleetApi> {
    FleetServiceServer::new(FleetApi(c))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

pub fn agent_server(c: Arc<Coordinator>) -> AgentServiceServer<AgentApi> {
    AgentServiceServer::new(AgentApi(c))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

pub fn raft_server(c: Arc<Coordinator>) -> RaftServiceServer<RaftApi> {
    RaftServiceServer::new(RaftApi(c))
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
}

pub struct FleetApi(Arc<Coordinator>);

type Reply<T> = Result<Response<T>, Status>;

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
        let actor = actor(&request);
        let r = request.into_inner();
        let (index, _) = self
            .write(Command::AddSite { name: r.name }, actor, r.reason)
            .await?;
        Ok(Response::new(AddSiteResponse {
            result: write_result(index),
        }))
    }

    async fn list_sites(&self, request: Request<ListSitesRequest>) -> Reply<ListSitesResponse> {
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
        let actor = actor(&request);
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
        let actor = actor(&request);
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
        let actor = actor(&request);
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
        let actor = actor(&request);
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
        let actor = actor(&request);
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
        let r = request.into_inner();
        let index = self.0.remove_coordinator(r.id, r.force).await?;
        Ok(Response::new(RemoveCoordinatorResponse {
            result: write_result(index),
        }))
    }
}

pub struct AgentApi(Arc<Coordinator>);

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn get_assignments(
        &self,
        request: Request<GetAssignmentsRequest>,
    ) -> Reply<GetAssignmentsResponse> {
        let r = request.into_inner();
        let response = self
            .0
            .read(Consistency::Linearizable, |s| {
                let assignments = s.assignments(&r.cluster)?;
                Ok::<_, fleet_core::CoreError>(GetAssignmentsResponse {
                    assignments: assignments.into_iter().map(convert::assignment).collect(),
                    fleet_assignment_version: s.last_assignment_version(),
                })
            })
            .await?
            .map_err(NodeError::from)?;
        Ok(Response::new(response))
    }

    type WatchAssignmentsStream = ReceiverStream<Result<AssignmentSet, Status>>;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Reply<Self::WatchAssignmentsStream> {
        let r = request.into_inner();
        fleet_core::validate::dns_label("cluster", &r.cluster).map_err(NodeError::from)?;
        // Subscribed before the first read, so a change right after it is not missed.
        let mut changed = self.0.assignments_changed.clone();
        changed.mark_unchanged();
        // The first set, or NOT_FOUND, before the stream opens.
        let first = assignment_set(&self.0, &r.cluster)?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        spawn_named(
            "assignment-watch",
            serve_watch(self.0.clone(), changed, r.cluster, first, tx),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_status(
        &self,
        request: Request<ReportStatusRequest>,
    ) -> Reply<ReportStatusResponse> {
        let r = request.into_inner();
        fleet_core::validate::dns_label("cluster", &r.cluster).map_err(NodeError::from)?;
        if r.reports.len() > MAX_REPORTS_PER_CALL {
            return Err(NodeError::InvalidArgument {
                field: "reports",
                message: format!(
                    "{} is over the limit of {MAX_REPORTS_PER_CALL} per call",
                    r.reports.len()
                ),
                hint: "send one report per assigned workload, in several calls if need be".into(),
            }
            .into());
        }
        let reports = r
            .reports
            .into_iter()
            .map(convert::status_report_from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let mut committed = 0;
        for report in reports {
            let now = now_ms();
            let workload = report.workload.clone();
            let command = Command::RecordStatus {
                cluster: r.cluster.clone(),
                report: report.clone(),
            };
            // Checked here too, so a bad heartbeat is refused even when nothing is committed:
            // malformed at once; a refusal from this node's state (which may lag) only after a
            // read barrier.
            let context = heartbeat_context(&r.cluster, now);
            fleet_core::validate::command(&command, &context.actor, &context.reason)
                .map_err(NodeError::from)?;
            let verdict = |s: &fleet_core::State| {
                s.check_against_state(&command, &context)?;
                Ok::<_, fleet_core::CoreError>(s.report_needs_commit(&r.cluster, &report, now))
            };
            let mut needs_commit = self.0.read_state(verdict);
            if needs_commit.is_err() {
                needs_commit = self.0.read(Consistency::Linearizable, verdict).await?;
            }
            if needs_commit.map_err(NodeError::from)? {
                self.0
                    .write(command, agent_actor(&r.cluster), String::new())
                    .await?;
                committed += 1;
            }
            self.0.heartbeats.record(&r.cluster, &workload, now);
        }
        Ok(Response::new(ReportStatusResponse { committed }))
    }
}

/// Sets a watch stream may have queued for a slow agent; it only needs the newest, so a full
/// buffer just delays the next send.
const WATCH_BUFFER: usize = 2;

/// The actor an agent's status reports are committed as.
fn agent_actor(cluster: &str) -> String {
    format!("agent:{cluster}")
}

fn heartbeat_context(cluster: &str, now_ms: u64) -> fleet_core::Context {
    fleet_core::Context {
        now_ms,
        actor: agent_actor(cluster),
        reason: String::new(),
    }
}

/// A cluster's assignments from this node's applied state, or NOT_FOUND.
fn assignment_set(c: &Coordinator, cluster: &str) -> Result<AssignmentSet, Status> {
    c.read_state(|s| {
        let assignments = s.assignments(cluster)?;
        Ok::<_, fleet_core::CoreError>(AssignmentSet {
            version: s.assignment_set_version(cluster),
            assignments: assignments.into_iter().map(convert::assignment).collect(),
        })
    })
    .map_err(|e| NodeError::from(e).into())
}

/// Sends `first`, then a new set whenever the cluster's assignments change, until the agent
/// goes away or the cluster is removed (then NOT_FOUND ends the stream).
async fn serve_watch(
    c: Arc<Coordinator>,
    mut changed: tokio::sync::watch::Receiver<u64>,
    cluster: String,
    first: AssignmentSet,
    tx: tokio::sync::mpsc::Sender<Result<AssignmentSet, Status>>,
) {
    let mut sent = first.clone();
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            result = changed.changed() => if result.is_err() { return },
            () = tx.closed() => return,
        }
        match assignment_set(&c, &cluster) {
            Ok(set) if set != sent => {
                sent = set.clone();
                if tx.send(Ok(set)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

pub struct RaftApi(Arc<Coordinator>);

fn decode<T: serde::de::DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&payload.json).map_err(|e| {
        NodeError::BadMessage {
            message: format!("undecodable raft payload: {e}"),
        }
        .into()
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Response<RaftPayload> {
    Response::new(RaftPayload {
        json: serde_json::to_vec(value).expect("raft replies serialize"),
        cluster_id: String::new(),
        from_node: 0,
    })
}

impl RaftApi {
    /// Refuses a vote request while this node's log holds no membership: such a node is not a
    /// member yet (one being added), and a node that lost its disk must not help elect a stale
    /// leader.
    fn check_may_vote(&self) -> Result<(), Status> {
        let metrics = self.0.raft.metrics();
        let metrics = metrics.borrow();
        if metrics
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_none()
        {
            return Err(NodeError::FailedPrecondition {
                message: "vote: this node is not a member yet (its log holds no membership) and \
                          does not vote"
                    .into(),
                hint: String::new(),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a message from another cluster, or from a node that is not in the latest
    /// membership in this node's log (voters and learners). A node whose log holds no
    /// membership yet (one being added) checks the cluster id only.
    fn check_sender(&self, what: &str, cluster_id: &str, from_node: u64) -> Result<(), Status> {
        if cluster_id != self.0.cluster_id {
            tracing::warn!(what, from = from_node, cluster = %cluster_id, "refused a raft message from another cluster");
            return Err(NodeError::PermissionDenied {
                message: format!(
                    "{what}: the sender belongs to cluster {cluster_id:?}, this node to {:?}; \
                     nothing changed",
                    self.0.cluster_id
                ),
            }
            .into());
        }
        let metrics = self.0.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let empty = membership.nodes().next().is_none();
        if !empty && membership.get_node(&from_node).is_none() {
            tracing::warn!(
                what,
                from = from_node,
                "refused a raft message from a node that is not a member"
            );
            return Err(NodeError::PermissionDenied {
                message: format!(
                    "{what}: node {from_node} is not a member of this coordinator cluster; \
                     nothing changed"
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a message whose term is above [`MAX_RAFT_TERM`] or more than
    /// [`MAX_RAFT_TERM_STEP`] above this node's current term, before openraft sees it: a term
    /// near `u64::MAX` would overflow openraft's term arithmetic and kill its core.
    fn check_term(
        &self,
        what: &str,
        vote: &openraft::Vote<crate::types::NodeId>,
    ) -> Result<(), Status> {
        let term = vote.leader_id.term;
        let current = self.0.raft.metrics().borrow().current_term;
        if term > MAX_RAFT_TERM || term > current.saturating_add(MAX_RAFT_TERM_STEP) {
            tracing::warn!(%term, current, from = vote.leader_id.node_id, what, "refused a raft message with an impossible term");
            return Err(NodeError::BadMessage {
                message: format!(
                    "{what}: term {term} is impossible here (current term {current}; at most \
                     {MAX_RAFT_TERM_STEP} above it and never above {MAX_RAFT_TERM}); nothing \
                     changed"
                ),
            }
            .into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("append_entries", &r.cluster_id, r.from_node)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(r)?;
        self.check_term("append_entries", &rpc.vote)?;
        Ok(encode(&self.0.raft.append_entries(rpc).await))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("vote", &r.cluster_id, r.from_node)?;
        self.check_may_vote()?;
        let rpc: openraft::raft::VoteRequest<crate::types::NodeId> = decode(r)?;
        self.check_term("vote", &rpc.vote)?;
        Ok(encode(&self.0.raft.vote(rpc).await))
    }

    async fn install_snapshot(&self, request: Request<InstallSnapshotChunk>) -> Reply<RaftPayload> {
        let chunk = request.into_inner();
        self.check_sender("install_snapshot", &chunk.cluster_id, chunk.from_node)?;
        let bad = |e: serde_json::Error| -> Status {
            NodeError::BadMessage {
                message: format!("undecodable snapshot chunk: {e}"),
            }
            .into()
        };
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: serde_json::from_slice(&chunk.vote_json).map_err(bad)?,
            meta: serde_json::from_slice(&chunk.meta_json).map_err(bad)?,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        self.check_term("install_snapshot", &rpc.vote)?;
        Ok(encode(&self.0.raft.install_snapshot(rpc).await))
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("propose", &r.cluster_id, r.from_node)?;
        let write: ForwardedWrite = decode(r)?;
        if let Err(refusal) =
            fleet_core::validate::command(&write.command, &write.actor, &write.reason)
        {
            let reply: ForwardedReply = Err(refusal);
            return Ok(encode(&reply));
        }
        match self.0.write_as_leader(&write).await {
            Ok(result) => {
                let reply: ForwardedReply = match result {
                    Ok(applied) => Ok(applied),
                    Err(NodeError::Core(refusal)) => Err(refusal),
                    Err(other) => return Err(other.into()),
                };
                // The answer lost on its way back, after the write was applied: what a
                // connection that breaks mid-call looks like to the forwarding node.
                fail::fail_point!("propose-answer-lost", |_| {
                    Err(NodeError::OutcomeUnknown {
                        detail: "failpoint propose-answer-lost".into(),
                    }
                    .into())
                });
                Ok(encode(&reply))
            }
            Err(_) => Err(NodeError::NotLeader.into()),
        }
    }

    async fn read_index(&self, request: Request<ReadIndexRequest>) -> Reply<ReadIndexResponse> {
        let r = request.get_ref();
        self.check_sender("read_index", &r.cluster_id, r.from_node)?;
        let read_index = self.0.read_index().await?;
        Ok(Response::new(ReadIndexResponse { read_index }))
    }

    async fn take_leadership(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("take_leadership", &r.cluster_id, r.from_node)?;
        let handover: HandoverRequest = decode(r)?;
        let reply: HandoverReply = self.0.take_leadership(handover).await;
        Ok(encode(&reply))
    }

    async fn identify(&self, _request: Request<IdentifyRequest>) -> Reply<IdentifyResponse> {
        Ok(Response::new(IdentifyResponse {
            cluster_id: self.0.cluster_id.clone(),
            node_id: self.0.id,
        }))
    }

    async fn set_failpoint(
        &self,
        request: Request<SetFailpointRequest>,
    ) -> Reply<SetFailpointResponse> {
        if !cfg!(feature = "failpoints") {
            return Err(NodeError::FailedPrecondition {
                message: "this build has no failpoints".into(),
                hint: "failpoints exist in test builds only (those that include fleet-testkit)"
                    .into(),
            }
            .into());
        }
        if !self.0.allow_failpoint_rpc {
            return Err(NodeError::FailedPrecondition {
                message: "failpoints are not served here".into(),
                hint: "start the node with --allow-failpoint-rpc".into(),
            }
            .into());
        }
        let r = request.into_inner();
        if !FAILPOINTS.contains(&r.name.as_str()) {
            return Err(NodeError::InvalidArgument {
                field: "name",
                message: format!("{:?} is not a failpoint", r.name),
                hint: format!("use one of {}", FAILPOINTS.join(", ")),
            }
            .into());
        }
        if r.actions.len() > MAX_FAILPOINT_ACTIONS_BYTES {
            return Err(NodeError::InvalidArgument {
                field: "actions",
                message: format!(
                    "{} bytes is over the limit of {MAX_FAILPOINT_ACTIONS_BYTES}",
                    r.actions.len()
                ),
                hint: "see the fail crate's action syntax, e.g. 1*return or sleep(50)".into(),
            }
            .into());
        }
        fail::cfg(&r.name, &r.actions).map_err(|e| NodeError::InvalidArgument {
            field: "actions",
            message: e.to_string(),
            hint: "see the fail crate's action syntax, e.g. 1*return or sleep(50)".into(),
        })?;
        tracing::warn!(failpoint = %r.name, actions = %r.actions, "failpoint configured");
        Ok(Response::new(SetFailpointResponse {}))
    }
}

/// The failpoints a node has.
pub const FAILPOINTS: [&str; 7] = [
    "log-flush",
    "vote-flush",
    "disk-probe",
    "disk-probe-burst",
    "audit-tamper",
    "stale-linearizable-read",
    "propose-answer-lost",
];
/// Longest failpoint action string.
pub const MAX_FAILPOINT_ACTIONS_BYTES: usize = 256;
