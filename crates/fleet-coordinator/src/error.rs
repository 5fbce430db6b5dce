use fleet_core::CoreError;
use thiserror::Error;

/// Errors of the fleet runtime. [`crate::convert`] turns them into `tonic::Status`, in one place.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The domain refused the command or query.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// No leader answered in time; nothing was written.
    #[error("no coordinator leader could be reached within {waited_ms} ms")]
    NoLeader { waited_ms: u64 },
    /// The write reached a leader but no answer came back; it may or may not have committed.
    #[error("the write was sent to the leader but its outcome is unknown: {detail}")]
    OutcomeUnknown { detail: String },
    /// Raft refused or failed the operation.
    #[error("raft: {0}")]
    Raft(String),
    /// A request field that the domain does not see (addresses, ids) is malformed.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
        hint: String,
    },
    /// A membership change names a node or address that a member has already.
    #[error("{message}")]
    AlreadyExists { message: String, hint: String },
    /// A membership change names a node that is not a member.
    #[error("{message}")]
    NotFound { message: String, hint: String },
    /// The coordinator cluster is not in a state that allows the operation.
    #[error("{message}")]
    FailedPrecondition { message: String, hint: String },
    /// A node being added did not catch up in time; it stays a learner.
    #[error("{message}")]
    CatchUpTimeout { message: String, hint: String },
    /// A caller that may not do this: a Raft message from a sender this node does not accept
    /// (an operator, another cluster, a non-member, a node in another's name), or an agent
    /// outside its own cluster. `hint` says who may.
    #[error("{message}")]
    PermissionDenied { message: String, hint: String },
    /// The caller holds as much of something as it may (e.g. open watch streams).
    #[error("{message}")]
    ResourceExhausted { message: String, hint: String },
    /// A Raft message that cannot be read or cannot be true (an impossible term).
    #[error("{message}")]
    BadMessage { message: String },
    /// This node does not lead; nothing was proposed. Another node may do better.
    #[error("not the leader; nothing was proposed")]
    NotLeader,
    /// Another membership change runs on the leader; retry once it ends.
    #[error("another membership change is in progress")]
    MembershipBusy,
    /// The leader's answer to a request this node forwarded, passed on as it came.
    #[error("{}", .0.message())]
    Forwarded(tonic::Status),
    /// The node could not start.
    #[error("cannot start: {0}")]
    Startup(String),
}

impl NodeError {
    /// The leader's refusal of a forwarded request.
    pub fn from_leader(status: tonic::Status) -> Self {
        NodeError::Forwarded(status)
    }
}
