//! Bringing in what other clients changed in the bucket: a full listing applied to
//! the namespace (the reconciler's poll); the HEAD at open is in `revalidate.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::store::{Listing, ObjectInfo, ObjectSummary, StoreError};

use super::conflict::{KernelChange, RemoteVersion};
use super::reserved::is_own_probe;
use super::tree::{same_etag, Attr, Tree, ROOT};
use super::Fs;

fn summary_version(key: &str, object: &ObjectSummary) -> RemoteVersion {
    RemoteVersion {
        key: key.to_string(),
        info: ObjectInfo {
            size: object.size,
            etag: object.etag.clone(),
            last_modified: object.last_modified,
            metadata: Default::default(),
        },
        metadata_known: false,
    }
}

impl Fs {
    /// A listing or HEAD that starts now: its epoch, kept in mind until it ends.
    pub fn begin_reading(&self) -> Reading<'_> {
        let epoch = self.tree.lock().begin_reading();
        Reading {
            tree: &self.tree,
            epoch,
        }
    }

    /// Applies a poll's listing (of the whole mounted prefix, or of the directories
    /// `scope` names), started at `epoch`: new objects appear in directories already
    /// listed, changed ones get their new version, deleted ones go. Local changes
    /// meeting remote ones keep both.
    pub fn reconcile(self: &Arc<Self>, listing: Listing, epoch: u64, scope: &PollScope) {
        // What needs no namespace is worked out before the lock: every request of the
        // mount waits while it is held.
        let objects = ListedObjects::new(self.config.prefix.as_str(), listing);
        let prefixes = key_prefixes(&objects);
        let (changes, to_fill) = {
            let mut tree = self.tree.lock();
            // Passthrough writes so far count as local changes in what follows.
            self.notice_all_direct_writes(&mut tree);
            let state = tree.state.clone();
            let _atomic = state.batch();
            let mut changes = self.apply_known(&mut tree, &objects, epoch, scope);
            let to_fill = self.merge_new(&mut tree, &objects, epoch, &mut changes);
            if matches!(scope, PollScope::All) {
                self.prefill_unlisted(&mut tree, &objects, epoch);
            }
            changes.extend(self.drop_vanished_dirs(&mut tree, &prefixes, epoch, scope));
            // Keys touched before this listing are described by it: no longer needed
            // (unless by a listing or HEAD that started before it).
            tree.prune_touched();
            self.last_poll.store(unix_now(), Ordering::Relaxed);
            (changes, to_fill)
        };
        self.tell_kernel(changes);
        // The poll waits for nobody: even a small directory's entries fill behind it.
        self.fill_metadata(super::listing::Fill {
            entries: to_fill,
            wait: false,
        });
    }

    /// Files whose bucket version this mount knows: unchanged, changed or deleted.
    fn apply_known(
        &self,
        tree: &mut Tree,
        objects: &ListedObjects,
        epoch: u64,
        scope: &PollScope,
    ) -> Vec<KernelChange> {
        let now = Instant::now();
        // Most are unchanged and only marked confirmed, in one pass that builds no key
        // from the namespace: every request of the mount waits while this runs. (Marks
        // on renamed files or files with our own work in flight are harmless: the
        // open-time check skips those.)
        let mut suspects = Vec::new();
        for (key, &ino) in &tree.stored_keys {
            let Some(inode) = tree.inodes.get_mut(&ino) else {
                continue;
            };
            if key.ends_with('/') || inode.unlinked || inode.is_dir() {
                continue;
            }
            let unchanged = match (objects.get(key), &inode.stored) {
                (Some(object), Some(stored)) if stored.key == *key => {
                    stored.etag.is_empty()
                        || object.etag.is_empty()
                        || same_etag(&stored.etag, &object.etag)
                }
                _ => false,
            };
            if unchanged {
                inode.checked = Some(now);
            } else if scope.covers(parent_prefix(key)) {
                suspects.push((key.clone(), ino));
            }
        }
        let mut changes = Vec::new();
        for (key, ino) in suspects {
            if tree.own_work_on(&key, epoch) {
                continue;
            }
            let Some(inode) = tree.get(ino) else { continue };
            // Its directory was listed after this listing started: that is newer news.
            if tree.listed_after(inode.parent, epoch) {
                continue;
            }
            // A renamed file's old key is only the source of its copy.
            if self.current_key(tree, ino).as_deref() != Some(key.as_str()) {
                continue;
            }
            let dirty = tree.dirty().contains_key(&ino);
            let base_etag = inode
                .stored
                .as_ref()
                .map(|s| s.etag.clone())
                .unwrap_or_default();
            match objects.get(&key) {
                Some(object)
                    if base_etag.is_empty()
                        || object.etag.is_empty()
                        || same_etag(&base_etag, &object.etag) =>
                {
                    if let Some(inode) = tree.get_mut(ino) {
                        inode.checked = Some(now);
                    }
                }
                Some(object) => {
                    let remote = summary_version(&key, object);
                    changes.extend(if dirty {
                        self.keep_both(tree, ino, &key, Some(remote))
                    } else {
                        self.adopt_remote_data(tree, ino, &remote)
                    });
                }
                None if dirty => changes.extend(self.keep_both(tree, ino, &key, None)),
                None => changes.extend(self.forget_deleted(tree, ino)),
            }
        }
        changes
    }

    /// A clean file deleted in the bucket leaves the namespace; open handles keep
    /// what they already read.
    pub(super) fn forget_deleted(&self, tree: &mut Tree, ino: u64) -> Vec<KernelChange> {
        let Some(inode) = tree.get(ino) else {
            return Vec::new();
        };
        let (parent, name) = (inode.parent, inode.name.clone());
        tracing::info!(%name, "deleted in the bucket: removed here");
        tree.detach(ino);
        if let Some(inode) = tree.get_mut(ino) {
            inode.unlinked = true;
        }
        tree.forget_if_unused(ino);
        vec![KernelChange::Entry(parent, name)]
    }

    /// New objects and prefixes under directories already listed. Their names are
    /// added to `changes`: the kernel may hold them as absent (negative lookups).
    fn merge_new(
        &self,
        tree: &mut Tree,
        objects: &ListedObjects,
        epoch: u64,
        changes: &mut Vec<KernelChange>,
    ) -> Vec<(u64, String)> {
        let mut listed: HashMap<String, u64> = HashMap::new();
        for (&ino, inode) in &tree.inodes {
            if inode.is_dir() && inode.listed && !inode.unlinked {
                if let Some(path) = tree.path(ino) {
                    listed.insert(self.config.prefix.dir_prefix(&path), ino);
                }
            }
        }
        let mut per_dir: HashMap<&str, (Vec<ObjectSummary>, BTreeSet<String>)> = HashMap::new();
        // Keys in order, so that the keys of one directory come together and what its
        // listed ancestors lack is worked out once for all of them: this runs under
        // the lock, for every key of the bucket, and most keys bring nothing new.
        let mut last_parent = None;
        let mut news_above: Vec<(&str, String)> = Vec::new();
        let mut parent_listed = None;
        for object in objects.iter() {
            let key = object.key.as_str();
            let parent = &key[..key.rfind('/').map_or(0, |i| i + 1)];
            if last_parent != Some(parent) {
                last_parent = Some(parent);
                news_above = subdirs_news(tree, &listed, parent, epoch);
                parent_listed = listed
                    .get_key_value(parent)
                    .filter(|&(_, &dir)| !tree.listed_after(dir, epoch));
            }
            // A file of that name takes nothing from the listing either.
            let name = &key[parent.len()..];
            // (A marker, `a/b/`, names no file: its directory is news above, if any.)
            let file_news = parent_listed.filter(|&(_, &dir)| {
                !name.is_empty()
                    && tree
                        .child(dir, name)
                        .is_none_or(|c| tree.get(c).is_none_or(|i| i.is_dir()))
            });
            if news_above.is_empty() && file_news.is_none() {
                continue;
            }
            // Known keys were handled above; our own recent work is not news.
            if tree.stored_keys.contains_key(key) || tree.own_work_on(key, epoch) {
                continue;
            }
            for (prefix, subdir) in &news_above {
                let entry = per_dir.entry(prefix).or_default();
                entry.1.insert(subdir.clone());
            }
            if let Some((prefix, _)) = file_news {
                per_dir.entry(prefix).or_default().0.push(object.clone());
            }
        }
        let mut to_fill = Vec::new();
        for (prefix, (objects, prefixes)) in per_dir {
            let Some(&dir) = listed.get(prefix) else {
                continue;
            };
            let listing = Listing {
                objects,
                prefixes: prefixes.into_iter().collect(),
            };
            let names = listing.objects.iter().map(|o| o.key.as_str());
            for key in names.chain(listing.prefixes.iter().map(String::as_str)) {
                let name = key[prefix.len()..].trim_end_matches('/');
                changes.push(KernelChange::Entry(dir, name.to_string()));
            }
            let unknown = self.merge_listing(tree, dir, prefix, &listing);
            to_fill.extend(self.select_fill(unknown).entries);
        }
        to_fill
    }

    /// Directories whose every key is gone from the bucket, with nothing local in them.
    fn drop_vanished_dirs(
        &self,
        tree: &mut Tree,
        present: &HashSet<&str>,
        epoch: u64,
        scope: &PollScope,
    ) -> Vec<KernelChange> {
        let mut dirs: Vec<(usize, u64, String)> = tree
            .inodes
            .iter()
            .filter(|(&ino, i)| ino != ROOT && i.is_dir() && !i.unlinked)
            .filter_map(|(&ino, _)| {
                let path = tree.path(ino)?;
                Some((path.len(), ino, self.config.prefix.dir_prefix(&path)))
            })
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0)); // deepest first
        let mut changes = Vec::new();
        for (_, ino, prefix) in dirs {
            let newer = tree.listed_after(ino, epoch)
                || tree
                    .get(ino)
                    .is_some_and(|i| tree.listed_after(i.parent, epoch));
            // A directory's presence is told by its parent's listing.
            let gone = !newer
                && scope.covers(parent_prefix(prefix.trim_end_matches('/')))
                && !present.contains(prefix.as_str())
                && !tree.dirty().contains_key(&ino)
                && !tree.own_work_on(&prefix, epoch)
                && !tree.pending_deletes.contains_key(&prefix)
                && !tree.deletes_pending_below(&prefix)
                && tree.get(ino).is_some_and(|i| {
                    i.children.as_ref().is_none_or(|c| c.is_empty()) && i.open_handles == 0
                });
            if gone {
                changes.extend(self.forget_deleted(tree, ino));
            }
        }
        changes
    }
}

impl Fs {
    /// The directories this mount has listed: each one's prefix and entry count.
    pub fn listed_dirs(&self) -> Vec<(String, usize)> {
        let tree = self.tree.lock();
        tree.inodes
            .iter()
            .filter(|(_, i)| i.is_dir() && i.listed && !i.unlinked)
            .filter_map(|(&ino, inode)| {
                let path = tree.path(ino)?;
                let entries = inode.children.as_ref().map_or(0, |c| c.len());
                Some((self.config.prefix.dir_prefix(&path), entries))
            })
            .collect()
    }

    /// Attributes from a HEAD of the version this inode holds, which has no local
    /// change pending. Another client may have changed its metadata alone (a chmod
    /// is a copy onto itself, of the same ETag): where what the bucket keeps differs,
    /// the bucket's wins. Whether the attributes changed.
    pub(super) fn apply_head_attrs(&self, tree: &mut Tree, ino: u64, info: &ObjectInfo) -> bool {
        let key = tree
            .get(ino)
            .and_then(|i| i.stored.as_ref())
            .map(|s| s.key.clone());
        if self.retyped(tree, ino, key.as_deref().unwrap_or(""), info) {
            return false;
        }
        let Some(inode) = tree.get_mut(ino) else {
            return false;
        };
        inode.checked = Some(Instant::now());
        let mut from_bucket = inode.attr;
        let key = inode.stored.as_ref().map_or("", |s| s.key.as_str());
        self.attrs_from_object(&mut from_bucket, key, info, inode.is_dir());
        from_bucket.size = info.size;
        if inode.meta_known && same_kept_attrs(&inode.attr, &from_bucket) {
            return false;
        }
        let before = inode.attr;
        inode.attr = from_bucket;
        inode.meta_known = true;
        inode.attr != before
    }

    /// Invalidations sent from another thread, for callers inside a FUSE request.
    pub(super) fn tell_kernel_later(&self, changes: Vec<KernelChange>) {
        if let Some(kernel) = self.kernel.get().cloned() {
            std::thread::spawn(move || {
                for change in &changes {
                    kernel.invalidate(change);
                }
            });
        }
    }
}

/// The listed directories strictly above `parent` (a directory prefix) that lack the
/// subdirectory leading to it, unless listed after `epoch`: each one's prefix and the
/// subdirectory's.
fn subdirs_news<'a>(
    tree: &Tree,
    listed: &'a HashMap<String, u64>,
    parent: &str,
    epoch: u64,
) -> Vec<(&'a str, String)> {
    let ends = std::iter::once(0).chain(parent.match_indices('/').map(|(i, _)| i + 1));
    ends.filter(|&end| end < parent.len())
        .filter_map(|end| {
            let (prefix, &dir) = listed.get_key_value(&parent[..end])?;
            if tree.listed_after(dir, epoch) {
                return None; // listed since: it knows better
            }
            let name = parent[end..].split('/').next()?;
            tree.child(dir, name)
                .is_none()
                .then(|| (prefix.as_str(), parent[..end + name.len() + 1].to_string()))
        })
        .collect()
}

/// What a poll listed: the whole mounted prefix, or only the directories this mount
/// has listed (their prefixes), each with a delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollScope {
    All,
    Dirs(HashSet<String>),
}

impl PollScope {
    /// Whether the poll listed the directory of prefix `dir`, so that it tells which
    /// keys and subdirectories are directly under it.
    fn covers(&self, dir: &str) -> bool {
        match self {
            PollScope::All => true,
            PollScope::Dirs(dirs) => dirs.contains(dir),
        }
    }
}

/// The prefix of the directory `key` is directly in (`a/b/` for `a/b/c`).
fn parent_prefix(key: &str) -> &str {
    &key[..key.rfind('/').map_or(0, |i| i + 1)]
}

/// A listing or HEAD under way since `epoch`: `touched` keeps what it needs until
/// this is dropped (never while the tree's lock is held by the same thread).
pub struct Reading<'a> {
    tree: &'a parking_lot::Mutex<Tree>,
    pub epoch: u64,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.tree.lock().end_reading(self.epoch);
    }
}

/// Whether two sets of attributes agree in what the bucket keeps of them: type, mode,
/// owner, size, and mtime to the second (s3fs's header), so that a local mtime's
/// nanoseconds survive a HEAD of our own upload.
fn same_kept_attrs(a: &Attr, b: &Attr) -> bool {
    // The header as written, so times before 1970 compare too (floored seconds).
    let secs = crate::mapping::format_mtime;
    (a.kind, a.perm, a.uid, a.gid, a.size, a.rdev) == (b.kind, b.perm, b.uid, b.gid, b.size, b.rdev)
        && secs(a.mtime) == secs(b.mtime)
}

/// A poll's listing sorted by key, without this mount's probes, found by binary
/// search: a poll of a large bucket builds no second index of its keys (the listing of
/// a million keys is some 90 MB by itself). Subdirectories of a listing made with a
/// delimiter become markers (`a/b/`), as a flat listing of the same keys implies them.
pub(super) struct ListedObjects(Vec<ObjectSummary>);

impl ListedObjects {
    fn new(prefix: &str, listing: Listing) -> ListedObjects {
        let mut objects = listing.objects;
        objects.extend(listing.prefixes.into_iter().map(|key| ObjectSummary {
            key,
            size: 0,
            etag: String::new(),
            last_modified: std::time::UNIX_EPOCH,
        }));
        objects.retain(|o| !is_own_probe(prefix, &o.key));
        // S3 lists in key order already: then the sort is one pass.
        objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        objects.dedup_by(|a, b| a.key == b.key);
        ListedObjects(objects)
    }

    pub(super) fn get(&self, key: &str) -> Option<&ObjectSummary> {
        let at = self.0.binary_search_by(|o| o.key.as_str().cmp(key)).ok()?;
        Some(&self.0[at])
    }

    /// In key order: the keys of one directory come together.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, ObjectSummary> {
        self.0.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Every directory prefix (`a/`, `a/b/`) some listed key lies under.
fn key_prefixes(objects: &ListedObjects) -> HashSet<&str> {
    let mut present = HashSet::new();
    for key in objects.iter().map(|o| o.key.as_str()) {
        for (i, _) in key.match_indices('/') {
            present.insert(&key[..=i]);
        }
    }
    present
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A HEAD where "no such object" is an answer, not an error.
#[async_trait::async_trait]
pub trait HeadChecked {
    async fn head_checked(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
}

#[async_trait::async_trait]
impl<T: crate::store::ObjectStore + ?Sized> HeadChecked for T {
    async fn head_checked(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self.head(key).await {
            Ok(info) => Ok(Some(info)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}
