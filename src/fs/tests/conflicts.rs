//! Conflict copies: bounded per file, so that a client (or a server) that keeps
//! replacing a file cannot fill the bucket or the disk with copies.

use std::time::Duration;

use crate::store::Metadata;

use super::{harness, ROOT};

#[test]
fn a_file_replaced_again_and_again_makes_three_copies_then_waits() {
    let h = harness();
    h.write_file(ROOT, "a.txt", b"v0");
    h.flush();
    for round in 0..5u8 {
        h.write_at("a.txt", 0, &[b'l', b'0' + round], true);
        h.store
            .insert("a.txt", &[b'r', b'0' + round], Metadata::new());
        let done = h.flush_for(Duration::from_secs(3));
        assert_eq!(done, round < 3, "round {round}: {:?}", h.store.keys());
    }
    let copies = h.conflict_keys();
    assert_eq!(copies.len(), 3, "{copies:?}");
    assert!(copies.iter().all(|k| k.matches(".conflict-").count() == 1));
    assert_eq!(h.fs.conflicts(), 3);
    assert_eq!(h.fs.held_after_conflicts(), vec!["a.txt".to_string()]);
    // The held data is still the file's, here.
    assert_eq!(h.read_all(ROOT, "a.txt"), b"l4");
}
