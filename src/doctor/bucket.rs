//! The endpoint and the bucket: DNS, TCP and TLS, where the credentials come from,
//! listing, the bucket's region, the server's clock, and a probe object written
//! twice (conditional writes) and deleted. Each step has its bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{network_bound, Report};
use crate::fs::{PROBE_NAME, PROBE_TAG};
use crate::mount::MountOptions;
use crate::store::s3::S3Store;
use crate::store::{Metadata, ObjectStore, StoreError, WriteCondition};

/// S3 refuses requests signed more than 15 minutes off its clock.
const SKEW_REFUSED: Duration = Duration::from_secs(15 * 60);
/// Skew worth fixing before it grows.
const SKEW_WARN: Duration = Duration::from_secs(60);

/// Host and port of an endpoint URL: `https://h:9000/x` -> ("h", 9000).
fn host_and_port(endpoint: &str) -> Option<(String, u16)> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme == "https" { 443 } else { 80 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

pub async fn check(report: &mut Report, options: &MountOptions) {
    let bound = network_bound(options);
    let Some(addrs) = reach(report, options, bound).await else {
        return;
    };
    if addrs.is_empty() {
        return;
    }
    let aws = crate::store::s3::is_aws_endpoint(&options.endpoint);
    match crate::credentials::describe_source(&options.credentials, &options.bucket, aws, bound)
        .await
    {
        Ok(source) => report.ok("credentials", format!("from {source}")),
        Err(err) => {
            report.fail("credentials", format!("{err:#}"));
            return;
        }
    }
    let credentials = match crate::credentials::provider(&options.credentials, &options.bucket, aws)
    {
        Ok(c) => c,
        Err(err) => {
            report.fail("credentials", format!("{err:#}"));
            return;
        }
    };
    let store = match S3Store::new(&options.store_config(credentials, bound)) {
        Ok(store) => Arc::new(store),
        Err(err) => {
            report.fail("bucket", format!("cannot set up the S3 client: {err}"));
            return;
        }
    };
    let (facts, head) = match tokio::time::timeout(bound * 2, store.server_facts()).await {
        Ok(answer) => answer,
        Err(_) => (Default::default(), Err(StoreError::Timeout(bound * 2))),
    };
    let listed = tokio::time::timeout(bound * 3, store.check_access()).await;
    let listed = listed.unwrap_or(Err(StoreError::Timeout(bound * 3)));
    tls(report, options, &listed, facts.status.is_some());
    region(report, options, facts.bucket_region.as_deref(), &head);
    match &listed {
        Ok(()) => report.ok("bucket", format!("{} lists", options.bucket)),
        Err(err) => {
            let why = crate::mount::explain_access_error(clone_error(err), options);
            report.fail("bucket", format!("{why:#}"));
        }
    }
    if facts.status.is_some() {
        clock(report, facts.date);
    }
    if listed.is_err() {
        return;
    }
    if options.read_only {
        report.ok("write", "skipped: ro (the mount writes nothing)");
        return;
    }
    write_probe(report, store.as_ref(), options, bound).await;
}

/// StoreError holds an io::Error, so it is not Clone: the same words, again.
fn clone_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::NoSuchBucket(b) => StoreError::NoSuchBucket(b.clone()),
        StoreError::AccessDenied(why) => StoreError::AccessDenied(why.clone()),
        StoreError::Transient(why) => StoreError::Transient(why.clone()),
        StoreError::Timeout(d) => StoreError::Timeout(*d),
        other => StoreError::Other(other.to_string()),
    }
}

/// DNS and TCP; the addresses that connect (empty after a FAIL).
async fn reach(
    report: &mut Report,
    options: &MountOptions,
    bound: Duration,
) -> Option<Vec<SocketAddr>> {
    let Some((host, port)) = host_and_port(&options.endpoint) else {
        report.fail(
            "endpoint",
            format!("{} is not a URL such as https://host", options.endpoint),
        );
        return None;
    };
    // Virtual-hosted addressing asks for BUCKET.HOST.
    let named = host.parse::<std::net::IpAddr>().is_err();
    let virtual_host = named && !options.path_style && !options.bucket.contains('.');
    let lookup_host = match virtual_host {
        true => format!("{}.{host}", options.bucket),
        false => host.clone(),
    };
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        bound,
        tokio::net::lookup_host((lookup_host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(err)) => {
            let hint = match virtual_host {
                    true => " (virtual-hosted addressing asks for BUCKET.HOST: add path_style if the server wants host/bucket)",
                    false => "",
                };
            report.fail("dns", format!("{lookup_host} does not resolve ({err}){hint}: check the endpoint's name and /etc/resolv.conf"));
            return Some(Vec::new());
        }
        Err(_) => {
            report.fail("dns", format!("no answer for {lookup_host} within {} s: check /etc/resolv.conf and the network", bound.as_secs()));
            return Some(Vec::new());
        }
    };
    match named {
        true => report.ok(
            "dns",
            format!(
                "{lookup_host} is {}",
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        false => report.ok("dns", format!("{host} is an address: no lookup")),
    }
    let mut last = String::new();
    for addr in &addrs {
        match tokio::time::timeout(bound, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                report.ok("tcp", format!("{addr} accepts connections"));
                return Some(vec![*addr]);
            }
            Ok(Err(err)) => last = err.to_string(),
            Err(_) => last = format!("no answer within {} s", bound.as_secs()),
        }
    }
    report.fail(
        "tcp",
        format!(
            "cannot connect to {lookup_host} port {port} ({last}): is the endpoint up, the port \
             right, and a firewall letting it through?"
        ),
    );
    Some(Vec::new())
}

fn tls(
    report: &mut Report,
    options: &MountOptions,
    listed: &Result<(), StoreError>,
    answered: bool,
) {
    let loopback = host_and_port(&options.endpoint).is_some_and(|(h, _)| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if options.endpoint.starts_with("http://") {
        match loopback {
            true => report.ok("tls", "plain http to this host"),
            false => report.warn(
                "tls",
                "plain http: keys, signatures' scope and data cross the network unencrypted. \
                 Use https:// unless the network is private",
            ),
        }
        return;
    }
    match listed {
        Err(StoreError::Transient(why)) if !answered => report.fail(
            "tls",
            format!(
                "no HTTPS answer ({why}): a certificate the system does not trust, or a server \
                 that does not speak TLS on that port (then the endpoint is http://)"
            ),
        ),
        _ => report.ok("tls", "handshake and certificate accepted"),
    }
}

fn region(
    report: &mut Report,
    options: &MountOptions,
    told: Option<&str>,
    head: &Result<(), StoreError>,
) {
    match told {
        Some(region) if region != options.region => report.fail(
            "region",
            format!(
                "bucket {} is in region {region}, not {}: add region={region} (requests signed \
                 for another region are refused)",
                options.bucket, options.region
            ),
        ),
        Some(region) => report.ok("region", format!("{region}, as the server says")),
        None if head.is_ok() => report.ok(
            "region",
            format!("{} accepted (the server names no region)", options.region),
        ),
        None => report.ok("region", "the server names no region"),
    }
}

fn clock(report: &mut Report, date: Option<SystemTime>) {
    let Some(server) = date else {
        report.warn(
            "clock",
            "the server sent no Date header: cannot compare clocks",
        );
        return;
    };
    let now = SystemTime::now();
    let (skew, ahead) = match server.duration_since(now) {
        Ok(d) => (d, "ahead of"),
        Err(e) => (e.duration(), "behind"),
    };
    let said = format!(
        "the server's clock is {} s {ahead} this host's",
        skew.as_secs()
    );
    if skew >= SKEW_REFUSED {
        report.fail("clock", format!("{said}: S3 refuses requests signed 15 minutes off. Sync the clock (timedatectl set-ntp true)"));
    } else if skew >= SKEW_WARN {
        report.warn(
            "clock",
            format!(
                "{said}: sync the clock (timedatectl set-ntp true) before it reaches 15 minutes"
            ),
        );
    } else {
        report.ok(
            "clock",
            format!("within {} s of the server's", skew.as_secs().max(1)),
        );
    }
}

/// Writes the probe object (the key mounts hide) twice with If-None-Match, then
/// deletes it.
async fn write_probe(
    report: &mut Report,
    store: &S3Store,
    options: &MountOptions,
    bound: Duration,
) {
    let key = format!("{}{PROBE_NAME}", options.prefix.as_str());
    let tag = Metadata::from([(PROBE_TAG.to_string(), "1".to_string())]);
    let put = |body: &'static [u8]| {
        tokio::time::timeout(
            bound,
            store.put(
                &key,
                Bytes::from_static(body),
                &tag,
                &WriteCondition::IfAbsent,
            ),
        )
    };
    let first = put(b"1").await.unwrap_or(Err(StoreError::Timeout(bound)));
    match first {
        Ok(_) => {}
        Err(StoreError::PreconditionFailed) => {
            report.ok(
                "conditional writes",
                "honoured (a mount's probe object is there)",
            );
            report.warn(
                "write",
                "not tried: a mount is probing this bucket now; run doctor again",
            );
            return;
        }
        Err(StoreError::AccessDenied(why)) => {
            report.fail("write", format!("the credentials may not write ({why}): give the key write and delete permission on the bucket, or mount with ro"));
            return;
        }
        Err(err) => {
            report.fail("write", format!("a PUT of {key} failed: {err}"));
            return;
        }
    }
    match put(b"2").await.unwrap_or(Err(StoreError::Timeout(bound))) {
        Err(StoreError::PreconditionFailed) => report.ok("conditional writes", "honoured: concurrent edits are caught by the server"),
        Ok(_) => report.warn("conditional writes", "ignored by this server: each upload is checked with a HEAD first, which leaves a short window in which another client's edit can be overwritten"),
        Err(err) => report.warn("conditional writes", format!("unknown ({err}): the mount probes again")),
    }
    match tokio::time::timeout(bound, store.delete(&key)).await.unwrap_or(Err(StoreError::Timeout(bound))) {
        Ok(()) => report.ok("write", format!("a probe object was written and deleted at {key}")),
        Err(err) => report.fail("write", format!("the probe {key} was written but not deleted ({err}): the mount must delete (unlink, rename); give the key delete permission, then remove {key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            host_and_port("https://h.example"),
            Some(("h.example".into(), 443))
        );
        assert_eq!(
            host_and_port("http://127.0.0.1:9000/x"),
            Some(("127.0.0.1".into(), 9000))
        );
        assert_eq!(host_and_port("http://[::1]:81"), Some(("::1".into(), 81)));
        assert_eq!(host_and_port("http://h:notaport"), None);
    }
}
