//! Renames of objects whose metadata the mount has not seen yet.

use crate::store::Metadata;

use super::ROOT;

/// A rename of an object whose metadata this mount never saw (a listing shows
/// defaults until a HEAD) keeps the object's type, mode and owner: the rename looks
/// first, and if it cannot, the copy takes the source's metadata (model test seed 2:
/// a symlink renamed before its HEAD became a regular file 0644 in the bucket).
#[test]
fn a_rename_before_the_metadata_is_known_keeps_it() {
    use crate::mapping::{S_IFLNK, S_IFREG};
    let meta = |mode: u32| {
        Metadata::from([
            ("mode".to_string(), mode.to_string()),
            ("uid".to_string(), "5".to_string()),
        ])
    };
    let h = super::harness_with("", |s| {
        s.insert("link", b"target", meta(S_IFLNK | 0o777));
        s.insert("private", b"p", meta(S_IFREG | 0o600));
        s.insert("unseen", b"u", meta(S_IFREG | 0o640));
    });
    for name in ["link", "private", "unseen"] {
        h.fs.lookup(ROOT, name).unwrap();
    }
    h.fs.rename(ROOT, "link", ROOT, "link2", super::RenameMode::Replace)
        .unwrap();
    h.fs.rename(
        ROOT,
        "private",
        ROOT,
        "private2",
        super::RenameMode::Replace,
    )
    .unwrap();
    // The rename's own look fails: the copy still keeps what the object had.
    h.store.fail_next_heads(1);
    h.fs.rename(ROOT, "unseen", ROOT, "unseen2", super::RenameMode::Replace)
        .unwrap();
    h.flush();
    let mode_of = |key: &str| h.store.metadata(key).unwrap()["mode"].clone();
    assert_eq!(mode_of("link2"), (S_IFLNK | 0o777).to_string());
    assert_eq!(mode_of("private2"), (S_IFREG | 0o600).to_string());
    assert_eq!(mode_of("unseen2"), (S_IFREG | 0o640).to_string());
    assert_eq!(h.store.metadata("unseen2").unwrap()["uid"], "5");
    let link = h.fs.lookup(ROOT, "link2").unwrap();
    assert_eq!(link.kind, super::super::NodeKind::Symlink);
    assert_eq!(h.fs.lookup(ROOT, "private2").unwrap().perm, 0o600);
}
