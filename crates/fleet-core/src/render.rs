//! What an agent renders from a commit, and the pure checks on it: every path stays inside the
//! workload's root, symlinks included, and the render hash is a digest of exactly what was
//! rendered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;

/// Most files one render may hold.
pub const MAX_RENDER_FILES: usize = 10_000;
/// Largest single file of a render.
pub const MAX_RENDER_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest render in total.
pub const MAX_RENDER_BYTES: u64 = 256 * 1024 * 1024;

/// How a rendered file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Regular,
    Executable,
    /// The content is the link target.
    Symlink,
}

/// The files of one workload at one revision, by path relative to the workload's root
/// (`/`-separated). A `BTreeMap`, so every walk over it is in one deterministic order.
pub type Render = BTreeMap<String, (FileKind, Vec<u8>)>;

/// Hex SHA-256 over every path, kind and content in path order.
pub fn render_hash(render: &Render) -> String {
    let mut hasher = Sha256::new();
    for (path, (kind, content)) in render {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update([*kind as u8]);
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hex::encode(hasher.finalize())
}

fn refused(path: &str, why: impl Into<String>) -> CoreError {
    CoreError::FailedPrecondition {
        message: format!("refused to render {path:?}: {}", why.into()),
        hint: "keep every file and symlink target inside the workload's path".into(),
    }
}

/// The normal components of a relative path, or why it is not one that stays inside the root.
fn components(path: &str) -> Result<Vec<&str>, String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.starts_with('/') {
        return Err("the path is absolute".into());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => return Err("the path has an empty or `.` component".into()),
            ".." => return Err("the path has a `..` component".into()),
            p if p.contains('\0') => return Err("the path has a NUL byte".into()),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

/// Checks a render before anything is written: sizes, paths that are relative and without `..`,
/// and symlinks whose targets, resolved from the link's directory, stay inside the root.
pub fn check_render(render: &Render) -> Result<(), CoreError> {
    if render.len() > MAX_RENDER_FILES {
        return Err(CoreError::FailedPrecondition {
            message: format!(
                "the render has {} files, the limit is {MAX_RENDER_FILES}",
                render.len()
            ),
            hint: "split the workload".into(),
        });
    }
    let mut total = 0u64;
    for (path, (kind, content)) in render {
        let parts = components(path).map_err(|why| refused(path, why))?;
        let size = content.len() as u64;
        if size > MAX_RENDER_FILE_BYTES {
            return Err(refused(
                path,
                format!("{size} bytes is over the limit of {MAX_RENDER_FILE_BYTES} per file"),
            ));
        }
        total += size;
        if *kind == FileKind::Symlink {
            let target = String::from_utf8_lossy(content);
            if target.starts_with('/') {
                return Err(refused(
                    path,
                    format!("the symlink points to the absolute path {target:?}"),
                ));
            }
            // Resolve lexically from the link's directory; going above the root escapes.
            let mut depth = parts.len() as i64 - 1;
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
                if depth < 0 {
                    return Err(refused(
                        path,
                        format!("the symlink target {target:?} points outside the workload's root"),
                    ));
                }
            }
        }
        // A file may not sit below another file (`a` and `a/b`).
        for end in 1..parts.len() {
            let parent = parts[..end].join("/");
            if render.contains_key(&parent) {
                return Err(refused(
                    path,
                    format!("{parent:?} is a file, not a directory"),
                ));
            }
        }
    }
    if total > MAX_RENDER_BYTES {
        return Err(CoreError::FailedPrecondition {
            message: format!("the render has {total} bytes, the limit is {MAX_RENDER_BYTES}"),
            hint: "split the workload".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(files: &[(&str, FileKind, &str)]) -> Render {
        files
            .iter()
            .map(|(p, k, c)| (p.to_string(), (*k, c.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a"] {
            let error = check_render(&render(&[(bad, FileKind::Regular, "x")])).unwrap_err();
            assert!(error.to_string().contains("refused"), "{bad}: {error}");
        }
        check_render(&render(&[("conf/nginx.conf", FileKind::Regular, "x")])).unwrap();
    }

    #[test]
    fn symlinks_must_resolve_inside_the_root() {
        for target in ["/etc/passwd", "../../outside", "../../../x", "a/../../.."] {
            let r = render(&[("conf/link", FileKind::Symlink, target)]);
            let error = check_render(&r).unwrap_err();
            assert!(error.to_string().contains("symlink"), "{target}: {error}");
        }
        for target in ["../other.conf", "sibling", "./x/../y"] {
            check_render(&render(&[("conf/link", FileKind::Symlink, target)])).unwrap();
        }
    }

    #[test]
    fn a_file_cannot_also_be_a_directory() {
        let r = render(&[("a", FileKind::Regular, ""), ("a/b", FileKind::Regular, "")]);
        assert!(check_render(&r).is_err());
    }

    #[test]
    fn the_hash_changes_with_path_kind_or_content() {
        let base = render(&[("a", FileKind::Regular, "1")]);
        let hashes = [
            render_hash(&base),
            render_hash(&render(&[("b", FileKind::Regular, "1")])),
            render_hash(&render(&[("a", FileKind::Executable, "1")])),
            render_hash(&render(&[("a", FileKind::Regular, "2")])),
        ];
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(h.len(), 64);
            for other in &hashes[i + 1..] {
                assert_ne!(h, other);
            }
        }
        assert_eq!(render_hash(&base), hashes[0]);
    }
}
