//! The agent's Git cache: one bare repository per URL under `STATE/git/`, fetched with gix only
//! when the wanted commit is not there yet (commits never change, so a cached one is final),
//! and read at the exact commit without a checkout.
//!
//! Blocking: call from `spawn_blocking`. `file://` URLs need the `git` program (gix runs
//! `git upload-pack`); https goes through gix's own client.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use fleet_core::render::{
    FileKind, MAX_RENDER_BYTES, MAX_RENDER_FILE_BYTES, MAX_RENDER_FILES, Render, RenderPath,
};
use gix::ObjectId;
use sha2::{Digest, Sha256};

use super::AgentError;

/// Refs fetched from every repository: branches and tags, so any commit reachable from them
/// arrives. A bare repository stores no refspec of its own, so they are given on each fetch.
const REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

pub struct GitCache {
    dir: PathBuf,
}

impl GitCache {
    pub fn new(state_dir: &Path) -> Self {
        GitCache {
            dir: state_dir.join("git"),
        }
    }

    fn repo_dir(&self, url: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        self.dir.join(&digest[..24])
    }

    fn open(&self, url: &str) -> Result<gix::Repository, AgentError> {
        let dir = self.repo_dir(url);
        let git =
            |e: &dyn std::fmt::Display| AgentError::Git(format!("cache {}: {e}", dir.display()));
        if dir.join("HEAD").exists() {
            gix::open(&dir).map_err(|e| git(&e))
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| git(&e))?;
            gix::init_bare(&dir).map_err(|e| git(&e))
        }
    }

    /// The files under `path` at `revision` of `url`, fetching first if the commit is not cached.
    pub fn render(&self, url: &str, revision: &str, path: &str) -> Result<Render, AgentError> {
        let id = ObjectId::from_hex(revision.as_bytes())
            .map_err(|e| AgentError::Git(format!("revision {revision}: {e}")))?;
        let repo = self.open(url)?;
        let mut kind = object_kind(&repo, id);
        if kind != Some(gix::object::Kind::Commit) {
            fetch(&repo, url)?;
            kind = object_kind(&repo, id);
        }
        match kind {
            Some(gix::object::Kind::Commit) => read_tree(&repo, id, path),
            None => Err(AgentError::UnknownCommit {
                revision: revision.to_string(),
                url: url.to_string(),
            }),
            Some(other) => Err(AgentError::NotACommit {
                revision: revision.to_string(),
                url: url.to_string(),
                what: describe_object(&repo, id, other),
            }),
        }
    }
}

/// The kind of the object `id` in the local copy, if it is there.
fn object_kind(repo: &gix::Repository, id: ObjectId) -> Option<gix::object::Kind> {
    repo.find_object(id).ok().map(|o| o.kind)
}

/// "an annotated tag of commit C", "a tree" or "a blob", for an object that is not a commit.
fn describe_object(repo: &gix::Repository, id: ObjectId, kind: gix::object::Kind) -> String {
    match kind {
        gix::object::Kind::Tag => match repo.find_object(id).map(|o| o.peel_to_commit()) {
            Ok(Ok(commit)) => format!("an annotated tag of commit {}", commit.id),
            _ => "an annotated tag that points to no commit".to_string(),
        },
        gix::object::Kind::Tree => "a tree".to_string(),
        gix::object::Kind::Blob => "a blob".to_string(),
        gix::object::Kind::Commit => "a commit".to_string(),
    }
}

fn fetch(repo: &gix::Repository, url: &str) -> Result<(), AgentError> {
    let failed = |e: &dyn std::fmt::Display| AgentError::Git(format!("fetch {url}: {e}"));
    let remote = repo
        .remote_at(url)
        .map_err(|e| failed(&e))?
        .with_refspecs(REFSPECS, gix::remote::Direction::Fetch)
        .map_err(|e| failed(&e))?;
    remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| failed(&e))?
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| failed(&e))?
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(|e| failed(&e))?;
    Ok(())
}

fn read_tree(repo: &gix::Repository, id: ObjectId, path: &str) -> Result<Render, AgentError> {
    let failed = |e: &dyn std::fmt::Display| AgentError::Git(format!("read {id}:{path}: {e}"));
    let commit = repo
        .find_object(id)
        .map_err(|e| failed(&e))?
        .try_into_commit()
        .map_err(|e| failed(&e))?;
    let root = commit.tree().map_err(|e| failed(&e))?;
    let path = path.trim_matches('/');
    let tree = if path.is_empty() {
        root
    } else {
        let entry = root
            .lookup_entry_by_path(path)
            .map_err(|e| failed(&e))?
            .ok_or_else(|| AgentError::MissingPath {
                path: path.to_string(),
                revision: id.to_string(),
            })?;
        if !entry.mode().is_tree() {
            return Err(AgentError::MissingPath {
                path: path.to_string(),
                revision: id.to_string(),
            });
        }
        entry
            .object()
            .map_err(|e| failed(&e))?
            .try_into_tree()
            .map_err(|e| failed(&e))?
    };
    let mut render = Render::new();
    let mut total = 0u64;
    let mut pending = vec![(RenderPath::new(Vec::new()), tree)];
    while let Some((prefix, tree)) = pending.pop() {
        for entry in tree.iter() {
            let entry = entry.map_err(|e| failed(&e))?;
            // Names are bytes in the tree and stay bytes: never decoded, never replaced.
            let full = prefix.join(entry.filename());
            let mode = entry.mode();
            if mode.is_tree() {
                let sub = entry
                    .object()
                    .map_err(|e| failed(&e))?
                    .try_into_tree()
                    .map_err(|e| failed(&e))?;
                pending.push((full, sub));
                continue;
            }
            if mode.is_commit() {
                // A submodule: its content is in another repository, which is not fetched.
                return Err(AgentError::Refused(format!(
                    "{full:?} at commit {id} is a submodule (a gitlink to commit {}); \
                     submodules are not fetched, so the revision cannot be applied as it is",
                    entry.oid()
                )));
            }
            let kind = if mode.is_link() {
                FileKind::Symlink
            } else if mode.is_executable() {
                FileKind::Executable
            } else {
                FileKind::Regular
            };
            let data = entry.object().map_err(|e| failed(&e))?.detach().data;
            total += data.len() as u64;
            if data.len() as u64 > MAX_RENDER_FILE_BYTES || total > MAX_RENDER_BYTES {
                return Err(AgentError::Git(format!(
                    "{full}: the render is over the limit of {MAX_RENDER_FILE_BYTES} bytes per \
                     file or {MAX_RENDER_BYTES} in total"
                )));
            }
            render.insert(full, (kind, data));
            if render.len() > MAX_RENDER_FILES {
                return Err(AgentError::Git(format!(
                    "{path} has more than {MAX_RENDER_FILES} files"
                )));
            }
        }
    }
    Ok(render)
}
