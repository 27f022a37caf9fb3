//! The check of a file against the bucket at open (close-to-open freshness): one HEAD,
//! waited for a short while. Past that the open serves what the mount has, and the
//! answer is applied when it comes, as it would have been at once.

use std::sync::Arc;

use tokio::sync::watch;

use crate::store::ObjectInfo;

use super::conflict::{KernelChange, RemoteVersion};
use super::remote::HeadChecked;
use super::tree::{same_etag, NodeKind};
use super::{Fs, FsError, FsResult};

/// What a check asks about: the file's key and the version the mount holds there.
struct Due {
    key: String,
    etag: String,
}

/// Where the finding of a check under way will be, for opens that wait for it (None
/// until it is applied).
pub(super) type Finding = watch::Receiver<Option<Found>>;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Kept, or its new version or attributes taken.
    Present,
    /// Gone from the bucket (or from the namespace meanwhile): removed here too.
    Deleted,
}

/// A file's check under way, until dropped: no second one starts meanwhile.
struct Checking {
    fs: Arc<Fs>,
    ino: u64,
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.fs.checking.lock().remove(&self.ino);
    }
}

impl Fs {
    /// At open: a clean file whose bucket version was not confirmed within the TTL is
    /// checked with one HEAD. Gone: ENOENT. Changed: the new version is taken. The open
    /// waits for the answer at most `open_check_wait`, then goes on with what the mount
    /// has while the check finishes in the background; `patient` (an access check that
    /// needs the object's real mode and owner) waits for the whole HEAD, or for the one
    /// under way, when those are not known yet. No check while the bucket is known
    /// offline, nor a second one of a file while one is under way.
    pub(super) fn revalidate_at_open(self: &Arc<Self>, ino: u64, patient: bool) -> FsResult<()> {
        let Some((due, meta_known)) = self.check_due(ino)? else {
            return Ok(());
        };
        if self.offline() {
            return Ok(());
        }
        let patient = patient && !meta_known;
        let (mut found, started) = {
            let mut checking = self.checking.lock();
            match checking.get(&ino) {
                // One check at a time: this open serves what the mount has...
                Some(_) if !patient => return Ok(()),
                // ...unless it needs the real mode and owner: then it waits for those.
                Some(finding) => (finding.clone(), None),
                None => {
                    let (found_tx, found) = watch::channel(None);
                    checking.insert(ino, found.clone());
                    (found, Some(found_tx))
                }
            }
        };
        if let Some(found_tx) = started {
            // Not under the lock: a task dropped unstarted (the runtime going away)
            // takes it to clear its mark.
            let checking = Checking {
                fs: self.clone(),
                ino,
            };
            let check = self.clone().check(ino, due, checking, found_tx);
            self.runtime.spawn(check);
        }
        let wait = if patient {
            // The check ends by then: its HEAD is bounded by the request timeout.
            self.config.request_timeout * 2
        } else {
            self.config.open_check_wait
        };
        let found = self.runtime.block_on(async move {
            let applied = async move { found.wait_for(Option::is_some).await.map(|f| *f) };
            tokio::time::timeout(wait, applied).await
        });
        match found {
            Ok(Ok(Some(Found::Deleted))) => Err(FsError::NotFound),
            // Present, or the check failed (the mount's version stays).
            Ok(_) => Ok(()),
            Err(_) => {
                tracing::debug!(
                    ino,
                    "the bucket is slow: the open goes on, the check behind it"
                );
                Ok(())
            }
        }
    }

    /// The key to check `ino` at, and whether its metadata is known; None when the
    /// file needs no check (confirmed within the TTL, changed here, renamed, busy).
    fn check_due(&self, ino: u64) -> FsResult<Option<(Due, bool)>> {
        let ttl = self.config.metadata_ttl;
        let tree = self.tree.lock();
        let inode = tree.get(ino).ok_or(FsError::NotFound)?;
        let Some(stored) = &inode.stored else {
            return Ok(None);
        };
        let fresh = inode.meta_known && inode.checked.is_some_and(|t| t.elapsed() < ttl);
        if fresh
            || inode.attr.kind == NodeKind::Dir
            || tree.dirty().contains_key(&ino)
            || tree.own_work_on(&stored.key, tree.epoch)
            || self.current_key(&tree, ino).as_deref() != Some(stored.key.as_str())
        {
            return Ok(None);
        }
        let due = Due {
            key: stored.key.clone(),
            etag: stored.etag.clone(),
        };
        Ok(Some((due, inode.meta_known)))
    }

    /// The HEAD, bounded by the request timeout, and its answer applied; what it found
    /// goes to the opens that still wait.
    async fn check(
        self: Arc<Self>,
        ino: u64,
        due: Due,
        checking: Checking,
        found: watch::Sender<Option<Found>>,
    ) {
        let reading = self.begin_reading();
        let epoch = reading.epoch;
        let heard = self.store.stats().answers();
        let head = self.store.head_checked(&due.key);
        let answer = match tokio::time::timeout(self.config.request_timeout, head).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                // Refused or failing: what this mount has is what the open gets.
                tracing::warn!("HEAD {}: {err}", due.key);
                return;
            }
            Err(_) => {
                self.no_answer(&format!("HEAD {}", due.key), heard);
                return;
            }
        };
        // The tree's lock may be held a while (a poll applying a large listing): not
        // on a runtime thread.
        let fs = self.clone();
        let applied =
            tokio::task::spawn_blocking(move || fs.apply_check(ino, &due, epoch, answer)).await;
        drop(reading);
        drop(checking);
        if let Ok(applied) = applied {
            found.send_replace(Some(applied)); // the opens may have gone on already
        }
    }

    /// Applies a check's answer (`None`: no such object) unless the file changed since
    /// the check started: written or renamed here, another version taken by the poll
    /// or our own upload, or the key touched by newer news.
    fn apply_check(&self, ino: u64, due: &Due, epoch: u64, answer: Option<ObjectInfo>) -> Found {
        let key = &due.key;
        let changes = {
            let mut tree = self.tree.lock();
            let Some(inode) = tree.get(ino) else {
                return Found::Deleted;
            };
            let still_same = !tree.dirty().contains_key(&ino)
                && !tree.own_work_on(key, epoch)
                && inode
                    .stored
                    .as_ref()
                    .is_some_and(|s| s.key == *key && same_etag(&s.etag, &due.etag))
                && self.current_key(&tree, ino).as_deref() == Some(key.as_str());
            if !still_same {
                return Found::Present; // changed meanwhile: the upload or the poll decides
            }
            match answer {
                None => {
                    // Newer than any poll's listing under way: that must not undo it.
                    tree.touch(key);
                    let changes = self.forget_deleted(&mut tree, ino);
                    drop(tree);
                    // Not waited for: an open may wait for this, and the kernel may
                    // hold the directory's lock during that open.
                    self.tell_kernel_later(changes);
                    return Found::Deleted;
                }
                Some(info) if due.etag.is_empty() || same_etag(&due.etag, &info.etag) => {
                    if !self.apply_head_attrs(&mut tree, ino, &info) {
                        return Found::Present;
                    }
                    vec![KernelChange::Attrs(ino)]
                }
                Some(info) => {
                    let remote = RemoteVersion {
                        key: key.clone(),
                        info: info.clone(),
                        metadata_known: true,
                    };
                    tree.touch(key);
                    let changes = self.adopt_remote_data(&mut tree, ino, &remote);
                    self.apply_head_attrs(&mut tree, ino, &info);
                    changes
                }
            }
        };
        // Attributes and pages of this inode only: safe while its open waits.
        self.tell_kernel(changes);
        Found::Present
    }
}
