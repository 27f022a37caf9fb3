//! Bucket content and bucket answers other clients or policies can produce: long
//! symlink targets, objects marked symlinks that are not, and AccessDenied.

use crate::mapping::S_IFLNK;
use crate::store::{Metadata, ObjectStore};

use super::super::namespace::SYMLINK_TARGET_MAX;
use super::{harness, harness_with, FsError, ME, ROOT};

fn symlink_metadata() -> Metadata {
    Metadata::from([("mode".to_string(), (S_IFLNK | 0o777).to_string())])
}

#[test]
fn a_symlink_target_longer_than_path_max_is_name_too_long() {
    let h = harness();
    let long = "t".repeat(SYMLINK_TARGET_MAX + 1);
    assert_eq!(
        h.fs.symlink(ROOT, "long", &long, ME).unwrap_err(),
        FsError::NameTooLong
    );
    let longest = "t".repeat(SYMLINK_TARGET_MAX);
    let attr = h.fs.symlink(ROOT, "longest", &longest, ME).unwrap();
    assert_eq!(h.fs.readlink(attr.ino).unwrap(), longest);
}

#[test]
fn a_remote_symlink_too_long_for_the_kernel_is_an_io_error() {
    let h = harness_with("", |s| {
        s.insert("long", &[b'x'; 5000], symlink_metadata());
        s.insert("huge", &vec![b'y'; 1 << 20], symlink_metadata());
        s.insert("fits", &[b'z'; SYMLINK_TARGET_MAX], symlink_metadata());
    });
    let attr = |name| h.fs.lookup(ROOT, name).unwrap();
    // The HEAD at open learns each is a symlink: its name gets a new inode of that type.
    for name in ["fits", "long", "huge"] {
        h.fs.open(attr(name).ino, false, false).ok();
    }
    let gets = || h.store.stats().snapshot().gets;
    for (name, fetched) in [("long", true), ("huge", false)] {
        let ino = attr(name).ino;
        let before = gets();
        let err = h.fs.readlink(ino).unwrap_err();
        assert!(matches!(err, FsError::Io(_)), "{name}: {err:?}");
        // A body too big to be a target is not even fetched.
        assert_eq!(gets() > before, fetched, "{name}");
    }
    assert_eq!(
        h.fs.readlink(attr("fits").ino).unwrap().len(),
        SYMLINK_TARGET_MAX
    );
}

#[test]
fn access_denied_by_the_bucket_is_eacces() {
    let h = harness_with("", |s| {
        s.insert("dir/file", b"data", Metadata::new());
        s.insert("link", b"target", symlink_metadata());
        s.insert("cold", b"never cached", Metadata::new());
    });
    let cold = h.fs.lookup(ROOT, "cold").unwrap();
    let listed = h.fs.lookup(ROOT, "link").unwrap();
    let _ = h.fs.open(listed.ino, false, false); // its HEAD: a symlink, a new inode
    let link = h.fs.lookup(ROOT, "link").unwrap();
    let dir = h.fs.lookup(ROOT, "dir").unwrap();
    h.store.deny(true);
    assert_eq!(h.fs.lookup(dir.ino, "file").unwrap_err(), FsError::Access);
    assert_eq!(h.fs.readlink(link.ino).unwrap_err(), FsError::Access);
    let fh = h.fs.open(cold.ino, false, false).unwrap();
    assert_eq!(h.fs.read(cold.ino, 0, 100).unwrap_err(), FsError::Access);
    h.fs.release(fh);
    h.store.deny(false);
    assert_eq!(h.read_all(ROOT, "cold"), b"never cached");
}
