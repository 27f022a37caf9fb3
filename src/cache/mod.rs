//! The local disk cache: one content file per inode, named by a local id (never by the
//! remote key), with the byte ranges that hold valid data.

mod content;
mod fetcher;
pub mod ranges;
mod room;
mod spares;
mod usage;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use content::{Content, Hold, RemoteSource};
pub use fetcher::Fetcher;
pub use ranges::RangeSet;
pub use room::{Room, Waiter};
pub use usage::Usage;

pub struct Cache {
    data_dir: PathBuf,
    usage: Arc<Usage>,
    spares: spares::Spares,
}

impl Cache {
    /// Opens the cache under `dir`, keeping the content files named in `keep` (the
    /// durable state still needs them) and removing every other one. `limit` bounds
    /// the bytes of cache files on disk.
    pub fn open(dir: &Path, keep: &HashSet<String>, limit: Option<u64>) -> io::Result<Cache> {
        let data_dir = dir.join("data");
        match fs::DirBuilder::new().mode(0o700).create(&data_dir) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
        let mut highest = 0;
        for entry in fs::read_dir(&data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                highest = highest.max(u64::from_str_radix(&name, 16).unwrap_or(0));
            } else if crate::cache_dir::is_content_file_name(&name) && entry.file_type()?.is_file()
            {
                fs::remove_file(entry.path())?;
            } else {
                // Not a content file of ours (none is ever named otherwise): left alone.
                tracing::warn!(path = %entry.path().display(), "unexpected entry in the cache, left alone");
            }
        }
        let next_id = Arc::new(AtomicU64::new(highest + 1));
        Ok(Cache {
            spares: spares::Spares::start(&data_dir, next_id),
            data_dir,
            usage: Arc::new(Usage::new(limit)),
        })
    }

    /// Opens a content file kept from an earlier run.
    pub fn reopen(&self, name: &str, present: RangeSet) -> io::Result<Arc<Content>> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad cache file name",
            ));
        }
        let path = self.data_dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        Ok(Arc::new(Content::new(
            path,
            file,
            present,
            self.usage.clone(),
        )))
    }

    /// A new, empty content file; `present` says which ranges count as valid.
    pub fn create(&self, len: u64, present: RangeSet) -> io::Result<Arc<Content>> {
        let (path, file) = self.spares.take()?;
        // Never "truncate" a new file to 0: ext4 then writes it out at every close
        // (its replace-via-truncate safeguard), which stalls close(2) of big files.
        if len > 0 {
            file.set_len(len)?;
        }
        Ok(Arc::new(Content::new(
            path,
            file,
            present,
            self.usage.clone(),
        )))
    }

    /// Bytes the cache files take on disk, and the limit.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }
}

pub(crate) fn remove_file_quietly(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "could not remove cache file");
        }
    }
}
