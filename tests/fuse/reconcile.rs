//! Other clients changing the bucket: the poll and the open-time check bring their
//! changes in, and concurrent edits keep both versions instead of overwriting one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::support::{
    on_both_servers, pattern, status, sync, wait_until, write_in_place, Env, Mount, BUCKET,
};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A mount that neither polls nor uploads on its own: `sync` decides when.
fn mount_synced_by_hand(env: &Env) -> Mount {
    env.mount_with(
        BUCKET,
        &["--poll-interval", "0", "--upload-delay-ms", "600000"],
    )
}

/// Reads the first 4 KiB of `path`, so that only the start of it is cached.
fn read_first_block(path: &Path) {
    let mut head = vec![0u8; 4096];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
}

/// `key` in the bucket holds the local edit ("edited here" at 0), is `len` long, and
/// where the bytes never fetched stood there is nothing of the version `new`.
fn assert_edit_without_new_bytes(env: &Env, key: &str, len: usize, new: &[u8]) {
    let kept = env.get(key).unwrap().0;
    assert_eq!(&kept[..11], b"edited here");
    assert_eq!(kept.len(), len);
    assert_ne!(
        kept[6 << 20..(6 << 20) + 4096],
        new[6 << 20..(6 << 20) + 4096]
    );
}

/// The one conflict copy of `stem.ext` in the bucket, if any.
fn conflict_key(env: &Env, stem: &str, ext: &str) -> Option<String> {
    env.keys()
        .into_iter()
        .find(|k| k.starts_with(&format!("{stem}.conflict-")) && k.ends_with(ext))
}

on_both_servers! {
    fn the_poll_brings_in_new_changed_and_deleted_objects(env: Env) {
        env.put("changed.txt", b"first version", &[]);
        env.put("deleted.txt", b"soon gone", &[]);
        env.put("dir/kept.txt", b"kept", &[]);
        let mnt = env.mount_with(BUCKET, &["--poll-interval", "1", "--metadata-ttl", "3600"]);
        assert_eq!(names(&mnt.path), ["changed.txt", "deleted.txt", "dir"]);
        assert_eq!(fs::read(mnt.p("changed.txt")).unwrap(), b"first version");
        assert_eq!(names(&mnt.p("dir")), ["kept.txt"]);

        env.put("changed.txt", b"second, longer version", &[]);
        env.delete("deleted.txt");
        env.put("new.txt", b"new", &[]);
        env.put("dir/added.txt", b"added", &[]);
        env.put("newdir/inside.txt", b"inside", &[]);
        wait_until("the poll applies the remote changes", || {
            names(&mnt.path) == ["changed.txt", "dir", "new.txt", "newdir"]
                && names(&mnt.p("dir")) == ["added.txt", "kept.txt"]
        });
        // Despite the long TTL: the poll invalidated the cached data and attributes.
        wait_until("the changed content is read", || {
            fs::read(mnt.p("changed.txt")).unwrap() == b"second, longer version"
        });
        assert_eq!(fs::metadata(mnt.p("changed.txt")).unwrap().len(), 22);
        assert_eq!(fs::read(mnt.p("newdir/inside.txt")).unwrap(), b"inside");
        assert!(!mnt.p("deleted.txt").exists());

        env.delete("newdir/inside.txt");
        wait_until("an emptied remote directory goes", || {
            !names(&mnt.path).contains(&"newdir".to_string())
        });
        mnt.unmount();
    }
}

#[test]
fn a_name_seen_absent_appears_when_the_bucket_gets_it() {
    let env = Env::new();
    env.put("dir/kept.txt", b"kept", &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "1"]);
    // The kernel may remember these as absent (negative lookups)...
    for _ in 0..3 {
        assert!(!mnt.p("later.txt").exists());
        assert!(!mnt.p("dir/later").exists());
    }
    // ...and still creates here, at once.
    fs::write(mnt.p("dir/here.txt"), b"here").unwrap();
    assert_eq!(fs::read(mnt.p("dir/here.txt")).unwrap(), b"here");
    env.put("later.txt", b"later", &[]);
    env.put("dir/later/inside.txt", b"inside", &[]);
    wait_until("names once absent appear", || {
        mnt.p("later.txt").exists() && mnt.p("dir/later/inside.txt").exists()
    });
    assert_eq!(fs::read(mnt.p("later.txt")).unwrap(), b"later");
    assert_eq!(names(&mnt.p("dir")), ["here.txt", "kept.txt", "later"]);
    mnt.unmount();
}

#[test]
fn opening_a_file_checks_the_bucket_once_the_ttl_passed() {
    let env = Env::new();
    env.put("a.txt", b"old", &[("mode", "33188")]);
    env.put("b.txt", b"to be deleted", &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0", "--metadata-ttl", "0"]);
    assert_eq!(fs::read(mnt.p("a.txt")).unwrap(), b"old");
    assert_eq!(fs::read(mnt.p("b.txt")).unwrap(), b"to be deleted");
    env.put("a.txt", b"new and longer", &[("mode", "33152")]);
    env.delete("b.txt");
    // No poll: the open itself sees the new version, at once.
    assert_eq!(fs::read(mnt.p("a.txt")).unwrap(), b"new and longer");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(mnt.p("a.txt")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = fs::read(mnt.p("b.txt")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    mnt.unmount();
}

fn concurrent_edit_keeps_both(env: Env, ignore_conditions: bool) {
    if ignore_conditions {
        env.backend().ignore_conditions(true);
    }
    let mnt = mount_synced_by_hand(&env);
    fs::write(mnt.p("report.txt"), b"base").unwrap();
    sync(&env, &mnt);
    fs::write(mnt.p("report.txt"), b"edited here").unwrap();
    env.put("report.txt", b"edited elsewhere", &[]);
    sync(&env, &mnt);

    assert_eq!(env.get("report.txt").unwrap().0, b"edited elsewhere");
    let copy = conflict_key(&env, "report", ".txt").expect("no conflict copy in the bucket");
    assert_eq!(env.get(&copy).unwrap().0, b"edited here");
    assert_eq!(names(&mnt.path), [copy.clone(), "report.txt".to_string()]);
    assert_eq!(fs::read(mnt.p("report.txt")).unwrap(), b"edited elsewhere");
    assert_eq!(fs::read(mnt.p(&copy)).unwrap(), b"edited here");
    let status = status(&env, &mnt);
    assert_eq!(status["conflicts"], 1);
    let mode = if ignore_conditions {
        "ignored"
    } else {
        "honoured"
    };
    assert_eq!(status["conditional_writes"], mode);
    mnt.unmount();
    assert!(mnt_log_mentions_conflict(&env));
}

fn mnt_log_mentions_conflict(env: &Env) -> bool {
    fs::read_dir(env.dir.path()).unwrap().any(|e| {
        let path = e.unwrap().path();
        path.extension().is_some_and(|x| x == "txt")
            && fs::read_to_string(&path).is_ok_and(|t| t.contains("WARN") && t.contains("conflict"))
    })
}

on_both_servers! {
    fn a_concurrent_edit_keeps_both_versions_with_conditional_writes(env: Env) {
        concurrent_edit_keeps_both(env, false);
    }
}

#[test]
fn a_concurrent_edit_keeps_both_versions_on_a_server_ignoring_conditions() {
    concurrent_edit_keeps_both(Env::new(), true);
}

on_both_servers! {
    fn a_new_file_meeting_a_remote_one_of_the_same_name_keeps_both(env: Env) {
        let mnt = mount_synced_by_hand(&env);
        fs::write(mnt.p("notes"), b"mine").unwrap();
        env.put("notes", b"theirs", &[]);
        sync(&env, &mnt);
        assert_eq!(env.get("notes").unwrap().0, b"theirs");
        let copy = conflict_key(&env, "notes", "").expect("no conflict copy");
        assert_eq!(env.get(&copy).unwrap().0, b"mine");
        mnt.unmount();
    }
}

#[test]
fn the_poll_finds_a_conflict_before_the_upload() {
    let env = Env::new();
    env.put("doc.md", b"base", &[]);
    let mnt = env.mount_with(
        BUCKET,
        &["--poll-interval", "1", "--upload-delay-ms", "600000"],
    );
    fs::write(mnt.p("doc.md"), b"local edit").unwrap();
    env.put("doc.md", b"remote edit", &[]);
    wait_until("the poll moves the local edit aside", || {
        names(&mnt.path).len() == 2
    });
    assert_eq!(fs::read(mnt.p("doc.md")).unwrap(), b"remote edit");
    sync(&env, &mnt);
    let copy = conflict_key(&env, "doc", ".md").expect("no conflict copy");
    assert_eq!(env.get(&copy).unwrap().0, b"local edit");
    assert_eq!(env.get("doc.md").unwrap().0, b"remote edit");
    mnt.unmount();
}

#[test]
fn a_remote_delete_of_a_locally_changed_file_uploads_it_again() {
    let env = Env::new();
    env.put("keep.txt", b"base", &[]);
    let mnt = mount_synced_by_hand(&env);
    fs::write(mnt.p("keep.txt"), b"changed here").unwrap();
    env.delete("keep.txt");
    sync(&env, &mnt);
    assert_eq!(env.get("keep.txt").unwrap().0, b"changed here");
    assert_eq!(env.keys(), ["keep.txt"]);
    mnt.unmount();
}

#[test]
fn a_local_delete_of_a_remotely_changed_file_keeps_the_remote_version() {
    let env = Env::new();
    env.put("shared.txt", b"base", &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "1"]);
    assert_eq!(fs::read(mnt.p("shared.txt")).unwrap(), b"base");
    env.put("shared.txt", b"changed elsewhere", &[]);
    fs::remove_file(mnt.p("shared.txt")).unwrap();
    sync(&env, &mnt);
    assert_eq!(env.get("shared.txt").unwrap().0, b"changed elsewhere");
    wait_until("the remote version shows again", || {
        mnt.p("shared.txt").exists()
    });
    assert_eq!(fs::read(mnt.p("shared.txt")).unwrap(), b"changed elsewhere");
    mnt.unmount();
}

on_both_servers! {
    fn two_mounts_of_one_bucket_see_each_other(env: Env) {
        let args = ["--poll-interval", "1", "--upload-delay-ms", "50"];
        let one = env.mount_with(BUCKET, &args);
        let two = env.mount_with(BUCKET, &args);
        fs::write(one.p("from-one.txt"), b"written by one").unwrap();
        wait_until("two sees one's file", || {
            fs::read(two.p("from-one.txt")).is_ok_and(|b| b == b"written by one")
        });
        fs::write(two.p("from-one.txt"), b"rewritten by two").unwrap();
        wait_until("one sees two's change", || {
            fs::read(one.p("from-one.txt")).is_ok_and(|b| b == b"rewritten by two")
        });
        fs::remove_file(one.p("from-one.txt")).unwrap();
        wait_until("two sees the delete", || !two.p("from-one.txt").exists());
        one.unmount();
        two.unmount();
        assert!(env.keys().is_empty(), "{:?}", env.keys());
    }
}

#[test]
fn renaming_a_directory_while_others_add_to_it_loses_nothing() {
    let env = Env::new();
    env.put("old/a.txt", b"a", &[]);
    let mnt = env.mount_with(
        BUCKET,
        &["--poll-interval", "1", "--upload-delay-ms", "600000"],
    );
    assert_eq!(names(&mnt.p("old")), ["a.txt"]);
    env.put("old/added-elsewhere.txt", b"theirs", &[]);
    fs::rename(mnt.p("old"), mnt.p("new")).unwrap();
    sync(&env, &mnt);
    assert_eq!(env.get("new/a.txt").unwrap().0, b"a");
    assert_eq!(env.get("old/added-elsewhere.txt").unwrap().0, b"theirs");
    assert!(env.get("old/a.txt").is_none());
    wait_until("the other client's file shows under the old name", || {
        mnt.p("old/added-elsewhere.txt").exists()
    });
    mnt.unmount();
}

#[test]
fn a_read_never_mixes_two_versions_of_an_object() {
    let env = Env::new();
    let (old, new) = (pattern(8 << 20, 1), pattern(8 << 20, 2));
    env.put("big.bin", &old, &[]);
    // Neither a poll nor the open-time check would see the new version in time.
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0", "--metadata-ttl", "3600"]);
    let f = fs::File::open(mnt.p("big.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, old[..4096]);
    env.put("big.bin", &new, &[]);
    // The rest of the file is not cached yet: it can only come from the new version.
    let mut tail = vec![0u8; 4096];
    let err = f.read_exact_at(&mut tail, 6 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    // The next open checks the bucket despite the TTL and reads the new version whole.
    assert!(
        fs::read(mnt.p("big.bin")).unwrap() == new,
        "the mount holds another big.bin"
    );
    mnt.unmount();
}

#[test]
fn a_store_whose_gets_give_other_etags_than_heads_still_reads() {
    let env = Env::new();
    env.backend().other_get_etags(true);
    let data = pattern(3 << 20, 4);
    env.put("odd.bin", &data, &[]);
    let mnt = env.mount();
    assert!(
        fs::read(mnt.p("odd.bin")).unwrap() == data,
        "the mount holds another odd.bin"
    );
    assert!(mnt.log_text().contains("reads no longer check versions"));
    mnt.unmount();
}

#[test]
fn a_partial_edit_of_a_replaced_object_becomes_a_conflict_without_its_bytes() {
    let env = Env::new();
    let (old, new) = (pattern(8 << 20, 1), pattern(8 << 20, 2));
    env.put("part.bin", &old, &[]);
    let mnt = mount_synced_by_hand(&env);
    // A write in place fetches nothing: the rest of the file stays in the bucket only.
    write_in_place(&mnt.p("part.bin"), 0, b"edited here");
    env.put("part.bin", &new, &[]);
    // The upload cannot fill the file from the version it was based on: a conflict.
    sync(&env, &mnt);
    assert!(
        env.get("part.bin").unwrap().0 == new,
        "the bucket holds another part.bin"
    );
    let copy = conflict_key(&env, "part", ".bin").expect("no conflict copy in the bucket");
    assert_edit_without_new_bytes(&env, &copy, old.len(), &new);
    mnt.unmount();
}

#[test]
fn a_renamed_partial_edit_whose_base_was_replaced_goes_up_without_its_bytes() {
    let env = Env::new();
    let (old, new) = (pattern(8 << 20, 1), pattern(8 << 20, 2));
    env.put("a.bin", &old, &[]);
    let mnt = mount_synced_by_hand(&env);
    write_in_place(&mnt.p("a.bin"), 0, b"edited here");
    fs::rename(mnt.p("a.bin"), mnt.p("b.bin")).unwrap();
    // The base of b.bin, still at its old name, is replaced before the upload.
    env.put("a.bin", &new, &[]);
    sync(&env, &mnt);
    assert!(
        env.get("a.bin").unwrap().0 == new,
        "the other client's version stays"
    );
    assert_edit_without_new_bytes(&env, "b.bin", old.len(), &new);
    assert_eq!(status(&env, &mnt)["conflicts"], 1);
    mnt.unmount();
}

#[test]
fn a_chmod_meeting_a_remote_delete_of_a_file_not_all_here_lets_the_delete_win() {
    let env = Env::new();
    env.put("m.bin", &pattern(8 << 20, 3), &[]);
    let mnt = mount_synced_by_hand(&env);
    read_first_block(&mnt.p("m.bin"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(mnt.p("m.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    env.delete("m.bin");
    // Uploading it again would put zeros where its bytes were never fetched.
    sync(&env, &mnt);
    assert!(env.get("m.bin").is_none(), "the bucket still holds m.bin");
    wait_until("the file leaves the mount", || !mnt.p("m.bin").exists());
    mnt.unmount();
    // Its record went with it: a restart does not bring it back.
    let mnt = mount_synced_by_hand(&env);
    assert!(!mnt.p("m.bin").exists());
    sync(&env, &mnt);
    assert!(env.get("m.bin").is_none(), "the bucket holds m.bin again");
    mnt.unmount();
}

on_both_servers! {
    #[ignore_on_moto = "moto 5.2.1 ignores x-amz-copy-source-if-match (it honours If-Match on PUT): the rename's copy takes the other client's new a.bin, and the daemon does not check the copy's ETag"]
    fn a_rename_whose_old_object_is_replaced_meanwhile_keeps_the_renamed_version(env: Env) {
        let (old, new) = (pattern(1 << 20, 5), pattern(1 << 20, 6));
        env.put("a.bin", &old, &[]);
        let mnt = mount_synced_by_hand(&env);
        assert!(
            fs::read(mnt.p("a.bin")).unwrap() == old,
            "the mount holds another a.bin"
        );
        fs::rename(mnt.p("a.bin"), mnt.p("b.bin")).unwrap();
        // Before the rename's server-side copy runs, another client replaces a.bin.
        env.put("a.bin", &new, &[]);
        sync(&env, &mnt);
        // The copy would have put that client's version at b.bin.
        assert!(
            env.get("b.bin").unwrap().0 == old,
            "the bucket holds another b.bin"
        );
        assert!(
            env.get("a.bin").unwrap().0 == new,
            "the bucket holds another a.bin"
        );
        assert!(
            fs::read(mnt.p("b.bin")).unwrap() == old,
            "the mount holds another b.bin"
        );
        mnt.unmount();
    }
}

/// `mv a.bin b.bin` of a file never read here, then another client's `change` of a.bin
/// before the rename goes up.
fn rename_unread_then(change: impl FnOnce(&Env)) -> (Env, Mount) {
    let env = Env::new();
    env.put("a.bin", &pattern(1 << 20, 7), &[]);
    let mnt = mount_synced_by_hand(&env);
    fs::rename(mnt.p("a.bin"), mnt.p("b.bin")).unwrap();
    change(&env);
    sync(&env, &mnt);
    (env, mnt)
}

#[test]
fn a_rename_of_an_unread_file_replaced_meanwhile_is_dropped() {
    let new = pattern(1 << 20, 8);
    let (env, mnt) = rename_unread_then(|env| env.put("a.bin", &new, &[]));
    // Nothing of the renamed version was here to keep: the other client's stays alone.
    assert_eq!(env.keys(), ["a.bin"]);
    assert!(
        env.get("a.bin").unwrap().0 == new,
        "the bucket holds another a.bin"
    );
    wait_until("the renamed file leaves the mount", || {
        !mnt.p("b.bin").exists()
    });
    mnt.unmount();
}

#[test]
fn a_rename_of_an_unread_file_deleted_meanwhile_removes_it() {
    let (env, mnt) = rename_unread_then(|env| env.delete("a.bin"));
    assert_eq!(env.keys(), Vec::<String>::new());
    wait_until("the renamed file leaves the mount", || {
        !mnt.p("b.bin").exists()
    });
    mnt.unmount();
}

#[test]
fn a_new_file_at_the_old_name_of_a_rename_whose_base_was_replaced_still_goes_up() {
    let env = Env::new();
    env.put("app.log", &pattern(8 << 20, 9), &[]);
    let mnt = mount_synced_by_hand(&env);
    read_first_block(&mnt.p("app.log"));
    // Log rotation, while another client replaces the old name.
    fs::rename(mnt.p("app.log"), mnt.p("app.log.1")).unwrap();
    fs::write(mnt.p("app.log"), b"a new log").unwrap();
    env.put("app.log", b"theirs", &[]);
    sync(&env, &mnt);
    // Nothing is overwritten: theirs keeps the name, ours goes beside it. The rotated
    // log held only 4 KiB of a version that no longer exists: its rename is dropped.
    assert_eq!(env.get("app.log").unwrap().0, b"theirs");
    let copy = conflict_key(&env, "app", ".log").expect("no conflict copy in the bucket");
    assert_eq!(env.get(&copy).unwrap().0, b"a new log");
    assert!(env.get("app.log.1").is_none(), "the bucket holds app.log.1");
    mnt.unmount();
}

#[test]
fn a_new_file_fsynced_at_the_old_name_of_a_rename_whose_base_was_replaced_goes_up() {
    let env = Env::new();
    env.put("app.log", &pattern(8 << 20, 9), &[]);
    let mnt = mount_synced_by_hand(&env);
    read_first_block(&mnt.p("app.log"));
    fs::rename(mnt.p("app.log"), mnt.p("app.log.1")).unwrap();
    env.put("app.log", b"theirs", &[]);
    // Asked up at once: the rotated file must first take its bytes off that key.
    let mut f = fs::File::create(mnt.p("app.log")).unwrap();
    f.write_all(b"a new log").unwrap();
    f.sync_all().unwrap();
    drop(f);
    sync(&env, &mnt);
    assert_eq!(env.get("app.log").unwrap().0, b"theirs");
    let copy = conflict_key(&env, "app", ".log").expect("no conflict copy in the bucket");
    assert_eq!(env.get(&copy).unwrap().0, b"a new log");
    mnt.unmount();
}
