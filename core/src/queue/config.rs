//! The `[queue]` section of the config document and its builder.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backoff, QueueOptions, TaskQueue, MAX_ATTEMPTS, MAX_DELAY, MAX_PAYLOAD_LIMIT};
use crate::cluster::Cluster;
use crate::config::{check_duration, check_int, DurationText, PoolConfig};
use crate::error::{Error, Result};

/// The backoff as written in `[queue]`: `{ kind = "exponential", delay = "1s", max = "5m",
/// jitter = true }` or `{ kind = "fixed", delay = "500ms" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// `fixed` or `exponential`.
    pub kind: String,
    /// The (first) delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationText>,
    /// The longest exponential delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<DurationText>,
    /// Randomise exponential delays (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

/// `[queue]`: where the task queue lives and its defaults.
///
/// ```toml
/// [queue]
/// pool = "cache"               # its first node is the queue's Redis; none: embedded
/// visibility_timeout = "30s"
/// block = "5s"
/// max_attempts = 3
/// backoff = { kind = "exponential", delay = "1s", max = "5m", jitter = true }
/// queues = ["emails", "reports"]   # optional: only these names are accepted
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// A pool of the document whose first node is the queue's Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A Redis server (`host:port` or URL), instead of `pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Key namespace (default: the cache's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Lease of a reserved job (default 30s; 10ms..=24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<DurationText>,
    /// Longest blocking read of an idle consumer (default 5s; 10ms..=60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<DurationText>,
    /// Default attempts (default 3; 1..=1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    /// Default backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffConfig>,
    /// Largest payload (default 1 MiB; 1..=512 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload_bytes: Option<u64>,
    /// Dead-letter entries kept per queue (default 10 000; 1..=10^8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_history: Option<u64>,
    /// Default idempotency window (default 24h; 1ms..=8760h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_ttl: Option<DurationText>,
    /// When given: the only queue names accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
}

impl BackoffConfig {
    fn to_backoff(&self) -> Result<Backoff> {
        let ms = |d: Option<DurationText>| d.map(|d| d.0.as_millis() as i64);
        if let Some(d) = self.delay {
            check_duration("delay", d.0, Duration::from_millis(1), MAX_DELAY)?;
        }
        if let Some(d) = self.max {
            check_duration("max", d.0, Duration::from_millis(1), MAX_DELAY)?;
        }
        super::BackoffSpec {
            kind: self.kind.clone(),
            delay_ms: ms(self.delay),
            max_ms: ms(self.max),
            jitter: self.jitter,
        }
        .to_backoff()
        .map_err(|e| match e {
            Error::InvalidArgument { field, message } => Error::invalid(
                field
                    .trim_start_matches("backoff.")
                    .trim_end_matches("_ms")
                    .to_string(),
                message,
            ),
            other => other,
        })
    }
}

impl QueueConfig {
    /// The options of this section, with `namespace` as the default namespace. Fails
    /// naming the field as written in the section.
    pub fn options(&self, namespace: &str) -> Result<QueueOptions> {
        let mut o = QueueOptions::default().with_namespace(
            self.namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
        );
        if let Some(v) = self.visibility_timeout {
            o.visibility_timeout = v.0;
        }
        if let Some(v) = self.block {
            o.block = v.0;
        }
        if let Some(n) = self.max_attempts {
            check_int("max_attempts", n, 1, MAX_ATTEMPTS)?;
            o.max_attempts = n as u32;
        }
        if let Some(b) = &self.backoff {
            o.backoff = b.to_backoff().map_err(|e| e.in_field("backoff"))?;
        }
        if let Some(n) = self.max_payload_bytes {
            check_int("max_payload_bytes", n, 1, MAX_PAYLOAD_LIMIT as u64)?;
            o.max_payload_bytes = n as usize;
        }
        if let Some(n) = self.dead_history {
            o.dead_history = n;
        }
        if let Some(t) = self.idempotency_ttl {
            o.idempotency_ttl = t.0;
        }
        if let Some(q) = &self.queues {
            o.queues = q.clone();
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks the section against its bounds and the pool it names (no I/O).
    pub fn validate(&self, pools: &BTreeMap<String, PoolConfig>) -> Result<()> {
        if self.pool.is_some() && self.redis.is_some() {
            return Err(Error::invalid(
                "redis",
                "give either pool or redis, not both",
            ));
        }
        if let Some(p) = &self.pool {
            match pools.get(p) {
                None => {
                    return Err(Error::invalid(
                        "pool",
                        format!("no pool named {:?} in [pools]", crate::config::excerpt(p)),
                    ))
                }
                Some(pool) if pool.nodes.is_empty() => {
                    return Err(Error::invalid("pool", format!("pool {p:?} has no nodes")))
                }
                _ => {}
            }
        }
        if let Some(r) = &self.redis {
            crate::config::check_text("redis", r, 1024)?;
        }
        self.options("clusterkit").map(|_| ())
    }

    /// Builds the task queue (no I/O): Redis when the section names a pool or a server,
    /// else embedded.
    pub fn build_with(
        &self,
        namespace: &str,
        pools: &BTreeMap<String, Cluster>,
        connection: &crate::connection::ConnectionSettings,
    ) -> Result<TaskQueue> {
        let options = self.options(namespace)?;
        let address = match (&self.pool, &self.redis) {
            (Some(name), _) => {
                let pool = pools.get(name).ok_or_else(|| {
                    Error::invalid("pool", format!("no pool named {name:?} in [pools]"))
                })?;
                let nodes = pool.nodes();
                let first = nodes
                    .first()
                    .ok_or_else(|| Error::invalid("pool", format!("pool {name:?} has no nodes")))?;
                Some(first.node.address())
            }
            (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        };
        match address {
            Some(a) => TaskQueue::redis(&a, options, connection),
            None => TaskQueue::memory(options),
        }
    }
}
