//! `chaos-tests`: the fault-injection suite against real fleet processes.

use std::time::Duration;

use anyhow::bail;
use chaos_tests::scenario::{self, Fault, Plan};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Fault injection against real fleet coordinator processes, histories checked for linearizability",
    long_about = "Starts real `fleet-node` processes (built next to this binary), injects one fault per run and checks the recorded history. As root each node gets its own network namespace and a FUSE data dir; without root the partition and disk faults are skipped. Every run prints its seed; `run --seed S` replays it."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The bounded suite (about 3 minutes): leader kill, follower pause, leader partition,
    /// slow leader disk, fsync EIO on the leader.
    Smoke {
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// One fault per run, random unless --fault, until the duration has passed (e.g.
    /// `--duration 30m`) or --runs runs are done. `run --seed S --fault NAME --runs 1`
    /// replays a run printed with that seed and fault.
    Run {
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        duration: Duration,
        #[arg(long)]
        runs: Option<u64>,
        /// e.g. leader-kill, follower-pause, leader-partition, minority-split, flapping-link,
        /// slow-leader-disk-200ms, leader-fsync-eio, follower-lose-unsynced.
        #[arg(long)]
        fault: Option<String>,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Runs with a deliberate bug (a lagging follower serving linearizable reads from its
    /// own state); exits 0 only if the checker reports a violation.
    SelfTest {
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn seed_or_new(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // fuser logs a failed reply whenever a killed node's request goes away mid-flight, which
    // the kill faults do on purpose; RUST_LOG=fuser=error shows them.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,fuser=off,chaos_tests=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let base = std::env::temp_dir();
    let (totals, seed) = match cli.command {
        Cmd::Smoke { seed, nodes } => {
            let seed = seed_or_new(seed);
            println!("chaos smoke: seed={seed} nodes={nodes}");
            (chaos_tests::smoke(seed, nodes, &base).await?, seed)
        }
        Cmd::Run {
            seed,
            duration,
            runs,
            fault,
            nodes,
        } => {
            let fault = fault.as_deref().map(Fault::parse).transpose()?;
            let seed = seed_or_new(seed);
            println!(
                "chaos run: seed={seed} nodes={nodes} duration={}",
                humantime::format_duration(duration)
            );
            (
                chaos_tests::long_run(seed, nodes, duration, runs, fault.as_ref(), &base).await?,
                seed,
            )
        }
        Cmd::SelfTest { seed } => {
            let seed = seed_or_new(seed);
            println!("chaos self-test: seed={seed}");
            let report =
                scenario::run(&Plan::for_fault(seed, 3, Fault::StaleReadBug), &base).await?;
            chaos_tests::print_report(&report);
            let mut totals = chaos_tests::Totals::default();
            totals.add(&report);
            println!("{}", totals.line(seed));
            if report.violations.is_empty() {
                bail!("the checker missed the stale reads");
            }
            println!("the checker caught the deliberate bug");
            return Ok(());
        }
    };
    if totals.skipped > 0 {
        println!("{} runs skipped (they need root)", totals.skipped);
    }
    println!("{}", totals.line(seed));
    if totals.violations > 0 || totals.lost_acks > 0 {
        std::process::exit(1);
    }
    Ok(())
}
