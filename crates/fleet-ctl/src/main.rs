//! `fleet-ctl`: the operator's command line, a thin client of the fleet.v1 gRPC API.
//!
//! Data goes to stdout (`-o table` or `-o json`), messages to stderr. Exit codes:
//! 0 success, 1 other failure, 2 usage or invalid argument, 3 not found, 4 already exists or
//! failed precondition, 5 no coordinator reachable or no leader, 6 a write was sent but not
//! answered (it may or may not have been applied), 7 not authenticated or not allowed. Output
//! to a closed pipe ends the process quietly (SIGPIPE).

mod access;
mod client;
mod identity;
mod output;
mod promotion;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleet_api::proto::*;
use serde_json::json;

use crate::client::{Client, CtlError, Req};
use crate::output::{Table, format_time_ms};

#[derive(Parser)]
#[command(
    name = "fleet-ctl",
    version,
    about = "Operate a fleet: clusters, workloads, releases"
)]
struct Cli {
    #[command(flatten)]
    connection: identity::Connection,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    /// Why, recorded in the audit log with every change.
    #[arg(long, default_value = "", global = true)]
    reason: String,
    /// Read from the answering node's local state; may miss recent writes.
    #[arg(long, global = true)]
    stale: bool,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 15, global = true)]
    timeout_s: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// The built-in CA: make one, issue certificates from it. Talks to no coordinator.
    #[command(subcommand)]
    Pki(identity::PkiCmd),
    /// The contexts in the config file ($XDG_CONFIG_HOME/fleet/config.yaml). Talks to no
    /// coordinator.
    #[command(subcommand)]
    Config(identity::ConfigCmd),
    /// The coordinator nodes.
    #[command(subcommand)]
    Coordinator(CoordinatorCmd),
    /// Sites: physical locations.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Environments, in pipeline order.
    #[command(subcommand)]
    Environment(EnvironmentCmd),
    /// Clusters, one agent each.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Workloads: a repository and a path template.
    #[command(subcommand)]
    Workload(WorkloadCmd),
    /// Releases: a workload at a revision, published into the first environment.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// How a workload moves through the environments.
    #[command(subcommand)]
    Pipeline(promotion::PipelineCmd),
    /// Start a rollout of a verified revision into the next environment, in waves.
    Promote(promotion::PromoteArgs),
    /// What `promote` would do: the waves, each cluster's from → to, and what blocks it now.
    Plan(promotion::PlanArgs),
    /// Follow or steer a rollout.
    #[command(subcommand)]
    Rollout(promotion::RolloutCmd),
    /// Set every cluster of ENV to an earlier revision; the replaced one is rejected and never
    /// selected automatically again.
    Rollback(promotion::RollbackArgs),
    /// Approve the promotion waiting in ENV, as the operator your certificate names.
    Approve(promotion::Target),
    /// Freeze windows: no promotion into the environment starts or advances during one.
    #[command(subcommand)]
    Freeze(promotion::FreezeCmd),
    /// Roles: who may read, publish, operate, promote or administer, and where.
    #[command(subcommand)]
    Role(access::RoleCmd),
    /// Bearer tokens for CI, each with one role.
    #[command(subcommand)]
    Token(access::TokenCmd),
    /// What CLUSTER was assigned at a time (default now), and the changes that led there.
    History {
        cluster: String,
        /// An RFC 3339 time, e.g. 2026-11-22T12:00:00Z.
        #[arg(long, value_parser = parse_rfc3339_ms)]
        at: Option<u64>,
    },
    /// Per cluster: desired and applied revision, sync, health, drift and last seen.
    Status,
    /// The audit log: who changed what, when and why; the newest --limit matching events, in
    /// sequence order (page back with --before, forward with --after). `audit verify`
    /// recomputes the hash chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCmd>,
        /// Only events of this command kind, e.g. publish_release or
        /// record_leadership_handover.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(fleet_core::Command::KINDS))]
        kind: Option<String>,
        /// Only events whose command names this workload.
        #[arg(long)]
        workload: Option<String>,
        /// Only events whose command or summary names this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only events at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_rfc3339_ms)]
        since: Option<u64>,
        /// The oldest matching events after this sequence number (forward paging).
        #[arg(long, conflicts_with = "before")]
        after: Option<u64>,
        /// The newest matching events before this sequence number (backward paging).
        #[arg(long)]
        before: Option<u64>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Measure a directory's disk as etcd's fio check does: 2300-byte writes, each followed by
    /// fdatasync, over 22 MiB. Runs locally; talks to no coordinator.
    DiskBench {
        /// Directory to measure (use the coordinator's data dir filesystem).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Bytes to write: a number with an optional k, m, g (KiB, MiB, GiB) suffix.
        #[arg(long, default_value = "22MiB", value_parser = parse_size)]
        size: u64,
        /// Bytes per write.
        #[arg(long, default_value_t = fleet_disk::ETCD_BLOCK_SIZE)]
        block_size: usize,
    },
}

#[derive(Subcommand)]
enum CoordinatorCmd {
    /// Members, leader id, term and indexes, one row per member.
    Status,
    /// Each node's disk as it measures itself, with the verdict against etcd's 10 ms p99 rule.
    Disk,
    /// Add a node: it must answer at ADDRESS as node ID of this cluster (a node started with
    /// --join does this itself). It is a learner until it has caught up, then a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
        /// Seconds the learner may take to catch up; it stays a learner if it does not.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        catch_up_timeout_s: u64,
    },
    /// Remove a voter or learner, e.g. one that lost its disk (it may then come back with an
    /// empty data dir and --join). Refused when the voters left would not have a quorum of
    /// nodes that answer, unless --force.
    Remove {
        #[arg(long)]
        id: u64,
        /// Remove even without a reachable quorum left (writes stop until one answers).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum SiteCmd {
    Add { name: String },
    List,
}

#[derive(Subcommand)]
enum EnvironmentCmd {
    /// Append an environment at the end of the pipeline.
    Add {
        name: String,
    },
    List,
    /// Require N approvals from distinct operators (other than the promoter) before a
    /// promotion into ENV starts; 0 for none.
    Approvals {
        name: String,
        approvals: u32,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Register(RegisterArgs),
    List,
    Describe {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Revoke every certificate of NAME's agent issued until now (a lost or stolen one): every
    /// coordinator refuses them and ends their open streams. Issue the agent a new one.
    RevokeCert {
        name: String,
    },
    /// Print a one-time join token for NAME's agent (`fleet-node agent --join-token`): the
    /// agent makes its own key and a coordinator signs it. Shown only now; a new token
    /// replaces NAME's unused one.
    JoinToken {
        name: String,
        /// How long it is valid, at most 7 days.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Args)]
struct RegisterArgs {
    name: String,
    #[arg(long)]
    site: String,
    #[arg(long = "env")]
    environment: String,
    /// K=V; repeat for more labels.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum WorkloadCmd {
    Create {
        name: String,
        #[arg(long)]
        repo: String,
        /// Path inside the repository; `{environment}` is replaced per cluster.
        #[arg(long)]
        path: String,
    },
    List,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Fetch every event and recompute the hash chain here; exit 0 only when it verifies
    /// (and, with --head, when the log still holds that event with that hash).
    Verify {
        /// An audit head kept elsewhere (`fleet-ctl audit head`), as SEQ:HASH: the log must
        /// still hold event SEQ with exactly this hash. A log that was replaced or truncated
        /// since fails, even when its own chain verifies.
        #[arg(long, value_parser = parse_audit_head)]
        head: Option<(u64, String)>,
    },
    /// The newest event's sequence number and hash, as SEQ:HASH: keep it outside the
    /// coordinators (a ticket, a second system) and check it later with `audit verify --head`.
    Head,
}

/// `SEQ:HASH`: a sequence number (1 or more) and a 64-hex-digit SHA-256.
fn parse_audit_head(s: &str) -> Result<(u64, String), String> {
    let hint = "give SEQ:HASH as `fleet-ctl audit head` prints it, e.g. 42:9f86d08…(64 hex digits)";
    let (seq, hash) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} has no ':'; {hint}"))?;
    let seq: u64 = seq
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{seq:?} is not a sequence number (1 or more); {hint}"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{hash:?} is not 64 hex digits; {hint}"));
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

/// An RFC 3339 time (section 5.6: `2026-11-30T15:34:27+05:30`, `...Z`, `...-00:00`, with
/// fractions of a second) as milliseconds since the Unix epoch. A time without a zone offset
/// is refused: whose local time it meant cannot be known.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let at: jiff::Timestamp = s.parse().map_err(|e| {
        if s.parse::<jiff::civil::DateTime>().is_ok() {
            format!(
                "{s:?} has no zone offset; add Z for UTC or the offset meant, e.g. {s}Z or {s}+01:00"
            )
        } else {
            format!("{s:?} is not an RFC 3339 time ({e}); e.g. 2026-11-30T15:34:27+01:00 or 2026-11-30T14:34:27Z")
        }
    })?;
    u64::try_from(at.as_millisecond()).map_err(|_| format!("{s:?} is before 1970"))
}

#[derive(Subcommand)]
enum ReleaseCmd {
    /// Publish WORKLOAD at SHA; with --repo, SHA may be any ref name, resolved locally.
    Publish {
        workload: String,
        /// A full 40-hex SHA, or with --repo a ref name (main, v1.2, HEAD~1).
        revision: String,
        /// A local Git repository to resolve the revision in.
        #[arg(long)]
        repo: Option<std::path::PathBuf>,
        /// Publish even though the revision was rolled back (is rejected) in the first
        /// environment; the audit event says so.
        #[arg(long)]
        allow_rejected: bool,
        /// Publish although a freeze window covers the first environment; the audit event
        /// says so.
        #[arg(long)]
        override_freeze: bool,
    },
    List {
        workload: String,
    },
}

/// `22MiB`, `22m`, `22M`, `4k`, `1GiB` or plain bytes; suffixes are powers of 1024, as fio's.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use k, m or g (KiB, MiB, GiB)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not K=V"))
}

/// Output to a pipe whose reader went away (`fleet-ctl audit | head -1`) ends the process
/// quietly, as it does for `cat` or `ls`: Rust ignores SIGPIPE by default, which makes
/// `println!` panic on EPIPE instead. Sockets are unaffected: the standard library sends with
/// MSG_NOSIGNAL.
fn die_quietly_on_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code; nothing runs in signal context.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("warning: cannot restore SIGPIPE: {e}");
    }
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, hint) = match e.downcast_ref::<CtlError>() {
                Some(ctl) => (ctl.exit_code(), ctl.hint().map(str::to_string)),
                None => (1, None),
            };
            eprintln!("error: {e:#}");
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}

fn consistency(cli: &Cli) -> i32 {
    if cli.stale {
        ReadConsistency::Stale as i32
    } else {
        ReadConsistency::Linearizable as i32
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.output == Format::Json;
    match cli.command {
        Cmd::DiskBench {
            dir,
            size,
            block_size,
        } => return disk_bench(&dir, size, block_size, json),
        Cmd::Pki(command) => return identity::pki(command),
        Cmd::Config(command) => return identity::config(command, json),
        _ => {}
    }
    let resolved = identity::resolve(&cli.connection)?;
    let client = Client::new(
        resolved.endpoints,
        resolved.transport,
        resolved.token.as_deref(),
        Duration::from_secs(cli.timeout_s),
    );
    let reason = cli.reason.clone();
    let c = consistency(&cli);
    match cli.command {
        Cmd::Coordinator(CoordinatorCmd::Status) => coordinator_status(&client, json).await,
        Cmd::Coordinator(CoordinatorCmd::Disk) => coordinator_disk(&client, json).await,
        Cmd::Coordinator(CoordinatorCmd::Add {
            id,
            address,
            catch_up_timeout_s,
        }) => {
            if !json {
                eprintln!(
                    "adding node {id} at {address}: learner first, voter once caught up (up to {catch_up_timeout_s} s)"
                );
            }
            let r = client
                .fleet(|mut f, req: Req| {
                    let mut request = req.wrap(AddCoordinatorRequest {
                        id,
                        address: address.clone(),
                        catch_up_timeout_ms: catch_up_timeout_s * 1000,
                    });
                    request.set_timeout(std::time::Duration::from_secs(catch_up_timeout_s + 15));
                    async move { f.add_coordinator(request).await }
                })
                .await?;
            written(
                json,
                &format!("coordinator {id} added as a voter"),
                r.result,
            )
        }
        Cmd::Coordinator(CoordinatorCmd::Remove { id, force }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(RemoveCoordinatorRequest { id, force });
                    async move { f.remove_coordinator(request).await }
                })
                .await?;
            written(json, &format!("coordinator {id} removed"), r.result)
        }
        Cmd::Site(SiteCmd::Add { name }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(AddSiteRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.add_site(request).await }
                })
                .await?;
            written(json, "site added", r.result)
        }
        Cmd::Site(SiteCmd::List) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListSitesRequest { consistency: c });
                    async move { f.list_sites(request).await }
                })
                .await?;
            let mut t = Table::new(&["NAME", "CREATED"]);
            let mut items = Vec::new();
            for s in &r.sites {
                t.row(vec![s.name.clone(), format_time_ms(s.created_at_ms)]);
                items.push(json!({"name": s.name, "created_at_ms": s.created_at_ms}));
            }
            emit(json, t, json!({ "sites": items }))
        }
        Cmd::Environment(EnvironmentCmd::Add { name }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(AddEnvironmentRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.add_environment(request).await }
                })
                .await?;
            written(json, "environment added", r.result)
        }
        Cmd::Environment(EnvironmentCmd::List) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListEnvironmentsRequest { consistency: c });
                    async move { f.list_environments(request).await }
                })
                .await?;
            let mut t = Table::new(&["POSITION", "NAME"]);
            let mut items = Vec::new();
            for e in &r.environments {
                t.row(vec![e.position.to_string(), e.name.clone()]);
                items.push(json!({"name": e.name, "position": e.position}));
            }
            emit(json, t, json!({ "environments": items }))
        }
        Cmd::Cluster(ClusterCmd::Register(args)) => {
            let labels: std::collections::HashMap<String, String> =
                args.labels.into_iter().collect();
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = RegisterClusterRequest {
                        name: args.name.clone(),
                        site: args.site.clone(),
                        environment: args.environment.clone(),
                        labels: labels.clone(),
                        reason: reason.clone(),
                    };
                    async move { f.register_cluster(req.wrap(request)).await }
                })
                .await?;
            written(
                json,
                &format!("cluster registered with {} assignments", r.assignments),
                r.result,
            )
        }
        Cmd::Cluster(ClusterCmd::List) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListClustersRequest { consistency: c });
                    async move { f.list_clusters(request).await }
                })
                .await?;
            let mut t = Table::new(&["NAME", "SITE", "ENVIRONMENT", "LABELS"]);
            let mut items = Vec::new();
            for cl in &r.clusters {
                t.row(vec![
                    cl.name.clone(),
                    cl.site.clone(),
                    cl.environment.clone(),
                    labels_text(&cl.labels),
                ]);
                items.push(cluster_json(cl));
            }
            emit(json, t, json!({ "clusters": items }))
        }
        Cmd::Cluster(ClusterCmd::Describe { name }) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(GetClusterRequest {
                        name: name.clone(),
                        consistency: c,
                    });
                    async move { f.get_cluster(request).await }
                })
                .await?;
            let cl = r
                .cluster
                .ok_or_else(|| anyhow!("the coordinator sent no cluster"))?;
            let assignments: Vec<_> = r.assignments.iter().map(assignment_json).collect();
            let reports: Vec<_> = r
                .reports
                .iter()
                .filter_map(|rep| {
                    let mut v = report_json(rep.report.as_ref()?);
                    v["reported_at_ms"] = json!(rep.reported_at_ms);
                    v["last_seen_ms"] = json!(rep.last_seen_ms);
                    Some(v)
                })
                .collect();
            if json {
                let mut v = cluster_json(&cl);
                v["assignments"] = json!(assignments);
                v["reports"] = json!(reports);
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("Name:        {}", cl.name);
            println!("Site:        {}", cl.site);
            println!("Environment: {}", cl.environment);
            println!("Labels:      {}", labels_text(&cl.labels));
            println!("Registered:  {}", format_time_ms(cl.registered_at_ms));
            println!("Assignments:");
            let mut t = Table::new(&["WORKLOAD", "PATH", "REVISION", "VERSION", "ASSIGNED"]);
            for a in &r.assignments {
                t.row(vec![
                    a.workload.clone(),
                    a.path.clone(),
                    a.revision.clone(),
                    a.version.to_string(),
                    format_time_ms(a.assigned_at_ms),
                ]);
            }
            t.print();
            let now = now_ms();
            for rep in &r.reports {
                let Some(report) = &rep.report else { continue };
                println!();
                println!("Last status of {}:", report.workload);
                println!("  Desired:     {}", dash(&report.desired_revision));
                println!("  Applied:     {}", dash(&report.applied_revision));
                println!("  Render hash: {}", dash(&report.render_hash));
                println!("  Sync:        {}", sync_text(report.sync));
                println!("  Health:      {}", health_text(report.health));
                println!(
                    "  Drift:       {} repaired at the last resync",
                    report.drift_count
                );
                if !report.error.is_empty() {
                    println!("  Error:       {}", report.error);
                }
                println!("  Reported:    {}", format_time_ms(rep.reported_at_ms));
                println!("  Last seen:   {}", ago(rep.last_seen_ms, now));
                let mut t = Table::new(&["OBJECT", "SYNC", "HEALTH", "MESSAGE"]);
                for o in &report.objects {
                    t.row(vec![
                        o.name.clone(),
                        sync_text(o.sync).into(),
                        health_text(o.health).into(),
                        dash(&o.message),
                    ]);
                }
                t.print();
                if report.objects_omitted > 0 {
                    println!("  ... and {} more objects", report.objects_omitted);
                }
            }
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Remove { name }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(RemoveClusterRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.remove_cluster(request).await }
                })
                .await?;
            written(json, "cluster removed", r.result)
        }
        Cmd::Cluster(ClusterCmd::JoinToken { name, ttl }) => {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(CreateJoinTokenRequest {
                        cluster: name.clone(),
                        ttl_ms,
                        reason: reason.clone(),
                    });
                    async move { f.create_join_token(request).await }
                })
                .await?;
            crate::output::print_secret(
                json,
                json!({
                    "cluster": name,
                    "token": r.token,
                    "expires_at_ms": r.expires_at_ms,
                    "log_index": r.result.map_or(0, |w| w.log_index),
                }),
                &r.token,
                &format!(
                    "join token for cluster {name}, valid once until {}; shown only now. Start \
                     the agent with --join-token (or FLEET_JOIN_TOKEN) and --ca",
                    format_time_ms(r.expires_at_ms)
                ),
            )
        }
        Cmd::Cluster(ClusterCmd::RevokeCert { name }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(RevokeClusterCertificatesRequest {
                        cluster: name.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.revoke_cluster_certificates(request).await }
                })
                .await?;
            written(
                json,
                &format!("certificates of cluster {name} issued until now revoked"),
                r.result,
            )
        }
        Cmd::Workload(WorkloadCmd::Create { name, repo, path }) => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = CreateWorkloadRequest {
                        name: name.clone(),
                        repo_url: repo.clone(),
                        path_template: path.clone(),
                        reason: reason.clone(),
                    };
                    async move { f.create_workload(req.wrap(request)).await }
                })
                .await?;
            written(json, "workload created", r.result)
        }
        Cmd::Workload(WorkloadCmd::List) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListWorkloadsRequest { consistency: c });
                    async move { f.list_workloads(request).await }
                })
                .await?;
            let mut t = Table::new(&["NAME", "REPO", "PATH", "DESIRED"]);
            let mut items = Vec::new();
            for w in &r.workloads {
                let desired: BTreeMap<&str, &str> = w
                    .desired
                    .iter()
                    .map(|d| (d.environment.as_str(), d.revision.as_str()))
                    .collect();
                let text: Vec<String> = w
                    .desired
                    .iter()
                    .map(|d| format!("{}={}", d.environment, short(&d.revision)))
                    .collect();
                t.row(vec![
                    w.name.clone(),
                    w.repo_url.clone(),
                    w.path_template.clone(),
                    text.join(","),
                ]);
                items.push(json!({"name": w.name, "repo_url": w.repo_url, "path_template": w.path_template, "desired": desired}));
            }
            emit(json, t, json!({ "workloads": items }))
        }
        Cmd::Release(ReleaseCmd::Publish {
            workload,
            revision,
            repo,
            allow_rejected,
            override_freeze,
        }) => {
            let revision = match repo {
                Some(path) => resolve_revision(&path, &revision)?,
                None => revision,
            };
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = PublishReleaseRequest {
                        workload: workload.clone(),
                        revision: revision.clone(),
                        reason: reason.clone(),
                        allow_rejected,
                        override_freeze,
                    };
                    async move { f.publish_release(req.wrap(request)).await }
                })
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "log_index": r.result.map_or(0, |w| w.log_index),
                        "workload": workload,
                        "revision": revision,
                        "environment": r.environment,
                        "clusters": r.clusters,
                    }))?
                );
            } else {
                eprintln!(
                    "published {workload}@{revision} to {}: {} clusters assigned",
                    r.environment,
                    r.clusters.len()
                );
            }
            Ok(())
        }
        Cmd::Release(ReleaseCmd::List { workload }) => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListReleasesRequest {
                        workload: workload.clone(),
                        consistency: c,
                    });
                    async move { f.list_releases(request).await }
                })
                .await?;
            let mut t = Table::new(&["REVISION", "ENVIRONMENT", "PUBLISHED", "BY"]);
            let mut items = Vec::new();
            for rel in &r.releases {
                t.row(vec![
                    rel.revision.clone(),
                    rel.environment.clone(),
                    format_time_ms(rel.published_at_ms),
                    rel.published_by.clone(),
                ]);
                items.push(json!({"workload": rel.workload, "revision": rel.revision, "environment": rel.environment, "published_at_ms": rel.published_at_ms, "published_by": rel.published_by}));
            }
            emit(json, t, json!({ "releases": items }))
        }
        Cmd::Audit {
            verify: Some(AuditCmd::Verify { head }),
            ..
        } => audit_verify(&client, c, head, json).await,
        Cmd::Audit {
            verify: Some(AuditCmd::Head),
            ..
        } => audit_head(&client, c, json).await,
        Cmd::Audit {
            verify: None,
            kind,
            workload,
            cluster,
            since,
            after,
            before,
            limit,
        } => {
            let filter = AuditFilter {
                kind: kind.unwrap_or_default(),
                workload,
                cluster,
                since,
            };
            let page = match (after, before) {
                (Some(after), _) => AuditPage::After(after),
                (None, before) => AuditPage::Before(before.unwrap_or(0)),
            };
            audit(&client, c, filter, page, limit, json).await
        }
        Cmd::DiskBench { .. } | Cmd::Pki(_) | Cmd::Config(_) => {
            unreachable!("handled before connecting")
        }
        Cmd::History { cluster, at } => history(&client, c, cluster, at, json).await,
        Cmd::Pipeline(cmd) => promotion::pipeline(&client, cmd, reason, c, json).await,
        Cmd::Promote(a) => promotion::promote(&client, a, reason, json).await,
        Cmd::Plan(a) => promotion::plan(&client, a, json).await,
        Cmd::Rollout(cmd) => promotion::rollout(&client, cmd, reason, c, json).await,
        Cmd::Rollback(a) => promotion::rollback(&client, a, reason, json).await,
        Cmd::Approve(t) => {
            promotion::change(&client, t, RolloutAction::Approve, reason, json).await
        }
        Cmd::Freeze(cmd) => promotion::freeze(&client, cmd, reason, c, json).await,
        Cmd::Role(cmd) => access::role(&client, cmd, reason, c, json).await,
        Cmd::Token(cmd) => access::token(&client, cmd, reason, c, json).await,
        Cmd::Environment(EnvironmentCmd::Approvals { name, approvals }) => {
            promotion::set_approvals(&client, name, approvals, reason, json).await
        }
        Cmd::Status => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(GetStatusRequest { consistency: c });
                    async move { f.get_status(request).await }
                })
                .await?;
            let mut t = Table::new(&[
                "CLUSTER",
                "SITE",
                "ENVIRONMENT",
                "WORKLOAD",
                "DESIRED",
                "APPLIED",
                "SYNC",
                "HEALTH",
                "DRIFT",
                "LAST SEEN",
            ]);
            let mut items = Vec::new();
            let now = now_ms();
            for row in &r.rows {
                let report = row.report.as_ref();
                if row.not_assigned {
                    eprintln!(
                        "warning: the agent of {} still reports {}, which is not assigned to it (last seen {}); it prunes a workload that left its set, so it has not heard of the change yet or cannot prune",
                        row.cluster,
                        row.workload,
                        ago(row.last_seen_ms, now)
                    );
                }
                t.row(vec![
                    row.cluster.clone(),
                    row.site.clone(),
                    row.environment.clone(),
                    dash(&row.workload),
                    if row.not_assigned {
                        "not assigned".to_string()
                    } else {
                        dash(short(&row.desired_revision))
                    },
                    dash(report.map_or("", |r| short(&r.applied_revision))),
                    report.map_or("-".into(), |r| sync_text(r.sync).into()),
                    report.map_or("-".into(), |r| health_text(r.health).into()),
                    report.map_or("-".into(), |r| r.drift_count.to_string()),
                    ago(row.last_seen_ms, now),
                ]);
                let mut item = json!({
                    "cluster": row.cluster, "site": row.site, "environment": row.environment,
                    "workload": (!row.workload.is_empty()).then_some(&row.workload),
                    "desired_revision": (!row.desired_revision.is_empty()).then_some(&row.desired_revision),
                    "assignment_version": (row.assignment_version > 0).then_some(row.assignment_version),
                    "last_seen_ms": (row.last_seen_ms > 0).then_some(row.last_seen_ms),
                    "not_assigned": row.not_assigned,
                });
                if let Some(report) = report {
                    item["report"] = report_json(report);
                }
                items.push(item);
            }
            emit(json, t, json!({ "clusters": items }))
        }
    }
}

/// `coordinator status`: the answering node's view of membership and leader, and each
/// member's own term and indexes (asked directly; `unreachable` when it does not answer).
async fn coordinator_status(client: &Client, json: bool) -> anyhow::Result<()> {
    let view = client
        .fleet_read(|mut f, req: Req| {
            let request = req.wrap(GetCoordinatorStatusRequest {});
            async move { f.get_coordinator_status(request).await }
        })
        .await?;
    let mut t = Table::new(&[
        "ID", "ADDRESS", "VOTER", "ROLE", "TERM", "APPLIED", "LAST LOG", "SNAPSHOT", "CLOCK",
    ]);
    let mut members = Vec::new();
    for m in &view.members {
        let own = client.status_of(&m.address).await;
        let (role, term, applied, last_log, snapshot) = match &own {
            Some(s) => (
                s.role.clone(),
                Some(s.term),
                Some(s.applied_index),
                Some(s.last_log_index),
                Some(s.snapshot_index),
            ),
            None => ("unreachable".to_string(), None, None, None, None),
        };
        let num = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        // Its clock against the voters' median, as the node itself measured it.
        let clock = match &own {
            Some(s) if s.clocks_compared >= 3 => format!(
                "{:+} ms{}",
                s.clock_offset_ms,
                if s.clock_skewed {
                    format!(" SKEWED (over {} ms: does not lead)", s.max_clock_offset_ms)
                } else {
                    String::new()
                }
            ),
            Some(s) => format!("- ({} clocks)", s.clocks_compared),
            None => "-".to_string(),
        };
        t.row(vec![
            m.id.to_string(),
            m.address.clone(),
            m.voter.to_string(),
            role.clone(),
            num(term),
            num(applied),
            num(last_log),
            num(snapshot),
            clock,
        ]);
        members.push(json!({
            "id": m.id, "address": m.address, "voter": m.voter, "role": role,
            "term": term, "applied_index": applied, "last_log_index": last_log, "snapshot_index": snapshot,
            "clock_offset_ms": own.as_ref().filter(|s| s.clocks_compared >= 3).map(|s| s.clock_offset_ms),
            "clock_skewed": own.as_ref().map(|s| s.clock_skewed),
            "clocks_compared": own.as_ref().map(|s| s.clocks_compared),
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "answered_by": view.node_id,
                "leader_id": view.leader_id,
                "term": view.term,
                "applied_index": view.applied_index,
                "cluster_id": view.cluster_id,
                "members": members,
            }))?
        );
    } else {
        match view.leader_id {
            Some(l) => eprintln!(
                "cluster {}: leader {l}, term {} (as seen by node {})",
                view.cluster_id, view.term, view.node_id
            ),
            None => eprintln!(
                "cluster {}: no leader (as seen by node {})",
                view.cluster_id, view.node_id
            ),
        }
        t.print();
    }
    Ok(())
}

/// `audit`: events in sequence order, fetched page by page.
struct AuditFilter {
    kind: String,
    workload: Option<String>,
    cluster: Option<String>,
    since: Option<u64>,
}

/// Whether any string value anywhere in `v` under one of `keys` equals `wanted`, or any array
/// under one of them holds it.
fn names(v: &serde_json::Value, keys: &[&str], wanted: &str) -> bool {
    match v {
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
            (keys.contains(&k.as_str())
                && (v.as_str() == Some(wanted)
                    || v.as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(wanted)))))
                || names(v, keys, wanted)
        }),
        serde_json::Value::Array(items) => items.iter().any(|v| names(v, keys, wanted)),
        _ => false,
    }
}

impl AuditFilter {
    fn keeps(&self, e: &AuditEvent) -> bool {
        let command: serde_json::Value =
            serde_json::from_str(&e.command_json).unwrap_or(serde_json::Value::Null);
        let workload_ok = self.workload.as_deref().is_none_or(|w| {
            names(&command, &["workload"], w)
                || (e.kind == "create_workload" && names(&command, &["name"], w))
        });
        let cluster_ok = self.cluster.as_deref().is_none_or(|c| {
            names(&command, &["cluster", "clusters"], c)
                || (matches!(e.kind.as_str(), "register_cluster" | "remove_cluster")
                    && names(&command, &["name"], c))
                || e.summary
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
                    .any(|w| w == c)
        });
        workload_ok && cluster_ok && self.since.is_none_or(|t| e.time_ms >= t)
    }
}

/// Which end of the log `audit` shows.
#[derive(Clone, Copy)]
enum AuditPage {
    /// The oldest events after this sequence number.
    After(u64),
    /// The newest events before this sequence number (0: the newest of all).
    Before(u64),
}

/// One `ListAuditEvents` call.
async fn audit_page(
    client: &Client,
    consistency: i32,
    kind: &str,
    after_sequence: u64,
    before_sequence: u64,
    newest: bool,
) -> anyhow::Result<fleet_api::proto::ListAuditEventsResponse> {
    Ok(client
        .fleet_read(|mut f, req: Req| {
            let request = req.wrap(ListAuditEventsRequest {
                after_sequence,
                max_events: 0,
                kind: kind.to_string(),
                consistency,
                before_sequence,
                newest,
            });
            async move { f.list_audit_events(request).await }
        })
        .await?)
}

/// Every event after `after`, page by page, of one kind or all.
async fn fetch_audit(
    client: &Client,
    consistency: i32,
    kind: &str,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<AuditEvent>> {
    let mut events = Vec::new();
    let mut after_sequence = after;
    while events.len() < limit {
        let page = audit_page(client, consistency, kind, after_sequence, 0, false).await?;
        let Some(last) = page.events.last() else {
            break;
        };
        after_sequence = last.sequence;
        events.extend(page.events);
    }
    Ok(events)
}

/// The newest `limit` events of one kind or all before `before` (0: the newest of all), in
/// sequence order, and how many match in all.
async fn fetch_audit_newest(
    client: &Client,
    consistency: i32,
    kind: &str,
    before: u64,
    limit: usize,
) -> anyhow::Result<(Vec<AuditEvent>, u64)> {
    let mut pages: Vec<Vec<AuditEvent>> = Vec::new();
    let mut before_sequence = before;
    let mut matching = None;
    let mut fetched = 0;
    while fetched < limit {
        let page = audit_page(client, consistency, kind, 0, before_sequence, true).await?;
        matching.get_or_insert(page.matching);
        let Some(first) = page.events.first() else {
            break;
        };
        before_sequence = first.sequence;
        fetched += page.events.len();
        pages.push(page.events);
    }
    let mut events: Vec<AuditEvent> = pages.into_iter().rev().flatten().collect();
    let excess = events.len().saturating_sub(limit);
    events.drain(..excess);
    Ok((events, matching.unwrap_or(0)))
}

/// `audit head`: the newest event as SEQ:HASH.
async fn audit_head(client: &Client, consistency: i32, json: bool) -> anyhow::Result<()> {
    let (events, _) = fetch_audit_newest(client, consistency, "", 0, 1).await?;
    let Some(head) = events.last() else {
        bail!("the audit log is empty: there is no head to keep yet");
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "sequence": head.sequence,
                "hash": head.hash,
                "head": format!("{}:{}", head.sequence, head.hash),
                "time_ms": head.time_ms,
            }))?
        );
    } else {
        println!("{}:{}", head.sequence, head.hash);
    }
    Ok(())
}

/// `audit verify`: the chain recomputed on this machine from what the coordinator serves, and
/// with `head`, that the chain still holds that event with that hash.
async fn audit_verify(
    client: &Client,
    consistency: i32,
    head: Option<(u64, String)>,
    json: bool,
) -> anyhow::Result<()> {
    let events = fetch_audit(client, consistency, "", 0, usize::MAX).await?;
    let mut chain = Vec::with_capacity(events.len());
    for e in &events {
        chain.push(fleet_api::convert::audit_event_from_wire(e).map_err(|e| anyhow!(e))?);
    }
    let newest = chain.last().map_or("-".to_string(), |e| e.hash.clone());
    let verdict = fleet_core::audit::verify_chain(&chain)
        .map_err(|e| e.to_string())
        .and_then(|()| match &head {
            None => Ok(()),
            Some((sequence, hash)) => match chain.iter().find(|e| e.sequence == *sequence) {
                Some(e) if e.hash == *hash => Ok(()),
                Some(e) => Err(format!(
                    "event {sequence} has hash {}, not the kept head's {hash}: the log was \
                     replaced since that head was taken",
                    e.hash
                )),
                None => Err(format!(
                    "the log ends at event {}, before the kept head's event {sequence}: it was \
                     truncated or replaced since that head was taken",
                    chain.last().map_or(0, |e| e.sequence)
                )),
            },
        });
    match verdict {
        Ok(()) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "verified": true,
                        "events": chain.len(),
                        "head_hash": newest,
                        "kept_head": head.as_ref().map(|(s, h)| format!("{s}:{h}")),
                    }))?
                );
            } else if let Some((sequence, _)) = &head {
                println!(
                    "audit chain verifies: {} events, head {newest}; it holds the kept head (event {sequence})",
                    chain.len()
                );
            } else {
                println!(
                    "audit chain verifies: {} events, head {newest}",
                    chain.len()
                );
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"verified": false, "events": chain.len(), "error": e})
                    )?
                );
            }
            Err(anyhow!("the audit chain does not verify: {e}"))
        }
    }
}

async fn audit(
    client: &Client,
    consistency: i32,
    filter: AuditFilter,
    page: AuditPage,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let filtering = filter.workload.is_some() || filter.cluster.is_some() || filter.since.is_some();
    let (events, matching) = match page {
        // Filters the coordinator does not know are applied here, over every event of the
        // range.
        AuditPage::After(after) if filtering => {
            let all = fetch_audit(client, consistency, &filter.kind, after, usize::MAX).await?;
            let kept: Vec<AuditEvent> = all.into_iter().filter(|e| filter.keeps(e)).collect();
            let matching = kept.len() as u64;
            (kept.into_iter().take(limit).collect(), matching)
        }
        AuditPage::Before(before) if filtering => {
            let mut kept: Vec<AuditEvent> =
                fetch_audit(client, consistency, &filter.kind, 0, usize::MAX)
                    .await?
                    .into_iter()
                    .filter(|e| (before == 0 || e.sequence < before) && filter.keeps(e))
                    .collect();
            let matching = kept.len() as u64;
            kept.drain(..kept.len().saturating_sub(limit));
            (kept, matching)
        }
        AuditPage::After(after) => {
            // The first page says how many match; the rest follow it.
            let first = audit_page(client, consistency, &filter.kind, after, 0, false).await?;
            let mut events = first.events;
            if let Some(last) = events.last().map(|e| e.sequence)
                && events.len() < limit
            {
                let rest = limit - events.len();
                events.extend(fetch_audit(client, consistency, &filter.kind, last, rest).await?);
            }
            events.truncate(limit);
            (events, first.matching)
        }
        AuditPage::Before(before) => {
            fetch_audit_newest(client, consistency, &filter.kind, before, limit).await?
        }
    };
    if (events.len() as u64) < matching
        && let (Some(first), Some(last)) = (events.first(), events.last())
    {
        let more = match page {
            AuditPage::After(_) => {
                format!("newer ones: `fleet-ctl audit --after {}`", last.sequence)
            }
            AuditPage::Before(_) => {
                format!("older ones: `fleet-ctl audit --before {}`", first.sequence)
            }
        };
        eprintln!(
            "showing {} of {matching} matching events (sequences {}-{}); {more}",
            events.len(),
            first.sequence,
            last.sequence
        );
    }
    let mut t = Table::new(&["SEQ", "TIME", "ACTOR", "KIND", "SUMMARY"]);
    for e in &events {
        t.row(vec![
            e.sequence.to_string(),
            format_time_ms(e.time_ms),
            e.actor.clone(),
            e.kind.clone(),
            e.summary.clone(),
        ]);
    }
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            json!({
                "sequence": e.sequence, "time_ms": e.time_ms, "actor": e.actor,
                "reason": e.reason, "kind": e.kind,
                "command": serde_json::from_str::<serde_json::Value>(&e.command_json)
                    .unwrap_or(serde_json::Value::Null),
                "summary": e.summary, "prev_hash": e.prev_hash, "hash": e.hash,
                "format": e.format,
            })
        })
        .collect();
    emit(json, t, json!({ "events": rows }))
}

async fn history(
    client: &Client,
    consistency: i32,
    cluster: String,
    at: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .fleet_read(|mut f, req: Req| {
            let request = req.wrap(GetClusterHistoryRequest {
                cluster: cluster.clone(),
                at_ms: at.unwrap_or(0),
                consistency,
            });
            async move { f.get_cluster_history(request).await }
        })
        .await?;
    let change = |c: &AssignmentChange| {
        json!({"time_ms": c.time_ms, "workload": c.workload,
               "revision": (!c.revision.is_empty()).then_some(&c.revision),
               "version": c.version, "audit_sequence": c.audit_sequence})
    };
    if json {
        let value = json!({
            "cluster": cluster, "at_ms": at,
            "assigned": r.assigned.iter().map(change).collect::<Vec<_>>(),
            "changes": r.changes.iter().map(change).collect::<Vec<_>>(),
            "kept_since_ms": (r.kept_since_ms > 0).then_some(r.kept_since_ms),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let when = at.map_or_else(|| "now".to_string(), format_time_ms);
    println!("{cluster} at {when}:");
    let mut t = Table::new(&["WORKLOAD", "REVISION", "SINCE", "AUDIT EVENT"]);
    for c in &r.assigned {
        t.row(vec![
            c.workload.clone(),
            c.revision.clone(),
            format_time_ms(c.time_ms),
            c.audit_sequence.to_string(),
        ]);
    }
    t.print();
    println!("\nchanges up to then:");
    let mut t = Table::new(&["TIME", "WORKLOAD", "REVISION", "VERSION", "AUDIT EVENT"]);
    for c in &r.changes {
        t.row(vec![
            format_time_ms(c.time_ms),
            c.workload.clone(),
            if c.revision.is_empty() {
                "(removed)".into()
            } else {
                c.revision.clone()
            },
            c.version.to_string(),
            c.audit_sequence.to_string(),
        ]);
    }
    t.print();
    if r.kept_since_ms > 0 {
        println!(
            "(changes before {} are only in the audit log)",
            format_time_ms(r.kept_since_ms)
        );
    }
    Ok(())
}

/// `coordinator disk`: one row per member, from the member itself.
async fn coordinator_disk(client: &Client, json: bool) -> anyhow::Result<()> {
    let view = client
        .fleet_read(|mut f, req: Req| {
            let request = req.wrap(GetCoordinatorStatusRequest {});
            async move { f.get_coordinator_status(request).await }
        })
        .await?;
    let mut t = Table::new(&[
        "ID",
        "ADDRESS",
        "PROBE P50",
        "PROBE P99",
        "PROBE P99.9",
        "PROBE MAX",
        "PROBE P99 10M",
        "FLUSH P99",
        "FLUSH P99 10M",
        "ALL P99 5S",
        "VERDICT",
    ]);
    let mut rows = Vec::new();
    for m in &view.members {
        let disk = client.status_of(&m.address).await.and_then(|s| s.disk);
        let Some(d) = disk else {
            t.row(vec![
                m.id.to_string(),
                m.address.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "unreachable".into(),
            ]);
            rows.push(json!({"id": m.id, "address": m.address, "verdict": "unreachable"}));
            continue;
        };
        let s = |x: &Option<LatencySummary>| x.unwrap_or_default();
        let (p1, p10, f1, f10, recent) = (
            s(&d.probe_fdatasync_1m),
            s(&d.probe_fdatasync_10m),
            s(&d.log_flush_1m),
            s(&d.log_flush_10m),
            s(&d.all_fdatasync_5s),
        );
        let ms = |l: &LatencySummary, v: u64| {
            if l.count == 0 {
                "-".to_string()
            } else {
                format!("{:.2}ms", v as f64 / 1000.0)
            }
        };
        // `stalled`: slow for the sustain time; the node does not lead or campaign.
        let verdict = match (d.stalled, d.healthy) {
            (true, _) => "stalled",
            (false, true) => "ok",
            (false, false) => "too_slow",
        };
        t.row(vec![
            m.id.to_string(),
            m.address.clone(),
            ms(&p1, p1.p50_us),
            ms(&p1, p1.p99_us),
            ms(&p1, p1.p999_us),
            ms(&p1, p1.max_us),
            ms(&p10, p10.p99_us),
            ms(&f1, f1.p99_us),
            ms(&f10, f10.p99_us),
            ms(&recent, recent.p99_us),
            verdict.into(),
        ]);
        let summary = |l: &LatencySummary| json!({"count": l.count, "p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us, "max_us": l.max_us});
        rows.push(json!({
            "id": m.id, "address": m.address, "verdict": verdict, "p99_limit_us": d.p99_limit_us,
            "probe_fdatasync_1m": summary(&p1), "probe_fdatasync_10m": summary(&p10),
            "log_flush_1m": summary(&f1), "log_flush_10m": summary(&f10),
            "all_fdatasync_5s": summary(&recent), "stalled": d.stalled,
        }));
    }
    emit(json, t, json!({ "nodes": rows }))
}

/// `disk-bench`: one run of the fio etcd check, printed like fio, with the verdict.
fn disk_bench(
    dir: &std::path::Path,
    size: u64,
    block_size: usize,
    json: bool,
) -> anyhow::Result<()> {
    use fleet_disk::{FDATASYNC_P99_LIMIT, run_fdatasync_pattern};
    if block_size == 0 || block_size as u64 > size {
        return Err(anyhow!(
            "invalid --block-size {block_size}: must be between 1 and --size ({size})"
        ));
    }
    if !json {
        eprintln!(
            "disk-bench: {} writes of {block_size} bytes, each followed by fdatasync, in {}",
            size / block_size as u64,
            dir.display()
        );
    }
    let run = run_fdatasync_pattern(dir, size, block_size)
        .with_context(|| format!("run the fdatasync pattern in {}", dir.display()))?;
    let h = &run.fdatasync_us;
    let q = |p: f64| h.value_at_quantile(p);
    let verdict = if run.meets_etcd_rule() {
        "ok"
    } else {
        "too_slow"
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "writes": run.writes,
                "block_size": run.block_size,
                "size_bytes": run.size_bytes,
                "elapsed_s": run.elapsed.as_secs_f64(),
                "fdatasync_min_us": h.min(),
                "fdatasync_mean_us": h.mean(),
                "fdatasync_p50_us": q(0.5),
                "fdatasync_p90_us": q(0.9),
                "fdatasync_p99_us": q(0.99),
                "fdatasync_p999_us": q(0.999),
                "fdatasync_max_us": h.max(),
                "p99_limit_us": FDATASYNC_P99_LIMIT.as_micros() as u64,
                "verdict": verdict,
            }))?
        );
    } else {
        println!(
            "  write: ios={}, size={} bytes, runtime={:.2}s, iops={:.0}",
            run.writes,
            run.size_bytes,
            run.elapsed.as_secs_f64(),
            run.writes as f64 / run.elapsed.as_secs_f64()
        );
        println!(
            "  fdatasync (usec): min={}, max={}, avg={:.2}, stdev={:.2}",
            h.min(),
            h.max(),
            h.mean(),
            h.stdev()
        );
        println!(
            "  fdatasync percentiles (usec): 50.00th=[{}], 90.00th=[{}], 99.00th=[{}], 99.90th=[{}]",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999)
        );
        if run.meets_etcd_rule() {
            println!(
                "  verdict: ok, fdatasync p99 {} us is under the 10 ms etcd requires",
                q(0.99)
            );
        } else {
            println!(
                "  verdict: too slow, fdatasync p99 {} us is over the 10 ms etcd requires",
                q(0.99)
            );
        }
    }
    Ok(())
}

/// Resolves a ref name (or SHA) in a local repository to a full commit SHA.
fn resolve_revision(repo: &std::path::Path, spec: &str) -> anyhow::Result<String> {
    let repository = gix::open(repo)
        .with_context(|| format!("open the Git repository at {}", repo.display()))?;
    let id = repository
        .rev_parse_single(spec)
        .with_context(|| format!("resolve {spec:?} in {}", repo.display()))?;
    let object = id.object().context("read the object")?;
    let kind = object.kind;
    // An annotated tag is peeled to its commit; a tree or a blob is refused, naming it.
    let commit = object.peel_to_commit().map_err(|_| {
        anyhow!(
            "{spec:?} names a {kind} ({id}), not a commit; publish a commit, or a tag or branch that points to one"
        )
    })?;
    Ok(commit.id.to_string())
}

pub(crate) fn written(
    json: bool,
    message: &str,
    result: Option<WriteResult>,
) -> anyhow::Result<()> {
    let index = result.map_or(0, |r| r.log_index);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "log_index": index }))?
        );
    } else {
        eprintln!("{message} (log index {index})");
    }
    Ok(())
}

pub(crate) fn emit(json: bool, table: Table, value: serde_json::Value) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        table.print();
    }
    Ok(())
}

fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    let parts: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn cluster_json(c: &Cluster) -> serde_json::Value {
    let labels: BTreeMap<_, _> = c.labels.iter().collect();
    json!({"name": c.name, "site": c.site, "environment": c.environment, "labels": labels, "registered_at_ms": c.registered_at_ms})
}

fn assignment_json(a: &Assignment) -> serde_json::Value {
    json!({"workload": a.workload, "repo_url": a.repo_url, "path": a.path, "revision": a.revision, "version": a.version, "assigned_at_ms": a.assigned_at_ms})
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `12s ago`, `3m ago`, or `never` for 0.
fn ago(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let seconds = now_ms.saturating_sub(ms) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

fn sync_text(value: i32) -> &'static str {
    match SyncState::try_from(value) {
        Ok(SyncState::Synced) => "Synced",
        Ok(SyncState::OutOfSync) => "OutOfSync",
        Ok(SyncState::Failed) => "Failed",
        _ => "Unknown",
    }
}

fn health_text(value: i32) -> &'static str {
    match HealthState::try_from(value) {
        Ok(HealthState::Healthy) => "Healthy",
        Ok(HealthState::Progressing) => "Progressing",
        Ok(HealthState::Degraded) => "Degraded",
        _ => "Unknown",
    }
}

fn report_json(r: &StatusReport) -> serde_json::Value {
    let objects: Vec<_> = r
        .objects
        .iter()
        .map(|o| json!({"name": o.name, "sync": sync_text(o.sync), "health": health_text(o.health), "message": o.message}))
        .collect();
    json!({
        "workload": r.workload,
        "desired_revision": r.desired_revision,
        "applied_revision": (!r.applied_revision.is_empty()).then_some(&r.applied_revision),
        "assignment_version": r.assignment_version,
        "render_hash": (!r.render_hash.is_empty()).then_some(&r.render_hash),
        "sync": sync_text(r.sync),
        "health": health_text(r.health),
        "error": (!r.error.is_empty()).then_some(&r.error),
        "drift_count": r.drift_count,
        "objects": objects,
        "objects_omitted": r.objects_omitted,
    })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
