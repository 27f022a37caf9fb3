//! Writes whose reply was lost after the store committed them: resolved by looking
//! at the key (the write's token), never taken for someone else's write.

use std::time::Duration;

use crate::store::Metadata;
use crate::sync::{Uploader, UploaderConfig};

use super::{harness, Harness, RenameMode, ROOT};

impl Harness {
    /// Uploads for at most `limit`; whether everything went up.
    pub(super) fn flush_for(&self, limit: Duration) -> bool {
        let uploader = Uploader::new(self.fs.clone(), UploaderConfig::default());
        self.runtime.block_on(uploader.flush(limit))
    }

    /// Writes `bytes` at `offset` of an existing file at the root, truncating it
    /// first with `truncate`, as an editor saving it would.
    pub(super) fn write_at(&self, name: &str, offset: u64, bytes: &[u8], truncate: bool) {
        let attr = self.fs.lookup(ROOT, name).unwrap();
        let fh = self.fs.open(attr.ino, true, truncate).unwrap();
        self.fs.write(attr.ino, offset, bytes).unwrap();
        self.fs.release(fh);
    }

    pub(super) fn conflict_keys(&self) -> Vec<String> {
        let keys = self.store.keys();
        keys.into_iter()
            .filter(|k| k.contains(".conflict-"))
            .collect()
    }
}

fn body_of(h: &Harness, key: &str) -> Option<Vec<u8>> {
    h.store.body(key).map(|b| b.to_vec())
}

#[test]
fn a_new_file_whose_put_reply_was_lost_is_no_conflict() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"first");
    h.store.lose_next_replies(1, 0);
    h.flush();
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"first"[..]));
    assert!(h.conflict_keys().is_empty(), "{:?}", h.store.keys());
    assert_eq!(h.fs.conflicts(), 0);
}

#[test]
fn a_replaced_file_whose_put_reply_was_lost_is_no_conflict() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"first");
    h.flush();
    h.write_at("a.txt", 0, b"second", true);
    h.store.lose_next_replies(1, 0);
    h.flush();
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"second"[..]));
    assert!(h.conflict_keys().is_empty(), "{:?}", h.store.keys());
    assert_eq!(h.fs.conflicts(), 0);
}

/// The first write landed unseen (its reply and the HEAD after it lost); the file
/// changed again before the retry, whose condition then fails on our own object.
#[test]
fn a_file_changed_after_a_lost_reply_goes_up_over_its_own_earlier_write() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"first");
    h.flush();
    h.write_at("a.txt", 0, b"second", true);
    h.store.lose_next_replies(1, 1);
    assert!(!h.flush_for(Duration::from_millis(300)), "the retry waits");
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"second"[..]));
    h.write_at("a.txt", 6, b"-third", false);
    h.flush();
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"second-third"[..]));
    assert!(h.conflict_keys().is_empty(), "{:?}", h.store.keys());
    assert_eq!(h.fs.conflicts(), 0);
}

#[test]
fn a_large_file_whose_multipart_complete_reply_was_lost_is_no_conflict() {
    let h = harness();
    let body: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    h.write_file(ROOT, "big.bin", &body);
    h.flush();
    h.write_at("big.bin", 5, b"changed", false);
    h.store.lose_next_replies(1, 0);
    h.flush();
    let mut want = body.clone();
    want[5..12].copy_from_slice(b"changed");
    assert!(
        body_of(&h, "big.bin") == Some(want),
        "the object is the changed file"
    );
    assert!(h.conflict_keys().is_empty(), "{:?}", h.store.keys());
    assert_eq!(h.fs.conflicts(), 0);
}

#[test]
fn a_rename_whose_copy_reply_was_lost_is_no_conflict() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"moved");
    h.flush();
    h.fs.rename(ROOT, "a.txt", ROOT, "b.txt", RenameMode::Replace)
        .unwrap();
    h.store.lose_next_replies(1, 0);
    h.flush();
    assert_eq!(h.store.keys(), vec!["b.txt".to_string()]);
    assert_eq!(body_of(&h, "b.txt").as_deref(), Some(&b"moved"[..]));
    assert_eq!(h.fs.conflicts(), 0);
}

#[test]
fn a_delete_whose_reply_was_lost_is_done() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"gone");
    h.flush();
    h.fs.unlink(ROOT, "a.txt").unwrap();
    h.store.lose_next_replies(1, 0);
    h.flush();
    assert!(h.store.keys().is_empty(), "{:?}", h.store.keys());
}

/// A new file's PUT landed unseen, then the file was removed before the write was
/// resolved: the object that landed is ours and goes, and nothing else is touched.
#[test]
fn a_removed_file_whose_lost_write_landed_leaves_no_object() {
    let h = harness();
    h.write_file(ROOT, "keep.txt", b"keep");
    h.flush();
    h.write_file(ROOT, "a.txt", b"short-lived");
    h.store.lose_next_replies(1, 1);
    assert!(!h.flush_for(Duration::from_millis(300)), "the retry waits");
    assert!(body_of(&h, "a.txt").is_some(), "the write landed");
    h.fs.unlink(ROOT, "a.txt").unwrap();
    h.flush();
    assert_eq!(h.store.keys(), vec!["keep.txt".to_string()]);
}

/// Another client's object at a removed file's key is not ours: it stays.
#[test]
fn another_clients_object_at_a_removed_files_key_is_kept() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"ours");
    h.store.lose_next_replies(1, 1);
    assert!(!h.flush_for(Duration::from_millis(300)), "the retry waits");
    h.store.insert("a.txt", b"theirs", Metadata::new());
    h.fs.unlink(ROOT, "a.txt").unwrap();
    h.flush();
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"theirs"[..]));
}

/// A real conflict still is one: another client replaced the object meanwhile.
#[test]
fn another_clients_write_after_a_lost_reply_is_a_conflict() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"first");
    h.flush();
    h.write_at("a.txt", 0, b"second", true);
    h.store.lose_next_replies(1, 1);
    assert!(!h.flush_for(Duration::from_millis(300)), "the retry waits");
    h.store.insert("a.txt", b"theirs", Metadata::new());
    h.flush();
    assert_eq!(body_of(&h, "a.txt").as_deref(), Some(&b"theirs"[..]));
    let copies = h.conflict_keys();
    assert_eq!(copies.len(), 1, "{:?}", h.store.keys());
    assert_eq!(body_of(&h, &copies[0]).as_deref(), Some(&b"second"[..]));
    assert_eq!(h.fs.conflicts(), 1);
}

/// `sync` called after such a removal waits for the object that may have landed to
/// go: it returned at once and left the orphan in the bucket (model test seed 2).
#[test]
fn sync_waits_for_a_removed_files_write_that_may_have_landed() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"short-lived");
    h.store.lose_next_replies(1, 1);
    assert!(!h.flush_for(Duration::from_millis(300)), "the retry waits");
    h.fs.unlink(ROOT, "a.txt").unwrap();
    let mark = h.fs.sync_mark();
    assert_eq!(mark.total().deletes, 1, "the key where our write may be");
    assert_eq!(h.fs.sync_remaining(&mark).deletes, 1);
    h.flush();
    assert_eq!(h.fs.sync_remaining(&mark).deletes, 0);
    assert!(h.store.keys().is_empty(), "{:?}", h.store.keys());
}
