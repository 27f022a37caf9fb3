//! The settings of a mount as long options (`mount` and `doctor` share them), checked
//! into `MountOptions`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;

use crate::credentials::CredentialSource;
use crate::mapping::DefaultAttrs;
use crate::mount::{self, MountOptions};
use crate::store::Encryption;

#[derive(clap::Args, Clone, Debug)]
pub struct MountArgs {
    /// The bucket, optionally with a key prefix: BUCKET or BUCKET:PREFIX (BUCKET:/PREFIX too).
    pub source: String,
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub settings: Settings,
    /// Internal: report readiness on stdout (set by the daemonizing parent).
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

impl MountArgs {
    /// The settings of this mount, checked.
    pub fn options(&self) -> anyhow::Result<MountOptions> {
        self.settings.options(&self.source, &self.mountpoint)
    }
}

/// Every setting of a mount but where it goes (see option_list.rs for the `-o` forms).
#[derive(clap::Args, Clone, Debug)]
pub struct Settings {
    /// S3 endpoint URL, e.g. https://us-east-1.linodeobjects.com; default: AWS S3 in --region.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// SigV4 region; default: taken from a Linode or AWS endpoint name, else us-east-1.
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (http://host/bucket/key) instead of virtual-hosted.
    #[arg(long)]
    pub path_style: bool,
    /// Local directory for cached data, one per mount, new, empty or already this
    /// mount's (see docs/SECURITY.md); default: /var/cache/s3syncfs/BUCKET (root) or
    /// ~/.cache/s3syncfs/BUCKET.
    #[arg(long, conflicts_with = "cache_root")]
    pub cache_dir: Option<PathBuf>,
    /// A directory to make the cache dir in: ROOT/BUCKET, or ROOT/BUCKET+PREFIX (s3fs's
    /// use_cache=ROOT).
    #[arg(long)]
    pub cache_root: Option<PathBuf>,
    /// Most disk space cached data may take (512M, 10G ...); default: unlimited. Clean
    /// files are evicted least recently used first; changes not yet uploaded never are,
    /// and once they alone fill it, writes fail with ENOSPC.
    #[arg(long, value_parser = parse_cache_size)]
    pub cache_size: Option<u64>,
    /// Profile of ~/.aws/credentials and ~/.aws/config to take credentials from.
    #[arg(long)]
    pub profile: Option<String>,
    /// s3fs-style passwd file (ACCESS:SECRET or BUCKET:ACCESS:SECRET), mode 600.
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
    /// Server-side encryption of every object written: AES256 (SSE-S3) or aws:kms.
    #[arg(long, value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    /// KMS key for --sse aws:kms (default: the account's S3 key).
    #[arg(long)]
    pub sse_kms_key_id: Option<String>,
    /// SSE-C: a file (mode 600) holding the 32-byte key, raw or base64; every read
    /// and write of the mount's objects then carries it. Never give keys on the command line.
    #[arg(long)]
    pub sse_c_key_file: Option<PathBuf>,
    /// Owner of objects without s3fs metadata (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of objects without s3fs metadata (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Octal umask for objects without s3fs metadata (default 022: 0644 files, 0755 dirs).
    #[arg(long, value_parser = parse_octal)]
    pub umask: Option<u32>,
    /// Let other users use the mount (permissions are then checked by the kernel).
    #[arg(long)]
    pub allow_other: bool,
    /// Have the kernel check permission bits on a root mount without allow_other too,
    /// where only root can enter (costs a request after each change to a directory).
    #[arg(long)]
    pub default_permissions: bool,
    /// Mount read-only: nothing is written to the bucket (pending changes of an
    /// earlier mount wait for the next read-write one).
    #[arg(long)]
    pub read_only: bool,
    /// Mount over a directory that is not empty (its files are hidden until unmount).
    #[arg(long)]
    pub nonempty: bool,
    /// Serve every read and write through the daemon, never by kernel passthrough
    /// (which sends I/O of fully cached files straight to the cache file; needs root).
    #[arg(long)]
    pub no_passthrough: bool,
    /// Upload large files only after their close, never while they are written.
    #[arg(long)]
    pub no_stream_uploads: bool,
    /// Stay in the foreground and log to stderr.
    #[arg(long)]
    pub foreground: bool,
    /// Seconds any single request to the bucket may take.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
    /// Milliseconds a closed file must stay unchanged before it is uploaded (files of
    /// 16 MiB or more: at most 100; new files: a fifth of it).
    #[arg(long, default_value_t = 500)]
    pub upload_delay_ms: u64,
    /// Seconds pending uploads get at unmount; the rest stays queued for the next mount.
    #[arg(long, default_value_t = 30)]
    pub unmount_timeout: u64,
    /// Of a listing with more unknown entries than --metadata-wait, how many get their
    /// metadata (a HEAD each) in the background. Default: none (LIST-only), or all with
    /// --allow-other (other users' access is checked against the real modes).
    #[arg(long)]
    pub metadata_fill: Option<usize>,
    /// A listing with at most this many entries of unknown metadata waits for their HEADs
    /// (exact modes and mtimes in its first `ls -l`); larger ones are LIST-only (see
    /// --metadata-fill).
    #[arg(long, default_value_t = 100)]
    pub metadata_wait: usize,
    /// Seconds between listings of the bucket that bring in other clients' changes;
    /// 0 turns polling off.
    #[arg(long, default_value_t = 10)]
    pub poll_interval: u64,
    /// LIST requests a minute the polls may take on average (one per 1,000 keys): a
    /// larger bucket is listed less often than --poll-interval. 0: no bound.
    #[arg(long, default_value_t = 60)]
    pub poll_lists_per_minute: u64,
    /// Opening a file checks it with one HEAD when the bucket last confirmed it longer
    /// ago than this many seconds (close-to-open freshness).
    #[arg(long, default_value_t = 5)]
    pub metadata_ttl: u64,
    /// Milliseconds an open waits for that check; past them it serves the cached
    /// version and the check finishes in the background (a slow or hung bucket never
    /// holds up a cached file).
    #[arg(long, default_value_t = 1000)]
    pub open_check_wait_ms: u64,
    /// Seconds a write waits for room when the cache is full of changes not yet
    /// uploaded and no upload makes progress; past them it fails with ENOSPC. While
    /// uploads progress it keeps waiting.
    #[arg(long, default_value_t = 60)]
    pub cache_full_wait: u64,
    /// fsync returns only once the file is in the bucket (default: once it is on local disk).
    #[arg(long)]
    pub fsync_remote: bool,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 16)]
    pub fuse_threads: usize,
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

fn parse_cache_size(text: &str) -> Result<u64, String> {
    match crate::units::parse_size(text)? {
        0 => Err("the cache size must be more than 0 (leave it out for no limit)".into()),
        bytes => Ok(bytes),
    }
}

fn parse_octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal mode such as 022"))
}

impl Settings {
    /// The settings of a mount of `source` at `mountpoint`, checked.
    pub fn options(&self, source: &str, mountpoint: &Path) -> anyhow::Result<MountOptions> {
        let (bucket, prefix) = mount::parse_source(source)?;
        let region = self
            .region
            .clone()
            .or_else(|| self.endpoint.as_deref().and_then(region_of_endpoint))
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.split("://").nth(1).is_none_or(str::is_empty)
        {
            bail!("endpoint {endpoint:?} must be a URL starting with http:// or https://");
        }
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let cache_dir = match (&self.cache_dir, &self.cache_root) {
            (Some(dir), _) => absolute(dir),
            (None, Some(root)) => {
                crate::cache_dir::under_root(&absolute(root), &bucket, prefix.as_str())
            }
            (None, None) => default_cache_dir(&bucket, prefix.as_str())?,
        };
        let credentials = match (&self.credentials_file, &self.profile) {
            (Some(_), Some(_)) => bail!("give either credentials_file= or profile=, not both"),
            (Some(file), None) => CredentialSource::PasswdFile(absolute(file)),
            (None, profile) => CredentialSource::Chain {
                profile: profile.clone(),
            },
        };
        let encryption = match (self.sse.as_deref(), &self.sse_c_key_file) {
            (Some(_), Some(_)) => bail!("give either sse= or sse_c_key_file=, not both"),
            (None, Some(file)) => Encryption::Customer(crate::credentials::read_sse_c_key(file)?),
            (Some("AES256"), None) => Encryption::S3Managed,
            (Some(_), None) => Encryption::Kms(self.sse_kms_key_id.clone()),
            (None, None) if self.sse_kms_key_id.is_some() => {
                bail!("sse_kms_key_id= needs sse=aws:kms")
            }
            (None, None) => Encryption::None,
        };
        let mut defaults = DefaultAttrs::default();
        if let Some(uid) = self.uid {
            defaults.uid = uid;
        }
        if let Some(gid) = self.gid {
            defaults.gid = gid;
        }
        if let Some(umask) = self.umask {
            defaults.file_mode = 0o666 & !umask;
            defaults.dir_mode = 0o777 & !umask;
        }
        Ok(MountOptions {
            bucket,
            prefix,
            mountpoint: absolute(mountpoint),
            endpoint,
            region,
            path_style: self.path_style,
            cache_dir,
            cache_size: self.cache_size,
            credentials,
            encryption,
            defaults,
            allow_other: self.allow_other,
            // Without allow_other only processes of the mounting user get in; for root
            // the daemon's own checks (access(2), exec bits in the kernel) are enough.
            kernel_permissions: self.default_permissions || self.allow_other || !running_as_root(),
            read_only: self.read_only,
            nonempty: self.nonempty,
            passthrough: !self.no_passthrough,
            stream_uploads: !self.no_stream_uploads,
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            upload_delay: Duration::from_millis(self.upload_delay_ms),
            unmount_timeout: Duration::from_secs(self.unmount_timeout),
            metadata_fill: self.metadata_fill.unwrap_or(if self.allow_other {
                usize::MAX
            } else {
                0
            }),
            metadata_wait: self.metadata_wait,
            fsync_remote: self.fsync_remote,
            poll: (self.poll_interval > 0).then(|| crate::sync::PollPace {
                interval: Duration::from_secs(self.poll_interval),
                lists_per_minute: self.poll_lists_per_minute,
            }),
            metadata_ttl: Duration::from_secs(self.metadata_ttl),
            open_check_wait: Duration::from_millis(self.open_check_wait_ms),
            cache_full_wait: Duration::from_secs(self.cache_full_wait),
            fuse_threads: self.fuse_threads.max(1),
        })
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `us-iad-10` from `https://us-iad-10.linodeobjects.com`, `eu-west-1` from
/// `https://s3.eu-west-1.amazonaws.com`.
pub fn region_of_endpoint(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").nth(1)?.split(['/', ':']).next()?;
    if let Some(cluster) = host.strip_suffix(".linodeobjects.com") {
        return Some(cluster.rsplit('.').next()?.to_string());
    }
    let inner = host.strip_suffix(".amazonaws.com")?;
    let region = inner.rsplit('.').next()?;
    (region != "s3" && !region.is_empty()).then(|| region.trim_start_matches("s3-").to_string())
}

fn default_cache_dir(bucket: &str, prefix: &str) -> anyhow::Result<PathBuf> {
    let name = crate::cache_dir::name_for(bucket, prefix);
    if running_as_root() {
        return Ok(PathBuf::from("/var/cache/s3syncfs").join(name));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(base) => Ok(base.join("s3syncfs").join(name)),
        None => bail!("no HOME to put the cache in: give cache_dir="),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_endpoint_names() {
        let r = |e| region_of_endpoint(e);
        assert_eq!(
            r("https://us-iad-10.linodeobjects.com"),
            Some("us-iad-10".into())
        );
        assert_eq!(
            r("https://us-east-1.linodeobjects.com/"),
            Some("us-east-1".into())
        );
        assert_eq!(
            r("https://s3.eu-west-1.amazonaws.com"),
            Some("eu-west-1".into())
        );
        assert_eq!(r("https://s3.amazonaws.com"), None);
        assert_eq!(r("http://127.0.0.1:9000"), None);
    }
}
