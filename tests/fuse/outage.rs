//! The bucket going away while the mount is in use: local work goes on, uploads wait
//! and finish by themselves once the server is back; uncached reads fail, not hang.

use std::fs;
use std::time::Duration;

use crate::support::{status, wait_until, Env, FaultProxy, BUCKET};

/// Runs `work` on a thread of its own: its result, if it comes within `bound` (else
/// the thread is left to finish once whatever it waits for ends).
fn within<T: Send + 'static>(
    bound: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    result.recv_timeout(bound).ok()
}

#[test]
fn cached_files_open_read_and_list_while_the_bucket_hangs() {
    let env = Env::new();
    env.put("docs/a.txt", b"cached before the hang", &[]);
    env.put("docs/b.txt", b"listed", &[]);
    let proxy = FaultProxy::start(&env.endpoint);
    // Every open checks its file (TTL 0), and no request gives up before two minutes:
    // an open that waited for the bucket would wait that long. The default wait for
    // the check.
    let mnt = env.mount_via(
        &proxy.endpoint,
        &[
            "--request-timeout",
            "120",
            "--metadata-ttl",
            "0",
            "--open-check-wait-ms",
            "1000",
        ],
    );
    let (file, dir) = (mnt.p("docs/a.txt"), mnt.p("docs"));
    assert_eq!(fs::read(&file).unwrap(), b"cached before the hang");
    proxy.freeze(true);
    let done = within(Duration::from_secs(60), move || {
        let reads: Vec<_> = (0..5).map(|_| fs::read(&file).ok()).collect();
        let size = fs::metadata(&file).map(|m| m.len()).ok();
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        names.sort();
        (reads, size, names)
    });
    proxy.freeze(false);
    let (reads, size, names) =
        done.expect("open, read, stat or readdir of cached data waited for the hung bucket");
    for read in reads {
        assert_eq!(read.as_deref(), Some(&b"cached before the hang"[..]));
    }
    assert_eq!(size, Some(22));
    assert_eq!(names, ["a.txt", "b.txt"]);
    mnt.unmount();
}

#[test]
fn while_known_offline_uncached_reads_fail_at_once_and_the_mount_comes_back_by_itself() {
    let env = Env::new();
    env.put("first.bin", &vec![1u8; 50_000], &[]);
    env.put("second.bin", &vec![2u8; 50_000], &[]);
    let proxy = FaultProxy::start(&env.endpoint);
    // No polling: nothing but the mount's own probe asks the bucket once it is away.
    let mnt = env.mount_via(
        &proxy.endpoint,
        &["--request-timeout", "20", "--poll-interval", "0"],
    );
    assert_eq!(fs::read_dir(&mnt.path).unwrap().count(), 2);
    proxy.freeze(true);
    // The first read of data not cached waits out the request timeout, and then the
    // mount knows the bucket is offline.
    let err = fs::read(mnt.p("first.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(status(&env, &mnt)["connection"], "offline");
    let second = mnt.p("second.bin");
    let failed = within(Duration::from_secs(5), move || {
        fs::read(second).map_err(|e| e.raw_os_error())
    });
    proxy.freeze(false);
    let failed = failed.expect("an uncached read waited while the bucket was known offline");
    assert_eq!(failed, Err(Some(libc::EIO)));
    wait_until("the mount online again", || {
        status(&env, &mnt)["connection"] == "online"
    });
    assert_eq!(fs::read(mnt.p("second.bin")).unwrap(), vec![2u8; 50_000]);
    mnt.unmount();
}

#[test]
fn writes_go_on_during_an_outage_and_reach_the_bucket_after_it() {
    let mut env = Env::new();
    env.put("remote.bin", &vec![1u8; 100_000], &[]);
    let mnt = env.mount_with(BUCKET, &["--request-timeout", "2"]);
    fs::create_dir(mnt.p("docs")).unwrap();
    fs::write(mnt.p("docs/before.txt"), b"before").unwrap();
    wait_until("before.txt uploaded", || {
        env.get("docs/before.txt").is_some()
    });

    env.stop_server();
    fs::write(
        mnt.p("docs/during.txt"),
        b"written while the bucket was away",
    )
    .unwrap();
    fs::rename(mnt.p("docs/before.txt"), mnt.p("docs/renamed.txt")).unwrap();
    fs::write(mnt.p("gone-soon.txt"), b"x").unwrap();
    fs::remove_file(mnt.p("gone-soon.txt")).unwrap();
    assert_eq!(fs::read(mnt.p("docs/renamed.txt")).unwrap(), b"before");
    assert_eq!(
        fs::read(mnt.p("docs/during.txt")).unwrap(),
        b"written while the bucket was away"
    );
    // Data that is not cached cannot be read: an error after the timeout, no hang.
    let err = fs::read(mnt.p("remote.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));

    env.start_server();
    wait_until("changes made during the outage reach the bucket", || {
        env.keys() == vec!["docs/", "docs/during.txt", "docs/renamed.txt", "remote.bin"]
    });
    assert_eq!(
        env.get("docs/during.txt").unwrap().0,
        b"written while the bucket was away"
    );
    assert_eq!(env.get("docs/renamed.txt").unwrap().0, b"before");
    assert_eq!(fs::read(mnt.p("remote.bin")).unwrap(), vec![1u8; 100_000]);
    mnt.unmount();
}

#[test]
fn a_frozen_endpoint_delays_uploads_but_never_hangs_the_mount() {
    let env = Env::new();
    env.put("remote.bin", &vec![2u8; 50_000], &[]);
    let proxy = FaultProxy::start(&env.endpoint);
    let mnt = env.mount_via(&proxy.endpoint, &["--request-timeout", "2"]);
    assert_eq!(fs::read_dir(&mnt.path).unwrap().count(), 1); // listed while answering
    proxy.freeze(true);
    fs::write(mnt.p("while-frozen.txt"), b"no answer from the endpoint").unwrap();
    assert_eq!(
        fs::read(mnt.p("while-frozen.txt")).unwrap(),
        b"no answer from the endpoint"
    );
    let err = fs::read(mnt.p("remote.bin")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "uncached read must fail, not hang"
    );
    assert!(env.get("while-frozen.txt").is_none());
    proxy.freeze(false);
    wait_until("upload after the endpoint answers again", || {
        env.get("while-frozen.txt").is_some()
    });
    assert_eq!(fs::read(mnt.p("remote.bin")).unwrap(), vec![2u8; 50_000]);
    mnt.unmount();
}

#[test]
fn the_mount_starts_offline_from_the_state_of_a_previous_mount() {
    let mut env = Env::new();
    let mnt_dir = env.dir.path().join("offline-mnt");
    let cache = env.dir.path().join("offline-cache");
    // Without state, an unreachable bucket is an error.
    env.stop_server();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
        .args(["mount", BUCKET])
        .arg(&mnt_dir)
        .args([
            "--endpoint",
            &env.endpoint,
            "--path-style",
            "--request-timeout",
            "2",
        ])
        .arg("--cache-dir")
        .arg(env.dir.path().join("never-mounted"))
        .env("AWS_ACCESS_KEY_ID", "test-access-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    env.start_server();

    let mount = env.mount_at(BUCKET, &mnt_dir, &cache, &["--upload-delay-ms", "600000"]);
    fs::write(mount.p("pending.txt"), b"closed before the crash").unwrap();
    mount.kill9();
    env.stop_server();

    let mount = env.mount_at(BUCKET, &mnt_dir, &cache, &["--request-timeout", "2"]);
    assert!(mount.log_text().contains("starting offline"));
    assert_eq!(
        fs::read(mount.p("pending.txt")).unwrap(),
        b"closed before the crash"
    );
    fs::write(mount.p("offline.txt"), b"created offline").unwrap();
    env.start_server();
    wait_until("both files reach the bucket", || {
        env.get("pending.txt").is_some() && env.get("offline.txt").is_some()
    });
    assert_eq!(env.get("offline.txt").unwrap().0, b"created offline");
    mount.unmount();
}
