//! Streaming write-through in the core: parts go up while a file is written in
//! order; a write into a part already handed out ends the stream, aborts its upload,
//! and the file goes up whole.

use std::time::{Duration, Instant};

use super::{harness, Harness, ME};
use crate::fs::stream::StreamConfig;
use crate::fs::ROOT;

const MIB: usize = 1 << 20;

/// The uploader's defaults: 16 MiB threshold, 8 MiB parts.
fn streaming() -> Harness {
    let h = harness();
    h.fs.enable_streaming(StreamConfig {
        threshold: 16 << 20,
        part_size: 8 << 20,
        parts_in_flight: 4,
    });
    h
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn parts_go_up_while_written_in_order_and_the_upload_completes_them() {
    let h = streaming();
    let data = body(20 * MIB);
    let (attr, fh) = h.fs.create(ROOT, "big", 0o644, ME).unwrap();
    for (n, chunk) in data.chunks(MIB).enumerate() {
        h.fs.write(attr.ino, (n * MIB) as u64, chunk).unwrap();
    }
    wait_for("two parts in the bucket", || h.store.open_uploads() == [2]);
    assert!(h.store.keys().is_empty(), "completed while open");
    h.fs.release(fh);
    h.flush();
    assert_eq!(h.store.body("big").unwrap().as_ref(), &data[..]);
    assert!(h.store.open_uploads().is_empty());
    assert!(!h.fs.is_streaming(attr.ino));
}

#[test]
fn a_write_into_a_sent_part_aborts_and_the_file_goes_up_whole() {
    let h = streaming();
    let mut data = body(20 * MIB);
    let (attr, fh) = h.fs.create(ROOT, "big", 0o644, ME).unwrap();
    for (n, chunk) in data.chunks(MIB).enumerate() {
        h.fs.write(attr.ino, (n * MIB) as u64, chunk).unwrap();
    }
    wait_for("two parts in the bucket", || h.store.open_uploads() == [2]);
    h.fs.write(attr.ino, 10, b"again").unwrap();
    data[10..15].copy_from_slice(b"again");
    wait_for("the upload aborted", || h.store.open_uploads().is_empty());
    // More writes in order do not start it again before the upload.
    h.fs.write(attr.ino, data.len() as u64, b"tail").unwrap();
    data.extend_from_slice(b"tail");
    assert!(h.store.open_uploads().is_empty());
    h.fs.release(fh);
    h.flush();
    assert_eq!(h.store.body("big").unwrap().as_ref(), &data[..]);
}

#[test]
fn a_hole_ends_the_stream() {
    let h = streaming();
    let (attr, fh) = h.fs.create(ROOT, "holes", 0o644, ME).unwrap();
    let data = body(17 * MIB);
    h.fs.write(attr.ino, 0, &data).unwrap();
    wait_for("two parts in the bucket", || h.store.open_uploads() == [2]);
    h.fs.write(attr.ino, 30 * MIB as u64, b"far").unwrap();
    wait_for("the upload aborted", || h.store.open_uploads().is_empty());
    h.fs.release(fh);
    h.flush();
    let stored = h.store.body("holes").unwrap();
    assert_eq!(stored.len(), 30 * MIB + 3);
    assert_eq!(&stored[..data.len()], &data[..]);
    assert_eq!(&stored[30 * MIB..], b"far");
}
