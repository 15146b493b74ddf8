//! Metrics of a deployment (issue #15): live counters recorded with relaxed atomics where
//! the work happens (picks, outcomes and fixed-bucket latencies per node, health and
//! ejections per pool, cache reads per backend, locks, sessions, Redis connections), read
//! into a [`MetricsSnapshot`] — a plain serde value — and rendered from it as Prometheus
//! text ([`MetricsSnapshot::to_prometheus`]) or OpenMetrics ([`MetricsSnapshot::to_openmetrics`]), through a `prometheus-client`
//! registry this library owns, never a process-wide recorder) and as the status page
//! ([`crate::status`]). Labels are `pool`, `node` and `operation` only: never keys, ids,
//! tokens or secrets.
//!
//! Snapshots of several processes (PHP-FPM workers) add up with [`MetricsSnapshot::merge`];
//! [`publish`] and [`aggregate`] share them through a directory (see docs/monitoring.md).

pub mod config;
pub mod counters;
pub mod histogram;
mod prometheus;
mod share;

use serde::{Deserialize, Serialize};

pub use config::MetricsConfig;
pub use counters::{LockCounters, LockStats, RedisStats, SessionCounters, SessionStats};
pub use histogram::{HistogramSnapshot, LatencyHistogram, BOUNDS_US};
pub use prometheus::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use share::{aggregate, publish};

use crate::scaling::Recommendation;

/// One node of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Node id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Balancing weight.
    pub weight: u32,
    /// `healthy`, `unhealthy` or `draining`.
    pub health: String,
    /// Why the health last changed.
    pub reason: String,
    /// Ejected by outlier detection now.
    pub ejected: bool,
    /// Requests picked and not finished.
    pub in_flight: u64,
    /// Picks handed out.
    pub picks: u64,
    /// Outcomes reported as successes.
    pub successes: u64,
    /// Outcomes reported as failures.
    pub failures: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Latencies of reported successes.
    pub latency: HistogramSnapshot,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolMetrics {
    /// Pool name.
    pub name: String,
    /// Balancing strategy.
    pub strategy: String,
    /// Nodes.
    pub total: u64,
    /// Healthy nodes.
    pub healthy: u64,
    /// Panic mode on (too few healthy nodes: all are used).
    pub in_panic: bool,
    /// Active checks run.
    pub checks: u64,
    /// Active checks failed.
    pub check_failures: u64,
    /// Outlier ejections.
    pub ejections: u64,
    /// Ejections refused (max ejected share reached).
    pub ejections_refused: u64,
    /// The nodes.
    pub nodes: Vec<NodeMetrics>,
}

/// The cache's counters; `node` names the backend (`memory`, `redis`, `distributed`,
/// `redis_cluster`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheMetrics {
    /// The backend.
    pub node: String,
    /// Reads that found the key.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Failed operations.
    pub errors: u64,
    /// Keys written or deleted.
    pub writes: u64,
    /// Latency of reads from a network backend (the embedded backend's reads are not timed:
    /// a clock read would cost more than the read).
    pub get_latency: HistogramSnapshot,
}

/// Everything a deployment measures, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Processes added up into this snapshot (1 for one process).
    pub processes: u64,
    /// When it was taken (Unix ms; the latest one of a merge).
    pub taken_at_ms: u64,
    /// Pools by name order.
    pub pools: Vec<PoolMetrics>,
    /// The cache.
    pub cache: CacheMetrics,
    /// The locks.
    pub locks: LockStats,
    /// The sessions.
    pub sessions: SessionStats,
    /// The process's Redis connections.
    pub redis: RedisStats,
    /// The scaling advisors' latest recommendations.
    pub scaling: Vec<Recommendation>,
    /// The task queue's counters (issue #16).
    #[serde(default)]
    pub queue: crate::queue::QueueMetrics,
}

impl MetricsSnapshot {
    /// The snapshot as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Adds `other` (another process's snapshot of the same deployment) into this one:
    /// counters and in-flight gauges add up; health, weight and the advisors' view come from
    /// the more recent snapshot.
    pub fn merge(&mut self, other: &MetricsSnapshot) {
        let newer = other.taken_at_ms >= self.taken_at_ms;
        self.processes += other.processes;
        self.taken_at_ms = self.taken_at_ms.max(other.taken_at_ms);
        for op in &other.pools {
            let Some(p) = self.pools.iter_mut().find(|p| p.name == op.name) else {
                self.pools.push(op.clone());
                continue;
            };
            p.checks += op.checks;
            p.check_failures += op.check_failures;
            p.ejections += op.ejections;
            p.ejections_refused += op.ejections_refused;
            if newer {
                p.strategy = op.strategy.clone();
                p.total = op.total;
                p.healthy = op.healthy;
                p.in_panic = op.in_panic;
            }
            for on in &op.nodes {
                let Some(n) = p.nodes.iter_mut().find(|n| n.id == on.id) else {
                    p.nodes.push(on.clone());
                    continue;
                };
                n.in_flight += on.in_flight;
                n.picks += on.picks;
                n.successes += on.successes;
                n.failures += on.failures;
                n.ejections += on.ejections;
                n.latency.merge(&on.latency);
                if newer {
                    n.address = on.address.clone();
                    n.weight = on.weight;
                    n.health = on.health.clone();
                    n.reason = on.reason.clone();
                    n.ejected = on.ejected;
                }
            }
        }
        self.pools.sort_by(|a, b| a.name.cmp(&b.name));
        let c = &mut self.cache;
        if c.node.is_empty() {
            c.node = other.cache.node.clone();
        }
        c.hits += other.cache.hits;
        c.misses += other.cache.misses;
        c.errors += other.cache.errors;
        c.writes += other.cache.writes;
        c.get_latency.merge(&other.cache.get_latency);
        self.locks.merge(&other.locks);
        self.sessions.merge(&other.sessions);
        self.redis.merge(&other.redis);
        self.queue.merge(&other.queue);
        if newer && !other.scaling.is_empty() {
            self.scaling = other.scaling.clone();
        }
    }
}
