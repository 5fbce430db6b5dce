//! The fleet domain: sites, environments, clusters, workloads, releases, assignments and the
//! audit log, and the one pure function that changes them: [`State::apply`].
//!
//! Architecture invariant: nothing here does IO, reads a clock, or draws randomness. Time and
//! the acting identity arrive in a [`Context`]; the same commands in the same order always give
//! the same [`State`], which is what lets every coordinator replay the replicated log to the
//! same result.

pub mod access;
pub mod audit;
pub mod command;
pub mod error;
pub mod limits;
pub mod manifest;
pub mod model;
pub mod principal;
pub mod promotion;
pub mod render;
pub mod rollout;
pub mod state;
pub mod validate;
pub mod yaml;

pub use audit::{AuditEvent, AuditVerifyError};
pub use command::{Command, Context, Outcome, StoredCommand};
pub use error::CoreError;
pub use model::{
    Assignment, Cluster, Environment, HealthState, ObjectStatus, Release, ReportedStatus, Revision,
    Site, StatusReport, StatusRow, SyncState, Workload,
};
pub use principal::{Principal, TrustDomain};
pub use state::{AssignmentChange, ClusterHistory, State};
