//! The `s3syncfs` command: mount (daemonized or in the foreground) and unmount.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use s3syncfs::cli::{self, Cli, Cmd, MountArgs};
use s3syncfs::client;
use s3syncfs::{cache_dir, daemon, mount, notify};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (argv, helper) = match cli::invocation(args) {
        cli::Invocation::Command(argv) => (argv, false),
        cli::Invocation::Helper { fake: true, .. } => return ExitCode::SUCCESS,
        cli::Invocation::Helper { argv, .. } => (argv, true),
    };
    // mount(8) expects 32 from a helper whose mount failed.
    let failed = if helper { 32 } else { 1 };
    let argv = match cli::expand_options(argv) {
        Ok(argv) => argv,
        Err(why) => {
            eprintln!("s3syncfs: {why}");
            return ExitCode::from(failed);
        }
    };
    let parsed = match Cli::try_parse_from(&argv) {
        Ok(parsed) => parsed,
        Err(err) if helper => {
            eprintln!("s3syncfs: {}", err.kind());
            let _ = err.print();
            return ExitCode::from(failed);
        }
        Err(err) => err.exit(),
    };
    match parsed.command {
        Cmd::Mount(args) => match mount_command(*args, &argv) {
            ExitCode::SUCCESS => ExitCode::SUCCESS,
            _ => ExitCode::from(failed),
        },
        Cmd::Unmount { mountpoint } => unmount_command(&mountpoint),
        Cmd::Status { mountpoint, json } => outcome(client::status_command(&mountpoint, json)),
        Cmd::Verify {
            mountpoint,
            path,
            json,
            deep,
        } => match client::verify_command(&mountpoint, path.as_deref(), json, deep) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => outcome(Err(err)),
        },
        Cmd::Sync {
            mountpoint,
            timeout,
        } => outcome(client::sync_command(
            &mountpoint,
            Duration::from_secs(timeout),
        )),
        Cmd::Doctor(args) => match s3syncfs::doctor::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => outcome(Err(err)),
        },
        Cmd::GenerateManual { dir } => outcome(cli::manual::write_or_explain(&dir)),
    }
}

fn mount_command(args: MountArgs, argv: &[String]) -> ExitCode {
    if args.daemon_child {
        // First, before this process opens anything of its own.
        daemon::close_inherited();
    }
    daemon::private_umask();
    if !args.settings.foreground && !args.daemon_child {
        return daemonize(&args, argv);
    }
    s3syncfs::logging::init(&args.settings.log_level, args.daemon_child);
    // Many FUSE and I/O threads each get a malloc arena by default; a few suffice and
    // keep the resident memory of a long-running daemon small. A fixed mmap threshold
    // keeps big buffers (FUSE request buffers, upload parts, fetched ranges) out of the
    // arenas: glibc would otherwise raise it after the first free and keep every part
    // buffer resident for good.
    // SAFETY: mallopt only tunes the allocator, before any thread starts.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
    let options = match args.options() {
        Ok(o) => o,
        Err(err) => {
            eprintln!("s3syncfs: {err:#}");
            return ExitCode::from(1);
        }
    };
    if args.daemon_child {
        // Every path is absolute now.
        daemon::leave_working_dir();
    }
    let report_to_parent = args.daemon_child;
    let watched = notify::Watched {
        mountpoint: options.mountpoint.clone(),
        cache_dir: options.cache_dir.clone(),
        announce_ready: !report_to_parent,
        unmount_timeout: options.unmount_timeout,
    };
    let mountpoint = options.mountpoint.clone();
    let ready = move |result: Result<(), String>| {
        if let (Ok(()), Some(notifier)) = (&result, notify::Notifier::from_env()) {
            notify::start(notifier, watched);
        }
        if !report_to_parent {
            return;
        }
        match result {
            // The session starts serving after this returns: READY once it answers, so
            // mount(8) and an fstab mount unit return only then.
            Ok(()) => {
                let waiter = std::thread::Builder::new()
                    .name("s3syncfs-ready".into())
                    .spawn(move || {
                        if !notify::answers_within(&mountpoint, READY_BOUND) {
                            tracing::warn!("the new mount does not answer a stat yet");
                        }
                        report_line("READY");
                    });
                if waiter.is_err() {
                    report_line("READY");
                }
            }
            Err(why) => report_line(&format!("ERROR {why}")),
        }
    };
    // A line for the user before the mount is ready (waiting for the cache dir's
    // previous daemon): the daemonizing parent prints what its child reports.
    let notice = move |line: &str| {
        if report_to_parent {
            tracing::info!("{line}");
            let mut out = std::io::stdout();
            let _ = writeln!(out, "NOTE {line}");
            let _ = out.flush();
        } else {
            eprintln!("s3syncfs: {line}");
        }
    };
    match mount::run(options, &notice, ready) {
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

/// Longest wait for the new mount to answer before the daemon reports it ready anyway.
const READY_BOUND: Duration = Duration::from_secs(10);

/// Tells the daemonizing parent how the mount went; stdout is not used after that.
fn report_line(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    detach_stdout();
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
fn daemonize(args: &MountArgs, argv: &[String]) -> ExitCode {
    let options = match args.options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("s3syncfs: {err:#}");
            return ExitCode::from(1);
        }
    };
    // The log goes into the cache dir: it must be ours before anything is written.
    if let Err(err) = cache_dir::prepare(&options.cache_dir, &mount::cache_owner(&options)) {
        eprintln!("s3syncfs: {err:#}");
        return ExitCode::from(1);
    }
    let log_path = options.cache_dir.join("s3syncfs.log");
    let log = match cache_dir::open_file(&log_path, std::fs::OpenOptions::new().append(true), true)
    {
        Ok(f) => f,
        Err(err) => {
            eprintln!("s3syncfs: cannot write log {}: {err}", log_path.display());
            return ExitCode::from(1);
        }
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("s3syncfs"));
    let mut argv: Vec<String> = argv.iter().skip(1).cloned().collect();
    argv.push("--daemon-child".into());
    let mut command = Command::new(exe);
    command
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // The watchdog is the child's to feed once it is the main process (below).
        .env_remove("WATCHDOG_PID");
    daemon::new_session(&mut command);
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(err) => {
            eprintln!("s3syncfs: cannot start the daemon: {err}; try --foreground to see it run");
            return ExitCode::from(1);
        }
    };
    // NOTE lines come first (each said once), then READY or ERROR; every wait in the
    // child before it reports is bounded.
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let mut out = BufReader::new(out);
        loop {
            line.clear();
            if !matches!(out.read_line(&mut line), Ok(n) if n > 0) {
                break;
            }
            match line.trim_end().strip_prefix("NOTE ") {
                Some(note) => eprintln!("s3syncfs: {note}"),
                None => break,
            }
        }
    }
    match line
        .trim_end()
        .split_once(' ')
        .map_or((line.trim_end(), ""), |(a, b)| (a, b))
    {
        ("READY", _) => {
            // Under a Type=notify unit the child, which stays, becomes the main process.
            if let Some(notifier) = notify::Notifier::from_env() {
                notifier.send(&format!("READY=1\nMAINPID={}", child.id()));
            }
            ExitCode::SUCCESS
        }
        ("ERROR", why) => {
            eprintln!("s3syncfs: {why}");
            let _ = child.wait();
            ExitCode::from(1)
        }
        _ => {
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(err) => err.to_string(),
            };
            eprintln!(
                "s3syncfs: the daemon exited ({status}) before the mount was ready; see {}",
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
            eprintln!("s3syncfs: cannot run fusermount3: {err}; install the fuse3 package");
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
