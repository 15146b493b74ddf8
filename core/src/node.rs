//! [`Node`]: one member of a pool (a web server, a Redis node), and its live counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Largest accepted node weight (HAProxy's range). Weights are relative; smooth weighted round
/// robin precomputes a schedule of `sum(weights) / gcd(weights)` entries, which this bound keeps
/// small.
pub const MAX_WEIGHT: u32 = 256;
/// Longest accepted node id, in bytes.
pub const MAX_ID_LEN: usize = 255;
/// Longest accepted host name, in bytes (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// One member of a pool: a stable id, an address, a relative weight, an optional zone and free
/// metadata.
///
/// A `Node` is immutable once built and always valid: every constructor and `with_*` method
/// checks its input and returns [`Error::InvalidArgument`] naming the field on bad input.
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    id: String,
    host: String,
    port: u16,
    weight: u32,
    zone: Option<String>,
    metadata: BTreeMap<String, String>,
}

pub(crate) fn check_token(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the maximum is {max}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("must not contain whitespace or control characters (found {c:?} in {value:?})"),
        ));
    }
    Ok(())
}

impl Node {
    /// Creates a node with weight 1, no zone and no metadata.
    ///
    /// Fails with [`Error::InvalidArgument`] if `id` or `host` is empty, too long or contains
    /// whitespace or control characters, or if `port` is 0.
    pub fn new(id: impl Into<String>, host: impl Into<String>, port: u16) -> Result<Node> {
        let id = id.into();
        let host = host.into();
        check_token("id", &id, MAX_ID_LEN)?;
        check_token("host", &host, MAX_HOST_LEN)
            .map_err(|e| e.in_field(&format!("node {id:?}")))?;
        if port == 0 {
            return Err(Error::invalid("port", "must be between 1 and 65535, got 0")
                .in_field(&format!("node {id:?}")));
        }
        Ok(Node {
            id,
            host,
            port,
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
        })
    }

    /// Returns this node with another weight. Fails if `weight` is 0 or above [`MAX_WEIGHT`].
    pub fn with_weight(mut self, weight: u32) -> Result<Node> {
        check_weight(weight).map_err(|e| e.in_field(&format!("node {:?}", self.id)))?;
        self.weight = weight;
        Ok(self)
    }

    /// Returns this node placed in `zone` (an availability zone, rack or region label).
    /// Fails if `zone` is empty or contains whitespace.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Result<Node> {
        let zone = zone.into();
        check_token("zone", &zone, MAX_ID_LEN)
            .map_err(|e| e.in_field(&format!("node {:?}", self.id)))?;
        self.zone = Some(zone);
        Ok(self)
    }

    /// Returns this node with `metadata[key] = value`. Fails if `key` is empty.
    pub fn with_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Node> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid("metadata", "keys must not be empty")
                .in_field(&format!("node {:?}", self.id)));
        }
        self.metadata.insert(key, value.into());
        Ok(self)
    }

    /// Returns this node with its whole metadata map replaced. Fails if a key is empty.
    pub fn with_metadata_map(mut self, metadata: BTreeMap<String, String>) -> Result<Node> {
        if metadata.keys().any(|k| k.is_empty()) {
            return Err(Error::invalid("metadata", "keys must not be empty")
                .in_field(&format!("node {:?}", self.id)));
        }
        self.metadata = metadata;
        Ok(self)
    }

    /// The node's id, unique within its cluster.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Host name or IP address.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// TCP port (never 0).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Relative weight, 1..=[`MAX_WEIGHT`].
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// Zone label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
    /// Free string metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    /// `host:port`, with IPv6 literals in brackets (`[::1]:6379`): ready for a connect call.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn check_weight(weight: u32) -> Result<()> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(Error::invalid(
            "weight",
            format!("must be between 1 and {MAX_WEIGHT}, got {weight}"),
        ));
    }
    Ok(())
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Node");
        d.field("id", &self.id)
            .field("address", &self.address())
            .field("weight", &self.weight);
        if let Some(z) = &self.zone {
            d.field("zone", z);
        }
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.address())
    }
}

/// Health of a node as the balancer sees it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Receives new picks.
    Healthy,
    /// Receives no picks (except in panic mode).
    Unhealthy,
    /// Receives no new picks; picks already handed out finish normally.
    Draining,
}

impl Health {
    /// Stable lowercase name (`"healthy"`, `"unhealthy"`, `"draining"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Live counters of one node, shared by every membership snapshot that contains it.
///
/// All fields are atomics updated without locks by picks and outcome reports.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Picks handed out for this node; with `finished`, the in-flight count (`picks -
    /// finished`): a pick costs one atomic add, and counting picks for monitoring costs
    /// nothing more.
    pub(crate) picks: AtomicU64,
    /// Picks finished (reported or dropped).
    pub(crate) finished: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) consecutive_failures: AtomicU32,
    pub(crate) last_latency_us: AtomicU64,
    /// Outlier ejections of this node.
    pub(crate) ejections: AtomicU64,
    /// Currently ejected by outlier detection.
    pub(crate) ejected: std::sync::atomic::AtomicBool,
    /// Latencies of the reported successes; its count is the number of successes.
    pub(crate) latency: crate::metrics::LatencyHistogram,
}

impl NodeStats {
    /// Records a success: resets the consecutive failures, stores the latency.
    pub(crate) fn record_success(&self, latency: std::time::Duration) {
        // Counts the success too (the histogram's count).
        self.latency.record(latency);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.last_latency_us.store(
            latency.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// A pick of this node started.
    #[inline]
    pub(crate) fn start(&self) {
        self.picks.fetch_add(1, Ordering::Relaxed);
    }

    /// A pick of this node finished.
    #[inline]
    pub(crate) fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failure; returns the consecutive failures including this one.
    pub(crate) fn record_failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    /// Requests picked for this node and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        // `finished` first: it never passes the `picks` read after it, so this never
        // underflows.
        let finished = self.finished.load(Ordering::Relaxed);
        self.picks.load(Ordering::Relaxed).saturating_sub(finished)
    }
    /// Outcomes reported as successes.
    pub fn successes(&self) -> u64 {
        self.latency.count()
    }
    /// Outcomes reported as failures.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// Failures reported since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }
    /// Picks handed out for this node since it joined.
    pub fn picks(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }
    /// Outlier ejections of this node.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
    /// True while outlier detection keeps the node ejected.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }
    /// The latencies of reported successes, in fixed buckets.
    pub fn latency(&self) -> crate::metrics::HistogramSnapshot {
        self.latency.read()
    }
    /// Latency of the last reported outcome that carried one, in microseconds (0 if none).
    pub fn last_latency_us(&self) -> u64 {
        self.last_latency_us.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn valid_node() {
        let n = Node::new("web-1", "127.0.0.1", 8080)
            .unwrap()
            .with_weight(3)
            .unwrap()
            .with_zone("a")
            .unwrap()
            .with_metadata("role", "web")
            .unwrap();
        assert_eq!(n.id(), "web-1");
        assert_eq!(n.weight(), 3);
        assert_eq!(n.zone(), Some("a"));
        assert_eq!(n.metadata()["role"], "web");
        assert_eq!(n.address(), "127.0.0.1:8080");
        assert_eq!(Node::new("v6", "::1", 1).unwrap().address(), "[::1]:1");
    }

    #[test]
    fn bad_nodes_are_rejected_with_the_field() {
        let e = Node::new("", "h", 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("id"), "{e}");
        let e = Node::new("a", "bad host", 1).unwrap_err();
        assert!(e.to_string().contains("host"), "{e}");
        let e = Node::new("a", "h", 0).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = Node::new("a", "h", 1).unwrap().with_weight(0).unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
        let e = Node::new("a", "h", 1)
            .unwrap()
            .with_weight(MAX_WEIGHT + 1)
            .unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
        assert!(Node::new("a\n", "h", 1).is_err());
        assert!(Node::new("a".repeat(MAX_ID_LEN + 1), "h", 1).is_err());
        assert!(Node::new("a", "", 1).is_err());
        assert!(Node::new("a", "h", 1).unwrap().with_zone("").is_err());
        assert!(Node::new("a", "h", 1)
            .unwrap()
            .with_metadata("", "v")
            .is_err());
    }
}
