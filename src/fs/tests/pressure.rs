//! Back-pressure in the core: writes into a cache full of changes wait for uploads,
//! and fail only when nothing makes progress.

use super::*;

/// A core with a cache limit whose writes wait at most `wait` without progress.
fn limited(limit: u64, wait: Duration) -> Harness {
    let mut config = test_config("", Duration::from_secs(3600));
    config.cache_full_wait = wait;
    let store = Arc::new(MemoryStore::new());
    start_configured(store, tempfile::tempdir().unwrap(), Some(limit), config)
}

fn bytes(len: u32, modulo: u32) -> Vec<u8> {
    (0..len).map(|i| (i % modulo) as u8).collect()
}

#[test]
fn a_full_cache_evicts_clean_files_and_refuses_writes_only_when_nothing_uploads() {
    // Nothing uploads until `flush`: the write waits out the bound, then fails.
    let h = limited(1 << 20, Duration::from_millis(200));
    let a: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let b: Vec<u8> = (0..600_000u32).map(|i| (i % 239) as u8).collect();
    h.write_file(ROOT, "a", &a);
    let (attr, fh) = h.fs.create(ROOT, "b", 0o644, ME).unwrap();
    // `a` is not in the bucket yet: it cannot be evicted, so `b` does not fit.
    assert!(matches!(h.fs.write(attr.ino, 0, &b), Err(FsError::NoSpace)));
    assert_eq!(
        h.read_all(ROOT, "a"),
        a,
        "a refused write damaged other data"
    );
    h.flush();
    // Now `a` is clean and makes room for `b`.
    h.fs.write(attr.ino, 0, &b).unwrap();
    h.fs.release(fh);
    let usage = h.fs.cache().usage();
    assert!(usage.used() <= 1 << 20, "used {}", usage.used());
    assert_eq!(h.read_all(ROOT, "a"), a, "evicted data is fetched again");
    h.flush();
    assert_eq!(h.read_all(ROOT, "b"), b);
    assert!(
        usage.used() <= 1 << 20,
        "reads trim the cache: {}",
        usage.used()
    );
    assert_eq!(h.store.body("b").unwrap().as_ref(), &b[..]);
}

#[test]
fn a_write_into_a_full_cache_waits_for_the_upload_that_makes_room() {
    // A bound far beyond the test: the write may only end by getting room.
    let h = limited(1 << 20, Duration::from_secs(600));
    let a = bytes(600_000, 241);
    let b = bytes(600_000, 239);
    h.write_file(ROOT, "a", &a);
    let (attr, fh) = h.fs.create(ROOT, "b", 0o644, ME).unwrap();
    let (fs, data) = (h.fs.clone(), b.clone());
    let writer = std::thread::spawn(move || fs.write(attr.ino, 0, &data));
    while h.fs.writes_waiting() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    h.flush(); // `a` goes up, becomes evictable, and the writer is told
    assert_eq!(writer.join().unwrap(), Ok(b.len() as u32));
    assert_eq!(h.fs.writes_waiting(), 0);
    h.fs.release(fh);
    h.flush();
    assert_eq!(h.store.body("b").unwrap().as_ref(), &b[..]);
    assert_eq!(h.read_all(ROOT, "a"), a);
}

#[test]
fn an_empty_new_file_whose_write_was_refused_is_not_uploaded() {
    let h = limited(1 << 20, Duration::from_millis(100));
    let held_data = bytes((1 << 20) - 4096, 241);
    let (held, held_fh) = h.fs.create(ROOT, "held", 0o644, ME).unwrap();
    h.fs.write(held.ino, 0, &held_data).unwrap();
    let (copy, copy_fh) = h.fs.create(ROOT, "copy", 0o644, ME).unwrap();
    assert_eq!(
        h.fs.write(copy.ino, 0, &bytes(65536, 7)),
        Err(FsError::NoSpace)
    );
    h.fs.release(copy_fh);
    h.fs.release(held_fh);
    h.flush();
    assert_eq!(h.store.body("held").unwrap().as_ref(), &held_data[..]);
    assert!(h.store.body("copy").is_none(), "an empty object went up");
    assert_eq!(
        h.fs.getattr(copy.ino).unwrap().size,
        0,
        "still in the mount"
    );
    // A rename changes nothing; a write that succeeds does.
    h.fs.rename(ROOT, "copy", ROOT, "renamed", RenameMode::Replace)
        .unwrap();
    h.flush();
    assert!(h.store.body("renamed").is_none(), "an empty object went up");
    let fh = h.fs.open(copy.ino, true, false).unwrap();
    h.fs.write(copy.ino, 0, b"fits now").unwrap();
    h.fs.release(fh);
    h.flush();
    assert_eq!(h.store.body("renamed").unwrap().as_ref(), b"fits now");
}

#[test]
fn a_partly_written_file_whose_last_write_was_refused_still_goes_up() {
    let h = limited(1 << 20, Duration::from_millis(100));
    let (attr, fh) = h.fs.create(ROOT, "partial", 0o644, ME).unwrap();
    let first = bytes(900_000, 13);
    h.fs.write(attr.ino, 0, &first).unwrap();
    let more = bytes(300_000, 17);
    assert_eq!(h.fs.write(attr.ino, 900_000, &more), Err(FsError::NoSpace));
    h.fs.release(fh);
    h.flush();
    // What the mount shows is what the bucket gets: the rule is only for empty files.
    assert_eq!(h.store.body("partial").unwrap().as_ref(), &first[..]);
}
