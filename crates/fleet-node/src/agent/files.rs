//! The `files` target: a workload's render written under `ROOT/<workload>/`.
//!
//! - Every write is atomic (a temporary file in the same directory, fsync, rename, fsync of the
//!   directory), so a reader sees the old file or the new one, never half of one.
//! - Only owned files are touched. The inventory of owned paths lives in
//!   `STATE/inventory/<workload>.json` and is widened *before* writing and narrowed after
//!   pruning, so a crash in between leaves nothing unowned behind.
//! - Before anything is written the whole plan is checked against the disk: no directory on the
//!   way may be a symlink (someone could point it outside ROOT), and no file may be overwritten
//!   that the agent does not own. A refused plan writes nothing.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fleet_core::render::{FileKind, Render};

use super::AgentError;

pub struct FilesTarget {
    root: PathBuf,
    inventory_dir: PathBuf,
}

/// What one pass changed on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Paths written because they were missing or differed from the render.
    pub written: Vec<String>,
    /// Owned paths removed because they left the render.
    pub removed: Vec<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Target(format!("{what} {}: {e}", path.display()))
}

impl FilesTarget {
    pub fn new(root: PathBuf, state_dir: &Path) -> Self {
        FilesTarget {
            root,
            inventory_dir: state_dir.join("inventory"),
        }
    }

    fn workload_root(&self, workload: &str) -> PathBuf {
        self.root.join(workload)
    }

    fn inventory_path(&self, workload: &str) -> PathBuf {
        self.inventory_dir.join(format!("{workload}.json"))
    }

    /// The paths this agent owns for `workload`.
    pub fn owned(&self, workload: &str) -> Result<BTreeSet<String>, AgentError> {
        let path = self.inventory_path(workload);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AgentError::Target(format!("inventory {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    /// Workloads with an inventory, whether assigned now or not.
    pub fn workloads(&self) -> Result<Vec<String>, AgentError> {
        let entries = match fs::read_dir(&self.inventory_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &self.inventory_dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io("list", &self.inventory_dir, e))?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn save_owned(&self, workload: &str, owned: &BTreeSet<String>) -> Result<(), AgentError> {
        fs::create_dir_all(&self.inventory_dir)
            .map_err(|e| io("create", &self.inventory_dir, e))?;
        let bytes = serde_json::to_vec(owned).expect("a set of strings serializes");
        write_atomic(&self.inventory_path(workload), &bytes, FileKind::Regular)
    }

    /// Makes `ROOT/<workload>/` match `render`: writes what is missing or differs, removes owned
    /// files that left it. Checks the whole plan first and writes nothing if any of it is refused.
    pub fn apply(&self, workload: &str, render: &Render) -> Result<Applied, AgentError> {
        let base = self.workload_root(workload);
        let owned = self.owned(workload)?;
        let mut to_write = Vec::new();
        for (path, (kind, content)) in render {
            let target = base.join(path);
            self.check_parents(&base, path)?;
            let current = read_current(&target)?;
            if matches!(&current, Some((k, c)) if k == kind && c == content) {
                continue;
            }
            if current.is_some() && !owned.contains(path) {
                return Err(AgentError::Refused(format!(
                    "{} exists and is not owned by this agent; move it away to let the agent \
                     manage it",
                    target.display()
                )));
            }
            to_write.push(path.clone());
        }
        let mut widened = owned.clone();
        widened.extend(render.keys().cloned());
        if widened != owned {
            self.save_owned(workload, &widened)?;
        }
        for path in &to_write {
            let (kind, content) = &render[path];
            let target = base.join(path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            write_atomic(&target, content, *kind)?;
        }
        let mut removed = Vec::new();
        for path in owned.iter().filter(|p| !render.contains_key(*p)) {
            if self.remove_owned(&base, path)? {
                removed.push(path.clone());
            }
        }
        let narrowed: BTreeSet<String> = render.keys().cloned().collect();
        if narrowed != widened {
            self.save_owned(workload, &narrowed)?;
        }
        Ok(Applied {
            written: to_write,
            removed,
        })
    }

    /// Removes every owned file of a workload that is no longer assigned, then its inventory.
    pub fn forget(&self, workload: &str) -> Result<Vec<String>, AgentError> {
        let applied = self.apply(workload, &Render::new())?;
        let path = self.inventory_path(workload);
        fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
        Ok(applied.removed)
    }

    /// The workload root and every directory between it and `path` must be real directories
    /// (or not exist yet): a symlink there could lead outside ROOT.
    fn check_parents(&self, base: &Path, path: &str) -> Result<(), AgentError> {
        let mut dir = self.root.clone();
        let mut steps = vec![
            base.file_name()
                .expect("workload root has a name")
                .to_owned(),
        ];
        let parts: Vec<&str> = path.split('/').collect();
        steps.extend(parts[..parts.len() - 1].iter().map(Into::into));
        for step in steps {
            dir.push(step);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(AgentError::Refused(format!(
                        "{} is a symlink; the agent writes only through real directories",
                        dir.display()
                    )));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(AgentError::Refused(format!(
                        "{} is not a directory, but {path} must be written below it",
                        dir.display()
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("inspect", &dir, e)),
            }
        }
        Ok(())
    }

    /// Removes an owned file and the directories it leaves empty, up to the workload root.
    fn remove_owned(&self, base: &Path, path: &str) -> Result<bool, AgentError> {
        self.check_parents(base, path)?;
        let target = base.join(path);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Ok(false),
            Ok(_) => fs::remove_file(&target).map_err(|e| io("remove", &target, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("inspect", &target, e)),
        }
        let mut dir = target.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(base) && *d != base) {
            if fs::remove_dir(d).is_err() {
                break; // Not empty (or not ours to judge): stop climbing.
            }
            dir = d.parent();
        }
        Ok(true)
    }
}

/// What is at `path` now, as a render entry; `None` if nothing (or a directory) is there.
fn read_current(path: &Path) -> Result<Option<(FileKind, Vec<u8>)>, AgentError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("inspect", path, e)),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(|e| io("read link", path, e))?;
        return Ok(Some((
            FileKind::Symlink,
            target.as_os_str().as_encoded_bytes().to_vec(),
        )));
    }
    if meta.is_dir() {
        return Err(AgentError::Refused(format!(
            "{} is a directory where the revision has a file",
            path.display()
        )));
    }
    let kind = if meta.permissions().mode() & 0o111 != 0 {
        FileKind::Executable
    } else {
        FileKind::Regular
    };
    let content = fs::read(path).map_err(|e| io("read", path, e))?;
    Ok(Some((kind, content)))
}

/// Writes `content` to a temporary name next to `path`, syncs it, renames it over `path`, and
/// syncs the directory.
pub fn write_atomic(path: &Path, content: &[u8], kind: FileKind) -> Result<(), AgentError> {
    let parent = path.parent().expect("a file path has a parent");
    let name = path
        .file_name()
        .expect("a file path has a name")
        .to_string_lossy();
    let temp = parent.join(format!(".{name}.fleet-{:016x}", fastrand::u64(..)));
    match kind {
        FileKind::Symlink => {
            let target = std::ffi::OsStr::from_bytes(content);
            std::os::unix::fs::symlink(target, &temp).map_err(|e| io("create", &temp, e))?;
        }
        FileKind::Regular | FileKind::Executable => {
            let mode = if kind == FileKind::Executable {
                0o755
            } else {
                0o644
            };
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| io("create", &temp, e))?;
            file.write_all(content).map_err(|e| io("write", &temp, e))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io("chmod", &temp, e))?;
            file.sync_all().map_err(|e| io("sync", &temp, e))?;
        }
    }
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(io("rename over", path, e));
    }
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", parent, e))
}
