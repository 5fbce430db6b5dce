//! Authentication, in front of every service: one interceptor reads the client certificate of
//! the TLS connection, judges it ([`fleet_identity::Authenticator`]) and attaches the
//! [`Caller`] to the request; handlers read it back with [`caller`] and [`actor`]. Nothing
//! reaches a handler without a caller.

use std::sync::Arc;

use fleet_core::Principal;
use fleet_identity::Authenticator;
use tonic::{Code, Request, Status};

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client whose certificate the fleet's CA issued.
    Authenticated(Principal),
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
            Caller::Plaintext => "unauthenticated".into(),
        }
    }
}

/// The interceptor: TLS nodes authenticate every request, plaintext nodes mark it
/// [`Caller::Plaintext`].
#[derive(Clone)]
pub struct Authenticate(pub Option<Arc<Authenticator>>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match &self.0 {
            None => Caller::Plaintext,
            Some(authenticator) => {
                let chain = request.peer_certs();
                let chain = chain.as_deref().map(Vec::as_slice).unwrap_or(&[]);
                match authenticator.authenticate(chain) {
                    Ok(principal) => Caller::Authenticated(principal),
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
