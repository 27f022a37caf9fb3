//! systemd readiness: READY=1, STATUS= and WATCHDOG=1 reach a NOTIFY_SOCKET the test
//! provides, from a foreground mount (Type=notify) and for a daemonized one.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::support::{is_mounted, text, unmount_when_free, Env, ACCESS_KEY, BUCKET, SECRET_KEY};

fn listen(env: &Env) -> (UnixDatagram, String) {
    let path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (socket, path.display().to_string())
}

/// The next message; a bound, not a measure: the daemon sends several a second.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("no notification within 60 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_foreground_mount_says_ready_then_status_and_feeds_the_watchdog() {
    let env = Env::new();
    let (socket, path) = listen(&env);
    let (mnt, cache) = (env.dir.path().join("m"), env.dir.path().join("c"));
    let mount = env.mount_at_with_env(
        BUCKET,
        &mnt,
        &cache,
        &["--upload-delay-ms", "600000"],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")],
    );
    let first = next(&socket);
    assert!(first.starts_with("READY=1"), "first message {first:?}");
    assert!(is_mounted(&mnt));
    std::fs::write(mount.p("waiting.txt"), b"held back by the upload delay").unwrap();
    let mut seen = Vec::new();
    let found = (0..200).any(|_| {
        let message = next(&socket);
        let wanted = message.contains("WATCHDOG=1")
            && message.contains("STATUS=online: 1 files (29 B) and 0 deletes waiting");
        seen.push(message);
        wanted
    });
    assert!(found, "no WATCHDOG=1 with the queue in STATUS=: {seen:?}");
    mount.unmount();
    assert_eq!(
        env.get("waiting.txt").unwrap().0,
        b"held back by the upload delay"
    );
}

#[test]
fn a_daemonized_mount_is_announced_with_its_daemon_as_main_pid() {
    let env = Env::new();
    let (socket, path) = listen(&env);
    let mnt = env.dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
        .args(["mount", BUCKET])
        .arg(&mnt)
        .args(["--endpoint", &env.endpoint, "--path-style"])
        .arg("--cache-dir")
        .arg(env.dir.path().join("c"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let message = next(&socket);
    let pid = message
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {message:?}"));
    assert!(message.starts_with("READY=1"), "{message:?}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--daemon-child"),
        "MAINPID {pid} is not the daemon"
    );
    let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&mnt));
    assert!(out.status.success(), "{}", text(&out));
}
