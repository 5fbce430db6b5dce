//! Who fleet-ctl is and where it connects: `--context` and the config file, `--ca`, `--cert`,
//! `--key`; and the commands that need no coordinator: `pki init`, `pki issue`, `config ...`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use fleet_core::{Principal, TrustDomain};
use fleet_identity::contexts::{self, CtlConfig, NamedContext};
use fleet_identity::pki::{CLUSTER_TTL, COORDINATOR_TTL, Ca, OPERATOR_TTL, Validity};
use fleet_identity::{Credentials, TlsFiles, Transport};

use crate::output::Table;

/// The endpoint used when neither `--endpoints` nor a context gives one.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";

/// The connection flags every command takes.
#[derive(Args)]
pub struct Connection {
    /// Coordinator endpoints, HOST:PORT, comma-separated; tried in order until one answers
    /// (default: the context's, else 127.0.0.1:7400).
    #[arg(
        long,
        env = "FLEET_ENDPOINTS",
        value_delimiter = ',',
        value_parser = fleet_api::address::host_port,
        global = true
    )]
    pub endpoints: Option<Vec<String>>,
    /// The context to use from the config file (default: its current-context).
    #[arg(long, env = "FLEET_CONTEXT", global = true)]
    pub context: Option<String>,
    /// The fleet's CA certificate (PEM); overrides the context's.
    #[arg(long, env = "FLEET_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Your certificate (PEM), e.g. from `fleet-ctl pki issue operator`; overrides the context's.
    #[arg(long, env = "FLEET_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "FLEET_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The SPIFFE trust domain (default: the CA's, else fleet.local).
    #[arg(long, global = true)]
    pub trust_domain: Option<String>,
    /// Plaintext, to a loopback node that runs with --insecure-plaintext. Nobody is
    /// authenticated there.
    #[arg(long, global = true, conflicts_with_all = ["ca", "cert", "key"])]
    pub insecure_plaintext: bool,
    /// A bearer token (`fleet-ctl token create`) to act as, e.g. in CI; sent instead of a
    /// certificate (the CA is still needed to check the coordinator).
    #[arg(long, env = "FLEET_TOKEN", global = true, hide_env_values = true, conflicts_with_all = ["cert", "key"])]
    pub token: Option<String>,
}

/// What `resolve` found: where to connect, how, and the bearer token to send, if any.
pub struct Resolved {
    pub endpoints: Vec<String>,
    pub transport: Transport,
    pub token: Option<String>,
}

/// Where to connect and how: the flags first, then the context.
pub fn resolve(connection: &Connection) -> anyhow::Result<Resolved> {
    let context = selected_context(connection.context.as_deref())?;
    let token = connection
        .token
        .clone()
        .or_else(|| context.as_ref().and_then(|c| c.token.clone()));
    if let Some(token) = &token
        && fleet_core::access::bearer_token_parts(token.trim()).is_none()
    {
        bail!(
            "--token: not a fleet token (fleet:NAME:SECRET); use the text `fleet-ctl token \
             create` printed, whole"
        );
    }
    let endpoints = connection
        .endpoints
        .clone()
        .or_else(|| context.as_ref().map(|c| c.endpoints.clone()))
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]);
    if connection.insecure_plaintext
        || (connection.ca.is_none()
            && connection.cert.is_none()
            && context.as_ref().is_some_and(|c| c.insecure_plaintext))
    {
        return Ok(Resolved {
            endpoints,
            transport: Transport::Plaintext,
            token,
        });
    }
    let from_context = |pick: fn(&NamedContext) -> Option<PathBuf>| context.as_ref().and_then(pick);
    let ca = connection
        .ca
        .clone()
        .or_else(|| from_context(|c| c.ca.clone()));
    let cert = connection
        .cert
        .clone()
        .or_else(|| from_context(|c| c.cert.clone()));
    let key = connection
        .key
        .clone()
        .or_else(|| from_context(|c| c.key.clone()));
    let domain = trust_domain(connection.trust_domain.as_deref())?;
    let Some(ca) = ca else {
        bail!(
            "no credentials: give --context NAME (see `fleet-ctl config get-contexts`), or --ca, \
             --cert and --key (FLEET_CA, FLEET_CERT, FLEET_KEY); the demo writes contexts kari, \
             ola and per"
        );
    };
    let transport = match (cert, key) {
        (Some(cert), Some(key)) if token.is_none() => {
            let own = Credentials::load(&TlsFiles { ca, cert, key }, domain.as_ref())?;
            Transport::tls(&own.trust, Some(&own))?
        }
        _ => {
            let trust = fleet_identity::Trust::load(&ca, domain.as_ref())?;
            Transport::tls(&trust, None)?
        }
    };
    Ok(Resolved {
        endpoints,
        transport,
        token,
    })
}

fn trust_domain(value: Option<&str>) -> anyhow::Result<Option<TrustDomain>> {
    Ok(value
        .map(|v| TrustDomain::parse("--trust-domain", v))
        .transpose()?)
}

fn config_path() -> anyhow::Result<PathBuf> {
    contexts::config_path()
        .ok_or_else(|| anyhow!("no config file: set FLEET_CONFIG, XDG_CONFIG_HOME or HOME"))
}

/// The context `name` names, else the current one; `None` when there is no config file or no
/// current context. A context named but absent is an error naming the ones there are.
fn selected_context(name: Option<&str>) -> anyhow::Result<Option<NamedContext>> {
    let Some(path) = contexts::config_path() else {
        return match name {
            Some(name) => Err(anyhow!("--context {name}: there is no config file")),
            None => Ok(None),
        };
    };
    let config = CtlConfig::load(&path)?;
    let Some(name) = name.map(str::to_string).or(config.current_context.clone()) else {
        return Ok(None);
    };
    match config.context(&name) {
        Some(context) => Ok(Some(context.clone())),
        None => Err(anyhow!(
            "no context {name:?} in {}; there are: {}",
            path.display(),
            names(&config)
        )),
    }
}

fn names(config: &CtlConfig) -> String {
    if config.contexts.is_empty() {
        return "none".into();
    }
    config
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Subcommand)]
pub enum PkiCmd {
    /// Make a CA in DIR (ca.pem, ca-key.pem) and the first admin's certificate (admin.pem,
    /// admin-key.pem). Keep ca-key.pem safe: whoever holds it can be anyone.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE trust domain of every identity the CA issues.
        #[arg(long, default_value = fleet_core::principal::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue a certificate from the CA in --ca-dir.
    #[command(subcommand)]
    Issue(IssueCmd),
}

#[derive(Subcommand)]
pub enum IssueCmd {
    /// A coordinator node's: spiffe://TD/coordinator/ID, serving and client use, with the
    /// addresses it is reached at (out: coordinator-ID.pem, coordinator-ID-key.pem).
    Coordinator {
        #[arg(long)]
        id: u64,
        /// IP addresses or DNS names peers, agents and operators reach the node at.
        #[arg(long = "host", value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        out: IssueOut,
    },
    /// An operator's: spiffe://TD/operator/NAME (out: operator-NAME.pem, ...-key.pem).
    Operator {
        name: String,
        #[command(flatten)]
        out: IssueOut,
    },
    /// A cluster agent's: spiffe://TD/cluster/NAME (out: cluster-NAME.pem, ...-key.pem).
    Cluster {
        name: String,
        #[command(flatten)]
        out: IssueOut,
    },
}

#[derive(Args)]
pub struct IssueOut {
    /// The directory `pki init` made (ca.pem and ca-key.pem).
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where to write the certificate and key.
    #[arg(long)]
    out: PathBuf,
    /// Lifetime, e.g. 90d, 12h (default: coordinators 365d, operators 90d, clusters 30d).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
}

pub fn pki(command: PkiCmd) -> anyhow::Result<()> {
    match command {
        PkiCmd::Init { dir, trust_domain } => {
            let domain = TrustDomain::parse("--trust-domain", &trust_domain)?;
            let ca = Ca::generate(&domain)?;
            ca.write(&dir)?;
            let admin = Principal::Operator("admin".into());
            ca.issue(&admin, &[], Validity::from_now(OPERATOR_TTL))?
                .write(&dir, "admin")?;
            eprintln!(
                "CA for trust domain {domain} in {}: ca.pem, ca-key.pem (keep it safe), and the \
                 first admin, {}: admin.pem, admin-key.pem",
                dir.display(),
                admin.spiffe_id(&domain)
            );
            Ok(())
        }
        PkiCmd::Issue(issue) => {
            let (principal, hosts, out, default_ttl, file) = match issue {
                IssueCmd::Coordinator { id, hosts, out } => {
                    if id == 0 {
                        bail!("--id: node ids start at 1");
                    }
                    let file = format!("coordinator-{id}");
                    (
                        Principal::Coordinator(id),
                        hosts,
                        out,
                        COORDINATOR_TTL,
                        file,
                    )
                }
                IssueCmd::Operator { name, out } => {
                    fleet_core::principal::operator_name("NAME", &name)?;
                    let file = format!("operator-{name}");
                    (
                        Principal::Operator(name),
                        Vec::new(),
                        out,
                        OPERATOR_TTL,
                        file,
                    )
                }
                IssueCmd::Cluster { name, out } => {
                    fleet_core::validate::dns_label("NAME", &name)?;
                    let file = format!("cluster-{name}");
                    (Principal::Cluster(name), Vec::new(), out, CLUSTER_TTL, file)
                }
            };
            let ca = Ca::load(&out.ca_dir, None)
                .with_context(|| format!("the CA in {}", out.ca_dir.display()))?;
            let ttl = out.ttl.unwrap_or(default_ttl);
            let (cert, key) = ca
                .issue(&principal, &hosts, Validity::from_now(ttl))?
                .write(&out.out, &file)?;
            eprintln!(
                "{}: {} and {}, valid for {}",
                principal.spiffe_id(ca.trust_domain()),
                cert.display(),
                key.display(),
                humantime::format_duration(ttl)
            );
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Make NAME the current context.
    UseContext { name: String },
    /// Add or replace context NAME.
    SetContext {
        name: String,
        /// Coordinator endpoints, HOST:PORT, comma-separated.
        #[arg(long = "context-endpoints", value_delimiter = ',', required = true,
              value_parser = fleet_api::address::host_port)]
        endpoints: Vec<String>,
        #[arg(long = "context-ca")]
        ca: Option<PathBuf>,
        #[arg(long = "context-cert")]
        cert: Option<PathBuf>,
        #[arg(long = "context-key")]
        key: Option<PathBuf>,
        /// A bearer token to act as (from `fleet-ctl token create`) instead of a certificate.
        #[arg(long = "context-token", conflicts_with_all = ["cert", "key"])]
        token: Option<String>,
    },
}

pub fn config(command: ConfigCmd, json: bool) -> anyhow::Result<()> {
    let path = config_path()?;
    let mut config = CtlConfig::load(&path)?;
    match command {
        ConfigCmd::GetContexts => {
            if json {
                let contexts: Vec<_> = config
                    .contexts
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "current": config.current_context.as_deref() == Some(c.name.as_str()),
                            "endpoints": c.endpoints,
                            "ca": c.ca, "cert": c.cert, "key": c.key,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "contexts": contexts }));
                return Ok(());
            }
            let mut table = Table::new(&["CURRENT", "NAME", "ENDPOINTS", "CERT"]);
            for c in &config.contexts {
                let current = config.current_context.as_deref() == Some(c.name.as_str());
                table.row(vec![
                    if current { "*" } else { "" }.to_string(),
                    c.name.clone(),
                    c.endpoints.join(","),
                    c.cert
                        .as_deref()
                        .map_or("-".into(), |p| p.display().to_string()),
                ]);
            }
            table.print();
            Ok(())
        }
        ConfigCmd::UseContext { name } => {
            if config.context(&name).is_none() {
                bail!(
                    "no context {name:?} in {}; there are: {}",
                    path.display(),
                    names(&config)
                );
            }
            config.current_context = Some(name.clone());
            config.save(&path)?;
            eprintln!("current context: {name}");
            Ok(())
        }
        ConfigCmd::SetContext {
            name,
            endpoints,
            ca,
            cert,
            key,
            token,
        } => {
            let absolute = |p: Option<PathBuf>| p.map(|p| absolute(&p));
            config.upsert(NamedContext {
                name: name.clone(),
                endpoints,
                ca: absolute(ca),
                cert: absolute(cert),
                key: absolute(key),
                insecure_plaintext: false,
                token,
            });
            config.save(&path)?;
            eprintln!("context {name} written to {}", path.display());
            Ok(())
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
