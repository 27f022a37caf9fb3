//! Writing dirty inodes to the durable state, and rebuilding them from it at mount.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::{Cache, RangeSet};
use crate::state::{BaseObject, EntryKind, EntryRecord, StateDb};

use super::tree::{Attr, NodeKind, Stored, Tree, ROOT};
use super::Fs;

fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Content file names the state still refers to: the cache keeps these at start.
pub fn cache_files_in_use(state: &StateDb) -> Result<HashSet<String>, rusqlite::Error> {
    Ok(state
        .entries()?
        .into_iter()
        .filter_map(|r| r.cache_file)
        .collect())
}

impl Fs {
    /// Brings the durable record of `ino` in line with the tree: a record while the
    /// inode differs from the bucket, none once it is clean or gone.
    pub(super) fn persist(&self, tree: &mut Tree, ino: u64) {
        if ino == ROOT {
            return;
        }
        let path = tree.path(ino).map(|p| p.join("/"));
        // A file with a writer whose close sends no FLUSH keeps its record even when
        // the bucket has caught up (an fsync): writes after that upload are recorded
        // only at the RELEASE, and a restart must then take the cache file as it is.
        let unflushed = tree.get(ino).is_some_and(|i| i.unflushed_writers > 0);
        let wanted = path.filter(|_| tree.dirty().contains_key(&ino) || unflushed);
        let old = tree.persisted.get(&ino).map(|r| r.path.clone());
        if old.is_some_and(|o| wanted.as_ref() != Some(&o)) {
            // Not when another inode's record took the path (renamed over this one,
            // whose RELEASE came after): that record is not ours to remove.
            if let Some(old) = tree.unnote_persisted(ino) {
                tracing::debug!(path = %old, "record removed");
                if let Err(err) = tree.state.remove_entry(&old) {
                    tracing::error!(path = %old, %err, "cannot update the state");
                }
            }
        }
        let (Some(path), Some(inode)) = (wanted, tree.get(ino)) else {
            return;
        };
        let record = EntryRecord {
            path: path.clone(),
            kind: match inode.attr.kind {
                NodeKind::File => EntryKind::File,
                NodeKind::Dir => EntryKind::Dir,
                NodeKind::Symlink => EntryKind::Symlink,
                NodeKind::Fifo => EntryKind::Fifo,
                NodeKind::Socket => EntryKind::Socket,
                NodeKind::CharDevice => EntryKind::CharDevice,
                NodeKind::BlockDevice => EntryKind::BlockDevice,
            },
            cache_file: inode.content.as_ref().map(|c| c.name()),
            // A special file has no data: the field holds its device number instead
            // (a schema change for one number was not worth a migration).
            size: match inode.attr.kind.is_special() {
                true => u64::from(inode.attr.rdev),
                false => inode.attr.size,
            },
            perm: inode.attr.perm,
            uid: inode.attr.uid,
            gid: inode.attr.gid,
            mtime_ns: to_ns(inode.attr.mtime),
            target: inode.symlink_target.clone(),
            base: inode.stored.as_ref().map(|s| BaseObject {
                key: s.key.clone(),
                etag: s.etag.clone(),
                size: s.size,
            }),
            present: inode
                .content
                .as_ref()
                .map(|c| c.present_spans())
                .unwrap_or_default(),
            data_dirty: unflushed
                || inode
                    .stored
                    .as_ref()
                    .is_none_or(|s| s.data_version != inode.data_version),
            meta_dirty: inode
                .stored
                .as_ref()
                .is_none_or(|s| s.meta_version != inode.meta_version),
        };
        // close() and release both record a changed file: write it once.
        let owns_path = tree.persisted_paths.get(&path) == Some(&ino);
        if owns_path && tree.persisted.get(&ino) == Some(&record) {
            return;
        }
        tracing::debug!(%path, "recorded");
        if let Err(err) = tree.state.put_entry(&record) {
            tracing::error!(%path, %err, "cannot record a local change in the state");
            return;
        }
        tree.note_persisted(ino, record);
    }

    /// Rebuilds the local changes a previous run left in the state.
    pub(super) fn restore(&self, tree: &mut Tree, cache: &Cache) {
        let (entries, deletes) = match (tree.state.entries(), tree.state.deletes()) {
            (Ok(e), Ok(d)) => (e, d),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(%err, "cannot read the state; starting without it");
                return;
            }
        };
        let state = tree.state.clone();
        let _atomic = state.batch();
        let restored = entries.len();
        for record in entries {
            self.restore_entry(tree, cache, record);
        }
        for (key, etag) in deletes {
            tree.pending_deletes.insert(key, etag);
        }
        // A write cut short by the crash may have created an object that nothing in
        // the namespace owns any more (its file was removed or renamed meanwhile).
        match tree.state.take_inflight() {
            Ok(keys) => {
                for key in keys {
                    if self.key_owner(tree, &key).is_none() {
                        tree.queue_delete(key, None);
                    } else {
                        // Its next upload replaces whatever landed; kept in the state
                        // in case of another crash before that.
                        if let Err(err) = tree.state.put_inflight(&key) {
                            tracing::error!(%key, %err, "cannot record an upload in the state");
                        }
                        tree.uncertain.insert(key);
                    }
                }
            }
            Err(err) => tracing::error!(%err, "cannot read interrupted uploads from the state"),
        }
        if restored > 0 || !tree.pending_deletes.is_empty() {
            tracing::info!(
                entries = restored,
                deletes = tree.pending_deletes.len(),
                "restored changes not yet in the bucket"
            );
        }
    }

    fn restore_entry(&self, tree: &mut Tree, cache: &Cache, record: EntryRecord) {
        tracing::debug!(path = %record.path, base = ?record.base, "restoring");
        let parts: Vec<&str> = record.path.split('/').collect();
        if parts.iter().any(|p| !crate::mapping::is_valid_name(p)) {
            tracing::error!(path = %record.path, "unusable path in the state; skipped");
            return;
        }
        let (name, dirs) = parts.split_last().expect("split gives one part at least");
        let mut parent = ROOT;
        for dir in dirs {
            parent = match tree.child(parent, dir) {
                Some(ino) => ino,
                None => {
                    let attr = self.default_attr(NodeKind::Dir, 0, SystemTime::now());
                    tree.insert(parent, dir, attr, true)
                }
            };
        }
        let kind = match record.kind {
            EntryKind::File => NodeKind::File,
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink => NodeKind::Symlink,
            EntryKind::Fifo => NodeKind::Fifo,
            EntryKind::Socket => NodeKind::Socket,
            EntryKind::CharDevice => NodeKind::CharDevice,
            EntryKind::BlockDevice => NodeKind::BlockDevice,
        };
        let mut mtime = from_ns(record.mtime_ns);
        let mut size = record.size;
        let content = match &record.cache_file {
            Some(file) => match cache.reopen(file, RangeSet::from_spans(&record.present)) {
                Ok(content) => Some(content),
                Err(err) => {
                    tracing::error!(path = %record.path, %err, "cache file of a pending change is missing");
                    None
                }
            },
            None => None,
        };
        // A changed file whose bytes are all local may have been written after its last
        // record (the daemon died between a close without FLUSH and its RELEASE): its
        // cache file, always as long as the file, is the truth.
        if let (true, Some(content)) = (record.data_dirty, &content) {
            if let Ok(meta) = content.file().metadata() {
                if meta.len() != size && content.is_complete(meta.len().max(size)) {
                    tracing::info!(path = %record.path, recorded = size, found = meta.len(),
                        "size taken from the cache file");
                    size = meta.len();
                    mtime = mtime.max(meta.modified().unwrap_or(mtime));
                }
            }
        }
        // A special file's record holds its device number as the size.
        let (size, rdev) = match kind.is_special() {
            true => (0, u32::try_from(size).unwrap_or(0)),
            false => (size, 0),
        };
        let attr = Attr {
            ino: 0,
            kind,
            size,
            perm: record.perm,
            uid: record.uid,
            gid: record.gid,
            atime: mtime,
            mtime,
            ctime: mtime,
            nlink: 1,
            rdev,
        };
        let ino = match tree.child(parent, name) {
            Some(ino) => ino,
            None => tree.insert(parent, name, attr, kind == NodeKind::Dir),
        };
        let stored = record.base.as_ref().map(|b| Stored {
            key: b.key.clone(),
            etag: b.etag.clone(),
            size: b.size,
            data_version: 0,
            meta_version: 0,
        });
        if let Some(inode) = tree.get_mut(ino) {
            inode.attr = Attr { ino, ..attr };
            inode.symlink_target = record.target.clone();
            // A file changed here with its mode and owner untouched may show defaults
            // its mount never replaced: its upload looks them up (unknown_meta.rs).
            inode.meta_known = record.meta_dirty || record.base.is_none() || kind != NodeKind::File;
            inode.content = content;
            inode.data_version = record.data_dirty as u64;
            inode.meta_version = record.meta_dirty as u64;
        }
        tree.set_stored(ino, stored);
        tree.mark_dirty(ino);
        tree.note_persisted(ino, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_ns(to_ns(t)), t);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_ns(to_ns(before)), before);
    }
}
