//! Errors of reading, making and using certificates.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    /// A certificate cannot be made or does not name what it must.
    #[error("{0}")]
    Certificate(String),
    /// A TLS configuration cannot be built from the material given.
    #[error("tls: {0}")]
    Tls(String),
}
