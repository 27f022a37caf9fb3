//! Bounded parsers of the metadata values other clients leave on objects: any string
//! gives a value in range or None, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds either side of 1970 an mtime may be: what the state's signed 64-bit
/// nanoseconds hold (years 1678 to 2262).
pub const MTIME_LIMIT_SECS: i64 = i64::MAX / 1_000_000_000 - 1;

/// Longest value a parser looks at: 20 digits of u64, a sign, a point, 9 digits of
/// nanoseconds and some slack for rclone's longer fractions. Longer is garbage.
const VALUE_MAX: usize = 48;

/// Plain decimal digits, within u64.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decimal digits with ASCII whitespace around them allowed.
fn decimal(value: &str) -> Option<u64> {
    digits(value.trim_ascii())
}

/// `x-amz-meta-mode`: the decimal `st_mode` s3fs writes, type bits included; at most
/// 16 bits (0o177777).
pub fn parse_mode(value: &str) -> Option<u16> {
    decimal(value).and_then(|mode| u16::try_from(mode).ok())
}

/// `x-amz-meta-rdev`: a device number, decimal, as large as FUSE carries (32 bits).
pub fn parse_rdev(value: &str) -> Option<u32> {
    decimal(value).and_then(|rdev| u32::try_from(rdev).ok())
}

/// `x-amz-meta-uid` / `-gid`: a decimal id; `(uid_t)-1` is "no owner" to chown(2),
/// never an owner, so the largest id allowed is one less.
pub fn parse_id(value: &str) -> Option<u32> {
    decimal(value)
        .and_then(|id| u32::try_from(id).ok())
        .filter(|&id| id != u32::MAX)
}

/// `x-amz-meta-mtime`: signed whole seconds as s3fs writes them (`tv_sec`), optionally
/// `.` and a fraction as rclone (and s3fs since 1.92, with 9 digits) writes it.
/// As in s3fs the fraction adds to the (floored) seconds: `-2.5` is `tv_sec -2,
/// tv_nsec 500000000`, 1.5 s before 1970. No exponents, NaN, infinities or values
/// past `MTIME_LIMIT_SECS`.
pub fn parse_mtime(value: &str) -> Option<SystemTime> {
    let value = value.trim_ascii();
    if value.len() > VALUE_MAX {
        return None;
    }
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let secs = digits(whole)?;
    if secs > MTIME_LIMIT_SECS as u64 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
        // The first nine digits are nanoseconds; finer ones are dropped.
        Some(f) => f
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(9)
            .fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0')),
    };
    let whole = Duration::from_secs(secs);
    let base = if negative {
        UNIX_EPOCH.checked_sub(whole)?
    } else {
        UNIX_EPOCH.checked_add(whole)?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// An mtime as s3fs writes it: signed whole seconds, floored (`tv_sec`), so 0.5 s
/// before 1970 is `-1`.
pub fn format_mtime(mtime: SystemTime) -> String {
    match mtime.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs().to_string(),
        Err(before) => {
            let before = before.duration();
            let secs = before.as_secs() + u64::from(before.subsec_nanos() > 0);
            format!("-{secs}")
        }
    }
}

/// A value from the bucket made safe for one log line: escaped, at most 64 chars.
pub(super) fn for_log(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .collect();
    if value.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_before_1970_are_stored_as_s3fs_stores_them() {
        assert_eq!(format_mtime(UNIX_EPOCH - Duration::from_secs(1)), "-1");
        assert_eq!(format_mtime(UNIX_EPOCH - Duration::from_millis(500)), "-1");
        assert_eq!(format_mtime(UNIX_EPOCH - Duration::from_millis(1500)), "-2");
        assert_eq!(format_mtime(UNIX_EPOCH), "0");
        assert_eq!(format_mtime(UNIX_EPOCH + Duration::from_millis(1500)), "1");
        for secs in [-86_400 * 365 * 50, -1, 0, 1, 1_700_000_000i64] {
            let t = if secs < 0 {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            } else {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            };
            assert_eq!(parse_mtime(&format_mtime(t)), Some(t), "{secs}");
        }
    }

    #[test]
    fn fractions_past_nanoseconds_are_dropped() {
        assert_eq!(
            parse_mtime("1.1234567891234"),
            Some(UNIX_EPOCH + Duration::new(1, 123_456_789))
        );
        assert_eq!(
            parse_mtime(" 5.25 "),
            Some(UNIX_EPOCH + Duration::from_millis(5250))
        );
    }
}
