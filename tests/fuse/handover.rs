//! `umount` then `mount` at once with the same cache dir: the new mount asks the old
//! daemon, still uploading after its unmount, to hand over, and takes over its queue.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{
    is_mounted, pattern, s3syncfs, text, unmount_when_free, wait_until, Env, FaultProxy,
    ACCESS_KEY, BUCKET, SECRET_KEY,
};

const ROUNDS: usize = 20;

/// Transfers under way in the daemon of `mnt` (`s3syncfs status`).
fn in_flight(env: &Env, mnt: &Path) -> u64 {
    let out = s3syncfs(env, &["status", mnt.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "status failed: {}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["uploads_in_flight"].as_u64().unwrap()
}

/// Every file at the top of `dir`, with its content.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let body = fs::read(e.path()).unwrap_or_else(|err| panic!("reading {name}: {err}"));
            (name, body)
        })
        .collect()
}

#[test]
fn remounting_at_once_takes_over_pending_uploads_and_loses_nothing() {
    let env = Env::new();
    let mnt = env.dir.path().join("handover-mnt");
    let cache = env.dir.path().join("handover-cache");
    let mut want = BTreeMap::new();
    // The daemon of the round before, still uploading, and its endpoint.
    let mut previous: Option<(crate::support::Draining, FaultProxy, bool)> = None;
    for round in 0..ROUNDS {
        // Most rounds freeze the endpoint, so the old daemon's uploads hang and only a
        // handover ends them; every fourth keeps it answering, so a handover may cut
        // uploads short that the bucket has (or has partly) received.
        let frozen = round % 4 != 3;
        let proxy = FaultProxy::start(&env.endpoint);
        let endpoint = proxy.endpoint.clone();
        let extra = ["--endpoint", &endpoint, "--poll-interval", "0"];
        let mount = env.mount_at(BUCKET, &mnt, &cache, &extra);
        if let Some((draining, _endpoint, was_frozen)) = previous.take() {
            draining.wait_exit();
            // Its bucket never answered: it handed over rather than finish.
            assert!(
                !was_frozen
                    || mount
                        .log_text()
                        .contains("waiting for the previous s3syncfs"),
                "round {round}: no handover: {}",
                mount.log_text()
            );
        }
        // Listed while the endpoint answers: new names are then known absent locally.
        fs::read_dir(&mount.path).unwrap().count();
        proxy.freeze(frozen);
        for i in 0..3 {
            let name = format!("r{round:02}-{i}.bin");
            let len = if frozen {
                1000 + round * 7_919 + i * 60_000
            } else {
                3 << 20
            };
            let body = pattern(len, (round * 3 + i) as u8);
            fs::write(mount.p(&name), &body).unwrap();
            want.insert(name, body);
        }
        let shared = format!("shared, last written in round {round}").into_bytes();
        fs::write(mount.p("shared.txt"), &shared).unwrap();
        want.insert("shared.txt".into(), shared);
        if round > 0 {
            let gone = format!("r{:02}-0.bin", round - 1);
            fs::remove_file(mount.p(&gone)).unwrap();
            want.remove(&gone);
        }
        if frozen {
            wait_until("uploads hang on the frozen endpoint", || {
                in_flight(&env, &mount.path) > 0
            });
        }
        // Names only: clean files' bytes are in the bucket, behind the frozen endpoint.
        let names: Vec<String> = fs::read_dir(&mount.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            names,
            want.keys().cloned().collect::<Vec<_>>(),
            "round {round}"
        );
        previous = Some((mount.unmount_no_wait(), proxy, frozen));
    }
    let mount = env.mount_at(BUCKET, &mnt, &cache, &[]);
    if let Some((draining, _endpoint, _)) = previous.take() {
        draining.wait_exit();
    }
    assert_eq!(files_in(&mount.path), want);
    crate::support::sync(&env, &mount);
    mount.unmount();
    let in_bucket: BTreeMap<String, Vec<u8>> = env
        .keys()
        .into_iter()
        .map(|key| {
            let body = env.get(&key).unwrap().0;
            (key, body)
        })
        .collect();
    assert_eq!(
        in_bucket.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (key, body) in &want {
        assert!(&in_bucket[key] == body, "{key}: wrong bytes in the bucket");
    }
}

/// Arguments of a mount of `cache` at `mnt` through `endpoint` (daemonized).
fn mount_args(endpoint: &str, mnt: &Path, cache: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["mount", BUCKET].map(String::from).to_vec();
    args.push(mnt.display().to_string());
    for arg in [
        "--endpoint",
        endpoint,
        "--path-style",
        "--poll-interval",
        "0",
    ] {
        args.push(arg.into());
    }
    args.push("--cache-dir".into());
    args.push(cache.display().to_string());
    args
}

fn run(env: &Env, args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s3syncfs(env, &args)
}

#[test]
fn a_cache_dir_still_mounted_is_refused_with_its_mountpoint_and_pid() {
    let env = Env::new();
    let cache = env.dir.path().join("busy-cache");
    let mnt = env.dir.path().join("busy-mnt");
    let mount = env.mount_at(BUCKET, &mnt, &cache, &[]);
    let other = env.dir.path().join("other-mnt");
    fs::create_dir(&other).unwrap();
    let daemonized = run(&env, &mount_args(&env.endpoint, &other, &cache));
    let mut foreground = mount_args(&env.endpoint, &other, &cache);
    foreground.push("--foreground".into());
    let foreground = run(&env, &foreground);
    for out in [daemonized, foreground] {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(said.contains(&format!("(pid {})", mount.pid())), "{said}");
        assert!(
            said.contains(&format!("mounted at {}", mnt.display())),
            "{said}"
        );
        assert!(said.contains("unmount that first"), "{said}");
        assert!(!said.contains("waiting for"), "{said}");
        assert!(!is_mounted(&other));
    }
    // The mounted daemon goes on serving.
    fs::write(mount.p("still.txt"), b"still served").unwrap();
    mount.unmount();
    assert_eq!(env.get("still.txt").unwrap().0, b"still served");
}

/// A daemon started by a daemonizing mount (not our child): found by the pid in its
/// cache dir's lock file; detached and waited for (bounded) when the test ends.
struct Daemonized {
    mnt: PathBuf,
    pid: u32,
}

impl Daemonized {
    fn of(mnt: &Path, cache: &Path) -> Daemonized {
        let pid = fs::read_to_string(cache.join("lock")).unwrap();
        Daemonized {
            mnt: mnt.to_path_buf(),
            pid: pid.trim().parse().unwrap(),
        }
    }

    /// Gone, or a zombie its new parent has not reaped yet.
    fn exited(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
    }

    fn unmount_no_wait(&self) {
        let out = unmount_when_free(Command::new("fusermount3").arg("-u").arg(&self.mnt));
        assert!(
            out.status.success(),
            "fusermount3 -u failed: {}",
            text(&out)
        );
    }
}

impl Drop for Daemonized {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        for _ in 0..400 {
            if self.exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: kill(2) on the pid of a daemon this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

#[test]
fn the_daemonizing_mount_and_the_mount_helper_wait_for_the_handover_and_say_so() {
    let env = Env::new();
    let mnt = env.dir.path().join("helper-mnt");
    let cache = env.dir.path().join("helper-cache");
    let first_proxy = FaultProxy::start(&env.endpoint);
    let first = env.mount_at(BUCKET, &mnt, &cache, &["--endpoint", &first_proxy.endpoint]);
    fs::read_dir(&first.path).unwrap().count();
    first_proxy.freeze(true);
    fs::write(first.p("first.txt"), b"written through the first mount").unwrap();
    wait_until("the upload hangs", || in_flight(&env, &first.path) > 0);
    let first_pid = first.pid();
    let first = first.unmount_no_wait();

    // `s3syncfs mount`: the parent relays the daemon's waiting line, then returns.
    let second_proxy = FaultProxy::start(&env.endpoint);
    let out = run(&env, &mount_args(&second_proxy.endpoint, &mnt, &cache));
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "waiting for the previous s3syncfs (pid {first_pid}) to hand over {}",
            cache.display()
        )),
        "{said}"
    );
    first.wait_exit();
    let second = Daemonized::of(&mnt, &cache);
    fs::read_dir(&mnt).unwrap().count();
    second_proxy.freeze(true);
    fs::write(mnt.join("second.txt"), b"written through the second mount").unwrap();
    wait_until("the upload hangs", || in_flight(&env, &mnt) > 0);
    second.unmount_no_wait();

    // mount.s3syncfs, as mount(8) runs it for an fstab line.
    let helper = env.dir.path().join("mount.s3syncfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_s3syncfs"), &helper).unwrap();
    let options = format!(
        "rw,endpoint={},path_style,poll_interval=0,cache_dir={}",
        env.endpoint,
        cache.display()
    );
    let out = Command::new(&helper)
        .args([BUCKET, mnt.to_str().unwrap(), "-o", &options])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "waiting for the previous s3syncfs (pid {})",
            second.pid
        )),
        "{said}"
    );
    wait_until("the second daemon exits", || second.exited());
    let third = Daemonized::of(&mnt, &cache);
    assert_ne!(third.pid, second.pid);
    let out = s3syncfs(&env, &["sync", mnt.to_str().unwrap(), "--timeout", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.get("first.txt").unwrap().0,
        b"written through the first mount"
    );
    assert_eq!(
        env.get("second.txt").unwrap().0,
        b"written through the second mount"
    );
    third.unmount_no_wait();
    wait_until("the last daemon exits", || third.exited());
}
