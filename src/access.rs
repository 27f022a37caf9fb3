//! access(2) and chdir answered by the daemon, for mounts where the kernel does not
//! check modes itself (no `default_permissions`: only root can use such a mount).

use crate::fs::{Attr, Caller, NodeKind};

/// Whether `caller` may do what `mask` (R_OK, W_OK, X_OK bits) asks of `attr`, as the
/// kernel's own check would answer: root may read and write anything and execute
/// what has an x bit (or is a directory); others get the owner, group or other bits.
pub fn allowed(attr: &Attr, caller: Caller, mask: i32) -> bool {
    let wants = |bit: i32| mask & bit != 0;
    if caller.uid == 0 {
        return !wants(libc::X_OK) || attr.kind == NodeKind::Dir || attr.perm & 0o111 != 0;
    }
    let bits = if caller.uid == attr.uid {
        attr.perm >> 6
    } else if caller.gid == attr.gid {
        attr.perm >> 3
    } else {
        attr.perm
    } & 0o7;
    (!wants(libc::R_OK) || bits & 0o4 != 0)
        && (!wants(libc::W_OK) || bits & 0o2 != 0)
        && (!wants(libc::X_OK) || bits & 0o1 != 0)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn attr(kind: NodeKind, perm: u32) -> Attr {
        Attr {
            ino: 2,
            kind,
            size: 0,
            perm,
            uid: 1000,
            gid: 100,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
        }
    }

    const ROOT: Caller = Caller { uid: 0, gid: 0 };

    #[test]
    fn root_reads_and_writes_anything_but_executes_only_with_an_x_bit() {
        let file = attr(NodeKind::File, 0o000);
        assert!(allowed(&file, ROOT, libc::R_OK | libc::W_OK));
        assert!(!allowed(&file, ROOT, libc::X_OK));
        assert!(allowed(&attr(NodeKind::File, 0o010), ROOT, libc::X_OK));
        assert!(allowed(&attr(NodeKind::Dir, 0o000), ROOT, libc::X_OK));
    }

    #[test]
    fn others_get_the_owner_group_or_other_bits() {
        let file = attr(NodeKind::File, 0o640);
        let owner = Caller { uid: 1000, gid: 1 };
        let group = Caller { uid: 7, gid: 100 };
        let other = Caller { uid: 7, gid: 7 };
        assert!(allowed(&file, owner, libc::R_OK | libc::W_OK));
        assert!(!allowed(&file, owner, libc::X_OK));
        assert!(allowed(&file, group, libc::R_OK));
        assert!(!allowed(&file, group, libc::W_OK));
        assert!(!allowed(&file, other, libc::R_OK));
        assert!(allowed(&file, other, 0)); // F_OK: it exists
    }
}
