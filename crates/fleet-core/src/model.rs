//! The nouns of the glossary in DESIGN.md.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as given in the [`crate::Context`] of a command.
pub type TimeMs = u64;

/// A full 40-hex Git commit SHA in lowercase. Made only by parsing:
/// [`crate::validate::revision`] (or `str::parse`), which refuses anything else; read back
/// from the log and snapshots as stored (every stored one was parsed when it came in).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(String);

impl Revision {
    /// Made by [`crate::validate::revision_in`] only, after its checks.
    pub(crate) fn checked(lowercase_hex40: String) -> Self {
        Revision(lowercase_hex40)
    }

    /// The 40 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Revision {
    type Err = crate::CoreError;

    /// [`crate::validate::revision`]: 40 hex digits, any case, stored in lowercase.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        crate::validate::revision(value)
    }
}

impl PartialEq<str> for Revision {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A physical location. Coordinators and clusters belong to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    pub created_at_ms: TimeMs,
}

/// A stage in the pipeline; `position` orders the pipeline (0 is first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub position: u32,
}

/// One Kubernetes cluster (or one host for the `files` target) with one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub site: String,
    pub environment: String,
    pub labels: BTreeMap<String, String>,
    pub registered_at_ms: TimeMs,
    /// The assignment version its registration used (from entry format 2; 0 before), so that
    /// the set it starts with, even an empty one, is newer than any set an agent of an earlier
    /// cluster of the same name holds.
    #[serde(default)]
    pub registered_version: u64,
}

/// What is deployed: a repository plus a path template, e.g. `overlays/{environment}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub repo_url: String,
    pub path_template: String,
    pub created_at_ms: TimeMs,
    /// The revision each environment must run, by environment name.
    pub desired: BTreeMap<String, Revision>,
}

impl Workload {
    /// The path inside the repository for one environment.
    pub fn path_for(&self, environment: &str) -> String {
        self.path_template.replace("{environment}", environment)
    }
}

/// A workload + revision published into the first environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub workload: String,
    pub revision: Revision,
    pub environment: String,
    pub published_at_ms: TimeMs,
    pub published_by: String,
}

/// What one cluster must run now for one workload. `version` comes from one fleet-wide counter
/// that only grows, so an agent can tell newer from older and resume after a reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub cluster: String,
    pub workload: String,
    pub repo_url: String,
    pub path: String,
    pub revision: Revision,
    pub version: u64,
    pub assigned_at_ms: TimeMs,
}

/// One row of `fleet-ctl status`: a cluster and, when it has one, an assignment and the agent's
/// last committed report on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub cluster: String,
    pub site: String,
    pub environment: String,
    pub workload: Option<String>,
    pub desired_revision: Option<Revision>,
    pub assignment_version: Option<u64>,
    pub report: Option<ReportedStatus>,
    /// The agent reported this workload after it left the cluster's assignment set (or
    /// after the cluster was registered again): it may still enforce it. `desired_revision`
    /// is then `None`.
    pub not_assigned: bool,
}

/// Whether a target matches the revision it was asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Everything rendered is applied and nothing has drifted.
    Synced,
    /// Drift was found (and is being repaired), or the revision is not applied yet.
    OutOfSync,
    /// The revision could not be fetched, rendered or applied.
    Failed,
}

/// Whether what runs works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Progressing,
    Degraded,
    Unknown,
}

/// One applied object: a file, or a Kubernetes object as `Kind/namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStatus {
    pub name: String,
    pub sync: SyncState,
    pub health: HealthState,
    pub message: String,
}

/// What an agent applied for one workload and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub workload: String,
    /// Raw 40-hex SHA; empty before the first successful apply.
    pub applied_revision: String,
    /// The revision the agent was asked for.
    pub desired_revision: String,
    pub assignment_version: u64,
    /// Hex SHA-256 of the render of `applied_revision`.
    pub render_hash: String,
    pub sync: SyncState,
    pub health: HealthState,
    /// Why the sync failed; empty otherwise.
    pub error: String,
    pub drift_count: u32,
    /// At most [`crate::limits::MAX_REPORT_OBJECTS`].
    pub objects: Vec<ObjectStatus>,
    pub objects_omitted: u32,
}

/// A committed [`StatusReport`] and when it was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedStatus {
    pub report: StatusReport,
    pub reported_at_ms: TimeMs,
    /// Since when the agent has reported `applied_revision` Synced and Healthy without a break;
    /// none when it does not. The promotion gate and the waves measure the soak from it.
    #[serde(default)]
    pub healthy_since_ms: Option<TimeMs>,
}
