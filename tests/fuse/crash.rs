//! kill -9 at arbitrary moments: every file closed before the kill is in the mount
//! right after the remount, and the bucket matches at the end.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::support::{pattern, Env, FaultProxy, BUCKET};

/// A small deterministic generator (no dependency needed for test randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DIRS: [&str; 3] = ["", "d1/", "d2/"];

fn random_name(rng: &mut Lcg) -> String {
    format!("{}f{}", DIRS[rng.below(3) as usize], rng.below(12))
}

fn random_body(rng: &mut Lcg) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=5 => rng.below(4096) as usize + 1,
        6..=8 => rng.below(300_000) as usize,
        _ => (2 << 20) + rng.below(100_000) as usize,
    };
    pattern(len, rng.below(250) as u8)
}

/// Every regular file under `root`, with its content.
fn snapshot(root: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type()?.is_dir() {
                stack.push((entry.path(), format!("{name}/")));
            } else {
                let body = fs::read(entry.path())
                    .map_err(|e| std::io::Error::other(format!("reading {name}: {e}")))?;
                files.insert(name, body);
            }
        }
    }
    Ok(files)
}

/// Names whose content differs, is missing or is extra, for a readable failure.
fn differences(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, body) in want {
        match got.get(name) {
            None => out.push(format!("missing {name} ({} bytes)", body.len())),
            Some(b) if b != body => {
                out.push(format!("{name}: {} bytes, want {}", b.len(), body.len()))
            }
            Some(_) => {}
        }
    }
    for (name, body) in got {
        if !want.contains_key(name) {
            out.push(format!("extra {name} ({} bytes)", body.len()));
        }
    }
    out
}

fn burst(root: &Path, model: &mut BTreeMap<String, Vec<u8>>, rng: &mut Lcg, ops: &mut Vec<String>) {
    for _ in 0..25 {
        let existing: Vec<String> = model.keys().cloned().collect();
        let pick = |rng: &mut Lcg| existing[rng.below(existing.len() as u64) as usize].clone();
        match rng.below(10) {
            0..=4 => {
                let (name, body) = (random_name(rng), random_body(rng));
                fs::write(root.join(&name), &body).unwrap();
                ops.push(format!("write {name} {}", body.len()));
                model.insert(name, body);
            }
            5 | 6 if !existing.is_empty() => {
                let (from, to) = (pick(rng), random_name(rng));
                fs::rename(root.join(&from), root.join(&to)).unwrap();
                ops.push(format!("rename {from} {to}"));
                let body = model.remove(&from).unwrap();
                model.insert(to, body);
            }
            7 | 8 if !existing.is_empty() => {
                let name = pick(rng);
                fs::remove_file(root.join(&name)).unwrap();
                ops.push(format!("delete {name}"));
                model.remove(&name);
            }
            9 if !existing.is_empty() => {
                let name = pick(rng);
                let body = model.get_mut(&name).unwrap();
                let at = rng.below(body.len() as u64 + 1);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(root.join(&name))
                    .unwrap();
                f.seek(SeekFrom::Start(at)).unwrap();
                f.write_all(b"patch").unwrap();
                ops.push(format!("patch {name} at {at}"));
                let end = (at as usize + 5).max(body.len());
                body.resize(end, 0);
                body[at as usize..at as usize + 5].copy_from_slice(b"patch");
            }
            _ => {}
        }
    }
}

#[test]
fn closed_files_survive_repeated_kill_9() {
    let env = Env::new();
    let mnt = env.dir.path().join("crash-mnt");
    let cache = env.dir.path().join("crash-cache");
    let mut model = BTreeMap::new();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Lcg(seed);
    let mut ops = Vec::new();
    // Through a proxy, so one cycle can run (and be killed) with the server frozen.
    let proxy = FaultProxy::start(&env.endpoint);
    let via_proxy = [
        "--upload-delay-ms",
        "30",
        "--endpoint",
        &proxy.endpoint,
        "--request-timeout",
        "3",
    ];
    const FROZEN_CYCLE: usize = 4;
    let mut last_log = String::new();
    for cycle in 0..10 {
        let mount = env.mount_at(BUCKET, &mnt, &cache, &via_proxy);
        if cycle == 0 {
            fs::create_dir(mount.p("d1")).unwrap();
            fs::create_dir(mount.p("d2")).unwrap();
        }
        let seen = snapshot(&mount.path)
            .unwrap_or_else(|e| panic!("{e}\nops: {ops:#?}\n{}", mount.log_text()));
        let diff = differences(&seen, &model);
        assert!(
            diff.is_empty(),
            "after crash {cycle}: {diff:?}\nops: {ops:#?}\nbucket: {:?}\n\
             the killed daemon's log:\n{last_log}\nthis one's:\n{}",
            env.keys(),
            mount.log_text()
        );
        if cycle == FROZEN_CYCLE {
            // Requests hang unanswered: uploads stall mid-flight when the kill comes.
            proxy.freeze(true);
            ops.push("--- server frozen".into());
        }
        burst(&mount.path, &mut model, &mut rng, &mut ops);
        ops.push(format!("--- kill after cycle {cycle}"));
        // Let some uploads run (or not) so the kill lands at different points.
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        last_log = mount.kill9_with_log();
        proxy.freeze(false);
    }
    let mount = env.mount_at(BUCKET, &mnt, &cache, &[]);
    let seen = snapshot(&mount.path).unwrap_or_else(|e| panic!("{e}\n{}", mount.log_text()));
    let diff = differences(&seen, &model);
    assert!(
        diff.is_empty(),
        "at the end: {diff:?}\nops: {ops:#?}\nthe last killed daemon's log:\n{last_log}"
    );
    mount.unmount();
    let mut expected: Vec<String> = model.keys().cloned().collect();
    expected.extend(["d1/".to_string(), "d2/".to_string()]);
    expected.sort();
    assert_eq!(env.keys(), expected, "bucket keys differ from the model");
    for (name, body) in &model {
        let got = env.get(name).unwrap().0;
        assert!(
            &got == body,
            "bucket content of {name}: {} bytes, want {}",
            got.len(),
            body.len()
        );
    }
}

#[test]
fn a_partial_edit_whose_upload_may_have_landed_before_a_crash_still_goes_up() {
    let env = Env::new();
    let (mnt, cache) = (env.dir.path().join("m"), env.dir.path().join("c"));
    let old = pattern(8 << 20, 1);
    env.put("part.bin", &old, &[]);
    let proxy = FaultProxy::start(&env.endpoint);
    let via_proxy = ["--endpoint", &proxy.endpoint, "--upload-delay-ms", "300"];
    let mount = env.mount_at(BUCKET, &mnt, &cache, &via_proxy);
    crate::support::write_in_place(&mount.p("part.bin"), 0, b"edited here");
    // The upload starts with the server unreachable, and the daemon dies in it.
    proxy.freeze(true);
    std::thread::sleep(Duration::from_millis(600));
    mount.kill9();
    assert_eq!(
        env.get("part.bin").unwrap().0,
        old,
        "the upload went through too early"
    );
    // As if its PUT had landed after all: the bucket holds our own bytes, a new ETag.
    let mut ours = old.clone();
    ours[..11].copy_from_slice(b"edited here");
    env.put("part.bin", &ours, &[]);
    proxy.freeze(false);
    // The restart cannot tell whose version that is and uploads again, filling the
    // bytes it never fetched from whatever the bucket holds.
    let mount = env.mount_at(BUCKET, &mnt, &cache, &[]);
    crate::support::sync(&env, &mount);
    assert!(
        env.get("part.bin").unwrap().0 == ours,
        "the bucket holds another part.bin"
    );
    assert!(
        fs::read(mount.p("part.bin")).unwrap() == ours,
        "the mount holds another part.bin"
    );
    mount.unmount();
}

#[test]
fn a_file_renamed_over_one_still_open_survives_a_kill_9() {
    let env = Env::new();
    let (mnt, cache) = (env.dir.path().join("m"), env.dir.path().join("c"));
    env.put("y.bin", &pattern(300_000, 3), &[]);
    // No uploads before the kill: the state alone must carry the rename.
    let slow = ["--upload-delay-ms", "60000"];
    let mount = env.mount_at(BUCKET, &mnt, &cache, &slow);
    let mut replaced = fs::File::create(mount.p("f.bin")).unwrap();
    replaced.write_all(b"replaced").unwrap();
    fs::rename(mount.p("y.bin"), mount.p("f.bin")).unwrap();
    // The replaced file's RELEASE comes after the rename.
    drop(replaced);
    fs::write(mount.p("y.bin"), b"a new y").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    mount.kill9();
    let mount = env.mount_at(BUCKET, &mnt, &cache, &[]);
    assert!(
        fs::read(mount.p("f.bin")).ok() == Some(pattern(300_000, 3)),
        "the renamed file is lost or damaged:\n{}",
        mount.log_text()
    );
    assert_eq!(fs::read(mount.p("y.bin")).unwrap(), b"a new y");
    crate::support::sync(&env, &mount);
    assert!(
        env.get("f.bin").unwrap().0 == pattern(300_000, 3),
        "f.bin in the bucket"
    );
    assert_eq!(env.get("y.bin").unwrap().0, b"a new y");
    mount.unmount();
}
