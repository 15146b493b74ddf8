//! Shared helpers for integration tests: private `redis-server` processes and bounded polling.
//!
//! Use from a test file with `mod support;`. Every server runs on its own free loopback port
//! without persistence and is killed (SIGKILL, by PID) when its [`RedisServer`] is dropped,
//! also when the test panics.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's redis-server.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private `redis-server` on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    paused: bool,
    extra_args: Vec<String>,
}

/// A port that was free a moment ago (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A loopback port nothing listens on (for "unreachable" tests).
pub fn closed_port() -> u16 {
    free_port()
}

fn redis_path() -> &'static str {
    if !Path::new(REDIS_SERVER).exists() {
        panic!("redis-server not installed: run ./scripts/test which installs it");
    }
    REDIS_SERVER
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (for example
    /// `["--maxmemory", "10mb"]`) and waits until it answers PING.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Another process may grab the port between free_port() and the bind: retry a few times.
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                paused: false,
                extra_args: extra_args.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(redis_path());
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            "",
        ])
        .args(&self.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {REDIS_SERVER}: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut out = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut out);
                }
                return Err(format!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    out.trim()
                ));
            }
            if ping(self.port, Duration::from_millis(200)) {
                // Do not keep pipes nobody reads: a chatty server could block on them.
                drop(child.stdout.take());
                drop(child.stderr.take());
                self.child = Some(child);
                self.paused = false;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
            assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = self.child.is_some();
    }

    /// Continues a paused server (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Kills the server (SIGKILL) and reaps it; all data is lost (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Kills the server if it runs and starts a fresh one on the same port (empty: nothing
    /// was persisted). Waits until it answers PING; retries while the port is still in use.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart redis-server on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends one command (RESP array of bulk strings) on a fresh connection and returns the
    /// raw reply's first line (`+OK`, `:1`, `$-1`, `-ERR ...`, ...). For test setup only.
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut s = connect(self.port, Duration::from_secs(2)).expect("connect to redis-server");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("write command");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read reply");
        line.trim_end().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        self.kill();
    }
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// True if something on `127.0.0.1:port` answers `PING` with `+PONG` within `timeout`.
pub fn ping(port: u16, timeout: Duration) -> bool {
    let Ok(mut s) = connect(port, timeout) else {
        return false;
    };
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_until`], but panics with `what` and the elapsed time if the condition never
/// held. Returns how long it took.
pub fn eventually(what: &str, timeout: Duration, condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    if !wait_until(timeout, condition) {
        panic!("timed out after {:?} waiting for: {what}", start.elapsed());
    }
    start.elapsed()
}
