//! Waking the uploader. A change that only becomes due after the debounce does not
//! wake it when it will look again before then anyway: a create and a close each
//! woke it for nothing, two thread switches per small file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub struct UploadWake {
    notify: Notify,
    origin: Instant,
    /// When the uploader looks next on its own, in ns since `origin` (0: it may be
    /// asleep with no deadline, so every change wakes it).
    next_look: AtomicU64,
    /// How long a closed change waits before it goes up, in ns.
    debounce: AtomicU64,
}

impl Default for UploadWake {
    fn default() -> Self {
        UploadWake {
            notify: Notify::new(),
            origin: Instant::now(),
            next_look: AtomicU64::new(0),
            debounce: AtomicU64::new(0),
        }
    }
}

impl UploadWake {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// Something may go up at once (fsync, a delete, a finished job): wake it.
    pub fn now(&self) {
        self.notify.notify_one();
    }

    /// A change that is due after the debounce: wakes the uploader only if it would
    /// otherwise look later than that.
    pub fn changed(&self) {
        self.changed_due_in(self.debounce());
    }

    /// A change that is due after `wait`: wakes the uploader only if it would
    /// otherwise look later than that.
    pub fn changed_due_in(&self, wait: Duration) {
        let due = self.ns(Instant::now()) + wait.as_nanos() as u64;
        let next = self.next_look.load(Ordering::SeqCst);
        if next == 0 || due < next {
            self.notify.notify_one();
        }
    }

    /// The uploader's debounce, so `changed` knows when a change is due.
    pub fn set_debounce(&self, debounce: Duration) {
        self.debounce
            .store(debounce.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_nanos(self.debounce.load(Ordering::Relaxed))
    }

    /// The uploader will look again at `at` at the latest.
    pub fn looks_at(&self, at: Instant) {
        self.next_look.store(self.ns(at).max(1), Ordering::SeqCst);
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a permit was stored by the calls so far (consumes it).
    fn woken(wake: &UploadWake) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), wake.notified())
                .await
                .is_ok()
        })
    }

    #[test]
    fn a_change_due_before_the_next_look_wakes() {
        let wake = UploadWake::default();
        wake.set_debounce(Duration::ZERO);
        wake.looks_at(Instant::now() + Duration::from_secs(1));
        wake.changed();
        assert!(woken(&wake));
    }

    #[test]
    fn a_change_due_after_the_next_look_does_not_wake() {
        let wake = UploadWake::default();
        wake.set_debounce(Duration::from_millis(500));
        wake.looks_at(Instant::now() + Duration::from_millis(200));
        wake.changed();
        assert!(!woken(&wake));
        wake.now();
        assert!(woken(&wake));
    }

    #[test]
    fn without_a_next_look_every_change_wakes() {
        let wake = UploadWake::default();
        wake.set_debounce(Duration::from_secs(60));
        wake.changed();
        assert!(woken(&wake));
    }
}
