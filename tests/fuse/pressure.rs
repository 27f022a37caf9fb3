//! Back-pressure: writes into a cache full of changes wait for uploads instead of
//! failing, fail with ENOSPC only when nothing progresses, and never hold up readers.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::support::proxy::FaultProxy;
use crate::support::{
    copy_tree_in, on_both_servers, pattern, status, sync, wait_until, Env, BUCKET,
};

const MIB: usize = 1 << 20;

/// A tree of `files` files of `size` bytes under `root`, in two directories.
fn make_tree(root: &Path, files: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..files)
        .map(|i| {
            let rel = format!("d{}/f{i:02}.bin", i % 2);
            let data = pattern(size, i as u8);
            let path = root.join(&rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &data).unwrap();
            (rel, data)
        })
        .collect()
}

on_both_servers! {
    fn a_tree_four_times_the_cache_limit_is_copied_in_without_an_error(env: Env) {
        let source = env.dir.path().join("source");
        let tree = make_tree(&source, 16, 4 * MIB);
        // A debounce of ten minutes: only the hurry of waiting writes uploads in time.
        let mnt = env.mount_with(
            BUCKET,
            &["--cache-size", "16M", "--upload-delay-ms", "600000", "--cache-full-wait", "30"],
        );
        if let Err(err) = copy_tree_in(&source, &mnt.p("tree")) {
            panic!("cp failed: {err}\n{}", mnt.log_text());
        }
        sync(&env, &mnt);
        for (rel, data) in &tree {
            let key = format!("tree/{rel}");
            let stored = env.get(&key).unwrap_or_else(|| panic!("{key} is not in the bucket"));
            assert!(stored.0 == *data, "{key} differs in the bucket");
        }
        let log = mnt.log_text();
        assert!(log.contains("writes wait for uploads to make room"), "{log}");
        mnt.unmount();
    }
}

on_both_servers! {
    fn a_write_refused_for_want_of_room_leaves_no_empty_object(env: Env) {
        let mnt = env.mount_with(BUCKET, &["--cache-size", "4M", "--cache-full-wait", "1"]);
        // A file still open cannot go up: it fills the cache but for one block.
        let held_data = pattern(4 * MIB - 4096, 1);
        let mut held = fs::File::create(mnt.p("held.bin")).unwrap();
        held.write_all(&held_data).unwrap();
        let err = fs::write(mnt.p("copy.bin"), pattern(MIB, 2)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert_eq!(fs::metadata(mnt.p("copy.bin")).unwrap().len(), 0);
        drop(held);
        sync(&env, &mnt);
        assert!(env.get("held.bin").unwrap().0 == held_data);
        assert_eq!(env.get("copy.bin"), None, "an empty object was uploaded");
        // Written again with room, it goes up like any file.
        fs::write(mnt.p("copy.bin"), b"now it fits").unwrap();
        sync(&env, &mnt);
        assert_eq!(env.get("copy.bin").unwrap().0, b"now it fits");
        mnt.unmount();
    }
}

#[test]
fn a_writer_past_the_limit_gets_enospc_after_the_bound_when_the_bucket_is_unreachable() {
    let mut env = Env::new();
    let mnt = env.mount_with(
        BUCKET,
        &[
            "--cache-size",
            "8M",
            "--cache-full-wait",
            "4",
            "--request-timeout",
            "2",
        ],
    );
    env.stop_server();
    let first = pattern(6 * MIB, 1);
    fs::write(mnt.p("first.bin"), &first).unwrap();
    let path = mnt.p("second.bin");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(fs::write(path, pattern(4 * MIB, 2))).unwrap());
    wait_until("status shows a write waiting for room", || {
        status(&env, &mnt)["writes_waiting_for_room"] == 1
    });
    let written = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the write returned");
    let err = written.expect_err("a write past the limit succeeded while offline");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(fs::read(mnt.p("first.bin")).unwrap() == first);
    env.start_server();
    sync(&env, &mnt);
    assert!(
        env.get("first.bin").unwrap().0 == first,
        "first.bin was lost"
    );
    // What the mount shows of the refused file is what the bucket holds.
    let shown = fs::read(mnt.p("second.bin")).unwrap();
    assert!(env.get("second.bin").is_none_or(|(body, _)| body == shown));
    let log = mnt.log_text();
    assert!(
        log.contains("writes wait for uploads to make room"),
        "{log}"
    );
    assert!(log.contains("write refused (ENOSPC)"), "{log}");
    mnt.unmount();
}

on_both_servers! {
    fn a_cached_file_is_read_while_writers_wait(env: Env) {
        let proxy = FaultProxy::start(&env.endpoint);
        // Two FUSE threads and four writers waiting: a reader still gets one.
        let mnt = env.mount_via(
            &proxy.endpoint,
            &["--cache-size", "8M", "--fuse-threads", "2", "--upload-delay-ms", "600000"],
        );
        let cached = pattern(2 * MIB, 7);
        fs::write(mnt.p("cached.bin"), &cached).unwrap();
        // The bucket hangs: nothing goes up, so the cache stays full of changes.
        proxy.freeze(true);
        let mut held = fs::File::create(mnt.p("held.bin")).unwrap();
        held.write_all(&pattern(6 * MIB - 4096, 3)).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..4u8 {
            let (path, tx) = (mnt.p(&format!("w{i}.bin")), tx.clone());
            std::thread::spawn(move || tx.send(fs::write(path, pattern(MIB, 10 + i))).unwrap());
        }
        wait_until("four writes wait for room", || {
            status(&env, &mnt)["writes_waiting_for_room"] == 4
        });
        let (read_tx, read_rx) = mpsc::channel();
        let path = mnt.p("cached.bin");
        std::thread::spawn(move || read_tx.send(fs::read(path)).unwrap());
        let read = read_rx.recv_timeout(Duration::from_secs(30)).expect("the read was served");
        assert!(read.unwrap() == cached, "the cached file read wrong");
        assert_eq!(status(&env, &mnt)["writes_waiting_for_room"], 4, "writers gave up");
        drop(held);
        proxy.freeze(false);
        for _ in 0..4 {
            let written = rx.recv_timeout(Duration::from_secs(120)).expect("a write returned");
            written.expect("a write failed once the bucket answered");
        }
        sync(&env, &mnt);
        for i in 0..4u8 {
            assert!(env.get(&format!("w{i}.bin")).unwrap().0 == pattern(MIB, 10 + i));
        }
        mnt.unmount();
    }
}
