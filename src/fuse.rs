//! With fuse_kind.rs, the only file that knows fuser: each callback turns its
//! arguments into one call on the core and the result into a reply; core errors
//! become errno here, logged once.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::fs::{
    Attach, Attr, Caller, DirEntry, Fs, FsError, KernelChange, KernelFile, Opened, RenameMode,
    SetAttr,
};
use crate::fuse_kind::{file_type, mknod_kind};

/// The entries of an open directory, with their attributes.
type DirSnapshot = Arc<Vec<(DirEntry, Attr)>>;

/// How long the kernel may keep attributes and names before asking again, and an
/// absent name as absent (a new object from the bucket is announced by the poll).
const TTL: Duration = Duration::from_secs(1);

pub struct FuseAdapter {
    fs: Arc<Fs>,
    /// Named by an extended attribute of the root, so `s3syncfs status MOUNTPOINT`
    /// finds the daemon.
    control_socket: std::path::PathBuf,
    /// Open directory handle -> the entries it lists: a directory is read in many
    /// calls (by offset) and is snapshotted once, at offset 0.
    listings: Mutex<HashMap<u64, DirSnapshot>>,
    next_dir_handle: AtomicU64,
    /// Cached files are handed to the kernel (FUSE passthrough): asked for by the
    /// options, granted at init, and given up after the first refusal.
    passthrough: AtomicBool,
    /// Read-only opens keep the kernel's pages of the file (FOPEN_KEEP_CACHE), so
    /// re-reads are served from memory. Only on a mount that never hands files to the
    /// kernel: writes through passthrough change the cache file behind those pages.
    /// Every other change goes through the kernel or is announced to it (remote
    /// versions invalidate the inode).
    keep_pages: AtomicBool,
}

impl FuseAdapter {
    /// The entries of an open directory: listed afresh at offset 0, else the snapshot.
    fn listing(&self, ino: INodeNo, fh: FileHandle, offset: u64) -> Result<DirSnapshot, FsError> {
        if offset > 0 {
            if let Some(entries) = self.listings.lock().get(&fh.0) {
                return Ok(entries.clone());
            }
        }
        let entries = Arc::new(self.fs.readdir_plus(ino.0)?);
        self.listings.lock().insert(fh.0, entries.clone());
        Ok(entries)
    }

    pub fn new(fs: Arc<Fs>, control_socket: std::path::PathBuf, passthrough: bool) -> FuseAdapter {
        if !passthrough {
            fs.direct_use.set_mode("off (no_passthrough)");
        }
        FuseAdapter {
            fs,
            control_socket,
            listings: Mutex::new(HashMap::new()),
            next_dir_handle: AtomicU64::new(1),
            passthrough: AtomicBool::new(passthrough),
            keep_pages: AtomicBool::new(false),
        }
    }

    /// Registers cache files with the kernel for passthrough through `reply`, or None
    /// when passthrough is off. A refusal (no CAP_SYS_ADMIN, a cache dir the kernel
    /// cannot stack on) turns it off for the rest of the mount.
    fn attacher<'a>(
        &'a self,
        register: impl Fn(&std::fs::File) -> std::io::Result<BackingId> + 'a,
    ) -> Option<impl Fn(&std::fs::File) -> std::io::Result<KernelFile> + 'a> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        // Checked again under the namespace lock the opens hold: once refused, no file
        // goes direct, so kept pages and passthrough never meet.
        Some(
            move |file: &std::fs::File| match self.register_while_on(file, &register) {
                Ok(id) => Ok(Arc::new(id) as KernelFile),
                Err(err) => {
                    if self.passthrough.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%err, "kernel passthrough refused: cached files are served by the daemon");
                        self.fs.direct_use.set_mode(format!("off (refused: {err})"));
                        // Refused at the first try (a mount without CAP_SYS_ADMIN): no file
                        // ever went direct, so the kernel's pages can be kept after all.
                        if self.fs.direct_use.opens() == 0 {
                            self.keep_pages.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(err)
                }
            },
        )
    }
}

impl FuseAdapter {
    fn register_while_on(
        &self,
        file: &std::fs::File,
        register: &impl Fn(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<BackingId> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("passthrough is off"));
        }
        register(file)
    }
}

/// The backing id a direct handle was registered with.
fn backing_id(kernel: &KernelFile) -> &BackingId {
    kernel
        .downcast_ref::<BackingId>()
        .expect("the adapter only attaches BackingIds")
}

fn errno(op: &str, err: FsError) -> Errno {
    let code = match &err {
        FsError::NotFound => return Errno::ENOENT, // routine: not logged
        FsError::Exists => libc::EEXIST,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::Invalid => libc::EINVAL,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::NotSupported => libc::EOPNOTSUPP,
        FsError::NoSpace => libc::ENOSPC,
        FsError::TooBig => libc::EFBIG,
        FsError::Quota => libc::EDQUOT,
        FsError::Access => libc::EACCES,
        FsError::Io(_) | FsError::Stale(_) => libc::EIO,
    };
    if matches!(
        err,
        FsError::Io(_) | FsError::Stale(_) | FsError::NoSpace | FsError::Quota
    ) {
        tracing::warn!("{op}: {err}");
    } else {
        tracing::debug!("{op}: {err}");
    }
    Errno::from_i32(code)
}

fn file_attr(attr: &Attr) -> FileAttr {
    let kind = file_type(attr.kind);
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The attributes of a negative lookup reply: only the node id (0) matters.
fn absent_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn name_str<'a>(op: &str, name: &'a OsStr) -> Result<&'a str, Errno> {
    name.to_str().ok_or_else(|| {
        tracing::debug!("{op}: name is not UTF-8");
        Errno::EINVAL
    })
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Replies with an entry, counted first as a lookup the kernel holds until its FORGET.
fn reply_entry(fs: &Fs, reply: ReplyEntry, op: &str, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => {
            fs.kernel_looked_up(attr.ino);
            reply.entry(&TTL, &file_attr(&attr), Generation(0))
        }
        Err(err) => reply.error(errno(op, err)),
    }
}

fn reply_empty(reply: ReplyEmpty, op: &str, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(errno(op, err)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        // `ls -l`: names and attributes in one request instead of a lookup per entry.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
        );
        if self.passthrough.load(Ordering::Relaxed) {
            // Depth 2: the cache dir may itself be on a stacked filesystem (overlayfs).
            let granted = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(2).is_ok();
            self.passthrough.store(granted, Ordering::Relaxed);
            self.fs.direct_use.set_mode(if granted {
                "on"
            } else {
                "off (the kernel has no FUSE passthrough)"
            });
        }
        let never_direct = !self.passthrough.load(Ordering::Relaxed);
        self.keep_pages.store(never_direct, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str("lookup", name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        match self.fs.lookup(parent.0, name) {
            // Node id 0: "no such name" that the kernel may remember for the TTL, so
            // repeated probes (PATH searches, imports, stat before create) stay local.
            Err(FsError::NotFound) => reply.entry(&TTL, &absent_attr(), Generation(0)),
            result => reply_entry(&self.fs, reply, "lookup", result),
        }
    }

    /// Asked only when the kernel does not check modes itself (no default_permissions).
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.getattr(ino.0) {
            Ok(attr) if crate::access::allowed(&attr, caller(req), mask.bits(), |_| false) => {
                reply.ok()
            }
            Ok(_) => reply.error(Errno::EACCES),
            Err(err) => reply.error(errno("access", err)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(err) => reply.error(errno("getattr", err)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.fs.setattr(ino.0, change) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(err) => reply.error(errno("setattr", err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(err) => reply.error(errno("readlink", err)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str("mkdir", name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        reply_entry(
            &self.fs,
            reply,
            "mkdir",
            self.fs.mkdir(parent.0, name, mode & !umask, caller(req)),
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (name, kind) = match (name_str("mknod", name), mknod_kind(mode)) {
            (Ok(name), Ok(kind)) => (name, kind),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let made = self
            .fs
            .mknod(parent.0, name, kind, mode & !umask, rdev, caller(req));
        reply_entry(&self.fs, reply, "mknod", made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str("unlink", name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        reply_empty(reply, "unlink", self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str("rmdir", name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        reply_empty(reply, "rmdir", self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (name_str("symlink", link_name), target.to_str()) {
            (Ok(n), Some(t)) => (n, t),
            _ => return reply.error(Errno::EINVAL),
        };
        reply_entry(
            &self.fs,
            reply,
            "symlink",
            self.fs.symlink(parent.0, name, target, caller(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str("rename", name), name_str("rename", newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let mode = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else {
            RenameMode::Replace
        };
        reply_empty(
            reply,
            "rename",
            self.fs.rename(parent.0, name, newparent.0, newname, mode),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mask = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => libc::R_OK,
            OpenAccMode::O_WRONLY => libc::W_OK,
            _ => libc::R_OK | libc::W_OK,
        };
        // A second look at an open by a user other than root: the kernel checked the
        // attributes it had, which are defaults where the object's metadata was
        // unknown (the open fetches it first).
        let (caller, pid) = (caller(req), req.pid());
        let allowed = move |attr: &Attr| crate::access::may_open(attr, caller, pid, mask);
        let check = (req.uid() != 0).then_some(&allowed as &dyn Fn(&Attr) -> bool);
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let attach = self.attacher(|file| reply.open_backing(file));
        let opened = self.fs.open_with(
            ino.0,
            writable,
            truncate,
            attach.as_ref().map(|a| a as Attach),
            check,
        );
        drop(attach);
        // A reader's close needs no FLUSH (one round trip less per file read): only
        // a writer's close has something to make durable.
        let mut open_flags = if writable {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_NOFLUSH
        };
        match opened {
            Ok(Opened {
                fh,
                direct: Some(kernel),
            }) => reply.opened_passthrough(FileHandle(fh), open_flags, backing_id(&kernel)),
            Ok(Opened { fh, direct: None }) => {
                if !writable && self.keep_pages.load(Ordering::Relaxed) {
                    open_flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(fh), open_flags)
            }
            Err(err) => reply.error(errno("open", err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(errno("read", err)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A write that must wait for room waits off this thread (see backpressure.rs).
        let done = move |result| match result {
            Ok(n) => reply.written(n),
            Err(err) => reply.error(errno("write", err)),
        };
        self.fs.write_or_queue(ino.0, offset, data, Box::new(done));
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.fs.flush(ino.0);
        reply.ok();
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
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, "fsync", self.fs.fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.next_dir_handle.fetch_add(1, Ordering::Relaxed);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.listings.lock().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.listing(ino, fh, offset) {
            Ok(entries) => entries,
            Err(err) => return reply.error(errno("readdir", err)),
        };
        for (i, (entry, _)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(entry.ino),
                (i + 1) as u64,
                file_type(entry.kind),
                &entry.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let entries = match self.listing(ino, fh, offset) {
            Ok(entries) => entries,
            Err(err) => return reply.error(errno("readdirplus", err)),
        };
        for (i, (entry, attr)) in entries.iter().enumerate().skip(offset as usize) {
            // The kernel counts a lookup for each entry it is given, but for . and ..
            // (undone below when the entry does not fit).
            let counted = entry.name != "." && entry.name != "..";
            if counted {
                self.fs.kernel_looked_up(entry.ino);
            }
            let full = reply.add(
                INodeNo(entry.ino),
                (i + 1) as u64,
                &entry.name,
                &TTL,
                &file_attr(attr),
                Generation(0),
            );
            if full {
                if counted {
                    self.fs.kernel_forgot(entry.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.kernel_forgot(ino.0, nlookup);
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        if ino.0 == crate::fs::ROOT && cmd == crate::control::CONTROL_IOCTL {
            let path = self.control_socket.as_os_str().as_encoded_bytes();
            if path.len() <= crate::control::CONTROL_PATH_MAX {
                return reply.ioctl(path.len() as i32, path);
            }
            return reply.error(Errno::from_i32(libc::ENAMETOOLONG));
        }
        // Terminal and filesystem ioctls do not apply to objects.
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    // No getxattr: its ENOSYS tells the kernel there are no extended attributes at
    // all, so writes and `ls -l` stop asking for security.capability and ACLs.

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            s.blocks_free,
            s.blocks_free,
            s.files,
            s.files_free,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str("create", name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let attach = self.attacher(|file| reply.open_backing(file));
        let created = self.fs.create_with(
            parent.0,
            name,
            mode & !umask,
            caller(req),
            attach.as_ref().map(|a| a as Attach),
        );
        drop(attach);
        // No FLUSH at close for a file made here (one round trip less per small file):
        // its record is written at create, and the RELEASE after close updates it.
        if let Ok((attr, _)) = &created {
            self.fs.kernel_looked_up(attr.ino);
        }
        match created {
            Ok((attr, Opened { fh, direct })) => match direct {
                Some(kernel) => reply.created_passthrough(
                    &TTL,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_NOFLUSH,
                    backing_id(&kernel),
                ),
                None => reply.created(
                    &TTL,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_NOFLUSH,
                ),
            },
            Err(err) => reply.error(errno("create", err)),
        }
    }
}

/// Sends the core's cache invalidations to the kernel through the session's channel.
struct Notifier(fuser::Notifier);

impl crate::fs::KernelCache for Notifier {
    fn invalidate(&self, change: &KernelChange) {
        // ENOENT (the kernel no longer caches it) is success; anything else is noise.
        let sent = match change {
            KernelChange::Inode(ino) => self.0.inval_inode(INodeNo(*ino), 0, -1),
            // A negative offset: attributes only, pages kept.
            KernelChange::Attrs(ino) => self.0.inval_inode(INodeNo(*ino), -1, 0),
            KernelChange::Entry(parent, name) => {
                self.0.inval_entry(INodeNo(*parent), OsStr::new(name))
            }
        };
        if let Err(err) = sent {
            tracing::debug!(?change, %err, "kernel cache invalidation not delivered");
        }
    }
}

pub fn kernel_cache<FS: Filesystem>(
    session: &fuser::Session<FS>,
) -> Arc<dyn crate::fs::KernelCache> {
    Arc::new(Notifier(session.notifier()))
}
