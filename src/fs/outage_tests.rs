//! Unit tests of the core while the bucket is slow, hung or away: cached files open
//! and read without waiting for it, the check at open finishes in the background, and
//! what needs the bucket fails at once while it is known offline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cache::Cache;
use crate::mapping::{DefaultAttrs, KeyPrefix};
use crate::state::StateDb;
use crate::store::memory::MemoryStore;
use crate::store::{Metadata, ObjectStore};

use super::{Fs, FsConfig, FsError, KernelCache, KernelChange, ROOT};

/// What the core told the kernel.
#[derive(Default)]
struct Told(Mutex<Vec<KernelChange>>);

impl KernelCache for Told {
    fn invalidate(&self, change: &KernelChange) {
        self.0.lock().push(change.clone());
    }
}

struct Core {
    store: Arc<MemoryStore>,
    fs: Arc<Fs>,
    told: Arc<Told>,
    _dir: tempfile::TempDir,
}

/// A core whose opens check their file every time (metadata TTL 0), waiting
/// `open_check_wait` for the answer; every request is bounded by `request_timeout`.
fn core(
    runtime: tokio::runtime::Handle,
    open_check_wait: Duration,
    request_timeout: Duration,
    setup: impl FnOnce(&MemoryStore),
) -> Core {
    let store = Arc::new(MemoryStore::new());
    setup(&store);
    let dir = tempfile::tempdir().unwrap();
    let state = StateDb::open(&dir.path().join("state.db")).unwrap();
    let cache = Cache::open(dir.path(), &Default::default(), None).unwrap();
    let fs = Fs::new(
        store.clone() as Arc<dyn ObjectStore>,
        runtime,
        cache,
        Arc::new(state),
        FsConfig {
            prefix: KeyPrefix::new("").unwrap(),
            defaults: DefaultAttrs::default(),
            request_timeout,
            metadata_fill: 0,
            metadata_wait: 0,
            fsync_remote: false,
            metadata_ttl: Duration::ZERO,
            open_check_wait,
            cache_full_wait: Duration::from_secs(60),
        },
    );
    let told = Arc::new(Told::default());
    fs.set_kernel_cache(told.clone());
    Core {
        store,
        fs,
        told,
        _dir: dir,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl Core {
    fn heads(&self) -> u64 {
        self.store.stats().heads.load(Ordering::SeqCst)
    }

    /// Runs `work` (calls a FUSE thread would make) on its own thread and waits for it
    /// a bounded while: it must end while the bucket still hangs. Otherwise the hang
    /// ends, so that the thread can finish, and the test fails.
    fn completes<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(work());
        });
        match result.recv_timeout(Duration::from_secs(20)) {
            Ok(value) => value,
            Err(_) => {
                self.store.hang(false);
                panic!("{what} waited for the hung bucket");
            }
        }
    }

    /// Opens, reads whole and closes `name` in the root.
    fn read_all(fs: &Arc<Fs>, name: &str) -> Result<Vec<u8>, FsError> {
        let attr = fs.lookup(ROOT, name)?;
        let fh = fs.open(attr.ino, false, false)?;
        let data = fs.read(attr.ino, 0, attr.size as u32 + 10);
        fs.release(fh);
        data
    }
}

/// Waits, a bounded while, for something the background does.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never happened: {what}");
}

#[test]
fn a_check_at_open_the_bucket_does_not_answer_goes_on_behind_the_open_and_applies_the_new_version()
{
    let rt = runtime();
    let h = core(
        rt.handle().clone(),
        Duration::from_millis(20),
        Duration::from_secs(60),
        |s| s.insert("f", b"one", Metadata::new()),
    );
    assert_eq!(Core::read_all(&h.fs, "f").unwrap(), b"one");
    let ino = h.fs.lookup(ROOT, "f").unwrap().ino;
    h.told.0.lock().clear();
    h.store.insert("f", b"two!!", Metadata::new());
    h.store.hang(true);
    let heads = h.heads();
    let fs = h.fs.clone();
    let served = h.completes("open+read of a cached file", move || {
        // Twice: the second open starts no second check of the file.
        let first = Core::read_all(&fs, "f");
        (first, Core::read_all(&fs, "f"))
    });
    assert_eq!(served.0.unwrap(), b"one", "the cached version is served");
    assert_eq!(served.1.unwrap(), b"one");
    assert_eq!(h.heads(), heads + 1, "one check of the file at a time");
    assert!(h.told.0.lock().is_empty());
    // The bucket answers: the new version is taken, and the kernel told.
    h.store.hang(false);
    eventually("the new version taken", || {
        h.fs.getattr(ino).unwrap().size == 5
    });
    eventually("the kernel told", || {
        h.told.0.lock().contains(&KernelChange::Inode(ino))
    });
    assert_eq!(Core::read_all(&h.fs, "f").unwrap(), b"two!!");
}

#[test]
fn an_access_check_waits_for_the_check_under_way_to_learn_the_real_mode() {
    use crate::mapping::S_IFREG;
    let rt = runtime();
    // Another client's private file: a listing shows it with the default mode.
    let private = Metadata::from([("mode".to_string(), (S_IFREG | 0o600).to_string())]);
    let h = core(
        rt.handle().clone(),
        Duration::from_millis(20),
        Duration::from_secs(60),
        |s| s.insert("secret", b"only for its owner", private),
    );
    let ino = h.fs.lookup(ROOT, "secret").unwrap().ino;
    assert_eq!(h.fs.getattr(ino).unwrap().perm, 0o644);
    h.store.hang(true);
    // Root's open goes on with what the mount has; its check waits for the bucket.
    let fs = h.fs.clone();
    let fh = h.completes("root's open", move || fs.open(ino, false, false).unwrap());
    h.fs.release(fh);
    let fs = h.fs.clone();
    let others = std::thread::spawn(move || {
        let others_may_read = |attr: &super::Attr| attr.perm & 0o004 != 0;
        fs.open_with(ino, false, false, None, Some(&others_may_read))
            .map(|opened| opened.fh)
    });
    // (Let the other user's open find the check under way, then answer it.)
    std::thread::sleep(Duration::from_millis(100));
    h.store.hang(false);
    let opened = others.join().unwrap();
    assert!(
        matches!(opened, Err(FsError::Access)),
        "another user opened a 0600 file: {opened:?}"
    );
}

#[test]
fn a_check_answered_after_a_local_write_leaves_the_file_to_its_upload() {
    let rt = runtime();
    let h = core(
        rt.handle().clone(),
        Duration::from_millis(20),
        Duration::from_secs(60),
        |s| s.insert("f", b"one", Metadata::new()),
    );
    assert_eq!(Core::read_all(&h.fs, "f").unwrap(), b"one");
    let ino = h.fs.lookup(ROOT, "f").unwrap().ino;
    h.told.0.lock().clear();
    h.store.hang(true);
    let fs = h.fs.clone();
    let written = h.completes("open, read and write", move || {
        let read = Core::read_all(&fs, "f");
        let fh = fs.open(ino, true, false).unwrap();
        fs.write(ino, 0, b"mine, written here").unwrap();
        fs.release(fh);
        read
    });
    assert_eq!(written.unwrap(), b"one");
    // Another client's version comes with the check's answer, after the write.
    h.store.insert("f", b"theirs", Metadata::new());
    h.store.hang(false);
    eventually("the check over", || h.fs.checking.lock().is_empty());
    assert!(h.told.0.lock().is_empty(), "{:?}", h.told.0.lock());
    assert_eq!(
        h.fs.read(ino, 0, 100).unwrap(),
        b"mine, written here",
        "the local write was dropped for the bucket's version"
    );
}

#[test]
fn while_the_bucket_is_known_offline_opens_do_not_ask_and_what_is_not_cached_fails_at_once() {
    let rt = runtime();
    let h = core(
        rt.handle().clone(),
        Duration::from_millis(20),
        Duration::from_millis(300),
        |s| {
            s.insert("f", b"cached", Metadata::new());
            s.insert("g", b"not cached", Metadata::new());
            s.insert("d/x", b"in a directory not listed yet", Metadata::new());
        },
    );
    assert_eq!(Core::read_all(&h.fs, "f").unwrap(), b"cached");
    // The bucket hangs: the check behind an open gets no answer within the request
    // timeout, and the mount knows it is offline.
    h.store.hang(true);
    let fs = h.fs.clone();
    let served = h.completes("open+read", move || Core::read_all(&fs, "f"));
    assert_eq!(served.unwrap(), b"cached");
    eventually("offline", || h.fs.offline());
    let stats = h.store.stats();
    let before = (
        h.heads(),
        stats.gets.load(Ordering::SeqCst),
        stats.lists.load(Ordering::SeqCst),
    );
    let fs = h.fs.clone();
    let (cached, uncached, unlisted) = h.completes("work while offline", move || {
        let d = fs.lookup(ROOT, "d").unwrap().ino;
        (
            Core::read_all(&fs, "f"),
            Core::read_all(&fs, "g"),
            fs.lookup(d, "x"),
        )
    });
    assert_eq!(cached.unwrap(), b"cached", "no check while offline");
    assert!(matches!(uncached, Err(FsError::Io(_))), "{uncached:?}");
    assert!(matches!(unlisted, Err(FsError::NotFound)), "{unlisted:?}");
    let after = (
        h.heads(),
        stats.gets.load(Ordering::SeqCst),
        stats.lists.load(Ordering::SeqCst),
    );
    assert_eq!(
        before, after,
        "nothing was asked of the bucket while offline"
    );
    // Any answer (here the probe's) brings the mount back, and reads work again.
    h.store.hang(false);
    let _ = rt.block_on(h.store.head("probe"));
    assert!(!h.fs.offline());
    assert_eq!(Core::read_all(&h.fs, "g").unwrap(), b"not cached");
    let d = h.fs.lookup(ROOT, "d").unwrap().ino;
    assert!(h.fs.lookup(d, "x").is_ok());
}

#[test]
fn an_offline_mount_probes_the_bucket_until_it_answers_and_only_then() {
    use crate::sync::reach::{probe_while_offline, PROBE_EVERY};
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let h = core(
        clock.handle().clone(),
        Duration::from_secs(1),
        Duration::from_secs(30),
        |_| {},
    );
    clock.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let probe = tokio::spawn(probe_while_offline(h.fs.clone(), stopped));
        // Online: nothing is sent.
        tokio::time::sleep(PROBE_EVERY * 10).await;
        assert_eq!(h.heads(), 0);
        // A hung bucket: a probe every interval, each given up within it.
        h.store.hang(true);
        h.store.stats().reached(false);
        tokio::time::sleep(PROBE_EVERY * 10).await;
        let probes = h.heads();
        assert!(
            (4..=10).contains(&probes),
            "{probes} probes in ten intervals"
        );
        assert!(h.fs.offline());
        // It answers again: the next probe brings the mount back, and probing stops.
        h.store.hang(false);
        tokio::time::sleep(PROBE_EVERY * 2).await;
        assert!(!h.fs.offline());
        let probes = h.heads();
        tokio::time::sleep(PROBE_EVERY * 10).await;
        assert_eq!(h.heads(), probes);
        stop.send(true).unwrap();
        probe.await.unwrap();
    });
}

#[test]
fn a_first_listing_without_an_answer_marks_the_bucket_offline_and_the_next_fails_at_once() {
    let rt = runtime();
    let h = core(
        rt.handle().clone(),
        Duration::from_millis(20),
        Duration::from_millis(300),
        |s| {
            s.insert("d/x", b"x", Metadata::new());
            s.insert("e/y", b"y", Metadata::new());
        },
    );
    let d = h.fs.lookup(ROOT, "d").unwrap().ino;
    let e = h.fs.lookup(ROOT, "e").unwrap().ino;
    h.store.hang(true);
    // The LIST of d waits out the request timeout: names only the bucket holds look
    // absent, and the mount now knows the bucket is offline.
    let fs = h.fs.clone();
    let found = h.completes("a lookup in d", move || fs.lookup(d, "x"));
    assert!(matches!(found, Err(FsError::NotFound)), "{found:?}");
    assert!(h.fs.offline());
    let lists = h.store.stats().lists.load(Ordering::SeqCst);
    assert!(matches!(h.fs.readdir(e), Err(FsError::Io(_))));
    assert_eq!(h.store.stats().lists.load(Ordering::SeqCst), lists);
    h.store.hang(false);
}
