//! Directories, renames and symlinks through the mount.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::on_both_servers;

on_both_servers! {
    fn mkdir_writes_a_marker_and_rmdir_needs_an_empty_directory(env: Env) {
        let mnt = env.mount();
        fs::create_dir(mnt.p("d")).unwrap();
        fs::set_permissions(mnt.p("d"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(mnt.p("empty")).unwrap();
        fs::write(mnt.p("d/inside.txt"), b"i").unwrap();
        let err = fs::remove_dir(mnt.p("d")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
        fs::create_dir(mnt.p("doomed")).unwrap();
        fs::remove_dir(mnt.p("doomed")).unwrap();
        mnt.unmount();
        let keys = env.keys();
        assert_eq!(keys, vec!["d/", "d/inside.txt", "empty/"]);
        let (body, meta) = env.get("d/").unwrap();
        assert!(body.is_empty());
        assert_eq!(meta["mode"], (libc::S_IFDIR | 0o700).to_string());
    }
}

on_both_servers! {
    fn rename_files_and_non_empty_directories(env: Env) {
        env.put("tree/a.txt", b"A", &[]);
        env.put("tree/sub/b.txt", b"B", &[]);
        env.put("tree/sub/", b"", &[]);
        let mnt = env.mount();
        fs::write(mnt.p("local.txt"), b"L").unwrap();
        fs::rename(mnt.p("local.txt"), mnt.p("renamed.txt")).unwrap();
        fs::rename(mnt.p("tree"), mnt.p("moved")).unwrap();
        assert_eq!(fs::read(mnt.p("moved/sub/b.txt")).unwrap(), b"B");
        assert!(!mnt.p("tree").exists());
        mnt.unmount();
        assert_eq!(
            env.keys(),
            vec![
                "moved/",
                "moved/a.txt",
                "moved/sub/",
                "moved/sub/b.txt",
                "renamed.txt"
            ]
        );
        assert_eq!(env.get("moved/a.txt").unwrap().0, b"A");
        assert_eq!(env.get("renamed.txt").unwrap().0, b"L");
        // The two objects moved by server-side copy; markers are re-written, not copied.
        // Only the test server counts copies.
        if !env.is_moto() {
            let stats = env.stats();
            assert!(stats.copy >= 2, "no server-side copies: {stats:?}");
        }
    }
}

fn renameat2_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall with valid C strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

on_both_servers! {
    fn rename_noreplace_and_replace(env: Env) {
        let mnt = env.mount();
        fs::write(mnt.p("a"), b"first").unwrap();
        fs::write(mnt.p("b"), b"second").unwrap();
        let err = renameat2_noreplace(&mnt.p("a"), &mnt.p("b")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        renameat2_noreplace(&mnt.p("a"), &mnt.p("c")).unwrap();
        fs::rename(mnt.p("c"), mnt.p("b")).unwrap();
        assert_eq!(fs::read(mnt.p("b")).unwrap(), b"first");
        mnt.unmount();
        assert_eq!(env.keys(), vec!["b"]);
        assert_eq!(env.get("b").unwrap().0, b"first");
    }
}

on_both_servers! {
    fn symlinks_round_trip_in_s3fs_format(env: Env) {
        let mnt = env.mount();
        fs::write(mnt.p("target.txt"), b"t").unwrap();
        std::os::unix::fs::symlink("target.txt", mnt.p("link")).unwrap();
        assert_eq!(
            fs::read_link(mnt.p("link")).unwrap(),
            Path::new("target.txt")
        );
        assert_eq!(fs::read(mnt.p("link")).unwrap(), b"t");
        mnt.unmount();
        let (body, meta) = env.get("link").unwrap();
        assert_eq!(body, b"target.txt");
        let mode: u32 = meta["mode"].parse().unwrap();
        assert_eq!(mode & libc::S_IFMT, libc::S_IFLNK);
    }
}

on_both_servers! {
    fn odd_names_survive_create_and_rename(env: Env) {
        let mnt = env.mount();
        let odd = "a b+c%d &é=?#.txt";
        fs::write(mnt.p(odd), b"odd").unwrap();
        fs::create_dir(mnt.p("dir with space")).unwrap();
        fs::rename(mnt.p(odd), mnt.p(&format!("dir with space/{odd}"))).unwrap();
        assert_eq!(
            fs::read(mnt.p(&format!("dir with space/{odd}"))).unwrap(),
            b"odd"
        );
        mnt.unmount();
        assert_eq!(
            env.keys(),
            vec![
                "dir with space/".to_string(),
                format!("dir with space/{odd}")
            ]
        );
        assert_eq!(env.get(&format!("dir with space/{odd}")).unwrap().0, b"odd");
    }
}
