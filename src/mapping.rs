//! Object key <-> path, and user metadata <-> attributes (s3fs-compatible headers).
//!
//! Keys that cannot be file names (`.`/`..` segments, `//`, NUL, components over
//! 255 bytes) are refused here so no remote key can ever reach a local path.

use std::time::SystemTime;

use crate::store::Metadata;

mod values;

use values::for_log;
pub use values::{format_mtime, parse_id, parse_mode, parse_mtime, parse_rdev, MTIME_LIMIT_SECS};

pub const S_IFMT: u32 = libc::S_IFMT;
pub const S_IFREG: u32 = libc::S_IFREG;
pub const S_IFDIR: u32 = libc::S_IFDIR;
pub const S_IFLNK: u32 = libc::S_IFLNK;
/// The special files s3fs stores as zero-byte objects with these type bits.
const SPECIAL_TYPES: [u32; 4] = [libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFCHR, libc::S_IFBLK];

/// The part of the bucket this mount shows: `""` or a prefix ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Accepts `photos`, `photos/`, `/photos/2024` and makes them `photos/2024/`.
    pub fn new(prefix: &str) -> Result<KeyPrefix, String> {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(KeyPrefix(String::new()));
        }
        for component in trimmed.split('/') {
            if !is_valid_name(component) {
                return Err(format!(
                    "prefix {prefix:?} has an unusable component {component:?}"
                ));
            }
        }
        Ok(KeyPrefix(format!("{trimmed}/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a file at `path` (components relative to the mount root).
    pub fn file_key(&self, path: &[&str]) -> String {
        format!("{}{}", self.0, path.join("/"))
    }

    /// The prefix that holds a directory's children; also its marker key (`dir/`).
    pub fn dir_prefix(&self, path: &[&str]) -> String {
        if path.is_empty() {
            self.0.clone()
        } else {
            format!("{}{}/", self.0, path.join("/"))
        }
    }
}

/// Whether one path component can be a file name on Linux.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.len() <= 255 && !name.contains('\0')
}

/// What a key under a directory prefix stands for in that directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildKey<'a> {
    /// The directory's own marker object (`dir/`).
    SelfMarker,
    /// A file directly in the directory.
    File(&'a str),
    /// A subdirectory (from a common prefix or a deeper key).
    Dir(&'a str),
    /// Cannot be shown: the reason, for the log.
    Unusable(&'static str),
}

/// Classifies `key`, which must start with `dir_prefix`.
pub fn classify_child<'a>(dir_prefix: &str, key: &'a str) -> ChildKey<'a> {
    let Some(rest) = key.strip_prefix(dir_prefix) else {
        return ChildKey::Unusable("outside the directory");
    };
    if rest.is_empty() {
        return ChildKey::SelfMarker;
    }
    let (name, is_dir) = match rest.find('/') {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    };
    if name.is_empty() {
        return ChildKey::Unusable("empty path segment (//)");
    }
    if !is_valid_name(name) {
        return ChildKey::Unusable("segment is ., .., over 255 bytes or holds NUL");
    }
    if is_dir {
        ChildKey::Dir(name)
    } else {
        ChildKey::File(name)
    }
}

/// The attributes an object's metadata can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAttrs {
    /// Full st_mode, with the file type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    /// A device's number (`x-amz-meta-rdev`); 0 for anything else. s3fs keeps no
    /// device number (its mknod drops it): this header is ours, and s3fs ignores it.
    pub rdev: u32,
}

/// Mount-wide attributes for objects that carry none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultAttrs {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
}

impl Default for DefaultAttrs {
    fn default() -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        DefaultAttrs {
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    }
}

pub fn attrs_to_metadata(attrs: &StoredAttrs) -> Metadata {
    let mut metadata = Metadata::from([
        ("mode".to_string(), attrs.mode.to_string()),
        ("uid".to_string(), attrs.uid.to_string()),
        ("gid".to_string(), attrs.gid.to_string()),
        ("mtime".to_string(), format_mtime(attrs.mtime)),
    ]);
    if attrs.rdev != 0 {
        metadata.insert("rdev".to_string(), attrs.rdev.to_string());
    }
    metadata
}

/// A metadata value that was there but could not be used: the default was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The header's name without `x-amz-meta-`.
    pub name: &'static str,
    /// The value as another client left it, escaped and cut short for a log line.
    pub value: String,
}

/// What an object's metadata says, and which of its values were unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAttrs {
    pub attrs: StoredAttrs,
    pub rejected: Vec<Rejected>,
}

/// Reads s3fs headers (`mode`, `uid`, `gid`, `mtime`) and rclone's fractional `mtime`;
/// whatever is missing comes from `defaults` (the mtime from `last_modified`), with
/// `is_dir` picking the type. A value present but unusable (another client's
/// garbage, out of range) also takes the default and is listed in `rejected`.
pub fn attrs_from_metadata(
    metadata: &Metadata,
    defaults: &DefaultAttrs,
    is_dir: bool,
    last_modified: SystemTime,
) -> ReadAttrs {
    let mut rejected = Vec::new();
    let mode = read(metadata, "mode", parse_mode, &mut rejected).map(u32::from);
    let uid = read(metadata, "uid", parse_id, &mut rejected);
    let gid = read(metadata, "gid", parse_id, &mut rejected);
    let mtime = read(metadata, "mtime", parse_mtime, &mut rejected).unwrap_or(last_modified);
    let rdev = read(metadata, "rdev", parse_rdev, &mut rejected);
    let mode = match mode {
        Some(mode) if is_dir => S_IFDIR | (mode & 0o7777),
        Some(mode) if mode & S_IFMT == S_IFLNK => S_IFLNK | (mode & 0o7777),
        Some(mode) if SPECIAL_TYPES.contains(&(mode & S_IFMT)) => mode,
        Some(mode) => S_IFREG | (mode & 0o7777),
        None if is_dir => S_IFDIR | defaults.dir_mode,
        None => S_IFREG | defaults.file_mode,
    };
    ReadAttrs {
        attrs: StoredAttrs {
            mode,
            uid: uid.unwrap_or(defaults.uid),
            gid: gid.unwrap_or(defaults.gid),
            mtime,
            // Only a device has a number: one on any other object means nothing.
            rdev: match mode & S_IFMT {
                libc::S_IFCHR | libc::S_IFBLK => rdev.unwrap_or(0),
                _ => 0,
            },
        },
        rejected,
    }
}

/// The value of header `name` if it is there and `parse` takes it; one it refuses
/// goes to `rejected`.
fn read<T>(
    metadata: &Metadata,
    name: &'static str,
    parse: impl Fn(&str) -> Option<T>,
    rejected: &mut Vec<Rejected>,
) -> Option<T> {
    let value = metadata.get(name)?;
    let parsed = parse(value);
    if parsed.is_none() {
        rejected.push(Rejected {
            name,
            value: for_log(value),
        });
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn defaults() -> DefaultAttrs {
        DefaultAttrs {
            uid: 1000,
            gid: 100,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    }

    #[test]
    fn prefix_is_normalised() {
        assert_eq!(KeyPrefix::new("").unwrap().as_str(), "");
        assert_eq!(KeyPrefix::new("/").unwrap().as_str(), "");
        assert_eq!(KeyPrefix::new("photos").unwrap().as_str(), "photos/");
        assert_eq!(
            KeyPrefix::new("/photos/2024/").unwrap().as_str(),
            "photos/2024/"
        );
        assert!(KeyPrefix::new("a/../b").is_err());
        assert!(KeyPrefix::new("a//b").is_err());
    }

    #[test]
    fn keys_are_prefix_plus_path() {
        let prefix = KeyPrefix::new("p").unwrap();
        assert_eq!(prefix.file_key(&["a", "b.txt"]), "p/a/b.txt");
        assert_eq!(prefix.dir_prefix(&["a"]), "p/a/");
        assert_eq!(prefix.dir_prefix(&[]), "p/");
        let root = KeyPrefix::new("").unwrap();
        assert_eq!(root.file_key(&["x"]), "x");
        assert_eq!(root.dir_prefix(&[]), "");
    }

    #[test]
    fn children_are_classified() {
        assert_eq!(classify_child("d/", "d/"), ChildKey::SelfMarker);
        assert_eq!(classify_child("d/", "d/f"), ChildKey::File("f"));
        assert_eq!(classify_child("d/", "d/s/"), ChildKey::Dir("s"));
        assert_eq!(classify_child("d/", "d/s/deep/x"), ChildKey::Dir("s"));
        assert_eq!(classify_child("", "top"), ChildKey::File("top"));
        assert!(matches!(
            classify_child("d/", "d//x"),
            ChildKey::Unusable(_)
        ));
        assert!(matches!(
            classify_child("d/", "d/../x"),
            ChildKey::Unusable(_)
        ));
        assert!(matches!(classify_child("d/", "d/."), ChildKey::Unusable(_)));
        assert!(matches!(
            classify_child("d/", "d/a\0b"),
            ChildKey::Unusable(_)
        ));
        let long = format!("d/{}", "x".repeat(256));
        assert!(matches!(classify_child("d/", &long), ChildKey::Unusable(_)));
        assert!(matches!(classify_child("d/", "e/x"), ChildKey::Unusable(_)));
    }

    #[test]
    fn metadata_round_trips() {
        let attrs = StoredAttrs {
            mode: S_IFREG | 0o640,
            uid: 12,
            gid: 34,
            mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            rdev: 0,
        };
        let metadata = attrs_to_metadata(&attrs);
        assert_eq!(metadata["mode"], (S_IFREG | 0o640).to_string());
        let back = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH).attrs;
        assert_eq!(back, attrs);
    }

    #[test]
    fn symlink_mode_is_kept() {
        let metadata = Metadata::from([("mode".into(), (S_IFLNK | 0o777).to_string())]);
        let attrs = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH).attrs;
        assert_eq!(attrs.mode, S_IFLNK | 0o777);
    }

    #[test]
    fn special_file_types_are_kept_and_only_devices_have_a_number() {
        let read = |mode: u32, rdev: &str| {
            let metadata = Metadata::from([
                ("mode".into(), mode.to_string()),
                ("rdev".into(), rdev.to_string()),
            ]);
            attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH)
        };
        for kind in SPECIAL_TYPES {
            assert_eq!(read(kind | 0o640, "0").attrs.mode, kind | 0o640);
        }
        assert_eq!(read(libc::S_IFCHR | 0o600, "259").attrs.rdev, 259);
        assert_eq!(read(libc::S_IFBLK | 0o600, "2049").attrs.rdev, 2049);
        assert_eq!(read(libc::S_IFIFO | 0o600, "259").attrs.rdev, 0);
        assert_eq!(read(S_IFREG | 0o600, "259").attrs.rdev, 0);
        let garbage = read(libc::S_IFCHR | 0o600, "4294967296");
        assert_eq!(garbage.attrs.rdev, 0);
        assert_eq!(garbage.rejected[0].name, "rdev");
        let mut device = read(libc::S_IFCHR | 0o600, "259").attrs;
        device.mtime = UNIX_EPOCH;
        assert_eq!(attrs_to_metadata(&device)["rdev"], "259");
        assert!(!attrs_to_metadata(&read(S_IFREG, "0").attrs).contains_key("rdev"));
    }

    #[test]
    fn missing_metadata_uses_defaults_and_last_modified() {
        let lm = UNIX_EPOCH + Duration::from_secs(42);
        let file = attrs_from_metadata(&Metadata::new(), &defaults(), false, lm);
        assert!(file.rejected.is_empty());
        let file = file.attrs;
        assert_eq!(file.mode, S_IFREG | 0o644);
        assert_eq!((file.uid, file.gid, file.mtime), (1000, 100, lm));
        let dir = attrs_from_metadata(&Metadata::new(), &defaults(), true, lm).attrs;
        assert_eq!(dir.mode, S_IFDIR | 0o755);
    }

    #[test]
    fn rclone_fractional_mtime_is_read() {
        let metadata = Metadata::from([("mtime".into(), "1700000000.5".into())]);
        let attrs = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH).attrs;
        assert_eq!(
            attrs.mtime,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
    }

    /// Attributes read from one hostile header beside well-formed others.
    fn with(name: &str, value: &str) -> ReadAttrs {
        let mut metadata = Metadata::from([
            ("mode".into(), (S_IFREG | 0o600).to_string()),
            ("uid".into(), "12".into()),
            ("gid".into(), "34".into()),
            ("mtime".into(), "1700000000".into()),
        ]);
        metadata.insert(name.into(), value.into());
        attrs_from_metadata(
            &metadata,
            &defaults(),
            false,
            UNIX_EPOCH + Duration::from_secs(7),
        )
    }

    fn assert_rejected(name: &str, value: &str) {
        let read = with(name, value);
        let expected = StoredAttrs {
            mode: if name == "mode" {
                S_IFREG | 0o644
            } else {
                S_IFREG | 0o600
            },
            uid: if name == "uid" { 1000 } else { 12 },
            gid: if name == "gid" { 100 } else { 34 },
            mtime: if name == "mtime" {
                UNIX_EPOCH + Duration::from_secs(7)
            } else {
                UNIX_EPOCH + Duration::from_secs(1_700_000_000)
            },
            rdev: 0,
        };
        assert_eq!(read.attrs, expected, "{name}: {value:?}");
        assert_eq!(read.rejected.len(), 1, "{name}: {value:?}");
        assert_eq!(read.rejected[0].name, name);
    }

    #[test]
    fn a_huge_mtime_takes_last_modified() {
        assert_rejected("mtime", "1e20");
        assert_rejected("mtime", "100000000000000000000");
    }

    #[test]
    fn an_mtime_of_two_to_the_64_takes_last_modified() {
        assert_rejected("mtime", "18446744073709551616");
        assert_rejected("mtime", "18446744073709551615");
        assert_rejected("mtime", "-18446744073709551616");
    }

    #[test]
    fn an_mtime_past_the_state_range_takes_last_modified() {
        assert_rejected("mtime", &(MTIME_LIMIT_SECS + 1).to_string());
        assert_rejected("mtime", &format!("-{}", MTIME_LIMIT_SECS + 1));
        let edge = with("mtime", &format!("-{MTIME_LIMIT_SECS}.999999999"));
        assert!(edge.rejected.is_empty());
        let edge = with("mtime", &format!("{MTIME_LIMIT_SECS}.999999999"));
        assert!(edge.rejected.is_empty());
    }

    #[test]
    fn nan_and_infinite_mtimes_take_last_modified() {
        for value in ["NaN", "nan", "inf", "-inf", "infinity", "+Inf"] {
            assert_rejected("mtime", value);
        }
    }

    #[test]
    fn exponent_forms_take_last_modified() {
        for value in ["1e9", "1E9", "1.7e9", "17e-1", "0x10"] {
            assert_rejected("mtime", value);
        }
    }

    #[test]
    fn malformed_mtimes_take_last_modified() {
        let values = [
            "abc", "", " ", "-", ".", "1.", ".5", "1.5.5", "--1", "- 1", "1 2", "1,5", "+5",
            "12\0", "١٢٣", // Arabic-Indic digits are not ASCII digits
        ];
        for value in values {
            assert_rejected("mtime", value);
        }
        assert_rejected("mtime", &"1".repeat(100));
        assert_rejected("mtime", &format!("1.{}", "0".repeat(100)));
    }

    #[test]
    fn a_negative_mtime_is_before_1970() {
        assert_eq!(
            with("mtime", "-1").attrs.mtime,
            UNIX_EPOCH - Duration::from_secs(1)
        );
        // s3fs's tv_sec.tv_nsec: the fraction adds to the floored seconds.
        assert_eq!(
            with("mtime", "-2.500000000").attrs.mtime,
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(
            with("mtime", "-1000000000").attrs.mtime,
            UNIX_EPOCH - Duration::from_secs(1_000_000_000)
        );
    }

    #[test]
    fn a_mode_past_16_bits_takes_the_default() {
        assert_rejected("mode", "99999999999");
        assert_rejected("mode", "65536");
        assert_eq!(with("mode", "65535").attrs.mode, S_IFREG | 0o7777);
    }

    #[test]
    fn garbage_modes_take_the_default() {
        for value in ["rwx", "-1", "0o644", "0x1a4", "644.0", "", "+420", "1e3"] {
            assert_rejected("mode", value);
        }
    }

    #[test]
    fn negative_or_huge_ids_take_the_defaults() {
        let values = [
            "-5",
            "-1",
            "4294967295",
            "4294967296",
            "99999999999999999999999",
            "abc",
            "1.5",
        ];
        for value in values {
            assert_rejected("uid", value);
            assert_rejected("gid", value);
        }
        assert_eq!(with("uid", "4294967294").attrs.uid, 4_294_967_294);
        assert_eq!(with("gid", "0").attrs.gid, 0);
    }

    #[test]
    fn a_rejected_value_is_escaped_and_cut_for_the_log() {
        let read = with("mtime", &format!("\u{1b}[31m\n{}", "x".repeat(200)));
        let shown = &read.rejected[0].value;
        assert!(shown.chars().count() <= 80, "{shown}");
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\n'),
            "{shown}"
        );
        assert_eq!(with("uid", "a\nb").rejected[0].value, "a\\nb");
    }

    #[test]
    fn a_directory_ignores_file_type_bits() {
        let metadata = Metadata::from([("mode".into(), (S_IFLNK | 0o700).to_string())]);
        let attrs = attrs_from_metadata(&metadata, &defaults(), true, UNIX_EPOCH).attrs;
        assert_eq!(attrs.mode, S_IFDIR | 0o700);
    }
}
