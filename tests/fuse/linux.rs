//! At home on a Linux host: mount(8) and fstab, credentials from the places the AWS
//! tools use, secrets kept out of logs, clear errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    is_mounted, text, unmount_when_free, wait_until, Env, Mount, ACCESS_KEY, BUCKET, SECRET_KEY,
};

/// Links the binary where mount(8) looks for helpers and programs, for one test;
/// whatever was there before comes back afterwards. With `S3SYNCFS_INSTALLED=1` (CI,
/// after `dpkg -i`) the package's /usr/bin/s3syncfs and /sbin/mount.s3syncfs are used
/// instead, and a /usr/local/bin/s3syncfs that would shadow them is moved aside.
struct Installed {
    links: Vec<(PathBuf, Option<PathBuf>)>,
}

fn installed_package() -> bool {
    std::env::var_os("S3SYNCFS_INSTALLED").is_some_and(|v| v == "1")
}

impl Installed {
    fn new() -> Installed {
        let package = installed_package();
        if package {
            for place in ["/usr/bin/s3syncfs", "/sbin/mount.s3syncfs"] {
                assert!(
                    Path::new(place).is_file(),
                    "S3SYNCFS_INSTALLED=1 but no {place}"
                );
            }
        }
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_s3syncfs"));
        let mut links = Vec::new();
        for place in ["/sbin/mount.s3syncfs", "/usr/local/bin/s3syncfs"] {
            let place = PathBuf::from(place);
            if package && place.starts_with("/sbin") {
                continue;
            }
            let backup = place.with_extension("before-test");
            let saved = fs::symlink_metadata(&place).is_ok().then(|| {
                fs::rename(&place, &backup).unwrap();
                backup
            });
            if !package {
                std::os::unix::fs::symlink(&exe, &place).unwrap();
            }
            links.push((place, saved));
        }
        Installed { links }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        for (place, saved) in &self.links {
            if !installed_package() {
                let _ = fs::remove_file(place);
            }
            if let Some(saved) = saved {
                let _ = fs::rename(saved, place);
            }
        }
    }
}

/// Detaches mounts a test made through mount(8), even when it fails.
struct Unmounts(Vec<PathBuf>);

impl Drop for Unmounts {
    fn drop(&mut self) {
        for path in &self.0 {
            if is_mounted(path) {
                let _ = Command::new("fusermount3").arg("-uz").arg(path).status();
            }
        }
    }
}

fn passwd_file(env: &Env, mode: u32) -> PathBuf {
    let path = env.dir.path().join(format!("passwd-{mode:o}"));
    fs::write(&path, format!("{BUCKET}:{ACCESS_KEY}:{SECRET_KEY}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// Runs `command` as nobody, a user other than the mount's owner.
fn run_as_nobody(command: &mut Command) -> Output {
    use std::os::unix::process::CommandExt;
    run(command.uid(65534).gid(65534))
}

/// An `allow_other` mount other users can reach, LIST-only (the kernel first sees
/// default modes: 0666 with umask=000), with `options` added to its `-o`.
fn shared_list_only_mount(env: &Env, options: &str) -> Mount {
    // Other users must reach the mountpoint inside the test's private directory.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.mount_with(
        BUCKET,
        &[
            "-o",
            &format!("allow_other,umask=000{options}"),
            "--metadata-wait",
            "0",
            "--metadata-fill",
            "0",
        ],
    )
}

#[test]
fn fstab_lines_mount_with_mount_a_and_go_with_umount() {
    let env = Env::new();
    let _installed = Installed::new();
    let passwd = passwd_file(&env, 0o600);
    let (one, two) = (env.dir.path().join("one"), env.dir.path().join("two"));
    fs::create_dir(&one).unwrap();
    fs::create_dir(&two).unwrap();
    let _cleanup = Unmounts(vec![one.clone(), two.clone()]);
    let common = format!(
        "_netdev,nofail,endpoint={},path_style,credentials_file={},poll_interval=1",
        env.endpoint,
        passwd.display()
    );
    let fstab = env.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a private fstab\n\
             {BUCKET}:/album {} s3syncfs {common},cache_dir={} 0 0\n\
             {BUCKET} {} fuse.s3syncfs {common},cache_dir={} 0 0\n",
            one.display(),
            env.dir.path().join("cache-one").display(),
            two.display(),
            env.dir.path().join("cache-two").display(),
        ),
    )
    .unwrap();
    // mount(8) runs the helpers without our environment's credentials: none needed.
    let out = run(Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg("-a")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY"));
    assert!(out.status.success(), "mount -a failed: {}", text(&out));
    assert!(is_mounted(&one) && is_mounted(&two));
    // Both daemons run the binary under test: the package's when it is installed.
    let expected = match installed_package() {
        true => PathBuf::from("/usr/bin/s3syncfs"),
        false => fs::canonicalize(env!("CARGO_BIN_EXE_s3syncfs")).unwrap(),
    };
    for cache in ["cache-one", "cache-two"] {
        let pid = fs::read_to_string(env.dir.path().join(cache).join("lock")).unwrap();
        let exe = fs::read_link(format!("/proc/{}/exe", pid.trim())).unwrap();
        assert_eq!(exe, expected, "the daemon of {cache} runs another binary");
    }

    fs::write(one.join("photo.jpg"), b"jpeg bytes").unwrap();
    wait_until("the file reaches the bucket under the prefix", || {
        env.get("album/photo.jpg").is_some()
    });
    wait_until("the other mount sees it", || {
        fs::read(two.join("album/photo.jpg")).is_ok_and(|b| b == b"jpeg bytes")
    });

    for mountpoint in [&one, &two] {
        let out = unmount_when_free(Command::new("umount").arg(mountpoint));
        assert!(out.status.success(), "umount failed: {}", text(&out));
        assert!(!is_mounted(mountpoint));
    }
    // A failed helper mount exits with mount(8)'s failure code and says why.
    let out = run(Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&one)
        .arg("-o")
        .arg("no_such_option"));
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    assert!(text(&out).contains("unknown option"), "{}", text(&out));
    assert!(!is_mounted(&one));
}

/// A daemonized mount with the given extra arguments and environment changes.
fn mount_cmd(env: &Env, mnt: &Path, cache: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3syncfs"));
    command
        .args(["mount", BUCKET])
        .arg(mnt)
        .args([
            "--endpoint",
            &env.endpoint,
            "--path-style",
            "--request-timeout",
            "5",
        ])
        .arg("--cache-dir")
        .arg(env.dir.path().join(cache))
        .args(["--log-level", "debug"])
        .args(extra)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", env.dir.path());
    command
}

#[test]
fn credentials_come_from_profiles_and_passwd_files_and_never_show() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let _cleanup = Unmounts(vec![mnt.clone()]);
    let aws = env.dir.path().join(".aws");
    fs::create_dir(&aws).unwrap();
    fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [work]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();

    let out = run(&mut mount_cmd(&env, &mnt, "c1", &[]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refused the credentials"),
        "{}",
        text(&out)
    );

    let out = run(&mut mount_cmd(&env, &mnt, "c2", &["-o", "profile=work"]));
    assert!(out.status.success(), "{}", text(&out));
    fs::write(mnt.join("via-profile.txt"), b"ok").unwrap();
    let out =
        run(Command::new(env!("CARGO_BIN_EXE_s3syncfs")).args(["sync", mnt.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.get("via-profile.txt").unwrap().0, b"ok");
    let status = run(Command::new(env!("CARGO_BIN_EXE_s3syncfs")).args([
        "status",
        mnt.to_str().unwrap(),
        "--json",
    ]));
    assert!(!text(&status).contains(SECRET_KEY));
    let ps = run(Command::new("ps").args(["-eo", "args"]));
    assert!(!text(&ps).contains(SECRET_KEY), "a secret shows in ps");
    assert!(unmount_when_free(Command::new("umount").arg(&mnt))
        .status
        .success());
    let log = fs::read_to_string(env.dir.path().join("c2/s3syncfs.log")).unwrap();
    assert!(log.contains("mounted"), "{log}");
    assert!(!log.contains(SECRET_KEY), "the secret is in the log");

    let open = passwd_file(&env, 0o644);
    let out = run(&mut mount_cmd(
        &env,
        &mnt,
        "c3",
        &["-o", &format!("credentials_file={}", open.display())],
    ));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("readable by group or others"),
        "{}",
        text(&out)
    );

    let private = passwd_file(&env, 0o600);
    let arg = format!("credentials_file={}", private.display());
    let out = run(&mut mount_cmd(&env, &mnt, "c4", &["-o", &arg]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(unmount_when_free(Command::new("umount").arg(&mnt))
        .status
        .success());

    // Nothing at all: a clear error before any request.
    fs::remove_dir_all(&aws).unwrap();
    let out = run(&mut mount_cmd(&env, &mnt, "c5", &[]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no usable credentials"),
        "{}",
        text(&out)
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn more_bad_input_is_refused_with_a_reason() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let file = env.dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let creds = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let out = run(mount_cmd(&env, &file, "c1", &[]).envs(creds));
    assert!(text(&out).contains("is not a directory"), "{}", text(&out));
    let out = run(mount_cmd(&env, &mnt, "plain-file/cache", &[]).envs(creds));
    assert!(!out.status.success());
    assert!(text(&out).contains("cache dir"), "{}", text(&out));
    let out = run(mount_cmd(&env, &mnt, "c2", &["-o", "nosuch"]).envs(creds));
    assert!(
        text(&out).contains("unknown option \"nosuch\""),
        "{}",
        text(&out)
    );
    let out = run(mount_cmd(&env, &mnt, "c3", &["--cache-size", "lots"]).envs(creds));
    assert!(text(&out).contains("not a size"), "{}", text(&out));
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_wide_owner_and_modes_apply_to_objects_without_metadata() {
    let env = Env::new();
    env.put("plain.txt", b"p", &[]);
    env.put("dir/inner.txt", b"i", &[]);
    let mnt = env.mount_with(
        BUCKET,
        &[
            "-o",
            "uid=1234,gid=2345,umask=027,ro",
            "--metadata-wait",
            "0",
        ],
    );
    use std::os::unix::fs::MetadataExt;
    let file = fs::metadata(mnt.p("plain.txt")).unwrap();
    assert_eq!(
        (file.uid(), file.gid(), file.mode() & 0o777),
        (1234, 2345, 0o640)
    );
    let dir = fs::metadata(mnt.p("dir")).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o750);
    let err = fs::write(mnt.p("new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    mnt.unmount();
}

/// s3fs (Debian package s3fs) mounted in the foreground on the test server.
pub(crate) struct S3fs {
    child: std::process::Child,
    path: PathBuf,
}

impl S3fs {
    pub(crate) fn mount(env: &Env, path: &Path) -> S3fs {
        let passwd = passwd_file(env, 0o600);
        let child = Command::new("s3fs")
            .arg(BUCKET)
            .arg(path)
            .arg("-f")
            .arg("-o")
            .arg(format!(
                "url={},use_path_request_style,listobjectsv2,passwd_file={},stat_cache_expire=1",
                env.endpoint,
                passwd.display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3fs is not installed (apt-get install s3fs)");
        let s3fs = S3fs {
            child,
            path: path.to_path_buf(),
        };
        wait_until("s3fs mounted", || is_mounted(path));
        s3fs
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn files_round_trip_between_s3fs_and_s3syncfs() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let theirs = env.dir.path().join("s3fs");
    fs::create_dir(&theirs).unwrap();
    let s3fs = S3fs::mount(&env, &theirs);
    fs::write(theirs.join("from-s3fs.txt"), b"written by s3fs").unwrap();
    fs::set_permissions(
        theirs.join("from-s3fs.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let old = libc::timespec {
        tv_sec: 1_600_000_000,
        tv_nsec: 0,
    };
    set_mtime(&theirs.join("from-s3fs.txt"), old);
    fs::create_dir(theirs.join("dir-from-s3fs")).unwrap();
    std::os::unix::fs::symlink("from-s3fs.txt", theirs.join("link-from-s3fs")).unwrap();

    let ours = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    let file = fs::metadata(ours.p("from-s3fs.txt")).unwrap();
    assert_eq!(
        fs::read(ours.p("from-s3fs.txt")).unwrap(),
        b"written by s3fs"
    );
    // (An open checks the object again once the metadata TTL has passed, should s3fs
    // still have been storing its chmod or touch.)
    wait_until("s3fs attributes through s3syncfs", || {
        let _ = fs::read(ours.p("from-s3fs.txt"));
        let m = fs::metadata(ours.p("from-s3fs.txt")).unwrap();
        m.mode() & 0o7777 == 0o640 && m.mtime() == 1_600_000_000
    });
    assert!(file.is_file());
    assert!(fs::metadata(ours.p("dir-from-s3fs")).unwrap().is_dir());
    assert_eq!(
        fs::read_link(ours.p("link-from-s3fs")).unwrap(),
        Path::new("from-s3fs.txt")
    );

    fs::write(ours.p("from-s3syncfs.txt"), b"written by s3syncfs").unwrap();
    fs::set_permissions(
        ours.p("from-s3syncfs.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    set_mtime(
        &ours.p("from-s3syncfs.txt"),
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 0,
        },
    );
    fs::create_dir(ours.p("dir-from-s3syncfs")).unwrap();
    std::os::unix::fs::symlink("from-s3syncfs.txt", ours.p("link-from-s3syncfs")).unwrap();
    let out =
        run(Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
            .args(["sync", ours.path.to_str().unwrap()]));
    assert!(out.status.success(), "{}", text(&out));

    wait_until("s3syncfs's file through s3fs", || {
        fs::read(theirs.join("from-s3syncfs.txt")).is_ok_and(|b| b == b"written by s3syncfs")
    });
    let m = fs::metadata(theirs.join("from-s3syncfs.txt")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, 1_500_000_000));
    assert!(fs::metadata(theirs.join("dir-from-s3syncfs"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read_link(theirs.join("link-from-s3syncfs")).unwrap(),
        Path::new("from-s3syncfs.txt")
    );
    drop(s3fs);
    ours.unmount();
}

fn set_mtime(path: &Path, mtime: libc::timespec) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [mtime, mtime];
    // SAFETY: a valid C path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

#[test]
fn with_allow_other_a_private_object_in_a_list_only_directory_stays_private() {
    let env = Env::new();
    env.put(
        "shared/private.txt",
        b"secret",
        &[("mode", "33152"), ("uid", "0")],
    ); // 0600
    env.put("shared/public.txt", b"hello", &[]);
    env.put(
        "shared/rootonly.txt",
        b"keep",
        &[("mode", "33188"), ("uid", "0")],
    ); // 0644
    let mnt = shared_list_only_mount(&env, "");
    let cat_as_nobody = |name: &str| run_as_nobody(Command::new("cat").arg(mnt.p(name)));
    let public = cat_as_nobody("shared/public.txt");
    assert!(public.status.success(), "{}", text(&public));
    assert_eq!(public.stdout, b"hello");
    let private = cat_as_nobody("shared/private.txt");
    assert!(!private.status.success(), "another user read a 0600 file");
    assert!(
        text(&private).contains("Permission denied"),
        "{}",
        text(&private)
    );
    // Its owner (root) still reads it.
    assert_eq!(fs::read(mnt.p("shared/private.txt")).unwrap(), b"secret");
    // Refused before anything happens: an O_TRUNC open by another user truncates nothing.
    let truncate = run_as_nobody(
        Command::new("sh")
            .arg("-c")
            .arg(format!(": > {}", mnt.p("shared/rootonly.txt").display())),
    );
    assert!(
        !truncate.status.success(),
        "another user truncated a 0644 file"
    );
    assert_eq!(fs::read(mnt.p("shared/rootonly.txt")).unwrap(), b"keep");
    mnt.unmount();
}

#[test]
fn an_open_by_another_user_checks_the_object_once() {
    let env = Env::new();
    env.put("shared/public.txt", b"hello", &[]);
    // metadata_ttl=0: every open checks the object with a HEAD.
    let mnt = shared_list_only_mount(&env, ",metadata_ttl=0");
    // Listed and looked up first, so that the open is the only thing left to ask.
    assert_eq!(fs::metadata(mnt.p("shared/public.txt")).unwrap().len(), 5);
    let before = env.stats().head;
    let out = run_as_nobody(Command::new("cat").arg(mnt.p("shared/public.txt")));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"hello");
    // The permission check and the open share one look at the object.
    assert_eq!(env.stats().head - before, 1, "HEADs for one open");
    mnt.unmount();
}
