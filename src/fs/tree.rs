//! The inode table and namespace: names <-> inodes, paths, and what each inode
//! holds locally versus what the bucket holds for it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::cache::Content;
use crate::state::StateDb;

pub const ROOT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// Special files: a zero-byte object whose mode has their type bits, as s3fs
    /// makes them. The kernel handles their opens; a mount is `nodev`, so a device
    /// from the bucket opens nothing.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl NodeKind {
    /// The type bits of st_mode (`S_IFMT`).
    pub fn type_bits(self) -> u32 {
        match self {
            NodeKind::File => libc::S_IFREG,
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
            NodeKind::CharDevice => libc::S_IFCHR,
            NodeKind::BlockDevice => libc::S_IFBLK,
        }
    }

    /// The kind an st_mode names; None for type bits no file has.
    pub fn from_mode(mode: u32) -> Option<NodeKind> {
        [
            NodeKind::File,
            NodeKind::Dir,
            NodeKind::Symlink,
            NodeKind::Fifo,
            NodeKind::Socket,
            NodeKind::CharDevice,
            NodeKind::BlockDevice,
        ]
        .into_iter()
        .find(|kind| kind.type_bits() == mode & libc::S_IFMT)
    }

    /// A fifo, socket or device: no data of its own.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice
        )
    }

    /// Whether st_rdev means something for it.
    pub fn is_device(self) -> bool {
        matches!(self, NodeKind::CharDevice | NodeKind::BlockDevice)
    }
}

/// Attributes as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    /// Permission bits only (no type bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// The link count: not kept in the tree but counted where attributes leave the
    /// core (`Tree::attr_of`), so no change of the namespace can leave it stale.
    pub nlink: u32,
    /// The device number of a character or block device; 0 for anything else.
    pub rdev: u32,
}

/// The object the bucket holds for an inode, as this mount last wrote or saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// The local versions that object reflects.
    pub data_version: u64,
    pub meta_version: u64,
}

pub struct Inode {
    pub parent: u64,
    pub name: String,
    pub attr: Attr,
    pub children: Option<BTreeMap<String, u64>>,
    /// Directories: whether the bucket's entries under it were merged in.
    pub listed: bool,
    /// Directories: the epoch at which the LIST that filled it started. A poll whose
    /// listing started earlier is older news about its entries.
    pub listed_at: u64,
    pub symlink_target: Option<String>,
    /// Whether attributes came from object metadata or local changes (not defaults).
    pub meta_known: bool,
    pub content: Option<Arc<Content>>,
    pub stored: Option<Stored>,
    pub data_version: u64,
    pub meta_version: u64,
    pub open_handles: u32,
    pub open_writers: u32,
    /// Writers opened by CREATE: the kernel sends no FLUSH at their close, so until
    /// their RELEASE the record stays and says "changed" (see persist).
    pub unflushed_writers: u32,
    /// Removed from the namespace; lives on while handles are open.
    pub unlinked: bool,
    /// Its name got an inode of another type (retype.rs): it also lives on while the
    /// kernel holds lookups of it, which it may use until the invalidation lands.
    pub retyped: bool,
    /// Entries the kernel was given minus those it forgot (FORGET).
    pub kernel_lookups: u64,
    /// When the bucket last confirmed `stored` (a listing or a HEAD).
    pub checked: Option<Instant>,
    /// Handles whose I/O goes straight to the cache file, if any are open.
    pub direct: Option<super::direct::DirectOpen>,
    /// Directories filled from the poll: entries whose metadata to look up (HEAD)
    /// on the directory's first use.
    pub fill_on_read: super::listing::Fill,
    /// Its last write was refused for want of room (ENOSPC) and nothing was written
    /// since: never uploaded while it is also empty and new (see plan.rs).
    pub refused_write: bool,
}

impl Inode {
    /// Whether every byte of its data (a symlink's target) is here, not only in the
    /// bucket.
    pub fn all_here(&self) -> bool {
        match self.attr.kind {
            NodeKind::File => self
                .content
                .as_ref()
                .is_some_and(|c| c.is_complete(self.attr.size)),
            NodeKind::Symlink => self.symlink_target.is_some(),
            NodeKind::Dir => true,
            // Special files: their metadata is all there is.
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice => {
                true
            }
        }
    }

    fn new(parent: u64, name: &str, attr: Attr, is_dir: bool) -> Inode {
        Inode {
            parent,
            name: name.to_string(),
            attr,
            children: is_dir.then(BTreeMap::new),
            listed: false,
            listed_at: 0,
            symlink_target: None,
            meta_known: false,
            content: None,
            stored: None,
            data_version: 0,
            meta_version: 0,
            open_handles: 0,
            open_writers: 0,
            unflushed_writers: 0,
            unlinked: false,
            retyped: false,
            kernel_lookups: 0,
            checked: None,
            direct: None,
            fill_on_read: Default::default(),
            refused_write: false,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr.kind == NodeKind::Dir
    }

    /// Whether the bucket holds exactly what this inode holds now at `key`.
    pub fn in_sync_at(&self, key: &str) -> bool {
        self.stored.as_ref().is_some_and(|s| {
            s.key == key
                && s.data_version == self.data_version
                && s.meta_version == self.meta_version
        })
    }
}

/// Everything the core guards with one lock.
pub struct Tree {
    pub inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Inodes whose bucket object must be written, with the time of the last change.
    dirty: BTreeMap<u64, Instant>,
    /// The same entries, oldest change first: the planner reads only what has settled.
    dirty_by_time: BTreeSet<(Instant, u64)>,
    /// Inodes whose upload was asked to happen now (fsync), skipping the debounce.
    pub urgent: BTreeSet<u64>,
    /// Keys to delete once nothing in the namespace or in flight needs them, with the
    /// version meant (None: whatever is there, e.g. a directory marker).
    pub pending_deletes: BTreeMap<String, Option<String>>,
    /// Key -> the live inode whose content the bucket holds there.
    pub stored_keys: HashMap<String, u64>,
    /// The durable copy of what is dirty and what is owed a delete.
    pub state: Arc<StateDb>,
    /// Inode -> its record as last written to the durable state ...
    pub persisted: HashMap<u64, crate::state::EntryRecord>,
    /// ... and path -> the inode whose record the state holds there now (records
    /// are kept by path: a file renamed over another takes over its record's path).
    pub persisted_paths: HashMap<String, u64>,
    /// While a LIST is under way: keys deleted meanwhile, which its answer may still show.
    pub deleted_during_listing: Option<HashSet<String>>,
    /// Counts this mount's writes and deletes in the bucket, and what it learned of
    /// keys outside a poll (a HEAD, a directory's LIST) ...
    pub epoch: u64,
    /// ... and the count at each key's last one, so a listing that started earlier is
    /// not taken as news about that key.
    pub touched: HashMap<String, u64>,
    /// Epochs at which listings and HEADs now under way started, with how many: what
    /// `touched` must keep for them.
    readers: BTreeMap<u64, usize>,
    /// `touched`'s size after its last pruning.
    touched_kept: usize,
    /// Keys a job is writing or deleting right now, with how many jobs.
    pub busy: HashMap<String, u32>,
    /// Keys an upload cut short by a crash may have written: what the bucket holds
    /// there may be our own data, so it is not taken as someone else's change.
    pub uncertain: HashSet<String>,
    /// Writes sent whose reply was lost or not in yet: an object at such a key may be ours.
    pub attempts: super::attempts::Attempts,
    /// Conflict copies made per file, and uploads held for making too many.
    pub conflict_budget: super::conflict_budget::ConflictBudget,
    /// Inodes open for direct writing: their changes are noticed by looking.
    pub direct_writing: BTreeSet<u64>,
}

impl Tree {
    pub fn new(root_attr: Attr, state: Arc<StateDb>) -> Tree {
        let mut root = Inode::new(ROOT, "", root_attr, true);
        root.meta_known = true;
        Tree {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            dirty: BTreeMap::new(),
            dirty_by_time: BTreeSet::new(),
            urgent: BTreeSet::new(),
            pending_deletes: BTreeMap::new(),
            stored_keys: HashMap::new(),
            state,
            persisted: HashMap::new(),
            persisted_paths: HashMap::new(),
            deleted_during_listing: None,
            epoch: 0,
            touched: HashMap::new(),
            readers: BTreeMap::new(),
            touched_kept: 0,
            busy: HashMap::new(),
            uncertain: HashSet::new(),
            attempts: Default::default(),
            conflict_budget: Default::default(),
            direct_writing: BTreeSet::new(),
        }
    }

    /// Queues the delete of `key` (of version `etag` if known), durably.
    pub fn queue_delete(&mut self, key: String, etag: Option<String>) {
        // An unconditional delete (an upload cut short by a crash, whose version is
        // unknown) stays unconditional; otherwise the latest version queued is meant.
        // A server that sent no ETag leaves the version unknown: delete unconditionally.
        let etag = match self.pending_deletes.get(&key) {
            Some(None) => None,
            _ => etag.filter(|e| !e.is_empty()),
        };
        tracing::debug!(%key, ?etag, "delete queued");
        if let Err(err) = self.state.put_delete(&key, etag.as_deref()) {
            tracing::error!(%key, %err, "cannot record a pending delete in the state");
        }
        self.pending_deletes.insert(key, etag);
    }

    /// Whether a listed object is one this mount is deleting (so it must not show).
    pub fn is_being_deleted(&self, key: &str, etag: &str) -> bool {
        match self.pending_deletes.get(key) {
            Some(None) => true,
            Some(Some(meant)) => same_etag(meant, etag),
            None => false,
        }
    }

    /// Drops a queued delete (done, or the key is in use again).
    pub fn unqueue_delete(&mut self, key: &str) {
        if self.pending_deletes.remove(key).is_some() {
            tracing::debug!(%key, "delete dropped");
            if let Err(err) = self.state.remove_delete(key) {
                tracing::error!(%key, %err, "cannot update a pending delete in the state");
            }
        }
    }

    /// Where the absent bytes of `ino` come from: the version it is based on, or any
    /// version at that key while a write of ours there was interrupted (a crash mid
    /// upload): then the bucket may hold our own bytes under a new ETag.
    pub fn source_of(&self, ino: u64) -> Option<crate::cache::RemoteSource> {
        let stored = self.get(ino)?.stored.as_ref()?;
        let etag = if self.uncertain.contains(&stored.key) {
            String::new()
        } else {
            stored.etag.clone()
        };
        Some(crate::cache::RemoteSource {
            key: stored.key.clone(),
            size: stored.size,
            etag,
        })
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    /// The attributes of `ino` as stat shows them: a directory has a link from its
    /// parent, its own `.` and each subdirectory's `..`; a name removed while open
    /// has none left. A directory not listed yet has an unknown number of
    /// subdirectories: 1, which find and fts read as "unknown", not as "no
    /// subdirectories" (2 would make them skip its entries).
    pub fn attr_of(&self, ino: u64) -> Option<Attr> {
        let inode = self.get(ino)?;
        let nlink = match &inode.children {
            _ if inode.unlinked => 0,
            Some(_) if !inode.listed => 1,
            Some(children) => {
                let subdirs = children
                    .values()
                    .filter(|&&c| self.get(c).is_some_and(Inode::is_dir))
                    .count();
                u32::try_from(subdirs).map_or(u32::MAX, |n| n.saturating_add(2))
            }
            None => 1,
        };
        Some(Attr {
            nlink,
            ..inode.attr
        })
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.inodes
            .get(&parent)?
            .children
            .as_ref()?
            .get(name)
            .copied()
    }

    /// Adds a new inode under `parent` and returns its number.
    pub fn insert(&mut self, parent: u64, name: &str, mut attr: Attr, is_dir: bool) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        attr.ino = ino;
        let inode = Inode::new(parent, name, attr, is_dir);
        self.inodes.insert(ino, inode);
        if let Some(children) = self
            .inodes
            .get_mut(&parent)
            .and_then(|p| p.children.as_mut())
        {
            children.insert(name.to_string(), ino);
        }
        ino
    }

    /// Path components from the root to `ino`, or None if it is not in the namespace.
    pub fn path(&self, ino: u64) -> Option<Vec<&str>> {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let inode = self.inodes.get(&at)?;
            if inode.unlinked {
                return None;
            }
            parts.push(inode.name.as_str());
            at = inode.parent;
        }
        parts.reverse();
        Some(parts)
    }

    /// Finds the inode at `path` among what is loaded, without touching the bucket.
    pub fn resolve(&self, path: &[&str]) -> Option<u64> {
        path.iter().try_fold(ROOT, |at, name| self.child(at, name))
    }

    /// Takes `ino` out of its parent's children (unlink, rmdir, rename source).
    pub fn detach(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let (parent, name) = (inode.parent, inode.name.clone());
        if let Some(children) = self
            .inodes
            .get_mut(&parent)
            .and_then(|p| p.children.as_mut())
        {
            if children.get(&name) == Some(&ino) {
                children.remove(&name);
            }
        }
    }

    /// Records that the bucket now holds `ino`'s content at `stored.key`.
    pub fn set_stored(&mut self, ino: u64, stored: Option<Stored>) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        if let Some(old) = inode.stored.take() {
            if self.stored_keys.get(&old.key) == Some(&ino) {
                self.stored_keys.remove(&old.key);
            }
        }
        if let Some(new) = &stored {
            self.stored_keys.insert(new.key.clone(), ino);
        }
        inode.checked = stored.as_ref().map(|_| Instant::now());
        inode.stored = stored;
    }

    /// All inodes below `ino` (not including it), loaded ones only.
    pub fn descendants(&self, ino: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(at) = stack.pop() {
            if let Some(children) = self.inodes.get(&at).and_then(|i| i.children.as_ref()) {
                for &child in children.values() {
                    out.push(child);
                    stack.push(child);
                }
            }
        }
        out
    }

    /// Notes that the state now holds `record` for `ino`.
    pub fn note_persisted(&mut self, ino: u64, record: crate::state::EntryRecord) {
        self.persisted_paths.insert(record.path.clone(), ino);
        self.persisted.insert(ino, record);
    }

    /// Forgets `ino`'s record; its path, if the state's record there is still
    /// `ino`'s to remove (not another inode's that took the path since).
    pub fn unnote_persisted(&mut self, ino: u64) -> Option<String> {
        let record = self.persisted.remove(&ino)?;
        if self.persisted_paths.get(&record.path) != Some(&ino) {
            return None;
        }
        self.persisted_paths.remove(&record.path);
        Some(record.path)
    }

    /// Notes that this mount changed `key` in the bucket, or learned its state there,
    /// just now.
    pub fn touch(&mut self, key: &str) {
        self.epoch += 1;
        self.touched.insert(key.to_string(), self.epoch);
        // Pruned as it doubles, so a mount that never polls does not grow it forever.
        if self.touched.len() > 2 * self.touched_kept + 1024 {
            self.prune_touched();
        }
    }

    /// Notes that a listing or HEAD starts now; its epoch (see `own_work_on`).
    pub fn begin_reading(&mut self) -> u64 {
        *self.readers.entry(self.epoch).or_default() += 1;
        self.epoch
    }

    pub fn end_reading(&mut self, epoch: u64) {
        if let Some(count) = self.readers.get_mut(&epoch) {
            *count -= 1;
            if *count == 0 {
                self.readers.remove(&epoch);
            }
        }
    }

    /// Drops what no listing or HEAD under way, nor any started later, needs: the
    /// keys touched no later than the oldest of them started.
    pub fn prune_touched(&mut self) {
        let floor = self.readers.keys().next().copied().unwrap_or(self.epoch);
        self.touched.retain(|_, at| *at > floor);
        self.touched_kept = self.touched.len();
    }

    /// Notes a delete of `key` done just now: of the key, and of the directories above
    /// it, which a listing started earlier may still show (a removed or renamed
    /// directory whose last key just went).
    pub fn touch_deleted(&mut self, key: &str) {
        self.touch(key);
        let ends: Vec<usize> = key.match_indices('/').map(|(i, _)| i + 1).collect();
        for end in ends.into_iter().filter(|&end| end < key.len()) {
            self.touched.insert(key[..end].to_string(), self.epoch);
        }
    }

    /// Whether a delete is still owed strictly under the directory prefix `dir`.
    pub fn deletes_pending_below(&self, dir: &str) -> bool {
        use std::ops::Bound::{Excluded, Unbounded};
        self.pending_deletes
            .range::<str, _>((Excluded(dir), Unbounded))
            .next()
            .is_some_and(|(key, _)| key.starts_with(dir))
    }

    /// Whether directory `dir` was filled by a LIST that started after `epoch`: what
    /// a poll started at `epoch` says about its entries is older than what it holds.
    pub fn listed_after(&self, dir: u64, epoch: u64) -> bool {
        self.get(dir).is_some_and(|d| d.listed_at > epoch)
    }

    /// Whether what a listing started at `epoch` says about `key` may be out of date
    /// because of this mount's own work on it, or newer news of it.
    pub fn own_work_on(&self, key: &str, epoch: u64) -> bool {
        self.busy.contains_key(key)
            || self.uncertain.contains(key)
            || self.attempts.any_at(key)
            || self.touched.get(key).is_some_and(|&at| at > epoch)
    }

    pub fn mark_dirty(&mut self, ino: u64) {
        self.mark_dirty_at(ino, Instant::now());
    }

    /// Records a change of `ino` as made at `at`: a time before now makes its
    /// debounce end that much sooner.
    pub fn mark_dirty_at(&mut self, ino: u64, at: Instant) {
        if let Some(old) = self.dirty.insert(ino, at) {
            self.dirty_by_time.remove(&(old, ino));
        }
        self.dirty_by_time.insert((at, ino));
    }

    /// The bucket holds `ino` as it is (or it needs no object any more).
    pub fn clear_dirty(&mut self, ino: u64) {
        if let Some(old) = self.dirty.remove(&ino) {
            self.dirty_by_time.remove(&(old, ino));
        }
    }

    /// When the change longest waiting for the bucket was made.
    pub fn oldest_change(&self) -> Option<Instant> {
        self.dirty_by_time.first().map(|&(changed, _)| changed)
    }

    /// Inodes with changes for the bucket, and when each last changed.
    pub fn dirty(&self) -> &BTreeMap<u64, Instant> {
        &self.dirty
    }

    /// Up to `n` changed inodes whose last change is after `after` and not later than
    /// `settled_before`, oldest first, as (time of change, inode).
    pub fn dirty_chunk(
        &self,
        after: Option<(Instant, u64)>,
        settled_before: Instant,
        n: usize,
    ) -> Vec<(Instant, u64)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let start = after.map_or(Unbounded, Excluded);
        self.dirty_by_time
            .range((start, Included((settled_before, u64::MAX))))
            .take(n)
            .copied()
            .collect()
    }

    /// Drops an unlinked inode once no handle holds it (nor the kernel, if retyped).
    pub fn forget_if_unused(&mut self, ino: u64) {
        let unused = self.inodes.get(&ino).is_some_and(|i| {
            i.unlinked && i.open_handles == 0 && !(i.retyped && i.kernel_lookups > 0)
        });
        if unused {
            self.set_stored(ino, None);
            if let Some(content) = self.inodes.get(&ino).and_then(|i| i.content.as_ref()) {
                content.remove();
            }
            self.inodes.remove(&ino);
            self.clear_dirty(ino);
            self.urgent.remove(&ino);
        }
    }
}

pub use crate::store::same_etag;
