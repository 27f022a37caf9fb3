//! Secrets never reach a log line, whatever the level: the SDK traces whole requests
//! (`--log-level trace`), with the SSE-C key among the headers and the access key in
//! the identity it signs with. Every line written is cleaned twice: values of the
//! secret headers by name, in any of the forms the SDK and HTTP crates print them, and
//! the secrets this process holds by value (the SSE-C key, the credentials as each
//! provider hands them out), so a format we never saw cannot carry them out either.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "** redacted **";

/// Headers whose values are secrets (or, for the MD5s, confirm a guessed key).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// Shorter values are not taken as secrets: replacing every "test" in a log would
/// hide more than it protects (real keys and tokens are 16 characters and more).
const SECRET_MIN: usize = 8;

/// Secrets remembered, newest last; old ones drop out past this (rotated credentials).
const SECRETS_KEPT: usize = 64;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret value: from now on no log line shows it.
pub fn add_secret(value: &str) {
    if value.len() < SECRET_MIN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if secrets.iter().any(|s| s == value) {
        return;
    }
    if secrets.len() == SECRETS_KEPT {
        secrets.remove(0);
    }
    secrets.push(value.to_string());
    // Longest first: a secret holding another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `line` without secret header values and without any remembered secret.
pub fn redact(line: &str) -> Cow<'_, str> {
    let mut out = by_header(line);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

/// Replaces the value after each secret header name: `name: value` (canonical
/// requests, HTTP dumps), `"name": "value"` (header map Debug), `("name", "value")`
/// (tuples), `name=value` (fields). A quoted value ends at its closing quote, any
/// other at the end of the line.
fn by_header(line: &str) -> Cow<'_, str> {
    let lower = line.to_ascii_lowercase(); // same byte offsets: ASCII only changes
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for name in SECRET_HEADERS {
        for (at, _) in lower.match_indices(name) {
            if let Some(span) = value_after(line.as_bytes(), at, at + name.len()) {
                spans.push(span);
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(line);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(line.len());
    let mut done = 0;
    for (start, end) in spans {
        if end <= done {
            continue;
        }
        let start = start.max(done);
        out.push_str(&line[done..start]);
        out.push_str(REDACTED);
        done = end;
    }
    out.push_str(&line[done..]);
    Cow::Owned(out)
}

/// The byte span of the value of a header named at `name_start..name_end`, if a
/// value follows the name there.
fn value_after(line: &[u8], name_start: usize, name_end: usize) -> Option<(usize, usize)> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if name_start > 0 && word(line[name_start - 1]) {
        return None; // part of a longer name
    }
    let mut at = name_end;
    if line.get(at).is_some_and(|&b| word(b)) {
        return None;
    }
    if matches!(line.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    while line.get(at) == Some(&b' ') {
        at += 1;
    }
    if !matches!(line.get(at), Some(b':' | b'=' | b',')) {
        return None; // the name in prose, not a header
    }
    at += 1;
    while line.get(at) == Some(&b' ') {
        at += 1;
    }
    let rest = &line[at..];
    if rest.starts_with(b"**") {
        return None; // the SDK redacted it already
    }
    let end = match rest.first() {
        Some(&quote @ (b'"' | b'\'')) => {
            let mut i = 1;
            while i < rest.len() && rest[i] != quote {
                i += if rest[i] == b'\\' { 2 } else { 1 };
            }
            at + (i + 1).min(rest.len())
        }
        _ => at + rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()),
    };
    (end > at).then_some((at, end))
}

/// Writes what it is given with secrets removed: the log's writer. The formatter
/// hands over each event whole in one call, so no secret is split between calls.
pub struct RedactingWriter<W: Write>(pub W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    fn clean(line: &str) -> String {
        let out = by_header(line).into_owned();
        assert!(!out.contains(KEY), "{out}");
        out
    }

    #[test]
    fn header_values_go_in_every_form_the_sdk_prints() {
        // aws-sigv4's SignableRequest Debug: (name, value) tuples.
        let out = clean(&format!(
            "headers: [(\"x-amz-server-side-encryption-customer-key\", \"{KEY}\"), (\"x-amz-date\", \"20260101T000000Z\")]"
        ));
        assert!(out.contains("x-amz-date\", \"20260101T000000Z\""), "{out}");
        // http::HeaderMap Debug.
        clean(&format!(
            "{{\"authorization\": \"AWS4-HMAC-SHA256 Credential={KEY}/x, Signature=ab\", \"host\": \"h\"}}"
        ));
        // A canonical request or an HTTP dump: one header a line.
        let out = clean(&format!(
            "PUT\n/b/k\nx-amz-copy-source-server-side-encryption-customer-key:{KEY}\nx-amz-date:1\n"
        ));
        assert!(out.ends_with("\nx-amz-date:1\n"), "{out}");
        // A field, upper case.
        clean(&format!("X-Amz-Security-Token={KEY}"));
        clean(&format!("Authorization: AWS4-HMAC-SHA256 Credential={KEY}"));
    }

    #[test]
    fn escaped_quotes_do_not_end_a_value_early() {
        clean(&format!("(\"authorization\", \"a\\\"b {KEY}\")"));
    }

    #[test]
    fn prose_and_longer_names_are_left_alone() {
        let line = "the x-amz-security-token header was refused; authorizationless";
        assert_eq!(by_header(line), line);
        let line = "\"x-amz-server-side-encryption-customer-algorithm\": \"AES256\"";
        assert_eq!(by_header(line), line);
        let line = "\"authorization\": ** redacted (length=12) **, \"host\": \"h\"";
        assert_eq!(by_header(line), line, "already redacted by the SDK");
    }

    #[test]
    fn remembered_secrets_go_anywhere_in_a_line() {
        add_secret("short");
        add_secret("AKIAREMEMBEREDKEY123");
        let out = redact("identity: Credentials { access_key_id: \"AKIAREMEMBEREDKEY123\" }");
        assert!(!out.contains("AKIAREMEMBEREDKEY123"), "{out}");
        assert!(out.contains(REDACTED));
        assert_eq!(redact("a short line"), "a short line");
    }

    #[test]
    fn the_writer_cleans_what_passes() {
        let mut out = RedactingWriter(Vec::new());
        let line = format!("(\"x-amz-server-side-encryption-customer-key\", \"{KEY}\")\n");
        assert_eq!(out.write(line.as_bytes()).unwrap(), line.len());
        let written = String::from_utf8(out.0).unwrap();
        assert!(
            !written.contains(KEY) && written.ends_with(")\n"),
            "{written}"
        );
    }
}
