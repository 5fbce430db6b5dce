//! What an agent renders from a commit, and the pure checks on it: every path stays inside the
//! workload's root, symlinks included (resolved as the filesystem will resolve them), nothing
//! stands in for content the repository does not hold, and the render hash is a digest of
//! exactly what was rendered.
//!
//! Paths are bytes, as Git stores them in a tree and as Unix stores them in a directory: a name
//! that is not UTF-8 is kept as it is, never replaced. Where a path must be shown as text it is
//! escaped ([`RenderPath`]'s `Display`), so two different names never show the same.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;
use crate::limits::MAX_SYMLINK_FOLLOWS;
pub use crate::limits::{MAX_RENDER_BYTES, MAX_RENDER_FILE_BYTES, MAX_RENDER_FILES};

/// How a rendered file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Regular,
    Executable,
    /// The content is the link target.
    Symlink,
}

/// A path relative to the workload's root: `/`-separated bytes, exactly as in the Git tree.
///
/// Ordered by bytes (for UTF-8 paths the same order as `str`). Serialized as a JSON string when
/// it is UTF-8 and as an array of bytes otherwise, so every path survives a round trip.
/// `Display` escapes: `\` as `\\`, control characters as Rust escapes, bytes that are not
/// UTF-8 as `\xNN`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RenderPath(Vec<u8>);

impl RenderPath {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        RenderPath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as text, when it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The `/`-separated components, as stored (empty ones included).
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        self.components().last().unwrap_or_default()
    }

    /// `self/name`.
    pub fn join(&self, name: &[u8]) -> RenderPath {
        let mut bytes = self.0.clone();
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name);
        RenderPath(bytes)
    }
}

impl From<&str> for RenderPath {
    fn from(path: &str) -> Self {
        RenderPath(path.as_bytes().to_vec())
    }
}

impl From<String> for RenderPath {
    fn from(path: String) -> Self {
        RenderPath(path.into_bytes())
    }
}

/// Writes `bytes` as text, escaping what is not printable UTF-8 (see [`RenderPath`]).
pub fn escape_bytes(bytes: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.write_str("\\\\")?,
                c if c.is_control() => write!(out, "{}", c.escape_default())?,
                c => out.write_char(c)?,
            }
        }
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for RenderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_bytes(&self.0, f)
    }
}

impl fmt::Debug for RenderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl Serialize for RenderPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.collect_seq(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for RenderPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match Form::deserialize(d)? {
            Form::Text(text) => RenderPath(text.into_bytes()),
            Form::Bytes(bytes) => RenderPath(bytes),
        })
    }
}

/// The files of one workload at one revision, by path relative to the workload's root. A
/// `BTreeMap`, so every walk over it is in one deterministic order.
pub type Render = BTreeMap<RenderPath, (FileKind, Vec<u8>)>;

/// Hex SHA-256 over every path, kind and content in path order.
pub fn render_hash(render: &Render) -> String {
    let mut hasher = Sha256::new();
    for (path, (kind, content)) in render {
        hasher.update((path.as_bytes().len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update([*kind as u8]);
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content);
    }
    hex::encode(hasher.finalize())
}

fn refused(path: &RenderPath, why: impl Into<String>) -> CoreError {
    CoreError::FailedPrecondition {
        message: format!("refused to render {path:?}: {}", why.into()),
        hint: "keep every file and symlink target inside the workload's path".into(),
    }
}

/// The components of a relative path, or why it is not one that stays inside the root.
fn components(path: &RenderPath) -> Result<Vec<&[u8]>, String> {
    if path.as_bytes().is_empty() {
        return Err("the path is empty".into());
    }
    if path.as_bytes().starts_with(b"/") {
        return Err("the path is absolute".into());
    }
    let mut parts = Vec::new();
    for part in path.components() {
        match part {
            b"" | b"." => return Err("the path has an empty or `.` component".into()),
            b".." => return Err("the path has a `..` component".into()),
            p if p.contains(&0) => return Err("the path has a NUL byte".into()),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/').map(<[u8]>::to_vec)
}

/// What stands at a path, as [`resolve_symlink`] asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Directory,
    /// A regular file (or anything else that is not a directory or a symlink).
    File,
    /// A symlink with this target.
    Symlink(Vec<u8>),
    Missing,
}

/// Why a symlink was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The target, or the target of a link it passes through, is absolute.
    Absolute { target: Vec<u8> },
    /// Resolving it goes above the workload's root.
    Escapes,
    /// More than [`MAX_SYMLINK_FOLLOWS`] links on the way: a loop, or a chain too long.
    TooManyLinks,
    /// The target is empty (Linux refuses to resolve it: ENOENT).
    Empty,
}

impl fmt::Display for LinkRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRefusal::Absolute { target } => {
                f.write_str("it resolves through the absolute path \"")?;
                escape_bytes(target, f)?;
                f.write_str("\"")
            }
            LinkRefusal::Escapes => f.write_str("it resolves outside the workload's root"),
            LinkRefusal::TooManyLinks => write!(
                f,
                "it passes more than {MAX_SYMLINK_FOLLOWS} symlinks (a loop, or a chain too long)"
            ),
            LinkRefusal::Empty => f.write_str("its target is empty"),
        }
    }
}

/// Resolves the symlink at `link` (whose target is `target`) the way Linux's path walk does
/// (fs/namei.c): component by component from the link's directory, `..` going to the physical
/// parent, every symlink on the way followed, at most [`MAX_SYMLINK_FOLLOWS`] of them (Linux's
/// `MAXSYMLINKS`). `lookup` says what stands at a path given as components from the root.
///
/// Returns `Ok` when the link resolves to a place inside the root, or to nowhere (a missing
/// component below which `..` stays inside the root, lexically; a file used as a directory).
/// Once a component is missing, the rest is resolved lexically: anything made there later is
/// checked when the link is checked again.
pub fn resolve_symlink(
    link: &RenderPath,
    target: &[u8],
    lookup: &dyn Fn(&[&[u8]]) -> Node,
) -> Result<(), LinkRefusal> {
    if target.is_empty() {
        return Err(LinkRefusal::Empty);
    }
    if target.starts_with(b"/") {
        return Err(LinkRefusal::Absolute {
            target: target.to_vec(),
        });
    }
    // Where the walk stands, as components from the root: the link's directory at first.
    let mut path: Vec<Vec<u8>> = link.components().map(<[u8]>::to_vec).collect();
    path.pop();
    let mut pending: VecDeque<Vec<u8>> = split(target).collect();
    let mut follows = 0usize;
    let mut missing = false;
    while let Some(component) = pending.pop_front() {
        match component.as_slice() {
            b"" | b"." => {}
            b".." => {
                if path.pop().is_none() {
                    return Err(LinkRefusal::Escapes);
                }
            }
            _ => {
                path.push(component);
                if missing {
                    continue;
                }
                let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                match lookup(&parts) {
                    Node::Directory => {}
                    Node::Missing => missing = true,
                    // `file/...` fails with ENOTDIR: it resolves nowhere.
                    Node::File => {
                        if pending.iter().any(|c| !c.is_empty() && c != b".") {
                            return Ok(());
                        }
                    }
                    Node::Symlink(next) => {
                        follows += 1;
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(LinkRefusal::TooManyLinks);
                        }
                        if next.is_empty() {
                            return Err(LinkRefusal::Empty);
                        }
                        if next.starts_with(b"/") {
                            return Err(LinkRefusal::Absolute { target: next });
                        }
                        // The link's own name is replaced by its target, read from its directory.
                        path.pop();
                        for part in split(&next).rev() {
                            pending.push_front(part);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The directories a render implies (every proper prefix of a path), as components: what
/// [`render_node`] takes.
pub fn directories(render: &Render) -> BTreeSet<Vec<&[u8]>> {
    let mut dirs = BTreeSet::new();
    for path in render.keys() {
        let parts: Vec<&[u8]> = path.components().collect();
        for end in 1..parts.len() {
            dirs.insert(parts[..end].to_vec());
        }
    }
    dirs
}

/// What stands at `parts` in `render` (its files, links and implied directories).
pub fn render_node(render: &Render, dirs: &BTreeSet<Vec<&[u8]>>, parts: &[&[u8]]) -> Node {
    let path = RenderPath(parts.join(&b'/'));
    match render.get(&path) {
        Some((FileKind::Symlink, target)) => Node::Symlink(target.clone()),
        Some(_) => Node::File,
        None if dirs.contains(parts) => Node::Directory,
        None => Node::Missing,
    }
}

/// The first line of a Git LFS pointer file (git-lfs docs/spec.md: "the first key is always
/// version", and pointers are under 1024 bytes).
const LFS_POINTER_START: &[u8] = b"version https://git-lfs.github.com/spec/v1\n";
/// git-lfs reads at most this many bytes to decide whether a blob is a pointer (spec.md).
const LFS_POINTER_MAX_BYTES: usize = 1024;

/// True when `content` is a Git LFS pointer rather than the file it stands for.
pub fn is_lfs_pointer(content: &[u8]) -> bool {
    content.len() < LFS_POINTER_MAX_BYTES && content.starts_with(LFS_POINTER_START)
}

/// Checks a render before anything is written: sizes, paths that are relative and without `..`,
/// no file below another file, no Git LFS pointer standing in for its content, and symlinks
/// that resolve (following the render's own links) inside the root.
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
        if *kind != FileKind::Symlink && is_lfs_pointer(content) {
            return Err(CoreError::FailedPrecondition {
                message: format!(
                    "refused to render {path:?}: it is a Git LFS pointer, and LFS objects are \
                     not fetched"
                ),
                hint: "commit the file itself, not through Git LFS".into(),
            });
        }
        // A file may not sit below another file (`a` and `a/b`).
        for end in 1..parts.len() {
            let parent = RenderPath(parts[..end].join(&b'/'));
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
    let dirs = directories(render);
    let lookup = |parts: &[&[u8]]| render_node(render, &dirs, parts);
    for (path, (kind, target)) in render {
        if *kind == FileKind::Symlink {
            resolve_symlink(path, target, &lookup).map_err(|why| {
                let mut shown = String::new();
                escape_bytes(target, &mut shown).expect("writing to a String");
                refused(
                    path,
                    format!("the symlink to \"{shown}\" is refused: {why}"),
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(files: &[(&str, FileKind, &str)]) -> Render {
        files
            .iter()
            .map(|(p, k, c)| (RenderPath::from(*p), (*k, c.as_bytes().to_vec())))
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
        for target in [
            "/etc/passwd",
            "../../outside",
            "../../../x",
            "a/../../..",
            "",
        ] {
            let r = render(&[("conf/link", FileKind::Symlink, target)]);
            let error = check_render(&r).unwrap_err();
            assert!(error.to_string().contains("symlink"), "{target}: {error}");
        }
        for target in ["../other.conf", "sibling", "./x/../y", ".."] {
            check_render(&render(&[("conf/link", FileKind::Symlink, target)])).unwrap();
        }
    }

    #[test]
    fn a_chain_of_symlinks_that_escapes_through_another_link_is_refused() {
        // The link text alone stays inside (six `a/l` climb as far as the twelve `..` fall),
        // but `a/l` is itself a link to `..`, so every `a/l` stays at the root.
        let chain = "a/l/a/l/a/l/a/l/a/l/a/l/../../../../../../../../../../../../etc/passwd";
        let r = render(&[
            ("a/l", FileKind::Symlink, ".."),
            ("pw", FileKind::Symlink, chain),
        ]);
        let error = check_render(&r).unwrap_err().to_string();
        assert!(
            error.contains("\"pw\"") && error.contains("outside"),
            "{error}"
        );
    }

    #[test]
    fn symlink_loops_are_refused() {
        let r = render(&[("a", FileKind::Symlink, "b"), ("b", FileKind::Symlink, "a")]);
        let error = check_render(&r).unwrap_err().to_string();
        assert!(error.contains("loop"), "{error}");
        let r = render(&[("self", FileKind::Symlink, "self/x")]);
        assert!(check_render(&r).is_err());
    }

    #[test]
    fn a_link_through_a_link_to_an_absolute_path_is_refused() {
        let r = render(&[
            ("abs", FileKind::Symlink, "/etc"),
            ("d/pw", FileKind::Symlink, "../abs/passwd"),
        ]);
        let error = check_render(&r).unwrap_err().to_string();
        assert!(error.contains("absolute"), "{error}");
    }

    #[test]
    fn names_that_are_not_utf8_stay_distinct_and_show_escaped() {
        let mut r = Render::new();
        r.insert(
            RenderPath::new(b"a\xff.conf".to_vec()),
            (FileKind::Regular, b"1".to_vec()),
        );
        r.insert(
            RenderPath::new(b"a\xfe.conf".to_vec()),
            (FileKind::Regular, b"2".to_vec()),
        );
        check_render(&r).unwrap();
        assert_eq!(r.len(), 2);
        let shown: Vec<String> = r.keys().map(ToString::to_string).collect();
        assert_eq!(shown, ["a\\xfe.conf", "a\\xff.conf"]);
        assert_eq!(RenderPath::from("a\\b\n").to_string(), "a\\\\b\\n");
        for path in r.keys() {
            let json = serde_json::to_string(path).unwrap();
            assert_eq!(&serde_json::from_str::<RenderPath>(&json).unwrap(), path);
        }
        assert_eq!(
            serde_json::to_string(&RenderPath::from("a/b")).unwrap(),
            "\"a/b\""
        );
    }

    #[test]
    fn a_git_lfs_pointer_is_refused_naming_the_path() {
        let pointer = "version https://git-lfs.github.com/spec/v1\n\
                       oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
                       size 12345\n";
        let r = render(&[("img/logo.png", FileKind::Regular, pointer)]);
        let error = check_render(&r).unwrap_err().to_string();
        assert!(
            error.contains("img/logo.png") && error.contains("LFS"),
            "{error}"
        );
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
