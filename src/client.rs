//! The client side of the control socket: `s3syncfs status` and `s3syncfs sync`.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};

use crate::control::{
    Status, SyncProgress, VerifyLine, VerifyRequest, CONTROL_IOCTL, CONTROL_PATH_MAX,
};
use crate::fs::{FindingKind, VerifyReport};
use crate::units::human_bytes;

/// The daemon's control socket, named by an ioctl on the mount's root directory.
fn socket_of(mountpoint: &Path) -> anyhow::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let root = std::fs::File::open(mountpoint)
        .with_context(|| format!("cannot open {}", mountpoint.display()))?;
    let mut buf = [0u8; CONTROL_PATH_MAX];
    // SAFETY: the command's size field is the buffer's length, so the kernel writes
    // at most that many bytes into it.
    let n = unsafe { libc::ioctl(root.as_raw_fd(), CONTROL_IOCTL as _, buf.as_mut_ptr()) };
    if n <= 0 || n as usize > buf.len() {
        bail!(
            "{} is not an s3syncfs mount: give the mount point of a running mount (findmnt -t \
             fuse.s3syncfs lists them)",
            mountpoint.display()
        );
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
        &buf[..n as usize],
    )))
}

/// Sends one request; the answer is read line by line from the returned reader.
fn request(mountpoint: &Path, what: &str, wait: Duration) -> anyhow::Result<BufReader<UnixStream>> {
    let socket = socket_of(mountpoint)?;
    let mut stream = UnixStream::connect(&socket)
        .with_context(|| {
            format!(
                "cannot reach the daemon at {}; the daemon may have exited: see CACHE_DIR/s3syncfs.log or journalctl -t s3syncfs",
                socket.display()
            )
        })?;
    stream.set_read_timeout(Some(wait.max(Duration::from_secs(1))))?;
    stream.write_all(format!("{what}\n").as_bytes())?;
    Ok(BufReader::new(stream))
}

pub fn status_command(mountpoint: &Path, json: bool) -> anyhow::Result<()> {
    let mut line = String::new();
    request(mountpoint, "status", Duration::from_secs(10))?
        .read_line(&mut line)
        .context("the daemon did not answer; the daemon may have exited: see CACHE_DIR/s3syncfs.log or journalctl -t s3syncfs")?;
    let status: Status =
        serde_json::from_str(line.trim()).with_context(|| format!("odd answer {line:?}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", describe(&status, SystemTime::now()));
    }
    Ok(())
}

/// The status in plain words.
pub fn describe(s: &Status, now: SystemTime) -> String {
    let when = |secs: u64| format!("{} ({} ago)", utc(secs), ago(secs, now));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut out = format!("bucket:       {}:{}\n", s.bucket, s.prefix);
    let since = s.connection_since.map(|t| format!(" since {}", when(t)));
    out += &format!(
        "connection:   {}{}\n",
        s.connection,
        since.unwrap_or_default()
    );
    out += &format!(
        "waiting:      {} ({}), {}\n",
        plural(s.files_waiting, "file"),
        human_bytes(s.bytes_waiting),
        plural(s.deletes_waiting, "delete")
    );
    out += &format!(
        "in flight:    {} ({})\n",
        plural(s.uploads_in_flight, "transfer"),
        human_bytes(s.bytes_in_flight)
    );
    out += &format!("failing:      {}\n", plural(s.failing, "transfer"));
    if let Some(f) = &s.last_failure {
        out += &format!(
            "last failure: {} of {} at {}, attempt {}: {}\n",
            f.action,
            f.key,
            when(f.at),
            f.attempts,
            f.error
        );
    }
    let checked = s.remote_checked.map_or("not yet".into(), when);
    let pace = match (s.poll_every, s.poll_dirs) {
        (None, _) => String::new(),
        (Some(every), None) => format!("; the whole bucket every {every} s"),
        (Some(every), Some(1)) => format!("; the 1 directory listed here every {every} s"),
        (Some(every), Some(dirs)) => {
            format!("; the {dirs} directories listed here every {every} s")
        }
    };
    out += &format!("remote:       changes last checked {checked}{pace}\n");
    let last = s.last_success.map_or("none since the mount".into(), when);
    out += &format!("last upload:  {last}\n");
    out += &format!(
        "uploaded:     {} ({}) since the mount\n",
        plural(s.uploaded_files as usize, "file"),
        human_bytes(s.uploaded_bytes)
    );
    out += &format!("conflicts:    {}\n", s.conflicts);
    if !s.held_after_conflicts.is_empty() {
        out += &format!(
            "held:         {} made 3 conflict copies within the hour; uploads wait: {}\n",
            plural(s.held_after_conflicts.len(), "file"),
            s.held_after_conflicts.join(", ")
        );
    }
    let mode = match s.conditional_writes.as_str() {
        "honoured" => "conditional (If-Match / If-None-Match)",
        "ignored" => "checked with a HEAD first (the server ignores conditions)",
        _ => "checked with a HEAD first (server not probed yet)",
    };
    out += &format!("writes:       {mode}\n");
    let limit = s
        .cache_limit
        .map_or("no limit".into(), |l| format!("limit {}", human_bytes(l)));
    out += &format!("cache:        {} ({limit})\n", human_bytes(s.cache_bytes));
    if let Some(since) = s.waiting_for_room_since {
        out += &format!(
            "cache full:   {} waiting for uploads to make room, since {}\n",
            plural(s.writes_waiting_for_room, "write"),
            when(since)
        );
    }
    out += &format!(
        "passthrough:  {} ({} opens)\n",
        s.passthrough, s.direct_opens
    );
    out
}

/// `2026-11-24 19:30:01 UTC`.
pub fn utc(secs: u64) -> String {
    let stamp = aws_smithy_types::DateTime::from_secs(secs as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    format!("{} UTC", stamp.trim_end_matches('Z').replace('T', " "))
}

fn ago(secs: u64, now: SystemTime) -> String {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = now.saturating_sub(secs);
    match d {
        0..=119 => format!("{d} s"),
        120..=7199 => format!("{} min", d / 60),
        _ => format!("{} h", d / 3600),
    }
}

/// Waits until what was pending at the call is in the bucket, or `timeout` passes.
pub fn sync_command(mountpoint: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let reader = request(mountpoint, "sync", timeout)?;
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    let mut last: Option<SyncProgress> = None;
    for line in reader.lines() {
        let line = match line {
            Ok(line) => line,
            // The read timeout is the whole timeout: the daemon answers every 200 ms.
            Err(_) => break,
        };
        let progress: SyncProgress =
            serde_json::from_str(&line).map_err(|_| anyhow!("odd answer {line:?}"))?;
        if let Some(bar) = &bar {
            show(bar, &progress);
        }
        let done = progress.done;
        last = Some(progress);
        if done || Instant::now() >= deadline {
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let last = last.ok_or_else(|| anyhow!("the daemon sent nothing; the daemon may have exited: see CACHE_DIR/s3syncfs.log or journalctl -t s3syncfs"))?;
    if !last.done {
        let why = last.failing.map(|f| format!("; last failure: {f}"));
        bail!(
            "gave up after {} s: {} files ({}) and {} deletes are not in the bucket yet and stay queued{}",
            timeout.as_secs(),
            last.files_left,
            human_bytes(last.bytes_left),
            last.deletes_left,
            why.unwrap_or_default()
        );
    }
    println!(
        "in the bucket: {} files ({}) and {} deletes that were pending",
        last.total_files,
        human_bytes(last.total_bytes),
        last.total_deletes
    );
    Ok(())
}

/// Runs `verify`; Ok(false) when something differs that is not merely pending.
pub fn verify_command(
    mountpoint: &Path,
    path: Option<&Path>,
    json: bool,
    deep: bool,
) -> anyhow::Result<bool> {
    let relative = match path {
        None => String::new(),
        Some(p) if p.is_absolute() => {
            let root = std::path::absolute(mountpoint)?;
            p.strip_prefix(&root)
                .map_err(|_| {
                    anyhow!(
                        "{} is not in {}: give a path inside the mount",
                        p.display(),
                        root.display()
                    )
                })?
                .to_string_lossy()
                .into_owned()
        }
        Some(p) => p.to_string_lossy().into_owned(),
    };
    let asked = serde_json::to_string(&VerifyRequest {
        path: relative,
        deep,
    })?;
    // Deep checks of big trees take long; each progress line resets the wait.
    let reader = request(
        mountpoint,
        &format!("verify {asked}"),
        Duration::from_secs(600),
    )?;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} files")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut report = None;
    for line in reader.lines() {
        let line = line.context("the daemon stopped answering; the daemon may have exited: see CACHE_DIR/s3syncfs.log or journalctl -t s3syncfs")?;
        match serde_json::from_str::<VerifyLine>(&line)? {
            VerifyLine::Progress { done, total } => {
                if let Some(bar) = &bar {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }
            }
            VerifyLine::Report(r) => {
                report = Some(r);
                break;
            }
            VerifyLine::Error(why) => bail!("{why}"),
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.ok_or_else(|| anyhow!("the daemon sent no report; the daemon may have exited: see CACHE_DIR/s3syncfs.log or journalctl -t s3syncfs"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", describe_report(&report));
    }
    Ok(!report.failed())
}

/// The report in plain words: one line per difference, then a summary.
pub fn describe_report(report: &VerifyReport) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let word = match f.kind {
            FindingKind::Pending => "pending",
            FindingKind::MissingInBucket => "missing in bucket",
            FindingKind::MissingInMount => "missing in mount",
            FindingKind::RemoteNewer => "remote newer",
            FindingKind::SizeDiffers => "size differs",
            FindingKind::ContentDiffers => "content differs",
        };
        out += &format!("{word:<18} {}: {}\n", f.path, f.detail);
    }
    let failures = report
        .findings
        .iter()
        .filter(|f| f.kind.is_failure())
        .count();
    let pending = report.findings.len() - failures;
    out += &format!(
        "{} files ({}) compared, {} by content: {} differences, {} pending\n",
        report.files,
        human_bytes(report.bytes),
        report.content_checked,
        failures,
        pending
    );
    out
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} changes {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show(bar: &indicatif::ProgressBar, p: &SyncProgress) {
    let total = (p.total_files + p.total_deletes) as u64;
    let left = (p.files_left + p.deletes_left) as u64;
    bar.set_length(total);
    bar.set_position(total - left.min(total));
    bar.set_message(match &p.failing {
        Some(why) => format!("- retrying: {why}"),
        None => format!("- {} to upload", human_bytes(p.bytes_left)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(ago(990, now), "10 s");
        assert_eq!(ago(100, now), "15 min");
    }
}
