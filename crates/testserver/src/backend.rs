//! The object index and body files, and the request counters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub body: PathBuf,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub metadata: HashMap<String, String>,
    pub content_type: Option<String>,
}

pub(crate) struct Upload {
    pub bucket: String,
    pub key: String,
    pub metadata: HashMap<String, String>,
    pub parts: BTreeMap<i32, (PathBuf, [u8; 16])>,
}

#[derive(Default)]
pub(crate) struct State {
    pub buckets: BTreeMap<String, BTreeMap<String, Object>>,
    pub uploads: HashMap<String, Upload>,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub copy: AtomicU64,
    pub delete: AtomicU64,
    pub multipart_create: AtomicU64,
    pub upload_part: AtomicU64,
    pub multipart_complete: AtomicU64,
    pub get_bytes: AtomicU64,
    pub put_bytes: AtomicU64,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub list: u64,
    pub head: u64,
    pub get: u64,
    pub put: u64,
    pub copy: u64,
    pub delete: u64,
    pub multipart_create: u64,
    pub upload_part: u64,
    pub multipart_complete: u64,
    pub get_bytes: u64,
    pub put_bytes: u64,
}

pub(crate) struct Inner {
    pub data_dir: PathBuf,
    pub state: Mutex<State>,
    pub stats: Stats,
    next_file: AtomicU64,
    /// Act like servers that ignore If-Match / If-None-Match.
    pub ignore_conditions: std::sync::atomic::AtomicBool,
    /// Answer GETs with another ETag than HEADs and listings give (some gateways do).
    pub other_get_etags: std::sync::atomic::AtomicBool,
    /// Server-side encryption headers seen, one line per request that had any.
    pub sse_seen: Mutex<Vec<String>>,
}

/// The server's storage; cheap to clone, shared by every `Server` started on it.
#[derive(Clone)]
pub struct Backend {
    pub(crate) inner: Arc<Inner>,
}

impl Backend {
    pub fn new(data_dir: &Path) -> std::io::Result<Backend> {
        std::fs::create_dir_all(data_dir)?;
        Ok(Backend {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                state: Mutex::new(State::default()),
                stats: Stats::default(),
                next_file: AtomicU64::new(1),
                ignore_conditions: Default::default(),
                other_get_etags: Default::default(),
                sse_seen: Default::default(),
            }),
        })
    }

    pub fn create_bucket(&self, name: &str) {
        self.inner
            .state
            .lock()
            .buckets
            .entry(name.to_string())
            .or_default();
    }

    /// Makes the server ignore conditional-write headers, as some real stores do.
    pub fn ignore_conditions(&self, ignore: bool) {
        self.inner
            .ignore_conditions
            .store(ignore, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes GETs answer with an ETag that HEADs and listings do not give for the same
    /// version, as some gateways do.
    pub fn other_get_etags(&self, on: bool) {
        self.inner
            .other_get_etags
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Encryption headers of the requests so far, as `OP key=value ...` lines.
    pub fn sse_seen(&self) -> Vec<String> {
        self.inner.sse_seen.lock().clone()
    }

    /// Keys of the multipart uploads started and neither completed nor aborted (what
    /// ListMultipartUploads would list).
    pub fn open_uploads(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        let mut keys: Vec<String> = state.uploads.values().map(|u| u.key.clone()).collect();
        keys.sort();
        keys
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        StatsSnapshot {
            list: get(&s.list),
            head: get(&s.head),
            get: get(&s.get),
            put: get(&s.put),
            copy: get(&s.copy),
            delete: get(&s.delete),
            multipart_create: get(&s.multipart_create),
            upload_part: get(&s.upload_part),
            multipart_complete: get(&s.multipart_complete),
            get_bytes: get(&s.get_bytes),
            put_bytes: get(&s.put_bytes),
        }
    }

    pub fn reset_stats(&self) {
        let s = &self.inner.stats;
        for c in [
            &s.list,
            &s.head,
            &s.get,
            &s.put,
            &s.copy,
            &s.delete,
            &s.multipart_create,
            &s.upload_part,
            &s.multipart_complete,
            &s.get_bytes,
            &s.put_bytes,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

impl Inner {
    /// A fresh body file path, named by a counter.
    pub fn new_body_path(&self) -> PathBuf {
        let n = self.next_file.fetch_add(1, Ordering::SeqCst);
        self.data_dir.join(format!("{n:012}.body"))
    }

    /// Notes the encryption headers of one request (nothing is encrypted here: this
    /// server only shows that clients send them).
    pub fn note_sse(&self, op: &str, headers: &[(&str, Option<&str>)]) {
        let present: Vec<String> = headers
            .iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect();
        if !present.is_empty() {
            self.sse_seen
                .lock()
                .push(format!("{op} {}", present.join(" ")));
        }
    }

    pub fn count(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::SeqCst);
    }
}
