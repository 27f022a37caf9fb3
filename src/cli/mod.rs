//! The command line: subcommands, the settings of a mount (settings.rs), `-o` option
//! lists as mount(8) and fstab give them (option_list.rs), the argv of the
//! `mount.s3syncfs` helper, and the manual pages made from all of it (manual.rs).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod manual;
pub mod option_list;
mod settings;

pub use option_list::expand_options;
pub use settings::{region_of_endpoint, MountArgs, Settings};

#[derive(Parser)]
#[command(
    name = "s3syncfs",
    version,
    about = "Mount an S3 bucket through a local disk cache"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Mount BUCKET[:PREFIX] at MOUNTPOINT (also: -o opt,opt=value ... as in fstab).
    #[command(args_override_self = true)] // a later option wins, as in fstab option lists
    Mount(Box<MountArgs>),
    /// Unmount a mounted s3syncfs; pending uploads finish (bounded) before the daemon exits.
    Unmount { mountpoint: PathBuf },
    /// Show the connection, what waits for the bucket, failures and cache use.
    Status {
        mountpoint: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Compare the mount (or PATH in it) with the bucket, object by object; exit 1 on
    /// any difference that is not a pending upload.
    Verify {
        mountpoint: PathBuf,
        /// A file or directory in the mount (absolute, or relative to MOUNTPOINT).
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Fetch every byte not cached and hash it, instead of trusting versions.
        #[arg(long)]
        deep: bool,
    },
    /// Return once everything written before this call is in the bucket.
    Sync {
        mountpoint: PathBuf,
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Check this host, the endpoint, the credentials, the bucket, the cache dir and
    /// the fstab line, one line each (OK, WARN or FAIL with what to do); exit 1 if
    /// anything FAILs. Takes the same options as mount.
    #[command(args_override_self = true)]
    Doctor(Box<DoctorArgs>),
    /// Write the manual pages and shell completions into DIR (used by scripts/package.sh).
    #[command(hide = true)]
    GenerateManual { dir: PathBuf },
}

#[derive(clap::Args, Clone, Debug)]
pub struct DoctorArgs {
    /// The bucket to check, BUCKET[:PREFIX]; default: the source of each s3syncfs line
    /// of the fstab, with that line's options.
    pub source: Option<String>,
    /// The mount point (its fstab line is checked too).
    pub mountpoint: Option<PathBuf>,
    /// One JSON object per check, in an array.
    #[arg(long)]
    pub json: bool,
    /// The fstab to read.
    #[arg(long, default_value = "/etc/fstab", value_name = "FILE")]
    pub fstab: PathBuf,
    #[command(flatten)]
    pub settings: Settings,
}

/// How the program was called.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// `s3syncfs SUBCOMMAND ...`
    Command(Vec<String>),
    /// As a mount helper: `mount.s3syncfs SOURCE DIR [-sfnv] [-o OPTS]` (mount(8)) or
    /// `s3syncfs SOURCE DIR -o OPTS` (fuse3's mount.fuse for type fuse.s3syncfs).
    Helper { argv: Vec<String>, fake: bool },
}

const SUBCOMMANDS: [&str; 8] = [
    "mount",
    "unmount",
    "status",
    "sync",
    "verify",
    "doctor",
    "generate-manual",
    "help",
];

pub fn invocation(args: Vec<String>) -> Invocation {
    let program = args.first().cloned().unwrap_or_default();
    let name = program.rsplit('/').next().unwrap_or_default();
    let first = args.get(1).map(String::as_str).unwrap_or_default();
    // mount.fuse3 always passes options (mount(8) adds at least `rw`); requiring -o
    // keeps a mistyped subcommand from being taken for a bucket.
    let has_options = args.iter().any(|a| a.starts_with("-o"));
    let helper = name.starts_with("mount.")
        || (args.len() >= 3
            && has_options
            && !first.starts_with('-')
            && !SUBCOMMANDS.contains(&first));
    if !helper {
        return Invocation::Command(args);
    }
    let mut argv = vec!["s3syncfs".to_string(), "mount".to_string()];
    let mut fake = false;
    let mut rest = args.into_iter().skip(1).peekable();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-o" => {
                argv.push(arg);
                argv.extend(rest.next());
            }
            // The filesystem type (mount.fuse3 may pass it): we know our own.
            "-t" => {
                rest.next();
            }
            flags if flags.starts_with('-') && !flags.starts_with("-o") && flags.len() > 1 => {
                // mount(8): -s sloppy, -f fake, -n no mtab, -v verbose.
                fake |= flags.contains('f');
            }
            _ => argv.push(arg),
        }
    }
    Invocation::Helper { argv, fake }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mount_helpers_are_recognised() {
        let helper = invocation(strings(&[
            "/sbin/mount.s3syncfs",
            "bucket:/photos",
            "/mnt/p",
            "-n",
            "-o",
            "rw,endpoint=http://e",
        ]));
        assert_eq!(
            helper,
            Invocation::Helper {
                argv: strings(&[
                    "s3syncfs",
                    "mount",
                    "bucket:/photos",
                    "/mnt/p",
                    "-o",
                    "rw,endpoint=http://e"
                ]),
                fake: false
            }
        );
        let fuse = invocation(strings(&["s3syncfs", "b", "/mnt", "-o", "x"]));
        assert!(matches!(fuse, Invocation::Helper { .. }));
        let fake = invocation(strings(&["mount.s3syncfs", "b", "/mnt", "-f"]));
        assert!(matches!(fake, Invocation::Helper { fake: true, .. }));
        let command = invocation(strings(&["s3syncfs", "status", "/mnt"]));
        assert!(matches!(command, Invocation::Command(_)));
        let typo = invocation(strings(&["s3syncfs", "stauts", "/mnt"]));
        assert!(matches!(typo, Invocation::Command(_)));
        let doctor = invocation(strings(&["s3syncfs", "doctor", "b", "-o", "ro"]));
        assert!(matches!(doctor, Invocation::Command(_)));
    }
}
