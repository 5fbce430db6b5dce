//! The one door between wire types (prost) and fleet-core's domain types: every proto message
//! a node serves is built here from a domain value, and every domain value read from the wire
//! is made here. Errors of reading the wire are [`WireError`]s (INVALID_ARGUMENT, naming the
//! field); [`crate::status`] turns them into `tonic::Status`.

use fleet_core::{
    Assignment, Cluster, CoreError, Environment, HealthState, ObjectStatus, Release,
    ReportedStatus, Site, State, StatusReport, StatusRow, SyncState, Workload,
};

use crate::proto;

/// A wire value that has no domain meaning, e.g. an enum number no build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct WireError {
    /// The field, as named in the proto file, e.g. `objects.sync`.
    pub field: &'static str,
    pub message: String,
    /// What to send instead.
    pub hint: String,
}

pub fn role_grant(g: &fleet_core::access::Grant) -> proto::RoleGrant {
    proto::RoleGrant {
        role: g.role.to_string(),
        environments: g.environments.iter().cloned().collect(),
        workloads: g.workloads.iter().cloned().collect(),
        granted_by: g.granted_by.clone(),
        granted_at_ms: g.granted_at_ms,
    }
}

pub fn role_binding(
    principal: &str,
    grants: &std::collections::BTreeMap<fleet_core::access::Role, fleet_core::access::Grant>,
) -> proto::RoleBinding {
    proto::RoleBinding {
        principal: principal.to_string(),
        grants: grants.values().map(role_grant).collect(),
    }
}

pub fn token_info(t: &fleet_core::access::Token) -> proto::TokenInfo {
    proto::TokenInfo {
        name: t.name.clone(),
        grant: Some(role_grant(&t.grant)),
        expires_at_ms: t.expires_at_ms,
    }
}

pub fn site(s: &Site) -> proto::Site {
    proto::Site {
        name: s.name.clone(),
        created_at_ms: s.created_at_ms,
    }
}

pub fn environment(e: &Environment) -> proto::Environment {
    proto::Environment {
        name: e.name.clone(),
        position: e.position,
    }
}

pub fn cluster(c: &Cluster) -> proto::Cluster {
    proto::Cluster {
        name: c.name.clone(),
        site: c.site.clone(),
        environment: c.environment.clone(),
        labels: c.labels.clone().into_iter().collect(),
        registered_at_ms: c.registered_at_ms,
    }
}

pub fn assignment(a: &Assignment) -> proto::Assignment {
    proto::Assignment {
        cluster: a.cluster.clone(),
        workload: a.workload.clone(),
        repo_url: a.repo_url.clone(),
        path: a.path.clone(),
        revision: a.revision.to_string(),
        version: a.version,
        assigned_at_ms: a.assigned_at_ms,
    }
}

/// A workload with its desired revisions in pipeline order.
pub fn workload(w: &Workload, state: &State) -> proto::Workload {
    proto::Workload {
        name: w.name.clone(),
        repo_url: w.repo_url.clone(),
        path_template: w.path_template.clone(),
        created_at_ms: w.created_at_ms,
        desired: state
            .environments()
            .iter()
            .filter_map(|e| {
                w.desired.get(&e.name).map(|r| proto::DesiredRevision {
                    environment: e.name.clone(),
                    revision: r.to_string(),
                })
            })
            .collect(),
    }
}

pub fn release(r: &Release) -> proto::Release {
    proto::Release {
        workload: r.workload.clone(),
        revision: r.revision.to_string(),
        environment: r.environment.clone(),
        published_at_ms: r.published_at_ms,
        published_by: r.published_by.clone(),
    }
}

/// A status row; `last_seen_ms` is the later of the committed report and this node's
/// heartbeats.
pub fn status_row(r: &StatusRow, last_seen_ms: u64) -> proto::StatusRow {
    proto::StatusRow {
        report: r.report.as_ref().map(|r| status_report(&r.report)),
        last_seen_ms,
        cluster: r.cluster.clone(),
        site: r.site.clone(),
        environment: r.environment.clone(),
        workload: r.workload.clone().unwrap_or_default(),
        desired_revision: r
            .desired_revision
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default(),
        assignment_version: r.assignment_version.unwrap_or_default(),
        not_assigned: r.not_assigned,
    }
}

pub fn audit_event(e: &fleet_core::AuditEvent) -> proto::AuditEvent {
    proto::AuditEvent {
        sequence: e.sequence,
        time_ms: e.time_ms,
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        kind: e.command.kind().to_string(),
        command_json: e.command.json().to_string(),
        summary: e.summary.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
        format: e.format,
        audit_kind: audit_kind(e.command.kind()) as i32,
    }
}

/// A command kind (`fleet_core::Command::kind`, e.g. `publish_release`) as the wire enum
/// (`AUDIT_KIND_PUBLISH_RELEASE`); `Unspecified` for a kind the proto does not list.
pub fn audit_kind(kind: &str) -> proto::AuditKind {
    proto::AuditKind::from_str_name(&format!("AUDIT_KIND_{}", kind.to_ascii_uppercase()))
        .unwrap_or(proto::AuditKind::Unspecified)
}

/// An audit event as served, back in the domain type, so that a client can recompute the
/// chain (`fleet_core::audit::verify_chain`) without trusting the node.
pub fn audit_event_from_wire(e: &proto::AuditEvent) -> Result<fleet_core::AuditEvent, String> {
    let command = fleet_core::StoredCommand::from_json(&e.command_json)
        .map_err(|err| format!("audit event {}: unreadable command: {err}", e.sequence))?;
    Ok(fleet_core::AuditEvent {
        format: e.format,
        sequence: e.sequence,
        time_ms: e.time_ms,
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        command,
        summary: e.summary.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    })
}

pub fn write_result(log_index: u64) -> Option<proto::WriteResult> {
    Some(proto::WriteResult { log_index })
}

/// A committed report with the node's view of when the agent was last seen.
pub fn reported_status(r: &ReportedStatus, last_seen_ms: u64) -> proto::ReportedStatus {
    proto::ReportedStatus {
        report: Some(status_report(&r.report)),
        reported_at_ms: r.reported_at_ms,
        last_seen_ms,
    }
}

fn sync_state(s: SyncState) -> proto::SyncState {
    match s {
        SyncState::Synced => proto::SyncState::Synced,
        SyncState::OutOfSync => proto::SyncState::OutOfSync,
        SyncState::Failed => proto::SyncState::Failed,
    }
}

fn health_state(h: HealthState) -> proto::HealthState {
    match h {
        HealthState::Healthy => proto::HealthState::Healthy,
        HealthState::Progressing => proto::HealthState::Progressing,
        HealthState::Degraded => proto::HealthState::Degraded,
        HealthState::Unknown => proto::HealthState::Unknown,
    }
}

pub fn status_report(r: &StatusReport) -> proto::StatusReport {
    proto::StatusReport {
        workload: r.workload.clone(),
        applied_revision: r.applied_revision.clone(),
        desired_revision: r.desired_revision.clone(),
        assignment_version: r.assignment_version,
        render_hash: r.render_hash.clone(),
        sync: sync_state(r.sync).into(),
        health: health_state(r.health).into(),
        error: r.error.clone(),
        drift_count: r.drift_count,
        objects: r
            .objects
            .iter()
            .map(|o| proto::ObjectStatus {
                name: o.name.clone(),
                sync: sync_state(o.sync).into(),
                health: health_state(o.health).into(),
                message: o.message.clone(),
            })
            .collect(),
        objects_omitted: r.objects_omitted,
    }
}

fn sync_from_wire(field: &'static str, value: i32) -> Result<SyncState, WireError> {
    match proto::SyncState::try_from(value) {
        Ok(proto::SyncState::Synced) => Ok(SyncState::Synced),
        Ok(proto::SyncState::OutOfSync) => Ok(SyncState::OutOfSync),
        Ok(proto::SyncState::Failed) => Ok(SyncState::Failed),
        _ => Err(WireError {
            field,
            message: format!("{value} is not a sync state"),
            hint: "send SYNCED, OUT_OF_SYNC or FAILED".into(),
        }),
    }
}

fn health_from_wire(field: &'static str, value: i32) -> Result<HealthState, WireError> {
    match proto::HealthState::try_from(value) {
        Ok(proto::HealthState::Healthy) => Ok(HealthState::Healthy),
        Ok(proto::HealthState::Progressing) => Ok(HealthState::Progressing),
        Ok(proto::HealthState::Degraded) => Ok(HealthState::Degraded),
        Ok(proto::HealthState::Unknown) => Ok(HealthState::Unknown),
        _ => Err(WireError {
            field,
            message: format!("{value} is not a health state"),
            hint: "send HEALTHY, PROGRESSING, DEGRADED or UNKNOWN".into(),
        }),
    }
}

/// A report from the wire; the enums must be set. Lengths and names are checked by fleet-core.
pub fn status_report_from_wire(r: proto::StatusReport) -> Result<StatusReport, WireError> {
    Ok(StatusReport {
        sync: sync_from_wire("sync", r.sync)?,
        health: health_from_wire("health", r.health)?,
        objects: r
            .objects
            .into_iter()
            .map(|o| {
                Ok(ObjectStatus {
                    sync: sync_from_wire("objects.sync", o.sync)?,
                    health: health_from_wire("objects.health", o.health)?,
                    name: o.name,
                    message: o.message,
                })
            })
            .collect::<Result<_, WireError>>()?,
        workload: r.workload,
        applied_revision: r.applied_revision,
        desired_revision: r.desired_revision,
        assignment_version: r.assignment_version,
        render_hash: r.render_hash,
        error: r.error,
        drift_count: r.drift_count,
        objects_omitted: r.objects_omitted,
    })
}

/// An assignment from the wire, as an agent receives it; the revision must be a full SHA.
pub fn assignment_from_wire(a: proto::Assignment) -> Result<Assignment, CoreError> {
    Ok(Assignment {
        revision: fleet_core::validate::revision(&a.revision)?,
        cluster: a.cluster,
        workload: a.workload,
        repo_url: a.repo_url,
        path: a.path,
        version: a.version,
        assigned_at_ms: a.assigned_at_ms,
    })
}

// Promotion.

pub fn pipeline(p: &fleet_core::rollout::Pipeline) -> proto::Pipeline {
    proto::Pipeline {
        environments: p.environments.clone(),
        soak_ms: p.soak_ms,
        wave_order: p.wave_order.clone(),
        wave_label: p.wave_label.clone().unwrap_or_default(),
        max_unavailable: p.max_unavailable,
        failure_budget: p.failure_budget,
        auto_rollback: p.auto_rollback,
        unreachable_timeout_ms: p.unreachable_timeout_ms,
        progress_deadline_ms: p.progress_deadline_ms,
    }
}

/// A pipeline from the wire (`progress_deadline_ms` 0: the default); fleet-core validates it.
pub fn pipeline_from_wire(p: proto::Pipeline) -> fleet_core::rollout::Pipeline {
    fleet_core::rollout::Pipeline {
        environments: p.environments,
        soak_ms: p.soak_ms,
        wave_order: p.wave_order,
        wave_label: Some(p.wave_label).filter(|l| !l.is_empty()),
        max_unavailable: p.max_unavailable,
        failure_budget: p.failure_budget,
        auto_rollback: p.auto_rollback,
        unreachable_timeout_ms: p.unreachable_timeout_ms,
        progress_deadline_ms: match p.progress_deadline_ms {
            0 => fleet_core::rollout::DEFAULT_PROGRESS_DEADLINE_MS,
            ms => ms,
        },
    }
}

/// A rollout's state on the wire.
pub fn rollout_state(s: fleet_core::rollout::RolloutState) -> proto::RolloutState {
    use fleet_core::rollout::RolloutState as S;
    match s {
        S::AwaitingApproval => proto::RolloutState::AwaitingApproval,
        S::Running => proto::RolloutState::Running,
        S::Paused => proto::RolloutState::Paused,
        S::Halted => proto::RolloutState::Halted,
        S::RolledBack => proto::RolloutState::RolledBack,
        S::Succeeded => proto::RolloutState::Succeeded,
        S::SucceededWithFailures => proto::RolloutState::SucceededWithFailures,
        S::Aborted => proto::RolloutState::Aborted,
    }
}

/// A cluster's progress on the wire; `None` is a cluster no longer in the rollout's
/// environment.
pub fn cluster_progress(p: Option<&fleet_core::rollout::Progress>) -> proto::ClusterProgress {
    use fleet_core::rollout::Progress as P;
    match p {
        None => proto::ClusterProgress::Removed,
        Some(P::Pending) => proto::ClusterProgress::Pending,
        Some(P::Updating) => proto::ClusterProgress::Updating,
        Some(P::Healthy { .. }) => proto::ClusterProgress::Healthy,
        Some(P::Failed { .. }) => proto::ClusterProgress::Failed,
        Some(P::Unreachable { .. }) => proto::ClusterProgress::Unreachable,
        Some(P::RolledBack) => proto::ClusterProgress::RolledBack,
        Some(P::SetAside { .. }) => proto::ClusterProgress::SetAside,
    }
}

fn revision_text(r: Option<&fleet_core::Revision>) -> String {
    r.map_or_else(String::new, |r| r.to_string())
}

/// A rollout with each cluster's progress at `now_ms`.
pub fn rollout(state: &State, r: &fleet_core::rollout::Rollout, now_ms: u64) -> proto::Rollout {
    use fleet_core::rollout::Progress;
    let progress: std::collections::BTreeMap<String, Progress> =
        fleet_core::rollout::rollout_progress(state, r, now_ms)
            .into_iter()
            .collect();
    let waves = r
        .waves
        .iter()
        .map(|w| proto::RolloutWave {
            name: w.name.clone(),
            clusters: w
                .clusters
                .iter()
                .map(|c| {
                    let p = progress.get(c);
                    proto::RolloutCluster {
                        cluster: c.clone(),
                        from_revision: revision_text(r.from.get(c).and_then(|f| f.as_ref())),
                        to_revision: r.revision.to_string(),
                        progress: p.map_or("removed", |p| p.label()).to_string(),
                        cluster_progress: cluster_progress(p).into(),
                        message: match p {
                            Some(Progress::Failed { why }) => why.clone(),
                            Some(Progress::SetAside { why }) => why.clone(),
                            Some(Progress::Unreachable { silent_ms }) => {
                                format!("no report for {} s", silent_ms / 1000)
                            }
                            Some(Progress::RolledBack) => {
                                match r.from.get(c).and_then(|f| f.as_ref()) {
                                    Some(from) => format!("set back to {from}"),
                                    None => "its assignment removed".to_string(),
                                }
                            }
                            _ => String::new(),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    let settings = r.settings(state);
    let hold = fleet_core::rollout::hold(state, r, now_ms);
    proto::Rollout {
        id: r.id,
        workload: r.workload.clone(),
        environment: r.environment.clone(),
        revision: r.revision.to_string(),
        state: r.state.as_str().to_string(),
        rollout_state: rollout_state(r.state).into(),
        wave: r.wave,
        waves,
        required_approvals: r.required_approvals,
        approvals: r.approvals.iter().cloned().collect(),
        started_by: r.started_by.clone(),
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms.unwrap_or(0),
        message: r.message.clone(),
        soak_ms: settings.soak_ms,
        hold: hold.as_ref().map_or("", |h| h.kind()).to_string(),
        held_by: hold.as_ref().map_or_else(String::new, |h| h.to_string()),
        pipeline: Some(pipeline(&settings)),
        pipeline_kept: r.pipeline.is_some(),
    }
}

pub fn promotion_plan(p: &fleet_core::promotion::PromotionPlan) -> proto::PlanResponse {
    proto::PlanResponse {
        revision: p.revision.to_string(),
        waves: p
            .waves
            .iter()
            .map(|w| proto::RolloutWave {
                name: w.name.clone(),
                clusters: w
                    .clusters
                    .iter()
                    .map(|c| proto::RolloutCluster {
                        cluster: c.clone(),
                        from_revision: revision_text(p.from.get(c).and_then(|f| f.as_ref())),
                        to_revision: p.revision.to_string(),
                        progress: String::new(),
                        message: String::new(),
                        cluster_progress: proto::ClusterProgress::Unspecified.into(),
                    })
                    .collect(),
            })
            .collect(),
        blocked: p
            .blocked
            .as_ref()
            .map_or_else(String::new, |e| e.to_string()),
        hint: p
            .blocked
            .as_ref()
            .map_or_else(String::new, |e| e.hint().to_string()),
    }
}

pub fn freeze(f: &fleet_core::rollout::Freeze) -> proto::Freeze {
    proto::Freeze {
        id: f.id,
        environment: f.environment.clone(),
        from_ms: f.from_ms,
        to_ms: f.to_ms,
        reason: f.reason.clone(),
        created_by: f.created_by.clone(),
    }
}

pub fn assignment_change(c: &fleet_core::AssignmentChange) -> proto::AssignmentChange {
    proto::AssignmentChange {
        time_ms: c.time_ms,
        workload: c.workload.clone(),
        revision: revision_text(c.revision.as_ref()),
        version: c.version,
        audit_sequence: c.audit_sequence,
    }
}
