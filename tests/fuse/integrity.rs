//! `s3syncfs verify`: the migration workflow's last step, and what it reports when the
//! bucket and the mount disagree.

use std::fs;

use crate::support::{on_both_servers, pattern, s3syncfs, Env, Mount, BUCKET};

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

on_both_servers! {
    fn copy_sync_verify_then_catch_changes_behind_the_mount(env: Env) {
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

        // Pending changes are reported but are no failure. (Kept open: a new file
        // goes up 100 ms after its close, whatever the upload delay.)
        let mut new_file = fs::File::create(mnt.p("docs/new.txt")).unwrap();
        std::io::Write::write_all(&mut new_file, b"not yet up").unwrap();
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

        drop(new_file);

        // A path outside the tree is an error, not a report.
        let out = s3syncfs(&env, &["verify", mnt.path.to_str().unwrap(), "no/such"]);
        assert!(!out.status.success());
        mnt.unmount();
    }
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

fn encrypted_round_trip(env: &Env, extra: &[&str]) -> Vec<String> {
    let mnt = env.mount_with(BUCKET, extra);
    fs::write(mnt.p("small.txt"), b"secret").unwrap();
    fs::write(mnt.p("big.bin"), pattern(20 << 20, 5)).unwrap();
    let out = s3syncfs(env, &["sync", mnt.path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(mnt.p("small.txt"), mnt.p("renamed.txt")).unwrap();
    let out = s3syncfs(env, &["sync", mnt.path.to_str().unwrap()]);
    assert!(out.status.success());
    mnt.unmount();
    // A fresh mount reads the objects back (HEAD at open, ranged GETs).
    let again = env.mount_with(BUCKET, extra);
    assert_eq!(fs::read(again.p("renamed.txt")).unwrap(), b"secret");
    assert_eq!(fs::read(again.p("big.bin")).unwrap(), pattern(20 << 20, 5));
    again.unmount();
    env.backend().sse_seen()
}

fn saw(seen: &[String], op: &str, header: &str) -> bool {
    seen.iter()
        .any(|l| l.starts_with(&format!("{op} ")) && l.contains(header))
}

#[test]
fn server_side_encryption_headers_reach_the_server() {
    let env = Env::new();
    let seen = encrypted_round_trip(&env, &["-o", "use_sse=1"]);
    for op in ["put", "create_multipart", "copy"] {
        assert!(
            saw(&seen, op, "sse=AES256"),
            "{op} without SSE-S3: {seen:?}"
        );
    }

    let env = Env::new();
    let seen = encrypted_round_trip(&env, &["-o", "sse=aws:kms,sse_kms_key_id=key-1"]);
    for op in ["put", "create_multipart", "copy"] {
        assert!(
            saw(&seen, op, "sse=aws:kms kms=key-1"),
            "{op} without SSE-KMS: {seen:?}"
        );
    }

    let env = Env::new();
    let key_file = env.dir.path().join("sse-c.key");
    fs::write(&key_file, [7u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();
    let arg = format!("sse_c_key_file={}", key_file.display());
    let seen = encrypted_round_trip(&env, &["-o", &arg]);
    for op in [
        "put",
        "create_multipart",
        "upload_part",
        "copy",
        "get",
        "head",
    ] {
        assert!(
            saw(&seen, op, " c="),
            "{op} without the SSE-C key: {seen:?}"
        );
    }
    assert!(
        saw(&seen, "copy", "source_c="),
        "copy without the source key: {seen:?}"
    );
}
