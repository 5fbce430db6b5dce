//! Commands: the only way the state changes. Each one is a Raft log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{StatusReport, TimeMs};

/// A change to the fleet. Field values are raw user input; [`crate::State::apply`] validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    AddSite {
        name: String,
    },
    /// Appends an environment at the end of the pipeline.
    AddEnvironment {
        name: String,
    },
    RegisterCluster {
        name: String,
        site: String,
        environment: String,
        labels: BTreeMap<String, String>,
    },
    RemoveCluster {
        name: String,
    },
    CreateWorkload {
        name: String,
        repo_url: String,
        path_template: String,
    },
    /// Publishes a revision into the workload's first environment.
    PublishRelease {
        workload: String,
        revision: String,
    },
    /// Records that coordinator leadership moved away from a node whose disk was too slow.
    /// Proposed by the new leader, never by clients; it changes nothing but the audit log.
    RecordLeadershipHandover {
        from_node: u64,
        to_node: u64,
        /// The term the new leader leads in.
        term: u64,
        /// The old leader's fdatasync p99 in each second that made it hand over, oldest first.
        from_p99s_us: Vec<u64>,
        /// The new leader's fdatasync p99 over its recent window when it was chosen.
        to_p99_us: u64,
        /// The p99 limit the old leader was judged against.
        limit_us: u64,
    },
    /// An agent's report on one workload of its cluster. An observation, not a change of
    /// intent: it is not written to the audit log.
    RecordStatus {
        cluster: String,
        report: StatusReport,
    },
}

impl Command {
    /// A short name for logs and the audit log, e.g. `register_cluster`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::AddSite { .. } => "add_site",
            Command::AddEnvironment { .. } => "add_environment",
            Command::RegisterCluster { .. } => "register_cluster",
            Command::RemoveCluster { .. } => "remove_cluster",
            Command::CreateWorkload { .. } => "create_workload",
            Command::PublishRelease { .. } => "publish_release",
            Command::RecordLeadershipHandover { .. } => "record_leadership_handover",
            Command::RecordStatus { .. } => "record_status",
        }
    }

    /// Whether applying the command appends an audit event. Status reports are observations
    /// of the agents, and a fleet of thousands would drown the trail of decisions in them.
    pub fn is_audited(&self) -> bool {
        !matches!(self, Command::RecordStatus { .. })
    }
}

/// Who asks, when, and why. Chosen once by the node that proposes the command and stored in the
/// log with it, so that every replica applies the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub now_ms: TimeMs,
    pub actor: String,
    pub reason: String,
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    SiteAdded {
        name: String,
    },
    EnvironmentAdded {
        name: String,
        position: u32,
    },
    ClusterRegistered {
        name: String,
        /// Assignments the cluster received from its environment's desired revisions.
        assignments: u32,
    },
    ClusterRemoved {
        name: String,
    },
    WorkloadCreated {
        name: String,
    },
    ReleasePublished {
        workload: String,
        revision: String,
        environment: String,
        /// Clusters whose assignment changed, in name order.
        clusters: Vec<String>,
    },
    LeadershipHandoverRecorded {
        from_node: u64,
        to_node: u64,
        term: u64,
    },
    StatusRecorded {
        cluster: String,
        workload: String,
    },
}
