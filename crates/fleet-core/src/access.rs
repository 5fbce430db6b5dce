//! Who may do what: roles bound to operators, bearer tokens for CI, and the one rule that
//! decides ([`authorize`]), from the actor a [`Context`] carries and the replicated state.
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read (every role reads) |
//! | `publisher` | `release publish`, scoped to workloads |
//! | `operator` | sites, environments, clusters, workloads, pipelines, rollout pause, resume and abort, freezes |
//! | `promoter` | promote, approve, roll back, and the audited overrides (`--allow-rejected`, `--override-freeze`); scoped to environments (and workloads) |
//! | `admin` | everything a person may do: roles, tokens, approval rules, coordinator membership |
//!
//! A scope narrows a role to the environments and workloads it lists; an empty list means all.
//! It narrows what a command touches: a freeze's removal its freeze's environment, a pipeline
//! every environment it lists; adding a site touches neither, so any `operator` binding
//! allows it. The fleet's own actors are not roles: only the planner advances a
//! rollout, only a coordinator records a leadership hand-over, and only a cluster's agent
//! reports that cluster's status. The first admin is bound by a coordinator while no admin
//! exists (the bootstrap admin); the last admin cannot be unbound.
//!
//! Actors ([`Actor::parse`]) are the audit log's: an operator's name, `token:NAME`,
//! `agent:CLUSTER`, `coordinator:ID`, `planner`, and `unauthenticated` (any caller of a node
//! that runs with `--insecure-plaintext`, on loopback only: such a node authorizes everyone).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Command, Context, Outcome};
use crate::error::CoreError;
use crate::limits::{MAX_ROLE_BINDINGS, MAX_TOKENS};
use crate::model::TimeMs;
use crate::state::State;

/// What a principal may do; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Publisher,
    Operator,
    Promoter,
    Admin,
}

impl Role {
    /// Every role, by name, least to most.
    pub const NAMES: [&'static str; 5] = ["viewer", "publisher", "operator", "promoter", "admin"];

    /// The role named `value`; `InvalidArgument` on `field` otherwise.
    pub fn parse(field: &str, value: &str) -> Result<Role, CoreError> {
        Ok(match value {
            "viewer" => Role::Viewer,
            "publisher" => Role::Publisher,
            "operator" => Role::Operator,
            "promoter" => Role::Promoter,
            "admin" => Role::Admin,
            _ => {
                return Err(CoreError::invalid(
                    field,
                    format!("{value:?} is not a role"),
                    format!("use one of {}", Role::NAMES.join(", ")),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        Role::NAMES[self as usize]
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One role held by an operator or a token, with its scope (empty: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub environments: BTreeSet<String>,
    pub workloads: BTreeSet<String>,
    /// The actor who bound it, and when.
    pub granted_by: String,
    pub granted_at_ms: TimeMs,
}

impl Grant {
    /// Whether this grant allows `need`.
    fn allows(&self, need: &Need) -> bool {
        let Need::Role {
            role,
            environment,
            workload,
        } = need
        else {
            return false;
        };
        if self.role == Role::Admin {
            return true;
        }
        if *role == Role::Viewer {
            return true;
        }
        self.role == *role
            && environment
                .as_ref()
                .is_none_or(|e| self.environments.is_empty() || self.environments.contains(e))
            && workload
                .as_ref()
                .is_none_or(|w| self.workloads.is_empty() || self.workloads.contains(w))
    }

    /// `promoter (environments staging, production; workloads web)`.
    pub fn describe(&self) -> String {
        let mut scope = Vec::new();
        if !self.environments.is_empty() {
            scope.push(format!(
                "environments {}",
                self.environments
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.workloads.is_empty() {
            scope.push(format!(
                "workloads {}",
                self.workloads
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if scope.is_empty() {
            self.role.to_string()
        } else {
            format!("{} ({})", self.role, scope.join("; "))
        }
    }
}

/// A bearer token for CI: its name, the SHA-256 of its secret (the secret itself is shown once,
/// when it is made, and kept nowhere), its one grant and its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    /// Lowercase hex SHA-256 of the token's secret.
    pub secret_sha256: String,
    pub grant: Grant,
    /// Not valid from this time on.
    pub expires_at_ms: TimeMs,
}

/// A cluster's one-time join token ([`Command::CreateJoinToken`]): what enrolls its agent once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub cluster: String,
    /// Lowercase hex SHA-256 of the token's secret.
    pub secret_sha256: String,
    /// Not valid from this time on.
    pub expires_at_ms: TimeMs,
    /// Who made it, and when.
    pub created_by: String,
    pub created_at_ms: TimeMs,
}

/// Who an audit actor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor<'a> {
    Operator(&'a str),
    Token(&'a str),
    Agent(&'a str),
    Coordinator(&'a str),
    Planner,
    Unauthenticated,
}

/// How long before it is issued the built-in CA makes a certificate valid (for clocks a little
/// behind). A revocation ([`Command::RevokeClusterCertificates`]) takes a certificate as issued
/// this long after its notBefore.
pub const CERTIFICATE_BACKDATE_MS: u64 = 300_000;

/// The actor of the planner's steps.
pub const PLANNER_ACTOR: &str = "planner";
/// The actor of every caller of a node without TLS (`--insecure-plaintext`).
pub const UNAUTHENTICATED_ACTOR: &str = "unauthenticated";
/// The prefix of a token's actor: `token:NAME`.
pub const TOKEN_ACTOR_PREFIX: &str = "token:";

impl<'a> Actor<'a> {
    /// The actor an audit actor string names (see the module docs).
    pub fn parse(actor: &'a str) -> Actor<'a> {
        if actor == PLANNER_ACTOR {
            Actor::Planner
        } else if actor == UNAUTHENTICATED_ACTOR {
            Actor::Unauthenticated
        } else if let Some(name) = actor.strip_prefix(TOKEN_ACTOR_PREFIX) {
            Actor::Token(name)
        } else if let Some(cluster) = actor.strip_prefix("agent:") {
            Actor::Agent(cluster)
        } else if let Some(id) = actor.strip_prefix("coordinator:") {
            Actor::Coordinator(id)
        } else {
            Actor::Operator(actor)
        }
    }
}

/// What one command needs of its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Role {
        role: Role,
        environment: Option<String>,
        workload: Option<String>,
    },
    /// Only this cluster's agent.
    Agent(String),
    Planner,
    Coordinator,
}

impl Need {
    fn role(role: Role) -> Need {
        Need::Role {
            role,
            environment: None,
            workload: None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Need::Role {
                role,
                environment,
                workload,
            } => {
                let mut s = format!("role {role}");
                if let Some(e) = environment {
                    s.push_str(&format!(" for environment {e}"));
                }
                if let Some(w) = workload {
                    s.push_str(&format!(" for workload {w}"));
                }
                s
            }
            Need::Agent(cluster) => format!("to be the agent of cluster {cluster}"),
            Need::Planner => "to be the rollout planner".into(),
            Need::Coordinator => "to be a coordinator".into(),
        }
    }
}

/// What `command` needs of its actor in `state`: every one must hold.
pub fn needs(state: &State, command: &Command) -> Vec<Need> {
    let role = |role, environment: Option<&String>, workload: Option<&String>| Need::Role {
        role,
        environment: environment.cloned(),
        workload: workload.cloned(),
    };
    match command {
        Command::AddSite { .. } => vec![Need::role(Role::Operator)],
        Command::AddEnvironment { name } => vec![role(Role::Operator, Some(name), None)],
        // The freeze's environment: an operator of staging does not lift production's.
        Command::RemoveFreeze { id } => vec![role(
            Role::Operator,
            state.freezes.get(id).map(|f| &f.environment),
            None,
        )],
        Command::RegisterCluster { environment, .. } => {
            vec![role(Role::Operator, Some(environment), None)]
        }
        Command::RemoveCluster { name }
        | Command::RevokeClusterCertificates { cluster: name }
        | Command::CreateJoinToken { cluster: name, .. } => {
            vec![role(
                Role::Operator,
                state.cluster(name).ok().map(|c| &c.environment),
                None,
            )]
        }
        Command::CreateWorkload { name, .. } => vec![role(Role::Operator, None, Some(name))],
        // A pipeline decides how every environment it lists is entered: an operator of each.
        Command::SetPipeline { workload, pipeline } => {
            let mut needs = vec![role(Role::Operator, None, Some(workload))];
            needs.extend(
                pipeline
                    .environments
                    .iter()
                    .map(|e| role(Role::Operator, Some(e), Some(workload))),
            );
            needs
        }
        Command::PauseRollout {
            workload,
            environment,
        }
        | Command::ResumeRollout {
            workload,
            environment,
        }
        | Command::AbortRollout {
            workload,
            environment,
        } => vec![role(Role::Operator, Some(environment), Some(workload))],
        Command::AddFreeze { environment, .. } => {
            vec![role(Role::Operator, Some(environment), None)]
        }
        Command::PublishRelease {
            workload,
            allow_rejected,
            override_freeze,
            ..
        } => {
            let mut needs = vec![role(Role::Publisher, None, Some(workload))];
            if *allow_rejected || *override_freeze {
                // The overrides are a promoter's, in the environment a release enters.
                let first = state
                    .workloads
                    .contains_key(workload)
                    .then(|| state.pipeline(workload).environments.first().cloned())
                    .flatten();
                needs.push(role(Role::Promoter, first.as_ref(), Some(workload)));
            }
            needs
        }
        Command::Promote {
            workload,
            environment,
            ..
        }
        | Command::Approve {
            workload,
            environment,
        }
        | Command::Rollback {
            workload,
            environment,
            ..
        } => vec![role(Role::Promoter, Some(environment), Some(workload))],
        Command::SetRequiredApprovals { .. }
        | Command::BindRole { .. }
        | Command::UnbindRole { .. }
        | Command::CreateToken { .. }
        | Command::RevokeToken { .. } => vec![Need::role(Role::Admin)],
        Command::RecordStatus { cluster, .. } | Command::EnrollCluster { cluster, .. } => {
            vec![Need::Agent(cluster.clone())]
        }
        Command::AdvanceRollout { .. } => vec![Need::Planner],
        Command::RecordLeadershipHandover { .. } => vec![Need::Coordinator],
    }
}

/// The grants an actor holds at `now_ms`: an operator's bindings, or a token's one grant while
/// it is not expired.
pub fn grants<'a>(state: &'a State, actor: &Actor<'_>, now_ms: TimeMs) -> Vec<&'a Grant> {
    match actor {
        Actor::Operator(name) => state
            .role_bindings
            .get(*name)
            .map(|g| g.values().collect())
            .unwrap_or_default(),
        Actor::Token(name) => state
            .tokens
            .get(*name)
            .filter(|t| now_ms < t.expires_at_ms)
            .map(|t| vec![&t.grant])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Whether `actor` may apply `command` to `state` at `ctx_now_ms`: `PermissionDenied` naming
/// the actor, the action and what it lacks otherwise.
pub fn authorize(
    state: &State,
    actor: &str,
    command: &Command,
    now_ms: TimeMs,
) -> Result<(), CoreError> {
    let who = Actor::parse(actor);
    if who == Actor::Unauthenticated {
        return Ok(());
    }
    // The bootstrap admin: a coordinator binds the first admin while there is none.
    if let (Actor::Coordinator(_), Command::BindRole { role, .. }) = (&who, command)
        && role == "admin"
        && !state.has_admin()
    {
        return Ok(());
    }
    for need in needs(state, command) {
        require(state, actor, &need, command.kind(), now_ms)?;
    }
    Ok(())
}

/// Whether `actor` meets `need` for `action` (a command kind, or e.g. `add_coordinator`):
/// `PermissionDenied` naming the actor, the action and what it lacks otherwise.
pub fn require(
    state: &State,
    actor: &str,
    need: &Need,
    action: &str,
    now_ms: TimeMs,
) -> Result<(), CoreError> {
    let who = Actor::parse(actor);
    if who == Actor::Unauthenticated {
        return Ok(());
    }
    let held = grants(state, &who, now_ms);
    let allowed = match (need, &who) {
        (Need::Agent(cluster), Actor::Agent(agent)) => cluster == agent,
        (Need::Planner, Actor::Planner) => true,
        (Need::Coordinator, Actor::Coordinator(_)) => true,
        (Need::Role { .. }, _) => held.iter().any(|g| g.allows(need)),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let holds = if held.is_empty() {
        match who {
            Actor::Token(_) => "the token is unknown, revoked or expired".to_string(),
            Actor::Operator(_) => "it holds no role".to_string(),
            _ => "it is not a person or a token".to_string(),
        }
    } else {
        format!(
            "it holds {}",
            held.iter()
                .map(|g| g.describe())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(CoreError::PermissionDenied {
        message: format!(
            "{actor} may not {action}: that needs {}, and {holds}",
            need.describe()
        ),
        hint: match need {
            Need::Role { .. } => format!(
                "ask an admin to run `fleet-ctl role bind {actor} ROLE` with the role and scope \
                 above"
            ),
            _ => "only the fleet itself does this".into(),
        },
    })
}

/// The need of the admin-only actions that are not commands (coordinator membership).
pub fn admin() -> Need {
    Need::role(Role::Admin)
}

/// Whether `actor` may read the fleet's state (every role reads; coordinators and plaintext
/// callers too; an agent reads its own cluster through `AgentService` only).
pub fn may_read(state: &State, actor: &str, now_ms: TimeMs) -> Result<(), CoreError> {
    let who = Actor::parse(actor);
    if matches!(who, Actor::Unauthenticated | Actor::Coordinator(_)) {
        return Ok(());
    }
    if !grants(state, &who, now_ms).is_empty() {
        return Ok(());
    }
    Err(CoreError::PermissionDenied {
        message: format!(
            "{actor} may not read the fleet: that needs a role (viewer or more), and {}",
            match who {
                Actor::Agent(_) => "an agent reads only its own cluster's assignments",
                Actor::Token(_) => "the token is unknown, revoked or expired",
                _ => "it holds none",
            }
        ),
        hint: format!("ask an admin to run `fleet-ctl role bind {actor} viewer`"),
    })
}

/// The reads and the changes of roles and tokens.
impl State {
    /// Whether some operator holds `admin`.
    pub fn has_admin(&self) -> bool {
        self.role_bindings
            .values()
            .any(|roles| roles.contains_key(&Role::Admin))
    }

    /// Every operator's grants, by operator name, then role.
    pub fn role_bindings(&self) -> impl Iterator<Item = (&String, &BTreeMap<Role, Grant>)> {
        self.role_bindings.iter()
    }

    /// Every token that is not revoked (expired ones included), by name.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    /// When the certificates of `cluster` were revoked, if a certificate valid from
    /// `not_before_ms` is one of them: issued ([`CERTIFICATE_BACKDATE_MS`] after its notBefore)
    /// in a second before the revocation's (X.509 times count whole seconds, RFC 5280 section
    /// 4.1.2.5). Certificates issued later, from the revocation's second on, are the cluster's
    /// new ones.
    pub fn cluster_certificate_revoked(
        &self,
        cluster: &str,
        not_before_ms: TimeMs,
    ) -> Option<TimeMs> {
        self.revoked_certificates
            .get(cluster)
            .copied()
            .filter(|revoked_at| {
                not_before_ms.saturating_add(CERTIFICATE_BACKDATE_MS) / 1000 < revoked_at / 1000
            })
    }

    /// Token `name`, if it is not revoked.
    pub fn token(&self, name: &str) -> Option<&Token> {
        self.tokens.get(name)
    }

    pub(crate) fn check_access(&self, command: &Command) -> Result<(), CoreError> {
        match command {
            Command::BindRole { principal, .. } => {
                if !self.role_bindings.contains_key(principal) {
                    limit_bindings(self.role_bindings.len())?;
                }
                Ok(())
            }
            Command::UnbindRole { principal, role } => {
                let role = Role::parse("role", role)?;
                if !self
                    .role_bindings
                    .get(principal)
                    .is_some_and(|r| r.contains_key(&role))
                {
                    return Err(CoreError::not_found(
                        "role binding",
                        &format!("{principal} {role}"),
                        "list them with `fleet-ctl role list`",
                    ));
                }
                let admins = self
                    .role_bindings
                    .values()
                    .filter(|r| r.contains_key(&Role::Admin))
                    .count();
                if role == Role::Admin && admins == 1 {
                    return Err(CoreError::FailedPrecondition {
                        message: format!("{principal} is the last admin"),
                        hint: "bind admin to someone else first: the fleet keeps at least one"
                            .into(),
                    });
                }
                Ok(())
            }
            Command::CreateToken { name, .. } => {
                if self.tokens.contains_key(name) {
                    return Err(CoreError::already_exists(
                        "token",
                        name,
                        "revoke it first (`fleet-ctl token revoke NAME`), or choose another name",
                    ));
                }
                if self.tokens.len() >= MAX_TOKENS {
                    return Err(CoreError::FailedPrecondition {
                        message: format!("the fleet has {MAX_TOKENS} tokens, the limit"),
                        hint: "revoke tokens that are no longer used".into(),
                    });
                }
                Ok(())
            }
            Command::RevokeClusterCertificates { cluster } => self.cluster(cluster).map(|_| ()),
            Command::RevokeToken { name } => {
                if !self.tokens.contains_key(name) {
                    return Err(CoreError::not_found(
                        "token",
                        name,
                        "list them with `fleet-ctl token list`",
                    ));
                }
                Ok(())
            }
            _ => unreachable!("check_access handles {}", command.kind()),
        }
    }

    /// Cluster `cluster`'s unused join token, if it has one (expired ones included).
    pub fn join_token(&self, cluster: &str) -> Option<&JoinToken> {
        self.join_tokens.get(cluster)
    }

    pub(crate) fn check_enrollment(
        &self,
        command: &Command,
        ctx: &Context,
    ) -> Result<(), CoreError> {
        match command {
            Command::CreateJoinToken { cluster, .. } => self.cluster(cluster).map(|_| ()),
            Command::EnrollCluster {
                cluster,
                secret_sha256,
            } => {
                let valid = self.join_tokens.get(cluster).is_some_and(|t| {
                    same_digest(&t.secret_sha256, secret_sha256) && ctx.now_ms < t.expires_at_ms
                });
                if !valid {
                    return Err(CoreError::PermissionDenied {
                        message: format!(
                            "the join token of cluster {cluster} is used, expired or replaced"
                        ),
                        hint: format!(
                            "ask an operator for a new one: `fleet-ctl cluster join-token {cluster}`"
                        ),
                    });
                }
                Ok(())
            }
            _ => unreachable!("check_enrollment handles {}", command.kind()),
        }
    }

    pub(crate) fn apply_access(&mut self, command: &Command, ctx: &Context) -> (Outcome, String) {
        let grant = |role: &str, environments: &[String], workloads: &[String]| Grant {
            role: Role::parse("role", role).expect("validated"),
            environments: environments.iter().cloned().collect(),
            workloads: workloads.iter().cloned().collect(),
            granted_by: ctx.actor.clone(),
            granted_at_ms: ctx.now_ms,
        };
        match command {
            Command::BindRole {
                principal,
                role,
                environments,
                workloads,
            } => {
                let grant = grant(role, environments, workloads);
                let summary = format!("{principal} holds {}", grant.describe());
                self.role_bindings
                    .entry(principal.clone())
                    .or_default()
                    .insert(grant.role, grant);
                (
                    Outcome::RoleBound {
                        principal: principal.clone(),
                        role: role.clone(),
                    },
                    summary,
                )
            }
            Command::UnbindRole { principal, role } => {
                let parsed = Role::parse("role", role).expect("validated");
                let roles = self.role_bindings.get_mut(principal).expect("checked");
                roles.remove(&parsed);
                if roles.is_empty() {
                    self.role_bindings.remove(principal);
                }
                (
                    Outcome::RoleUnbound {
                        principal: principal.clone(),
                        role: role.clone(),
                    },
                    format!("{principal} no longer holds {role}"),
                )
            }
            Command::CreateToken {
                name,
                secret_sha256,
                role,
                environments,
                workloads,
                expires_at_ms,
            } => {
                let grant = grant(role, environments, workloads);
                let summary = format!(
                    "token {name} made with {}, valid until {}",
                    grant.describe(),
                    crate::promotion::time(*expires_at_ms)
                );
                self.tokens.insert(
                    name.clone(),
                    Token {
                        name: name.clone(),
                        secret_sha256: secret_sha256.clone(),
                        grant,
                        expires_at_ms: *expires_at_ms,
                    },
                );
                (
                    Outcome::TokenCreated {
                        name: name.clone(),
                        expires_at_ms: *expires_at_ms,
                    },
                    summary,
                )
            }
            Command::RevokeClusterCertificates { cluster } => {
                self.revoked_certificates
                    .insert(cluster.clone(), ctx.now_ms);
                (
                    Outcome::ClusterCertificatesRevoked {
                        cluster: cluster.clone(),
                        revoked_at_ms: ctx.now_ms,
                    },
                    format!(
                        "certificates of cluster {cluster} issued until {} revoked",
                        crate::promotion::time(ctx.now_ms)
                    ),
                )
            }
            Command::CreateJoinToken {
                cluster,
                secret_sha256,
                expires_at_ms,
            } => {
                self.join_tokens.insert(
                    cluster.clone(),
                    JoinToken {
                        cluster: cluster.clone(),
                        secret_sha256: secret_sha256.clone(),
                        expires_at_ms: *expires_at_ms,
                        created_by: ctx.actor.clone(),
                        created_at_ms: ctx.now_ms,
                    },
                );
                (
                    Outcome::JoinTokenCreated {
                        cluster: cluster.clone(),
                        expires_at_ms: *expires_at_ms,
                    },
                    format!(
                        "join token for cluster {cluster} made, valid once until {}",
                        crate::promotion::time(*expires_at_ms)
                    ),
                )
            }
            Command::EnrollCluster { cluster, .. } => {
                self.join_tokens.remove(cluster);
                (
                    Outcome::ClusterEnrolled {
                        cluster: cluster.clone(),
                    },
                    format!("cluster {cluster}'s agent enrolled with its join token"),
                )
            }
            Command::RevokeToken { name } => {
                self.tokens.remove(name);
                (
                    Outcome::TokenRevoked { name: name.clone() },
                    format!("token {name} revoked"),
                )
            }
            _ => unreachable!("apply_access handles {}", command.kind()),
        }
    }
}

fn limit_bindings(have: usize) -> Result<(), CoreError> {
    if have >= MAX_ROLE_BINDINGS {
        return Err(CoreError::FailedPrecondition {
            message: format!("{MAX_ROLE_BINDINGS} operators hold roles, the limit"),
            hint: "unbind operators who left with `fleet-ctl role unbind`".into(),
        });
    }
    Ok(())
}

/// The prefix of every bearer token's text: `fleet:NAME:SECRET`, where SECRET is 64 lowercase
/// hex digits (32 random bytes). Neither a name nor hex holds a `:`.
pub const BEARER_TOKEN_PREFIX: &str = "fleet:";

/// A bearer token's text from its name and secret.
pub fn bearer_token_text(name: &str, secret_hex: &str) -> String {
    format!("{BEARER_TOKEN_PREFIX}{name}:{secret_hex}")
}

/// The name and secret of a bearer token's text; `None` when it is not of that shape.
pub fn bearer_token_parts(text: &str) -> Option<(&str, &str)> {
    let (name, secret) = text.strip_prefix(BEARER_TOKEN_PREFIX)?.split_once(':')?;
    (crate::principal::operator_name("token", name).is_ok() && crate::validate::is_hex_256(secret))
        .then_some((name, secret))
}

/// The lowercase hex SHA-256 of a token's secret text: what the state keeps.
pub fn secret_sha256(secret_hex: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret_hex.as_bytes()))
}

/// Whether `text` is the bearer token `token` at `now_ms`: its secret hashes to the stored
/// hash (compared without an early exit) and it has not expired.
pub fn token_matches(token: &Token, secret_hex: &str, now_ms: TimeMs) -> bool {
    same_digest(&secret_sha256(secret_hex), &token.secret_sha256) && now_ms < token.expires_at_ms
}

/// Whether two hex digests are equal, compared without an early exit.
fn same_digest(a: &str, b: &str) -> bool {
    a.bytes()
        .zip(b.bytes())
        .fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y))
        == 0
}

/// The prefix of a join token's text: `fleet-join:CLUSTER:SECRET`, where SECRET is 64
/// lowercase hex digits (32 random bytes). It is sent as a bearer token, and only
/// `AgentService.RequestCertificate` accepts it.
pub const JOIN_TOKEN_PREFIX: &str = "fleet-join:";

/// A join token's text from its cluster and secret.
pub fn join_token_text(cluster: &str, secret_hex: &str) -> String {
    format!("{JOIN_TOKEN_PREFIX}{cluster}:{secret_hex}")
}

/// The cluster and secret of a join token's text; `None` when it is not of that shape.
pub fn join_token_parts(text: &str) -> Option<(&str, &str)> {
    let (cluster, secret) = text.strip_prefix(JOIN_TOKEN_PREFIX)?.split_once(':')?;
    (crate::validate::dns_label("cluster", cluster).is_ok() && crate::validate::is_hex_256(secret))
        .then_some((cluster, secret))
}

/// Whether `secret_hex` is `cluster`'s join token in `state` at `now_ms`: it hashes to the
/// kept hash and has not expired.
pub fn join_token_matches(state: &State, cluster: &str, secret_hex: &str, now_ms: TimeMs) -> bool {
    state.join_token(cluster).is_some_and(|t| {
        same_digest(&secret_sha256(secret_hex), &t.secret_sha256) && now_ms < t.expires_at_ms
    })
}
