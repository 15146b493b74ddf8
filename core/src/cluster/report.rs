//! Machine-readable views of a cluster — node status, events, metrics — as JSON values.
//!
//! The C ABI, PHP, Python and Node hand these documents to callers unchanged, so every
//! language sees the same field names; they are defined here, once.

use std::time::UNIX_EPOCH;

use serde_json::{json, Map, Value};

use super::{Cluster, ClusterEvent, NodeStatus};
use crate::node::Node;

fn node_fields(node: &Node) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(node.id()));
    m.insert("host".into(), json!(node.host()));
    m.insert("port".into(), json!(node.port()));
    m.insert("weight".into(), json!(node.weight()));
    m.insert("zone".into(), json!(node.zone()));
    m.insert("metadata".into(), json!(node.metadata()));
    m
}

impl NodeStatus {
    /// The node, its health and its live counters as one JSON object: `id`, `host`, `port`,
    /// `weight`, `zone` (or null), `metadata`, `health` (`"healthy"`, `"unhealthy"`,
    /// `"draining"`), `reason`, `since_ms` (Unix ms of the last health change), `in_flight`,
    /// `successes`, `failures`, `consecutive_failures`, `last_latency_us`.
    pub fn to_json(&self) -> Value {
        let mut m = node_fields(&self.node);
        m.insert("health".into(), json!(self.health.as_str()));
        m.insert("reason".into(), json!(&*self.reason));
        let since = self
            .since
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        m.insert("since_ms".into(), json!(since));
        m.insert("in_flight".into(), json!(self.stats.in_flight()));
        m.insert("successes".into(), json!(self.stats.successes()));
        m.insert("failures".into(), json!(self.stats.failures()));
        m.insert(
            "consecutive_failures".into(),
            json!(self.stats.consecutive_failures()),
        );
        m.insert(
            "last_latency_us".into(),
            json!(self.stats.last_latency_us()),
        );
        Value::Object(m)
    }
}

impl ClusterEvent {
    /// Stable snake_case name of the event's kind: `added`, `removed`, `updated`,
    /// `health_changed`, `panic_changed`, `strategy_changed`, `discovery_problem`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ClusterEvent::Added { .. } => "added",
            ClusterEvent::Removed { .. } => "removed",
            ClusterEvent::Updated { .. } => "updated",
            ClusterEvent::HealthChanged { .. } => "health_changed",
            ClusterEvent::PanicChanged { .. } => "panic_changed",
            ClusterEvent::StrategyChanged { .. } => "strategy_changed",
            ClusterEvent::DiscoveryProblem { .. } => "discovery_problem",
        }
    }

    /// The id of the node the event is about, if any.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            ClusterEvent::Added { node }
            | ClusterEvent::Removed { node }
            | ClusterEvent::HealthChanged { node, .. } => Some(node.id()),
            ClusterEvent::Updated { new, .. } => Some(new.id()),
            _ => None,
        }
    }

    /// A one-line human description (the health change's reason, the panic counts, ...).
    pub fn message(&self) -> String {
        match self {
            ClusterEvent::Added { node } => format!("node {} added", node.id()),
            ClusterEvent::Removed { node } => format!("node {} removed", node.id()),
            ClusterEvent::Updated { new, .. } => format!("node {} updated", new.id()),
            ClusterEvent::HealthChanged { reason, .. } => reason.clone(),
            ClusterEvent::PanicChanged {
                active,
                healthy,
                total,
            } => format!(
                "panic mode {} ({healthy} of {total} nodes healthy)",
                if *active { "started" } else { "ended" }
            ),
            ClusterEvent::StrategyChanged { strategy } => format!("strategy is now {strategy}"),
            ClusterEvent::DiscoveryProblem { source, message } => format!("{source}: {message}"),
        }
    }

    /// The whole event as a JSON object with `kind` (see [`ClusterEvent::kind_name`]),
    /// `message`, and the kind's fields: `node` (the node's fields) for added/removed/updated
    /// (plus `old` for updated), `node`, `old_health`, `new_health` for health changes,
    /// `active`, `healthy`, `total` for panic changes, `strategy`, or `source`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(self.kind_name()));
        m.insert("message".into(), json!(self.message()));
        match self {
            ClusterEvent::Added { node } | ClusterEvent::Removed { node } => {
                m.insert("node".into(), Value::Object(node_fields(node)));
            }
            ClusterEvent::Updated { old, new } => {
                m.insert("node".into(), Value::Object(node_fields(new)));
                m.insert("old".into(), Value::Object(node_fields(old)));
            }
            ClusterEvent::HealthChanged { node, old, new, .. } => {
                m.insert("node".into(), Value::Object(node_fields(node)));
                m.insert("old_health".into(), json!(old.as_str()));
                m.insert("new_health".into(), json!(new.as_str()));
            }
            ClusterEvent::PanicChanged {
                active,
                healthy,
                total,
            } => {
                m.insert("active".into(), json!(active));
                m.insert("healthy".into(), json!(healthy));
                m.insert("total".into(), json!(total));
            }
            ClusterEvent::StrategyChanged { strategy } => {
                m.insert("strategy".into(), json!(strategy.as_str()));
            }
            ClusterEvent::DiscoveryProblem { source, .. } => {
                m.insert("source".into(), json!(source));
            }
        }
        Value::Object(m)
    }
}

impl Cluster {
    /// The pool's metrics as one JSON object: `name`, `strategy`, `version`, `total`,
    /// `healthy`, `in_panic`, `health` (check and ejection counters: `checks`,
    /// `check_failures`, `marked_unhealthy`, `marked_healthy`, `ejections`,
    /// `ejections_refused`) and `nodes` (each as [`NodeStatus::to_json`]).
    pub fn metrics(&self) -> Value {
        let h = self.health_metrics();
        json!({
            "name": self.name(),
            "strategy": self.options().strategy.as_str(),
            "version": self.version(),
            "total": self.len(),
            "healthy": self.healthy_count(),
            "in_panic": self.in_panic(),
            "health": {
                "checks": h.checks,
                "check_failures": h.check_failures,
                "marked_unhealthy": h.marked_unhealthy,
                "marked_healthy": h.marked_healthy,
                "ejections": h.ejections,
                "ejections_refused": h.ejections_refused,
            },
            "nodes": self.nodes().iter().map(NodeStatus::to_json).collect::<Vec<_>>(),
        })
    }
}
