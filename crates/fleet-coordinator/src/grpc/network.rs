//! This coordinator as a client of the others: openraft's messages JSON-encoded in
//! `RaftService` calls, forwarded writes, read indexes, hand-overs, and the few `FleetService`
//! calls one node makes of another (status, membership changes), over one cached channel per
//! peer. Callers get domain values ([`PeerStatus`], [`PeerIdentity`], log indexes), never proto
//! messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_identity::Transport;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

pub use crate::limits::MAX_RAFT_MESSAGE_BYTES;
use crate::types::ForwardedWrite;
use crate::types::{HandoverReply, HandoverRequest};
use crate::types::{NodeId, TypeConfig};
use fleet_api::limits::MAX_RESPONSE_BYTES;
use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::raft_service_client::RaftServiceClient;
use fleet_api::proto::{
    AddCoordinatorRequest, GetCoordinatorStatusRequest, IdentifyRequest, InstallSnapshotChunk,
    RaftPayload, ReadIndexRequest, RemoveCoordinatorRequest,
};
use tonic::Status;

/// Largest snapshot chunk sent in one InstallSnapshot call.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One lazily connected channel per peer address, shared by every user, and the name this node
/// signs its Raft messages with (cluster id, node id).
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    cluster_id: Arc<str>,
    node_id: NodeId,
    /// Mutual TLS with this node's coordinator certificate (plaintext only on loopback).
    transport: Transport,
}

impl Peers {
    /// Peers of node `node_id` of cluster `cluster_id`, reached over `transport`.
    pub fn new(cluster_id: String, node_id: NodeId, transport: Transport) -> Self {
        Peers {
            channels: Arc::default(),
            cluster_id: cluster_id.into(),
            node_id,
            transport,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// A Raft message from this node carrying `json`.
    fn payload(&self, json: Vec<u8>) -> RaftPayload {
        RaftPayload {
            json,
            cluster_id: self.cluster_id.to_string(),
            from_node: self.node_id,
        }
    }

    /// The channel to `address` (HOST:PORT). Connects on first use; reconnects by itself.
    pub fn channel(&self, address: &str) -> Channel {
        let mut channels = self.channels.lock().expect("peer map lock poisoned");
        channels
            .entry(address.to_string())
            .or_insert_with(|| {
                let endpoint = Transport::endpoint(address)
                    .expect("addresses are validated HOST:PORT")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10));
                self.transport.connect_lazy(endpoint)
            })
            .clone()
    }

    fn raft_client(&self, address: &str) -> RaftServiceClient<Channel> {
        RaftServiceClient::new(self.channel(address))
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }

    fn fleet_client(&self, address: &str) -> FleetServiceClient<Channel> {
        FleetServiceClient::new(self.channel(address)).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `RaftService.Propose`: a forwarded write to the leader at `address`; its JSON reply
    /// (a [`crate::types::ForwardedReply`]).
    pub async fn propose(&self, address: &str, write: &ForwardedWrite) -> Result<Vec<u8>, Status> {
        let payload = self.payload(serde_json::to_vec(write).expect("commands serialize"));
        let reply = self.raft_client(address).propose(payload).await?;
        Ok(reply.into_inner().json)
    }

    /// `RaftService.ReadIndex` from the leader at `address`: the log index to apply before a
    /// linearizable read.
    pub async fn read_index(&self, address: &str) -> Result<u64, Status> {
        let request = ReadIndexRequest {
            cluster_id: self.cluster_id.to_string(),
            from_node: self.node_id,
        };
        let reply = self.raft_client(address).read_index(request).await?;
        Ok(reply.into_inner().read_index)
    }

    /// `RaftService.TakeLeadership`: a hand-over request to `address`, within `timeout`.
    ///
    /// # Errors
    /// The reason, as one line naming what failed (no answer, refused, unreadable reply).
    pub async fn take_leadership(
        &self,
        address: &str,
        request: &HandoverRequest,
        timeout: Duration,
    ) -> Result<HandoverReply, String> {
        let payload =
            self.payload(serde_json::to_vec(request).expect("hand-over requests serialize"));
        let mut client = self.raft_client(address);
        let reply = tokio::time::timeout(timeout, client.take_leadership(payload))
            .await
            .map_err(|_| "did not answer in time".to_string())?
            .map_err(|s| s.message().to_string())?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| format!("sent an unreadable reply: {e}"))
    }

    /// `RaftService.Identify` of `address`, within `timeout`.
    pub async fn identify(&self, address: &str, timeout: Duration) -> Result<PeerIdentity, Status> {
        let mut request = tonic::Request::new(IdentifyRequest {});
        request.set_timeout(timeout);
        let mut client = self.raft_client(address);
        let reply = within(timeout, client.identify(request)).await?;
        Ok(PeerIdentity {
            cluster_id: reply.cluster_id,
            node_id: reply.node_id,
        })
    }

    /// `FleetService.GetCoordinatorStatus` of `address`, within `timeout`.
    pub async fn coordinator_status(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<PeerStatus, Status> {
        let mut request = tonic::Request::new(GetCoordinatorStatusRequest {});
        request.set_timeout(timeout);
        let mut client = self.fleet_client(address);
        let reply = within(timeout, client.get_coordinator_status(request)).await?;
        Ok(PeerStatus {
            now_ms: reply.now_ms,
            members: reply
                .members
                .into_iter()
                .map(|m| PeerMember {
                    id: m.id,
                    address: m.address,
                    voter: m.voter,
                })
                .collect(),
            disk: reply.disk.map(|disk| {
                let recent = disk.all_fdatasync_5s.unwrap_or_default();
                PeerDisk {
                    stalled: disk.stalled,
                    recent_p99_us: recent.p99_us,
                    recent_count: recent.count,
                    flush_1m_p99_us: disk.log_flush_1m.unwrap_or_default().p99_us,
                }
            }),
        })
    }

    /// `FleetService.AddCoordinator` on `address`: the log index of the membership change.
    pub async fn add_coordinator(
        &self,
        address: &str,
        id: NodeId,
        member_address: String,
        catch_up_timeout: Duration,
    ) -> Result<u64, Status> {
        let reply = self
            .fleet_client(address)
            .add_coordinator(AddCoordinatorRequest {
                id,
                address: member_address,
                catch_up_timeout_ms: catch_up_timeout.as_millis() as u64,
            })
            .await?;
        Ok(reply.into_inner().result.map_or(0, |r| r.log_index))
    }

    /// `FleetService.RemoveCoordinator` on `address`: the log index of the membership change.
    pub async fn remove_coordinator(
        &self,
        address: &str,
        id: NodeId,
        force: bool,
    ) -> Result<u64, Status> {
        let reply = self
            .fleet_client(address)
            .remove_coordinator(RemoveCoordinatorRequest { id, force })
            .await?;
        Ok(reply.into_inner().result.map_or(0, |r| r.log_index))
    }
}

/// The answer of `call` within `timeout`; UNAVAILABLE ("no answer in time") after it.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| {
            fleet_api::status::with_hint(tonic::Code::Unavailable, "no answer in time", "")
        })?
        .map(tonic::Response::into_inner)
}

/// Who answers at an address (`RaftService.Identify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// 32 hex digits, or `format0`.
    pub cluster_id: String,
    pub node_id: NodeId,
}

/// What another coordinator says of itself, as far as this node uses it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Its clock, milliseconds since the Unix epoch; 0 from a node too old to say.
    pub now_ms: u64,
    /// The membership it knows.
    pub members: Vec<PeerMember>,
    /// Its disk; absent from a node too old to say.
    pub disk: Option<PeerDisk>,
}

/// One member, as another coordinator knows it.
#[derive(Debug, Clone)]
pub struct PeerMember {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
}

/// Another coordinator's disk, for choosing a successor.
#[derive(Debug, Clone, Copy)]
pub struct PeerDisk {
    pub stalled: bool,
    /// p99 of all its fdatasyncs over the last 5 s, microseconds, and their count.
    pub recent_p99_us: u64,
    pub recent_count: u64,
    /// p99 of its log flushes over the last minute, microseconds.
    pub flush_1m_p99_us: u64,
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            target,
            client: self.raft_client(&node.addr),
            peers: self.clone(),
        }
    }
}

/// The connection openraft uses to replicate to one peer.
pub struct PeerConnection {
    target: NodeId,
    client: RaftServiceClient<Channel>,
    peers: Peers,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn transport_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

// The error type is openraft's RPCError, fixed by the RaftNetwork trait.
#[allow(clippy::result_large_err)]
fn decode_reply<T, E>(target: NodeId, payload: RaftPayload) -> RpcResult<T, E>
where
    T: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let reply: Result<T, RaftError<NodeId, E>> = serde_json::from_slice(&payload.json)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    reply.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

fn request<T>(message: T, option: &RPCOption) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(option.hard_ttl());
    request
}

fn encode<T: serde::Serialize>(peers: &Peers, value: &T) -> RaftPayload {
    peers.payload(serde_json::to_vec(value).expect("openraft messages serialize"))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let reply = self
            .client
            .append_entries(request(encode(&self.peers, &rpc), &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let chunk = InstallSnapshotChunk {
            vote_json: serde_json::to_vec(&rpc.vote).expect("votes serialize"),
            meta_json: serde_json::to_vec(&rpc.meta).expect("snapshot meta serializes"),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
            cluster_id: self.peers.cluster_id.to_string(),
            from_node: self.peers.node_id,
        };
        let reply = self
            .client
            .install_snapshot(request(chunk, &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let reply = self
            .client
            .vote(request(encode(&self.peers, &rpc), &option))
            .await
            .map_err(transport_error)?;
        decode_reply(self.target, reply.into_inner())
    }
}
