//! Which S3 operation an HTTP request is, from its method, path-style target and
//! headers alone, for the fault proxy's matchers and counters.

/// The S3 operation a request is, as far as the proxy can tell from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Op {
    /// PUT of an object, not a copy and not a part.
    PutObject,
    /// PUT with `uploadId` and `partNumber`.
    UploadPart,
    /// UploadPart with `x-amz-copy-source`.
    UploadPartCopy,
    /// POST `?uploads`.
    CreateMultipartUpload,
    /// POST `?uploadId=`.
    CompleteMultipartUpload,
    /// DELETE `?uploadId=`.
    AbortMultipartUpload,
    /// PUT with `x-amz-copy-source` (a rename, or a metadata change onto itself).
    CopyObject,
    DeleteObject,
    /// POST `?delete`.
    DeleteObjects,
    HeadObject,
    GetObject,
    /// GET of the bucket with `list-type=2`.
    ListObjectsV2,
    /// Anything else: bucket-level requests, ACLs, tagging, ListObjects v1 ...
    Other,
}

/// The operation and the (decoded) object key of a path-style request.
pub fn classify(method: &str, target: &str, copy_source: bool) -> (S3Op, String) {
    // An absolute-form target (`http://host/path`) is reduced to its path.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.trim_start_matches('/');
    let key = percent_decode(path.split_once('/').map_or("", |(_, key)| key));
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let has = |name: &str| params.iter().any(|(n, _)| *n == name);
    let sub_resource = [
        "acl",
        "tagging",
        "retention",
        "legal-hold",
        "attributes",
        "torrent",
    ]
    .iter()
    .any(|name| has(name));
    let on_object = !key.is_empty();
    let op = match method {
        "PUT" if on_object && has("uploadId") && copy_source => S3Op::UploadPartCopy,
        "PUT" if on_object && has("uploadId") => S3Op::UploadPart,
        "PUT" if on_object && sub_resource => S3Op::Other,
        "PUT" if on_object && copy_source => S3Op::CopyObject,
        "PUT" if on_object => S3Op::PutObject,
        "POST" if has("uploads") => S3Op::CreateMultipartUpload,
        "POST" if has("uploadId") => S3Op::CompleteMultipartUpload,
        "POST" if has("delete") => S3Op::DeleteObjects,
        "DELETE" if on_object && has("uploadId") => S3Op::AbortMultipartUpload,
        "DELETE" if on_object && !sub_resource => S3Op::DeleteObject,
        "HEAD" if on_object => S3Op::HeadObject,
        "GET" if on_object && !sub_resource && !has("uploadId") => S3Op::GetObject,
        "GET" if !on_object && params.contains(&("list-type", "2")) => S3Op::ListObjectsV2,
        _ => S3Op::Other,
    };
    (op, key)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
