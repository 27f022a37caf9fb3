//! `s3syncfs doctor`: each failure it knows is named, with a non-zero exit; a healthy
//! setup against the test server passes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{Env, ACCESS_KEY, BUCKET, SECRET_KEY};

struct Outcome {
    code: Option<i32>,
    out: String,
}

/// Runs doctor on `source` at the test server (path style, a private fstab) with
/// `extra` options and the test credentials unless `key` replaces them.
fn doctor(env: &Env, source: Option<&str>, extra: &[&str], key: Option<&str>) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3syncfs"));
    command.arg("doctor");
    if let Some(source) = source {
        command
            .arg(source)
            .args(["--endpoint", &env.endpoint, "--path-style"]);
    }
    let output = command
        .args(["--request-timeout", "5"])
        .arg("--fstab")
        .arg(env.dir.path().join("fstab"))
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", key.unwrap_or(ACCESS_KEY))
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Outcome {
        code: output.status.code(),
        out,
    }
}

fn cache(env: &Env, name: &str) -> String {
    env.dir.path().join(name).display().to_string()
}

/// The check `name` FAILed with `needle` in its line, and doctor exited 1.
fn assert_fails(outcome: &Outcome, name: &str, needle: &str) {
    assert_eq!(outcome.code, Some(1), "{}", outcome.out);
    let line = outcome
        .out
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains(name) && l.contains(needle));
    assert!(
        line.is_some(),
        "no FAIL of {name} with {needle:?} in:\n{}",
        outcome.out
    );
}

#[test]
fn a_healthy_setup_passes_and_leaves_nothing_behind() {
    let env = Env::new();
    let outcome = doctor(
        &env,
        Some(BUCKET),
        &["--cache-dir", &cache(&env, "c")],
        None,
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.out);
    for line in [
        "OK   dns: 127.0.0.1 is an address",
        "OK   tcp:",
        "OK   credentials: from the environment",
        "OK   bucket: test-bucket lists",
        "OK   clock:",
        "OK   conditional writes: honoured",
        "OK   write: a probe object was written and deleted",
        "OK   cache dir:",
        "OK   fstab: no ",
    ] {
        assert!(
            outcome.out.contains(line),
            "no {line:?} in:\n{}",
            outcome.out
        );
    }
    assert!(!outcome.out.contains("FAIL"), "{}", outcome.out);
    assert!(
        env.get(".s3syncfs-probe").is_none(),
        "the probe object stayed"
    );
    assert!(
        !env.dir.path().join("c").exists(),
        "doctor made the cache dir"
    );
    // ro: nothing is written at all.
    let outcome = doctor(
        &env,
        Some(BUCKET),
        &["-o", "ro", "--cache-dir", &cache(&env, "c")],
        None,
    );
    assert!(
        outcome.out.contains("OK   write: skipped: ro"),
        "{}",
        outcome.out
    );
}

#[test]
fn each_failure_is_named_and_fails_the_exit() {
    let env = Env::new();
    let dead = doctor(
        &env,
        Some(BUCKET),
        &[
            "--endpoint",
            "http://127.0.0.1:1",
            "--cache-dir",
            &cache(&env, "c"),
        ],
        None,
    );
    assert_fails(&dead, "tcp", "cannot connect to 127.0.0.1 port 1");

    let wrong_key = doctor(
        &env,
        Some(BUCKET),
        &["--cache-dir", &cache(&env, "c")],
        Some("wrong"),
    );
    assert_fails(&wrong_key, "bucket", "refused the credentials");

    let missing = doctor(
        &env,
        Some("no-such-bucket"),
        &["--cache-dir", &cache(&env, "c")],
        None,
    );
    assert_fails(&missing, "bucket", "does not exist");

    // A cache dir that cannot be made (its parent is a file), and one others may write.
    std::fs::write(env.dir.path().join("file"), b"").unwrap();
    let under_file = doctor(
        &env,
        Some(BUCKET),
        &["--cache-dir", &cache(&env, "file/c")],
        None,
    );
    assert_fails(&under_file, "cache dir", "cannot be made");
    let open = env.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = doctor(
        &env,
        Some(BUCKET),
        &["--cache-dir", &cache(&env, "open")],
        None,
    );
    assert_fails(&shared, "cache dir", "is writable by its group and others");

    // --json says the same for scripts.
    let json = doctor(
        &env,
        Some(BUCKET),
        &[
            "--endpoint",
            "http://127.0.0.1:1",
            "--cache-dir",
            &cache(&env, "c"),
            "--json",
        ],
        None,
    );
    assert_eq!(json.code, Some(1), "{}", json.out);
    let checks: serde_json::Value = serde_json::from_str(&json.out).unwrap();
    let tcp = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "tcp")
        .unwrap();
    assert_eq!(tcp["level"], "FAIL", "{tcp}");
}

#[test]
fn bad_fstab_lines_are_named() {
    let env = Env::new();
    let mnt = env.dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let good = format!(
        "_netdev,nofail,endpoint={},path_style,cache_dir={}",
        env.endpoint,
        cache(&env, "c")
    );
    std::fs::write(
        env.dir.path().join("fstab"),
        format!(
            "{BUCKET} {m} s3syncfs {good} 0 0\n\
             {BUCKET}:/a {m} fuse.s3syncfs endpoint={e},cache_dir={c} 0 0\n\
             {BUCKET}:/b {m} s3syncfs _netdev,endpont={e} 0 0\n\
             {BUCKET}:/c {m}\ts3syncfs\n",
            m = mnt.display(),
            e = env.endpoint,
            c = cache(&env, "c2"),
        ),
    )
    .unwrap();
    // No source: every s3syncfs line is checked, and the good one's bucket too.
    let outcome = doctor(&env, None, &[], None);
    assert_fails(&outcome, "fstab:2", "no _netdev");
    assert_fails(&outcome, "fstab:3", "unknown option \"endpont\"");
    assert_fails(&outcome, "fstab:4", "3 fields");
    assert!(
        outcome.out.contains("fstab:1 bucket: test-bucket lists"),
        "{}",
        outcome.out
    );
}
