//! Mounting: checks the bucket and the mountpoint, builds the core, runs the FUSE
//! session and the uploader, and drains uploads (bounded) at unmount, unless a new
//! mount of the cache dir asks for it first (`handover`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_credential_types::provider::SharedCredentialsProvider;
use fuser::{Config, MountOption, Session};

use crate::cache::Cache;
use crate::credentials::CredentialSource;
use crate::fs::{cache_files_in_use, Fs, FsConfig};
use crate::fuse::FuseAdapter;
use crate::mapping::{DefaultAttrs, KeyPrefix};
use crate::state::StateDb;
use crate::store::s3::{S3Config, S3Store};
use crate::store::{ObjectStore, StoreError};
use crate::sync::{Uploader, UploaderConfig};

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub bucket: String,
    pub prefix: KeyPrefix,
    pub mountpoint: PathBuf,
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub cache_dir: PathBuf,
    /// Bytes the cache may take on disk; None: no limit.
    pub cache_size: Option<u64>,
    pub credentials: CredentialSource,
    pub encryption: crate::store::Encryption,
    /// Owner and modes of objects without s3fs metadata.
    pub defaults: DefaultAttrs,
    pub allow_other: bool,
    /// The kernel checks permission bits (default_permissions).
    pub kernel_permissions: bool,
    pub read_only: bool,
    /// Mount over a non-empty directory (s3fs's nonempty).
    pub nonempty: bool,
    /// Hand fully cached files to the kernel (FUSE passthrough) when it allows.
    pub passthrough: bool,
    /// Large files written in order start their multipart upload before their close.
    pub stream_uploads: bool,
    pub request_timeout: Duration,
    pub upload_delay: Duration,
    pub unmount_timeout: Duration,
    pub metadata_fill: usize,
    pub metadata_wait: usize,
    pub fsync_remote: bool,
    /// How often the bucket is listed for remote changes; None: never.
    /// None: no polling.
    pub poll: Option<crate::sync::PollPace>,
    pub metadata_ttl: Duration,
    /// How long an open waits for its check against the bucket.
    pub open_check_wait: Duration,
    /// How long a write waits for room while no upload makes progress.
    pub cache_full_wait: Duration,
    pub fuse_threads: usize,
}

impl MountOptions {
    /// The S3 client of this mount, each request bounded by `request_timeout` (and
    /// connecting by at most 5 s of it).
    pub(crate) fn store_config(
        &self,
        credentials: SharedCredentialsProvider,
        request_timeout: Duration,
    ) -> S3Config {
        S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            path_style: self.path_style,
            credentials,
            encryption: self.encryption.clone(),
            request_timeout,
            connect_timeout: request_timeout.min(Duration::from_secs(5)),
        }
    }
}

/// Longest wait for the credentials and the bucket before the mount gives up (or
/// starts offline).
const STARTUP_CHECK: Duration = Duration::from_secs(8);

/// State key naming the bucket this cache dir was last mounted with (offline start).
const MOUNTED_BEFORE: &str = "mounted_bucket";

/// Transfers run below the priority of the threads answering the kernel, so a busy
/// uploader does not slow the application's own file operations on a small machine.
fn background_priority() {
    // SAFETY: gettid and setpriority on the calling thread only.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 5);
    }
}

/// Splits `BUCKET[:PREFIX]`.
pub fn parse_source(source: &str) -> anyhow::Result<(String, KeyPrefix)> {
    let (bucket, prefix) = source.split_once(':').unwrap_or((source, ""));
    let prefix = prefix.trim_start_matches('/'); // fstab style: bucket:/photos
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        bail!("{bucket:?} is not a valid bucket name (3-63 characters: a-z, 0-9, '-', '.')");
    }
    let prefix = KeyPrefix::new(prefix).map_err(anyhow::Error::msg)?;
    Ok((bucket.to_string(), prefix))
}

/// Holds an exclusive flock on the cache dir for the daemon's lifetime.
struct CacheLock(#[allow(dead_code)] File);

/// The cache dir's owner, as its marker names it.
pub fn cache_owner(options: &MountOptions) -> crate::cache_dir::Owner {
    crate::cache_dir::Owner {
        endpoint: options.endpoint.clone(),
        bucket: options.bucket.clone(),
        prefix: options.prefix.as_str().to_string(),
    }
}

/// Locks the cache dir (checked to be ours first: see `cache_dir`), taking it over
/// from a daemon that is still uploading after its unmount (see `handover`), and
/// writes our pid into the lock file.
fn lock_cache_dir(options: &MountOptions, notice: &dyn Fn(&str)) -> anyhow::Result<CacheLock> {
    let dir = options.cache_dir.as_path();
    crate::cache_dir::prepare(dir, &cache_owner(options))?;
    let path = dir.join("lock");
    let file = crate::cache_dir::open_file(&path, OpenOptions::new().write(true), true)
        .with_context(|| format!("cannot open {}", path.display()))?;
    crate::handover::acquire(dir, &file, crate::handover::WAIT, notice)?;
    if let Err(err) = crate::handover::write_pid(&file) {
        tracing::warn!(%err, "cannot write the pid into the cache dir's lock file");
    }
    Ok(CacheLock(file))
}

/// FUSE must be there before anything else is tried.
fn check_fuse() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "no /dev/fuse: load the fuse module (modprobe fuse) or give the container the device"
        );
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
    };
    if !root && !on_path("fusermount3") {
        bail!("fusermount3 not found: install the fuse3 package");
    }
    Ok(())
}

fn check_mountpoint(path: &Path, nonempty: bool) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "mountpoint {} does not exist: create it (mkdir -p {})",
            path.display(),
            path.display()
        )
    })?;
    if !meta.is_dir() {
        bail!(
            "mountpoint {} is not a directory: give a directory",
            path.display()
        );
    }
    if is_mount_point(path) {
        bail!(
            "mountpoint {} is already mounted: unmount it first (umount {}) or use another \
             directory",
            path.display(),
            path.display()
        );
    }
    if !nonempty {
        refuse_nonempty(path)?;
    }
    Ok(())
}

/// A mount hides what its mountpoint holds until it is unmounted: a directory that
/// is not empty is refused unless asked for (s3fs's nonempty).
fn refuse_nonempty(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot read mountpoint {shown}"))?
        .filter_map(Result::ok);
    let Some(first) = entries.next() else {
        return Ok(());
    };
    let more = match entries.count() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    bail!(
        "mountpoint {shown} is not empty (it holds {:?}{more}): the mount would hide its \
         files until unmounted. Mount on an empty directory, or add -o nonempty \
         (--nonempty) to mount over them anyway",
        first.file_name()
    )
}

/// Whether something is mounted at `path` (mountinfo's fifth field, octal-escaped).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_str()))
}

/// The startup check's failure as a sentence that says what to check.
pub(crate) fn explain_access_error(err: StoreError, options: &MountOptions) -> anyhow::Error {
    let bucket = &options.bucket;
    match err {
        StoreError::NoSuchBucket(b) => anyhow::anyhow!(
            "bucket {b:?} does not exist at {}: check the bucket name and the endpoint",
            options.endpoint
        ),
        // The credentials are good but may not list the bucket (a policy).
        StoreError::AccessDenied(why) if why.starts_with("AccessDenied") => anyhow::anyhow!(
            "the endpoint denies these credentials access to bucket {bucket:?} ({why}): the \
             bucket's policy or the key's permissions must allow listing it"
        ),
        StoreError::AccessDenied(why) => anyhow::anyhow!(
            "the endpoint refused the credentials for bucket {bucket:?} ({why}): check the \
             access key and secret (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, profile= \
             or credentials_file=)"
        ),
        StoreError::Transient(why) => anyhow::anyhow!(
            "cannot reach {}: {why}: check the endpoint URL (http or https, port) and that it \
             answers from here (s3syncfs doctor checks DNS, TCP and TLS)",
            options.endpoint
        ),
        other => anyhow::anyhow!(
            "checking bucket {bucket:?} at {} failed: {other}; s3syncfs doctor with the same \
             options tells more",
            options.endpoint
        ),
    }
}

/// Mounts and serves until unmounted. `ready` is called once the mount is usable,
/// or with the reason it cannot be; `notice` gets lines for the user before that (a
/// wait for the previous daemon of the cache dir).
pub fn run(
    options: MountOptions,
    notice: &dyn Fn(&str),
    ready: impl FnOnce(Result<(), String>),
) -> anyhow::Result<()> {
    let setup = || -> anyhow::Result<_> {
        check_fuse()?;
        check_mountpoint(&options.mountpoint, options.nonempty)?;
        let lock = lock_cache_dir(&options, notice)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("s3syncfs-io")
            .on_thread_start(background_priority)
            .build()
            .context("cannot start the async runtime")?;
        let aws = crate::store::s3::is_aws_endpoint(&options.endpoint);
        let credentials = crate::credentials::provider(&options.credentials, &options.bucket, aws)?;
        runtime.block_on(crate::credentials::check(&credentials, STARTUP_CHECK))?;
        let config = options.store_config(credentials, options.request_timeout);
        let store = S3Store::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let store: Arc<dyn ObjectStore> = match options.read_only {
            true => Arc::new(crate::store::read_only::ReadOnly(Arc::new(store))),
            false => Arc::new(store),
        };
        let state = StateDb::open(&options.cache_dir.join("state.db")).with_context(|| {
            format!(
                "cannot open the state in {}: is its disk full or read-only? (see \
                     TROUBLESHOOTING.md)",
                options.cache_dir.display()
            )
        })?;
        // A mount that cannot work says so quickly (mount(8) and boot wait for it).
        let startup_check = options.request_timeout.min(STARTUP_CHECK);
        let check = runtime
            .block_on(async { tokio::time::timeout(startup_check, store.check_access()).await });
        let unreachable = match check {
            Ok(Ok(())) => None,
            Ok(Err(err @ (StoreError::Transient(_) | StoreError::Timeout(_)))) => {
                Some(explain_access_error(err, &options))
            }
            Ok(Err(err)) => return Err(explain_access_error(err, &options)),
            Err(_) => {
                // Known offline from the start: reads of what is not cached fail at once.
                store.stats().reached(false);
                Some(anyhow::anyhow!(
                    "cannot reach {}: no answer within {} s: is the endpoint up and reachable \
                     from here?",
                    options.endpoint,
                    startup_check.as_secs()
                ))
            }
        };
        let online = unreachable.is_none();
        match unreachable {
            None => state
                .set_info(MOUNTED_BEFORE, &options.bucket)
                .context("cannot write the state")?,
            // Offline start: only with the state of an earlier mount of this bucket.
            Some(err)
                if state.info(MOUNTED_BEFORE).ok().flatten().as_deref()
                    == Some(&options.bucket) =>
            {
                tracing::warn!("{err:#}; starting offline from the state of the previous mount");
            }
            Some(err) => return Err(err),
        }
        let keep = cache_files_in_use(&state).context("cannot read the state")?;
        let cache = Cache::open(&options.cache_dir, &keep, options.cache_size)
            .with_context(|| format!("cannot use cache dir {}", options.cache_dir.display()))?;
        let state = Arc::new(state);
        let state_open = Arc::downgrade(&state);
        let fs = Fs::new(
            store,
            runtime.handle().clone(),
            cache,
            state,
            FsConfig {
                prefix: options.prefix.clone(),
                defaults: options.defaults,
                request_timeout: options.request_timeout,
                metadata_fill: options.metadata_fill,
                metadata_wait: options.metadata_wait,
                fsync_remote: options.fsync_remote,
                metadata_ttl: options.metadata_ttl,
                open_check_wait: options.open_check_wait,
                cache_full_wait: options.cache_full_wait,
            },
        );
        if online && !options.read_only {
            // Before the mount is ready, so no crash during writes can cut it short.
            let probe = crate::sync::probe_conditional_writes(&fs);
            let _ = runtime
                .block_on(async { tokio::time::timeout(options.request_timeout * 3, probe).await });
        }
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("{}:{}", options.bucket, options.prefix.as_str())),
            MountOption::Subtype("s3syncfs".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        if options.kernel_permissions {
            config.mount_options.push(MountOption::DefaultPermissions);
        }
        if options.allow_other {
            // With allow_other, default_permissions is always set: the kernel checks.
            config.acl = fuser::SessionACL::All;
        }
        if options.read_only {
            config.mount_options.push(MountOption::RO);
        }
        config.n_threads = Some(options.fuse_threads);
        let handover = Arc::new(crate::handover::Handover::new(&options.mountpoint));
        let adapter = FuseAdapter::new(
            fs.clone(),
            crate::control::socket_path(&options.cache_dir),
            options.passthrough,
        );
        let session = Session::new(adapter, &options.mountpoint, &config).with_context(|| {
            format!(
                "cannot mount at {} (s3syncfs doctor checks /dev/fuse and fusermount3)",
                options.mountpoint.display()
            )
        })?;
        fs.set_kernel_cache(crate::fuse::kernel_cache(&session));
        Ok((lock, runtime, fs, session, state_open, handover))
    };
    let (lock, runtime, fs, mut session, state_open, handover) = match setup() {
        Ok(parts) => parts,
        Err(err) => {
            ready(Err(format!("{err:#}")));
            return Err(err);
        }
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let upload_config = UploaderConfig {
        debounce: options.upload_delay,
        ..UploaderConfig::default()
    };
    if options.stream_uploads && !options.read_only {
        fs.enable_streaming(crate::fs::stream::StreamConfig {
            threshold: upload_config.multipart_threshold,
            part_size: upload_config.part_size,
            parts_in_flight: upload_config.parts_in_flight,
        });
    }
    let uploader = Uploader::new(fs.clone(), upload_config);
    let control = crate::control::socket_path(&options.cache_dir);
    {
        let _in_runtime = runtime.enter();
        let daemon = crate::control::Daemon {
            fs: fs.clone(),
            bucket: options.bucket.clone(),
            sync_requests: uploader.sync_requests(),
            report: uploader.report(),
            handover: handover.clone(),
        };
        if let Err(err) = crate::control::serve(daemon, control) {
            tracing::warn!(%err, "no control socket: status and sync will not work");
        }
    }
    if let Some(pace) = options.poll {
        let reconciler = crate::sync::Reconciler::new(fs.clone(), pace);
        runtime.spawn(reconciler.run(shutdown_rx.clone()));
    }
    runtime.spawn(crate::sync::reach::probe_while_offline(
        fs.clone(),
        shutdown_rx.clone(),
    ));
    // Read-only: nothing is written, pending changes of an earlier mount included.
    let mut uploads = match options.read_only {
        true => runtime.spawn(std::future::ready(())),
        false => runtime.spawn(uploader.run(shutdown_rx, options.unmount_timeout)),
    };
    let mut unmounter = session.unmount_callable();
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: unmounting");
        if let Err(err) = tokio::task::spawn_blocking(move || unmounter.unmount()).await {
            tracing::error!(%err, "unmount failed");
        }
    });
    tracing::info!(
        bucket = %options.bucket,
        prefix = %options.prefix.as_str(),
        mountpoint = %options.mountpoint.display(),
        "mounted"
    );
    ready(Ok(()));
    let served = session.run();
    handover.session_ended();
    tracing::info!("unmounted; uploading what is pending");
    let _ = shutdown_tx.send(true);
    let handed_over = runtime.block_on(async {
        tokio::select! {
            _ = &mut uploads => false,
            () = handover.accepted() => true,
        }
    });
    if handed_over {
        // Dropping the uploader drops its transfers where they wait: each outcome is
        // recorded whole or not at all, and an upload cut short keeps its in-flight
        // marker, which the next mount's restore resolves (as after kill -9).
        uploads.abort();
        let _ = runtime.block_on(uploads);
        tracing::info!("handed the cache dir over to a new mount; pending changes stay queued");
    }
    drop(fs);
    runtime.shutdown_timeout(Duration::from_secs(1));
    release(lock, &state_open);
    served.context("FUSE session failed")
}

/// Releases the cache dir once the state is closed (its journal folded, its SQLite
/// lock gone): a new mount may be waiting for it. A transfer that outlived the
/// runtime's shutdown still holds the state: then the lock goes only with the process.
fn release(lock: CacheLock, state: &std::sync::Weak<StateDb>) {
    if state.strong_count() == 0 {
        drop(lock);
    } else {
        tracing::info!("a transfer is still finishing; the cache dir is released at exit");
        std::mem::forget(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_parsed() {
        let (bucket, prefix) = parse_source("my-bucket:photos/2024").unwrap();
        assert_eq!(bucket, "my-bucket");
        assert_eq!(prefix.as_str(), "photos/2024/");
        let (bucket, prefix) = parse_source("data.bucket").unwrap();
        assert_eq!((bucket.as_str(), prefix.as_str()), ("data.bucket", ""));
        assert!(parse_source("UPPER").is_err());
        assert!(parse_source("ab").is_err());
        assert!(parse_source("bucket:a/../b").is_err());
    }
}
