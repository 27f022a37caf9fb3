//! The cache dir: whether the mount may take it (owner, mode, ours), whether it can be
//! written, its free space, and whether its file system keeps holes (SEEK_HOLE), which
//! partly fetched files rely on to stay small.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::Report;
use crate::mount::MountOptions;
use crate::units::human_bytes;

/// Below this much free space the cache cannot hold even a few files.
const TOO_LITTLE: u64 = 64 << 20;
/// Below this much, warn (unless cache_size asks for less).
const LITTLE: u64 = 1 << 30;

pub fn check(report: &mut Report, options: &MountOptions) {
    let dir = options.cache_dir.as_path();
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            report.fail(
                "cache dir",
                format!("{shown} is not a directory: give a directory (cache_dir=)"),
            );
            return;
        }
        Ok(meta) => {
            let me = unsafe { libc::geteuid() }; // SAFETY: geteuid cannot fail.
            if let Err(why) = crate::cache_dir::check_owner_and_mode(
                &shown.to_string(),
                meta.uid(),
                meta.mode(),
                me,
            ) {
                report.fail("cache dir", why);
                return;
            }
            let owner = crate::mount::cache_owner(options);
            let empty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty && !crate::cache_dir::is_cache_dir_of(dir, &owner.bucket, &owner.prefix) {
                report.fail(
                    "cache dir",
                    format!(
                        "{shown} holds files and is not a cache dir of {}: give a new or empty \
                         directory (cache_dir=)",
                        owner.bucket
                    ),
                );
                return;
            }
            if let Err(err) = probe_file(report, dir) {
                report.fail(
                    "cache dir",
                    format!("cannot write in {shown} ({err}): give a directory on a writable disk"),
                );
                return;
            }
            report.ok(
                "cache dir",
                format!(
                    "{shown}: yours, mode {:04o}, writable",
                    meta.mode() & 0o7777
                ),
            );
        }
        Err(_) => {
            let Some(base) = dir.ancestors().skip(1).find(|a| a.exists()) else {
                report.fail("cache dir", format!("no part of {shown} exists"));
                return;
            };
            if !base.is_dir() || !writable(base) {
                report.fail(
                    "cache dir",
                    format!(
                        "{shown} cannot be made: {} is not a directory you can write in. Give \
                         another cache_dir=, or create it yourself",
                        base.display()
                    ),
                );
                return;
            }
            report.ok(
                "cache dir",
                format!("{shown} does not exist yet: the mount makes it (mode 0700)"),
            );
            if let Err(err) = probe_file(report, base) {
                report.warn("holes", format!("cannot test {} ({err})", base.display()));
            }
        }
    }
    free_space(report, dir, options.cache_size);
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Writes a sparse file in `dir` and asks for its first hole; removes it again.
fn probe_file(report: &mut Report, dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".s3syncfs-doctor.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    let written = (|| {
        file.seek(SeekFrom::Start(4 << 20))?;
        file.write_all(b"x")?;
        file.sync_all()
    })();
    // SAFETY: lseek on a descriptor we own.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    drop(file);
    let _ = std::fs::remove_file(&path);
    written?;
    if hole == 0 {
        report.ok(
            "holes",
            "the cache dir's file system keeps holes (SEEK_HOLE)",
        );
    } else {
        report.warn(
            "holes",
            "the cache dir's file system keeps no holes: a file read in part takes its whole \
             size on disk. Put the cache dir on ext4, xfs, btrfs or tmpfs",
        );
    }
    Ok(())
}

fn free_space(report: &mut Report, dir: &Path, cache_size: Option<u64>) {
    use std::os::unix::ffi::OsStrExt;
    let Some(base) = dir.ancestors().find(|a| a.exists()) else {
        return;
    };
    let Ok(path) = std::ffi::CString::new(base.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: statvfs fills the struct we pass.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        report.warn(
            "free space",
            format!("cannot tell the free space of {}", base.display()),
        );
        return;
    }
    let free = stat.f_bavail as u64 * stat.f_frsize as u64;
    let shown = human_bytes(free);
    let wanted = cache_size.unwrap_or(LITTLE).min(LITTLE);
    if free < TOO_LITTLE {
        report.fail(
            "free space",
            format!("{shown} free for the cache: writes would soon fail with ENOSPC. Free some space or move cache_dir="),
        );
    } else if free < wanted || cache_size.is_some_and(|size| free < size) {
        report.warn(
            "free space",
            format!(
                "{shown} free for the cache{}: pending changes never leave the cache, so a full \
                 disk fails writes. Free space, or set cache_size= below it",
                cache_size.map_or(String::new(), |s| format!(
                    ", cache_size is {}",
                    human_bytes(s)
                ))
            ),
        );
    } else {
        report.ok("free space", format!("{shown} free for the cache"));
    }
}
