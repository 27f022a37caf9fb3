//! The filesystem core: POSIX rules over the inode table, the cache and the bucket.
//! It knows no FUSE types; `fuse.rs` translates.

pub mod attempts;
mod backpressure;
mod conflict;
mod conflict_budget;
mod conflict_name;
mod direct;
mod error;
mod evict;
mod io;
mod listing;
mod namespace;
mod persist;
pub mod plan;
mod prefill;
mod progress;
mod remote;
mod reserved;
mod retype;
mod revalidate;
mod special;
pub mod stream;
pub mod tree;
mod unknown_meta;
mod verify;
pub mod wake;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::cache::{Cache, Fetcher};
use crate::mapping::{DefaultAttrs, KeyPrefix};
use crate::state::StateDb;
use crate::store::{ObjectStore, StoreError};

pub use backpressure::WriteDone;
pub use conflict::{KernelCache, KernelChange};
pub use conflict_name::conflict_name;
pub use direct::{Attach, DirectUse, KernelFile};
pub use error::{FsError, FsResult};
pub use io::{Opened, SetAttr};
pub use namespace::{Caller, DirEntry, RenameMode};
pub use persist::cache_files_in_use;
pub use progress::{Pending, SyncMark};
pub use remote::{HeadChecked, PollScope};
pub use reserved::{PROBE_NAME, PROBE_TAG};
use tree::Tree;

/// The reconciler's pace, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollCadence {
    /// Seconds until the next poll.
    pub every_secs: u64,
    /// Directories the last poll listed; None: the whole prefix.
    pub dirs: Option<usize>,
}
pub use tree::{same_etag, Attr, NodeKind, ROOT};
pub use verify::{Finding, FindingKind, VerifyReport};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct FsConfig {
    pub prefix: KeyPrefix,
    pub defaults: DefaultAttrs,
    /// Upper bound on any one network wait made on behalf of a caller.
    pub request_timeout: Duration,
    /// How many entries of a large listing are looked up (HEAD) in the background.
    pub metadata_fill: usize,
    /// Listings with at most this many such entries wait for their metadata.
    pub metadata_wait: usize,
    /// fsync returns only once the file is in the bucket (otherwise: on local disk).
    pub fsync_remote: bool,
    /// Opening a file whose bucket version was confirmed longer ago than this asks
    /// the bucket again (one HEAD): close-to-open freshness.
    pub metadata_ttl: Duration,
    /// How long an open waits for that HEAD before it serves what the mount has and
    /// lets the check finish in the background.
    pub open_check_wait: Duration,
    /// How long a write waits for room in a cache full of changes while no upload
    /// makes progress; past it, ENOSPC.
    pub cache_full_wait: Duration,
}

/// Whether the server honours If-Match / If-None-Match on writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// Not probed yet: writes are checked with a HEAD before.
    Unknown = 0,
    Honoured = 1,
    /// Ignored (or refused): writes are checked with a HEAD before.
    Ignored = 2,
}

/// An open file or directory.
#[derive(Debug, Clone, Copy)]
struct OpenHandle {
    ino: u64,
    writable: bool,
    /// The kernel sends this handle's I/O straight to the cache file.
    direct: bool,
    /// Opened by CREATE: no FLUSH comes at its close.
    unflushed: bool,
}

pub struct Fs {
    tree: Mutex<Tree>,
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
    cache: Cache,
    /// Fetches for the uploader (a file's absent bytes before its upload): it keeps
    /// trying while the bucket is away, and so finds out when it is back.
    fetcher: Fetcher,
    /// Fetches for readers: they fail at once while the bucket is known offline.
    reader: Fetcher,
    config: FsConfig,
    /// Wakes the uploader when something became dirty or urgent.
    pub(crate) wake: Arc<wake::UploadWake>,
    /// One listing at a time, so a directory is never merged twice.
    listing: Mutex<()>,
    handles: Mutex<HashMap<u64, OpenHandle>>,
    next_handle: AtomicU64,
    /// Which cached files were used least recently (eviction order).
    recent: evict::Recency,
    /// Conflict copies made since the mount started.
    conflicts: AtomicU64,
    /// Where to send kernel cache invalidations (set once the FUSE session exists).
    kernel: OnceLock<Arc<dyn KernelCache>>,
    conditional_writes: AtomicU8,
    /// Whether handles can be direct (FUSE passthrough), and how many were.
    pub direct_use: DirectUse,
    /// Unix seconds when a poll's listing was last applied (0: never).
    pub last_poll: AtomicU64,
    /// How the reconciler polls, as it last decided (for `status`).
    pub poll_cadence: Mutex<Option<PollCadence>>,
    /// Keys already logged as impossible to show.
    skipped_logged: Mutex<HashSet<String>>,
    /// Files whose check against the bucket (the HEAD at open) is under way, and
    /// where its finding will be.
    checking: Mutex<HashMap<u64, revalidate::Finding>>,
    /// Keys already logged for unusable metadata (every open HEADs again).
    metadata_warned: Mutex<HashSet<String>>,
    /// Large files whose multipart upload runs while they are written.
    streams: stream::Streams,
    /// FUSE writes waiting for room in the cache.
    waiting_writes: Arc<backpressure::WaitingWrites>,
}

impl Fs {
    /// Builds the core; local changes recorded in `state` by an earlier run come back.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        runtime: Handle,
        cache: Cache,
        state: Arc<StateDb>,
        config: FsConfig,
    ) -> Arc<Fs> {
        let now = SystemTime::now();
        let root = Attr {
            ino: ROOT,
            kind: NodeKind::Dir,
            size: 0,
            perm: config.defaults.dir_mode & 0o7777,
            uid: config.defaults.uid,
            gid: config.defaults.gid,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
            rdev: 0,
        };
        let fetcher = Fetcher::new(store.clone(), runtime.clone(), config.request_timeout);
        let reader = fetcher.clone().failing_fast_offline();
        let streams = stream::Streams::new(store.clone(), runtime.clone(), state.clone());
        let fs = Arc::new(Fs {
            tree: Mutex::new(Tree::new(root, state)),
            store,
            runtime,
            cache,
            fetcher,
            reader,
            config,
            wake: Arc::new(wake::UploadWake::default()),
            listing: Mutex::new(()),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            recent: evict::Recency::new(),
            conflicts: AtomicU64::new(0),
            kernel: OnceLock::new(),
            conditional_writes: AtomicU8::new(ConditionalWrites::Unknown as u8),
            direct_use: DirectUse::default(),
            last_poll: AtomicU64::new(0),
            skipped_logged: Mutex::new(Default::default()),
            metadata_warned: Mutex::new(Default::default()),
            poll_cadence: Mutex::new(None),
            checking: Mutex::new(HashMap::new()),
            streams,
            waiting_writes: Default::default(),
        });
        {
            let mut tree = fs.tree.lock();
            fs.restore(&mut tree, &fs.cache);
        }
        fs
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Conflict copies made since the mount started.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Connects the core to the kernel's caches (FUSE notifications).
    pub fn set_kernel_cache(&self, kernel: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    pub fn conditional_writes(&self) -> ConditionalWrites {
        match self.conditional_writes.load(Ordering::Relaxed) {
            1 => ConditionalWrites::Honoured,
            2 => ConditionalWrites::Ignored,
            _ => ConditionalWrites::Unknown,
        }
    }

    pub fn set_conditional_writes(&self, mode: ConditionalWrites) {
        self.conditional_writes.store(mode as u8, Ordering::Relaxed);
    }

    /// Whether the last request to the bucket went unanswered: what needs the bucket
    /// then fails at once instead of waiting out the request timeout again.
    pub fn offline(&self) -> bool {
        self.store.stats().is_offline()
    }

    /// A request started when the store had `heard` answers got none within its
    /// bound: the mount is offline until the next answer (to any request: the poll's,
    /// the uploader's, the probe's), unless the bucket answered others meanwhile (a
    /// request retried through resets is slow, the bucket is not gone).
    fn no_answer(&self, what: &str, heard: u64) {
        tracing::warn!("{what}: no answer within {:?}", self.config.request_timeout);
        self.store.stats().unanswered_since(heard);
    }

    /// Runs a store request from a FUSE thread, bounded by the request timeout; while
    /// the bucket is known offline it fails at once without asking.
    fn block_on<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> FsResult<T>
    where
        T: Send,
    {
        if self.offline() {
            tracing::debug!("{what}: the bucket is offline");
            return Err(FsError::Io(format!("{what}: the bucket is offline")));
        }
        let timeout = self.config.request_timeout;
        let heard = self.store.stats().answers();
        // The timer must be created inside the runtime, hence the async block.
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(StoreError::NotFound(_))) => Err(FsError::NotFound),
            // The bucket's policy, not a failure of the mount: EACCES, as on a disk.
            Ok(Err(err @ StoreError::AccessDenied(_))) => {
                tracing::warn!("{what}: {err}");
                Err(FsError::Access)
            }
            Ok(Err(err)) => {
                tracing::warn!("{what}: {err}");
                Err(FsError::Io(err.to_string()))
            }
            Err(_) => {
                self.no_answer(what, heard);
                Err(FsError::Io(format!("{what} timed out")))
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let mut tree = self.tree.lock();
        self.notice_direct_writes(&mut tree, ino);
        tree.attr_of(ino).ok_or(FsError::NotFound)
    }

    fn new_handle(&self, ino: u64, writable: bool, direct: bool, unflushed: bool) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            OpenHandle {
                ino,
                writable,
                direct,
                unflushed,
            },
        );
        fh
    }

    /// Filesystem figures for `df`: object stores have no size, so report 1 PiB.
    pub fn statfs(&self) -> StatFs {
        const BLOCK: u64 = 4096;
        const CAPACITY: u64 = 1 << 50;
        let files = self.tree.lock().inodes.len() as u64;
        StatFs {
            blocks: CAPACITY / BLOCK,
            blocks_free: CAPACITY / BLOCK,
            files,
            files_free: u32::MAX as u64,
            block_size: BLOCK as u32,
            name_max: 255,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub blocks_free: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_max: u32,
}

/// Checks a name given by an application before it becomes part of a key.
fn check_name(name: &str) -> FsResult<()> {
    if name.len() > 255 {
        return Err(FsError::NameTooLong);
    }
    if !crate::mapping::is_valid_name(name) {
        return Err(FsError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod outage_tests;
#[cfg(test)]
mod tests;
