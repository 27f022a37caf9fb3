//! POSIX details of the core: the cache file system's errors as themselves, link
//! counts, and special files (fifos, sockets, devices).

use crate::store::Metadata;

use super::super::NodeKind;
use super::{
    harness, harness_checking_at_open, harness_with, FsError, RenameMode, SetAttr, ME, ROOT,
};

#[test]
fn a_size_past_what_the_cache_file_can_hold_is_too_big() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"hello");
    let huge = SetAttr {
        size: Some(999_999_999_999_999),
        ..SetAttr::default()
    };
    assert_eq!(h.fs.setattr(ino, huge).unwrap_err(), FsError::TooBig);
    assert_eq!(h.fs.getattr(ino).unwrap().size, 5);
}

#[test]
fn cache_file_system_errors_pass_as_themselves() {
    let from = |code| FsError::from(std::io::Error::from_raw_os_error(code));
    assert_eq!(from(libc::EFBIG), FsError::TooBig);
    assert_eq!(from(libc::ENOSPC), FsError::NoSpace);
    assert_eq!(from(libc::EDQUOT), FsError::Quota);
    assert_eq!(from(libc::ENAMETOOLONG), FsError::NameTooLong);
    assert!(matches!(from(libc::EIO), FsError::Io(_)));
}

#[test]
fn a_directory_links_its_subdirectories_once_listed() {
    let h = harness_with("", |s| {
        s.insert("d/sub/", b"", Metadata::new());
        s.insert("d/implied/x", b"x", Metadata::new());
        s.insert("d/file", b"x", Metadata::new());
    });
    let d = h.fs.lookup(ROOT, "d").unwrap();
    // Not listed yet: the count is unknown, and 1 says so to find and fts.
    assert_eq!(d.nlink, 1);
    h.fs.readdir(d.ino).unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 4);
    h.fs.mkdir(d.ino, "new", 0o755, ME).unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 5);
    h.fs.rmdir(d.ino, "sub").unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 4);
    assert_eq!(h.fs.lookup(d.ino, "file").unwrap().nlink, 1);
    let new = h.fs.lookup(d.ino, "new").unwrap();
    assert_eq!(new.nlink, 2);
}

#[test]
fn an_open_file_unlinked_has_no_links() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"x");
    let fh = h.fs.open(ino, false, false).unwrap();
    h.fs.unlink(ROOT, "f").unwrap();
    assert_eq!(h.fs.getattr(ino).unwrap().nlink, 0);
    h.fs.release(fh);
}

fn special_kinds() -> [(&'static str, NodeKind, u32); 4] {
    [
        ("fifo", NodeKind::Fifo, 0),
        ("sock", NodeKind::Socket, 0),
        ("chr", NodeKind::CharDevice, 0x0103), // 1:3, /dev/null
        ("blk", NodeKind::BlockDevice, 0x0801), // 8:1
    ]
}

#[test]
fn special_files_are_zero_byte_objects_with_their_type_in_the_mode() {
    let h = harness();
    for (name, kind, rdev) in special_kinds() {
        let attr = h.fs.mknod(ROOT, name, kind, 0o640, rdev, ME).unwrap();
        assert_eq!((attr.kind, attr.rdev, attr.size), (kind, rdev, 0));
    }
    // A fifo has no device number, whatever mknod was given.
    let fifo =
        h.fs.mknod(ROOT, "fifo2", NodeKind::Fifo, 0o600, 77, ME)
            .unwrap();
    assert_eq!(fifo.rdev, 0);
    h.flush();
    for (name, kind, rdev) in special_kinds() {
        assert_eq!(h.store.body(name).unwrap().len(), 0, "{name}");
        let meta = h.store.metadata(name).unwrap();
        assert_eq!(meta["mode"], (kind.type_bits() | 0o640).to_string());
        assert_eq!(
            meta.get("rdev").cloned(),
            (rdev != 0).then(|| rdev.to_string())
        );
        assert_eq!(meta["uid"], "1000");
    }
}

#[test]
fn special_files_take_mode_owner_times_renames_and_unlinks() {
    let h = harness();
    let attr =
        h.fs.mknod(ROOT, "c", NodeKind::CharDevice, 0o600, 0x0105, ME)
            .unwrap();
    h.flush();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let change = SetAttr {
        mode: Some(0o644),
        uid: Some(7),
        gid: Some(8),
        mtime: Some(when),
        ..SetAttr::default()
    };
    let changed = h.fs.setattr(attr.ino, change).unwrap();
    assert_eq!(
        (changed.kind, changed.perm, changed.rdev),
        (NodeKind::CharDevice, 0o644, 0x0105)
    );
    let truncate = SetAttr {
        size: Some(10),
        ..SetAttr::default()
    };
    assert_eq!(
        h.fs.setattr(attr.ino, truncate).unwrap_err(),
        FsError::Invalid
    );
    h.fs.rename(ROOT, "c", ROOT, "moved", RenameMode::Replace)
        .unwrap();
    h.flush();
    assert!(h.store.metadata("c").is_none());
    let meta = h.store.metadata("moved").unwrap();
    assert_eq!(meta["mode"], (libc::S_IFCHR | 0o644).to_string());
    assert_eq!((meta["uid"].as_str(), meta["gid"].as_str()), ("7", "8"));
    assert_eq!(meta["mtime"], "1000000000");
    assert_eq!(meta["rdev"], "261");
    h.fs.unlink(ROOT, "moved").unwrap();
    h.flush();
    assert!(h.store.metadata("moved").is_none());
}

#[test]
fn special_files_not_yet_uploaded_survive_a_crash() {
    let h = harness();
    for (name, kind, rdev) in special_kinds() {
        h.fs.mknod(ROOT, name, kind, 0o640, rdev, ME).unwrap();
    }
    let h = h.crash_and_restart();
    for (name, kind, rdev) in special_kinds() {
        let attr = h.fs.lookup(ROOT, name).unwrap();
        assert_eq!(
            (attr.kind, attr.rdev, attr.size, attr.perm),
            (kind, rdev, 0, 0o640)
        );
    }
    h.flush();
    let meta = h.store.metadata("blk").unwrap();
    assert_eq!(meta["mode"], (libc::S_IFBLK | 0o640).to_string());
    assert_eq!(meta["rdev"], "2049");
}

#[test]
fn a_special_file_listed_as_a_file_gets_its_type_and_a_new_inode_from_its_head() {
    let h = harness_checking_at_open(|s| {
        for (name, kind, rdev) in special_kinds() {
            let mut meta =
                Metadata::from([("mode".into(), (kind.type_bits() | 0o600).to_string())]);
            if rdev != 0 {
                meta.insert("rdev".into(), rdev.to_string());
            }
            s.insert(name, b"", meta);
        }
    });
    for (name, kind, rdev) in special_kinds() {
        // The listing alone (no metadata fill here) says "file".
        let listed = h.fs.lookup(ROOT, name).unwrap();
        assert_eq!(listed.kind, NodeKind::File, "{name}");
        // An open (the kernel took it for a file) checks the object with a HEAD.
        if let Ok(fh) = h.fs.open(listed.ino, false, false) {
            h.fs.release(fh);
        }
        let known = h.fs.lookup(ROOT, name).unwrap();
        assert_eq!((known.kind, known.rdev), (kind, rdev), "{name}");
        assert_ne!(known.ino, listed.ino, "{name}: a new type is a new inode");
    }
}
