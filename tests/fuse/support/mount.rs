//! A mount of the real binary, always detached when dropped (even when a test fails),
//! and the helpers that unmount it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mount {
    child: Option<Child>,
    pub path: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// Takes the started daemon and waits until its mount is up.
    pub(super) fn started(child: Child, path: PathBuf, log: PathBuf) -> Mount {
        let mut mount = Mount {
            child: Some(child),
            path,
            log,
        };
        mount.wait_ready();
        mount
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if is_mounted(&self.path) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("s3syncfs exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mount did not become ready: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and waits for the daemon to finish its uploads and exit.
    pub fn unmount(mut self) {
        let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&self.path));
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            text(&out)
        );
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(
            status.success(),
            "daemon exited with {status}: {}",
            self.log_text()
        );
    }
}

impl Mount {
    /// Kills the daemon with SIGKILL (a crash) and detaches the dead mount.
    /// kill -9, then what the daemon logged (read after it died, so the kill lands
    /// when the caller meant it to).
    pub fn kill9_with_log(self) -> String {
        let log = self.log.clone();
        self.kill9();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let status = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "could not detach the dead mount");
    }

    /// Sends SIGTERM to the daemon (which we started) and waits for it to exit.
    pub fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "daemon exited with {status}: {}",
            self.log_text()
        );
    }
}

impl Mount {
    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `fusermount3 -u` without waiting for the daemon, which goes on uploading.
    pub fn unmount_no_wait(mut self) -> Draining {
        let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&self.path));
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            text(&out)
        );
        Draining {
            child: self.child.take(),
            log: self.log.clone(),
        }
    }
}

/// A daemon whose mount is gone and that may still be uploading.
pub struct Draining {
    child: Option<Child>,
    log: PathBuf,
}

impl Draining {
    /// Waits (bounded) for the daemon to exit, which it must do successfully.
    pub fn wait_exit(mut self) {
        let mut child = self.child.take().unwrap();
        let mut status = None;
        super::wait_until("the draining daemon exits", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "daemon exited with {status}: {log}");
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs an unmount command, again while it says the mount is busy (for up to 10 s).
///
/// Tests run in parallel threads of one process, and every child process any of them
/// spawns starts with a copy of the whole process's descriptors until its exec closes
/// them: a file another test closed a moment ago can still be open in such a child and
/// hold that mount busy. The kernel's own close is done by then (a pending RELEASE holds
/// only the inode, not the mount), so this is a test-harness race, not a daemon's.
pub fn unmount_when_free(command: &mut Command) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = command.output().unwrap();
        if out.status.success() || !text(&out).contains("busy") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command's standard output and error, for messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
}
