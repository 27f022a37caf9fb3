//! The reconciler: lists the mounted prefix every poll interval and applies what
//! other clients changed (new, changed, deleted objects) to the namespace.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fs::{Fs, PollScope};
use crate::store::Listing;

/// Keys a LIST request returns at most (S3's page size).
const KEYS_PER_LIST: usize = 1000;

/// Polls of the listed directories may spend this many times a whole-prefix listing
/// before the whole prefix is listed again (to learn the bucket's size anew).
const SCOPED_BEFORE_FLAT: u64 = 10;

/// Only a bucket whose whole listing takes more requests than this is polled by
/// directory: below 100,000 keys the poll fills every directory (prefill), so every
/// one ends up listed and the whole prefix is the cheaper poll anyway.
const SCOPED_ABOVE_REQUESTS: u64 = 100;

/// The LIST requests a listing of `entries` keys and subdirectories takes.
fn requests_for(entries: usize) -> u64 {
    entries.div_ceil(KEYS_PER_LIST).max(1) as u64
}

/// Minutes of LIST requests the polls may spend at once (the listing at mount, say)
/// before the budget holds them back.
const BURST_MINUTES: f64 = 10.0;

/// How often the bucket is listed: every `interval`, stretched for a bucket so large
/// that its listings would take more than `lists_per_minute` LIST requests on average.
/// A listing costs one request per 1,000 keys, and on AWS every request is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPace {
    pub interval: Duration,
    /// 0: no bound.
    pub lists_per_minute: u64,
}

/// The LIST requests the polls may still spend: refilled at `lists_per_minute`, up to
/// `BURST_MINUTES` of them. A poll may overspend; the next one waits out the debt.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    requests: f64,
    at: tokio::time::Instant,
}

impl PollPace {
    fn per_second(&self) -> f64 {
        self.lists_per_minute as f64 / 60.0
    }

    fn burst(&self) -> f64 {
        self.lists_per_minute as f64 * BURST_MINUTES
    }

    /// A full allowance, at mount.
    pub fn allowance(&self, now: tokio::time::Instant) -> Allowance {
        Allowance {
            requests: self.burst(),
            at: now,
        }
    }

    /// The wait after a poll, ending `now`, that took `requests` LIST requests.
    pub fn wait_after(
        &self,
        allowance: &mut Allowance,
        requests: u64,
        now: tokio::time::Instant,
    ) -> Duration {
        if self.lists_per_minute == 0 {
            return self.interval;
        }
        let earned = self.per_second() * (now - allowance.at).as_secs_f64();
        allowance.requests = (allowance.requests + earned).min(self.burst()) - requests as f64;
        allowance.at = now;
        let debt = -allowance.requests;
        if debt <= 0.0 {
            return self.interval;
        }
        self.interval
            .max(Duration::from_secs_f64(debt / self.per_second()))
    }
}

pub struct Reconciler {
    fs: Arc<Fs>,
    pace: PollPace,
    /// Requests of the last listing of the whole prefix, if any.
    flat_requests: Option<u64>,
    /// Requests of the polls of listed directories since.
    scoped_requests: u64,
}

impl Reconciler {
    pub fn new(fs: Arc<Fs>, pace: PollPace) -> Reconciler {
        Reconciler {
            fs,
            pace,
            flat_requests: None,
            scoped_requests: 0,
        }
    }

    /// Polls until `shutdown` turns true; the first poll right away, which also fills
    /// large directories nobody has listed yet.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        let mut wait = None;
        let mut stretched = false;
        // What the last poll that went through listed (None: the whole prefix).
        let mut shown_dirs: Option<Option<usize>> = None;
        let mut allowance = self.pace.allowance(tokio::time::Instant::now());
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
            let sent_before = self.lists_sent();
            let polled = self.poll_once().await;
            // What a failed poll sent counts too (the store's count, which may include a
            // directory listed meanwhile).
            let mut charged = self.lists_sent() - sent_before;
            match polled {
                Ok((requests, scope)) => {
                    charged = requests;
                    // A whole listing followed by polls of directories is not charged:
                    // it comes at mount, then once those polls spent ten of it.
                    if scope == PollScope::All && self.choose_scope() != PollScope::All {
                        charged = 0;
                    }
                    if failing {
                        tracing::info!(requests, "bucket listed again");
                    }
                    failing = false;
                    // Said once per change of regime, not at every poll.
                    let was_scoped = matches!(shown_dirs, Some(Some(_)));
                    if matches!(scope, PollScope::Dirs(_)) && !was_scoped {
                        tracing::info!(
                            whole = self.flat_requests,
                            "polling only the directories listed here, with fewer LIST requests than the whole bucket takes"
                        );
                    }
                    shown_dirs = Some(match &scope {
                        PollScope::All => None,
                        PollScope::Dirs(dirs) => Some(dirs.len()),
                    });
                }
                Err(err) => {
                    // Once per outage: the uploader and `status` tell the rest.
                    if !failing {
                        tracing::warn!("cannot list the bucket for remote changes: {err}");
                    }
                    failing = true;
                }
            }
            let now = tokio::time::Instant::now();
            let next = self.pace.wait_after(&mut allowance, charged, now);
            if (next > self.pace.interval) != stretched {
                stretched = next > self.pace.interval;
                tracing::info!(
                    charged,
                    "polling the bucket every {} s (poll_interval {} s, at most {} LIST requests a minute)",
                    next.as_secs(),
                    self.pace.interval.as_secs(),
                    self.pace.lists_per_minute
                );
            }
            if let Some(dirs) = shown_dirs {
                *self.fs.poll_cadence.lock() = Some(crate::fs::PollCadence {
                    every_secs: next.as_secs(),
                    dirs,
                });
            }
            wait = Some(next);
        }
    }

    /// LIST requests the store has sent since the mount.
    fn lists_sent(&self) -> u64 {
        self.fs.store().stats().lists.load(Ordering::Relaxed)
    }

    /// One poll applied to the namespace: its LIST requests and what it listed.
    pub async fn poll_once(&mut self) -> Result<(u64, PollScope), String> {
        let fs = self.fs.clone();
        let reading = fs.begin_reading();
        let epoch = reading.epoch;
        let scope = self.choose_scope();
        let (listing, requests) = match &scope {
            PollScope::All => {
                let prefix = fs.config().prefix.as_str();
                // One request per 1,000 keys: bounded per page, not overall.
                let listing = fs.store().list(prefix, None).await;
                let listing = listing.map_err(|e| e.to_string())?;
                let requests = requests_for(listing.objects.len());
                self.flat_requests = Some(requests);
                self.scoped_requests = 0;
                (listing, requests)
            }
            PollScope::Dirs(dirs) => {
                let mut all = Listing::default();
                let mut requests = 0;
                for dir in dirs {
                    let listing = fs.store().list(dir, Some("/")).await;
                    let listing = listing.map_err(|e| e.to_string())?;
                    requests += requests_for(listing.objects.len() + listing.prefixes.len());
                    all.objects.extend(listing.objects);
                    all.prefixes.extend(listing.prefixes);
                }
                self.scoped_requests += requests;
                (all, requests)
            }
        };
        let (applied, fs) = (scope.clone(), fs.clone());
        tokio::task::spawn_blocking(move || fs.reconcile(listing, epoch, &applied))
            .await
            .map_err(|e| e.to_string())?;
        Ok((requests, scope))
    }

    /// The whole prefix when that takes fewer requests than listing each directory
    /// this mount has listed (a large bucket seen in a few places lists only those),
    /// and again once those polls have spent several whole listings.
    fn choose_scope(&self) -> PollScope {
        let Some(flat) = self.flat_requests else {
            return PollScope::All; // the first poll: the bucket's size is not known
        };
        if flat <= SCOPED_ABOVE_REQUESTS || self.scoped_requests >= SCOPED_BEFORE_FLAT * flat {
            return PollScope::All;
        }
        let dirs = self.fs.listed_dirs();
        let scoped: u64 = dirs.iter().map(|(_, entries)| requests_for(*entries)).sum();
        if scoped < flat {
            PollScope::Dirs(dirs.into_iter().map(|(prefix, _)| prefix).collect())
        } else {
            PollScope::All
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const PACE: PollPace = PollPace {
        interval: Duration::from_secs(10),
        lists_per_minute: 60,
    };

    /// The waits after polls of `requests` each, one after the other.
    fn waits(pace: PollPace, requests: &[u64]) -> Vec<u64> {
        let mut now = Instant::now();
        let mut allowance = pace.allowance(now);
        let mut out = Vec::new();
        for &spent in requests {
            let wait = pace.wait_after(&mut allowance, spent, now);
            out.push(wait.as_secs());
            now += wait;
        }
        out
    }

    #[test]
    fn a_bucket_of_up_to_ten_thousand_keys_is_polled_every_interval() {
        let ten = requests_for(10_000);
        assert_eq!(waits(PACE, &[ten; 200]), vec![10; 200]);
    }

    #[test]
    fn a_large_bucket_is_polled_within_the_budget_after_its_burst() {
        // 100,000 keys: 100 requests a poll. Ten minutes' burst (600) and what the
        // waits earn make six polls at the interval; then one every 100 s, the 60 a
        // minute of the budget.
        let steady = waits(PACE, &[requests_for(100_000); 20]);
        assert_eq!(&steady[..6], &[10; 6], "{steady:?}");
        assert_eq!(&steady[7..], &[100; 13], "{steady:?}");
        // A million keys: 1,000 requests, a debt of 400 after the first.
        assert_eq!(waits(PACE, &[requests_for(1_000_000)]), [400]);
    }

    #[test]
    fn the_listing_at_mount_does_not_hold_back_small_polls_after_it() {
        // 120,000 keys, then polls of two directories: never more than the interval.
        let mut spent = vec![requests_for(120_000)];
        spent.extend([2; 100]);
        assert!(waits(PACE, &spent).iter().all(|&w| w == 10));
    }

    #[test]
    fn no_bound_keeps_the_interval_whatever_the_size() {
        let unbound = PollPace {
            interval: Duration::from_secs(10),
            lists_per_minute: 0,
        };
        assert_eq!(waits(unbound, &[5000; 3]), vec![10; 3]);
    }
}
