//! mknod: fifos, sockets and devices, kept as s3fs keeps them (a zero-byte object
//! whose `x-amz-meta-mode` has the type bits), and regular files made by mknod(2).

use std::sync::Arc;

use super::namespace::Caller;
use super::tree::{Attr, NodeKind};
use super::{Fs, FsResult};

impl Fs {
    /// Makes a node of `kind` (`rdev` is a device's number, kept for devices only).
    /// The mount is `nodev`: a device made here, or found in the bucket, opens nothing.
    pub fn mknod(
        self: &Arc<Self>,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        match kind {
            NodeKind::File => {
                // mknod(2) of a regular file, or a kernel that sends MKNOD for a create:
                // an empty file, closed at once.
                let (attr, fh) = self.create(parent, name, mode, caller)?;
                self.release(fh);
                self.getattr(attr.ino)
            }
            NodeKind::Dir | NodeKind::Symlink => Err(super::FsError::Invalid),
            special => {
                let rdev = if special.is_device() { rdev } else { 0 };
                let ino = self.add_node(parent, name, special, mode, caller, |inode| {
                    inode.attr.rdev = rdev;
                    // Changed data: the first upload writes its (empty) object.
                    inode.data_version = 1;
                })?;
                self.getattr(ino)
            }
        }
    }
}
