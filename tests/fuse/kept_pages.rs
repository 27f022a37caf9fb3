//! Without passthrough, read-only opens keep the kernel's pages of a file, so a file
//! read again comes from memory; what changes the file behind those pages (a new
//! version in the bucket) must still be seen.

use std::fs;
use std::os::fd::AsRawFd;

use crate::support::{pattern, wait_until, write_in_place, Env, BUCKET};

/// How many of the file's pages the kernel holds right after an open, before any read.
fn resident_pages_after_open(path: &std::path::Path) -> (usize, usize) {
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning;
    // mincore only reports which of its pages are in the page cache.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap failed");
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore failed");
    }
    (vec.iter().filter(|v| *v & 1 == 1).count(), pages)
}

#[test]
fn without_passthrough_a_file_read_again_comes_from_the_kernels_pages() {
    let env = Env::new();
    let mnt = env.mount_with(BUCKET, &["-o", "no_passthrough"]);
    let data = pattern(1 << 20, 3);
    fs::write(mnt.p("kept.bin"), &data).unwrap();
    assert!(
        fs::read(mnt.p("kept.bin")).unwrap() == data,
        "the mount holds another kept.bin"
    );
    // An open that dropped the pages would leave none resident.
    let (resident, pages) = resident_pages_after_open(&mnt.p("kept.bin"));
    assert_eq!(resident, pages, "the open dropped the kernel's pages");

    // A write through another handle goes through those same pages.
    write_in_place(&mnt.p("kept.bin"), 4000, b"changed here");
    let mut expected = data.clone();
    expected[4000..4012].copy_from_slice(b"changed here");
    assert!(
        fs::read(mnt.p("kept.bin")).unwrap() == expected,
        "the mount holds another kept.bin"
    );
    mnt.unmount();
}

/// Reads `name` (its pages now kept), replaces it in the bucket with another version
/// of the same size, so that only the mount's own invalidation can drop the old pages,
/// and waits to read the new one.
fn new_version_is_read(options: &[&str]) {
    let env = Env::new();
    let (old, new) = (pattern(300_000, 1), pattern(300_000, 2));
    env.put("v.bin", &old, &[]);
    let mut args = vec!["-o", "no_passthrough"];
    args.extend_from_slice(options);
    let mnt = env.mount_with(BUCKET, &args);
    assert!(
        fs::read(mnt.p("v.bin")).unwrap() == old,
        "the mount holds another v.bin"
    );
    let (resident, pages) = resident_pages_after_open(&mnt.p("v.bin"));
    assert_eq!(resident, pages, "the old version's pages were not kept");
    env.put("v.bin", &new, &[]);
    wait_until("the new version is read", || {
        fs::read(mnt.p("v.bin")).unwrap() == new
    });
    mnt.unmount();
}

#[test]
fn without_passthrough_kept_pages_give_way_to_a_new_version_found_by_the_poll() {
    new_version_is_read(&["--poll-interval", "1", "--metadata-ttl", "3600"]);
}

#[test]
fn without_passthrough_kept_pages_give_way_to_a_new_version_found_at_open() {
    new_version_is_read(&["--poll-interval", "0", "--metadata-ttl", "0"]);
}
