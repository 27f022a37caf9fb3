//! How many bytes the cache files take on disk, against the configured limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::room::Room;

pub struct Usage {
    used: AtomicU64,
    limit: Option<u64>,
    /// Told whenever the total goes down, so writes waiting for room look again.
    room: Arc<Room>,
}

impl Usage {
    pub fn new(limit: Option<u64>) -> Usage {
        Usage {
            used: AtomicU64::new(0),
            limit,
            room: Arc::new(Room::default()),
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Where writes wait for room, and what frees space or finishes uploads tells.
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Whether `more` bytes still fit under the limit.
    pub fn fits(&self, more: u64) -> bool {
        self.limit
            .is_none_or(|limit| self.used().saturating_add(more) <= limit)
    }

    /// Moves the total from a file's old charge to its new one.
    pub(super) fn recharge(&self, old: u64, new: u64) {
        if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed);
        } else {
            // Saturating: a concurrent recount never wraps the total below zero.
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(old - new))
                });
            self.room.progressed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_move_the_total_and_the_limit_is_checked() {
        let usage = Usage::new(Some(100));
        usage.recharge(0, 60);
        assert!(usage.fits(40));
        assert!(!usage.fits(41));
        usage.recharge(60, 20);
        assert_eq!(usage.used(), 20);
        usage.recharge(500, 0);
        assert_eq!(usage.used(), 0);
        assert!(Usage::new(None).fits(u64::MAX));
    }
}
