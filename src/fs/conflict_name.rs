//! Names of conflict copies: `NAME.conflict-HOST-UTCSTAMP.EXT`, always derived from
//! the original name (a copy of a copy is never nested) and never over NAME_MAX.

use std::time::SystemTime;

use super::tree::Tree;

/// The longest file name Linux takes (bytes).
const NAME_MAX: usize = 255;

/// Room kept for the `-N` that `free_name` may add.
const ROOM_FOR_COUNT: usize = 8;

/// `report.txt` -> `report.conflict-HOST-20261124T193000Z.txt`; the extension stays
/// last so the copy opens with the same program. Dot files keep their whole name. A
/// conflict copy's own name gives the same as its original's.
pub fn conflict_name(name: &str, now: SystemTime) -> String {
    let name = original_name(name);
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = aws_smithy_types::DateTime::from_secs(secs as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
        .replace([':', '-'], "");
    let tag = format!(".conflict-{}-{stamp}", host_name());
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && dot + 1 < name.len() => name.split_at(dot),
        _ => (name.as_str(), ""),
    };
    // A long extension is no extension worth keeping whole.
    let ext = truncated(ext, 32);
    let room = NAME_MAX - ROOM_FOR_COUNT - tag.len().min(NAME_MAX / 2) - ext.len();
    let stem = truncated(stem, room.max(1));
    format!("{stem}{}{ext}", truncated(&tag, NAME_MAX / 2))
}

/// The name a conflict copy was made from: every `.conflict-HOST-STAMP` (and the
/// `-N` a taken name got) taken out. Other names are returned as they are.
pub fn original_name(name: &str) -> String {
    let mut name = name.to_string();
    while let Some((start, end)) = conflict_tag(&name) {
        name.replace_range(start..end, "");
    }
    name
}

/// Where the first `.conflict-HOST-YYYYMMDDTHHMMSSZ[-N]` in `name` is, if any.
fn conflict_tag(name: &str) -> Option<(usize, usize)> {
    let bytes = name.as_bytes();
    let mut from = 0;
    while let Some(found) = name[from..].find(".conflict-") {
        let start = from + found;
        // The host may hold dashes: the tag ends at the first stamp after it.
        let stamp_at = (start + ".conflict-".len()..bytes.len())
            .find(|&i| bytes[i - 1] == b'-' && is_stamp(&bytes[i..]));
        if let Some(at) = stamp_at {
            let mut end = at + 16;
            if bytes.get(end) == Some(&b'-') {
                let digits = bytes[end + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits > 0 {
                    end += 1 + digits;
                }
            }
            return Some((start, end));
        }
        from = start + 1;
    }
    None
}

/// `YYYYMMDDTHHMMSSZ` at the start of `bytes`.
fn is_stamp(bytes: &[u8]) -> bool {
    bytes.len() >= 16
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && bytes[15] == b'Z'
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A name not taken in `parent`: `name`, else `name` with `-2`, `-3` ... before the
/// extension.
pub(super) fn free_name(tree: &Tree, parent: u64, name: &str) -> String {
    if tree.child(parent, name).is_none() {
        return name.to_string();
    }
    // After a conflict tag, so that the tag is still found whole; else before the
    // extension.
    let cut = match (conflict_tag(name), name.rfind('.')) {
        (Some((_, end)), _) => end,
        (None, Some(dot)) if dot > 0 => dot,
        _ => name.len(),
    };
    let (stem, ext) = name.split_at(cut);
    (2..)
        .map(|n| format!("{stem}-{n}{ext}"))
        .find(|candidate| tree.child(parent, candidate).is_none())
        .unwrap_or_else(|| name.to_string())
}

/// This host's name, safe for a file name.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "host".into()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000)
    }

    #[test]
    fn conflict_names_keep_the_extension_last() {
        let host = host_name();
        assert_eq!(
            conflict_name("report.txt", at()),
            format!("report.conflict-{host}-20261118T110640Z.txt")
        );
        assert_eq!(
            conflict_name("Makefile", at()),
            format!("Makefile.conflict-{host}-20261118T110640Z")
        );
        assert_eq!(
            conflict_name(".bashrc", at()),
            format!(".bashrc.conflict-{host}-20261118T110640Z")
        );
        assert_eq!(
            conflict_name("a.tar.gz", at()),
            format!("a.tar.conflict-{host}-20261118T110640Z.gz")
        );
    }

    #[test]
    fn a_conflict_copys_conflict_name_is_derived_from_the_original() {
        let later = at() + std::time::Duration::from_secs(3600);
        for original in ["big.bin", "Makefile", ".bashrc", "a.tar.gz", "x.conflict-y"] {
            let mut name = original.to_string();
            for round in 0..5 {
                name = conflict_name(&name, if round % 2 == 0 { at() } else { later });
                assert_eq!(
                    name.matches(".conflict-").count(),
                    1 + original.matches(".conflict-").count(),
                    "{name}"
                );
                assert_eq!(original_name(&name), original, "{name}");
                // As free_name makes it when the name is taken.
                let z = name.rfind('Z').unwrap() + 1;
                let taken = format!("{}-2{}", &name[..z], &name[z..]);
                assert_eq!(original_name(&taken), original, "{taken}");
                name = taken;
            }
        }
        // Hosts with dashes, and nested tags made by older versions.
        let nested = "big.conflict-my-host-20261118T110640Z.conflict-my-host-20261118T120000Z.bin";
        assert_eq!(original_name(nested), "big.bin");
        assert_eq!(
            original_name("notes.conflict-about-x.txt"),
            "notes.conflict-about-x.txt"
        );
    }

    #[test]
    fn conflict_names_fit_in_name_max_whatever_the_original() {
        let long_stem = "é".repeat(127) + ".txt"; // 258 bytes
        let long_ext = format!("a.{}", "x".repeat(250));
        let dots = ".".repeat(255);
        for name in [long_stem.as_str(), long_ext.as_str(), dots.as_str(), "a"] {
            let copy = conflict_name(name, at());
            assert!(
                copy.len() <= NAME_MAX - ROOM_FOR_COUNT,
                "{} bytes: {copy}",
                copy.len()
            );
            assert!(copy.contains(".conflict-"), "{copy}");
        }
        assert!(conflict_name(&long_stem, at()).ends_with(".txt"));
    }
}
