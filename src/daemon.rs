//! Leaving the launcher behind: the daemon runs in a session of its own, at `/`, with
//! a private umask, and keeps nothing the launcher had open but stdin (/dev/null),
//! stdout (the readiness pipe) and stderr (the log).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// For the launcher: the daemon starts a session of its own before it runs a line
/// (no terminal's hangup or ^C reaches it, not even while it starts).
pub fn new_session(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| match libc::setsid() {
            -1 => Err(io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
}

/// Files and directories s3syncfs makes are its user's alone, whatever umask the
/// shell or fstab's mount(8) had.
pub fn private_umask() {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
}

/// The daemon's first step: closes every descriptor inherited above stderr (a lock a
/// shell holds with flock, a pipe another program waits to see closed). It runs
/// before the daemon opens anything itself, on its only thread, so everything above
/// 2 is the launcher's; the readiness pipe is stdout and stays.
pub fn close_inherited() {
    // SAFETY: close_range on descriptors nothing in this process uses yet.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    // Kernels before 5.9: the list in /proc, read whole before any is closed.
    for fd in inherited() {
        // SAFETY: as above; one of them is the closed listing's own (EBADF, harmless).
        unsafe { libc::close(fd) };
    }
}

/// Descriptors above stderr this process has open, as /proc lists them (or every
/// possible one, without /proc).
fn inherited() -> Vec<i32> {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => {
            // SAFETY: sysconf cannot fail for this name.
            let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
            (3..max.clamp(3, 65_536) as i32).collect()
        }
    }
}

/// Once every path is absolute: the daemon leaves the launcher's working directory,
/// whose file system could not be unmounted while the daemon runs.
pub fn leave_working_dir() {
    if let Err(err) = std::env::set_current_dir("/") {
        tracing::warn!(%err, "cannot change the working directory to /");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_is_listed_as_inherited_and_stdio_never() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let listed = inherited();
        assert!(listed.contains(&fd), "{fd} not in {listed:?}");
        assert!(listed.iter().all(|fd| *fd > 2));
    }
}
