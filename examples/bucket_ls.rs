//! Lists a bucket straight from the S3 API (not through the mount), with each object's
//! s3fs-style mode: the demo uses it to show what the uploader put in the bucket.
//! Usage: bucket_ls ENDPOINT BUCKET (credentials from AWS_ACCESS_KEY_ID/SECRET).

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, bucket] = args.as_slice() else {
        eprintln!("usage: bucket_ls ENDPOINT BUCKET");
        std::process::exit(2);
    };
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
    let client = aws_sdk_s3::Client::from_conf(config);
    let listing = client.list_objects_v2().bucket(bucket).send().await?;
    println!("{:<10} {:>10}  key", "mode", "size");
    for object in listing.contents() {
        let key = object.key().unwrap_or_default();
        let head = client.head_object().bucket(bucket).key(key).send().await?;
        let mode = head
            .metadata()
            .and_then(|m| m.get("mode"))
            .and_then(|m| m.parse::<u32>().ok())
            .map_or("-".to_string(), |m| format!("{m:o}"));
        println!("{mode:<10} {:>10}  {key}", object.size().unwrap_or(0));
    }
    Ok(())
}
