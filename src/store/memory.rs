//! An in-memory `ObjectStore` with fault injection, for unit tests of the core and sync.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::{
    expect_version, CompletedPart, FileRange, Listing, Metadata, ObjectInfo, ObjectStore,
    ObjectSummary, PieceSink, StoreError, StoreResult, StoreStats, WriteCondition,
};

#[derive(Debug, Clone)]
struct StoredObject {
    body: Bytes,
    etag: String,
    last_modified: SystemTime,
    metadata: Metadata,
}

/// A multipart upload in progress: its metadata and the parts received.
type PendingUpload = (Metadata, BTreeMap<u32, Bytes>);

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, StoredObject>>,
    uploads: Mutex<HashMap<String, PendingUpload>>,
    next_id: AtomicU64,
    /// The next this-many requests fail with a transient error.
    failures_left: AtomicU32,
    /// The next this-many HEADs fail with a transient error.
    head_failures_left: AtomicU32,
    /// Behave like servers that ignore If-Match / If-None-Match.
    ignore_conditions: AtomicBool,
    /// The next this-many writes commit but their reply is lost (a transient error) ...
    replies_to_lose: AtomicU32,
    /// ... and this many requests after each loss fail too (the network still down).
    failures_after_loss: AtomicU32,
    /// While true, requests wait without an answer (a hung endpoint).
    hung: Hang,
    /// Every request is refused (AccessDenied) while set: a policy that forbids it.
    denied: AtomicBool,
    stats: StoreStats,
}

/// Requests wait while this holds true.
struct Hang(tokio::sync::watch::Sender<bool>);

impl Default for Hang {
    fn default() -> Self {
        Hang(tokio::sync::watch::Sender::new(false))
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes the next `n` requests fail as a network outage would.
    pub fn fail_next(&self, n: u32) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    /// Refuses every request with AccessDenied (true) or serves them again (false).
    pub fn deny(&self, denied: bool) {
        self.denied.store(denied, Ordering::SeqCst);
    }

    /// Makes the next `n` HEADs fail as a reset connection would.
    pub fn fail_next_heads(&self, n: u32) {
        self.head_failures_left.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes (PUT, multipart complete, copy, delete) take effect but
    /// answer with a transient error, as when the reply is lost; `then_fail` requests
    /// after each fail as an outage would.
    pub fn lose_next_replies(&self, n: u32, then_fail: u32) {
        self.failures_after_loss.store(then_fail, Ordering::SeqCst);
        self.replies_to_lose.store(n, Ordering::SeqCst);
    }

    /// A write that took effect: its reply may be lost.
    fn reply<T>(&self, done: T) -> StoreResult<T> {
        let lose = self
            .replies_to_lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            let then_fail = self.failures_after_loss.load(Ordering::SeqCst);
            self.failures_left.store(then_fail, Ordering::SeqCst);
            return Err(StoreError::Transient("injected: reply lost".into()));
        }
        Ok(done)
    }

    /// Makes every request wait without an answer until `hang(false)` (requests already
    /// waiting then go on).
    pub fn hang(&self, on: bool) {
        self.hung.0.send_replace(on);
    }

    /// Puts an object directly, as another client would.
    pub fn insert(&self, key: &str, body: &[u8], metadata: Metadata) {
        let etag = self.new_etag();
        self.objects.lock().insert(
            key.to_string(),
            StoredObject {
                body: Bytes::copy_from_slice(body),
                etag,
                last_modified: SystemTime::now(),
                metadata,
            },
        );
    }

    pub fn body(&self, key: &str) -> Option<Bytes> {
        self.objects.lock().get(key).map(|o| o.body.clone())
    }

    /// One GET of `range` (clamped to the object) of the version `etag` (any if empty).
    async fn read_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        StoreStats::count(&self.stats.gets, 1);
        self.injected_fault().await?;
        let object = self.lookup(key)?;
        expect_version(key, etag, Some(&object.etag))?;
        let end = (range.end as usize).min(object.body.len());
        let start = (range.start as usize).min(end);
        StoreStats::count(&self.stats.bytes_fetched, (end - start) as u64);
        Ok(object.body.slice(start..end))
    }

    pub fn etag(&self, key: &str) -> Option<String> {
        self.objects.lock().get(key).map(|o| o.etag.clone())
    }

    pub fn metadata(&self, key: &str) -> Option<Metadata> {
        self.objects.lock().get(key).map(|o| o.metadata.clone())
    }

    /// Parts received by each multipart upload neither completed nor aborted.
    pub fn open_uploads(&self) -> Vec<usize> {
        self.uploads.lock().values().map(|(_, p)| p.len()).collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().keys().cloned().collect()
    }

    fn new_etag(&self) -> String {
        format!("\"{:032x}\"", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    pub fn ignore_conditions(&self, ignore: bool) {
        self.ignore_conditions.store(ignore, Ordering::SeqCst);
    }

    /// Stores an object if `cond` holds for what is at `key` now (atomically).
    fn commit(
        &self,
        key: &str,
        body: Bytes,
        metadata: Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        let mut objects = self.objects.lock();
        let current = objects.get(key).map(|o| o.etag.as_str());
        if !self.ignore_conditions.load(Ordering::SeqCst) && !cond.holds_for(current) {
            return Err(StoreError::PreconditionFailed);
        }
        let etag = self.new_etag();
        StoreStats::count(&self.stats.bytes_uploaded, body.len() as u64);
        objects.insert(
            key.to_string(),
            StoredObject {
                body,
                etag: etag.clone(),
                last_modified: SystemTime::now(),
                metadata,
            },
        );
        Ok(etag)
    }

    /// Waits out a hang, then fails the request if a failure is still due; a request
    /// that gets through counts as answered, as the S3 store counts it.
    async fn injected_fault(&self) -> StoreResult<()> {
        let mut hung = self.hung.0.subscribe();
        // (The sender lives in self: the wait cannot fail.)
        let _ = hung.wait_for(|on| !*on).await;
        if self.denied.load(Ordering::SeqCst) {
            return Err(StoreError::AccessDenied("AccessDenied injected".into()));
        }
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Transient("injected fault".into()));
        }
        self.stats.reached(true);
        Ok(())
    }

    fn lookup(&self, key: &str) -> StoreResult<StoredObject> {
        self.objects
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> StoreResult<Listing> {
        StoreStats::count(&self.stats.lists, 1);
        self.injected_fault().await?;
        let objects = self.objects.lock();
        let mut listing = Listing::default();
        for (key, object) in objects.range(prefix.to_string()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            if let Some(cut) = delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
                let common = format!("{prefix}{}", &rest[..cut]);
                if listing.prefixes.last() != Some(&common) {
                    listing.prefixes.push(common);
                }
                continue;
            }
            listing.objects.push(ObjectSummary {
                key: key.clone(),
                size: object.body.len() as u64,
                etag: object.etag.clone(),
                last_modified: object.last_modified,
            });
        }
        Ok(listing)
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        StoreStats::count(&self.stats.heads, 1);
        self.injected_fault().await?;
        let failing =
            self.head_failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Transient("injected HEAD fault".into()));
        }
        let object = self.lookup(key)?;
        Ok(ObjectInfo {
            size: object.body.len() as u64,
            etag: object.etag,
            last_modified: object.last_modified,
            metadata: object.metadata,
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.read_range(key, range, "").await
    }

    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
        sink: &PieceSink<'_>,
    ) -> StoreResult<u64> {
        let start = range.start;
        let body = self.read_range(key, range, etag).await?;
        sink(start, &body)?;
        Ok(body.len() as u64)
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        self.injected_fault().await?;
        let etag = self.commit(key, body, metadata.clone(), cond)?;
        self.reply(etag)
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        self.injected_fault().await?;
        let mut body = std::fs::read(path)?;
        body.truncate(len as usize);
        let etag = self.commit(key, Bytes::from(body), metadata.clone(), cond)?;
        self.reply(etag)
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        self.injected_fault().await?;
        let id = format!("{key}#{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.uploads
            .lock()
            .insert(id.clone(), (metadata.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: u32,
        part: FileRange<'_>,
    ) -> StoreResult<CompletedPart> {
        StoreStats::count(&self.stats.parts, 1);
        self.injected_fault().await?;
        let mut body = vec![0u8; part.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(part.path)?,
            &mut body,
            part.offset,
        )?;
        let body = Bytes::from(body);
        StoreStats::count(&self.stats.bytes_uploaded, body.len() as u64);
        let mut uploads = self.uploads.lock();
        let upload = uploads
            .get_mut(upload_id)
            .ok_or_else(|| StoreError::Other("NoSuchUpload".into()))?;
        upload.1.insert(number, body);
        Ok(CompletedPart {
            number,
            etag: format!("part-{number}"),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        self.injected_fault().await?;
        let (metadata, bodies) = self
            .uploads
            .lock()
            .remove(upload_id)
            .ok_or_else(|| StoreError::Other("NoSuchUpload".into()))?;
        let mut whole = BytesMut::new();
        for part in &parts {
            let body = bodies
                .get(&part.number)
                .ok_or_else(|| StoreError::Other(format!("InvalidPart {}", part.number)))?;
            whole.extend_from_slice(body);
        }
        let etag = self.commit(key, whole.freeze(), metadata, cond)?;
        self.reply(etag)
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> StoreResult<()> {
        self.uploads.lock().remove(upload_id);
        Ok(())
    }

    async fn copy(
        &self,
        from: &str,
        from_etag: &str,
        to: &str,
        metadata: Option<&Metadata>,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.copies, 1);
        self.injected_fault().await?;
        let source = self.lookup(from)?;
        if !from_etag.is_empty() && !super::same_etag(from_etag, &source.etag) {
            return Err(StoreError::PreconditionFailed);
        }
        let etag = self.new_etag();
        self.objects.lock().insert(
            to.to_string(),
            StoredObject {
                body: source.body,
                etag: etag.clone(),
                last_modified: SystemTime::now(),
                metadata: metadata.cloned().unwrap_or(source.metadata),
            },
        );
        self.reply(etag)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        StoreStats::count(&self.stats.deletes, 1);
        self.injected_fault().await?;
        self.objects.lock().remove(key);
        self.reply(())
    }

    async fn check_access(&self) -> StoreResult<()> {
        self.injected_fault().await
    }

    fn stats(&self) -> &StoreStats {
        &self.stats
    }
}
