//! Files whose metadata this mount never learned (listed, their HEAD failed or not
//! made): a write's upload keeps the bucket's mode and owner, and a name that turns
//! out to be another type keeps its old inode answering until the kernel forgets it.

use crate::mapping::{S_IFLNK, S_IFREG};
use crate::store::Metadata;

use super::{FsError, Harness, ROOT};

/// An s3fs file, mode 0600, owner 5:6, mtime 1000000000.
fn private_file() -> Metadata {
    Metadata::from([
        ("mode".to_string(), (S_IFREG | 0o600).to_string()),
        ("uid".to_string(), "5".to_string()),
        ("gid".to_string(), "6".to_string()),
        ("mtime".to_string(), "1000000000".to_string()),
    ])
}

fn assert_kept_mode_and_owner(h: &Harness, key: &str) {
    let meta = h.store.metadata(key).unwrap();
    assert_eq!(meta["mode"], (S_IFREG | 0o600).to_string(), "{meta:?}");
    assert_eq!((meta["uid"].as_str(), meta["gid"].as_str()), ("5", "6"));
    assert_ne!(meta["mtime"], "1000000000", "the write's own mtime goes up");
}

/// Model test seed 10: after a remount whose HEADs failed, a write uploaded the
/// listing's defaults (0644, the mounting user) over an s3fs file's 0600 and owner.
#[test]
fn a_write_before_the_metadata_is_known_keeps_the_buckets_mode_and_owner() {
    let h = super::harness_with("", |s| s.insert("private", b"old", private_file()));
    let attr = h.fs.lookup(ROOT, "private").unwrap();
    assert_eq!(attr.perm, 0o644, "a listing shows defaults until a HEAD");
    // The open's check fails: the write goes ahead with the defaults shown.
    h.store.fail_next_heads(1);
    h.write_at("private", 0, b"new", true);
    h.flush();
    assert_eq!(h.store.body("private").unwrap().as_ref(), b"new");
    assert_kept_mode_and_owner(&h, "private");
    let now = h.fs.lookup(ROOT, "private").unwrap();
    assert_eq!(
        (now.perm, now.uid, now.gid),
        (0o600, 5, 6),
        "the mount shows them too"
    );
}

/// The upload's own look fails too: the upload waits for a later try instead of
/// going up with the defaults.
#[test]
fn a_write_whose_upload_cannot_look_first_waits_for_the_look() {
    let h = super::harness_with("", |s| s.insert("private", b"old", private_file()));
    h.fs.lookup(ROOT, "private").unwrap();
    h.store.fail_next_heads(1);
    h.write_at("private", 0, b"new", true);
    h.store.fail_next_heads(2);
    h.flush();
    assert_eq!(h.store.body("private").unwrap().as_ref(), b"new");
    assert_kept_mode_and_owner(&h, "private");
}

/// A file changed here before a crash, its metadata never learned: the restart's
/// upload keeps the bucket's mode and owner as well.
#[test]
fn a_write_restored_after_a_crash_keeps_the_buckets_mode_and_owner() {
    let h = super::harness_with("", |s| s.insert("private", b"old", private_file()));
    h.fs.lookup(ROOT, "private").unwrap();
    h.store.fail_next_heads(1);
    h.write_at("private", 0, b"new", true);
    let h = h.crash_and_restart();
    h.flush();
    assert_eq!(h.store.body("private").unwrap().as_ref(), b"new");
    assert_kept_mode_and_owner(&h, "private");
}

/// A symlink listed as a file gets a new inode once its HEAD tells its type. The
/// kernel may still use the old one (stat through the name it cached, before the
/// invalidation lands): it answers, with its old type, until the kernel's FORGET,
/// not only until its last close (that close left a brief ENOENT).
#[test]
fn a_retyped_names_old_inode_answers_until_the_kernel_forgets_it() {
    let link = Metadata::from([("mode".to_string(), (S_IFLNK | 0o777).to_string())]);
    let h = super::harness_with("", |s| s.insert("link", b"target", link));
    let listed = h.fs.lookup(ROOT, "link").unwrap();
    h.fs.kernel_looked_up(listed.ino);
    assert_eq!(listed.kind, super::super::NodeKind::File, "listed: a file");
    // The open's check learns the type: the name gets a new inode, the open the old.
    let fh = h.fs.open(listed.ino, false, false).unwrap();
    let now = h.fs.lookup(ROOT, "link").unwrap();
    assert_eq!(now.kind, super::super::NodeKind::Symlink);
    assert_ne!(now.ino, listed.ino);
    h.fs.release(fh);
    let old = h.fs.getattr(listed.ino).unwrap();
    assert_eq!(
        old.kind,
        super::super::NodeKind::File,
        "the old inode keeps its type"
    );
    h.fs.kernel_forgot(listed.ino, 1);
    assert_eq!(h.fs.getattr(listed.ino).unwrap_err(), FsError::NotFound);
}
