//! A pool's `discovery = { ... }` section in the config document: the Redis registry its
//! nodes register in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{check_duration, check_text, DurationText};
use crate::discovery::{RedisRegistry, RegistryOptions};
use crate::error::{Error, Result};

/// Shortest heartbeat TTL.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest heartbeat TTL (1 day).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Shortest heartbeat / re-listing interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest registry address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 1024;
/// Longest service name and key prefix, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// `discovery = { redis = "127.0.0.1:6379", service = "web", ttl = "10s" }`, or
/// `discovery = { etcd = { endpoints = [...], prefix = "/svc/web/", ttl = "10s" } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Registry address: `host:port` or a `redis://` URL (empty with `etcd`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redis: String,
    /// Service name under which nodes register (with `etcd`: names the default prefix
    /// `/clusterkit/discovery/<service>/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// An etcd registry instead of Redis (issue #17; see `docs/discovery.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::etcd::EtcdSection>,
    /// Heartbeat TTL (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationText>,
    /// Heartbeat and full re-listing interval (default ttl / 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
    /// Namespace of the registry keys (default `clusterkit`; see `docs/keyspace.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

impl DiscoveryConfig {
    /// The registry options this section describes.
    fn options(&self) -> RegistryOptions {
        let mut o = RegistryOptions::default();
        if let Some(t) = self.ttl {
            o = o.with_ttl(t.0);
        }
        if let Some(i) = self.interval {
            o = o.with_heartbeat_interval(i.0);
        }
        if let Some(p) = &self.key_prefix {
            o = o.with_key_prefix(p.clone());
        }
        o
    }

    /// Checks every value against its bound (no I/O). Fails with [`Error::InvalidArgument`]
    /// naming the field as written in the section (`redis`, `service`, `ttl`, `interval`,
    /// `key_prefix`).
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.etcd {
            return self.validate_etcd(e);
        }
        if self.redis.trim().is_empty() || self.redis.len() > MAX_ADDRESS_LEN {
            return Err(Error::invalid(
                "redis",
                format!("must be host:port or a redis:// URL of 1..={MAX_ADDRESS_LEN} bytes"),
            ));
        }
        check_text("service", &self.service, MAX_NAME_LEN)?;
        let o = self.options();
        check_duration("ttl", o.ttl, MIN_TTL, MAX_TTL)?;
        if let Some(i) = self.interval {
            check_duration("interval", i.0, MIN_INTERVAL, MAX_TTL)?;
        }
        let interval = o.interval();
        if interval >= o.ttl {
            let field = if self.interval.is_some() {
                "interval"
            } else {
                "ttl"
            };
            return Err(Error::invalid(
                field,
                format!(
                    "the interval ({}) must be shorter than the ttl ({})",
                    crate::config::human(interval),
                    crate::config::human(o.ttl)
                ),
            ));
        }
        if interval < MIN_INTERVAL {
            return Err(Error::invalid(
                "ttl",
                format!(
                    "ttl / 3 ({}) is below the shortest interval (10ms): set interval",
                    crate::config::human(interval)
                ),
            ));
        }
        if let Some(p) = &self.key_prefix {
            check_text("key_prefix", p, MAX_NAME_LEN)?;
        }
        self.registry().map(|_| ())
    }

    fn validate_etcd(&self, e: &crate::etcd::EtcdSection) -> Result<()> {
        if !self.redis.is_empty() {
            return Err(Error::invalid(
                "etcd",
                "give either redis or etcd, not both",
            ));
        }
        if self.interval.is_some() || self.key_prefix.is_some() {
            return Err(Error::invalid(
                "etcd",
                "interval and key_prefix are Redis registry fields; etcd uses etcd.prefix and etcd.ttl",
            ));
        }
        if !self.service.is_empty() {
            check_text("service", &self.service, MAX_NAME_LEN)?;
        }
        e.settings().map_err(|err| err.in_field("etcd"))?;
        self.etcd_prefix(e)?;
        if let Some(t) = self.ttl {
            check_duration("ttl", t.0, Duration::from_secs(1), MAX_TTL)?;
        }
        Ok(())
    }

    fn etcd_prefix(&self, e: &crate::etcd::EtcdSection) -> Result<String> {
        match (&e.prefix, self.service.as_str()) {
            (Some(p), _) => Ok(p.clone()),
            (None, "") => Err(Error::invalid(
                "etcd.prefix",
                "give the key prefix of the registry (or a service name)",
            )),
            (None, s) => Ok(format!("/clusterkit/discovery/{s}/")),
        }
    }

    /// Starts this section's discovery source on `cluster` (the Redis registry connecting
    /// with `connection`, or etcd). The handle stops it.
    pub fn start_with(
        &self,
        cluster: &crate::cluster::Cluster,
        connection: &crate::connection::ConnectionSettings,
    ) -> Result<super::DiscoveryHandle> {
        let Some(e) = &self.etcd else {
            return self.registry_with(connection)?.watch(cluster);
        };
        let settings = e.settings().map_err(|err| err.in_field("etcd"))?;
        let prefix = self.etcd_prefix(e)?;
        let ttl = e.ttl.or(self.ttl).map_or(Duration::from_secs(10), |t| t.0);
        #[cfg(feature = "etcd")]
        {
            super::etcd::EtcdRegistry::new(settings, &prefix, ttl)
                .map_err(|err| err.in_field("etcd"))?
                .watch(cluster)
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (settings, prefix, ttl, cluster);
            Err(Error::invalid(
                "etcd",
                "this build of clusterkit has no etcd support (cargo feature `etcd`)",
            ))
        }
    }

    /// The registry this section describes (no I/O). Fails on a bad address or option,
    /// naming the field as written in the section.
    pub fn registry(&self) -> Result<RedisRegistry> {
        self.registry_with(&crate::connection::ConnectionSettings::default())
    }

    /// Like [`DiscoveryConfig::registry`], connecting with `connection`.
    pub fn registry_with(
        &self,
        connection: &crate::connection::ConnectionSettings,
    ) -> Result<RedisRegistry> {
        let o = self.options().with_connection(connection.clone());
        RedisRegistry::new(&self.redis, &self.service, o).map_err(|e| match e {
            Error::InvalidArgument { field, message } => {
                match field.as_str() {
                    "heartbeat_interval" => Error::invalid("interval", message),
                    // The address may hold a password: the message does not quote it.
                    "address" => Error::invalid("redis", "expected host:port or a redis:// URL"),
                    _ => Error::InvalidArgument { field, message },
                }
            }
            other => other,
        })
    }
}
