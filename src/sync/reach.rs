//! While the bucket is known offline, one HEAD every few seconds, so that the mount
//! learns it is back even when nothing else asks (polling off, nothing to upload).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fs::{Fs, PROBE_NAME};

/// How often an offline mount asks, and how long it waits for each answer.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true (or its sender goes).
pub async fn probe_while_offline(fs: Arc<Fs>, mut shutdown: watch::Receiver<bool>) {
    // The one name reserved for us: found or "no such key", either is an answer.
    let key = format!("{}{PROBE_NAME}", fs.config().prefix.as_str());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            changed = shutdown.changed() => if changed.is_err() { return },
        }
        if *shutdown.borrow() {
            return;
        }
        if !fs.offline() {
            continue;
        }
        // The store notes the answer (online again) or its absence; a probe that
        // outlives the next one's turn is given up.
        let bound = fs.config().request_timeout.min(PROBE_EVERY);
        let _ = tokio::time::timeout(bound, fs.store().head(&key)).await;
    }
}
