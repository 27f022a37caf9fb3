//! Fetches byte ranges of objects with parallel ranged GETs, each bounded by a timeout.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::store::ObjectStore;

/// One ranged GET asks for at most this much.
const CHUNK: u64 = 4 << 20;
/// Ranged GETs in flight for one fetch; bounds memory to CHUNK * this.
const PARALLEL: usize = 8;

#[derive(Clone)]
pub struct Fetcher {
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(store: Arc<dyn ObjectStore>, runtime: Handle, timeout: Duration) -> Fetcher {
        Fetcher {
            store,
            runtime,
            timeout,
        }
    }

    /// Fetches `ranges` of `key` and hands each chunk to `sink`, in any order.
    /// Blocks the calling (non-async) thread; fails with EIO after the timeout.
    pub fn fetch(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        mut sink: impl FnMut(Range<u64>, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut chunks = ranges.iter().flat_map(|r| split(r.clone(), CHUNK));
        let store = self.store.clone();
        let timeout = self.timeout;
        self.runtime.block_on(async move {
            let mut in_flight = JoinSet::new();
            loop {
                while in_flight.len() < PARALLEL {
                    let Some(chunk) = chunks.next() else { break };
                    let (store, key) = (store.clone(), key.to_string());
                    in_flight.spawn(async move {
                        let got =
                            tokio::time::timeout(timeout, store.get_range(&key, chunk.clone()))
                                .await
                                .map_err(|_| format!("GET {key} timed out after {timeout:?}"))
                                .and_then(|r| r.map_err(|e| format!("GET {key}: {e}")));
                        (chunk, got)
                    });
                }
                let Some(joined) = in_flight.join_next().await else {
                    return Ok(());
                };
                let (chunk, got) = joined.map_err(io::Error::other)?;
                let bytes = got.map_err(|msg| {
                    tracing::warn!("{msg}");
                    io::Error::other(msg)
                })?;
                sink(chunk.start..chunk.start + bytes.len() as u64, &bytes)?;
            }
        })
    }
}

fn split(range: Range<u64>, size: u64) -> impl Iterator<Item = Range<u64>> {
    (range.start..range.end)
        .step_by(size as usize)
        .map(move |s| s..(s + size).min(range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_into_chunks() {
        assert_eq!(split(0..10, 4).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
        assert_eq!(split(5..6, 4).collect::<Vec<_>>(), vec![5..6]);
        assert!(split(3..3, 4).next().is_none());
    }
}
