//! A moto server (a second, independent S3 implementation) on 127.0.0.1, started for
//! one test and killed, by its own PID only, when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The version .ci/run installs; the message for a machine without moto names it.
pub const MOTO_PIP: &str = "moto[server]==5.2.1";

pub struct Moto {
    pub endpoint: String,
    child: Child,
    log: PathBuf,
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers HTTP. Panics
    /// with the way to install it when it is not on PATH: a test written for moto must
    /// not pass by skipping itself.
    pub fn start(dir: &Path) -> Moto {
        let log = dir.join("moto.log");
        // The free port is found by binding port 0 and letting it go, so another
        // process may take it before moto binds it: then moto exits, and we try again.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let child = match Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::options().append(true).open(&log).unwrap())
                .spawn()
            {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "moto_server is not on PATH: this test needs moto, a second S3 \
                     implementation; install it with `pip install '{MOTO_PIP}'` \
                     (.ci/run does)"
                ),
                Err(err) => panic!("cannot start moto_server: {err}"),
            };
            let mut moto = Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                child,
                log: log.clone(),
            };
            match moto.wait_ready(port) {
                Ok(()) => return moto,
                Err(why) => last_failure = format!("{why}\nmoto's log:\n{}", moto.log_text()),
            }
        }
        panic!("moto_server did not start: {last_failure}");
    }

    /// Waits until moto answers an HTTP request on `port` (about a second after start).
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("moto_server exited with {status}"));
            }
            if answers_http(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("moto_server did not answer within 60 s".into())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether something on 127.0.0.1:`port` answers a request with an HTTP status line.
fn answers_http(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut start = [0u8; 7];
    conn.read_exact(&mut start).is_ok() && &start == b"HTTP/1."
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL to the PID of our own child: moto_server runs in that one process
        // (pyenv's shim execs it, pip's entry script is Python itself).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
