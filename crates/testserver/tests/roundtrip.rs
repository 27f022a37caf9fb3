//! The test server against aws-sdk-s3: the S3 behaviour s3syncfs relies on.

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use s3syncfs_testserver::{Backend, Server};

fn client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new("ak", "sk", None, None, "test"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

async fn put(c: &Client, key: &str, body: &[u8]) {
    c.put_object()
        .bucket("bkt")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn flat_keys_markers_metadata_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::new(dir.path()).unwrap();
    backend.create_bucket("bkt");
    let server = Server::start(backend.clone(), "127.0.0.1:0".parse().unwrap(), "ak", "sk")
        .await
        .unwrap();
    let c = client(&server.endpoint());
    c.put_object()
        .bucket("bkt")
        .key("d/")
        .metadata("mode", "16877")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    put(&c, "d/x", b"0123456789").await;
    put(&c, "a", b"file a").await;
    put(&c, "a/b", b"under a").await;

    let head = c
        .head_object()
        .bucket("bkt")
        .key("d/")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["mode"], "16877");
    let got = c
        .get_object()
        .bucket("bkt")
        .key("d/x")
        .range("bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().to_vec(), b"2345");

    let listing = c
        .list_objects_v2()
        .bucket("bkt")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listing
        .contents()
        .iter()
        .map(|o| o.key().unwrap())
        .collect();
    let prefixes: Vec<_> = listing
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(keys, vec!["a"]);
    assert_eq!(prefixes, vec!["a/", "d/"]);
    assert!(listing.contents()[0].e_tag().is_some());
    let inside = c
        .list_objects_v2()
        .bucket("bkt")
        .prefix("d/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = inside.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(keys, vec!["d/", "d/x"]);

    let err = c
        .put_object()
        .bucket("bkt")
        .key("a")
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(
        err.unwrap_err().raw_response().unwrap().status().as_u16(),
        412
    );

    c.copy_object()
        .bucket("bkt")
        .key("a")
        .copy_source("bkt/a")
        .metadata_directive("REPLACE".into())
        .metadata("mode", "33188")
        .send()
        .await
        .unwrap();
    let head = c.head_object().bucket("bkt").key("a").send().await.unwrap();
    assert_eq!(head.metadata().unwrap()["mode"], "33188");
    assert!(backend.stats().copy == 1 && backend.stats().get_bytes == 4);
    server.stop().await;
}

#[tokio::test]
async fn pagination_multipart_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::new(dir.path()).unwrap();
    backend.create_bucket("bkt");
    let server = Server::start(backend.clone(), "127.0.0.1:0".parse().unwrap(), "ak", "sk")
        .await
        .unwrap();
    let addr = server.local_addr();
    let c = client(&server.endpoint());
    for i in 0..2500 {
        put(&c, &format!("k/{i:05}"), b"x").await;
    }
    let mut token = None;
    let (mut pages, mut seen) = (0, 0);
    loop {
        let page = c
            .list_objects_v2()
            .bucket("bkt")
            .prefix("k/")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        pages += 1;
        seen += page.contents().len();
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, 2500));

    let up = c
        .create_multipart_upload()
        .bucket("bkt")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let body = vec![n as u8; 5 << 20];
        let p = c
            .upload_part()
            .bucket("bkt")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    let done = c
        .complete_multipart_upload()
        .bucket("bkt")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-2\""));

    server.stop().await;
    assert!(
        c.head_object()
            .bucket("bkt")
            .key("big")
            .send()
            .await
            .is_err(),
        "server still answers"
    );
    let server = Server::start(backend, addr, "ak", "sk").await.unwrap();
    let head = c
        .head_object()
        .bucket("bkt")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(10 << 20));
    server.stop().await;
}
