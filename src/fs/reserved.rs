//! The one name s3syncfs reserves in a bucket: its conditional-write probe, at the
//! top of the mount's prefix. Only that exact key is ours: a user's
//! `.s3syncfs-probe-notes` (or any other look-alike) is shown and verified as theirs.

/// The probe's key under the mount's prefix (SEMANTICS.md documents it as reserved).
pub const PROBE_NAME: &str = ".s3syncfs-probe";

/// User metadata every probe object carries: an object at the reserved name without
/// it is a user's, and is never written over or removed.
pub const PROBE_TAG: &str = "s3syncfs-probe";

/// Whether `key` is the probe's key of a mount of `prefix` (hidden from listings,
/// skipped by verify; what it holds is only ever a probe's, see `PROBE_TAG`).
pub fn is_own_probe(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix) == Some(PROBE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_reserved_key_is_the_probe() {
        assert!(is_own_probe("", ".s3syncfs-probe"));
        assert!(is_own_probe("p/", "p/.s3syncfs-probe"));
        assert!(!is_own_probe("p/", ".s3syncfs-probe"));
        assert!(!is_own_probe("", ".s3syncfs-probe-notes.txt"));
        assert!(!is_own_probe("", ".s3syncfs-probe-123-1700000000000000000"));
        assert!(!is_own_probe("", "a/.s3syncfs-probe"));
        assert!(!is_own_probe("", ".s3syncfs-probe/"));
    }
}
