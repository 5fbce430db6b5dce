//! The embedded demo: a demo fleet, a demo Git repository made on the spot, and one agent per
//! demo cluster on a files target under the working directory, so a first run shows the whole
//! loop: publish → stream → fetch → files on disk → status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::Command;
use fleet_core::rollout::Pipeline;

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
    for command in commands {
        c.write(command, "system:demo".into(), "demo fleet".into())
            .await?;
    }
    tracing::info!("demo fleet seeded");
    Ok(())
}

/// Starts one agent task per demo cluster against `endpoint`, writing under
/// `roots/<cluster>/` with its state in `state/<cluster>/`.
pub fn start_agents(endpoint: &str, roots: &Path, state: &Path) {
    for (cluster, _, _) in CLUSTERS {
        let config = AgentConfig {
            cluster: cluster.into(),
            endpoints: vec![endpoint.to_string()],
            target: TargetSpec::Files(roots.join(cluster)),
            state_dir: state.join(cluster),
            resync_interval: Duration::from_secs(10),
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
    pub repository: PathBuf,
    pub agent_state: PathBuf,
    pub roots: PathBuf,
}

impl DemoPaths {
    pub fn new(data_dir: &Path, roots: &Path) -> Self {
        DemoPaths {
            repository: data_dir.join("demo-repo"),
            agent_state: data_dir.join("agents"),
            roots: roots.to_path_buf(),
        }
    }
}
