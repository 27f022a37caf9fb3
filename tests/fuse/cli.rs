//! The command line: daemonized mount and unmount, and clear errors on bad input.

use std::process::{Command, Output};

use crate::support::{is_mounted, s3syncfs, Env, BUCKET};

fn mount_args<'a>(env: &'a Env, source: &'a str, mnt: &'a str, cache: &'a str) -> Vec<&'a str> {
    vec![
        "mount",
        source,
        mnt,
        "--endpoint",
        &env.endpoint,
        "--path-style",
        "--cache-dir",
        cache,
        "--request-timeout",
        "5",
    ]
}

#[test]
fn mount_daemonizes_once_ready_and_unmount_flushes() {
    let env = Env::new();
    std::fs::create_dir(env.dir.path().join("m")).unwrap();
    let out = s3syncfs(&env, &mount_args(&env, BUCKET, "m", "c"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = env.dir.path().join("m");
    assert!(
        is_mounted(&mnt),
        "mount returned before the mount was ready"
    );
    std::fs::write(mnt.join("daemon.txt"), b"from the daemon").unwrap();
    let out = s3syncfs(&env, &["unmount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon uploads what is pending before it exits; wait for it.
    crate::support::wait_until("daemon.txt uploaded at unmount", || {
        env.get("daemon.txt").is_some()
    });
    assert_eq!(env.get("daemon.txt").unwrap().0, b"from the daemon");
}

fn assert_fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded unexpectedly");
    assert!(
        stderr.contains(needle),
        "stderr {stderr:?} does not mention {needle:?}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_nothing_is_mounted() {
    let env = Env::new();
    std::fs::create_dir(env.dir.path().join("m")).unwrap();
    let mnt = env.dir.path().join("m");

    let out = s3syncfs(&env, &mount_args(&env, "no-such-bucket", "m", "c1"));
    assert_fails(&out, "does not exist");
    let out = s3syncfs(&env, &mount_args(&env, BUCKET, "missing-dir", "c2"));
    assert_fails(&out, "does not exist");
    let out = s3syncfs(&env, &mount_args(&env, "Bad_Bucket", "m", "c3"));
    assert_fails(&out, "not a valid bucket name");
    let mut args = mount_args(&env, BUCKET, "m", "c4");
    args[4] = "ftp://127.0.0.1:1";
    assert_fails(&s3syncfs(&env, &args), "must be a URL");
    let mut args = mount_args(&env, BUCKET, "m", "c5");
    args[4] = "http://127.0.0.1:1";
    assert_fails(&s3syncfs(&env, &args), "cannot reach");
    let out = Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
        .args(mount_args(&env, BUCKET, "m", "c6"))
        .env("AWS_ACCESS_KEY_ID", "wrong")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_fails(&out, "refused the credentials");
    assert!(!is_mounted(&mnt));
}

#[test]
fn sigterm_unmounts_and_uploads_what_is_pending() {
    let env = Env::new();
    let mnt = env.mount_with(BUCKET, &["--upload-delay-ms", "60000"]);
    std::fs::write(mnt.p("late.txt"), b"written just before SIGTERM").unwrap();
    let path = mnt.path.clone();
    mnt.terminate();
    assert!(!is_mounted(&path));
    assert_eq!(
        env.get("late.txt").unwrap().0,
        b"written just before SIGTERM"
    );
}

#[test]
fn mounting_over_a_mounted_directory_is_refused() {
    let env = Env::new();
    let mnt = env.mount();
    let out = s3syncfs(
        &env,
        &mount_args(&env, BUCKET, mnt.path.to_str().unwrap(), "c-again"),
    );
    assert_fails(&out, "already mounted");
    mnt.unmount();
}
