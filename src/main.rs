//! The `s3syncfs` command: mount (daemonized or in the foreground) and unmount.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use s3syncfs::mount::{self, MountOptions};

#[derive(Parser)]
#[command(
    name = "s3syncfs",
    version,
    about = "Mount an S3 bucket through a local disk cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BUCKET[:PREFIX] at MOUNTPOINT.
    #[command(args_override_self = true)] // a later option wins, as in fstab option lists
    Mount(MountArgs),
    /// Unmount a mounted s3syncfs; pending uploads finish (bounded) before the daemon exits.
    Unmount { mountpoint: PathBuf },
    /// Show what is waiting to reach the bucket.
    Status {
        mountpoint: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Upload everything pending now and return once it is in the bucket.
    Sync {
        mountpoint: PathBuf,
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(clap::Args, Clone)]
struct MountArgs {
    /// The bucket, optionally with a key prefix: BUCKET or BUCKET:PREFIX.
    source: String,
    mountpoint: PathBuf,
    /// S3 endpoint URL, e.g. https://us-east-1.linodeobjects.com or http://127.0.0.1:9000.
    #[arg(long)]
    endpoint: String,
    /// SigV4 region (for Linode, the cluster id such as us-iad-10).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Path-style addressing (http://host/bucket/key) instead of virtual-hosted.
    #[arg(long)]
    path_style: bool,
    /// Local directory for cached data; must not be shared by two mounts.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Stay in the foreground and log to stderr.
    #[arg(long)]
    foreground: bool,
    /// Seconds any single request to the bucket may take.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Milliseconds a closed file must stay unchanged before it is uploaded.
    #[arg(long, default_value_t = 500)]
    upload_delay_ms: u64,
    /// Seconds pending uploads get at unmount; the rest is logged as not uploaded.
    #[arg(long, default_value_t = 30)]
    unmount_timeout: u64,
    /// Entries per listing whose metadata is fetched (HEAD) in the background; 0 = none.
    #[arg(long, default_value_t = 1000)]
    metadata_fill: usize,
    /// A listing with at most this many entries of unknown metadata waits for their HEADs
    /// (exact modes and mtimes in its first `ls -l`); larger ones are filled in the background.
    #[arg(long, default_value_t = 100)]
    metadata_wait: usize,
    /// fsync returns only once the file is in the bucket (default: once it is on local disk).
    #[arg(long)]
    fsync_remote: bool,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 16)]
    fuse_threads: usize,
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Internal: report readiness on stdout (set by the daemonizing parent).
    #[arg(long, hide = true)]
    daemon_child: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Mount(args) => mount_command(args),
        Cmd::Unmount { mountpoint } => unmount_command(&mountpoint),
        Cmd::Status { mountpoint, json } => {
            report(control_request(&mountpoint, "status", 10), |lines| {
                status_output(lines, json)
            })
        }
        Cmd::Sync {
            mountpoint,
            timeout,
        } => report(control_request(&mountpoint, "sync", timeout), sync_output),
    }
}

fn init_logging(level: &str) {
    // fuser logs every unimplemented request and a harmless unmount race at warn.
    let directives = if level.contains("fuser") {
        level.to_string()
    } else {
        format!("{level},fuser=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn mount_command(args: MountArgs) -> ExitCode {
    if !args.foreground && !args.daemon_child {
        return daemonize(&args);
    }
    init_logging(&args.log_level);
    let options = match options_from(&args) {
        Ok(o) => o,
        Err(err) => {
            eprintln!("s3syncfs: {err:#}");
            return ExitCode::from(1);
        }
    };
    let report_to_parent = args.daemon_child;
    let ready = move |result: Result<(), String>| {
        if report_to_parent {
            let line = match &result {
                Ok(()) => "READY".to_string(),
                Err(why) => format!("ERROR {why}"),
            };
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            detach_stdout();
        }
    };
    match mount::run(options, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            if !report_to_parent {
                eprintln!("s3syncfs: {err:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn options_from(args: &MountArgs) -> anyhow::Result<MountOptions> {
    let (bucket, prefix) = mount::parse_source(&args.source)?;
    let endpoint = args.endpoint.trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        anyhow::bail!("endpoint {endpoint:?} must be a URL starting with http:// or https://");
    }
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    Ok(MountOptions {
        bucket,
        prefix,
        mountpoint: absolute(&args.mountpoint),
        endpoint,
        region: args.region.clone(),
        path_style: args.path_style,
        cache_dir: absolute(&args.cache_dir),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        upload_delay: Duration::from_millis(args.upload_delay_ms),
        unmount_timeout: Duration::from_secs(args.unmount_timeout),
        metadata_fill: args.metadata_fill,
        metadata_wait: args.metadata_wait,
        fsync_remote: args.fsync_remote,
        fuse_threads: args.fuse_threads.max(1),
    })
}

/// The daemon's stdout was the readiness channel; after READY it points at /dev/null.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto our own stdout descriptor.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Starts the daemon as a child in its own session and waits for it to report.
fn daemonize(args: &MountArgs) -> ExitCode {
    if let Err(err) = options_from(args) {
        eprintln!("s3syncfs: {err:#}");
        return ExitCode::from(1);
    }
    if let Err(err) = std::fs::create_dir_all(&args.cache_dir) {
        eprintln!(
            "s3syncfs: cannot create cache dir {}: {err}",
            args.cache_dir.display()
        );
        return ExitCode::from(1);
    }
    let log_path = args.cache_dir.join("s3syncfs.log");
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(err) => {
            eprintln!("s3syncfs: cannot write log {}: {err}", log_path.display());
            return ExitCode::from(1);
        }
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("s3syncfs"));
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    argv.push("--daemon-child".into());
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(err) => {
            eprintln!("s3syncfs: cannot start the daemon: {err}");
            return ExitCode::from(1);
        }
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match line
        .trim_end()
        .split_once(' ')
        .map_or((line.trim_end(), ""), |(a, b)| (a, b))
    {
        ("READY", _) => ExitCode::SUCCESS,
        ("ERROR", why) => {
            eprintln!("s3syncfs: {why}");
            let _ = child.wait();
            ExitCode::from(1)
        }
        _ => {
            let status = child.wait();
            eprintln!(
                "s3syncfs: the daemon exited ({status:?}) before the mount was ready; see {}",
                log_path.display()
            );
            ExitCode::from(1)
        }
    }
}

fn unmount_command(mountpoint: &PathBuf) -> ExitCode {
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => {
            eprintln!("s3syncfs: cannot run fusermount3: {err}");
            ExitCode::from(1)
        }
    }
}

/// Finds the daemon of `mountpoint` (an extended attribute of its root names the
/// control socket), sends `request` and returns the answer's lines.
fn control_request(
    mountpoint: &std::path::Path,
    request: &str,
    timeout: u64,
) -> anyhow::Result<Vec<String>> {
    use std::io::{BufRead, Write};
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    let name = std::ffi::CString::new(s3syncfs::control::CONTROL_XATTR)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: getxattr into a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        anyhow::bail!("{} is not an s3syncfs mount", mountpoint.display());
    }
    buf.truncate(n as usize);
    let socket = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&buf));
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| anyhow::anyhow!("cannot reach the daemon at {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(timeout.max(1))))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    for line in BufReader::new(stream).lines() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("gave up after {timeout} s; what is pending stays queued");
        }
        let line = line.map_err(|e| anyhow::anyhow!("no answer within {timeout} s: {e}"))?;
        if request == "sync" {
            if let Ok(p) = serde_json::from_str::<s3syncfs::control::SyncProgress>(&line) {
                eprint!(
                    "\rwaiting: {} files, {} deletes   ",
                    p.files_waiting, p.deletes_waiting
                );
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

fn report(
    result: anyhow::Result<Vec<String>>,
    show: impl FnOnce(&[String]) -> anyhow::Result<()>,
) -> ExitCode {
    match result.and_then(|lines| show(&lines)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("s3syncfs: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn status_output(lines: &[String], json: bool) -> anyhow::Result<()> {
    let line = lines
        .first()
        .ok_or_else(|| anyhow::anyhow!("the daemon sent no status"))?;
    if json {
        println!("{line}");
        return Ok(());
    }
    let s: s3syncfs::control::Status = serde_json::from_str(line)?;
    println!("bucket:          {}:{}", s.bucket, s.prefix);
    println!("files waiting:   {}", s.files_waiting);
    println!("deletes waiting: {}", s.deletes_waiting);
    println!("cache use:       {} bytes", s.cache_bytes);
    Ok(())
}

fn sync_output(lines: &[String]) -> anyhow::Result<()> {
    let last = lines
        .last()
        .ok_or_else(|| anyhow::anyhow!("the daemon sent nothing"))?;
    let progress: s3syncfs::control::SyncProgress = serde_json::from_str(last)?;
    eprintln!();
    if !progress.done {
        anyhow::bail!("not everything is in the bucket yet");
    }
    println!("everything is in the bucket");
    Ok(())
}
