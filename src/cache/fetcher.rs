//! Fetches byte ranges of objects with parallel ranged GETs, each bounded by a timeout.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;

use crate::store::{ObjectStore, PieceSink, StoreError};

use super::RemoteSource;

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
    /// Fail at once, sending nothing, while the bucket is known offline.
    fail_fast_offline: bool,
}

impl Fetcher {
    pub fn new(store: Arc<dyn ObjectStore>, runtime: Handle, timeout: Duration) -> Fetcher {
        Fetcher {
            store,
            runtime,
            timeout,
            fail_fast_offline: false,
        }
    }

    /// The same fetcher for readers: while the bucket is known offline a fetch fails
    /// at once instead of waiting out the timeout (others still ask, and so find out
    /// when it is back).
    pub fn failing_fast_offline(mut self) -> Fetcher {
        self.fail_fast_offline = true;
        self
    }

    /// Fetches `ranges` of `source` and hands each piece to `sink` as it arrives, in
    /// any order. Blocks the calling (non-async) thread; fails after the timeout, and
    /// with `ESTALE` when the bucket holds another version than the source's.
    pub fn fetch(
        &self,
        source: &RemoteSource,
        ranges: &[Range<u64>],
        sink: impl Fn(Range<u64>, &[u8]) -> io::Result<()> + Send + Sync,
    ) -> io::Result<()> {
        let mut ranges = ranges.iter().cloned();
        self.fetch_stream(source, || ranges.next(), sink)
    }

    /// Like `fetch`, for ranges asked of `next` whenever fewer than `PARALLEL` GETs are
    /// in flight, until it has none to give and every GET is done: a sequential reader
    /// keeps the pipe full instead of waiting for a whole window before the next.
    pub fn fetch_stream(
        &self,
        source: &RemoteSource,
        mut next: impl FnMut() -> Option<Range<u64>>,
        sink: impl Fn(Range<u64>, &[u8]) -> io::Result<()> + Send + Sync,
    ) -> io::Result<()> {
        let (key, etag) = (source.key.as_str(), source.etag.as_str());
        let stats = self.store.stats();
        if self.fail_fast_offline && stats.is_offline() {
            return Err(io::Error::other(format!(
                "GET {key}: the bucket is offline"
            )));
        }
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
                        let heard = stats.answers();
                        let get = store.get_range_into(key, chunk, etag, sink);
                        match tokio::time::timeout(timeout, get).await {
                            Err(_) => {
                                // No answer: offline until the next one (unless the
                                // bucket answered others meanwhile: slow, not gone).
                                stats.unanswered_since(heard);
                                Err(io::Error::other(format!(
                                    "GET {key} timed out after {timeout:?}"
                                )))
                            }
                            Ok(Err(StoreError::VersionChanged(msg))) => Err(io::Error::new(
                                io::ErrorKind::StaleNetworkFileHandle,
                                format!("GET {key}: {msg}"),
                            )),
                            // The version held here is gone as surely as a replaced one.
                            Ok(Err(StoreError::NotFound(_))) => Err(io::Error::new(
                                io::ErrorKind::StaleNetworkFileHandle,
                                format!("GET {key}: deleted in the bucket"),
                            )),
                            Ok(Err(e @ StoreError::AccessDenied(_))) => Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!("GET {key}: {e}"),
                            )),
                            Ok(Err(e)) => Err(io::Error::other(format!("GET {key}: {e}"))),
                            Ok(Ok(_)) => Ok(()),
                        }
                    });
                }
                let Some(done) = in_flight.next().await else {
                    return Ok(());
                };
                if let Err(err) = done {
                    tracing::warn!("{err}");
                    return Err(err);
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
    use crate::store::memory::MemoryStore;

    fn fetch_of(store: &Arc<MemoryStore>, etag: &str) -> (io::Result<()>, u64) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let fetcher = Fetcher::new(
            store.clone(),
            runtime.handle().clone(),
            Duration::from_secs(5),
        );
        let source = RemoteSource {
            key: "k".into(),
            size: 10,
            etag: etag.into(),
        };
        let received = std::sync::atomic::AtomicU64::new(0);
        let whole = [Range { start: 0, end: 10 }];
        let fetched = fetcher.fetch(&source, &whole, |range, _| {
            received.fetch_add(range.end - range.start, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        (fetched, received.into_inner())
    }

    #[test]
    fn a_fetch_of_a_replaced_version_fails_stale_before_any_byte() {
        let store = Arc::new(MemoryStore::new());
        store.insert("k", b"0123456789", Default::default());
        let etag = store.etag("k").unwrap();
        let (fetched, received) = fetch_of(&store, &format!("\"{etag}\""));
        assert!(
            fetched.is_ok() && received == 10,
            "quotes do not make another version"
        );
        store.insert("k", b"abcdefghij", Default::default());
        let (fetched, received) = fetch_of(&store, &etag);
        assert_eq!(
            fetched.unwrap_err().kind(),
            io::ErrorKind::StaleNetworkFileHandle
        );
        assert_eq!(received, 0);
        // No version known: whatever the bucket holds.
        assert_eq!(fetch_of(&store, "").1, 10);
    }

    #[test]
    fn a_fetch_without_an_answer_marks_the_bucket_offline_and_readers_then_fail_at_once() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = Arc::new(MemoryStore::new());
        store.insert("k", b"0123456789", Default::default());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let timeout = Duration::from_millis(100);
        let patient = Fetcher::new(store.clone(), runtime.handle().clone(), timeout);
        let reader = patient.clone().failing_fast_offline();
        let source = RemoteSource {
            key: "k".into(),
            size: 10,
            etag: String::new(),
        };
        let whole = [Range { start: 0, end: 10 }];
        let fetch = |fetcher: &Fetcher| fetcher.fetch(&source, &whole, |_, _| Ok(()));
        store.hang(true);
        assert!(fetch(&reader).is_err());
        assert!(store.stats().is_offline(), "a timeout means offline");
        store.hang(false);
        let gets = store.stats().gets.load(SeqCst);
        assert!(fetch(&reader).is_err());
        assert_eq!(store.stats().gets.load(SeqCst), gets, "a reader asked");
        // The uploader's fetches still ask; an answer brings the bucket back.
        assert!(fetch(&patient).is_ok());
        assert!(!store.stats().is_offline());
        assert!(fetch(&reader).is_ok());
    }

    #[test]
    fn split_cuts_into_chunks() {
        assert_eq!(split(0..10, 4).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
        assert_eq!(split(5..6, 4).collect::<Vec<_>>(), vec![5..6]);
        assert!(split(3..3, 4).next().is_none());
    }
}
