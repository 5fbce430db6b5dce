//! `RaftService`: the transport between coordinator nodes (openraft's messages, forwarded
//! writes, read indexes, hand-overs), with the sender and term checks that run before openraft
//! sees a message.

use std::sync::Arc;

use openraft::raft::InstallSnapshotRequest;
use tonic::{Request, Response, Status};

use crate::coordinator::Coordinator;
use crate::error::NodeError;
use crate::grpc::auth::{Caller, caller};
use crate::grpc::network::MAX_RAFT_MESSAGE_BYTES;
pub use crate::limits::MAX_FAILPOINT_ACTIONS_BYTES;
use crate::types::TypeConfig;
use crate::types::{ForwardedReply, ForwardedWrite};
use crate::types::{HandoverReply, HandoverRequest};
use fleet_api::proto::raft_service_server::{RaftService, RaftServiceServer};
use fleet_api::proto::*;
use fleet_core::Principal;
use fleet_core::limits::{MAX_RAFT_TERM, MAX_RAFT_TERM_STEP};

use super::Reply;

pub fn raft_server(c: Arc<Coordinator>) -> RaftServiceServer<RaftApi> {
    RaftServiceServer::new(RaftApi(c))
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
}

pub struct RaftApi(Arc<Coordinator>);

/// The hint of every refusal of a Raft message.
const RAFT_PEERS: &str = "only member coordinators speak Raft, each with its own certificate \
                          (spiffe://TD/coordinator/ID); a removed node rejoins with an empty data \
                          dir and --join";

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

    /// Refuses a caller that is not a coordinator (operators and agents have no business
    /// here), and a coordinator that signs a message with another node id than its
    /// certificate's. A plaintext node (loopback only) has no certificates to go by.
    fn check_peer(
        &self,
        what: &str,
        caller: &Caller,
        from_node: Option<u64>,
    ) -> Result<(), Status> {
        let refuse = |message: String| -> Status {
            tracing::warn!(what, ?caller, "refused a raft message");
            NodeError::PermissionDenied {
                message,
                hint: RAFT_PEERS.into(),
            }
            .into()
        };
        match caller {
            Caller::Plaintext => Ok(()),
            Caller::Authenticated(Principal::Coordinator(id)) => match from_node {
                Some(from) if from != *id => Err(refuse(format!(
                    "{what}: the message says it is from node {from}, the certificate is node \
                     {id}'s; nothing changed"
                ))),
                _ => Ok(()),
            },
            other => Err(refuse(format!(
                "{what}: RaftService serves coordinators only, and {} is not one; nothing \
                 changed",
                other.actor()
            ))),
        }
    }

    /// Refuses a message from another cluster, or from a node that is not in the latest
    /// membership in this node's log (voters and learners). A node whose log holds no
    /// membership yet (one being added) checks the cluster id only. The sender must be the
    /// coordinator its certificate names ([`Self::check_peer`]).
    fn check_sender<T>(
        &self,
        what: &str,
        request: &Request<T>,
        cluster_id: &str,
        from_node: u64,
    ) -> Result<(), Status> {
        self.check_peer(what, &caller(request)?, Some(from_node))?;
        if cluster_id != self.0.cluster_id {
            tracing::warn!(what, from = from_node, cluster = %cluster_id, "refused a raft message from another cluster");
            return Err(NodeError::PermissionDenied {
                message: format!(
                    "{what}: the sender belongs to cluster {cluster_id:?}, this node to {:?}; \
                     nothing changed",
                    self.0.cluster_id
                ),
                hint: RAFT_PEERS.into(),
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
                hint: RAFT_PEERS.into(),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a message whose term is above [`MAX_RAFT_TERM`] or more than
    /// [`MAX_RAFT_TERM_STEP`] above this node's current term, before openraft sees it: a term
    /// near `u64::MAX` would overflow openraft's term arithmetic and kill its core.
    /// The vote must also be the sender's own (the leader's or the candidate's id is
    /// `from_node`), so that a member cannot speak for another.
    fn check_term(
        &self,
        what: &str,
        vote: &openraft::Vote<crate::types::NodeId>,
        from_node: u64,
    ) -> Result<(), Status> {
        if vote.leader_id.node_id != from_node {
            return Err(NodeError::PermissionDenied {
                message: format!(
                    "{what}: node {from_node} sent a vote of node {}; nothing changed",
                    vote.leader_id.node_id
                ),
                hint: RAFT_PEERS.into(),
            }
            .into());
        }
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
        self.check_sender("append_entries", &request, &r.cluster_id, r.from_node)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(r)?;
        self.check_term("append_entries", &rpc.vote, r.from_node)?;
        Ok(encode(&self.0.raft.append_entries(rpc).await))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("vote", &request, &r.cluster_id, r.from_node)?;
        self.check_may_vote()?;
        let rpc: openraft::raft::VoteRequest<crate::types::NodeId> = decode(r)?;
        self.check_term("vote", &rpc.vote, r.from_node)?;
        Ok(encode(&self.0.raft.vote(rpc).await))
    }

    async fn install_snapshot(&self, request: Request<InstallSnapshotChunk>) -> Reply<RaftPayload> {
        {
            let chunk = request.get_ref();
            self.check_sender(
                "install_snapshot",
                &request,
                &chunk.cluster_id,
                chunk.from_node,
            )?;
        }
        let chunk = request.into_inner();
        let from_node = chunk.from_node;
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
        self.check_term("install_snapshot", &rpc.vote, from_node)?;
        Ok(encode(&self.0.raft.install_snapshot(rpc).await))
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("propose", &request, &r.cluster_id, r.from_node)?;
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
        self.check_sender("read_index", &request, &r.cluster_id, r.from_node)?;
        let read_index = self.0.read_index().await?;
        Ok(Response::new(ReadIndexResponse { read_index }))
    }

    async fn take_leadership(&self, request: Request<RaftPayload>) -> Reply<RaftPayload> {
        let r = request.get_ref();
        self.check_sender("take_leadership", &request, &r.cluster_id, r.from_node)?;
        let handover: HandoverRequest = decode(r)?;
        let reply: HandoverReply = self.0.take_leadership(handover).await;
        Ok(encode(&reply))
    }

    async fn identify(&self, request: Request<IdentifyRequest>) -> Reply<IdentifyResponse> {
        // Any coordinator of the trust domain may ask: a node about to join asks before it is
        // a member, and the leader asks a node before it adds it.
        self.check_peer("identify", &caller(&request)?, None)?;
        Ok(Response::new(IdentifyResponse {
            cluster_id: self.0.cluster_id.clone(),
            node_id: self.0.id,
        }))
    }

    async fn set_failpoint(
        &self,
        request: Request<SetFailpointRequest>,
    ) -> Reply<SetFailpointResponse> {
        caller(&request)?;
        if !crate::HAS_FAILPOINTS {
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
