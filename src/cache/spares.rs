//! Empty content files made ahead of need by a background thread. Creating a file
//! costs the cache's file system an inode allocation (tens to hundreds of µs on ext4
//! after many deletes), which would otherwise be part of every create(2) in the mount.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The thread refills below `LOW` up to `HIGH`: enough for a burst of creates.
const LOW: usize = 16;
const HIGH: usize = 64;

pub(super) struct Spares {
    shared: Arc<Shared>,
    refiller: Option<JoinHandle<()>>,
}

struct Shared {
    dir: PathBuf,
    next_id: Arc<AtomicU64>,
    files: Mutex<Pool>,
    wanted: Condvar,
}

#[derive(Default)]
struct Pool {
    files: Vec<(PathBuf, File)>,
    closed: bool,
}

impl Spares {
    pub fn start(dir: &Path, next_id: Arc<AtomicU64>) -> Spares {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            next_id,
            files: Mutex::new(Pool::default()),
            wanted: Condvar::new(),
        });
        let worker = shared.clone();
        let refiller = std::thread::Builder::new()
            .name("s3syncfs-spares".into())
            .spawn(move || worker.refill())
            .map_err(|err| tracing::warn!(%err, "no spare cache files: creates make their own"))
            .ok();
        Spares { shared, refiller }
    }

    /// A new empty file: a spare if one is ready, else made now.
    pub fn take(&self) -> io::Result<(PathBuf, File)> {
        let spare = {
            let mut pool = self.shared.files.lock();
            let spare = pool.files.pop();
            if pool.files.len() < LOW {
                self.shared.wanted.notify_one();
            }
            spare
        };
        match spare {
            Some(spare) => Ok(spare),
            None => self.shared.make(),
        }
    }
}

impl Shared {
    fn make(&self) -> io::Result<(PathBuf, File)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{id:016x}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok((path, file))
    }

    fn refill(&self) {
        loop {
            {
                let mut pool = self.files.lock();
                while !pool.closed && pool.files.len() >= LOW {
                    self.wanted.wait(&mut pool);
                }
                if pool.closed {
                    return;
                }
            }
            for _ in 0..HIGH {
                match self.make() {
                    Ok(spare) => {
                        let mut pool = self.files.lock();
                        if pool.closed {
                            super::remove_file_quietly(&spare.0);
                            return;
                        }
                        pool.files.push(spare);
                        if pool.files.len() >= HIGH {
                            break;
                        }
                    }
                    Err(err) => {
                        // A full or read-only disk: creates will report it themselves.
                        tracing::debug!(%err, "cannot make a spare cache file");
                        std::thread::sleep(Duration::from_secs(1));
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Spares {
    /// Stops the thread and removes the spares (they would be removed at the next
    /// start anyway, as files the state does not name).
    fn drop(&mut self) {
        self.shared.files.lock().closed = true;
        self.shared.wanted.notify_one();
        if let Some(refiller) = self.refiller.take() {
            let _ = refiller.join();
        }
        for (path, _) in self.shared.files.lock().files.drain(..) {
            super::remove_file_quietly(&path);
        }
    }
}
