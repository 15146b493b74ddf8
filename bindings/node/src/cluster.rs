//! Pools (clusters) built node by node or taken from a deployment: membership, health,
//! weights and picks. All synchronous: no I/O.

use std::collections::BTreeMap;
use std::str::FromStr;

use clusterkit::{BalancerOptions, Cluster, Health, Node, Strategy};
use napi_derive::napi;

use crate::errors::{invalid, OrNapi};
use crate::events::EventStream;
use crate::pick::Pick;

/// A node to add to a pool.
#[napi(object)]
pub struct NodeSpec {
    pub id: String,
    pub host: String,
    pub port: u32,
    pub weight: Option<u32>,
    pub zone: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One pool of nodes (native handle; see index.js `Pool`).
#[napi]
pub struct Pool {
    pub(crate) inner: Cluster,
}

fn node_from(spec: NodeSpec) -> napi::Result<Node> {
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid("port", format!("must be 1..65535, got {}", spec.port)))?;
    let mut node = Node::new(spec.id, spec.host, port).or_napi()?;
    if let Some(w) = spec.weight {
        node = node.with_weight(w).or_napi()?;
    }
    if let Some(z) = spec.zone {
        node = node.with_zone(z).or_napi()?;
    }
    if let Some(m) = spec.metadata {
        node = node.with_metadata_map(m).or_napi()?;
    }
    Ok(node)
}

#[napi]
impl Pool {
    /// An empty pool balancing with `strategy` (default round robin).
    #[napi(constructor)]
    pub fn new(name: String, strategy: Option<String>) -> napi::Result<Pool> {
        let strategy = match strategy.as_deref() {
            None | Some("") => Strategy::default(),
            Some(s) => Strategy::from_str(s)
                .map_err(|e| e.in_field("strategy"))
                .or_napi()?,
        };
        Ok(Pool {
            inner: Cluster::new(name, BalancerOptions::new(strategy)).or_napi()?,
        })
    }

    /// The pool's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// The balancing strategy's name.
    #[napi(getter)]
    pub fn strategy(&self) -> String {
        self.inner.options().strategy.as_str().to_string()
    }

    /// Adds a node (conflict if the id is taken).
    #[napi]
    pub fn add(&self, node: NodeSpec) -> napi::Result<()> {
        self.inner.add(node_from(node)?).or_napi()
    }

    /// Removes node `id` (not_found if absent).
    #[napi]
    pub fn remove(&self, id: String) -> napi::Result<()> {
        self.inner.remove(&id).map(|_| ()).or_napi()
    }

    /// Sets the operator's word on node `id`: "unhealthy" or "draining" take it out,
    /// "healthy" lifts the override.
    #[napi]
    pub fn set_health(
        &self,
        id: String,
        health: String,
        reason: Option<String>,
    ) -> napi::Result<()> {
        let h = match health.as_str() {
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            "draining" => Health::Draining,
            other => {
                return Err(invalid(
                    "health",
                    format!("{other:?} is not one of healthy, unhealthy, draining"),
                ))
            }
        };
        self.inner
            .set_health(&id, h, reason.as_deref().unwrap_or("marked by operator"))
            .or_napi()
    }

    /// Changes node `id`'s weight (1..256).
    #[napi]
    pub fn set_weight(&self, id: String, weight: u32) -> napi::Result<()> {
        self.inner.set_weight(&id, weight).or_napi()
    }

    /// Number of nodes.
    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.inner.len() as u32
    }

    /// Number of healthy nodes.
    #[napi(getter)]
    pub fn healthy_count(&self) -> u32 {
        self.inner.healthy_count() as u32
    }

    /// The nodes with health and counters, as JSON text (index.js parses it).
    #[napi]
    pub fn nodes_json(&self) -> String {
        let nodes: Vec<serde_json::Value> =
            self.inner.nodes().iter().map(|n| n.to_json()).collect();
        serde_json::Value::from(nodes).to_string()
    }

    /// The pool's metrics as JSON text.
    #[napi]
    pub fn metrics_json(&self) -> String {
        crate::metrics::cluster(&self.inner)
    }

    /// Picks a node (following `key` for consistent-hashing strategies). Synchronous.
    #[napi]
    pub fn pick(
        &self,
        key: Option<napi::Either<String, napi::bindgen_prelude::Buffer>>,
    ) -> napi::Result<Pick> {
        let lb = self.inner.balancer();
        let pick = match &key {
            None => lb.pick(),
            Some(napi::Either::A(s)) => lb.pick_for(s.as_bytes()),
            Some(napi::Either::B(b)) => lb.pick_for(b),
        }
        .or_napi()?;
        Ok(Pick::new(pick))
    }

    /// A subscription to this pool's events from now on.
    #[napi]
    pub fn subscribe(&self) -> EventStream {
        EventStream::new(self.inner.subscribe())
    }
}
