//! The host: FUSE (the device and fusermount3) and kernel passthrough.

use std::path::Path;

use super::Report;

/// The kernel that first had FUSE passthrough.
const PASSTHROUGH_SINCE: (u32, u32) = (6, 9);

pub fn check(report: &mut Report) {
    fuse_device(report);
    fusermount(report);
    passthrough(report, kernel_release().as_deref());
}

fn fuse_device(report: &mut Report) {
    let device = Path::new("/dev/fuse");
    if !device.exists() {
        report.fail(
            "fuse",
            "no /dev/fuse: load the module (modprobe fuse), or give the container the device \
             (--device /dev/fuse)",
        );
        return;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => report.ok("fuse", "/dev/fuse opens"),
        Err(err) => report.fail(
            "fuse",
            format!(
                "/dev/fuse does not open ({err}): mount as root, or as a user allowed to use it \
                 (mode 0666, as the fuse3 package sets it)"
            ),
        ),
    }
}

fn fusermount(report: &mut Report) {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("fusermount3"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => report.ok("fusermount3", format!("{}", path.display())),
        None if is_root() => report.warn(
            "fusermount3",
            "not found: root mounts without it, but unmount as a user and `umount` of \
             fuse.s3syncfs lines need it: apt-get install fuse3",
        ),
        None => report.fail(
            "fusermount3",
            "not found: a mount by a user other than root needs it: apt-get install fuse3",
        ),
    }
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `6.9.0-1-amd64` -> (6, 9).
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn passthrough(report: &mut Report, release: Option<&str>) {
    let what = "reads and writes of cached files then go through the daemon, several times \
                slower for small I/O than local disk (see PERFORMANCE.md)";
    let version = release.and_then(major_minor);
    match version {
        Some(v) if v < PASSTHROUGH_SINCE => report.warn(
            "passthrough",
            format!(
                "kernel {} has no FUSE passthrough (6.9 or later has): {what}",
                release.unwrap_or("?")
            ),
        ),
        None => report.warn(
            "passthrough",
            format!("cannot tell the kernel's version: if it is older than 6.9, {what}"),
        ),
        Some(_) if !is_root() => report.warn(
            "passthrough",
            format!("the kernel has it, but only a mount by root may use it: {what}"),
        ),
        Some(_) => report.ok(
            "passthrough",
            format!(
                "kernel {} has FUSE passthrough: fully cached files are read and written at \
                 local-disk speed",
                release.unwrap_or("?")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_read() {
        assert_eq!(major_minor("6.9.0-1-amd64"), Some((6, 9)));
        assert_eq!(
            major_minor("5.15.167.4-microsoft-standard-WSL2"),
            Some((5, 15))
        );
        assert_eq!(major_minor("garbage"), None);
        let mut report = Report::default();
        passthrough(&mut report, Some("5.10.0"));
        assert!(report
            .text()
            .contains("WARN passthrough: kernel 5.10.0 has no"));
    }
}
