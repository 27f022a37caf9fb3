//! Unit tests of the cache dir checks: what is taken as ours, what is refused, and
//! that a refusal changes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn owner(bucket: &str, prefix: &str) -> Owner {
    Owner {
        endpoint: "http://127.0.0.1:1".into(),
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Every entry below `dir`: its mode and, for files, its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let body = match meta.is_file() {
                true => fs::read(&path).unwrap(),
                false => Vec::new(),
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            all.insert(rel, (meta.mode(), body));
        }
    }
    all
}

fn earlier_version_dir(dir: &Path) {
    fs::create_dir(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    rusqlite::Connection::open(dir.join("state.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    fs::create_dir(dir.join("data")).unwrap();
    fs::write(dir.join("data/00000000000000a1"), b"cached").unwrap();
    fs::write(dir.join("lock"), b"123\n").unwrap();
    fs::write(dir.join("s3syncfs.log"), b"old log\n").unwrap();
}

fn error(result: anyhow::Result<Found>) -> String {
    format!("{:#}", result.unwrap_err())
}

#[test]
fn a_new_dir_is_made_private_and_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/cache");
    assert_eq!(prepare(&dir, &owner("b", "")).unwrap(), Found::Created);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(MARKER)), 0o600);
    assert_eq!(prepare(&dir, &owner("b", "")).unwrap(), Found::Marked);
}

#[test]
fn an_empty_dir_is_marked_and_its_mode_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(prepare(&dir, &owner("b", "p/")).unwrap(), Found::Empty);
    assert_eq!(mode(&dir), 0o755);
    assert!(dir.join(MARKER).is_file());
}

#[test]
fn a_dir_with_other_files_is_refused_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home");
    fs::create_dir_all(dir.join("data/sub")).unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    fs::write(dir.join("data/0000000000000001"), b"looks like ours").unwrap();
    fs::write(dir.join("data/sub/x"), b"x").unwrap();
    fs::set_permissions(dir.join("notes.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o751)).unwrap();
    let before = snapshot(&dir);
    let dir_mode = mode(&dir);
    let why = error(prepare(&dir, &owner("b", "")));
    assert!(why.contains("is not an s3syncfs cache dir"), "{why}");
    assert!(why.contains("\"notes.txt\""), "{why}");
    assert!(why.contains("cache_dir="), "{why}");
    assert_eq!(snapshot(&dir), before);
    assert_eq!(mode(&dir), dir_mode);
}

#[test]
fn s3fs_cache_of_the_bucket_gets_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mybucket");
    fs::create_dir_all(dir.join("photos")).unwrap();
    fs::create_dir(tmp.path().join(".mybucket.stat")).unwrap();
    let why = error(prepare(&dir, &owner("mybucket", "")));
    assert!(why.contains("the cache s3fs keeps"), "{why}");
}

#[test]
fn an_earlier_versions_cache_dir_is_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    earlier_version_dir(&dir);
    let before = snapshot(&dir);
    assert_eq!(prepare(&dir, &owner("b", "")).unwrap(), Found::Adopted);
    let mut after = snapshot(&dir);
    assert!(after.remove(MARKER).is_some());
    assert_eq!(after, before, "adopting only adds the marker");
    assert_eq!(prepare(&dir, &owner("b", "")).unwrap(), Found::Marked);
}

#[test]
fn an_earlier_layout_with_anything_else_in_it_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let stranger = tmp.path().join("stranger");
    earlier_version_dir(&stranger);
    fs::write(stranger.join("README"), b"x").unwrap();
    assert!(error(prepare(&stranger, &owner("b", ""))).contains("\"README\""));

    let odd_data = tmp.path().join("odd-data");
    earlier_version_dir(&odd_data);
    fs::write(odd_data.join("data/photo.jpg"), b"x").unwrap();
    assert!(error(prepare(&odd_data, &owner("b", ""))).contains("data/photo.jpg"));

    let not_sqlite = tmp.path().join("not-sqlite");
    earlier_version_dir(&not_sqlite);
    fs::write(not_sqlite.join("state.db"), b"just text, not a database").unwrap();
    assert!(error(prepare(&not_sqlite, &owner("b", ""))).contains("no state.db"));
    for dir in [stranger, odd_data, not_sqlite] {
        assert!(!dir.join(MARKER).exists());
    }
}

#[test]
fn a_marker_of_another_bucket_or_prefix_is_refused_another_endpoint_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    prepare(&dir, &owner("one", "p/")).unwrap();
    let why = error(prepare(&dir, &owner("two", "p/")));
    assert!(why.contains("is the cache of one:p/"), "{why}");
    assert!(why.contains("not of two:p/"), "{why}");
    assert!(error(prepare(&dir, &owner("one", ""))).contains("not of one"));
    let mut moved = owner("one", "p/");
    moved.endpoint = "http://127.0.0.1:2".into();
    assert_eq!(prepare(&dir, &moved).unwrap(), Found::Marked);
    let text = fs::read_to_string(dir.join(MARKER)).unwrap();
    assert!(text.contains("127.0.0.1:2"), "{text}");
    assert!(!dir.join(MARKER_NEW).exists());
}

#[test]
fn an_unreadable_marker_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(MARKER), b"garbage").unwrap();
    let why = error(prepare(&dir, &owner("b", "")));
    assert!(why.contains("remove the marker"), "{why}");
}

#[test]
fn group_or_world_writable_dirs_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    for (m, who) in [
        (0o770, "its group"),
        (0o707, "others"),
        (0o777, "its group and others"),
    ] {
        let dir = tmp.path().join(format!("m{m:o}"));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
        let why = error(prepare(&dir, &owner("b", "")));
        assert!(why.contains(&format!("writable by {who}")), "{why}");
        assert!(why.contains("chmod go-w"), "{why}");
        assert_eq!(mode(&dir), m, "refused without a change");
        assert!(!dir.join(MARKER).exists());
    }
}

#[test]
fn owner_and_mode_rules() {
    assert!(check_owner_and_mode("/c", 1000, 0o40700, 1000).is_ok());
    assert!(check_owner_and_mode("/c", 1000, 0o40755, 1000).is_ok());
    let why = check_owner_and_mode("/c", 1001, 0o40700, 1000).unwrap_err();
    assert!(
        why.contains("belongs to uid 1001") && why.contains("chown 1000 /c"),
        "{why}"
    );
    // Root mounting a user's directory is refused as well.
    assert!(check_owner_and_mode("/c", 1000, 0o40700, 0).is_err());
    let why = check_owner_and_mode("/tmp", 0, 0o41777, 0).unwrap_err();
    assert!(why.contains("mode 1777"), "{why}");
}

#[test]
fn a_dir_of_another_user_is_refused() {
    if euid() != 0 {
        return; // making a directory another user's needs root
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("theirs");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let why = error(prepare(&dir, &owner("b", "")));
    assert!(why.contains("belongs to uid 65534"), "{why}");
    assert!(fs::read_dir(&dir).unwrap().next().is_none());
    // A link to it, or a link another user owns, is no way around that.
    let ours = tmp.path().join("ours");
    fs::create_dir(&ours).unwrap();
    let link = tmp.path().join("link");
    symlink(&ours, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let why = error(prepare(&link, &owner("b", "")));
    assert!(why.contains("symbolic link owned by uid 65534"), "{why}");
}

#[test]
fn a_link_planted_at_one_of_our_names_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::write(&target, b"precious").unwrap();
    for name in ["s3syncfs.log", "state.db", "lock", "state.journal", "data"] {
        let dir = tmp.path().join(format!("c-{name}"));
        prepare(&dir, &owner("b", "")).unwrap();
        symlink(&target, dir.join(name)).unwrap();
        let why = error(prepare(&dir, &owner("b", "")));
        assert!(why.contains("is a symbolic link"), "{name}: {why}");
        assert!(
            why.contains(&format!("rm {}", dir.join(name).display())),
            "{why}"
        );
    }
    assert_eq!(fs::read(&target).unwrap(), b"precious");
}

#[test]
fn our_files_open_without_following_links_and_private() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::write(&target, b"precious").unwrap();
    let link = tmp.path().join("s3syncfs.log");
    symlink(&target, &link).unwrap();
    let err = open_file(&link, OpenOptions::new().append(true), true).unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    let new = tmp.path().join("new");
    open_file(&new, OpenOptions::new().append(true), true).unwrap();
    assert_eq!(mode(&new), 0o600);
    fs::write(&new, b"kept").unwrap();
    open_file(&new, OpenOptions::new().append(true), true).unwrap();
    assert_eq!(
        fs::read(&new).unwrap(),
        b"kept",
        "an existing file is opened as it is"
    );
    let absent = tmp.path().join("absent");
    let err = open_file(&absent, OpenOptions::new().read(true), false).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    let fifo = tmp.path().join("dir");
    fs::create_dir(&fifo).unwrap();
    assert!(open_file(&fifo, OpenOptions::new().read(true), false).is_err());
}

#[test]
fn content_file_names() {
    assert!(is_content_file_name("00000000000000a1"));
    assert!(!is_content_file_name("00000000000000A1"));
    assert!(!is_content_file_name("a1"));
    assert!(!is_content_file_name("photo.jpg.00000000"));
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The cache dir a mount command line names.
fn cache_dir_of(extra: &[&str]) -> std::path::PathBuf {
    use clap::Parser;
    let mut argv = strings(&["s3syncfs", "mount", "bucket", "/mnt"]);
    argv.extend(strings(extra));
    let argv = crate::cli::expand_options(argv).unwrap();
    let crate::cli::Cmd::Mount(args) = crate::cli::Cli::try_parse_from(argv).unwrap().command
    else {
        panic!("not a mount");
    };
    args.options().unwrap().cache_dir
}

#[test]
fn use_cache_is_a_root_and_cache_dir_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    fs::write(tmp.path().join("someone-elses.txt"), b"x").unwrap();
    let with = |o: &str| cache_dir_of(&["-o", &format!("{o}={root}")]);
    assert_eq!(with("use_cache"), tmp.path().join("bucket"));
    assert_eq!(with("cache_dir"), tmp.path());
    assert_eq!(name_for("bucket", "a/b/"), "bucket+a+b");
    // What an earlier version made of use_cache=DIR stays the cache dir.
    let old = tempfile::tempdir().unwrap();
    fs::write(old.path().join("state.db"), b"SQLite format 3\0rest").unwrap();
    fs::create_dir(old.path().join("data")).unwrap();
    let old_root = old.path().to_str().unwrap();
    assert_eq!(
        cache_dir_of(&["-o", &format!("use_cache={old_root}")]),
        old.path()
    );
    // Marked for another bucket, it is a root like any other.
    let marked = tempfile::tempdir().unwrap();
    prepare(marked.path(), &owner("other", "")).unwrap();
    let marked_root = marked.path().to_str().unwrap();
    let under = cache_dir_of(&["-o", &format!("use_cache={marked_root}")]);
    assert_eq!(under, marked.path().join("bucket"));
}

#[test]
fn the_state_opens_below_linked_directories_but_never_through_a_linked_file() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("disk/cache");
    prepare(&real, &owner("b", "")).unwrap();
    symlink(tmp.path().join("disk"), tmp.path().join("linked")).unwrap();
    let via_link = tmp.path().join("linked/cache/state.db");
    drop(crate::state::StateDb::open(&via_link).unwrap());
    assert!(real.join("state.db").is_file());
    let target = tmp.path().join("elsewhere.db");
    fs::rename(real.join("state.db"), &target).unwrap();
    symlink(&target, real.join("state.db")).unwrap();
    assert!(crate::state::StateDb::open(&via_link).is_err());
}
