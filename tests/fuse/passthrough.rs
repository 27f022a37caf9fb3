//! Kernel passthrough: fully cached files are read and written by the kernel straight
//! from the cache file; the daemon must still notice every change and upload it.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{pattern, status, sync, wait_until, Env, Mount};

/// Handles opened with passthrough so far; None when this kernel has no passthrough
/// (then the ordinary path serves everything and these tests have nothing to check).
fn direct_opens(env: &Env, mnt: &Mount) -> Option<u64> {
    let s = status(env, mnt);
    let mode = s["passthrough"].as_str().unwrap().to_string();
    if mode.contains("no FUSE passthrough") {
        eprintln!("skipped: {mode}");
        return None;
    }
    assert_eq!(mode, "on", "passthrough should be on for a root mount");
    Some(s["direct_opens"].as_u64().unwrap())
}

/// Opens `path` for reading once it opens with passthrough: the kernel releases
/// earlier (ordinary) handles asynchronously, so the first tries may still find them.
fn open_direct(env: &Env, mnt: &Mount, path: &std::path::Path) -> fs::File {
    let mut opened = None;
    wait_until("an open with passthrough", || {
        let before = direct_opens(env, mnt).unwrap();
        let file = fs::File::open(path).unwrap();
        let direct = direct_opens(env, mnt).unwrap() > before;
        opened = direct.then_some(file);
        direct
    });
    opened.unwrap()
}

#[test]
fn new_and_cached_files_go_through_passthrough_and_still_reach_the_bucket() {
    let env = Env::new();
    let mnt = env.mount_with(crate::support::BUCKET, &["--upload-delay-ms", "600000"]);
    let Some(before) = direct_opens(&env, &mnt) else {
        return;
    };
    let data = pattern(3 << 20, 7);
    let mut f = fs::File::create(mnt.p("direct.bin")).unwrap();
    f.write_all(&data).unwrap();
    // The daemon saw no write, yet stat tells the size while the file is still open.
    assert_eq!(fs::metadata(mnt.p("direct.bin")).unwrap().len(), 3 << 20);
    drop(f);
    assert!(direct_opens(&env, &mnt).unwrap() > before);
    assert_eq!(fs::read(mnt.p("direct.bin")).unwrap(), data);
    sync(&env, &mnt);
    assert_eq!(env.get("direct.bin").unwrap().0, data);

    // An in-place change right after open keeps the size: only the file's times tell.
    let f = OpenOptions::new()
        .write(true)
        .open(mnt.p("direct.bin"))
        .unwrap();
    f.write_all_at(b"CHANGED", 1000).unwrap();
    drop(f);
    let mut expected = data.clone();
    expected[1000..1007].copy_from_slice(b"CHANGED");
    sync(&env, &mnt);
    assert_eq!(env.get("direct.bin").unwrap().0, expected);

    // Write, then set the mtime while still open (tar, cp -p): the mtime given wins.
    let old = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.p("direct.bin"))
        .unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b"tail").unwrap();
    f.set_modified(old).unwrap();
    f.set_len(4 << 20).unwrap();
    f.set_modified(old).unwrap();
    drop(f);
    expected.extend_from_slice(b"tail");
    expected.resize(4 << 20, 0);
    let meta = fs::metadata(mnt.p("direct.bin")).unwrap();
    assert_eq!(meta.len(), 4 << 20);
    assert_eq!(meta.modified().unwrap(), old);
    sync(&env, &mnt);
    let (body, metadata) = env.get("direct.bin").unwrap();
    assert!(
        body == expected,
        "bucket copy differs from what was written"
    );
    assert_eq!(
        metadata.get("mtime").map(String::as_str),
        Some("1500000000")
    );
}

#[test]
fn a_file_open_the_ordinary_way_keeps_that_mode_for_later_opens() {
    let env = Env::new();
    let data = pattern(6 << 20, 3);
    env.put("cold.bin", &data, &[]);
    let mnt = env.mount();
    let Some(start) = direct_opens(&env, &mnt) else {
        return;
    };
    // Not cached yet: the daemon serves it, fetching from the bucket.
    let mut first = fs::File::open(mnt.p("cold.bin")).unwrap();
    let mut head = vec![0; 4096];
    first.read_exact(&mut head).unwrap();
    // A second open while the first is ordinary must be ordinary too (the kernel
    // refuses mixing) and must work.
    let whole = fs::read(mnt.p("cold.bin")).unwrap();
    assert!(whole == data);
    assert_eq!(head, data[..4096]);
    assert_eq!(direct_opens(&env, &mnt).unwrap(), start);
    drop(first);
    // All cached and nothing open: now direct, and two handles share it.
    let a = open_direct(&env, &mnt, &mnt.p("cold.bin"));
    let direct = direct_opens(&env, &mnt).unwrap();
    let b = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.p("cold.bin"))
        .unwrap();
    b.write_all_at(b"both see this", 0).unwrap();
    let mut seen = [0u8; 13];
    a.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"both see this");
    assert_eq!(direct_opens(&env, &mnt).unwrap(), direct + 1);
    drop((a, b));
    sync(&env, &mnt);
    assert_eq!(&env.get("cold.bin").unwrap().0[..13], b"both see this");
}

#[test]
fn no_passthrough_serves_every_read_and_write_through_the_daemon() {
    let env = Env::new();
    let mnt = env.mount_with(crate::support::BUCKET, &["-o", "no_passthrough"]);
    let s = status(&env, &mnt);
    assert_eq!(s["passthrough"], "off (no_passthrough)");
    let data = pattern(2 << 20, 9);
    fs::write(mnt.p("plain.bin"), &data).unwrap();
    assert_eq!(fs::read(mnt.p("plain.bin")).unwrap(), data);
    assert_eq!(status(&env, &mnt)["direct_opens"], 0);
    sync(&env, &mnt);
    assert_eq!(env.get("plain.bin").unwrap().0, data);
}

#[test]
fn with_a_cache_limit_writers_are_ordinary_but_join_a_file_open_direct() {
    let env = Env::new();
    let mnt = env.mount_with(crate::support::BUCKET, &["--cache-size", "64M"]);
    let Some(start) = direct_opens(&env, &mnt) else {
        return;
    };
    // A writer under a cache limit goes through the daemon (its writes are counted).
    fs::write(mnt.p("limited.bin"), pattern(1 << 20, 5)).unwrap();
    assert_eq!(direct_opens(&env, &mnt).unwrap(), start);
    // A reader of the complete file is direct; a writer opening it meanwhile must
    // join that mode (the kernel refuses mixing) and its write must go up.
    let reader = open_direct(&env, &mnt, &mnt.p("limited.bin"));
    let direct = direct_opens(&env, &mnt).unwrap();
    let writer = OpenOptions::new()
        .write(true)
        .open(mnt.p("limited.bin"))
        .unwrap();
    writer.write_all_at(b"joined", 0).unwrap();
    let mut seen = [0u8; 6];
    reader.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"joined");
    assert_eq!(direct_opens(&env, &mnt).unwrap(), direct + 1);
    drop((reader, writer));
    sync(&env, &mnt);
    assert_eq!(&env.get("limited.bin").unwrap().0[..6], b"joined");
}
