//! The bucket going away while the mount is in use: local work goes on, uploads wait
//! and finish by themselves once the server is back; uncached reads fail, not hang.

use std::fs;

use crate::support::{wait_until, Env, FaultProxy, BUCKET};

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
