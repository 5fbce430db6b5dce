use thiserror::Error;

/// Why a command was refused. Every variant names what was wrong and carries a hint that says
/// what to do; a refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
pub enum CoreError {
    /// A field of the request is malformed or over a limit.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: String,
        message: String,
        hint: String,
    },
    /// The request names something that does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        kind: String,
        name: String,
        hint: String,
    },
    /// The request would create something that exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        kind: String,
        name: String,
        hint: String,
    },
    /// The request is well formed but the fleet is not in a state that allows it.
    #[error("{message}")]
    FailedPrecondition { message: String, hint: String },
    /// The actor may not do this ([`crate::access`]): the message names the actor, the action
    /// and the role it lacks.
    #[error("{message}")]
    PermissionDenied { message: String, hint: String },
}

impl CoreError {
    pub fn invalid(field: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn not_found(kind: &str, name: &str, hint: impl Into<String>) -> Self {
        CoreError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
            hint: hint.into(),
        }
    }

    pub fn already_exists(kind: &str, name: &str, hint: impl Into<String>) -> Self {
        CoreError::AlreadyExists {
            kind: kind.to_string(),
            name: name.to_string(),
            hint: hint.into(),
        }
    }

    /// What the user should do next.
    pub fn hint(&self) -> &str {
        match self {
            CoreError::InvalidArgument { hint, .. }
            | CoreError::NotFound { hint, .. }
            | CoreError::AlreadyExists { hint, .. }
            | CoreError::FailedPrecondition { hint, .. }
            | CoreError::PermissionDenied { hint, .. } => hint,
        }
    }
}
