//! The fstab lines of s3syncfs: their syntax (as mount(8) would hand them to the
//! helper), `_netdev` and `nofail`, the mount point; and the mounts they describe.

use std::path::Path;

use clap::Parser;

use super::Report;
use crate::cli::{Cli, Cmd};
use crate::mount::MountOptions;

/// fstab escapes blanks in its fields as octal: `\040` for a space.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_ours(fstype: &str) -> bool {
    fstype == "s3syncfs" || fstype == "fuse.s3syncfs"
}

/// Checks the s3syncfs lines of `fstab` (those for `source` or `mountpoint` when
/// given) and returns the mounts of the good ones, each with a label naming its line.
pub fn check(
    report: &mut Report,
    fstab: &Path,
    source: Option<&str>,
    mountpoint: Option<&Path>,
) -> Vec<(String, MountOptions)> {
    let shown = fstab.display();
    let text = match std::fs::read_to_string(fstab) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            report.ok("fstab", format!("no {shown}: nothing to check there"));
            return Vec::new();
        }
        Err(err) => {
            report.warn("fstab", format!("cannot read {shown}: {err}"));
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_none_or(|f| f.starts_with('#')) {
            continue;
        }
        if fields.len() < 3 || !is_ours(fields[2]) {
            continue;
        }
        let wanted = match (source, mountpoint) {
            (None, None) => true,
            (s, m) => {
                s.is_some_and(|s| unescape(fields[0]) == s)
                    || m.is_some_and(|m| Path::new(&unescape(fields[1])) == m)
            }
        };
        if wanted {
            let label = format!("{shown}:{}", index + 1);
            if let Some(options) = check_line(report, &label, &fields) {
                found.push((label, options));
            }
        }
    }
    if found.is_empty()
        && !report
            .checks()
            .iter()
            .any(|c| c.check.starts_with(&shown.to_string()))
    {
        let which = match (source, mountpoint) {
            (None, None) => "no s3syncfs line".to_string(),
            _ => "no s3syncfs line for this mount".to_string(),
        };
        report.ok("fstab", format!("{which} in {shown}"));
    }
    found
}

/// One line: SOURCE MOUNTPOINT TYPE OPTIONS [DUMP [PASS]].
fn check_line(report: &mut Report, label: &str, fields: &[&str]) -> Option<MountOptions> {
    if !(4..=6).contains(&fields.len()) {
        report.fail(
            label,
            format!(
                "{} fields where fstab wants 4 to 6 (SOURCE MOUNTPOINT TYPE OPTIONS 0 0): \
                 write blanks in a field as \\040",
                fields.len()
            ),
        );
        return None;
    }
    let (source, mountpoint, options) = (unescape(fields[0]), unescape(fields[1]), fields[3]);
    let items: Vec<&str> = options.split(',').map(str::trim).collect();
    let argv = ["s3syncfs", "mount", &source, &mountpoint, "-o", options]
        .map(String::from)
        .to_vec();
    let parsed = crate::cli::expand_options(argv)
        .map_err(|why| why.to_string())
        .and_then(|argv| Cli::try_parse_from(argv).map_err(|e| first_line(&e.to_string())));
    let mount = match parsed {
        Ok(Cli {
            command: Cmd::Mount(args),
        }) => args,
        Ok(_) => return None,
        Err(why) => {
            report.fail(label, format!("mount(8) would fail on this line: {why}"));
            return None;
        }
    };
    let options = match mount.options() {
        Ok(options) => options,
        Err(err) => {
            report.fail(label, format!("mount(8) would fail on this line: {err:#}"));
            return None;
        }
    };
    if !items.contains(&"_netdev") {
        report.fail(
            label,
            "no _netdev: at boot the mount is tried before the network is up, and fails (without \
             nofail, the boot stops). Add _netdev to the options",
        );
        return None;
    }
    if !items.contains(&"nofail") && !items.contains(&"noauto") {
        report.warn(
            label,
            "no nofail: a bucket that cannot be reached at boot holds the boot up. Add nofail \
             unless the host must not run without this mount",
        );
    } else if !Path::new(&mountpoint).is_dir() {
        report.warn(
            label,
            format!("mount point {mountpoint} is not a directory: mkdir -p {mountpoint}"),
        );
    } else {
        report.ok(
            label,
            format!("{source} on {mountpoint}: the line parses, with _netdev"),
        );
    }
    Some(options)
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_read() {
        assert_eq!(unescape("/mnt/my\\040photos"), "/mnt/my photos");
        assert_eq!(unescape("plain\\x"), "plain\\x");
    }

    #[test]
    fn lines_are_judged() {
        let dir = tempfile::tempdir().unwrap();
        let fstab = dir.path().join("fstab");
        let cache = dir.path().join("c");
        std::fs::write(
            &fstab,
            format!(
                "# comment\nUUID=x / ext4 defaults 0 1\n\
                 good:/p {m} s3syncfs _netdev,nofail,endpoint=http://127.0.0.1:1,cache_dir={c} 0 0\n\
                 nonet {m} fuse.s3syncfs endpoint=http://127.0.0.1:1,cache_dir={c} 0 0\n\
                 typo {m} s3syncfs _netdev,endpont=http://x 0 0\n",
                m = dir.path().display(),
                c = cache.display()
            ),
        )
        .unwrap();
        let mut report = Report::default();
        let found = check(&mut report, &fstab, None, None);
        assert_eq!(found.len(), 1, "{}", report.text());
        let text = report.text();
        assert!(text.contains(":3: good:/p on"), "{text}");
        assert!(text.contains(":4: no _netdev"), "{text}");
        assert!(
            text.contains(":5: mount(8) would fail on this line: unknown option \"endpont\""),
            "{text}"
        );
        assert!(report.failed());
    }
}
