//! Test harness: an S3 API server on 127.0.0.1 (the project's test server, or moto),
//! a client playing "another client", and real FUSE mounts of the real binary that
//! are always cleaned up.

pub mod http;
pub mod moto;
mod mount;
pub mod proxy;
mod s3op;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use s3syncfs_testserver::{Backend, Server, StatsSnapshot};

pub use self::moto::Moto;
pub use self::mount::{is_mounted, text, unmount_when_free, Draining, Mount};
pub use self::proxy::{FaultProxy, Match, Mode, RuleId, S3Op, Times};

pub const BUCKET: &str = "test-bucket";
pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key";

/// The S3 implementation behind an `Env`.
enum Upstream {
    /// The project's own server: its backend offers hooks (stats, odd behaviours) and
    /// it can be stopped and started again.
    TestServer {
        backend: Backend,
        server: Option<Server>,
    },
    /// A second, independent implementation: only what any S3 server offers.
    Moto(Moto),
}

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    upstream: Upstream,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Env {
    /// A fresh bucket on the project's test server.
    pub fn new() -> Env {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server-data");
        std::fs::create_dir_all(&data).unwrap();
        let backend = Backend::new(&data).unwrap();
        backend.create_bucket(BUCKET);
        let server = rt
            .block_on(Server::start(
                backend.clone(),
                "127.0.0.1:0".parse().unwrap(),
                ACCESS_KEY,
                SECRET_KEY,
            ))
            .unwrap();
        let endpoint = server.endpoint();
        Env {
            rt,
            upstream: Upstream::TestServer {
                backend,
                server: Some(server),
            },
            client: s3_client(&endpoint, 3),
            dir,
            endpoint,
        }
    }

    /// A fresh bucket on a moto server of its own; fails the test if moto is missing.
    pub fn moto() -> Env {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start(dir.path());
        let endpoint = moto.endpoint.clone();
        let client = s3_client(&endpoint, 3);
        if let Err(err) = rt.block_on(client.create_bucket().bucket(BUCKET).send()) {
            panic!(
                "moto refused to create the bucket: {err:?}\nmoto's log:\n{}",
                moto.log_text()
            );
        }
        Env {
            rt,
            upstream: Upstream::Moto(moto),
            client,
            dir,
            endpoint,
        }
    }

    /// "testserver" or "moto", for messages.
    pub fn server_name(&self) -> &'static str {
        match self.upstream {
            Upstream::TestServer { .. } => "testserver",
            Upstream::Moto(_) => "moto",
        }
    }

    /// What moto logged (its requests and tracebacks); empty on the test server.
    pub fn server_log(&self) -> String {
        match &self.upstream {
            Upstream::TestServer { .. } => String::new(),
            Upstream::Moto(moto) => moto.log_text(),
        }
    }

    pub fn is_moto(&self) -> bool {
        matches!(self.upstream, Upstream::Moto(_))
    }

    /// The test server's backend (stats, injected behaviours). Panics on moto: a test
    /// that needs these hooks can only run on the test server.
    pub fn backend(&self) -> &Backend {
        match &self.upstream {
            Upstream::TestServer { backend, .. } => backend,
            Upstream::Moto(_) => panic!(
                "this test needs the test server's backend hooks (stats, injected \
                 behaviours), which moto does not have: run it on Env::new() only"
            ),
        }
    }

    /// The test server's request counters (panics on moto, see `backend`).
    pub fn stats(&self) -> StatsSnapshot {
        self.backend().stats()
    }

    /// Mounts the bucket (or `source` = `BUCKET:PREFIX`) with a fresh cache dir.
    pub fn mount(&self) -> Mount {
        self.mount_with(BUCKET, &[])
    }

    pub fn mount_with(&self, source: &str, extra: &[&str]) -> Mount {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let mnt = self.dir.path().join(format!("mnt{n}"));
        let cache = self.dir.path().join(format!("cache{n}"));
        self.mount_at(source, &mnt, &cache, extra)
    }

    /// Mounts through `endpoint` (a proxy) instead of the server itself.
    pub fn mount_via(&self, endpoint: &str, extra: &[&str]) -> Mount {
        let mut args = vec!["--endpoint", endpoint];
        args.extend_from_slice(extra);
        self.mount_with(BUCKET, &args)
    }

    /// Mounts at a given mountpoint with a given cache dir (to remount after a crash).
    pub fn mount_at(&self, source: &str, mnt: &Path, cache: &Path, extra: &[&str]) -> Mount {
        self.mount_at_with_env(source, mnt, cache, extra, &[])
    }

    /// `mount_at` with more environment variables for the daemon.
    pub fn mount_at_with_env(
        &self,
        source: &str,
        mnt: &Path,
        cache: &Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Mount {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        std::fs::create_dir_all(mnt).unwrap();
        let log = self.dir.path().join(format!("log{n}.txt"));
        let child = Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
            .args(["mount", source])
            .arg(mnt)
            .args(["--endpoint", &self.endpoint, "--path-style", "--foreground"])
            .arg("--cache-dir")
            .arg(cache)
            .args(["--upload-delay-ms", "100", "--request-timeout", "10"])
            // An open waits for its check as long as the request may take, so tests of
            // close-to-open see the new version at once on a loaded machine too (the
            // outage tests give the default back).
            .args(["--open-check-wait-ms", "10000"])
            .args(["--log-level", "info,s3syncfs=debug"])
            .args(extra)
            .envs(credentials_env())
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start s3syncfs");
        Mount::started(child, mnt.to_path_buf(), log)
    }

    pub fn put(&self, key: &str, body: &[u8], metadata: &[(&str, &str)]) {
        let meta: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .set_metadata(Some(meta))
                    .body(ByteStream::from(body.to_vec()))
                    .send(),
            )
            .unwrap();
    }

    /// Deletes an object, as another client would.
    pub fn delete(&self, key: &str) {
        self.rt
            .block_on(self.client.delete_object().bucket(BUCKET).key(key).send())
            .unwrap();
    }

    /// Body and user metadata of an object, or None if it is not in the bucket.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, HashMap<String, String>)> {
        let out = self
            .rt
            .block_on(self.client.get_object().bucket(BUCKET).key(key).send())
            .ok()?;
        let meta = out.metadata().cloned().unwrap_or_default();
        let body = self.rt.block_on(out.body.collect()).unwrap().to_vec();
        Some((body, meta))
    }

    pub fn etag(&self, key: &str) -> Option<String> {
        let out = self
            .rt
            .block_on(self.client.head_object().bucket(BUCKET).key(key).send())
            .ok()?;
        out.e_tag().map(str::to_string)
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(BUCKET)
                        .set_continuation_token(token)
                        .send(),
                )
                .unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        keys.sort();
        keys
    }

    /// Starts the server again on the same address with the same data (after an outage).
    /// Test server only: moto keeps its objects in memory and loses them when stopped.
    pub fn start_server(&mut self) {
        let addr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let Upstream::TestServer { backend, server } = &mut self.upstream else {
            panic!("start_server needs the test server: moto cannot be restarted with its data");
        };
        assert!(server.is_none(), "server already running");
        let started = self
            .rt
            .block_on(Server::start(backend.clone(), addr, ACCESS_KEY, SECRET_KEY))
            .unwrap();
        *server = Some(started);
    }

    /// Stops the server (test server only, see `start_server`).
    pub fn stop_server(&mut self) {
        let Upstream::TestServer { server, .. } = &mut self.upstream else {
            panic!("stop_server needs the test server: moto cannot be restarted with its data");
        };
        if let Some(server) = server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Upstream::TestServer { server, .. } = &mut self.upstream {
            if let Some(server) = server.take() {
                self.rt.block_on(server.stop());
            }
        }
        if std::env::var_os("KEEP_TEST_DIR").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("test dir kept at {}", kept.display());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An S3 client for `endpoint` with the test credentials, making up to `max_attempts`
/// attempts per request (1: every failure reaches the caller, as proxy tests need).
pub fn s3_client(endpoint: &str, max_attempts: u32) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(max_attempts),
        )
        .build();
    Client::from_conf(config)
}

fn credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Runs the binary (status, sync, a daemonized mount ...) with the test credentials.
pub fn s3syncfs(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .current_dir(env.dir.path())
        .output()
        .unwrap()
}

/// `s3syncfs status --json` of a mount.
pub fn status(env: &Env, mnt: &Mount) -> serde_json::Value {
    let out = s3syncfs(env, &["status", mnt.path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `s3syncfs sync` on a mount; fails the test if it does not finish.
pub fn sync(env: &Env, mnt: &Mount) {
    let out = s3syncfs(
        env,
        &["sync", mnt.path.to_str().unwrap(), "--timeout", "60"],
    );
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for an eventually-true condition (an upload, a metadata fill); panics with
/// `what` if it is still false after a generous bound.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// Writes `data` at `offset` of an existing file, in place (no truncation).
pub fn write_in_place(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, offset).unwrap();
}

/// `cp -a` of what `source` holds into `dest`, as a user copies a tree in; cp's
/// stderr when it fails.
pub fn copy_tree_in(source: &Path, dest: &Path) -> Result<(), String> {
    let out = Command::new("cp")
        .arg("-a")
        .arg(source.join("."))
        .arg(dest)
        .output()
        .map_err(|e| format!("cannot run cp: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
        .collect()
}

/// One test body, run on both servers: `on_both_servers! { fn name(env: Env) { ... } }`
/// makes a module `name` with two tests, `name::testserver` and `name::moto`, each
/// handing the body a fresh `Env` of its kind (`cargo test --test fuse ::moto` runs
/// every moto half). The body may use only what both servers offer: no `stats`,
/// `backend`, `stop_server` or `start_server`. A first line
/// `#[ignore_on_moto = "why"]` marks the moto half `#[ignore = "why"]` alone.
macro_rules! on_both_servers {
    (#[ignore_on_moto = $why:literal] $($rest:tt)*) => {
        $crate::support::on_both_servers!(@moto [#[ignore = $why]] $($rest)*);
    };
    (@moto [$($moto_attr:tt)*] $(#[$attr:meta])* fn $name:ident($env:ident: Env) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($env: $crate::support::Env) $body

            #[test]
            fn testserver() {
                run($crate::support::Env::new())
            }

            #[test]
            $($moto_attr)*
            fn moto() {
                run($crate::support::Env::moto())
            }
        }
    };
    ($($rest:tt)*) => {
        $crate::support::on_both_servers!(@moto [] $($rest)*);
    };
}
pub(crate) use on_both_servers;
