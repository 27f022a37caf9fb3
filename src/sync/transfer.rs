//! Carries out one planned job against the store: PUT, parallel multipart upload,
//! server-side copy, delete.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::cache::Content;
use crate::fs::plan::{Job, JobKind, Outcome};
use crate::fs::Fs;
use crate::store::{CompletedPart, Metadata, ObjectStore, StoreError, StoreResult};

use super::UploaderConfig;

/// Runs `job`; returns the ETag the bucket answered (empty for deletes).
pub async fn run_job(fs: Arc<Fs>, job: &Job, config: &UploaderConfig) -> StoreResult<Outcome> {
    let store = fs.store().clone();
    match &job.kind {
        JobKind::Delete { etag } => delete_version(store.as_ref(), &job.key, etag.as_deref()).await,
        JobKind::Copy { from } => store
            .copy(from, &job.key, Some(&job.metadata))
            .await
            .map(Outcome::Written),
        JobKind::PutBody(body) => store
            .put(&job.key, body.clone(), &job.metadata)
            .await
            .map(Outcome::Written),
        JobKind::Materialize => {
            let ino = match job.id {
                crate::fs::plan::JobId::Inode(ino) => ino,
                _ => return Ok(Outcome::Local),
            };
            blocking(move || fs.materialize(ino)).await?;
            Ok(Outcome::Local)
        }
        JobKind::UploadFile {
            content,
            size,
            source,
        } => {
            let (content2, size2, source2, fs2) =
                (content.clone(), *size, source.clone(), fs.clone());
            blocking(move || fs2.fill_content(&content2, size2, source2.as_ref())).await?;
            let etag = if *size >= config.multipart_threshold {
                upload_multipart(
                    store,
                    &job.key,
                    content.clone(),
                    *size,
                    &job.metadata,
                    config,
                )
                .await
            } else {
                store
                    .put_file(&job.key, content.path(), *size, &job.metadata)
                    .await
            };
            etag.map(Outcome::Written)
        }
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
        .map_err(|e| StoreError::Transient(format!("filling the cache before upload: {e}")))
}

/// The part size: at least the configured one, large enough for 10,000 parts.
fn part_size(size: u64, configured: u64) -> u64 {
    configured.max(size.div_ceil(10_000)).max(5 << 20)
}

async fn upload_multipart(
    store: Arc<dyn ObjectStore>,
    key: &str,
    content: Arc<Content>,
    size: u64,
    metadata: &Metadata,
    config: &UploaderConfig,
) -> StoreResult<String> {
    let upload_id = store.create_multipart(key, metadata).await?;
    match upload_parts(&store, key, &upload_id, content, size, config).await {
        Ok(parts) => store.complete_multipart(key, &upload_id, parts).await,
        Err(err) => {
            if let Err(abort) = store.abort_multipart(key, &upload_id).await {
                tracing::warn!(key, %abort, "could not abort a failed multipart upload");
            }
            Err(err)
        }
    }
}

/// Uploads parts with a bounded number in flight, so memory stays at parts * part size.
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
                let body = tokio::task::spawn_blocking(move || read_exact(&content, offset, len))
                    .await
                    .map_err(|e| StoreError::Other(e.to_string()))??;
                store.upload_part(&key, &upload_id, number, body).await
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

fn read_exact(content: &Content, offset: u64, len: u64) -> StoreResult<Bytes> {
    let mut buf = vec![0u8; len as usize];
    content.file().read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
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
