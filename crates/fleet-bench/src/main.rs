//! Benchmarks of local coordinator clusters of real processes. Every write is one small Raft
//! write (a cluster registration); each client writes in a closed loop on its own connection.
//!
//! - `writes`: throughput and latency for a list of client counts.
//! - `probe-overhead`: rounds of registrations and removals with the continuous disk probe off
//!   and on, alternated on one cluster, and the throughput it costs.
//! - `etcd`: the same workload against a 3-member etcd 3.4 (Debian's `etcd-server`, started
//!   here on loopback with its data on the same filesystem) in the same run, with ratios.
//!
//! - `fanout`: thousands of simulated agents streaming their assignments (`WatchAssignments`)
//!   from one coordinator, or from the followers of a 3-node cluster: the time from a release's
//!   publication to the last agent receiving it, and coordinator memory per connected agent.
//!
//! Run from a release build in its own target dir (its `fleet-node` has failpoints):
//! `cargo build --release -p fleet-node -p fleet-bench --target-dir target/bench`, then
//! `target/bench/release/fleet-bench writes`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleet_api::proto::{AddSiteRequest, RegisterClusterRequest, RemoveClusterRequest};
use fleet_testkit::set_failpoint;
use fleet_testkit::{ProcessCluster, connect, free_port};
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(
    name = "fleet-bench",
    about = "Benchmarks of a local fleet coordinator cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Closed-loop cluster registrations against a local coordinator cluster.
    Writes {
        /// Concurrent clients per round, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        #[command(flatten)]
        common: Common,
        /// Which nodes the clients talk to.
        #[arg(long, value_enum, default_value_t = Via::All)]
        via: Via,
        /// Write to a running cluster at these HOST:PORTs (comma-separated, clients spread over
        /// them) instead of starting one; it needs a site `bench`.
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        /// Print one JSON object per round instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write throughput with the continuous disk probe off and on (default probe settings
    /// unless --node-arg says otherwise), in alternating rounds on one cluster.
    ProbeOverhead {
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Off/on pairs of rounds.
        #[arg(long, default_value_t = 3)]
        pairs: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Simulated agents streaming assignments; time for a release to reach all of them.
    Fanout {
        /// Simulated agents per round, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        agents: Vec<usize>,
        /// Coordinator nodes; with more than one, agents stream from the followers only.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Releases published per round (each one measured).
        #[arg(long, default_value_t = 3)]
        releases: usize,
    },
    /// The same small writes against this fleet cluster and a 3-member etcd 3.4 (the `etcd`
    /// binary of Debian's etcd-server), in the same run.
    Etcd {
        /// Concurrent clients per round, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
        clients: Vec<usize>,
        #[command(flatten)]
        common: Common,
        /// The etcd binary.
        #[arg(long, default_value = "etcd")]
        etcd: PathBuf,
    },
}

#[derive(Args)]
struct Common {
    /// Measured seconds per round (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Coordinator nodes (etcd members in `etcd`).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// An extra argument for every `fleet-node coordinator`; repeat for more.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Via {
    All,
    Leader,
}

/// What each client writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// A new cluster (for etcd: a new key) per write.
    Register,
    /// Register a cluster, then remove it: the state stays small however long the run.
    Churn,
}

/// The system under test of one round.
#[derive(Clone)]
enum Target {
    Fleet(Vec<String>),
    Etcd(Vec<String>),
}

struct Round {
    clients: usize,
    writes: u64,
    errors: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Bytes of each etcd value: about the size of a registration request.
const ETCD_VALUE_BYTES: usize = 128;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            BenchCommand::Writes {
                clients,
                common,
                via,
                endpoints,
                json,
            } => writes(clients, &common, via, endpoints, json).await,
            BenchCommand::ProbeOverhead {
                clients,
                pairs,
                common,
            } => probe_overhead(clients, pairs, &common).await,
            BenchCommand::Etcd {
                clients,
                common,
                etcd,
            } => against_etcd(clients, &common, &etcd).await,
            BenchCommand::Fanout {
                agents,
                nodes,
                releases,
            } => fanout(agents, nodes, releases).await,
        }
    })
}

/// Starts a fleet cluster with a site to register into; returns it and its client targets.
async fn start_fleet(
    nodes: usize,
    node_args: &[String],
    via: Via,
) -> anyhow::Result<(ProcessCluster, Vec<String>)> {
    let args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let cluster = ProcessCluster::start(nodes, &args).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let targets: Vec<String> = match via {
        Via::All => cluster.nodes.iter().map(|n| n.address.clone()).collect(),
        Via::Leader => vec![cluster.address(leader)],
    };
    let mut setup = connect(&targets[0]).await.context("connect")?;
    setup
        .add_site(AddSiteRequest {
            name: "bench".into(),
            reason: String::new(),
        })
        .await?;
    Ok((cluster, targets))
}

async fn writes(
    rounds: Vec<usize>,
    common: &Common,
    via: Via,
    endpoints: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let (_cluster, targets) = if endpoints.is_empty() {
        let (cluster, targets) = start_fleet(common.nodes, &common.node_args, via).await?;
        eprintln!(
            "fleet-bench writes: {} coordinator processes in {}, clients via {}",
            common.nodes,
            cluster.dir().display(),
            if via == Via::All {
                "all nodes"
            } else {
                "the leader"
            }
        );
        (Some(cluster), targets)
    } else {
        eprintln!("fleet-bench writes: clients via {}", endpoints.join(","));
        (None, endpoints)
    };
    if !json {
        println!(
            "{:>7}  {:>8}  {:>6}  {:>9}  {:>8}  {:>8}  {:>8}  {:>6}",
            "clients", "writes", "secs", "writes/s", "p50_ms", "p99_ms", "max_ms", "errors"
        );
    }
    let duration = Duration::from_secs(common.duration_s);
    let target = Target::Fleet(targets);
    for (round_no, clients) in rounds.into_iter().enumerate() {
        let round = run_workload(round_no, clients, duration, &target, Workload::Register).await?;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "clients": round.clients, "writes": round.writes, "errors": round.errors,
                    "seconds": round.seconds, "writes_per_s": round.rate(),
                    "p50_ms": round.ms(0.5), "p99_ms": round.ms(0.99),
                    "max_ms": round.latency_us.max() as f64 / 1000.0,
                })
            );
        } else {
            println!(
                "{:>7}  {:>8}  {:>6.1}  {:>9.0}  {:>8.2}  {:>8.2}  {:>8.2}  {:>6}",
                round.clients,
                round.writes,
                round.seconds,
                round.rate(),
                round.ms(0.5),
                round.ms(0.99),
                round.latency_us.max() as f64 / 1000.0,
                round.errors
            );
        }
        fail_on_errors(&round)?;
    }
    Ok(())
}

async fn probe_overhead(clients: usize, pairs: usize, common: &Common) -> anyhow::Result<()> {
    let duration = Duration::from_secs(common.duration_s);
    let mut args = common.node_args.clone();
    args.push("--allow-failpoint-rpc".into());
    let (cluster, targets) = start_fleet(common.nodes, &args, Via::All).await?;
    let addresses: Vec<String> = cluster.nodes.iter().map(|n| n.address.clone()).collect();
    eprintln!(
        "fleet-bench probe-overhead: one cluster of {} nodes in {}, {pairs} off/on pairs of {}s \
         rounds, {clients} clients registering and removing clusters; probe on = {}",
        common.nodes,
        cluster.dir().display(),
        common.duration_s,
        if common.node_args.is_empty() {
            "default settings".to_string()
        } else {
            common.node_args.join(" ")
        }
    );
    println!(
        "{:>4}  {:>12}  {:>11}  {:>10}",
        "pair", "off_writes/s", "on_writes/s", "overhead_%"
    );
    let target = Target::Fleet(targets);
    let mut overheads = Vec::new();
    let (mut total_off, mut total_on) = (0.0, 0.0);
    let mut round_no = 0;
    for pair in 0..pairs {
        // Alternate which goes first, so a drift of the machine does not favour one side.
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let (mut off, mut on) = (0.0, 0.0);
        for probe_on in order {
            // The probe is switched with the `disk-probe-burst` failpoint on every node.
            let action = if probe_on { "off" } else { "return" };
            for address in &addresses {
                set_failpoint(address, "disk-probe-burst", action)
                    .await
                    .context("switch the probe")?;
            }
            let round = run_workload(round_no, clients, duration, &target, Workload::Churn).await?;
            round_no += 1;
            fail_on_errors(&round)?;
            if probe_on {
                on = round.rate();
            } else {
                off = round.rate();
            }
        }
        total_off += off;
        total_on += on;
        let overhead = (off - on) / off * 100.0;
        overheads.push(overhead);
        println!("{pair:>4}  {off:>12.0}  {on:>11.0}  {overhead:>10.2}");
    }
    let (mean, half_width) = mean_and_ci95(&overheads);
    println!(
        "all pairs together: {total_off:.0} writes with the probe off, {total_on:.0} with it on: \
         {:.2}% fewer",
        (total_off - total_on) / total_off * 100.0
    );
    overheads.sort_by(f64::total_cmp);
    println!(
        "probe overhead over {pairs} pairs: mean {mean:.2}% of write throughput, 95% confidence \
         interval {:.2}%..{:.2}%, median {:.2}% (negative: on was faster)",
        mean - half_width,
        mean + half_width,
        overheads[overheads.len() / 2]
    );
    Ok(())
}

/// The mean of `samples` and the half-width of its 95% confidence interval (Student's t), so
/// that a noisy machine shows as a wide interval instead of a misleading single figure.
fn mean_and_ci95(samples: &[f64]) -> (f64, f64) {
    let n = samples.len();
    let mean = samples.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::INFINITY);
    }
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom; 1.96 beyond.
    const T975: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let t = T975.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * (variance / n as f64).sqrt())
}

async fn against_etcd(rounds: Vec<usize>, common: &Common, etcd: &Path) -> anyhow::Result<()> {
    let duration = Duration::from_secs(common.duration_s);
    let work = tempfile::Builder::new()
        .prefix("fleet-vs-etcd-")
        .tempdir()?;
    eprintln!(
        "fleet-bench etcd: {} fleet coordinators and {} etcd members per round, fresh for each \
         round, data under {}",
        common.nodes,
        common.nodes,
        work.path().display()
    );
    println!(
        "{:>7}  {:>13}  {:>9}  {:>9}  {:>12}  {:>9}  {:>9}  {:>11}  {:>9}",
        "clients",
        "fleet_wr/s",
        "fleet_p50",
        "fleet_p99",
        "etcd_wr/s",
        "etcd_p50",
        "etcd_p99",
        "wr/s_ratio",
        "p99_ratio"
    );
    for (round_no, clients) in rounds.into_iter().enumerate() {
        let fleet = {
            let (_cluster, targets) =
                start_fleet(common.nodes, &common.node_args, Via::All).await?;
            run_workload(
                round_no,
                clients,
                duration,
                &Target::Fleet(targets),
                Workload::Register,
            )
            .await?
        };
        let etcd_round = {
            let dir = work.path().join(format!("etcd-round-{round_no}"));
            let cluster = EtcdCluster::start(etcd, &dir, common.nodes)?;
            cluster.wait_ready().await?;
            run_workload(
                round_no,
                clients,
                duration,
                &Target::Etcd(cluster.endpoints()),
                Workload::Register,
            )
            .await?
        };
        println!(
            "{:>7}  {:>13.0}  {:>9.2}  {:>9.2}  {:>12.0}  {:>9.2}  {:>9.2}  {:>11.2}  {:>9.2}",
            clients,
            fleet.rate(),
            fleet.ms(0.5),
            fleet.ms(0.99),
            etcd_round.rate(),
            etcd_round.ms(0.5),
            etcd_round.ms(0.99),
            fleet.rate() / etcd_round.rate(),
            fleet.ms(0.99) / etcd_round.ms(0.99),
        );
        fail_on_errors(&fleet)?;
        fail_on_errors(&etcd_round)?;
    }
    println!(
        "latencies in ms; wr/s_ratio = fleet/etcd (above 1: fleet is faster); \
         p99_ratio = fleet/etcd (below 1: fleet is faster)"
    );
    Ok(())
}

fn fail_on_errors(round: &Round) -> anyhow::Result<()> {
    if round.errors > 0 {
        bail!(
            "{} writes failed in the round with {} clients",
            round.errors,
            round.clients
        );
    }
    Ok(())
}

/// One connection of one client.
enum Connection {
    Fleet(fleet_api::proto::fleet_service_client::FleetServiceClient<tonic::transport::Channel>),
    Etcd(Box<etcd_client::KvClient>),
}

impl Connection {
    async fn open(target: &Target, client_no: usize) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Fleet(addresses) => {
                let address = &addresses[client_no % addresses.len()];
                Connection::Fleet(connect(address).await.context("connect to fleet")?)
            }
            Target::Etcd(endpoints) => {
                let endpoint = endpoints[client_no % endpoints.len()].clone();
                let client = etcd_client::Client::connect([endpoint], None)
                    .await
                    .context("connect to etcd")?;
                Connection::Etcd(Box::new(client.kv_client()))
            }
        })
    }

    /// One small write: a cluster registration, or an etcd put of a value of the same size.
    async fn write(&mut self, name: String) -> Result<(), String> {
        match self {
            Connection::Fleet(client) => client
                .register_cluster(RegisterClusterRequest {
                    name,
                    site: "bench".into(),
                    environment: "staging".into(),
                    labels: Default::default(),
                    reason: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Connection::Etcd(kv) => kv
                .put(name, vec![b'x'; ETCD_VALUE_BYTES], None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Removes a registered cluster (fleet only).
    async fn remove(&mut self, name: String) -> Result<(), String> {
        match self {
            Connection::Fleet(client) => client
                .remove_cluster(RemoveClusterRequest {
                    name,
                    reason: String::new(),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
            Connection::Etcd(_) => Err("the churn workload is for fleet only".into()),
        }
    }
}

async fn run_workload(
    round_no: usize,
    clients: usize,
    duration: Duration,
    target: &Target,
    workload: Workload,
) -> anyhow::Result<Round> {
    // Names unique across runs, for runs against the same running cluster.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 100_000_000);
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(200 + clients as u64 * 2);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for client_no in 0..clients {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&target, client_no).await?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut writes, mut errors, mut i) = (0u64, 0u64, 0u64);
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                let sent = Instant::now();
                let result = if workload == Workload::Churn && i % 2 == 1 {
                    let name = format!("b{run_id}-{round_no}-c{client_no}-{}", i - 1);
                    connection.remove(name).await
                } else {
                    let name = format!("b{run_id}-{round_no}-c{client_no}-{i}");
                    connection.write(name).await
                };
                i += 1;
                if sent < measure_from {
                    // Not measured, but a failure here would break the churn's pairs.
                    if let Err(error) = result {
                        errors += 1;
                        eprintln!("write failed during warm-up: {error}");
                    }
                    continue;
                }
                match result {
                    Ok(()) => {
                        writes += 1;
                        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
                    }
                    Err(error) => {
                        errors += 1;
                        eprintln!("write failed: {error}");
                    }
                }
            }
            anyhow::Ok((writes, errors, histogram))
        }));
    }
    let mut round = Round {
        clients,
        writes: 0,
        errors: 0,
        seconds: 0.0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (writes, errors, histogram) = task.await??;
        round.writes += writes;
        round.errors += errors;
        round.latency_us.add(histogram)?;
    }
    round.seconds = (Instant::now() - measure_from).as_secs_f64();
    Ok(round)
}

/// Streams one HTTP/2 connection carries in the fan-out benchmark (hyper's server allows 200
/// concurrent streams per connection by default).
const STREAMS_PER_CONNECTION: usize = 100;

async fn fanout(rounds: Vec<usize>, nodes: usize, releases: usize) -> anyhow::Result<()> {
    use fleet_api::proto::agent_service_client::AgentServiceClient;
    use fleet_api::proto::{CreateWorkloadRequest, PublishReleaseRequest, WatchAssignmentsRequest};

    let (cluster, _) = start_fleet(nodes, &[], Via::All).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let serving: Vec<u64> = if nodes == 1 {
        vec![leader]
    } else {
        cluster.others(leader)
    };
    eprintln!(
        "fleet-bench fanout: {nodes} coordinator processes in {}, agents stream from node(s) {serving:?}",
        cluster.dir().display()
    );
    println!(
        "{:>6}  {:>5}  {:>8}  {:>8}  {:>8}  {:>8}  {:>14}",
        "agents", "nodes", "release", "p50_ms", "p99_ms", "max_ms", "rss_per_agent"
    );
    let mut client = connect(&cluster.address(leader)).await.context("connect")?;
    let mut registered = 0usize;
    for (round_no, agents) in rounds.into_iter().enumerate() {
        // Register clusters up to `agents`, 64 at a time.
        while registered < agents {
            let batch: Vec<_> = (registered..agents.min(registered + 64))
                .map(|i| {
                    let mut c = client.clone();
                    async move {
                        c.register_cluster(RegisterClusterRequest {
                            name: format!("agent-{i}"),
                            site: "bench".into(),
                            environment: "staging".into(),
                            labels: Default::default(),
                            reason: String::new(),
                        })
                        .await
                    }
                })
                .collect();
            for r in join_all(batch).await {
                r?;
            }
            registered = agents.min(registered + 64);
        }
        let workload = format!("fan{round_no}");
        client
            .create_workload(CreateWorkloadRequest {
                name: workload.clone(),
                repo_url: "https://git.example.no/fan.git".into(),
                path_template: "deploy/{environment}".into(),
                reason: String::new(),
            })
            .await?;
        let pids: Vec<u32> = serving
            .iter()
            .filter_map(|id| cluster.nodes.iter().find(|n| n.id == *id)?.pid())
            .collect();
        let rss_before: u64 = pids
            .iter()
            .map(|p| fleet_testkit::resident_bytes(*p))
            .sum::<std::io::Result<u64>>()?;
        // Open the streams: each agent waits for a version above the one it first sees.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, u64, Instant)>(agents);
        let mut channels = Vec::new();
        for c in 0..agents.div_ceil(STREAMS_PER_CONNECTION) {
            let node = serving[c % serving.len()];
            channels.push(fleet_testkit::channel(&cluster.address(node)).await?);
        }
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(agents);
        let mut tasks = Vec::new();
        for i in 0..agents {
            let channel = channels[i / STREAMS_PER_CONNECTION].clone();
            let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
            tasks.push(tokio::spawn(async move {
                let mut agent = AgentServiceClient::new(channel);
                let mut stream = agent
                    .watch_assignments(WatchAssignmentsRequest {
                        cluster: format!("agent-{i}"),
                        since_version: 0,
                    })
                    .await?
                    .into_inner();
                let mut seen: Option<u64> = None;
                while let Some(set) = stream.message().await? {
                    let Some(held) = seen else {
                        // The first set, sent at once: the agent is connected.
                        seen = Some(set.version);
                        let _ = ready_tx.send(()).await;
                        continue;
                    };
                    if set.version > held {
                        seen = Some(set.version);
                        if tx.send((i, set.version, Instant::now())).await.is_err() {
                            break;
                        }
                    }
                }
                anyhow::Ok(())
            }));
        }
        for _ in 0..agents {
            ready_rx
                .recv()
                .await
                .context("an agent stream failed before it was ready")?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after: u64 = pids
            .iter()
            .map(|p| fleet_testkit::resident_bytes(*p))
            .sum::<std::io::Result<u64>>()?;
        let per_agent = rss_after.saturating_sub(rss_before) as f64 / agents as f64;
        for release in 0..releases {
            let revision = format!("{:040x}", (round_no * 1000 + release + 1) as u128);
            let sent = Instant::now();
            client
                .publish_release(PublishReleaseRequest {
                    workload: workload.clone(),
                    revision,
                    reason: String::new(),
                    allow_rejected: false,
                    override_freeze: false,
                })
                .await?;
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            for _ in 0..agents {
                let (_, _, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await
                    .context("not every agent received the release within 60 s")?
                    .context("agent streams ended")?;
                latency_us.record((at - sent).as_micros().max(1) as u64)?;
            }
            println!(
                "{:>6}  {:>5}  {:>8}  {:>8.2}  {:>8.2}  {:>8.2}  {:>11.1} KiB",
                agents,
                nodes,
                release + 1,
                latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                latency_us.max() as f64 / 1000.0,
                per_agent / 1024.0,
            );
        }
        for task in tasks {
            task.abort();
        }
    }
    Ok(())
}

/// Runs `futures` as tasks and returns their outputs in order.
async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

/// A 3-member (or `size`-member) etcd cluster on loopback, stopped by pid when dropped.
struct EtcdCluster {
    members: Vec<Child>,
    client_urls: Vec<String>,
}

impl EtcdCluster {
    fn start(binary: &Path, dir: &Path, size: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let peers: Vec<(String, String, String)> = (0..size)
            .map(|i| {
                (
                    format!("e{i}"),
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial_cluster: Vec<String> = peers
            .iter()
            .map(|(name, peer, _)| format!("{name}={peer}"))
            .collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            client_urls: Vec::new(),
        };
        for (name, peer, client) in &peers {
            let log = File::create(dir.join(format!("{name}.log")))?;
            let child = Command::new(binary)
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.join(name))
                .args(["--listen-peer-urls", peer])
                .args(["--initial-advertise-peer-urls", peer])
                .args(["--listen-client-urls", client])
                .args(["--advertise-client-urls", client])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "fleet-bench"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!(
                        "start {} (install Debian's etcd-server, or pass --etcd PATH)",
                        binary.display()
                    )
                })?;
            cluster.members.push(child);
            cluster.client_urls.push(client.clone());
        }
        Ok(cluster)
    }

    fn endpoints(&self) -> Vec<String> {
        self.client_urls.clone()
    }

    /// Waits until a write through every member succeeds.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.client_urls {
            loop {
                let attempt = async {
                    let mut client = etcd_client::Client::connect([url.clone()], None).await?;
                    client.put("fleet-bench-ready", "1", None).await?;
                    Ok::<_, etcd_client::Error>(())
                };
                match attempt.await {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => {
                        bail!("etcd member {url} not ready after 30 s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mean_and_ci95;

    #[test]
    fn confidence_interval_uses_students_t_for_few_samples() {
        let (mean, half) = mean_and_ci95(&[1.0, 2.0, 3.0]);
        assert_eq!(mean, 2.0);
        // s = 1, n = 3, t(2) = 4.303.
        assert!((half - 4.303 / 3f64.sqrt()).abs() < 1e-9, "{half}");
        assert!(mean_and_ci95(&[5.0]).1.is_infinite());
    }
}
