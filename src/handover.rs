//! Handing a cache dir over from a daemon still uploading after its unmount to a new
//! mount of the same cache dir (`umount` then `mount` at once, `systemctl restart`).
//!
//! The cache dir's lock file holds the pid of its daemon. A mount that finds the lock
//! taken sends `handover` on the holder's control socket: a holder whose mount is gone
//! stops its drain at once (its queue is durable in the state, and an upload cut short
//! is what the state's in-flight markers are for) and exits, releasing the lock; a
//! holder still mounted says where, and the new mount is refused. The new mount waits
//! for the lock for a bounded time and then restores the queue as at any mount.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// How long a new mount waits for the previous daemon to hand the cache dir over.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often the holder is asked again while the lock stays taken: a daemon that was
/// starting up when first asked (no control socket yet) may answer later.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// How often the lock is tried while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Longest wait for one answer on the control socket.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The answer to `handover`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub pid: u32,
    pub mountpoint: PathBuf,
    /// Still mounted: the daemon goes on serving and the new mount is refused.
    pub mounted: bool,
}

/// The daemon's side: whether it still serves its mount, and whether it was asked to
/// hand over.
pub struct Handover {
    /// As the user gave it, for messages.
    mountpoint: PathBuf,
    /// With symlinks resolved (taken before mounting), as the mount table shows it.
    resolved: PathBuf,
    session_ended: AtomicBool,
    accepted: tokio::sync::watch::Sender<bool>,
}

impl Handover {
    /// Call before mounting: resolving the path afterwards would go through the mount.
    pub fn new(mountpoint: &Path) -> Handover {
        Handover {
            mountpoint: mountpoint.to_path_buf(),
            resolved: std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into()),
            session_ended: AtomicBool::new(false),
            accepted: tokio::sync::watch::channel(false).0,
        }
    }

    /// The FUSE session is over: from now on the daemon only drains.
    pub fn session_ended(&self) {
        self.session_ended.store(true, Ordering::SeqCst);
    }

    /// Answers a new mount. The session can still run for a moment after `umount`
    /// returned (it has not read the end of the connection yet): a mountpoint gone from
    /// the mount table counts as unmounted, or an `umount; mount` would race.
    pub fn answer(&self) -> Answer {
        let mounted = !self.session_ended.load(Ordering::SeqCst)
            && crate::mount::is_mount_point(&self.resolved);
        if !mounted && !self.accepted.send_replace(true) {
            tracing::info!(
                "a new mount asks for this cache dir: stopping the uploads after the unmount; \
                 what is not in the bucket stays queued for it"
            );
        }
        Answer {
            pid: std::process::id(),
            mountpoint: self.mountpoint.clone(),
            mounted,
        }
    }

    /// Resolves once a new mount was told this daemon hands over.
    pub async fn accepted(&self) {
        let mut accepted = self.accepted.subscribe();
        let _ = accepted.wait_for(|yes| *yes).await;
    }
}

/// Takes the exclusive lock on `lock` (the cache dir's lock file), asking the daemon
/// holding it to hand over and waiting at most `bound` for it to go. `notice` gets one
/// line for the user when the mount has to wait.
pub fn acquire(
    cache_dir: &Path,
    lock: &File,
    bound: Duration,
    notice: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    let socket = crate::control::socket_path(cache_dir);
    let mut asked: Option<Instant> = None;
    let mut holder = None;
    let mut waiting = false;
    loop {
        if try_lock(lock, cache_dir)? {
            if waiting {
                tracing::info!(
                    pid = holder,
                    "the previous daemon handed the cache dir over"
                );
            }
            return Ok(());
        }
        if asked.is_none_or(|at| at.elapsed() >= ASK_EVERY) {
            asked = Some(Instant::now());
            match ask(&socket) {
                Ok(answer) if answer.mounted => bail!(
                    "cache dir {} is in use by s3syncfs (pid {}) mounted at {}: unmount that \
                     first (s3syncfs unmount {}), or give this mount another cache dir",
                    cache_dir.display(),
                    answer.pid,
                    answer.mountpoint.display(),
                    answer.mountpoint.display()
                ),
                Ok(answer) => holder = Some(answer.pid),
                // Starting up (no socket yet), an older version, or exiting right now.
                Err(err) => tracing::debug!(%err, "no answer to handover"),
            }
            holder = holder.or_else(|| holder_pid(cache_dir));
        }
        if !waiting {
            waiting = true;
            notice(&format!(
                "waiting for the previous s3syncfs{} to hand over {} ...",
                pid_words(holder),
                cache_dir.display()
            ));
        }
        if Instant::now() >= deadline {
            bail!(
                "cache dir {} is still held by s3syncfs{}, which did not hand it over within \
                 {} s (it may still be mounted, or be an older version finishing its uploads): \
                 unmount it or let it exit, then mount again",
                cache_dir.display(),
                pid_words(holder),
                bound.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn pid_words(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// True once the lock is ours; false while another open of the file holds it.
fn try_lock(lock: &File, cache_dir: &Path) -> anyhow::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => bail!(
            "cannot lock cache dir {}: {err}; the cache dir must be on a local file system \
             that supports flock (not NFS)",
            cache_dir.display()
        ),
    }
}

/// Sends `handover` on the control socket; every step is bounded.
fn ask(socket: &Path) -> std::io::Result<Answer> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_WAIT))?;
    stream.set_write_timeout(Some(ANSWER_WAIT))?;
    stream.write_all(b"handover\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(line.trim()).map_err(std::io::Error::other)
}

/// Writes our pid into the lock file we hold, so a later mount can name us.
pub fn write_pid(lock: &File) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
}

/// The pid the cache dir's lock file names, if any.
pub fn holder_pid(cache_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(cache_dir.join("lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::net::UnixListener;

    fn open_lock(dir: &Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("lock"))
            .unwrap()
    }

    /// A control socket that gives `answer` to every request, on a thread.
    fn answering(dir: &Path, answer: Answer) {
        let listener = UnixListener::bind(crate::control::socket_path(dir)).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                assert_eq!(line, "handover\n");
                let _ = writeln!(stream, "{}", serde_json::to_string(&answer).unwrap());
            }
        });
    }

    #[test]
    fn a_free_lock_is_taken_without_a_word() {
        let dir = tempfile::tempdir().unwrap();
        let said = RefCell::new(Vec::<String>::new());
        let lock = open_lock(dir.path());
        acquire(dir.path(), &lock, WAIT, &|l| {
            said.borrow_mut().push(l.into())
        })
        .unwrap();
        write_pid(&lock).unwrap();
        assert_eq!(holder_pid(dir.path()), Some(std::process::id()));
        assert!(said.borrow().is_empty());
    }

    #[test]
    fn a_holder_still_mounted_is_named_and_the_mount_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_lock(dir.path());
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        answering(
            dir.path(),
            Answer {
                pid: 4242,
                mountpoint: "/mnt/photos".into(),
                mounted: true,
            },
        );
        let said = RefCell::new(Vec::<String>::new());
        let err = acquire(dir.path(), &open_lock(dir.path()), WAIT, &|l| {
            said.borrow_mut().push(l.into())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("pid 4242"), "{err}");
        assert!(err.contains("mounted at /mnt/photos"), "{err}");
        assert!(err.contains("s3syncfs unmount /mnt/photos"), "{err}");
        assert!(said.borrow().is_empty(), "a refusal does not wait");
    }

    #[test]
    fn a_draining_holder_is_waited_for_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_lock(dir.path());
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        answering(
            dir.path(),
            Answer {
                pid: 4242,
                mountpoint: "/mnt/photos".into(),
                mounted: false,
            },
        );
        let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
        let releaser = std::thread::spawn(move || {
            // Released once the waiting line was shown (closing the file drops the lock).
            let _ = gone_rx.recv_timeout(Duration::from_secs(10));
            drop(held);
        });
        let said = RefCell::new(Vec::<String>::new());
        acquire(dir.path(), &open_lock(dir.path()), WAIT, &|l| {
            said.borrow_mut().push(l.into());
            let _ = gone_tx.send(());
        })
        .unwrap();
        releaser.join().unwrap();
        let said = said.borrow();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("waiting for the previous s3syncfs (pid 4242) to hand over"));
    }

    #[test]
    fn a_holder_that_never_lets_go_ends_the_wait_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_lock(dir.path());
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        // No control socket (an older version): the pid comes from the lock file.
        held.write_all_at(b"777\n", 0).unwrap();
        let said = RefCell::new(Vec::<String>::new());
        let err = acquire(
            dir.path(),
            &open_lock(dir.path()),
            Duration::from_millis(200),
            &|l| said.borrow_mut().push(l.into()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("held by s3syncfs (pid 777)"), "{err}");
        assert!(err.contains("then mount again"), "{err}");
        assert_eq!(said.borrow().len(), 1);
    }

    #[test]
    fn a_daemon_hands_over_only_once_its_mount_is_gone() {
        // "/" is always in the mount table: a daemon mounted there refuses.
        let mounted = Handover::new(Path::new("/"));
        assert!(mounted.answer().mounted);
        assert!(!*mounted.accepted.borrow());
        mounted.session_ended();
        let answer = mounted.answer();
        assert!(!answer.mounted);
        assert_eq!(answer.pid, std::process::id());
        assert!(*mounted.accepted.borrow());
        // Unmounted but the session has not noticed yet: hands over too.
        let dir = tempfile::tempdir().unwrap();
        let unmounting = Handover::new(dir.path());
        assert!(!unmounting.answer().mounted);
        assert!(*unmounting.accepted.borrow());
    }
}
