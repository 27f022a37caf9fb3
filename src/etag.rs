//! S3 ETags computed from local bytes: the MD5 of a single-part object, or
//! `md5(md5(part 1) .. md5(part N))-N` of a multipart one. Comparing them with the
//! bucket's ETag tells whether local and remote content are the same without a download.

use std::fs::File;
use std::os::unix::fs::FileExt;

use md5::{Digest, Md5};

/// How S3 would name `size` bytes of `file` uploaded with parts of `part_size`
/// (None: one PUT).
pub fn local_etag(file: &File, size: u64, part_size: Option<u64>) -> std::io::Result<String> {
    let Some(part) = part_size.filter(|&p| p > 0 && size > 0) else {
        return Ok(hex(&md5_of(file, 0, size)?));
    };
    let parts = size.div_ceil(part);
    let mut joined = Md5::new();
    for n in 0..parts {
        let start = n * part;
        joined.update(md5_of(file, start, part.min(size - start))?);
    }
    Ok(format!("{}-{parts}", hex(&joined.finalize())))
}

fn md5_of(file: &File, start: u64, len: u64) -> std::io::Result<[u8; 16]> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; (1 << 20).min(len.max(1) as usize)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = file.read_at(&mut buf[..want], start + done)?;
        if n == 0 {
            // Past the end of a sparse cache file: the object reads as zeros there.
            buf[..want].fill(0);
            hasher.update(&buf[..want]);
            done += want as u64;
            continue;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hasher.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `remote` (an ETag from the bucket) names the same bytes as `file`.
/// None when the ETag is no content hash this can check (SSE-KMS, odd part sizes).
pub fn same_content(
    file: &File,
    size: u64,
    remote: &str,
    our_part_size: u64,
) -> std::io::Result<Option<bool>> {
    let remote = remote.trim_matches('"').to_ascii_lowercase();
    let (hash, parts) = match remote.split_once('-') {
        Some((hash, n)) => (hash, n.parse::<u64>().ok()),
        None => (remote.as_str(), None),
    };
    if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let part_size = match parts {
        None => None,
        Some(n) => {
            // Our own part size, else the size that splits the object into n parts
            // rounded to MiB (what most tools use).
            let ours = our_part_size;
            let guess = size.div_ceil(n).div_ceil(1 << 20) * (1 << 20);
            let fits = |p: u64| p > 0 && size.div_ceil(p) == n;
            match [ours, guess].into_iter().find(|&p| fits(p)) {
                Some(p) => Some(p),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(local_etag(file, size, part_size)? == remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn etags_match_what_s3_computes() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello").unwrap();
        // md5("hello")
        assert_eq!(
            local_etag(&file, 5, None).unwrap(),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            same_content(&file, 5, "\"5d41402abc4b2a76b9719d911017c592\"", 8 << 20).unwrap(),
            Some(true)
        );
        assert_eq!(same_content(&file, 5, "not-a-hash", 8 << 20).unwrap(), None);
        let mut big = tempfile::tempfile().unwrap();
        big.write_all(&vec![7u8; 3 << 20]).unwrap();
        let multipart = local_etag(&big, 3 << 20, Some(1 << 20)).unwrap();
        assert!(multipart.ends_with("-3"), "{multipart}");
        assert_eq!(
            same_content(&big, 3 << 20, &multipart, 1 << 20).unwrap(),
            Some(true)
        );
        assert_eq!(
            same_content(&big, 3 << 20, &multipart, 8 << 20).unwrap(),
            Some(true)
        );
    }
}
