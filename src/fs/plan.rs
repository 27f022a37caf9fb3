//! What the bucket must be told, decided from the namespace: the uploader asks for
//! jobs here and reports results here, so every sync-state transition lives in one file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::{Content, RemoteSource};
use crate::mapping::{attrs_to_metadata, StoredAttrs, S_IFDIR, S_IFLNK, S_IFREG};
use crate::store::Metadata;

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
    },
    /// Upload a small body: a directory marker or a symlink target.
    PutBody(Bytes),
    /// Server-side copy from where the bucket already holds this content.
    Copy {
        from: String,
    },
    /// Bring the whole file into the cache: its object is about to be overwritten.
    Materialize,
    Delete,
}

pub struct Job {
    pub id: JobId,
    pub key: String,
    pub kind: JobKind,
    pub metadata: Metadata,
    pub data_version: u64,
    pub meta_version: u64,
    pub size: u64,
}

impl Job {
    /// Keys this job reads or writes; no two jobs on one key run at once.
    pub fn keys(&self) -> Vec<String> {
        match &self.kind {
            JobKind::Copy { from } => vec![self.key.clone(), from.clone()],
            _ => vec![self.key.clone()],
        }
    }
}

/// What the planner must leave alone this round.
pub trait Busy {
    fn is_busy(&self, id: &JobId, key: &str) -> bool;
}

impl Fs {
    /// Jobs that can start now. With `everything`, changed files are taken without
    /// waiting for the debounce or for writers to close (unmount, sync).
    pub fn plan(&self, debounce: Duration, everything: bool, busy: &dyn Busy) -> Vec<Job> {
        let now = Instant::now();
        let mut tree = self.tree.lock();
        let mut jobs = Vec::new();
        let dirty: Vec<(u64, Instant)> = tree.dirty.iter().map(|(&i, &t)| (i, t)).collect();
        for (ino, changed) in dirty {
            let Some(inode) = tree.get(ino) else {
                tree.dirty.remove(&ino);
                continue;
            };
            let urgent = everything || tree.urgent.contains(&ino);
            let settled = inode.open_writers == 0 && now.duration_since(changed) >= debounce;
            if !urgent && !settled {
                continue;
            }
            let Some(key) = self.current_key(&tree, ino) else {
                tree.dirty.remove(&ino);
                continue;
            };
            if inode.in_sync_at(&key) {
                tree.dirty.remove(&ino);
                tree.urgent.remove(&ino);
                continue;
            }
            // Never overwrite an object another inode still has to read from.
            if let Some(holder) = self.source_holder(&tree, &key, ino) {
                let id = JobId::Inode(holder);
                if !busy.is_busy(&id, &key) {
                    jobs.push(self.materialize_job(&tree, holder, &key));
                }
                continue;
            }
            if let Some(job) = self.upload_job(&tree, ino, key) {
                if job.keys().iter().all(|k| !busy.is_busy(&job.id, k)) {
                    jobs.push(job);
                }
            }
        }
        let deletes: Vec<String> = tree.pending_deletes.iter().cloned().collect();
        for key in deletes {
            if self.key_owner(&tree, &key).is_some() {
                tree.unqueue_delete(&key); // the namespace has something there again
                continue;
            }
            if tree.stored_keys.contains_key(&key) {
                continue; // still the copy source of a renamed file
            }
            let id = JobId::Delete(key.clone());
            if !busy.is_busy(&id, &key) {
                jobs.push(Job {
                    id,
                    key,
                    kind: JobKind::Delete,
                    metadata: Metadata::new(),
                    data_version: 0,
                    meta_version: 0,
                    size: 0,
                });
            }
        }
        jobs
    }

    /// Records the outcome of a job; `etag` is what the bucket answered.
    pub fn finish(&self, job: &Job, etag: String) {
        let mut tree = self.tree.lock();
        let ino = match (&job.id, &job.kind) {
            (JobId::Delete(key), _) => {
                tree.unqueue_delete(key);
                return;
            }
            (_, JobKind::Materialize) => return,
            (JobId::Inode(ino), _) => *ino,
        };
        let live = tree.get(ino).is_some_and(|i| !i.unlinked);
        if !live {
            // Removed while its upload ran: the new object is an orphan.
            tree.queue_delete(job.key.clone());
            return;
        }
        let old = tree.get(ino).and_then(|i| i.stored.clone());
        let stored = Stored {
            key: job.key.clone(),
            etag,
            size: job.size,
            data_version: job.data_version,
            meta_version: job.meta_version,
        };
        tree.set_stored(ino, Some(stored));
        if let Some(old) = old.filter(|o| o.key != job.key) {
            tree.queue_delete(old.key);
        }
        let current = self.current_key(&tree, ino);
        if current.is_some_and(|k| tree.get(ino).is_some_and(|i| i.in_sync_at(&k))) {
            tree.dirty.remove(&ino);
            tree.urgent.remove(&ino);
        }
        self.persist(&mut tree, ino);
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

    /// The key an inode's object belongs at now, if it is in the namespace.
    fn current_key(&self, tree: &Tree, ino: u64) -> Option<String> {
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
    fn key_owner(&self, tree: &Tree, key: &str) -> Option<u64> {
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
        let complete = match inode.attr.kind {
            NodeKind::File => inode
                .content
                .as_ref()
                .is_some_and(|c| c.is_complete(inode.attr.size)),
            NodeKind::Symlink => inode.symlink_target.is_some(),
            NodeKind::Dir => true,
        };
        (!complete).then_some(holder)
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
        }
    }

    fn upload_job(&self, tree: &Tree, ino: u64, key: String) -> Option<Job> {
        let inode = tree.get(ino)?;
        let metadata = object_metadata(inode);
        let kind = match inode.attr.kind {
            NodeKind::Dir => JobKind::PutBody(Bytes::new()),
            _ if self.can_copy(tree, inode, ino) => JobKind::Copy {
                from: inode.stored.as_ref()?.key.clone(),
            },
            NodeKind::Symlink => JobKind::PutBody(Bytes::from(inode.symlink_target.clone()?)),
            NodeKind::File => JobKind::UploadFile {
                content: inode.content.clone()?,
                size: inode.attr.size,
                source: inode.stored.as_ref().map(|s| RemoteSource {
                    key: s.key.clone(),
                    size: s.size,
                }),
            },
        };
        Some(Job {
            id: JobId::Inode(ino),
            key,
            kind,
            metadata,
            data_version: inode.data_version,
            meta_version: inode.meta_version,
            size: inode.attr.size,
        })
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
                return self.readlink(ino).map(|_| ());
            }
            let source = inode.stored.as_ref().map(|s| RemoteSource {
                key: s.key.clone(),
                size: s.size,
            });
            (inode.content.clone(), inode.attr.size, source)
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

/// The s3fs-compatible metadata headers for an inode.
fn object_metadata(inode: &Inode) -> Metadata {
    let type_bits = match inode.attr.kind {
        NodeKind::Dir => S_IFDIR,
        NodeKind::File => S_IFREG,
        NodeKind::Symlink => S_IFLNK,
    };
    attrs_to_metadata(&StoredAttrs {
        mode: type_bits | inode.attr.perm,
        uid: inode.attr.uid,
        gid: inode.attr.gid,
        mtime: inode.attr.mtime,
    })
}
