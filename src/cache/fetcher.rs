//! Fetches byte ranges of objects with parallel ranged GETs, each bounded by a timeout.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;

use crate::store::{ObjectStore, PieceSink};

/// One ranged GET asks for at most this much.
const CHUNK: u64 = 4 << 20;
/// Ranged GETs in flight for one fetch (bodies are written as they arrive): a whole
/// 64 MiB readahead window, so a distant server's latency is paid once per window.
const PARALLEL: usize = 16;

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

    /// Fetches `ranges` of `key` and hands each piece to `sink` as it arrives, in any
    /// order. Blocks the calling (non-async) thread; fails with EIO after the timeout.
    pub fn fetch(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        sink: impl Fn(Range<u64>, &[u8]) -> io::Result<()> + Send + Sync,
    ) -> io::Result<()> {
        let mut ranges = ranges.iter().cloned();
        self.fetch_stream(key, || ranges.next(), sink)
    }

    /// Like `fetch`, for ranges asked of `next` whenever fewer than `PARALLEL` GETs are
    /// in flight, until it has none to give and every GET is done: a sequential reader
    /// keeps the pipe full instead of waiting for a whole window before the next.
    pub fn fetch_stream(
        &self,
        key: &str,
        mut next: impl FnMut() -> Option<Range<u64>>,
        sink: impl Fn(Range<u64>, &[u8]) -> io::Result<()> + Send + Sync,
    ) -> io::Result<()> {
        let timeout = self.timeout;
        let sink =
            move |offset: u64, piece: &[u8]| sink(offset..offset + piece.len() as u64, piece);
        let sink: &PieceSink<'_> = &sink;
        let store = &self.store;
        // The GETs run as futures of this one call (not spawned tasks), so they can write
        // through the borrowed sink as their bodies arrive.
        self.runtime.block_on(async move {
            let mut in_flight = FuturesUnordered::new();
            let mut chunks = split(0..0, CHUNK);
            loop {
                while in_flight.len() < PARALLEL {
                    let chunk = match chunks.next() {
                        Some(chunk) => chunk,
                        None => match next() {
                            Some(range) => {
                                chunks = split(range, CHUNK);
                                continue;
                            }
                            None => break,
                        },
                    };
                    in_flight.push(async move {
                        tokio::time::timeout(timeout, store.get_range_into(key, chunk, sink))
                            .await
                            .map_err(|_| format!("GET {key} timed out after {timeout:?}"))
                            .and_then(|r| r.map_err(|e| format!("GET {key}: {e}")))
                    });
                }
                let Some(done) = in_flight.next().await else {
                    return Ok(());
                };
                if let Err(msg) = done {
                    tracing::warn!("{msg}");
                    return Err(io::Error::other(msg));
                }
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
