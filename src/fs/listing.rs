//! Merging the bucket's listing of a directory into the namespace (LIST only), and
//! the HEADs for the metadata a listing cannot carry: waited for in a small listing,
//! in the background for --metadata-fill entries of a large one.

use std::sync::Arc;
use std::time::SystemTime;

use crate::mapping::{attrs_from_metadata, classify_child, ChildKey};
use crate::store::{ObjectInfo, ObjectSummary, StoreError};

use super::tree::{Attr, NodeKind, Stored, Tree};
use super::{Fs, FsError, FsResult};

/// Concurrent HEADs of one background fill.
const FILL_PARALLEL: usize = 8;

/// The unknown entries of one listing that get a HEAD, and whether the listing waits
/// for them.
#[derive(Debug, Default)]
pub struct Fill {
    pub entries: Vec<(u64, String)>,
    pub wait: bool,
}

impl Fs {
    /// Makes sure the bucket's entries of directory `ino` are in the namespace.
    pub(super) fn ensure_listed(self: &Arc<Self>, ino: u64) -> FsResult<()> {
        let prefix = {
            let tree = self.tree.lock();
            let inode = tree.get(ino).ok_or(FsError::NotFound)?;
            if !inode.is_dir() {
                return Err(FsError::NotDir);
            }
            if inode.listed {
                let owed = !inode.fill_on_read.entries.is_empty();
                drop(tree);
                if owed {
                    self.fill_on_first_use(ino);
                }
                return Ok(());
            }
            match tree.path(ino) {
                Some(path) => self.config.prefix.dir_prefix(&path),
                None => return Ok(()), // removed meanwhile: nothing to merge
            }
        };
        let _one_listing = self.listing.lock();
        let started = {
            let mut tree = self.tree.lock();
            match tree.get(ino) {
                None => return Ok(()),
                // Listed meanwhile (by the poll, say): its owed lookups are done now.
                Some(inode) if inode.listed => {
                    drop(tree);
                    self.fill_owed(ino);
                    return Ok(());
                }
                Some(_) => {}
            }
            tree.deleted_during_listing = Some(Default::default());
            tree.epoch += 1;
            tree.epoch
        };
        let listing = self.block_on(
            &format!("LIST {prefix}"),
            self.store.list(&prefix, Some("/")),
        );
        let to_fill = {
            let mut tree = self.tree.lock();
            let deleted = tree.deleted_during_listing.take().unwrap_or_default();
            let mut listing = listing?;
            listing.objects.retain(|o| !deleted.contains(&o.key));
            let to_fill = self.merge_listing(&mut tree, ino, &prefix, &listing);
            if let Some(dir) = tree.get_mut(ino) {
                dir.listed = true;
                dir.listed_at = started;
            }
            to_fill
        };
        self.fill_metadata(self.select_fill(to_fill));
        // The poll may have filled the directory while this LIST was out: its entries
        // are in, but their lookups are owed.
        self.fill_owed(ino);
        Ok(())
    }

    /// Adds what the listing shows and the namespace lacks; returns inodes whose
    /// metadata is unknown, with the key to HEAD for it.
    pub(super) fn merge_listing(
        &self,
        tree: &mut Tree,
        dir: u64,
        prefix: &str,
        listing: &crate::store::Listing,
    ) -> Vec<(u64, String)> {
        let mut unknown = Vec::new();
        // Directories first: where `a` and `a/` both exist, the directory wins.
        for common in &listing.prefixes {
            if tree.pending_deletes.contains_key(common) {
                continue; // removed or renamed here; its keys are still being deleted
            }
            match classify_child(prefix, common) {
                ChildKey::Dir(name) if tree.child(dir, name).is_none() => {
                    let attr = self.default_attr(NodeKind::Dir, 0, SystemTime::now());
                    let ino = tree.insert(dir, name, attr, true);
                    unknown.push((ino, common.clone()));
                }
                ChildKey::Unusable(why) => self.log_skipped(common, why),
                _ => {}
            }
        }
        for object in &listing.objects {
            if tree.is_being_deleted(&object.key, &object.etag) {
                continue;
            }
            if super::reserved::is_own_probe(self.config.prefix.as_str(), &object.key) {
                continue; // a probe left behind is removed by the next probe
            }
            match classify_child(prefix, &object.key) {
                ChildKey::SelfMarker => {}
                ChildKey::File(name) => match tree.child(dir, name) {
                    None => {
                        let ino = self.insert_remote_file(tree, dir, name, object);
                        unknown.push((ino, object.key.clone()));
                    }
                    Some(existing) if tree.get(existing).is_some_and(|i| i.is_dir()) => {
                        self.log_skipped(&object.key, "a directory of the same name exists");
                    }
                    Some(_) => {}
                },
                ChildKey::Dir(_) => {}
                ChildKey::Unusable(why) => self.log_skipped(&object.key, why),
            }
        }
        unknown
    }

    fn insert_remote_file(
        &self,
        tree: &mut Tree,
        dir: u64,
        name: &str,
        object: &ObjectSummary,
    ) -> u64 {
        let attr = self.default_attr(NodeKind::File, object.size, object.last_modified);
        let ino = tree.insert(dir, name, attr, false);
        let stored = Stored {
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: object.size,
            data_version: 0,
            meta_version: 0,
        };
        tree.set_stored(ino, Some(stored));
        ino
    }

    pub(super) fn default_attr(&self, kind: NodeKind, size: u64, mtime: SystemTime) -> Attr {
        let d = &self.config.defaults;
        let perm = match kind {
            NodeKind::Dir => d.dir_mode,
            NodeKind::Symlink => 0o777,
            _ => d.file_mode,
        };
        Attr {
            ino: 0,
            kind,
            size,
            perm: perm & 0o7777,
            uid: d.uid,
            gid: d.gid,
            atime: mtime,
            mtime,
            ctime: mtime,
            nlink: 1,
            rdev: 0,
        }
    }

    /// A few unknown entries are waited for, so the first `ls -l` is exact; many stay as
    /// the LIST showed them (a HEAD each is the s3fs cost) but for the first
    /// --metadata-fill, fetched in the background.
    pub(super) fn select_fill(&self, mut unknown: Vec<(u64, String)>) -> Fill {
        let wait = unknown.len() <= self.config.metadata_wait;
        if !wait {
            unknown.truncate(self.config.metadata_fill);
        }
        Fill {
            entries: unknown,
            wait,
        }
    }

    /// Looks up the metadata of listed entries, a few at a time. A listing that waits
    /// for them waits at most the request timeout, and not at all while the bucket is
    /// known offline; lookups not done by then go on in the background.
    pub(super) fn fill_metadata(self: &Arc<Self>, fill: Fill) {
        if fill.entries.is_empty() {
            return;
        }
        let work = self.runtime.spawn(self.clone().fill(fill.entries));
        if fill.wait && !self.offline() {
            let timeout = self.config.request_timeout;
            let _ = self
                .runtime
                .block_on(async move { tokio::time::timeout(timeout, work).await });
        }
    }

    async fn fill(self: Arc<Self>, entries: Vec<(u64, String)>) {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(FILL_PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        for (ino, key) in entries {
            let (fs, semaphore) = (self.clone(), semaphore.clone());
            tasks.spawn(async move {
                let Ok(_permit) = semaphore.acquire().await else {
                    return;
                };
                let timeout = fs.config.request_timeout;
                let heard = fs.store.stats().answers();
                let head = tokio::time::timeout(timeout, fs.store.head(&key)).await;
                if head.is_err() {
                    fs.no_answer(&format!("HEAD {key}"), heard);
                }
                match head {
                    Ok(Ok(info)) => fs.apply_head(ino, &key, &info),
                    // No marker: an implicit directory keeps the defaults.
                    Ok(Err(StoreError::NotFound(_))) if key.ends_with('/') => {
                        if let Some(inode) = fs.tree.lock().get_mut(ino) {
                            inode.meta_known = true;
                        }
                    }
                    // Gone (the poll will say so), or refused (asking again won't help).
                    Ok(Err(StoreError::NotFound(_) | StoreError::AccessDenied(_))) => {}
                    // A timeout or a transient failure: owed again, so the directory's
                    // next use asks again instead of showing defaults (a symlink as a
                    // file) for good.
                    _ => fs.owe_fill(ino, key),
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Puts a metadata lookup back among those its directory owes.
    fn owe_fill(&self, ino: u64, key: String) {
        let mut tree = self.tree.lock();
        let Some(parent) = tree.get(ino).filter(|i| !i.meta_known).map(|i| i.parent) else {
            return;
        };
        let wait_for = self.config.metadata_wait;
        if let Some(dir) = tree.get_mut(parent) {
            let owed = &mut dir.fill_on_read;
            if !owed.entries.iter().any(|(i, _)| *i == ino) {
                owed.entries.push((ino, key));
            }
            owed.wait = owed.entries.len() <= wait_for;
        }
    }

    /// Applies a HEAD's metadata to an inode nobody changed locally since it was listed.
    pub(super) fn apply_head(&self, ino: u64, key: &str, info: &ObjectInfo) {
        let mut tree = self.tree.lock();
        let Some(inode) = tree.get(ino) else { return };
        let untouched = inode.data_version == 0 && inode.meta_version == 0 && !inode.unlinked;
        // Some servers list no ETags: an unknown version is taken as this one.
        let same_version = inode
            .stored
            .as_ref()
            .is_none_or(|s| s.etag.is_empty() || super::tree::same_etag(&s.etag, &info.etag));
        let is_dir = inode.is_dir();
        if !untouched || !same_version || self.retyped(&mut tree, ino, key, info) {
            return;
        }
        let new_stored = Stored {
            key: key.to_string(),
            etag: info.etag.clone(),
            size: info.size,
            data_version: 0,
            meta_version: 0,
        };
        let Some(inode) = tree.get_mut(ino) else {
            return;
        };
        self.attrs_from_object(&mut inode.attr, key, info, is_dir);
        if !is_dir {
            inode.attr.size = info.size;
        }
        inode.meta_known = true;
        tree.set_stored(ino, Some(new_stored));
    }

    /// Sets the attributes an object's metadata carries (s3fs headers, else the mount's
    /// defaults): symlink type, mode, owner, mtime. Values another client left that
    /// cannot be used are logged once per key.
    pub(super) fn attrs_from_object(
        &self,
        attr: &mut Attr,
        key: &str,
        info: &ObjectInfo,
        is_dir: bool,
    ) {
        let read = attrs_from_metadata(
            &info.metadata,
            &self.config.defaults,
            is_dir,
            info.last_modified,
        );
        if !read.rejected.is_empty() && self.metadata_warned.lock().insert(key.to_string()) {
            let values: Vec<String> = read
                .rejected
                .iter()
                .map(|r| format!("{}={}", r.name, r.value))
                .collect();
            tracing::warn!(
                key = %key.escape_debug(),
                "unusable metadata ({}): the defaults are shown instead",
                values.join(", ")
            );
        }
        let stored = read.attrs;
        if !is_dir {
            // The parser left only the types a non-directory object can have.
            attr.kind = match NodeKind::from_mode(stored.mode) {
                Some(NodeKind::Dir) | None => NodeKind::File,
                Some(kind) => kind,
            };
        }
        attr.rdev = stored.rdev;
        attr.perm = stored.mode & 0o7777;
        attr.uid = stored.uid;
        attr.gid = stored.gid;
        attr.mtime = stored.mtime;
        attr.ctime = stored.mtime;
    }

    /// Lists every directory under `ino` so a rename can move the whole subtree.
    pub(super) fn ensure_subtree_listed(self: &Arc<Self>, ino: u64) -> FsResult<()> {
        let mut stack = vec![ino];
        while let Some(dir) = stack.pop() {
            self.ensure_listed(dir)?;
            let tree = self.tree.lock();
            if let Some(children) = tree.get(dir).and_then(|i| i.children.as_ref()) {
                stack.extend(
                    children
                        .values()
                        .filter(|&&c| tree.get(c).is_some_and(|i| i.is_dir())),
                );
            }
        }
        Ok(())
    }
}

impl Fs {
    /// Keys that cannot be shown are logged once each (listings repeat every poll).
    fn log_skipped(&self, key: &str, why: &str) {
        if self.skipped_logged.lock().insert(key.to_string()) {
            tracing::warn!(key = %key.escape_debug(), "object not shown in the mount: {why}");
        }
    }
}
