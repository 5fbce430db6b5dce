//! The agent: one per cluster. It streams its cluster's assignments from any coordinator,
//! renders the assigned commit from Git, makes the target match, repairs drift on every resync,
//! and reports status. Outbound calls only.
//!
//! Three named tasks, joined by `watch` channels (each holds only the newest value, so a slow
//! consumer never queues stale work):
//!
//! - `assignment-stream`: `WatchAssignments` on one endpoint after another, with jittered
//!   exponential backoff; keeps the set with the highest version and saves it in the cache.
//! - `reconciler`: on a new set and every `--resync-interval`, for each assigned workload:
//!   fetch and render when the revision changed, check the render, apply it, count drift.
//!   Workloads no longer assigned are pruned.
//! - `status-reporter`: sends the reports after every pass (and at least once per resync
//!   interval, as a heartbeat) to the first endpoint that answers.
//! - `certificate-renewal`, for an agent that enrolled itself with a join token ([`enroll`]):
//!   renews its certificate at two thirds of its lifetime; the other tasks connect with the
//!   newest one.
//!
//! With every coordinator unreachable the reconciler keeps enforcing the cached assignment and
//! render; a restarted agent starts from the cache.

pub mod cache;
pub mod enroll;
pub mod files;
pub mod git;
pub mod grpc;
pub mod kubernetes;
pub mod kustomize;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::limits::{
    MAX_OBJECT_MESSAGE_LEN, MAX_OBJECT_NAME_LEN, MAX_REPORT_OBJECTS, MAX_STATUS_ERROR_LEN,
};
use fleet_core::render::{RenderPath, check_render, render_hash};
use fleet_core::{Assignment, HealthState, ObjectStatus, StatusReport, SyncState};
use thiserror::Error;
use tokio::sync::watch;

use cache::{Cache, CachedRender, Held};
use files::FilesTarget;
use fleet_api::tasks::spawn_named;
use git::GitCache;
use grpc::Coordinator;
use kubernetes::KubeTarget;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("git: {0}")]
    Git(String),
    #[error("commit {revision} does not exist in {url} (fetched branches and tags)")]
    UnknownCommit { revision: String, url: String },
    /// The revision names an object of `url` that is not a commit: an annotated tag (`what`
    /// then names the commit it points to), a tree or a blob.
    #[error(
        "revision {revision} of {url} is {what}, not a commit; publish a commit SHA (`fleet-ctl release publish --repo` peels a tag to its commit)"
    )]
    NotACommit {
        revision: String,
        url: String,
        what: String,
    },
    #[error("path {path:?} is not a directory at commit {revision}")]
    MissingPath { path: String, revision: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("target: {0}")]
    Target(String),
    #[error("state cache: {0}")]
    Cache(String),
    /// The agent's certificate: none to be had, or its files unusable.
    #[error("identity: {0}")]
    Identity(String),
}

/// Where rendered workloads go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// Files under `ROOT/<workload>/`.
    Files(PathBuf),
    /// The Kubernetes cluster of the in-cluster configuration or the kubeconfig.
    Kubernetes,
}

/// One object after a pass: a file, or a Kubernetes object as `Kind/namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedObject {
    pub name: String,
    /// Written in this pass because it was missing or differed.
    pub written: bool,
    pub health: HealthState,
    /// Why it is not Healthy, or why it failed.
    pub message: String,
}

/// What one pass of a target did for a workload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TargetOutcome {
    pub objects: Vec<AppliedObject>,
    /// Objects removed because they left Git.
    pub removed: Vec<String>,
    /// Set when some objects could not be applied (the others were).
    pub error: Option<String>,
}

/// Runs blocking filesystem work (writes with fsync, renames, directory walks) on tokio's
/// blocking pool, never on a runtime worker; a panic in it becomes an error naming `what`.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(AgentError::Target(format!("{what} panicked: {e}"))))
}

/// A connected target.
#[derive(Clone)]
pub enum Target {
    Files(Arc<FilesTarget>),
    Kubernetes(Arc<KubeTarget>),
}

impl Target {
    pub async fn open(spec: &TargetSpec, state_dir: &std::path::Path) -> Result<Self, AgentError> {
        Ok(match spec {
            TargetSpec::Files(root) => {
                Target::Files(Arc::new(FilesTarget::new(root.clone(), state_dir)))
            }
            TargetSpec::Kubernetes => {
                Target::Kubernetes(Arc::new(KubeTarget::connect(state_dir).await?))
            }
        })
    }

    async fn apply(
        &self,
        workload: &str,
        cached: &CachedRender,
    ) -> Result<TargetOutcome, AgentError> {
        match self {
            Target::Files(files) => {
                let (files, name, render) =
                    (files.clone(), workload.to_string(), cached.render.clone());
                let applied = blocking("apply", move || files.apply(&name, &render)).await?;
                let written: BTreeSet<&RenderPath> = applied.written.iter().collect();
                Ok(TargetOutcome {
                    objects: cached
                        .render
                        .keys()
                        .map(|path| AppliedObject {
                            name: path.to_string(),
                            written: written.contains(path),
                            health: HealthState::Healthy,
                            message: String::new(),
                        })
                        .collect(),
                    removed: applied.removed.iter().map(ToString::to_string).collect(),
                    error: None,
                })
            }
            Target::Kubernetes(kube) => kube.apply(workload, &cached.hash, &cached.render).await,
        }
    }

    async fn workloads(&self) -> Result<Vec<String>, AgentError> {
        match self {
            Target::Files(files) => {
                let files = files.clone();
                blocking("listing", move || files.workloads()).await
            }
            Target::Kubernetes(kube) => kube.workloads(),
        }
    }

    async fn forget(&self, workload: &str) -> Result<Vec<String>, AgentError> {
        match self {
            Target::Files(files) => {
                let (files, name) = (files.clone(), workload.to_string());
                blocking("pruning", move || files.forget(&name))
                    .await
                    .map(|removed| removed.iter().map(ToString::to_string).collect())
            }
            Target::Kubernetes(kube) => kube.forget(workload).await,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    pub endpoints: Vec<String>,
    pub target: TargetSpec,
    pub state_dir: PathBuf,
    pub resync_interval: Duration,
    pub identity: Identity,
}

/// How the agent proves who it is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Mutual TLS with a certificate given to it (`--cert`, `--key`; renewed by whoever issued
    /// it), or plaintext to a loopback coordinator that runs with `--insecure-plaintext`.
    Given(fleet_identity::Transport),
    /// A certificate of its own in `STATE/tls/`, got with a join token and renewed by the agent
    /// (see [`enroll`]).
    Enrolled(enroll::Enrollment),
}

/// Jittered exponential backoff: the n-th wait is uniform in `[0, min(MAX, BASE·2ⁿ)]` ("full
/// jitter"), so thousands of agents that lost the same coordinator do not return in step.
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff { attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1 << self.attempt.min(16))
            .min(Self::MAX);
        self.attempt += 1;
        ceiling.mul_f64(fastrand::f64())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let cache = Arc::new(Cache::open(&config.state_dir)?);
    let held = cache.load_assignments()?;
    if let Some(h) = &held {
        tracing::info!(
            version = h.version,
            assignments = h.assignments.len(),
            "starting from the cached assignments"
        );
    }
    let (held_tx, held_rx) = watch::channel(held);
    let (reports_tx, reports_rx) = watch::channel(Vec::<StatusReport>::new());
    let config = Arc::new(config);
    // The transport, once the agent has credentials; replaced at every renewal.
    let (transport_tx, transport_rx) = watch::channel(None);
    let mut tasks = vec![
        spawn_named(
            "assignment-stream",
            stream_assignments(config.clone(), cache.clone(), held_tx, transport_rx.clone()),
        ),
        spawn_named(
            "reconciler",
            reconcile_loop(config.clone(), cache, held_rx, reports_tx),
        ),
        spawn_named(
            "status-reporter",
            report_loop(config.clone(), reports_rx, transport_rx),
        ),
    ];
    let result = tokio::select! {
        () = shutdown => Ok(()),
        result = credentials(&config, transport_tx, &mut tasks) => match result {
            Ok(never) => match never {},
            Err(error) => Err(error),
        },
    };
    for task in tasks {
        task.abort();
    }
    result
}

/// Sends the agent's transport on `transport`, and keeps it renewed; returns only on an
/// error (the agent has no certificate and cannot get one).
async fn credentials(
    config: &AgentConfig,
    transport: watch::Sender<Option<fleet_identity::Transport>>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<std::convert::Infallible, AgentError> {
    match &config.identity {
        Identity::Given(given) => {
            transport.send_replace(Some(given.clone()));
        }
        Identity::Enrolled(enrollment) => {
            let current = enroll::establish(
                &config.cluster,
                &config.endpoints,
                &config.state_dir,
                enrollment,
            )
            .await?;
            transport.send_replace(Some(enroll::first_transport(&current)?));
            tasks.push(spawn_named(
                "certificate-renewal",
                enroll::renew_loop(
                    config.cluster.clone(),
                    config.endpoints.clone(),
                    config.state_dir.clone(),
                    enrollment.clone(),
                    current,
                    transport,
                ),
            ));
        }
    }
    std::future::pending().await
}

/// The transport once there is one.
async fn transport_now(
    transport: &mut watch::Receiver<Option<fleet_identity::Transport>>,
) -> fleet_identity::Transport {
    loop {
        if let Some(t) = transport.borrow_and_update().clone() {
            return t;
        }
        if transport.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn stream_assignments(
    config: Arc<AgentConfig>,
    cache: Arc<Cache>,
    held: watch::Sender<Option<Held>>,
    mut transport: watch::Receiver<Option<fleet_identity::Transport>>,
) {
    let mut backoff = Backoff::new();
    let mut next = 0usize;
    loop {
        let current = transport_now(&mut transport).await;
        let address = &config.endpoints[next % config.endpoints.len()];
        next += 1;
        let since = held.borrow().as_ref().map_or(0, |h| h.version);
        let watched = watch_one(
            &current,
            address,
            &config.cluster,
            since,
            &cache,
            &held,
            &mut backoff,
        );
        tokio::select! {
            result = watched => match result {
                Ok(()) => tracing::info!(%address, "assignment stream ended; reconnecting"),
                Err(error) => tracing::warn!(%address, %error, "assignment stream failed"),
            },
            // A renewed certificate: reconnect with it at once.
            Ok(()) = transport.changed() => {
                tracing::info!(%address, "reconnecting with the renewed certificate");
                continue;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One `WatchAssignments` stream until it ends or fails.
async fn watch_one(
    transport: &fleet_identity::Transport,
    address: &str,
    cluster: &str,
    since_version: u64,
    cache: &Arc<Cache>,
    held: &watch::Sender<Option<Held>>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let mut stream = Coordinator::connect(transport, address)
        .await?
        .watch(cluster, since_version)
        .await?;
    tracing::info!(%address, since_version, "watching assignments");
    while let Some(set) = stream.next().await? {
        backoff.reset();
        let held_version = held.borrow().as_ref().map(|h| h.version);
        if held_version.is_some_and(|v| set.version <= v) {
            continue; // Stale (a node behind the one we heard from last) or nothing new.
        }
        let new = Held {
            version: set.version,
            assignments: set.assignments,
        };
        let saved = {
            let (cache, new) = (cache.clone(), new.clone());
            blocking("caching the assignments", move || {
                cache.save_assignments(&new)
            })
            .await
        };
        if let Err(error) = saved {
            tracing::error!(%error, "cannot cache the assignments; enforcing them anyway");
        }
        tracing::info!(version = new.version, "new assignments");
        held.send_replace(Some(new));
    }
    Ok(())
}

/// The reconciler's memory of one workload.
#[derive(Default)]
struct WorkloadState {
    /// The last good render (of the desired revision once it has been fetched).
    render: Option<CachedRender>,
    /// The revision applied successfully at least once, for telling drift from an upgrade.
    applied: Option<fleet_core::Revision>,
    /// The last revision that failed to fetch or render, and when to try it again.
    failed: Option<RenderFailure>,
}

struct RenderFailure {
    revision: fleet_core::Revision,
    attempts: u32,
    retry_at: tokio::time::Instant,
    error: String,
}

/// Time before fetching a revision that failed `attempts` times again: 10 s doubling to
/// 10 minutes, so a thousand agents assigned a commit that is not pushed yet do not fetch the
/// repository on every resync.
pub fn render_retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(10)
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(Duration::from_secs(600))
}

async fn reconcile_loop(
    config: Arc<AgentConfig>,
    cache: Arc<Cache>,
    mut held: watch::Receiver<Option<Held>>,
    reports: watch::Sender<Vec<StatusReport>>,
) {
    let target = loop {
        match Target::open(&config.target, &config.state_dir).await {
            Ok(target) => break target,
            Err(error) => {
                tracing::error!(%error, "cannot open the target; retrying");
                tokio::time::sleep(config.resync_interval.min(Duration::from_secs(10))).await;
            }
        }
    };
    let git = Arc::new(GitCache::new(&config.state_dir));
    let mut workloads: BTreeMap<String, WorkloadState> = BTreeMap::new();
    loop {
        let current = held.borrow_and_update().clone();
        if let Some(current) = current {
            let mut pass = Vec::new();
            for assignment in &current.assignments {
                let state = workloads.entry(assignment.workload.clone()).or_default();
                if state.render.is_none() {
                    state.render =
                        cache
                            .load_render(&assignment.workload)
                            .unwrap_or_else(|error| {
                                tracing::warn!(%error, "ignoring the cached render");
                                None
                            });
                }
                let report = reconcile_workload(assignment, state, &git, &target, &cache).await;
                pass.push(report);
            }
            let assigned: BTreeSet<&str> = current
                .assignments
                .iter()
                .map(|a| a.workload.as_str())
                .collect();
            prune_unassigned(&assigned, &target, &cache, &mut workloads).await;
            reports.send_replace(pass);
        }
        tokio::select! {
            result = held.changed() => if result.is_err() { return },
            () = tokio::time::sleep(config.resync_interval) => {}
        }
    }
}

async fn prune_unassigned(
    assigned: &BTreeSet<&str>,
    target: &Target,
    cache: &Arc<Cache>,
    workloads: &mut BTreeMap<String, WorkloadState>,
) {
    let owned = match target.workloads().await {
        Ok(owned) => owned,
        Err(error) => return tracing::error!(%error, "cannot list owned workloads"),
    };
    for workload in owned.into_iter().filter(|w| !assigned.contains(w.as_str())) {
        match target.forget(&workload).await {
            Ok(removed) => {
                tracing::info!(%workload, removed = removed.len(), "pruned a workload no longer assigned");
                workloads.remove(&workload);
                let forgotten = {
                    let (cache, workload) = (cache.clone(), workload.clone());
                    blocking("dropping the cached render", move || {
                        cache.forget_render(&workload)
                    })
                    .await
                };
                if let Err(error) = forgotten {
                    tracing::warn!(%error, "cannot drop the cached render");
                }
            }
            Err(error) => tracing::error!(%workload, %error, "cannot prune"),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Fetches and renders `revision` of the assignment: the files under its path, or, for the
/// Kubernetes target when the path holds a kustomization, the output of `kustomize build`.
fn render_revision(
    git: &GitCache,
    assignment: &Assignment,
    kubernetes: bool,
) -> Result<fleet_core::render::Render, AgentError> {
    let (url, rev, path) = (
        &assignment.repo_url,
        assignment.revision.as_str(),
        &assignment.path,
    );
    let render = render_checked(git, url, rev, path)?;
    if !(kubernetes && fleet_core::manifest::is_kustomization(&render)) {
        return Ok(render);
    }
    let tree = render_checked(git, url, rev, "")?;
    kustomize::build(&tree, path)
}

/// The files under `path` at `revision` of `url` (fetched if not cached), refused unless
/// [`check_render`] passes: what every target starts from.
pub fn render_checked(
    git: &GitCache,
    url: &str,
    revision: &str,
    path: &str,
) -> Result<fleet_core::render::Render, AgentError> {
    let render = git.render(url, revision, path)?;
    check_render(&render).map_err(|e| AgentError::Refused(e.to_string()))?;
    Ok(render)
}

/// One workload, one pass: fetch and render if the revision changed, then apply (repairing
/// drift). Returns the report.
async fn reconcile_workload(
    assignment: &Assignment,
    state: &mut WorkloadState,
    git: &Arc<GitCache>,
    target: &Target,
    cache: &Arc<Cache>,
) -> StatusReport {
    let mut error = None;
    let wanted = &assignment.revision;
    let waiting = state
        .failed
        .as_ref()
        .filter(|f| &f.revision == wanted && tokio::time::Instant::now() < f.retry_at);
    if let Some(f) = waiting {
        error = Some(f.error.clone());
    } else if state.render.as_ref().map(|r| &r.revision) != Some(wanted) {
        let (git, a) = (git.clone(), assignment.clone());
        let kubernetes = matches!(target, Target::Kubernetes(_));
        let rendered = tokio::task::spawn_blocking(move || render_revision(&git, &a, kubernetes))
            .await
            .unwrap_or_else(|e| Err(AgentError::Git(format!("render panicked: {e}"))));
        match rendered {
            Ok(render) => {
                let new = CachedRender {
                    revision: wanted.clone(),
                    hash: render_hash(&render),
                    render: Arc::new(render),
                };
                let saved = {
                    let (cache, name, new) =
                        (cache.clone(), assignment.workload.clone(), new.clone());
                    blocking("caching the render", move || cache.save_render(&name, &new)).await
                };
                if let Err(e) = saved {
                    tracing::error!(error = %e, "cannot cache the render; applying it anyway");
                }
                tracing::info!(workload = %assignment.workload, revision = %wanted, files = new.render.len(), "rendered");
                state.render = Some(new);
                state.failed = None;
            }
            Err(e) => {
                let attempts = state
                    .failed
                    .as_ref()
                    .filter(|f| &f.revision == wanted)
                    .map_or(1, |f| f.attempts + 1);
                let delay = render_retry_delay(attempts);
                tracing::error!(workload = %assignment.workload, revision = %wanted, error = %e, attempts, retry_in = ?delay, "cannot render the assigned revision; keeping the previous one");
                state.failed = Some(RenderFailure {
                    revision: wanted.clone(),
                    attempts,
                    retry_at: tokio::time::Instant::now() + delay,
                    error: e.to_string(),
                });
                error = Some(e.to_string());
            }
        }
    }
    let mut drift = 0;
    let mut objects = Vec::new();
    let mut applied_revision = state
        .applied
        .as_ref()
        .map_or_else(String::new, |r| r.to_string());
    let mut render_hash_hex = String::new();
    let mut health = HealthState::Unknown;
    if let Some(cached) = &state.render {
        match target.apply(&assignment.workload, cached).await {
            Ok(outcome) => {
                let upgrade = state.applied.as_ref() != Some(&cached.revision);
                let written: Vec<&str> = outcome
                    .objects
                    .iter()
                    .filter(|o| o.written)
                    .map(|o| o.name.as_str())
                    .collect();
                if !upgrade && !written.is_empty() {
                    drift = written.len() as u32;
                    tracing::warn!(workload = %assignment.workload, objects = ?written, "repaired drift");
                }
                if upgrade && outcome.error.is_none() {
                    tracing::info!(workload = %assignment.workload, revision = %cached.revision, written = written.len(), removed = outcome.removed.len(), "applied");
                }
                health = fleet_core::manifest::worst(outcome.objects.iter().map(|o| o.health));
                objects = outcome
                    .objects
                    .into_iter()
                    .map(|o| ObjectStatus {
                        message: if o.written && !upgrade && o.message.is_empty() {
                            "drift repaired".into()
                        } else {
                            o.message
                        },
                        name: o.name,
                        sync: SyncState::Synced,
                        health: o.health,
                    })
                    .collect();
                match outcome.error {
                    Some(e) => {
                        tracing::error!(workload = %assignment.workload, error = %e, "some objects were not applied");
                        error.get_or_insert(e);
                    }
                    None => {
                        state.applied = Some(cached.revision.clone());
                        applied_revision = cached.revision.to_string();
                        render_hash_hex = cached.hash.clone();
                    }
                }
            }
            Err(e) => {
                tracing::error!(workload = %assignment.workload, error = %e, "cannot apply");
                error.get_or_insert(e.to_string());
            }
        }
    }
    // Interesting objects (failed, drifted, unhealthy) first, so the cap keeps them.
    objects.sort_by_key(|o| o.message.is_empty());
    let omitted = objects.len().saturating_sub(MAX_REPORT_OBJECTS);
    objects.truncate(MAX_REPORT_OBJECTS);
    for o in &mut objects {
        o.name = truncate(&o.name, MAX_OBJECT_NAME_LEN);
        o.message = truncate(&o.message, MAX_OBJECT_MESSAGE_LEN);
    }
    let sync = match (&error, applied_revision.is_empty()) {
        (Some(_), _) => SyncState::Failed,
        (None, true) => SyncState::OutOfSync,
        (None, false) => SyncState::Synced,
    };
    if applied_revision.is_empty() && error.is_some() {
        health = HealthState::Unknown;
    }
    StatusReport {
        workload: assignment.workload.clone(),
        applied_revision,
        desired_revision: wanted.to_string(),
        assignment_version: assignment.version,
        render_hash: render_hash_hex,
        sync,
        health,
        error: error.map_or_else(String::new, |e| truncate(&e, MAX_STATUS_ERROR_LEN)),
        drift_count: drift,
        objects,
        objects_omitted: omitted as u32,
    }
}

async fn report_loop(
    config: Arc<AgentConfig>,
    mut reports: watch::Receiver<Vec<StatusReport>>,
    mut transport: watch::Receiver<Option<fleet_identity::Transport>>,
) {
    // One connection per endpoint, kept between reports; dropped when a report on it fails.
    let mut clients: BTreeMap<usize, Coordinator> = BTreeMap::new();
    let mut backoff = Backoff::new();
    let mut preferred = 0usize;
    let mut pending = false;
    loop {
        if !pending {
            tokio::select! {
                result = reports.changed() => if result.is_err() { return },
                () = tokio::time::sleep(config.resync_interval) => {}
            }
        }
        if transport.has_changed().unwrap_or(false) {
            clients.clear(); // Connected with the certificate before the renewal.
        }
        let current = transport_now(&mut transport).await;
        let batch: Vec<StatusReport> = reports.borrow_and_update().clone();
        if batch.is_empty() {
            pending = false;
            continue;
        }
        let mut sent = false;
        for i in 0..config.endpoints.len() {
            let index = (preferred + i) % config.endpoints.len();
            let address = &config.endpoints[index];
            let client = match clients.get(&index) {
                Some(client) => client.clone(),
                None => match Coordinator::connect(&current, address).await {
                    Ok(client) => clients.entry(index).or_insert(client).clone(),
                    Err(error) => {
                        tracing::debug!(%address, %error, "cannot connect to report status");
                        continue;
                    }
                },
            };
            let mut client = client;
            match client.report(&config.cluster, &batch).await {
                Ok(committed) => {
                    tracing::debug!(%address, committed, "status reported");
                    preferred = index;
                    sent = true;
                    break;
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "status report failed");
                    clients.remove(&index);
                }
            }
        }
        if sent {
            backoff.reset();
            pending = false;
        } else {
            pending = true;
            let delay = backoff.next_delay();
            tracing::warn!(?delay, "no coordinator took the status report; retrying");
            tokio::select! {
                _ = reports.changed() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let mut ceilings_hit = 0;
        for n in 0..40 {
            let d = b.next_delay();
            let ceiling = Backoff::BASE
                .saturating_mul(1 << n.min(16))
                .min(Backoff::MAX);
            assert!(d <= ceiling, "{n}: {d:?} > {ceiling:?}");
            if ceiling == Backoff::MAX {
                ceilings_hit += 1;
            }
        }
        assert!(ceilings_hit > 30);
        b.reset();
        assert!(b.next_delay() <= Backoff::BASE);
        // Jitter: many draws at the cap are not all the same.
        let draws: BTreeSet<u128> = (0..20)
            .map(|_| {
                let mut b = Backoff { attempt: 10 };
                b.next_delay().as_micros()
            })
            .collect();
        assert!(draws.len() > 10);
    }

    #[test]
    fn a_failed_render_is_retried_later_and_later_up_to_ten_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| render_retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("æøåæøå", 7), "æø...");
    }
}
