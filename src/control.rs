//! The control socket (`CACHE_DIR/control.sock`, owner-only): `s3syncfs status` and
//! `s3syncfs sync` talk to the daemon through it, one request line each, answers as
//! JSON lines; a new mount of the same cache dir asks it to hand over (`handover`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::fs::{ConditionalWrites, Fs};
use crate::store::Reach;
use crate::sync::report::{Failure, UploadReport};

/// Room for the control socket's path in the answer to `CONTROL_IOCTL`.
pub const CONTROL_PATH_MAX: usize = 256;

/// An ioctl on the mount's root directory answers with the control socket's path:
/// `_IOR('S', 1, [u8; CONTROL_PATH_MAX])`. (Not an extended attribute: a filesystem
/// that answers getxattr is asked for security.capability before every write.)
pub const CONTROL_IOCTL: u32 =
    (2 << 30) | ((CONTROL_PATH_MAX as u32) << 16) | ((b'S' as u32) << 8) | 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub bucket: String,
    pub prefix: String,
    /// "online", "offline" or "unknown" (no request made yet).
    pub connection: String,
    /// Unix seconds of the last change of `connection`.
    pub connection_since: Option<u64>,
    pub files_waiting: usize,
    pub bytes_waiting: u64,
    pub deletes_waiting: usize,
    pub uploads_in_flight: usize,
    pub bytes_in_flight: u64,
    /// Jobs whose last attempt failed; they are retried with backoff.
    pub failing: usize,
    pub last_failure: Option<Failure>,
    /// Unix seconds of the last successful write or delete in the bucket.
    pub last_success: Option<u64>,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    pub conflicts: u64,
    /// Keys whose upload is held: they made their conflict copies for the hour.
    #[serde(default)]
    pub held_after_conflicts: Vec<String>,
    /// "honoured", "ignored" (each write checked with a HEAD first) or "unknown".
    pub conditional_writes: String,
    pub cache_bytes: u64,
    pub cache_limit: Option<u64>,
    /// Writes waiting for uploads to make room in a cache full of changes.
    #[serde(default)]
    pub writes_waiting_for_room: usize,
    /// Unix seconds since when writes wait for room (this episode).
    #[serde(default)]
    pub waiting_for_room_since: Option<u64>,
    /// Kernel passthrough of cached files: "on", or "off" with the reason.
    #[serde(default)]
    pub passthrough: String,
    /// Handles opened with passthrough since the mount.
    #[serde(default)]
    pub direct_opens: u64,
    /// Unix seconds of the last listing applied for other clients' changes.
    #[serde(default)]
    pub remote_checked: Option<u64>,
    /// Seconds between polls, as last decided (the interval, or longer for a large
    /// bucket); none while polling is off or before the first poll.
    #[serde(default)]
    pub poll_every: Option<u64>,
    /// Directories the last poll listed; none: the whole bucket.
    #[serde(default)]
    pub poll_dirs: Option<usize>,
}

/// One line of the answer to `sync`: what was pending at the call, and what is left.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncProgress {
    pub total_files: usize,
    pub total_bytes: u64,
    pub total_deletes: usize,
    pub files_left: usize,
    pub bytes_left: u64,
    pub deletes_left: usize,
    /// The last failure of an upload, while uploads fail (offline, refused).
    pub failing: Option<String>,
    pub done: bool,
}

/// How often `sync` looks at what is left, and the longest gap between its lines.
const SYNC_LOOK: Duration = Duration::from_millis(20);
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.sock")
}

/// What the control socket reads from.
#[derive(Clone)]
pub struct Daemon {
    pub fs: Arc<Fs>,
    pub bucket: String,
    /// Count of `sync` calls under way (the uploader skips its debounce meanwhile).
    pub sync_requests: Arc<AtomicUsize>,
    pub report: Arc<UploadReport>,
    /// Answers a new mount of the same cache dir (`handover`).
    pub handover: Arc<crate::handover::Handover>,
}

/// Serves requests until the runtime shuts down.
pub fn serve(daemon: Daemon, path: PathBuf) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let daemon = daemon.clone();
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &daemon).await {
                    tracing::debug!(%err, "control request failed");
                }
            });
        }
    });
    Ok(())
}

async fn answer(stream: UnixStream, daemon: &Daemon) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let line = line.trim();
    if let Some(args) = line.strip_prefix("verify ") {
        return verify(daemon, args, &mut write).await;
    }
    match line {
        "status" => {
            let status = status(daemon);
            write
                .write_all(format!("{}\n", serde_json::to_string(&status)?).as_bytes())
                .await
        }
        "sync" => sync(daemon, &mut write).await,
        "handover" => {
            let answer = daemon.handover.answer();
            write
                .write_all(format!("{}\n", serde_json::to_string(&answer)?).as_bytes())
                .await
        }
        other => {
            write
                .write_all(format!("{{\"error\":\"unknown request {other:?}\"}}\n").as_bytes())
                .await
        }
    }
}

fn status(daemon: &Daemon) -> Status {
    let fs = &daemon.fs;
    let pending = fs.pending();
    let report = daemon.report.snapshot();
    let (reach, since) = fs.store().stats().reach();
    let usage = fs.cache().usage();
    let cadence = *fs.poll_cadence.lock();
    Status {
        bucket: daemon.bucket.clone(),
        prefix: fs.config().prefix.as_str().to_string(),
        connection: match reach {
            Reach::Online => "online",
            Reach::Offline => "offline",
            Reach::Unknown => "unknown",
        }
        .to_string(),
        connection_since: (reach != Reach::Unknown).then_some(since),
        files_waiting: pending.files,
        bytes_waiting: pending.bytes,
        deletes_waiting: pending.deletes,
        uploads_in_flight: report.in_flight,
        bytes_in_flight: report.in_flight_bytes,
        failing: report.failing,
        last_failure: report.last_failure,
        last_success: report.last_success,
        uploaded_files: report.uploaded_files,
        uploaded_bytes: report.uploaded_bytes,
        conflicts: fs.conflicts(),
        held_after_conflicts: fs.held_after_conflicts(),
        conditional_writes: match fs.conditional_writes() {
            ConditionalWrites::Honoured => "honoured",
            ConditionalWrites::Ignored => "ignored",
            ConditionalWrites::Unknown => "unknown",
        }
        .to_string(),
        cache_bytes: usage.used(),
        cache_limit: usage.limit(),
        writes_waiting_for_room: fs.writes_waiting(),
        waiting_for_room_since: usage
            .room()
            .waiting_since()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        passthrough: fs.direct_use.mode(),
        direct_opens: fs.direct_use.opens(),
        remote_checked: Some(fs.last_poll.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|&t| t > 0),
        poll_every: cadence.map(|c| c.every_secs),
        poll_dirs: cadence.and_then(|c| c.dirs),
    }
}

/// Waits for what was pending at the call; changes made later are not waited for.
async fn sync(daemon: &Daemon, write: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
    struct Request<'a>(&'a AtomicUsize);
    impl Drop for Request<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    daemon.sync_requests.fetch_add(1, Ordering::SeqCst);
    let _request = Request(&daemon.sync_requests);
    daemon.fs.wake.now();
    let mark = daemon.fs.sync_mark();
    let total = mark.total();
    let mut last_sent: Option<(SyncProgress, tokio::time::Instant)> = None;
    loop {
        let left = daemon.fs.sync_remaining(&mark);
        let done = left.files == 0 && left.deletes == 0;
        let report = daemon.report.snapshot();
        let progress = SyncProgress {
            total_files: total.files,
            total_bytes: total.bytes,
            total_deletes: total.deletes,
            files_left: left.files,
            bytes_left: left.bytes,
            deletes_left: left.deletes,
            failing: (report.failing > 0)
                .then(|| {
                    report
                        .last_failure
                        .map(|f| format!("{}: {}", f.key, f.error))
                })
                .flatten(),
            done,
        };
        // A line when something changed, and at least every PROGRESS_EVERY (a client
        // that gave up closes the socket: the write fails and the call ends).
        let now = tokio::time::Instant::now();
        let due = last_sent.as_ref().is_none_or(|(sent, at)| {
            *sent != progress || now.duration_since(*at) >= PROGRESS_EVERY
        });
        if due {
            write
                .write_all(format!("{}\n", serde_json::to_string(&progress)?).as_bytes())
                .await?;
            last_sent = Some((progress, now));
        }
        if done {
            return Ok(());
        }
        // Looked at often, so the end is noticed within a few ms, but each look walks
        // the mark under the tree lock: a large one is looked at less often.
        let walk = Duration::from_micros(2 * (total.files + total.deletes) as u64);
        tokio::time::sleep(walk.clamp(SYNC_LOOK, PROGRESS_EVERY)).await;
    }
}

/// What `verify` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Relative to the mount's root; empty for all of it.
    pub path: String,
    pub deep: bool,
}

/// One line of the answer to `verify`: progress, then the report (or an error).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyLine {
    Progress { done: usize, total: usize },
    Report(crate::fs::VerifyReport),
    Error(String),
}

async fn send(write: &mut (impl AsyncWriteExt + Unpin), line: &VerifyLine) -> std::io::Result<()> {
    write
        .write_all(format!("{}\n", serde_json::to_string(line)?).as_bytes())
        .await
}

async fn verify(
    daemon: &Daemon,
    args: &str,
    write: &mut (impl AsyncWriteExt + Unpin),
) -> std::io::Result<()> {
    let request: VerifyRequest = match serde_json::from_str(args) {
        Ok(r) => r,
        Err(err) => return send(write, &VerifyLine::Error(format!("bad request: {err}"))).await,
    };
    let fs = daemon.fs.clone();
    let path = request.path.clone();
    // Lookups and listings of the subtree block: off the async threads.
    let scope = tokio::task::spawn_blocking(move || {
        let ino = fs.resolve_path(&path)?;
        fs.verify_scope(ino).map(|(key, is_dir)| (ino, key, is_dir))
    })
    .await
    .map_err(std::io::Error::other)?;
    let (ino, key, is_dir) = match scope {
        Ok(scope) => scope,
        Err(err) => {
            let why = format!("{}: {err}", request.path);
            return send(write, &VerifyLine::Error(why)).await;
        }
    };
    let listing = match daemon.fs.store().list(&key, None).await {
        Ok(mut listing) => {
            if !is_dir {
                listing.objects.retain(|o| o.key == key);
            }
            listing
        }
        Err(err) => {
            return send(
                write,
                &VerifyLine::Error(format!("cannot list the bucket: {err}")),
            )
            .await
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let fs = daemon.fs.clone();
    let deep = request.deep;
    let work = tokio::task::spawn_blocking(move || {
        let mut last = std::time::Instant::now();
        let report = fs.verify(ino, &listing, deep, &mut |done, total| {
            if last.elapsed() >= Duration::from_millis(200) || done == total {
                last = std::time::Instant::now();
                let _ = tx.send(VerifyLine::Progress { done, total });
            }
        });
        let _ = tx.send(VerifyLine::Report(report));
    });
    while let Some(line) = rx.recv().await {
        send(write, &line).await?;
    }
    work.await.map_err(std::io::Error::other)
}
