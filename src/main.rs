//! The `s3syncfs` command: mount (daemonized or in the foreground) and unmount.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, Subcommand};
use s3syncfs::client;
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
    /// Most disk space cached data may take (512M, 10G ...); default: unlimited. Clean
    /// files are evicted least recently used first; changes not yet uploaded never are,
    /// and once they alone fill it, writes fail with ENOSPC.
    #[arg(long, value_parser = parse_cache_size)]
    cache_size: Option<u64>,
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
    /// Seconds between listings of the bucket that bring in other clients' changes;
    /// 0 turns polling off.
    #[arg(long, default_value_t = 10)]
    poll_interval: u64,
    /// Opening a file checks it with one HEAD when the bucket last confirmed it longer
    /// ago than this many seconds (close-to-open freshness).
    #[arg(long, default_value_t = 5)]
    metadata_ttl: u64,
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
        Cmd::Status { mountpoint, json } => outcome(client::status_command(&mountpoint, json)),
        Cmd::Sync {
            mountpoint,
            timeout,
        } => outcome(client::sync_command(
            &mountpoint,
            Duration::from_secs(timeout),
        )),
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
        cache_size: args.cache_size,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        upload_delay: Duration::from_millis(args.upload_delay_ms),
        unmount_timeout: Duration::from_secs(args.unmount_timeout),
        metadata_fill: args.metadata_fill,
        metadata_wait: args.metadata_wait,
        fsync_remote: args.fsync_remote,
        poll_interval: (args.poll_interval > 0).then(|| Duration::from_secs(args.poll_interval)),
        metadata_ttl: Duration::from_secs(args.metadata_ttl),
        fuse_threads: args.fuse_threads.max(1),
    })
}

fn parse_cache_size(text: &str) -> Result<u64, String> {
    match s3syncfs::units::parse_size(text)? {
        0 => Err("the cache size must be more than 0 (leave it out for no limit)".into()),
        bytes => Ok(bytes),
    }
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

fn outcome(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("s3syncfs: {err:#}");
            ExitCode::from(1)
        }
    }
}
