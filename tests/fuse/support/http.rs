//! HTTP/1.1 framing for the fault proxy: message heads, and bodies by Content-Length,
//! chunked or until close, read in short slices so that a stopping proxy is noticed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one read waits before the stop flag is looked at again.
pub const TICK: Duration = Duration::from_millis(50);
/// A message that stops arriving for this long is abandoned (the connection closed).
const IDLE: Duration = Duration::from_secs(120);
/// Longest head or chunk-size line accepted.
const MAX_HEAD: usize = 64 << 10;

/// One side of a proxied exchange: a socket and what was read from it but not used yet.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    stop: Arc<AtomicBool>,
}

/// A request or response head, kept byte for byte (signatures cover it) and parsed.
pub struct Head {
    pub raw: Vec<u8>,
    pub start: String,
    headers: Vec<(String, String)>,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    pub fn new(stream: TcpStream, stop: Arc<AtomicBool>) -> io::Result<Conn> {
        stream.set_read_timeout(Some(TICK))?;
        // A peer that stops reading cannot hold a proxy thread for long.
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            stop,
        })
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes, giving up at `deadline` (None) or when the proxy stops (an
    /// error). Some(0) is the end of the stream.
    fn fill_by(&mut self, deadline: Option<Instant>) -> io::Result<Option<usize>> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + (64 << 10), 0);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.buf.truncate(old);
                return Err(io::Error::new(io::ErrorKind::Interrupted, "proxy stopped"));
            }
            match self.stream.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    return Ok(Some(n));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        self.buf.truncate(old);
                        return Ok(None);
                    }
                }
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// Reads more bytes within the idle bound; the end of the stream is an error here.
    fn fill(&mut self) -> io::Result<()> {
        match self.fill_by(Some(Instant::now() + IDLE))? {
            Some(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::TimedOut, "peer went silent")),
        }
    }

    /// Whether the peer sends anything within `wait` (bytes already read count).
    pub fn data_within(&mut self, wait: Duration) -> io::Result<bool> {
        if !self.pending().is_empty() {
            return Ok(true);
        }
        match self.fill_by(Some(Instant::now() + wait))? {
            Some(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// Whether a kept-alive connection can no longer carry a request: the peer closed
    /// it, or sent something unasked.
    pub fn unusable(&mut self) -> bool {
        if !self.pending().is_empty() || self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let peeked = self.stream.peek(&mut [0u8; 1]);
        let _ = self.stream.set_nonblocking(false);
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The next message head; None if the peer closed the connection between messages.
    /// The first byte may be waited for as long as the proxy runs (an idle keep-alive
    /// connection); after it, the idle bound applies.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        let started = Instant::now();
        loop {
            if let Some(end) = find(self.pending(), b"\r\n\r\n") {
                let raw = self.pending()[..end + 4].to_vec();
                self.consume(end + 4);
                return Head::parse(raw).map(Some);
            }
            if self.pending().len() > MAX_HEAD {
                return Err(broken("head too long"));
            }
            let deadline = (!self.pending().is_empty()).then(|| started + IDLE);
            match self.fill_by(deadline)? {
                Some(0) if self.pending().is_empty() => return Ok(None),
                Some(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(_) => {}
                None => return Err(io::Error::new(io::ErrorKind::TimedOut, "head stalled")),
            }
        }
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(self.pending(), b"\n") {
                let line = self.pending()[..=end].to_vec();
                self.consume(end + 1);
                return Ok(line);
            }
            if self.pending().len() > MAX_HEAD {
                return Err(broken("line too long"));
            }
            self.fill()?;
        }
    }

    /// Passes exactly `n` bytes to `out`, in the pieces they arrive in.
    fn relay_exact(
        &mut self,
        mut n: u64,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while n > 0 {
            if self.pending().is_empty() {
                self.fill()?;
            }
            let take = self.pending().len().min(n.try_into().unwrap_or(usize::MAX));
            out(&self.pending()[..take])?;
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one body as framed and passes its bytes, framing included, to `out`.
    pub fn relay_body(
        &mut self,
        framing: Framing,
        out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.relay_exact(n, out),
            Framing::Chunked => loop {
                let line = self.read_line()?;
                out(&line)?;
                let text = String::from_utf8_lossy(&line);
                let size = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16).map_err(|_| broken("chunk size"))?;
                if size == 0 {
                    // Trailer fields, up to the empty line that ends the message.
                    loop {
                        let line = self.read_line()?;
                        out(&line)?;
                        if line == b"\r\n" || line == b"\n" {
                            return Ok(());
                        }
                    }
                }
                self.relay_exact(size + 2, out)?;
            },
            Framing::UntilClose => loop {
                if !self.pending().is_empty() {
                    let n = self.pending().len();
                    out(&self.pending()[..n])?;
                    self.consume(n);
                }
                if self.fill_by(Some(Instant::now() + IDLE))? == Some(0) {
                    return Ok(());
                }
            },
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Head {
    fn parse(raw: Vec<u8>) -> io::Result<Head> {
        let text = std::str::from_utf8(&raw).map_err(|_| broken("head not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or("").to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').ok_or_else(|| broken("header line"))?;
                Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Head {
            raw,
            start,
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (Connection, Expect, Transfer-Encoding) holds
    /// `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The request's method and target ("PUT", "/bucket/key?x=y").
    pub fn request_line(&self) -> (&str, &str) {
        let mut parts = self.start.split(' ');
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
    }

    /// The response's status code (0 if the start line is not a status line).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// HTTP/1.0 closes by default, HTTP/1.1 keeps alive unless told to close.
    pub fn wants_close(&self) -> bool {
        self.has_token("connection", "close")
            || (self.start.contains("HTTP/1.0") && !self.has_token("connection", "keep-alive"))
    }

    fn length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.parse().map_err(|_| broken("Content-Length")))
            .transpose()
    }

    /// A request's body: chunked, by length, or none.
    pub fn request_framing(&self) -> io::Result<Framing> {
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        Ok(self.length()?.map_or(Framing::Empty, Framing::Length))
    }

    /// A response's body to a `method` request: none for HEAD, 1xx, 204 and 304
    /// whatever Content-Length says; else chunked, by length, or up to the close.
    pub fn response_framing(&self, method: &str) -> io::Result<Framing> {
        let status = self.status();
        if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Framing::Empty);
        }
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        Ok(self.length()?.map_or(Framing::UntilClose, Framing::Length))
    }
}
