//! Request and byte counters every store keeps, so tests and `status` can see traffic.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct StoreStats {
    pub lists: AtomicU64,
    pub heads: AtomicU64,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub parts: AtomicU64,
    pub copies: AtomicU64,
    pub deletes: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStatsSnapshot {
    pub lists: u64,
    pub heads: u64,
    pub gets: u64,
    pub puts: u64,
    pub parts: u64,
    pub copies: u64,
    pub deletes: u64,
    pub bytes_fetched: u64,
    pub bytes_uploaded: u64,
}

impl StoreStats {
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StoreStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStatsSnapshot {
            lists: get(&self.lists),
            heads: get(&self.heads),
            gets: get(&self.gets),
            puts: get(&self.puts),
            parts: get(&self.parts),
            copies: get(&self.copies),
            deletes: get(&self.deletes),
            bytes_fetched: get(&self.bytes_fetched),
            bytes_uploaded: get(&self.bytes_uploaded),
        }
    }
}
