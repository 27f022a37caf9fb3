//! Back-pressure: a write that needs cache space the limit (or the disk) cannot give
//! waits here for progress, that is space freed or an upload (or a part of one)
//! finished, instead of failing at once. Whatever frees space or finishes an upload
//! calls `progressed`; waiters try to make room again after each call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

/// An episode ends once no write has waited for this long: writes that wait again
/// and again while one copy runs make one episode, and one pair of log lines.
const EPISODE_GAP: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Room {
    /// Bumped by every progress; a waiter sleeps only while it is unchanged.
    epoch: AtomicU64,
    waiting: AtomicUsize,
    episode: Mutex<Episode>,
    progress: Condvar,
}

#[derive(Default)]
struct Episode {
    /// When writes began to wait (wall clock for `status`, monotonic for the log).
    since: Option<(Instant, SystemTime)>,
    /// When the last waiting write left.
    last_left: Option<Instant>,
}

/// A write counted as waiting for room while this lives.
pub struct Waiter(Arc<Room>);

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut episode = self.0.episode.lock();
        if self.0.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            episode.last_left = Some(Instant::now());
        }
    }
}

impl Room {
    /// Space was freed, or an upload or part finished: waiters look again.
    pub fn progressed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Under the lock: a waiter between its check and its sleep holds it.
            let _episode = self.episode.lock();
            self.progress.notify_all();
        }
    }

    /// The progress count, read before trying to make room.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Counts a write as waiting; the first one of an episode logs it.
    pub fn enter(self: &Arc<Self>) -> Waiter {
        let mut episode = self.episode.lock();
        self.close_if_idle(&mut episode);
        if self.waiting.fetch_add(1, Ordering::SeqCst) == 0 {
            episode.last_left = None;
            if episode.since.is_none() {
                episode.since = Some((Instant::now(), SystemTime::now()));
                tracing::warn!(
                    "the cache is full of changes not yet uploaded: writes wait for uploads to make room"
                );
            }
        }
        Waiter(self.clone())
    }

    /// Sleeps until progress after `seen` or `until`; true if progress was made.
    pub fn wait(&self, seen: u64, until: Instant) -> bool {
        let mut episode = self.episode.lock();
        while self.epoch() == seen {
            if self.progress.wait_until(&mut episode, until).timed_out() {
                break;
            }
        }
        self.epoch() != seen
    }

    /// Writes waiting for room now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// When the current episode began, if writes wait (or waited a moment ago).
    pub fn waiting_since(&self) -> Option<SystemTime> {
        let mut episode = self.episode.lock();
        self.close_if_idle(&mut episode);
        episode.since.map(|(_, wall)| wall)
    }

    /// Ends (and logs) an episode no write has waited in for `EPISODE_GAP`; called
    /// regularly (the uploader's loop) so the end is logged without a next waiter.
    pub fn settle(&self) {
        self.close_if_idle(&mut self.episode.lock());
    }

    fn close_if_idle(&self, episode: &mut Episode) {
        let idle = self.waiting.load(Ordering::SeqCst) == 0
            && episode
                .last_left
                .is_some_and(|left| left.elapsed() >= EPISODE_GAP);
        if let (true, Some((began, _))) = (idle, episode.since) {
            let waited = episode.last_left.map_or(Duration::ZERO, |l| l - began);
            tracing::info!(
                "writes no longer wait for room in the cache (they waited over {:.1} s)",
                waited.as_secs_f64()
            );
            episode.since = None;
            episode.last_left = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_at_progress_and_not_before() {
        let room = Arc::new(Room::default());
        let seen = room.epoch();
        let start = Instant::now();
        assert!(!room.wait(seen, start + Duration::from_millis(20)));
        let waiter = {
            let room = room.clone();
            std::thread::spawn(move || {
                let _counted = room.enter();
                room.wait(seen, Instant::now() + Duration::from_secs(600))
            })
        };
        while room.waiting() == 0 {
            std::thread::yield_now();
        }
        room.progressed();
        assert!(waiter.join().unwrap(), "woken by progress");
        assert_eq!(room.waiting(), 0);
    }

    #[test]
    fn progress_before_the_wait_is_not_missed() {
        let room = Room::default();
        let seen = room.epoch();
        room.progressed();
        // Returns at once: the deadline is far away.
        assert!(room.wait(seen, Instant::now() + Duration::from_secs(600)));
    }

    #[test]
    fn an_episode_spans_waits_close_together_and_ends_after_a_gap() {
        let room = Arc::new(Room::default());
        drop(room.enter());
        let began = room.waiting_since().expect("an episode began");
        drop(room.enter());
        assert_eq!(room.waiting_since(), Some(began), "the same episode");
        let left = Instant::now();
        while left.elapsed() < EPISODE_GAP {
            std::thread::sleep(Duration::from_millis(50));
        }
        room.settle();
        assert_eq!(room.waiting_since(), None);
    }
}
