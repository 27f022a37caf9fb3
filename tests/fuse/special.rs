//! POSIX details through the mount: errno of the cache file system passed on, link
//! counts, and special files (fifos, sockets, devices) stored as s3fs stores them.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;

use crate::support::on_both_servers;

on_both_servers! {
    fn truncate_past_what_the_cache_can_hold_is_efbig(env: Env) {
        let mnt = env.mount();
        let path = mnt.p("big.bin");
        fs::write(&path, b"hello").unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let err = f.set_len(999_999_999_999_999).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "ftruncate: {err}");
        drop(f);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::truncate(c_path.as_ptr(), 999_999_999_999_999) };
        let err = std::io::Error::last_os_error();
        assert_eq!((rc, err.raw_os_error()), (-1, Some(libc::EFBIG)), "truncate: {err}");
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        mnt.unmount();
    }
}

on_both_servers! {
    fn directory_links_count_its_subdirectories(env: Env) {
        let mnt = env.mount();
        fs::create_dir(mnt.p("d")).unwrap();
        assert_eq!(fs::metadata(mnt.p("d")).unwrap().nlink(), 2);
        fs::create_dir(mnt.p("d/a")).unwrap();
        fs::create_dir(mnt.p("d/b")).unwrap();
        fs::write(mnt.p("d/f"), b"x").unwrap();
        assert_eq!(fs::metadata(mnt.p("d")).unwrap().nlink(), 4);
        assert_eq!(fs::metadata(mnt.p("d/f")).unwrap().nlink(), 1);
        fs::remove_dir(mnt.p("d/a")).unwrap();
        assert_eq!(fs::metadata(mnt.p("d")).unwrap().nlink(), 3);
        fs::rename(mnt.p("d/b"), mnt.p("b")).unwrap();
        assert_eq!(fs::metadata(mnt.p("d")).unwrap().nlink(), 2);
        mnt.unmount();

        // Another mount counts what the bucket lists, once it has listed it.
        env.put("e/sub1/", b"", &[]);
        env.put("e/sub2/x", b"x", &[]);
        env.put("e/file", b"x", &[]);
        let other = env.mount();
        assert_eq!(fs::read_dir(other.p("e")).unwrap().count(), 3);
        assert_eq!(fs::metadata(other.p("e")).unwrap().nlink(), 4);
        other.unmount();
    }
}

on_both_servers! {
    fn an_open_file_removed_has_no_links(env: Env) {
        let mnt = env.mount();
        let path = mnt.p("open.txt");
        fs::write(&path, b"still here").unwrap();
        let f = fs::File::open(&path).unwrap();
        assert_eq!(f.metadata().unwrap().nlink(), 1);
        fs::remove_file(&path).unwrap();
        assert_eq!(f.metadata().unwrap().nlink(), 0);
        drop(f);
        mnt.unmount();
    }
}
