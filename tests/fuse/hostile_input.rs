//! What other clients, the network and the command line can hand the daemon: garbage
//! metadata, symlink targets the kernel cannot take, unreachable or refusing
//! endpoints; and secrets that must stay out of the log at every level.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{s3syncfs, sync, Env, ACCESS_KEY, BUCKET, SECRET_KEY};

/// Header sets other clients left: (key, metadata) with one bad value each.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("d/mtime-1e20.txt", "mtime", "1e20"),
    ("d/mtime-2p64.txt", "mtime", "18446744073709551616"),
    ("d/mtime-abc.txt", "mtime", "abc"),
    ("d/mode-huge.txt", "mode", "99999999999"),
    ("d/uid-negative.txt", "uid", "-5"),
];

const S_IFREG: u32 = 0o100000;

/// The object's LastModified, as the bucket reports it.
fn last_modified(env: &Env, key: &str) -> i64 {
    let out = env
        .rt
        .block_on(env.client.head_object().bucket(BUCKET).key(key).send())
        .unwrap();
    out.last_modified().unwrap().secs()
}

fn body(key: &str) -> Vec<u8> {
    format!("content of {key}").into_bytes()
}

#[test]
fn hostile_metadata_gets_defaults_and_spoils_nothing_beside_it() {
    let env = Env::new();
    let good_mode = (S_IFREG | 0o640).to_string();
    let good = [
        ("mode", good_mode.as_str()),
        ("uid", "1234"),
        ("gid", "5678"),
        ("mtime", "1700000000"),
    ];
    env.put("d/good.txt", &body("d/good.txt"), &good);
    for &(key, name, value) in HOSTILE {
        let mut metadata: Vec<(&str, &str)> =
            good.iter().copied().filter(|(n, _)| *n != name).collect();
        metadata.push((name, value));
        env.put(key, &body(key), &metadata);
    }
    env.put(
        "d/mtime-negative.txt",
        &body("d/mtime-negative.txt"),
        &[("mtime", "-1")],
    );
    // The metadata TTL 0: every open asks the bucket again, and warns at most once.
    let mnt = env.mount_with(BUCKET, &["--metadata-ttl", "0"]);

    let mut names: Vec<String> = std::fs::read_dir(mnt.p("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), HOSTILE.len() + 2, "{names:?}");

    let stat = |key: &str| std::fs::symlink_metadata(mnt.p(key)).unwrap();
    for round in 0..3 {
        for key in names.iter().map(|n| format!("d/{n}")) {
            assert_eq!(
                std::fs::read(mnt.p(&key)).unwrap(),
                body(&key),
                "{key} {round}"
            );
        }
    }
    let good = stat("d/good.txt");
    assert_eq!(
        (good.mode(), good.uid(), good.gid(), good.mtime()),
        (S_IFREG | 0o640, 1234, 5678, 1_700_000_000)
    );
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    for &(key, name, _) in HOSTILE {
        let attr = stat(key);
        let (mode, uid, mtime) = match name {
            "mtime" => (S_IFREG | 0o640, 1234, last_modified(&env, key)),
            "mode" => (S_IFREG | 0o644, 1234, 1_700_000_000),
            _ => (S_IFREG | 0o640, me, 1_700_000_000),
        };
        assert_eq!(
            (attr.mode(), attr.uid(), attr.mtime()),
            (mode, uid, mtime),
            "{key}"
        );
    }
    let before_1970 = stat("d/mtime-negative.txt");
    assert_eq!((before_1970.mtime(), before_1970.mtime_nsec()), (-1, 0));

    let out = s3syncfs(&env, &["verify", mnt.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let log = mnt.log_text();
    for &(key, name, _) in HOSTILE {
        let warned = log
            .lines()
            .filter(|l| l.contains("unusable metadata") && l.contains(key))
            .collect::<Vec<_>>();
        assert_eq!(warned.len(), 1, "{key}: once, not per open: {warned:?}");
        assert!(warned[0].contains(&format!("{name}=")), "{warned:?}");
    }
    assert!(!log.contains("panicked"), "{log}");
    mnt.unmount();
}

#[test]
fn an_mtime_before_1970_goes_to_the_bucket_as_s3fs_writes_it() {
    let env = Env::new();
    let mnt = env.mount();
    let path = mnt.p("old.txt");
    std::fs::write(&path, b"from 1969").unwrap();
    // Whole seconds: fuser 0.18 turns a negative time with nanoseconds from the
    // kernel into the wrong second (its system_time_from_time), before we see it.
    let t = UNIX_EPOCH - Duration::from_secs(14_182_940); // 1969-07-20 20:17:40 UTC
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(t)
        .unwrap();
    sync(&env, &mnt);
    assert_eq!(env.get("old.txt").unwrap().1["mtime"], "-14182940");
    mnt.unmount();
    let again = env.mount();
    let attr = std::fs::metadata(again.p("old.txt")).unwrap();
    assert_eq!((attr.mtime(), attr.mtime_nsec()), (-14_182_940, 0));
    again.unmount();
}

#[test]
fn symlink_targets_past_what_the_kernel_takes() {
    let env = Env::new();
    let link = (0o120000 | 0o777u32).to_string();
    env.put("remote-long", &vec![b'x'; 5000], &[("mode", &link)]);
    env.put("remote-fits", &vec![b'y'; 4095], &[("mode", &link)]);
    let mnt = env.mount();

    let too_long = "t".repeat(5000);
    let err = std::os::unix::fs::symlink(&too_long, mnt.p("local-long")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
    let longest = "t".repeat(4095);
    std::os::unix::fs::symlink(&longest, mnt.p("local-longest")).unwrap();
    assert_eq!(
        std::fs::read_link(mnt.p("local-longest"))
            .unwrap()
            .as_os_str()
            .len(),
        4095
    );

    // Listed, stat'ed; readlink of the one too long is EIO, the other works.
    let attr = std::fs::symlink_metadata(mnt.p("remote-long")).unwrap();
    assert!(attr.file_type().is_symlink());
    let err = std::fs::read_link(mnt.p("remote-long")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = std::fs::read_link(mnt.p("remote-long")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        std::fs::read_link(mnt.p("remote-fits"))
            .unwrap()
            .as_os_str()
            .len(),
        4095
    );
    sync(&env, &mnt);
    assert_eq!(env.get("local-longest").unwrap().0, longest.as_bytes());

    let log = mnt.log_text();
    assert!(!log.contains("failed to send"), "{log}");
    let said = log
        .lines()
        .filter(|l| l.contains("readlink") && l.contains("remote-long"))
        .count();
    assert_eq!(said, 2, "one line per readlink: {log}");
    mnt.unmount();
}

/// A mount with the credentials in `env` (or `creds`), daemonized as users run it.
fn mount_fails(env: &Env, endpoint: &str, bucket: &str, creds: (&str, &str)) -> String {
    let mnt = env.dir.path().join("never-mounted");
    std::fs::create_dir_all(&mnt).unwrap();
    static ATTEMPT: AtomicUsize = AtomicUsize::new(0);
    let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
    let cache = env.dir.path().join(format!("failed-cache-{n}"));
    let out = Command::new(env!("CARGO_BIN_EXE_s3syncfs"))
        .args(["mount", bucket])
        .arg(&mnt)
        .args([
            "--endpoint",
            endpoint,
            "--path-style",
            "--request-timeout",
            "2",
        ])
        .arg("--cache-dir")
        .arg(&cache)
        .env("AWS_ACCESS_KEY_ID", creds.0)
        .env("AWS_SECRET_ACCESS_KEY", creds.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "mounted: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default().to_string();
    for debug_mark in ["{", "Some(", "Failure", "Error(", "kind:", "Os {"] {
        assert!(!first.contains(debug_mark), "a Debug dump: {first}");
    }
    first
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port on 127.0.0.1 that accepts connections and never answers.
fn silent_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    endpoint
}

#[test]
fn mount_failures_are_sentences_with_a_next_step() {
    let env = Env::new();
    let creds = (ACCESS_KEY, SECRET_KEY);
    let said = mount_fails(&env, "http://127.0.0.1:1", BUCKET, creds);
    assert!(
        said.starts_with("s3syncfs: cannot reach http://127.0.0.1:1: connection refused: is the endpoint URL right"),
        "{said}"
    );
    let said = mount_fails(
        &env,
        &env.endpoint,
        BUCKET,
        ("wrong-access-key", "wrong-secret"),
    );
    assert!(said.contains("refused the credentials"), "{said}");
    assert!(said.contains("check the access key and secret"), "{said}");
    let said = mount_fails(&env, &env.endpoint, "no-such-bucket", creds);
    assert!(said.contains("does not exist"), "{said}");
    assert!(said.contains("check the bucket name"), "{said}");
    let tls = env.endpoint.replace("http://", "https://");
    let said = mount_fails(&env, &tls, BUCKET, creds);
    assert!(said.contains("the TLS handshake failed"), "{said}");
    assert!(
        said.contains("check that the endpoint speaks https"),
        "{said}"
    );
    let said = mount_fails(&env, &silent_endpoint(), BUCKET, creds);
    assert!(said.contains("is the endpoint up and reachable"), "{said}");
}

#[test]
fn no_secret_reaches_the_log_at_trace_level() {
    let env = Env::new();
    let key_file = env.dir.path().join("sse-c.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sse_c = format!("sse_c_key_file={}", key_file.display());
    let mnt = env.mount_with(BUCKET, &["-o", &sse_c, "--log-level", "trace"]);
    // PUT, multipart upload, copy (rename), HEAD, ranged GET, LIST, DELETE.
    std::fs::write(mnt.p("small.txt"), b"secret").unwrap();
    std::fs::write(mnt.p("big.bin"), vec![5u8; 17 << 20]).unwrap();
    sync(&env, &mnt);
    std::fs::rename(mnt.p("small.txt"), mnt.p("renamed.txt")).unwrap();
    sync(&env, &mnt);
    let log = mnt.log_text();
    mnt.unmount();
    let again = env.mount_with(BUCKET, &["-o", &sse_c, "--log-level", "trace"]);
    assert_eq!(std::fs::read(again.p("renamed.txt")).unwrap(), b"secret");
    let log = log + &again.log_text();
    again.unmount();

    assert!(log.contains("signing request"), "the SDK's trace is there");
    let key_base64 = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    for secret in [key_base64, ACCESS_KEY, SECRET_KEY] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(2).collect();
        assert!(lines.is_empty(), "{secret} in the log: {lines:?}");
    }
    assert!(log.contains("** redacted **"));
}
