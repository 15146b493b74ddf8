//! The config document: one serde structure, JSON or TOML, that describes a deployment as
//! named pools of nodes.
//!
//! ```toml
//! [pools.app]
//! strategy = "p2c"
//! nodes = [
//!   { id = "web-1", host = "127.0.0.1", port = 8081, weight = 2, zone = "a" },
//!   { id = "web-2", host = "127.0.0.1", port = 8082 },
//! ]
//! ```
//!
//! Unknown fields are rejected; every error names the field by its path
//! (`pools.app.nodes[1].port`). An empty document is valid and means "everything embedded".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::balance::{BalancerOptions, PanicMode, Strategy};
use crate::cluster::health::{CheckKind, CheckOptions, HealthOptions, OutlierOptions};
use crate::cluster::Cluster;
use crate::connection::{ConnectionSettings, RedisSection};
use crate::discovery::{RedisRegistry, RegistryOptions};
use crate::error::{Error, Result};
use crate::node::Node;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Named pools of nodes.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// The cache: embedded when absent or when it names neither a pool nor a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// The locks: embedded when absent or without a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<LocksConfig>,
    /// Session timeouts (sessions live in the cache's backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsConfig>,
    /// Credentials, database and TLS of every Redis connection (a pool's own `redis` section
    /// overrides it for that pool's connections). See [`crate::connection`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSection>,
}

/// `[locks]`: `pool = "locks"` — one node is a single Redis, three or more a Redlock over
/// independent masters (a majority must agree).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksConfig {
    /// Pool of independent Redis masters (its nodes' addresses are used; its strategy is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Per-master response timeout during acquisition (default 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Key prefix (default `clusterkit:lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Extend held locks at a third of their TTL until released (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_renew: Option<bool>,
}

impl LocksConfig {
    /// Builds the lock service (no I/O). `pools` are the built pools of the same document.
    pub fn build(&self, pools: &BTreeMap<String, Cluster>) -> Result<crate::lock::DistributedLock> {
        self.build_with(pools, &ConnectionSettings::default())
    }

    /// Like [`LocksConfig::build`], connecting to the masters with `connection`.
    pub fn build_with(
        &self,
        pools: &BTreeMap<String, Cluster>,
        connection: &ConnectionSettings,
    ) -> Result<crate::lock::DistributedLock> {
        let mut o = crate::lock::LockOptions::default();
        o.redis = o.redis.with_connection(connection.clone());
        if let Some(t) = self.timeout {
            let connect = o.redis.connect_timeout;
            o.redis = o.redis.with_timeouts(connect, t.0);
        }
        if let Some(p) = &self.key_prefix {
            o = o.with_key_prefix(p.clone());
        }
        if let Some(r) = self.auto_renew {
            o = o.with_auto_renew(r);
        }
        let Some(name) = &self.pool else {
            o.validate()?;
            return Ok(crate::lock::DistributedLock::memory());
        };
        let pool = pools
            .get(name)
            .ok_or_else(|| Error::invalid("pool", format!("no pool named {name:?} in [pools]")))?;
        let addrs: Vec<String> = pool.nodes().iter().map(|s| s.node.address()).collect();
        if addrs.is_empty() {
            return Err(Error::invalid(
                "pool",
                format!("pool {name:?} has no nodes"),
            ));
        }
        let refs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
        crate::lock::DistributedLock::redlock(&refs, o)
    }
}

/// `[sessions]`: `idle_timeout = "30m"`, `absolute_timeout = "12h"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle (sliding) timeout (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<DurationText>,
    /// Absolute timeout from creation (default 12h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<DurationText>,
    /// Unchanged sessions are not refreshed more often than this (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<DurationText>,
    /// Lock TTL for locked loads (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<DurationText>,
    /// Longest wait for a session lock (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait: Option<DurationText>,
}

impl SessionsConfig {
    /// The session options this section describes.
    pub fn options(&self) -> crate::session::SessionOptions {
        let d = crate::session::SessionOptions::default();
        let pick = |v: Option<DurationText>, default: std::time::Duration| {
            v.map(|x| x.0).unwrap_or(default)
        };
        d.clone()
            .with_timeouts(
                pick(self.idle_timeout, d.idle_timeout),
                pick(self.absolute_timeout, d.absolute_timeout),
            )
            .with_refresh_interval(pick(self.refresh_interval, d.refresh_interval))
            .with_lock(
                pick(self.lock_ttl, d.lock_ttl),
                pick(self.lock_wait, d.lock_wait),
            )
    }
}

/// `[cache]`: where the cache lives and how.
///
/// ```toml
/// [cache]
/// pool = "cache"        # shard over this pool's Redis nodes (it must use a hashing strategy)
/// replicas = 2
/// namespace = "myapp"
/// ```
/// or `redis = "127.0.0.1:6379"` for one server; neither means the embedded in-process cache
/// (bounded by `max_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Pool of Redis nodes to shard over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// One Redis server (`host:port` or a `redis://` URL) instead of a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Key namespace (default `clusterkit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Owners per key with a pool (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// `all` (default) or `majority` of the owners must acknowledge a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<QuorumName>,
    /// `miss` (default) or `error` when no owner of a key answers a read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unavailable: Option<ReadFailureName>,
    /// Connect and response timeout per Redis operation (default 500ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Keys per MGET / pipeline chunk (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_chunk: Option<usize>,
    /// Largest value in bytes (default 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<usize>,
    /// Byte bound of the embedded cache (default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Write quorum names in the config document.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumName {
    /// Every owner.
    All,
    /// More than half of the owners.
    Majority,
}

/// Read-failure policy names in the config document.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFailureName {
    /// A miss.
    Miss,
    /// The error.
    Error,
}

impl CacheConfig {
    fn redis_options(&self) -> crate::cache::RedisOptions {
        let mut o = crate::cache::RedisOptions::default();
        if let Some(t) = self.timeout {
            o = o.with_timeouts(t.0, t.0);
        }
        if let Some(c) = self.batch_chunk {
            o = o.with_batch_chunk(c);
        }
        o
    }

    /// Checks the section against the pools it names; errors name the field.
    pub fn validate(&self, pools: &BTreeMap<String, PoolConfig>) -> Result<()> {
        if self.pool.is_some() && self.redis.is_some() {
            return Err(Error::invalid(
                "pool",
                "give either pool or redis, not both",
            ));
        }
        if let Some(p) = &self.pool {
            let Some(pool) = pools.get(p) else {
                return Err(Error::invalid(
                    "pool",
                    format!("no pool named {p:?} in [pools]"),
                ));
            };
            if !pool.strategy.is_hashing() {
                return Err(Error::invalid(
                    "pool",
                    format!(
                        "pool {p:?} must use ketama, maglev or rendezvous to shard a cache, not {}",
                        pool.strategy
                    ),
                ));
            }
        }
        if let Some(r) = self.replicas {
            if r == 0 || r > 16 {
                return Err(Error::invalid(
                    "replicas",
                    format!("must be 1..=16, got {r}"),
                ));
            }
        }
        if let Some(m) = self.max_value_bytes {
            if m == 0 || m > crate::cache::MAX_VALUE_LEN_LIMIT {
                return Err(Error::invalid(
                    "max_value_bytes",
                    format!("must be 1..={}", crate::cache::MAX_VALUE_LEN_LIMIT),
                ));
            }
        }
        if let Some(b) = self.max_bytes {
            if b < 1024 {
                return Err(Error::invalid("max_bytes", "must be at least 1024"));
            }
        }
        self.redis_options().validate()
    }

    /// Builds the cache (no I/O: Redis connections open on first use). `pools` are the built
    /// pools of the same document.
    pub fn build(&self, pools: &BTreeMap<String, Cluster>) -> Result<crate::cache::Cache> {
        self.build_with(pools, &ConnectionSettings::default())
    }

    /// Like [`CacheConfig::build`], connecting to Redis with `connection`.
    pub fn build_with(
        &self,
        pools: &BTreeMap<String, Cluster>,
        connection: &ConnectionSettings,
    ) -> Result<crate::cache::Cache> {
        use crate::cache::{
            Cache, CacheLimits, DistributedOptions, MemoryOptions, ReadFailure, WriteQuorum,
        };
        let ns = self.namespace.as_deref().unwrap_or("clusterkit");
        let cache = if let Some(p) = &self.pool {
            let pool = pools
                .get(p)
                .ok_or_else(|| Error::invalid("pool", format!("no pool named {p:?}")))?;
            let mut o = DistributedOptions::default()
                .with_replicas(self.replicas.unwrap_or(1))
                .with_redis(self.redis_options().with_connection(connection.clone()));
            if let Some(q) = self.write_quorum {
                o = o.with_write_quorum(match q {
                    QuorumName::All => WriteQuorum::All,
                    QuorumName::Majority => WriteQuorum::Majority,
                });
            }
            if let Some(f) = self.on_unavailable {
                o = o.with_on_unavailable(match f {
                    ReadFailureName::Miss => ReadFailure::Miss,
                    ReadFailureName::Error => ReadFailure::Error,
                });
            }
            Cache::distributed(pool.clone(), ns, o)?
        } else if let Some(r) = &self.redis {
            Cache::redis(
                r,
                ns,
                self.redis_options().with_connection(connection.clone()),
            )?
        } else {
            let mut o = MemoryOptions::default();
            if let Some(b) = self.max_bytes {
                o = o.with_max_bytes(b);
            }
            Cache::memory(ns, o)?
        };
        match self.max_value_bytes {
            Some(m) => cache.with_limits(CacheLimits { max_value_len: m }),
            None => Ok(cache),
        }
    }
}

/// One pool: its nodes and how requests are balanced over them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Balancing strategy (default `p2c`).
    #[serde(default)]
    pub strategy: Strategy,
    /// The nodes.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// What to do when too few nodes are healthy: `all` (default) or `error`.
    #[serde(default)]
    pub panic_mode: PanicMode,
    /// Share of healthy nodes (0.0..=1.0) below which the pool panics; default 0 (only when
    /// none is healthy).
    #[serde(default)]
    pub panic_threshold: f64,
    /// Bounded-load factor (>= 1.0) for the hashing strategies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded_load: Option<f64>,
    /// Maglev table size (a prime >= 100 x nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    /// Active health checks for every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheckConfig>,
    /// Passive outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierConfig>,
    /// Slow start window, e.g. `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<DurationText>,
    /// Discover nodes from a Redis registry (in addition to the static `nodes`, which are
    /// replaced by the registry's listing once it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryConfig>,
    /// Overrides the top-level `[redis]` for every Redis connection opened for this pool
    /// (its nodes as cache shards or lock masters, its Redis health check, its registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSection>,
}

/// `discovery = { redis = "127.0.0.1:6379", service = "web", ttl = "10s" }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Registry address: `host:port` or a `redis://` URL.
    pub redis: String,
    /// Service name under which nodes register.
    pub service: String,
    /// Heartbeat TTL (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationText>,
    /// Heartbeat and full re-listing interval (default ttl / 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
    /// Key prefix (default `clusterkit:registry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

impl DiscoveryConfig {
    /// The registry this section describes (no I/O). Fails on a bad address or option.
    pub fn registry(&self) -> Result<RedisRegistry> {
        self.registry_with(&ConnectionSettings::default())
    }

    /// Like [`DiscoveryConfig::registry`], connecting with `connection`.
    pub fn registry_with(&self, connection: &ConnectionSettings) -> Result<RedisRegistry> {
        let mut o = RegistryOptions::default().with_connection(connection.clone());
        if let Some(t) = self.ttl {
            o = o.with_ttl(t.0);
        }
        if let Some(i) = self.interval {
            o = o.with_heartbeat_interval(i.0);
        }
        if let Some(p) = &self.key_prefix {
            o = o.with_key_prefix(p.clone());
        }
        RedisRegistry::new(&self.redis, &self.service, o)
    }
}

/// A duration written with a unit: `"1500ms"`, `"30s"`, `"2m"`, `"12h"` (also `"us"`, and
/// decimals such as `"1.5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

/// Parses a duration with a unit (`ms`, `s`, `m`, `h`, `us`); fails naming the expected form.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(
            "duration",
            format!("expected a number with a unit like \"1500ms\", \"30s\", \"2m\" or \"12h\", got {text:?}"),
        )
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(DurationText)
            .map_err(|e| match e {
                Error::InvalidArgument { message, .. } => serde::de::Error::custom(message),
                other => serde::de::Error::custom(other),
            })
    }
}

/// Which probe an active check uses.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http,
    /// Redis PING.
    Redis,
}

/// `health = { check = "http", path = "/healthz", interval = "2s", rise = 2, fall = 3 }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The probe: `tcp`, `http` or `redis`.
    pub check: CheckName,
    /// HTTP path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Accepted HTTP statuses `[low, high]` (default `[200, 299]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<[u16; 2]>,
    /// Time between checks (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
    /// Check timeout (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Successes to become healthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures to become unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// Interval jitter share, 0.0..=0.5 (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl HealthCheckConfig {
    /// The check options this section describes.
    pub fn options(&self) -> CheckOptions {
        let kind = match self.check {
            CheckName::Tcp => CheckKind::Tcp,
            CheckName::Redis => CheckKind::RedisPing,
            CheckName::Http => {
                let [lo, hi] = self.expected_status.unwrap_or([200, 299]);
                CheckKind::Http {
                    path: self.path.clone().unwrap_or_else(|| "/".into()),
                    expected: lo..=hi,
                }
            }
        };
        let mut o = CheckOptions::new(kind);
        if let Some(d) = self.interval {
            o.interval = d.0;
        }
        if let Some(d) = self.timeout {
            o.timeout = d.0;
        }
        if let Some(r) = self.rise {
            o.rise = r;
        }
        if let Some(f) = self.fall {
            o.fall = f;
        }
        if let Some(j) = self.jitter {
            o.jitter = j;
        }
        o
    }
}

/// `outlier = { consecutive_failures = 5, base_ejection_time = "30s", max_ejection_time = "300s", max_ejected_percent = 50 }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures that eject (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<DurationText>,
    /// Longest ejection (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<DurationText>,
    /// Largest share of the pool ejected at once, in percent (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<f64>,
}

impl OutlierConfig {
    /// The outlier options this section describes.
    pub fn options(&self) -> OutlierOptions {
        let mut o = OutlierOptions::default();
        if let Some(n) = self.consecutive_failures {
            o.consecutive_failures = n;
        }
        if let Some(d) = self.base_ejection_time {
            o.base_ejection_time = d.0;
        }
        if let Some(d) = self.max_ejection_time {
            o.max_ejection_time = d.0;
        }
        if let Some(p) = self.max_ejected_percent {
            o.max_ejected_share = p / 100.0;
        }
        o
    }
}

/// One node of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique id within the pool.
    pub id: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port, 1..=65535.
    pub port: u16,
    /// Relative weight, 1..=256 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Zone label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Free string metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// This node's own active check, overriding the pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheckConfig>,
}

impl Config {
    /// Parses a JSON document. Fails with [`Error::InvalidArgument`] naming the field path of
    /// the first syntax error, unknown field or bad value.
    pub fn from_json(text: &str) -> Result<Config> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::invalid(display_path(&path), e.into_inner().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML document. Fails like [`Config::from_json`].
    pub fn from_toml(text: &str) -> Result<Config> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::invalid(display_path(&path), inner.message().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses either format: a document whose first non-blank character is `{` is JSON,
    /// anything else TOML. An empty or blank document is the default (everything embedded).
    pub fn parse(text: &str) -> Result<Config> {
        match text.trim_start().chars().next() {
            None => Ok(Config::default()),
            Some('{') => Config::from_json(text),
            Some(_) => Config::from_toml(text),
        }
    }

    /// Checks every value that the types alone do not: node fields, duplicate ids, options.
    pub fn validate(&self) -> Result<()> {
        self.redis_settings(None)?;
        for name in self.pools.keys() {
            self.redis_settings(Some(name))?;
        }
        for (name, pool) in &self.pools {
            pool.nodes()
                .and_then(|_| pool.options().validate())
                .and_then(|_| pool.health_options().validate())
                .and_then(|_| match &pool.discovery {
                    Some(d) => d
                        .registry()
                        .map(|_| ())
                        .map_err(|e| e.in_field("discovery")),
                    None => Ok(()),
                })
                .map_err(|e| e.in_field(&format!("pools.{name}")))?;
            if let Some(m) = pool.maglev_table_size {
                crate::hash::maglev::check_table_size(m, pool.nodes.len())
                    .map_err(|e| e.in_field(&format!("pools.{name}")))?;
            }
            let mut seen = std::collections::HashSet::new();
            for (i, n) in pool.nodes.iter().enumerate() {
                if !seen.insert(n.id.as_str()) {
                    return Err(Error::invalid(
                        format!("pools.{name}.nodes[{i}].id"),
                        format!("duplicate node id {:?}", n.id),
                    ));
                }
            }
        }
        if let Some(c) = &self.cache {
            c.validate(&self.pools).map_err(|e| e.in_field("cache"))?;
        }
        if let Some(l) = &self.locks {
            if let Some(p) = &l.pool {
                let Some(pool) = self.pools.get(p) else {
                    return Err(Error::invalid(
                        "locks.pool",
                        format!("no pool named {p:?} in [pools]"),
                    ));
                };
                if pool.nodes.is_empty() {
                    return Err(Error::invalid(
                        "locks.pool",
                        format!("pool {p:?} has no nodes"),
                    ));
                }
            }
        }
        if let Some(s) = &self.sessions {
            s.options().validate().map_err(|e| e.in_field("sessions"))?;
        }
        Ok(())
    }

    /// The Redis connection settings for the connections of pool `pool` (its `redis` section
    /// over the top-level `[redis]`), or for connections that belong to no pool (`None`, or
    /// an unknown pool: the top-level section). Reads password files and variables; errors
    /// name the field (`redis.password_env`, `pools.cache.redis.tls.ca_file`, ...).
    pub fn redis_settings(&self, pool: Option<&str>) -> Result<ConnectionSettings> {
        let top = self.redis.clone().unwrap_or_default();
        match pool.and_then(|p| self.pools.get(p).map(|c| (p, c))) {
            Some((name, p)) => match &p.redis {
                Some(own) => own
                    .over(&top)
                    .settings()
                    .map_err(|e| e.in_field(&format!("pools.{name}.redis"))),
                None => top.settings().map_err(|e| e.in_field("redis")),
            },
            None => top.settings().map_err(|e| e.in_field("redis")),
        }
    }

    /// Builds every pool as a [`Cluster`]. Fails like [`Config::validate`].
    pub fn build_pools(&self) -> Result<BTreeMap<String, Cluster>> {
        self.validate()?;
        self.pools
            .iter()
            .map(|(name, p)| {
                p.build_with(name, &self.redis_settings(Some(name))?)
                    .map(|c| (name.clone(), c))
                    .map_err(|e| e.in_field(&format!("pools.{name}")))
            })
            .collect()
    }
}

/// serde_path_to_error prints `.` for the root; show `document` instead.
fn display_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "document".to_string()
    } else {
        path.to_string()
    }
}

impl PoolConfig {
    /// The pool's balancing options.
    pub fn options(&self) -> BalancerOptions {
        let mut o = BalancerOptions::new(self.strategy)
            .with_panic_mode(self.panic_mode)
            .with_panic_threshold(self.panic_threshold);
        o.bounded_load = self.bounded_load;
        o.maglev_table_size = self.maglev_table_size;
        o
    }

    /// The pool's nodes, validated. Errors name the node as `nodes[i]`.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.to_node()
                    .map_err(|e| strip_node_prefix(e).in_field(&format!("nodes[{i}]")))
            })
            .collect()
    }

    /// The pool's health options (active checks, outlier detection, slow start).
    pub fn health_options(&self) -> HealthOptions {
        HealthOptions {
            check: self.health.as_ref().map(|c| c.options()),
            per_node: self
                .nodes
                .iter()
                .filter_map(|n| n.health.as_ref().map(|c| (n.id.clone(), c.options())))
                .collect(),
            outlier: self.outlier.as_ref().map(|o| o.options()),
            slow_start: self.slow_start.map(|d| d.0),
        }
    }

    /// Builds the pool as a [`Cluster`] named `name`, with its health checks started and its
    /// registry watched (the watcher lives as long as the cluster).
    pub fn build(&self, name: &str) -> Result<Cluster> {
        self.build_with(name, &ConnectionSettings::default())
    }

    /// Like [`PoolConfig::build`]; the Redis health check and the registry connect with
    /// `connection`.
    pub fn build_with(&self, name: &str, connection: &ConnectionSettings) -> Result<Cluster> {
        let mut health = self.health_options();
        if let Some(c) = health.check.take() {
            health.check = Some(c.with_redis(connection.clone()));
        }
        for c in health.per_node.values_mut() {
            c.redis = connection.clone();
        }
        let cluster = Cluster::with_health(name, self.options(), health, self.nodes()?)?;
        if let Some(d) = &self.discovery {
            let handle = d
                .registry_with(connection)
                .map_err(|e| e.in_field("discovery"))?
                .watch(&cluster)?;
            cluster.attach_discovery(handle);
        }
        Ok(cluster)
    }
}

/// Node validation errors name the node by id (`node "web-1".port`); in a config document the
/// path `nodes[i].port` is what the user needs, so drop the id part.
fn strip_node_prefix(e: Error) -> Error {
    match e {
        Error::InvalidArgument { field, message } => {
            let field = match field.strip_prefix("node \"") {
                Some(rest) => rest
                    .split_once("\".")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or(field),
                None => field,
            };
            Error::InvalidArgument { field, message }
        }
        other => other,
    }
}

impl NodeConfig {
    /// Builds and validates the [`Node`].
    pub fn to_node(&self) -> Result<Node> {
        let mut n = Node::new(self.id.clone(), self.host.clone(), self.port)?;
        if let Some(w) = self.weight {
            n = n.with_weight(w)?;
        }
        if let Some(z) = &self.zone {
            n = n.with_zone(z.clone())?;
        }
        if !self.metadata.is_empty() {
            n = n.with_metadata_map(self.metadata.clone())?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const TOML: &str = r#"
[pools.app]
strategy = "p2c"
nodes = [
  { id = "web-1", host = "127.0.0.1", port = 8081, weight = 2, zone = "a" },
  { id = "web-2", host = "127.0.0.1", port = 8082, metadata = { role = "web" } },
]

[pools.cache]
strategy = "ketama"
nodes = [ { id = "r1", host = "127.0.0.1", port = 6379 } ]
"#;

    #[test]
    fn toml_and_json_give_the_same_document() {
        let t = Config::from_toml(TOML).unwrap();
        let j = Config::from_json(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(t, j);
        assert_eq!(t.pools["app"].nodes[0].weight, Some(2));
        assert_eq!(t.pools["cache"].strategy, Strategy::Ketama);
        let pools = t.build_pools().unwrap();
        assert_eq!(pools["app"].len(), 2);
        assert_eq!(
            pools["app"].get("web-2").unwrap().node.metadata()["role"],
            "web"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43200));
        for bad in ["", "5", "-1s", "1d", "s", "1e400s", "nan s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn health_sections() {
        let c = Config::parse(
            r#"
[pools.app]
nodes = [ { id = "a", host = "127.0.0.1", port = 1, health = { check = "tcp" } } ]
health = { check = "http", path = "/healthz", interval = "2s", rise = 2, fall = 3, expected_status = [200, 204] }
outlier = { consecutive_failures = 4, base_ejection_time = "10s", max_ejected_percent = 30 }
slow_start = "30s"
"#,
        )
        .unwrap();
        let h = c.pools["app"].health_options();
        let check = h.check.unwrap();
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expected: 200..=204
            }
        );
        assert_eq!(h.per_node["a"].kind, CheckKind::Tcp);
        let o = h.outlier.unwrap();
        assert_eq!(o.consecutive_failures, 4);
        assert_eq!(o.base_ejection_time, Duration::from_secs(10));
        assert!((o.max_ejected_share - 0.3).abs() < 1e-9);
        assert_eq!(h.slow_start, Some(Duration::from_secs(30)));
    }

    #[test]
    fn cache_section() {
        let c = Config::parse(
            "[pools.cache]\nstrategy = \"ketama\"\nnodes = [{ id = \"r1\", host = \"127.0.0.1\", port = 6379 }]\n\n[cache]\npool = \"cache\"\nreplicas = 2\nnamespace = \"myapp\"\nwrite_quorum = \"majority\"\ntimeout = \"250ms\"\n",
        )
        .unwrap();
        let cache = c.cache.unwrap();
        assert_eq!(cache.replicas, Some(2));
        assert_eq!(cache.write_quorum, Some(QuorumName::Majority));
        let e = err("[cache]\npool = \"nope\"\n");
        assert!(e.contains("cache.pool") && e.contains("nope"), "{e}");
        let e = err("[pools.app]\nstrategy = \"p2c\"\n[cache]\npool = \"app\"\n");
        assert!(e.contains("cache.pool") && e.contains("ketama"), "{e}");
        let e = err("[cache]\nredis = \"127.0.0.1:6379\"\nreplicas = 0\n");
        assert!(e.contains("cache.replicas"), "{e}");
        let e = err("[cache]\nmax_bytes = 10\n");
        assert!(e.contains("cache.max_bytes"), "{e}");
        let e = err("[cache]\nnamesapce = \"x\"\n");
        assert!(e.contains("namesapce"), "{e}");
    }

    #[test]
    fn empty_document_is_embedded_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("  \n").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
    }

    fn err(doc: &str) -> String {
        let e = Config::parse(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        e.to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(
            r#"{"pools":{"app":{"nodes":[{"id":"a","host":"h","port":1},{"id":"b","host":"h","port":0}]}}}"#,
        );
        assert!(e.contains("pools.app.nodes[1].port"), "{e}");
        let e = err(r#"{"pools":{"app":{"nodes":[{"id":"a","host":"h","port":70000}]}}}"#);
        assert!(e.contains("pools.app.nodes[0].port"), "{e}");
        let e = err(r#"{"pools":{"app":{"strategy":"fastest"}}}"#);
        assert!(
            e.contains("pools.app.strategy") && e.contains("fastest"),
            "{e}"
        );
        let e = err(r#"{"pools":{"app":{"stratgy":"p2c"}}}"#);
        assert!(e.contains("stratgy"), "{e}");
        let e = err("[pools.app]\nnodes = [{ id = \"a\", host = \"h\", port = 1, weight = 0 }]\n");
        assert!(e.contains("pools.app.nodes[0].weight"), "{e}");
        let e = err("[pools.app]\nnodes = [{ id = \"a\", host = \"h\", port = 1, colour = 1 }]\n");
        assert!(e.contains("colour"), "{e}");
        let e = err("[pools.app]\nnodes = [{ id = \"a\", host = \"h\", port = 1 }, { id = \"a\", host = \"h\", port = 2 }]\n");
        assert!(
            e.contains("pools.app.nodes[1].id") && e.contains("duplicate"),
            "{e}"
        );
        let e = err("[pools.app]\nstrategy = \"round_robin\"\nbounded_load = 1.25\n");
        assert!(e.contains("pools.app.bounded_load"), "{e}");
        let e = err("[pools.app]\nstrategy = \"maglev\"\nmaglev_table_size = 1000\n");
        assert!(e.contains("pools.app.maglev_table_size"), "{e}");
        let e = err("[pools.app]\npanic_threshold = 1.5\n");
        assert!(e.contains("pools.app.panic_threshold"), "{e}");
        let e = err("[pools.app]\nhealth = { check = \"http\", interval = \"2 parsecs\" }\n");
        assert!(
            e.contains("pools.app.health.interval") && e.contains("1500ms"),
            "{e}"
        );
        let e = err("[pools.app]\nhealth = { check = \"smtp\" }\n");
        assert!(e.contains("pools.app.health.check"), "{e}");
        let e = err("[pools.app]\nhealth = { check = \"http\", path = \"no-slash\" }\n");
        assert!(e.contains("pools.app.health.path"), "{e}");
        let e = err("[pools.app]\noutlier = { max_ejected_percent = 150 }\n");
        assert!(e.contains("pools.app.outlier.max_ejected_share"), "{e}");
        let e = err("{ not json");
        assert!(e.contains("document") || e.contains("line"), "{e}");
        let e = err("[pools.app\n");
        assert!(!e.is_empty());
    }
}
