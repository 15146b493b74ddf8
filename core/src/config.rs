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

use crate::balance::{BalancerOptions, PanicMode, Strategy};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::node::Node;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Named pools of nodes.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
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
        for (name, pool) in &self.pools {
            pool.nodes()
                .and_then(|_| pool.options().validate())
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
        Ok(())
    }

    /// Builds every pool as a [`Cluster`]. Fails like [`Config::validate`].
    pub fn build_pools(&self) -> Result<BTreeMap<String, Cluster>> {
        self.validate()?;
        self.pools
            .iter()
            .map(|(name, p)| {
                p.build(name)
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

    /// Builds the pool as a [`Cluster`] named `name`.
    pub fn build(&self, name: &str) -> Result<Cluster> {
        Cluster::with_nodes(name, self.options(), self.nodes()?)
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
        let e = err("{ not json");
        assert!(e.contains("document") || e.contains("line"), "{e}");
        let e = err("[pools.app\n");
        assert!(!e.is_empty());
    }
}
