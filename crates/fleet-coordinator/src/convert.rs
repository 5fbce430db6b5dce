//! The node's side of the wire: its own types (read consistency, disk health) to and from
//! proto, and the mapping of [`NodeError`] to `tonic::Status` (through
//! [`fleet_api::status`]). Domain types cross the wire in [`fleet_api::convert`], re-exported
//! here.

pub use fleet_api::convert::*;

use fleet_api::status::with_hint as status_with_hint;
use fleet_core::CoreError;
use tonic::{Code, Status};

use crate::coordinator::Consistency;
use crate::error::NodeError;
use fleet_api::proto;

pub fn consistency(value: i32) -> Consistency {
    match proto::ReadConsistency::try_from(value) {
        Ok(proto::ReadConsistency::Stale) => Consistency::Stale,
        _ => Consistency::Linearizable,
    }
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Status {
        let message = error.to_string();
        match error {
            NodeError::Core(core) => {
                let code = match core {
                    CoreError::InvalidArgument { .. } => Code::InvalidArgument,
                    CoreError::NotFound { .. } => Code::NotFound,
                    CoreError::AlreadyExists { .. } => Code::AlreadyExists,
                    CoreError::FailedPrecondition { .. } => Code::FailedPrecondition,
                    CoreError::PermissionDenied { .. } => Code::PermissionDenied,
                };
                status_with_hint(code, message, core.hint())
            }
            NodeError::NoLeader { .. } => status_with_hint(
                Code::Unavailable,
                message,
                "a majority of coordinators must be up; retry, or try another endpoint",
            ),
            NodeError::OutcomeUnknown { .. } => status_with_hint(
                Code::DeadlineExceeded,
                message,
                "read the state back before retrying: the write may have been applied",
            ),
            NodeError::Raft(_) => status_with_hint(
                Code::Unavailable,
                message,
                "retry; if it persists check the coordinators with `fleet-ctl coordinator status`",
            ),
            NodeError::InvalidArgument { hint, .. } => {
                status_with_hint(Code::InvalidArgument, message, &hint)
            }
            NodeError::AlreadyExists { hint, .. } => {
                status_with_hint(Code::AlreadyExists, message, &hint)
            }
            NodeError::NotFound { hint, .. } => status_with_hint(Code::NotFound, message, &hint),
            NodeError::FailedPrecondition { hint, .. } => {
                status_with_hint(Code::FailedPrecondition, message, &hint)
            }
            NodeError::CatchUpTimeout { hint, .. } => {
                status_with_hint(Code::DeadlineExceeded, message, &hint)
            }
            NodeError::MembershipBusy => status_with_hint(
                Code::Unavailable,
                message,
                "wait for it to end (see `fleet-ctl coordinator status`), then try again",
            ),
            NodeError::PermissionDenied { hint, .. } => {
                status_with_hint(Code::PermissionDenied, message, &hint)
            }
            NodeError::ResourceExhausted { hint, .. } => {
                status_with_hint(Code::ResourceExhausted, message, &hint)
            }
            NodeError::BadMessage { .. } => status_with_hint(Code::InvalidArgument, message, ""),
            NodeError::NotLeader => status_with_hint(
                Code::Unavailable,
                message,
                "send it to the leader (`fleet-ctl coordinator status` names it)",
            ),
            NodeError::Forwarded(status) => status,
            NodeError::Startup(_) => {
                status_with_hint(Code::Internal, message, "see the node's log")
            }
        }
    }
}

fn latency(s: &crate::health::LatencySummary) -> Option<proto::LatencySummary> {
    Some(proto::LatencySummary {
        count: s.count,
        p50_us: s.p50_us,
        p99_us: s.p99_us,
        p999_us: s.p999_us,
        max_us: s.max_us,
    })
}

pub fn disk_health(r: &crate::health::DiskReport) -> Option<proto::DiskHealth> {
    Some(proto::DiskHealth {
        probe_fdatasync_1m: latency(&r.probe_short),
        probe_fdatasync_10m: latency(&r.probe_long),
        log_flush_1m: latency(&r.flush_short),
        log_flush_10m: latency(&r.flush_long),
        p99_limit_us: fleet_disk::FDATASYNC_P99_LIMIT.as_micros() as u64,
        healthy: r.healthy(),
        all_fdatasync_5s: latency(&r.recent),
        stalled: r.stalled,
    })
}

impl From<WireError> for NodeError {
    fn from(e: WireError) -> NodeError {
        NodeError::InvalidArgument {
            field: e.field,
            message: e.message,
            hint: e.hint,
        }
    }
}
