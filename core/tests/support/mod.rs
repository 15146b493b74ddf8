//! Shared helpers for integration tests: private `redis-server` processes, a private Redis
//! Cluster, and bounded polling.
//!
//! Use from a test file with `mod support;`. Every server runs on its own free loopback port
//! without persistence and is killed (SIGKILL, by PID) when its [`RedisServer`] is dropped,
//! also when the test panics; a [`RedisClusterHarness`] also removes its temp dir.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's redis-server.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Debian's redis-cli (package redis-tools, installed with redis-server).
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private `redis-server` on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    paused: bool,
    extra_args: Vec<String>,
    /// The `PSUBSCRIBE *` observer of the running process (see [`PubSubAudit`]).
    audit: Option<PubSubAudit>,
    /// Every message the observers of earlier processes on this port saw.
    published: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A port that was free a moment ago (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A loopback port nothing listens on (for "unreachable" tests): a privileged one that
/// refuses connections now. Not [`free_port`]: a port from the ephemeral range that is free
/// now can be taken by a server another test starts a moment later (seen: a "dead" node that
/// answered).
pub fn closed_port() -> u16 {
    for port in (200..1024).rev() {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return port,
            _ => continue,
        }
    }
    panic!("no privileged loopback port refuses connections");
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
                audit: None,
                published: Vec::new(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// Starts a server on a free port whose extra arguments depend on that port (for
    /// example a cluster config file named after it), and waits until it answers PING.
    pub fn start_with_port_args(extra: impl Fn(u16) -> Vec<String>) -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                child: None,
                paused: false,
                extra_args: extra(port),
                audit: None,
                published: Vec::new(),
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
                self.audit = Some(PubSubAudit::start(self.port)?);
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
        if let Some(audit) = self.audit.take() {
            self.published.extend(audit.finish());
        }
    }

    /// Forgets what was published so far (for a test that publishes something off-list on
    /// purpose, to show the audit catches it).
    pub fn forget_published(&mut self) {
        self.published.clear();
        if let Some(a) = &self.audit {
            a.seen.lock().unwrap().clear();
        }
    }

    /// Every `(channel, message)` published on this server so far (all its processes).
    pub fn published(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = self.published.clone();
        if let Some(a) = &self.audit {
            out.extend(a.snapshot());
        }
        out
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
        // Every test's traffic is audited: what the library published must be one of the
        // documented messages (docs/keyspace.md), so no secret can be in it.
        if !std::thread::panicking() {
            check_published(self.port, &self.published);
        }
    }
}

/// A `PSUBSCRIBE *` connection to a test server that records every message published there,
/// for the whole life of the process (started by [`RedisServer`] for every server, so every
/// suite's pub/sub traffic is held to docs/keyspace.md).
#[derive(Debug)]
pub struct PubSubAudit {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest an audit connection lives (a test never runs this long; the bound keeps a stuck
/// reader from outliving its test binary).
const AUDIT_MAX: Duration = Duration::from_secs(900);

impl PubSubAudit {
    fn start(port: u16) -> Result<PubSubAudit, String> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let mut s = connect(port, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.write_all(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\n*\r\n")
            .map_err(|e| e.to_string())?;
        // Confirmed before the server is handed to the test, so nothing published is missed.
        let mut first = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !first.windows(10).any(|w| w == b"psubscribe") {
            if Instant::now() > deadline {
                return Err("PSUBSCRIBE not confirmed".into());
            }
            match s.read(&mut buf) {
                Ok(0) => return Err("the server closed the audit connection".into()),
                Ok(n) => first.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let deadline = Instant::now() + AUDIT_MAX;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => seen2.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(PubSubAudit {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    fn snapshot(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        parse_pmessages(&self.seen.lock().unwrap())
    }

    /// Stops the reader (the server was killed: it sees the end of the stream at once).
    fn finish(mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

/// The `(channel, message)` of every complete `pmessage` frame in `raw` (RESP2 push arrays:
/// `*4 pmessage <pattern> <channel> <message>`).
pub fn parse_pmessages(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn line(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&raw[at..end], end + 2))
    }
    fn bulk(raw: &[u8], at: usize) -> Option<(Vec<u8>, usize)> {
        let (head, next) = line(raw, at)?;
        let len: usize = std::str::from_utf8(head.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let body = raw.get(next..next + len)?.to_vec();
        Some((body, next + len + 2))
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let Some((head, next)) = line(raw, at) else {
            break;
        };
        let Some(n) = head
            .strip_prefix(b"*")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            break;
        };
        let mut parts = Vec::new();
        let mut p = next;
        for _ in 0..n {
            // Bulk strings, or an integer (the subscription count of a confirmation).
            if raw.get(p) == Some(&b':') {
                let Some((_, q)) = line(raw, p) else {
                    return out;
                };
                parts.push(Vec::new());
                p = q;
                continue;
            }
            let Some((b, q)) = bulk(raw, p) else {
                return out;
            };
            parts.push(b);
            p = q;
        }
        if n == 4 && parts[0] == b"pmessage" {
            out.push((parts[2].clone(), parts[3].clone()));
        }
        at = p;
    }
    out
}

/// Panics unless every `(channel, message)` is one docs/keyspace.md lists: a lock release
/// `<ns>:l:released` → `<16 hex>:<fencing token>[:<client id>]`, or a registry event
/// `<ns>:r:{<service>}:events` → `up <id>` / `down <id>`.
pub fn check_published(port: u16, published: &[(Vec<u8>, Vec<u8>)]) {
    for (channel, message) in published {
        let c = String::from_utf8_lossy(channel);
        let m = String::from_utf8_lossy(message);
        let ok = if c.ends_with(":l:released") {
            let mut parts = m.split(':');
            let hash = parts.next().unwrap_or("");
            let fence = parts.next().unwrap_or("");
            let client = parts.next();
            hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !fence.is_empty()
                && fence.bytes().all(|b| b.is_ascii_digit())
                && client.is_none_or(|c| {
                    !c.is_empty()
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                })
                && parts.next().is_none()
        } else if c.contains(":r:{") && c.ends_with("}:events") {
            m.strip_prefix("up ")
                .or_else(|| m.strip_prefix("down "))
                .is_some_and(|id| !id.is_empty() && !id.contains(char::is_whitespace))
        } else {
            false
        };
        assert!(
            ok,
            "redis-server :{port}: a published message that docs/keyspace.md does not list: \
             channel {c:?}, message {m:?}"
        );
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
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, Duration::from_millis(50), condition)
}

/// Like [`wait_until`], checking every `every` (fork tests poll fast: a child has a deadline).
pub fn wait_until_every(
    timeout: Duration,
    every: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A ketama pool `cache` with one node `r<i>` per server.
pub fn ketama_pool(servers: &[RedisServer]) -> clusterkit::Cluster {
    clusterkit::Cluster::with_nodes(
        "cache",
        clusterkit::BalancerOptions::new(clusterkit::Strategy::Ketama),
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| clusterkit::Node::new(format!("r{i}"), "127.0.0.1", s.port()).unwrap()),
    )
    .unwrap()
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

/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to agree on `cluster_state:ok` after the create.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(20);

/// A private Redis Cluster: three masters (no replicas) on free loopback ports, their
/// `nodes-<port>.conf` files in a private temp dir. Every node is killed (by PID) and the dir
/// removed on drop, also when the test or the harness's own start fails.
#[derive(Debug)]
pub struct RedisClusterHarness {
    dir: PathBuf,
    nodes: Vec<RedisServer>,
}

fn unique_temp_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "clusterkit-{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Runs `cmd` to completion within `timeout` (killed after it); returns its exit status
/// and its output (stdout then stderr).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let dir = unique_temp_dir("cmd");
    let out_path = dir.join("out");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let result = (|| {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                    return Err(format!("{cmd:?} timed out after {timeout:?}: {text}"));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("wait for {cmd:?}: {e}"));
                }
            }
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if status.success() {
            Ok(text)
        } else {
            Err(format!("{cmd:?} exited with {status}: {text}"))
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Sends one command and returns the whole reply if it is a bulk string (`None` otherwise or
/// on any I/O error).
pub fn bulk_reply(port: u16, args: &[&str], timeout: Duration) -> Option<String> {
    let mut s = connect(port, timeout).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len + 2];
    r.read_exact(&mut body).ok()?;
    body.truncate(len);
    String::from_utf8(body).ok()
}

impl RedisClusterHarness {
    /// Starts three cluster-enabled masters, joins them with `redis-cli --cluster create`
    /// (slots split evenly, no replicas) and waits until every node reports
    /// `cluster_state:ok`. Panics (after killing whatever it started) if that takes too long.
    pub fn start() -> RedisClusterHarness {
        if !Path::new(REDIS_CLI).exists() {
            panic!("redis-cli not installed (Debian package redis-tools)");
        }
        let mut harness = RedisClusterHarness {
            dir: unique_temp_dir("redis-cluster"),
            nodes: Vec::new(),
        };
        for _ in 0..3 {
            let dir = harness.dir.clone();
            // The cluster bus listens on its own free port: the default (port + 10000) does
            // not exist for ports above 55535, and could be taken.
            let node = RedisServer::start_with_port_args(move |port| {
                let mut bus = free_port();
                while bus == port {
                    bus = free_port();
                }
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join(format!("nodes-{port}.conf"))
                        .to_string_lossy()
                        .into_owned(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                    "--dir".into(),
                    dir.to_string_lossy().into_owned(),
                ]
            });
            harness.nodes.push(node);
        }
        let mut create = Command::new(REDIS_CLI);
        create.arg("--cluster").arg("create");
        for n in &harness.nodes {
            create.arg(n.addr());
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err(e) = run_bounded(create, CLUSTER_CREATE_TIMEOUT) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        let ports = harness.ports();
        eventually("cluster_state:ok on every node", CLUSTER_OK_TIMEOUT, || {
            ports.iter().all(|&p| {
                bulk_reply(p, &["CLUSTER", "INFO"], Duration::from_secs(2))
                    .is_some_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
            })
        });
        harness
    }

    /// The nodes' client ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port()).collect()
    }

    /// `127.0.0.1:<port>` of every node (seeds for a cluster client).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// The nodes, to inspect.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to fault (pause, kill, restart).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The PIDs of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.pid()).collect()
    }
}

impl Drop for RedisClusterHarness {
    fn drop(&mut self) {
        // Each RedisServer is killed and reaped by PID in its own Drop; do it first, then
        // remove the dir the nodes wrote their config files into.
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Secure servers: password / ACL users / TLS (certificates made with openssl per test).

/// Debian's openssl.
pub const OPENSSL: &str = "/usr/bin/openssl";

/// A throwaway CA, a server certificate for `127.0.0.1`, `localhost` and `redis.test`, and a
/// client certificate, all in a private temp dir removed on drop.
#[derive(Debug)]
pub struct TestCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second CA that signed nothing the server presents (a "wrong CA").
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    if !Path::new(OPENSSL).exists() {
        panic!("openssl not installed (apt-get install -y openssl)");
    }
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    /// Makes the certificates (EC P-256, valid two days).
    pub fn generate() -> TestCerts {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ck-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let key = format!("{ca}.key");
            let pem = format!("{ca}.pem");
            let subj = format!("/CN=clusterkit test {ca}");
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            openssl(&dir, &a);
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            let key = format!("{who}.key");
            let csr = format!("{who}.csr");
            let pem = format!("{who}.pem");
            let ext = format!("{who}.ext");
            let subj = format!("/CN={who}");
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&dir, &a);
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
        TestCerts {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            dir,
        }
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How clients must talk to a [`SecureRedis`].
#[derive(Debug, Clone, Default)]
pub struct SecureMode {
    /// `--requirepass` (the default user's password).
    pub requirepass: Option<String>,
    /// An ACL user `(name, password)` with all keys, channels and commands; the default user
    /// is switched off.
    pub acl_user: Option<(String, String)>,
    /// TLS only (`--port 0 --tls-port`), with these certificates.
    pub tls: bool,
    /// Require client certificates (`--tls-auth-clients yes`).
    pub mutual_tls: bool,
    /// Cluster mode, the node config files in this dir (see [`SecureCluster`]); with `tls`
    /// the cluster bus is TLS too.
    pub cluster_dir: Option<PathBuf>,
}

/// A private `redis-server` that needs a password, an ACL user and/or TLS; killed on drop.
/// Ready when `redis-cli` with the right credentials gets `PONG`.
#[derive(Debug)]
pub struct SecureRedis {
    port: u16,
    child: Option<Child>,
    mode: SecureMode,
    ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl SecureRedis {
    /// Starts a server in `mode` (`certs` needed for TLS) on a free port.
    pub fn start(mode: SecureMode, certs: Option<&TestCerts>) -> SecureRedis {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut args: Vec<String> = vec![
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--protected-mode".into(),
                "no".into(),
                "--loglevel".into(),
                "warning".into(),
                "--logfile".into(),
                "".into(),
                "--databases".into(),
                "16".into(),
            ];
            if let Some(p) = &mode.requirepass {
                args.extend(["--requirepass".into(), p.clone()]);
            }
            if let Some((u, p)) = &mode.acl_user {
                args.extend([
                    "--user".into(),
                    u.clone(),
                    "on".into(),
                    format!(">{p}"),
                    "~*".into(),
                    "&*".into(),
                    "+@all".into(),
                    "--user".into(),
                    "default".into(),
                    "off".into(),
                ]);
            }
            let mut ca = None;
            let mut client_cert = None;
            if mode.tls {
                let c = certs.expect("TLS needs TestCerts");
                args.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    c.server_cert.display().to_string(),
                    "--tls-key-file".into(),
                    c.server_key.display().to_string(),
                    "--tls-ca-cert-file".into(),
                    c.ca.display().to_string(),
                    "--tls-auth-clients".into(),
                    if mode.mutual_tls { "yes" } else { "no" }.into(),
                ]);
                ca = Some(c.ca.clone());
                client_cert = Some((c.client_cert.clone(), c.client_key.clone()));
            } else {
                args.extend(["--port".into(), port.to_string()]);
            }
            if let Some(dir) = &mode.cluster_dir {
                let mut bus = free_port();
                while bus == port {
                    bus = free_port();
                }
                args.extend([
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join(format!("nodes-{port}.conf")).display().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                    "--dir".into(),
                    dir.display().to_string(),
                ]);
                if mode.tls {
                    // The bus connects node to node as a TLS client: with a client certificate.
                    let c = certs.expect("TLS needs TestCerts");
                    args.extend([
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-client-cert-file".into(),
                        c.client_cert.display().to_string(),
                        "--tls-client-key-file".into(),
                        c.client_key.display().to_string(),
                    ]);
                }
            }
            let child = Command::new(redis_path())
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut server = SecureRedis {
                port,
                child: Some(child),
                mode: mode.clone(),
                ca,
                client_cert,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if server.cli(&["PING"]).trim() == "PONG" {
                    return server;
                }
                let exited = server
                    .child
                    .as_mut()
                    .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                    .unwrap_or(true);
                if exited || Instant::now() > deadline {
                    last = format!("redis-server {args:?} did not become ready");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(server);
        }
        panic!("could not start a secure redis-server: {last}");
    }

    /// The port (plain or TLS, whichever the server listens on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` with this server's credentials and TLS and `args` (for example
    /// `["-n", "3", "DBSIZE"]`); returns its stdout. Bounded by a 5 s timeout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("/usr/bin/timeout");
        cmd.args(["5", REDIS_CLI]);
        self.cli_options(&mut cmd);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        cmd.args(args);
        let out = cmd.stdin(Stdio::null()).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// redis-cli's options for this server's credentials and TLS.
    fn cli_options(&self, cmd: &mut Command) {
        if let Some((u, p)) = &self.mode.acl_user {
            cmd.args(["--user", u, "--pass", p]);
        } else if let Some(p) = &self.mode.requirepass {
            cmd.args(["-a", p]);
        }
        if self.mode.tls {
            cmd.arg("--tls");
            if let Some(ca) = &self.ca {
                cmd.arg("--cacert").arg(ca);
            }
            if let Some((c, k)) = &self.client_cert {
                cmd.arg("--cert").arg(c).arg("--key").arg(k);
            }
        }
        cmd.arg("--no-auth-warning");
    }

    /// PID of the server process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Three [`SecureRedis`] masters in cluster mode (slots split evenly, no replicas), joined
/// with `redis-cli --cluster create` over their credentials and TLS; killed on drop.
#[derive(Debug)]
pub struct SecureCluster {
    pub nodes: Vec<SecureRedis>,
    dir: PathBuf,
}

impl SecureCluster {
    /// Starts and joins the masters; panics (after killing them) if the cluster is not
    /// `cluster_state:ok` in time.
    pub fn start(mut mode: SecureMode, certs: Option<&TestCerts>) -> SecureCluster {
        let dir = unique_temp_dir("secure-cluster");
        mode.cluster_dir = Some(dir.clone());
        let nodes: Vec<SecureRedis> = (0..3)
            .map(|_| SecureRedis::start(mode.clone(), certs))
            .collect();
        let cluster = SecureCluster { nodes, dir };
        let mut create = Command::new(REDIS_CLI);
        cluster.nodes[0].cli_options(&mut create);
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(n.addr());
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err(e) = run_bounded(create, CLUSTER_CREATE_TIMEOUT) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        eventually("cluster_state:ok on every node", CLUSTER_OK_TIMEOUT, || {
            cluster.nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .lines()
                    .any(|l| l.trim() == "cluster_state:ok")
            })
        });
        cluster
    }

    /// `127.0.0.1:<port>` of every node (seeds for a cluster client).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }
}

impl Drop for SecureCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SecureRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
