//! The agent's own certificate, when it enrolls with a join token instead of being given one.
//!
//! `STATE/tls/agent.pem` and `STATE/tls/agent-key.pem` (mode 0600) hold the certificate and
//! key. On start the agent uses them when they are there and not expired; otherwise it makes a
//! new ECDSA P-256 key, sends a certificate signing request with the join token
//! (`RequestCertificate`) to one endpoint after another, and writes what it gets. The key
//! never leaves the agent; the coordinator uses the token up before it signs, so a token
//! enrolls once.
//!
//! Renewal: once two thirds of the certificate's lifetime (from when it was signed, not from
//! its back-dated notBefore) have passed, the agent asks again with its current certificate,
//! and the open streams reconnect with the new one. An agent whose certificate expired while
//! it could not reach a coordinator cannot renew; it keeps enforcing its cached assignments and
//! logs, on every attempt, that it needs a new join token (`fleet-ctl cluster join-token
//! CLUSTER`, then restart it with `--join-token`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_core::{Principal, TrustDomain};
use fleet_identity::pki::{BACKDATE, Validity};
use fleet_identity::{Credentials, TlsFiles, Transport};
use tokio::sync::watch;

use crate::grpc::{Coordinator, RequestFailed};
use crate::{AgentError, Backoff, blocking};

/// The certificate's file in `STATE/tls/`.
pub const CERTIFICATE_FILE: &str = "agent.pem";
/// Its private key's file in `STATE/tls/` (mode 0600).
pub const KEY_FILE: &str = "agent-key.pem";
/// The SHA-256 of the join token the certificate was first got with, in `STATE/tls/`: a
/// different token given later means "enroll again" (after a revocation, say); the same one
/// (left in a unit file) is not used twice.
pub const USED_TOKEN_FILE: &str = "join-token.sha256";

/// How many refusals of a join token the agent asks again after (1 s apart) before it gives
/// up: a coordinator that has not yet applied the token's creation refuses it.
const JOIN_TOKEN_REFUSALS: u32 = 2;

/// How an agent that enrolls itself finds its coordinators' CA and its first credential.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The fleet's CA certificate (PEM), to check the coordinators against.
    pub ca: PathBuf,
    /// The SPIFFE trust domain (default: the CA's).
    pub trust_domain: Option<TrustDomain>,
    /// The cluster's one-time join token, `fleet-join:CLUSTER:SECRET`; needed only when
    /// `STATE/tls/` holds no certificate that is still valid.
    pub join_token: Option<String>,
}

/// The credentials in use and when they are valid.
#[derive(Clone)]
pub(crate) struct Current {
    credentials: Credentials,
    validity: Validity,
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a certificate valid for `validity` is renewed: two thirds of the way from when it was
/// signed (notBefore plus the CA's back-dating) to notAfter, in seconds since the Unix epoch.
pub fn renew_at(validity: Validity) -> i64 {
    let signed = validity.not_before_s + BACKDATE.as_secs() as i64;
    let lifetime = (validity.not_after_s - signed).max(0);
    signed + lifetime * 2 / 3
}

fn tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

/// Reads `STATE/tls/` when it holds a certificate for `cluster`; `None` when it holds none.
fn load(
    state_dir: &Path,
    cluster: &str,
    enrollment: &Enrollment,
) -> Result<Option<Current>, AgentError> {
    let dir = tls_dir(state_dir);
    let files = TlsFiles {
        ca: enrollment.ca.clone(),
        cert: dir.join(CERTIFICATE_FILE),
        key: dir.join(KEY_FILE),
    };
    if !files.cert.exists() {
        return Ok(None);
    }
    let credentials = Credentials::load(&files, enrollment.trust_domain.as_ref())
        .map_err(|e| AgentError::Identity(e.to_string()))?;
    if credentials.principal != Principal::Cluster(cluster.to_string()) {
        return Err(AgentError::Identity(format!(
            "{} names {}, not cluster {cluster}: this state directory belongs to another \
             cluster's agent",
            files.cert.display(),
            credentials.principal
        )));
    }
    let validity = fleet_identity::tls::validity(&credentials.chain[0]).ok_or_else(|| {
        AgentError::Identity(format!(
            "{}: the certificate does not parse",
            files.cert.display()
        ))
    })?;
    Ok(Some(Current {
        credentials,
        validity,
    }))
}

/// Writes the key (0600) and then the certificate into `STATE/tls/`, each whole through a
/// temporary file and a rename.
fn store(state_dir: &Path, key_pem: &str, certificate_pem: &str) -> Result<(), AgentError> {
    let issued = fleet_identity::pki::Issued {
        cert_pem: certificate_pem.to_string(),
        key_pem: key_pem.to_string(),
    };
    issued
        .write(&tls_dir(state_dir), "agent")
        .map(|_| ())
        .map_err(|e| AgentError::Identity(e.to_string()))
}

/// Asks `endpoints` in turn for a certificate for a new key, over `transport`, with
/// `join_token` when given; stores it and answers the credentials read back.
async fn request(
    cluster: &str,
    endpoints: &[String],
    state_dir: &Path,
    enrollment: &Enrollment,
    transport: &Transport,
    join_token: Option<&str>,
) -> Result<Current, RequestFailed> {
    let owned = cluster.to_string();
    let (key_pem, csr_pem) = blocking("making a key", move || {
        fleet_identity::pki::cluster_request(&owned)
            .map_err(|e| AgentError::Identity(e.to_string()))
    })
    .await
    .map_err(|e| RequestFailed {
        permanent: true,
        message: e.to_string(),
    })?;
    let mut last = RequestFailed {
        permanent: false,
        message: "no endpoint".into(),
    };
    for address in endpoints {
        let mut coordinator = match Coordinator::connect(transport, address).await {
            Ok(c) => c,
            Err(message) => {
                last = RequestFailed {
                    permanent: false,
                    message: format!("{address}: {message}"),
                };
                continue;
            }
        };
        match coordinator.request_certificate(&csr_pem, join_token).await {
            Ok(signed) => {
                let (dir, cluster, enrollment) = (
                    state_dir.to_path_buf(),
                    cluster.to_string(),
                    enrollment.clone(),
                );
                let stored = blocking("storing the certificate", move || {
                    store(&dir, &key_pem, &signed.certificate_pem)?;
                    load(&dir, &cluster, &enrollment)?
                        .ok_or_else(|| AgentError::Identity("the certificate vanished".into()))
                })
                .await;
                return stored.map_err(|e| RequestFailed {
                    permanent: true,
                    message: e.to_string(),
                });
            }
            // A used token stays used, on every node.
            Err(failed) if failed.permanent => {
                return Err(RequestFailed {
                    permanent: true,
                    message: format!("{address}: {}", failed.message),
                });
            }
            Err(failed) => {
                last = RequestFailed {
                    permanent: false,
                    message: format!("{address}: {}", failed.message),
                }
            }
        }
    }
    Err(last)
}

fn transport_of(current: &Current) -> Result<Transport, AgentError> {
    Transport::tls(&current.credentials.trust, Some(&current.credentials))
        .map_err(|e| AgentError::Identity(e.to_string()))
}

/// The agent's credentials at start: `STATE/tls/` when it holds a certificate that has not
/// expired, else a new one for the join token (retried with backoff while no coordinator
/// answers). An expired certificate without a join token is used anyway (the coordinators will
/// refuse it), with an error in the log that says what to do.
///
/// # Errors
/// `Identity` when there is no certificate and no join token, or the join token is refused
/// (used, expired, replaced), or the files cannot be read or written.
pub(crate) async fn establish(
    cluster: &str,
    endpoints: &[String],
    state_dir: &Path,
    enrollment: &Enrollment,
) -> Result<Current, AgentError> {
    let (held, used) = {
        let (dir, cluster, enrollment) = (
            state_dir.to_path_buf(),
            cluster.to_string(),
            enrollment.clone(),
        );
        blocking("reading the certificate", move || {
            let used = std::fs::read_to_string(tls_dir(&dir).join(USED_TOKEN_FILE)).ok();
            Ok((load(&dir, &cluster, &enrollment)?, used))
        })
        .await?
    };
    let expired = held
        .as_ref()
        .is_some_and(|c| c.validity.not_after_s <= now_s());
    let new_token = enrollment.join_token.as_ref().filter(|token| {
        let hash = fleet_core::access::secret_sha256(token);
        used.as_deref().map(str::trim) != Some(hash.as_str())
    });
    match (held, new_token) {
        (Some(current), None) if !expired => {
            tracing::info!(
                not_after = current.validity.not_after_s,
                "using the certificate in the state directory"
            );
            Ok(current)
        }
        (held, Some(token)) => {
            if held.is_some() {
                tracing::warn!(
                    expired,
                    "the state directory holds a certificate; enrolling again with the new join \
                     token"
                );
            }
            let anonymous =
                fleet_identity::Trust::load(&enrollment.ca, enrollment.trust_domain.as_ref())
                    .and_then(|trust| Transport::tls(&trust, None))
                    .map_err(|e| AgentError::Identity(e.to_string()))?;
            let mut backoff = Backoff::new();
            let mut refusals = 0;
            loop {
                match request(
                    cluster,
                    endpoints,
                    state_dir,
                    enrollment,
                    &anonymous,
                    Some(token),
                )
                .await
                {
                    Ok(current) => {
                        tracing::info!(
                            not_after = current.validity.not_after_s,
                            "enrolled with the join token"
                        );
                        let path = tls_dir(state_dir).join(USED_TOKEN_FILE);
                        let hash = fleet_core::access::secret_sha256(token);
                        let noted = blocking("noting the used join token", move || {
                            std::fs::write(&path, hash).map_err(|e| {
                                AgentError::Identity(format!("{}: {e}", path.display()))
                            })
                        })
                        .await;
                        if let Err(error) = noted {
                            tracing::warn!(%error, "cannot note the used join token");
                        }
                        return Ok(current);
                    }
                    // A node judges the token by the state it has applied, which may trail the
                    // leader's by a moment right after the token was made: ask again before
                    // giving up.
                    Err(failed) if failed.permanent && refusals < JOIN_TOKEN_REFUSALS => {
                        refusals += 1;
                        tracing::warn!(error = %failed.message, "the join token was refused; asking again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(failed) if failed.permanent => {
                        return Err(AgentError::Identity(format!(
                            "the join token was refused ({}); make a new one with `fleet-ctl \
                             cluster join-token {cluster}`",
                            failed.message
                        )));
                    }
                    Err(failed) => {
                        tracing::warn!(error = %failed.message, "cannot enroll yet; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        (Some(current), None) => {
            // Expired, and no new token.
            tracing::error!(
                not_after = current.validity.not_after_s,
                "{}",
                expired_advice(cluster)
            );
            Ok(current)
        }
        (None, None) => Err(AgentError::Identity(format!(
            "{} holds no certificate and no --join-token was given: make one with `fleet-ctl \
             cluster join-token {cluster}`, or give --cert and --key",
            tls_dir(state_dir).display()
        ))),
    }
}

fn expired_advice(cluster: &str) -> String {
    format!(
        "this agent's certificate has expired, so no coordinator accepts it; the agent keeps \
         enforcing its cached assignments. Make a new join token with `fleet-ctl cluster \
         join-token {cluster}` and restart the agent with --join-token"
    )
}

/// The first transport, and a task body that renews the certificate at two thirds of its
/// lifetime and sends each new transport on.
pub(crate) async fn renew_loop(
    cluster: String,
    endpoints: Vec<String>,
    state_dir: PathBuf,
    enrollment: Enrollment,
    mut current: Current,
    transport: watch::Sender<Option<Transport>>,
) {
    loop {
        let wait = renew_at(current.validity) - now_s();
        if wait > 0 {
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
        let mut backoff = Backoff::new();
        current = loop {
            let using = match transport_of(&current) {
                Ok(t) => t,
                Err(error) => {
                    tracing::error!(%error, "cannot use the current certificate to renew it");
                    return;
                }
            };
            match request(&cluster, &endpoints, &state_dir, &enrollment, &using, None).await {
                Ok(renewed) => {
                    tracing::info!(
                        not_after = renewed.validity.not_after_s,
                        "renewed the certificate"
                    );
                    break renewed;
                }
                Err(failed) => {
                    if current.validity.not_after_s <= now_s() {
                        tracing::error!(error = %failed.message, "{}", expired_advice(&cluster));
                    } else {
                        tracing::warn!(error = %failed.message, "cannot renew the certificate yet");
                    }
                    // Backoff, and at most a tenth of what is left, so that the last minutes
                    // before expiry see several attempts.
                    let left = (current.validity.not_after_s - now_s()).max(10) as u64;
                    let delay = backoff.next_delay().min(Duration::from_secs(left / 10));
                    tokio::time::sleep(delay.max(Duration::from_millis(200))).await;
                }
            }
        };
        match transport_of(&current) {
            Ok(t) => {
                transport.send_replace(Some(t));
            }
            Err(error) => tracing::error!(%error, "cannot use the renewed certificate"),
        }
    }
}

/// The transport of `current`, for the start.
pub(crate) fn first_transport(current: &Current) -> Result<Transport, AgentError> {
    transport_of(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_two_thirds_into_the_lifetime_counted_from_signing() {
        let signed = 1_000_000;
        let validity = Validity {
            not_before_s: signed - BACKDATE.as_secs() as i64,
            not_after_s: signed + 30 * 24 * 3600,
        };
        assert_eq!(renew_at(validity), signed + 20 * 24 * 3600);
        let short = Validity {
            not_before_s: signed - BACKDATE.as_secs() as i64,
            not_after_s: signed + 9,
        };
        assert_eq!(renew_at(short), signed + 6);
    }
}
