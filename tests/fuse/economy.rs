//! No wasted transfers, counted at the server: an identical rewrite sends no body, an
//! attribute change is a copy onto itself, a rename is a server-side copy.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{pattern, sync, Env, BUCKET};

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
