//! Carries out one planned job against the store: PUT, parallel multipart upload,
//! server-side copy, delete.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::cache::Content;
use crate::fs::plan::{Job, JobKind, Outcome};
use crate::fs::{ConditionalWrites, Fs, HeadChecked};
use crate::store::{
    CompletedPart, FileRange, Metadata, ObjectStore, StoreError, StoreResult, WriteCondition,
};

use super::UploaderConfig;

/// Runs `job`; returns what it did in the bucket.
pub async fn run_job(fs: Arc<Fs>, job: &Job, config: &UploaderConfig) -> StoreResult<Outcome> {
    let store = fs.store().clone();
    let honoured = fs.conditional_writes() == ConditionalWrites::Honoured;
    // Copies are always checked first: CopyObject conditions are not widely served.
    let send = match (&job.kind, honoured) {
        (JobKind::Copy { .. }, _) | (_, false) => WriteCondition::Always,
        (_, true) => job.condition.clone(),
    };
    let check_first = send != job.condition;
    let written = match &job.kind {
        JobKind::Delete { etag } => {
            return delete_version(store.as_ref(), &job.key, etag.as_deref()).await
        }
        JobKind::Materialize => {
            let ino = match job.id {
                crate::fs::plan::JobId::Inode(ino) => ino,
                _ => return Ok(Outcome::Local),
            };
            return match blocking(move || fs.materialize(ino)).await {
                // The version it holds at that key is gone: it cannot hold the key.
                Err(StoreError::VersionChanged(_)) => {
                    Ok(Outcome::BaseReplaced(store.head_checked(&job.key).await?))
                }
                done => done.map(|_| Outcome::Local),
            };
        }
        JobKind::Copy { from, from_etag } => {
            if let Some(conflict) = precheck(store.as_ref(), job, check_first).await? {
                return Ok(conflict);
            }
            let copied = store.copy(from, from_etag, &job.key, Some(&job.metadata));
            match copied.await {
                // The old name holds another version than the one renamed here, or none.
                Err(StoreError::PreconditionFailed | StoreError::NotFound(_))
                    if *from != job.key =>
                {
                    let now = store.head_checked(from).await?;
                    if !now
                        .as_ref()
                        .is_some_and(|i| crate::fs::same_etag(&i.etag, from_etag))
                    {
                        return Ok(Outcome::BaseReplaced(now));
                    }
                    // The version is there after all: a store that mishandles the condition.
                    tracing::warn!(%from, "the store refused a copy condition that holds: copied without it");
                    store.copy(from, "", &job.key, Some(&job.metadata)).await
                }
                copied => copied,
            }
        }
        JobKind::PutBody(body) => {
            if let Some(conflict) = precheck(store.as_ref(), job, check_first).await? {
                return Ok(conflict);
            }
            store
                .put(&job.key, body.clone(), &job.metadata, &send)
                .await
        }
        JobKind::UploadFile {
            content,
            size,
            source,
            base_etag,
        } => {
            let (content2, size2, source2, fs2) =
                (content.clone(), *size, source.clone(), fs.clone());
            match blocking(move || fs2.fill_content(&content2, size2, source2.as_ref())).await {
                // The version this file was based on was replaced, and the bytes it never
                // fetched went with it: the change meets the new version as a conflict.
                Err(StoreError::VersionChanged(_)) => {
                    if let Some(conflict) = precheck(store.as_ref(), job, true).await? {
                        return Ok(conflict);
                    }
                    let base = source.as_ref().map_or(&job.key, |s| &s.key);
                    return Ok(Outcome::BaseReplaced(store.head_checked(base).await?));
                }
                filled => filled?,
            }
            if let Some(base) = base_etag {
                if let Some(done) = unchanged(&store, job, content, *size, base, config).await? {
                    return Ok(done);
                }
            }
            if let Some(conflict) = precheck(store.as_ref(), job, check_first).await? {
                return Ok(conflict);
            }
            if *size >= config.multipart_threshold {
                let upload = Upload {
                    key: &job.key,
                    metadata: &job.metadata,
                    condition: &send,
                };
                upload_multipart(store.clone(), upload, content.clone(), *size, config).await
            } else {
                store
                    .put_file(&job.key, content.path(), *size, &job.metadata, &send)
                    .await
            }
        }
    };
    match written {
        Ok(etag) => Ok(Outcome::Written(etag)),
        // Someone else's version is there: nothing was overwritten.
        Err(StoreError::PreconditionFailed) => {
            Ok(Outcome::Conflict(store.head_checked(&job.key).await?))
        }
        Err(err) => Err(err),
    }
}

/// A file rewritten with the content the bucket already holds: no body goes up. The
/// object keeps its version if its metadata is current, else gets the new metadata
/// by a copy onto itself. None when the content did change.
async fn unchanged(
    store: &Arc<dyn ObjectStore>,
    job: &Job,
    content: &Arc<Content>,
    size: u64,
    base: &str,
    config: &UploaderConfig,
) -> StoreResult<Option<Outcome>> {
    let part = (size >= config.multipart_threshold).then(|| part_size(size, config.part_size));
    let (file, remote) = (content.clone(), base.to_string());
    let same = tokio::task::spawn_blocking(move || {
        crate::etag::same_content(file.file(), size, &remote, part.unwrap_or(0))
    })
    .await
    .map_err(|e| StoreError::Other(e.to_string()))??;
    if same != Some(true) {
        return Ok(None);
    }
    // One HEAD: the version is still ours (else a conflict) and its metadata.
    let info = match store.head_checked(&job.key).await? {
        Some(info) if crate::fs::same_etag(&info.etag, base) => info,
        other => return Ok(Some(Outcome::Conflict(other))),
    };
    if info.metadata == job.metadata {
        tracing::debug!(key = %job.key, "rewritten with the same content: nothing to upload");
        return Ok(Some(Outcome::Written(info.etag)));
    }
    let etag = match store
        .copy(&job.key, &info.etag, &job.key, Some(&job.metadata))
        .await
    {
        // Replaced since the HEAD: someone else's version, not overwritten.
        Err(StoreError::PreconditionFailed) => {
            return Ok(Some(Outcome::Conflict(store.head_checked(&job.key).await?)))
        }
        copied => copied?,
    };
    tracing::debug!(key = %job.key, "same content, new metadata: copied onto itself");
    Ok(Some(Outcome::Written(etag)))
}

/// Where the server does not check conditions itself: compares what is at the key
/// with what the job expects, just before writing.
async fn precheck(store: &dyn ObjectStore, job: &Job, check: bool) -> StoreResult<Option<Outcome>> {
    if !check || job.condition == WriteCondition::Always {
        return Ok(None);
    }
    let current = store.head_checked(&job.key).await?;
    if job
        .condition
        .holds_for(current.as_ref().map(|info| info.etag.as_str()))
    {
        Ok(None)
    } else {
        Ok(Some(Outcome::Conflict(current)))
    }
}

/// Deletes `key`, but with `etag` only while the object is still that version.
async fn delete_version(
    store: &dyn ObjectStore,
    key: &str,
    etag: Option<&str>,
) -> StoreResult<Outcome> {
    if let Some(meant) = etag {
        match store.head(key).await {
            Err(StoreError::NotFound(_)) => return Ok(Outcome::Deleted),
            Err(err) => return Err(err),
            Ok(info) if !crate::fs::same_etag(&info.etag, meant) => {
                tracing::info!(key, "not deleted: the bucket holds a newer version");
                return Ok(Outcome::Kept);
            }
            Ok(_) => {}
        }
    }
    store.delete(key).await.map(|_| Outcome::Deleted)
}

async fn blocking(
    work: impl FnOnce() -> crate::fs::FsResult<()> + Send + 'static,
) -> StoreResult<()> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
        .map_err(|e| match e {
            crate::fs::FsError::Stale(msg) => StoreError::VersionChanged(msg),
            e => StoreError::Transient(format!("filling the cache before upload: {e}")),
        })
}

/// The part size: at least the configured one, large enough for 10,000 parts.
fn part_size(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(10_000)).max(5 << 20)
}

/// Where a multipart upload goes and on what condition it may complete.
struct Upload<'a> {
    key: &'a str,
    metadata: &'a Metadata,
    condition: &'a WriteCondition,
}

async fn upload_multipart(
    store: Arc<dyn ObjectStore>,
    upload: Upload<'_>,
    content: Arc<Content>,
    size: u64,
    config: &UploaderConfig,
) -> StoreResult<String> {
    let key = upload.key;
    let upload_id = store.create_multipart(key, upload.metadata).await?;
    let result = match upload_parts(&store, key, &upload_id, content, size, config).await {
        Ok(parts) => {
            store
                .complete_multipart(key, &upload_id, parts, upload.condition)
                .await
        }
        Err(err) => Err(err),
    };
    if result.is_err() {
        if let Err(abort) = store.abort_multipart(key, &upload_id).await {
            tracing::warn!(key, %abort, "could not abort a failed multipart upload");
        }
    }
    result
}

/// Uploads parts with a bounded number in flight, each streamed from the cache file.
async fn upload_parts(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    content: Arc<Content>,
    size: u64,
    config: &UploaderConfig,
) -> StoreResult<Vec<CompletedPart>> {
    let part = part_size(size, config.part_size);
    let count = size.div_ceil(part) as u32;
    let mut next = 1u32;
    let mut done = Vec::with_capacity(count as usize);
    let mut in_flight = JoinSet::new();
    while next <= count || !in_flight.is_empty() {
        while next <= count && in_flight.len() < config.parts_in_flight {
            let offset = (next - 1) as u64 * part;
            let len = part.min(size - offset);
            let (store, key, upload_id, content) = (
                store.clone(),
                key.to_string(),
                upload_id.to_string(),
                content.clone(),
            );
            let number = next;
            in_flight.spawn(async move {
                let part = FileRange {
                    path: content.path(),
                    offset,
                    len,
                };
                store.upload_part(&key, &upload_id, number, part).await
            });
            next += 1;
        }
        if let Some(joined) = in_flight.join_next().await {
            done.push(joined.map_err(|e| StoreError::Other(e.to_string()))??);
        }
    }
    done.sort_by_key(|p| p.number);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_respects_limits() {
        assert_eq!(part_size(100 << 20, 8 << 20), 8 << 20);
        assert_eq!(part_size(100 << 20, 1 << 20), 5 << 20);
        let huge = 200u64 << 30;
        assert!(huge.div_ceil(part_size(huge, 8 << 20)) <= 10_000);
    }
}
