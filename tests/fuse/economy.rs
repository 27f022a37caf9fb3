//! No wasted transfers, counted at the server: an identical rewrite sends no body, an
//! attribute change is a copy onto itself, a rename is a server-side copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{copy_tree_in, pattern, sync, Env, BUCKET};

#[test]
fn rewrites_chmods_and_renames_send_no_file_body() {
    let env = Env::new();
    let mnt = env.mount_with(
        BUCKET,
        &["--upload-delay-ms", "600000", "--poll-interval", "0"],
    );
    let small = pattern(100_000, 3);
    let big = pattern(20 << 20, 4); // a multipart upload
    fs::write(mnt.p("small.bin"), &small).unwrap();
    fs::write(mnt.p("big.bin"), &big).unwrap();
    sync(&env, &mnt);

    env.backend().reset_stats();
    fs::write(mnt.p("small.bin"), &small).unwrap();
    fs::write(mnt.p("big.bin"), &big).unwrap();
    sync(&env, &mnt);
    let stats = env.stats();
    assert_eq!(
        (stats.put, stats.upload_part, stats.put_bytes),
        (0, 0, 0),
        "identical rewrites went up again: {stats:?}"
    );
    assert_eq!(env.get("big.bin").unwrap().0, big);

    env.backend().reset_stats();
    fs::set_permissions(mnt.p("small.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    sync(&env, &mnt);
    let stats = env.stats();
    assert_eq!(
        (stats.put, stats.put_bytes, stats.get),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.copy, 1, "{stats:?}");
    assert_eq!(env.get("small.bin").unwrap().1["mode"], "33152");

    env.backend().reset_stats();
    fs::rename(mnt.p("big.bin"), mnt.p("moved.bin")).unwrap();
    sync(&env, &mnt);
    let stats = env.stats();
    assert_eq!(
        (stats.put, stats.put_bytes, stats.get, stats.get_bytes),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!((stats.copy, stats.delete), (1, 1), "{stats:?}");
    assert_eq!(env.keys(), ["moved.bin", "small.bin"]);
    assert_eq!(env.get("moved.bin").unwrap().0, big);
    mnt.unmount();
}

/// A tree copied in costs a PUT per file and per directory marker: new keys go up
/// with If-None-Match alone, with no HEAD or LIST of their own.
#[test]
fn a_tree_copied_in_costs_puts_and_nothing_else() {
    let env = Env::new();
    let source = env.dir.path().join("source");
    let mut files = 0u64;
    for d in 0..4 {
        let dir = source.join(format!("d{d}/inner"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            fs::write(dir.join(format!("f{f}")), pattern(4096, f as u8)).unwrap();
            files += 1;
        }
    }
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    // The mount's own first look at its root: a LIST before the copy.
    assert_eq!(fs::read_dir(&mnt.path).unwrap().count(), 0);
    env.backend().reset_stats();
    copy_tree_in(&source, &mnt.p("tree")).unwrap();
    sync(&env, &mnt);
    let stats = env.stats();
    let markers = 1 + 4 + 4; // tree/, d*/ and d*/inner/
                             // One PUT per file; a directory's marker may go up twice: cp -a sets its times
                             // once its contents are copied, which can be after its first upload.
    assert!(
        files + markers <= stats.put && stats.put <= files + 2 * markers,
        "{stats:?}"
    );
    assert_eq!(
        (stats.head, stats.list, stats.get, stats.copy),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(env.get("tree/d3/inner/f24").unwrap().0, pattern(4096, 24));
    mnt.unmount();
}
