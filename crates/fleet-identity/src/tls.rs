//! Mutual TLS for the gRPC API, with rustls and its aws-lc-rs provider.
//!
//! Server side: [`server_config`] requests a client certificate but lets the handshake finish
//! without one (a bearer token may come instead) and without judging it; [`Authenticator`]
//! judges it on every request, so that a certificate from another CA, an expired one or one
//! without a fleet SPIFFE ID is refused as UNAUTHENTICATED with a message that says which, not
//! as a TLS alert the caller cannot read. The handshake still proves that the client holds the
//! certificate's private key (rustls checks the CertificateVerify signature).
//!
//! Client side: [`client_config`] trusts the fleet's CA only, checks the server's address
//! against its DNS/IP SANs (webpki, RFC 6125), and then that its SPIFFE ID is a coordinator of
//! the trust domain; [`Transport`] makes tonic channels over it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fleet_core::{Principal, TrustDomain};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::error::IdentityError;

/// The ALPN protocol gRPC runs on (RFC 7540 section 3.3).
const ALPN_H2: &[u8] = b"h2";

/// The one crypto provider (aws-lc-rs), passed explicitly everywhere: nothing depends on a
/// process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where a node's or a client's TLS material is: the CA certificate to trust, and this side's
/// certificate and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA certificates to trust and the trust domain their identities live under.
#[derive(Clone)]
pub struct Trust {
    pub roots: Arc<RootCertStore>,
    pub trust_domain: TrustDomain,
}

/// A certificate chain, its private key, and the principal its SPIFFE ID names.
pub struct Credentials {
    pub trust: Trust,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub principal: Principal,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("trust_domain", &self.trust.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            trust: self.trust.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            principal: self.principal.clone(),
        }
    }
}

impl Trust {
    /// Reads the CA certificates in `ca`. The trust domain is `trust_domain` when given, else
    /// the `spiffe://TD` URI SAN of the first CA certificate, else [`TrustDomain::default`].
    pub fn load(ca: &Path, trust_domain: Option<&TrustDomain>) -> Result<Trust, IdentityError> {
        let pem = std::fs::read_to_string(ca).map_err(|e| IdentityError::Io {
            path: ca.to_path_buf(),
            source: e,
        })?;
        let certs = certificates(ca, &pem)?;
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| IdentityError::Pem {
                path: ca.to_path_buf(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let trust_domain = match trust_domain {
            Some(given) => given.clone(),
            None => certs.first().and_then(ca_trust_domain).unwrap_or_default(),
        };
        Ok(Trust {
            roots: Arc::new(roots),
            trust_domain,
        })
    }
}

impl Credentials {
    /// Reads `files`: the CA to trust, and this side's certificate and key. The certificate
    /// must carry a SPIFFE ID of the trust domain.
    pub fn load(
        files: &TlsFiles,
        trust_domain: Option<&TrustDomain>,
    ) -> Result<Credentials, IdentityError> {
        let trust = Trust::load(&files.ca, trust_domain)?;
        let pem = std::fs::read_to_string(&files.cert).map_err(|e| IdentityError::Io {
            path: files.cert.clone(),
            source: e,
        })?;
        let chain = certificates(&files.cert, &pem)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| IdentityError::Pem {
            path: files.key.clone(),
            message: format!("no private key: {e}"),
        })?;
        let principal = principal_of(&chain[0], &trust.trust_domain).map_err(|message| {
            IdentityError::Certificate(format!("{}: {message}", files.cert.display()))
        })?;
        Ok(Credentials {
            trust,
            chain,
            key,
            principal,
        })
    }
}

/// When `cert` is valid (its notBefore and notAfter); `None` when it does not parse.
pub fn validity(cert: &CertificateDer<'_>) -> Option<crate::pki::Validity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let v = parsed.validity();
    Some(crate::pki::Validity {
        not_before_s: v.not_before.timestamp(),
        not_after_s: v.not_after.timestamp(),
    })
}

/// Every certificate in `pem` (read from `path`, named in errors); at least one.
pub fn certificates(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::Pem {
            path: path.to_path_buf(),
            message: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// The URI SANs of a DER certificate (empty when it has none or cannot be parsed).
fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(sans)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The trust domain a CA certificate names in a `spiffe://TD` URI SAN, if it does.
pub fn ca_trust_domain(cert: &CertificateDer<'_>) -> Option<TrustDomain> {
    uri_sans(cert).iter().find_map(|uri| {
        let domain = uri.strip_prefix("spiffe://")?.trim_end_matches('/');
        TrustDomain::parse("ca", domain).ok()
    })
}

/// The principal a certificate's one SPIFFE ID names in `trust_domain`; a message saying what
/// is wrong otherwise. An X509-SVID has exactly one URI SAN (X509-SVID spec section 2).
pub fn principal_of(
    cert: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
) -> Result<Principal, String> {
    let uris = uri_sans(cert);
    match uris.as_slice() {
        [] => Err("the certificate carries no SPIFFE ID (no URI SAN)".into()),
        [one] => {
            Principal::from_spiffe_id("certificate", one, trust_domain).map_err(|e| e.to_string())
        }
        more => Err(format!(
            "the certificate carries {} URI SANs ({}); an X509-SVID has exactly one",
            more.len(),
            more.join(", ")
        )),
    }
}

/// A refusal of a caller's credentials: UNAUTHENTICATED with this message and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated {
    pub message: String,
    pub hint: String,
}

/// Judges client certificates on every request (see the module docs). A chain it accepted is
/// remembered (by the SHA-256 of its certificates, with the end entity's validity) so that
/// later requests on the same or another connection skip the signature checks until the
/// certificate's notAfter; at most [`MAX_REMEMBERED_CHAINS`], forgotten all at once when full.
pub struct Authenticator {
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
    accepted: std::sync::Mutex<HashMap<[u8; 32], Accepted>>,
}

pub use crate::limits::MAX_REMEMBERED_CHAINS;

/// A chain the authenticator accepted: whom it names and when it is valid (Unix seconds).
#[derive(Clone)]
struct Accepted {
    principal: Principal,
    not_before_s: i64,
    not_after_s: i64,
}

impl Authenticator {
    pub fn new(trust: &Trust) -> Result<Self, IdentityError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(trust.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| IdentityError::Tls(e.to_string()))?;
        Ok(Authenticator {
            verifier,
            trust_domain: trust.trust_domain.clone(),
            accepted: Default::default(),
        })
    }

    /// The principal of a client that presented `chain` (end entity first): the chain must
    /// lead to the fleet's CA, be valid now, allow clientAuth, and name one SPIFFE ID of the
    /// trust domain.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> Result<Principal, Unauthenticated> {
        self.authenticate_issued(chain)
            .map(|(principal, _)| principal)
    }

    /// [`Authenticator::authenticate`], and the end-entity certificate's notBefore (Unix
    /// seconds), by which a revocation (`fleet_core::access`) tells old certificates from new.
    pub fn authenticate_issued(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> Result<(Principal, i64), Unauthenticated> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(Unauthenticated {
                message: "no client certificate".into(),
                hint: "give a certificate: --cert and --key (or FLEET_CERT, FLEET_KEY), or a \
                       context with one (fleet-ctl config get-contexts)"
                    .into(),
            });
        };
        let key = chain_digest(chain);
        let now_s = UnixTime::now().as_secs() as i64;
        if let Some(known) = self.accepted.lock().expect("lock").get(&key)
            && (known.not_before_s..=known.not_after_s).contains(&now_s)
        {
            return Ok((known.principal.clone(), known.not_before_s));
        }
        let reissue = "get a new certificate from the fleet's CA (fleet-ctl pki issue ...)";
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map_err(|e| {
                let message = match &e {
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer | CertificateError::BadSignature,
                    ) => {
                        format!(
                            "the client certificate is not issued by a CA of trust domain {}",
                            self.trust_domain
                        )
                    }
                    rustls::Error::InvalidCertificate(
                        CertificateError::Expired | CertificateError::ExpiredContext { .. },
                    ) => format!("the client certificate has expired ({e})"),
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
                    ) => {
                        format!("the client certificate is not valid yet ({e}); check both clocks")
                    }
                    other => format!("the client certificate is refused: {other}"),
                };
                Unauthenticated {
                    message,
                    hint: reissue.into(),
                }
            })?;
        let principal =
            principal_of(end_entity, &self.trust_domain).map_err(|message| Unauthenticated {
                message,
                hint: reissue.into(),
            })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|e| {
                Unauthenticated {
                    message: format!("the client certificate cannot be read: {e}"),
                    hint: reissue.into(),
                }
            })?;
        let validity = parsed.validity();
        let not_before_s = validity.not_before.timestamp();
        let mut accepted = self.accepted.lock().expect("lock");
        if accepted.len() >= MAX_REMEMBERED_CHAINS {
            accepted.clear();
        }
        accepted.insert(
            key,
            Accepted {
                principal: principal.clone(),
                not_before_s,
                not_after_s: validity.not_after.timestamp(),
            },
        );
        Ok((principal, not_before_s))
    }
}

/// SHA-256 over every certificate of a chain, each prefixed by its length.
fn chain_digest(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for cert in chain {
        hasher.update((cert.len() as u64).to_be_bytes());
        hasher.update(cert.as_ref());
    }
    hasher.finalize().into()
}

/// Asks for a client certificate, lets the handshake finish with any or none, and leaves the
/// judgement to [`Authenticator`]. The CertificateVerify signature is still checked, so a peer
/// cannot present a certificate whose key it does not hold.
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls configuration a coordinator serves with: its own certificate, client
/// certificates requested and judged per request (module docs), ALPN h2.
pub fn server_config(own: &Credentials) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let inner = WebPkiClientVerifier::builder_with_provider(own.trust.roots.clone(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(DeferredClientVerifier { inner }))
        .with_single_cert(own.chain.clone(), own.key.clone_key())
        .map_err(|e| IdentityError::Tls(format!("the node's certificate and key: {e}")))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Checks a server as webpki does (chain to the fleet's CA, validity, the address among its
/// DNS/IP SANs), then that its SPIFFE ID is a coordinator of the trust domain.
#[derive(Debug)]
struct CoordinatorVerifier {
    inner: Arc<WebPkiServerVerifier>,
    trust_domain: TrustDomain,
}

impl ServerCertVerifier for CoordinatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match principal_of(end_entity, &self.trust_domain) {
            Ok(Principal::Coordinator(_)) => Ok(ServerCertVerified::assertion()),
            Ok(other) => Err(rustls::Error::General(format!(
                "the server is {other}, not a coordinator of trust domain {}",
                self.trust_domain
            ))),
            Err(message) => Err(rustls::Error::General(format!("the server's {message}"))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls configuration clients connect with: trust `trust`, present `own` when given
/// (operators with a token, issue-14 style, connect without one), ALPN h2.
pub fn client_config(
    trust: &Trust,
    own: Option<&Credentials>,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let inner = WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), provider())
        .build()
        .map_err(|e| IdentityError::Tls(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CoordinatorVerifier {
            inner,
            trust_domain: trust.trust_domain.clone(),
        }));
    let mut config = match own {
        Some(own) => builder
            .with_client_auth_cert(own.chain.clone(), own.key.clone_key())
            .map_err(|e| IdentityError::Tls(format!("the client certificate and key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// How a client reaches coordinators: over TLS with a client configuration, or in plaintext
/// (only where a node runs with `--insecure-plaintext`, on loopback).
#[derive(Clone)]
pub enum Transport {
    Plaintext,
    Tls(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Plaintext => f.write_str("Plaintext"),
            Transport::Tls(_) => f.write_str("Tls"),
        }
    }
}

impl Transport {
    /// Mutual TLS with `own` (or without a client certificate when `None`).
    pub fn tls(trust: &Trust, own: Option<&Credentials>) -> Result<Self, IdentityError> {
        Ok(Transport::Tls(client_config(trust, own)?))
    }

    /// An endpoint for `address` (HOST:PORT); configure it, then [`Transport::connect`].
    pub fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{address}"))
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Transport::Plaintext => endpoint.connect().await,
            Transport::Tls(config) => {
                endpoint
                    .connect_with_connector(TlsConnector(config.clone()))
                    .await
            }
        }
    }

    /// A channel to `endpoint` that connects on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Transport::Plaintext => endpoint.connect_lazy(),
            Transport::Tls(config) => {
                endpoint.connect_with_connector_lazy(TlsConnector(config.clone()))
            }
        }
    }
}

/// The error and every source under it, `: `-separated: tonic's "transport error" alone does
/// not say that a certificate was refused.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Connects TCP (no Nagle delay), then TLS with the server name from the URI's host.
#[derive(Clone)]
struct TlsConnector(Arc<rustls::ClientConfig>);

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
                    std::io::Error,
                >,
            > + Send,
    >,
>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.0.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let server_name =
                ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
