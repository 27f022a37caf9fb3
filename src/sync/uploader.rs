//! The uploader: asks the core for jobs, runs a bounded number at once, retries
//! failures with capped exponential backoff, and drains the queue at shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fs::plan::{Busy, Job, JobId, Outcome};
use crate::fs::{ConditionalWrites, Fs, Pending};

/// The uploader looks for due changes at least this often.
const TICK: Duration = Duration::from_millis(200);

/// How often an unanswered conditional-write probe is tried again.
const PROBE_RETRY: Duration = Duration::from_secs(30);

use super::report::UploadReport;

#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// A changed file is uploaded once it is closed and unchanged this long.
    pub debounce: Duration,
    /// Jobs (files) transferred at once.
    pub parallel: usize,
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// Parts of one multipart upload in flight at once.
    pub parts_in_flight: usize,
    /// Upper bound of the retry backoff.
    pub max_backoff: Duration,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        UploaderConfig {
            debounce: Duration::from_millis(500),
            parallel: 8,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            parts_in_flight: 4,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Jobs in flight and jobs waiting out a backoff.
#[derive(Default)]
struct Tracker {
    ids: HashSet<JobId>,
    keys: HashSet<String>,
    backoff: HashMap<JobId, (u32, Instant)>,
}

impl Tracker {
    /// The bucket answers again: failed jobs go now instead of waiting out a backoff
    /// that grew during the outage (up to a minute). Their attempts still count.
    fn retry_now(&mut self) {
        let now = Instant::now();
        for (_, until) in self.backoff.values_mut() {
            *until = now;
        }
    }
}

impl Busy for Tracker {
    fn is_busy(&self, id: &JobId, key: &str) -> bool {
        self.ids.contains(id)
            || self.keys.contains(key)
            || self
                .backoff
                .get(id)
                .is_some_and(|(_, until)| Instant::now() < *until)
    }
}

pub struct Uploader {
    fs: Arc<Fs>,
    config: UploaderConfig,
    /// `s3syncfs sync` calls under way: while any, everything goes up without debounce.
    sync_all: Arc<AtomicUsize>,
    report: Arc<UploadReport>,
}

impl Uploader {
    pub fn new(fs: Arc<Fs>, config: UploaderConfig) -> Uploader {
        fs.wake.set_debounce(config.debounce);
        Uploader {
            fs,
            config,
            sync_all: Arc::new(AtomicUsize::new(0)),
            report: Arc::new(UploadReport::default()),
        }
    }

    pub fn sync_requests(&self) -> Arc<AtomicUsize> {
        self.sync_all.clone()
    }

    pub fn report(&self) -> Arc<UploadReport> {
        self.report.clone()
    }

    /// Runs until `shutdown` turns true, then tries to drain for at most `drain_for`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain_for: Duration) {
        let mut tracker = Tracker::default();
        let mut in_flight = JoinSet::new();
        let wake = self.fs.wake.clone();
        let mut last_probe = None;
        let mut was_offline = false;
        // Uploads a killed run left open in the bucket (each request has its bound).
        let fs = self.fs.clone();
        tokio::spawn(async move { fs.abort_left_over_uploads().await });
        loop {
            if *shutdown.borrow() {
                break;
            }
            let offline = self.fs.offline();
            if was_offline && !offline {
                tracing::info!("the bucket answers again: retrying what failed");
                tracker.retry_now();
            }
            was_offline = offline;
            let everything = self.sync_all.load(Ordering::SeqCst) > 0;
            let probe_due = last_probe.is_none_or(|t: Instant| t.elapsed() >= PROBE_RETRY);
            if probe_due
                && self.fs.conditional_writes() == ConditionalWrites::Unknown
                && self.fs.pending() != Pending::default()
            {
                last_probe = Some(Instant::now());
                super::probe::probe_conditional_writes(&self.fs).await;
            }
            self.start_jobs(&mut tracker, &mut in_flight, everything);
            self.fs.cache().usage().room().settle();
            let next_look = self.next_look(everything);
            wake.looks_at(next_look);
            tokio::select! {
                Some(joined) = in_flight.join_next() => self.settle(&mut tracker, joined),
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(next_look.into()) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.drain(&mut tracker, &mut in_flight, drain_for).await;
    }

    /// The debounce, or none while writes wait for room in the cache: closed files
    /// go up at once, since their space is wanted now.
    fn debounce(&self) -> Duration {
        match self.fs.writes_waiting() {
            0 => self.config.debounce,
            _ => Duration::ZERO,
        }
    }

    /// When to look again unwoken: at the next tick, or sooner when the oldest change
    /// becomes due (its close did not wake the uploader).
    fn next_look(&self, everything: bool) -> Instant {
        let now = Instant::now();
        let tick = now + TICK;
        match self.fs.first_due(self.debounce()) {
            Some(due) if !everything && due > now => due.min(tick),
            _ => tick,
        }
    }

    /// Uploads everything pending now, without debounce; false if `limit` passed first.
    pub async fn flush(&self, limit: Duration) -> bool {
        let mut in_flight = JoinSet::new();
        self.drain(&mut Tracker::default(), &mut in_flight, limit)
            .await
    }

    /// Uploads everything pending, without debounce, until done or `limit` passes.
    async fn drain(
        &self,
        tracker: &mut Tracker,
        in_flight: &mut JoinSet<(Job, Result<Outcome, String>)>,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.start_jobs(tracker, in_flight, true);
            if in_flight.is_empty() && self.fs.pending() == Pending::default() {
                tracing::info!("all changes are in the bucket");
                return true;
            }
            tokio::select! {
                Some(joined) = in_flight.join_next() => self.settle(tracker, joined),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let left = self.fs.pending();
                    tracing::warn!(files = left.files, deletes = left.deletes, "changes not yet in the bucket");
                    return false;
                }
            }
        }
    }

    fn start_jobs(
        &self,
        tracker: &mut Tracker,
        in_flight: &mut JoinSet<(Job, Result<Outcome, String>)>,
        everything: bool,
    ) {
        // Failures of jobs no longer wanted (the file was removed) stop counting.
        tracker.backoff.retain(|id, _| self.fs.still_wanted(id));
        self.report
            .forget_failures_except(|id| tracker.backoff.contains_key(id));
        let free = self.config.parallel.saturating_sub(in_flight.len());
        if free == 0 {
            return;
        }
        for job in self.fs.plan(self.debounce(), everything, tracker, free) {
            if tracker.ids.contains(&job.id) {
                continue; // planned twice in one round (a materialize and its writer)
            }
            tracker.ids.insert(job.id.clone());
            tracker.keys.extend(job.keys());
            self.fs.start(&job);
            self.report.started(&job);
            let (fs, config) = (self.fs.clone(), self.config.clone());
            in_flight.spawn(async move {
                let result = super::transfer::run_job(fs, &job, &config)
                    .await
                    .map_err(|e| e.to_string());
                (job, result)
            });
        }
    }

    fn settle(
        &self,
        tracker: &mut Tracker,
        joined: Result<(Job, Result<Outcome, String>), tokio::task::JoinError>,
    ) {
        let (job, result) = match joined {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(%err, "upload task failed");
                return;
            }
        };
        tracker.ids.remove(&job.id);
        for key in job.keys() {
            tracker.keys.remove(&key);
        }
        match result {
            Ok(outcome) => {
                tracker.backoff.remove(&job.id);
                self.report.succeeded(&job);
                tracing::debug!(key = %job.key, action = job.action(), "synced");
                self.fs.finish(&job, outcome);
                // The file may be evicted now: writes waiting for room try again.
                self.fs.cache().usage().room().progressed();
            }
            Err(err) => {
                let attempts = tracker.backoff.get(&job.id).map_or(0, |(n, _)| *n) + 1;
                let delay = backoff(attempts, self.config.max_backoff);
                tracing::warn!(key = %job.key, action = job.action(), attempts, retry_in = ?delay, "failed: {err}");
                self.report.failed(&job, attempts, &err);
                self.fs.abandon(&job);
                tracker
                    .backoff
                    .insert(job.id.clone(), (attempts, Instant::now() + delay));
            }
        }
        self.fs.wake.now();
    }
}

/// 1 s, 2 s, 4 s ... capped.
fn backoff(attempts: u32, cap: Duration) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(1));
        assert_eq!(backoff(2, cap), Duration::from_secs(2));
        assert_eq!(backoff(5, cap), Duration::from_secs(16));
        assert_eq!(backoff(30, cap), cap);
    }
}
