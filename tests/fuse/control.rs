//! `s3syncfs status` and `s3syncfs sync` against a running daemon, and the cache limit.

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::{pattern, s3syncfs, wait_until, Env, BUCKET};

fn status_json(env: &Env, mountpoint: &str) -> serde_json::Value {
    let out = s3syncfs(env, &["status", mountpoint, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_shows_what_waits_and_sync_uploads_it() {
    let env = Env::new();
    let mnt = env.mount_with(BUCKET, &["--upload-delay-ms", "600000"]);
    fs::write(mnt.p("waiting.txt"), b"not yet uploaded").unwrap();
    let mountpoint = mnt.path.to_str().unwrap();
    let status = status_json(&env, mountpoint);
    assert_eq!(status["files_waiting"], 1);
    assert_eq!(status["bytes_waiting"], 16);
    assert_eq!(status["bucket"], BUCKET);
    assert_eq!(status["connection"], "online"); // the mount listed the bucket
    assert_eq!(status["last_success"], serde_json::Value::Null);
    assert!(env.get("waiting.txt").is_none());

    let out = s3syncfs(&env, &["sync", mountpoint, "--timeout", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 files (16 B)"), "{said}");
    assert_eq!(env.get("waiting.txt").unwrap().0, b"not yet uploaded");

    let status = status_json(&env, mountpoint);
    assert_eq!(status["files_waiting"], 0);
    assert_eq!(status["uploaded_files"], 1);
    assert!(status["last_success"].as_u64().is_some());
    let out = s3syncfs(&env, &["status", mountpoint]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("waiting:      0 files (0 B), 0 deletes"),
        "{text}"
    );
    assert!(text.contains("connection:   online"), "{text}");
    assert!(text.contains("uploaded:     1 file (16 B)"), "{text}");
    // The default poll: the whole bucket (a few keys) every 10 s.
    wait_until("the first poll", || {
        !status_json(&env, mountpoint)["poll_every"].is_null()
    });
    let status = status_json(&env, mountpoint);
    assert_eq!(
        (&status["poll_every"], &status["poll_dirs"]),
        (&10.into(), &serde_json::Value::Null)
    );
    let out = s3syncfs(&env, &["status", mountpoint]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("; the whole bucket every 10 s"), "{text}");
    let not_ours = s3syncfs(&env, &["status", env.dir.path().to_str().unwrap()]);
    assert!(!not_ours.status.success());
    mnt.unmount();
}

#[test]
fn sync_waits_for_what_was_written_before_it_not_for_later_writes() {
    let env = Env::new();
    let mnt = env.mount_with(BUCKET, &["--upload-delay-ms", "600000"]);
    fs::write(mnt.p("before.txt"), b"written before sync").unwrap();
    // A writer that keeps changing another file for as long as sync runs.
    let stop = Arc::new(AtomicBool::new(false));
    let busy_path = mnt.p("busy.log");
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut file = fs::File::create(&busy_path).unwrap();
            while !stop.load(Ordering::SeqCst) {
                file.write_all(b"another line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    wait_until("the busy file exists", || mnt.p("busy.log").exists());
    let out = s3syncfs(
        &env,
        &["sync", mnt.path.to_str().unwrap(), "--timeout", "60"],
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.get("before.txt").unwrap().0, b"written before sync");
    mnt.unmount();
}

#[test]
fn status_and_sync_report_an_unreachable_bucket() {
    let mut env = Env::new();
    let mnt = env.mount_with(BUCKET, &["--request-timeout", "1"]);
    let mountpoint = mnt.path.to_str().unwrap().to_string();
    env.stop_server();
    fs::write(mnt.p("stuck.txt"), b"waits for the server").unwrap();
    wait_until("an upload fails", || {
        status_json(&env, &mountpoint)["failing"] == 1
    });
    let status = status_json(&env, &mountpoint);
    assert_eq!(status["connection"], "offline");
    assert_eq!(status["files_waiting"], 1);
    assert_eq!(status["last_failure"]["key"], "stuck.txt");

    let out = s3syncfs(&env, &["sync", &mountpoint, "--timeout", "2"]);
    assert!(!out.status.success(), "sync must fail while offline");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("gave up after 2 s: 1 files"), "{said}");

    env.start_server();
    let out = s3syncfs(&env, &["sync", &mountpoint, "--timeout", "120"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.get("stuck.txt").unwrap().0, b"waits for the server");
    let status = status_json(&env, &mountpoint);
    assert_eq!(status["connection"], "online");
    assert_eq!(status["failing"], 0);
    mnt.unmount();
}

#[test]
fn a_small_cache_evicts_clean_data_and_writes_wait_for_uploads_when_full_of_changes() {
    let env = Env::new();
    let mnt = env.mount_with(
        BUCKET,
        &["--cache-size", "4M", "--upload-delay-ms", "600000"],
    );
    let mountpoint = mnt.path.to_str().unwrap().to_string();
    let first = pattern(3 << 20, 1);
    fs::write(mnt.p("first.bin"), &first).unwrap();
    // `first` waits for its upload and cannot be evicted: this write waits until it
    // is in the bucket (the upload skips its ten-minute delay for it), then evicts it.
    let second = pattern(2 << 20, 2);
    fs::write(mnt.p("second.bin"), &second).unwrap();
    assert_eq!(env.get("first.bin").unwrap().0, first);
    let status = status_json(&env, &mountpoint);
    assert_eq!(status["cache_limit"], 4 << 20);
    assert!(status["cache_bytes"].as_u64().unwrap() <= 4 << 20);

    // Evicted, `first` is read back from the bucket.
    let gets_before = env.stats().get;
    assert_eq!(fs::read(mnt.p("first.bin")).unwrap(), first);
    assert!(env.stats().get > gets_before, "first.bin was not evicted");
    assert_eq!(fs::read(mnt.p("second.bin")).unwrap(), second);
    let status = status_json(&env, &mountpoint);
    assert!(status["cache_bytes"].as_u64().unwrap() > 0);
    let out = s3syncfs(&env, &["sync", &mountpoint, "--timeout", "60"]);
    assert!(out.status.success());
    assert_eq!(env.get("second.bin").unwrap().0, second);
    assert_eq!(env.get("first.bin").unwrap().0, first);
    mnt.unmount();
}
