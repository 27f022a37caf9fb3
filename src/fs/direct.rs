//! Direct handles: the kernel sends their reads and writes straight to the cache file
//! (FUSE passthrough), at local-disk speed. The core sees none of that I/O, so a
//! direct handle keeps its file pinned while open, and writes are noticed from the
//! cache file's size and times: at close, at stat, before an upload is planned.

use std::any::Any;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cache::Hold;

use super::tree::{NodeKind, Tree};
use super::Fs;

/// What the kernel side keeps for a file handed over (a FUSE backing id); dropped
/// when the last direct handle of the file closes.
pub type KernelFile = Arc<dyn Any + Send + Sync>;

/// Hands a cache file to the kernel for direct I/O.
pub type Attach<'a> = &'a dyn Fn(&File) -> io::Result<KernelFile>;

/// Whether the kernel takes direct handles, in words for `status`, and how many
/// handles were opened direct since the mount.
#[derive(Default)]
pub struct DirectUse {
    mode: parking_lot::Mutex<String>,
    opens: std::sync::atomic::AtomicU64,
}

impl DirectUse {
    pub fn set_mode(&self, mode: impl Into<String>) {
        *self.mode.lock() = mode.into();
    }

    pub fn mode(&self) -> String {
        let mode = self.mode.lock();
        if mode.is_empty() {
            "off".into()
        } else {
            mode.clone()
        }
    }

    pub fn opens(&self) -> u64 {
        self.opens.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The direct handles of one inode.
pub struct DirectOpen {
    pub handles: u32,
    pub writers: u32,
    kernel: KernelFile,
    /// The cache file as last looked at.
    seen: Stamp,
    /// `seen` was taken within the current timestamp tick: a write right after it may
    /// have left size and times unchanged, so the next look counts as a change.
    unsure: bool,
    _hold: Hold,
}

/// What a write to the cache file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &File) -> io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether a write after this look could leave the times as they are: the file's
    /// timestamps are taken from the kernel's coarse clock, which may not have moved.
    /// Not with multigrain timestamps (Linux 6.13+ on ext4, xfs, btrfs, tmpfs): a
    /// change after a stat then always gets a finer, later ctime.
    fn may_hide_next_write(&self, file: &File) -> bool {
        static MULTIGRAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *MULTIGRAIN.get_or_init(|| multigrain_timestamps(file)) {
            return false;
        }
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only into `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
        self.ctime >= (now.tv_sec, now.tv_nsec)
    }

    fn mtime(&self) -> SystemTime {
        let (secs, nanos) = self.mtime;
        match u64::try_from(secs) {
            Ok(secs) => {
                SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos.max(0) as u32)
            }
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    }
}

/// Whether `file`'s file system gets multigrain timestamps from this kernel.
fn multigrain_timestamps(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const MULTIGRAIN_FS: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];
    // SAFETY: uname and fstatfs write only into the zeroed structs given.
    let (name, fs) = unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        let mut fs: libc::statfs = std::mem::zeroed();
        if libc::uname(&mut name) != 0 || libc::fstatfs(file.as_raw_fd(), &mut fs) != 0 {
            return false;
        }
        (name, fs)
    };
    let release: String = name
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    // f_type's width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let fs_type = fs.f_type as i64;
    version >= (6, 13) && MULTIGRAIN_FS.contains(&fs_type)
}

impl Fs {
    /// Makes the new handle of `ino` direct if the file is open direct already (the
    /// kernel keeps one mode per file), or if it can be: `attach` is given, the file's
    /// data is all in the cache, no handle has it open the ordinary way, and writers
    /// only while the cache has no size limit (direct writes bypass its accounting).
    /// `others` is how many handles were open before this one.
    pub(super) fn try_direct(
        &self,
        tree: &mut Tree,
        ino: u64,
        writable: bool,
        others: u32,
        attach: Option<Attach>,
    ) -> Option<KernelFile> {
        let inode = tree.get_mut(ino)?;
        if inode.attr.kind != NodeKind::File {
            return None;
        }
        // A file already open direct must be joined (the kernel refuses the other mode),
        // even by a writer under a cache limit.
        if let Some(direct) = inode.direct.as_mut() {
            self.direct_use
                .opens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            direct.handles += 1;
            direct.writers += u32::from(writable);
            let kernel = direct.kernel.clone();
            if writable {
                tree.direct_writing.insert(ino);
            }
            return Some(kernel);
        }
        let attach = attach?;
        if others > 0 || (writable && self.cache.usage().limit().is_some()) {
            return None;
        }
        let size = inode.attr.size;
        let (content, _, _) = self.content(tree, ino).ok()?;
        if !content.is_complete(size) {
            return None;
        }
        let seen = Stamp::of(content.file()).ok()?;
        if seen.size != size {
            return None;
        }
        let kernel = match attach(content.file()) {
            Ok(kernel) => kernel,
            Err(err) => {
                tracing::debug!(ino, %err, "direct I/O refused by the kernel");
                return None;
            }
        };
        self.direct_use
            .opens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inode = tree.get_mut(ino)?;
        inode.direct = Some(DirectOpen {
            handles: 1,
            writers: u32::from(writable),
            kernel: kernel.clone(),
            unsure: seen.may_hide_next_write(content.file()),
            seen,
            _hold: content.hold(),
        });
        if writable {
            tree.direct_writing.insert(ino);
        }
        Some(kernel)
    }

    /// A direct handle closed: its writes are noticed, and with the last handle the
    /// file goes back to the ordinary path (unpinned, its disk use recounted).
    pub(super) fn direct_released(&self, tree: &mut Tree, ino: u64, writable: bool) {
        self.notice_direct_writes(tree, ino);
        let Some(inode) = tree.get_mut(ino) else {
            return;
        };
        let Some(direct) = inode.direct.as_mut() else {
            return;
        };
        direct.handles = direct.handles.saturating_sub(1);
        if writable {
            direct.writers = direct.writers.saturating_sub(1);
        }
        if direct.writers == 0 {
            tree.direct_writing.remove(&ino);
        }
        let inode = tree.get_mut(ino).expect("looked up above");
        if inode.direct.as_ref().is_some_and(|d| d.handles == 0) {
            inode.direct = None;
            if let Some(content) = &inode.content {
                content.recount();
            }
        }
    }

    /// Takes in what direct writers did to `ino` since the last look: a new size and
    /// mtime, and a new data version so the file goes up.
    pub(super) fn notice_direct_writes(&self, tree: &mut Tree, ino: u64) {
        let Some(inode) = tree.get_mut(ino) else {
            return;
        };
        let (Some(direct), Some(content)) = (inode.direct.as_mut(), inode.content.as_ref()) else {
            return;
        };
        if direct.writers == 0 {
            return;
        }
        let now = Stamp::of(content.file());
        let changed = now.as_ref().map_or(true, |s| *s != direct.seen);
        // A look that could not rule out a hidden write counts as a change.
        let suspect = changed || direct.unsure;
        if let Ok(stamp) = now {
            if changed {
                inode.attr.size = stamp.size;
                inode.attr.mtime = stamp.mtime();
                inode.attr.ctime = SystemTime::now();
                // Direct writers only open complete files: every byte is local now.
                content.mark_all_present();
            }
            direct.unsure = stamp.may_hide_next_write(content.file());
            direct.seen = stamp;
        }
        if suspect {
            inode.data_version += 1;
            tree.mark_dirty(ino);
        }
    }

    /// Notices direct writes to every file open for direct writing.
    pub(super) fn notice_all_direct_writes(&self, tree: &mut Tree) {
        let writing: Vec<u64> = tree.direct_writing.iter().copied().collect();
        for ino in writing {
            self.notice_direct_writes(tree, ino);
        }
    }
}
