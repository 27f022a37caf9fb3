//! Carries out one planned job against the store: PUT, parallel multipart upload,
//! server-side copy, delete.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::cache::{Content, Room};
use crate::fs::attempts::{same_metadata, with_token, Attempt};
use crate::fs::plan::{Job, JobKind, Outcome};
use crate::fs::stream::Streamed;
use crate::fs::{ConditionalWrites, Fs, HeadChecked};
use crate::store::{
    CompletedPart, FileRange, Metadata, ObjectInfo, ObjectStore, StoreError, StoreResult,
    WriteCondition,
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
    // A file whose mode and owner the mount never learned keeps the bucket's.
    let learned = fs.metadata_before_upload(job).await?;
    let token = fs.begin_attempt(job);
    let sent = Sent {
        metadata: with_token(learned.as_ref().unwrap_or(&job.metadata), &token),
        token: &token,
    };
    let written = match &job.kind {
        JobKind::Delete { etag } => return delete_version(&fs, &job.key, etag.as_deref()).await,
        JobKind::DeleteOrphan => return delete_orphan(&fs, &job.key).await,
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
        JobKind::Copy {
            from,
            from_etag,
            keep_metadata,
        } => {
            if let Some(conflict) = precheck(&fs, job, check_first).await? {
                return Ok(conflict);
            }
            // Metadata this mount never saw (renamed before its HEAD): the source's
            // own goes along, not the defaults the listing showed (a symlink would
            // become a file, a 0600 file 0644).
            let metadata = match keep_metadata {
                false => sent.metadata.clone(),
                true => match store.head_checked(from).await? {
                    Some(info)
                        if from_etag.is_empty() || crate::fs::same_etag(&info.etag, from_etag) =>
                    {
                        with_token(&info.metadata, sent.token)
                    }
                    now => return Ok(Outcome::BaseReplaced(now)),
                },
            };
            let copied = store.copy(from, from_etag, &job.key, Some(&metadata));
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
                    store.copy(from, "", &job.key, Some(&metadata)).await
                }
                copied => copied,
            }
        }
        JobKind::PutBody(body) => {
            if let Some(conflict) = precheck(&fs, job, check_first).await? {
                return Ok(conflict);
            }
            store
                .put(&job.key, body.clone(), &sent.metadata, &send)
                .await
        }
        JobKind::UploadFile {
            content,
            size,
            source,
            base_etag,
        } => {
            // The parts sent while the file was written, if they still hold. Taken
            // here so that every early return below aborts what it does not use.
            let part = part_size(*size, config.part_size);
            let mut streamed = Unused(&fs, fs.take_stream(job, part).await);
            let streamed = &mut streamed.1;
            let (content2, size2, source2, fs2) =
                (content.clone(), *size, source.clone(), fs.clone());
            match blocking(move || fs2.fill_content(&content2, size2, source2.as_ref())).await {
                // The version this file was based on was replaced, and the bytes it never
                // fetched went with it: the change meets the new version as a conflict.
                Err(StoreError::VersionChanged(_)) => {
                    if let Some(conflict) = precheck(&fs, job, true).await? {
                        return Ok(conflict);
                    }
                    let base = source.as_ref().map_or(&job.key, |s| &s.key);
                    return Ok(Outcome::BaseReplaced(store.head_checked(base).await?));
                }
                filled => filled?,
            }
            if let Some(base) = base_etag {
                let same = Same {
                    content,
                    size: *size,
                    base,
                };
                if let Some(done) = unchanged(&fs, job, same, &sent, config).await? {
                    return Ok(done);
                }
            }
            if let Some(conflict) = precheck(&fs, job, check_first).await? {
                return Ok(conflict);
            }
            if *size >= config.multipart_threshold {
                let upload = Upload {
                    key: &job.key,
                    metadata: &sent.metadata,
                    condition: &send,
                };
                let parts = Parts {
                    content: content.clone(),
                    size: *size,
                    first: 1,
                    room: fs.cache().usage().room().clone(),
                };
                match streamed.take() {
                    Some(streamed) => {
                        let done = Streaming { streamed, job };
                        complete_streamed(&fs, upload, done, parts, config).await
                    }
                    None => upload_multipart(store.clone(), upload, parts, config).await,
                }
            } else {
                store
                    .put_file(&job.key, content.path(), *size, &sent.metadata, &send)
                    .await
            }
        }
    };
    match written {
        Ok(etag) => Ok(Outcome::Written(etag)),
        Err(err) => after_failed_write(&fs, job, sent.token, err).await,
    }
}

/// A stream's upload not (yet) used by its job: aborted when dropped.
struct Unused<'a>(&'a Fs, Option<Streamed>);

impl Drop for Unused<'_> {
    fn drop(&mut self) {
        if let Some(streamed) = self.1.take() {
            self.0.abort_stream(&streamed);
        }
    }
}

/// What one attempt sends: its token, and the metadata that carries it.
struct Sent<'a> {
    metadata: Metadata,
    token: &'a str,
}

/// A write that failed: refused by its condition (412), or with an outcome unknown
/// (the reply lost, reset, 5xx, unreadable). The key tells which: a write of ours is
/// there (this one or an earlier one whose reply was lost), or someone else's.
async fn after_failed_write(
    fs: &Arc<Fs>,
    job: &Job,
    token: &str,
    err: StoreError,
) -> StoreResult<Outcome> {
    let refused = matches!(err, StoreError::PreconditionFailed);
    if !refused && !outcome_unknown(&err) {
        fs.attempt_failed(&job.key, token);
        return Err(err);
    }
    match at_key(fs, &job.key).await {
        Ok(AtKey::Ours(etag, attempt)) => {
            tracing::info!(key = %job.key, %err, "the write landed although its reply was lost");
            Ok(Outcome::Landed(etag, attempt))
        }
        // Someone else's version is there: nothing was overwritten.
        Ok(AtKey::Other(info)) if refused => Ok(Outcome::Conflict(info)),
        Ok(AtKey::Other(_)) => Err(err),
        Err(head) if refused => Err(head),
        Err(_) => Err(err),
    }
}

/// Errors after which the write may have landed at the server all the same. A
/// multipart complete retried after its lost reply finds its upload gone (404
/// NoSuchUpload) because it did complete.
fn outcome_unknown(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::Transient(_)
            | StoreError::Timeout(_)
            | StoreError::Other(_)
            | StoreError::NotFound(_)
    )
}

/// What the bucket holds at a key, as far as this mount's writes go.
enum AtKey {
    /// A write of ours (found by its token): its ETag and what it was.
    Ours(String, Attempt),
    /// Someone else's object, or none.
    Other(Option<ObjectInfo>),
}

async fn at_key(fs: &Fs, key: &str) -> StoreResult<AtKey> {
    Ok(match fs.store().head_checked(key).await? {
        Some(info) => match fs.ours_at(key, &info) {
            Some(attempt) => AtKey::Ours(info.etag, attempt),
            None => AtKey::Other(Some(info)),
        },
        None => AtKey::Other(None),
    })
}

/// A file rewritten with the content the bucket already holds: no body goes up. The
/// object keeps its version if its metadata is current, else gets the new metadata
/// by a copy onto itself. None when the content did change.
async fn unchanged(
    fs: &Arc<Fs>,
    job: &Job,
    same: Same<'_>,
    sent: &Sent<'_>,
    config: &UploaderConfig,
) -> StoreResult<Option<Outcome>> {
    let Same {
        content,
        size,
        base,
    } = same;
    let store = fs.store();
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
    // One HEAD: the version is still the base and its metadata. Anything else is
    // decided by the ordinary upload (a conflict, or a write of ours landed).
    let info = match store.head_checked(&job.key).await? {
        Some(info) if crate::fs::same_etag(&info.etag, base) => info,
        _ => return Ok(None),
    };
    if same_metadata(&info.metadata, &sent.metadata) {
        tracing::debug!(key = %job.key, "rewritten with the same content: nothing to upload");
        return Ok(Some(Outcome::Written(info.etag)));
    }
    let etag = match store
        .copy(&job.key, &info.etag, &job.key, Some(&sent.metadata))
        .await
    {
        Ok(etag) => etag,
        // Replaced since the HEAD (someone else's version, not overwritten), or the
        // reply was lost.
        Err(err) => return after_failed_write(fs, job, sent.token, err).await.map(Some),
    };
    tracing::debug!(key = %job.key, "same content, new metadata: copied onto itself");
    Ok(Some(Outcome::Written(etag)))
}

/// Where the server does not check conditions itself: compares what is at the key
/// with what the job expects, just before writing. A write of ours whose reply was
/// lost is no conflict.
async fn precheck(fs: &Fs, job: &Job, check: bool) -> StoreResult<Option<Outcome>> {
    if !check || job.condition == WriteCondition::Always {
        return Ok(None);
    }
    match at_key(fs, &job.key).await? {
        AtKey::Ours(etag, attempt) => Ok(Some(Outcome::Landed(etag, attempt))),
        AtKey::Other(current) => {
            let holds = job
                .condition
                .holds_for(current.as_ref().map(|info| info.etag.as_str()));
            Ok((!holds).then_some(Outcome::Conflict(current)))
        }
    }
}

/// Deletes `key`, but with `etag` only while the object is still that version (or a
/// write of ours whose reply was lost).
async fn delete_version(fs: &Fs, key: &str, etag: Option<&str>) -> StoreResult<Outcome> {
    let store = fs.store();
    if let Some(meant) = etag {
        match store.head(key).await {
            Err(StoreError::NotFound(_)) => return Ok(Outcome::Deleted),
            Err(err) => return Err(err),
            Ok(info)
                if !crate::fs::same_etag(&info.etag, meant) && fs.ours_at(key, &info).is_none() =>
            {
                tracing::info!(key, "not deleted: the bucket holds a newer version");
                return Ok(Outcome::Kept);
            }
            Ok(_) => {}
        }
    }
    store.delete(key).await.map(|_| Outcome::Deleted)
}

/// Deletes what a lost reply may have left at `key` for a file that is gone: only an
/// object that carries one of our tokens.
async fn delete_orphan(fs: &Fs, key: &str) -> StoreResult<Outcome> {
    match at_key(fs, key).await? {
        AtKey::Ours(..) => {
            tracing::info!(
                key,
                "deleting a write of ours whose reply was lost: its file is gone"
            );
            fs.store().delete(key).await.map(|_| Outcome::Deleted)
        }
        AtKey::Other(_) => Ok(Outcome::Kept),
    }
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

/// A file's content and the version it was based on, to compare.
struct Same<'a> {
    content: &'a Arc<Content>,
    size: u64,
    base: &'a str,
}

/// Where a multipart upload goes and on what condition it may complete.
struct Upload<'a> {
    key: &'a str,
    metadata: &'a Metadata,
    condition: &'a WriteCondition,
}

/// What a multipart upload sends, and whom each finished part tells.
struct Parts {
    content: Arc<Content>,
    size: u64,
    /// The first part to send (those before it went up while the file was written).
    first: u32,
    /// A finished part is progress for writes waiting for room in the cache.
    room: Arc<Room>,
}

async fn upload_multipart(
    store: Arc<dyn ObjectStore>,
    upload: Upload<'_>,
    parts: Parts,
    config: &UploaderConfig,
) -> StoreResult<String> {
    let key = upload.key;
    let upload_id = store.create_multipart(key, upload.metadata).await?;
    let result = match upload_parts(&store, key, &upload_id, parts, config).await {
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

/// A stream taken over by the job that completes it.
struct Streaming<'a> {
    streamed: Streamed,
    job: &'a Job,
}

/// Completes the multipart upload a file started while it was written: the parts
/// after those already sent, then the complete with the job's condition. The upload
/// was created with the metadata of its start (the mtime has moved since): when that
/// differs, a copy onto itself gives the object the job's, with the job's token, so
/// a lost reply still tells which of the two writes the key holds.
async fn complete_streamed(
    fs: &Arc<Fs>,
    upload: Upload<'_>,
    streaming: Streaming<'_>,
    parts: Parts,
    config: &UploaderConfig,
) -> StoreResult<String> {
    let Streaming { streamed, job } = streaming;
    let (store, key) = (fs.store().clone(), upload.key);
    let current = same_metadata(&streamed.metadata, upload.metadata);
    // The object the complete makes is ours by the stream's token.
    fs.begin_streamed_attempt(job, &streamed.token, current);
    let id = &streamed.upload_id;
    let parts = Parts {
        first: streamed.parts.len() as u32 + 1,
        ..parts
    };
    let tail = upload_parts(&store, key, id, parts, config).await;
    let result = match tail {
        Ok(rest) => {
            let mut parts = streamed.parts.clone();
            parts.extend(rest);
            store
                .complete_multipart(key, id, parts, upload.condition)
                .await
        }
        Err(err) => Err(err),
    };
    match &result {
        Ok(_) => fs.stream_completed(&streamed),
        // A complete whose reply was lost is resolved by looking at the key; an
        // abort after it does no harm.
        Err(err) => {
            if !outcome_unknown(err) && !matches!(err, StoreError::PreconditionFailed) {
                fs.attempt_failed(key, &streamed.token);
            }
            fs.abort_stream(&streamed);
        }
    }
    let etag = result?;
    if current {
        return Ok(etag);
    }
    tracing::debug!(
        key,
        "streamed: the final metadata goes by a copy onto itself"
    );
    store.copy(key, &etag, key, Some(upload.metadata)).await
}

/// Uploads parts `first..` with a bounded number in flight, each streamed from the
/// cache file.
async fn upload_parts(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    parts: Parts,
    config: &UploaderConfig,
) -> StoreResult<Vec<CompletedPart>> {
    let Parts {
        content,
        size,
        first,
        room,
    } = parts;
    let part = part_size(size, config.part_size);
    let count = size.div_ceil(part) as u32;
    let mut next = first;
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
            room.progressed();
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
