//! A private 3-member etcd cluster for tests and benchmarks (issue #17).
//!
//! [`EtcdCluster::start`] runs Debian's `etcd` (3.4) three times on free loopback ports
//! (client and peer URLs), with data dirs in a fresh temp dir (under `/dev/shm` when it
//! exists: no disk fsync cost), and waits until every member answers. Members can be paused
//! (SIGSTOP), resumed, killed and restarted; [`EtcdCluster::leader`] finds the leader with
//! `etcdctl endpoint status`. Dropping the cluster kills every member (SIGKILL, by PID) and
//! removes the temp dir, also when the test panics.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's etcd-server.
pub const ETCD: &str = "/usr/bin/etcd";
/// Debian's etcd-client.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// One member.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

/// Three etcd members on loopback, killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    initial_cluster: String,
    pub members: Vec<Member>,
}

fn installed() {
    for p in [ETCD, ETCDCTL] {
        if !Path::new(p).exists() {
            panic!(
                "{p} not installed: run ./scripts/test, which installs etcd-server and etcd-client"
            );
        }
    }
}

impl EtcdCluster {
    /// Starts a 3-member cluster and waits until every member answers.
    pub fn start() -> EtcdCluster {
        EtcdCluster::start_n(3)
    }

    /// Starts an `n`-member cluster. A member whose port another process took between
    /// `free_port` and etcd's own bind (tests run in parallel) exits at once with "address
    /// already in use": the cluster is then started again on new ports, at most 3 times.
    pub fn start_n(n: usize) -> EtcdCluster {
        installed();
        for attempt in 1..=3 {
            let mut c = EtcdCluster::spawn_new(n);
            match c.wait_started(START_TIMEOUT) {
                Ok(()) => return c,
                Err(Some(i)) if attempt < 3 => {
                    eprintln!(
                        "etcd member {} exited while starting (attempt {attempt}): new ports",
                        c.members[i].name
                    );
                }
                Err(_) => {
                    panic!(
                        "etcd cluster not healthy after {START_TIMEOUT:?}; logs:\n{}",
                        c.logs()
                    );
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Every member's log, for a failure message.
    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Waits until every member reports one leader; `Err(Some(i))`: member `i` exited,
    /// `Err(None)`: the time ran out.
    fn wait_started(&mut self, timeout: Duration) -> Result<(), Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.leader_now().is_some() {
                return Ok(());
            }
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(c) = m.child.as_mut() {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return Err(Some(i));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `n` members on fresh ports in a fresh directory, spawned, not yet waited for.
    fn spawn_new(n: usize) -> EtcdCluster {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "ck-etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            dir,
            initial_cluster,
            members,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(ETCD)
            .args([
                "--name",
                &m.name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "clusterkit-test",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
        self.members[i].paused = false;
    }

    /// Client endpoints (`127.0.0.1:<port>`) of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// The endpoints as a TOML/JSON array literal: `["127.0.0.1:1", ...]`.
    pub fn endpoints_literal(&self) -> String {
        let e: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", e.join(", "))
    }

    /// Runs etcdctl against the running, unpaused members; returns stdout (panics on failure).
    pub fn ctl(&self, args: &[&str]) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some() && !m.paused)
            .map(|m| m.endpoint())
            .collect();
        self.ctl_on(&eps, args)
    }

    fn ctl_on(&self, eps: &[String], args: &[&str]) -> String {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("run etcdctl");
        if !out.status.success() {
            panic!(
                "etcdctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`ctl`](Self::ctl) but `None` instead of a panic.
    pub fn try_ctl(&self, args: &[&str]) -> Option<String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.ctl(args))).ok()
    }

    /// Waits until every running, unpaused member reports a leader.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.leader_now().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd cluster not healthy after {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the current leader, if every running member agrees on one.
    fn leader_now(&self) -> Option<usize> {
        let running: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.child.is_some() && !m.paused)
            .collect();
        if running.is_empty() {
            return None;
        }
        let eps: Vec<String> = running.iter().map(|m| m.endpoint()).collect();
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .args(["--command-timeout=2s", "endpoint", "status", "-w", "json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let arr = v.as_array()?;
        if arr.len() != running.len() {
            return None;
        }
        let mut leader_id = None;
        let mut leader_ep = None;
        for s in arr {
            let st = &s["Status"];
            let lid = st["leader"].as_u64()?;
            if lid == 0 || leader_id.is_some_and(|l| l != lid) {
                return None;
            }
            leader_id = Some(lid);
            if st["header"]["member_id"].as_u64() == Some(lid) {
                leader_ep = s["Endpoint"].as_str().map(str::to_string);
            }
        }
        let ep = leader_ep?;
        self.members.iter().position(|m| m.endpoint() == ep)
    }

    /// The index of the leader (waits up to 10 s for one).
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.leader_now() {
                return l;
            }
            if Instant::now() >= deadline {
                panic!("no etcd leader within 10s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A member other than the leader.
    pub fn follower(&self) -> usize {
        let l = self.leader();
        (0..self.members.len()).find(|i| *i != l).unwrap()
    }

    fn signal(&mut self, i: usize, sig: i32) {
        if let Some(pid) = self.members[i].pid() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Freezes member `i` (SIGSTOP): its connections stay open, nothing answers.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].paused = true;
    }

    /// Continues member `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.members[i].paused = false;
    }

    /// Kills member `i` (SIGKILL) and reaps it; its data dir stays for a restart.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.members[i].paused = false;
    }

    /// Starts member `i` again from its data dir and waits until the cluster is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(START_TIMEOUT);
    }

    /// Compacts the key space up to the current revision (physically).
    pub fn compact_now(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rev = v[0]["Status"]["header"]["revision"].as_i64().unwrap();
        self.ctl(&["compaction", "--physical", &rev.to_string()]);
        rev
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
