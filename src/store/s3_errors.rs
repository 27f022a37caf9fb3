//! aws-sdk-s3 failures in words: what `mount` prints, the log shows and `status`
//! reports. A sentence says what happened and what to check, never a Debug dump (the
//! SDK's Debug output is long, and its Display of a chain ends in one too).

use std::error::Error;
use std::io::ErrorKind;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::{version_changed, StoreError};

/// Turns any SDK error into the store's error kinds, keeping the server's words.
pub(super) fn map_err<E>(err: SdkError<E, HttpResponse>, key: &str, bucket: &str) -> StoreError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match &err {
        SdkError::TimeoutError(_) => return StoreError::Transient(TIMED_OUT.into()),
        SdkError::DispatchFailure(failure) => {
            let timed_out = failure.as_connector_error().is_some_and(|c| c.is_timeout());
            return StoreError::Transient(if timed_out {
                TIMED_OUT.into()
            } else {
                no_answer(&err)
            });
        }
        SdkError::ResponseError(_) => {
            return StoreError::Transient(format!(
                "the answer could not be read ({}): the connection was cut or the server \
                 is not an S3 API",
                innermost(&err)
            ))
        }
        SdkError::ConstructionFailure(_) => {
            return StoreError::Other(format!(
                "the request could not be made: {}",
                innermost(&err)
            ))
        }
        _ => {}
    }
    let code = err.code().unwrap_or("").to_string();
    let message = err.message().unwrap_or("").to_string();
    // "Code: message", or whichever the server sent.
    let said = match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{code}: {message}"),
        (false, true) => code.clone(),
        (true, false) => message.clone(),
        (true, true) => status.map_or("no error code".into(), |s| format!("HTTP {s}")),
    };
    match (code.as_str(), status) {
        ("NoSuchBucket", _) => StoreError::NoSuchBucket(bucket.to_string()),
        ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => StoreError::NotFound(key.to_string()),
        ("PreconditionFailed", _) | (_, Some(412)) => StoreError::PreconditionFailed,
        // Only ranged GETs of bytes the version held here has: the bucket holds another.
        ("InvalidRange", _) | (_, Some(416)) => {
            version_changed(key, "unknown: shorter than the version held here")
        }
        ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _) | (_, Some(403)) => {
            StoreError::AccessDenied(said)
        }
        (
            "SlowDown"
            | "ServiceUnavailable"
            | "InternalError"
            | "RequestTimeout"
            | "ConditionalRequestConflict",
            _,
        ) => StoreError::Transient(said),
        (_, Some(s)) if s >= 500 || s == 429 => {
            StoreError::Transient(format!("the server answered HTTP {s} ({said})"))
        }
        (_, Some(s)) => {
            StoreError::Other(format!("the server refused the request (HTTP {s}, {said})"))
        }
        _ => StoreError::Other(format!("the server refused the request ({said})")),
    }
}

const TIMED_OUT: &str =
    "no answer within the request timeout: is the endpoint up and reachable from here?";

/// Why a request got no answer at all, from the causes in `err`'s chain.
fn no_answer(err: &(dyn Error + 'static)) -> String {
    let chain = causes(err);
    let says = |needle: &str| {
        chain
            .iter()
            .any(|e| e.to_string().to_ascii_lowercase().contains(needle))
    };
    let io = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    // TLS first: its causes are I/O errors too (InvalidData, Other).
    if says("tls") || says("certificate") || says("handshake") {
        return format!(
            "the TLS handshake failed ({}): check that the endpoint speaks https (not plain \
             http) and that its certificate is trusted here",
            innermost(err)
        );
    }
    if says("dns error") || says("lookup address") || says("resolve") {
        return format!(
            "the endpoint's host name could not be resolved ({}): check the endpoint URL \
             and this host's DNS",
            innermost(err)
        );
    }
    if connection_cut(err) {
        return "the connection was closed before an answer: the server may be restarting or \
                a proxy in between may have cut it"
            .into();
    }
    match io {
        Some(ErrorKind::ConnectionRefused) => {
            "connection refused: is the endpoint URL right (host and port) and its server \
             running?"
                .into()
        }
        Some(ErrorKind::TimedOut) => TIMED_OUT.into(),
        Some(
            ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
            | ErrorKind::NetworkDown,
        ) => format!(
            "the endpoint is unreachable ({}): check the network and the endpoint URL",
            innermost(err)
        ),
        _ => format!(
            "cannot connect ({}): check the endpoint URL and the network",
            innermost(err)
        ),
    }
}

/// Whether a request that got no answer had reached the server: the connection was
/// cut after it was made (reset, closed mid-message). The server is there, so this
/// says nothing about being offline; refused, unreachable or silent connections do.
pub(super) fn connection_cut(err: &(dyn Error + 'static)) -> bool {
    causes(err).iter().any(|e| {
        let cut_io = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        });
        // hyper's words for a response cut short, which carries no I/O error.
        cut_io
            || e.to_string()
                .contains("connection closed before message completed")
    })
}

/// The deepest cause's own words (an OS error, a TLS alert, ...).
fn innermost(err: &(dyn Error + 'static)) -> String {
    causes(err)
        .last()
        .map_or_else(String::new, |e| e.to_string())
}

/// `err` and its causes, outermost first (bounded: a cyclic chain must not hang).
fn causes<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut chain = vec![err];
    let mut at = err;
    while let Some(next) = at.source() {
        if chain.len() == 32 {
            break;
        }
        chain.push(next);
        at = next;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as the connectors nest them.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + 'static>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    fn chain(outer: &[&'static str], cause: Box<dyn Error + 'static>) -> Layer {
        let mut err = cause;
        for msg in outer[1..].iter().rev() {
            err = Box::new(Layer(msg, Some(err)));
        }
        Layer(outer[0], Some(err))
    }

    fn io(kind: ErrorKind, msg: &'static str) -> Box<dyn Error + 'static> {
        Box::new(std::io::Error::new(kind, msg))
    }

    #[test]
    fn a_refused_connection_is_said_so() {
        let err = chain(
            &[
                "dispatch failure",
                "io error",
                "client error (Connect)",
                "tcp connect error",
            ],
            io(
                ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            ),
        );
        let said = no_answer(&err);
        assert!(said.starts_with("connection refused: "), "{said}");
    }

    #[test]
    fn an_unresolved_name_is_said_so() {
        let err = chain(
            &[
                "dispatch failure",
                "io error",
                "client error (Connect)",
                "dns error",
            ],
            io(
                ErrorKind::Other,
                "failed to lookup address information: Name or service not known",
            ),
        );
        let said = no_answer(&err);
        assert!(said.contains("host name could not be resolved"), "{said}");
        assert!(said.contains("Name or service not known"), "{said}");
    }

    #[test]
    fn a_tls_failure_is_said_so() {
        let err = chain(
            &[
                "dispatch failure",
                "io error",
                "client error (Connect)",
                "TLS handshake failed",
            ],
            io(
                ErrorKind::InvalidData,
                "received corrupt message of type InvalidContentType",
            ),
        );
        let said = no_answer(&err);
        assert!(said.starts_with("the TLS handshake failed"), "{said}");
        let err = chain(
            &["dispatch failure"],
            io(ErrorKind::Other, "invalid peer certificate: UnknownIssuer"),
        );
        assert!(no_answer(&err).starts_with("the TLS handshake failed"));
    }

    #[test]
    fn timeouts_resets_and_the_rest_are_sentences() {
        let err = chain(&["dispatch failure"], io(ErrorKind::TimedOut, "timed out"));
        assert_eq!(no_answer(&err), TIMED_OUT);
        let err = chain(
            &["dispatch failure"],
            io(ErrorKind::ConnectionReset, "reset"),
        );
        assert!(no_answer(&err).starts_with("the connection was closed"));
        let err = chain(&["dispatch failure"], Box::new(Layer("odd", None)));
        let said = no_answer(&err);
        assert_eq!(
            said,
            "cannot connect (odd): check the endpoint URL and the network"
        );
    }

    #[test]
    fn only_a_connection_cut_after_it_was_made_says_the_server_is_there() {
        let reset = chain(
            &["dispatch failure"],
            io(ErrorKind::ConnectionReset, "reset"),
        );
        assert!(connection_cut(&reset));
        let cut_short = chain(
            &["dispatch failure", "io error"],
            Box::new(Layer("connection closed before message completed", None)),
        );
        assert!(connection_cut(&cut_short));
        assert!(no_answer(&cut_short).starts_with("the connection was closed"));
        let refused = chain(
            &["dispatch failure", "client error (Connect)"],
            io(ErrorKind::ConnectionRefused, "refused"),
        );
        assert!(!connection_cut(&refused));
        let silent = chain(&["dispatch failure"], io(ErrorKind::TimedOut, "timed out"));
        assert!(!connection_cut(&silent));
    }

    #[test]
    fn no_sentence_holds_debug_output() {
        let err = chain(
            &["dispatch failure", "io error"],
            io(
                ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            ),
        );
        let said = no_answer(&err);
        for debug_mark in ["{", "Some(", "DispatchFailure", "kind:"] {
            assert!(!said.contains(debug_mark), "{said}");
        }
    }
}
