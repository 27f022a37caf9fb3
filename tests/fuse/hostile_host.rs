//! A host shared with others: a cache dir that is not ours (or not safe), links
//! planted in it, a launcher's open descriptors, a read-only mount, look-alikes of our
//! probe in the bucket, and a non-empty mountpoint. Each through the real binary.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    is_mounted, s3syncfs, status, text, unmount_when_free, wait_until, Env, BUCKET,
};

/// The arguments of a daemonizing mount (run in the test dir: paths may be relative).
fn mount_args<'a>(env: &'a Env, mnt: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "mount",
        BUCKET,
        mnt,
        "--endpoint",
        &env.endpoint,
        "--path-style",
        "--request-timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    args
}

fn assert_refused(out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "succeeded: {}", text(out));
    for needle in needles {
        assert!(text(out).contains(needle), "no {needle:?} in {}", text(out));
    }
}

/// A daemon started by a daemonizing mount: unmounted and waited for (bounded) at the
/// end of the test, found by the pid in its cache dir's lock file.
struct Daemon {
    mnt: PathBuf,
    pid: u32,
}

impl Daemon {
    fn of(mnt: &Path, cache: &Path) -> Daemon {
        let pid = fs::read_to_string(cache.join("lock")).unwrap();
        Daemon {
            mnt: mnt.to_path_buf(),
            pid: pid.trim().parse().unwrap(),
        }
    }

    /// Gone, or a zombie nobody reaped yet.
    fn exited(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_or(true, |stat| {
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            state.starts_with('Z')
        })
    }

    fn unmount(self) {
        let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&self.mnt));
        assert!(out.status.success(), "{}", text(&out));
        wait_until("the daemon exits", || self.exited());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        for _ in 0..400 {
            if self.exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: kill(2) on the pid of a daemon this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

/// Every entry below `dir` and `dir` itself: type, mode, owner and bytes.
fn tree(dir: &Path) -> BTreeMap<String, (u32, u32, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    let meta = fs::symlink_metadata(dir).unwrap();
    all.insert(".".to_string(), (meta.mode(), meta.uid(), Vec::new()));
    while let Some(at) = todo.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let body = match (meta.is_file(), meta.file_type().is_symlink()) {
                (true, _) => fs::read(&path).unwrap(),
                (_, true) => fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
                _ => Vec::new(),
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            all.insert(rel, (meta.mode(), meta.uid(), body));
        }
    }
    all
}

/// A directory someone uses for something else: files of several modes, a `data/`
/// with a name like our content files, a subdirectory and a link.
fn foreign_dir(dir: &Path) {
    fs::create_dir_all(dir.join("data/nested")).unwrap();
    fs::create_dir_all(dir.join("projects")).unwrap();
    for (rel, body, mode) in [
        ("notes.txt", &b"my notes"[..], 0o644),
        ("secret.key", b"private", 0o600),
        ("run.sh", b"#!/bin/sh\n", 0o755),
        ("data/0000000000000001", b"looks like a cache file", 0o640),
        ("data/report.csv", b"a,b\n1,2\n", 0o664),
        ("data/nested/deep.bin", &[0u8, 1, 2, 255], 0o400),
        ("projects/plan.md", b"# plan", 0o600),
    ] {
        fs::write(dir.join(rel), body).unwrap();
        fs::set_permissions(dir.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    symlink("notes.txt", dir.join("link-to-notes")).unwrap();
    fs::set_permissions(dir.join("data"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_cache_dir_holding_other_files_is_refused_and_left_untouched() {
    let env = Env::new();
    fs::create_dir(env.dir.path().join("m")).unwrap();
    let home = env.dir.path().join("home");
    foreign_dir(&home);
    let before = tree(&home);
    // The daemonizing mount checks before it opens its log there ...
    let out = s3syncfs(&env, &mount_args(&env, "m", &["--cache-dir", "home"]));
    assert_refused(
        &out,
        &[
            "is not empty and is not an s3syncfs cache dir",
            "\"notes.txt\"",
            "cache_dir=",
        ],
    );
    // ... and so does the foreground one, and mount(8)'s helper form with -o.
    let out = s3syncfs(
        &env,
        &mount_args(&env, "m", &["--cache-dir", "home", "--foreground"]),
    );
    assert_refused(&out, &["is not an s3syncfs cache dir"]);
    let out = s3syncfs(&env, &mount_args(&env, "m", &["-o", "cache_dir=home"]));
    assert_refused(&out, &["is not an s3syncfs cache dir"]);
    assert!(!is_mounted(&env.dir.path().join("m")));
    assert_eq!(tree(&home), before, "every byte, mode and owner as it was");
}

#[test]
fn use_cache_makes_a_directory_per_bucket_under_its_root() {
    let env = Env::new();
    fs::create_dir(env.dir.path().join("m")).unwrap();
    // A shared root like /tmp: sticky, world-writable, full of other people's files.
    let root = env.dir.path().join("shared-tmp");
    foreign_dir(&root);
    fs::set_permissions(&root, fs::Permissions::from_mode(0o1777)).unwrap();
    let before = tree(&root);
    let out = s3syncfs(
        &env,
        &mount_args(&env, "m", &["-o", "use_cache=shared-tmp"]),
    );
    assert!(out.status.success(), "{}", text(&out));
    let cache = root.join(BUCKET);
    let daemon = Daemon::of(&env.dir.path().join("m"), &cache);
    fs::write(env.dir.path().join("m/f.txt"), b"through the mount").unwrap();
    daemon.unmount();
    assert_eq!(env.get("f.txt").unwrap().0, b"through the mount");
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o7777, 0o700);
    assert!(cache.join(".s3syncfs-cache").is_file());
    let mut after = tree(&root);
    after.retain(|rel, _| !rel.starts_with(BUCKET));
    assert_eq!(after, before, "the root and its files as they were");
}

#[test]
fn a_cache_dir_of_another_user_or_writable_by_others_is_refused() {
    let env = Env::new();
    fs::create_dir(env.dir.path().join("m")).unwrap();
    let theirs = env.dir.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    // Root runs the tests: the directory of another user is made with chown.
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = s3syncfs(&env, &mount_args(&env, "m", &["--cache-dir", "theirs"]));
    assert_refused(&out, &["belongs to uid 65534", "chown 0"]);
    assert!(
        fs::read_dir(&theirs).unwrap().next().is_none(),
        "nothing made in it"
    );

    let open = env.dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let out = s3syncfs(&env, &mount_args(&env, "m", &["--cache-dir", "open"]));
    assert_refused(&out, &["writable by its group and others", "chmod go-w"]);
    assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, 0o777);
    assert!(!is_mounted(&env.dir.path().join("m")));
}

#[test]
fn a_link_planted_in_the_cache_dir_is_refused_and_nothing_goes_through_it() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    let cache = env.dir.path().join("c");
    let first = env.mount_at(BUCKET, &mnt, &cache, &[]);
    first.unmount();
    let target = env.dir.path().join("shadow");
    fs::write(&target, b"not for the daemon").unwrap();
    for name in ["s3syncfs.log", "state.db", "state.journal", "lock"] {
        let planted = cache.join(name);
        let kept = cache.join(format!("{name}.kept"));
        // The log is there only after a daemonized mount: then the link is new.
        let existed = fs::rename(&planted, &kept).is_ok();
        symlink(&target, &planted).unwrap();
        for extra in [&[][..], &["--foreground"][..]] {
            let mut args = mount_args(&env, "m", &["--cache-dir", "c"]);
            args.extend_from_slice(extra);
            let out = s3syncfs(&env, &args);
            assert_refused(
                &out,
                &[&format!("{} is a symbolic link", planted.display())],
            );
        }
        fs::remove_file(&planted).unwrap();
        if existed {
            fs::rename(&kept, &planted).unwrap();
        }
    }
    assert_eq!(fs::read(&target).unwrap(), b"not for the daemon");
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o644);
    let again = env.mount_at(BUCKET, &mnt, &cache, &[]);
    again.unmount();
}

#[test]
fn our_files_are_private_whatever_the_umask() {
    let env = Env::new();
    fs::create_dir(env.dir.path().join("m")).unwrap();
    let mut mount = Command::new(env!("CARGO_BIN_EXE_s3syncfs"));
    mount
        .args(mount_args(&env, "m", &["--cache-dir", "deep/c"]))
        .env("AWS_ACCESS_KEY_ID", crate::support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::support::SECRET_KEY)
        .current_dir(env.dir.path());
    // SAFETY: umask in the child before exec.
    unsafe {
        mount.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = mount.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cache = env.dir.path().join("deep/c");
    let daemon = Daemon::of(&env.dir.path().join("m"), &cache);
    fs::write(env.dir.path().join("m/f.txt"), b"cached here").unwrap();
    let modes = |dir: &Path| -> Vec<(String, u32)> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().mode(),
                )
            })
            .collect()
    };
    for (name, mode) in modes(&cache).into_iter().chain(modes(&cache.join("data"))) {
        let want = if mode & libc::S_IFMT == libc::S_IFDIR {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode & 0o7777 & !want, 0, "{name}: mode {:o}", mode & 0o7777);
    }
    assert!(
        modes(&cache.join("data")).len() > 1,
        "content files were made"
    );
    for dir in [
        env.dir.path().join("deep"),
        cache.clone(),
        cache.join("data"),
    ] {
        assert_eq!(
            fs::metadata(&dir).unwrap().mode() & 0o7777,
            0o700,
            "{}",
            dir.display()
        );
    }
    daemon.unmount();
}

#[test]
fn a_cache_dir_of_an_earlier_version_is_adopted_with_its_pending_changes() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    let cache = env.dir.path().join("c");
    let first = env.mount_at(BUCKET, &mnt, &cache, &["--upload-delay-ms", "600000"]);
    fs::write(first.p("pending.txt"), b"not uploaded before the crash").unwrap();
    first.kill9();
    // What an earlier version leaves: the same layout without the marker.
    fs::remove_file(cache.join(".s3syncfs-cache")).unwrap();
    let again = env.mount_at(BUCKET, &mnt, &cache, &[]);
    let marker = fs::read_to_string(cache.join(".s3syncfs-cache")).unwrap();
    assert!(marker.contains(BUCKET), "{marker}");
    assert_eq!(
        fs::read(again.p("pending.txt")).unwrap(),
        b"not uploaded before the crash"
    );
    wait_until("the pending file is uploaded", || {
        env.get("pending.txt").is_some()
    });
    again.unmount();
}

/// Opens `path` without close-on-exec and takes an exclusive flock on it, in the
/// child before it runs the launcher: a shell's `exec 9>file; flock 9`.
fn hold_lock_across_exec(command: &mut Command, path: &Path) {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: open and flock are async-signal-safe; the string was made before fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600);
            if fd < 0 || libc::flock(fd, libc::LOCK_EX) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn the_daemon_keeps_no_descriptor_or_directory_of_its_launcher() {
    let env = Env::new();
    let work = env.dir.path().join("work");
    fs::create_dir_all(work.join("m")).unwrap();
    let held = env.dir.path().join("held.lock");
    let mut mount = Command::new(env!("CARGO_BIN_EXE_s3syncfs"));
    mount
        .args(mount_args(&env, "m", &["--cache-dir", "c"]))
        .env("AWS_ACCESS_KEY_ID", crate::support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::support::SECRET_KEY)
        .current_dir(&work);
    hold_lock_across_exec(&mut mount, &held);
    let out = mount.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let daemon = Daemon::of(&work.join("m"), &work.join("c"));

    let probe = fs::File::open(&held).unwrap();
    // SAFETY: flock on a descriptor we own.
    let free = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&probe),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(
        free, 0,
        "the launcher's lock is still held once mount returned"
    );
    let cwd = fs::read_link(format!("/proc/{}/cwd", daemon.pid)).unwrap();
    assert_eq!(cwd, Path::new("/"));
    // SAFETY: getsid reads a process's session id.
    let sid = unsafe { libc::getsid(daemon.pid as i32) };
    assert_eq!(
        sid, daemon.pid as i32,
        "the daemon leads a session of its own"
    );
    let open: Vec<PathBuf> = fs::read_dir(format!("/proc/{}/fd", daemon.pid))
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .collect();
    assert!(!open.contains(&held), "{open:?}");
    // The mount works: the readiness pipe and the daemon's own files were kept.
    fs::write(work.join("m/ok.txt"), b"served").unwrap();
    let out = s3syncfs(&env, &["status", work.join("m").to_str().unwrap()]);
    assert!(out.status.success(), "status: {}", text(&out));
    daemon.unmount();
    assert_eq!(env.get("ok.txt").unwrap().0, b"served");
}

/// Requests that change the bucket, as the test server counted them.
fn writes(s: &s3syncfs_testserver::StatsSnapshot) -> u64 {
    s.put + s.copy + s.delete + s.multipart_create + s.upload_part + s.multipart_complete
}

#[test]
fn a_read_only_mount_sends_no_write_at_all() {
    let env = Env::new();
    env.put("docs/a.txt", b"alpha", &[]);
    env.put("top.txt", b"top", &[]);
    let mnt = env.dir.path().join("m");
    let cache = env.dir.path().join("c");
    // An earlier read-write mount of the cache dir left a change it did not upload.
    let first = env.mount_at(BUCKET, &mnt, &cache, &["--upload-delay-ms", "600000"]);
    fs::write(first.p("pending.txt"), b"left by the crash").unwrap();
    first.kill9();

    let before = env.stats();
    let ro = env.mount_at(
        BUCKET,
        &mnt,
        &cache,
        &["--read-only", "--poll-interval", "1"],
    );
    assert_eq!(fs::read(ro.p("docs/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(ro.p("pending.txt")).unwrap(), b"left by the crash");
    let err = fs::write(ro.p("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // A poll or two, then the unmount with its drain.
    let lists = env.stats().list;
    wait_until("the mount polls the bucket", || {
        env.stats().list >= lists + 2
    });
    ro.unmount();
    let after = env.stats();
    assert!(
        after.get > before.get && after.list > before.list,
        "it did read"
    );
    assert_eq!(writes(&after), writes(&before), "{before:?} then {after:?}");
    assert!(env.get("pending.txt").is_none());

    // The next read-write mount uploads what waited.
    let rw = env.mount_at(BUCKET, &mnt, &cache, &[]);
    wait_until("the pending change is uploaded", || {
        env.get("pending.txt").is_some()
    });
    rw.unmount();
}

#[test]
fn objects_that_look_like_our_probe_are_shown_and_verified_as_the_users() {
    let env = Env::new();
    env.put(".s3syncfs-probe-notes.txt", b"a user's notes", &[]);
    env.put(".s3syncfs-probe-123-1700000000000000000", b"1", &[]);
    env.put("dir/.s3syncfs-probe", b"deeper down", &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    let mut names: Vec<String> = fs::read_dir(&mnt.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".s3syncfs-probe-123-1700000000000000000",
            ".s3syncfs-probe-notes.txt",
            "dir"
        ]
    );
    assert_eq!(
        fs::read(mnt.p(".s3syncfs-probe-notes.txt")).unwrap(),
        b"a user's notes"
    );
    assert_eq!(
        fs::read(mnt.p("dir/.s3syncfs-probe")).unwrap(),
        b"deeper down"
    );
    assert_eq!(status(&env, &mnt)["conditional_writes"], "honoured");
    let out = s3syncfs(&env, &["verify", mnt.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 files"), "{}", text(&out));
    // The reserved name itself cannot be made through the mount.
    let err = fs::write(mnt.p(".s3syncfs-probe"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    mnt.unmount();
    // The probe left nothing behind, and touched none of them.
    let keys = env.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(
        env.get(".s3syncfs-probe-123-1700000000000000000")
            .unwrap()
            .0,
        b"1"
    );
}

#[test]
fn a_users_object_at_the_reserved_name_is_never_written_over() {
    let env = Env::new();
    env.put(".s3syncfs-probe", b"someone else's bytes", &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    fs::write(mnt.p("f.txt"), b"uploaded with a HEAD first").unwrap();
    crate::support::sync(&env, &mnt);
    assert_eq!(status(&env, &mnt)["conditional_writes"], "ignored");
    mnt.unmount();
    assert_eq!(
        env.get(".s3syncfs-probe").unwrap().0,
        b"someone else's bytes"
    );
    assert!(env.get("f.txt").is_some());
}

#[test]
fn a_non_empty_mountpoint_is_refused_unless_nonempty() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    fs::create_dir(&mnt).unwrap();
    fs::write(mnt.join("underneath.txt"), b"hidden by a mount").unwrap();
    let out = s3syncfs(&env, &mount_args(&env, "m", &["--cache-dir", "c"]));
    assert_refused(
        &out,
        &[
            "mountpoint",
            "is not empty",
            "\"underneath.txt\"",
            "-o nonempty",
        ],
    );
    assert!(!is_mounted(&mnt));
    let out = s3syncfs(
        &env,
        &mount_args(&env, "m", &["--cache-dir", "c", "-o", "nonempty"]),
    );
    assert!(out.status.success(), "{}", text(&out));
    let daemon = Daemon::of(&mnt, &env.dir.path().join("c"));
    assert!(is_mounted(&mnt));
    assert!(!mnt.join("underneath.txt").exists(), "the mount covers it");
    daemon.unmount();
    assert_eq!(
        fs::read(mnt.join("underneath.txt")).unwrap(),
        b"hidden by a mount"
    );
}
