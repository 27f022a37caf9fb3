//! What other clients put in the bucket, seen through the mount; listing and ranged
//! reads measured in requests and bytes; the tree surviving unmount and mount.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{on_both_servers, pattern, status, wait_until, Env, BUCKET};

on_both_servers! {
    fn objects_from_another_client_appear_with_their_directories(env: Env) {
        env.put("top.txt", b"top", &[]);
        env.put("photos/2024/a.jpg", b"jpeg", &[]);
        env.put("marker-only/", b"", &[]);
        env.put(
            "s3fs.txt",
            b"s",
            &[
                ("mode", "33184"),
                ("uid", "42"),
                ("gid", "43"),
                ("mtime", "1500000000"),
            ],
        );
        let mnt = env.mount_with(BUCKET, &["--metadata-wait", "0", "--poll-interval", "0"]);
        let mut names: Vec<String> = fs::read_dir(&mnt.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["marker-only", "photos", "s3fs.txt", "top.txt"]);
        assert!(fs::metadata(mnt.p("photos/2024")).unwrap().is_dir());
        assert!(fs::metadata(mnt.p("marker-only")).unwrap().is_dir());
        assert_eq!(fs::read(mnt.p("photos/2024/a.jpg")).unwrap(), b"jpeg");
        // Opening an object learns its metadata with one HEAD.
        assert_eq!(fs::read(mnt.p("s3fs.txt")).unwrap(), b"s");
        wait_until("s3fs attributes after open", || {
            let m = fs::metadata(mnt.p("s3fs.txt")).unwrap();
            m.mode() == 33184 && m.uid() == 42 && m.gid() == 43 && m.mtime() == 1_500_000_000
        });
        mnt.unmount();
    }
}

#[test]
fn listing_a_large_directory_costs_list_requests_only() {
    let env = Env::new();
    for i in 0..2500 {
        env.put(&format!("many/file-{i:05}"), b"x", &[]);
    }
    // Default options: a directory this large is listed with LIST requests only.
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    // The directory itself is looked up first (the root's one entry may get its HEAD).
    assert!(fs::metadata(mnt.p("many")).unwrap().is_dir());
    let before = env.stats();
    let mut count = 0;
    for entry in fs::read_dir(mnt.p("many")).unwrap() {
        let meta = fs::symlink_metadata(entry.unwrap().path()).unwrap(); // ls -l
        assert_eq!(meta.len(), 1);
        count += 1;
    }
    assert_eq!(count, 2500);
    let after = env.stats();
    assert_eq!(after.head - before.head, 0, "ls -l sent HEAD requests");
    assert_eq!(after.get - before.get, 0, "ls -l sent GET requests");
    let lists = after.list - before.list;
    assert!(
        (2..=4).contains(&lists),
        "{lists} LIST requests for 2,500 keys"
    );
    mnt.unmount();
}

#[test]
fn directories_known_from_the_poll_list_without_requests() {
    let env = Env::new();
    for i in 0..300 {
        env.put(&format!("big/f-{i:03}"), &vec![b'x'; i], &[]);
    }
    env.put("small/one", b"1", &[("mode", "33152")]); // 0600, s3fs style
                                                      // The first poll runs at mount; none after it during the test.
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "3600"]);
    wait_until("the first poll", || {
        !status(&env, &mnt)["remote_checked"].is_null()
    });
    let before = env.stats();
    let mut sizes = Vec::new();
    for entry in fs::read_dir(mnt.p("big")).unwrap() {
        sizes.push(fs::symlink_metadata(entry.unwrap().path()).unwrap().len()); // ls -l
    }
    sizes.sort();
    assert_eq!(sizes, (0..300).collect::<Vec<u64>>());
    // The metadata of a small directory is still waited for on first use.
    let meta = fs::metadata(mnt.p("small/one")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(fs::read(mnt.p("small/one")).unwrap(), b"1");
    let after = env.stats();
    assert_eq!(
        after.list - before.list,
        0,
        "a LIST for directories the poll saw"
    );
    mnt.unmount();
}

#[test]
fn reading_a_little_of_a_big_object_fetches_a_little() {
    let env = Env::new();
    let size = 256usize << 20;
    let data = pattern(size, 3);
    env.put("huge.bin", &data, &[]);
    let mnt = env.mount();
    let before = env.stats();
    let mut f = fs::File::open(mnt.p("huge.bin")).unwrap();
    f.seek(SeekFrom::Start(128 << 20)).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[128 << 20..(128 << 20) + 4096]);
    let fetched = env.stats().get_bytes - before.get_bytes;
    assert!(fetched <= 4 << 20, "fetched {fetched} bytes to read 4 KiB");
    drop(f);
    mnt.unmount();
}

on_both_servers! {
    fn the_tree_survives_unmount_and_mount(env: Env) {
        let mnt = env.mount();
        fs::create_dir_all(mnt.p("a/b/empty")).unwrap();
        fs::write(mnt.p("a/b/file.txt"), b"content").unwrap();
        fs::set_permissions(mnt.p("a/b/file.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(mnt.p("a/b/empty"), fs::Permissions::from_mode(0o711)).unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_234_567_890);
        fs::File::options()
            .write(true)
            .open(mnt.p("a/b/file.txt"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        std::os::unix::fs::symlink("b/file.txt", mnt.p("a/link")).unwrap();
        mnt.unmount();

        let mnt = env.mount(); // a fresh cache dir: everything comes from the bucket
                               // Small directories wait for their metadata, so the first look is already exact.
        let m = fs::metadata(mnt.p("a/b/file.txt")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, 1_234_567_890));
        let empty = fs::metadata(mnt.p("a/b/empty")).unwrap();
        assert!(empty.is_dir());
        assert_eq!(empty.mode() & 0o7777, 0o711);
        assert!(fs::symlink_metadata(mnt.p("a/link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(mnt.p("a/b/file.txt")).unwrap(), b"content");
        assert_eq!(
            fs::read_link(mnt.p("a/link")).unwrap().to_str(),
            Some("b/file.txt")
        );
        assert_eq!(fs::read(mnt.p("a/link")).unwrap(), b"content");
        mnt.unmount();
    }
}

on_both_servers! {
    fn a_prefix_mount_sees_only_its_part_of_the_bucket(env: Env) {
        env.put("outside.txt", b"o", &[]);
        env.put("team/inside.txt", b"i", &[]);
        let mnt = env.mount_with(&format!("{BUCKET}:team"), &[]);
        let names: Vec<String> = fs::read_dir(&mnt.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["inside.txt"]);
        fs::write(mnt.p("added.txt"), b"a").unwrap();
        mnt.unmount();
        assert_eq!(
            env.keys(),
            vec!["outside.txt", "team/added.txt", "team/inside.txt"]
        );
    }
}

on_both_servers! {
    fn another_clients_chmod_chown_and_touch_are_seen_at_the_next_open(env: Env) {
        let meta = |mode: &'static str, uid: &'static str, mtime: &'static str| {
            [("mode", mode), ("uid", uid), ("gid", "0"), ("mtime", mtime)]
        };
        env.put("f.txt", b"body", &meta("33188", "0", "1600000000")); // 0644
        let mnt = env.mount_with(BUCKET, &["--poll-interval", "0", "--metadata-ttl", "0"]);
        assert_eq!(fs::read(mnt.p("f.txt")).unwrap(), b"body");
        let before = fs::metadata(mnt.p("f.txt")).unwrap();
        assert_eq!((before.mode() & 0o7777, before.uid()), (0o644, 0));
        // A metadata-only change, as s3fs makes it: the same body, so the same ETag.
        let etag = env.etag("f.txt");
        env.put("f.txt", b"body", &meta("33152", "1234", "1700000000")); // 0600
        assert_eq!(env.etag("f.txt"), etag, "not a metadata-only change");
        // The open checks the object (TTL 0) and takes what the bucket now says.
        assert_eq!(fs::read(mnt.p("f.txt")).unwrap(), b"body");
        let after = fs::metadata(mnt.p("f.txt")).unwrap();
        assert_eq!(
            (after.mode() & 0o7777, after.uid(), after.mtime()),
            (0o600, 1234, 1_700_000_000)
        );
        mnt.unmount();
    }
}

#[test]
fn a_head_of_our_own_upload_keeps_the_local_mtime_to_the_nanosecond() {
    let env = Env::new();
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0", "--metadata-ttl", "0"]);
    fs::write(mnt.p("own.txt"), b"mine").unwrap();
    let written = fs::metadata(mnt.p("own.txt")).unwrap();
    crate::support::sync(&env, &mnt);
    // Every open now checks the object, whose mtime header keeps whole seconds.
    assert_eq!(fs::read(mnt.p("own.txt")).unwrap(), b"mine");
    let after = fs::metadata(mnt.p("own.txt")).unwrap();
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.mode()),
        (written.mtime(), written.mtime_nsec(), written.mode())
    );
    mnt.unmount();
}

/// Another client's symlink, listed as a file until its HEAD says otherwise, becomes
/// a symlink through a new inode: under the same inode the kernel would take the new
/// type for a broken inode and fail every call on it with EIO.
#[test]
fn a_symlink_listed_as_a_file_becomes_a_symlink_without_eio() {
    let env = Env::new();
    let mode = (libc::S_IFLNK | 0o777).to_string();
    env.put("d/link", b"target.txt", &[("mode", mode.as_str())]);
    env.put("d/target.txt", b"pointed at", &[]);
    // No metadata fill after the listing: the listing alone says "file".
    let mnt = env.mount_with(BUCKET, &["--metadata-fill", "0", "--metadata-wait", "0"]);
    let link = mnt.p("d/link");
    // A directory read (READDIRPLUS) hands the kernel the entry with its type.
    let listed_as_file = fs::read_dir(mnt.p("d"))
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "link")
        .is_some_and(|e| e.file_type().unwrap().is_file());
    assert!(listed_as_file, "listed as a file until a HEAD");
    // The open's check (a HEAD) learns the object is a symlink; the open itself goes
    // on with what the kernel asked for.
    let opened = fs::read(&link).expect("the open that learns the type");
    assert_eq!(opened, b"target.txt");
    // Every call answers while the kernel catches up: no EIO from a changed type.
    wait_until("the name shows as a symlink", || {
        let now = fs::symlink_metadata(&link).expect("stat during the type change");
        now.file_type().is_symlink()
    });
    assert_eq!(fs::read_link(&link).unwrap().to_str(), Some("target.txt"));
    assert_eq!(fs::read(&link).unwrap(), b"pointed at");
    mnt.unmount();
}
