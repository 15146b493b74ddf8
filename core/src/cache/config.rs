//! The `[cache]` section of the config document and its builder.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::config::{check_duration, check_int, DurationText, PoolConfig};
use crate::error::{Error, Result};

/// Largest replication factor (`replicas`).
pub const MAX_REPLICAS: usize = 16;
/// Longest connect / response timeout (`timeout`, 60 s).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `batch_chunk` (keys per MGET or pipeline).
pub const MAX_BATCH_CHUNK: usize = 100_000;
/// Smallest byte bound of the embedded cache (`max_bytes`).
pub const MIN_MAX_BYTES: u64 = 1024;
/// Largest byte bound of the embedded cache (`max_bytes`, 1 TiB).
pub const MAX_MAX_BYTES: u64 = 1 << 40;
/// Longest `redis` address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 1024;

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

    /// Checks the section against its bounds and the pools it names (no I/O). Fails with
    /// [`Error::InvalidArgument`] naming the field as written in the section (`pool`,
    /// `replicas`, `timeout`, `batch_chunk`, ...).
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
                    format!("no pool named {:?} in [pools]", crate::config::excerpt(p)),
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
        if let Some(r) = &self.redis {
            if r.trim().is_empty() || r.len() > MAX_ADDRESS_LEN {
                return Err(Error::invalid(
                    "redis",
                    format!("must be host:port or a redis:// URL of 1..={MAX_ADDRESS_LEN} bytes"),
                ));
            }
            // The address may hold a password: errors never quote it.
            let url = crate::cache::redis::client_url(r)
                .map_err(|_| Error::invalid("redis", "expected host:port or a redis:// URL"))?;
            redis::Client::open(url.as_str())
                .map_err(|e| Error::invalid("redis", format!("not a usable Redis address: {e}")))?;
        }
        if let Some(ns) = &self.namespace {
            crate::cache::check_namespace(ns)?;
        }
        if let Some(r) = self.replicas {
            check_int("replicas", r, 1, MAX_REPLICAS)?;
        }
        if let Some(t) = self.timeout {
            check_duration("timeout", t.0, Duration::from_millis(1), MAX_TIMEOUT)?;
        }
        if let Some(c) = self.batch_chunk {
            check_int("batch_chunk", c, 1, MAX_BATCH_CHUNK)?;
        }
        if let Some(m) = self.max_value_bytes {
            check_int("max_value_bytes", m, 1, crate::cache::MAX_VALUE_LEN_LIMIT)?;
        }
        if let Some(b) = self.max_bytes {
            check_int("max_bytes", b, MIN_MAX_BYTES, MAX_MAX_BYTES)?;
        }
        self.redis_options().validate()
    }

    /// Builds the cache (no I/O: Redis connections open on first use). `pools` are the built
    /// pools of the same document.
    pub fn build(&self, pools: &BTreeMap<String, Cluster>) -> Result<crate::cache::Cache> {
        self.build_with(pools, &crate::connection::ConnectionSettings::default())
    }

    /// Like [`CacheConfig::build`], connecting to Redis with `connection`.
    pub fn build_with(
        &self,
        pools: &BTreeMap<String, Cluster>,
        connection: &crate::connection::ConnectionSettings,
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
