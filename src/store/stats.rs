//! Request and byte counters every store keeps, so tests and `status` can see traffic.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Whether the last request reached the server (see `Reach`), and since when.
    reach: AtomicU8,
    /// Answers received, to any request.
    answers: AtomicU64,
    reach_since: AtomicU64,
}

/// Whether the server answers: any answer, even an error, counts as reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Unknown,
    Online,
    Offline,
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

    /// Records whether a request got an answer; logs each change once.
    /// How many answers came so far: a request that times out after the bucket
    /// answered others meanwhile met a slow bucket, not a gone one.
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// A request started when `answers()` was `heard` got no answer within its bound:
    /// offline, unless the bucket answered anything since. Whether it went offline.
    pub fn unanswered_since(&self, heard: u64) -> bool {
        if self.answers() != heard {
            return false;
        }
        self.reached(false);
        true
    }

    pub fn reached(&self, answered: bool) {
        if answered {
            self.answers.fetch_add(1, Ordering::Relaxed);
        }
        let now = if answered {
            Reach::Online
        } else {
            Reach::Offline
        } as u8;
        let before = self.reach.swap(now, Ordering::Relaxed);
        if before != now {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.reach_since.store(secs, Ordering::Relaxed);
            if answered {
                tracing::info!("the bucket answers: online");
            } else {
                tracing::warn!("the bucket does not answer: offline; changes stay queued");
            }
        }
    }

    /// Whether the last request went unanswered (refused, or no answer in time): the
    /// mount then serves what it has and fails at once what needs the bucket.
    pub fn is_offline(&self) -> bool {
        self.reach.load(Ordering::Relaxed) == Reach::Offline as u8
    }

    /// Online or offline, and since when (Unix seconds).
    pub fn reach(&self) -> (Reach, u64) {
        let reach = match self.reach.load(Ordering::Relaxed) {
            x if x == Reach::Online as u8 => Reach::Online,
            x if x == Reach::Offline as u8 => Reach::Offline,
            _ => Reach::Unknown,
        };
        (reach, self.reach_since.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_offline_only_if_nothing_answered_meanwhile() {
        let stats = StoreStats::default();
        stats.reached(true);
        let heard = stats.answers();
        stats.reached(true); // another request's answer while this one waited
        assert!(!stats.unanswered_since(heard), "slow, not gone");
        assert_eq!(stats.reach().0, Reach::Online);
        let heard = stats.answers();
        assert!(stats.unanswered_since(heard), "nothing answered: gone");
        assert_eq!(stats.reach().0, Reach::Offline);
    }
}
