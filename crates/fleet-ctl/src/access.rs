//! `role` and `token`: who may do what (see `fleet_core::access` for the roles).

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use fleet_api::proto::*;
use serde_json::json;

use crate::client::{Client, Req};
use crate::output::{Table, format_time_ms};

#[derive(Subcommand)]
pub enum RoleCmd {
    /// Give PRINCIPAL (an operator's name, or spiffe://TD/operator/NAME) ROLE: viewer,
    /// publisher, operator, promoter or admin, limited to --env and --workload (default: all).
    /// Binding a role the operator holds replaces its scope. Admins only.
    Bind {
        principal: String,
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(fleet_core::access::Role::NAMES))]
        role: String,
        /// An environment the role is limited to; repeat for more.
        #[arg(long = "env", value_name = "ENV")]
        environments: Vec<String>,
        /// A workload the role is limited to; repeat for more.
        #[arg(long = "workload", value_name = "WORKLOAD")]
        workloads: Vec<String>,
    },
    /// Take ROLE from PRINCIPAL. The last admin cannot be unbound. Admins only.
    Unbind {
        principal: String,
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(fleet_core::access::Role::NAMES))]
        role: String,
    },
    /// Every operator's roles and scopes.
    List,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a bearer token for CI and print it once (the fleet keeps only a hash). Use it as
    /// `fleet-ctl --token TOKEN` or FLEET_TOKEN; its changes are audited as token:NAME.
    /// Admins only.
    Create {
        name: String,
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(fleet_core::access::Role::NAMES))]
        role: String,
        /// An environment the token is limited to; repeat for more.
        #[arg(long = "env", value_name = "ENV")]
        environments: Vec<String>,
        /// A workload the token is limited to; repeat for more.
        #[arg(long = "workload", value_name = "WORKLOAD")]
        workloads: Vec<String>,
        /// How long it is valid, at most 366 days.
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Every token that is not revoked (no secrets).
    List,
    /// Revoke token NAME: every coordinator refuses it from then on. Admins only.
    Revoke { name: String },
}

/// An operator's name from NAME or `spiffe://TD/operator/NAME` (any trust domain: the
/// coordinator's is the one that counts, and it checks the name).
fn operator_name(principal: &str) -> anyhow::Result<String> {
    let Some(rest) = principal.strip_prefix("spiffe://") else {
        return Ok(principal.to_string());
    };
    match rest.split_once('/').map(|(_, path)| path.split_once('/')) {
        Some(Some(("operator", name))) => Ok(name.to_string()),
        _ => bail!(
            "{principal}: roles are bound to operators (spiffe://TD/operator/NAME); an agent may \
             only ever act for its own cluster, and a token gets its role when it is made"
        ),
    }
}

fn scope_text(environments: &[String], workloads: &[String]) -> String {
    let mut parts = Vec::new();
    if !environments.is_empty() {
        parts.push(format!("env {}", environments.join(",")));
    }
    if !workloads.is_empty() {
        parts.push(format!("workload {}", workloads.join(",")));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join("; ")
    }
}

pub async fn role(
    client: &Client,
    cmd: RoleCmd,
    reason: String,
    consistency: i32,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        RoleCmd::Bind {
            principal,
            role,
            environments,
            workloads,
        } => {
            let principal = operator_name(&principal)?;
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(BindRoleRequest {
                        principal: principal.clone(),
                        role: role.clone(),
                        environments: environments.clone(),
                        workloads: workloads.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.bind_role(request).await }
                })
                .await?;
            crate::written(
                json,
                &format!(
                    "{principal} holds {role} ({})",
                    scope_text(&environments, &workloads)
                ),
                r.result,
            )
        }
        RoleCmd::Unbind { principal, role } => {
            let principal = operator_name(&principal)?;
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(UnbindRoleRequest {
                        principal: principal.clone(),
                        role: role.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.unbind_role(request).await }
                })
                .await?;
            crate::written(
                json,
                &format!("{principal} no longer holds {role}"),
                r.result,
            )
        }
        RoleCmd::List => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListRoleBindingsRequest { consistency });
                    async move { f.list_role_bindings(request).await }
                })
                .await?;
            let mut t = Table::new(&["PRINCIPAL", "ROLE", "SCOPE", "BY", "SINCE"]);
            let mut items = Vec::new();
            for b in &r.bindings {
                for g in &b.grants {
                    t.row(vec![
                        b.principal.clone(),
                        g.role.clone(),
                        scope_text(&g.environments, &g.workloads),
                        g.granted_by.clone(),
                        format_time_ms(g.granted_at_ms),
                    ]);
                    items.push(json!({"principal": b.principal, "role": g.role,
                        "environments": g.environments, "workloads": g.workloads,
                        "granted_by": g.granted_by, "granted_at_ms": g.granted_at_ms}));
                }
            }
            crate::emit(json, t, json!({ "bindings": items }))
        }
    }
}

pub async fn token(
    client: &Client,
    cmd: TokenCmd,
    reason: String,
    consistency: i32,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            environments,
            workloads,
            ttl,
        } => {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(CreateTokenRequest {
                        name: name.clone(),
                        role: role.clone(),
                        environments: environments.clone(),
                        workloads: workloads.clone(),
                        ttl_ms,
                        reason: reason.clone(),
                    });
                    async move { f.create_token(request).await }
                })
                .await?;
            crate::output::print_secret(
                json,
                json!({
                    "name": name,
                    "token": r.token,
                    "expires_at_ms": r.expires_at_ms,
                    "log_index": r.result.map_or(0, |w| w.log_index),
                }),
                &r.token,
                &format!(
                    "token {name}: {role} ({}) until {}; shown only now, keep it in your CI's \
                     secret store",
                    scope_text(&environments, &workloads),
                    format_time_ms(r.expires_at_ms)
                ),
            )
        }
        TokenCmd::List => {
            let r = client
                .fleet_read(|mut f, req: Req| {
                    let request = req.wrap(ListTokensRequest { consistency });
                    async move { f.list_tokens(request).await }
                })
                .await?;
            let mut t = Table::new(&["NAME", "ROLE", "SCOPE", "EXPIRES", "BY"]);
            let mut items = Vec::new();
            for token in &r.tokens {
                let grant = token.grant.clone().unwrap_or_default();
                t.row(vec![
                    token.name.clone(),
                    grant.role.clone(),
                    scope_text(&grant.environments, &grant.workloads),
                    format_time_ms(token.expires_at_ms),
                    grant.granted_by.clone(),
                ]);
                items.push(json!({"name": token.name, "role": grant.role,
                    "environments": grant.environments, "workloads": grant.workloads,
                    "expires_at_ms": token.expires_at_ms, "created_by": grant.granted_by}));
            }
            crate::emit(json, t, json!({ "tokens": items }))
        }
        TokenCmd::Revoke { name } => {
            let r = client
                .fleet(|mut f, req: Req| {
                    let request = req.wrap(RevokeTokenRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                    });
                    async move { f.revoke_token(request).await }
                })
                .await?;
            crate::written(json, &format!("token {name} revoked"), r.result)
        }
    }
}
