//! File types between the core and FUSE: the type of each node kind, and the kind a
//! MKNOD asks for.

use fuser::{Errno, FileType};

use crate::fs::NodeKind;

pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The kind a MKNOD's mode names. Directories and symlinks have their own requests;
/// type bits of no file type are EINVAL, as mknod(2) has it.
pub fn mknod_kind(mode: u32) -> Result<NodeKind, Errno> {
    match NodeKind::from_mode(mode) {
        Some(NodeKind::Dir | NodeKind::Symlink) | None => Err(Errno::EINVAL),
        Some(kind) => Ok(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mknod_takes_files_and_special_files_only() {
        assert_eq!(mknod_kind(libc::S_IFIFO | 0o644), Ok(NodeKind::Fifo));
        assert_eq!(mknod_kind(libc::S_IFSOCK | 0o755), Ok(NodeKind::Socket));
        assert_eq!(mknod_kind(libc::S_IFCHR), Ok(NodeKind::CharDevice));
        assert_eq!(mknod_kind(libc::S_IFBLK), Ok(NodeKind::BlockDevice));
        assert_eq!(mknod_kind(libc::S_IFREG | 0o600), Ok(NodeKind::File));
        assert_eq!(mknod_kind(libc::S_IFDIR | 0o755), Err(Errno::EINVAL));
        assert_eq!(mknod_kind(libc::S_IFLNK | 0o777), Err(Errno::EINVAL));
        assert_eq!(mknod_kind(0o170000), Err(Errno::EINVAL));
    }
}
