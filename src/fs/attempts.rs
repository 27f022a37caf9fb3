//! Writes whose outcome is not known yet. A reply can be lost after the server
//! committed the write (a timeout, a reset, a 5xx, a 200 the client cannot read), so
//! every write carries a token in its metadata: the object at the key then tells
//! whether it is one of ours, and a lost reply is never taken for someone else's write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use md5::{Digest, Md5};

use crate::store::{Metadata, ObjectInfo, WriteCondition};

use super::plan::{Busy, Job, JobId, JobKind};
use super::tree::Tree;
use super::Fs;

/// The user-metadata name (`x-amz-meta-s3syncfs-write`) of a write's token.
pub const TOKEN_HEADER: &str = "s3syncfs-write";

/// Attempts remembered per key: older ones are dropped past this (a key retried
/// forever must not grow without bound).
const KEPT_PER_KEY: usize = 16;

/// One write sent to the bucket: what the inode was when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub token: String,
    pub ino: u64,
    pub data_version: u64,
    pub meta_version: u64,
    pub size: u64,
}

/// Writes sent and not yet known to have landed or failed, by key.
#[derive(Debug, Default)]
pub struct Attempts {
    by_key: HashMap<String, Vec<Attempt>>,
}

impl Attempts {
    pub fn begin(&mut self, key: &str, attempt: Attempt) {
        let list = self.by_key.entry(key.to_string()).or_default();
        if list.len() >= KEPT_PER_KEY {
            list.remove(0);
        }
        list.push(attempt);
    }

    /// The attempt at `key` whose token the bucket's object carries, if it is ours.
    pub fn find(&self, key: &str, metadata: &Metadata) -> Option<&Attempt> {
        let token = metadata.get(TOKEN_HEADER)?;
        self.by_key.get(key)?.iter().find(|a| &a.token == token)
    }

    /// One attempt surely did not land (the server refused it).
    pub fn failed(&mut self, key: &str, token: &str) {
        if let Some(list) = self.by_key.get_mut(key) {
            list.retain(|a| a.token != token);
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// What the bucket holds at `key` is known now: older attempts are moot.
    pub fn resolved(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    pub fn any_at(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Keys with an unresolved attempt that `owned` says nothing lives at any more:
    /// if such an attempt landed, its object is an orphan of ours.
    pub fn orphans(&self, owned: impl Fn(&str) -> bool) -> Vec<String> {
        self.by_key.keys().filter(|k| !owned(k)).cloned().collect()
    }
}

impl Fs {
    /// Before a write goes out: the token it carries, remembered with what the inode was.
    pub fn begin_attempt(&self, job: &Job) -> String {
        let token = new_token();
        let writes = matches!(
            job.kind,
            JobKind::UploadFile { .. } | JobKind::PutBody(_) | JobKind::Copy { .. }
        );
        if let (JobId::Inode(ino), true) = (&job.id, writes) {
            let ino = *ino;
            let attempt = Attempt {
                token: token.clone(),
                ino,
                data_version: job.data_version,
                meta_version: job.meta_version,
                size: job.size,
            };
            self.tree.lock().attempts.begin(&job.key, attempt);
        }
        token
    }

    /// A streamed upload's complete goes out: its object carries the token the
    /// stream created it with. With `current` false that metadata is older than the
    /// job's, so the object, if found by that token, holds the data but not the
    /// metadata (a copy onto itself follows).
    pub fn begin_streamed_attempt(&self, job: &Job, token: &str, current: bool) {
        let JobId::Inode(ino) = job.id else {
            return;
        };
        let meta_version = match current {
            true => job.meta_version,
            false => job.meta_version.wrapping_sub(1),
        };
        let attempt = Attempt {
            token: token.to_string(),
            ino,
            data_version: job.data_version,
            meta_version,
            size: job.size,
        };
        self.tree.lock().attempts.begin(&job.key, attempt);
    }

    /// The server refused the write: it surely did not land.
    pub fn attempt_failed(&self, key: &str, token: &str) {
        self.tree.lock().attempts.failed(key, token);
    }

    /// The write of ours that `info` (the object now at `key`) is, if any: its token
    /// and its size must both match.
    pub fn ours_at(&self, key: &str, info: &ObjectInfo) -> Option<Attempt> {
        let tree = self.tree.lock();
        let attempt = tree.attempts.find(key, &info.metadata)?;
        (attempt.size == info.size).then(|| attempt.clone())
    }

    /// Keys with an unresolved attempt where nothing of this mount lives any more
    /// (the file was removed or renamed before the write was resolved), whose delete
    /// is not already owed: what a landed write there left is an orphan of ours.
    fn orphan_keys(&self, tree: &Tree) -> Vec<String> {
        tree.attempts.orphans(|key| {
            self.key_owner(tree, key).is_some() || tree.pending_deletes.contains_key(key)
        })
    }

    /// Keys nothing lives at any more where a write of ours may still land: one with
    /// an unresolved attempt, or a job still running for it. `sync` waits for them,
    /// since a landed write turns into a delete owed.
    pub(super) fn unowned_writes(&self, tree: &Tree) -> Vec<String> {
        let mut keys = self.orphan_keys(tree);
        keys.extend(
            tree.busy
                .keys()
                .filter(|key| self.unowned_write(tree, key))
                .cloned(),
        );
        keys.sort();
        keys.dedup();
        keys
    }

    /// Whether a write of ours may still land at `key`, where nothing lives any more.
    pub(super) fn unowned_write(&self, tree: &Tree, key: &str) -> bool {
        (tree.attempts.any_at(key) || tree.busy.contains_key(key))
            && self.key_owner(tree, key).is_none()
            && !tree.pending_deletes.contains_key(key)
    }

    /// Orphans still to delete, counted as deletes owed (one being deleted included).
    pub(super) fn orphan_count(&self, tree: &Tree) -> usize {
        self.orphan_keys(tree).len()
    }

    /// Deletes for those orphans: each deletes only an object that carries one of our
    /// tokens.
    pub(super) fn orphan_jobs(&self, tree: &Tree, busy: &dyn Busy, limit: usize) -> Vec<Job> {
        self.orphan_keys(tree)
            .into_iter()
            .filter(|key| !tree.busy.contains_key(key))
            .filter(|key| !busy.is_busy(&JobId::Delete(key.clone()), key))
            .take(limit)
            .map(|key| Job {
                id: JobId::Delete(key.clone()),
                key,
                kind: JobKind::DeleteOrphan,
                metadata: Metadata::new(),
                data_version: 0,
                meta_version: 0,
                size: 0,
                condition: WriteCondition::Always,
            })
            .collect()
    }
}

/// A token no other write of any mount will carry: this process, the time and a count.
pub fn new_token() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = Md5::new();
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    hasher.update(COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(super::conflict_name::host_name().as_bytes());
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `metadata` as sent with `token`.
pub fn with_token(metadata: &Metadata, token: &str) -> Metadata {
    let mut sent = metadata.clone();
    sent.insert(TOKEN_HEADER.to_string(), token.to_string());
    sent
}

/// Whether two metadata sets say the same, tokens aside.
pub fn same_metadata(a: &Metadata, b: &Metadata) -> bool {
    let count = |m: &Metadata| m.len() - usize::from(m.contains_key(TOKEN_HEADER));
    count(a) == count(b)
        && a.iter()
            .filter(|(k, _)| k.as_str() != TOKEN_HEADER)
            .all(|(k, v)| b.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(token: &str, ino: u64) -> Attempt {
        Attempt {
            token: token.into(),
            ino,
            data_version: 1,
            meta_version: 1,
            size: 3,
        }
    }

    #[test]
    fn an_object_is_ours_only_by_a_token_sent_to_its_key() {
        let mut attempts = Attempts::default();
        attempts.begin("a", attempt("t1", 5));
        let ours = with_token(&Metadata::new(), "t1");
        assert_eq!(attempts.find("a", &ours).map(|a| a.ino), Some(5));
        assert!(attempts.find("b", &ours).is_none(), "another key");
        assert!(attempts.find("a", &Metadata::new()).is_none(), "no token");
        let theirs = with_token(&Metadata::new(), "t2");
        assert!(attempts.find("a", &theirs).is_none());
        attempts.failed("a", "t1");
        assert!(!attempts.any_at("a"));
    }

    #[test]
    fn attempts_per_key_are_bounded_and_resolved_together() {
        let mut attempts = Attempts::default();
        for n in 0..40 {
            attempts.begin("k", attempt(&format!("t{n}"), 1));
        }
        let newest = with_token(&Metadata::new(), "t39");
        let oldest = with_token(&Metadata::new(), "t0");
        assert!(attempts.find("k", &newest).is_some());
        assert!(attempts.find("k", &oldest).is_none());
        assert_eq!(attempts.orphans(|_| false), vec!["k".to_string()]);
        assert!(attempts.orphans(|k| k == "k").is_empty());
        attempts.resolved("k");
        assert!(!attempts.any_at("k"));
    }

    #[test]
    fn tokens_differ_and_metadata_compares_without_them() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        let base = Metadata::from([("mode".to_string(), "33188".to_string())]);
        assert!(same_metadata(&with_token(&base, &a), &base));
        assert!(same_metadata(
            &with_token(&base, &a),
            &with_token(&base, &b)
        ));
        let other = Metadata::from([("mode".to_string(), "33261".to_string())]);
        assert!(!same_metadata(&with_token(&base, &a), &other));
        assert!(!same_metadata(&Metadata::new(), &base));
    }
}
