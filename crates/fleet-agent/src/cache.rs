//! What the agent keeps in its state directory so that it can work with every coordinator
//! unreachable, also after a restart (static stability):
//!
//! | path | content |
//! |---|---|
//! | `assignments.json` | the newest assignment set received, with its version |
//! | `renders/<workload>.json` | revision, render hash and a list of `[path, kind, SHA-256]` of the last good render |
//! | `objects/<sha256>` | file contents, by digest |
//! | `inventory/<workload>.json` | paths the files target owns (see [`super::files`]) |
//! | `git/<digest of URL>/` | the bare repository cache (see [`super::git`]) |
//!
//! Every file is written atomically; a cached render is only used if every object is present
//! and its hash matches.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleet_core::render::{FileKind, Render, RenderPath, render_hash};
use fleet_core::{Assignment, Revision};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AgentError;
use super::files::write_atomic;

/// The newest assignments an agent holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub version: u64,
    pub assignments: Vec<Assignment>,
}

/// A render of one revision of one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRender {
    pub revision: Revision,
    pub hash: String,
    /// Shared, so a resync hands it to the blocking apply without copying file contents.
    pub render: Arc<Render>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    revision: Revision,
    hash: String,
    files: ManifestFiles,
}

/// `path → (kind, SHA-256 of the content)`. Written as a list, since a path that is not UTF-8
/// cannot be a JSON object key; the object form of earlier agents is still read.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ManifestFiles {
    List(Vec<(RenderPath, FileKind, String)>),
    Object(BTreeMap<String, (FileKind, String)>),
}

impl ManifestFiles {
    fn into_entries(self) -> Vec<(RenderPath, FileKind, String)> {
        match self {
            ManifestFiles::List(entries) => entries,
            ManifestFiles::Object(map) => map
                .into_iter()
                .map(|(path, (kind, digest))| (path.into(), kind, digest))
                .collect(),
        }
    }
}

pub struct Cache {
    dir: PathBuf,
}

fn cache_error(what: &str, path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Cache(format!("{what} {}: {e}", path.display()))
}

impl Cache {
    pub fn open(dir: &Path) -> Result<Self, AgentError> {
        for sub in ["renders", "objects"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| cache_error("create", &path, e))?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, AgentError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| cache_error("decode", path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cache_error("read", path, e)),
        }
    }

    pub fn load_assignments(&self) -> Result<Option<Held>, AgentError> {
        Self::read_json(&self.dir.join("assignments.json"))
    }

    pub fn save_assignments(&self, held: &Held) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(held).expect("assignments serialize");
        write_atomic(
            &self.dir.join("assignments.json"),
            &bytes,
            FileKind::Regular,
        )
    }

    fn manifest_path(&self, workload: &str) -> PathBuf {
        self.dir.join("renders").join(format!("{workload}.json"))
    }

    /// The last good render of `workload`, if it is whole.
    pub fn load_render(&self, workload: &str) -> Result<Option<CachedRender>, AgentError> {
        let Some(manifest) = Self::read_json::<Manifest>(&self.manifest_path(workload))? else {
            return Ok(None);
        };
        let mut render = Render::new();
        for (path, kind, digest) in manifest.files.into_entries() {
            let object = self.dir.join("objects").join(&digest);
            let content = fs::read(&object).map_err(|e| cache_error("read", &object, e))?;
            render.insert(path, (kind, content));
        }
        if render_hash(&render) != manifest.hash {
            return Err(AgentError::Cache(format!(
                "the cached render of {workload} does not match its hash {}",
                manifest.hash
            )));
        }
        Ok(Some(CachedRender {
            revision: manifest.revision,
            hash: manifest.hash,
            render: Arc::new(render),
        }))
    }

    pub fn save_render(&self, workload: &str, cached: &CachedRender) -> Result<(), AgentError> {
        let mut files = Vec::with_capacity(cached.render.len());
        for (path, (kind, content)) in cached.render.iter() {
            let digest = hex::encode(Sha256::digest(content));
            let object = self.dir.join("objects").join(&digest);
            if !object.exists() {
                write_atomic(&object, content, FileKind::Regular)?;
            }
            files.push((path.clone(), *kind, digest));
        }
        let manifest = Manifest {
            revision: cached.revision.clone(),
            hash: cached.hash.clone(),
            files: ManifestFiles::List(files),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_atomic(&self.manifest_path(workload), &bytes, FileKind::Regular)
    }

    pub fn forget_render(&self, workload: &str) -> Result<(), AgentError> {
        let path = self.manifest_path(workload);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(cache_error("remove", &path, e))
            }
            _ => Ok(()),
        }
    }
}
