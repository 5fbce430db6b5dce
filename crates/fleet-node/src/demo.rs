//! The embedded demo: a demo fleet, a demo Git repository made on the spot, and one agent per
//! demo cluster on a files target under the working directory, so a first run shows the whole
//! loop: publish → stream → fetch → files on disk → status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use fleet_core::rollout::Pipeline;
use fleet_core::{Command, Principal, TrustDomain};
use fleet_identity::contexts::{self, CtlConfig, NamedContext};
use fleet_identity::pki::{COORDINATOR_TTL, Ca, Validity};
use fleet_identity::{Credentials, TlsFiles, Transport};

use fleet_agent::{AgentConfig, TargetSpec};
use fleet_api::tasks::spawn_named;
use fleet_coordinator::coordinator::Coordinator;
use fleet_coordinator::error::NodeError;

/// The demo clusters: name, site, environment.
pub const CLUSTERS: [(&str, &str, &str); 4] = [
    ("stg-oslo-1", "oslo", "staging"),
    ("prod-oslo-1", "oslo", "production"),
    ("prod-bergen-1", "bergen", "production"),
    ("prod-stavanger-1", "stavanger", "production"),
];

/// The demo repository's files: a base and one overlay per environment.
const FILES: [(&str, &str); 3] = [
    (
        "base/nginx.conf",
        "# Shared by every environment; each overlay includes it.\nworker_processes auto;\n",
    ),
    (
        "overlays/staging/nginx.conf",
        "include ../base/nginx.conf;\nserver { listen 8080; server_name web.staging.example.no; }\n",
    ),
    (
        "overlays/production/nginx.conf",
        "include ../base/nginx.conf;\nserver { listen 80; server_name web.example.no; }\n",
    ),
];

fn startup(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Startup(format!("demo: {what}: {e}"))
}

fn git(dir: &Path, args: &[&str]) -> Result<String, NodeError> {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "fleet demo")
        .env("GIT_AUTHOR_EMAIL", "demo@fleet.invalid")
        .env("GIT_COMMITTER_NAME", "fleet demo")
        .env("GIT_COMMITTER_EMAIL", "demo@fleet.invalid")
        .output()
        .map_err(|e| startup("run git (the demo needs the git program)", e))?;
    if !out.status.success() {
        return Err(startup(
            &format!("git {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates the demo repository in `dir` (once) and returns the SHA of its first commit.
pub fn create_repository(dir: &Path) -> Result<String, NodeError> {
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).map_err(|e| startup("create the repository", e))?;
        git(dir, &["init", "-q", "-b", "main"])?;
        for (path, content) in FILES {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("a file has a directory"))
                .map_err(|e| startup("write the repository", e))?;
            std::fs::write(&file, content).map_err(|e| startup("write the repository", e))?;
        }
        git(dir, &["add", "-A"])?;
        git(dir, &["commit", "-q", "-m", "web: first version"])?;
    }
    git(dir, &["rev-list", "--max-parents=0", "HEAD"])
}

/// Seeds the demo fleet once (a restarted demo keeps what it has): three sites, the clusters,
/// the workload `web` on the demo repository with a pipeline staging → production (10 s soak,
/// waves oslo, bergen, stavanger), and its first release (to staging).
pub async fn seed(c: &Arc<Coordinator>, repository: &Path) -> Result<(), NodeError> {
    if c.read_state(|s| s.sites().next().is_some()) {
        return Ok(());
    }
    let first = create_repository(repository)?;
    let repository = std::fs::canonicalize(repository).map_err(|e| startup("locate", e))?;
    let mut commands = Vec::new();
    for site in ["oslo", "bergen", "stavanger"] {
        commands.push(Command::AddSite { name: site.into() });
    }
    for (name, site, environment) in CLUSTERS {
        commands.push(Command::RegisterCluster {
            name: name.into(),
            site: site.into(),
            environment: environment.into(),
            labels: BTreeMap::from([("tier".to_string(), "web".to_string())]),
        });
    }
    commands.push(Command::CreateWorkload {
        name: "web".into(),
        repo_url: format!("file://{}", repository.display()),
        path_template: "overlays/{environment}".into(),
    });
    // A short soak and the sites in travel order, so a demo promotion finishes in about a
    // minute; the default pipeline soaks for one minute per environment and wave.
    commands.push(Command::SetPipeline {
        workload: "web".into(),
        pipeline: Pipeline {
            soak_ms: 10_000,
            wave_order: vec!["oslo".into(), "bergen".into(), "stavanger".into()],
            ..Pipeline::default_for(&["staging".into(), "production".into()])
        },
    });
    commands.push(Command::PublishRelease {
        workload: "web".into(),
        revision: first,
        allow_rejected: false,
        override_freeze: false,
    });
    // kari is the admin; ola and per sign off production.
    for approver in ["ola", "per"] {
        commands.push(Command::BindRole {
            principal: approver.into(),
            role: "promoter".into(),
            environments: vec!["production".into()],
            workloads: Vec::new(),
        });
    }
    // Seeded in kari's name: on this machine, she is whoever runs the demo.
    for command in commands {
        c.write(command, ADMIN.into(), "demo fleet".into()).await?;
    }
    tracing::info!("demo fleet seeded");
    Ok(())
}

/// The operators the demo makes certificates and fleet-ctl contexts for (the README's
/// walkthrough: kari publishes and promotes, ola and per approve).
pub const OPERATORS: [&str; 3] = ["kari", "ola", "per"];

/// The demo's bootstrap admin, who seeds the demo fleet and binds `promoter` for production
/// to ola and per.
pub const ADMIN: &str = "kari";

/// The demo's PKI under `pki/`: a CA (made once), the coordinator's certificate for the
/// address it listens on (made at every start), one certificate per demo cluster and per
/// operator (made once each).
pub struct Pki {
    pub dir: PathBuf,
    pub coordinator: Credentials,
    /// The CA with its key: the demo coordinator signs agents' join-token requests.
    pub ca: std::sync::Arc<Ca>,
    clusters: BTreeMap<String, Credentials>,
}

impl Pki {
    pub fn make(dir: &Path, listen: SocketAddr) -> Result<Pki, NodeError> {
        let pki = |e: fleet_identity::IdentityError| startup("pki", e);
        if !dir.join("ca.pem").exists() {
            Ca::generate(&TrustDomain::default())
                .and_then(|ca| ca.write(dir))
                .map_err(pki)?;
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| startup("pki", e))?;
        let ca = Ca::load(&dir, None).map_err(pki)?;
        let hosts = vec![listen.ip().to_string(), "localhost".to_string()];
        let load = |name: &str| {
            Credentials::load(
                &TlsFiles {
                    ca: dir.join("ca.pem"),
                    cert: dir.join(format!("{name}.pem")),
                    key: dir.join(format!("{name}-key.pem")),
                },
                None,
            )
            .map_err(pki)
        };
        ca.issue(
            &Principal::Coordinator(1),
            &hosts,
            Validity::from_now(COORDINATOR_TTL),
        )
        .and_then(|issued| issued.write(&dir, "coordinator-1"))
        .map_err(pki)?;
        let once = |principal: Principal, name: &str, ttl| {
            if !dir.join(format!("{name}.pem")).exists() {
                ca.issue(&principal, &[], Validity::from_now(ttl))
                    .and_then(|issued| issued.write(&dir, name))
                    .map_err(pki)?;
            }
            Ok::<_, NodeError>(())
        };
        let mut clusters = BTreeMap::new();
        for (cluster, _, _) in CLUSTERS {
            let name = format!("cluster-{cluster}");
            once(Principal::Cluster(cluster.into()), &name, COORDINATOR_TTL)?;
            clusters.insert(cluster.to_string(), load(&name)?);
        }
        for operator in OPERATORS {
            once(
                Principal::Operator(operator.into()),
                &format!("operator-{operator}"),
                COORDINATOR_TTL,
            )?;
        }
        Ok(Pki {
            coordinator: load("coordinator-1")?,
            ca: std::sync::Arc::new(ca),
            clusters,
            dir,
        })
    }
}

/// Writes one fleet-ctl context per operator (named after them) into the fleet-ctl config
/// file, as kind does for kubectl, and makes `kari` the current context when none is set.
/// Returns the file's path.
pub fn write_contexts(pki: &Pki, listen: SocketAddr) -> Result<PathBuf, NodeError> {
    let path = contexts::config_path().ok_or_else(|| {
        startup(
            "fleet-ctl contexts",
            "neither FLEET_CONFIG, XDG_CONFIG_HOME nor HOME is set",
        )
    })?;
    let mut config = CtlConfig::load(&path).map_err(|e| startup("fleet-ctl contexts", e))?;
    for operator in OPERATORS {
        config.upsert(NamedContext {
            name: operator.into(),
            endpoints: vec![listen.to_string()],
            ca: Some(pki.dir.join("ca.pem")),
            cert: Some(pki.dir.join(format!("operator-{operator}.pem"))),
            key: Some(pki.dir.join(format!("operator-{operator}-key.pem"))),
            insecure_plaintext: false,
            token: None,
        });
    }
    if config.current_context.is_none() {
        config.current_context = Some(OPERATORS[0].into());
    }
    config
        .save(&path)
        .map_err(|e| startup("fleet-ctl contexts", e))?;
    Ok(path)
}

/// Starts one agent task per demo cluster against `endpoint`, writing under
/// `roots/<cluster>/` with its state in `state/<cluster>/`, each with its cluster's
/// certificate.
pub fn start_agents(pki: &Pki, endpoint: &str, roots: &Path, state: &Path) {
    for (cluster, _, _) in CLUSTERS {
        let own = &pki.clusters[cluster];
        let transport = match Transport::tls(&own.trust, Some(own)) {
            Ok(transport) => transport,
            Err(error) => {
                tracing::error!(%error, cluster, "demo agent not started");
                continue;
            }
        };
        let config = AgentConfig {
            cluster: cluster.into(),
            endpoints: vec![endpoint.to_string()],
            target: TargetSpec::Files(roots.join(cluster)),
            state_dir: state.join(cluster),
            resync_interval: Duration::from_secs(10),
            identity: fleet_agent::Identity::Given(transport),
        };
        spawn_named("demo-agent", async move {
            if let Err(error) = fleet_agent::run(config, std::future::pending()).await {
                tracing::error!(%error, "demo agent stopped");
            }
        });
    }
}

/// Where the demo keeps its parts, below the coordinator's data directory and the working
/// directory.
pub struct DemoPaths {
    pub pki: PathBuf,
    pub repository: PathBuf,
    pub agent_state: PathBuf,
    pub roots: PathBuf,
}

impl DemoPaths {
    pub fn new(data_dir: &Path, roots: &Path) -> Self {
        DemoPaths {
            pki: data_dir.join("pki"),
            repository: data_dir.join("demo-repo"),
            agent_state: data_dir.join("agents"),
            roots: roots.to_path_buf(),
        }
    }
}
