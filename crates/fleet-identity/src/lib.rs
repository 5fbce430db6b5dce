//! Who is who in a fleet: the built-in CA ([`pki`]) that issues X.509-SVIDs to coordinators,
//! agents and operators, and mutual TLS for the gRPC API ([`tls`]): the server's and clients'
//! rustls configurations, the per-request authentication of client certificates, and tonic
//! channels over TLS. The principals themselves, and their SPIFFE IDs, are fleet-core's
//! ([`fleet_core::principal`]).

pub mod contexts;
pub mod error;
pub mod limits;
pub mod pki;
pub mod tls;

pub use error::IdentityError;
pub use tls::{Authenticator, Credentials, TlsFiles, Transport, Trust, Unauthenticated};
