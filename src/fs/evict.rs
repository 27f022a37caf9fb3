//! Keeping the cache under `--cache-size`: clean files are evicted least recently
//! used first; files with changes not yet in the bucket are never evicted.

use lru::LruCache;
use parking_lot::Mutex;

use super::tree::Tree;
use super::Fs;

/// Inodes with cached data, most recently read or written first.
pub(super) struct Recency(Mutex<LruCache<u64, ()>>);

impl Recency {
    pub fn new() -> Recency {
        Recency(Mutex::new(LruCache::unbounded()))
    }

    pub fn touch(&self, ino: u64) {
        self.0.lock().put(ino, ());
    }

    fn forget(&self, ino: u64) {
        self.0.lock().pop(&ino);
    }

    /// Every inode, least recently used first.
    fn oldest_first(&self) -> Vec<u64> {
        self.0.lock().iter().rev().map(|(&ino, _)| ino).collect()
    }
}

impl Default for Recency {
    fn default() -> Self {
        Recency::new()
    }
}

impl Fs {
    /// Evicts clean files until `need` more bytes fit under the limit; false if they
    /// cannot (the rest is dirty or in use).
    pub(super) fn make_room(&self, need: u64) -> bool {
        let usage = self.cache.usage();
        if usage.fits(need) {
            return true;
        }
        self.evict_while(None, |_| !usage.fits(need));
        usage.fits(need)
    }

    /// The disk is full: frees at least `need` bytes of clean data if it can.
    pub(super) fn free_disk(&self, need: u64) -> bool {
        self.evict_while(None, |freed| freed < need) >= need
    }

    /// After a read brought data in: back under the limit, sparing the file being read.
    pub(super) fn trim(&self, reading: u64) {
        let usage = self.cache.usage();
        if !usage.fits(0) {
            self.evict_while(Some(reading), |_| !usage.fits(0));
        }
    }

    /// Evicts clean files, oldest first, while `more(freed so far)` holds.
    fn evict_while(&self, spare: Option<u64>, more: impl Fn(u64) -> bool) -> u64 {
        let mut freed = 0;
        for ino in self.recent.oldest_first() {
            if !more(freed) {
                break;
            }
            if Some(ino) == spare {
                continue;
            }
            let tree = self.tree.lock();
            let Some(content) = tree.get(ino).and_then(|i| i.content.clone()) else {
                drop(tree);
                self.recent.forget(ino);
                continue;
            };
            if !self.evictable(&tree, ino) {
                continue;
            }
            // Under the tree lock: no write can turn the file dirty meanwhile.
            if let Some(bytes) = content.evict() {
                tracing::debug!(ino, bytes, "evicted from the cache");
                freed += bytes;
                drop(tree);
                self.recent.forget(ino);
            }
        }
        freed
    }

    /// Whether the bucket holds exactly this file's data where it can be read again.
    fn evictable(&self, tree: &Tree, ino: u64) -> bool {
        let Some(inode) = tree.get(ino) else {
            return false;
        };
        let Some(stored) = &inode.stored else {
            return false;
        };
        !inode.unlinked
            && !tree.dirty().contains_key(&ino)
            && tree.stored_keys.get(&stored.key) == Some(&ino)
            && !tree.pending_deletes.contains_key(&stored.key)
            && self.current_key(tree, ino).as_deref() == Some(stored.key.as_str())
            && inode.in_sync_at(&stored.key)
    }
}
