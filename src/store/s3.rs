//! `ObjectStore` on any S3 API through aws-sdk-s3; the only file that knows that SDK.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    timeout::TimeoutConfig, BehaviorVersion, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, EncodingType, MetadataDirective};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::s3_errors::{connection_cut, map_err};
use super::{
    expect_version, same_etag, version_changed, CompletedPart, Encryption, FileRange, Listing,
    Metadata, ObjectInfo, ObjectStore, ObjectSummary, PieceSink, StoreError, StoreResult,
    StoreStats, WriteCondition,
};

mod facts;
pub use facts::ServerFacts;

/// Read size of bodies streamed from cache files (the default 4 KiB costs a syscall
/// and a body chunk per page).
const FILE_READ_BUFFER: usize = 128 << 10;

/// Where the bucket is and how to talk to it.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub path_style: bool,
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
    pub encryption: Encryption,
    /// How long one request attempt may take before it is abandoned.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    stats: StoreStats,
    encryption: Encryption,
    /// Whether a GET's ETag tells the version read: off once the store answered a GET
    /// with another ETag than a HEAD of the same version.
    versions_checked: std::sync::atomic::AtomicBool,
}

/// Sets the encryption headers of a write (PUT, CreateMultipartUpload, CopyObject).
macro_rules! encrypt_write {
    ($request:expr, $encryption:expr) => {{
        let request = $request;
        match $encryption {
            Encryption::None => request,
            Encryption::S3Managed => {
                request.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Encryption::Kms(key) => request
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key.clone()),
            Encryption::Customer(key) => request
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&key.key_base64)
                .sse_customer_key_md5(&key.md5_base64),
        }
    }};
}

/// Sets the SSE-C headers that reads and part uploads of such objects need.
macro_rules! customer_key {
    ($request:expr, $encryption:expr) => {{
        let request = $request;
        match $encryption {
            Encryption::Customer(key) => request
                .sse_customer_algorithm("AES256")
                .sse_customer_key(&key.key_base64)
                .sse_customer_key_md5(&key.md5_base64),
            _ => request,
        }
    }};
}

/// AWS accepts the SDK's default integrity checksums; Ceph RGW (Linode) and others reject them.
pub fn is_aws_endpoint(endpoint: &str) -> bool {
    endpoint.contains(".amazonaws.com")
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<S3Store, StoreError> {
        let checksums_when_required = !is_aws_endpoint(&config.endpoint);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .operation_attempt_timeout(config.request_timeout)
            .operation_timeout(config.request_timeout * 3)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            .credentials_provider(config.credentials.clone())
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3));
        if checksums_when_required {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            stats: StoreStats::default(),
            encryption: config.encryption.clone(),
            versions_checked: std::sync::atomic::AtomicBool::new(true),
        })
    }
}

impl S3Store {
    /// Maps an SDK error, noting whether the server answered at all.
    fn failed<E>(&self, err: SdkError<E, HttpResponse>, key: &str) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let unanswered = matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        );
        // A connection cut after it was made met a flaky server, not a gone one: it
        // leaves online or offline as it was (a reset HEAD made every uncached read
        // fail with EIO until the next answer; model test seed 10).
        if !(matches!(err, SdkError::DispatchFailure(_)) && connection_cut(&err)) {
            self.stats.reached(!unanswered);
        }
        map_err(err, key, &self.bucket)
    }

    /// Whether a GET that answered with ETag `found` read the version `wanted`. A
    /// mismatch is confirmed with a HEAD: a store whose GETs and HEADs disagree about
    /// one version's ETag gets no more checks (else no cold read would ever succeed).
    async fn check_version(&self, key: &str, wanted: &str, found: Option<&str>) -> StoreResult<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.versions_checked.load(Relaxed) || expect_version(key, wanted, found).is_ok() {
            return Ok(());
        }
        let now = match self.head(key).await {
            Err(StoreError::NotFound(_)) => return Err(version_changed(key, "none: deleted")),
            head => head?,
        };
        if !same_etag(&now.etag, wanted) {
            return Err(version_changed(key, &now.etag));
        }
        if self.versions_checked.swap(false, Relaxed) {
            tracing::warn!(
                %key,
                head = %now.etag,
                get = found.unwrap_or_default(),
                "the store's GETs and HEADs give one version different ETags: reads no longer check versions"
            );
        }
        Ok(())
    }

    /// Sends a GET (of `range` if given) and returns once the headers are in.
    async fn send_get(
        &self,
        key: &str,
        range: Option<String>,
    ) -> StoreResult<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        StoreStats::count(&self.stats.gets, 1);
        customer_key!(self.client.get_object(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))
    }

    async fn get_object(&self, key: &str, range: Option<String>) -> StoreResult<Bytes> {
        let out = self.send_get(key, range).await?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Transient(format!("reading body of {key}: {e}")))?
            .into_bytes();
        StoreStats::count(&self.stats.bytes_fetched, body.len() as u64);
        Ok(body)
    }
}

/// A Range header for a non-empty `range`, never ?partNumber= (Linode ignores it and
/// sends everything).
fn range_header(range: &Range<u64>) -> String {
    format!("bytes={}-{}", range.start, range.end - 1)
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn lower_keys(metadata: Option<&std::collections::HashMap<String, String>>) -> Metadata {
    metadata
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> StoreResult<Listing> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            StoreStats::count(&self.stats.lists, 1);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_string))
                .set_continuation_token(token.take())
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .inspect(|_| self.stats.reached(true))
                .map_err(|e| self.failed(e, prefix))?;
            // Keys with bytes XML cannot carry come escaped; a server that ignores the
            // request says nothing and sends them raw.
            let escaped = page.encoding_type() == Some(&EncodingType::Url);
            let key_of = |raw: &str| {
                if !escaped {
                    return Some(raw.to_string());
                }
                let key = super::url_key::decode(raw);
                if key.is_none() {
                    tracing::warn!(key = raw, "a listed key is not UTF-8: skipped");
                }
                key
            };
            for object in page.contents() {
                let Some(key) = key_of(object.key().unwrap_or_default()) else {
                    continue;
                };
                listing.objects.push(ObjectSummary {
                    key,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                    last_modified: to_system_time(object.last_modified()),
                });
            }
            for common in page.common_prefixes() {
                if let Some(p) = common.prefix().and_then(key_of) {
                    listing.prefixes.push(p);
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(listing),
            }
        }
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        StoreStats::count(&self.stats.heads, 1);
        let out = customer_key!(self.client.head_object(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        Ok(ObjectInfo {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            last_modified: to_system_time(out.last_modified()),
            metadata: lower_keys(out.metadata()),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.get_object(key, Some(range_header(&range))).await
    }

    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
        sink: &PieceSink<'_>,
    ) -> StoreResult<u64> {
        if range.is_empty() {
            return Ok(0);
        }
        let header = range_header(&range);
        // The ETag of the answer, not If-Match: some stores ignore or mishandle the
        // header, and every answer carries the ETag anyway.
        let out = self.send_get(key, Some(header)).await?;
        self.check_version(key, etag, out.e_tag()).await?;
        let mut body = out.body;
        let mut offset = range.start;
        while let Some(piece) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Transient(format!("reading body of {key}: {e}")))?
        {
            sink(offset, &piece)?;
            offset += piece.len() as u64;
            StoreStats::count(&self.stats.bytes_fetched, piece.len() as u64);
        }
        Ok(offset - range.start)
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.get_object(key, None).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        let len = body.len() as u64;
        let out = encrypt_write!(self.client.put_object(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(Some(metadata.clone()))
            .set_if_match(cond.if_match())
            .set_if_none_match(cond.if_none_match())
            .body(ByteStream::from(body))
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        StoreStats::count(&self.stats.bytes_uploaded, len);
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        metadata: &Metadata,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(len))
            .buffer_size(FILE_READ_BUFFER)
            .build()
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let out = encrypt_write!(self.client.put_object(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .set_metadata(Some(metadata.clone()))
            .set_if_match(cond.if_match())
            .set_if_none_match(cond.if_none_match())
            .body(body)
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        StoreStats::count(&self.stats.bytes_uploaded, len);
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn create_multipart(&self, key: &str, metadata: &Metadata) -> StoreResult<String> {
        StoreStats::count(&self.stats.puts, 1);
        let out = encrypt_write!(self.client.create_multipart_upload(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .set_metadata(Some(metadata.clone()))
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other("CreateMultipartUpload returned no upload id".into()))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        part: FileRange<'_>,
    ) -> StoreResult<CompletedPart> {
        StoreStats::count(&self.stats.parts, 1);
        let len = part.len;
        let body = ByteStream::read_from()
            .path(part.path)
            .offset(part.offset)
            .length(Length::Exact(len))
            .buffer_size(FILE_READ_BUFFER)
            .build()
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let out = customer_key!(self.client.upload_part(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        StoreStats::count(&self.stats.bytes_uploaded, len);
        Ok(CompletedPart {
            number,
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        cond: &WriteCondition,
    ) -> StoreResult<String> {
        let parts = parts
            .into_iter()
            .map(|p| {
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(p.etag)
                    .build()
            })
            .collect();
        let out = customer_key!(self.client.complete_multipart_upload(), &self.encryption)
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .set_if_match(cond.if_match())
            .set_if_none_match(cond.if_none_match())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, key))?;
        Ok(())
    }

    async fn copy(
        &self,
        from: &str,
        from_etag: &str,
        to: &str,
        metadata: Option<&Metadata>,
    ) -> StoreResult<String> {
        StoreStats::count(&self.stats.copies, 1);
        let source = format!("{}/{}", self.bucket, encode_copy_source(from));
        let mut request = encrypt_write!(self.client.copy_object(), &self.encryption)
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .set_copy_source_if_match((!from_etag.is_empty()).then(|| from_etag.to_string()));
        if let Encryption::Customer(key) = &self.encryption {
            request = request
                .copy_source_sse_customer_algorithm("AES256")
                .copy_source_sse_customer_key(&key.key_base64)
                .copy_source_sse_customer_key_md5(&key.md5_base64);
        }
        if let Some(metadata) = metadata {
            request = request
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata.clone()));
        }
        let out = request
            .send()
            .await
            .inspect(|_| self.stats.reached(true))
            .map_err(|e| self.failed(e, from))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        StoreStats::count(&self.stats.deletes, 1);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.failed(e, key) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn check_access(&self) -> StoreResult<()> {
        // No retries for a request nobody answered: a refused connection or a failed
        // handshake is said at once, in its own words, rather than retried until the
        // caller's deadline hides it. A busy server (5xx, throttling) gets two more.
        use aws_sdk_s3::config::{retry::RetryConfig, Builder};
        let mut attempt = 0;
        loop {
            attempt += 1;
            StoreStats::count(&self.stats.lists, 1);
            let request = self.client.list_objects_v2().bucket(&self.bucket);
            let sent = (request.max_keys(1).customize())
                .config_override(Builder::default().retry_config(RetryConfig::disabled()))
                .send()
                .await;
            let Err(err) = sent else {
                self.stats.reached(true);
                return Ok(());
            };
            let answered = matches!(err, SdkError::ServiceError(_));
            let err = self.failed(err, "");
            if !(answered && err.is_retryable() && attempt < 3) {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
    }

    fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

/// The copy source is a URL path: keys with spaces, `%`, `+` or non-ASCII must be escaped.
fn encode_copy_source(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_escapes_reserved_bytes() {
        assert_eq!(encode_copy_source("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(encode_copy_source("plain/key.txt"), "plain/key.txt");
    }

    #[test]
    fn aws_endpoints_are_recognised() {
        assert!(is_aws_endpoint("https://s3.us-east-1.amazonaws.com"));
        assert!(!is_aws_endpoint("https://us-iad-10.linodeobjects.com"));
        assert!(!is_aws_endpoint("http://127.0.0.1:9000"));
    }
}
