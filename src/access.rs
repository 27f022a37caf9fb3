//! Permission checks made by the daemon: access(2) and chdir on mounts where the
//! kernel does not check modes itself (no `default_permissions`: only root can use
//! such a mount), and a second look at opens by other users.

use crate::fs::{Attr, Caller, NodeKind};

/// Whether `caller` may do what `mask` (R_OK, W_OK, X_OK bits) asks of `attr`, as the
/// kernel's own check would answer: root may read and write anything and execute
/// what has an x bit (or is a directory); others get the owner, group or other bits,
/// `in_group` telling the groups they are in beyond their own.
pub fn allowed(attr: &Attr, caller: Caller, mask: i32, in_group: impl Fn(u32) -> bool) -> bool {
    let wants = |bit: i32| mask & bit != 0;
    if caller.uid == 0 {
        return !wants(libc::X_OK) || attr.kind == NodeKind::Dir || attr.perm & 0o111 != 0;
    }
    let bits = if caller.uid == attr.uid {
        attr.perm >> 6
    } else if caller.gid == attr.gid || in_group(attr.gid) {
        attr.perm >> 3
    } else {
        attr.perm
    } & 0o7;
    (!wants(libc::R_OK) || bits & 0o4 != 0)
        && (!wants(libc::W_OK) || bits & 0o2 != 0)
        && (!wants(libc::X_OK) || bits & 0o1 != 0)
}

/// Bit of CAP_DAC_OVERRIDE in a capability set (linux/capability.h).
const CAP_DAC_OVERRIDE: u32 = 1;

/// What /proc says of a process that the mode bits alone do not: its supplementary
/// groups and whether it may override them (CAP_DAC_OVERRIDE).
pub struct ProcessCreds {
    pub groups: Vec<u32>,
    pub dac_override: bool,
}

impl ProcessCreds {
    pub fn of(pid: u32) -> ProcessCreds {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let groups = field("Groups:")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0);
        ProcessCreds {
            groups,
            dac_override: cap_eff & (1 << CAP_DAC_OVERRIDE) != 0,
        }
    }
}

/// Whether process `pid` running as `caller` may open `attr` for `mask`: the daemon's
/// second look after the kernel's, for attributes the kernel checked before the
/// object's metadata was known (a LIST-only directory shows default modes).
pub fn may_open(attr: &Attr, caller: Caller, pid: u32, mask: i32) -> bool {
    if allowed(attr, caller, mask, |_| false) {
        return true;
    }
    let creds = ProcessCreds::of(pid);
    creds.dac_override || allowed(attr, caller, mask, |g| creds.groups.contains(&g))
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
            nlink: 1,
            rdev: 0,
        }
    }

    const ROOT: Caller = Caller { uid: 0, gid: 0 };

    #[test]
    fn root_reads_and_writes_anything_but_executes_only_with_an_x_bit() {
        let file = attr(NodeKind::File, 0o000);
        let none = |_| false;
        assert!(allowed(&file, ROOT, libc::R_OK | libc::W_OK, none));
        assert!(!allowed(&file, ROOT, libc::X_OK, none));
        assert!(allowed(
            &attr(NodeKind::File, 0o010),
            ROOT,
            libc::X_OK,
            none
        ));
        assert!(allowed(&attr(NodeKind::Dir, 0o000), ROOT, libc::X_OK, none));
    }

    #[test]
    fn others_get_the_owner_group_or_other_bits() {
        let file = attr(NodeKind::File, 0o640);
        let owner = Caller { uid: 1000, gid: 1 };
        let group = Caller { uid: 7, gid: 100 };
        let other = Caller { uid: 7, gid: 7 };
        let none = |_| false;
        assert!(allowed(&file, owner, libc::R_OK | libc::W_OK, none));
        assert!(!allowed(&file, owner, libc::X_OK, none));
        assert!(allowed(&file, group, libc::R_OK, none));
        assert!(!allowed(&file, group, libc::W_OK, none));
        assert!(!allowed(&file, other, libc::R_OK, none));
        assert!(allowed(&file, other, 0, none)); // F_OK: it exists
                                                 // A supplementary group counts like the primary one.
        assert!(allowed(&file, other, libc::R_OK, |g| g == 100));
    }
}
