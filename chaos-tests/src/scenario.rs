//! One chaos run: a fresh coordinator cluster of real processes (each in its own network
//! namespace on its own FUSE-mounted data dir when run as root), agents on files targets, the
//! client workload, exactly one fault, and then the checks.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use fleet_api::proto::promotion_service_client::PromotionServiceClient;
use fleet_api::proto::{
    AddEnvironmentRequest, AddSiteRequest, CreateWorkloadRequest, GetClusterRequest,
    ListAuditEventsRequest, Pipeline, PublishReleaseRequest, ReadConsistency,
    RegisterClusterRequest, RemoveCoordinatorRequest, SetPipelineRequest,
};
use fleet_testkit::{AgentProcess, NodeSpec, ProcessCluster, set_failpoint};
use nix::sys::signal::Signal;

use crate::checker::{self, Input, Operation, Output, Verdict};
use crate::net::{Network, is_root};
use crate::slowfs::SlowFs;
use crate::workload::{self, LeaderLog, Nodes, Recorder};

/// Steps the linearizability search may take per key before it gives up.
const CHECK_BUDGET_PER_KEY: u64 = 20_000_000;
/// After the fault heals, the cluster must accept a write within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
/// ... and the agents must run the final desired revision within this.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);
/// A node whose fsync fails must exit within this.
const FAIL_STOP_BOUND: Duration = Duration::from_secs(10);
/// How long a membership change (a removal, a node becoming a voter) may take.
const MEMBERSHIP_BOUND: Duration = Duration::from_secs(60);
/// The exit code of a node that could not persist.
const EXIT_STORAGE: i32 = 74;
/// Concurrent workload clients.
const CLIENTS: u64 = 4;
/// Commits of the agents' workload, published in order during the run.
const AGENT_COMMITS: usize = 40;
const AGENT_CLUSTERS: [&str; 2] = ["agent-a", "agent-b"];
const AGENT_WORKLOAD: &str = "web";
const AGENT_ENVIRONMENT: &str = "agents";
/// The fsync delays of the slow-disk faults: from etcd's 10 ms limit to half a second.
pub const SLOW_DISK_DELAYS_MS: [u64; 5] = [10, 50, 100, 200, 500];

/// Which node a fault hits, resolved when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
    /// A majority of the nodes, the leader among them.
    Majority,
}

/// The one fault of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill(Target),
    Pause(Target),
    /// The target's link down (root).
    Partition(Target),
    /// The leader and enough others for a minority moved to their own bridge (root).
    MinoritySplit,
    /// The target cut off from the other coordinators while clients still reach it (root):
    /// a leader cut off this way keeps answering clients after the others elected a new one.
    Cut(Target),
    /// One node's link going down and up every 200–800 ms (root).
    Flapping,
    /// fsync/fdatasync of the target slowed by `delay_ms` through FUSE (root).
    SlowDisk {
        target: Target,
        delay_ms: u64,
    },
    /// fsync of the target fails with EIO through FUSE: it must stop (root).
    FsyncEio(Target),
    /// The target killed and its unsynced writes lost, LazyFS-style (root).
    LoseUnsynced(Target),
    /// The target's disk lost: killed, its data dir wiped, then brought back the documented
    /// way: removed from the membership through a healthy member, started with an empty data
    /// dir and --join (learner first, voter once caught up).
    DiskLoss(Target),
    /// Under load, a new node joins (learner, then voter) and then a follower of the original
    /// ones is removed and stopped.
    MembershipChange,
    /// The target restarted under libfaketime (Debian's `faketime`), then its wall clock
    /// jumps a day ahead: it must stop leading and stamp nothing, and committed time must
    /// neither go backwards nor run ahead of the real time.
    ClockSkew(Target),
    /// A deliberate bug, for the checker's own test: a lagging follower serves linearizable
    /// reads from its local state.
    StaleReadBug,
}

impl Fault {
    /// Every fault by name (slow disks with the delays the random plans draw from).
    pub fn all() -> Vec<Fault> {
        let targets = [Target::Leader, Target::Follower, Target::Majority];
        let mut all = Vec::new();
        for t in targets {
            all.extend([
                Fault::Kill(t),
                Fault::Pause(t),
                Fault::Partition(t),
                Fault::Cut(t),
            ]);
            for delay_ms in SLOW_DISK_DELAYS_MS {
                all.push(Fault::SlowDisk {
                    target: t,
                    delay_ms,
                });
            }
            all.extend([Fault::FsyncEio(t), Fault::LoseUnsynced(t)]);
            if t != Target::Majority {
                // A majority that lost its disks has lost acknowledged writes by definition.
                all.push(Fault::DiskLoss(t));
            }
        }
        all.extend([
            Fault::MinoritySplit,
            Fault::Flapping,
            Fault::MembershipChange,
            Fault::ClockSkew(Target::Leader),
            Fault::ClockSkew(Target::Follower),
            Fault::StaleReadBug,
        ]);
        all
    }

    /// The fault named `name` (as [`Fault::name`] prints it).
    pub fn parse(name: &str) -> anyhow::Result<Fault> {
        let all = Fault::all();
        if let Some(f) = all.iter().find(|f| f.name() == name) {
            return Ok(f.clone());
        }
        let names: Vec<String> = all.iter().map(Fault::name).collect();
        bail!(
            "no fault named {name:?}; the faults are: {}",
            names.join(", ")
        )
    }

    pub fn needs_root(&self) -> bool {
        !matches!(
            self,
            Fault::Kill(_)
                | Fault::Pause(_)
                | Fault::StaleReadBug
                | Fault::DiskLoss(_)
                | Fault::MembershipChange
                | Fault::ClockSkew(_)
        )
    }

    pub fn name(&self) -> String {
        let t = |t: &Target| format!("{t:?}").to_lowercase();
        match self {
            Fault::Kill(x) => format!("{}-kill", t(x)),
            Fault::Pause(x) => format!("{}-pause", t(x)),
            Fault::Partition(x) => format!("{}-partition", t(x)),
            Fault::Cut(x) => format!("{}-cut-from-peers", t(x)),
            Fault::MinoritySplit => "minority-split".into(),
            Fault::Flapping => "flapping-link".into(),
            Fault::SlowDisk { target, delay_ms } => format!("slow-{}-disk-{delay_ms}ms", t(target)),
            Fault::FsyncEio(x) => format!("{}-fsync-eio", t(x)),
            Fault::LoseUnsynced(x) => format!("{}-lose-unsynced", t(x)),
            Fault::DiskLoss(x) => format!("{}-disk-loss", t(x)),
            Fault::MembershipChange => "membership-change".into(),
            Fault::ClockSkew(x) => format!("{}-clock-a-day-ahead", t(x)),
            Fault::StaleReadBug => "stale-read-bug".into(),
        }
    }
}

/// A run's schedule, all of it drawn from its seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub nodes: usize,
    pub fault: Fault,
    pub warmup: Duration,
    pub fault_for: Duration,
    pub cooldown: Duration,
}

impl Plan {
    /// A plan for `fault` whose timings come from `seed`.
    pub fn for_fault(seed: u64, nodes: usize, fault: Fault) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed);
        Plan {
            seed,
            nodes,
            fault,
            warmup: Duration::from_millis(rng.u64(2_000..4_000)),
            fault_for: Duration::from_millis(rng.u64(3_000..8_000)),
            cooldown: Duration::from_millis(rng.u64(3_000..5_000)),
        }
    }

    /// A random fault and timings from `seed`.
    pub fn random(seed: u64, nodes: usize) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_f1ee7);
        let target = match rng.u8(..2) {
            0 => Target::Leader,
            _ => Target::Follower,
        };
        let fault = match rng.u8(..13) {
            0 => Fault::Kill(target),
            1 => Fault::Pause(target),
            2 => Fault::Partition(target),
            3 => Fault::MinoritySplit,
            4 => Fault::Flapping,
            5 => Fault::SlowDisk {
                target: [Target::Leader, Target::Follower, Target::Majority][rng.usize(..3)],
                delay_ms: SLOW_DISK_DELAYS_MS[rng.usize(..SLOW_DISK_DELAYS_MS.len())],
            },
            6 => Fault::FsyncEio(target),
            7 => Fault::LoseUnsynced(target),
            8 => Fault::Cut(target),
            9 => Fault::DiskLoss(target),
            10 => Fault::MembershipChange,
            11 => Fault::ClockSkew(target),
            _ => Fault::Kill(Target::Leader),
        };
        Plan::for_fault(seed, nodes, fault)
    }
}

/// What one run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub fault: String,
    pub seed: u64,
    pub operations: usize,
    pub faults: usize,
    pub violations: Vec<String>,
    pub lost_acks: Vec<String>,
    /// Keys whose history the search could not decide within its budget.
    pub inconclusive: Vec<String>,
    pub skipped: Option<String>,
    pub recovery: Option<Duration>,
}

impl Report {
    /// Counts the checker's verdicts as violations or inconclusive keys.
    fn add_verdicts(&mut self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            match v {
                Verdict::Violation {
                    key,
                    explained,
                    operations,
                } => self.violations.push(format!(
                    "key {key}: not linearizable (the longest explainable prefix holds {explained} of {operations} operations)"
                )),
                Verdict::Inconclusive { key } => self.inconclusive.push(key),
                Verdict::Linearizable => {}
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "fault={} skipped: {why} seed={}", self.fault, self.seed);
        }
        write!(
            f,
            "fault={} operations={} faults={} violations={} lost_acks={} inconclusive={} recovery_ms={} seed={}",
            self.fault,
            self.operations,
            self.faults,
            self.violations.len(),
            self.lost_acks.len(),
            self.inconclusive.len(),
            self.recovery.map_or(-1, |d| d.as_millis() as i64),
            self.seed
        )
    }
}

/// The running system of one run; stopped in field order when dropped: agents, nodes, then
/// filesystems, network and directory.
struct System {
    agents: Vec<AgentProcess>,
    cluster: ProcessCluster,
    disks: Vec<SlowFs>,
    net: Option<Network>,
    _base: tempfile::TempDir,
    nodes: Nodes,
    addresses: Vec<String>,
}

impl System {
    /// Starts `nodes` coordinators; with `faketime`, each under libfaketime with its own clock
    /// offset file `faketime-ID` in the run directory, at +0 (see [`skew_clock`]).
    async fn start(nodes: usize, base_dir: &Path, faketime: bool) -> anyhow::Result<System> {
        let base = tempfile::Builder::new()
            .prefix("fleet-chaos-")
            .tempdir_in(base_dir)
            .context("create the run directory")?;
        let root = is_root();
        let net = if root {
            // One namespace more than nodes, for the node the membership-change fault adds.
            Some(Network::create(nodes + 1)?)
        } else {
            None
        };
        let mut disks = Vec::new();
        let mut specs = Vec::new();
        for id in 1..=nodes as u64 {
            let data_dir = base.path().join(format!("node-{id}"));
            if root {
                disks.push(
                    SlowFs::mount(&base.path().join(format!("node-{id}.disk")), &data_dir)
                        .with_context(|| format!("mount the FUSE data dir of node {id}"))?,
                );
            }
            let (address, mut wrapper): (String, Vec<String>) = match &net {
                Some(net) => (
                    format!("{}:7400", net.address_of(id)),
                    ["ip", "netns", "exec", &net.namespace(id)]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
                None => (
                    format!("127.0.0.1:{}", fleet_testkit::free_port()),
                    Vec::new(),
                ),
            };
            if faketime {
                let file = base.path().join(format!("faketime-{id}"));
                std::fs::write(&file, "+0\n")?;
                wrapper.extend([
                    "env".to_string(),
                    format!("LD_PRELOAD={LIBFAKETIME}"),
                    format!("FAKETIME_TIMESTAMP_FILE={}", file.display()),
                    "FAKETIME_CACHE_DURATION=1".to_string(),
                    "FAKETIME_DONT_FAKE_MONOTONIC=1".to_string(),
                ]);
            }
            specs.push(NodeSpec {
                address,
                data_dir,
                wrapper,
            });
        }
        let addresses: Vec<String> = specs.iter().map(|s| s.address.clone()).collect();
        let cluster_dir = tempfile::tempdir_in(base.path())?;
        let cluster =
            ProcessCluster::start_with(cluster_dir, specs, &["--allow-failpoint-rpc"]).await;
        Ok(System {
            agents: Vec::new(),
            cluster,
            disks,
            net,
            nodes: Nodes::new(&addresses),
            addresses,
            _base: base,
        })
    }

    fn base(&self) -> &Path {
        self._base.path()
    }

    /// The node every reachable node agrees is the leader, waiting up to 20 s.
    async fn leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for node in self.cluster.nodes.iter().filter(|n| n.is_running()) {
                if let Some(s) = self.cluster.status(node.id).await
                    && s.role == "Leader"
                {
                    return Ok(node.id);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node ids a fault on `target` hits.
    async fn resolve(&self, target: Target) -> anyhow::Result<Vec<u64>> {
        let leader = self.leader().await?;
        let others = self.cluster.others(leader);
        Ok(match target {
            Target::Leader => vec![leader],
            Target::Follower => vec![others[0]],
            Target::Majority => {
                let mut all = vec![leader];
                all.extend(others.iter().take(self.cluster.nodes.len() / 2));
                all
            }
        })
    }

    fn disk(&self, node: u64) -> &SlowFs {
        &self.disks[node as usize - 1]
    }

    fn net(&self) -> &Network {
        self.net.as_ref().expect("root runs have a network")
    }

    /// Sites, environments, workloads, the agents' repository, pipeline and clusters.
    async fn seed_state(&mut self) -> anyhow::Result<Vec<String>> {
        let repo = self.base().join("repo");
        let commits = make_repository(&repo, AGENT_COMMITS)?;
        let mut c = self.nodes.client(0);
        let reason = || "chaos setup".to_string();
        c.add_site(AddSiteRequest {
            name: workload::SITE.into(),
            reason: reason(),
        })
        .await?;
        // `staging` and `production` exist from the start.
        for env in [AGENT_ENVIRONMENT] {
            c.add_environment(AddEnvironmentRequest {
                name: env.into(),
                reason: reason(),
            })
            .await?;
        }
        let url = format!("file://{}", repo.display());
        for w in (0..workload::WORKLOAD_KEYS)
            .map(workload::workload_key)
            .chain([AGENT_WORKLOAD.to_string()])
        {
            c.create_workload(CreateWorkloadRequest {
                name: w,
                repo_url: url.clone(),
                path_template: "app".into(),
                reason: reason(),
            })
            .await?;
        }
        let channel = fleet_testkit::channel(&self.addresses[0]).await?;
        PromotionServiceClient::new(channel)
            .set_pipeline(SetPipelineRequest {
                workload: AGENT_WORKLOAD.into(),
                pipeline: Some(Pipeline {
                    environments: vec![AGENT_ENVIRONMENT.into()],
                    soak_ms: 0,
                    max_unavailable: 1,
                    auto_rollback: true,
                    unreachable_timeout_ms: 300_000,
                    ..Pipeline::default()
                }),
                reason: reason(),
            })
            .await?;
        for cluster in AGENT_CLUSTERS {
            c.register_cluster(RegisterClusterRequest {
                name: cluster.into(),
                site: workload::SITE.into(),
                environment: AGENT_ENVIRONMENT.into(),
                labels: Default::default(),
                reason: reason(),
            })
            .await?;
        }
        c.publish_release(PublishReleaseRequest {
            workload: AGENT_WORKLOAD.into(),
            revision: commits[0].clone(),
            reason: reason(),
            allow_rejected: false,
            override_freeze: false,
        })
        .await?;
        let endpoints = self.addresses.join(",");
        for cluster in AGENT_CLUSTERS {
            self.agents
                .push(AgentProcess::start(self.base(), cluster, &endpoints, "2s"));
        }
        Ok(commits)
    }
}

/// A Git repository with `n` commits, each changing `app/index.html`; their SHAs in order.
fn make_repository(dir: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir.join("app"))?;
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "chaos")
            .env("GIT_AUTHOR_EMAIL", "chaos@fleet.invalid")
            .env("GIT_COMMITTER_NAME", "chaos")
            .env("GIT_COMMITTER_EMAIL", "chaos@fleet.invalid")
            .output()
            .context("run git")?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "-q", "-b", "main"])?;
    let mut shas = Vec::new();
    for i in 0..n {
        std::fs::write(dir.join("app/index.html"), format!("version {i}\n"))?;
        git(&["add", "-A"])?;
        git(&["commit", "-q", "-m", &format!("version {i}")])?;
        shas.push(git(&["rev-parse", "HEAD"])?);
    }
    Ok(shas)
}

/// Publishes the agents' commits in order, one every 1.5 s, until `stop`; returns the
/// commits whose publish was acknowledged or may have happened, in order.
async fn publish_commits(nodes: Nodes, commits: Vec<String>, stop: Arc<AtomicBool>) {
    let mut i = 1;
    while !stop.load(Ordering::SeqCst) && i < commits.len() {
        let mut c = nodes.client(i % nodes.len());
        let _ = tokio::time::timeout(
            workload::OPERATION_TIMEOUT,
            c.publish_release(PublishReleaseRequest {
                workload: AGENT_WORKLOAD.into(),
                revision: commits[i].clone(),
                reason: "chaos agents".into(),
                allow_rejected: false,
                override_freeze: false,
            }),
        )
        .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// Runs `plan` under `base_dir`; `Err` only when the run could not be set up.
pub async fn run(plan: &Plan, base_dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report {
        fault: plan.fault.name(),
        seed: plan.seed,
        ..Report::default()
    };
    if plan.fault.needs_root() && !is_root() {
        report.skipped =
            Some("needs root (network namespaces and FUSE); run as root to include it".into());
        return Ok(report);
    }
    if matches!(plan.fault, Fault::ClockSkew(_)) && !Path::new(LIBFAKETIME).exists() {
        report.skipped = Some(format!(
            "needs {LIBFAKETIME} (Debian package faketime); install it to include it"
        ));
        return Ok(report);
    }
    let faketime = matches!(plan.fault, Fault::ClockSkew(_));
    let mut sys = System::start(plan.nodes, base_dir, faketime).await?;
    let commits = sys.seed_state().await?;
    if let Fault::LoseUnsynced(target) = plan.fault {
        // Track unsynced writes from the start on the node the fault will hit.
        for node in sys.resolve(target).await? {
            sys.disk(node).faults.lazy.store(true, Ordering::SeqCst);
        }
    }

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = Arc::new(Recorder::default());
    let leaders = Arc::new(LeaderLog::default());
    let mut clients = Vec::new();
    for id in 1..=CLIENTS {
        clients.push(tokio::spawn(workload::client(
            sys.nodes.clone(),
            recorder.clone(),
            started,
            id,
            plan.seed.wrapping_mul(31).wrapping_add(id),
            stop.clone(),
        )));
    }
    let leader_watch = tokio::spawn(workload::watch_leaders(
        sys.nodes.clone(),
        leaders.clone(),
        stop.clone(),
    ));
    let assignment_watch = tokio::spawn(workload::watch_assignment(
        sys.nodes.clone(),
        AGENT_CLUSTERS[0].into(),
        AGENT_WORKLOAD.into(),
        stop.clone(),
    ));
    let publisher = tokio::spawn(publish_commits(
        sys.nodes.clone(),
        commits.clone(),
        stop.clone(),
    ));

    tokio::time::sleep(plan.warmup).await;
    let fault_result = inject(&mut sys, plan, &mut report).await;
    report.faults = 1;
    if let Err(e) = fault_result {
        report.violations.push(format!("fault: {e:#}"));
    }
    // The fault has healed: a write must be accepted within the bound, clients still running.
    match recovery(&sys.nodes, &recorder, started).await {
        Some(d) => report.recovery = Some(d),
        None => report.violations.push(format!(
            "no write accepted within {RECOVERY_BOUND:?} after the fault healed"
        )),
    }
    tokio::time::sleep(plan.cooldown).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let _ = leader_watch.await;
    let _ = publisher.await;
    report
        .violations
        .extend(assignment_watch.await.unwrap_or_default());
    report.violations.extend(leaders.violations());

    final_reads(&sys.nodes, &recorder, started).await;
    let history = std::mem::take(&mut *recorder.operations.lock().unwrap());
    report.operations = history.len();

    match audit(&sys.nodes).await {
        Ok(reasons) => report.lost_acks = lost_acks(&history, &reasons),
        Err(e) => report.violations.push(format!("audit: {e:#}")),
    }
    if let Err(e) = converged(&sys).await {
        report.violations.push(e.to_string());
    }
    let history_for_check = history.clone();
    let verdicts = tokio::task::spawn_blocking(move || {
        checker::check(&history_for_check, CHECK_BUDGET_PER_KEY)
    })
    .await?;
    report.add_verdicts(verdicts);
    if !report.violations.is_empty() || !report.lost_acks.is_empty() {
        let path = std::env::temp_dir().join(format!("fleet-chaos-history-{}.txt", plan.seed));
        let text: Vec<String> = history.iter().map(|o| format!("{o:?}")).collect();
        if std::fs::write(&path, text.join("\n")).is_ok() {
            eprintln!("history written to {}", path.display());
        }
        // The run's directory goes with it: keep every node incarnation's log.
        let logs = std::env::temp_dir().join(format!("fleet-chaos-logs-{}", plan.seed));
        match keep_node_logs(sys.base(), &logs) {
            Ok(n) => eprintln!("{n} node logs copied to {}", logs.display()),
            Err(e) => eprintln!("could not copy the node logs to {}: {e}", logs.display()),
        }
    }
    drop(sys);
    Ok(report)
}

/// Copies the coordinators' logs (`node-ID.log.START`) from `run_dir` into `to`; returns how
/// many.
fn keep_node_logs(run_dir: &Path, to: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(run_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("node-") && name.contains(".log.") {
            std::fs::copy(entry.path(), to.join(&name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// A deterministic probe of refusals from a deposed leader (root): the leader is cut off from
/// its peers while clients still reach it, the others elect a new leader and change two
/// clusters (remove one, register another), and then the deposed leader is asked to register
/// the removed one and to remove the registered one. "Already exists" or "not found" read
/// from its stale state would answer from the past; the probe's history is checked like any
/// run's.
pub async fn deposed_leader_probe(base_dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report {
        fault: "deposed-leader-probe".into(),
        ..Report::default()
    };
    if !is_root() {
        report.skipped = Some("needs root (network namespaces); run as root to include it".into());
        return Ok(report);
    }
    let sys = System::start(3, base_dir, false).await?;
    let recorder = Recorder::default();
    let started = Instant::now();
    let op = |node: u64, key: &'static str, input: Input| {
        workload::run_operation(
            &sys.nodes,
            &recorder,
            started,
            1,
            node as usize - 1,
            key,
            input,
        )
    };
    let (removed, added) = ("probe-removed", "probe-added");
    let old = sys.leader().await?;
    sys.nodes
        .client(old as usize - 1)
        .add_site(AddSiteRequest {
            name: workload::SITE.into(),
            reason: "probe setup".into(),
        })
        .await?;
    if op(old, removed, Input::Register { value: 1 }).await != Some(Output::Ok) {
        bail!("could not register {removed} before the cut");
    }
    sys.net().cut(&[old])?;
    report.faults = 1;
    let new = leader_among(&sys, &sys.cluster.others(old)).await?;
    if op(new, removed, Input::Remove).await != Some(Output::Ok)
        || op(new, added, Input::Register { value: 2 }).await != Some(Output::Ok)
    {
        bail!("the new leader {new} did not accept the probe's writes");
    }
    // Without a deposed leader that still believes it leads, the probe would test nothing.
    if sys.cluster.status(old).await.map(|s| s.role) != Some("Leader".into()) {
        bail!("node {old} stopped believing it leads before the probe could ask it");
    }
    op(old, removed, Input::Register { value: 3 }).await;
    op(old, added, Input::Remove).await;
    op(old, added, Input::Get).await;
    sys.net().heal()?;
    for key in [removed, added] {
        for _ in 0..40 {
            if op(new, key, Input::Get).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let history = std::mem::take(&mut *recorder.operations.lock().unwrap());
    report.operations = history.len();
    report.add_verdicts(checker::check(&history, CHECK_BUDGET_PER_KEY));
    if !report.violations.is_empty() {
        for o in &history {
            eprintln!("{o:?}");
        }
    }
    Ok(report)
}

/// The node among `candidates` that says it leads, waiting up to 20 s.
async fn leader_among(sys: &System, candidates: &[u64]) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for id in candidates {
            if let Some(s) = sys.cluster.status(*id).await
                && s.role == "Leader"
            {
                return Ok(*id);
            }
        }
        if Instant::now() > deadline {
            bail!("none of nodes {candidates:?} became leader within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// libfaketime for multi-threaded programs, as Debian's `faketime` installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// How long a node whose clock jumped may still lead: a second to judge its clock, then the
/// others' election timeout once it stops sending heartbeats.
const SKEWED_LEADER_BOUND: Duration = Duration::from_secs(5);

/// The clock-skew fault: `node`'s clock (its libfaketime offset file) moved a day ahead for
/// `hold` (at least [`SKEWED_LEADER_BOUND`] and 2 s), then back. A violation: the node leads
/// after [`SKEWED_LEADER_BOUND`].
async fn skew_clock(
    sys: &mut System,
    node: u64,
    hold: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let file = sys.base().join(format!("faketime-{node}"));
    std::fs::write(&file, "+1d\n")?;
    let jumped = Instant::now();
    while jumped.elapsed() < hold.max(SKEWED_LEADER_BOUND + Duration::from_secs(2)) {
        if jumped.elapsed() > SKEWED_LEADER_BOUND
            && let Some(s) = sys.cluster.status(node).await
            && s.role == "Leader"
        {
            report.violations.push(format!(
                "node {node} leads {:?} after its clock jumped a day ahead",
                jumped.elapsed()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&file, "+0\n")?;
    Ok(())
}

/// Injects the plan's fault, holds it for its duration, and heals it.
async fn inject(sys: &mut System, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let hold = plan.fault_for;
    match &plan.fault {
        Fault::Kill(target) => {
            let nodes = sys.resolve(*target).await?;
            for n in &nodes {
                sys.cluster.node(*n).kill();
            }
            tokio::time::sleep(hold).await;
            for n in &nodes {
                sys.cluster.node(*n).restart();
            }
        }
        Fault::Pause(target) => {
            let nodes = sys.resolve(*target).await?;
            for n in &nodes {
                sys.cluster.node(*n).signal(Signal::SIGSTOP);
            }
            tokio::time::sleep(hold).await;
            for n in &nodes {
                sys.cluster.node(*n).signal(Signal::SIGCONT);
            }
        }
        Fault::Partition(target) => {
            for n in sys.resolve(*target).await? {
                sys.net().isolate(n)?;
            }
            tokio::time::sleep(hold).await;
            sys.net().heal()?;
        }
        Fault::Cut(target) => {
            sys.net().cut(&sys.resolve(*target).await?)?;
            tokio::time::sleep(hold).await;
            sys.net().heal()?;
        }
        Fault::MinoritySplit => {
            // The leader and enough others for a minority: alone of 3, with one other of 5.
            let leader = sys.leader().await?;
            let size = (sys.cluster.nodes.len() - 1) / 2;
            let mut minority = vec![leader];
            minority.extend(sys.cluster.others(leader).into_iter().take(size - 1));
            sys.net().split(&minority)?;
            tokio::time::sleep(hold).await;
            sys.net().heal()?;
        }
        Fault::Flapping => {
            let mut rng = fastrand::Rng::with_seed(plan.seed ^ 0xf1a9);
            let node = rng.u64(1..=sys.cluster.nodes.len() as u64);
            let end = Instant::now() + hold;
            let mut down = false;
            while Instant::now() < end {
                if down {
                    sys.net().heal()?;
                } else {
                    sys.net().isolate(node)?;
                }
                down = !down;
                tokio::time::sleep(Duration::from_millis(rng.u64(200..800))).await;
            }
            sys.net().heal()?;
        }
        Fault::SlowDisk { target, delay_ms } => {
            let nodes = sys.resolve(*target).await?;
            for n in &nodes {
                sys.disk(*n)
                    .faults
                    .fsync_delay_ms
                    .store(*delay_ms, Ordering::SeqCst);
            }
            tokio::time::sleep(hold).await;
            for n in &nodes {
                sys.disk(*n)
                    .faults
                    .fsync_delay_ms
                    .store(0, Ordering::SeqCst);
            }
        }
        Fault::FsyncEio(target) => {
            let nodes = sys.resolve(*target).await?;
            for n in &nodes {
                sys.disk(*n).faults.fsync_eio.store(true, Ordering::SeqCst);
            }
            let deadline = Instant::now() + FAIL_STOP_BOUND;
            for n in &nodes {
                let status = loop {
                    if let Some(status) = sys.cluster.node(*n).exit_status() {
                        break Some(status);
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                match status {
                    Some(s) if s.code() == Some(EXIT_STORAGE) => {}
                    Some(s) => report.violations.push(format!(
                        "node {n} exited with {s} after fsync EIO, not {EXIT_STORAGE}"
                    )),
                    None => report.violations.push(format!(
                        "node {n} still running {FAIL_STOP_BOUND:?} after its fsync failed with EIO"
                    )),
                }
                sys.cluster.node(*n).kill();
            }
            tokio::time::sleep(hold).await;
            for n in &nodes {
                sys.disk(*n).faults.fsync_eio.store(false, Ordering::SeqCst);
                sys.cluster.node(*n).restart();
            }
        }
        Fault::LoseUnsynced(target) => {
            let nodes = sys.resolve(*target).await?;
            for n in &nodes {
                sys.cluster.node(*n).kill();
                let lost = sys.disk(*n).lose_unsynced()?;
                tracing::info!(node = n, lost_writes = lost, "unsynced writes dropped");
            }
            tokio::time::sleep(hold).await;
            for n in &nodes {
                sys.cluster.node(*n).restart();
            }
        }
        Fault::DiskLoss(target) => {
            let lost = sys.resolve(*target).await?[0];
            sys.cluster.node(lost).kill();
            sys.cluster.node(lost).wipe_data_dir();
            tokio::time::sleep(hold).await;
            // README, "recovering a node": remove it through a healthy member, then --join.
            let healthy = sys.cluster.others(lost)[0];
            remove_member(sys, healthy, lost).await?;
            let member = sys.cluster.address(healthy);
            sys.cluster
                .node(lost)
                .restart_with_args(&["--join", &member], &[]);
            wait_voter(sys, lost, true).await?;
        }
        Fault::ClockSkew(target) => {
            let node = sys.resolve(*target).await?[0];
            skew_clock(sys, node, hold, report).await?;
        }
        Fault::MembershipChange => {
            let added = sys.cluster.nodes.len() as u64 + 1;
            let spec = match &sys.net {
                Some(net) => NodeSpec {
                    address: format!("{}:7400", net.address_of(added)),
                    data_dir: sys.base().join(format!("node-{added}")),
                    wrapper: ["ip", "netns", "exec", &net.namespace(added)]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                },
                None => NodeSpec {
                    address: format!("127.0.0.1:{}", fleet_testkit::free_port()),
                    data_dir: sys.base().join(format!("node-{added}")),
                    wrapper: Vec::new(),
                },
            };
            let leader = sys.leader().await?;
            let member = sys.cluster.address(leader);
            sys.cluster
                .spawn_node_with(added, spec, &["--join", &member], &[]);
            wait_voter(sys, added, true).await?;
            tokio::time::sleep(hold).await;
            let leader = sys.leader().await?;
            let removed = sys
                .cluster
                .others(leader)
                .into_iter()
                .find(|n| *n != added)
                .expect("an original follower");
            remove_member(sys, leader, removed).await?;
            wait_voter(sys, removed, false).await?;
            sys.cluster.node(removed).kill();
        }
        Fault::StaleReadBug => {
            let follower = sys.resolve(Target::Follower).await?[0];
            let address = sys.cluster.address(follower);
            set_failpoint(&address, "log-flush", "sleep(300)")
                .await
                .map_err(|s| anyhow!("set log-flush: {s}"))?;
            set_failpoint(&address, "stale-linearizable-read", "return")
                .await
                .map_err(|s| anyhow!("set stale-linearizable-read: {s}"))?;
            // Reads go to the lagging follower too, from every client.
            tokio::time::sleep(hold).await;
            for name in ["log-flush", "stale-linearizable-read"] {
                set_failpoint(&address, name, "off")
                    .await
                    .map_err(|s| anyhow!("clear {name}: {s}"))?;
            }
        }
    }
    Ok(())
}

/// Removes node `id` through node `through` (forwarded to the leader), retrying for up to
/// [`MEMBERSHIP_BOUND`] while there is no leader or another change runs.
async fn remove_member(sys: &System, through: u64, id: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + MEMBERSHIP_BOUND;
    loop {
        let answer = match fleet_testkit::connect(&sys.cluster.address(through)).await {
            Some(mut c) => c
                .remove_coordinator(RemoveCoordinatorRequest { id, force: false })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            None => Err("cannot connect".to_string()),
        };
        match answer {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "node {id} not removed through node {through} within {MEMBERSHIP_BOUND:?}: {e}"
                )
            }
            Err(e) => {
                tracing::info!(id, through, error = %e, "remove not done yet, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Waits up to [`MEMBERSHIP_BOUND`] until the leader counts node `id` as a voter (`voter`) or
/// not a member at all (`!voter`).
async fn wait_voter(sys: &System, id: u64, voter: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + MEMBERSHIP_BOUND;
    loop {
        if let Ok(leader) = sys.leader().await
            && let Some(status) = sys.cluster.status(leader).await
        {
            let member = status.members.iter().find(|m| m.id == id);
            if (voter && member.is_some_and(|m| m.voter)) || (!voter && member.is_none()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "node {id} did not become {} within {MEMBERSHIP_BOUND:?}",
                if voter { "a voter" } else { "a non-member" }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The time from now until a write is accepted (registering a fresh probe cluster).
async fn recovery(nodes: &Nodes, recorder: &Recorder, started: Instant) -> Option<Duration> {
    let begin = Instant::now();
    let mut i = 0;
    while begin.elapsed() < RECOVERY_BOUND {
        i += 1;
        let out = workload::run_operation(
            nodes,
            recorder,
            started,
            0,
            i % nodes.len(),
            &format!("recovery-{i}"),
            Input::Register { value: i as u64 },
        )
        .await;
        if out == Some(Output::Ok) {
            return Some(begin.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A linearizable read of every key at the end, recorded with the history, so that a lost
/// write shows as a violation too.
async fn final_reads(nodes: &Nodes, recorder: &Recorder, started: Instant) {
    let keys = (0..workload::CLUSTER_KEYS)
        .map(|i| (workload::cluster_key(i), Input::Get))
        .chain((0..workload::WORKLOAD_KEYS).map(|i| (workload::workload_key(i), Input::Latest)));
    for (key, input) in keys {
        for attempt in 0..40 {
            if workload::run_operation(
                nodes,
                recorder,
                started,
                0,
                attempt % nodes.len(),
                &key,
                input.clone(),
            )
            .await
            .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Every audit event, its chain verified here; returns the reasons recorded.
async fn audit(nodes: &Nodes) -> anyhow::Result<HashSet<String>> {
    let mut chain = Vec::new();
    let mut after = 0;
    let mut attempts = 0;
    loop {
        let mut c = nodes.client(attempts % nodes.len());
        let page = match c
            .list_audit_events(ListAuditEventsRequest {
                after_sequence: after,
                max_events: 0,
                kind: String::new(),
                consistency: ReadConsistency::Linearizable as i32,
                before_sequence: 0,
                newest: false,
            })
            .await
        {
            Ok(p) => p.into_inner(),
            Err(e) if attempts < 20 => {
                attempts += 1;
                tracing::debug!(%e, "audit page failed, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => bail!("read the audit log: {e}"),
        };
        let Some(last) = page.events.last() else {
            break;
        };
        after = last.sequence;
        for e in &page.events {
            chain.push(fleet_api::convert::audit_event_from_wire(e).map_err(|e| anyhow!(e))?);
        }
    }
    fleet_core::audit::verify_chain(&chain).map_err(|e| anyhow!("the audit chain: {e}"))?;
    // Committed time never goes backwards, and never runs ahead of this machine's clock (the
    // nodes share it; a node under libfaketime must not have stamped its own).
    let limit = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 1_000;
    if let Some(w) = chain.windows(2).find(|w| w[1].time_ms < w[0].time_ms) {
        bail!(
            "committed time went backwards: event {} at {} ms, event {} at {} ms",
            w[0].sequence,
            w[0].time_ms,
            w[1].sequence,
            w[1].time_ms
        );
    }
    if let Some(e) = chain.iter().find(|e| e.time_ms > limit) {
        bail!(
            "event {} carries a time {} ms ahead of the real time",
            e.sequence,
            e.time_ms - limit + 1_000
        );
    }
    Ok(chain.into_iter().map(|e| e.reason).collect())
}

/// Acknowledged writes with no audit event: they were lost.
fn lost_acks(history: &[Operation], reasons: &HashSet<String>) -> Vec<String> {
    history
        .iter()
        .filter(|o| {
            o.output == Output::Ok
                && matches!(
                    o.input,
                    Input::Register { .. } | Input::Remove | Input::Publish { .. }
                )
        })
        .filter(|o| !reasons.contains(&format!("op-{}", o.id)))
        .map(|o| {
            format!(
                "op-{} {:?} on {} was acknowledged but is not in the log",
                o.id, o.input, o.key
            )
        })
        .collect()
}

/// Waits until every agent reports the desired revision of its cluster as applied.
async fn converged(sys: &System) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONVERGENCE_BOUND;
    let mut pending: BTreeSet<&str> = AGENT_CLUSTERS.into_iter().collect();
    let mut i = 0;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!("agents {pending:?} did not converge within {CONVERGENCE_BOUND:?}");
        }
        for cluster in pending.clone() {
            i += 1;
            let mut c = sys.nodes.client(i % sys.nodes.len());
            let Ok(r) = c
                .get_cluster(GetClusterRequest {
                    name: cluster.into(),
                    consistency: ReadConsistency::Linearizable as i32,
                })
                .await
            else {
                continue;
            };
            let r = r.into_inner();
            let desired = r
                .assignments
                .iter()
                .find(|a| a.workload == AGENT_WORKLOAD)
                .map(|a| a.revision.clone());
            let applied = r
                .reports
                .iter()
                .filter_map(|s| s.report.as_ref())
                .find(|s| s.workload == AGENT_WORKLOAD)
                .map(|s| s.applied_revision.clone());
            if desired.is_some() && desired == applied {
                pending.remove(cluster);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
