//! `AgentService`: assignments and status reports, for the agents.

use std::sync::Arc;

use fleet_core::Command;
use tonic::{Request, Response, Status};

use crate::convert::{self};
use crate::coordinator::now_ms;
use crate::coordinator::{Consistency, Coordinator};
use crate::error::NodeError;
use crate::grpc::auth::{Caller, CertificateIssued, caller, revoked_certificate};
use fleet_api::proto::agent_service_server::{AgentService, AgentServiceServer};
use fleet_api::proto::*;
use fleet_api::tasks::spawn_named;
use fleet_core::Principal;
use fleet_core::limits::MAX_REPORTS_PER_CALL;
use tokio_stream::wrappers::ReceiverStream;

use fleet_api::limits::{MAX_CSR_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

use super::Reply;

pub fn agent_server(c: Arc<Coordinator>, signer: Option<Signer>) -> AgentServiceServer<AgentApi> {
    AgentServiceServer::new(AgentApi(c, signer.map(Arc::new)))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

/// What signs agents' certificate requests: the fleet's CA with its key, and the lifetime of
/// the certificates.
pub struct Signer {
    pub ca: Arc<fleet_identity::pki::Ca>,
    pub ttl: std::time::Duration,
}

pub struct AgentApi(Arc<Coordinator>, Option<Arc<Signer>>);

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn get_assignments(
        &self,
        request: Request<GetAssignmentsRequest>,
    ) -> Reply<GetAssignmentsResponse> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        may_read(&self.0, &caller, "GetAssignments", &r.cluster)?;
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
        let caller = caller(&request)?;
        let not_before_ms = request
            .extensions()
            .get::<CertificateIssued>()
            .map_or(0, |c| c.not_before_ms);
        let r = request.into_inner();
        may_read(&self.0, &caller, "WatchAssignments", &r.cluster)?;
        fleet_core::validate::dns_label("cluster", &r.cluster).map_err(NodeError::from)?;
        // Subscribed before the first read, so a change right after it is not missed.
        let mut changed = self.0.assignments_changed.clone();
        changed.mark_unchanged();
        // The first set, or NOT_FOUND, before the stream opens.
        let first = assignment_set(&self.0, &r.cluster)?;
        let slot = self.0.watch_streams.open(&caller)?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        spawn_named(
            "assignment-watch",
            serve_watch(
                self.0.clone(),
                changed,
                (caller, not_before_ms),
                r.cluster,
                first,
                tx,
                slot,
            ),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_status(
        &self,
        request: Request<ReportStatusRequest>,
    ) -> Reply<ReportStatusResponse> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        may_report(&caller, &r.cluster)?;
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

    async fn request_certificate(
        &self,
        request: Request<RequestCertificateRequest>,
    ) -> Reply<RequestCertificateResponse> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let Some(signer) = &self.1 else {
            return Err(NodeError::FailedPrecondition {
                message: format!(
                    "RequestCertificate: coordinator {} signs no certificates (it was started \
                     without --ca-key); nothing changed",
                    self.0.id
                ),
                hint: "send the request to a coordinator that holds the CA key (the agent tries \
                       every endpoint it was given)"
                    .into(),
            }
            .into());
        };
        if r.csr_pem.len() > MAX_CSR_BYTES {
            return Err(NodeError::InvalidArgument {
                field: "csr_pem",
                message: format!(
                    "{} bytes is over the limit of {MAX_CSR_BYTES}",
                    r.csr_pem.len()
                ),
                hint: "send one PEM certificate signing request for one P-256 or Ed25519 key"
                    .into(),
            }
            .into());
        }
        // Checked before a join token is spent on it.
        fleet_identity::pki::Ca::check_request(&r.csr_pem).map_err(|e| {
            NodeError::InvalidArgument {
                field: "csr_pem",
                message: e.to_string(),
                hint: "make the request with the key the certificate is for (`fleet-node agent \
                       --join-token` does)"
                    .into(),
            }
        })?;
        let cluster = match caller {
            Caller::JoinToken {
                cluster,
                secret_sha256,
            } => {
                // Committed before signing: of two nodes given the same token at once, the
                // second's command is refused at apply, and it signs nothing.
                let command = Command::EnrollCluster {
                    cluster: cluster.clone(),
                    secret_sha256,
                };
                self.0
                    .write(command, agent_actor(&cluster), String::new())
                    .await?;
                tracing::info!(%cluster, "enrolled an agent with its join token");
                cluster
            }
            Caller::Authenticated(Principal::Cluster(cluster)) => {
                tracing::info!(%cluster, "renewing an agent's certificate");
                cluster
            }
            other => {
                return Err(NodeError::PermissionDenied {
                    message: format!(
                        "RequestCertificate: only an agent, with its cluster's join token or its \
                         current certificate, asks for a certificate, and {} is neither",
                        other.actor()
                    ),
                    hint: "make a join token with `fleet-ctl cluster join-token CLUSTER` and \
                           start the agent with --join-token"
                        .into(),
                }
                .into());
            }
        };
        let validity = fleet_identity::pki::Validity::from_now(signer.ttl);
        let certificate_pem = signer
            .ca
            .sign_cluster_request(&r.csr_pem, &cluster, validity)
            .map_err(|e| NodeError::FailedPrecondition {
                message: format!("RequestCertificate: signing for cluster {cluster}: {e}"),
                hint: "see the coordinator's log".into(),
            })?;
        Ok(Response::new(RequestCertificateResponse {
            certificate_pem,
            ca_pem: signer.ca.cert_pem().to_string(),
            not_before_unix_s: validity.not_before_s,
            not_after_unix_s: validity.not_after_s,
        }))
    }
}

/// An agent reads only its own cluster's assignments; coordinators read any, operators and
/// tokens any with a role ([`fleet_core::access::may_read`]).
fn may_read(
    coordinator: &Coordinator,
    caller: &Caller,
    what: &str,
    cluster: &str,
) -> Result<(), NodeError> {
    match caller {
        Caller::Authenticated(Principal::Cluster(_)) | Caller::Plaintext => {}
        other => {
            let actor = other.actor();
            let now = now_ms();
            coordinator.read_state(|s| fleet_core::access::may_read(s, &actor, now))?;
        }
    }
    match caller {
        Caller::Authenticated(Principal::Cluster(own)) if own != cluster => {
            Err(NodeError::PermissionDenied {
                message: format!(
                    "{what}: {} may read its own cluster's assignments only, not {cluster:?}",
                    Principal::Cluster(own.clone())
                ),
                hint: "an agent's certificate is for its own cluster".into(),
            })
        }
        _ => Ok(()),
    }
}

/// Whether the caller of an open watch stream may still read, after a change that may have
/// taken that away (a token revoked or expired, a role unbound, the agent's certificate
/// revoked): the stream ends with UNAUTHENTICATED or PERMISSION_DENIED when not.
fn still_may_watch(c: &Coordinator, caller: &Caller, not_before_ms: u64) -> Result<(), Status> {
    let now = now_ms();
    match caller {
        Caller::Authenticated(Principal::Cluster(cluster)) => {
            match c.read_state(|s| s.cluster_certificate_revoked(cluster, not_before_ms)) {
                Some(revoked_at_ms) => Err(revoked_certificate(cluster, revoked_at_ms)),
                None => Ok(()),
            }
        }
        Caller::Token(name) => {
            let valid = c.read_state(|s| s.token(name).is_some_and(|t| now < t.expires_at_ms));
            if valid {
                Ok(())
            } else {
                Err(fleet_api::status::with_hint(
                    tonic::Code::Unauthenticated,
                    format!("bearer token {name} was revoked or has expired; the stream ends"),
                    "ask an admin for a new one (`fleet-ctl token create`)",
                ))
            }
        }
        Caller::Authenticated(Principal::Operator(_)) => {
            let actor = caller.actor();
            c.read_state(|s| fleet_core::access::may_read(s, &actor, now))
                .map_err(|e| NodeError::from(e).into())
        }
        _ => Ok(()),
    }
}

/// Status reports move gates and trigger rollbacks: only the agent of `cluster` itself (its
/// certificate's `spiffe://TD/cluster/NAME`) may send them, not an operator, not another
/// cluster's agent, not a coordinator.
fn may_report(caller: &Caller, cluster: &str) -> Result<(), NodeError> {
    match caller {
        Caller::Plaintext => Ok(()),
        Caller::Authenticated(Principal::Cluster(own)) if own == cluster => Ok(()),
        other => Err(NodeError::PermissionDenied {
            message: format!(
                "ReportStatus: only the agent of cluster {cluster:?} reports its status, and \
                 {} is not it; nothing changed",
                other.actor()
            ),
            hint: format!(
                "reports come from the agent that runs in the cluster, with the certificate \
                 from `fleet-ctl pki issue cluster {cluster}`"
            ),
        }),
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
    (caller, not_before_ms): (Caller, u64),
    cluster: String,
    first: AssignmentSet,
    tx: tokio::sync::mpsc::Sender<Result<AssignmentSet, Status>>,
    // Counted against the caller's bound until the stream ends.
    _slot: crate::watches::WatchSlot,
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
        if let Err(status) = still_may_watch(&c, &caller, not_before_ms) {
            let _ = tx.send(Err(status)).await;
            return;
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
