//! The openraft type configuration and the application data that travels through the log.

use std::io::Cursor;

use fleet_core::{Command, Context, CoreError, Outcome};
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
    pub command: Command,
    pub context: Context,
}

/// What applying one entry gave: one result per item of its [`Proposal`]; empty for blank
/// and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult(pub Vec<Result<Outcome, CoreError>>);
