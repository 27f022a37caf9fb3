//! `s3syncfs verify`: what the mount holds under a path, compared object by object
//! with the bucket: missing on either side, size, version, and content (the ETag
//! computed from cached bytes; with `deep`, every byte fetched and hashed).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cache::{Content, RemoteSource};
use crate::store::{Listing, ObjectSummary};

use super::reserved::is_own_probe;
use super::tree::{same_etag, NodeKind};
use super::{Fs, FsError, FsResult, ROOT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A local change (or delete) not yet in the bucket: not an error.
    Pending,
    MissingInBucket,
    MissingInMount,
    /// The bucket holds another version than the mount shows.
    RemoteNewer,
    SizeDiffers,
    ContentDiffers,
}

impl FindingKind {
    pub fn is_failure(self) -> bool {
        self != FindingKind::Pending
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub path: String,
    pub kind: FindingKind,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Files compared, and their bytes.
    pub files: usize,
    pub bytes: u64,
    /// Files whose content was compared byte for byte (hash); the rest by version.
    pub content_checked: usize,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.kind.is_failure())
    }
}

/// One file of the mount to compare.
struct Item {
    ino: u64,
    path: String,
    key: String,
    dirty: bool,
    size: u64,
    /// The bucket version the mount's content is.
    etag: Option<String>,
    content: Option<Arc<Content>>,
}

impl Fs {
    /// The inode at `path` (relative to the mount, `/`-separated; empty: the root).
    pub fn resolve_path(self: &Arc<Self>, path: &str) -> FsResult<u64> {
        let mut at = ROOT;
        for name in path.split('/').filter(|n| !n.is_empty() && *n != ".") {
            at = self.lookup(at, name)?.ino;
        }
        Ok(at)
    }

    /// The key prefix (directory) or key (file) of `ino`, with everything below it
    /// listed into the namespace.
    pub fn verify_scope(self: &Arc<Self>, ino: u64) -> FsResult<(String, bool)> {
        let is_dir = self.tree.lock().get(ino).ok_or(FsError::NotFound)?.is_dir();
        if is_dir {
            self.ensure_subtree_listed(ino)?;
        }
        let tree = self.tree.lock();
        let path = tree.path(ino).ok_or(FsError::NotFound)?;
        let key = if is_dir {
            self.config.prefix.dir_prefix(&path)
        } else {
            self.config.prefix.file_key(&path)
        };
        Ok((key, is_dir))
    }

    /// Compares the files under `ino` with `listing` (the bucket under its key).
    /// `progress(done, total)` is called as files are checked.
    pub fn verify(
        &self,
        ino: u64,
        listing: &Listing,
        deep: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> VerifyReport {
        let (items, owed) = self.verify_items(ino);
        let mut objects: HashMap<&str, &ObjectSummary> = listing
            .objects
            .iter()
            .filter(|o| !o.key.ends_with('/'))
            .filter(|o| !is_own_probe(self.config.prefix.as_str(), &o.key))
            .map(|o| (o.key.as_str(), o))
            .collect();
        let mut report = VerifyReport::default();
        let total = items.len();
        for (n, item) in items.into_iter().enumerate() {
            let object = objects.remove(item.key.as_str());
            report.files += 1;
            report.bytes += item.size;
            if let Some(finding) = self.compare(&item, object, deep, &mut report) {
                report.findings.push(finding);
            }
            progress(n + 1, total);
        }
        for (key, _) in objects {
            let path = self.relative(key);
            let finding = match owed.get(key) {
                Some(why) => Finding {
                    path,
                    kind: FindingKind::Pending,
                    detail: why.to_string(),
                },
                None => Finding {
                    path,
                    kind: FindingKind::MissingInMount,
                    detail: "in the bucket, not (yet) in the mount".into(),
                },
            };
            report.findings.push(finding);
        }
        report.findings.sort_by(|a, b| a.path.cmp(&b.path));
        report
    }

    /// Files under `ino`, and keys the mount is still removing (deletes, rename sources).
    fn verify_items(&self, ino: u64) -> (Vec<Item>, HashMap<String, &'static str>) {
        let tree = self.tree.lock();
        let mut inodes = vec![ino];
        inodes.extend(tree.descendants(ino));
        let mut items = Vec::new();
        for node in inodes {
            let Some(inode) = tree.get(node) else {
                continue;
            };
            if inode.attr.kind != NodeKind::File {
                continue;
            }
            let Some(path) = tree.path(node) else {
                continue;
            };
            let key = self.config.prefix.file_key(&path);
            let in_sync = inode.in_sync_at(&key);
            items.push(Item {
                ino: node,
                path: path.join("/"),
                dirty: tree.dirty().contains_key(&node) || !in_sync,
                size: inode.attr.size,
                etag: inode
                    .stored
                    .as_ref()
                    .filter(|s| s.key == key)
                    .map(|s| s.etag.clone()),
                content: inode.content.clone(),
                key,
            });
        }
        let mut owed: HashMap<String, &'static str> = tree
            .pending_deletes
            .keys()
            .map(|k| (k.clone(), "deleted or renamed here; the delete is pending"))
            .collect();
        for (key, &holder) in &tree.stored_keys {
            if self.current_key(&tree, holder).as_deref() != Some(key.as_str()) {
                owed.entry(key.clone())
                    .or_insert("renamed here; the move is pending");
            }
        }
        (items, owed)
    }

    fn compare(
        &self,
        item: &Item,
        object: Option<&ObjectSummary>,
        deep: bool,
        report: &mut VerifyReport,
    ) -> Option<Finding> {
        let finding = |kind, detail: String| {
            Some(Finding {
                path: item.path.clone(),
                kind,
                detail,
            })
        };
        if item.dirty {
            return finding(
                FindingKind::Pending,
                "changed here; the upload is pending".into(),
            );
        }
        let Some(object) = object else {
            return finding(
                FindingKind::MissingInBucket,
                "in the mount, not in the bucket".into(),
            );
        };
        let known = item.etag.as_deref().unwrap_or_default();
        if !known.is_empty() && !object.etag.is_empty() && !same_etag(known, &object.etag) {
            return finding(
                FindingKind::RemoteNewer,
                format!(
                    "the bucket holds version {} , the mount {known}",
                    object.etag
                ),
            );
        }
        if object.size != item.size {
            return finding(
                FindingKind::SizeDiffers,
                format!(
                    "{} bytes in the bucket, {} in the mount",
                    object.size, item.size
                ),
            );
        }
        let content = match (&item.content, deep) {
            (Some(content), _) => content.clone(),
            // Deep: a file never read gets its cache file, to be filled below.
            (None, true) => self.content(&mut self.tree.lock(), item.ino).ok()?.0,
            (None, false) => return None,
        };
        if deep {
            let source = RemoteSource {
                key: item.key.clone(),
                size: object.size,
                etag: object.etag.clone(),
            };
            if let Err(err) = self.fill_content(&content, item.size, Some(&source)) {
                return finding(
                    FindingKind::ContentDiffers,
                    format!("cannot read it: {err}"),
                );
            }
        }
        if !content.is_complete(item.size) {
            return None; // nothing local to compare beyond the version
        }
        let part = 8 << 20;
        match crate::etag::same_content(content.file(), item.size, &object.etag, part) {
            Ok(Some(true)) => {
                report.content_checked += 1;
                None
            }
            Ok(Some(false)) => {
                report.content_checked += 1;
                finding(
                    FindingKind::ContentDiffers,
                    format!(
                        "cached bytes do not hash to the bucket's ETag {}",
                        object.etag
                    ),
                )
            }
            Ok(None) => None, // an ETag that is no content hash (SSE-KMS, unknown parts)
            Err(err) => finding(
                FindingKind::ContentDiffers,
                format!("cannot read the cache: {err}"),
            ),
        }
    }

    /// A key as a path in the mount.
    fn relative(&self, key: &str) -> String {
        key.strip_prefix(self.config.prefix.as_str())
            .unwrap_or(key)
            .to_string()
    }
}
