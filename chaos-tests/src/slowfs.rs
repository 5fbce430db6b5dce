//! A FUSE passthrough filesystem (fuser) that mirrors a backing directory and injects disk
//! faults into a node's data dir: latency on fsync/fdatasync, EIO on fsync, and — in the style
//! of LazyFS — losing what was written but not fsynced when the node is killed.
//!
//! Everything the node does goes through here: the kernel sends each write to us (no
//! writeback cache), so an undo log of unsynced writes is exact.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attribute and entry cache time: short, since only this filesystem changes the files.
const TTL: Duration = Duration::from_secs(1);

/// The faults in force, changed at run time by the scenario.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// Added to every fsync, fdatasync and directory fsync.
    pub fsync_delay_ms: AtomicU64,
    /// fsync and fdatasync fail with EIO (nothing is synced).
    pub fsync_eio: AtomicBool,
    /// Keep an undo log of writes not yet fsynced, for [`SlowFs::lose_unsynced`].
    pub lazy: AtomicBool,
    /// fsyncs seen, for the report.
    pub fsyncs: AtomicU64,
}

/// The bytes a write or truncation replaced, to put back if it is lost.
struct Undo {
    offset: u64,
    old: Vec<u8>,
    /// The file's length before the change.
    old_len: u64,
}

#[derive(Default)]
struct Inner {
    /// Inode → path relative to the backing root ("" is the root).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
    /// Per inode, in write order.
    undo: HashMap<u64, Vec<Undo>>,
}

struct PassFs {
    backing: PathBuf,
    faults: Arc<DiskFaults>,
    inner: Arc<Mutex<Inner>>,
}

/// A mounted fault-injecting filesystem; unmounted when dropped.
pub struct SlowFs {
    pub mountpoint: PathBuf,
    pub faults: Arc<DiskFaults>,
    inner: Arc<Mutex<Inner>>,
    backing: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl SlowFs {
    /// Mounts a mirror of `backing` (created if missing) at `mountpoint` (created if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> std::io::Result<SlowFs> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let faults = Arc::new(DiskFaults::default());
        let inner = Arc::new(Mutex::new(Inner {
            next_ino: 2,
            next_fh: 1,
            ..Inner::default()
        }));
        {
            let mut i = inner.lock().unwrap();
            i.paths.insert(1, PathBuf::new());
            i.inodes.insert(PathBuf::new(), 1);
        }
        let fs = PassFs {
            backing: backing.to_path_buf(),
            faults: faults.clone(),
            inner: inner.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("fleet-slowfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(SlowFs {
            mountpoint: mountpoint.to_path_buf(),
            faults,
            inner,
            backing: backing.to_path_buf(),
            session: Some(session),
        })
    }

    /// Puts back every write not yet fsynced, newest first, and the lengths from before them:
    /// the disk as a power cut would leave it. Call only while no process uses the files.
    pub fn lose_unsynced(&self) -> std::io::Result<u64> {
        let mut inner = self.inner.lock().unwrap();
        let undo = std::mem::take(&mut inner.undo);
        let mut lost = 0;
        for (ino, entries) in undo {
            let Some(path) = inner.paths.get(&ino) else {
                continue;
            };
            let file = match OpenOptions::new().write(true).open(self.backing.join(path)) {
                Ok(f) => f,
                Err(_) => continue, // removed since: nothing to put back
            };
            for e in entries.iter().rev() {
                file.write_all_at(&e.old, e.offset)?;
                lost += 1;
            }
            if let Some(first) = entries.first() {
                file.set_len(first.old_len)?;
            }
        }
        Ok(lost)
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn attr_of(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let kind = FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile);
    let time = |secs: i64, nsecs: i64| {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
        } else {
            UNIX_EPOCH
        }
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.ctime(), m.ctime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

impl PassFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let inner = self.inner.lock().unwrap();
        inner.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn ino_for(&self, rel: &Path) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        if let Some(ino) = inner.inodes.get(rel) {
            return *ino;
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.inodes.insert(rel.to_path_buf(), ino);
        inner.paths.insert(ino, rel.to_path_buf());
        ino
    }

    fn entry(&self, rel: &Path, reply: ReplyEntry) {
        match std::fs::symlink_metadata(self.backing.join(rel)) {
            Ok(m) => {
                let ino = self.ino_for(rel);
                reply.entry(&TTL, &attr_of(ino, &m), Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn file(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        let inner = self.inner.lock().unwrap();
        inner.files.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn open_handle(&self, ino: u64, file: File) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        let fh = inner.next_fh;
        inner.next_fh += 1;
        inner.files.insert(fh, (ino, Arc::new(file)));
        fh
    }

    /// Records what `len` bytes at `offset` of `ino` held, if unsynced writes are tracked.
    fn remember(&self, ino: u64, file: &File, offset: u64, len: u64) -> std::io::Result<()> {
        if !self.faults.lazy.load(Ordering::SeqCst) {
            return Ok(());
        }
        let old_len = file.metadata()?.len();
        let end = (offset + len).min(old_len);
        let mut old = vec![0; end.saturating_sub(offset) as usize];
        if !old.is_empty() {
            file.read_exact_at(&mut old, offset)?;
        }
        self.inner
            .lock()
            .unwrap()
            .undo
            .entry(ino)
            .or_default()
            .push(Undo {
                offset,
                old,
                old_len,
            });
        Ok(())
    }

    /// The injected fsync behaviour; `Err` when it must fail.
    fn sync_fault(&self) -> Result<(), Errno> {
        self.faults.fsyncs.fetch_add(1, Ordering::Relaxed);
        let delay = self.faults.fsync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if self.faults.fsync_eio.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn rename_paths(&self, from: &Path, to: &Path) {
        let mut inner = self.inner.lock().unwrap();
        // `to` is replaced: forget its inode (and anything under it).
        let moved: Vec<(PathBuf, u64)> = inner
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(from) || p.starts_with(to))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, ino) in moved {
            inner.inodes.remove(&p);
            if p.starts_with(from) {
                let new = to.join(p.strip_prefix(from).expect("prefix"));
                inner.paths.insert(ino, new.clone());
                inner.inodes.insert(new, ino);
            } else {
                inner.paths.remove(&ino);
            }
        }
    }

    fn forget_path(&self, rel: &Path) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(ino) = inner.inodes.remove(rel) {
            inner.paths.remove(&ino);
            inner.undo.remove(&ino);
        }
    }
}

impl Filesystem for PassFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(rel) => self.entry(&rel, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let rel = match self.path(ino) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        match std::fs::symlink_metadata(self.backing.join(rel)) {
            Ok(m) => reply.attr(&TTL, &attr_of(ino.0, &m)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let rel = match self.path(ino) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let full = self.backing.join(&rel);
        let result = (|| -> std::io::Result<()> {
            if let Some(mode) = mode {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some(size) = size {
                let file = match fh.and_then(|fh| self.file(fh).ok()) {
                    Some((_, f)) => f,
                    None => Arc::new(OpenOptions::new().write(true).open(&full)?),
                };
                let len = file.metadata()?.len();
                if size < len {
                    self.remember(ino.0, &file, size, len - size)?;
                } else {
                    self.remember(ino.0, &file, len, 0)?;
                }
                file.set_len(size)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            return reply.error(errno(e));
        }
        match std::fs::symlink_metadata(&full) {
            Ok(m) => reply.attr(&TTL, &attr_of(ino.0, &m)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .path(ino)
            .and_then(|rel| std::fs::read_link(self.backing.join(rel)).map_err(errno))
        {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let rel = match self.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let full = self.backing.join(&rel);
        match std::fs::create_dir(&full)
            .and_then(|_| std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)))
        {
            Ok(()) => self.entry(&rel, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_file(self.backing.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let rel = match self.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_dir(self.backing.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let rel = match self.child(parent, link_name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        match std::os::unix::fs::symlink(target, self.backing.join(&rel)) {
            Ok(()) => self.entry(&rel, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.child(parent, name), self.child(newparent, newname)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        match std::fs::rename(self.backing.join(&from), self.backing.join(&to)) {
            Ok(()) => {
                self.rename_paths(&from, &to);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let rel = match self.path(ino) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let access = flags.0 & libc::O_ACCMODE;
        let file = OpenOptions::new()
            .read(access != libc::O_WRONLY)
            .write(access != libc::O_RDONLY)
            .custom_flags(flags.0 & libc::O_TRUNC)
            .open(self.backing.join(rel));
        match file {
            Ok(f) => {
                let fh = self.open_handle(ino.0, f);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let rel = match self.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let full = self.backing.join(&rel);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(flags & (libc::O_EXCL | libc::O_TRUNC))
            .mode(mode)
            .open(&full);
        match file.and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((f, m)) => {
                let ino = self.ino_for(&rel);
                let fh = self.open_handle(ino, f);
                reply.created(
                    &TTL,
                    &attr_of(ino, &m),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (_, file) = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut buf = vec![0; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..done])
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (_, file) = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let result = self
            .remember(ino.0, &file, offset, data.len() as u64)
            .and_then(|_| file.write_all_at(data, offset));
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.lock().unwrap().files.remove(&fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.sync_fault() {
            return reply.error(e);
        }
        let (_, file) = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let synced = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        match synced {
            Ok(()) => {
                self.inner.lock().unwrap().undo.remove(&ino.0);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let rel = match self.path(ino) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(self.backing.join(&rel)) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(e)),
        };
        let mut all: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let child = self.ino_for(&rel.join(entry.file_name()));
            all.push((child, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.sync_fault() {
            return reply.error(e);
        }
        match self
            .path(ino)
            .and_then(|rel| File::open(self.backing.join(rel)).map_err(errno))
            .and_then(|d| d.sync_all().map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes (the kernel asks for security.capability on every write).
        reply.error(Errno::ENODATA)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.path(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (_, file) = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = self.remember(ino.0, &file, offset, 0) {
            return reply.error(errno(e));
        }
        match nix::fcntl::fallocate(
            &*file,
            nix::fcntl::FallocateFlags::from_bits_truncate(mode),
            offset as i64,
            length as i64,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}
