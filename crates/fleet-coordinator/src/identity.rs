//! Who this node is: `DATA_DIR/identity.json`, holding the cluster id (made at `--bootstrap`,
//! learnt from the member at `--join`) and the node id. It is written and fsynced (the file,
//! then the directory) before the node opens its store or takes part in anything, and it never
//! changes afterwards.
//!
//! ```json
//! {"format":1,"cluster_id":"9f0c…(32 hex digits)","node_id":3}
//! ```
//!
//! A data dir is in one of three states ([`inspect`]): empty (no identity, no store: the node
//! starts only with `--bootstrap` or `--join`), format 0 (a store from before identities: the
//! node writes an identity with the cluster id [`FORMAT0_CLUSTER_ID`] and its `--id`), or
//! identified.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NodeError;
pub use crate::limits::MAX_IDENTITY_BYTES;
use crate::types::NodeId;

/// The identity file's name in the data dir.
pub const IDENTITY_FILE: &str = "identity.json";
/// The format of the data dir this build writes: identity file, log entries and snapshots
/// (see `store.rs`).
pub const DATA_DIR_FORMAT: u32 = 1;
/// The cluster id given to a data dir written before identities (format 0). Every cluster
/// upgraded from format 0 has it, so the cluster-id check does not tell two such clusters
/// apart; the membership check still does.
pub const FORMAT0_CLUSTER_ID: &str = "format0";

/// The contents of `identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
}

/// What a data dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Neither an identity nor a store.
    Empty,
    /// A store from before identities.
    Format0,
    Identified(Identity),
}

fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE)
}

/// Reads what `dir` holds. Blocking.
///
/// # Errors
/// An identity file that cannot be read or parsed, or whose format is newer than this build.
pub fn inspect(dir: &Path) -> Result<DataDir, NodeError> {
    let path = identity_path(dir);
    match std::fs::File::open(&path) {
        Ok(file) => {
            let mut text = String::new();
            file.take(MAX_IDENTITY_BYTES)
                .read_to_string(&mut text)
                .map_err(|e| NodeError::Startup(format!("read {}: {e}", path.display())))?;
            let identity: Identity = serde_json::from_str(&text).map_err(|e| {
                NodeError::Startup(format!(
                    "{} is not an identity file ({e}); restore it from a backup, or treat the \
                     node as one that lost its disk (see README: recovering a node)",
                    path.display()
                ))
            })?;
            if identity.format > DATA_DIR_FORMAT {
                return Err(NodeError::Startup(format!(
                    "{} has format {}, newer than this build's {DATA_DIR_FORMAT}: run a newer \
                     fleet-node",
                    path.display(),
                    identity.format
                )));
            }
            Ok(DataDir::Identified(identity))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if crate::store::has_store(dir) {
                Ok(DataDir::Format0)
            } else {
                Ok(DataDir::Empty)
            }
        }
        Err(e) => Err(NodeError::Startup(format!("read {}: {e}", path.display()))),
    }
}

/// Writes `identity` durably: a temporary file, fsync, rename, fsync of the directory.
/// Blocking.
pub fn write(dir: &Path, identity: &Identity) -> Result<(), NodeError> {
    let path = identity_path(dir);
    let temporary = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let failed = |e: std::io::Error| NodeError::Startup(format!("write {}: {e}", path.display()));
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    let text = serde_json::to_vec(identity).expect("identities serialize");
    file.write_all(&text).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, &path).map_err(failed)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}

/// A new cluster id: 128 random bits from the kernel, as 32 hex digits.
pub fn new_cluster_id() -> Result<String, NodeError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| NodeError::Startup(format!("read /dev/urandom for a cluster id: {e}")))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_written_is_read_back_and_an_empty_dir_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), DataDir::Empty);
        let identity = Identity {
            format: DATA_DIR_FORMAT,
            cluster_id: new_cluster_id().unwrap(),
            node_id: 3,
        };
        assert_eq!(identity.cluster_id.len(), 32);
        write(dir.path(), &identity).unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), DataDir::Identified(identity));
    }

    #[test]
    fn an_identity_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            r#"{"format":2,"cluster_id":"x","node_id":1}"#,
        )
        .unwrap();
        let error = inspect(dir.path()).unwrap_err().to_string();
        assert!(error.contains("newer than this build"), "{error}");
    }
}
