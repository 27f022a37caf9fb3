//! How far the bucket is behind the mount: for `status`, `sync` and the uploader.

use std::collections::HashMap;

use super::plan::JobId;
use super::tree::{NodeKind, Tree};
use super::Fs;

/// Changes not yet in the bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub files: usize,
    /// Sizes of the changed files (an upload may send less: a rename is a copy).
    pub bytes: u64,
    pub deletes: usize,
}

/// What was pending when `sync` was called: the versions each change must reach.
#[derive(Debug, Clone, Default)]
pub struct SyncMark {
    inodes: HashMap<u64, (u64, u64, u64)>,
    deletes: Vec<String>,
}

impl SyncMark {
    pub fn total(&self) -> Pending {
        Pending {
            files: self.inodes.len(),
            bytes: self.inodes.values().map(|&(_, _, size)| size).sum(),
            deletes: self.deletes.len(),
        }
    }
}

fn file_bytes(tree: &Tree, ino: u64) -> u64 {
    tree.get(ino)
        .filter(|i| i.attr.kind == NodeKind::File)
        .map_or(0, |i| i.attr.size)
}

impl Fs {
    pub fn pending(&self) -> Pending {
        let tree = self.tree.lock();
        Pending {
            files: tree.dirty().len(),
            bytes: tree.dirty().keys().map(|&ino| file_bytes(&tree, ino)).sum(),
            // Objects our lost replies may have left are deletes owed too.
            deletes: tree.pending_deletes.len() + self.orphan_count(&tree),
        }
    }

    /// Keys whose upload is held after too many conflicts.
    pub fn held_after_conflicts(&self) -> Vec<String> {
        let tree = self.tree.lock();
        tree.conflict_budget.held_keys(std::time::Instant::now())
    }

    /// Whether the uploader still has a reason to run a job with this id.
    pub fn still_wanted(&self, id: &JobId) -> bool {
        let tree = self.tree.lock();
        match id {
            JobId::Inode(ino) => tree.get(*ino).is_some(),
            JobId::Delete(key) => {
                tree.pending_deletes.contains_key(key) || tree.attempts.any_at(key)
            }
        }
    }

    /// Everything pending now, to be waited for by `sync`.
    pub fn sync_mark(&self) -> SyncMark {
        let tree = self.tree.lock();
        SyncMark {
            inodes: tree
                .dirty()
                .keys()
                .filter_map(|&ino| {
                    let inode = tree.get(ino)?;
                    let size = file_bytes(&tree, ino);
                    Some((ino, (inode.data_version, inode.meta_version, size)))
                })
                .collect(),
            // A removed file's write still under way may land after all: the delete
            // that then follows is part of what this sync waits for.
            deletes: tree
                .pending_deletes
                .keys()
                .cloned()
                .chain(self.unowned_writes(&tree))
                .collect(),
        }
    }

    /// The part of `mark` not yet in the bucket. A file removed meanwhile counts as
    /// done: its delete, if owed, is a new change.
    pub fn sync_remaining(&self, mark: &SyncMark) -> Pending {
        let tree = self.tree.lock();
        let mut left = Pending::default();
        for (&ino, &(data_version, meta_version, size)) in &mark.inodes {
            let Some(inode) = tree.get(ino) else { continue };
            let uploaded = inode
                .stored
                .as_ref()
                .is_some_and(|s| s.data_version >= data_version && s.meta_version >= meta_version);
            if tree.dirty().contains_key(&ino) && !uploaded && !inode.unlinked {
                left.files += 1;
                left.bytes += size;
            }
        }
        left.deletes = mark
            .deletes
            .iter()
            .filter(|k| tree.pending_deletes.contains_key(*k) || self.unowned_write(&tree, k))
            .count();
        left
    }
}
