//! Authentication, in front of every service: one interceptor reads the bearer token of the
//! request (`authorization: Bearer fleet:NAME:SECRET`) or else the client certificate of the
//! TLS connection, judges it (the token against this node's applied state, the certificate
//! with [`fleet_identity::Authenticator`]) and attaches the [`Caller`] to the request;
//! handlers read it back with [`caller`] and [`actor`], and check reads with [`may_read`].
//! Nothing reaches a handler without a caller.

use std::sync::Arc;

use fleet_core::Principal;
use fleet_identity::Authenticator;
use tonic::{Code, Request, Status};

use crate::coordinator::{Coordinator, now_ms};
use crate::error::NodeError;

/// The request metadata a bearer token travels in (RFC 6750 section 2.1).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client whose certificate the fleet's CA issued.
    Authenticated(Principal),
    /// A client that presented bearer token NAME, valid when it called.
    Token(String),
    /// A client that presented cluster CLUSTER's join token, valid when it called: it may only
    /// ask for the cluster's first certificate (`RequestCertificate`), which uses the token up.
    JoinToken {
        cluster: String,
        secret_sha256: String,
    },
    /// Any client of a node that runs with `--insecure-plaintext` (loopback only): nobody is
    /// authenticated there.
    Plaintext,
}

impl Caller {
    /// The audit actor: the principal's ([`Principal::actor`]), or `unauthenticated` on a
    /// plaintext node.
    pub fn actor(&self) -> String {
        match self {
            Caller::Authenticated(principal) => principal.actor(),
            Caller::Token(name) => format!("{}{name}", fleet_core::access::TOKEN_ACTOR_PREFIX),
            // Holds a `:`, so no operator has this name and no role is ever bound to it.
            Caller::JoinToken { cluster, .. } => format!("join-token:{cluster}"),
            Caller::Plaintext => fleet_core::access::UNAUTHENTICATED_ACTOR.into(),
        }
    }
}

/// When the caller's certificate is valid from (its notBefore, milliseconds since the Unix
/// epoch), for the revocation check of an open watch stream.
#[derive(Debug, Clone, Copy)]
pub struct CertificateIssued {
    pub not_before_ms: u64,
}

/// The refusal of a revoked cluster certificate.
pub fn revoked_certificate(cluster: &str, revoked_at_ms: u64) -> Status {
    fleet_api::status::with_hint(
        Code::Unauthenticated,
        format!(
            "the certificates of cluster {cluster}'s agent issued until {revoked_at_ms} ms (Unix \
             time) are revoked, and this is one"
        ),
        "give the agent a new certificate (`fleet-ctl pki issue cluster NAME`, or a join token: \
         `fleet-ctl cluster join-token NAME`) and restart it",
    )
}

/// The interceptor: a request with a bearer token is that token's (on every node), else TLS
/// nodes authenticate its certificate and plaintext nodes mark it [`Caller::Plaintext`].
#[derive(Clone)]
pub struct Authenticate {
    pub authenticator: Option<Arc<Authenticator>>,
    pub coordinator: Arc<Coordinator>,
}

impl Authenticate {
    /// The token a request's `authorization` metadata names, if it has one.
    fn token(&self, request: &Request<()>) -> Option<Result<Caller, Status>> {
        let value = request.metadata().get(AUTHORIZATION_METADATA)?;
        let refuse = |message: String, hint: &str| {
            Err(fleet_api::status::with_hint(
                Code::Unauthenticated,
                message,
                hint,
            ))
        };
        let Some(text) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return Some(refuse(
                "the authorization metadata is not `Bearer TOKEN`".into(),
                "pass the token as `fleet-ctl --token` or FLEET_TOKEN",
            ));
        };
        let now = now_ms();
        if let Some((cluster, secret)) = fleet_core::access::join_token_parts(text.trim()) {
            let valid = self
                .coordinator
                .read_state(|s| fleet_core::access::join_token_matches(s, cluster, secret, now));
            return Some(if valid {
                Ok(Caller::JoinToken {
                    cluster: cluster.to_string(),
                    secret_sha256: fleet_core::access::secret_sha256(secret),
                })
            } else {
                tracing::debug!(remote = ?request.remote_addr(), cluster, "refused a join token");
                refuse(
                    format!("the join token of cluster {cluster} is unknown, used or expired"),
                    &format!(
                        "ask an operator for a new one (`fleet-ctl cluster join-token {cluster}`)"
                    ),
                )
            });
        }
        let Some((name, secret)) = fleet_core::access::bearer_token_parts(text.trim()) else {
            return Some(refuse(
                "the bearer token is not a fleet token (fleet:NAME:SECRET)".into(),
                "use the text `fleet-ctl token create` printed, whole",
            ));
        };
        let valid = self.coordinator.read_state(|s| {
            s.token(name)
                .is_some_and(|t| fleet_core::access::token_matches(t, secret, now))
        });
        Some(if valid {
            Ok(Caller::Token(name.to_string()))
        } else {
            tracing::debug!(remote = ?request.remote_addr(), token = name, "refused a bearer token");
            refuse(
                format!("bearer token {name} is unknown, revoked or expired"),
                "ask an admin for a new one (`fleet-ctl token create`)",
            )
        })
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = self.token(&request) {
            let caller = token?;
            request.extensions_mut().insert(caller);
            return Ok(request);
        }
        let caller = match &self.authenticator {
            None => Caller::Plaintext,
            Some(authenticator) => {
                let chain = request.peer_certs();
                let chain = chain.as_deref().map(Vec::as_slice).unwrap_or(&[]);
                match authenticator.authenticate_issued(chain) {
                    Ok((principal, not_before_s)) => {
                        let not_before_ms = u64::try_from(not_before_s).unwrap_or(0) * 1000;
                        if let Principal::Cluster(cluster) = &principal {
                            let revoked = self.coordinator.read_state(|s| {
                                s.cluster_certificate_revoked(cluster, not_before_ms)
                            });
                            if let Some(revoked_at_ms) = revoked {
                                return Err(revoked_certificate(cluster, revoked_at_ms));
                            }
                        }
                        request
                            .extensions_mut()
                            .insert(CertificateIssued { not_before_ms });
                        Caller::Authenticated(principal)
                    }
                    Err(refusal) => {
                        tracing::debug!(
                            remote = ?request.remote_addr(),
                            reason = %refusal.message,
                            "refused an unauthenticated request"
                        );
                        return Err(fleet_api::status::with_hint(
                            Code::Unauthenticated,
                            refusal.message,
                            &refusal.hint,
                        ));
                    }
                }
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller [`Authenticate`] attached; UNAUTHENTICATED for a request that did not pass it.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("the request reached a service without being authenticated")
        })
}

/// The audit actor of a request (see [`Caller::actor`]).
pub fn actor<T>(request: &Request<T>) -> Result<String, Status> {
    Ok(caller(request)?.actor())
}

/// Whether the caller may read the fleet ([`fleet_core::access::may_read`], against this
/// node's applied state): PERMISSION_DENIED naming the caller otherwise.
pub fn may_read<T>(coordinator: &Coordinator, request: &Request<T>) -> Result<(), Status> {
    let actor = actor(request)?;
    let now = now_ms();
    coordinator
        .read_state(|s| fleet_core::access::may_read(s, &actor, now))
        .map_err(|e| NodeError::Core(e).into())
}

/// Whether the caller is an admin (coordinator membership): PERMISSION_DENIED otherwise.
pub fn must_be_admin<T>(
    coordinator: &Coordinator,
    request: &Request<T>,
    action: &str,
) -> Result<(), Status> {
    let actor = actor(request)?;
    let now = now_ms();
    coordinator
        .read_state(|s| {
            fleet_core::access::require(s, &actor, &fleet_core::access::admin(), action, now)
        })
        .map_err(|e| NodeError::Core(e).into())
}

/// Whether the caller may add or remove coordinators: an admin, a member coordinator (a node
/// that forwards an admin's request to the leader), or, for `joining`, the node itself (with
/// its own certificate, `--join`). PERMISSION_DENIED otherwise.
pub fn may_change_membership<T>(
    coordinator: &Coordinator,
    request: &Request<T>,
    action: &str,
    joining: Option<u64>,
) -> Result<(), Status> {
    if let Caller::Authenticated(Principal::Coordinator(id)) = caller(request)? {
        let metrics = coordinator.raft.metrics();
        let member = metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if member || joining == Some(id) {
            return Ok(());
        }
    }
    must_be_admin(coordinator, request, action)
}
