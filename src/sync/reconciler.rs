//! The reconciler: lists the mounted prefix every poll interval and applies what
//! other clients changed (new, changed, deleted objects) to the namespace.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fs::Fs;

/// Keys a LIST request returns at most (S3's page size).
const KEYS_PER_LIST: usize = 1000;

/// How often the bucket is listed: every `interval`, stretched for a bucket so large
/// that its listings would take more than `lists_per_minute` LIST requests on average.
/// A listing costs one request per 1,000 keys, and on AWS every request is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPace {
    pub interval: Duration,
    /// 0: no bound.
    pub lists_per_minute: u64,
}

impl PollPace {
    /// The wait after a listing of `keys` keys.
    pub fn wait_after(&self, keys: usize) -> Duration {
        if self.lists_per_minute == 0 {
            return self.interval;
        }
        let requests = keys.div_ceil(KEYS_PER_LIST).max(1) as u64;
        let spread =
            Duration::from_secs(60).mul_f64(requests as f64 / self.lists_per_minute as f64);
        self.interval.max(spread)
    }
}

pub struct Reconciler {
    fs: Arc<Fs>,
    pace: PollPace,
}

impl Reconciler {
    pub fn new(fs: Arc<Fs>, pace: PollPace) -> Reconciler {
        Reconciler { fs, pace }
    }

    /// Polls until `shutdown` turns true; the first poll right away, which also fills
    /// large directories nobody has listed yet.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        let mut wait = None;
        let mut stretched = false;
        loop {
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if *shutdown.borrow() {
                return;
            }
            // After a failed listing, the next try comes after the plain interval.
            wait = Some(self.pace.interval);
            match self.poll_once().await {
                Ok(count) => {
                    if failing {
                        tracing::info!(objects = count, "bucket listed again");
                    }
                    failing = false;
                    let next = self.pace.wait_after(count);
                    // Said once per change of regime, not at every poll.
                    if (next > self.pace.interval) != stretched {
                        stretched = next > self.pace.interval;
                        tracing::info!(
                            objects = count,
                            "polling the bucket every {} s (poll_interval {} s, at most {} LIST requests a minute)",
                            next.as_secs(),
                            self.pace.interval.as_secs(),
                            self.pace.lists_per_minute
                        );
                    }
                    wait = Some(next);
                }
                Err(err) => {
                    // Once per outage: the uploader and `status` tell the rest.
                    if !failing {
                        tracing::warn!("cannot list the bucket for remote changes: {err}");
                    }
                    failing = true;
                }
            }
        }
    }

    /// One LIST of the whole prefix, applied to the namespace; the object count.
    pub async fn poll_once(&self) -> Result<usize, String> {
        let fs = self.fs.clone();
        let epoch = fs.epoch();
        let prefix = fs.config().prefix.as_str().to_string();
        // A listing takes one request per 1,000 keys: bounded per page, not overall.
        let listing = fs
            .store()
            .list(&prefix, None)
            .await
            .map_err(|e| e.to_string())?;
        let count = listing.objects.len();
        tokio::task::spawn_blocking(move || fs.reconcile(listing, epoch))
            .await
            .map_err(|e| e.to_string())?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_listed_in_one_request_is_polled_every_interval() {
        let pace = PollPace {
            interval: Duration::from_secs(10),
            lists_per_minute: 60,
        };
        assert_eq!(pace.wait_after(0), Duration::from_secs(10));
        assert_eq!(pace.wait_after(1000), Duration::from_secs(10));
        assert_eq!(pace.wait_after(10_000), Duration::from_secs(10));
    }

    #[test]
    fn a_large_bucket_is_polled_less_often_within_the_request_budget() {
        let pace = PollPace {
            interval: Duration::from_secs(10),
            lists_per_minute: 60,
        };
        // 11 requests at 60 a minute: 11 s; a million keys: 1,000 requests, 1,000 s.
        assert_eq!(pace.wait_after(10_001), Duration::from_secs(11));
        assert_eq!(pace.wait_after(1_000_000), Duration::from_secs(1000));
        let slow = PollPace {
            interval: Duration::from_secs(1),
            lists_per_minute: 6,
        };
        assert_eq!(slow.wait_after(2500), Duration::from_secs(30));
    }

    #[test]
    fn no_bound_keeps_the_interval_whatever_the_size() {
        let pace = PollPace {
            interval: Duration::from_secs(10),
            lists_per_minute: 0,
        };
        assert_eq!(pace.wait_after(5_000_000), Duration::from_secs(10));
    }
}
