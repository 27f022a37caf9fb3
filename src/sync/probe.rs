//! Finds out once per mount whether the server honours conditional writes
//! (If-None-Match: * on PutObject): the probe object, at the one reserved key
//! `PREFIX.s3syncfs-probe` and tagged as ours, is written twice and removed.
//!
//! Every mount of a prefix probes the same key. Mounts that probe at the same moment
//! can only push each other towards "ignored", the cautious answer (a HEAD before each
//! write): a refused first write means the server honours the header, and a second
//! write that goes through means it does not, or that another mount removed the key.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::fs::{ConditionalWrites, Fs, HeadChecked, PROBE_NAME, PROBE_TAG};
use crate::store::{Metadata, StoreError, WriteCondition};

/// A probe object older than this was left by a daemon killed while probing.
const STALE: Duration = Duration::from_secs(3600);

/// Probes the server; on a network failure the mode stays unknown (writes are then
/// checked with a HEAD first) and the probe runs again before a later upload. A
/// read-only mount never probes (it writes nothing at all).
pub async fn probe_conditional_writes(fs: &Fs) {
    if fs.conditional_writes() != ConditionalWrites::Unknown {
        return;
    }
    let key = format!("{}{PROBE_NAME}", fs.config().prefix.as_str());
    let store = fs.store();
    match store.head_checked(&key).await {
        Err(err) if err.is_retryable() => return,
        Err(err) => tracing::debug!(%key, %err, "cannot look at the probe's key"),
        Ok(None) => {}
        Ok(Some(info)) if !info.metadata.contains_key(PROBE_TAG) => {
            tracing::warn!(
                %key,
                "the bucket holds an object of its own at the name s3syncfs reserves for its \
                 probe, so the server is not probed: each upload is checked with a HEAD first. \
                 Rename that object to let the probe run"
            );
            fs.set_conditional_writes(ConditionalWrites::Ignored);
            return;
        }
        Ok(Some(info)) => {
            let age = SystemTime::now().duration_since(info.last_modified);
            if age.is_ok_and(|age| age > STALE) {
                tracing::info!(%key, "removing a probe object a killed daemon left behind");
                let _ = store.delete(&key).await;
            }
        }
    }
    let tag = Metadata::from([(PROBE_TAG.to_string(), "1".to_string())]);
    // A crash before the delete below leaves the probe to the next mount to remove.
    fs.record_inflight(&key);
    let first = store
        .put(
            &key,
            Bytes::from_static(b"1"),
            &tag,
            &WriteCondition::IfAbsent,
        )
        .await;
    let mode = match first {
        // Another mount's probe is there, and the server kept it: it honours the
        // header. That probe is not ours to remove.
        Err(StoreError::PreconditionFailed) => {
            fs.clear_inflight(&key);
            settle(fs, ConditionalWrites::Honoured);
            return;
        }
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
                &tag,
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
    settle(fs, mode);
}

fn settle(fs: &Fs, mode: ConditionalWrites) {
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
