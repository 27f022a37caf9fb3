//! POSIX details of the core: the cache file system's errors as themselves, link
//! counts, and special files (fifos, sockets, devices).

use crate::store::Metadata;

use super::{harness, harness_with, FsError, SetAttr, ME, ROOT};

#[test]
fn a_size_past_what_the_cache_file_can_hold_is_too_big() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"hello");
    let huge = SetAttr {
        size: Some(999_999_999_999_999),
        ..SetAttr::default()
    };
    assert_eq!(h.fs.setattr(ino, huge).unwrap_err(), FsError::TooBig);
    assert_eq!(h.fs.getattr(ino).unwrap().size, 5);
}

#[test]
fn cache_file_system_errors_pass_as_themselves() {
    let from = |code| FsError::from(std::io::Error::from_raw_os_error(code));
    assert_eq!(from(libc::EFBIG), FsError::TooBig);
    assert_eq!(from(libc::ENOSPC), FsError::NoSpace);
    assert_eq!(from(libc::EDQUOT), FsError::Quota);
    assert_eq!(from(libc::ENAMETOOLONG), FsError::NameTooLong);
    assert!(matches!(from(libc::EIO), FsError::Io(_)));
}

#[test]
fn a_directory_links_its_subdirectories_once_listed() {
    let h = harness_with("", |s| {
        s.insert("d/sub/", b"", Metadata::new());
        s.insert("d/implied/x", b"x", Metadata::new());
        s.insert("d/file", b"x", Metadata::new());
    });
    let d = h.fs.lookup(ROOT, "d").unwrap();
    // Not listed yet: the count is unknown, and 1 says so to find and fts.
    assert_eq!(d.nlink, 1);
    h.fs.readdir(d.ino).unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 4);
    h.fs.mkdir(d.ino, "new", 0o755, ME).unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 5);
    h.fs.rmdir(d.ino, "sub").unwrap();
    assert_eq!(h.fs.getattr(d.ino).unwrap().nlink, 4);
    assert_eq!(h.fs.lookup(d.ino, "file").unwrap().nlink, 1);
    let new = h.fs.lookup(d.ino, "new").unwrap();
    assert_eq!(new.nlink, 2);
}

#[test]
fn an_open_file_unlinked_has_no_links() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"x");
    let fh = h.fs.open(ino, false, false).unwrap();
    h.fs.unlink(ROOT, "f").unwrap();
    assert_eq!(h.fs.getattr(ino).unwrap().nlink, 0);
    h.fs.release(fh);
}
