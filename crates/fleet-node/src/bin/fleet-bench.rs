//! `fleet-bench writes`: write throughput and latency of a local coordinator cluster of real
//! processes. Each client registers clusters (one Raft write each) in a closed loop on its own
//! connection; clients are spread over all nodes (`--via all`, so most writes are forwarded)
//! or all talk to the leader (`--via leader`).
//!
//! Run it from a release build: `cargo run --release -p fleet-node --bin fleet-bench -- writes`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fleet_node::proto::{AddSiteRequest, RegisterClusterRequest};
use fleet_node::testing::{ProcessCluster, connect};
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
        /// Measured seconds per round (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Coordinator nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Which nodes the clients talk to.
        #[arg(long, value_enum, default_value_t = Via::All)]
        via: Via,
        /// Print one JSON object per round instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Via {
    All,
    Leader,
}

struct Round {
    clients: usize,
    writes: u64,
    errors: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            BenchCommand::Writes {
                clients,
                duration_s,
                nodes,
                via,
                json,
            } => writes(clients, Duration::from_secs(duration_s), nodes, via, json).await,
        }
    })
}

async fn writes(
    rounds: Vec<usize>,
    duration: Duration,
    nodes: usize,
    via: Via,
    json: bool,
) -> anyhow::Result<()> {
    let cluster = ProcessCluster::start(nodes, &[]).await;
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
    eprintln!(
        "fleet-bench writes: {nodes} coordinator processes in {}, leader {leader}, clients via {}",
        cluster.dir().display(),
        if via == Via::All {
            "all nodes"
        } else {
            "the leader"
        }
    );
    if !json {
        println!(
            "{:>7}  {:>8}  {:>6}  {:>9}  {:>8}  {:>8}  {:>8}  {:>6}",
            "clients", "writes", "secs", "writes/s", "p50_ms", "p99_ms", "max_ms", "errors"
        );
    }
    for (round_no, clients) in rounds.into_iter().enumerate() {
        let round = run_round(round_no, clients, duration, &targets).await?;
        let ms = |q: f64| round.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let rate = round.writes as f64 / round.seconds;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "clients": round.clients, "writes": round.writes, "errors": round.errors,
                    "seconds": round.seconds, "writes_per_s": rate,
                    "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": round.latency_us.max() as f64 / 1000.0,
                })
            );
        } else {
            println!(
                "{:>7}  {:>8}  {:>6.1}  {:>9.0}  {:>8.2}  {:>8.2}  {:>8.2}  {:>6}",
                round.clients,
                round.writes,
                round.seconds,
                rate,
                ms(0.5),
                ms(0.99),
                round.latency_us.max() as f64 / 1000.0,
                round.errors
            );
        }
        if round.errors > 0 {
            bail!(
                "{} writes failed in the round with {clients} clients",
                round.errors
            );
        }
    }
    Ok(())
}

async fn run_round(
    round_no: usize,
    clients: usize,
    duration: Duration,
    targets: &[String],
) -> anyhow::Result<Round> {
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for client_no in 0..clients {
        let address = targets[client_no % targets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&address).await.context("connect")?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut writes, mut errors, mut i) = (0u64, 0u64, 0u64);
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                let request = RegisterClusterRequest {
                    name: format!("b{round_no}-c{client_no}-{i}"),
                    site: "bench".into(),
                    environment: "staging".into(),
                    labels: Default::default(),
                    reason: String::new(),
                };
                i += 1;
                let sent = Instant::now();
                let result = client.register_cluster(request).await;
                if sent < measure_from {
                    continue;
                }
                match result {
                    Ok(_) => {
                        writes += 1;
                        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
                    }
                    Err(status) => {
                        errors += 1;
                        eprintln!("write failed: {status}");
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
