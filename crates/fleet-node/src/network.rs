//! Raft transport over tonic: openraft messages JSON-encoded in `RaftService` calls, and the
//! channel cache shared with write forwarding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use tonic::transport::{Channel, Endpoint};

use crate::proto::raft_service_client::RaftServiceClient;
use crate::proto::{InstallSnapshotChunk, RaftPayload};
use crate::types::{NodeId, TypeConfig};

/// Largest message on the Raft transport, either way.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
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
}

impl Peers {
    /// Peers of node `node_id` of cluster `cluster_id`.
    pub fn new(cluster_id: String, node_id: NodeId) -> Self {
        Peers {
            channels: Arc::default(),
            cluster_id: cluster_id.into(),
            node_id,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// A Raft message from this node carrying `json`.
    pub fn payload(&self, json: Vec<u8>) -> RaftPayload {
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
                Endpoint::from_shared(format!("http://{address}"))
                    .expect("addresses are validated HOST:PORT")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .connect_lazy()
            })
            .clone()
    }

    pub fn raft_client(&self, address: &str) -> RaftServiceClient<Channel> {
        RaftServiceClient::new(self.channel(address))
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }
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
