//! What a server tells about itself in the headers of one answer: its clock (Date)
//! and the bucket's region (x-amz-bucket-region). `s3syncfs doctor` reads them.

use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Builder, ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_types::date_time::{DateTime, Format};

use super::S3Store;
use crate::store::StoreError;

#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    /// The server's clock, when its answer had a Date header.
    pub date: Option<SystemTime>,
    /// The bucket's region, when the server names it.
    pub bucket_region: Option<String>,
    /// The HTTP status of the answer; none if nothing answered.
    pub status: Option<u16>,
}

/// Copies the headers wanted out of the raw answer, before the SDK reads it.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<parking_lot::Mutex<ServerFacts>>);

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "ServerFacts"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let headers = response.headers();
        let mut facts = self.0.lock();
        facts.status = Some(response.status().as_u16());
        facts.date = headers
            .get("date")
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok())
            .and_then(|d| SystemTime::try_from(d).ok());
        facts.bucket_region = headers.get("x-amz-bucket-region").map(str::to_string);
        Ok(())
    }
}

impl S3Store {
    /// One HEAD of the bucket, not retried: what its answer's headers say, and how it
    /// went.
    pub async fn server_facts(&self) -> (ServerFacts, Result<(), StoreError>) {
        let recorder = Recorder::default();
        let sent = self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .interceptor(recorder.clone())
            .config_override(Builder::default().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        let outcome = sent.map(|_| ()).map_err(|err| self.failed(err, ""));
        let facts = recorder.0.lock().clone();
        (facts, outcome)
    }
}
