//! The fault proxy itself, driven by a plain S3 client (one attempt per request, so
//! every fault reaches it) against the test server, and by raw sockets against a
//! scripted server for the HTTP framing: each fault does what it claims, and requests
//! no rule takes pass unchanged.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

use crate::support::http::{Conn, Framing};
use crate::support::{
    pattern, s3_client, wait_until, Env, FaultProxy, Match, Mode, S3Op, Times, BUCKET,
};

/// A proxy in front of the env's server, and a client that goes through it.
fn through_proxy(env: &Env) -> (FaultProxy, Client) {
    let proxy = FaultProxy::start(&env.endpoint);
    let client = s3_client(&proxy.endpoint, 1);
    (proxy, client)
}

fn put(env: &Env, client: &Client, key: &str, body: &[u8]) -> Result<(), String> {
    env.rt
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(ByteStream::from(body.to_vec()))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

fn head(env: &Env, client: &Client, key: &str) -> bool {
    env.rt
        .block_on(client.head_object().bucket(BUCKET).key(key).send())
        .is_ok()
}

/// The whole body of a GET, or the error that cut it (at the reply or in the body).
fn get(env: &Env, client: &Client, key: &str) -> Result<Vec<u8>, String> {
    env.rt.block_on(async {
        let out = client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let body = out.body.collect().await.map_err(|e| format!("{e:?}"))?;
        Ok(body.to_vec())
    })
}

#[test]
fn requests_no_rule_takes_pass_unchanged_and_are_counted_by_operation() {
    let env = Env::new();
    let (proxy, client) = through_proxy(&env);
    put(&env, &client, "a.txt", b"alpha").unwrap();
    assert!(head(&env, &client, "a.txt"));
    assert_eq!(get(&env, &client, "a.txt").unwrap(), b"alpha");
    env.rt.block_on(async {
        let listed = client
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.contents().len(), 1);
        client
            .copy_object()
            .bucket(BUCKET)
            .key("b.txt")
            .copy_source(format!("{BUCKET}/a.txt"))
            .send()
            .await
            .unwrap();
        let upload = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key("c.bin")
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap();
        let part = client
            .upload_part()
            .bucket(BUCKET)
            .key("c.bin")
            .upload_id(id)
            .part_number(1)
            .body(ByteStream::from(pattern(100_000, 1)))
            .send()
            .await
            .unwrap();
        let parts = CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            )
            .build();
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key("c.bin")
            .upload_id(id)
            .multipart_upload(parts)
            .send()
            .await
            .unwrap();
        client
            .delete_object()
            .bucket(BUCKET)
            .key("a.txt")
            .send()
            .await
            .unwrap();
    });
    for op in [
        S3Op::PutObject,
        S3Op::HeadObject,
        S3Op::GetObject,
        S3Op::ListObjectsV2,
        S3Op::CopyObject,
        S3Op::CreateMultipartUpload,
        S3Op::UploadPart,
        S3Op::CompleteMultipartUpload,
        S3Op::DeleteObject,
    ] {
        assert_eq!(proxy.seen(op), 1, "{op:?}");
    }
    assert_eq!(proxy.seen_total(), 9);
    assert!(
        proxy.connections() < proxy.seen_total(),
        "{} connections for {} sequential requests: no keep-alive",
        proxy.connections(),
        proxy.seen_total()
    );
    assert_eq!(env.keys(), ["b.txt", "c.bin"]);
    assert_eq!(env.get("b.txt").unwrap().0, b"alpha");
    assert_eq!(env.get("c.bin").unwrap().0, pattern(100_000, 1));
}

#[test]
fn commit_then_lose_stores_the_object_but_the_client_hears_nothing() {
    let env = Env::new();
    let (proxy, client) = through_proxy(&env);
    let rule = proxy.add(
        Match::op(S3Op::PutObject),
        Mode::CommitThenLose,
        Times::First(1),
    );
    let err = put(&env, &client, "lost-reply.txt", b"stored").unwrap_err();
    assert!(!err.contains("ServiceError"), "a reply came through: {err}");
    assert_eq!(proxy.injected(rule), 1);
    assert_eq!(env.get("lost-reply.txt").unwrap().0, b"stored");
    // The rule took only the first: the next PUT gets its reply.
    put(&env, &client, "second.txt", b"answered").unwrap();
    assert_eq!(proxy.injected(rule), 1);
}

#[test]
fn slow_down_answers_503_with_retry_after_without_forwarding() {
    let env = Env::new();
    env.put("there.txt", b"x", &[]);
    let (proxy, client) = through_proxy(&env);
    let mode = Mode::SlowDown503 {
        retry_after_secs: 7,
    };
    let rule = proxy.add(Match::op(S3Op::PutObject), mode.clone(), Times::First(1));
    let err = env
        .rt
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key("refused.txt")
                .body(ByteStream::from_static(b"never stored"))
                .send(),
        )
        .unwrap_err();
    let raw = err.raw_response().expect("a reply");
    assert_eq!(raw.status().as_u16(), 503);
    assert_eq!(raw.headers().get("retry-after"), Some("7"));
    assert_eq!(err.code(), Some("SlowDown"), "{err:?}");
    assert_eq!(proxy.injected(rule), 1);
    assert!(env.get("refused.txt").is_none(), "the PUT was forwarded");
    // A HEAD gets the 503 without a body, and the connection goes on.
    let head_rule = proxy.add(Match::op(S3Op::HeadObject), mode, Times::First(1));
    let err = env
        .rt
        .block_on(client.head_object().bucket(BUCKET).key("there.txt").send())
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(proxy.injected(head_rule), 1);
    assert!(head(&env, &client, "there.txt"));
    put(&env, &client, "refused.txt", b"stored now").unwrap();
    assert_eq!(env.get("refused.txt").unwrap().0, b"stored now");
}

#[test]
fn hang_holds_a_request_unanswered_then_closes_and_the_next_is_answered() {
    let env = Env::new();
    let (proxy, client) = through_proxy(&env);
    let rule = proxy.add(
        Match::op(S3Op::PutObject),
        Mode::Hang(Duration::from_secs(1)),
        Times::First(1),
    );
    let err = put(&env, &client, "held.txt", b"held").unwrap_err();
    assert!(!err.contains("ServiceError"), "a reply came through: {err}");
    assert_eq!(proxy.injected(rule), 1);
    assert!(
        env.get("held.txt").is_none(),
        "a hung request was forwarded"
    );
    put(&env, &client, "held.txt", b"second try").unwrap();
    assert_eq!(env.get("held.txt").unwrap().0, b"second try");
}

#[test]
fn reset_mid_body_cuts_a_get_and_a_bodiless_reply() {
    let env = Env::new();
    let data = pattern(1 << 20, 2);
    env.put("big.bin", &data, &[]);
    let (proxy, client) = through_proxy(&env);
    let rule = proxy.add(
        Match::op(S3Op::GetObject),
        Mode::ResetMidBody,
        Times::First(1),
    );
    let err = get(&env, &client, "big.bin").unwrap_err();
    assert_eq!(proxy.injected(rule), 1, "{err}");
    assert!(get(&env, &client, "big.bin").unwrap() == data, "not whole");
    // A PUT's reply has no body: the head itself is cut, after the write happened.
    let put_rule = proxy.add(
        Match::op(S3Op::PutObject),
        Mode::ResetMidBody,
        Times::First(1),
    );
    let err = put(&env, &client, "cut.txt", b"written").unwrap_err();
    assert!(!err.contains("ServiceError"), "a reply came through: {err}");
    assert_eq!(proxy.injected(put_rule), 1);
    assert_eq!(env.get("cut.txt").unwrap().0, b"written");
}

#[test]
fn trickle_delivers_the_whole_body() {
    let env = Env::new();
    let data = pattern(64 << 10, 3);
    env.put("slow.bin", &data, &[]);
    let (proxy, client) = through_proxy(&env);
    let rule = proxy.add(
        Match::op(S3Op::GetObject),
        Mode::Trickle {
            bytes_per_sec: 256 << 10,
        },
        Times::Always,
    );
    assert!(get(&env, &client, "slow.bin").unwrap() == data, "not whole");
    assert_eq!(proxy.injected(rule), 1);
}

#[test]
fn rules_fire_on_the_first_n_every_nth_or_by_seeded_chance_and_only_on_their_keys() {
    let env = Env::new();
    for key in ["first", "nth", "chance", "other"] {
        env.put(key, b"x", &[]);
    }
    let (proxy, client) = through_proxy(&env);
    let refuse = Mode::SlowDown503 {
        retry_after_secs: 1,
    };
    let heads = Match::op(S3Op::HeadObject);
    let first = proxy.add(
        heads.clone().key_contains("first"),
        refuse.clone(),
        Times::First(2),
    );
    let nth = proxy.add(
        heads.clone().key_contains("nth"),
        refuse.clone(),
        Times::EveryNth(3),
    );
    let failing = |key: &str, n: usize| -> Vec<usize> {
        (1..=n).filter(|_| !head(&env, &client, key)).collect()
    };
    assert_eq!(failing("first", 5), [1, 2]);
    assert_eq!(failing("nth", 9), [3, 6, 9]);
    assert_eq!(failing("other", 3), Vec::<usize>::new());
    assert_eq!((proxy.matched(first), proxy.injected(first)), (5, 2));
    assert_eq!((proxy.matched(nth), proxy.injected(nth)), (9, 3));

    let seed = 0x5eed_u64;
    let chance = proxy.add(
        heads.clone().key_contains("chance"),
        refuse.clone(),
        Times::Probability { p: 0.5, seed },
    );
    let picked = failing("chance", 40);
    assert_eq!(picked.len() as u64, proxy.injected(chance));
    assert!(
        !picked.is_empty() && picked.len() < 40,
        "seed {seed}: {picked:?}"
    );
    // The same seed picks the same requests again.
    proxy.remove(chance);
    assert_eq!(failing("chance", 5), Vec::<usize>::new());
    proxy.add(
        heads.key_contains("chance"),
        refuse,
        Times::Probability { p: 0.5, seed },
    );
    assert_eq!(failing("chance", 40), picked, "seed {seed}");
    proxy.clear();
    assert_eq!(failing("nth", 6), Vec::<usize>::new());
}

#[test]
fn a_frozen_proxy_holds_requests_until_thawed() {
    let env = Env::new();
    let (proxy, client) = through_proxy(&env);
    proxy.freeze(true);
    let put = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key("frozen.txt")
                .body(ByteStream::from_static(b"late"))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
    });
    wait_until("the PUT reaches the proxy", || {
        proxy.seen(S3Op::PutObject) == 1
    });
    assert!(env.get("frozen.txt").is_none(), "forwarded while frozen");
    proxy.freeze(false);
    put.join().unwrap().unwrap();
    assert_eq!(env.get("frozen.txt").unwrap().0, b"late");
}

#[test]
fn dropping_the_proxy_ends_a_hung_request() {
    let env = Env::new();
    env.put("k", b"x", &[]);
    let (proxy, client) = through_proxy(&env);
    proxy.add(
        Match::any(),
        Mode::Hang(Duration::from_secs(600)),
        Times::Always,
    );
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(client.head_object().bucket(BUCKET).key("k").send());
        let _ = done.send(out.is_ok());
    });
    wait_until("the HEAD reaches the proxy", || {
        proxy.seen(S3Op::HeadObject) == 1
    });
    drop(proxy);
    let answered = result
        .recv_timeout(Duration::from_secs(30))
        .expect("the request still hangs after the proxy was dropped");
    assert!(!answered, "a hung request was answered");
}

#[test]
fn a_put_with_expect_continue_goes_through_to_moto() {
    // moto (werkzeug) answers 100 Continue twice: both go to the client, which must
    // still see its reply.
    let env = Env::moto();
    let (proxy, client) = through_proxy(&env);
    env.rt
        .block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key("expected.bin")
                .body(ByteStream::from(pattern(300_000, 4)))
                .customize()
                .mutate_request(|req| {
                    req.headers_mut().insert("expect", "100-continue");
                })
                .send(),
        )
        .unwrap();
    assert_eq!(proxy.seen(S3Op::PutObject), 1);
    assert_eq!(proxy.interim_replies(), 2, "moto's two 100 Continue");
    assert_eq!(env.get("expected.bin").unwrap().0, pattern(300_000, 4));
}

/// A server on 127.0.0.1 that accepts one connection and runs `script` on it.
fn scripted_server(
    script: impl FnOnce(&mut Conn) -> io::Result<()> + Send + 'static,
) -> (String, std::thread::JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        let mut conn = Conn::new(stream, Arc::new(AtomicBool::new(false)))?;
        script(&mut conn)
    });
    (endpoint, server)
}

/// The next message on `conn`: its start line and its body.
fn message(
    conn: &mut Conn,
    framing: impl Fn(&crate::support::http::Head) -> Framing,
) -> (String, Vec<u8>) {
    let head = conn.read_head().unwrap().expect("a message");
    let mut body = Vec::new();
    conn.relay_body(framing(&head), &mut |b| {
        body.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    (head.start, body)
}

fn request(conn: &mut Conn) -> (String, Vec<u8>) {
    message(conn, |h| h.request_framing().unwrap())
}

fn reply(conn: &mut Conn, method: &'static str) -> (String, Vec<u8>) {
    message(conn, move |h| h.response_framing(method).unwrap())
}

#[test]
fn framing_expect_continue_chunked_bodiless_and_close_delimited_replies() {
    let (upstream, server) = scripted_server(|conn| {
        // One upstream connection for every exchange: the proxy keeps it alive.
        let head = conn.read_head()?.expect("a request");
        assert!(head.start.starts_with("PUT /b/k "), "{}", head.start);
        assert!(head.has_token("expect", "100-continue"));
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        let mut body = Vec::new();
        conn.relay_body(head.request_framing()?, &mut |b| {
            body.extend_from_slice(b);
            Ok(())
        })?;
        assert_eq!(body, b"hello");
        // A second 100 Continue, as werkzeug (moto) sends, then the reply.
        conn.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )?;
        let (start, body) = request(conn);
        assert!(start.starts_with("POST /b/k?uploads "), "{start}");
        assert_eq!(body, b"5\r\nchunk\r\n0\r\n\r\n");
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )?;
        request(conn); // HEAD
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")?;
        request(conn); // DELETE
        conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        request(conn); // GET, not modified
        conn.write_all(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")?;
        request(conn); // GET, body up to the close
        conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close")?;
        Ok(())
    });
    let proxy = FaultProxy::start(&upstream);
    let stream = TcpStream::connect(proxy.endpoint.trim_start_matches("http://")).unwrap();
    let mut client = Conn::new(stream, Arc::new(AtomicBool::new(false))).unwrap();

    // The body goes only after the server's 100 Continue came through the proxy; the
    // scripted server (unlike a patient one) sends it at once, so no timeout hides it.
    client
        .write_all(
            b"PUT /b/k HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
    assert!(client.data_within(Duration::from_secs(30)).unwrap());
    let (start, _) = reply(&mut client, "PUT");
    assert!(start.starts_with("HTTP/1.1 100"), "{start}");
    client.write_all(b"hello").unwrap();
    assert!(reply(&mut client, "PUT").0.starts_with("HTTP/1.1 100"));
    assert_eq!(
        reply(&mut client, "PUT"),
        ("HTTP/1.1 200 OK".into(), b"ok".to_vec())
    );

    client
        .write_all(b"POST /b/k?uploads HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(reply(&mut client, "POST").1, b"3\r\nabc\r\n0\r\n\r\n");
    client
        .write_all(b"HEAD /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        reply(&mut client, "HEAD"),
        ("HTTP/1.1 200 OK".into(), vec![])
    );
    client
        .write_all(b"DELETE /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(reply(&mut client, "DELETE").0.contains("204"));
    client
        .write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(reply(&mut client, "GET").0.contains("304"));
    client
        .write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(reply(&mut client, "GET").1, b"until the close");
    // The proxy closes the client's connection after a close-delimited reply.
    assert_eq!(client.read_head().unwrap().map(|h| h.start), None);
    server.join().unwrap().unwrap();
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.interim_replies(), 2);
    assert_eq!(proxy.seen_total(), 6);
    assert_eq!(
        (
            proxy.seen(S3Op::PutObject),
            proxy.seen(S3Op::CreateMultipartUpload)
        ),
        (1, 1)
    );
}
