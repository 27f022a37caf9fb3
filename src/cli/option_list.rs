//! `-o` option lists as mount(8), fstab and systemd give them: one table of our
//! options, from which the expansion into long options, the table in
//! docs/CONFIGURATION.md and the OPTIONS of mount.s3syncfs(8) are all made.

/// How an `-o` item becomes long options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `name` or `name=1|0` (true/false, yes/no): the flag or nothing.
    Switch,
    /// `name=VALUE`: the flag and the value.
    Valued,
    /// Its own syntax, expanded by `special_flags`; the flag is the main one it sets.
    Special,
}

/// One `-o` option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    /// Other `-o` names for it (s3fs's, mostly).
    pub aliases: &'static [&'static str],
    /// The long option of `s3syncfs mount`, without the dashes.
    pub flag: &'static str,
    pub form: Form,
    pub default: &'static str,
    pub help: &'static str,
}

const fn spec(
    name: &'static str,
    aliases: &'static [&'static str],
    flag: &'static str,
    form: Form,
    default: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        aliases,
        flag,
        form,
        default,
        help,
    }
}

use Form::{Special, Switch, Valued};

/// Every option of ours, in the order the documentation lists them.
#[rustfmt::skip]
pub const OPTIONS: &[OptionSpec] = &[
    spec("endpoint", &["url"], "endpoint", Valued, "AWS S3 in `region`",
        "S3 endpoint URL, `http://` or `https://`"),
    spec("region", &["endpoint_region"], "region", Valued,
        "from a Linode or AWS endpoint name, else `us-east-1`", "SigV4 region"),
    spec("path_style", &["use_path_request_style"], "path-style", Switch, "off",
        "`host/bucket/key` instead of `bucket.host/key`"),
    spec("cache_dir", &[], "cache-dir", Valued,
        "`/var/cache/s3syncfs/BUCKET` as root, else `~/.cache/s3syncfs/BUCKET`",
        "cached data, durable state, log, control socket; one per mount (locked). Must be \
         new, empty, or already an s3syncfs cache dir for this bucket and prefix; owned by \
         the mounting user and not writable by group or others (see SECURITY.md)"),
    spec("use_cache", &[], "cache-root", Valued, "",
        "s3fs's form: a root under which the cache dir is made, `ROOT/BUCKET` \
         (`ROOT/BUCKET+PREFIX` for a prefix); `use_cache=/tmp` makes `/tmp/BUCKET` (a ROOT \
         an earlier version used as the cache dir itself stays it)"),
    spec("cache_size", &[], "cache-size", Valued, "no limit",
        "most disk space cached data may take (`512M`, `10G`); see SEMANTICS.md"),
    spec("cache_full_wait", &[], "cache-full-wait", Valued, "`60` s",
        "when changed data fills `cache_size` (or the disk), how long a write waits for \
         room while no upload makes progress; past it, ENOSPC (see SEMANTICS.md, Cache \
         size)"),
    spec("profile", &[], "profile", Valued, "`default` (or `AWS_PROFILE`)",
        "profile of `~/.aws/credentials` / `~/.aws/config`"),
    spec("credentials_file", &["passwd_file"], "credentials-file", Valued, "none",
        "s3fs-style passwd file, mode 600: `ACCESS:SECRET` or `BUCKET:ACCESS:SECRET` lines"),
    spec("sse", &[], "sse", Valued, "none",
        "server-side encryption of writes: `AES256` (SSE-S3) or `aws:kms`"),
    spec("sse_kms_key_id", &[], "sse-kms-key-id", Valued, "the account's key",
        "KMS key for `sse=aws:kms`"),
    spec("sse_c_key_file", &[], "sse-c-key-file", Valued, "none",
        "SSE-C: file (mode 600) with the 32-byte key, raw or base64; sent on every read and write"),
    spec("use_sse", &[], "sse", Special, "",
        "s3fs's form: `1` (AES256), `kmsid[:ID]`, `custom:PATH`"),
    spec("uid", &[], "uid", Valued, "the mounting user's", "owner of objects without s3fs metadata"),
    spec("gid", &[], "gid", Valued, "the mounting user's group",
        "group of objects without s3fs metadata"),
    spec("umask", &[], "umask", Valued, "`022`",
        "modes of objects without metadata (`0666 & ~umask` files, `0777 & ~umask` dirs)"),
    spec("allow_other", &[], "allow-other", Switch, "off",
        "other users may use the mount; the kernel checks permissions (`default_permissions`)"),
    spec("default_permissions", &[], "default-permissions", Switch,
        "on unless root mounts without `allow_other`",
        "the kernel checks modes and owners; see SEMANTICS.md, Permissions"),
    spec("ro", &[], "read-only", Switch, "off",
        "read-only mount: no write request reaches the bucket (no probe, no uploads)"),
    spec("nonempty", &[], "nonempty", Switch, "off",
        "mount over a directory that is not empty (refused otherwise: the mount hides its files)"),
    spec("no_passthrough", &[], "no-passthrough", Switch, "off",
        "serve every read and write through the daemon, never by kernel passthrough (see \
         SEMANTICS.md, Data)"),
    spec("no_stream_uploads", &[], "no-stream-uploads", Switch, "off",
        "upload a large file only after its close; by default a file written in order \
         through the daemon sends its parts while it is written (see SEMANTICS.md, Data)"),
    spec("poll_interval", &[], "poll-interval", Valued, "`10` s",
        "listing interval for other clients' changes; `0` turns it off"),
    spec("poll_lists_per_minute", &[], "poll-lists-per-minute", Valued, "`60`",
        "LIST requests a minute the polls take at most on average (one per 1,000 keys; ten \
         minutes' worth at once): a larger bucket is listed less often than `poll_interval`; \
         `0`: no bound"),
    spec("metadata_ttl", &[], "metadata-ttl", Valued, "`5` s",
        "an open re-checks a file (one HEAD) confirmed longer ago than this"),
    spec("open_check_wait_ms", &[], "open-check-wait-ms", Valued, "`1000`",
        "how long an open waits for that HEAD; past it the cached version is served and the \
         check finishes in the background (see SEMANTICS.md, Outages)"),
    spec("upload_delay_ms", &[], "upload-delay-ms", Valued, "`500`",
        "a closed file uploads once unchanged this long (at most 100 ms for files of 16 MiB \
         or more; a fifth of it for new files)"),
    spec("fsync", &[], "fsync-remote", Special, "`local`",
        "`remote`: fsync returns once the file is in the bucket"),
    spec("request_timeout", &[], "request-timeout", Valued, "`30` s",
        "bound on each request; uncached reads fail with EIO after it, and at once while the \
         bucket is known offline"),
    spec("unmount_timeout", &[], "unmount-timeout", Valued, "`30` s",
        "time pending uploads get at unmount (and at `systemctl stop`); the rest goes up next \
         mount"),
    spec("metadata_fill", &[], "metadata-fill", Valued, "`0`; all with `allow_other`",
        "of a listing larger than `metadata_wait`, entries whose metadata is fetched (HEAD) \
         in the background"),
    spec("metadata_wait", &[], "metadata-wait", Valued, "`100`",
        "listings with at most this many unknown entries wait for their HEADs"),
    spec("fuse_threads", &[], "fuse-threads", Valued, "`16`", "threads serving FUSE requests"),
    spec("log_level", &[], "log-level", Valued, "`info`",
        "`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter"),
    spec("foreground", &[], "foreground", Switch, "off", "stay in the foreground, log to stderr"),
];

/// Options mount(8), fstab and systemd use that concern the mount as a whole: accepted
/// and ignored (nodev and nosuid are always set).
pub fn is_generic_option(key: &str) -> bool {
    matches!(
        key,
        "_netdev"
            | "nofail"
            | "noauto"
            | "auto"
            | "defaults"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "rw"
            | "noatime"
            | "atime"
            | "relatime"
            | "strictatime"
            | "nodiratime"
            | "diratime"
            | "exec"
            | "noexec"
            | "suid"
            | "nosuid"
            | "dev"
            | "nodev"
            | "async"
            | "comment"
            | "helper"
    ) || key.starts_with("x-")
}

pub fn find(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .find(|o| o.name == key || o.aliases.contains(&key))
}

/// One `-o` item as long options; none for a generic option.
fn option_to_flags(item: &str) -> Result<Vec<String>, String> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (item.trim(), None),
    };
    if key.is_empty() || is_generic_option(key) {
        return Ok(Vec::new());
    }
    let Some(option) = find(key) else {
        return Err(format!(
            "unknown option {key:?} (see s3syncfs mount --help; generic mount options such as _netdev are accepted)"
        ));
    };
    let flag = format!("--{}", option.flag);
    match option.form {
        Switch => match value {
            None | Some("1" | "true" | "yes") => Ok(vec![flag]),
            Some("0" | "false" | "no") => Ok(Vec::new()),
            Some(v) => Err(format!("option {key} takes no value (got {v:?})")),
        },
        Valued => match value {
            Some(v) if !v.is_empty() => Ok(vec![flag, v.to_string()]),
            _ => Err(format!("option {key} needs a value: {key}=...")),
        },
        Special => special_flags(option.name, value),
    }
}

fn special_flags(name: &str, value: Option<&str>) -> Result<Vec<String>, String> {
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    match name {
        // s3fs: use_sse[=1], use_sse=kmsid[:ID] (or k[:ID]), use_sse=custom:PATH (or c:PATH).
        "use_sse" => match value.unwrap_or("1") {
            "1" => Ok(owned(&["--sse", "AES256"])),
            "kmsid" | "k" => Ok(owned(&["--sse", "aws:kms"])),
            v => match v.split_once(':') {
                Some(("kmsid" | "k", id)) => {
                    Ok(owned(&["--sse", "aws:kms", "--sse-kms-key-id", id]))
                }
                Some(("custom" | "c", path)) => Ok(owned(&["--sse-c-key-file", path])),
                _ => Err(format!("use_sse={v} is not 1, kmsid[:ID] or custom:PATH")),
            },
        },
        _ => match value {
            Some("remote") => Ok(owned(&["--fsync-remote"])),
            Some("local") => Ok(Vec::new()),
            _ => Err("option fsync takes remote or local".into()),
        },
    }
}

/// Replaces every `-o LIST` / `-oLIST` in `argv` with the long options it stands for.
pub fn expand_options(argv: Vec<String>) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut items = argv.into_iter();
    while let Some(arg) = items.next() {
        let list = if arg == "-o" {
            items.next().ok_or("-o needs a list of options")?
        } else if let Some(rest) = arg.strip_prefix("-o").filter(|_| !arg.starts_with("--")) {
            rest.to_string()
        } else {
            out.push(arg);
            continue;
        };
        for item in list.split(',') {
            out.extend(option_to_flags(item)?);
        }
    }
    Ok(out)
}

/// The options table of docs/CONFIGURATION.md.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| `-o` option | command line | default | what it does |\n| --- | --- | --- | --- |\n",
    );
    for o in OPTIONS {
        let mut names = format!("`{}`", o.name);
        for alias in o.aliases {
            names.push_str(&format!(", `{alias}`"));
        }
        out.push_str(&format!(
            "| {names} | `--{}` | {} | {} |\n",
            o.flag, o.default, o.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn option_lists_become_long_options_and_generic_ones_vanish() {
        let argv = strings(&[
            "s3syncfs",
            "mount",
            "b",
            "/mnt",
            "-o",
            "_netdev,nofail,x-systemd.automount,endpoint=http://h:9000,path_style,cache_size=1G,ro,fsync=remote,poll_lists_per_minute=120,open_check_wait_ms=250",
        ]);
        assert_eq!(
            expand_options(argv).unwrap(),
            strings(&[
                "s3syncfs",
                "mount",
                "b",
                "/mnt",
                "--endpoint",
                "http://h:9000",
                "--path-style",
                "--cache-size",
                "1G",
                "--read-only",
                "--fsync-remote",
                "--poll-lists-per-minute",
                "120",
                "--open-check-wait-ms",
                "250"
            ])
        );
        let err = expand_options(strings(&["x", "-o", "bogus=1"])).unwrap_err();
        assert!(err.contains("unknown option \"bogus\""), "{err}");
        assert!(expand_options(strings(&["x", "-o", "endpoint"])).is_err());
        let sse = expand_options(strings(&["x", "-o", "use_sse=kmsid:K,url=http://e"]));
        assert_eq!(
            sse.unwrap(),
            strings(&[
                "x",
                "--sse",
                "aws:kms",
                "--sse-kms-key-id",
                "K",
                "--endpoint",
                "http://e"
            ])
        );
    }

    /// CONFIGURATION.md shows the table made from `OPTIONS`; when an option changes,
    /// paste the table this test prints.
    #[test]
    fn configuration_md_lists_exactly_the_options() {
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/CONFIGURATION.md's option table differs from src/cli/option_list.rs; \
             replace it with:\n\n{table}"
        );
    }

    /// Every `-o` option names a real long option of `mount`, and every long option of
    /// `mount` has its `-o` form.
    #[test]
    fn the_table_and_the_mount_command_agree() {
        let cli = <super::super::Cli as clap::CommandFactory>::command();
        let mount = cli.find_subcommand("mount").unwrap();
        let longs: Vec<&str> = mount
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect();
        for o in OPTIONS {
            assert!(
                longs.contains(&o.flag),
                "-o {} names no --{}",
                o.name,
                o.flag
            );
        }
        for long in longs {
            let covered = OPTIONS.iter().any(|o| o.flag == long) || long == "help";
            assert!(covered, "--{long} has no -o form in OPTIONS");
        }
    }
}
