//! When the bucket changed under a file this mount also changed: both versions stay.
//! The bucket's version keeps the name; the local one moves beside it as
//! `NAME.conflict-HOST-UTCSTAMP.EXT` and is uploaded there.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use crate::store::ObjectInfo;

use super::conflict_budget::PER_WINDOW;
use super::conflict_name::{conflict_name, free_name, original_name};
use super::tree::{same_etag, NodeKind, Stored, Tree};
use super::Fs;

/// What the kernel must forget after the namespace changed behind its back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChange {
    /// Attributes and cached pages of this inode.
    Inode(u64),
    /// Attributes of this inode only (its data is unchanged).
    Attrs(u64),
    /// The name `name` in directory `parent` (it now means another inode, or none).
    Entry(u64, String),
}

/// Tells the kernel to drop cached entries, attributes and pages (FUSE notify).
pub trait KernelCache: Send + Sync {
    fn invalidate(&self, change: &KernelChange);
}

/// The object as the bucket holds it now, from a HEAD or a listing.
#[derive(Debug, Clone)]
pub struct RemoteVersion {
    pub key: String,
    pub info: ObjectInfo,
    /// Whether `info.metadata` is known (a HEAD) or not (a listing).
    pub metadata_known: bool,
}

impl Fs {
    /// Sends invalidations to the kernel; never called with the tree locked (the
    /// kernel may call back into the filesystem).
    pub(super) fn tell_kernel(&self, changes: Vec<KernelChange>) {
        if let Some(kernel) = self.kernel.get() {
            for change in &changes {
                kernel.invalidate(change);
            }
        }
    }

    /// The upload of `ino` to `key` found another version there (`remote`), or none.
    pub(super) fn resolve_conflict(
        &self,
        tree: &mut Tree,
        ino: u64,
        key: &str,
        remote: Option<ObjectInfo>,
    ) -> Vec<KernelChange> {
        let remote = remote.map(|info| RemoteVersion {
            key: key.to_string(),
            info,
            metadata_known: true,
        });
        self.keep_both(tree, ino, key, remote)
    }

    /// Local changes of `ino` meet a remote change at its key. Remote deleted: the local
    /// file is uploaded again. Remote changed: the local data moves to a conflict name
    /// and a new inode shows the bucket's version under the old one.
    pub(super) fn keep_both(
        &self,
        tree: &mut Tree,
        ino: u64,
        key: &str,
        remote: Option<RemoteVersion>,
    ) -> Vec<KernelChange> {
        let Some(inode) = tree.get(ino) else {
            return Vec::new();
        };
        if inode.unlinked || tree.path(ino).is_none() {
            return Vec::new(); // removed here meanwhile: its delete is versioned
        }
        let (parent, name, kind) = (inode.parent, inode.name.clone(), inode.attr.kind);
        let data_changed = inode
            .stored
            .as_ref()
            .is_none_or(|s| s.data_version != inode.data_version);
        // Whether the object this inode was based on is the one replaced or deleted
        // (otherwise its base is elsewhere, e.g. the old key of a rename, and stays).
        let base_lost = inode.stored.as_ref().is_some_and(|s| s.key == key);
        let complete = inode
            .content
            .as_ref()
            .is_some_and(|c| c.is_complete(inode.attr.size));
        let no_writers = inode.open_writers == 0;
        if remote.is_none()
            && !data_changed
            && base_lost
            && kind == NodeKind::File
            && !complete
            && no_writers
        {
            // Only attributes changed here, and the data is not all here: uploading
            // would put zeros where it was never fetched. The delete wins.
            tracing::warn!(%key, "deleted in the bucket; only its attributes had changed here");
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
            let changes = self.forget_deleted(tree, ino);
            self.persist(tree, ino);
            return changes;
        }
        let Some(remote) = remote else {
            tracing::warn!(%key, "deleted in the bucket while changed here: uploading it again");
            if base_lost {
                tree.set_stored(ino, None);
            }
            tree.mark_dirty(ino);
            self.persist(tree, ino);
            self.wake.now();
            return Vec::new();
        };
        if !data_changed && base_lost && kind == NodeKind::File {
            // Only attributes changed here: take the bucket's data, keep our attributes.
            return self.adopt_remote_data(tree, ino, &remote);
        }
        if !self.conflict_allowed(tree, ino, &remote.key) {
            return Vec::new();
        }
        let conflict_name = free_name(tree, parent, &conflict_name(&name, SystemTime::now()));
        tracing::warn!(
            key = %remote.key,
            copy = %conflict_name,
            "conflict: the bucket's version keeps the name, the local one is kept beside it"
        );
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        tree.detach(ino);
        if let Some(inode) = tree.get_mut(ino) {
            inode.name = conflict_name.clone();
        }
        if let Some(children) = tree.get_mut(parent).and_then(|p| p.children.as_mut()) {
            children.insert(conflict_name.clone(), ino);
        }
        if base_lost {
            tree.set_stored(ino, None);
        }
        tree.mark_dirty(ino);
        self.persist(tree, ino);
        self.insert_remote(tree, parent, &name, &remote);
        self.wake.now();
        vec![
            KernelChange::Entry(parent, name),
            KernelChange::Entry(parent, conflict_name),
        ]
    }

    /// Whether the file at `key` may make one more conflict copy; if not, its upload
    /// is held (its data stays here, dirty) until it may.
    fn conflict_allowed(&self, tree: &mut Tree, ino: u64, key: &str) -> bool {
        let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (d, n));
        let file = format!("{dir}/{}", original_name(name));
        let now = Instant::now();
        if tree.conflict_budget.allow(&file, now) {
            return true;
        }
        let until = tree.conflict_budget.free_at(&file, now);
        tracing::error!(
            %key,
            copies = PER_WINDOW,
            hold_secs = until.duration_since(now).as_secs(),
            "conflict: this file already made its conflict copies for the hour; its upload is held and its data stays in the cache (see `s3syncfs status`)"
        );
        tree.conflict_budget.hold(ino, key, until);
        false
    }

    /// The version `ino` was based on is no longer in the bucket, which holds `remote`
    /// at its key instead (or nothing). With data of its own here (changes, or every
    /// byte), the file goes up from the cache as a conflict, with zeros where bytes were
    /// never fetched; with nothing of its own, it goes.
    pub(super) fn resolve_lost_base(
        &self,
        tree: &mut Tree,
        ino: u64,
        job: &super::plan::Job,
        remote: Option<ObjectInfo>,
    ) -> Vec<KernelChange> {
        let (Some(inode), Some((base_key, base_etag))) = (tree.get(ino), job.base()) else {
            return Vec::new();
        };
        let Some(base) = inode.stored.clone() else {
            return Vec::new();
        };
        if base.key != base_key || (!base_etag.is_empty() && !same_etag(&base.etag, base_etag)) {
            return Vec::new(); // a new base was taken meanwhile: planned again
        }
        let data_changed = base.data_version != inode.data_version;
        let all_here = inode.all_here();
        if !data_changed && !all_here && inode.open_writers == 0 {
            // Nothing of its own here, only part of a version that is gone: the rename
            // that made it dirty is dropped, and the old name keeps what is there now.
            let now = if remote.is_some() {
                "replaced"
            } else {
                "deleted"
            };
            tracing::warn!(key = %job.key, base = %base.key, "the version renamed here was {now} at its old name before the rename went up: the rename is dropped");
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
            let changes = self.forget_deleted(tree, ino);
            self.persist(tree, ino);
            return changes;
        }
        if all_here {
            tracing::warn!(key = %job.key, base = %base.key, "conflict: the version this file was based on was replaced in the bucket; it goes up from the cache");
        } else {
            tracing::warn!(key = %job.key, base = %base.key, "conflict: the version this file was based on was replaced in the bucket; the bytes never fetched here are lost (zeros)");
        }
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        tree.set_stored(ino, None);
        tree.mark_dirty(ino);
        self.persist(tree, ino);
        self.wake.now();
        Vec::new()
    }

    /// A new clean inode at `name` for the bucket's object.
    pub(super) fn insert_remote(
        &self,
        tree: &mut Tree,
        parent: u64,
        name: &str,
        remote: &RemoteVersion,
    ) -> u64 {
        let info = &remote.info;
        let mut attr = self.default_attr(NodeKind::File, info.size, info.last_modified);
        if remote.metadata_known {
            self.attrs_from_object(&mut attr, &remote.key, info, false);
        }
        let new = tree.insert(parent, name, attr, false);
        tree.set_stored(
            new,
            Some(Stored {
                key: remote.key.clone(),
                etag: info.etag.clone(),
                size: info.size,
                data_version: 0,
                meta_version: 0,
            }),
        );
        if let Some(inode) = tree.get_mut(new) {
            inode.meta_known = remote.metadata_known;
        }
        new
    }

    /// The bucket holds new data for `ino`, which has no data changes of its own: the
    /// cached bytes go and the new object is the base from now on.
    pub(super) fn adopt_remote_data(
        &self,
        tree: &mut Tree,
        ino: u64,
        remote: &RemoteVersion,
    ) -> Vec<KernelChange> {
        let Some(inode) = tree.get_mut(ino) else {
            return Vec::new();
        };
        if let Some(content) = &inode.content {
            if !content.discard(remote.info.size) {
                return Vec::new(); // being read or written right now: next time
            }
        }
        let meta_version = match &inode.stored {
            // Attribute changes of our own still go up (as a copy onto the new version).
            Some(s) if s.meta_version != inode.meta_version => s.meta_version,
            _ => inode.meta_version,
        };
        let own_meta = meta_version != inode.meta_version;
        inode.attr.size = remote.info.size;
        inode.symlink_target = None;
        if !own_meta {
            inode.attr.mtime = remote.info.last_modified;
            inode.attr.ctime = remote.info.last_modified;
            inode.meta_known = false; // mode, owner and mtime come with the next HEAD
        }
        let data_version = inode.data_version;
        tree.set_stored(
            ino,
            Some(Stored {
                key: remote.key.clone(),
                etag: remote.info.etag.clone(),
                size: remote.info.size,
                data_version,
                meta_version,
            }),
        );
        if !own_meta {
            tree.clear_dirty(ino);
            tree.urgent.remove(&ino);
        }
        self.persist(tree, ino);
        tracing::info!(key = %remote.key, "changed in the bucket: new version taken");
        vec![KernelChange::Inode(ino)]
    }
}
