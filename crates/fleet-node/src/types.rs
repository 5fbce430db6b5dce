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
}

/// What applying one entry gave: one result per item of its [`Proposal`]; empty for blank
/// and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult(pub Vec<Result<Outcome, CoreError>>);
