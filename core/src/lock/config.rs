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
    /// Connect timeout of each master's connection (default 500ms): raise it where a first
    /// TLS handshake can be slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationText>,
    /// Namespace of the lock keys (default: the cache's namespace; see `docs/keyspace.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// Extend held locks at a third of their TTL until released (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_renew: Option<bool>,
    /// Locks on etcd instead of Redis (issue #17): `etcd = { endpoints = [...] }`; keys under
    /// `prefix` (default `/clusterkit/locks/<key_prefix>/`). Excludes `pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::etcd::EtcdSection>,
    /// Hand out a fencing token with every acquisition (default true). `false` skips it:
    /// Redlock acquires in one fan-out round trip instead of two (see
    /// [`crate::lock::LockOptions::fencing`] for the trade-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<bool>,
}

impl LocksConfig {
    fn options(&self) -> crate::lock::LockOptions {
        let mut o = crate::lock::LockOptions::default();
        let connect = self
            .connect_timeout
            .map_or(o.redis.connect_timeout, |t| t.0);
        let response = self.timeout.map_or(o.redis.response_timeout, |t| t.0);
        o.redis = o.redis.with_timeouts(connect, response);
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
        if let Some(t) = self.connect_timeout {
            check_duration(
                "connect_timeout",
                t.0,
                Duration::from_millis(1),
                MAX_TIMEOUT,
            )?;
        }
        if let Some(p) = &self.key_prefix {
            check_text("key_prefix", p, MAX_KEY_PREFIX_LEN)?;
        }
        if let Some(e) = &self.etcd {
            if self.pool.is_some() {
                return Err(Error::invalid(
                    "etcd",
                    "give either pool (Redis) or etcd, not both",
                ));
            }
            e.settings().map_err(|err| err.in_field("etcd"))?;
        }
        self.options().validate()
    }

    /// The etcd lock service of an `etcd = {...}` section.
    fn build_etcd(
        &self,
        section: &crate::etcd::EtcdSection,
        options: crate::lock::LockOptions,
    ) -> Result<crate::lock::DistributedLock> {
        let settings = section.settings().map_err(|e| e.in_field("etcd"))?;
        let prefix = section
            .prefix
            .clone()
            .unwrap_or_else(|| format!("/clusterkit/locks/{}/", options.key_prefix));
        #[cfg(feature = "etcd")]
        {
            crate::lock::DistributedLock::etcd(settings, &prefix, options)
                .map_err(|e| e.in_field("etcd"))
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (settings, prefix, options);
            Err(Error::invalid(
                "etcd",
                "this build of clusterkit has no etcd support (cargo feature `etcd`)",
            ))
        }
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
        if let Some(section) = &self.etcd {
            return self.build_etcd(section, o);
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
