//! Finds out once per mount whether the server honours conditional writes
//! (If-None-Match: * on PutObject): a probe object is written twice and removed.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::fs::{ConditionalWrites, Fs, PROBE_NAME_START};
use crate::store::{Metadata, StoreError, WriteCondition};

/// Probes the server; on a network failure the mode stays unknown (writes are then
/// checked with a HEAD first) and the probe runs again before a later upload.
pub async fn probe_conditional_writes(fs: &Fs) {
    if fs.conditional_writes() != ConditionalWrites::Unknown {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!(
        "{}{PROBE_NAME_START}{}-{nanos}",
        fs.config().prefix.as_str(),
        std::process::id()
    );
    let store = fs.store();
    let none = Metadata::new();
    // A crash before the delete below leaves the probe to the next mount to remove.
    fs.record_inflight(&key);
    let first = store
        .put(
            &key,
            Bytes::from_static(b"1"),
            &none,
            &WriteCondition::IfAbsent,
        )
        .await;
    let mode = match first {
        Err(err) if err.is_retryable() => {
            let _ = store.delete(&key).await; // it may have landed
            return;
        }
        // A server that refuses the header outright does not honour it either.
        Err(_) => ConditionalWrites::Ignored,
        Ok(_) => match store
            .put(
                &key,
                Bytes::from_static(b"2"),
                &none,
                &WriteCondition::IfAbsent,
            )
            .await
        {
            Err(StoreError::PreconditionFailed) => ConditionalWrites::Honoured,
            Err(err) if err.is_retryable() => {
                let _ = store.delete(&key).await;
                return;
            }
            _ => ConditionalWrites::Ignored,
        },
    };
    match store.delete(&key).await {
        Ok(()) => fs.clear_inflight(&key),
        Err(err) => tracing::warn!(%key, %err, "could not remove the conditional-write probe"),
    }
    match mode {
        ConditionalWrites::Honoured => {
            tracing::info!("the server honours conditional writes (If-Match / If-None-Match)")
        }
        _ => tracing::warn!(
            "the server ignores conditional writes: each upload is checked with a HEAD first"
        ),
    }
    fs.set_conditional_writes(mode);
}
