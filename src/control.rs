//! The control socket (`CACHE_DIR/control.sock`, owner-only): `s3syncfs status` and
//! `s3syncfs sync` talk to the daemon through it, one request line each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::fs::Fs;

/// The extended attribute of the mount's root that names the control socket.
pub const CONTROL_XATTR: &str = "user.s3syncfs.control";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub bucket: String,
    pub prefix: String,
    pub files_waiting: usize,
    pub deletes_waiting: usize,
    pub cache_bytes: u64,
}

/// One line of the answer to `sync`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncProgress {
    pub files_waiting: usize,
    pub deletes_waiting: usize,
    pub done: bool,
}

pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.sock")
}

/// Serves requests until the runtime shuts down.
pub fn serve(
    fs: Arc<Fs>,
    path: PathBuf,
    bucket: String,
    sync_all: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (fs, bucket, sync_all) = (fs.clone(), bucket.clone(), sync_all.clone());
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &fs, &bucket, &sync_all).await {
                    tracing::debug!(%err, "control request failed");
                }
            });
        }
    });
    Ok(())
}

async fn answer(
    stream: UnixStream,
    fs: &Fs,
    bucket: &str,
    sync_all: &AtomicBool,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    match line.trim() {
        "status" => {
            let (files, deletes) = fs.pending();
            let status = Status {
                bucket: bucket.to_string(),
                prefix: fs.config().prefix.as_str().to_string(),
                files_waiting: files,
                deletes_waiting: deletes,
                cache_bytes: fs.cache().disk_usage(),
            };
            write
                .write_all(format!("{}\n", serde_json::to_string(&status)?).as_bytes())
                .await
        }
        "sync" => {
            // Everything pending goes up now, without the debounce.
            sync_all.store(true, Ordering::SeqCst);
            loop {
                let (files, deletes) = fs.pending();
                let done = files == 0 && deletes == 0;
                let progress = SyncProgress {
                    files_waiting: files,
                    deletes_waiting: deletes,
                    done,
                };
                write
                    .write_all(format!("{}\n", serde_json::to_string(&progress)?).as_bytes())
                    .await?;
                if done {
                    sync_all.store(false, Ordering::SeqCst);
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        other => {
            write
                .write_all(format!("{{\"error\":\"unknown request {other:?}\"}}\n").as_bytes())
                .await
        }
    }
}
