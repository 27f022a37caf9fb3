//! Object key <-> path, and user metadata <-> attributes (s3fs-compatible headers).
//!
//! Keys that cannot be file names (`.`/`..` segments, `//`, NUL, components over
//! 255 bytes) are refused here so no remote key can ever reach a local path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::Metadata;

pub const S_IFMT: u32 = libc::S_IFMT;
pub const S_IFREG: u32 = libc::S_IFREG;
pub const S_IFDIR: u32 = libc::S_IFDIR;
pub const S_IFLNK: u32 = libc::S_IFLNK;

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
    let secs = attrs
        .mtime
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Metadata::from([
        ("mode".to_string(), attrs.mode.to_string()),
        ("uid".to_string(), attrs.uid.to_string()),
        ("gid".to_string(), attrs.gid.to_string()),
        ("mtime".to_string(), secs.to_string()),
    ])
}

/// Reads s3fs headers (`mode`, `uid`, `gid`, `mtime`) and rclone's fractional `mtime`;
/// whatever is missing or unreadable comes from `defaults`, with `is_dir` picking the type.
pub fn attrs_from_metadata(
    metadata: &Metadata,
    defaults: &DefaultAttrs,
    is_dir: bool,
    last_modified: SystemTime,
) -> StoredAttrs {
    let number = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let default_mode = if is_dir {
        S_IFDIR | defaults.dir_mode
    } else {
        S_IFREG | defaults.file_mode
    };
    let mode = match number("mode") {
        Some(mode) if is_dir => S_IFDIR | (mode & 0o7777),
        Some(mode) if mode & S_IFMT == S_IFLNK => mode,
        Some(mode) => S_IFREG | (mode & 0o7777),
        None => default_mode,
    };
    let mtime = metadata
        .get("mtime")
        .and_then(|v| parse_epoch(v))
        .unwrap_or(last_modified);
    StoredAttrs {
        mode,
        uid: number("uid").unwrap_or(defaults.uid),
        gid: number("gid").unwrap_or(defaults.gid),
        mtime,
    }
}

/// Epoch seconds, whole (s3fs) or fractional (rclone).
fn parse_epoch(value: &str) -> Option<SystemTime> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let metadata = attrs_to_metadata(&attrs);
        assert_eq!(metadata["mode"], (S_IFREG | 0o640).to_string());
        let back = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH);
        assert_eq!(back, attrs);
    }

    #[test]
    fn symlink_mode_is_kept() {
        let metadata = Metadata::from([("mode".into(), (S_IFLNK | 0o777).to_string())]);
        let attrs = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH);
        assert_eq!(attrs.mode, S_IFLNK | 0o777);
    }

    #[test]
    fn missing_metadata_uses_defaults_and_last_modified() {
        let lm = UNIX_EPOCH + Duration::from_secs(42);
        let file = attrs_from_metadata(&Metadata::new(), &defaults(), false, lm);
        assert_eq!(file.mode, S_IFREG | 0o644);
        assert_eq!((file.uid, file.gid, file.mtime), (1000, 100, lm));
        let dir = attrs_from_metadata(&Metadata::new(), &defaults(), true, lm);
        assert_eq!(dir.mode, S_IFDIR | 0o755);
    }

    #[test]
    fn rclone_fractional_mtime_is_read() {
        let metadata = Metadata::from([("mtime".into(), "1700000000.5".into())]);
        let attrs = attrs_from_metadata(&metadata, &defaults(), false, UNIX_EPOCH);
        assert_eq!(
            attrs.mtime,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
    }

    #[test]
    fn garbage_metadata_falls_back() {
        let metadata = Metadata::from([
            ("mode".into(), "rwx".into()),
            ("uid".into(), "-1".into()),
            ("mtime".into(), "NaN".into()),
        ]);
        let lm = UNIX_EPOCH + Duration::from_secs(7);
        let attrs = attrs_from_metadata(&metadata, &defaults(), false, lm);
        assert_eq!(attrs.mode, S_IFREG | 0o644);
        assert_eq!(attrs.uid, 1000);
        assert_eq!(attrs.mtime, lm);
    }
}
