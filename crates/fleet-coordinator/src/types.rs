//! The openraft type configuration and the application data that travels through the log.

use std::io::Cursor;

use fleet_core::{Context, CoreError, Outcome, StoredCommand};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// openraft types for the fleet coordinator.
    pub TypeConfig:
        D = Proposal,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

/// One log entry's payload: commands proposed together (group commit), each with the context
/// the leader chose for it. They are applied in order, each refused or applied on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub items: Vec<ProposalItem>,
}

/// One command of a [`Proposal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalItem {
    /// Serialized once by the leader; every replica applies and hashes this text.
    pub command: StoredCommand,
    pub context: Context,
    /// The audit event format of this command's event; 0 (absent) in entries written before
    /// formats were numbered.
    #[serde(default)]
    pub audit_format: u32,
    /// The write's id, chosen by the node that first received it and kept through every
    /// forwarding retry, so that a write proposed twice (once by a leader that died before it
    /// answered, once by the next) is applied once: see [`RecentWrites`]. Absent in entries
    /// written before format 2, and in writes that are never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<WriteId>,
}

/// A write's id: 32 lowercase hex digits (128 random bits), e.g.
/// `"3f2a…"`. Unique with overwhelming probability; only compared, never parsed.
pub type WriteId = String;

/// How many applied writes [`RecentWrites`] remembers. A retry comes within
/// `coordinator::LEADER_WAIT` (5 s) of the first attempt, so this covers about 800 writes a
/// second; a retry of a write already forgotten is applied again (and usually refused, e.g.
/// "already exists").
pub const RECENT_WRITES: usize = 4096;

/// The last [`RECENT_WRITES`] applied writes that carried a [`WriteId`], with what applying
/// them gave: how a retried write finds that it was already applied (client sessions, Raft
/// dissertation §6.3). Part of the replicated state machine and its snapshots, so every node
/// answers a retry alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentWrites {
    /// Oldest first.
    order: std::collections::VecDeque<WriteId>,
    applied: std::collections::BTreeMap<WriteId, AppliedWrite>,
}

/// What one remembered write gave, and the index of the entry that applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedWrite {
    pub index: u64,
    pub result: Result<Outcome, CoreError>,
}

impl RecentWrites {
    /// What the write `id` gave, if it was applied and is still remembered.
    pub fn get(&self, id: &str) -> Option<&AppliedWrite> {
        self.applied.get(id)
    }

    /// Remembers that `id` was applied, forgetting the oldest beyond [`RECENT_WRITES`].
    pub fn remember(&mut self, id: WriteId, applied: AppliedWrite) {
        if self.applied.insert(id.clone(), applied).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_WRITES {
            if let Some(oldest) = self.order.pop_front() {
                self.applied.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A new [`WriteId`].
pub fn new_write_id() -> WriteId {
    format!("{:032x}", fastrand::u128(..))
}

/// What applying one entry gave: one result per item of its [`Proposal`]; empty for blank
/// and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult(pub Vec<Result<Outcome, CoreError>>);

// Messages between coordinators, JSON in `RaftService` payloads (`grpc::network` sends them,
// `grpc::raft` receives them).

/// A write forwarded from a follower to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedWrite {
    pub command: fleet_core::Command,
    pub actor: String,
    pub reason: String,
    /// The same on every attempt of one write; absent from nodes that do not retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<WriteId>,
}

/// The leader's answer to a forwarded write: the log index and outcome, or the refusal.
pub type ForwardedReply = Result<(u64, Outcome), CoreError>;

/// What a leader sends the follower it chose (`RaftService.TakeLeadership`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRequest {
    pub from_node: NodeId,
    /// The leader's term when it asked.
    pub term: u64,
    /// The successor must hold the log up to here.
    pub leader_last_index: u64,
    /// The figures behind the hand-over, for the audit log.
    pub from_p99s_us: Vec<u64>,
    pub to_p99_us: u64,
    pub limit_us: u64,
}

/// The successor's answer.
pub type HandoverReply = Result<(), String>;
