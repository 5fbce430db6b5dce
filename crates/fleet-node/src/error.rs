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
    /// The node could not start.
    #[error("cannot start: {0}")]
    Startup(String),
}
