//! Seeded random inputs for every parser that takes bucket content: metadata values,
//! keys, listing escapes. Each test prints its seed; `S3SYNCFS_FUZZ_SEED=N` repeats a
//! run. Bounded to 2,000 cases a test so it stays far below a second in CI.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::mapping::{
    attrs_from_metadata, attrs_to_metadata, classify_child, format_mtime, is_valid_name, parse_id,
    parse_mode, parse_mtime, ChildKey, DefaultAttrs, KeyPrefix, StoredAttrs, MTIME_LIMIT_SECS,
    S_IFDIR, S_IFLNK, S_IFREG,
};
use crate::store::{url_key, Metadata};

const CASES: usize = 2000;

/// Pieces that stress the parsers more than uniform bytes would.
const TOKENS: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "-",
    "+",
    "%",
    "%2F",
    "%C3",
    "%zz",
    "e",
    "E",
    "e+",
    "0",
    "1",
    "9",
    "NaN",
    "inf",
    " ",
    "\t",
    "\0",
    "\u{1}",
    "é",
    "\u{202e}",
    "٣",
    "18446744073709551616",
    "9223372036",
    "4294967295",
    "65535",
    "1700000000",
    ".999999999",
];

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
pub(crate) struct Gen(u64);

impl Gen {
    /// A generator for `test`, seeded from `S3SYNCFS_FUZZ_SEED` or the clock; the seed
    /// is printed (libtest shows it when the test fails).
    pub(crate) fn new(test: &str) -> Gen {
        let seed = std::env::var("S3SYNCFS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{test}: seed {seed} (S3SYNCFS_FUZZ_SEED={seed} repeats it)");
        Gen(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Up to `max` bytes: random bytes mixed with tokens.
    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let target = self.below(max as u64 + 1) as usize;
        let mut out = Vec::with_capacity(target + 24);
        while out.len() < target {
            match self.below(3) {
                0 => out.push(self.next() as u8),
                1 => out.push(b"0123456789.-"[self.below(12) as usize]),
                _ => out
                    .extend_from_slice(TOKENS[self.below(TOKENS.len() as u64) as usize].as_bytes()),
            }
        }
        out
    }

    /// Arbitrary bytes as the text an HTTP header or a key can carry (lossy UTF-8).
    pub(crate) fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(&self.bytes(max)).into_owned()
    }

    /// A name a file can have: no `/`, and `is_valid_name`.
    fn name(&mut self) -> String {
        loop {
            let name = self.text(40).replace('/', "_");
            if is_valid_name(&name) {
                return name;
            }
        }
    }
}

fn defaults() -> DefaultAttrs {
    DefaultAttrs {
        uid: 1000,
        gid: 100,
        file_mode: 0o644,
        dir_mode: 0o755,
    }
}

fn secs_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

#[test]
fn metadata_values_never_panic_and_stay_in_range() {
    let mut gen = Gen::new("metadata_values");
    let limit = (MTIME_LIMIT_SECS as i128 + 1) * 1_000_000_000;
    for _ in 0..CASES {
        let value = gen.text(40);
        if let Some(mode) = parse_mode(&value) {
            assert!(u32::from(mode) <= 0o177777, "{value:?}");
        }
        if let Some(id) = parse_id(&value) {
            assert_ne!(id, u32::MAX, "{value:?}");
        }
        if let Some(mtime) = parse_mtime(&value) {
            let ns = secs_since_epoch(mtime);
            assert!(ns.abs() < limit, "{value:?} -> {ns} ns");
            // What we write back is a whole second at or below it, and reads again.
            let again = parse_mtime(&format_mtime(mtime)).expect("our own format reads");
            assert!(
                again <= mtime && mtime.duration_since(again).unwrap() < Duration::from_secs(1)
            );
        }
    }
}

#[test]
fn any_metadata_gives_usable_attributes() {
    let mut gen = Gen::new("any_metadata");
    let last_modified = UNIX_EPOCH + Duration::from_secs(42);
    for _ in 0..CASES {
        let mut metadata = Metadata::new();
        for name in ["mode", "uid", "gid", "mtime", "rdev"] {
            if gen.below(4) > 0 {
                metadata.insert(name.to_string(), gen.text(30));
            }
        }
        let is_dir = gen.below(2) == 0;
        let read = attrs_from_metadata(&metadata, &defaults(), is_dir, last_modified);
        let kind = read.attrs.mode & !0o7777;
        let devices = [libc::S_IFCHR, libc::S_IFBLK];
        let others = [S_IFDIR, S_IFREG, S_IFLNK, libc::S_IFIFO, libc::S_IFSOCK];
        assert!(
            devices.contains(&kind) || others.contains(&kind),
            "{metadata:?} -> mode {:o}",
            read.attrs.mode
        );
        // Only a device has a number.
        assert!(devices.contains(&kind) || read.attrs.rdev == 0);
        assert!(read.rejected.len() <= metadata.len());
        for rejected in &read.rejected {
            assert!(
                rejected.value.chars().count() <= 65 * 10,
                "escaped, cut short"
            );
            assert!(!rejected.value.contains('\n'));
        }
    }
}

#[test]
fn attributes_round_trip_through_metadata() {
    let mut gen = Gen::new("attributes_round_trip");
    for _ in 0..CASES {
        let kinds = [
            S_IFREG,
            S_IFLNK,
            libc::S_IFIFO,
            libc::S_IFSOCK,
            libc::S_IFCHR,
            libc::S_IFBLK,
        ];
        let kind = kinds[gen.below(kinds.len() as u64) as usize];
        let secs = gen.below(2 * MTIME_LIMIT_SECS as u64) as i64 - MTIME_LIMIT_SECS;
        let mtime = if secs < 0 {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        };
        let attrs = StoredAttrs {
            mode: kind | gen.below(0o10000) as u32,
            uid: gen.below(u64::from(u32::MAX)) as u32,
            gid: gen.below(u64::from(u32::MAX)) as u32,
            mtime,
            rdev: match kind {
                libc::S_IFCHR | libc::S_IFBLK => gen.below(u64::from(u32::MAX) + 1) as u32,
                _ => 0,
            },
        };
        let read = attrs_from_metadata(&attrs_to_metadata(&attrs), &defaults(), false, UNIX_EPOCH);
        assert_eq!(read.attrs, attrs);
        assert!(read.rejected.is_empty());
    }
}

#[test]
fn any_prefix_or_key_is_classified_without_panic() {
    let mut gen = Gen::new("any_key");
    for _ in 0..CASES {
        let prefix = gen.text(30);
        if let Ok(normal) = KeyPrefix::new(&prefix) {
            let p = normal.as_str();
            assert!(
                p.is_empty() || (p.ends_with('/') && !p.starts_with('/')),
                "{p:?}"
            );
            assert_eq!(
                KeyPrefix::new(p).as_ref(),
                Ok(&normal),
                "normal form is stable"
            );
        }
        let dir = if gen.below(2) == 0 {
            String::new()
        } else {
            format!("{}/", gen.text(10))
        };
        let key = format!("{dir}{}", gen.text(60));
        match classify_child(&dir, &key) {
            ChildKey::File(name) | ChildKey::Dir(name) => {
                assert!(
                    is_valid_name(name) && !name.contains('/'),
                    "{key:?} -> {name:?}"
                );
            }
            ChildKey::SelfMarker => assert_eq!(key, dir),
            ChildKey::Unusable(_) => {}
        }
    }
}

#[test]
fn valid_paths_round_trip_through_keys() {
    let mut gen = Gen::new("paths_round_trip");
    for _ in 0..CASES / 4 {
        let prefix_parts: Vec<String> = (0..gen.below(3)).map(|_| gen.name()).collect();
        let prefix = KeyPrefix::new(&prefix_parts.join("/")).expect("valid names make a prefix");
        let path: Vec<String> = (0..1 + gen.below(4)).map(|_| gen.name()).collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let (parent, last) = path.split_at(path.len() - 1);
        let file = prefix.file_key(&path);
        assert_eq!(
            classify_child(&prefix.dir_prefix(parent), &file),
            ChildKey::File(last[0])
        );
        let marker = prefix.dir_prefix(&path);
        assert_eq!(
            classify_child(&prefix.dir_prefix(parent), &marker),
            ChildKey::Dir(last[0])
        );
        assert_eq!(classify_child(&marker, &marker), ChildKey::SelfMarker);
        if path.len() > 2 {
            assert_eq!(
                classify_child(&prefix.dir_prefix(&path[..1]), &file),
                ChildKey::Dir(path[1])
            );
        }
    }
}

/// How S3 escapes a key in a listing asked for with `encoding-type=url`.
fn url_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn listing_escapes_decode_without_panic_and_round_trip() {
    let mut gen = Gen::new("listing_escapes");
    for _ in 0..CASES {
        let raw = gen.text(60);
        let _ = url_key::decode(&raw);
        assert_eq!(
            url_key::decode(&url_encode(&raw)).as_deref(),
            Some(raw.as_str())
        );
    }
}

#[test]
fn any_log_line_is_redacted_without_panic() {
    let mut gen = Gen::new("log_lines");
    let names = [
        "authorization",
        "X-Amz-Security-Token",
        "x-amz-server-side-encryption-customer-key",
        "x-amz-copy-source-server-side-encryption-customer-key",
    ];
    for i in 0..CASES {
        let _ = crate::logging::redact(&gen.text(120));
        // A secret header among bucket-controlled text (keys are logged) still goes.
        let name = names[gen.below(names.len() as u64) as usize];
        let value = format!("S3cretValue{i}x{}", gen.next());
        let header = match gen.below(4) {
            0 => format!("(\"{name}\", \"{value}\")"),
            1 => format!("\"{name}\": \"{value}\""),
            2 => format!("{name}:{value}\n"),
            _ => format!("{name}={value}"),
        };
        let line = format!("{} {header} {}", gen.text(40), gen.text(40));
        let clean = crate::logging::redact(&line);
        assert!(!clean.contains(&value), "{line:?} -> {clean:?}");
    }
}
