//! `s3syncfs doctor`: checks what a mount needs, one line per check (OK, WARN or FAIL
//! with what to do), and exits 1 if anything FAILs. The host (host.rs), the fstab
//! (fstab.rs), the cache dir (cache.rs), and the endpoint, credentials and bucket
//! (bucket.rs). Every network wait is bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::mount::MountOptions;

mod bucket;
mod cache;
mod fstab;
mod host;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub level: Level,
    pub message: String,
}

#[derive(Default)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: impl Into<String>, level: Level, message: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            level,
            message: message.into(),
        });
    }

    pub fn ok(&mut self, check: impl Into<String>, message: impl Into<String>) {
        self.add(check, Level::Ok, message);
    }

    pub fn warn(&mut self, check: impl Into<String>, message: impl Into<String>) {
        self.add(check, Level::Warn, message);
    }

    pub fn fail(&mut self, check: impl Into<String>, message: impl Into<String>) {
        self.add(check, Level::Fail, message);
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Fail)
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// One line per check: `OK   name: message`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let level = match c.level {
                Level::Ok => "OK",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("{level:<4} {}: {}\n", c.check, c.message));
        }
        out
    }
}

/// A mount to check: from the command line, or from an fstab line.
struct Target {
    /// Where it came from, for the check names: "" for the command line.
    label: String,
    options: MountOptions,
}

/// Longest wait for any one network step.
fn network_bound(options: &MountOptions) -> Duration {
    options.request_timeout.min(Duration::from_secs(10))
}

/// Runs every check; prints the report; Ok(true) when nothing failed.
pub fn run(args: &DoctorArgs) -> anyhow::Result<bool> {
    let mut report = Report::default();
    host::check(&mut report);
    let mountpoint = args.mountpoint.as_deref().map(absolute);
    let lines = fstab::check(
        &mut report,
        &args.fstab,
        args.source.as_deref(),
        mountpoint.as_deref(),
    );
    let mut targets = Vec::new();
    match &args.source {
        Some(source) => {
            let at = mountpoint.clone().unwrap_or_else(|| PathBuf::from("/"));
            match args.settings.options(source, &at) {
                Ok(options) => targets.push(Target {
                    label: String::new(),
                    options,
                }),
                Err(err) => report.fail("options", format!("{err:#}")),
            }
        }
        None => targets.extend(
            lines
                .into_iter()
                .map(|(label, options)| Target { label, options }),
        ),
    }
    if targets.is_empty() && args.source.is_none() {
        report.warn(
            "bucket",
            "no bucket to check: give one (s3syncfs doctor BUCKET[:PREFIX] -o endpoint=...) \
             or add an s3syncfs line to the fstab",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for target in &targets {
        let mut scoped = Report::default();
        if let Some(at) = &mountpoint {
            if args.source.is_some() && !at.is_dir() {
                scoped.warn(
                    "mountpoint",
                    format!(
                        "{} is not a directory: mkdir -p {}",
                        at.display(),
                        at.display()
                    ),
                );
            }
        }
        cache::check(&mut scoped, &target.options);
        runtime.block_on(bucket::check(&mut scoped, &target.options));
        for c in scoped.checks {
            let check = match target.label.as_str() {
                "" => c.check,
                label => format!("{label} {}", c.check),
            };
            report.add(check, c.level, c.message);
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    if args.json {
        println!("{}", serde_json::to_string_pretty(report.checks())?);
    } else {
        print!("{}", report.text());
    }
    Ok(!report.failed())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
