//! systemd's readiness protocol (sd_notify): datagrams to `$NOTIFY_SOCKET`. Under a
//! `Type=notify` unit the daemon says READY=1 once the mount answers, keeps a STATUS=
//! line with what waits for the bucket, pings WATCHDOG=1 (when `WatchdogSec=` is set)
//! only while the core answers, and says STOPPING=1 while it drains at unmount.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::Status;
use crate::units::human_bytes;

/// How often STATUS= is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The service manager's socket, if this process runs under one.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let address = address_of(Path::new(&path))?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, address })
    }

    /// Sends `state` (`KEY=VALUE` lines); a manager that went away is not an error of ours.
    pub fn send(&self, state: &str) {
        if let Err(err) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::debug!(%err, "cannot notify the service manager");
        }
    }
}

/// A path, or `@name` for an abstract socket.
fn address_of(path: &Path) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok(),
        None => std::os::unix::net::SocketAddr::from_pathname(path).ok(),
    }
}

/// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID").map_or(true, |pid| {
        pid.parse::<u32>().ok() == Some(std::process::id())
    });
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether a stat of `mountpoint` (which the mount's own session answers) returns,
/// and succeeds, within `bound`.
pub fn answers_within(mountpoint: &Path, bound: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("s3syncfs-stat".into())
        .spawn(move || {
            let _ = tx.send(std::fs::metadata(&path).is_ok());
        });
    spawned.is_ok() && rx.recv_timeout(bound).unwrap_or(false)
}

/// What the monitor needs to know about the mount.
pub struct Watched {
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    /// Whether this process says READY=1 (a daemonizing parent says it for its child).
    pub announce_ready: bool,
    /// What uploads get at unmount: the stop timeout is extended to cover it.
    pub unmount_timeout: Duration,
}

/// Starts the monitor thread, once the FUSE session is about to serve.
pub fn start(notifier: Notifier, watched: Watched) {
    let spawned = std::thread::Builder::new()
        .name("s3syncfs-notify".into())
        .spawn(move || monitor(&notifier, &watched));
    if let Err(err) = spawned {
        tracing::warn!(%err, "cannot start the systemd notification thread");
    }
}

fn monitor(notifier: &Notifier, watched: &Watched) {
    if watched.announce_ready {
        // Answered by our own session once it runs: the mount answers when this returns.
        match std::fs::metadata(&watched.mountpoint) {
            Ok(_) => notifier.send("READY=1\nSTATUS=mounted"),
            Err(err) => {
                tracing::warn!(%err, "the new mount does not answer a stat");
                return;
            }
        }
    }
    let watchdog = watchdog_interval();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(10)));
    let socket = crate::control::socket_path(&watched.cache_dir);
    let mut stopping = false;
    loop {
        std::thread::sleep(every);
        // The status is read from the core under its locks: an answer means it works.
        let Some(status) = ask_status(&socket, every.max(Duration::from_secs(1))) else {
            if stopping {
                return; // the daemon is exiting
            }
            continue;
        };
        let mut state = format!("STATUS={}", describe(&status));
        if watchdog.is_some() {
            state.push_str("\nWATCHDOG=1");
        }
        if !stopping && !crate::mount::is_mount_point(&watched.mountpoint) {
            stopping = true;
            let drain = watched.unmount_timeout + Duration::from_secs(15);
            state = format!(
                "STOPPING=1\nEXTEND_TIMEOUT_USEC={}\nSTATUS=unmounted; {}",
                drain.as_micros(),
                describe(&status)
            );
        }
        notifier.send(&state);
    }
}

fn ask_status(socket: &Path, wait: Duration) -> Option<Status> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    stream.write_all(b"status\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(line.trim()).ok()
}

/// One line for `systemctl status`.
fn describe(s: &Status) -> String {
    let mut line = format!(
        "{}: {} files ({}) and {} deletes waiting, {} uploading",
        s.connection,
        s.files_waiting,
        human_bytes(s.bytes_waiting),
        s.deletes_waiting,
        s.uploads_in_flight
    );
    if s.failing > 0 {
        line.push_str(&format!(", {} failing (see s3syncfs status)", s.failing));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_are_addressed() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = address_of(Path::new("@/org/freedesktop/systemd1/notify")).unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        let path = address_of(Path::new("/run/systemd/notify")).unwrap();
        assert_eq!(path.as_pathname(), Some(Path::new("/run/systemd/notify")));
    }

    #[test]
    fn a_datagram_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            address: address_of(&path).unwrap(),
        };
        notifier.send("READY=1\nSTATUS=mounted");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=mounted");
    }
}
