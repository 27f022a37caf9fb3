//! Writes to files whose mode and owner this mount never learned (listed, their HEAD
//! failed or not made): the upload keeps the bucket's.

use crate::mapping::S_IFREG;
use crate::store::Metadata;

use super::{Harness, ROOT};

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
