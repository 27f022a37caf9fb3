//! The `ObjectStore` trait: everything the filesystem asks of a bucket.
//!
//! `s3.rs` is the only file that knows aws-sdk-s3; `memory.rs` is an in-memory
//! store with fault injection for unit tests.

pub mod memory;
pub mod read_only;
pub mod s3;
mod s3_errors;
mod stats;
pub(crate) mod url_key;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use stats::{Reach, StoreStats, StoreStatsSnapshot};

/// User metadata of an object, without the `x-amz-meta-` prefix, keys lower case.
pub type Metadata = HashMap<String, String>;

/// One object as a listing shows it: no user metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
}

/// One page-independent listing result under a prefix.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub objects: Vec<ObjectSummary>,
    /// Common prefixes (each ends with the delimiter) when listed with one.
    pub prefixes: Vec<String>,
}

/// What a HEAD (or the first part of a GET) tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub metadata: Metadata,
}

/// Errors a store reports; the sync layer decides what is retryable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("bucket not found: {0}")]
    NoSuchBucket(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("precondition failed")]
    PreconditionFailed,
    /// A read of one version met another: the object was replaced in the bucket.
    #[error("{0}")]
    VersionChanged(String),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Network failures, 5xx, throttling: worth retrying.
    #[error("transient: {0}")]
    Transient(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient(_) | StoreError::Timeout(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What the bucket must still hold at a key for a write to go ahead (S3 conditional
/// writes: If-Match / If-None-Match: *). A failed condition is `PreconditionFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WriteCondition {
    #[default]
    Always,
    /// The object is still this version.
    IfMatch(String),
    /// No object exists at the key.
    IfAbsent,
}

impl WriteCondition {
    pub fn if_match(&self) -> Option<String> {
        match self {
            WriteCondition::IfMatch(etag) => Some(etag.clone()),
            _ => None,
        }
    }

    pub fn if_none_match(&self) -> Option<String> {
        matches!(self, WriteCondition::IfAbsent).then(|| "*".to_string())
    }

    /// Whether an object with `current` ETag (None: no object) satisfies the condition.
    pub fn holds_for(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (WriteCondition::Always, _) => true,
            (WriteCondition::IfMatch(want), Some(etag)) => same_etag(want, etag),
            (WriteCondition::IfMatch(_), None) => false,
            (WriteCondition::IfAbsent, current) => current.is_none(),
        }
    }
}

/// Server-side encryption asked of every write (and, for SSE-C, every read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Encryption {
    #[default]
    None,
    /// SSE-S3: `AES256`, keys managed by the store.
    S3Managed,
    /// SSE-KMS, with a key id or the account's default key.
    Kms(Option<String>),
    /// SSE-C: the store encrypts with this key and needs it again to read.
    Customer(CustomerKey),
}

/// An SSE-C key as the headers carry it: base64 of the 32 bytes and of their MD5.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    pub key_base64: String,
    pub md5_base64: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: only its MD5 is shown.
        write!(f, "CustomerKey(md5 {})", self.md5_base64)
    }
}

/// Takes the pieces of a ranged read as they arrive: (offset in the object, bytes).
pub type PieceSink<'a> = dyn for<'p> Fn(u64, &'p [u8]) -> std::io::Result<()> + Send + Sync + 'a;

/// A part of a multipart upload that the store accepted.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

/// Bytes `offset..offset + len` of a local file.
#[derive(Debug, Clone, Copy)]
pub struct FileRange<'a> {
    pub path: &'a Path,
    pub offset: u64,
    pub len: u64,
}

/// ETags compare without their quotes and weak marks (servers and proxies differ in
/// returning them).
pub fn same_etag(a: &str, b: &str) -> bool {
    fn bare(e: &str) -> &str {
        e.strip_prefix("W/").unwrap_or(e).trim_matches('"')
    }
    bare(a) == bare(b)
}

pub fn version_changed(key: &str, now: &str) -> StoreError {
    StoreError::VersionChanged(format!("{key} changed in the bucket (now ETag {now})"))
}

/// A read of `key` that asked for the version `wanted` (any when empty) and got `found`
/// (unknown when the server sent no ETag).
pub fn expect_version(key: &str, wanted: &str, found: Option<&str>) -> StoreResult<()> {
    match found {
        Some(found) if !wanted.is_empty() && !same_etag(wanted, found) => {
            Err(version_changed(key, found))
        }
        _ => Ok(()),
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Lists every key under `prefix`; with `delimiter` groups deeper keys into prefixes.
    /// Follows continuation tokens until the listing is complete.
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> StoreResult<Listing>;
    async fn head(&self, key: &str) -> StoreResult<ObjectInfo>;
    /// Reads `range` of an object (clamped by the store to the object's end).
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes>;
    /// Reads `range` of the version `etag` of an object (any version when empty) piece
    /// by piece as it arrives, handing each piece and its offset to `sink`; returns the
    /// bytes read. Another version fails with `VersionChanged` before any piece, so a
    /// file is never filled from two versions.
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
        sink: &PieceSink<'_>,
    ) -> StoreResult<u64>;
    /// Reads a whole (small) object.
    async fn get(&self, key: &str) -> StoreResult<Bytes>;
    /// Stores `body` at `key` if `cond` holds; returns the new ETag.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String>;
    /// Stores the first `len` bytes of the local file at `path` if `cond` holds; returns
    /// the new ETag.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String>;
    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> StoreResult<String>;
    /// Uploads `len` bytes at `offset` of the local file at `path` as part `number`,
    /// streamed from the file: parts in flight hold no buffers of their size.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        part: FileRange<'_>,
    ) -> StoreResult<CompletedPart>;
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        cond: &WriteCondition,
    ) -> StoreResult<String>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()>;
    /// Server-side copy of the version `from_etag` of `from` (any when empty; another
    /// fails with `PreconditionFailed`); `metadata` replaces the source's when given.
    async fn copy(
        &self,
        from: &str,
        from_etag: &str,
        to: &str,
        metadata: Option<&Metadata>,
    ) -> StoreResult<String>;
    /// Deletes `key`; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Checks that the bucket exists and the credentials are accepted.
    async fn check_access(&self) -> StoreResult<()>;
    fn stats(&self) -> &StoreStats;
}
