//! Streaming write-through: a file written in order past the multipart threshold
//! starts its multipart upload while it is being written. Each part goes up as soon
//! as it is full, so at close only the tail and the complete are left (the complete
//! is the uploader's, with the usual conditions: see `sync::transfer`).
//!
//! The stream only ever sends bytes no write will touch again: a write before the
//! end of the parts handed out, a hole, a truncate, or any change it did not see
//! (the file's data version moved past what it saw) ends it, and the file goes up
//! whole from the cache as before. Its multipart upload is aborted then.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::cache::Content;
use crate::state::StateDb;
use crate::store::{CompletedPart, FileRange, Metadata, ObjectStore};

/// S3 takes at most this many parts in one upload.
const MAX_PARTS: u32 = 10_000;

/// When streaming starts and how it sends.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// A file reaching this size while written in order starts streaming.
    pub threshold: u64,
    /// The part size (the same the uploader uses, so the ETag is the same).
    pub part_size: u64,
    /// Parts of one file in flight at once.
    pub parts_in_flight: usize,
}

/// What the core knows when a file may start streaming.
pub(super) struct Start {
    pub key: String,
    pub content: Arc<Content>,
    /// The object's metadata (without token) as it is now.
    pub metadata: Metadata,
}

/// One write the stream must see: where, how much, and the data version after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wrote {
    pub offset: u64,
    pub len: u64,
    pub version: u64,
}

/// A stream the uploader took over at close: what is already in the bucket.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub key: String,
    pub upload_id: String,
    pub token: String,
    /// The metadata the upload was created with (token included).
    pub metadata: Metadata,
    pub part_size: u64,
    /// Parts 1..=n, each `part_size` bytes, in the bucket.
    pub parts: Vec<CompletedPart>,
    /// The data version the stream saw last: the job must be for this one.
    pub version: u64,
}

impl Streamed {
    /// Bytes the landed parts cover.
    pub fn sent(&self) -> u64 {
        self.parts.len() as u64 * self.part_size
    }
}

struct Stream {
    key: String,
    content: Arc<Content>,
    token: String,
    metadata: Metadata,
    upload_id: Option<String>,
    /// End of the bytes written so far (every write continued them).
    end: u64,
    /// Parts handed out (1..=handed), landed or in flight.
    handed: u32,
    landed: Vec<CompletedPart>,
    /// The create or parts in flight.
    busy: usize,
    version: u64,
    /// Ended: kept so that the file does not start again until its upload takes it.
    broken: bool,
    /// Its upload is waiting to take it: no more parts.
    frozen: bool,
}

pub(super) struct Streams(Arc<Shared>);

struct Shared {
    config: OnceLock<StreamConfig>,
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
    state: Arc<StateDb>,
    by_ino: Mutex<HashMap<u64, Stream>>,
    /// Something in flight settled.
    settled: Notify,
    /// Uploads the previous run recorded and never finished, read before this run
    /// could start any of its own.
    left_over: Mutex<Vec<(String, String)>>,
}

impl Streams {
    pub fn new(store: Arc<dyn ObjectStore>, runtime: Handle, state: Arc<StateDb>) -> Streams {
        let left_over = state.uploads().unwrap_or_else(|err| {
            tracing::error!(%err, "cannot read the multipart uploads of the previous run");
            Vec::new()
        });
        Streams(Arc::new(Shared {
            config: OnceLock::new(),
            store,
            runtime,
            state,
            by_ino: Mutex::new(HashMap::new()),
            settled: Notify::new(),
            left_over: Mutex::new(left_over),
        }))
    }

    /// Turns streaming on (off until then: unit tests and read-only mounts).
    pub fn enable(&self, config: StreamConfig) {
        let _ = self.0.config.set(config);
    }

    /// Whether a write ending at `size` should bring the file's `Start`.
    pub fn may_start(&self, ino: u64, size: u64) -> bool {
        self.0.config.get().is_some_and(|c| size >= c.threshold)
            && !self.0.by_ino.lock().contains_key(&ino)
    }

    pub fn is_streaming(&self, ino: u64) -> bool {
        self.0.by_ino.lock().contains_key(&ino)
    }

    /// A write through the daemon landed in the cache file.
    pub fn wrote(&self, ino: u64, wrote: Wrote, start: Option<Start>) {
        let Some(config) = self.0.config.get().copied() else {
            return;
        };
        let mut map = self.0.by_ino.lock();
        let Some(stream) = map.get_mut(&ino) else {
            if let Some(start) = start {
                self.begin(&mut map, ino, wrote, start);
            }
            return;
        };
        if stream.broken {
            return;
        }
        let sent_end = stream.handed as u64 * config.part_size;
        if wrote.offset < sent_end || wrote.offset > stream.end {
            tracing::debug!(ino, key = %stream.key, "a write out of order: the file goes up whole at close");
            self.0.end(stream);
            return;
        }
        stream.end = stream.end.max(wrote.offset + wrote.len);
        stream.version = stream.version.max(wrote.version);
        self.0.hand_out(ino, stream, &config);
    }

    /// The file changed other than by a write in order (a truncate).
    pub fn changed(&self, ino: u64) {
        if let Some(stream) = self.0.by_ino.lock().get_mut(&ino) {
            if !stream.broken {
                tracing::debug!(ino, key = %stream.key, "truncated while streaming: the file goes up whole at close");
                self.0.end(stream);
            }
        }
    }

    /// Ends and forgets the streams `keep` no longer wants (the file was removed, or
    /// renamed: its object will not be at the stream's key).
    pub fn sweep(&self, keep: impl Fn(u64, &str) -> bool) {
        let mut map = self.0.by_ino.lock();
        map.retain(|&ino, stream| {
            if keep(ino, &stream.key) {
                return true;
            }
            if !stream.broken {
                tracing::debug!(ino, key = %stream.key, "renamed or removed while streaming: upload aborted");
                self.0.end(stream);
            }
            false
        });
    }

    /// For the file's upload: waits until nothing of its stream is in flight and takes
    /// it, if it is still whole. A broken stream is dropped (its abort is under way).
    pub async fn take(&self, ino: u64) -> Option<Streamed> {
        loop {
            let settled = self.0.settled.notified();
            {
                let mut map = self.0.by_ino.lock();
                let stream = map.get_mut(&ino)?;
                stream.frozen = true;
                if stream.busy == 0 {
                    let stream = map.remove(&ino)?;
                    let config = self.0.config.get()?;
                    return match (stream.broken, stream.upload_id) {
                        (false, Some(upload_id)) => Some(Streamed {
                            key: stream.key,
                            upload_id,
                            token: stream.token,
                            metadata: stream.metadata,
                            part_size: config.part_size,
                            parts: stream.landed,
                            version: stream.version,
                        }),
                        _ => None,
                    };
                }
            }
            settled.await;
        }
    }

    /// Aborts an upload taken and not used; forgets it once the bucket said so.
    pub fn abort(&self, key: &str, upload_id: &str) {
        self.0.abort(key.to_string(), upload_id.to_string());
    }

    /// The upload was completed (or aborted) by its job.
    pub fn finished(&self, upload_id: &str) {
        if let Err(err) = self.0.state.remove_upload(upload_id) {
            tracing::error!(%err, "cannot update the state");
        }
    }

    /// At start: aborts the uploads a previous run of this cache left open (killed
    /// while streaming). Only those it recorded: never another client's.
    pub async fn abort_left_over(&self) {
        let left = std::mem::take(&mut *self.0.left_over.lock());
        for (upload_id, key) in left {
            match self.0.store.abort_multipart(&key, &upload_id).await {
                Ok(()) | Err(crate::store::StoreError::NotFound(_)) => {
                    tracing::info!(%key, "aborted a multipart upload left by the previous run");
                    self.finished(&upload_id);
                }
                Err(err) => {
                    tracing::warn!(%key, %err, "cannot abort a multipart upload left by the previous run; trying again at the next mount")
                }
            }
        }
    }

    fn begin(&self, map: &mut HashMap<u64, Stream>, ino: u64, wrote: Wrote, start: Start) {
        let token = super::attempts::new_token();
        let metadata = super::attempts::with_token(&start.metadata, &token);
        tracing::debug!(ino, key = %start.key, "streaming a large file while it is written");
        let stream = Stream {
            key: start.key.clone(),
            content: start.content,
            token,
            metadata: metadata.clone(),
            upload_id: None,
            end: wrote.offset + wrote.len,
            handed: 0,
            landed: Vec::new(),
            busy: 1,
            version: wrote.version,
            broken: false,
            frozen: false,
        };
        let token = stream.token.clone();
        map.insert(ino, stream);
        let shared = self.0.clone();
        self.0.runtime.spawn(async move {
            let created = shared.store.create_multipart(&start.key, &metadata).await;
            shared.created(ino, (&start.key, &token), created);
        });
    }
}

impl Shared {
    /// The create of the stream (key, token) of `ino` answered. The file may have
    /// another stream by now (this one ended, a new one began): the token tells.
    fn created(
        self: &Arc<Self>,
        ino: u64,
        (key, token): (&str, &str),
        created: crate::store::StoreResult<String>,
    ) {
        let upload_id = match created {
            Ok(id) => id,
            Err(err) => {
                tracing::debug!(%key, %err, "could not start streaming: the file goes up at close");
                let mut map = self.by_ino.lock();
                if let Some(stream) = map.get_mut(&ino).filter(|s| s.token == token) {
                    stream.busy -= 1;
                    stream.broken = true;
                }
                drop(map);
                self.settled.notify_waiters();
                return;
            }
        };
        // Recorded before any part goes, so a crash leaves nothing we cannot abort.
        if let Err(err) = self.state.put_upload(&upload_id, key) {
            tracing::error!(%err, "cannot record a multipart upload in the state");
        }
        let mut map = self.by_ino.lock();
        match map
            .get_mut(&ino)
            .filter(|s| s.token == token && s.upload_id.is_none())
        {
            Some(stream) => {
                stream.busy -= 1;
                stream.upload_id = Some(upload_id);
                if stream.broken {
                    self.abort(
                        key.to_string(),
                        stream.upload_id.clone().unwrap_or_default(),
                    );
                } else if let Some(config) = self.config.get() {
                    self.hand_out(ino, stream, config);
                }
            }
            None => self.abort(key.to_string(), upload_id),
        }
        drop(map);
        self.settled.notify_waiters();
    }

    /// Hands out the parts that are full, up to the bound in flight.
    fn hand_out(self: &Arc<Self>, ino: u64, stream: &mut Stream, config: &StreamConfig) {
        let Some(upload_id) = stream.upload_id.clone() else {
            return; // the create is still under way
        };
        while !stream.broken
            && !stream.frozen
            && stream.busy < config.parts_in_flight
            && (stream.handed as u64 + 1) * config.part_size <= stream.end
        {
            if stream.handed >= MAX_PARTS {
                self.end(stream);
                return;
            }
            stream.handed += 1;
            stream.busy += 1;
            let number = stream.handed;
            let (shared, key, id, content) = (
                self.clone(),
                stream.key.clone(),
                upload_id.clone(),
                stream.content.clone(),
            );
            let offset = (number as u64 - 1) * config.part_size;
            let len = config.part_size;
            self.runtime.spawn(async move {
                let part = FileRange {
                    path: content.path(),
                    offset,
                    len,
                };
                let sent = shared.store.upload_part(&key, &id, number, part).await;
                shared.part_done(ino, &id, sent);
            });
        }
    }

    fn part_done(
        self: &Arc<Self>,
        ino: u64,
        upload_id: &str,
        sent: crate::store::StoreResult<CompletedPart>,
    ) {
        let mut map = self.by_ino.lock();
        let ours = map
            .get_mut(&ino)
            .filter(|s| s.upload_id.as_deref() == Some(upload_id));
        if let Some(stream) = ours {
            stream.busy -= 1;
            match sent {
                Ok(part) => {
                    stream.landed.push(part);
                    stream.landed.sort_by_key(|p| p.number);
                    if let Some(config) = self.config.get() {
                        self.hand_out(ino, stream, config);
                    }
                }
                Err(err) if !stream.broken => {
                    tracing::debug!(key = %stream.key, %err, "a part failed: the file goes up whole at close");
                    self.end(stream);
                }
                Err(_) => {}
            }
        }
        drop(map);
        self.settled.notify_waiters();
    }

    /// Ends a stream: no more parts, and its upload is aborted.
    fn end(&self, stream: &mut Stream) {
        stream.broken = true;
        if let Some(upload_id) = &stream.upload_id {
            self.abort(stream.key.clone(), upload_id.clone());
        }
    }

    fn abort(&self, key: String, upload_id: String) {
        let (store, state) = (self.store.clone(), self.state.clone());
        self.runtime.spawn(async move {
            match store.abort_multipart(&key, &upload_id).await {
                Ok(()) | Err(crate::store::StoreError::NotFound(_)) => {
                    if let Err(err) = state.remove_upload(&upload_id) {
                        tracing::error!(%err, "cannot update the state");
                    }
                }
                Err(err) => {
                    tracing::warn!(%key, %err, "cannot abort a multipart upload; the next mount tries again");
                }
            }
        });
    }
}

impl super::Fs {
    /// Turns streaming write-through on, with the uploader's part size.
    pub fn enable_streaming(&self, config: StreamConfig) {
        self.streams.enable(config);
    }

    /// Whether `ino` has a stream (for tests and `status`).
    pub fn is_streaming(&self, ino: u64) -> bool {
        self.streams.is_streaming(ino)
    }

    /// After a write was recorded (tree lock held): what a stream of this file needs
    /// to start, if the file may start one now. Only a file whose bytes are all here
    /// (the parts are read from the cache file), written at its end, through the
    /// daemon (direct writes are not seen).
    pub(super) fn stream_start(
        &self,
        tree: &super::tree::Tree,
        ino: u64,
        wrote: &Wrote,
    ) -> Option<Start> {
        let inode = tree.get(ino)?;
        if !self.streams.may_start(ino, inode.attr.size)
            || inode.attr.kind != super::tree::NodeKind::File
            || inode.unlinked
            || inode.direct.is_some()
            || wrote.offset + wrote.len != inode.attr.size
            || !inode.all_here()
        {
            return None;
        }
        Some(Start {
            key: self.current_key(tree, ino)?,
            content: inode.content.clone()?,
            metadata: super::plan::object_metadata(inode),
        })
    }

    /// For the uploader: the file's stream, if it sent parts of exactly what `job`
    /// uploads (same key, same data version, `part_size`). Any other is aborted.
    pub async fn take_stream(&self, job: &super::plan::Job, part_size: u64) -> Option<Streamed> {
        let super::plan::JobId::Inode(ino) = job.id else {
            return None;
        };
        let streamed = self.streams.take(ino).await?;
        let fits = streamed.key == job.key
            && streamed.version == job.data_version
            && streamed.part_size == part_size
            && streamed.sent() <= job.size;
        if !fits {
            tracing::debug!(key = %job.key, "the file changed since its parts went up: uploading it whole");
            self.streams.abort(&streamed.key, &streamed.upload_id);
            return None;
        }
        Some(streamed)
    }

    /// A taken stream that will not be completed.
    pub fn abort_stream(&self, streamed: &Streamed) {
        self.streams.abort(&streamed.key, &streamed.upload_id);
    }

    /// A taken stream's upload was completed.
    pub fn stream_completed(&self, streamed: &Streamed) {
        self.streams.finished(&streamed.upload_id);
    }

    /// At start: aborts the multipart uploads a killed run of this cache left.
    pub async fn abort_left_over_uploads(&self) {
        self.streams.abort_left_over().await;
    }

    /// Streams whose file was removed or renamed end (called while planning).
    pub(super) fn sweep_streams(&self, tree: &super::tree::Tree) {
        self.streams.sweep(|ino, key| {
            tree.get(ino).is_some_and(|i| !i.unlinked)
                && self.current_key(tree, ino).as_deref() == Some(key)
        });
    }
}
