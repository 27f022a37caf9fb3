//! The local disk cache: one content file per inode, named by a local id (never by the
//! remote key), with the byte ranges that hold valid data.

mod content;
mod fetcher;
pub mod ranges;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use content::{Content, RemoteSource};
pub use fetcher::Fetcher;
pub use ranges::RangeSet;

pub struct Cache {
    data_dir: PathBuf,
    next_id: AtomicU64,
}

impl Cache {
    /// Opens the cache under `dir`. Content files from an earlier run are removed:
    /// until the durable state exists nothing records what they belonged to.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        let data_dir = dir.join("data");
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)?;
        }
        fs::create_dir_all(&data_dir)?;
        Ok(Cache {
            data_dir,
            next_id: AtomicU64::new(1),
        })
    }

    /// A new, empty content file; `present` says which ranges count as valid.
    pub fn create(&self, len: u64, present: RangeSet) -> io::Result<Arc<Content>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.data_dir.join(format!("{id:016x}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(len)?;
        Ok(Arc::new(Content::new(path, file, present)))
    }

    /// Bytes the cache files take on disk.
    pub fn disk_usage(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::read_dir(&self.data_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.blocks() * 512)
                    .sum()
            })
            .unwrap_or(0)
    }
}

pub(crate) fn remove_file_quietly(path: &Path, file: &File) {
    let _ = file;
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "could not remove cache file");
        }
    }
}
