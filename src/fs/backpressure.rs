//! Writes that find the cache full of changes not yet uploaded wait for uploads to
//! make room instead of failing: while anything makes progress (space freed, an upload
//! or part finished), and at most `cache_full_wait` without any. Only then ENOSPC.
//!
//! FUSE writes wait off the FUSE threads: they are queued here and served, in order,
//! by one thread of their own, so waiting writers never take the threads readers need.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::io::Tried;
use super::{Fs, FsError, FsResult};
use crate::cache::{Room, Waiter};

/// Waiters look again this often even without a signal: a clean file a reader held
/// (pinned) may have become evictable, which nothing announces.
const RECHECK: Duration = Duration::from_millis(250);

/// Called with the outcome of a queued write (the FUSE reply).
pub type WriteDone = Box<dyn FnOnce(FsResult<u32>) + Send>;

/// A write waiting for room.
struct Queued {
    ino: u64,
    offset: u64,
    data: Vec<u8>,
    done: WriteDone,
    since: Instant,
    /// Counts it as waiting (status, the uploader's hurry) until it is answered.
    _waiting: Waiter,
}

/// Writes waiting for room, oldest first.
#[derive(Default)]
pub(super) struct WaitingWrites {
    queue: Mutex<VecDeque<Queued>>,
    arrived: Condvar,
    /// Whether the thread serving the queue runs.
    serving: Mutex<bool>,
}

impl Fs {
    /// Writes, waiting in the calling thread for room when the cache is full of
    /// changes (see the module's comment).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let room = self.cache.usage().room().clone();
        let mut waiting: Option<Waiter> = None;
        let mut stalled_since = Instant::now();
        loop {
            let seen = room.epoch();
            if let Tried::Done(result) = self.try_write(ino, offset, data) {
                return result;
            }
            if waiting.is_none() {
                waiting = Some(room.enter());
                self.wake.now(); // closed files go up now, without their debounce
            }
            let give_up = stalled_since + self.config.cache_full_wait;
            if Instant::now() >= give_up {
                return Err(self.refuse_write(ino));
            }
            if room.wait(seen, give_up.min(Instant::now() + RECHECK)) {
                stalled_since = Instant::now();
            }
        }
    }

    /// Writes now if there is room, else queues the write and returns: `done` gets
    /// the outcome later, from the queue's thread. A write of a file that has writes
    /// waiting queues behind them, so one file's writes stay in order; others (a write
    /// in place needs no room) go on at once.
    pub fn write_or_queue(self: &Arc<Self>, ino: u64, offset: u64, data: &[u8], done: WriteDone) {
        let behind = self
            .waiting_writes
            .queue
            .lock()
            .iter()
            .any(|waiting| waiting.ino == ino);
        if !behind {
            if let Tried::Done(result) = self.try_write(ino, offset, data) {
                return done(result);
            }
        }
        let room = self.cache.usage().room();
        let entry = Queued {
            ino,
            offset,
            data: data.to_vec(),
            done,
            since: Instant::now(),
            _waiting: room.enter(),
        };
        let writes = &self.waiting_writes;
        writes.queue.lock().push_back(entry);
        writes.arrived.notify_one();
        self.wake.now();
        let mut serving = writes.serving.lock();
        if !*serving {
            *serving = true;
            let (fs, queue, room) = (Arc::downgrade(self), writes.clone(), room.clone());
            let started = std::thread::Builder::new()
                .name("s3syncfs-room".into())
                .spawn(move || serve_waiting(fs, queue, room));
            if let Err(err) = started {
                *serving = false;
                drop(serving);
                tracing::error!(%err, "cannot start the thread for writes waiting for room");
                let failed: Vec<Queued> = writes.queue.lock().drain(..).collect();
                for write in failed {
                    (write.done)(Err(FsError::NoSpace));
                }
            }
        }
    }

    /// Writes waiting for room now (blocked callers and queued FUSE writes).
    pub fn writes_waiting(&self) -> usize {
        self.cache.usage().room().waiting()
    }

    /// The bound passed with no progress: the write fails with ENOSPC, and the file
    /// remembers it (an empty new file is then never uploaded, see plan.rs).
    fn refuse_write(&self, ino: u64) -> FsError {
        tracing::warn!(
            ino,
            "no room in the cache and no upload progressed for {} s: write refused (ENOSPC)",
            self.config.cache_full_wait.as_secs()
        );
        if let Some(inode) = self.tree.lock().get_mut(ino) {
            inode.refused_write = true;
        }
        FsError::NoSpace
    }

    /// One pass over the queue: writes what fits now, in order (a file's later writes
    /// stay behind its first waiting one), and refuses what waited past the bound
    /// without progress. Returns whether writes are still waiting.
    fn serve_queue_once(&self, last_progress: Instant) -> bool {
        let batch: Vec<Queued> = self.waiting_writes.queue.lock().drain(..).collect();
        let mut blocked = HashSet::new();
        let mut kept = Vec::new();
        for write in batch {
            if blocked.contains(&write.ino) {
                kept.push(write);
                continue;
            }
            match self.try_write(write.ino, write.offset, &write.data) {
                Tried::Done(result) => (write.done)(result),
                Tried::NoRoom
                    if write.since.max(last_progress) + self.config.cache_full_wait
                        <= Instant::now() =>
                {
                    (write.done)(Err(self.refuse_write(write.ino)));
                }
                Tried::NoRoom => {
                    blocked.insert(write.ino);
                    kept.push(write);
                }
            }
        }
        let mut queue = self.waiting_writes.queue.lock();
        // Arrived meanwhile: behind the ones kept.
        for write in kept.into_iter().rev() {
            queue.push_front(write);
        }
        !queue.is_empty()
    }
}

/// The queue's thread: waits for writes, then for progress, until the core is gone.
fn serve_waiting(fs: Weak<Fs>, writes: Arc<WaitingWrites>, room: Arc<Room>) {
    let mut last_progress = Instant::now();
    loop {
        {
            let mut queue = writes.queue.lock();
            while queue.is_empty() {
                if fs.strong_count() == 0 {
                    return;
                }
                // Bounded, so that the thread ends soon after the core.
                writes.arrived.wait_for(&mut queue, Duration::from_secs(5));
            }
        }
        let seen = room.epoch();
        let Some(core) = fs.upgrade() else { return };
        let still = core.serve_queue_once(last_progress);
        drop(core);
        if still && room.wait(seen, Instant::now() + RECHECK) {
            last_progress = Instant::now();
        }
    }
}
