//! Namespace operations: lookup, readdir, create, mkdir, symlink, unlink, rmdir, rename.

use std::sync::Arc;
use std::time::SystemTime;

use crate::cache::RangeSet;

use super::direct::Attach;
use super::io::Opened;
use super::tree::{Attr, NodeKind, Tree};
use super::{check_name, Fs, FsError, FsResult};

/// The longest symlink target: PATH_MAX less its NUL. symlink(2) takes no more, and it
/// is all a FUSE readlink reply can carry (a page less one byte), so a longer target
/// from another client could never be handed to the kernel.
pub const SYMLINK_TARGET_MAX: usize = 4095;

/// The largest object taken as a symlink's body: the target of a symlink is read into
/// memory whole, and a "symlink" of gigabytes (a mode header on any object) must not.
const SYMLINK_BODY_MAX: u64 = 64 << 10;

/// Who asks, for the owner of what they create.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: NodeKind,
    pub name: String,
}

/// How a rename may treat an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    Replace,
    NoReplace,
}

impl Fs {
    /// Lists `dir` if it can be; when the bucket is unreachable, goes on with what the
    /// namespace holds (false) so local work continues offline.
    fn listed_or_offline(self: &Arc<Self>, dir: u64) -> FsResult<bool> {
        match self.ensure_listed(dir) {
            Ok(()) => Ok(true),
            Err(FsError::Io(why)) => {
                tracing::debug!(dir, %why, "working offline in an unlisted directory");
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    pub fn lookup(self: &Arc<Self>, parent: u64, name: &str) -> FsResult<Attr> {
        if name.len() > 255 {
            return Err(FsError::NameTooLong);
        }
        // Offline, a name the namespace does not hold reads as absent, so that files
        // can still be created; the bucket's entries merge in once it can be listed.
        self.listed_or_offline(parent)?;
        let mut tree = self.tree.lock();
        let ino = tree.child(parent, name).ok_or(FsError::NotFound)?;
        self.notice_direct_writes(&mut tree, ino);
        tree.attr_of(ino).ok_or(FsError::NotFound)
    }

    /// All entries of a directory, `.` and `..` first.
    pub fn readdir(self: &Arc<Self>, ino: u64) -> FsResult<Vec<DirEntry>> {
        Ok(self
            .readdir_plus(ino)?
            .into_iter()
            .map(|(entry, _)| entry)
            .collect())
    }

    /// All entries of a directory with their attributes (READDIRPLUS), `.` and `..` first.
    pub fn readdir_plus(self: &Arc<Self>, ino: u64) -> FsResult<Vec<(DirEntry, Attr)>> {
        // A directory never listed cannot be shown while the bucket is away: EIO (at
        // once while it is known offline), not a listing that silently lacks the
        // bucket's names.
        self.ensure_listed(ino)?;
        let mut tree = self.tree.lock();
        self.notice_all_direct_writes(&mut tree);
        let dir = tree.get(ino).ok_or(FsError::NotFound)?;
        let children = dir.children.as_ref().ok_or(FsError::NotDir)?;
        let dir_attr = tree.attr_of(ino).ok_or(FsError::NotFound)?;
        let parent_attr = tree.attr_of(dir.parent).unwrap_or(dir_attr);
        let mut entries = Vec::with_capacity(children.len() + 2);
        entries.push((
            DirEntry {
                ino,
                kind: NodeKind::Dir,
                name: ".".into(),
            },
            dir_attr,
        ));
        entries.push((
            DirEntry {
                ino: dir.parent,
                kind: NodeKind::Dir,
                name: "..".into(),
            },
            parent_attr,
        ));
        for (name, &child) in children {
            if let Some(attr) = tree.attr_of(child) {
                let entry = DirEntry {
                    ino: child,
                    kind: attr.kind,
                    name: name.clone(),
                };
                entries.push((entry, attr));
            }
        }
        Ok(entries)
    }

    /// Creates an empty file and opens it; returns its attributes and handle.
    pub fn create(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let (attr, opened) = self.create_with(parent, name, mode, caller, None)?;
        Ok((attr, opened.fh))
    }

    /// `create`; with `attach`, the handle's I/O goes straight to the cache file.
    pub fn create_with(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
        attach: Option<Attach>,
    ) -> FsResult<(Attr, Opened)> {
        let content = self.cache.create(0, RangeSet::full())?;
        // Open from the start (under the lock that inserts it): the uploader never
        // sees it closed before its RELEASE.
        let ino = self.add_node(parent, name, NodeKind::File, mode, caller, |inode| {
            inode.content = Some(content);
            inode.data_version = 1;
            inode.open_handles = 1;
            inode.open_writers = 1;
            inode.unflushed_writers = 1;
        })?;
        let (attr, direct) = {
            let mut tree = self.tree.lock();
            let attr = tree.attr_of(ino).ok_or(FsError::NotFound)?;
            let direct = self.try_direct(&mut tree, ino, true, 0, attach);
            (attr, direct)
        };
        let fh = self.new_handle(ino, true, direct.is_some(), true);
        Ok((attr, Opened { fh, direct }))
    }

    pub fn mkdir(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let ino = self.add_node(parent, name, NodeKind::Dir, mode, caller, |inode| {
            inode.listed = true;
            inode.meta_version = 1;
        })?;
        self.getattr(ino)
    }

    pub fn symlink(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.len() > SYMLINK_TARGET_MAX {
            return Err(FsError::NameTooLong);
        }
        let ino = self.add_node(parent, name, NodeKind::Symlink, 0o777, caller, |inode| {
            inode.symlink_target = Some(target.to_string());
            inode.attr.size = target.len() as u64;
            inode.data_version = 1;
        })?;
        self.getattr(ino)
    }

    /// Adds a new local node to `parent` and queues it for upload.
    pub(super) fn add_node(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        caller: Caller,
        init: impl FnOnce(&mut super::tree::Inode),
    ) -> FsResult<u64> {
        check_name(name)?;
        refuse_reserved(parent, name)?;
        self.listed_or_offline(parent)?;
        let mut tree = self.tree.lock();
        if tree.child(parent, name).is_some() {
            return Err(FsError::Exists);
        }
        let now = SystemTime::now();
        let attr = Attr {
            ino: 0,
            kind,
            size: 0,
            perm: mode & 0o7777,
            uid: caller.uid,
            gid: caller.gid,
            atime: now,
            mtime: now,
            ctime: now,
            nlink: 1,
            rdev: 0,
        };
        let ino = tree.insert(parent, name, attr, kind == NodeKind::Dir);
        let inode = tree.get_mut(ino).ok_or(FsError::NotFound)?;
        inode.meta_known = true;
        init(inode);
        tree.mark_dirty(ino);
        // Recorded now, with its cache file: the kernel sends no FLUSH for a created
        // file (FOPEN_NOFLUSH), so if the daemon dies before the RELEASE after close,
        // the restore takes the size from the cache file.
        self.persist(&mut tree, ino);
        touch_dir(&mut tree, parent, now);
        drop(tree);
        self.wake.changed();
        Ok(ino)
    }

    /// A symlink's target, as the kernel can take it: one of another client's that is
    /// too long for it is EIO (what the kernel would make of a reply it cannot take).
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let target = self.symlink_target(ino)?;
        if target.len() > SYMLINK_TARGET_MAX {
            let tree = self.tree.lock();
            let key = tree
                .get(ino)
                .and_then(|i| i.stored.as_ref())
                .map(|s| s.key.as_str());
            return Err(FsError::Io(format!(
                "symlink {}: its target is {} bytes, more than the kernel takes ({SYMLINK_TARGET_MAX})",
                key.unwrap_or_default().escape_debug(),
                target.len()
            )));
        }
        Ok(target)
    }

    /// A symlink's target: held here, or the body of its object (fetched once).
    pub(super) fn symlink_target(&self, ino: u64) -> FsResult<String> {
        let key = {
            let tree = self.tree.lock();
            let inode = tree.get(ino).ok_or(FsError::NotFound)?;
            if inode.attr.kind != NodeKind::Symlink {
                return Err(FsError::Invalid);
            }
            if let Some(target) = &inode.symlink_target {
                return Ok(target.clone());
            }
            let key = inode.stored.as_ref().ok_or(FsError::NotFound)?.key.clone();
            if inode.attr.size > SYMLINK_BODY_MAX {
                return Err(too_big_for_a_symlink(&key, inode.attr.size));
            }
            key
        };
        let body = self.block_on(&format!("GET {key}"), self.store.get(&key))?;
        if body.len() as u64 > SYMLINK_BODY_MAX {
            return Err(too_big_for_a_symlink(&key, body.len() as u64));
        }
        let target = String::from_utf8_lossy(&body).into_owned();
        if let Some(inode) = self.tree.lock().get_mut(ino) {
            inode.symlink_target = Some(target.clone());
        }
        Ok(target)
    }

    pub fn unlink(self: &Arc<Self>, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_listed(parent)?;
        let mut tree = self.tree.lock();
        let ino = tree.child(parent, name).ok_or(FsError::NotFound)?;
        if tree.get(ino).is_some_and(|i| i.is_dir()) {
            return Err(FsError::IsDir);
        }
        self.remove_node(&mut tree, ino);
        touch_dir(&mut tree, parent, SystemTime::now());
        drop(tree);
        self.wake.now();
        Ok(())
    }

    pub fn rmdir(self: &Arc<Self>, parent: u64, name: &str) -> FsResult<()> {
        self.ensure_listed(parent)?;
        let ino = self
            .tree
            .lock()
            .child(parent, name)
            .ok_or(FsError::NotFound)?;
        self.ensure_listed(ino)?;
        let mut tree = self.tree.lock();
        let inode = tree.get(ino).ok_or(FsError::NotFound)?;
        match &inode.children {
            None => return Err(FsError::NotDir),
            Some(children) if !children.is_empty() => return Err(FsError::NotEmpty),
            Some(_) => {}
        }
        self.remove_node(&mut tree, ino);
        touch_dir(&mut tree, parent, SystemTime::now());
        drop(tree);
        self.wake.now();
        Ok(())
    }

    /// Takes a file, symlink or empty directory out of the namespace and queues the
    /// deletion of its object (and, for a directory, its marker).
    fn remove_node(&self, tree: &mut Tree, ino: u64) {
        let state = tree.state.clone();
        let _atomic = state.batch();
        if let Some(path) = tree.path(ino) {
            let is_dir = tree.get(ino).is_some_and(|i| i.is_dir());
            if is_dir {
                let marker = self.config.prefix.dir_prefix(&path);
                tree.queue_delete(marker, None);
            }
        }
        // The object is deleted once no open handle may still read from it: its key
        // stays in `stored_keys` until the inode is forgotten, which holds the delete.
        if let Some(stored) = tree.get(ino).and_then(|i| i.stored.clone()) {
            tree.queue_delete(stored.key, Some(stored.etag));
        }
        tree.clear_dirty(ino);
        tree.detach(ino);
        if let Some(inode) = tree.get_mut(ino) {
            inode.unlinked = true;
        }
        // Out of the namespace, no longer dirty: its record goes, even with a writer
        // still open (a created file unlinked before its close, as mkstemp does).
        self.persist(tree, ino);
        tree.forget_if_unused(ino);
    }

    pub fn rename(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(new_name)?;
        refuse_reserved(new_parent, new_name)?;
        self.ensure_listed(parent)?;
        self.ensure_listed(new_parent)?;
        self.learn_before_move(parent, name);
        let ino = self
            .tree
            .lock()
            .child(parent, name)
            .ok_or(FsError::NotFound)?;
        let moving_dir = self.tree.lock().get(ino).is_some_and(|i| i.is_dir());
        if moving_dir {
            // The whole subtree must be known before its keys can move.
            self.ensure_subtree_listed(ino)?;
            let tree = self.tree.lock();
            let mut at = new_parent;
            while at != super::ROOT {
                if at == ino {
                    return Err(FsError::Invalid); // into its own subtree
                }
                at = tree.get(at).map_or(super::ROOT, |i| i.parent);
            }
        }
        let target = self.tree.lock().child(new_parent, new_name);
        if let Some(target) = target {
            if target == ino {
                return Ok(());
            }
            if mode == RenameMode::NoReplace {
                return Err(FsError::Exists);
            }
            let target_is_dir = self.tree.lock().get(target).is_some_and(|i| i.is_dir());
            match (moving_dir, target_is_dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    self.ensure_listed(target)?;
                    let empty = self
                        .tree
                        .lock()
                        .get(target)
                        .and_then(|i| i.children.as_ref())
                        .is_some_and(|c| c.is_empty());
                    if !empty {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
        }
        let mut tree = self.tree.lock();
        let state = tree.state.clone();
        let _atomic = state.batch();
        // Re-check under the lock: the namespace may have moved while we listed.
        if tree.child(parent, name) != Some(ino) || tree.child(new_parent, new_name) != target {
            return Err(FsError::Io("namespace changed during rename, retry".into()));
        }
        if let Some(target) = target {
            self.remove_node(&mut tree, target);
        }
        // Every object under the old name is owed a delete once its copy is made;
        // queued (after the move) so that a restart never shows the old name again.
        let moved: Vec<u64> = std::iter::once(ino).chain(tree.descendants(ino)).collect();
        let mut old_keys: Vec<(String, Option<String>)> = moved
            .iter()
            .filter_map(|&node| tree.get(node).and_then(|i| i.stored.clone()))
            .map(|stored| (stored.key, Some(stored.etag)))
            .collect();
        // Every directory's marker too, its own and those below it: a directory known
        // from a listing (or restored after a crash) holds no record of its marker.
        for &node in &moved {
            let unrecorded_dir = tree
                .get(node)
                .is_some_and(|i| i.is_dir() && i.stored.is_none());
            if let Some(path) = tree.path(node).filter(|_| unrecorded_dir) {
                old_keys.push((self.config.prefix.dir_prefix(&path), None));
            }
        }
        tree.detach(ino);
        let now = SystemTime::now();
        if let Some(inode) = tree.get_mut(ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_string();
            inode.attr.ctime = now;
        }
        if let Some(children) = tree.get_mut(new_parent).and_then(|p| p.children.as_mut()) {
            children.insert(new_name.to_string(), ino);
        }
        for (key, etag) in old_keys {
            self.owe_delete(&mut tree, key, etag);
        }
        for &node in &moved {
            tree.mark_dirty(node);
            self.persist(&mut tree, node);
        }
        touch_dir(&mut tree, parent, now);
        touch_dir(&mut tree, new_parent, now);
        drop(tree);
        self.wake.now();
        Ok(())
    }
}

/// A directory's mtime and ctime move when its entries change (kept locally only).
fn touch_dir(tree: &mut Tree, dir: u64, now: SystemTime) {
    if let Some(inode) = tree.get_mut(dir) {
        inode.attr.mtime = now;
        inode.attr.ctime = now;
    }
}

/// The probe's reserved key cannot be made through the mount: a file there would be
/// hidden from listings, and the probe would leave it alone rather than probe.
fn refuse_reserved(parent: u64, name: &str) -> FsResult<()> {
    match parent == super::ROOT && name == super::PROBE_NAME {
        true => Err(FsError::Access),
        false => Ok(()),
    }
}

fn too_big_for_a_symlink(key: &str, size: u64) -> FsError {
    FsError::Io(format!(
        "{} is marked a symlink but holds {size} bytes, too many for a target",
        key.escape_debug()
    ))
}
