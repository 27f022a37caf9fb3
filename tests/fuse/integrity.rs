//! `s3syncfs verify`: the migration workflow's last step, and what it reports when the
//! bucket and the mount disagree.

use std::fs;

use crate::support::{pattern, s3syncfs, Env, Mount, BUCKET};

fn verify(env: &Env, mnt: &Mount, extra: &[&str]) -> (bool, String, serde_json::Value) {
    let mut args = vec!["verify", mnt.path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let plain = s3syncfs(env, &args);
    args.push("--json");
    let json = s3syncfs(env, &args);
    assert_eq!(plain.status.success(), json.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&plain.stderr)
    );
    let report = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stderr)));
    (plain.status.success(), text, report)
}

#[test]
fn copy_sync_verify_then_catch_changes_behind_the_mount() {
    let env = Env::new();
    let mnt = env.mount_with(
        BUCKET,
        &["--poll-interval", "0", "--upload-delay-ms", "600000"],
    );
    fs::create_dir(mnt.p("docs")).unwrap();
    fs::write(mnt.p("docs/a.txt"), b"alpha").unwrap();
    fs::write(mnt.p("docs/big.bin"), pattern(20 << 20, 9)).unwrap();
    fs::write(mnt.p("top.txt"), b"top").unwrap();
    let out = s3syncfs(&env, &["sync", mnt.path.to_str().unwrap()]);
    assert!(out.status.success());

    let (ok, text, report) = verify(&env, &mnt, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("3 files"), "{text}");
    assert!(text.contains("0 differences, 0 pending"), "{text}");
    assert_eq!(report["content_checked"], 3, "{report}");

    // Pending changes are reported but are no failure.
    fs::write(mnt.p("docs/new.txt"), b"not yet up").unwrap();
    let (ok, text, _) = verify(&env, &mnt, &["docs"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("pending") && text.contains("docs/new.txt"),
        "{text}"
    );

    // Another client changes and adds objects: verify says so at once and fails.
    env.put("docs/a.txt", b"changed elsewhere", &[]);
    env.put("docs/extra.txt", b"added elsewhere", &[]);
    let (ok, text, report) = verify(&env, &mnt, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("remote newer") && text.contains("docs/a.txt"),
        "{text}"
    );
    assert!(
        text.contains("missing in mount") && text.contains("docs/extra.txt"),
        "{text}"
    );
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["remote_newer", "missing_in_mount", "pending"],
        "{report}"
    );

    // A path outside the tree is an error, not a report.
    let out = s3syncfs(&env, &["verify", mnt.path.to_str().unwrap(), "no/such"]);
    assert!(!out.status.success());
    mnt.unmount();
}

#[test]
fn deep_verify_reads_every_byte() {
    let env = Env::new();
    env.put("one.bin", &pattern(300_000, 1), &[]);
    env.put("two.bin", &pattern(5_000, 2), &[]);
    let mnt = env.mount_with(BUCKET, &["--poll-interval", "0"]);
    let (ok, _, report) = verify(&env, &mnt, &[]);
    assert!(ok);
    assert_eq!(
        report["content_checked"], 0,
        "nothing cached: versions only"
    );
    let (ok, text, report) = verify(&env, &mnt, &["--deep"]);
    assert!(ok, "{text}");
    assert_eq!(report["content_checked"], 2, "{report}");
    mnt.unmount();
}
