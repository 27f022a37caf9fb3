//! Field faults through a real mount: between the mount and either server, the proxy
//! loses the reply to one request the server did carry out (PutObject, the
//! CompleteMultipartUpload of a big file, the CopyObject of a rename, a DeleteObject),
//! and the bucket must still end up holding exactly the files written, with no
//! conflict copy of them.

use std::collections::BTreeMap;
use std::fs;

use crate::support::{pattern, s3syncfs, text, Env, FaultProxy, Match, Mode, Mount, S3Op, Times};

/// Twenty small files and two of 40 MiB (multipart) go up; then `small-00.txt` is
/// renamed to `renamed-00.txt` (a CopyObject and a DeleteObject) and `small-01.txt`
/// is removed (a DeleteObject). `fault` loses the reply to the first request of that
/// operation on a key holding that text.
fn write_sync_rename_delete(env: Env, fault: Option<(S3Op, &str)>) {
    let proxy = FaultProxy::start(&env.endpoint);
    let rule = fault.map(|(op, key)| {
        proxy.add(
            Match::op(op).key_contains(key),
            Mode::CommitThenLose,
            Times::First(1),
        )
    });
    let mnt = env.mount_via(&proxy.endpoint, &[]);
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let body = format!("small file {i}\n").repeat(i + 1).into_bytes();
        fs::write(mnt.p(&format!("small-{i:02}.txt")), &body).unwrap();
        expected.insert(format!("small-{i:02}.txt"), body);
    }
    for i in 0..2u8 {
        let data = pattern(40 << 20, 10 + i);
        fs::write(mnt.p(&format!("big-{i}.bin")), &data).unwrap();
        expected.insert(format!("big-{i}.bin"), data);
    }
    check_sync(&env, &mnt, &proxy, "after writing");
    fs::rename(mnt.p("small-00.txt"), mnt.p("renamed-00.txt")).unwrap();
    let moved = expected.remove("small-00.txt").unwrap();
    expected.insert("renamed-00.txt".into(), moved);
    fs::remove_file(mnt.p("small-01.txt")).unwrap();
    expected.remove("small-01.txt");
    check_sync(&env, &mnt, &proxy, "after the rename and the delete");

    if let (Some(rule), Some((op, key))) = (rule, fault) {
        assert_eq!(
            proxy.injected(rule),
            1,
            "no {op:?} on a key with {key:?} lost its reply: the test did not test it"
        );
    }
    let keys = env.keys();
    assert!(
        keys.iter().eq(expected.keys()),
        "{}",
        report(
            &env,
            &mnt,
            &proxy,
            "the bucket holds other keys than written"
        )
    );
    for (key, body) in &expected {
        let got = env.get(key).unwrap().0;
        assert!(
            &got == body,
            "{key} in the bucket: {} bytes, other content",
            got.len()
        );
    }
    for (key, body) in &expected {
        assert!(&fs::read(mnt.p(key)).unwrap() == body, "{key} in the mount");
    }
    mnt.unmount();
}

/// `s3syncfs sync`; on failure, panics with what the bucket and the daemon's log say
/// (the mount is left to Drop: a daemon that cannot finish its uploads would not let
/// an unmount return).
fn check_sync(env: &Env, mnt: &Mount, proxy: &FaultProxy, when: &str) {
    let out = s3syncfs(
        env,
        &["sync", mnt.path.to_str().unwrap(), "--timeout", "60"],
    );
    if !out.status.success() {
        panic!(
            "{}",
            report(
                env,
                mnt,
                proxy,
                &format!("sync {when} failed: {}", text(&out).trim())
            )
        );
    }
}

/// What went wrong, the bucket's keys, the requests the proxy saw, and the daemon's
/// warnings (abridged).
fn report(env: &Env, mnt: &Mount, proxy: &FaultProxy, what: &str) -> String {
    let keys = env.keys();
    let (conflicts, others): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.contains(".conflict-"));
    // Conflict copies of conflict copies get long names; a few tell the story.
    let some_conflicts: Vec<String> = conflicts
        .iter()
        .take(3)
        .map(|k| k.chars().take(120).collect())
        .collect();
    let log = mnt.log_text();
    let warnings: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .take(20)
        .map(|l| l.chars().take(400).collect())
        .collect();
    let seen: Vec<String> = [
        S3Op::PutObject,
        S3Op::CreateMultipartUpload,
        S3Op::CompleteMultipartUpload,
        S3Op::CopyObject,
        S3Op::DeleteObject,
        S3Op::HeadObject,
    ]
    .iter()
    .map(|op| format!("{op:?} {}", proxy.seen(*op)))
    .collect();
    // Refused requests as moto logged them (the test server logs nothing).
    let server_log = env.server_log();
    let refused: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains("\" 4") || l.contains("\" 5"))
        .take(10)
        .collect();
    format!(
        "on {}: {what}\n{} conflict copies, first: {some_conflicts:?}\nother keys: {others:?}\n\
         requests: {}\nrefused by the server: {refused:#?}\ndaemon warnings:\n{}",
        env.server_name(),
        conflicts.len(),
        seen.join(", "),
        warnings.join("\n")
    )
}

#[test]
fn no_fault_testserver() {
    write_sync_rename_delete(Env::new(), None);
}

#[test]
fn no_fault_moto() {
    write_sync_rename_delete(Env::moto(), None);
}

#[test]
fn lost_put_object_reply_testserver() {
    write_sync_rename_delete(Env::new(), Some((S3Op::PutObject, "small-05")));
}

#[test]
fn lost_put_object_reply_moto() {
    write_sync_rename_delete(Env::moto(), Some((S3Op::PutObject, "small-05")));
}

#[test]
fn lost_complete_multipart_reply_testserver() {
    write_sync_rename_delete(Env::new(), Some((S3Op::CompleteMultipartUpload, "big-0")));
}

#[test]
fn lost_complete_multipart_reply_moto() {
    write_sync_rename_delete(Env::moto(), Some((S3Op::CompleteMultipartUpload, "big-0")));
}

#[test]
fn lost_copy_object_reply_of_a_rename_testserver() {
    write_sync_rename_delete(Env::new(), Some((S3Op::CopyObject, "renamed-00")));
}

#[test]
fn lost_copy_object_reply_of_a_rename_moto() {
    write_sync_rename_delete(Env::moto(), Some((S3Op::CopyObject, "renamed-00")));
}

#[test]
fn lost_delete_object_reply_testserver() {
    write_sync_rename_delete(Env::new(), Some((S3Op::DeleteObject, "small-01")));
}

#[test]
fn lost_delete_object_reply_moto() {
    write_sync_rename_delete(Env::moto(), Some((S3Op::DeleteObject, "small-01")));
}
