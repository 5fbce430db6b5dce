//! Start-up and shutdown of a coordinator node ([`run`]): the identity of its data dir, the
//! sled store and openraft, the gRPC server, the background tasks, bootstrap or join, and a
//! clean stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::batcher::{Batcher, MAX_ENTRIES_PER_APPEND};
use crate::coordinator::{Coordinator, DEFAULT_CATCH_UP_TIMEOUT, IDENTIFY_TIMEOUT, identify};
use crate::error::NodeError;
use crate::grpc;
use crate::grpc::network::{MAX_RAFT_MESSAGE_BYTES, Peers, SNAPSHOT_CHUNK_BYTES};
use crate::health::{DiskHealth, ProbeConfig, run_probe};
use crate::identity::{self, DataDir, FORMAT0_CLUSTER_ID, Identity};
use crate::leadership::{GuardConfig, run_guard};
use crate::limits::MAX_JOIN_ATTEMPTS;
use crate::store::{self, LogStore, StateMachineStore};
use crate::types::{NodeId, Raft};
use fleet_api::limits::MAX_REQUEST_BYTES;
use fleet_api::tasks::spawn_named;

/// How often gauges are refreshed.
const METRICS_PERIOD: Duration = Duration::from_secs(2);
/// Exit code of a node whose Raft core stopped with a fatal error.
pub const EXIT_RAFT_FATAL: i32 = 75;

/// How a node starts (see [`crate::identity`] for what a data dir holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first node of a new coordinator cluster. Refused on a data dir that already belongs
    /// to a cluster.
    Bootstrap,
    /// The embedded demo: bootstrap an empty data dir, resume one that is not.
    BootstrapOrResume,
    /// Join the cluster of the member at this address as a new node: learner first, voter once
    /// caught up. Resumes when the data dir already holds this node's log.
    Join(String),
    /// Resume from the data dir; refused when it is empty.
    Resume,
}

/// Everything `fleet-node coordinator` takes.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// The address peers and clients use; defaults to `listen`.
    pub advertise: String,
    pub data_dir: PathBuf,
    pub start: Start,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub logs_kept_after_snapshot: u64,
    /// Time between disk probe bursts; zero turns the probe off.
    pub disk_probe_interval: Duration,
    /// fdatasyncs per probe burst.
    pub disk_probe_writes: u32,
    /// Serve Prometheus metrics here.
    pub metrics_listen: Option<SocketAddr>,
    /// Disk-aware leadership.
    pub guard: GuardConfig,
    /// Serve `RaftService.SetFailpoint` (tests and chaos runs only).
    pub allow_failpoint_rpc: bool,
    /// A node whose clock is further than this from the voters' median does not lead or
    /// stamp times (see [`crate::clock`]).
    pub max_clock_offset_ms: u64,
    /// This node's certificate (a `spiffe://TD/coordinator/ID` X509-SVID whose ID is
    /// [`Self::id`]), key and CA: TLS for every service, client certificates judged per
    /// request, mutual TLS to the other coordinators. `None` is plaintext without any
    /// authentication, refused unless every listen and advertise address is loopback.
    pub tls: Option<fleet_identity::Credentials>,
    /// The operator a `--bootstrap` binds `admin` to while no operator holds it (the name of
    /// `spiffe://TD/operator/NAME`; default `admin`, whose certificate `fleet-ctl pki init`
    /// writes).
    pub bootstrap_admin: String,
    /// Most watch streams one operator or token may hold open on this node.
    pub max_watch_streams_per_operator: usize,
    /// The fleet's CA with its key (`--ca-key`), to sign agents' certificate requests
    /// (`RequestCertificate`); `None` on a node that does not sign.
    pub signing_ca: Option<Arc<fleet_identity::pki::Ca>>,
    /// The lifetime of the agent certificates this node signs (default 30 days).
    pub agent_certificate_ttl: Duration,
    /// Reads the bytes the process holds allocated, from whichever allocator the binary runs
    /// (fleet-node: jemalloc's `stats.allocated`), for `fleet_heap_allocated_bytes`; `None`
    /// publishes no such gauge.
    pub heap_allocated_bytes: Option<fn() -> Option<u64>>,
}

impl CoordinatorConfig {
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: PathBuf, start: Start) -> Self {
        CoordinatorConfig {
            id,
            listen,
            advertise: listen.to_string(),
            data_dir,
            start,
            heartbeat_interval_ms: 100,
            election_timeout_ms_min: 400,
            election_timeout_ms_max: 800,
            snapshot_after_logs: 10_000,
            logs_kept_after_snapshot: 1_000,
            disk_probe_interval: Duration::from_secs(10),
            disk_probe_writes: 20,
            metrics_listen: None,
            guard: GuardConfig::default(),
            allow_failpoint_rpc: false,
            max_clock_offset_ms: crate::clock::DEFAULT_MAX_CLOCK_OFFSET_MS,
            tls: None,
            bootstrap_admin: DEFAULT_BOOTSTRAP_ADMIN.into(),
            max_watch_streams_per_operator: crate::limits::DEFAULT_MAX_WATCH_STREAMS_PER_OPERATOR,
            signing_ca: None,
            agent_certificate_ttl: fleet_identity::pki::CLUSTER_TTL,
            heap_allocated_bytes: None,
        }
    }

    /// The TLS parts of this configuration: the server's rustls configuration, the
    /// authenticator, and the transport to peers; or plaintext, when that is allowed.
    ///
    /// # Errors
    /// `Startup` for plaintext on an address that is not loopback, for a certificate that is
    /// not this node's, or for unusable TLS material.
    fn security(&self) -> Result<Security, NodeError> {
        let Some(own) = &self.tls else {
            let loopback = |a: &str| a.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
            if !self.listen.ip().is_loopback() || !loopback(&self.advertise) {
                return Err(NodeError::Startup(format!(
                    "--insecure-plaintext serves everyone without authentication, so it is only \
                     allowed when every address is loopback, and --listen {} / --advertise {} \
                     is not. Serve TLS instead: --tls-cert, --tls-key and --tls-ca (make them \
                     with `fleet-ctl pki init` and `fleet-ctl pki issue coordinator`)",
                    self.listen, self.advertise
                )));
            }
            return Ok(Security {
                server: None,
                authenticator: None,
                peers: fleet_identity::Transport::Plaintext,
            });
        };
        if own.principal != fleet_core::Principal::Coordinator(self.id) {
            return Err(NodeError::Startup(format!(
                "--tls-cert names {} (spiffe ID {}), not coordinator {}: give this node's own \
                 certificate (fleet-ctl pki issue coordinator --id {} --host ...)",
                own.principal,
                own.principal.spiffe_id(&own.trust.trust_domain),
                self.id,
                self.id
            )));
        }
        let tls = |e: fleet_identity::IdentityError| NodeError::Startup(e.to_string());
        Ok(Security {
            server: Some(fleet_identity::tls::server_config(own).map_err(tls)?),
            authenticator: Some(Arc::new(
                fleet_identity::Authenticator::new(&own.trust).map_err(tls)?,
            )),
            peers: fleet_identity::Transport::tls(&own.trust, Some(own)).map_err(tls)?,
        })
    }
}

/// What [`CoordinatorConfig::security`] makes.
struct Security {
    server: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    authenticator: Option<Arc<fleet_identity::Authenticator>>,
    peers: fleet_identity::Transport,
}

/// Starts a coordinator and serves until `shutdown` completes, then stops cleanly.
/// `on_ready` runs once the node serves and, for `--bootstrap`, leads.
pub async fn run<F, R>(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: F,
) -> Result<(), NodeError>
where
    F: FnOnce(Arc<Coordinator>) -> R,
    R: Future<Output = Result<(), NodeError>>,
{
    let security = config.security()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Startup(format!("data dir {}: {e}", config.data_dir.display())))?;
    let identity = establish_identity(&config, &security.peers).await?;
    let db = store::open_db(&config.data_dir).map_err(|e| {
        NodeError::Startup(format!("open sled in {}: {e}", config.data_dir.display()))
    })?;
    store::check_stored_terms(&db, config.id).map_err(NodeError::Startup)?;
    let health = Arc::new(DiskHealth::default());
    let log_store =
        LogStore::open(&db, health.clone()).map_err(|e| NodeError::Startup(e.to_string()))?;
    let state_machine =
        StateMachineStore::open(&db).map_err(|e| NodeError::Startup(e.to_string()))?;
    let state = state_machine.shared();
    let assignments_changed = state_machine.watch_assignments();

    let raft_config = openraft::Config {
        cluster_name: "fleet".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_ms_min,
        election_timeout_max: config.election_timeout_ms_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
        max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        max_payload_entries: MAX_ENTRIES_PER_APPEND,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Startup(format!("raft config: {e}")))?;

    let peers = Peers::new(
        identity.cluster_id.clone(),
        config.id,
        security.peers.clone(),
    );
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config),
        peers.clone(),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| NodeError::Startup(format!("raft: {e}")))?;

    let coordinator = Arc::new(Coordinator {
        id: config.id,
        cluster_id: identity.cluster_id.clone(),
        membership_change: tokio::sync::Mutex::new(()),
        raft: raft.clone(),
        state,
        peers,
        batcher: Batcher::start(raft.clone()),
        health: health.clone(),
        allow_failpoint_rpc: config.allow_failpoint_rpc,
        assignments_changed,
        heartbeats: Default::default(),
        clock: crate::clock::ClockCheck::new(config.max_clock_offset_ms),
        last_stamp_ms: Default::default(),
        campaign_vetoes: Default::default(),
        watch_streams: crate::watches::WatchStreams::new(config.max_watch_streams_per_operator),
    });

    // The node's own tasks; stopped at shutdown, and on an early return by the drop.
    let mut background = Background::default();
    if let Some(listen) = config.metrics_listen {
        crate::metrics::install(listen).map_err(NodeError::Startup)?;
        background.spawn(
            "metrics-publisher",
            publish_metrics(raft.clone(), health.clone(), config.heap_allocated_bytes),
        );
    }
    background.spawn(
        "disk-probe",
        run_probe(
            ProbeConfig {
                data_dir: config.data_dir.clone(),
                interval: config.disk_probe_interval,
                writes_per_burst: config.disk_probe_writes,
            },
            health.clone(),
        ),
    );
    let stopping = Arc::new(AtomicBool::new(false));
    background.spawn(
        "raft-fatal-watch",
        watch_for_fatal(raft.clone(), stopping.clone()),
    );
    background.spawn(
        "leadership-guard",
        run_guard(coordinator.clone(), config.guard.clone()),
    );
    background.spawn(
        "rollout-planner",
        crate::planner::run_planner(coordinator.clone(), config.bootstrap_admin.clone()),
    );
    background.spawn(
        "clock-check",
        crate::clock::run_clock_check(coordinator.clone()),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::Startup(format!("listen on {}: {e}", config.listen)))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let authenticate = grpc::auth::Authenticate {
        authenticator: security.authenticator.clone(),
        coordinator: coordinator.clone(),
    };
    let router = tonic::transport::Server::builder()
        // Finds agents that vanished without closing their watch streams.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            grpc::fleet::fleet_server(coordinator.clone()),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            grpc::agent::agent_server(
                coordinator.clone(),
                config.signing_ca.clone().map(|ca| grpc::agent::Signer {
                    ca,
                    ttl: config.agent_certificate_ttl,
                }),
            ),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            grpc::promotion::promotion_server(coordinator.clone()),
            authenticate.clone(),
        ))
        .add_service(InterceptedService::new(
            grpc::raft::raft_server(coordinator.clone()),
            authenticate,
        ));
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = match &security.server {
        Some(tls) => {
            let (incoming, accept) = crate::listener::tls_incoming(listener, tls.clone());
            background.spawn("tls-accept", accept);
            spawn_named(
                "grpc-server",
                router.serve_with_incoming_shutdown(incoming, stopped),
            )
        }
        None => spawn_named(
            "grpc-server",
            router.serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped,
            ),
        ),
    };
    tracing::info!(
        node = config.id,
        tls = security.server.is_some(),
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        max_request_bytes = MAX_REQUEST_BYTES,
        max_raft_message_bytes = MAX_RAFT_MESSAGE_BYTES,
        "coordinator serving"
    );

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    match &config.start {
        Start::Bootstrap if initialized => {
            return Err(NodeError::Startup(format!(
                "--bootstrap: {} already belongs to coordinator cluster {}; restart the node \
                 without --bootstrap, or give --bootstrap an empty data dir for a new cluster",
                config.data_dir.display(),
                identity.cluster_id
            )));
        }
        Start::Bootstrap | Start::BootstrapOrResume if !initialized => {
            let members = BTreeMap::from([(config.id, BasicNode::new(config.advertise.clone()))]);
            raft.initialize(members)
                .await
                .map_err(|e| NodeError::Startup(format!("bootstrap: {e}")))?;
            tracing::info!(node = config.id, cluster = %identity.cluster_id, "bootstrapped a new coordinator cluster");
        }
        Start::Resume if !initialized => {
            return Err(NodeError::Startup(format!(
                "{} holds node {}'s identity but no log: it never finished joining. Start it with \
                 --join HOST:PORT",
                config.data_dir.display(),
                config.id
            )));
        }
        Start::Join(member) => {
            if coordinator.membership().voter_ids().any(|v| v == config.id) {
                tracing::info!(
                    node = config.id,
                    "already a voter: resuming from the data dir"
                );
            } else {
                join(&coordinator, member, &config.advertise).await?;
            }
        }
        _ => {}
    }
    if matches!(config.start, Start::Bootstrap | Start::BootstrapOrResume) {
        raft.wait(Some(Duration::from_secs(30)))
            .current_leader(config.id, "bootstrap leads")
            .await
            .map_err(|e| NodeError::Startup(format!("no leadership after bootstrap: {e}")))?;
    }
    if matches!(config.start, Start::Bootstrap | Start::BootstrapOrResume) {
        bind_bootstrap_admin(&coordinator, &config.bootstrap_admin).await?;
    }
    on_ready(coordinator.clone()).await?;

    shutdown.await;
    tracing::info!(node = config.id, "shutting down");
    stopping.store(true, Ordering::SeqCst);
    // First the tasks that propose or judge (planner, guard, clock check, probe, metrics), so
    // none of them acts on a Raft that is going away.
    background.stop().await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Err(e) = db.flush_async().await {
        store::fail_stop("flush at shutdown", &e);
    }
    tracing::info!(node = config.id, "stopped");
    Ok(())
}

/// The coordinator's background tasks (disk probe, leadership guard, planner, clock check,
/// metrics, fatal-error watch): aborted by [`Background::stop`] at shutdown, or when dropped
/// (a start-up that fails after spawning them).
#[derive(Default)]
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Background {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(spawn_named(name, task));
    }

    /// Aborts every task and waits until each has ended.
    async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.0);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Publishes disk, Raft and heap gauges every [`METRICS_PERIOD`].
///
/// # Cancel safety
/// Only reads; safe to drop.
async fn publish_metrics(
    raft: Raft,
    health: Arc<DiskHealth>,
    heap_allocated_bytes: Option<fn() -> Option<u64>>,
) {
    let mut ticker = tokio::time::interval(METRICS_PERIOD);
    loop {
        ticker.tick().await;
        let m = raft.metrics().borrow().clone();
        crate::metrics::publish_raft(
            m.current_term,
            m.last_applied.map_or(0, |l| l.index),
            m.state == ServerState::Leader,
        );
        crate::metrics::publish_disk(&health.report());
        if let Some(allocated) = heap_allocated_bytes.and_then(|read| read()) {
            crate::metrics::publish_heap(allocated);
        }
    }
}

/// Reads this node's identity from its data dir, or makes one: a new cluster id for
/// `--bootstrap`, the member's for `--join`, `format0` for a data dir from before identities.
/// Refuses an empty data dir without either flag, and a data dir of another node id.
async fn establish_identity(
    config: &CoordinatorConfig,
    transport: &fleet_identity::Transport,
) -> Result<Identity, NodeError> {
    let dir = config.data_dir.clone();
    let found = tokio::task::spawn_blocking(move || identity::inspect(&dir))
        .await
        .map_err(|e| NodeError::Startup(e.to_string()))??;
    let made = match found {
        DataDir::Identified(identity) => {
            if identity.node_id != config.id {
                return Err(NodeError::Startup(format!(
                    "{} belongs to node {}, not --id {}: give the node's own id or its own data dir",
                    config.data_dir.display(),
                    identity.node_id,
                    config.id
                )));
            }
            return Ok(identity);
        }
        DataDir::Format0 => {
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "a data dir from before identities (format 0): writing identity.json with \
                 cluster id {FORMAT0_CLUSTER_ID} and node id {}", config.id
            );
            FORMAT0_CLUSTER_ID.to_string()
        }
        DataDir::Empty => match &config.start {
            Start::Resume => {
                return Err(NodeError::Startup(format!(
                    "{} is empty: this node has no identity and no log. Start a new cluster \
                     with --bootstrap, or join one with --join HOST:PORT. If node {} lost its \
                     disk, it must not come back under its old id with an empty log: from a \
                     healthy member run `fleet-ctl coordinator remove --id {}`, then start it \
                     with --join (README: recovering a node)",
                    config.data_dir.display(),
                    config.id,
                    config.id
                )));
            }
            Start::Bootstrap | Start::BootstrapOrResume => identity::new_cluster_id()?,
            Start::Join(member) => cluster_id_for_join(member, config.id, transport).await?,
        },
    };
    let identity = Identity {
        format: identity::DATA_DIR_FORMAT,
        cluster_id: made,
        node_id: config.id,
    };
    let dir = config.data_dir.clone();
    let written = identity.clone();
    tokio::task::spawn_blocking(move || identity::write(&dir, &written))
        .await
        .map_err(|e| NodeError::Startup(e.to_string()))??;
    tracing::info!(node = config.id, cluster = %identity.cluster_id, "identity written");
    Ok(identity)
}

/// The cluster id of the member at `member`, asked until it answers (bounded), once the
/// member has confirmed that node `id` is not a member. This runs before the node writes its
/// identity or serves anything: a node that lost its disk must not come back under an id the
/// cluster still counts on, not even for the moment a refused join takes.
async fn cluster_id_for_join(
    member: &str,
    id: NodeId,
    transport: &fleet_identity::Transport,
) -> Result<String, NodeError> {
    let peers = Peers::new(String::new(), 0, transport.clone());
    for attempt in 1..=MAX_JOIN_ATTEMPTS {
        let asked = async {
            let identity = identify(&peers, member).await?;
            let status = peers.coordinator_status(member, IDENTIFY_TIMEOUT).await?;
            Ok::<_, tonic::Status>((identity.cluster_id, status.members))
        };
        match asked.await {
            Ok((cluster_id, members)) => {
                if let Some(old) = members.iter().find(|m| m.id == id) {
                    return Err(NodeError::Startup(format!(
                        "--join {member}: node {id} is still a member of that cluster ({} at {}). \
                         A node that lost its data dir must not come back under its old id: from \
                         a healthy member run `fleet-ctl coordinator remove --id {id}`, then start \
                         this node again with --join (README: recovering a node)",
                        if old.voter { "a voter" } else { "a learner" },
                        old.address
                    )));
                }
                return Ok(cluster_id);
            }
            Err(status) => {
                tracing::info!(attempt, %member, %status, "asking the member for its cluster id");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Err(NodeError::Startup(format!(
        "--join {member}: no answer after {MAX_JOIN_ATTEMPTS} attempts; check the address"
    )))
}

/// Asks `member` (or the leader it points to) to add this node. Retries while the cluster
/// has no leader or cannot be reached, and while this node is still catching up as a learner
/// ([`DEFAULT_CATCH_UP_TIMEOUT`] per attempt); any refusal (this id is still a member, the advertised
/// address does not answer as this node, ...) ends the start with the member's message.
async fn join(coordinator: &Coordinator, member: &str, advertise: &str) -> Result<(), NodeError> {
    for attempt in 1..=MAX_JOIN_ATTEMPTS {
        let added = coordinator.peers.add_coordinator(
            member,
            coordinator.id,
            advertise.to_string(),
            DEFAULT_CATCH_UP_TIMEOUT,
        );
        match added.await {
            Ok(_) => {
                tracing::info!(node = coordinator.id, %member, "joined the coordinator cluster as a voter");
                return Ok(());
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::AlreadyExists
                        | tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                ) =>
            {
                let hint = fleet_api::status::hint(&status).unwrap_or("").to_string();
                return Err(NodeError::Startup(format!(
                    "--join {member} refused: {}. {hint}",
                    status.message()
                )));
            }
            Err(status) => {
                tracing::info!(attempt, %member, %status, "join not accepted yet, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Err(NodeError::Startup(format!(
        "{member} did not add this node after {MAX_JOIN_ATTEMPTS} attempts"
    )))
}

/// Stops the process with [`EXIT_RAFT_FATAL`] when the Raft core stops with a fatal error
/// (such as a storage error), or stops without a word: a panic in the core drops its metrics
/// channel. Only a shutdown that `stopping` announced beforehand ends the core quietly; a node
/// whose core is dead must not stay up serving stale state.
///
/// # Cancel safety
/// Only reads metrics; safe to drop.
async fn watch_for_fatal(raft: Raft, stopping: Arc<AtomicBool>) {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            if !matches!(fatal, openraft::error::Fatal::Stopped) {
                tracing::error!(error = %fatal, "raft stopped with a fatal error: stopping the node");
                std::process::exit(EXIT_RAFT_FATAL);
            }
            return;
        }
        if metrics.changed().await.is_err() {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            tracing::error!("the raft core is gone (a panic in the core): stopping the node");
            std::process::exit(EXIT_RAFT_FATAL);
        }
    }
}

/// The operator `--bootstrap` makes the first admin unless told otherwise: the one
/// `fleet-ctl pki init` writes a certificate for.
pub const DEFAULT_BOOTSTRAP_ADMIN: &str = "admin";

/// Binds `admin` to `operator` as this coordinator, if no operator holds it (a new cluster, or
/// a data dir from before roles): the only binding a coordinator may make
/// ([`fleet_core::access`]). At `--bootstrap` before the node is ready; otherwise the leader's
/// planner does it.
pub(crate) async fn bind_bootstrap_admin(
    coordinator: &Coordinator,
    operator: &str,
) -> Result<(), NodeError> {
    if coordinator.read_state(|s| s.has_admin()) {
        return Ok(());
    }
    let command = fleet_core::Command::BindRole {
        principal: operator.to_string(),
        role: fleet_core::access::Role::Admin.to_string(),
        environments: Vec::new(),
        workloads: Vec::new(),
    };
    let written = coordinator
        .write(
            command,
            fleet_core::Principal::Coordinator(coordinator.id).actor(),
            "the bootstrap admin".into(),
        )
        .await;
    match written {
        Ok(_) => tracing::info!(operator, "bound the bootstrap admin"),
        // Both callers (start-up and the planner) may propose it at once; the second is
        // refused at apply because an admin exists by then, which is what both wanted.
        Err(_) if coordinator.read_state(|s| s.has_admin()) => {}
        Err(e) => {
            return Err(NodeError::Startup(format!(
                "bind the bootstrap admin {operator}: {e}"
            )));
        }
    }
    Ok(())
}
