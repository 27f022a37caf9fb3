//! FaultProxy: an HTTP/1.1 proxy on 127.0.0.1 in front of any S3 server that injects
//! the network's failures on chosen S3 requests, so that tests can reproduce them.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&env.endpoint);
//! let rule = proxy.add(Match::op(S3Op::PutObject), Mode::CommitThenLose, Times::First(1));
//! let mnt = env.mount_via(&proxy.endpoint, &[]);
//! ...
//! assert_eq!(proxy.injected(rule), 1);
//! ```
//!
//! Each request is classified as an S3 operation, counted, and checked against the
//! rules in the order they were added: the first rule that matches and whose `Times`
//! says "now" decides what happens to it (later rules do not see it). Requests no rule
//! takes are forwarded unchanged, with keep-alive on the client's connection.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{Conn, Framing, Head, TICK};
use super::s3op::classify;
pub use super::s3op::S3Op;

/// Which requests a rule applies to: one operation or any, and optionally only keys
/// holding a substring (the destination key for copies).
#[derive(Debug, Clone)]
pub struct Match {
    op: Option<S3Op>,
    key_contains: Option<String>,
}

impl Match {
    pub fn any() -> Match {
        Match {
            op: None,
            key_contains: None,
        }
    }

    pub fn op(op: S3Op) -> Match {
        Match {
            op: Some(op),
            key_contains: None,
        }
    }

    /// Narrows the match to keys containing `part`.
    pub fn key_contains(mut self, part: &str) -> Match {
        self.key_contains = Some(part.to_string());
        self
    }

    fn matches(&self, op: S3Op, key: &str) -> bool {
        self.op.is_none_or(|o| o == op)
            && self
                .key_contains
                .as_ref()
                .is_none_or(|k| key.contains(k.as_str()))
    }
}

/// What happens to a request a rule takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Forwarded; the server's whole reply is read, then the client's connection is
    /// closed without a byte of it: the write happened, the client never learns so.
    CommitThenLose,
    /// Not forwarded: the connection is held unanswered this long, then closed.
    Hang(Duration),
    /// Forwarded; the reply is cut halfway (half the body after the whole head, or
    /// half the head when there is no body), then the connection is reset (RST).
    ResetMidBody,
    /// Not forwarded: answered 503 SlowDown with an S3 error body and Retry-After.
    SlowDown503 { retry_after_secs: u32 },
    /// Forwarded; the reply's body is sent at this pace.
    Trickle { bytes_per_sec: u64 },
}

/// How often a rule fires among the requests it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Times {
    /// The first n matching requests.
    First(u64),
    /// The nth, 2nth, 3nth ... matching request.
    EveryNth(u64),
    /// Each matching request with probability p, drawn from a generator seeded with
    /// `seed` (printed when the rule is added, so a failing run can be repeated).
    Probability {
        p: f64,
        seed: u64,
    },
    Always,
}

/// A rule's handle, for its counters and to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(usize);

struct Rule {
    matcher: Match,
    mode: Mode,
    times: Times,
    active: bool,
    matched: u64,
    injected: u64,
    rng: u64,
}

impl Rule {
    /// Whether the rule takes the request it has just matched.
    fn fires(&mut self) -> bool {
        self.matched += 1;
        match self.times {
            Times::First(n) => self.matched <= n,
            Times::EveryNth(n) => n > 0 && self.matched.is_multiple_of(n),
            Times::Always => true,
            Times::Probability { p, .. } => {
                // xorshift64*: enough randomness for picking requests, no crate needed.
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
                ((x >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    stop: Arc<AtomicBool>,
    frozen: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<HashMap<S3Op, u64>>,
    connections: AtomicU64,
    interim: AtomicU64,
    /// Clones of every open socket, shut down on stop so no write stays blocked.
    open: Mutex<Vec<(u64, TcpStream)>>,
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, for `--endpoint` or an S3 client.
    pub endpoint: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 in front of `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream,
            stop: Arc::new(AtomicBool::new(false)),
            frozen: AtomicBool::new(false),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
            connections: AtomicU64::new(0),
            interim: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        FaultProxy {
            endpoint,
            shared,
            accept: Some(accept),
        }
    }

    /// Adds a rule (after those already there); it applies from the next request on.
    pub fn add(&self, matcher: Match, mode: Mode, times: Times) -> RuleId {
        let seed = match times {
            Times::Probability { seed, .. } => seed,
            _ => 0,
        };
        let mut rules = self.shared.rules.lock().unwrap();
        let id = rules.len();
        if let Times::Probability { p, seed } = times {
            eprintln!("fault proxy rule {id}: {mode:?} on {matcher:?} with p={p}, seed {seed}");
        }
        rules.push(Rule {
            matcher,
            mode,
            times,
            active: true,
            matched: 0,
            injected: 0,
            // xorshift must not start at 0.
            rng: (seed ^ 0x9e37_79b9_7f4a_7c15).max(1),
        });
        RuleId(id)
    }

    /// Stops a rule from applying; its counters stay readable.
    pub fn remove(&self, id: RuleId) {
        self.shared.rules.lock().unwrap()[id.0].active = false;
    }

    /// Stops every rule from applying.
    pub fn clear(&self) {
        for rule in self.shared.rules.lock().unwrap().iter_mut() {
            rule.active = false;
        }
    }

    /// While on, every request (and every reply under way) is held, neither forwarded
    /// nor answered; once off, they go on where they were (a hung endpoint).
    pub fn freeze(&self, on: bool) {
        self.shared.frozen.store(on, Ordering::SeqCst);
    }

    /// Requests seen of one operation (whatever became of them).
    pub fn seen(&self, op: S3Op) -> u64 {
        self.shared
            .seen
            .lock()
            .unwrap()
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen in all.
    pub fn seen_total(&self) -> u64 {
        self.shared.seen.lock().unwrap().values().sum()
    }

    /// Requests the rule matched (whether it fired or not).
    pub fn matched(&self, id: RuleId) -> u64 {
        self.shared.rules.lock().unwrap()[id.0].matched
    }

    /// Faults the rule injected.
    pub fn injected(&self, id: RuleId) -> u64 {
        self.shared.rules.lock().unwrap()[id.0].injected
    }

    /// Interim (1xx) replies passed from the server to clients.
    pub fn interim_replies(&self) -> u64 {
        self.shared.interim.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far (fewer than requests means keep-alive).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, stream) in self.shared.open.lock().unwrap().iter() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        threads.retain(|t| !t.is_finished());
        threads.push(std::thread::spawn(move || {
            let _ = serve(&shared, id, client);
            shared.open.lock().unwrap().retain(|(n, _)| *n != id);
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// What to do with the client's connection after one exchange.
enum Next {
    KeepAlive,
    Close,
    /// Close with RST instead of FIN.
    Reset,
}

impl Shared {
    fn register(&self, id: u64, stream: &TcpStream) -> io::Result<()> {
        self.open.lock().unwrap().push((id, stream.try_clone()?));
        // A stop that came before the clone was listed would not shut this one.
        if self.stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "proxy stopped"));
        }
        Ok(())
    }

    fn stopped(&self) -> io::Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "proxy stopped"));
        }
        Ok(())
    }

    fn wait_while_frozen(&self) -> io::Result<()> {
        while self.frozen.load(Ordering::SeqCst) {
            self.stopped()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stopped()
    }

    /// Sleeps `how_long`, in slices, unless the proxy stops.
    fn pause(&self, how_long: Duration) -> io::Result<()> {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.stopped()?;
            std::thread::sleep(TICK.min(until - Instant::now()));
        }
        Ok(())
    }

    /// Counts the request and returns the fault for it, if a rule fires.
    fn decide(&self, op: S3Op, key: &str) -> Option<(usize, Mode)> {
        *self.seen.lock().unwrap().entry(op).or_default() += 1;
        let mut rules = self.rules.lock().unwrap();
        for (id, rule) in rules.iter_mut().enumerate() {
            if rule.active && rule.matcher.matches(op, key) && rule.fires() {
                rule.injected += 1;
                return Some((id, rule.mode.clone()));
            }
        }
        None
    }
}

fn serve(shared: &Shared, id: u64, client: TcpStream) -> io::Result<()> {
    shared.register(id, &client)?;
    let mut client = Conn::new(client, shared.stop.clone())?;
    let mut upstream: Option<Conn> = None;
    while let Some(head) = client.read_head()? {
        match exchange(shared, id, &mut client, &mut upstream, head)? {
            Next::KeepAlive => {}
            Next::Close => break,
            Next::Reset => {
                reset_on_close(&client.stream);
                break;
            }
        }
    }
    Ok(())
}

/// One request and its reply, with whatever fault a rule picks for them.
fn exchange(
    shared: &Shared,
    id: u64,
    client: &mut Conn,
    upstream: &mut Option<Conn>,
    head: Head,
) -> io::Result<Next> {
    let (method, target) = head.request_line();
    let method = method.to_string();
    let (op, key) = classify(&method, target, head.header("x-amz-copy-source").is_some());
    let fault = shared.decide(op, &key);
    if let Some((rule, mode)) = &fault {
        eprintln!("fault proxy: rule {rule} {mode:?} on {op:?} {method} {target}");
    }
    let mode = fault.map(|(_, mode)| mode);
    let framing = head.request_framing()?;
    let expects_continue = head.has_token("expect", "100-continue");
    let client_close = head.wants_close();
    shared.wait_while_frozen()?;

    match mode {
        Some(Mode::Hang(how_long)) => {
            shared.pause(how_long)?;
            return Ok(Next::Close);
        }
        Some(Mode::SlowDown503 { retry_after_secs }) => {
            // The body is read (asked for if the client waits to be asked) so that the
            // answer is not lost to a reset for unread bytes.
            if expects_continue {
                client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            client.relay_body(framing, &mut |_| Ok(()))?;
            client.write_all(&slow_down(&method, retry_after_secs, client_close))?;
            return Ok(if client_close {
                Next::Close
            } else {
                Next::KeepAlive
            });
        }
        _ => {}
    }

    // A kept-alive upstream connection the server has closed meanwhile is replaced.
    if upstream.as_mut().is_none_or(Conn::unusable) {
        close_upstream(upstream);
        let stream = TcpStream::connect(shared.upstream)?;
        shared.register(id, &stream)?;
        *upstream = Some(Conn::new(stream, shared.stop.clone())?);
    }
    let up = upstream.as_mut().unwrap();
    up.write_all(&head.raw)?;

    // With Expect: 100-continue the server decides whether it wants the body: its
    // interim reply is passed on; a final reply instead means the body stays unsent.
    // A server that says nothing within a second gets the body anyway, as from curl.
    let mut early_reply = None;
    if expects_continue && up.data_within(Duration::from_secs(1))? {
        let reply = up.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if (100..200).contains(&reply.status()) {
            shared.interim.fetch_add(1, Ordering::SeqCst);
            client.write_all(&reply.raw)?;
        } else {
            early_reply = Some(reply);
        }
    }
    let body_unsent = early_reply.is_some();
    if !body_unsent {
        client.relay_body(framing, &mut |bytes| {
            shared.wait_while_frozen()?;
            up.write_all(bytes)
        })?;
    }
    let reply = match early_reply {
        Some(reply) => reply,
        None => loop {
            let reply = up.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
            if !(100..200).contains(&reply.status()) {
                break reply;
            }
            // Interim replies (some servers send 100 Continue twice) go on as they are.
            shared.interim.fetch_add(1, Ordering::SeqCst);
            client.write_all(&reply.raw)?;
        },
    };
    let reply_framing = reply.response_framing(&method)?;
    // The upstream connection carries the next request only if this exchange ended
    // cleanly on it.
    let upstream_done = body_unsent || reply.wants_close() || reply_framing == Framing::UntilClose;
    shared.wait_while_frozen()?;

    let next = match mode {
        Some(Mode::CommitThenLose) => {
            up.relay_body(reply_framing, &mut |_| Ok(()))?;
            Next::Close
        }
        Some(Mode::ResetMidBody) => {
            let mut body = Vec::new();
            up.relay_body(reply_framing, &mut |bytes| {
                body.extend_from_slice(bytes);
                Ok(())
            })?;
            if body.is_empty() {
                client.write_all(&reply.raw[..reply.raw.len() / 2])?;
            } else {
                client.write_all(&reply.raw)?;
                client.write_all(&body[..body.len() / 2])?;
            }
            Next::Reset
        }
        Some(Mode::Trickle { bytes_per_sec }) => {
            client.write_all(&reply.raw)?;
            let rate = bytes_per_sec.max(1);
            // Pieces of a twentieth of a second each.
            let piece = (rate / 20).max(1) as usize;
            up.relay_body(reply_framing, &mut |bytes| {
                for part in bytes.chunks(piece) {
                    shared.wait_while_frozen()?;
                    client.write_all(part)?;
                    shared.pause(Duration::from_secs_f64(part.len() as f64 / rate as f64))?;
                }
                Ok(())
            })?;
            Next::KeepAlive
        }
        _ => {
            client.write_all(&reply.raw)?;
            up.relay_body(reply_framing, &mut |bytes| {
                shared.wait_while_frozen()?;
                client.write_all(bytes)
            })?;
            Next::KeepAlive
        }
    };
    if upstream_done {
        close_upstream(upstream);
    }
    Ok(match next {
        Next::KeepAlive if client_close || upstream_done => Next::Close,
        next => next,
    })
}

/// Ends the upstream connection now: the registry's clone would keep it open.
fn close_upstream(upstream: &mut Option<Conn>) {
    if let Some(conn) = upstream.take() {
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A 503 SlowDown as S3 sends it (no body for a HEAD).
fn slow_down(method: &str, retry_after_secs: u32, close: bool) -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message>\
                <RequestId>fault-proxy</RequestId></Error>";
    let mut reply = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nRetry-After: {retry_after_secs}\r\n\
         x-amz-request-id: fault-proxy\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if method != "HEAD" {
        reply.extend_from_slice(body.as_bytes());
    }
    reply
}

/// SO_LINGER 0: closing the socket then sends RST instead of FIN.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket of ours with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
