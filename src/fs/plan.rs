//! What the bucket must be told, decided from the namespace: the uploader asks for
//! jobs here and reports results here, so every sync-state transition lives in one file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::{Content, RemoteSource};
use crate::mapping::{attrs_to_metadata, StoredAttrs};
use crate::store::{Metadata, ObjectInfo, WriteCondition};

use super::tree::{Inode, NodeKind, Stored, Tree, ROOT};
use super::{Fs, FsResult};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobId {
    Inode(u64),
    Delete(String),
}

pub enum JobKind {
    /// Upload the cache file (after fetching whatever part of it is absent).
    UploadFile {
        content: Arc<Content>,
        size: u64,
        source: Option<RemoteSource>,
        /// The version at this key that the file was based on: when the content is
        /// unchanged after all (rewritten identically), only metadata may need to go.
        base_etag: Option<String>,
    },
    /// Upload a small body: a directory marker or a symlink target.
    PutBody(Bytes),
    /// Server-side copy from where the bucket already holds this content; with
    /// `keep_metadata`, with the source's own metadata (this mount never saw it: the
    /// attributes it shows are the listing's defaults).
    Copy {
        from: String,
        from_etag: String,
        keep_metadata: bool,
    },
    /// Bring the whole file into the cache: its object is about to be overwritten.
    Materialize,
    /// Delete the object; with an ETag, only if it is still that version (a newer
    /// object at the key is someone's data, perhaps ours from before a crash).
    Delete { etag: Option<String> },
    /// Delete the object only if it is a write of ours whose reply was lost, made for
    /// a file no longer at this key.
    DeleteOrphan,
}

pub struct Job {
    pub id: JobId,
    pub key: String,
    pub kind: JobKind,
    pub metadata: Metadata,
    pub data_version: u64,
    pub meta_version: u64,
    pub size: u64,
    /// What the bucket must still hold at `key` for the write to go ahead: the
    /// version this mount last saw there, or nothing.
    pub condition: WriteCondition,
}

impl Job {
    /// A short name of what the job does, for logs.
    pub fn action(&self) -> &'static str {
        match self.kind {
            JobKind::UploadFile { .. } => "upload",
            JobKind::PutBody(_) => "put",
            JobKind::Copy { .. } => "copy",
            JobKind::Materialize => "fetch",
            JobKind::Delete { .. } | JobKind::DeleteOrphan => "delete",
        }
    }

    /// Keys this job reads or writes; no two jobs on one key run at once.
    pub fn keys(&self) -> Vec<String> {
        match &self.kind {
            JobKind::Copy { from, .. } => vec![self.key.clone(), from.clone()],
            _ => vec![self.key.clone()],
        }
    }
}

/// What a job did in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An object was written; its new ETag.
    Written(String),
    /// A write of ours whose reply was lost is what the bucket holds (found by its
    /// token): this attempt's or an earlier one's, with its ETag.
    Landed(String, super::attempts::Attempt),
    Deleted,
    /// A versioned delete found a newer object and left it alone.
    Kept,
    /// Nothing was sent (a fetch into the cache).
    Local,
    /// The bucket no longer held what the write expected: someone else changed (Some)
    /// or deleted (None) the object. Nothing was written.
    Conflict(Option<ObjectInfo>),
    /// The version the file was based on (at another key: it was renamed here) is no
    /// longer in the bucket: another version is there (Some) or nothing (None). Nothing
    /// was written.
    BaseReplaced(Option<ObjectInfo>),
}

impl Job {
    /// What the bucket holds at `key` once this job's write landed as `etag`.
    fn stored_as(&self, etag: String) -> Stored {
        Stored {
            key: self.key.clone(),
            etag,
            size: self.size,
            data_version: self.data_version,
            meta_version: self.meta_version,
        }
    }

    /// The version (key, ETag) of its file that the job was planned from, if any.
    pub fn base(&self) -> Option<(&str, &str)> {
        match &self.kind {
            JobKind::Copy {
                from, from_etag, ..
            } => Some((from, from_etag)),
            JobKind::UploadFile {
                source: Some(source),
                ..
            } => Some((&source.key, &source.etag)),
            // Planned for the version held at the key, whichever it is.
            JobKind::Materialize => Some((&self.key, "")),
            _ => None,
        }
    }
}

/// What the planner must leave alone this round.
pub trait Busy {
    fn is_busy(&self, id: &JobId, key: &str) -> bool;
}

impl Fs {
    /// Up to `limit` jobs that can start now. With `everything`, changed files are
    /// taken without waiting for the debounce or for writers to close (unmount, sync).
    /// Planning stops at `limit`: with thousands of files waiting it runs after every
    /// finished upload, and a full plan each time made it quadratic.
    pub fn plan(
        &self,
        debounce: Duration,
        everything: bool,
        busy: &dyn Busy,
        limit: usize,
    ) -> Vec<Job> {
        let now = Instant::now();
        let mut tree = self.tree.lock();
        self.notice_all_direct_writes(&mut tree);
        self.sweep_streams(&tree);
        let mut jobs = Vec::new();
        let mut consider = |tree: &mut Tree, ino: u64, changed: Instant| {
            self.plan_file(
                tree, ino, changed, now, debounce, everything, busy, &mut jobs,
            );
            jobs.len() < limit
        };
        // Only what may be ready: urgent entries, then those unchanged for the debounce
        // (everything, for sync and unmount), oldest first, read in chunks because
        // planning changes the tree.
        let urgent: Vec<(u64, Instant)> = tree
            .urgent
            .iter()
            .filter_map(|&i| Some((i, *tree.dirty().get(&i)?)))
            .collect();
        for (ino, changed) in urgent {
            if !consider(&mut tree, ino, changed) {
                return jobs;
            }
        }
        let settled_before = if everything {
            now
        } else {
            now.checked_sub(debounce).unwrap_or(now)
        };
        let mut after = None;
        loop {
            let chunk = tree.dirty_chunk(after, settled_before, 64);
            let Some(&last) = chunk.last() else { break };
            after = Some(last);
            for (changed, ino) in chunk {
                if !tree.urgent.contains(&ino) && !consider(&mut tree, ino, changed) {
                    return jobs;
                }
            }
        }
        let deletes: Vec<(String, Option<String>)> = tree
            .pending_deletes
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, etag) in deletes {
            if jobs.len() >= limit {
                break;
            }
            if let Some(owner) = self.key_owner(&tree, &key) {
                // Something is at that name again: its own upload replaces the object
                // (and `finish` drops the delete then). If it is removed before that,
                // the delete is still owed, so it stays queued meanwhile.
                if tree.get(owner).is_some_and(|i| i.in_sync_at(&key)) {
                    tree.unqueue_delete(&key);
                }
                continue;
            }
            if tree.stored_keys.contains_key(&key) {
                continue; // still the copy source of a renamed file
            }
            // A directory's marker goes last: while keys under it still wait for their
            // delete (or their copy), listings show the directory, and its pending
            // marker delete is what tells them it was removed or renamed here.
            if key.ends_with('/') && tree.deletes_pending_below(&key) {
                continue;
            }
            let id = JobId::Delete(key.clone());
            if !busy.is_busy(&id, &key) {
                jobs.push(Job {
                    id,
                    key,
                    kind: JobKind::Delete { etag },
                    metadata: Metadata::new(),
                    data_version: 0,
                    meta_version: 0,
                    size: 0,
                    condition: WriteCondition::Always,
                });
            }
        }
        if jobs.len() < limit {
            jobs.extend(self.orphan_jobs(&tree, busy, limit - jobs.len()));
        }
        jobs
    }

    /// When the oldest change becomes due for upload (None: nothing changed).
    pub fn first_due(&self, debounce: Duration) -> Option<Instant> {
        self.tree
            .lock()
            .oldest_change()
            .map(|changed| changed + debounce)
    }

    /// Plans the upload of one changed file if it is ready (or the copy that must come
    /// first), dropping it from the dirty set when the bucket already holds it.
    #[allow(clippy::too_many_arguments)]
    fn plan_file(
        &self,
        tree: &mut Tree,
        ino: u64,
        changed: Instant,
        now: Instant,
        debounce: Duration,
        everything: bool,
        busy: &dyn Busy,
        jobs: &mut Vec<Job>,
    ) {
        if tree.conflict_budget.is_held(ino, now) {
            return;
        }
        let Some(inode) = tree.get(ino) else {
            tree.clear_dirty(ino);
            return;
        };
        let urgent = everything || tree.urgent.contains(&ino);
        let settled = inode.open_writers == 0 && now.duration_since(changed) >= debounce;
        if !urgent && !settled {
            return;
        }
        let Some(key) = self.current_key(tree, ino) else {
            tree.clear_dirty(ino);
            return;
        };
        if inode.in_sync_at(&key) {
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
            return;
        }
        if never_written(inode) {
            // A copy that failed for want of room left it: not an empty object too.
            tracing::info!(%key, "not uploaded: an empty new file whose writes were refused (ENOSPC)");
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
            self.persist(tree, ino);
            return;
        }
        // Never overwrite an object another inode still has to read from.
        if let Some(holder) = self.source_holder(tree, &key, ino) {
            let id = JobId::Inode(holder);
            if !busy.is_busy(&id, &key) {
                jobs.push(self.materialize_job(tree, holder, &key));
            }
            return;
        }
        if let Some(job) = self.upload_job(tree, ino, key) {
            if job.keys().iter().all(|k| !busy.is_busy(&job.id, k)) {
                jobs.push(job);
            }
        }
    }

    /// Records, before a job writes to the bucket, which key it writes.
    pub fn start(&self, job: &Job) {
        if matches!(job.kind, JobKind::Materialize) {
            return;
        }
        let mut tree = self.tree.lock();
        *tree.busy.entry(job.key.clone()).or_default() += 1;
        if matches!(job.kind, JobKind::Delete { .. } | JobKind::DeleteOrphan) {
            return;
        }
        if let Err(err) = tree.state.put_inflight(&job.key) {
            tracing::error!(key = %job.key, %err, "cannot record an upload in the state");
        }
    }

    /// Notes a write outside the job queue (the probe), so a crash cannot orphan it.
    pub fn record_inflight(&self, key: &str) {
        if let Err(err) = self.tree.lock().state.put_inflight(key) {
            tracing::error!(%key, %err, "cannot record a write in the state");
        }
    }

    pub fn clear_inflight(&self, key: &str) {
        if let Err(err) = self.tree.lock().state.remove_inflight(key) {
            tracing::error!(%key, %err, "cannot update the state");
        }
    }

    /// A started job failed and will be planned again later.
    pub fn abandon(&self, job: &Job) {
        if !matches!(job.kind, JobKind::Materialize) {
            self.release_key(&mut self.tree.lock(), &job.key);
        }
    }

    fn release_key(&self, tree: &mut Tree, key: &str) {
        if let Some(count) = tree.busy.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                tree.busy.remove(key);
            }
        }
    }

    /// Records the outcome of a job; `etag` is what the bucket answered. Each step is
    /// ordered so that a crash between two state writes loses nothing: deletes owed are
    /// queued before the upload stops counting as in flight.
    pub fn finish(&self, job: &Job, outcome: Outcome) {
        let mut tree = self.tree.lock();
        let state = tree.state.clone();
        let _atomic = state.batch();
        if !matches!(job.kind, JobKind::Materialize) {
            self.release_key(&mut tree, &job.key);
        }
        let (ino, stored) = match (&job.id, outcome) {
            (JobId::Delete(key), outcome) => {
                tree.unqueue_delete(key);
                tree.attempts.resolved(key);
                if outcome == Outcome::Deleted {
                    tree.touch_deleted(key);
                    self.note_deleted(&mut tree, key);
                }
                return;
            }
            (JobId::Inode(ino), Outcome::Written(etag)) => (*ino, job.stored_as(etag)),
            (JobId::Inode(_), Outcome::Landed(etag, attempt)) => {
                let stored = Stored {
                    key: job.key.clone(),
                    etag,
                    size: attempt.size,
                    data_version: attempt.data_version,
                    meta_version: attempt.meta_version,
                };
                (attempt.ino, stored)
            }
            (JobId::Inode(ino), Outcome::Conflict(remote)) => {
                tree.attempts.resolved(&job.key);
                if let Err(err) = tree.state.remove_inflight(&job.key) {
                    tracing::error!(key = %job.key, %err, "cannot update the state");
                }
                let changes = self.resolve_conflict(&mut tree, *ino, &job.key, remote);
                drop(tree);
                self.tell_kernel(changes);
                return;
            }
            (JobId::Inode(ino), Outcome::BaseReplaced(remote)) => {
                // Nothing was written; a marker left by an earlier interrupted upload
                // stays (a materialize leaves none).
                let materialize = matches!(job.kind, JobKind::Materialize);
                if !materialize && !tree.uncertain.contains(&job.key) {
                    if let Err(err) = tree.state.remove_inflight(&job.key) {
                        tracing::error!(key = %job.key, %err, "cannot update the state");
                    }
                }
                let changes = self.resolve_lost_base(&mut tree, *ino, job, remote);
                drop(tree);
                self.tell_kernel(changes);
                return;
            }
            (JobId::Inode(_), _) => return,
        };
        tree.touch(&job.key);
        tree.uncertain.remove(&job.key);
        tree.attempts.resolved(&job.key);
        self.drop_replaced_base(&mut tree, ino, &job.key);
        let live = tree.get(ino).is_some_and(|i| !i.unlinked);
        if !live {
            // Removed while its upload ran: the new object is an orphan.
            self.owe_delete(&mut tree, job.key.clone(), Some(stored.etag));
        } else {
            self.record_stored(&mut tree, ino, stored);
        }
        if let Err(err) = tree.state.remove_inflight(&job.key) {
            tracing::error!(key = %job.key, %err, "cannot update the state");
        }
    }

    fn record_stored(&self, tree: &mut Tree, ino: u64, stored: Stored) {
        let key = stored.key.clone();
        let current = self.current_key(tree, ino);
        if current.as_deref() == Some(key.as_str()) {
            // The object at this key is now this inode's: a delete owed there is void.
            tree.unqueue_delete(&key);
        } else {
            // Renamed while this job ran: the object just written is owed a delete once
            // the inode's next copy lands.
            self.owe_delete(tree, key.clone(), Some(stored.etag.clone()));
        }
        let old = tree.get(ino).and_then(|i| i.stored.clone());
        tree.set_stored(ino, Some(stored));
        if let Some(old) = old.filter(|o| o.key != key) {
            self.owe_delete(tree, old.key, Some(old.etag));
        }
        if current.is_some_and(|k| tree.get(ino).is_some_and(|i| i.in_sync_at(&k))) {
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
        }
        self.persist(tree, ino);
    }

    /// Our object now holds `key`. Another file whose base was the object there (one
    /// renamed away whose copy was not made yet, its bytes all fetched first) no longer
    /// has a base in the bucket: it goes up from its cache. Kept, that stale base made
    /// the file, renamed back to `key`, expect the version we had just replaced there
    /// (a false conflict, its content under a conflict name).
    fn drop_replaced_base(&self, tree: &mut Tree, writer: u64, key: &str) {
        let Some(&holder) = tree.stored_keys.get(key) else {
            return;
        };
        let Some(inode) = tree.get(holder) else {
            return;
        };
        if holder == writer || inode.stored.as_ref().is_none_or(|s| s.key != key) {
            return;
        }
        if !inode.all_here() {
            tracing::warn!(%key, "the version a renamed file was based on was replaced by this mount before its bytes were all here; they are lost (zeros)");
        }
        tree.set_stored(holder, None);
        if !tree.get(holder).is_some_and(|i| i.unlinked) {
            tree.mark_dirty(holder);
        }
        self.persist(tree, holder);
    }

    /// A listing under way may have seen this key before it was deleted.
    fn note_deleted(&self, tree: &mut Tree, key: &str) {
        if let Some(deleted) = tree.deleted_during_listing.as_mut() {
            deleted.insert(key.to_string());
        }
    }

    /// Fetches every absent byte of a job's file into the cache (blocking).
    pub fn fill_content(
        &self,
        content: &Content,
        size: u64,
        source: Option<&RemoteSource>,
    ) -> FsResult<()> {
        content.ensure(0..size, 0..size, source, &self.fetcher)?;
        Ok(())
    }

    /// Queues the delete of an object this mount no longer needs at `key`, unless the
    /// namespace already holds, in sync, something else there (a delete would destroy it).
    pub(super) fn owe_delete(&self, tree: &mut Tree, key: String, etag: Option<String>) {
        let owner_in_sync = self
            .key_owner(tree, &key)
            .and_then(|owner| tree.get(owner))
            .is_some_and(|inode| inode.in_sync_at(&key));
        if !owner_in_sync {
            tree.queue_delete(key, etag);
        }
    }

    /// The key an inode's object belongs at now, if it is in the namespace.
    pub(super) fn current_key(&self, tree: &Tree, ino: u64) -> Option<String> {
        if ino == ROOT {
            return None;
        }
        let inode = tree.get(ino)?;
        let path = tree.path(ino)?;
        Some(if inode.is_dir() {
            self.config.prefix.dir_prefix(&path)
        } else {
            self.config.prefix.file_key(&path)
        })
    }

    /// The inode the namespace puts at `key`, among what is loaded.
    pub(super) fn key_owner(&self, tree: &Tree, key: &str) -> Option<u64> {
        let rest = key.strip_prefix(self.config.prefix.as_str())?;
        let (rest, want_dir) = match rest.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (rest, false),
        };
        if rest.is_empty() {
            return None;
        }
        let path: Vec<&str> = rest.split('/').collect();
        let ino = tree.resolve(&path)?;
        (tree.get(ino)?.is_dir() == want_dir).then_some(ino)
    }

    /// Another live inode whose only copy of its data is the object at `key`.
    fn source_holder(&self, tree: &Tree, key: &str, writer: u64) -> Option<u64> {
        let holder = *tree.stored_keys.get(key)?;
        if holder == writer || self.current_key(tree, holder).as_deref() == Some(key) {
            return None;
        }
        let inode = tree.get(holder)?;
        (!inode.all_here()).then_some(holder)
    }

    fn materialize_job(&self, tree: &Tree, holder: u64, key: &str) -> Job {
        let inode = tree.get(holder);
        Job {
            id: JobId::Inode(holder),
            key: key.to_string(),
            kind: JobKind::Materialize,
            metadata: Metadata::new(),
            data_version: inode.map_or(0, |i| i.data_version),
            meta_version: inode.map_or(0, |i| i.meta_version),
            size: inode.map_or(0, |i| i.attr.size),
            condition: WriteCondition::Always,
        }
    }

    fn upload_job(&self, tree: &Tree, ino: u64, key: String) -> Option<Job> {
        let inode = tree.get(ino)?;
        let metadata = object_metadata(inode);
        let kind = match inode.attr.kind {
            NodeKind::Dir => JobKind::PutBody(Bytes::new()),
            _ if self.can_copy(tree, inode, ino) => JobKind::Copy {
                from: inode.stored.as_ref()?.key.clone(),
                from_etag: tree.source_of(ino)?.etag,
                keep_metadata: !inode.meta_known && inode.meta_version == 0,
            },
            NodeKind::Symlink => JobKind::PutBody(Bytes::from(inode.symlink_target.clone()?)),
            // s3fs's special files: a zero-byte object, all in its metadata.
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice => {
                JobKind::PutBody(Bytes::new())
            }
            NodeKind::File => JobKind::UploadFile {
                content: inode.content.clone()?,
                size: inode.attr.size,
                source: tree.source_of(ino),
                base_etag: inode
                    .stored
                    .as_ref()
                    .filter(|s| s.key == key && !s.etag.is_empty() && s.size == inode.attr.size)
                    .map(|s| s.etag.clone()),
            },
        };
        let condition = match inode.attr.kind {
            // Markers hold no data: nothing of anyone's can be lost by rewriting one.
            NodeKind::Dir => WriteCondition::Always,
            _ => self.expected_at(tree, &key),
        };
        Some(Job {
            id: JobId::Inode(ino),
            key,
            kind,
            metadata,
            data_version: inode.data_version,
            meta_version: inode.meta_version,
            size: inode.attr.size,
            condition,
        })
    }

    /// What this mount last saw at `key`, as the condition for writing there.
    fn expected_at(&self, tree: &Tree, key: &str) -> WriteCondition {
        if tree.uncertain.contains(key) {
            return WriteCondition::Always;
        }
        if let Some(holder) = tree.stored_keys.get(key).and_then(|&i| tree.get(i)) {
            return match holder.stored.as_ref().map(|s| s.etag.as_str()) {
                Some(etag) if !etag.is_empty() => WriteCondition::IfMatch(etag.to_string()),
                _ => WriteCondition::Always, // the server lists no ETags
            };
        }
        match tree.pending_deletes.get(key) {
            Some(Some(etag)) => WriteCondition::IfMatch(etag.clone()),
            Some(None) => WriteCondition::Always,
            None => WriteCondition::IfAbsent,
        }
    }

    /// The bucket already holds this content and that object is not about to be replaced.
    fn can_copy(&self, tree: &Tree, inode: &Inode, ino: u64) -> bool {
        let Some(stored) = &inode.stored else {
            return false;
        };
        stored.data_version == inode.data_version
            && self
                .key_owner(tree, &stored.key)
                .is_none_or(|owner| owner == ino)
    }

    /// For the uploader: runs a materialize job (blocking).
    pub fn materialize(&self, ino: u64) -> FsResult<()> {
        let (content, size, source) = {
            let tree = self.tree.lock();
            let Some(inode) = tree.get(ino) else {
                return Ok(());
            };
            if inode.attr.kind == NodeKind::Symlink {
                drop(tree);
                return self.symlink_target(ino).map(|_| ());
            }
            if inode.attr.kind.is_special() {
                return Ok(()); // no data to bring here
            }
            (inode.content.clone(), inode.attr.size, tree.source_of(ino))
        };
        let content = match content {
            Some(content) => content,
            None => {
                let mut tree = self.tree.lock();
                self.content(&mut tree, ino)?.0
            }
        };
        self.fill_content(&content, size, source.as_ref())
    }
}

/// A new, empty file whose last write was refused for want of room (ENOSPC), with
/// nothing written or truncated since: what a failed copy leaves. It stays local.
fn never_written(inode: &Inode) -> bool {
    inode.refused_write
        && inode.attr.kind == NodeKind::File
        && inode.attr.size == 0
        && inode.stored.is_none()
}

/// The s3fs-compatible metadata headers for an inode.
pub(super) fn object_metadata(inode: &Inode) -> Metadata {
    attrs_to_metadata(&StoredAttrs {
        mode: inode.attr.kind.type_bits() | inode.attr.perm,
        uid: inode.attr.uid,
        gid: inode.attr.gid,
        mtime: inode.attr.mtime,
        rdev: inode.attr.rdev,
    })
}
