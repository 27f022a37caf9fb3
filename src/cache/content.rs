//! One cache file: local reads and writes, and filling absent ranges from the bucket.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::fetcher::Fetcher;
use super::ranges::RangeSet;
use super::usage::Usage;

/// Where the absent bytes of a file can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    pub key: String,
    pub size: u64,
    /// The version whose bytes these are (empty: unknown, any version does).
    pub etag: String,
}

/// Reads are served from here once their range is present.
const BLOCK: u64 = 1 << 20;
/// Readahead grows on sequential reads up to this window.
const MAX_READAHEAD: u64 = 64 << 20;
/// From this window on, a background stream fetches ahead of the reader (see
/// `stream_ahead`) and reads fetch only their own bytes when the stream lags.
const STREAM_FROM: u64 = MAX_READAHEAD / 4;
/// The stream asks for no less at once (but at the end of the file, or for bytes the
/// reader waits for): many small GETs cost more than a few large ones.
const STREAM_CHUNK: u64 = 4 << 20;

pub struct Content {
    path: PathBuf,
    file: File,
    /// Which bytes are valid; held only briefly, so readers never wait behind a write.
    present: Mutex<RangeSet>,
    /// Held while bytes are written into the file (fetched pieces, local writes,
    /// cuts), so fetched data never overwrites a local write that landed while the
    /// fetch was in flight. Taken before `present`.
    writing: Mutex<()>,
    /// One fetch at a time per file: concurrent readers of one range wait, not refetch.
    fetching: Mutex<bool>,
    /// Signalled as fetched pieces land and when a fetch ends: a reader waiting behind
    /// a fetch goes on as soon as its own bytes are in, not when the whole window is.
    arrived: Condvar,
    /// End of the last read and the current readahead window (sequential detection).
    readahead: Mutex<(u64, u64)>,
    usage: Arc<Usage>,
    /// Disk bytes this file counts for in `usage`.
    charged: AtomicU64,
    /// Readers and writers at work: eviction leaves a pinned file alone.
    pins: AtomicUsize,
    /// A background stream fetching ahead of a sequential reader is under way.
    prefetching: AtomicBool,
    /// Readers waiting for the fetch turn for bytes the stream will not bring (another
    /// part of the file): the stream ends early for them.
    passed_by: AtomicUsize,
    /// Taken out of the cache (`remove`): no longer counted in `usage`.
    removed: AtomicBool,
}

/// Who asks for a file's fetch turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetching {
    /// The background stream of a sequential reader.
    Stream,
    /// A reader the stream fetches for: it waits for the stream.
    Streamed,
    /// Any other fetch: a stream stops early for it.
    Other,
}

/// Keeps a file's data from being evicted while it lives.
pub struct Pin<'a>(&'a Content);

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::SeqCst);
    }
}

/// This file's fetch turn, given back (and waiters woken) when dropped.
struct FetchTurn<'a>(&'a Content);

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        *self.0.fetching.lock() = false;
        self.0.arrived.notify_all();
    }
}

/// A pin that owns its file: a direct handle holds one for as long as it is open.
pub struct Hold(Arc<Content>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Content {
    pub(super) fn new(path: PathBuf, file: File, present: RangeSet, usage: Arc<Usage>) -> Content {
        let content = Content {
            path,
            file,
            present: Mutex::new(present),
            writing: Mutex::new(()),
            fetching: Mutex::new(false),
            arrived: Condvar::new(),
            readahead: Mutex::new((u64::MAX, BLOCK)),
            usage,
            charged: AtomicU64::new(0),
            pins: AtomicUsize::new(0),
            prefetching: AtomicBool::new(false),
            passed_by: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
        };
        content.recount();
        content
    }

    /// Holds the data in place until the guard drops. A writer keeps it until the
    /// write is recorded as a change, so eviction never drops bytes not yet dirty.
    pub fn pin(&self) -> Pin<'_> {
        self.pins.fetch_add(1, Ordering::SeqCst);
        Pin(self)
    }

    /// Like `pin`, for as long as the returned value lives.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.pins.fetch_add(1, Ordering::SeqCst);
        Hold(self.clone())
    }

    /// Every byte is local from now on (written around the core, e.g. by the kernel).
    pub fn mark_all_present(&self) {
        self.present.lock().insert(0..u64::MAX);
    }

    /// Bytes the file takes on disk now.
    pub fn disk_bytes(&self) -> u64 {
        self.charged.load(Ordering::Relaxed)
    }

    /// Brings the file's charge in `usage` in line with its blocks on disk.
    pub fn recount(&self) {
        if self.removed.load(Ordering::SeqCst) {
            return;
        }
        let now = self.file.metadata().map_or(0, |m| m.blocks() * 512);
        let old = self.charged.swap(now, Ordering::SeqCst);
        self.usage.recharge(old, now);
        // Removed meanwhile (a stream that outlives its file): its blocks are no
        // longer the cache's to count, whichever of the two swapped last.
        if self.removed.load(Ordering::SeqCst) {
            let left = self.charged.swap(0, Ordering::SeqCst);
            self.usage.recharge(left, 0);
        }
    }

    /// How many bytes a write of `len` at `offset` may add on disk: none when it
    /// overwrites allocated bytes (a database page), else `len`.
    pub fn growth(&self, offset: u64, len: u64) -> u64 {
        // SEEK_HOLE finds the first hole at or after `offset` (the end counts as one).
        let hole = unsafe {
            libc::lseek(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                libc::SEEK_HOLE,
            )
        };
        if hole >= 0 && hole as u64 >= offset.saturating_add(len) {
            0
        } else {
            len
        }
    }

    /// Drops the cached bytes of a file the bucket holds unchanged; they are fetched
    /// again when read. Returns the bytes freed, or None while the file is pinned.
    pub fn evict(&self) -> Option<u64> {
        let before = self.disk_bytes();
        let len = self.file.metadata().ok()?.len();
        self.reset(len)
            .then(|| before.saturating_sub(self.disk_bytes()))
    }

    /// Forgets every cached byte: the bucket holds a new version, `len` long.
    /// False while the file is pinned (being read or written).
    pub fn discard(&self, len: u64) -> bool {
        self.reset(len)
    }

    fn reset(&self, len: u64) -> bool {
        let _writing = self.writing.lock();
        let mut present = self.present.lock();
        if self.pins.load(Ordering::SeqCst) > 0 {
            return false;
        }
        // Cutting to zero and back frees every block and sets the length.
        let cut = self.file.set_len(0).and_then(|_| self.file.set_len(len));
        // Even a half-done cut leaves nothing valid; the bucket holds the data.
        *present = RangeSet::new();
        drop(present);
        self.recount();
        cut.is_ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name in the cache, as the durable state records it.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn present_spans(&self) -> Vec<(u64, u64)> {
        self.present.lock().spans()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_complete(&self, len: u64) -> bool {
        self.present.lock().contains(0..len)
    }

    pub fn present_bytes(&self, len: u64) -> u64 {
        self.present.lock().bytes_below(len)
    }

    /// Reads `size` bytes at `offset` of a file `len` long, fetching what is absent.
    pub fn read(
        &self,
        offset: u64,
        size: u32,
        len: u64,
        source: Option<&RemoteSource>,
        fetcher: &Fetcher,
    ) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(size as u64).min(len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let _pinned = self.pin();
        let window = self.readahead_window(offset, end);
        // Once streamed to, a reader fetches only its own bytes, and only if the stream
        // lags or has not started.
        let in_stream = window >= STREAM_FROM;
        let ahead = if in_stream { 0 } else { window };
        let wanted_end = align_up(end, BLOCK).saturating_add(ahead).min(len);
        self.ensure_for(
            align_down(offset, BLOCK)..wanted_end,
            offset..end,
            source,
            fetcher,
            in_stream,
        )?;
        self.read_present(offset, (end - offset) as usize)
    }

    /// `len` bytes at `offset` of the cache file, into a buffer not zeroed first (it
    /// is read over at once: zeroing cost a pass over every byte of a cold read).
    fn read_present(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let filled = buf.len();
            let at = (offset + filled as u64) as libc::off_t;
            let spare = &mut buf.spare_capacity_mut()[..len - filled];
            // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity,
            // and the length grows by exactly what it wrote.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    at,
                )
            };
            match n {
                0 => buf.resize(len, 0), // a hole past the file's end reads as zeros
                n if n > 0 => unsafe { buf.set_len(buf.len() + n as usize) },
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(buf)
    }

    /// Makes `needed` present, fetching `wanted` (a superset, for readahead) if anything
    /// in `needed` is absent.
    pub fn ensure(
        &self,
        wanted: Range<u64>,
        needed: Range<u64>,
        source: Option<&RemoteSource>,
        fetcher: &Fetcher,
    ) -> io::Result<()> {
        self.ensure_for(wanted, needed, source, fetcher, false)
    }

    /// `ensure`, for a reader the stream may be fetching for (`in_stream`): it waits
    /// for the stream rather than ending it.
    fn ensure_for(
        &self,
        wanted: Range<u64>,
        needed: Range<u64>,
        source: Option<&RemoteSource>,
        fetcher: &Fetcher,
        in_stream: bool,
    ) -> io::Result<()> {
        if self.present.lock().contains(needed.clone()) {
            return Ok(());
        }
        let Some(source) = source else {
            // Nothing remote to read from: absent ranges are holes, i.e. zeros.
            return Ok(());
        };
        let _pinned = self.pin();
        let who = if in_stream {
            Fetching::Streamed
        } else {
            Fetching::Other
        };
        let Some(_one_fetch) =
            self.fetch_turn(who, || self.present.lock().contains(needed.clone()))
        else {
            return Ok(());
        };
        let limit = source.size;
        let clamp = |r: Range<u64>| r.start.min(limit)..r.end.min(limit);
        let gaps: Vec<Range<u64>> = self
            .present
            .lock()
            .missing(clamp(wanted))
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let fetched = fetcher.fetch(source, &gaps, |range, bytes| {
            self.store_fetched(range, bytes)
        });
        self.recount();
        fetched
    }

    /// This file's fetch turn, once the fetch holding it ends; None if `done` turns
    /// true meanwhile (another fetch brought what the caller needed).
    fn fetch_turn(&self, who: Fetching, done: impl Fn() -> bool) -> Option<FetchTurn<'_>> {
        // A streamed reader leaves the turn to a stream that runs or is starting: it
        // fetches the reader's bytes first, in larger GETs.
        let stream_on = || self.prefetching.load(Ordering::SeqCst);
        let free = |busy: bool| !busy && (who != Fetching::Streamed || !stream_on());
        let mut busy = self.fetching.lock();
        if free(*busy) {
            *busy = true;
            return Some(FetchTurn(self));
        }
        if who == Fetching::Other {
            self.passed_by.fetch_add(1, Ordering::SeqCst);
        }
        let turn = loop {
            if done() {
                break None;
            }
            // A bounded wait: a piece may land between the check and the wait.
            self.arrived.wait_for(&mut busy, Duration::from_millis(20));
            if free(*busy) {
                *busy = true;
                break Some(FetchTurn(self));
            }
        };
        if who == Fetching::Other {
            self.passed_by.fetch_sub(1, Ordering::SeqCst);
        }
        turn
    }

    /// Writes fetched bytes, skipping any part a local write made present meanwhile.
    /// (The disk use is recounted once the whole fetch is done.)
    fn store_fetched(&self, range: Range<u64>, bytes: &[u8]) -> io::Result<()> {
        let _writing = self.writing.lock();
        let gaps = self.present.lock().missing(range.clone());
        for gap in gaps {
            let from = (gap.start - range.start) as usize;
            let to = ((gap.end - range.start) as usize).min(bytes.len());
            if from < to {
                self.file.write_all_at(&bytes[from..to], gap.start)?;
            }
        }
        self.present.lock().insert(range);
        self.arrived.notify_all();
        Ok(())
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let writing = self.writing.lock();
        let written = self.file.write_all_at(data, offset);
        if written.is_ok() {
            self.present
                .lock()
                .insert(offset..offset + data.len() as u64);
        }
        drop(writing);
        // Even a write cut short by a full disk may have taken blocks.
        self.recount();
        written
    }

    /// Cuts or extends the file; bytes past `len` are local from now on (zeros or writes).
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        let writing = self.writing.lock();
        self.file.set_len(len)?;
        self.present.lock().insert(len..u64::MAX);
        drop(writing);
        self.recount();
        Ok(())
    }

    /// Whether a sequential reader should be streamed to: no stream runs, and its next
    /// bytes or a quarter of its window ahead are absent. The caller then runs
    /// `stream_ahead` in the background and calls `prefetch_done` after.
    pub fn start_stream(&self, limit: u64) -> bool {
        let Some((reader, ahead)) = self.ahead(limit) else {
            return false;
        };
        let present = self.present.lock();
        let absent: u64 = present
            .missing(ahead.clone())
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        let worth_it =
            !present.contains(reader..(reader + BLOCK).min(ahead.end)) || absent >= STREAM_FROM;
        drop(present);
        worth_it && !self.prefetching.swap(true, Ordering::SeqCst)
    }

    /// Fetches ahead of a sequential reader, up to its readahead window past where it
    /// is, with the fetcher's GETs kept in flight as the reader advances; ends when
    /// that much is present or the reader stops reading in order.
    pub fn stream_ahead(
        &self,
        len: u64,
        source: &RemoteSource,
        fetcher: &Fetcher,
    ) -> io::Result<()> {
        let _pinned = self.pin();
        let _one_fetch = self.fetch_turn(Fetching::Stream, || false);
        let limit = len.min(source.size);
        let mut asked = RangeSet::new();
        let streamed = fetcher.fetch_stream(
            source,
            || self.absent_ahead(&mut asked, limit),
            |range, bytes| self.store_fetched(range, bytes),
        );
        self.recount();
        streamed
    }

    /// Where a sequential reader is and the range below `limit` its readahead window
    /// covers, from the block its last read began in at the latest (reads of up to a
    /// block, maybe answered out of order by the daemon's threads); None when it does
    /// not read in order or nothing is left.
    fn ahead(&self, limit: u64) -> Option<(u64, Range<u64>)> {
        let (last_end, window) = *self.readahead.lock();
        if last_end == u64::MAX || window < STREAM_FROM {
            return None;
        }
        let from = align_down(last_end.saturating_sub(BLOCK), BLOCK);
        let to = align_up(last_end, BLOCK).saturating_add(window).min(limit);
        (from < to).then_some((last_end, from..to))
    }

    /// The first range of the reader's window neither present nor `asked` yet, adding
    /// it to `asked`. Short ranges wait until the reader needs them, more is absent
    /// (scattered holes), or they reach the end, so the GETs stay large.
    fn absent_ahead(&self, asked: &mut RangeSet, limit: u64) -> Option<Range<u64>> {
        if self.passed_by.load(Ordering::SeqCst) > 0 {
            return None; // what is in flight lands, then the other reader's fetch goes
        }
        let (reader, ahead) = self.ahead(limit)?;
        let absent: Vec<Range<u64>> = self
            .present
            .lock()
            .missing(ahead)
            .into_iter()
            .flat_map(|gap| asked.missing(gap))
            .filter(|gap| !gap.is_empty())
            .collect();
        let first = absent.first()?.clone();
        let total: u64 = absent.iter().map(|gap| gap.end - gap.start).sum();
        let at_end = absent.last().is_some_and(|gap| gap.end >= limit);
        if first.start > reader && total < STREAM_CHUNK && !at_end {
            return None;
        }
        asked.insert(first.clone());
        Some(first)
    }

    pub fn prefetch_done(&self) {
        let _turns = self.fetching.lock();
        self.prefetching.store(false, Ordering::SeqCst);
        self.arrived.notify_all();
    }

    fn readahead_window(&self, offset: u64, end: u64) -> u64 {
        let mut state = self.readahead.lock();
        let (last_end, window) = *state;
        let next = if offset == last_end {
            (window * 2).min(MAX_READAHEAD)
        } else {
            BLOCK
        };
        *state = (end, next);
        if offset == last_end {
            next
        } else {
            0
        }
    }
}

impl Content {
    /// Removes the file from the cache; the data stays readable through open handles.
    /// Files are not removed on drop: at exit the state may still need them.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        super::remove_file_quietly(&self.path);
        let old = self.charged.swap(0, Ordering::SeqCst);
        self.usage.recharge(old, 0);
    }
}

fn align_down(n: u64, to: u64) -> u64 {
    n / to * to
}

fn align_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::Cache;
    use super::*;

    #[test]
    fn a_removed_file_stays_uncounted_when_a_late_fetch_recounts_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &HashSet::new(), None).unwrap();
        let content = cache.create(0, RangeSet::full()).unwrap();
        content.write(0, &[7u8; 1 << 20]).unwrap();
        assert!(cache.usage().used() >= 1 << 20);
        content.remove();
        assert_eq!(cache.usage().used(), 0);
        // A stream still fetching into it ends with a recount (its fd keeps the blocks).
        content.recount();
        assert_eq!(cache.usage().used(), 0);
    }
}
