//! The built-in CA: one self-signed CA per fleet that issues X.509-SVIDs (certificates whose
//! one URI SAN is the holder's SPIFFE ID) to coordinators, agents and operators.
//!
//! Files, all PEM: `ca.pem` (the CA certificate, which every node and client trusts),
//! `ca-key.pem` (its private key, mode 0600: whoever holds it can be anyone), and per issued
//! identity `NAME.pem` and `NAME-key.pem` (0600). Keys are ECDSA P-256. The CA certificate
//! carries `spiffe://TD` as its URI SAN, so that the trust domain travels with it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet_core::{Principal, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::IdentityError;

/// Lifetime of a CA made by [`Ca::generate`]: ten years.
pub const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of a coordinator's certificate: one year.
pub const COORDINATOR_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of an operator's certificate: 90 days.
pub const OPERATOR_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default lifetime of an agent's certificate: 30 days.
pub const CLUSTER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates are valid from this long before they are issued, for clocks a little behind.
pub const BACKDATE: Duration = Duration::from_millis(fleet_core::access::CERTIFICATE_BACKDATE_MS);

/// The CA: its certificate, its key and the trust domain it issues for.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    trust_domain: TrustDomain,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// When an issued certificate is valid, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before_s: i64,
    pub not_after_s: i64,
}

impl Validity {
    /// From [`BACKDATE`] before now until `ttl` after now.
    pub fn from_now(ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Validity {
            not_before_s: now - BACKDATE.as_secs() as i64,
            not_after_s: now.saturating_add(ttl.as_secs().min(i64::MAX as u64 / 2) as i64),
        }
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA for `trust_domain`, valid for [`CA_TTL`].
    pub fn generate(trust_domain: &TrustDomain) -> Result<Ca, IdentityError> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("fleet CA {trust_domain}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))?];
        set_validity(&mut params, Validity::from_now(CA_TTL))?;
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.clone(),
        })
    }

    /// Reads `ca.pem` and `ca-key.pem` from `dir`. The trust domain is the CA's `spiffe://TD`
    /// URI SAN, or `trust_domain` when given (a CA of one's own without such a SAN); when both
    /// are there they must agree.
    pub fn load(dir: &Path, trust_domain: Option<&TrustDomain>) -> Result<Ca, IdentityError> {
        Ca::load_files(&dir.join("ca.pem"), &dir.join("ca-key.pem"), trust_domain)
    }

    /// [`Ca::load`] from the CA certificate's and its key's paths (a coordinator's `--tls-ca`
    /// and `--ca-key`).
    pub fn load_files(
        cert_path: &Path,
        key_path: &Path,
        trust_domain: Option<&TrustDomain>,
    ) -> Result<Ca, IdentityError> {
        let (cert_path, key_path) = (cert_path.to_path_buf(), key_path.to_path_buf());
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Pem {
            path: key_path.clone(),
            message: format!("not a private key: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| IdentityError::Pem {
            path: cert_path.clone(),
            message: format!("not a CA certificate: {e}"),
        })?;
        let der = crate::tls::certificates(&cert_path, &cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| IdentityError::Pem {
                path: cert_path.clone(),
                message: "holds no certificate".into(),
            })?;
        let named = crate::tls::ca_trust_domain(&der);
        let trust_domain = match (named, trust_domain) {
            (Some(named), Some(given)) if &named != given => {
                return Err(IdentityError::Certificate(format!(
                    "{} is the CA of trust domain {named}, not {given}",
                    cert_path.display()
                )));
            }
            (Some(named), _) => named,
            (None, Some(given)) => given.clone(),
            (None, None) => TrustDomain::default(),
        };
        Ok(Ca {
            cert_pem,
            issuer,
            trust_domain,
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` (0600) into `dir`; refuses to overwrite either.
    pub fn write(&self, dir: &Path) -> Result<(), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write_new(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write_new(
            &dir.join("ca-key.pem"),
            &self.issuer.key().serialize_pem(),
            true,
        )
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Issues a certificate to `principal`: its SPIFFE ID as the URI SAN, digital-signature
    /// key usage, and extended key usage clientAuth; a coordinator's also carries `hosts` (IP
    /// addresses or DNS names) as SANs and serverAuth, so that it can serve.
    ///
    /// # Errors
    /// `Certificate` for a coordinator without hosts or a host that is not a DNS name.
    pub fn issue(
        &self,
        principal: &Principal,
        hosts: &[String],
        validity: Validity,
    ) -> Result<Issued, IdentityError> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let params = self.params(principal, hosts, validity)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate signing request (PKCS #10, RFC 2986, PEM) for `cluster`'s agent:
    /// the request's signature must verify (it proves the key), and everything else in it
    /// (subject, SANs, usages) is replaced by what [`Ca::issue`] gives a cluster. Returns the
    /// certificate, PEM.
    ///
    /// # Errors
    /// `Certificate` for a request that does not parse or verify.
    pub fn sign_cluster_request(
        &self,
        csr_pem: &str,
        cluster: &str,
        validity: Validity,
    ) -> Result<String, IdentityError> {
        let mut request =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
                IdentityError::Certificate(format!("the certificate signing request: {e}"))
            })?;
        request.params = self.params(&Principal::Cluster(cluster.to_string()), &[], validity)?;
        let cert = request.signed_by(&self.issuer).map_err(rcgen_error)?;
        Ok(cert.pem())
    }

    /// Whether `csr_pem` is a certificate signing request whose signature verifies, before
    /// anything is spent on it (a join token).
    ///
    /// # Errors
    /// `Certificate` naming what is wrong with it.
    pub fn check_request(csr_pem: &str) -> Result<(), IdentityError> {
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| {
                IdentityError::Certificate(format!("the certificate signing request: {e}"))
            })
    }

    fn params(
        &self,
        principal: &Principal,
        hosts: &[String],
        validity: Validity,
    ) -> Result<CertificateParams, IdentityError> {
        let spiffe_id = principal.spiffe_id(&self.trust_domain);
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spiffe_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = vec![uri(&spiffe_id)?];
        if let Principal::Coordinator(id) = principal {
            if hosts.is_empty() {
                return Err(IdentityError::Certificate(format!(
                    "coordinator {id}: give the hosts (IP addresses or DNS names) it is reached at"
                )));
            }
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            for host in hosts {
                params.subject_alt_names.push(match host.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(host.clone().try_into().map_err(|_| {
                        IdentityError::Certificate(format!(
                            "host {host:?} is neither an IP address nor a DNS name"
                        ))
                    })?),
                });
            }
        }
        set_validity(&mut params, validity)?;
        Ok(params)
    }
}

/// A new ECDSA P-256 key pair for `cluster`'s agent and a certificate signing request signed
/// with it: (the key, PEM; the request, PEM). The key never leaves the agent.
pub fn cluster_request(cluster: &str) -> Result<(String, String), IdentityError> {
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cluster);
    let request = params.serialize_request(&key).map_err(rcgen_error)?;
    Ok((key.serialize_pem(), request.pem().map_err(rcgen_error)?))
}

impl Issued {
    /// Writes `NAME.pem` and `NAME-key.pem` (0600) into `dir`, replacing older ones; returns
    /// the two paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), IdentityError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write_file(&key, &self.key_pem, true)?;
        write_file(&cert, &self.cert_pem, false)?;
        Ok((cert, key))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn uri(value: &str) -> Result<SanType, IdentityError> {
    Ok(SanType::URI(value.try_into().map_err(|_| {
        IdentityError::Certificate(format!("{value:?} is not an ASCII URI"))
    })?))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<(), IdentityError> {
    let at = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s)
            .map_err(|e| IdentityError::Certificate(format!("validity {s}: {e}")))
    };
    params.not_before = at(validity.not_before_s)?;
    params.not_after = at(validity.not_after_s.min(253_402_300_799))?;
    Ok(())
}

fn rcgen_error(e: rcgen::Error) -> IdentityError {
    IdentityError::Certificate(e.to_string())
}

fn io(path: &Path, source: std::io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

/// Writes `path` (mode 0600 when `secret`), refusing one that exists.
fn write_new(path: &Path, content: &str, secret: bool) -> Result<(), IdentityError> {
    if path.exists() {
        return Err(IdentityError::Certificate(format!(
            "{} exists; a CA is made once (move it away to make a new one, which every \
             certificate it issued then no longer matches)",
            path.display()
        )));
    }
    write_file(path, content, secret)
}

/// Writes `path` whole through a temporary file and a rename, mode 0600 when `secret`.
pub(crate) fn write_file(path: &Path, content: &str, secret: bool) -> Result<(), IdentityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&temporary)
        .map_err(|e| io(&temporary, e))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io(path, e))
}

/// A new bearer token for `name`: its text (`fleet:NAME:SECRET`, shown once) and the SHA-256
/// of its secret (what the fleet stores). The secret is 32 bytes from the crypto provider's
/// secure random source.
pub fn new_bearer_token(name: &str) -> Result<(String, String), IdentityError> {
    let secret = new_secret()?;
    Ok((
        fleet_core::access::bearer_token_text(name, &secret),
        fleet_core::access::secret_sha256(&secret),
    ))
}

/// A new one-time join token for `cluster`'s agent: its text (`fleet-join:CLUSTER:SECRET`,
/// shown once) and the SHA-256 of its secret (what the fleet keeps).
pub fn new_join_token(cluster: &str) -> Result<(String, String), IdentityError> {
    let secret = new_secret()?;
    Ok((
        fleet_core::access::join_token_text(cluster, &secret),
        fleet_core::access::secret_sha256(&secret),
    ))
}

/// 32 bytes from the crypto provider's secure random source, as 64 lowercase hex digits.
fn new_secret() -> Result<String, IdentityError> {
    let mut secret = [0u8; 32];
    crate::tls::provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| IdentityError::Tls("the secure random source failed".into()))?;
    Ok(hex::encode(secret))
}
