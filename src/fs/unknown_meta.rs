//! Uploads of files whose mode and owner this mount never learned: listed, their
//! HEAD failed or was never made, so the mount shows the listing's defaults. A write
//! changes the data and the mtime, not the mode or owner: the upload keeps the
//! bucket's (an s3fs file's 0600 must not become 0644 because a HEAD was reset).

use crate::store::{Metadata, StoreResult};

use super::plan::{object_metadata, Job, JobId, JobKind};
use super::remote::HeadChecked;
use super::tree::{same_etag, NodeKind};
use super::Fs;

/// The metadata headers the bucket keeps for a file that a data change leaves alone.
const KEPT: [&str; 3] = ["mode", "uid", "gid"];

impl Fs {
    /// Before `job` uploads a file whose mode and owner are unknown here and were not
    /// changed here: one HEAD of the version it was based on, whose mode, owner and
    /// group the mount takes and the upload keeps (with the job's own mtime). Returns
    /// the metadata to send instead of the planned one, if it differs. A failed HEAD
    /// fails the job, tried again later: nothing goes up with the defaults.
    pub async fn metadata_before_upload(&self, job: &Job) -> StoreResult<Option<Metadata>> {
        let (JobId::Inode(ino), JobKind::UploadFile { .. }) = (&job.id, &job.kind) else {
            return Ok(None);
        };
        let ino = *ino;
        let (key, etag) = {
            let tree = self.tree.lock();
            let Some(inode) = tree.get(ino) else {
                return Ok(None);
            };
            let unknown = !inode.meta_known && inode.meta_version == 0;
            match &inode.stored {
                Some(base) if unknown && inode.attr.kind == NodeKind::File => {
                    (base.key.clone(), base.etag.clone())
                }
                _ => return Ok(None),
            }
        };
        let found = self.store.head_checked(&key).await?;
        let mut tree = self.tree.lock();
        let Some(inode) = tree.get_mut(ino) else {
            return Ok(None);
        };
        if inode.meta_known || inode.meta_version != 0 {
            return Ok(None); // set here meanwhile: the next plan sends those
        }
        // Gone or replaced: the write meets that as a conflict, whatever it carries.
        // Another type (a symlink's 0777) has no file's mode to keep.
        let base = found.filter(|i| etag.is_empty() || same_etag(&i.etag, &etag));
        if let Some(info) = base {
            let mut from_bucket = inode.attr;
            self.attrs_from_object(&mut from_bucket, &key, &info, false);
            if from_bucket.kind != NodeKind::File {
                from_bucket = inode.attr;
            }
            inode.attr.perm = from_bucket.perm;
            inode.attr.uid = from_bucket.uid;
            inode.attr.gid = from_bucket.gid;
        }
        inode.meta_known = true;
        let learned = object_metadata(inode);
        self.persist(&mut tree, ino);
        let mut metadata = job.metadata.clone();
        for name in KEPT {
            if let Some(value) = learned.get(name) {
                metadata.insert(name.to_string(), value.clone());
            }
        }
        if metadata == job.metadata {
            return Ok(None);
        }
        tracing::debug!(%key, "mode and owner kept from the bucket: this mount never learned them");
        Ok(Some(metadata))
    }
}
