//! Test harness: an S3 API server on 127.0.0.1, a client playing "another client",
//! and real FUSE mounts of the real binary that are always cleaned up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use s3syncfs_testserver::{Backend, Server, StatsSnapshot};

pub const BUCKET: &str = "test-bucket";
pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key";

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub backend: Backend,
    server: Option<Server>,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Env {
    pub fn new() -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
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
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(&endpoint)
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Env {
            rt,
            backend,
            server: Some(server),
            client: Client::from_conf(config),
            dir,
            endpoint,
        }
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
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let mnt = mnt.to_path_buf();
        std::fs::create_dir_all(&mnt).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("log{n}.txt"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
            .args(["mount", source])
            .arg(&mnt)
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start s3syncfs");
        let mut mount = Mount {
            child: Some(child),
            path: mnt,
            log: self.dir.path().join(format!("log{n}.txt")),
        };
        mount.wait_ready();
        mount
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

    pub fn stats(&self) -> StatsSnapshot {
        self.backend.stats()
    }

    /// Starts the server again on the same address with the same data (after an outage).
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "server already running");
        let addr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let server = self
            .rt
            .block_on(Server::start(
                self.backend.clone(),
                addr,
                ACCESS_KEY,
                SECRET_KEY,
            ))
            .unwrap();
        self.server = Some(server);
    }

    pub fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_server();
        if std::env::var_os("KEEP_TEST_DIR").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("test dir kept at {}", kept.display());
        }
    }
}

fn credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Runs an unmount command, again while it says the mount is busy (for up to 10 s).
///
/// Tests run in parallel threads of one process, and every child process any of them
/// spawns starts with a copy of the whole process's descriptors until its exec closes
/// them: a file another test closed a moment ago can still be open in such a child and
/// hold that mount busy. The kernel's own close is done by then (a pending RELEASE holds
/// only the inode, not the mount), so this is a test-harness race, not a daemon's.
pub fn unmount_when_free(command: &mut Command) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = command.output().unwrap();
        if out.status.success() || !text(&out).contains("busy") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command's standard output and error, for messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub struct Mount {
    child: Option<Child>,
    pub path: PathBuf,
    log: PathBuf,
}

impl Mount {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if is_mounted(&self.path) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("s3syncfs exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mount did not become ready: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and waits for the daemon to finish its uploads and exit.
    pub fn unmount(mut self) {
        let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&self.path));
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            text(&out)
        );
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(
            status.success(),
            "daemon exited with {status}: {}",
            self.log_text()
        );
    }
}

impl Mount {
    /// Kills the daemon with SIGKILL (a crash) and detaches the dead mount.
    /// kill -9, then what the daemon logged (read after it died, so the kill lands
    /// when the caller meant it to).
    pub fn kill9_with_log(self) -> String {
        let log = self.log.clone();
        self.kill9();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let status = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "could not detach the dead mount");
    }

    /// Sends SIGTERM to the daemon (which we started) and waits for it to exit.
    pub fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "daemon exited with {status}: {}",
            self.log_text()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
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

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
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

/// Deterministic test data.
/// Writes `data` at `offset` of an existing file, in place (no truncation).
pub fn write_in_place(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(data, offset).unwrap();
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
        .collect()
}

/// A TCP proxy on 127.0.0.1 in front of the server that can freeze: while frozen it
/// accepts connections and holds them without forwarding a byte (a hung endpoint).
pub struct FreezableProxy {
    pub endpoint: String,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableProxy {
    pub fn start(target: &str) -> FreezableProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let target: std::net::SocketAddr = target.trim_start_matches("http://").parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (frozen2, stop2) = (frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (frozen, stop) = (frozen2.clone(), stop2.clone());
                    std::thread::spawn(move || pump(from, to, &frozen, &stop));
                }
            }
        });
        FreezableProxy {
            endpoint,
            frozen,
            stop,
        }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
        // Pumps notice the flag between reads (20 ms apart); let each one see it.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies bytes one way; while frozen it neither reads nor writes, holding the socket.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
