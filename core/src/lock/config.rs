//! The `[locks]` section of the config document and its builder.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::config::{check_duration, check_text, DurationText, PoolConfig};
use crate::error::{Error, Result};

/// Longest per-master response timeout (`timeout`, 60 s).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest key prefix, in bytes.
pub const MAX_KEY_PREFIX_LEN: usize = 256;
/// Most Redlock masters in the lock pool.
pub const MAX_MASTERS: usize = 64;

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
    /// Namespace of the lock keys (default: the cache's namespace; see `docs/keyspace.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Extend held locks at a third of their TTL until released (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_renew: Option<bool>,
    /// Hand out a fencing token with every acquisition (default true). `false` skips it:
    /// Redlock acquires in one fan-out round trip instead of two (see
    /// [`crate::lock::LockOptions::fencing`] for the trade-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<bool>,
}

impl LocksConfig {
    fn options(&self) -> crate::lock::LockOptions {
        let mut o = crate::lock::LockOptions::default();
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
        if let Some(f) = self.fencing {
            o = o.with_fencing(f);
        }
        o
    }

    /// Checks the section against its bounds and the pool it names (no I/O). Fails with
    /// [`Error::InvalidArgument`] naming the field as written in the section (`pool`,
    /// `timeout`, `key_prefix`).
    pub fn validate(&self, pools: &BTreeMap<String, PoolConfig>) -> Result<()> {
        if let Some(p) = &self.pool {
            let Some(pool) = pools.get(p) else {
                return Err(Error::invalid(
                    "pool",
                    format!("no pool named {:?} in [pools]", crate::config::excerpt(p)),
                ));
            };
            if pool.nodes.is_empty() {
                return Err(Error::invalid("pool", format!("pool {p:?} has no nodes")));
            }
            if pool.nodes.len() > MAX_MASTERS {
                return Err(Error::invalid(
                    "pool",
                    format!(
                        "pool {p:?} has {} nodes; a Redlock uses at most {MAX_MASTERS} masters",
                        pool.nodes.len()
                    ),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for n in &pool.nodes {
                if !seen.insert((n.host.as_str(), n.port)) {
                    return Err(Error::invalid(
                        "pool",
                        format!(
                            "pool {p:?} lists {}:{} twice: Redlock masters must be independent",
                            n.host, n.port
                        ),
                    ));
                }
            }
        }
        if let Some(t) = self.timeout {
            check_duration("timeout", t.0, Duration::from_millis(1), MAX_TIMEOUT)?;
        }
        if let Some(p) = &self.key_prefix {
            check_text("key_prefix", p, MAX_KEY_PREFIX_LEN)?;
        }
        self.options().validate()
    }

    /// Builds the lock service (no I/O). `pools` are the built pools of the same document.
    pub fn build(&self, pools: &BTreeMap<String, Cluster>) -> Result<crate::lock::DistributedLock> {
        self.build_with(pools, &crate::connection::ConnectionSettings::default())
    }

    /// Like [`LocksConfig::build`], connecting to the masters with `connection`.
    pub fn build_with(
        &self,
        pools: &BTreeMap<String, Cluster>,
        connection: &crate::connection::ConnectionSettings,
    ) -> Result<crate::lock::DistributedLock> {
        let mut o = self.options();
        o.redis = o.redis.with_connection(connection.clone());
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
