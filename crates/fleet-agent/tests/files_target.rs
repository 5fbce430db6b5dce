//! The files target on real-world repositories: real Git repositories made here with Git's own
//! plumbing (so names, modes, symlinks and gitlinks are exactly what a tree can hold, including
//! names no working tree can), fetched by the agent's Git cache and applied by the files target
//! to real directories.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fleet_agent::files::FilesTarget;
use fleet_agent::git::GitCache;
use fleet_agent::{AgentError, render_checked};

/// One entry of a commit's tree, by path (bytes) from the repository root.
enum Entry<'a> {
    File(&'a [u8], &'a [u8]),
    Link(&'a [u8], &'a [u8]),
    Gitlink(&'a [u8], &'a str),
}

fn run(dir: &Path, args: &[&OsStr], env: &[(&str, &OsStr)], stdin: &[u8]) -> String {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.no")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.no")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A Git repository whose commits are built entry by entry with `update-index --cacheinfo`,
/// `write-tree` and `commit-tree`: no working tree, so any name Git can store can be tested.
struct Repo {
    dir: PathBuf,
    head: Option<String>,
}

impl Repo {
    fn new(parent: &Path) -> Repo {
        let dir = parent.join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        run(&dir, &["init".as_ref(), "-q".as_ref()], &[], b"");
        Repo { dir, head: None }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn commit(&mut self, entries: &[Entry]) -> String {
        let index = self.dir.join(".git/fleet-test-index");
        let _ = std::fs::remove_file(&index);
        let env = [("GIT_INDEX_FILE", index.as_os_str())];
        for entry in entries {
            let (mode, path, sha) = match entry {
                Entry::File(path, content) => ("100644", path, self.blob(content)),
                Entry::Link(path, target) => ("120000", path, self.blob(target)),
                Entry::Gitlink(path, sha) => ("160000", path, sha.to_string()),
            };
            let mut info = OsString::from(format!("{mode},{sha},"));
            info.push(OsStr::from_bytes(path));
            let args: [&OsStr; 4] = [
                "update-index".as_ref(),
                "--add".as_ref(),
                "--cacheinfo".as_ref(),
                &info,
            ];
            run(&self.dir, &args, &env, b"");
        }
        let tree = run(&self.dir, &["write-tree".as_ref()], &env, b"");
        let mut args: Vec<&OsStr> = vec![
            "commit-tree".as_ref(),
            tree.as_ref(),
            "-m".as_ref(),
            "r".as_ref(),
        ];
        if let Some(head) = &self.head {
            args.push(OsStr::new("-p"));
            args.push(OsStr::new(head.as_str()));
        }
        let sha = run(&self.dir, &args, &[], b"");
        run(
            &self.dir,
            &[
                "update-ref".as_ref(),
                "refs/heads/main".as_ref(),
                sha.as_ref(),
            ],
            &[],
            b"",
        );
        self.head = Some(sha.clone());
        sha
    }

    fn blob(&self, content: &[u8]) -> String {
        let args: [&OsStr; 3] = ["hash-object".as_ref(), "-w".as_ref(), "--stdin".as_ref()];
        run(&self.dir, &args, &[], content)
    }
}

/// An agent's Git cache and files target, on real directories: `ROOT/web/` is the workload.
struct Target {
    git: GitCache,
    files: FilesTarget,
    root: PathBuf,
}

impl Target {
    fn new(dir: &Path) -> Target {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        Target::at(dir, root)
    }

    fn at(dir: &Path, root: PathBuf) -> Target {
        let state = dir.join("state");
        Target {
            git: GitCache::new(&state),
            files: FilesTarget::new(root.clone(), &state),
            root,
        }
    }

    fn web(&self) -> PathBuf {
        self.root.join("web")
    }

    /// What the agent does with a revision: render it (fetching), check it, apply it.
    fn apply(&self, repo: &Repo, sha: &str) -> Result<(), AgentError> {
        let render = render_checked(&self.git, &repo.url(), sha, "app")?;
        self.files.apply("web", &render).map(|_| ())
    }
}

/// What [`snapshot`] returns.
type Disk = BTreeMap<Vec<u8>, Vec<u8>>;

/// What is on disk below `dir`: path bytes → `d` for a directory, `l:TARGET` for a symlink,
/// `f:CONTENT` or `x:CONTENT` for a file. Links are not followed.
fn snapshot(dir: &Path) -> Disk {
    fn walk(dir: &Path, prefix: &[u8], out: &mut Disk) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.file_name().as_bytes());
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let value = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap();
                [b"l:".as_slice(), target.as_os_str().as_bytes()].concat()
            } else if meta.is_dir() {
                walk(&entry.path(), &path, out);
                b"d".to_vec()
            } else {
                let tag = if meta.permissions().mode() & 0o111 != 0 {
                    b"x:"
                } else {
                    b"f:"
                };
                [tag.as_slice(), &std::fs::read(entry.path()).unwrap()].concat()
            };
            out.insert(path, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, b"", &mut out);
    out
}

fn files(pairs: &[(&str, &str)]) -> Disk {
    pairs
        .iter()
        .map(|(p, v)| (p.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn refused(result: Result<(), AgentError>) -> String {
    result
        .expect_err("the revision must be refused")
        .to_string()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// 1. Symlink chains.

#[test]
fn a_symlink_chain_through_a_link_of_the_render_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let chain = b"a/l/a/l/a/l/a/l/a/l/a/l/../../../../../../../../../../../../etc/passwd";
    let sha = repo.commit(&[
        Entry::File(b"app/ok.conf", b"ok\n"),
        Entry::Link(b"app/a/l", b".."),
        Entry::Link(b"app/pw", chain),
    ]);
    let error = refused(target.apply(&repo, &sha));
    assert!(
        error.contains("\"pw\"") && error.contains("outside"),
        "{error}"
    );
    assert!(snapshot(&target.web()).is_empty(), "nothing written");
}

#[test]
fn symlink_loops_in_the_render_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let sha = repo.commit(&[Entry::Link(b"app/x", b"y/z"), Entry::Link(b"app/y", b"x")]);
    let error = refused(target.apply(&repo, &sha));
    assert!(error.contains("loop"), "{error}");
}

#[test]
fn a_link_through_a_hand_made_symlink_in_the_workload_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    std::fs::create_dir_all(target.web()).unwrap();
    std::os::unix::fs::symlink("/", target.web().join("hand")).unwrap();
    // Inside the render alone `hand` is missing, so the link looks harmless; on disk `hand`
    // leads to `/`.
    let sha = repo.commit(&[Entry::Link(b"app/pw", b"hand/etc/passwd")]);
    let error = refused(target.apply(&repo, &sha));
    assert!(
        error.contains("\"pw\"") && error.contains("absolute"),
        "{error}"
    );
    assert!(std::fs::symlink_metadata(target.web().join("pw")).is_err());
}

// 2. Names.

#[test]
fn names_that_are_not_utf8_are_written_byte_for_byte_and_never_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let r1 = repo.commit(&[
        Entry::File(b"app/a\xff.conf", b"first\n"),
        Entry::File(b"app/a\xfe.conf", b"second\n"),
        Entry::File(b"app/a\xef\xbf\xbd.conf", b"replacement character\n"),
    ]);
    target.apply(&repo, &r1).unwrap();
    let want: Disk = [
        (b"a\xff.conf".to_vec(), b"f:first\n".to_vec()),
        (b"a\xfe.conf".to_vec(), b"f:second\n".to_vec()),
        (
            b"a\xef\xbf\xbd.conf".to_vec(),
            b"f:replacement character\n".to_vec(),
        ),
    ]
    .into();
    assert_eq!(snapshot(&target.web()), want);
    // The inventory holds each name exactly, so pruning one removes that one only.
    let r2 = repo.commit(&[
        Entry::File(b"app/a\xfe.conf", b"second\n"),
        Entry::File(b"app/a\xef\xbf\xbd.conf", b"replacement character\n"),
    ]);
    target.apply(&repo, &r2).unwrap();
    let mut want = want;
    want.remove(b"a\xff.conf".as_slice());
    assert_eq!(snapshot(&target.web()), want);
}

#[test]
fn a_name_of_255_bytes_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let long = format!("app/{}", "n".repeat(255));
    let sha = repo.commit(&[
        Entry::File(b"app/a.conf", b"a\n"),
        Entry::File(long.as_bytes(), b"long\n"),
    ]);
    target.apply(&repo, &sha).unwrap();
    assert_eq!(
        std::fs::read(target.web().join("n".repeat(255))).unwrap(),
        b"long\n"
    );
}

#[test]
fn names_and_paths_over_the_filesystems_limits_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let r1 = repo.commit(&[Entry::File(b"app/a.conf", b"v1\n")]);
    target.apply(&repo, &r1).unwrap();
    let before = snapshot(&target.web());

    // NAME_MAX is 255 on ext4, tmpfs, xfs and btrfs.
    let too_long = format!("app/b/{}", "n".repeat(256));
    let r2 = repo.commit(&[
        Entry::File(b"app/a.conf", b"v2\n"),
        Entry::File(b"app/a0", b"new sibling\n"),
        Entry::File(too_long.as_bytes(), b"x\n"),
    ]);
    let error = refused(target.apply(&repo, &r2));
    assert!(
        error.contains("256 bytes") && error.contains("nnnn"),
        "{error}"
    );
    assert_eq!(snapshot(&target.web()), before, "nothing of r2 was written");

    // PATH_MAX (4096 with the NUL): 20 directories of 250 bytes.
    let deep = format!("app/{}x", format!("{}/", "d".repeat(250)).repeat(20));
    let r3 = repo.commit(&[
        Entry::File(b"app/a.conf", b"v3\n"),
        Entry::File(deep.as_bytes(), b"x\n"),
    ]);
    let error = refused(target.apply(&repo, &r3));
    assert!(error.contains("PATH_MAX"), "{error}");
    assert_eq!(snapshot(&target.web()), before, "nothing of r3 was written");
}

// 3. A revision that fails writes nothing.

fn three_file_revisions(repo: &mut Repo, big: &[u8]) -> (String, String) {
    let r1 = repo.commit(&[
        Entry::File(b"app/a.conf", b"a1\n"),
        Entry::File(b"app/b/b.conf", b"b1\n"),
        Entry::File(b"app/gone.conf", b"gone1\n"),
    ]);
    let r2 = repo.commit(&[
        Entry::File(b"app/a.conf", b"a2\n"),
        Entry::File(b"app/b/b.conf", b"b2\n"),
        Entry::File(b"app/c/new.conf", b"new2\n"),
        Entry::File(b"app/z/big.bin", big),
    ]);
    (r1, r2)
}

#[test]
fn a_revision_whose_write_fails_midway_leaves_exactly_the_previous_revision() {
    // A directory the agent cannot write into fails the rename of `z/big.bin` after `a.conf`,
    // `b/b.conf` and `c/new.conf` were renamed into place and `gone.conf` was moved out: all
    // of it is put back. Root ignores permission bits, so as root the directory is made
    // immutable (chattr +i), which root cannot write into either.
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let (r1, r2) = three_file_revisions(&mut repo, b"big\n");
    target.apply(&repo, &r1).unwrap();
    let before = snapshot(&target.web());
    let z = target.web().join("z");
    std::fs::create_dir(&z).unwrap();
    let before_with_z = snapshot(&target.web());
    let locked = if is_root() {
        Command::new("chattr")
            .arg("+i")
            .arg(&z)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        std::fs::set_permissions(&z, std::fs::Permissions::from_mode(0o555)).is_ok()
    };
    if !locked {
        eprintln!(
            "SKIPPED: cannot make {} unwritable (chattr +i failed)",
            z.display()
        );
        return;
    }
    let result = target.apply(&repo, &r2);
    if is_root() {
        Command::new("chattr").arg("-i").arg(&z).status().unwrap();
    } else {
        std::fs::set_permissions(&z, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let error = refused(result);
    assert!(
        error.contains("z/big.bin"),
        "the error names the path: {error}"
    );
    assert_eq!(
        snapshot(&target.web()),
        before_with_z,
        "exactly r1 (and the empty z)"
    );
    assert!(before.contains_key(b"gone.conf".as_slice()));
    // Once the directory is writable again, the same revision applies whole.
    target.apply(&repo, &r2).unwrap();
    let after = snapshot(&target.web());
    assert_eq!(after[b"a.conf".as_slice()], b"f:a2\n");
    assert!(!after.contains_key(b"gone.conf".as_slice()));
}

#[test]
fn a_revision_that_does_not_fit_on_the_disk_leaves_exactly_the_previous_revision() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let root = dir.path().join("tmpfs");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "fleet-test"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs at {}", root.display());
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    let target = Target::at(dir.path(), root);
    let (r1, r2) = three_file_revisions(&mut repo, &vec![7u8; 1024 * 1024]);
    target.apply(&repo, &r1).unwrap();
    let before = snapshot(&target.web());
    let error = refused(target.apply(&repo, &r2));
    assert!(
        error.contains("z/big.bin"),
        "the error names the path: {error}"
    );
    assert!(error.contains("No space left"), "and the reason: {error}");
    assert_eq!(snapshot(&target.web()), before, "exactly r1");
    assert!(
        !target.root.join(".fleet-staging.web").exists(),
        "the staging directory is gone"
    );
    let owned: Vec<String> = target
        .files
        .owned("web")
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        owned,
        ["a.conf", "b/b.conf", "gone.conf"],
        "the inventory is r1's too"
    );
}

// 4. A path that changes type.

#[test]
fn a_path_that_changes_type_is_replaced_in_every_direction() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let steps: Vec<(Vec<Entry>, Disk)> = vec![
        (
            vec![
                Entry::File(b"app/conf", b"file\n"),
                Entry::File(b"app/other", b"o\n"),
            ],
            files(&[("conf", "f:file\n"), ("other", "f:o\n")]),
        ),
        (
            vec![
                Entry::File(b"app/conf/a.conf", b"in dir\n"),
                Entry::File(b"app/other", b"o\n"),
            ],
            files(&[
                ("conf", "d"),
                ("conf/a.conf", "f:in dir\n"),
                ("other", "f:o\n"),
            ]),
        ),
        (
            vec![
                Entry::Link(b"app/conf", b"other"),
                Entry::File(b"app/other", b"o\n"),
            ],
            files(&[("conf", "l:other"), ("other", "f:o\n")]),
        ),
        (
            vec![
                Entry::File(b"app/conf/deep/b.conf", b"b\n"),
                Entry::File(b"app/other", b"o\n"),
            ],
            files(&[
                ("conf", "d"),
                ("conf/deep", "d"),
                ("conf/deep/b.conf", "f:b\n"),
                ("other", "f:o\n"),
            ]),
        ),
        (
            vec![
                Entry::File(b"app/conf", b"file again\n"),
                Entry::File(b"app/other", b"o\n"),
            ],
            files(&[("conf", "f:file again\n"), ("other", "f:o\n")]),
        ),
        (
            vec![
                Entry::File(b"app/conf", b"file again\n"),
                Entry::Link(b"app/other", b"conf"),
            ],
            files(&[("conf", "f:file again\n"), ("other", "l:conf")]),
        ),
    ];
    for (n, (entries, want)) in steps.into_iter().enumerate() {
        let sha = repo.commit(&entries);
        target
            .apply(&repo, &sha)
            .unwrap_or_else(|e| panic!("step {n}: {e}"));
        assert_eq!(snapshot(&target.web()), want, "step {n}");
    }
}

#[test]
fn a_hand_made_file_in_a_directory_that_must_become_a_file_fails_the_revision_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let r1 = repo.commit(&[Entry::File(b"app/conf/a.conf", b"a\n")]);
    target.apply(&repo, &r1).unwrap();
    std::fs::write(target.web().join("conf/mine.conf"), "hand made\n").unwrap();
    let before = snapshot(&target.web());
    let r2 = repo.commit(&[Entry::File(b"app/conf", b"file\n")]);
    let error = refused(target.apply(&repo, &r2));
    assert!(error.contains("conf/mine.conf"), "names the file: {error}");
    assert_eq!(snapshot(&target.web()), before, "nothing changed");
}

// 5. Content that is not what the repository means.

#[test]
fn a_git_lfs_pointer_fails_the_revision_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let pointer = b"version https://git-lfs.github.com/spec/v1\n\
        oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n\
        size 12345\n";
    let sha = repo.commit(&[
        Entry::File(b"app/a.conf", b"a\n"),
        Entry::File(b"app/img/logo.png", pointer),
    ]);
    let error = refused(target.apply(&repo, &sha));
    assert!(
        error.contains("img/logo.png") && error.contains("LFS"),
        "{error}"
    );
    assert!(snapshot(&target.web()).is_empty());
}

#[test]
fn a_submodule_in_the_workload_path_fails_the_revision_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let target = Target::new(dir.path());
    let other = "1234567890123456789012345678901234567890";
    let sha = repo.commit(&[
        Entry::File(b"app/a.conf", b"a\n"),
        Entry::Gitlink(b"app/vendor/lib", other),
    ]);
    let error = refused(target.apply(&repo, &sha));
    assert!(
        error.contains("vendor/lib") && error.contains("submodule") && error.contains(other),
        "{error}"
    );
    assert!(snapshot(&target.web()).is_empty());
}

#[test]
fn a_revision_naming_a_tag_a_tree_or_a_blob_is_reported_as_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(dir.path());
    let commit = repo.commit(&[Entry::File(b"app/a.conf", b"a\n")]);
    let tag_args: [&OsStr; 6] = [
        "tag".as_ref(),
        "-a".as_ref(),
        "v1".as_ref(),
        "-m".as_ref(),
        "release 1".as_ref(),
        commit.as_ref(),
    ];
    let env = [
        ("GIT_COMMITTER_NAME", OsStr::new("t")),
        ("GIT_COMMITTER_EMAIL", OsStr::new("t@example.no")),
    ];
    run(&repo.dir, &tag_args, &env, b"");
    let tag = run(&repo.dir, &["rev-parse".as_ref(), "v1".as_ref()], &[], b"");
    let tree = run(
        &repo.dir,
        &["rev-parse".as_ref(), format!("{commit}^{{tree}}").as_ref()],
        &[],
        b"",
    );
    let blob = run(
        &repo.dir,
        &[
            "rev-parse".as_ref(),
            format!("{commit}:app/a.conf").as_ref(),
        ],
        &[],
        b"",
    );
    let target = Target::new(dir.path());
    let shown = refused(target.apply(&repo, &tag));
    assert!(
        shown.contains(&format!(
            "is an annotated tag of commit {commit}, not a commit"
        )),
        "{shown}"
    );
    for (sha, what) in [(&tree, "is a tree"), (&blob, "is a blob")] {
        let shown = refused(target.apply(&repo, sha));
        assert!(shown.contains(what), "{shown}");
    }
    let missing = "0123456789012345678901234567890123456789";
    assert!(refused(target.apply(&repo, missing)).contains("does not exist"));
    assert_eq!(snapshot(&target.root), files(&[]), "nothing written");
    target.apply(&repo, &commit).unwrap();
}
