//! An object whose metadata gives it another type than its inode has (a symlink that
//! a listing showed as a file until its HEAD came) gets a new inode: the kernel marks
//! an inode bad, and fails every later call on it with EIO, when a getattr reports a
//! new type under the same number.

use crate::store::ObjectInfo;

use super::conflict::{KernelChange, RemoteVersion};
use super::remote::HeadChecked;
use super::tree::Tree;
use super::Fs;

impl Fs {
    /// Whether `info` (the object of `ino` at `key`) is of another type than `ino`.
    /// If so the caller must not apply its attributes to `ino`: the name gets a new
    /// inode of the object's type instead, unless the file is changed or open here
    /// (then it keeps what this mount made of it until that is over).
    pub(super) fn retyped(&self, tree: &mut Tree, ino: u64, key: &str, info: &ObjectInfo) -> bool {
        let Some(inode) = tree.get(ino) else {
            return false;
        };
        if inode.is_dir() {
            return false;
        }
        let mut from_bucket = inode.attr;
        self.attrs_from_object(&mut from_bucket, key, info, false);
        if from_bucket.kind == inode.attr.kind {
            return false;
        }
        let busy = inode.data_version != 0
            || inode.meta_version != 0
            || inode.open_handles > 0
            || inode.unlinked
            || tree.dirty().contains_key(&ino);
        if busy {
            return true;
        }
        let (parent, name) = (inode.parent, inode.name.clone());
        tracing::debug!(%key, kind = ?from_bucket.kind, "the object's type is known now: a new inode");
        // The old inode stays (unlinked, its old type) until its last close and the
        // kernel's FORGET: the kernel may still ask for its attributes before the
        // invalidation lands, and an answer of another type, or none, would fail that
        // call (ENOENT right after a close).
        tree.detach(ino);
        if let Some(old) = tree.get_mut(ino) {
            old.unlinked = true;
            old.retyped = true;
        }
        let remote = RemoteVersion {
            key: key.to_string(),
            info: info.clone(),
            metadata_known: true,
        };
        self.insert_remote(tree, parent, &name, &remote);
        // Not from inside the caller's request: the kernel may hold the directory.
        self.tell_kernel_later(vec![KernelChange::Entry(parent, name)]);
        true
    }
}

impl Fs {
    /// Before a rename moves a file whose metadata this mount never saw (listed, its
    /// HEAD not made or failed): one HEAD, bounded and not while offline, so that the
    /// name shows its type and mode and the renamed object keeps them. If it fails the
    /// copy still takes the source's metadata (see `JobKind::Copy`).
    pub(super) fn learn_before_move(self: &std::sync::Arc<Self>, parent: u64, name: &str) {
        let (ino, key) = {
            let tree = self.tree.lock();
            let Some(ino) = tree.child(parent, name) else {
                return;
            };
            let Some(inode) = tree.get(ino) else {
                return;
            };
            if inode.is_dir() || inode.meta_known || inode.meta_version != 0 {
                return;
            }
            let Some(stored) = &inode.stored else {
                return;
            };
            (ino, stored.key.clone())
        };
        let head = self.block_on(&format!("HEAD {key}"), self.store.head_checked(&key));
        if let Ok(Some(info)) = head {
            self.apply_head(ino, &key, &info);
        }
    }
}

impl Fs {
    /// The kernel was given `ino` in an entry (lookup, create, readdirplus): it holds
    /// one lookup more, until a FORGET.
    pub fn kernel_looked_up(&self, ino: u64) {
        if let Some(inode) = self.tree.lock().get_mut(ino) {
            inode.kernel_lookups += 1;
        }
    }

    /// FORGET: the kernel dropped `count` lookups of `ino`. A retyped name's old inode
    /// goes once the kernel holds none and no handle is open.
    pub fn kernel_forgot(&self, ino: u64, count: u64) {
        let mut tree = self.tree.lock();
        if let Some(inode) = tree.get_mut(ino) {
            inode.kernel_lookups = inode.kernel_lookups.saturating_sub(count);
        }
        tree.forget_if_unused(ino);
    }
}
