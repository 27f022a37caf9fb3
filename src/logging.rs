//! Logs: to stderr in the foreground; to syslog (journald under systemd) as well when
//! daemonized. Repeated messages from one place are rate-limited, so a dead endpoint
//! does not flood the journal. Secrets are removed from every line (`redact`).

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

mod redact;

pub use redact::{add_secret, redact, REDACTED};

/// Per call site, at most this many messages per window pass.
const BURST: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

pub fn init(level: &str, syslog: bool) {
    // fuser logs every unimplemented request and a harmless unmount race at warn.
    let directives = if level.contains("fuser") {
        level.to_string()
    } else {
        format!("{level},fuser=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| redact::RedactingWriter(std::io::stderr()))
        .with_ansi(false);
    let syslog = syslog.then(|| {
        // SAFETY: openlog keeps the pointer: the identifier is a static C string.
        unsafe { libc::openlog(c"s3syncfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        Syslog
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(RateLimit::default())
        .with(stderr)
        .with(syslog)
        .init();
}

/// Drops messages past `BURST` per call site and window; says how many it dropped.
#[derive(Default)]
pub struct RateLimit {
    seen: Mutex<HashMap<Identifier, (Instant, u32)>>,
}

impl RateLimit {
    /// Whether a message from `site` passes now; the count dropped in the window
    /// that just ended, if any.
    fn admit(&self, site: Identifier, now: Instant) -> (bool, u32) {
        let mut seen = self.seen.lock();
        let entry = seen.entry(site).or_insert((now, 0));
        let mut dropped = 0;
        if now.duration_since(entry.0) >= WINDOW {
            dropped = entry.1.saturating_sub(BURST);
            *entry = (now, 0);
        }
        entry.1 += 1;
        (entry.1 <= BURST, dropped)
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return true; // debug and trace are opt-in; never limited
        }
        let (pass, dropped) = self.admit(meta.callsite(), Instant::now());
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "similar messages from {} were dropped in the last minute",
                meta.target()
            );
        }
        pass
    }
}

/// Sends each event to syslog(3) at the matching priority.
struct Syslog;

impl<S: Subscriber> Layer<S> for Syslog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let priority = match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        let mut line = Line::default();
        event.record(&mut line);
        let text = format!("{}: {}{}", meta.target(), line.message, line.fields);
        if let Ok(text) = CString::new(redact(&text).replace('\0', " ")) {
            // SAFETY: a constant format string and one C string argument.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
        }
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }
    static SITE: Site = Site;

    #[test]
    fn a_burst_passes_then_the_rest_is_counted() {
        let limit = RateLimit::default();
        let start = Instant::now();
        let id = || Identifier(&SITE);
        let passed = (0..25).filter(|_| limit.admit(id(), start).0).count();
        assert_eq!(passed, BURST as usize);
        let (pass, dropped) = limit.admit(id(), start + WINDOW);
        assert!(pass);
        assert_eq!(dropped, 25 - BURST);
    }
}
