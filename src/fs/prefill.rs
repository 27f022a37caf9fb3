//! Directories learned from the poll: the reconciler lists the whole prefix anyway,
//! so a directory nobody has listed yet is filled from that listing and its first
//! `ls -l` needs no LIST. The metadata a listing cannot carry is looked up on first
//! use, as if it had been listed then: waited for in a small directory (exact modes
//! at once), in the background for --metadata-fill entries of a large one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::store::{Listing, ObjectSummary};

use super::remote::ListedObjects;
use super::tree::Tree;
use super::Fs;

/// The poll's listing fills directories only up to this many keys (memory).
const PREFILL_MAX_KEYS: usize = 100_000;

/// Per directory prefix: its objects and its subdirectory prefixes.
type ByDir = HashMap<String, (Vec<ObjectSummary>, BTreeSet<String>)>;

impl Fs {
    /// Fills unlisted directories from a listing of the whole prefix that started at
    /// `epoch`.
    pub(super) fn prefill_unlisted(&self, tree: &mut Tree, objects: &ListedObjects, epoch: u64) {
        if objects.len() > PREFILL_MAX_KEYS {
            return;
        }
        let mut queue: VecDeque<u64> = tree
            .inodes
            .iter()
            .filter(|(_, i)| i.is_dir() && !i.listed && !i.unlinked)
            .map(|(&ino, _)| ino)
            .collect();
        if queue.is_empty() {
            return;
        }
        let by_dir = self.group_by_dir(tree, objects, epoch);
        while let Some(dir) = queue.pop_front() {
            let Some(path) = tree.path(dir) else { continue };
            let prefix = self.config.prefix.dir_prefix(&path);
            let Some((objects, prefixes)) = by_dir.get(&prefix) else {
                continue; // no key under it: an empty marker, listed on first use
            };
            let listing = Listing {
                objects: objects.clone(),
                prefixes: prefixes.iter().cloned().collect(),
            };
            let unknown = self.merge_listing(tree, dir, &prefix, &listing);
            let Some(inode) = tree.get_mut(dir) else {
                continue;
            };
            inode.listed = true;
            inode.fill_on_read = self.select_fill(unknown);
            let subdirs = inode.children.iter().flat_map(|c| c.values().copied());
            let subdirs: Vec<u64> = subdirs.collect();
            queue.extend(
                subdirs
                    .into_iter()
                    .filter(|&c| tree.get(c).is_some_and(|i| i.is_dir() && !i.listed)),
            );
        }
    }

    /// Sorts the listing into directories, leaving out keys this mount wrote or
    /// deleted since the listing started (it may not show that work yet).
    fn group_by_dir(&self, tree: &Tree, objects: &ListedObjects, epoch: u64) -> ByDir {
        let root = self.config.prefix.as_str();
        let mut by_dir = ByDir::new();
        for object in objects.iter() {
            let key = object.key.as_str();
            if tree.own_work_on(key, epoch) {
                continue;
            }
            let Some(rest) = key.strip_prefix(root) else {
                continue;
            };
            let mut start = 0;
            loop {
                let dir = format!("{root}{}", &rest[..start]);
                match rest[start..].find('/') {
                    None => {
                        by_dir.entry(dir).or_default().0.push(object.clone());
                        break;
                    }
                    Some(i) => {
                        let sub = format!("{root}{}", &rest[..start + i + 1]);
                        by_dir.entry(dir).or_default().1.insert(sub);
                        start += i + 1;
                    }
                }
            }
        }
        by_dir
    }

    /// The metadata lookups a filled directory was owed, on its first use.
    pub(super) fn fill_on_first_use(self: &std::sync::Arc<Self>, dir: u64) {
        let _one_listing = self.listing.lock();
        self.fill_owed(dir);
    }

    /// The same, with the listing lock held. The lookups stay owed until they are done,
    /// so a concurrent first use waits for them (on the listing lock) instead of
    /// answering with default modes.
    pub(super) fn fill_owed(self: &std::sync::Arc<Self>, dir: u64) {
        if self.offline() {
            return; // still owed: the entries show as listed until the bucket is back
        }
        // Taken, not copied: lookups that fail are owed again meanwhile (the caller's
        // listing lock keeps a concurrent first use waiting until these are done).
        let owed = self
            .tree
            .lock()
            .get_mut(dir)
            .map(|i| std::mem::take(&mut i.fill_on_read));
        let Some(owed) = owed.filter(|f| !f.entries.is_empty()) else {
            return;
        };
        self.fill_metadata(owed);
    }
}
