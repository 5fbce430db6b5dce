//! Commands: the only way the state changes. Each one is a Raft log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{StatusReport, TimeMs};
use crate::rollout::{Pipeline, RolloutState, RolloutStep};

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
    /// Publishes a revision into the workload's first environment. A revision rejected there
    /// (by a rollback) is refused unless `allow_rejected`.
    PublishRelease {
        workload: String,
        revision: String,
        /// Added after the first stored format: absent in older log entries and audit events,
        /// read as `false`.
        #[serde(default)]
        allow_rejected: bool,
        /// Publish although a freeze window covers the first environment (from entry format
        /// 2, a freeze blocks publishing there); the audit event says so. Absent in older
        /// entries: `false`.
        #[serde(default)]
        override_freeze: bool,
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
    /// Sets how a workload moves through the environments.
    SetPipeline {
        workload: String,
        pipeline: Pipeline,
    },
    /// How many distinct operators, other than the one who promotes, must approve a promotion
    /// into the environment before it starts.
    SetRequiredApprovals {
        environment: String,
        approvals: u32,
    },
    /// Starts a rollout of `revision` (default: the previous environment's desired revision)
    /// into `environment`, once the gate holds.
    Promote {
        workload: String,
        environment: String,
        revision: Option<String>,
        allow_rejected: bool,
        override_freeze: bool,
    },
    Approve {
        workload: String,
        environment: String,
    },
    PauseRollout {
        workload: String,
        environment: String,
    },
    ResumeRollout {
        workload: String,
        environment: String,
    },
    /// Stops the rollout where it is; clusters already updated keep the new revision.
    AbortRollout {
        workload: String,
        environment: String,
    },
    /// Sets every cluster of the environment to `to` (default: the newest earlier revision
    /// that is not rejected) and rejects the revision it replaces.
    Rollback {
        workload: String,
        environment: String,
        to: Option<String>,
    },
    AddFreeze {
        environment: String,
        from_ms: TimeMs,
        to_ms: TimeMs,
    },
    RemoveFreeze {
        id: u64,
    },
    /// A step the planner decided ([`crate::rollout::plan`]); refused unless it is still the
    /// planner's step at the command's time.
    AdvanceRollout {
        workload: String,
        environment: String,
        rollout: u64,
        step: RolloutStep,
    },
    /// Binds `role` (a [`crate::access::Role`] name) to operator `principal`, scoped to
    /// `environments` and `workloads` (empty: all). Binding a role the operator holds replaces
    /// its scope. From entry format 3.
    BindRole {
        principal: String,
        role: String,
        #[serde(default)]
        environments: Vec<String>,
        #[serde(default)]
        workloads: Vec<String>,
    },
    /// Takes `role` from operator `principal`. The last admin cannot be unbound.
    UnbindRole {
        principal: String,
        role: String,
    },
    /// Makes bearer token `name` with one role and scope until `expires_at_ms`. The node that
    /// takes the request draws the secret and shows it once; only its SHA-256 (lowercase hex)
    /// is stored.
    CreateToken {
        name: String,
        secret_sha256: String,
        role: String,
        #[serde(default)]
        environments: Vec<String>,
        #[serde(default)]
        workloads: Vec<String>,
        expires_at_ms: TimeMs,
    },
    /// Revokes bearer token `name`: from this entry on, no node accepts it.
    RevokeToken {
        name: String,
    },
    /// Revokes every certificate of `cluster`'s agent issued until now
    /// ([`crate::State::cluster_certificate_revoked`]); certificates issued later are accepted.
    RevokeClusterCertificates {
        cluster: String,
    },
    /// Keeps a one-time join token for `cluster`'s agent (only the SHA-256 of its secret),
    /// valid until `expires_at_ms`; replaces the cluster's earlier unused one.
    CreateJoinToken {
        cluster: String,
        secret_sha256: String,
        expires_at_ms: TimeMs,
    },
    /// Uses up `cluster`'s join token, whose secret hashes to `secret_sha256`: committed before
    /// a coordinator signs the agent's certificate request, so that a token enrolls once.
    EnrollCluster {
        cluster: String,
        secret_sha256: String,
    },
}

impl Command {
    /// Every [`Command::kind`], in declaration order: what `audit --kind` accepts.
    pub const KINDS: [&'static str; 26] = [
        "add_site",
        "add_environment",
        "register_cluster",
        "remove_cluster",
        "create_workload",
        "publish_release",
        "record_leadership_handover",
        "record_status",
        "set_pipeline",
        "set_required_approvals",
        "promote",
        "approve",
        "pause_rollout",
        "resume_rollout",
        "abort_rollout",
        "rollback",
        "add_freeze",
        "remove_freeze",
        "advance_rollout",
        "bind_role",
        "unbind_role",
        "create_token",
        "revoke_token",
        "revoke_cluster_certificates",
        "create_join_token",
        "enroll_cluster",
    ];

    /// A short name for logs and the audit log, e.g. `register_cluster`; the same as the
    /// command's `type` in JSON.
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
            Command::SetPipeline { .. } => "set_pipeline",
            Command::SetRequiredApprovals { .. } => "set_required_approvals",
            Command::Promote { .. } => "promote",
            Command::Approve { .. } => "approve",
            Command::PauseRollout { .. } => "pause_rollout",
            Command::ResumeRollout { .. } => "resume_rollout",
            Command::AbortRollout { .. } => "abort_rollout",
            Command::Rollback { .. } => "rollback",
            Command::AddFreeze { .. } => "add_freeze",
            Command::RemoveFreeze { .. } => "remove_freeze",
            Command::AdvanceRollout { .. } => "advance_rollout",
            Command::BindRole { .. } => "bind_role",
            Command::UnbindRole { .. } => "unbind_role",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::RevokeClusterCertificates { .. } => "revoke_cluster_certificates",
            Command::CreateJoinToken { .. } => "create_join_token",
            Command::EnrollCluster { .. } => "enroll_cluster",
        }
    }

    /// Whether applying the command appends an audit event. Status reports are observations
    /// of the agents, and a fleet of thousands would drown the trail of decisions in them.
    pub fn is_audited(&self) -> bool {
        !matches!(self, Command::RecordStatus { .. })
    }
}

/// A command together with the exact JSON text it was stored as: in a log entry, a snapshot,
/// an audit event. The audit hash covers this text, never a re-serialization, so a command that
/// gains a field (always defaulted when absent: the rule for every change of [`Command`])
/// leaves every older event verifiable.
///
/// Serialized as that JSON, embedded verbatim (serde_json's `RawValue`), so a value read and
/// written again keeps its bytes. Only serde_json can read or write it.
#[derive(Debug, Clone)]
pub struct StoredCommand {
    json: Box<serde_json::value::RawValue>,
    command: Command,
}

impl StoredCommand {
    /// Serializes `command` once; this text is what is stored and hashed from now on.
    pub fn new(command: Command) -> Self {
        let json = serde_json::value::to_raw_value(&command).expect("commands always serialize");
        StoredCommand { json, command }
    }

    /// Reads a stored text, e.g. `command_json` of an audit event as served.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let raw = serde_json::value::RawValue::from_string(json.to_string())?;
        let command = serde_json::from_str(raw.get())?;
        Ok(StoredCommand { json: raw, command })
    }

    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The stored text.
    pub fn json(&self) -> &str {
        self.json.get()
    }
}

impl std::ops::Deref for StoredCommand {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.command
    }
}

/// Two stored commands are equal when their stored texts are.
impl PartialEq for StoredCommand {
    fn eq(&self, other: &Self) -> bool {
        self.json.get() == other.json.get()
    }
}
impl Eq for StoredCommand {}

impl Serialize for StoredCommand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StoredCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let command = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        Ok(StoredCommand { json, command })
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
    PipelineSet {
        workload: String,
    },
    RequiredApprovalsSet {
        environment: String,
        approvals: u32,
    },
    /// A rollout started, changed state, or took a step.
    Rollout {
        workload: String,
        environment: String,
        rollout: u64,
        revision: String,
        state: RolloutState,
        /// Clusters whose assignment changed, in name order.
        clusters: Vec<String>,
    },
    RolledBack {
        workload: String,
        environment: String,
        revision: String,
        rejected: String,
        clusters: Vec<String>,
    },
    FreezeAdded {
        id: u64,
    },
    FreezeRemoved {
        id: u64,
    },
    RoleBound {
        principal: String,
        role: String,
    },
    RoleUnbound {
        principal: String,
        role: String,
    },
    TokenCreated {
        name: String,
        expires_at_ms: TimeMs,
    },
    TokenRevoked {
        name: String,
    },
    ClusterCertificatesRevoked {
        cluster: String,
        revoked_at_ms: TimeMs,
    },
    JoinTokenCreated {
        cluster: String,
        expires_at_ms: TimeMs,
    },
    ClusterEnrolled {
        cluster: String,
    },
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn kinds_lists_every_command_type_once_in_order() {
        // serde names every variant it expects when it meets one it does not know.
        let e = serde_json::from_str::<Command>(r#"{"type":"no_such_kind"}"#).unwrap_err();
        let listed: Vec<String> = e
            .to_string()
            .split('`')
            .skip(3)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert_eq!(listed, Command::KINDS, "{e}");
    }
}
