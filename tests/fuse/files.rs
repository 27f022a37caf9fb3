//! Files through the mount: create, read, overwrite, append, truncate, unlink,
//! attributes, fsync, statfs, multipart uploads.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{on_both_servers, pattern, wait_until, Env};

on_both_servers! {
    fn written_file_reads_back_and_reaches_the_bucket_after_close(env: Env) {
        let mnt = env.mount();
        fs::write(mnt.p("hello.txt"), b"hello world").unwrap();
        assert_eq!(fs::read(mnt.p("hello.txt")).unwrap(), b"hello world");
        // The uploader works in the background while the mount stays up.
        wait_until("hello.txt in the bucket", || env.get("hello.txt").is_some());
        let (body, meta) = env.get("hello.txt").unwrap();
        assert_eq!(body, b"hello world");
        let mode: u32 = meta["mode"].parse().unwrap();
        assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);
        assert!(meta.contains_key("mtime") && meta.contains_key("uid") && meta.contains_key("gid"));
        mnt.unmount();
    }
}

on_both_servers! {
    fn overwrite_append_truncate_and_unlink(env: Env) {
        let mnt = env.mount();
        let path = mnt.p("f.bin");
        fs::write(&path, pattern(100_000, 1)).unwrap();
        let mut expected = pattern(100_000, 1);

        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(5_000)).unwrap();
        f.write_all(b"MIDDLE").unwrap();
        expected[5_000..5_006].copy_from_slice(b"MIDDLE");
        drop(f);

        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"TAIL").unwrap();
        expected.extend_from_slice(b"TAIL");
        drop(f);
        assert_eq!(fs::read(&path).unwrap(), expected);

        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(50_000).unwrap();
        expected.truncate(50_000);
        drop(f);
        assert_eq!(fs::read(&path).unwrap(), expected);

        fs::write(mnt.p("gone.txt"), b"short-lived").unwrap();
        wait_until("gone.txt uploaded", || env.get("gone.txt").is_some());
        fs::remove_file(mnt.p("gone.txt")).unwrap();
        assert!(!mnt.p("gone.txt").exists());

        // O_TRUNC through an ordinary rewrite.
        fs::write(mnt.p("rewrite.txt"), b"a long first version").unwrap();
        fs::write(mnt.p("rewrite.txt"), b"v2").unwrap();
        assert_eq!(fs::read(mnt.p("rewrite.txt")).unwrap(), b"v2");

        mnt.unmount();
        assert_eq!(env.get("f.bin").unwrap().0, expected);
        assert_eq!(env.get("rewrite.txt").unwrap().0, b"v2");
        assert!(
            env.get("gone.txt").is_none(),
            "unlinked file still in the bucket"
        );
    }
}

on_both_servers! {
    fn chmod_chown_utimens_persist_as_s3fs_metadata(env: Env) {
        let mnt = env.mount();
        let path = mnt.p("attrs.txt");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&path, Some(1234), Some(5678)).unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(when).unwrap();
        f.sync_all().unwrap(); // fsync works and asks for the upload now
        drop(f);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
        assert_eq!(meta.mtime(), 1_600_000_000);
        mnt.unmount();
        let (_, meta) = env.get("attrs.txt").unwrap();
        assert_eq!(meta["mode"], (libc::S_IFREG | 0o640).to_string());
        assert_eq!(meta["uid"], "1234");
        assert_eq!(meta["gid"], "5678");
        assert_eq!(meta["mtime"], "1600000000");
    }
}

on_both_servers! {
    fn big_files_go_up_as_multipart_uploads(env: Env) {
        let mnt = env.mount();
        let data = pattern(40 << 20, 7);
        fs::write(mnt.p("big.bin"), &data).unwrap();
        mnt.unmount();
        let etag = env.etag("big.bin").unwrap();
        assert!(
            etag.trim_matches('"').contains('-'),
            "not a multipart ETag: {etag}"
        );
        if !env.is_moto() {
            // Only the test server counts parts; on moto the ETag above says it.
            assert!(env.stats().upload_part >= 5);
        }
        assert_eq!(env.get("big.bin").unwrap().0, data);
        // Nothing else: an upload that landed but was taken for a failure comes back
        // as a conflict copy of itself.
        assert_eq!(env.keys(), ["big.bin"]);
    }
}

#[test]
fn statfs_reports_a_large_filesystem() {
    let env = Env::new();
    let mnt = env.mount();
    let path = std::ffi::CString::new(mnt.path.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs into a zeroed struct with a valid C string.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks as u64 * st.f_frsize as u64 >= 1 << 40);
    assert!(st.f_bavail > 0);
    assert_eq!(st.f_namemax, 255);
    mnt.unmount();
}

#[test]
fn fsync_remote_returns_once_the_object_is_in_the_bucket() {
    let env = Env::new();
    // A long upload delay: only the fsync can make the upload happen now.
    let mnt = env.mount_with(
        crate::support::BUCKET,
        &["--fsync-remote", "--upload-delay-ms", "600000"],
    );
    let mut f = fs::File::create(mnt.p("durable.txt")).unwrap();
    f.write_all(b"in the bucket when fsync returns").unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        env.get("durable.txt").unwrap().0,
        b"in the bucket when fsync returns"
    );
    fs::write(mnt.p("lazy.txt"), b"not fsynced").unwrap();
    assert!(
        env.get("lazy.txt").is_none(),
        "uploaded without fsync despite the delay"
    );
    drop(f);
    mnt.unmount();
}

/// The options /proc/self/mounts shows for the mount at `path`.
fn mount_options(path: &std::path::Path) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == path.to_str())
        .expect("mounted");
    line.split(' ').nth(3).unwrap().to_string()
}

fn access(path: &std::path::Path, mode: i32) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

#[test]
fn a_root_mount_answers_access_and_exec_as_root_and_the_option_brings_kernel_checks() {
    let env = Env::new();
    let mnt = env.mount();
    // Only root gets into this mount, so the kernel's mode checks are left off.
    assert!(!mount_options(&mnt.path).contains("default_permissions"));
    let script = mnt.p("run.sh");
    fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        access(&script, libc::R_OK | libc::W_OK),
        "root may read and write"
    );
    assert!(!access(&script, libc::X_OK), "X_OK needs an x bit");
    let refused = std::process::Command::new(&script).output().unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    fs::set_permissions(&script, fs::Permissions::from_mode(0o100)).unwrap();
    assert!(access(&script, libc::X_OK));
    // A parallel test's child may still hold our write descriptor (ETXTBSY) a moment.
    let mut ran = None;
    for _ in 0..100 {
        match std::process::Command::new(&script).output() {
            Ok(out) => {
                ran = Some(out);
                break;
            }
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(err) => panic!("exec failed: {err}"),
        }
    }
    assert_eq!(ran.expect("exec kept failing").stdout, b"ran\n");
    // A directory with mode 000 is no obstacle to root, as on a local disk.
    let closed = mnt.p("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(closed.join("inside.txt"), b"in").unwrap();
    assert_eq!(fs::read_dir(&closed).unwrap().count(), 1);
    assert!(access(&closed, libc::X_OK | libc::W_OK));
    mnt.unmount();

    let checked = env.mount_with(crate::support::BUCKET, &["-o", "default_permissions"]);
    assert!(mount_options(&checked.path).contains("default_permissions"));
    // With the kernel checking, root still reads anything and runs x-bit files.
    assert!(access(&checked.p("run.sh"), libc::R_OK | libc::X_OK));
    checked.unmount();
}
