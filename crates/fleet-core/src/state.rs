//! The replicated state and the pure function that changes it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, GENESIS_HASH, verify_chain};
use crate::command::{Command, Context, Outcome, StoredCommand};
use crate::error::CoreError;
use crate::limits::*;
use crate::model::{
    Assignment, Cluster, Environment, Release, ReportedStatus, Revision, Site, StatusReport,
    StatusRow, Workload,
};
use crate::rollout::{Freeze, Pipeline, Rollout};
use crate::validate;

/// Microseconds as milliseconds with one decimal, for audit summaries.
fn ms(us: u64) -> String {
    format!("{}.{}", us / 1000, (us % 1000) / 100)
}

/// Everything the coordinator replicates. Serializable as a whole: that is the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    sites: BTreeMap<String, Site>,
    /// In pipeline order.
    environments: Vec<Environment>,
    clusters: BTreeMap<String, Cluster>,
    pub(crate) workloads: BTreeMap<String, Workload>,
    /// Newest last, at most [`MAX_RELEASES_KEPT_PER_WORKLOAD`] per workload.
    releases: BTreeMap<String, Vec<Release>>,
    /// By cluster, then workload.
    assignments: BTreeMap<String, BTreeMap<String, Assignment>>,
    /// The version given to the last assignment change; only grows.
    last_assignment_version: u64,
    audit: Vec<AuditEvent>,
    /// The agents' last committed reports, by cluster, then workload.
    #[serde(default)]
    reports: BTreeMap<String, BTreeMap<String, ReportedStatus>>,
    /// By workload; a workload without one follows [`Pipeline::default_for`].
    #[serde(default)]
    pub(crate) pipelines: BTreeMap<String, Pipeline>,
    /// By environment; absent means none.
    #[serde(default)]
    pub(crate) required_approvals: BTreeMap<String, u32>,
    #[serde(default)]
    pub(crate) freezes: BTreeMap<u64, Freeze>,
    #[serde(default)]
    pub(crate) last_freeze_id: u64,
    /// By workload, then environment; oldest first, the newest may be active.
    #[serde(default)]
    pub(crate) rollouts: BTreeMap<String, BTreeMap<String, Vec<Rollout>>>,
    #[serde(default)]
    pub(crate) last_rollout_id: u64,
    /// Revisions rolled back, by workload, then environment: never selected automatically.
    #[serde(default)]
    pub(crate) rejected: BTreeMap<String, BTreeMap<String, BTreeSet<Revision>>>,
    /// Desired revisions in the order they took effect, by workload, then environment.
    #[serde(default)]
    pub(crate) history: BTreeMap<String, BTreeMap<String, Vec<Revision>>>,
    /// Every assignment change of each cluster, oldest first, at most
    /// [`MAX_ASSIGNMENT_CHANGES_KEPT`] per cluster: answers "what did it run at time T".
    #[serde(default)]
    assignment_log: BTreeMap<String, Vec<AssignmentChange>>,
    /// Operators' roles, by operator name, then role (from entry format 3).
    #[serde(default)]
    pub(crate) role_bindings: BTreeMap<String, BTreeMap<crate::access::Role, crate::access::Grant>>,
    /// Bearer tokens that are not revoked, by name (expired ones stay until revoked).
    #[serde(default)]
    pub(crate) tokens: BTreeMap<String, crate::access::Token>,
    /// When each cluster's agent certificates were last revoked, by cluster.
    #[serde(default)]
    pub(crate) revoked_certificates: BTreeMap<String, crate::model::TimeMs>,
    /// Each cluster's unused join token, by cluster.
    #[serde(default)]
    pub(crate) join_tokens: BTreeMap<String, crate::access::JoinToken>,
    /// The latest command time applied (`Context::now_ms`), status reports included: the floor
    /// for the next time a leader stamps, so committed time never goes backwards when
    /// leadership moves to a node whose clock is behind. 0 in snapshots from before it.
    #[serde(default)]
    last_time_ms: u64,
}

/// One change of a cluster's assignment, and the audit event of the command that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentChange {
    pub time_ms: u64,
    pub workload: String,
    /// None: the assignment was removed.
    pub revision: Option<Revision>,
    pub version: u64,
    pub audit_sequence: u64,
}

/// A cluster's assignments at one time, from its assignment log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHistory {
    /// The changes up to the time, oldest first.
    pub changes: Vec<AssignmentChange>,
    /// By workload: the change in force at the time.
    pub assigned: BTreeMap<String, AssignmentChange>,
    /// Changes before this time are no longer kept (0: the log is complete).
    pub kept_since_ms: u64,
}

impl Default for State {
    /// An empty fleet with the default pipeline `staging` → `production`.
    fn default() -> Self {
        State {
            sites: BTreeMap::new(),
            environments: vec![
                Environment {
                    name: "staging".into(),
                    position: 0,
                },
                Environment {
                    name: "production".into(),
                    position: 1,
                },
            ],
            clusters: BTreeMap::new(),
            workloads: BTreeMap::new(),
            releases: BTreeMap::new(),
            assignments: BTreeMap::new(),
            last_assignment_version: 0,
            audit: Vec::new(),
            reports: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            required_approvals: BTreeMap::new(),
            freezes: BTreeMap::new(),
            last_freeze_id: 0,
            rollouts: BTreeMap::new(),
            last_rollout_id: 0,
            rejected: BTreeMap::new(),
            history: BTreeMap::new(),
            assignment_log: BTreeMap::new(),
            role_bindings: BTreeMap::new(),
            tokens: BTreeMap::new(),
            revoked_certificates: BTreeMap::new(),
            join_tokens: BTreeMap::new(),
            last_time_ms: 0,
        }
    }
}

impl State {
    /// Checks a command without changing anything: `validate::command`, then
    /// [`State::check_against_state`]. `apply` runs the same checks; this lets a node refuse bad
    /// input before it reaches the log.
    pub fn check(&self, command: &Command, ctx: &Context) -> Result<(), CoreError> {
        validate::command(command, &ctx.actor, &ctx.reason)?;
        self.check_against_state(command, ctx)
    }

    /// The checks of [`State::check`] that need the state, for a command that already passed
    /// `validate::command`. A node whose state may lag confirms a refusal from these, and only
    /// these, after a read barrier.
    pub fn check_against_state(&self, command: &Command, ctx: &Context) -> Result<(), CoreError> {
        self.check_against_state_in(command, ctx, crate::audit::AUDIT_EVENT_FORMAT)
    }

    /// [`State::check_against_state`] by the rules of entry format `format`: a check added in
    /// format N applies only to entries of format N or later, so that a log replayed by a newer
    /// build gives the state that was acknowledged when it was written.
    fn check_against_state_in(
        &self,
        command: &Command,
        ctx: &Context,
        format: u32,
    ) -> Result<(), CoreError> {
        match command {
            Command::AddSite { name } => {
                if self.sites.contains_key(name) {
                    return Err(CoreError::already_exists(
                        "site",
                        name,
                        "sites are added once; list them with `fleet-ctl site list`",
                    ));
                }
                limit("sites", self.sites.len(), MAX_SITES)
            }
            Command::AddEnvironment { name } => {
                if self.environment(name).is_some() {
                    return Err(CoreError::already_exists(
                        "environment",
                        name,
                        "list the pipeline with `fleet-ctl environment list`",
                    ));
                }
                limit("environments", self.environments.len(), MAX_ENVIRONMENTS)
            }
            Command::RegisterCluster {
                name,
                site,
                environment,
                ..
            } => {
                if self.clusters.contains_key(name) {
                    return Err(CoreError::already_exists(
                        "cluster",
                        name,
                        "choose another name, or remove the cluster first",
                    ));
                }
                self.require_site(site)?;
                self.require_environment(environment)?;
                limit("clusters", self.clusters.len(), MAX_CLUSTERS)
            }
            Command::RemoveCluster { name } => self.require_cluster(name).map(|_| ()),
            Command::CreateWorkload { name, .. } => {
                if self.workloads.contains_key(name) {
                    return Err(CoreError::already_exists(
                        "workload",
                        name,
                        "choose another name; list them with `fleet-ctl workload list`",
                    ));
                }
                limit("workloads", self.workloads.len(), MAX_WORKLOADS)
            }
            Command::PublishRelease {
                workload,
                revision,
                allow_rejected,
                override_freeze,
            } => {
                self.require_workload(workload)?;
                let revision = validate::revision(revision)?;
                let first = &self.pipeline(workload).environments[0];
                // Since format 1: format-0 entries were accepted without this check.
                if format >= 1 && !allow_rejected && self.is_rejected(workload, first, &revision) {
                    return Err(CoreError::FailedPrecondition {
                        message: format!(
                            "{} was rolled back in {first} and is rejected there",
                            revision
                        ),
                        hint: "publish it anyway with --allow-rejected (audited), or publish a fix"
                            .into(),
                    });
                }
                // Since format 2: before it, a freeze did not cover publishing.
                if format >= 2
                    && !override_freeze
                    && let Some(f) = crate::rollout::frozen(self.freezes(), first, ctx.now_ms)
                {
                    return Err(CoreError::FailedPrecondition {
                        message: f.refusal(first),
                        hint: "wait for the window to end, or publish with --override-freeze (audited)"
                            .into(),
                    });
                }
                Ok(())
            }
            Command::RecordLeadershipHandover { .. } => Ok(()),
            Command::RecordStatus { cluster, report } => {
                self.require_cluster(cluster)?;
                self.require_workload(&report.workload).map(|_| ())
            }
            Command::BindRole { .. }
            | Command::UnbindRole { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::RevokeClusterCertificates { .. } => self.check_access(command),
            Command::CreateJoinToken { .. } | Command::EnrollCluster { .. } => {
                self.check_enrollment(command, ctx)
            }
            _ => self.check_promotion(command, ctx, format),
        }
    }

    /// [`State::check_against_state`], and first whether the actor may do it
    /// ([`crate::access::authorize`]): what a coordinator checks before it proposes a client's
    /// command, as apply will for the entry.
    pub fn check_entry(&self, command: &Command, ctx: &Context) -> Result<(), CoreError> {
        crate::access::authorize(self, &ctx.actor, command, ctx.now_ms)?;
        self.check_against_state(command, ctx)
    }

    /// Applies one command as a trusted caller: a test, a simulation, a dry run. Every check
    /// but authorization runs; a coordinator's log entries go through [`State::apply_stored`],
    /// which authorizes the actor too. On error nothing has changed. On success the change is
    /// in the state and an audit event for it is at the end of the audit log.
    pub fn apply(&mut self, command: &Command, ctx: &Context) -> Result<Outcome, CoreError> {
        self.apply_entry(
            &StoredCommand::new(command.clone()),
            ctx,
            crate::audit::AUDIT_EVENT_FORMAT,
            Authorization::Trusted,
        )
    }

    /// [`State::apply`] for a command as stored in the log: its audit event keeps and hashes
    /// the stored text, in `event_format` (the one the log entry names, so that every replica
    /// and every later build computes the same hash for it), and it is checked by the rules of
    /// that format.
    ///
    /// # Errors
    /// As [`State::apply`]; also `FailedPrecondition` for an event format this build does not
    /// know (the entry was written by a newer build).
    /// From format 3, the actor must be allowed to ([`crate::access::authorize`]);
    /// `PermissionDenied` otherwise.
    pub fn apply_stored(
        &mut self,
        stored: &StoredCommand,
        ctx: &Context,
        event_format: u32,
    ) -> Result<Outcome, CoreError> {
        self.apply_entry(stored, ctx, event_format, Authorization::ByRoles)
    }

    fn apply_entry(
        &mut self,
        stored: &StoredCommand,
        ctx: &Context,
        event_format: u32,
        authorized: Authorization,
    ) -> Result<Outcome, CoreError> {
        let command = stored.command();
        if event_format > crate::audit::AUDIT_EVENT_FORMAT {
            return Err(CoreError::FailedPrecondition {
                message: format!(
                    "the entry asks for audit event format {event_format}, newer than this build's {}",
                    crate::audit::AUDIT_EVENT_FORMAT
                ),
                hint: "run the same fleet-node version on every coordinator".into(),
            });
        }
        // Since format 2, committed time never goes backwards: an entry stamped earlier than
        // one applied before it (two writes stamped in one order and appended in the other, or
        // a new leader whose clock is a little behind) takes that entry's time.
        let clamped;
        let ctx = if event_format >= 2 && ctx.now_ms < self.last_time_ms {
            clamped = Context {
                now_ms: self.last_time_ms,
                ..ctx.clone()
            };
            &clamped
        } else {
            ctx
        };
        validate::command_in(command, &ctx.actor, &ctx.reason, event_format)?;
        // Since format 3, the actor must be allowed to (`access`); older entries were written
        // before roles existed and replay as they were acknowledged.
        if event_format >= 3 && authorized == Authorization::ByRoles {
            crate::access::authorize(self, &ctx.actor, command, ctx.now_ms)?;
        }
        self.check_against_state_in(command, ctx, event_format)?;
        self.last_time_ms = self.last_time_ms.max(ctx.now_ms);
        let (outcome, summary) = match command {
            Command::AddSite { name } => {
                self.sites.insert(
                    name.clone(),
                    Site {
                        name: name.clone(),
                        created_at_ms: ctx.now_ms,
                    },
                );
                (
                    Outcome::SiteAdded { name: name.clone() },
                    format!("site {name} added"),
                )
            }
            Command::AddEnvironment { name } => {
                let position = self.environments.len() as u32;
                self.environments.push(Environment {
                    name: name.clone(),
                    position,
                });
                (
                    Outcome::EnvironmentAdded {
                        name: name.clone(),
                        position,
                    },
                    format!("environment {name} added at position {position}"),
                )
            }
            Command::RegisterCluster {
                name,
                site,
                environment,
                labels,
            } => {
                // Since format 2: the new cluster's set, even an empty one, gets a version of
                // its own.
                let registered_version = if event_format >= 2 {
                    self.last_assignment_version += 1;
                    self.last_assignment_version
                } else {
                    0
                };
                self.clusters.insert(
                    name.clone(),
                    Cluster {
                        name: name.clone(),
                        site: site.clone(),
                        environment: environment.clone(),
                        labels: labels.clone(),
                        registered_at_ms: ctx.now_ms,
                        registered_version,
                    },
                );
                let desired: Vec<(String, Revision)> = self
                    .workloads
                    .values()
                    .filter_map(|w| {
                        w.desired
                            .get(environment)
                            .map(|r| (w.name.clone(), r.clone()))
                    })
                    .collect();
                for (workload, revision) in &desired {
                    self.assign(name, workload, revision, ctx);
                }
                let joined = self.join_rollouts(name);
                let mut summary = format!(
                    "cluster {name} registered in site {site}, environment {environment}, with {} assignments",
                    desired.len()
                );
                for j in joined {
                    summary.push_str("; ");
                    summary.push_str(&j);
                }
                (
                    Outcome::ClusterRegistered {
                        name: name.clone(),
                        assignments: desired.len() as u32,
                    },
                    summary,
                )
            }
            Command::RemoveCluster { name } => {
                self.clusters.remove(name);
                self.assignments.remove(name);
                self.assignment_log.remove(name);
                self.reports.remove(name);
                self.join_tokens.remove(name);
                self.leave_rollouts(name);
                (
                    Outcome::ClusterRemoved { name: name.clone() },
                    format!("cluster {name} removed"),
                )
            }
            Command::CreateWorkload {
                name,
                repo_url,
                path_template,
            } => {
                self.workloads.insert(
                    name.clone(),
                    Workload {
                        name: name.clone(),
                        repo_url: repo_url.clone(),
                        path_template: path_template.clone(),
                        created_at_ms: ctx.now_ms,
                        desired: BTreeMap::new(),
                    },
                );
                (
                    Outcome::WorkloadCreated { name: name.clone() },
                    format!("workload {name} created from {repo_url} at {path_template}"),
                )
            }
            Command::PublishRelease {
                workload,
                revision,
                allow_rejected,
                override_freeze,
            } => {
                let revision = validate::revision(revision).expect("checked above");
                let overrides = *override_freeze
                    && crate::rollout::frozen(
                        self.freezes(),
                        &self.pipeline(workload).environments[0],
                        ctx.now_ms,
                    )
                    .is_some();
                let was_rejected = self.is_rejected(
                    workload,
                    &self.pipeline(workload).environments[0],
                    &revision,
                );
                let environment = self.pipeline(workload).environments[0].clone();
                self.record_desired(workload, &environment, &revision);
                self.workloads
                    .get_mut(workload)
                    .expect("checked above")
                    .desired
                    .insert(environment.clone(), revision.clone());
                let releases = self.releases.entry(workload.clone()).or_default();
                releases.push(Release {
                    workload: workload.clone(),
                    revision: revision.clone(),
                    environment: environment.clone(),
                    published_at_ms: ctx.now_ms,
                    published_by: ctx.actor.clone(),
                });
                if releases.len() > MAX_RELEASES_KEPT_PER_WORKLOAD {
                    let excess = releases.len() - MAX_RELEASES_KEPT_PER_WORKLOAD;
                    releases.drain(..excess);
                }
                let targets: Vec<String> = self
                    .clusters
                    .values()
                    .filter(|c| c.environment == environment)
                    .map(|c| c.name.clone())
                    .collect();
                let mut changed = Vec::new();
                for cluster in targets {
                    if self.assign(&cluster, workload, &revision, ctx) {
                        changed.push(cluster);
                    }
                }
                let mut summary = format!(
                    "release {workload}@{revision} published to {environment}: {} clusters assigned",
                    changed.len()
                );
                if *allow_rejected && was_rejected {
                    summary.push_str(&format!(
                        " (rejected in {environment}, published with --allow-rejected)"
                    ));
                }
                if overrides {
                    summary.push_str(&format!(
                        " (overrides a freeze window of {environment}: --override-freeze)"
                    ));
                }
                (
                    Outcome::ReleasePublished {
                        workload: workload.clone(),
                        revision: revision.to_string(),
                        environment,
                        clusters: changed,
                    },
                    summary,
                )
            }
            Command::RecordLeadershipHandover {
                from_node,
                to_node,
                term,
                from_p99s_us,
                to_p99_us,
                limit_us,
            } => {
                let seconds: Vec<String> = from_p99s_us.iter().map(|us| ms(*us)).collect();
                (
                    Outcome::LeadershipHandoverRecorded {
                        from_node: *from_node,
                        to_node: *to_node,
                        term: *term,
                    },
                    format!(
                        "coordinator leadership moved from node {from_node} to node {to_node} in term {term}: \
                         fdatasync p99 on node {from_node} was {} ms in the last {} seconds (limit {} ms); \
                         {} ms on node {to_node}",
                        seconds.join("/"),
                        from_p99s_us.len(),
                        ms(*limit_us),
                        ms(*to_p99_us),
                    ),
                )
            }
            Command::RecordStatus { cluster, report } => {
                let verified = report.sync == crate::model::SyncState::Synced
                    && report.health == crate::model::HealthState::Healthy
                    && !report.applied_revision.is_empty();
                let previous = self.report(cluster, &report.workload);
                let healthy_since_ms = match previous {
                    Some(p)
                        if verified
                            && p.report.applied_revision == report.applied_revision
                            && p.healthy_since_ms.is_some() =>
                    {
                        p.healthy_since_ms
                    }
                    _ if verified => Some(ctx.now_ms),
                    _ => None,
                };
                self.reports.entry(cluster.clone()).or_default().insert(
                    report.workload.clone(),
                    ReportedStatus {
                        report: report.clone(),
                        reported_at_ms: ctx.now_ms,
                        healthy_since_ms,
                    },
                );
                let outcome = Outcome::StatusRecorded {
                    cluster: cluster.clone(),
                    workload: report.workload.clone(),
                };
                return Ok(outcome);
            }
            Command::BindRole { .. }
            | Command::UnbindRole { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::RevokeClusterCertificates { .. }
            | Command::CreateJoinToken { .. }
            | Command::EnrollCluster { .. } => self.apply_access(command, ctx),
            _ => self.apply_promotion(command, ctx, event_format),
        };
        debug_assert!(command.is_audited());
        let prev_hash = self
            .audit
            .last()
            .map_or(GENESIS_HASH, |e| e.hash.as_str())
            .to_string();
        let sequence = self.audit.len() as u64 + 1;
        self.audit.push(AuditEvent::new(
            event_format,
            sequence,
            ctx,
            stored,
            summary,
            &prev_hash,
        ));
        Ok(outcome)
    }

    /// Sets a cluster's assignment for a workload to `revision`. Returns false when it already
    /// had that revision (nothing changes, no version is used).
    pub(crate) fn assign(
        &mut self,
        cluster: &str,
        workload: &str,
        revision: &Revision,
        ctx: &Context,
    ) -> bool {
        let w = &self.workloads[workload];
        let c = &self.clusters[cluster];
        let path = w.path_for(&c.environment);
        let repo_url = w.repo_url.clone();
        let per_cluster = self.assignments.entry(cluster.to_string()).or_default();
        if per_cluster
            .get(workload)
            .is_some_and(|a| &a.revision == revision && a.path == path)
        {
            return false;
        }
        self.last_assignment_version += 1;
        per_cluster.insert(
            workload.to_string(),
            Assignment {
                cluster: cluster.to_string(),
                workload: workload.to_string(),
                repo_url,
                path,
                revision: revision.clone(),
                version: self.last_assignment_version,
                assigned_at_ms: ctx.now_ms,
            },
        );
        self.log_assignment(cluster, workload, Some(revision), ctx);
        true
    }

    /// Removes a cluster's assignment for a workload (its agent prunes it). Returns false when
    /// it had none.
    pub(crate) fn unassign(&mut self, cluster: &str, workload: &str, ctx: &Context) -> bool {
        let removed = self
            .assignments
            .get_mut(cluster)
            .and_then(|a| a.remove(workload))
            .is_some();
        if removed {
            self.last_assignment_version += 1;
            self.log_assignment(cluster, workload, None, ctx);
        }
        removed
    }

    fn log_assignment(
        &mut self,
        cluster: &str,
        workload: &str,
        revision: Option<&Revision>,
        ctx: &Context,
    ) {
        let change = AssignmentChange {
            time_ms: ctx.now_ms,
            workload: workload.to_string(),
            revision: revision.cloned(),
            version: self.last_assignment_version,
            // The event the command being applied appends.
            audit_sequence: self.audit.len() as u64 + 1,
        };
        let log = self.assignment_log.entry(cluster.to_string()).or_default();
        log.push(change);
        if log.len() > MAX_ASSIGNMENT_CHANGES_KEPT {
            log.remove(0);
        }
    }

    /// What `cluster` was assigned at `at_ms`, with the changes that led there.
    pub fn cluster_history(&self, cluster: &str, at_ms: u64) -> Result<ClusterHistory, CoreError> {
        self.require_cluster(cluster)?;
        let log = self
            .assignment_log
            .get(cluster)
            .map_or(&[][..], |l| l.as_slice());
        let changes: Vec<AssignmentChange> =
            log.iter().filter(|c| c.time_ms <= at_ms).cloned().collect();
        let mut assigned = BTreeMap::new();
        for c in &changes {
            match c.revision {
                Some(_) => assigned.insert(c.workload.clone(), c.clone()),
                None => assigned.remove(&c.workload),
            };
        }
        let kept_since_ms = if log.len() >= MAX_ASSIGNMENT_CHANGES_KEPT {
            log.first().map_or(0, |c| c.time_ms)
        } else {
            0
        };
        Ok(ClusterHistory {
            changes,
            assigned,
            kept_since_ms,
        })
    }

    /// Remembers that `revision` became the desired revision of `environment`.
    pub(crate) fn record_desired(
        &mut self,
        workload: &str,
        environment: &str,
        revision: &Revision,
    ) {
        let h = self
            .history
            .entry(workload.to_string())
            .or_default()
            .entry(environment.to_string())
            .or_default();
        if h.last() != Some(revision) {
            h.push(revision.clone());
        }
        if h.len() > crate::rollout::MAX_HISTORY_PER_ENVIRONMENT {
            h.remove(0);
        }
    }

    pub(crate) fn require_site(&self, name: &str) -> Result<&Site, CoreError> {
        self.sites.get(name).ok_or_else(|| {
            CoreError::not_found("site", name, "add it first with `fleet-ctl site add NAME`")
        })
    }

    pub(crate) fn require_environment(&self, name: &str) -> Result<&Environment, CoreError> {
        self.environment(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.iter().map(|e| e.name.as_str()).collect();
            CoreError::not_found(
                "environment",
                name,
                format!("use one of: {}", known.join(", ")),
            )
        })
    }

    pub(crate) fn require_cluster(&self, name: &str) -> Result<&Cluster, CoreError> {
        self.clusters.get(name).ok_or_else(|| {
            CoreError::not_found(
                "cluster",
                name,
                "list clusters with `fleet-ctl cluster list`",
            )
        })
    }

    pub(crate) fn require_workload(&self, name: &str) -> Result<&Workload, CoreError> {
        self.workloads.get(name).ok_or_else(|| {
            CoreError::not_found(
                "workload",
                name,
                "create it first with `fleet-ctl workload create NAME --repo URL --path TEMPLATE`",
            )
        })
    }

    // Queries.

    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    pub fn environments(&self) -> &[Environment] {
        &self.environments
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    pub fn cluster(&self, name: &str) -> Result<&Cluster, CoreError> {
        self.require_cluster(name)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values()
    }

    pub fn workload(&self, name: &str) -> Result<&Workload, CoreError> {
        self.require_workload(name)
    }

    /// Releases of a workload, newest last.
    pub fn releases(&self, workload: &str) -> Result<&[Release], CoreError> {
        self.require_workload(workload)?;
        Ok(self.releases.get(workload).map_or(&[], |r| r.as_slice()))
    }

    /// A cluster's assignments, by workload name.
    pub fn assignments(&self, cluster: &str) -> Result<Vec<&Assignment>, CoreError> {
        self.require_cluster(cluster)?;
        Ok(self
            .assignments
            .get(cluster)
            .map(|a| a.values().collect())
            .unwrap_or_default())
    }

    pub fn last_assignment_version(&self) -> u64 {
        self.last_assignment_version
    }

    /// The latest command time applied, in milliseconds since the Unix epoch (0 before any):
    /// a leader stamps no earlier time.
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }

    /// The version of a cluster's whole assignment set: the newest version any change of it
    /// used, a removal included (from its assignment log), or its registration's. Every change
    /// of the set, also to the empty set and by `cluster remove` + `cluster register`, gives a
    /// higher one, so an agent that keeps the set with the highest version never misses one.
    /// 0 for an unknown cluster.
    pub fn assignment_set_version(&self, cluster: &str) -> u64 {
        let Some(c) = self.clusters.get(cluster) else {
            return 0;
        };
        let assigned = self
            .assignments
            .get(cluster)
            .and_then(|a| a.values().map(|a| a.version).max())
            .unwrap_or(0);
        let logged = self
            .assignment_log
            .get(cluster)
            .and_then(|log| log.last())
            .map_or(0, |change| change.version);
        assigned.max(logged).max(c.registered_version)
    }

    /// When `workload` last left `cluster`'s assignment set, or the cluster was registered,
    /// whichever is later.
    fn left_set_at_ms(&self, cluster: &Cluster, workload: &str) -> u64 {
        let removed = self
            .assignment_log
            .get(&cluster.name)
            .and_then(|log| {
                log.iter()
                    .rev()
                    .find(|c| c.workload == workload && c.revision.is_none())
            })
            .map_or(0, |c| c.time_ms);
        removed.max(cluster.registered_at_ms)
    }

    /// One row per (cluster, workload) assignment, and one row for a cluster with none; then
    /// one per workload its agent reported after the workload left its set
    /// ([`StatusRow::not_assigned`]).
    pub fn status_rows(&self) -> Vec<StatusRow> {
        let mut rows = Vec::new();
        for c in self.clusters.values() {
            let assigned = self.assignments.get(&c.name).filter(|a| !a.is_empty());
            match assigned {
                None => rows.push(StatusRow {
                    cluster: c.name.clone(),
                    site: c.site.clone(),
                    environment: c.environment.clone(),
                    workload: None,
                    desired_revision: None,
                    assignment_version: None,
                    report: None,
                    not_assigned: false,
                }),
                Some(assignments) => rows.extend(assignments.values().map(|a| StatusRow {
                    cluster: c.name.clone(),
                    site: c.site.clone(),
                    environment: c.environment.clone(),
                    workload: Some(a.workload.clone()),
                    desired_revision: Some(a.revision.clone()),
                    assignment_version: Some(a.version),
                    report: self.report(&c.name, &a.workload).cloned(),
                    not_assigned: false,
                })),
            }
            // Reports about workloads that left the set, committed after they left.
            for (workload, report) in self.reports.get(&c.name).into_iter().flatten() {
                if assigned.is_some_and(|a| a.contains_key(workload))
                    || report.reported_at_ms <= self.left_set_at_ms(c, workload)
                {
                    continue;
                }
                rows.push(StatusRow {
                    cluster: c.name.clone(),
                    site: c.site.clone(),
                    environment: c.environment.clone(),
                    workload: Some(workload.clone()),
                    desired_revision: None,
                    assignment_version: None,
                    report: Some(report.clone()),
                    not_assigned: true,
                });
            }
        }
        rows
    }

    /// The last committed report of a cluster's agent on one workload.
    pub fn report(&self, cluster: &str, workload: &str) -> Option<&ReportedStatus> {
        self.reports.get(cluster)?.get(workload)
    }

    /// A cluster's committed reports, by workload name.
    pub fn reports(&self, cluster: &str) -> Result<Vec<&ReportedStatus>, CoreError> {
        self.require_cluster(cluster)?;
        Ok(self
            .reports
            .get(cluster)
            .map(|r| r.values().collect())
            .unwrap_or_default())
    }

    /// Whether a report must go through the log: it differs from the committed one, or the
    /// committed one is at least [`STATUS_REFRESH_MS`] old at `now_ms`. Anything else is a
    /// heartbeat that a node keeps in memory.
    pub fn report_needs_commit(&self, cluster: &str, report: &StatusReport, now_ms: u64) -> bool {
        match self.report(cluster, &report.workload) {
            None => true,
            Some(committed) => {
                committed.report != *report
                    || now_ms.saturating_sub(committed.reported_at_ms) >= STATUS_REFRESH_MS
            }
        }
    }

    /// The workload's pipeline (the default one when none was set).
    pub fn pipeline(&self, workload: &str) -> Pipeline {
        self.pipelines.get(workload).cloned().unwrap_or_else(|| {
            let all: Vec<String> = self.environments.iter().map(|e| e.name.clone()).collect();
            Pipeline::default_for(&all)
        })
    }

    pub fn freezes(&self) -> impl Iterator<Item = &Freeze> {
        self.freezes.values()
    }

    pub fn required_approvals(&self, environment: &str) -> u32 {
        self.required_approvals
            .get(environment)
            .copied()
            .unwrap_or(0)
    }

    /// The newest rollout of every workload and environment.
    pub fn rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts
            .values()
            .flat_map(|by_env| by_env.values().filter_map(|r| r.last()))
    }

    /// The newest rollout of a workload into an environment.
    pub fn rollout(&self, workload: &str, environment: &str) -> Option<&Rollout> {
        self.rollouts.get(workload)?.get(environment)?.last()
    }

    /// Revisions rolled back in an environment.
    pub fn rejected(&self, workload: &str, environment: &str) -> Option<&BTreeSet<Revision>> {
        self.rejected.get(workload)?.get(environment)
    }

    /// Desired revisions of an environment in the order they took effect.
    pub fn desired_history(&self, workload: &str, environment: &str) -> &[Revision] {
        self.history
            .get(workload)
            .and_then(|h| h.get(environment))
            .map_or(&[], |h| h.as_slice())
    }

    pub fn audit_events(&self) -> &[AuditEvent] {
        &self.audit
    }

    /// Recomputes the audit chain.
    pub fn verify_audit(&self) -> Result<(), crate::AuditVerifyError> {
        verify_chain(&self.audit)
    }
}

/// Whether [`State::apply_entry`] authorizes the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authorization {
    /// A log entry: by the roles in the state (from format 3).
    ByRoles,
    /// A trusted caller's ([`State::apply`]).
    Trusted,
}

fn limit(what: &str, have: usize, max: usize) -> Result<(), CoreError> {
    if have >= max {
        return Err(CoreError::FailedPrecondition {
            message: format!("the fleet already has {have} {what}, the limit is {max}"),
            hint: format!("remove {what} that are no longer used"),
        });
    }
    Ok(())
}
