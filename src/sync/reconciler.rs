//! The reconciler: lists the mounted prefix every poll interval and applies what
//! other clients changed (new, changed, deleted objects) to the namespace.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::fs::Fs;

pub struct Reconciler {
    fs: Arc<Fs>,
    interval: Duration,
}

impl Reconciler {
    pub fn new(fs: Arc<Fs>, interval: Duration) -> Reconciler {
        Reconciler { fs, interval }
    }

    /// Polls until `shutdown` turns true; the first poll right away, which also fills
    /// large directories nobody has listed yet.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
            first = false;
            if *shutdown.borrow() {
                return;
            }
            match self.poll_once().await {
                Ok(count) => {
                    if failing {
                        tracing::info!(objects = count, "bucket listed again");
                    }
                    failing = false;
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
        tokio::task::spawn_blocking(move || fs.reconcile(&listing, epoch))
            .await
            .map_err(|e| e.to_string())?;
        Ok(count)
    }
}
