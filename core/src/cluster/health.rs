//! Health: active checks (TCP, HTTP, Redis PING), passive outlier ejection, slow start.
//!
//! A node's effective health combines three sources, as Envoy does:
//! - the operator's word ([`Cluster::set_health`]): draining or unhealthy override everything;
//! - active checks: after `fall` consecutive failures the node is unhealthy until `rise`
//!   consecutive successes;
//! - passive outlier detection: `consecutive_failures` reported failures eject the node for
//!   `base_ejection_time x times ejected` (capped at `max_ejection_time`); at most
//!   `max_ejected_share` of the pool is ejected at once; ejected nodes return by themselves.
//!
//! Checks run on the core's shared runtime ([`crate::blocking::runtime`]) in one supervisor
//! task per cluster, never on a pick's path, and stop when the cluster is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, Inner};
use crate::error::{Error, Result};
use crate::node::Node;

/// What an active check does.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect to the node's address succeeds.
    Tcp,
    /// `GET path` over HTTP/1.1 answers with a status in `expected`.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Accepted status codes (default 200..=299).
        expected: RangeInclusive<u16>,
    },
    /// A Redis `PING` answers `+PONG`.
    RedisPing,
}

/// Active health check settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// The probe.
    pub kind: CheckKind,
    /// Time between two checks of one node (default 2 s).
    pub interval: Duration,
    /// Time a check may take before it counts as failed (default 1 s).
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy node healthy (default 2).
    pub rise: u32,
    /// Consecutive failures that make a healthy node unhealthy (default 3).
    pub fall: u32,
    /// Random spread of each interval, as a share of it (0.0..=0.5, default 0.1), so checks of
    /// many nodes do not align.
    pub jitter: f64,
    /// Credentials, database and TLS of the Redis `PING` check (default: none, a plain
    /// `PING` over TCP). With a password the check passes only when `AUTH` succeeds.
    pub redis: crate::connection::ConnectionSettings,
}

impl CheckOptions {
    /// A check of `kind` with the defaults above.
    pub fn new(kind: CheckKind) -> CheckOptions {
        CheckOptions {
            kind,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter: 0.1,
            redis: crate::connection::ConnectionSettings::default(),
        }
    }
    /// An HTTP check of `path` expecting a 2xx status.
    pub fn http(path: impl Into<String>) -> CheckOptions {
        CheckOptions::new(CheckKind::Http {
            path: path.into(),
            expected: 200..=299,
        })
    }
    /// Sets the interval.
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }
    /// Sets the timeout.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
    /// Sets rise and fall.
    pub fn with_thresholds(mut self, rise: u32, fall: u32) -> Self {
        self.rise = rise;
        self.fall = fall;
        self
    }
    /// Sets the Redis connection settings of the `PING` check.
    pub fn with_redis(mut self, redis: crate::connection::ConnectionSettings) -> Self {
        self.redis = redis;
        self
    }
    /// Sets the jitter share.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_millis(10) {
            return Err(Error::invalid("health.interval", "must be at least 10ms"));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("health.timeout", "must be more than 0"));
        }
        if self.rise == 0 {
            return Err(Error::invalid("health.rise", "must be at least 1"));
        }
        if self.fall == 0 {
            return Err(Error::invalid("health.fall", "must be at least 1"));
        }
        if !self.jitter.is_finite() || !(0.0..=0.5).contains(&self.jitter) {
            return Err(Error::invalid(
                "health.jitter",
                "must be between 0.0 and 0.5",
            ));
        }
        if let CheckKind::Http { path, expected } = &self.kind {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(
                    "health.path",
                    format!("must start with / and contain no whitespace, got {path:?}"),
                ));
            }
            if expected.start() > expected.end() || *expected.start() < 100 || *expected.end() > 599
            {
                return Err(Error::invalid(
                    "health.expected_status",
                    "must be a range within 100..=599",
                ));
            }
        }
        Ok(())
    }
}

/// Passive outlier detection settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierOptions {
    /// Consecutive reported failures that eject a node (default 5).
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection (default 30 s); the n-th ejection lasts n times as
    /// long.
    pub base_ejection_time: Duration,
    /// Longest ejection (default 300 s). A node that stays in for this long after returning
    /// starts again from the base time.
    pub max_ejection_time: Duration,
    /// Largest share of the pool ejected at once (default 0.5). At least one node may always
    /// be ejected.
    pub max_ejected_share: f64,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        OutlierOptions {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

impl OutlierOptions {
    /// Sets the failure count that ejects.
    pub fn with_consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }
    /// Sets base and maximum ejection times.
    pub fn with_ejection_times(mut self, base: Duration, max: Duration) -> Self {
        self.base_ejection_time = base;
        self.max_ejection_time = max;
        self
    }
    /// Sets the largest ejected share.
    pub fn with_max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = share;
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.consecutive_failures == 0 {
            return Err(Error::invalid(
                "outlier.consecutive_failures",
                "must be at least 1",
            ));
        }
        if self.base_ejection_time.is_zero() {
            return Err(Error::invalid(
                "outlier.base_ejection_time",
                "must be more than 0",
            ));
        }
        if self.max_ejection_time < self.base_ejection_time {
            return Err(Error::invalid(
                "outlier.max_ejection_time",
                "must be at least base_ejection_time",
            ));
        }
        if !(0.0..=1.0).contains(&self.max_ejected_share) {
            return Err(Error::invalid(
                "outlier.max_ejected_share",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }

    /// Length of the `n`-th ejection (n >= 1).
    pub fn ejection_time(&self, n: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(n.max(1))
            .min(self.max_ejection_time)
    }
}

/// Health settings of a pool: active checks, outlier detection, slow start.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthOptions {
    /// Active checks for every node, unless a node has its own in `per_node`.
    pub check: Option<CheckOptions>,
    /// Per-node active checks (by node id), overriding `check`.
    pub per_node: HashMap<String, CheckOptions>,
    /// Passive outlier detection.
    pub outlier: Option<OutlierOptions>,
    /// Slow start window: a node that becomes healthy ramps its weight from 10% to 100% over
    /// it, in 10% steps. Applies to weighted round robin, random, least connections and P2C
    /// (not to the hashing strategies, where it would move keys).
    pub slow_start: Option<Duration>,
}

impl HealthOptions {
    /// Sets the pool-wide active check.
    pub fn with_check(mut self, check: CheckOptions) -> Self {
        self.check = Some(check);
        self
    }
    /// Sets one node's active check.
    pub fn with_node_check(mut self, id: impl Into<String>, check: CheckOptions) -> Self {
        self.per_node.insert(id.into(), check);
        self
    }
    /// Enables outlier detection.
    pub fn with_outlier(mut self, outlier: OutlierOptions) -> Self {
        self.outlier = Some(outlier);
        self
    }
    /// Enables slow start.
    pub fn with_slow_start(mut self, window: Duration) -> Self {
        self.slow_start = Some(window);
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = &self.check {
            c.validate()?;
        }
        for (id, c) in &self.per_node {
            c.validate()
                .map_err(|e| e.in_field(&format!("node {id:?}")))?;
        }
        if let Some(o) = &self.outlier {
            o.validate()?;
        }
        if let Some(w) = self.slow_start {
            if w.is_zero() {
                return Err(Error::invalid("slow_start", "must be more than 0"));
            }
        }
        Ok(())
    }

    pub(crate) fn check_for(&self, id: &str) -> Option<&CheckOptions> {
        self.per_node.get(id).or(self.check.as_ref())
    }
}

/// Counters of a pool's health machinery.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) checks: AtomicU64,
    pub(crate) check_failures: AtomicU64,
    pub(crate) marked_unhealthy: AtomicU64,
    pub(crate) marked_healthy: AtomicU64,
    pub(crate) ejections: AtomicU64,
    pub(crate) ejections_refused: AtomicU64,
}

/// A copy of a pool's health counters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthMetrics {
    /// Active checks run.
    pub checks: u64,
    /// Active checks that failed.
    pub check_failures: u64,
    /// Times active checks marked a node unhealthy.
    pub marked_unhealthy: u64,
    /// Times active checks marked a node healthy again.
    pub marked_healthy: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Ejections not done because the maximum ejected share was reached.
    pub ejections_refused: u64,
}

impl Counters {
    pub(crate) fn read(&self) -> HealthMetrics {
        HealthMetrics {
            checks: self.checks.load(Ordering::Relaxed),
            check_failures: self.check_failures.load(Ordering::Relaxed),
            marked_unhealthy: self.marked_unhealthy.load(Ordering::Relaxed),
            marked_healthy: self.marked_healthy.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            ejections_refused: self.ejections_refused.load(Ordering::Relaxed),
        }
    }
}

/// Runs one check against `node`. `Ok(())` is a pass; `Err` carries the reason.
pub async fn run_check(node: &Node, check: &CheckOptions) -> std::result::Result<(), String> {
    let probe = async {
        if check.kind == CheckKind::RedisPing && !check.redis.is_default() {
            redis_ping(node, &check.redis).await
        } else {
            probe(node, &check.kind).await
        }
    };
    match tokio::time::timeout(check.timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} check timed out after {:?}",
            kind_name(&check.kind),
            check.timeout
        )),
    }
}

fn kind_name(k: &CheckKind) -> &'static str {
    match k {
        CheckKind::Tcp => "tcp",
        CheckKind::Http { .. } => "http",
        CheckKind::RedisPing => "redis ping",
    }
}

/// `PING` through redis-rs with credentials, db and TLS: the check passes only when the
/// handshake (TLS, `AUTH`, `SELECT`) and the `PING` succeed. Messages are redacted.
async fn redis_ping(
    node: &Node,
    settings: &crate::connection::ConnectionSettings,
) -> std::result::Result<(), String> {
    use crate::connection::{prepare, redact, Resolution};
    let target =
        prepare(&node.address(), settings, Resolution::Custom).map_err(|e| e.to_string())?;
    let mut config = redis::AsyncConnectionConfig::new();
    if let Some(r) = &target.resolver {
        config = config.set_dns_resolver(r.clone());
    }
    let mut conn = target
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| redact(&crate::cache::redis::map_err(e, &target.display).to_string()))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| redact(&crate::cache::redis::map_err(e, &target.display).to_string()))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("redis answered {pong:?} to PING"))
    }
}

async fn probe(node: &Node, kind: &CheckKind) -> std::result::Result<(), String> {
    let addr = (node.host(), node.port());
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {} failed: {e}", node.address()))?;
    match kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::RedisPing => {
            stream
                .write_all(b"*1\r\n$4\r\nPING\r\n")
                .await
                .map_err(|e| format!("redis ping write failed: {e}"))?;
            let mut buf = [0u8; 64];
            let n = read_line(&mut stream, &mut buf).await?;
            let line = &buf[..n];
            if line.starts_with(b"+PONG") {
                Ok(())
            } else {
                Err(format!(
                    "redis answered {:?} to PING",
                    String::from_utf8_lossy(line).trim_end()
                ))
            }
        }
        CheckKind::Http { path, expected } => {
            let host = if node.host().contains(':') {
                format!("[{}]", node.host())
            } else {
                node.host().to_string()
            };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: clusterkit-health\r\nConnection: close\r\n\r\n",
                node.port()
            );
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| format!("http write failed: {e}"))?;
            let mut buf = [0u8; 256];
            let n = read_line(&mut stream, &mut buf).await?;
            let line = String::from_utf8_lossy(&buf[..n]);
            // "HTTP/1.1 200 OK"
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|_| line.starts_with("HTTP/"))
                .ok_or_else(|| format!("not an HTTP status line: {:?}", line.trim_end()))?;
            if expected.contains(&status) {
                Ok(())
            } else {
                Err(format!(
                    "http status {status} outside {}..={}",
                    expected.start(),
                    expected.end()
                ))
            }
        }
    }
}

/// Reads until the first `\n` (or the buffer is full); returns the bytes read.
async fn read_line(stream: &mut TcpStream, buf: &mut [u8]) -> std::result::Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        let r = stream
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if r == 0 {
            if n == 0 {
                return Err("connection closed without an answer".into());
            }
            break;
        }
        n += r;
        if buf[..n].contains(&b'\n') {
            break;
        }
    }
    Ok(n)
}

/// Per-node state kept by the supervisor.
struct NodeCheck {
    successes: u32,
    failures: u32,
    next_due: Instant,
    running: bool,
}

fn jittered(interval: Duration, jitter: f64) -> Duration {
    let r = crate::rng::next_u64() as f64 / u64::MAX as f64; // 0..=1
    interval.mul_f64(1.0 + jitter * (2.0 * r - 1.0))
}

/// Brings the supervisor's per-node states in line with a new snapshot: drops nodes that left
/// or lost their check, adds new ones with a first check spread over the interval. O(N), run
/// only when the snapshot changed (a membership or health change rebuilds it anyway).
fn reconcile(
    snap: &crate::cluster::Snapshot,
    states: &mut HashMap<Arc<str>, NodeCheck>,
    due: &mut BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    now: Instant,
) {
    states.retain(|id, _| snap.by_id.contains_key(id) && snap.health.check_for(id).is_some());
    for m in &snap.members {
        let id = m.node.id();
        if states.contains_key(id) {
            continue;
        }
        let Some(check) = snap.health.check_for(id) else {
            continue;
        };
        // Spread first checks over one interval.
        let first = now
            + check.interval.mul_f64(
                crate::rng::next_u64() as f64 / u64::MAX as f64 * check.jitter.max(0.05) * 2.0,
            );
        let id: Arc<str> = Arc::from(id);
        states.insert(
            id.clone(),
            NodeCheck {
                successes: 0,
                failures: 0,
                next_due: first,
                running: false,
            },
        );
        due.push(Reverse((first, id)));
    }
    // Entries of nodes that left stay in the queue until they come up; rebuild it when they
    // outnumber the live ones, so it stays O(N).
    if due.len() > 2 * states.len() + 64 {
        due.clear();
        for (id, st) in states.iter() {
            if !st.running {
                due.push(Reverse((st.next_due, id.clone())));
            }
        }
    }
}

/// The supervisor task: runs due checks concurrently, applies rise/fall, and sleeps until the
/// next check is due or membership changes. Holds only a weak reference to the cluster and
/// ends when it is dropped or checks are disabled.
///
/// Cost per check is O(log N) (issue #18): due checks come from a queue ordered by due time,
/// and the O(N) walk over the members runs only when the snapshot changed.
pub(crate) async fn supervise(weak: Weak<Inner>) {
    let mut states: HashMap<Arc<str>, NodeCheck> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(Instant, Arc<str>)>> = BinaryHeap::new();
    let mut seen: Option<Arc<crate::cluster::Snapshot>> = None;
    let mut running: JoinSet<(Arc<str>, std::result::Result<(), String>)> = JoinSet::new();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let cluster = Cluster { inner };
        let snap = cluster.inner.snapshot.load_full();
        let notify = cluster.inner.changed.clone();
        let now = Instant::now();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snap)) {
            reconcile(&snap, &mut states, &mut due, now);
            seen = Some(snap.clone());
        }
        while let Some(Reverse((at, _))) = due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, id))) = due.pop() else {
                break;
            };
            // Stale entries: the node left, or was re-added with a new due time.
            let Some(st) = states.get_mut(&id) else {
                continue;
            };
            if st.running || st.next_due != at {
                continue;
            }
            let (Some(_), Some(&i)) = (snap.health.check_for(&id), snap.by_id.get(&id)) else {
                continue;
            };
            st.running = true;
            let node = snap.members[i].node.clone();
            let health = snap.health.clone();
            running.spawn(crate::fork::gated(async move {
                let r = match health.check_for(&id) {
                    Some(check) => run_check(&node, check).await,
                    // Not reached: these same (immutable) options had a check for the id.
                    None => Err("no check configured".to_string()),
                };
                (id, r)
            }));
        }
        let next_wake = due
            .peek()
            .map(|Reverse((at, _))| *at)
            .unwrap_or(now + Duration::from_secs(3600));
        if states.is_empty() && running.is_empty() {
            // Dropping the supervisor's own handle would abort this task at its end: fine.
            let own = cluster.inner.supervisor.lock().take();
            drop(own);
            return;
        }
        drop(snap);
        drop(cluster);
        let notified = notify.notified();
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((id, result)) = done else { continue };
                let Some(inner) = weak.upgrade() else { return };
                let cluster = Cluster { inner };
                let snap = cluster.inner.snapshot.load_full();
                let Some(st) = states.get_mut(&id) else { continue };
                st.running = false;
                let health = snap.health.clone();
                let Some(check) = health.check_for(&id) else { continue };
                st.next_due = Instant::now() + jittered(check.interval, check.jitter);
                due.push(Reverse((st.next_due, id.clone())));
                let failing = snap.by_id.get(&id).map(|&i| snap.members[i].check_failing).unwrap_or(false);
                let counters = &cluster.inner.counters;
                counters.checks.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        st.failures = 0;
                        st.successes = st.successes.saturating_add(1);
                        if failing && st.successes >= check.rise {
                            counters.marked_healthy.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(target: "clusterkit::cluster", pool = cluster.name(), node = %id,
                                check = kind_name(&check.kind), successes = st.successes, "node marked healthy by checks");
                            let reason = format!("{} consecutive {} checks passed", st.successes, kind_name(&check.kind));
                            let _ = cluster.set_check_failing(&id, false, &reason);
                        }
                    }
                    Err(why) => {
                        counters.check_failures.fetch_add(1, Ordering::Relaxed);
                        st.successes = 0;
                        st.failures = st.failures.saturating_add(1);
                        if !failing && st.failures >= check.fall {
                            counters.marked_unhealthy.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(target: "clusterkit::cluster", pool = cluster.name(), node = %id,
                                check = kind_name(&check.kind), failures = st.failures, "node marked unhealthy by checks");
                            let reason = format!("{} consecutive {} checks failed: {why}", st.failures, kind_name(&check.kind));
                            let _ = cluster.set_check_failing(&id, true, &reason);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_wake.into()) => {}
            _ = notified => {}
        }
    }
}

/// The refresh task: wakes at the snapshot's next scheduled change (an ejection ending, a
/// slow-start step) and rebuilds. Ends when nothing is scheduled or the cluster is dropped.
pub(crate) async fn refresher(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let next = inner.snapshot.load().next_refresh;
        let Some(at) = next else {
            inner.refresher_running.store(false, Ordering::SeqCst);
            // A change may have scheduled something between the load and the store.
            if inner.snapshot.load().next_refresh.is_some()
                && !inner.refresher_running.swap(true, Ordering::SeqCst)
            {
                continue;
            }
            return;
        };
        drop(inner);
        tokio::time::sleep_until(at.into()).await;
        let Some(inner) = weak.upgrade() else { return };
        let _ = Cluster { inner }.refresh();
    }
}
