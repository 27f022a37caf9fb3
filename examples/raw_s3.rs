//! The S3 client alone, as the benchmark's baseline (and its fixture maker): the best
//! a FUSE mount could do against the same server.
//! Usage (credentials from AWS_ACCESS_KEY_ID/SECRET; prints elapsed seconds):
//!   raw_s3 ENDPOINT BUCKET put-file PATH KEY   parallel multipart upload (8 MiB, 8 at once)
//!   raw_s3 ENDPOINT BUCKET get KEY             parallel ranged GETs, bytes dropped
//!   raw_s3 ENDPOINT BUCKET put-many PREFIX N   N one-byte objects, 32 at once
//!   raw_s3 ENDPOINT BUCKET list PREFIX         list every key under PREFIX
//!   raw_s3 ENDPOINT BUCKET size KEY            the object's size, or -1

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::sync::Semaphore;

const PART: u64 = 8 << 20;
const PARALLEL: usize = 8;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: raw_s3 ENDPOINT BUCKET put-file|get|put-many|list|size ...");
        std::process::exit(2);
    }
    let client = client(&args[1])?;
    let bucket = args[2].clone();
    let started = Instant::now();
    match (args[3].as_str(), &args[4..]) {
        ("put-file", [path, key]) => put_file(&client, &bucket, path, key).await?,
        ("get", [key]) => get(&client, &bucket, key).await?,
        ("put-many", [prefix, n]) => put_many(&client, &bucket, prefix, n.parse()?).await?,
        ("list", [prefix]) => {
            let count = count_keys(&client, &bucket, prefix).await?;
            eprintln!("{count} keys");
        }
        ("count", [prefix]) => {
            println!("{}", count_keys(&client, &bucket, prefix).await?);
            return Ok(());
        }
        ("size", [key]) => {
            let size = match client.head_object().bucket(&bucket).key(key).send().await {
                Ok(head) => head.content_length().unwrap_or(-1),
                Err(_) => -1,
            };
            println!("{size}");
            return Ok(());
        }
        _ => return Err("unknown command or arguments".into()),
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn client(endpoint: &str) -> Result<Client, Error> {
    let credentials = Credentials::new(
        std::env::var("AWS_ACCESS_KEY_ID")?,
        std::env::var("AWS_SECRET_ACCESS_KEY")?,
        None,
        None,
        "environment",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(credentials)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Ok(Client::from_conf(config))
}

async fn put_file(client: &Client, bucket: &str, path: &str, key: &str) -> Result<(), Error> {
    let size = std::fs::metadata(path)?.len();
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let id = upload.upload_id().unwrap_or_default().to_string();
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, offset) in (0..size).step_by(PART as usize).enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let (client, bucket, key, id, path) = (
            client.clone(),
            bucket.to_string(),
            key.to_string(),
            id.clone(),
            path.to_string(),
        );
        tasks.spawn(async move {
            let len = PART.min(size - offset);
            let body = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len as usize];
                std::fs::File::open(&path)?.read_exact_at(&mut buf, offset)?;
                Ok::<_, std::io::Error>(buf)
            })
            .await??;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(n as i32 + 1)
                .body(ByteStream::from(body))
                .send()
                .await?;
            drop(permit);
            Ok::<_, Error>(
                CompletedPart::builder()
                    .part_number(n as i32 + 1)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            )
        });
    }
    let mut parts = Vec::new();
    while let Some(done) = tasks.join_next().await {
        parts.push(done??);
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Lists every key under `prefix` (LIST requests only) and counts them.
async fn count_keys(client: &Client, bucket: &str, prefix: &str) -> Result<usize, Error> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += page?.contents().len();
    }
    Ok(count)
}

async fn get(client: &Client, bucket: &str, key: &str) -> Result<(), Error> {
    let size = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await?
        .content_length()
        .unwrap_or(0) as u64;
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for offset in (0..size).step_by(PART as usize) {
        let permit = limit.clone().acquire_owned().await?;
        let (client, bucket, key) = (client.clone(), bucket.to_string(), key.to_string());
        tasks.spawn(async move {
            let end = (offset + PART).min(size) - 1;
            let out = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={offset}-{end}"))
                .send()
                .await?;
            let bytes = out.body.collect().await?.into_bytes().len();
            drop(permit);
            Ok::<_, Error>(bytes)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn put_many(client: &Client, bucket: &str, prefix: &str, n: usize) -> Result<(), Error> {
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await?;
        let (client, bucket, key) = (
            client.clone(),
            bucket.to_string(),
            format!("{prefix}{i:06}"),
        );
        tasks.spawn(async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await?;
            drop(permit);
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
