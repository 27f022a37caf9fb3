//! The S3 operations, on the flat index of `backend.rs`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::backend::{Backend, Object, Upload};

/// Writes a request body to `path`; returns its size and MD5.
async fn save_body(body: Option<StreamingBlob>, path: &Path) -> S3Result<(u64, [u8; 16])> {
    let mut file = std::fs::File::create(path).map_err(|e| s3_error!(e, InternalError))?;
    let mut md5 = Md5::new();
    let mut size = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
            md5.update(&chunk);
            size += chunk.len() as u64;
            std::io::Write::write_all(&mut file, &chunk)
                .map_err(|e| s3_error!(e, InternalError))?;
        }
    }
    Ok((size, md5.finalize().into()))
}

fn read_range(path: &Path, start: u64, len: u64) -> S3Result<Bytes> {
    let mut file = std::fs::File::open(path).map_err(|e| s3_error!(e, InternalError))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| s3_error!(e, InternalError))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)
        .map_err(|e| s3_error!(e, InternalError))?;
    Ok(Bytes::from(buf))
}

fn quoted(hex_digest: &str) -> String {
    format!("\"{hex_digest}\"")
}

fn etag_of(object: &Object) -> ETag {
    ETag::Strong(object.etag.trim_matches('"').to_string())
}

/// Checks If-None-Match / If-Match against the current object at a key.
fn check_conditions(
    current: Option<&Object>,
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let Some(condition) = if_none_match {
        let blocked = match (condition, current) {
            (ETagCondition::Any, Some(_)) => true,
            (ETagCondition::ETag(tag), Some(obj)) => tag.value() == obj.etag.trim_matches('"'),
            _ => false,
        };
        if blocked {
            return Err(s3_error!(PreconditionFailed, "If-None-Match failed"));
        }
    }
    if let Some(condition) = if_match {
        let ok = match (condition, current) {
            (ETagCondition::Any, Some(_)) => true,
            (ETagCondition::ETag(tag), Some(obj)) => tag.value() == obj.etag.trim_matches('"'),
            _ => false,
        };
        if !ok {
            return Err(s3_error!(PreconditionFailed, "If-Match failed"));
        }
    }
    Ok(())
}

impl Backend {
    fn object(&self, bucket: &str, key: &str) -> S3Result<Object> {
        let state = self.inner.state.lock();
        let objects = state
            .buckets
            .get(bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        objects
            .get(key)
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchKey))
    }

    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if self.inner.state.lock().buckets.contains_key(bucket) {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    /// Stores an object, replacing any old one, if the conditions still hold.
    fn commit(
        &self,
        bucket: &str,
        key: &str,
        object: Object,
        if_none_match: Option<&ETagCondition>,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        let mut state = self.inner.state.lock();
        let objects = state
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let ignore = self
            .inner
            .ignore_conditions
            .load(std::sync::atomic::Ordering::SeqCst);
        let checked = if ignore {
            Ok(())
        } else {
            check_conditions(objects.get(key), if_none_match, if_match)
        };
        if let Err(err) = checked {
            let _ = std::fs::remove_file(&object.body);
            return Err(err);
        }
        if let Some(old) = objects.insert(key.to_string(), object) {
            let _ = std::fs::remove_file(old.body);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.create_bucket(&req.input.bucket);
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .inner
            .state
            .lock()
            .buckets
            .keys()
            .map(|name| Bucket {
                name: Some(name.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let mut state = self.inner.state.lock();
        match state.buckets.get(&req.input.bucket) {
            None => return Err(s3_error!(NoSuchBucket)),
            Some(objects) if !objects.is_empty() => return Err(s3_error!(BucketNotEmpty)),
            Some(_) => {}
        }
        state.buckets.remove(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        self.inner.note_sse(
            "put",
            &[
                (
                    "sse",
                    input.server_side_encryption.as_ref().map(|v| v.as_str()),
                ),
                ("kms", input.ssekms_key_id.as_deref()),
                ("c", input.sse_customer_key_md5.as_deref()),
            ],
        );
        self.inner.count(&self.inner.stats.put, 1);
        self.bucket_exists(&input.bucket)?;
        let path = self.inner.new_body_path();
        let (size, md5) = save_body(input.body, &path).await?;
        self.inner.count(&self.inner.stats.put_bytes, size);
        let etag = quoted(&hex::encode(md5));
        let object = Object {
            body: path,
            size,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            metadata: input.metadata.unwrap_or_default(),
            content_type: input.content_type.map(|c| c.to_string()),
        };
        self.commit(
            &input.bucket,
            &input.key,
            object,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )?;
        let output = PutObjectOutput {
            e_tag: Some(ETag::Strong(etag.trim_matches('"').to_string())),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        self.inner
            .note_sse("get", &[("c", input.sse_customer_key_md5.as_deref())]);
        self.inner.count(&self.inner.stats.get, 1);
        let object = self.object(&input.bucket, &input.key)?;
        let (range, content_range) = match &input.range {
            None => (0..object.size, None),
            Some(range) => {
                let r = range
                    .check(object.size)
                    .map_err(|_| s3_error!(InvalidRange))?;
                let content_range = format!("bytes {}-{}/{}", r.start, r.end - 1, object.size);
                (r, Some(content_range))
            }
        };
        let body = read_range(&object.body, range.start, range.end - range.start)?;
        self.inner
            .count(&self.inner.stats.get_bytes, body.len() as u64);
        let output = GetObjectOutput {
            content_length: Some(body.len() as i64),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_range,
            e_tag: Some(
                if self
                    .inner
                    .other_get_etags
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    ETag::Strong(format!("{}-get", object.etag.trim_matches('"')))
                } else {
                    etag_of(&object)
                },
            ),
            last_modified: Some(Timestamp::from(object.last_modified)),
            metadata: Some(object.metadata.clone()),
            content_type: object.content_type.as_deref().and_then(|c| c.parse().ok()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        self.inner
            .note_sse("head", &[("c", input.sse_customer_key_md5.as_deref())]);
        self.inner.count(&self.inner.stats.head, 1);
        let object = self.object(&input.bucket, &input.key)?;
        let output = HeadObjectOutput {
            content_length: Some(object.size as i64),
            e_tag: Some(etag_of(&object)),
            last_modified: Some(Timestamp::from(object.last_modified)),
            metadata: Some(object.metadata.clone()),
            content_type: object.content_type.as_deref().and_then(|c| c.parse().ok()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.inner.count(&self.inner.stats.delete, 1);
        let mut state = self.inner.state.lock();
        let objects = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        if let Some(old) = objects.remove(&input.key) {
            let _ = std::fs::remove_file(old.body);
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.inner.count(&self.inner.stats.delete, 1);
        let mut state = self.inner.state.lock();
        let objects = state
            .buckets
            .get_mut(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let mut deleted = Vec::new();
        for id in input.delete.objects {
            if let Some(old) = objects.remove(&id.key) {
                let _ = std::fs::remove_file(old.body);
            }
            deleted.push(DeletedObject {
                key: Some(id.key),
                ..Default::default()
            });
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        self.inner.note_sse(
            "copy",
            &[
                (
                    "sse",
                    input.server_side_encryption.as_ref().map(|v| v.as_str()),
                ),
                ("kms", input.ssekms_key_id.as_deref()),
                ("c", input.sse_customer_key_md5.as_deref()),
                (
                    "source_c",
                    input.copy_source_sse_customer_key_md5.as_deref(),
                ),
            ],
        );
        self.inner.count(&self.inner.stats.copy, 1);
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => return Err(s3_error!(NotImplemented)),
        };
        let source = self.object(&src_bucket, &src_key)?;
        check_conditions(Some(&source), None, input.copy_source_if_match.as_ref())?;
        self.bucket_exists(&input.bucket)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let path = self.inner.new_body_path();
        std::fs::copy(&source.body, &path).map_err(|e| s3_error!(e, InternalError))?;
        let metadata: HashMap<String, String> = if replace {
            input.metadata.unwrap_or_default()
        } else {
            source.metadata.clone()
        };
        let object = Object {
            body: path,
            size: source.size,
            etag: source.etag.clone(),
            last_modified: SystemTime::now(),
            metadata,
            content_type: source.content_type.clone(),
        };
        let result = CopyObjectResult {
            e_tag: Some(etag_of(&object)),
            last_modified: Some(Timestamp::from(object.last_modified)),
            ..Default::default()
        };
        self.commit(&input.bucket, &input.key, object, None, None)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.inner.count(&self.inner.stats.list, 1);
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(start)) => Some(start.clone()),
            _ => None,
        };
        let state = self.inner.state.lock();
        let objects = state
            .buckets
            .get(&input.bucket)
            .ok_or_else(|| s3_error!(NoSuchBucket))?;
        let mut contents = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut last = None;
        let mut truncated = false;
        for (key, object) in objects.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            // A common prefix is one entry; keys inside it that sort after the
            // continuation point must not re-emit it.
            let entry = match &delimiter {
                Some(d) => key[prefix.len()..]
                    .find(d.as_str())
                    .map(|i| key[..prefix.len() + i + d.len()].to_string()),
                None => None,
            };
            let sort_key = entry.clone().unwrap_or_else(|| key.clone());
            if after
                .as_ref()
                .is_some_and(|a| sort_key.as_str() <= a.as_str())
            {
                continue;
            }
            if prefixes.last() == Some(&sort_key) {
                continue;
            }
            if contents.len() + prefixes.len() >= max_keys {
                truncated = true;
                break;
            }
            match entry {
                Some(common) => prefixes.push(common),
                None => contents.push(object_entry(key, object)),
            }
            last = Some(sort_key);
        }
        let key_count = (contents.len() + prefixes.len()) as i32;
        // As S3 does: with encoding-type=url, keys come escaped (XML cannot carry
        // control characters).
        let escape = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let shown = |key: String| if escape { url_escape(&key) } else { key };
        for object in &mut contents {
            object.key = object.key.take().map(shown);
        }
        let output = ListObjectsV2Output {
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: if truncated { last } else { None },
            start_after: input.start_after,
            contents: Some(contents),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(shown(p)),
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.inner.note_sse(
            "create_multipart",
            &[
                (
                    "sse",
                    input.server_side_encryption.as_ref().map(|v| v.as_str()),
                ),
                ("kms", input.ssekms_key_id.as_deref()),
                ("c", input.sse_customer_key_md5.as_deref()),
            ],
        );
        self.inner.count(&self.inner.stats.multipart_create, 1);
        self.bucket_exists(&input.bucket)?;
        let id = self
            .inner
            .new_body_path()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let upload_id = format!("upload-{id}");
        self.inner.state.lock().uploads.insert(
            upload_id.clone(),
            Upload {
                bucket: input.bucket.clone(),
                key: input.key.clone(),
                metadata: input.metadata.unwrap_or_default(),
                parts: Default::default(),
            },
        );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        self.inner.note_sse(
            "upload_part",
            &[("c", input.sse_customer_key_md5.as_deref())],
        );
        self.inner.count(&self.inner.stats.upload_part, 1);
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number out of range"));
        }
        if !self
            .inner
            .state
            .lock()
            .uploads
            .contains_key(&input.upload_id)
        {
            return Err(s3_error!(NoSuchUpload));
        }
        let path = self.inner.new_body_path();
        let (size, md5) = save_body(input.body, &path).await?;
        self.inner.count(&self.inner.stats.put_bytes, size);
        let mut state = self.inner.state.lock();
        let upload = state
            .uploads
            .get_mut(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        if let Some((old, _)) = upload.parts.insert(input.part_number, (path, md5)) {
            let _ = std::fs::remove_file(old);
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(md5))),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        self.inner.count(&self.inner.stats.multipart_complete, 1);
        let wanted: Vec<(i32, Option<String>)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(|e| e.value().to_string()),
                )
            })
            .collect();
        if wanted.is_empty() {
            return Err(s3_error!(InvalidPart, "no parts given"));
        }
        let upload = self
            .inner
            .state
            .lock()
            .uploads
            .remove(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        if upload.bucket != input.bucket || upload.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        let path = self.inner.new_body_path();
        let mut out = std::fs::File::create(&path).map_err(|e| s3_error!(e, InternalError))?;
        let mut digests = Md5::new();
        let mut size = 0;
        for (number, etag) in &wanted {
            let (part_path, md5) = upload
                .parts
                .get(number)
                .ok_or_else(|| s3_error!(InvalidPart))?;
            if etag.as_deref().is_some_and(|e| e != hex::encode(md5)) {
                return Err(s3_error!(
                    InvalidPart,
                    "ETag of part {number} does not match"
                ));
            }
            let mut part =
                std::fs::File::open(part_path).map_err(|e| s3_error!(e, InternalError))?;
            size += std::io::copy(&mut part, &mut out).map_err(|e| s3_error!(e, InternalError))?;
            digests.update(md5);
        }
        for (part_path, _) in upload.parts.values() {
            let _ = std::fs::remove_file(part_path);
        }
        let etag = format!("\"{}-{}\"", hex::encode(digests.finalize()), wanted.len());
        let object = Object {
            body: path,
            size,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            metadata: upload.metadata,
            content_type: None,
        };
        self.commit(
            &input.bucket,
            &input.key,
            object,
            input.if_none_match.as_ref(),
            input.if_match.as_ref(),
        )?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag.trim_matches('"').to_string())),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        if let Some(upload) = self.inner.state.lock().uploads.remove(&req.input.upload_id) {
            for (path, _) in upload.parts.values() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

/// A key as S3 sends it in a listing asked for with encoding-type=url: a space as
/// `+`, every byte but the unreserved ones and `/` as `%XX`.
fn url_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn object_entry(key: &str, object: &Object) -> s3s::dto::Object {
    s3s::dto::Object {
        key: Some(key.to_string()),
        size: Some(object.size as i64),
        e_tag: Some(etag_of(object)),
        last_modified: Some(Timestamp::from(object.last_modified)),
        ..Default::default()
    }
}
