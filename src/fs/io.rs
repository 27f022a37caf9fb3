//! File data and attributes: open, read, write, setattr, fsync, release.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::{Content, RangeSet, RemoteSource};

use super::direct::{Attach, KernelFile};
use super::stream::Wrote;
use super::tree::{Attr, NodeKind, Tree};
use super::{Fs, FsError, FsResult};

/// From this size (the multipart threshold) a closed file goes up after `SHORT_WAIT`
/// instead of the whole debounce; a file new to the bucket after `NEW_FILE_SHARE` of it.
const LARGE_FILE: u64 = 16 << 20;
const SHORT_WAIT: Duration = Duration::from_millis(100);
const NEW_FILE_SHARE: u32 = 5;

/// What one try at a write found.
pub(super) enum Tried {
    Done(FsResult<u32>),
    /// The cache (or its disk) is full of changes not yet uploaded.
    NoRoom,
}

/// An open handle, with the kernel's part when its I/O goes straight to the cache file.
pub struct Opened {
    pub fh: u64,
    pub direct: Option<KernelFile>,
}

/// Attribute changes asked by setattr; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

impl Fs {
    /// Opens a file; `truncate` empties it first (O_TRUNC).
    pub fn open(self: &Arc<Self>, ino: u64, writable: bool, truncate: bool) -> FsResult<u64> {
        Ok(self.open_with(ino, writable, truncate, None, None)?.fh)
    }

    /// Opens a file; with `attach`, its I/O goes straight to the cache file when it can.
    /// `allowed`, if given, sees the attributes checked against the bucket before
    /// anything is opened or truncated; false refuses the open (EACCES).
    pub fn open_with(
        self: &Arc<Self>,
        ino: u64,
        writable: bool,
        truncate: bool,
        attach: Option<Attach>,
        allowed: Option<&dyn Fn(&Attr) -> bool>,
    ) -> FsResult<Opened> {
        self.revalidate_at_open(ino, allowed.is_some())?;
        if let Some(allowed) = allowed {
            if !allowed(&self.getattr(ino)?) {
                return Err(FsError::Access);
            }
        }
        {
            let mut tree = self.tree.lock();
            let inode = tree.get_mut(ino).ok_or(FsError::NotFound)?;
            if inode.is_dir() {
                return Err(FsError::IsDir);
            }
            inode.open_handles += 1;
            if writable {
                inode.open_writers += 1;
            }
        }
        if truncate && writable {
            let emptied = self.setattr(
                ino,
                SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            );
            if let Err(err) = emptied {
                self.forget_open(ino, writable);
                return Err(err);
            }
        }
        let direct = {
            let mut tree = self.tree.lock();
            // Every other handle is an ordinary one unless the file already has direct ones.
            let others = tree
                .get(ino)
                .map_or(0, |i| i.open_handles.saturating_sub(1));
            self.try_direct(&mut tree, ino, writable, others, attach)
        };
        let fh = self.new_handle(ino, writable, direct.is_some(), false);
        Ok(Opened { fh, direct })
    }

    /// Undoes the counting of an open that failed.
    fn forget_open(&self, ino: u64, writable: bool) {
        let mut tree = self.tree.lock();
        if let Some(inode) = tree.get_mut(ino) {
            inode.open_handles = inode.open_handles.saturating_sub(1);
            if writable {
                inode.open_writers = inode.open_writers.saturating_sub(1);
            }
        }
        tree.forget_if_unused(ino);
    }

    /// close(2) waits for this (release comes later, asynchronously): the record of a
    /// changed file is made durable here, so a crash right after close loses nothing.
    pub fn flush(&self, ino: u64) {
        let mut tree = self.tree.lock();
        self.notice_direct_writes(&mut tree, ino);
        if tree.dirty().contains_key(&ino) {
            self.persist(&mut tree, ino);
        }
    }

    pub fn release(&self, fh: u64) {
        let Some(handle) = self.handles.lock().remove(&fh) else {
            return;
        };
        let mut tree = self.tree.lock();
        if handle.direct {
            self.direct_released(&mut tree, handle.ino, handle.writable);
        }
        if let Some(inode) = tree.get_mut(handle.ino) {
            inode.open_handles = inode.open_handles.saturating_sub(1);
            if handle.writable {
                inode.open_writers = inode.open_writers.saturating_sub(1);
            }
            if handle.unflushed {
                inode.unflushed_writers = inode.unflushed_writers.saturating_sub(1);
            }
        }
        // The debounce counts from the close of a changed file, and the close is
        // the durability point: the record of a closed file survives a crash.
        let dirty = tree.dirty().contains_key(&handle.ino);
        let wait = self.upload_wait_after_close(&tree, handle.ino);
        if dirty {
            let head_start = self.wake.debounce().saturating_sub(wait);
            let now = Instant::now();
            tree.mark_dirty_at(handle.ino, now.checked_sub(head_start).unwrap_or(now));
        }
        if dirty || handle.unflushed {
            self.persist(&mut tree, handle.ino);
        }
        tree.forget_if_unused(handle.ino);
        drop(tree);
        self.wake.changed_due_in(wait);
    }

    /// How long a closed file waits before it goes up: the debounce, but at most
    /// `SHORT_WAIT` for a large file and a fifth of it for a new one (100 ms by
    /// default). A large file's upload takes many times the debounce, which would only
    /// add to its time to the bucket; a new file (never in the bucket) is mostly one a
    /// copy (cp, tar, rsync) has finished, and the whole wait kept its upload from
    /// overlapping the rest of the copy. The rename or attribute change that often
    /// follows a close (rsync, `cp -p`) comes within milliseconds; the repeated closes
    /// the debounce gathers into one upload are those of files already there (logs,
    /// documents saved again).
    fn upload_wait_after_close(&self, tree: &Tree, ino: u64) -> Duration {
        let debounce = self.wake.debounce();
        match tree.get(ino) {
            Some(inode) if inode.attr.size >= LARGE_FILE => debounce.min(SHORT_WAIT),
            Some(inode) if inode.stored.is_none() => debounce / NEW_FILE_SHARE,
            _ => debounce,
        }
    }

    /// The content file of `ino`, created on first use, and where absent bytes come from.
    pub(super) fn content(
        &self,
        tree: &mut Tree,
        ino: u64,
    ) -> FsResult<(Arc<Content>, Option<RemoteSource>, u64)> {
        let source = tree.source_of(ino);
        let inode = tree.get_mut(ino).ok_or(FsError::NotFound)?;
        // A symlink found by a metadata lookup after the kernel cached it as a file
        // reads as its object's body until the kernel looks it up again.
        if inode.attr.kind == NodeKind::Dir {
            return Err(FsError::IsDir);
        }
        // The kernel opens and truncates no special file through us (it refuses a
        // truncate, and serves a fifo's or device's opens itself): never a cache file.
        if inode.attr.kind.is_special() {
            return Err(FsError::Invalid);
        }
        let content = match &inode.content {
            Some(content) => content.clone(),
            None => {
                let present = if source.is_some() {
                    RangeSet::new()
                } else {
                    RangeSet::full()
                };
                let content = self.cache.create(inode.attr.size, present)?;
                inode.content = Some(content.clone());
                content
            }
        };
        Ok((content, source, inode.attr.size))
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (mut content, mut source, mut len) = self.content(&mut self.tree.lock(), ino)?;
        self.recent.touch(ino);
        // Bytes not here fail at once while the bucket is known offline.
        let mut data = content.read(offset, size, len, source.as_ref(), &self.reader);
        let stale = |e: &std::io::Error| e.kind() == ErrorKind::StaleNetworkFileHandle;
        if data.as_ref().is_err_and(stale) {
            // Once more if the mount took a new version meanwhile (the poll, or our own
            // upload or copy finishing): the bucket held what it now expects.
            let again = self.content(&mut self.tree.lock(), ino)?;
            if again.1.as_ref().map(|s| &s.etag) != source.as_ref().map(|s| &s.etag) {
                (content, source, len) = again;
                data = content.read(offset, size, len, source.as_ref(), &self.reader);
            }
        }
        let data = data.map_err(FsError::from).inspect_err(|err| {
            // The bucket holds another version than the cached bytes: this read fails
            // rather than mix the two, and the next open checks and takes the new one.
            if let (FsError::Stale(_), Some(inode)) = (err, self.tree.lock().get_mut(ino)) {
                inode.checked = None;
            }
        })?;
        if let Some(source) = source.filter(|s| content.start_stream(len.min(s.size))) {
            // Fetch ahead while the reader consumes what is here.
            let (content, fetcher) = (content.clone(), self.reader.clone());
            self.runtime.spawn_blocking(move || {
                if let Err(err) = content.stream_ahead(len, &source, &fetcher) {
                    tracing::debug!(%err, "prefetch failed; the reader fetches again");
                }
                content.prefetch_done();
            });
        }
        self.trim(ino);
        Ok(data)
    }

    /// One try at a write into the cache file. Past the cache limit, clean files are
    /// evicted to make room; `NoRoom` when only changed data is left (or the disk is
    /// full of it): the caller waits for uploads and tries again (see backpressure.rs).
    pub(super) fn try_write(&self, ino: u64, offset: u64, data: &[u8]) -> Tried {
        let (content, _, _) = match self.content(&mut self.tree.lock(), ino) {
            Ok(found) => found,
            Err(err) => return Tried::Done(Err(err)),
        };
        self.recent.touch(ino);
        let len = data.len() as u64;
        let pinned = content.pin();
        let growth = content.growth(offset, len);
        if growth > 0 && !self.make_room(growth) {
            return Tried::NoRoom;
        }
        let mut written = content.write(offset, data);
        if written.as_ref().is_err_and(is_disk_full) && self.free_disk(len) {
            written = content.write(offset, data);
        }
        let mut tree = self.tree.lock();
        let Some(inode) = tree.get_mut(ino) else {
            return Tried::Done(Err(FsError::NotFound));
        };
        let now = SystemTime::now();
        if written.is_ok() {
            inode.attr.size = inode.attr.size.max(offset + len);
            inode.refused_write = false;
        }
        // A failed write may still have changed bytes in place: the file counts as
        // changed either way, so what the mount shows is what goes up.
        inode.attr.mtime = now;
        inode.attr.ctime = now;
        // Not `meta_known`: a write sets the mtime, not the mode and owner, which the
        // upload keeps from the bucket when this mount never learned them.
        inode.data_version += 1;
        let wrote = Wrote {
            offset,
            len,
            version: inode.data_version,
        };
        tree.mark_dirty(ino);
        drop(pinned);
        match written {
            Err(err) if is_disk_full(&err) => Tried::NoRoom,
            Err(err) => Tried::Done(Err(err.into())),
            Ok(()) => {
                let start = self.stream_start(&tree, ino, &wrote);
                drop(tree);
                self.streams.wrote(ino, wrote, start);
                Tried::Done(Ok(data.len() as u32))
            }
        }
    }

    pub fn setattr(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        // Direct writes so far come first: a later mtime or size given here wins.
        self.notice_direct_writes(&mut self.tree.lock(), ino);
        let content = match change.size {
            Some(_) => Some(self.content(&mut self.tree.lock(), ino)?.0),
            None => None,
        };
        // Pinned until the size change is recorded, like a write.
        let _pinned = content.as_ref().map(|c| c.pin());
        if let (Some(content), Some(size)) = (&content, change.size) {
            self.streams.changed(ino);
            content.truncate(size)?;
        }
        let mut tree = self.tree.lock();
        let inode = tree.get_mut(ino).ok_or(FsError::NotFound)?;
        let now = SystemTime::now();
        if let Some(size) = change.size {
            inode.attr.size = size;
            inode.attr.mtime = now;
            inode.data_version += 1;
            // An explicit size is what the file should be, even 0 after a refused write.
            inode.refused_write = false;
        }
        if let Some(mode) = change.mode {
            inode.attr.perm = mode & 0o7777;
        }
        if let Some(uid) = change.uid {
            inode.attr.uid = uid;
        }
        if let Some(gid) = change.gid {
            inode.attr.gid = gid;
        }
        if let Some(atime) = change.atime {
            inode.attr.atime = atime;
        }
        if let Some(mtime) = change.mtime {
            inode.attr.mtime = mtime;
        }
        let meta_changed = change.mode.is_some()
            || change.uid.is_some()
            || change.gid.is_some()
            || change.mtime.is_some();
        if meta_changed {
            inode.meta_version += 1;
        }
        if meta_changed || change.size.is_some() {
            inode.attr.ctime = now;
            inode.meta_known |= meta_changed;
            tree.mark_dirty(ino);
            self.persist(&mut tree, ino);
        }
        tree.attr_of(ino).ok_or(FsError::NotFound)
    }

    /// Makes the file's cache data durable on local disk and asks for its upload now.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        let content = self.tree.lock().get(ino).and_then(|i| i.content.clone());
        if let Some(content) = content {
            content.file().sync_data()?;
        }
        let mut tree = self.tree.lock();
        self.notice_direct_writes(&mut tree, ino);
        if tree.dirty().contains_key(&ino) {
            tree.urgent.insert(ino);
            self.persist(&mut tree, ino);
        }
        let synced = tree.state.sync_to_disk();
        drop(tree);
        if let Err(err) = synced {
            // A failed fsync of the state cannot be retried safely.
            tracing::error!(%err, "fsync of the state failed");
            return Err(FsError::Io(err.to_string()));
        }
        self.wake.now();
        if self.config.fsync_remote {
            return self.wait_uploaded(ino);
        }
        Ok(())
    }

    /// With `fsync_remote`: waits until the bucket holds the file as it is now (later
    /// changes are not waited for), or fails with EIO once the bound passes (the
    /// upload itself goes on in the background).
    fn wait_uploaded(&self, ino: u64) -> FsResult<()> {
        let versions = self
            .tree
            .lock()
            .get(ino)
            .map(|i| (i.data_version, i.meta_version));
        let Some((data_version, meta_version)) = versions else {
            return Ok(());
        };
        let uploaded = || {
            let tree = self.tree.lock();
            !tree.dirty().contains_key(&ino)
                || tree
                    .get(ino)
                    .and_then(|i| i.stored.as_ref())
                    .is_some_and(|s| {
                        s.data_version >= data_version && s.meta_version >= meta_version
                    })
        };
        let deadline = std::time::Instant::now() + self.config.request_timeout * 4;
        while !uploaded() {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(ino, "fsync: the upload did not finish in time");
                return Err(FsError::Io(
                    "upload not finished before the fsync bound".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }
}

fn is_disk_full(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC)
}
