//! What the uploader is doing and has done, for `s3syncfs status`.

use std::collections::HashMap;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::fs::plan::{Job, JobId};

/// The last failure of a job, with the key it was for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub key: String,
    pub action: String,
    pub error: String,
    /// Unix seconds.
    pub at: u64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportSnapshot {
    pub in_flight: usize,
    pub in_flight_bytes: u64,
    /// Jobs whose last attempt failed and that wait out a backoff.
    pub failing: usize,
    pub last_failure: Option<Failure>,
    /// Unix seconds of the last object written or deleted in the bucket.
    pub last_success: Option<u64>,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
}

#[derive(Default)]
struct State {
    in_flight: HashMap<JobId, u64>,
    failing: HashMap<JobId, u32>,
    last_failure: Option<Failure>,
    last_success: Option<u64>,
    uploaded_files: u64,
    uploaded_bytes: u64,
}

/// Shared between the uploader (writer) and the control socket (reader).
#[derive(Default)]
pub struct UploadReport(Mutex<State>);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UploadReport {
    pub fn started(&self, job: &Job) {
        self.0.lock().in_flight.insert(job.id.clone(), job.size);
    }

    pub fn succeeded(&self, job: &Job) {
        let mut state = self.0.lock();
        let bytes = state.in_flight.remove(&job.id).unwrap_or(0);
        state.failing.remove(&job.id);
        state.last_success = Some(unix_now());
        if job.action() != "fetch" && job.action() != "delete" {
            state.uploaded_files += 1;
            state.uploaded_bytes += bytes;
        }
    }

    pub fn failed(&self, job: &Job, attempts: u32, error: &str) {
        let mut state = self.0.lock();
        state.in_flight.remove(&job.id);
        state.failing.insert(job.id.clone(), attempts);
        state.last_failure = Some(Failure {
            key: job.key.clone(),
            action: job.action().to_string(),
            error: error.to_string(),
            at: unix_now(),
            attempts,
        });
    }

    /// A job that failed before is no longer wanted (its file was removed meanwhile).
    pub fn forget_failures_except(&self, wanted: impl Fn(&JobId) -> bool) {
        self.0.lock().failing.retain(|id, _| wanted(id));
    }

    pub fn snapshot(&self) -> ReportSnapshot {
        let state = self.0.lock();
        ReportSnapshot {
            in_flight: state.in_flight.len(),
            in_flight_bytes: state.in_flight.values().sum(),
            failing: state.failing.len(),
            last_failure: state.last_failure.clone(),
            last_success: state.last_success,
            uploaded_files: state.uploaded_files,
            uploaded_bytes: state.uploaded_bytes,
        }
    }
}
