//! The `files` target: a workload's render written under `ROOT/<workload>/`.
//!
//! A revision is applied whole or not at all:
//!
//! 1. **Plan** (reads only). The whole render is checked against the disk: every name against
//!    the filesystem's `NAME_MAX` and every path against `PATH_MAX`; no directory on the way
//!    may be a symlink (someone could point it outside ROOT) or a file the agent does not own;
//!    nothing the agent does not own is overwritten or removed, also inside a directory that
//!    must become a file; every symlink of the render, resolved against what the disk will
//!    hold afterwards (the render over what stays), resolves inside the workload's root. A
//!    refused plan writes nothing.
//! 2. **Stage.** Every file to write goes to a temporary file under `ROOT/.fleet-staging.<workload>/`
//!    (short fixed names, fsynced). A failure here (a full disk, say) removes the staging
//!    directory and has changed nothing under the workload's root.
//! 3. **Commit.** What is replaced or pruned is moved into the staging directory, directories
//!    are made or removed where a path changes type (file, directory, symlink, in any
//!    direction, as `git checkout` does for what it tracks), and the staged files are renamed
//!    into place. Every step is journalled; if one fails, the journal is undone in reverse and
//!    the workload's root holds exactly the previous revision again.
//! 4. **Finish.** The touched directories are fsynced and the staging directory is removed.
//!
//! Only owned paths are touched. The inventory of owned paths lives in
//! `STATE/inventory/<workload>.json` (paths as JSON strings, or byte arrays for names that are
//! not UTF-8) and is widened *before* the commit and narrowed after it, so a crash in between
//! leaves nothing unowned behind; a staging directory left by a crash is removed by the next
//! pass, which then writes whatever of the render is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fleet_core::render::{
    FileKind, Node, Render, RenderPath, directories, render_node, resolve_symlink,
};

use super::AgentError;

/// Longest path Linux accepts in one system call, terminating NUL included (`PATH_MAX` in
/// include/uapi/linux/limits.h).
pub const PATH_MAX: usize = 4096;

pub struct FilesTarget {
    root: PathBuf,
    inventory_dir: PathBuf,
}

/// What one pass changed on disk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Paths written because they were missing or differed from the render.
    pub written: Vec<RenderPath>,
    /// Owned paths removed because they left the render.
    pub removed: Vec<RenderPath>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Target(format!("{what} {}: {e}", path.display()))
}

fn os(path: &RenderPath) -> &Path {
    Path::new(OsStr::from_bytes(path.as_bytes()))
}

/// What the plan found at a path of the render.
enum Current {
    Missing,
    Same,
    /// A file or symlink with other content or kind.
    Other,
    /// A directory where the render has a file; everything in it is owned and leaves.
    Directory,
}

/// The checked plan of one pass.
struct Plan {
    /// Paths to write, in path order.
    writes: Vec<RenderPath>,
    /// Owned files and links on disk that leave the render.
    removals: Vec<RenderPath>,
    /// Directories that must go because the render has a file (or a link) there.
    directories_in_the_way: Vec<RenderPath>,
    /// Render paths with a file or link on disk to be replaced.
    replaced: BTreeSet<RenderPath>,
}

/// One step of a commit, and how to take it back.
enum Step {
    /// `from` was renamed to `to`; undo renames it back.
    Moved { from: PathBuf, to: PathBuf },
    /// The directory was made; undo removes it.
    CreatedDirectory(PathBuf),
    /// The (empty) directory was removed; undo makes it again.
    RemovedDirectory(PathBuf),
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

    fn staging_dir(&self, workload: &str) -> PathBuf {
        self.root.join(format!(".fleet-staging.{workload}"))
    }

    fn inventory_path(&self, workload: &str) -> PathBuf {
        self.inventory_dir.join(format!("{workload}.json"))
    }

    /// The paths this agent owns for `workload`.
    pub fn owned(&self, workload: &str) -> Result<BTreeSet<RenderPath>, AgentError> {
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

    fn save_owned(&self, workload: &str, owned: &BTreeSet<RenderPath>) -> Result<(), AgentError> {
        fs::create_dir_all(&self.inventory_dir)
            .map_err(|e| io("create", &self.inventory_dir, e))?;
        let bytes = serde_json::to_vec(owned).expect("a set of paths serializes");
        write_atomic(&self.inventory_path(workload), &bytes, FileKind::Regular)
    }

    /// Makes `ROOT/<workload>/` match `render`: writes what is missing or differs, removes owned
    /// files that left it. All or nothing: a refused plan or a failed write leaves the
    /// workload's root exactly as it was (see the module doc).
    pub fn apply(&self, workload: &str, render: &Render) -> Result<Applied, AgentError> {
        let base = self.workload_root(workload);
        let staging = self.staging_dir(workload);
        remove_staging(&staging)?;
        let owned = self.owned(workload)?;
        let plan = self.plan(&base, &owned, render)?;
        let desired: BTreeSet<RenderPath> = render.keys().cloned().collect();
        if plan.writes.is_empty() && plan.removals.is_empty() {
            if owned != desired {
                self.save_owned(workload, &desired)?;
            }
            return Ok(Applied::default());
        }
        let mut widened = owned.clone();
        widened.extend(desired.iter().cloned());
        if widened != owned {
            self.save_owned(workload, &widened)?;
        }
        let mut journal = Vec::new();
        let done = stage(&staging, &plan.writes, render)
            .and_then(|staged| commit(&base, &staging, &plan, &staged, &mut journal));
        if let Err(e) = done {
            let undone = undo(journal);
            let _ = fs::remove_dir_all(&staging);
            return Err(match undone {
                // The disk holds the previous revision again: so does the inventory, so a path
                // this revision would have added is not taken as owned.
                Ok(()) if widened != owned => match self.save_owned(workload, &owned) {
                    Ok(()) => e,
                    Err(save) => AgentError::Target(format!("{e}; {save}")),
                },
                Ok(()) => e,
                Err(undo) => AgentError::Target(format!(
                    "{e}; putting back the previous revision also failed: {undo}"
                )),
            });
        }
        sync_directories(&base, &journal)?;
        fs::remove_dir_all(&staging).map_err(|e| io("remove", &staging, e))?;
        if desired != widened {
            self.save_owned(workload, &desired)?;
        }
        Ok(Applied {
            written: plan.writes,
            removed: plan.removals,
        })
    }

    /// Removes every owned file of a workload that is no longer assigned, then its inventory.
    pub fn forget(&self, workload: &str) -> Result<Vec<RenderPath>, AgentError> {
        let applied = self.apply(workload, &Render::new())?;
        let path = self.inventory_path(workload);
        fs::remove_file(&path).map_err(|e| io("remove", &path, e))?;
        Ok(applied.removed)
    }

    /// Checks the whole pass against the disk and says what it will do. Reads only.
    fn plan(
        &self,
        base: &Path,
        owned: &BTreeSet<RenderPath>,
        render: &Render,
    ) -> Result<Plan, AgentError> {
        let leaving = |path: &RenderPath| owned.contains(path) && !render.contains_key(path);
        self.check_limits(base, render)?;
        check_real_directory(base)?;
        let mut plan = Plan {
            writes: Vec::new(),
            removals: Vec::new(),
            directories_in_the_way: Vec::new(),
            replaced: BTreeSet::new(),
        };
        for (path, (kind, content)) in render {
            check_parents(base, path, &leaving)?;
            match current(base, path, *kind, content, &leaving)? {
                Current::Same => continue,
                Current::Missing => {}
                Current::Directory => plan.directories_in_the_way.push(path.clone()),
                Current::Other if owned.contains(path) => {
                    plan.replaced.insert(path.clone());
                }
                Current::Other => {
                    return Err(AgentError::Refused(format!(
                        "{} exists and is not owned by this agent; move it away to let the \
                         agent manage it",
                        base.join(os(path)).display()
                    )));
                }
            }
            plan.writes.push(path.clone());
        }
        for path in owned.iter().filter(|p| !render.contains_key(*p)) {
            check_parents(base, path, &leaving)?;
            match fs::symlink_metadata(base.join(os(path))) {
                Ok(m) if !m.is_dir() => plan.removals.push(path.clone()),
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(io("inspect", &base.join(os(path)), e)),
            }
        }
        self.check_links(base, render, &leaving)?;
        Ok(plan)
    }

    /// Every name within the filesystem's `NAME_MAX` and every path within `PATH_MAX`, so a
    /// revision that cannot be written is refused before anything is.
    fn check_limits(&self, base: &Path, render: &Render) -> Result<(), AgentError> {
        let mut existing = self.root.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let name_max = nix::sys::statvfs::statvfs(existing)
            .map_err(|e| io("statvfs", existing, e.into()))?
            .name_max() as usize;
        let base_len = base.as_os_str().len();
        for path in render.keys() {
            if let Some(name) = path.components().find(|c| c.len() > name_max) {
                return Err(AgentError::Refused(format!(
                    "{path:?}: the name {:?} has {} bytes, more than the {name_max} the \
                     filesystem of {} allows",
                    RenderPath::new(name.to_vec()),
                    name.len(),
                    existing.display()
                )));
            }
            let full = base_len + 1 + path.as_bytes().len();
            if full + 1 > PATH_MAX {
                return Err(AgentError::Refused(format!(
                    "{path:?}: the path {} would have {full} bytes, more than Linux's PATH_MAX \
                     of {PATH_MAX} with its NUL",
                    base.join(os(path)).display()
                )));
            }
        }
        Ok(())
    }

    /// Every symlink of the render, resolved against what the workload's root will hold after
    /// this pass (the render, over what stays on disk), must resolve inside it.
    fn check_links(
        &self,
        base: &Path,
        render: &Render,
        leaving: &dyn Fn(&RenderPath) -> bool,
    ) -> Result<(), AgentError> {
        let dirs = directories(render);
        let lookup = |parts: &[&[u8]]| match render_node(render, &dirs, parts) {
            Node::Missing => disk_node(base, parts, leaving),
            node => node,
        };
        for (path, (kind, target)) in render {
            if *kind == FileKind::Symlink {
                resolve_symlink(path, target, &lookup).map_err(|why| {
                    AgentError::Refused(format!(
                        "the symlink {path:?} is refused: {why} (with what is on disk under {})",
                        base.display()
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// What stands on disk at `parts` below `base`, for the link check: an owned entry that leaves
/// the render counts as missing, since this pass removes it.
fn disk_node(base: &Path, parts: &[&[u8]], leaving: &dyn Fn(&RenderPath) -> bool) -> Node {
    let path = RenderPath::new(parts.join(&b'/'));
    let full = base.join(os(&path));
    match fs::symlink_metadata(&full) {
        Ok(_) if leaving(&path) => Node::Missing,
        Ok(m) if m.file_type().is_symlink() => match fs::read_link(&full) {
            Ok(target) => Node::Symlink(target.into_os_string().into_encoded_bytes()),
            Err(_) => Node::File,
        },
        Ok(m) if m.is_dir() => Node::Directory,
        Ok(_) => Node::File,
        Err(_) => Node::Missing,
    }
}

/// Nothing stands at a path: it is missing, or a parent is a file (ENOTDIR), as when an owned
/// file that leaves the render sits where a directory will be.
fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENOTDIR)
}

/// `dir` must be a real directory (or not exist yet).
fn check_real_directory(dir: &Path) -> Result<(), AgentError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(AgentError::Refused(format!(
            "{} is a symlink; the agent writes only through real directories",
            dir.display()
        ))),
        Ok(m) if !m.is_dir() => Err(AgentError::Refused(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("inspect", dir, e)),
    }
}

/// Every directory between the workload root and `path` must be a real directory, not exist
/// yet, or be an owned file or link that leaves the render (it is replaced by the directory).
fn check_parents(
    base: &Path,
    path: &RenderPath,
    leaving: &dyn Fn(&RenderPath) -> bool,
) -> Result<(), AgentError> {
    let parts: Vec<&[u8]> = path.components().collect();
    for end in 1..parts.len() {
        let parent = RenderPath::new(parts[..end].join(&b'/'));
        let dir = base.join(os(&parent));
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) if leaving(&parent) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(AgentError::Refused(format!(
                    "{} is a symlink the agent does not own; the agent writes only through real \
                     directories",
                    dir.display()
                )));
            }
            Ok(_) => {
                return Err(AgentError::Refused(format!(
                    "{} is a file the agent does not own, but {path:?} must be written below it; \
                     move it away",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("inspect", &dir, e)),
        }
    }
    Ok(())
}

/// What stands at a path of the render now.
fn current(
    base: &Path,
    path: &RenderPath,
    kind: FileKind,
    content: &[u8],
    leaving: &dyn Fn(&RenderPath) -> bool,
) -> Result<Current, AgentError> {
    let full = base.join(os(path));
    let meta = match fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if gone(&e) => return Ok(Current::Missing),
        Err(e) => return Err(io("inspect", &full, e)),
    };
    if meta.is_dir() {
        check_directory_leaves(base, path, leaving)?;
        return Ok(Current::Directory);
    }
    let on_disk = read_current(&full, &meta)?;
    Ok(if on_disk.0 == kind && on_disk.1 == content {
        Current::Same
    } else {
        Current::Other
    })
}

/// A directory where the render has a file may go only if everything in it is owned and
/// leaves the render; otherwise the pass is refused, naming what is not.
fn check_directory_leaves(
    base: &Path,
    dir: &RenderPath,
    leaving: &dyn Fn(&RenderPath) -> bool,
) -> Result<(), AgentError> {
    let full = base.join(os(dir));
    let entries = fs::read_dir(&full).map_err(|e| io("list", &full, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("list", &full, e))?;
        let path = dir.join(entry.file_name().as_bytes());
        let kind = entry
            .file_type()
            .map_err(|e| io("inspect", &entry.path(), e))?;
        if kind.is_dir() {
            check_directory_leaves(base, &path, leaving)?;
        } else if !leaving(&path) {
            return Err(AgentError::Refused(format!(
                "{} is a directory where the revision has a file, and {} in it is not owned by \
                 this agent; move it away",
                full.display(),
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// The kind and content of a file or link (not a directory).
fn read_current(path: &Path, meta: &fs::Metadata) -> Result<(FileKind, Vec<u8>), AgentError> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(|e| io("read link", path, e))?;
        return Ok((
            FileKind::Symlink,
            target.into_os_string().into_encoded_bytes(),
        ));
    }
    let kind = if meta.permissions().mode() & 0o111 != 0 {
        FileKind::Executable
    } else {
        FileKind::Regular
    };
    let content = fs::read(path).map_err(|e| io("read", path, e))?;
    Ok((kind, content))
}

/// Removes a staging directory left by an earlier pass that did not finish.
fn remove_staging(staging: &Path) -> Result<(), AgentError> {
    match fs::symlink_metadata(staging) {
        Ok(m) if m.is_dir() => {
            tracing::warn!(dir = %staging.display(), "removing a staging directory an earlier pass left");
            fs::remove_dir_all(staging).map_err(|e| io("remove", staging, e))
        }
        Ok(_) => fs::remove_file(staging).map_err(|e| io("remove", staging, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("inspect", staging, e)),
    }
}

/// Writes every file of `writes` into the staging directory, each synced. Returns the staged
/// file of each path.
fn stage(
    staging: &Path,
    writes: &[RenderPath],
    render: &Render,
) -> Result<BTreeMap<RenderPath, PathBuf>, AgentError> {
    fs::create_dir_all(staging).map_err(|e| io("create", staging, e))?;
    let mut staged = BTreeMap::new();
    for (n, path) in writes.iter().enumerate() {
        let (kind, content) = &render[path];
        let file = staging.join(format!("new-{n}"));
        write_new(&file, content, *kind)
            .map_err(|e| AgentError::Target(format!("staging {path:?} failed: {e}")))?;
        staged.insert(path.clone(), file);
    }
    sync_directory(staging)?;
    Ok(staged)
}

fn rename(from: &Path, to: &Path, journal: &mut Vec<Step>) -> Result<(), AgentError> {
    fs::rename(from, to).map_err(|e| {
        AgentError::Target(format!(
            "rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    journal.push(Step::Moved {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
    });
    Ok(())
}

/// Moves what leaves or is in the way out, makes directories, and renames the staged files
/// into place; every step journalled.
fn commit(
    base: &Path,
    staging: &Path,
    plan: &Plan,
    staged: &BTreeMap<RenderPath, PathBuf>,
    journal: &mut Vec<Step>,
) -> Result<(), AgentError> {
    let mut backups = 0usize;
    let mut backup = || {
        backups += 1;
        staging.join(format!("old-{backups}"))
    };
    // Owned files and links that leave: moved out (undo puts them back).
    for path in &plan.removals {
        rename(&base.join(os(path)), &backup(), journal)?;
    }
    // Directories in the way of a file: empty now (everything in them left), removed deepest
    // first.
    for path in &plan.directories_in_the_way {
        remove_tree_of_directories(&base.join(os(path)), journal)?;
    }
    for path in &plan.writes {
        let target = base.join(os(path));
        if plan.replaced.contains(path) {
            rename(&target, &backup(), journal)?;
        }
        create_directories(target.parent().expect("a path below the base"), journal)?;
        rename(&staged[path], &target, journal)?;
    }
    // Directories that the removals left empty go too, up to the workload root.
    for path in &plan.removals {
        let mut dir = base.join(os(path));
        while let Some(parent) = dir.parent().filter(|d| d.starts_with(base) && *d != base) {
            dir = parent.to_path_buf();
            if fs::remove_dir(&dir).is_err() {
                break; // Not empty, or gone already: stop climbing.
            }
            journal.push(Step::RemovedDirectory(dir.clone()));
        }
    }
    Ok(())
}

/// Removes a tree that holds only directories, deepest first.
fn remove_tree_of_directories(dir: &Path, journal: &mut Vec<Step>) -> Result<(), AgentError> {
    for entry in fs::read_dir(dir).map_err(|e| io("list", dir, e))? {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        remove_tree_of_directories(&entry.path(), journal)?;
    }
    fs::remove_dir(dir).map_err(|e| io("remove", dir, e))?;
    journal.push(Step::RemovedDirectory(dir.to_path_buf()));
    Ok(())
}

/// Makes `dir` and the missing directories above it, top down.
fn create_directories(dir: &Path, journal: &mut Vec<Step>) -> Result<(), AgentError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        fs::create_dir(&dir).map_err(|e| io("create", &dir, e))?;
        journal.push(Step::CreatedDirectory(dir));
    }
    Ok(())
}

/// Takes a commit back, newest step first.
fn undo(journal: Vec<Step>) -> Result<(), AgentError> {
    let mut first_error = None;
    for step in journal.into_iter().rev() {
        let result = match &step {
            Step::Moved { from, to } => fs::rename(to, from).map_err(|e| io("move back", to, e)),
            Step::CreatedDirectory(dir) => fs::remove_dir(dir).map_err(|e| io("remove", dir, e)),
            Step::RemovedDirectory(dir) => fs::create_dir(dir).map_err(|e| io("create", dir, e)),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot undo a step of a failed revision");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// fsyncs every directory whose entries a commit changed, so the new names are durable.
fn sync_directories(base: &Path, journal: &[Step]) -> Result<(), AgentError> {
    let mut dirs = BTreeSet::new();
    for step in journal {
        match step {
            Step::Moved { from, to } => {
                dirs.extend(from.parent().map(Path::to_path_buf));
                dirs.extend(to.parent().map(Path::to_path_buf));
            }
            Step::CreatedDirectory(dir) | Step::RemovedDirectory(dir) => {
                dirs.extend(dir.parent().map(Path::to_path_buf));
            }
        }
    }
    for dir in dirs.iter().filter(|d| d.starts_with(base) && d.exists()) {
        sync_directory(dir)?;
    }
    Ok(())
}

fn sync_directory(dir: &Path) -> Result<(), AgentError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync", dir, e))
}

/// Creates `path` (which must not exist) with `content` and `kind`, synced.
fn write_new(path: &Path, content: &[u8], kind: FileKind) -> Result<(), AgentError> {
    match kind {
        FileKind::Symlink => {
            std::os::unix::fs::symlink(OsStr::from_bytes(content), path)
                .map_err(|e| io("create", path, e))?;
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
                .open(path)
                .map_err(|e| io("create", path, e))?;
            file.write_all(content).map_err(|e| io("write", path, e))?;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io("chmod", path, e))?;
            file.sync_all().map_err(|e| io("sync", path, e))?;
        }
    }
    Ok(())
}

/// Writes `content` to a temporary name next to `path` (a short fixed-length name, so any
/// name the filesystem takes also works here), syncs it, renames it over `path`, and syncs
/// the directory.
pub fn write_atomic(path: &Path, content: &[u8], kind: FileKind) -> Result<(), AgentError> {
    let parent = path.parent().expect("a file path has a parent");
    let temp = parent.join(format!(".fleet-tmp-{:016x}", fastrand::u64(..)));
    write_new(&temp, content, kind)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(io("rename over", path, e));
    }
    sync_directory(parent)
}
