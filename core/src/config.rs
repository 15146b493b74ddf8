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
//! Unknown fields are rejected; every error names the field by its path as written in the
//! document (`pools.app.nodes[1].port`, `pools.app.health.fall`, `sessions.lock_ttl`). An
//! empty document is valid and means "everything embedded".
//!
//! This file aggregates the sections and the pools. Each concern owns its section beside its
//! code: [`CacheConfig`] in `cache/config.rs`, [`LocksConfig`] in `lock/config.rs`,
//! [`SessionsConfig`] in `session/config.rs`, the health sections ([`HealthCheckConfig`],
//! [`OutlierConfig`]) in `cluster/config.rs` and [`DiscoveryConfig`] in
//! `discovery/config.rs`; they are re-exported here.
//!
//! # Bounds
//!
//! [`Config::parse`] checks every value, so a document that parses builds (unless a server
//! is unreachable, which is only known later). Durations have a unit and a per-field range
//! (for example health `interval` 10ms..=1h, `timeout` 1ms..=60s, session timeouts up to 365
//! days); counts, sizes, shares and string lengths have one too (see the constants of each
//! section's module, [`MAX_POOL_NODES`] and
//! [`MAX_TABLE_SIZE`](crate::hash::maglev::MAX_TABLE_SIZE)).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::balance::{BalancerOptions, PanicMode, Strategy};
use crate::cluster::health::HealthOptions;
use crate::cluster::Cluster;
use crate::connection::{ConnectionSettings, RedisSection};
use crate::error::{Error, Result};
use crate::node::Node;

pub use crate::cache::config::{CacheConfig, QuorumName, ReadFailureName};
pub use crate::cluster::config::{CheckName, HealthCheckConfig, OutlierConfig};
pub use crate::discovery::config::DiscoveryConfig;
pub use crate::lock::config::LocksConfig;
pub use crate::session::config::SessionsConfig;

/// Most nodes in one pool (a Maglev table of [`MAX_TABLE_SIZE`](crate::hash::maglev::MAX_TABLE_SIZE)
/// slots holds 100 per node).
pub const MAX_POOL_NODES: usize = 10_000;
/// Longest pool name, in bytes.
pub const MAX_POOL_NAME_LEN: usize = 128;
/// Most pools in one document.
pub const MAX_POOLS: usize = 256;
/// Largest bounded-load factor.
pub const MAX_BOUNDED_LOAD: f64 = 100.0;
/// Longest slow start window (1 h).
pub const MAX_SLOW_START: Duration = Duration::from_secs(3600);
/// Most metadata entries on one node.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 255;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 4096;
/// Longest document accepted by [`Config::parse`], in bytes (1 MiB).
pub const MAX_DOCUMENT_LEN: usize = 1 << 20;

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
    /// Monitoring: `enabled` and the scaling advisors (see [`crate::metrics::MetricsConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// The task queue (issue #16): embedded unless it names a pool or a server (see
    /// [`crate::queue::QueueConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<crate::queue::QueueConfig>,
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

/// A duration written with a unit: `"1500ms"`, `"30s"`, `"2m"`, `"12h"` (also `"us"`, `"ns"`,
/// and decimals such as `"1.5s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

/// Longest duration [`parse_duration`] accepts (10^9 s, about 31 years); each field has its
/// own, much smaller bound.
const MAX_DURATION_NANOS: u128 = 1_000_000_000 * 1_000_000_000;

/// Parses a duration with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`) and an optional decimal
/// part, exactly (no floating point: what is written is what is read, to the nanosecond,
/// digits beyond it are cut). Fails naming the expected form.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(
            "duration",
            format!("expected a number with a unit like \"1500ms\", \"30s\", \"2m\" or \"12h\", got {:?}", excerpt(text)),
        )
    };
    let per_unit: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(bad());
    }
    let digits = |d: &str| -> Option<u128> {
        // More than 30 digits overflows nothing below but means nothing either.
        if d.len() > 30 {
            return None;
        }
        d.bytes()
            .try_fold(0u128, |acc, b| Some(acc * 10 + u128::from(b - b'0')))
    };
    let whole = digits(int).ok_or_else(bad)?;
    let frac = &frac[..frac.len().min(18)];
    let part = digits(frac).ok_or_else(bad)?;
    let nanos = whole
        .checked_mul(per_unit)
        .and_then(|w| w.checked_add(part * per_unit / 10u128.pow(frac.len() as u32)))
        .filter(|&n| n <= MAX_DURATION_NANOS)
        .ok_or_else(bad)?;
    let secs = (nanos / 1_000_000_000) as u64;
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

impl Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The largest unit that keeps the value exact, so a document written back parses to
        // the same durations.
        let n = self.0.as_nanos();
        if n.is_multiple_of(1_000_000) {
            s.serialize_str(&format!("{}ms", n / 1_000_000))
        } else if n.is_multiple_of(1_000) {
            s.serialize_str(&format!("{}us", n / 1_000))
        } else {
            s.serialize_str(&format!("{n}ns"))
        }
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

/// `d` written as the document would: `10ms`, `1.5s`, `2m`, `12h`, `8760h` (no day unit).
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    let (v, unit) = if ms < 1.0 {
        (ms * 1e3, "us")
    } else if ms < 1e3 {
        (ms, "ms")
    } else if ms < 60e3 {
        (ms / 1e3, "s")
    } else if ms < 3600e3 {
        (ms / 60e3, "m")
    } else {
        (ms / 3600e3, "h")
    };
    let v = (v * 1000.0).round() / 1000.0;
    format!("{v}{unit}")
}

/// Longest field path in an error (longer ones, made of huge keys, are cut).
const MAX_PATH_LEN: usize = 256;
/// Longest error message from the parsers (they quote the input).
const MAX_MESSAGE_LEN: usize = 1024;

/// `s` cut to at most `max` bytes (at a character boundary), marked with `...` when cut.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// At most 64 characters of `s` (for error messages about values that may be huge).
pub(crate) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Fails naming `field` unless `min <= d <= max`.
pub(crate) fn check_duration(field: &str, d: Duration, min: Duration, max: Duration) -> Result<()> {
    if d < min || d > max {
        return Err(Error::invalid(
            field,
            format!(
                "must be between {} and {}, got {}",
                human(min),
                human(max),
                human(d)
            ),
        ));
    }
    Ok(())
}

/// Fails naming `field` unless `min <= v <= max`.
pub(crate) fn check_int<T: PartialOrd + Display>(field: &str, v: T, min: T, max: T) -> Result<()> {
    if v < min || v > max {
        return Err(Error::invalid(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(())
}

/// Fails naming `field` unless `v` is a finite number with `min <= v <= max`.
pub(crate) fn check_float(field: &str, v: f64, min: f64, max: f64) -> Result<()> {
    if !v.is_finite() || v < min || v > max {
        return Err(Error::invalid(
            field,
            format!("must be a number between {min} and {max}, got {v}"),
        ));
    }
    Ok(())
}

/// Fails naming `field` unless `v` is 1..=`max` bytes without whitespace or control
/// characters (names, prefixes, ids).
pub(crate) fn check_text(field: &str, v: &str, max: usize) -> Result<()> {
    if v.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if v.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the maximum is {max}", v.len()),
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!(
                "must not contain whitespace or control characters (found {c:?} in {:?})",
                excerpt(v)
            ),
        ));
    }
    Ok(())
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
        check_document_len(text)?;
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::invalid(
                bounded(&display_path(&path), MAX_PATH_LEN),
                bounded(&e.into_inner().to_string(), MAX_MESSAGE_LEN),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML document. Fails like [`Config::from_json`].
    pub fn from_toml(text: &str) -> Result<Config> {
        check_document_len(text)?;
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::invalid(
                bounded(&display_path(&path), MAX_PATH_LEN),
                bounded(inner.message(), MAX_MESSAGE_LEN),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses either format: a document whose first non-blank character is `{` is JSON,
    /// anything else TOML. An empty or blank document is the default (everything embedded).
    ///
    /// Every value is checked (see [`Config::validate`]); the error is
    /// [`Error::InvalidArgument`] with the field's path as written in the document.
    pub fn parse(text: &str) -> Result<Config> {
        match text.trim_start().chars().next() {
            None => Ok(Config::default()),
            Some('{') => Config::from_json(text),
            Some(_) => Config::from_toml(text),
        }
    }

    /// Checks every value that the types alone do not: node fields, duplicate ids, the pools
    /// the sections name, and the bound of every count, size, share, duration and name.
    /// Fails with [`Error::InvalidArgument`] whose field is the value's path in the document
    /// (`pools.app.outlier.base_ejection_time`, `locks.timeout`, `cache.batch_chunk`).
    pub fn validate(&self) -> Result<()> {
        if self.pools.len() > MAX_POOLS {
            return Err(Error::invalid(
                "pools",
                format!("at most {MAX_POOLS} pools, got {}", self.pools.len()),
            ));
        }
        for (name, pool) in &self.pools {
            check_text("pools", name, MAX_POOL_NAME_LEN).map_err(|e| match e {
                Error::InvalidArgument { field, message } => {
                    Error::invalid(field, format!("pool name: {message}"))
                }
                other => other,
            })?;
            pool.validate()
                .map_err(|e| e.in_field(&format!("pools.{name}")))?;
        }
        if let Some(c) = &self.cache {
            c.validate(&self.pools).map_err(|e| e.in_field("cache"))?;
        }
        if let Some(l) = &self.locks {
            l.validate(&self.pools).map_err(|e| e.in_field("locks"))?;
        }
        if let Some(s) = &self.sessions {
            s.validate().map_err(|e| e.in_field("sessions"))?;
        }
        if let Some(m) = &self.metrics {
            m.validate(&self.pools).map_err(|e| e.in_field("metrics"))?;
        }
        if let Some(q) = &self.queue {
            q.validate(&self.pools).map_err(|e| e.in_field("queue"))?;
        }
        self.redis_settings(None)?;
        for name in self.pools.keys() {
            self.redis_settings(Some(name))?;
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

fn check_document_len(text: &str) -> Result<()> {
    if text.len() > MAX_DOCUMENT_LEN {
        return Err(Error::invalid(
            "document",
            format!(
                "is {} bytes long, the maximum is {MAX_DOCUMENT_LEN}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// serde_path_to_error prints `.` for the root and `?` for a segment it could not name (a
/// syntax error inside a key): drop those, and show `document` for what remains empty.
fn display_path(path: &str) -> String {
    let mut p = path;
    loop {
        let trimmed = p.trim_end_matches('?').trim_end_matches('.');
        if trimmed == p {
            break;
        }
        p = trimmed;
    }
    if p.is_empty() {
        "document".to_string()
    } else {
        p.to_string()
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

    /// Checks every value of the pool against its bound (no I/O). Fails with
    /// [`Error::InvalidArgument`] naming the field relative to the pool, as written in the
    /// document (`nodes[0].health.interval`, `outlier.max_ejected_percent`).
    pub fn validate(&self) -> Result<()> {
        if self.nodes.len() > MAX_POOL_NODES {
            return Err(Error::invalid(
                "nodes",
                format!(
                    "at most {MAX_POOL_NODES} nodes in a pool, got {}",
                    self.nodes.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            n.validate()
                .map_err(|e| e.in_field(&format!("nodes[{i}]")))?;
            if !seen.insert(n.id.as_str()) {
                return Err(Error::invalid(
                    format!("nodes[{i}].id"),
                    format!("duplicate node id {:?}", n.id),
                ));
            }
        }
        check_float("panic_threshold", self.panic_threshold, 0.0, 1.0)?;
        if let Some(c) = self.bounded_load {
            check_float("bounded_load", c, 1.0, MAX_BOUNDED_LOAD)?;
        }
        if let Some(m) = self.maglev_table_size {
            if self.strategy != Strategy::Maglev {
                return Err(Error::invalid(
                    "maglev_table_size",
                    format!(
                        "applies to strategy = \"maglev\" only, not {}",
                        self.strategy
                    ),
                ));
            }
            crate::hash::maglev::check_table_size(m, self.nodes.len())?;
        }
        if let Some(h) = &self.health {
            h.validate().map_err(|e| e.in_field("health"))?;
        }
        if let Some(o) = &self.outlier {
            o.validate().map_err(|e| e.in_field("outlier"))?;
        }
        if let Some(w) = self.slow_start {
            check_duration("slow_start", w.0, Duration::from_millis(1), MAX_SLOW_START)?;
        }
        if let Some(d) = &self.discovery {
            d.validate().map_err(|e| e.in_field("discovery"))?;
        }
        // The core's own rules (bounded_load needs a hashing strategy, ...).
        self.options().validate()
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
                .start_with(&cluster, connection)
                .map_err(|e| e.in_field("discovery"))?;
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

    /// Checks every value of the node (no I/O). Fails with [`Error::InvalidArgument`] naming
    /// the field relative to the node (`port`, `metadata.role`, `health.fall`).
    pub fn validate(&self) -> Result<()> {
        self.to_node().map_err(strip_node_prefix)?;
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "at most {MAX_METADATA_ENTRIES} entries, got {}",
                    self.metadata.len()
                ),
            ));
        }
        for (k, v) in &self.metadata {
            if k.len() > MAX_METADATA_KEY_LEN {
                return Err(Error::invalid(
                    "metadata",
                    format!(
                        "keys are at most {MAX_METADATA_KEY_LEN} bytes, got {} bytes starting {:?}",
                        k.len(),
                        excerpt(k)
                    ),
                ));
            }
            if v.len() > MAX_METADATA_VALUE_LEN {
                return Err(Error::invalid(
                    format!("metadata.{k}"),
                    format!(
                        "is {} bytes long, the maximum is {MAX_METADATA_VALUE_LEN}",
                        v.len()
                    ),
                ));
            }
        }
        if let Some(h) = &self.health {
            h.validate().map_err(|e| e.in_field("health"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::health::CheckKind;
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
        assert_eq!(
            parse_duration("1.533333333s").unwrap(),
            Duration::new(1, 533_333_333)
        );
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("0.1ms").unwrap(), Duration::from_micros(100));
        assert_eq!(
            parse_duration("277777.7h").unwrap(),
            Duration::from_secs(999_999_720)
        );
        for d in [
            Duration::new(1, 533_333_333),
            Duration::from_micros(1533),
            Duration::from_millis(2),
            Duration::ZERO,
        ] {
            let text = serde_json::to_string(&DurationText(d)).unwrap();
            let back: DurationText = serde_json::from_str(&text).unwrap();
            assert_eq!(back.0, d, "{text}");
        }
        for bad in [
            "",
            "5",
            "-1s",
            "1d",
            "s",
            "1e400s",
            "nan s",
            ".s",
            "1..5s",
            "1.2.3s",
            "277778h",
            "99999999999999999999999999999999s",
        ] {
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
        assert!(e.contains("pools.app.outlier.max_ejected_percent"), "{e}");
        let e = err("{ not json");
        assert!(e.contains("document") || e.contains("line"), "{e}");
        let e = err("[pools.app\n");
        assert!(!e.is_empty());
    }
}
