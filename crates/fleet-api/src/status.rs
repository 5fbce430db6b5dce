//! Refusals on the wire: a gRPC status code (the codes of
//! <https://grpc.github.io/grpc/core/md_doc_statuscodes.html>), a message that names the field
//! or object, and a hint (what to do about it) in the [`HINT_METADATA`] response metadata.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::convert::WireError;

/// Response metadata carrying what to do about an error: printable ASCII, one line.
pub const HINT_METADATA: &str = "x-fleet-hint";

/// A status with `code`, `message`, and `hint` in [`HINT_METADATA`] (left out when it is not
/// valid ASCII metadata or is empty).
pub fn with_hint(code: Code, message: impl Into<String>, hint: &str) -> Status {
    let mut status = Status::new(code, message.into());
    if !hint.is_empty()
        && let Ok(value) = MetadataValue::try_from(hint)
    {
        status.metadata_mut().insert(HINT_METADATA, value);
    }
    status
}

/// The hint a status carries, if any.
pub fn hint(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(HINT_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
}

impl From<WireError> for Status {
    fn from(error: WireError) -> Status {
        with_hint(Code::InvalidArgument, error.to_string(), &error.hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_travels_in_metadata_and_reads_back() {
        let status = with_hint(Code::NotFound, "site \"oslo\" not found", "add it first");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "site \"oslo\" not found");
        assert_eq!(hint(&status), Some("add it first"));
    }

    #[test]
    fn a_hint_that_cannot_be_metadata_is_left_out_and_the_status_stands() {
        let status = with_hint(Code::InvalidArgument, "bad", "line one\nline two");
        assert_eq!(hint(&status), None);
        assert_eq!(status.message(), "bad");
        assert_eq!(hint(&with_hint(Code::Internal, "x", "")), None);
    }

    #[test]
    fn a_wire_error_is_invalid_argument_naming_the_field() {
        let status: Status = WireError {
            field: "objects.sync",
            message: "7 is not a sync state".into(),
            hint: "send SYNCED, OUT_OF_SYNC or FAILED".into(),
        }
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid objects.sync: 7 is not a sync state"
        );
        assert_eq!(hint(&status), Some("send SYNCED, OUT_OF_SYNC or FAILED"));
    }
}
