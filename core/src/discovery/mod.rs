//! Service discovery: sources that keep a [`Cluster`]'s membership equal to what a registry
//! says, behind one trait, [`Discovery`].
//!
//! - [`StaticDiscovery`]: a fixed list of nodes (the config document's `nodes = [...]`).
//! - [`RedisRegistry`]: nodes register themselves in Redis with a heartbeat TTL; watchers
//!   re-read the full listing every heartbeat interval (and sooner on a pub/sub notification)
//!   and apply it with [`Cluster::sync`]. See `docs/discovery.md` for the data model and the
//!   guarantees.
//!
//! A discovery source *owns* the membership of the cluster it is started on: every re-read
//! replaces the membership (health state and counters of nodes that stay are kept). Problems
//! a source meets (an unreachable registry, a malformed entry) are reported as
//! [`ClusterEvent::DiscoveryProblem`](crate::ClusterEvent::DiscoveryProblem) events and never
//! wipe the membership.
//!
//! ```
//! use clusterkit::discovery::{Discovery, StaticDiscovery};
//! use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
//!
//! let cluster = Cluster::new("app", BalancerOptions::new(Strategy::RoundRobin))?;
//! let source = StaticDiscovery::new([
//!     Node::new("web-1", "127.0.0.1", 8081)?,
//!     Node::new("web-2", "127.0.0.1", 8082)?,
//! ]);
//! let _handle = source.start(&cluster)?;
//! assert_eq!(cluster.len(), 2);
//! # Ok::<(), clusterkit::Error>(())
//! ```

pub mod config;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod redis;

use std::fmt;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::node::Node;

#[cfg(feature = "etcd")]
pub use self::etcd::{EtcdRegistration, EtcdRegistry};
pub use self::redis::{Listing, RedisRegistry, Registration, RegistryOptions};

/// A source of membership for a [`Cluster`].
///
/// Implementations apply what they discover with [`Cluster::sync`] and report what they must
/// skip with [`Cluster::emit`]`(ClusterEvent::DiscoveryProblem { .. })`.
pub trait Discovery: Send + Sync {
    /// Starts keeping `cluster`'s membership equal to this source's view.
    ///
    /// Returns a handle that stops the source's background watcher (if any) when dropped or
    /// [stopped](DiscoveryHandle::stop). A watcher holds only a weak reference to the cluster
    /// and also ends when the cluster is dropped. Fails if the source cannot start at all (for
    /// example an invalid node list, or no runtime for the background task); a source that
    /// merely cannot reach its registry yet starts anyway and reports the problem as events.
    fn start(&self, cluster: &Cluster) -> Result<DiscoveryHandle>;
}

/// A running discovery source: dropping it (or calling [`stop`](DiscoveryHandle::stop)) stops
/// the background watcher. The cluster keeps the membership it had at that moment.
pub struct DiscoveryHandle {
    source: String,
    /// The watcher: started again in a forked child, stopped when the handle goes.
    task: Option<std::sync::Arc<crate::fork::Background>>,
}

impl DiscoveryHandle {
    /// A handle for a source without a background task (for example [`StaticDiscovery`]).
    pub fn inert(source: impl Into<String>) -> DiscoveryHandle {
        DiscoveryHandle {
            source: source.into(),
            task: None,
        }
    }

    pub(crate) fn with_task(
        source: impl Into<String>,
        task: std::sync::Arc<crate::fork::Background>,
    ) -> DiscoveryHandle {
        DiscoveryHandle {
            source: source.into(),
            task: Some(task),
        }
    }

    /// The source's name (for example `redis-registry`), as used in its events.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True while the background watcher runs (always false for a source without one).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.is_running())
    }

    /// Stops the background watcher now (same as dropping the handle). Never blocks.
    pub fn stop(mut self) {
        self.abort();
    }

    fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.stop();
        }
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.abort();
    }
}

impl fmt::Debug for DiscoveryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryHandle")
            .field("source", &self.source)
            .field("running", &self.is_running())
            .finish()
    }
}

/// A fixed list of nodes: starting it makes the cluster's membership equal to the list once.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    nodes: Vec<Node>,
}

impl StaticDiscovery {
    /// A source that always yields `nodes`.
    pub fn new(nodes: impl IntoIterator<Item = Node>) -> StaticDiscovery {
        StaticDiscovery {
            nodes: nodes.into_iter().collect(),
        }
    }

    /// The nodes this source yields.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
}

impl Discovery for StaticDiscovery {
    /// Calls [`Cluster::sync`] with the list; fails as `sync` does (duplicate ids, a list the
    /// strategy cannot build a table for). The returned handle has no background task.
    fn start(&self, cluster: &Cluster) -> Result<DiscoveryHandle> {
        cluster.sync(self.nodes.clone())?;
        Ok(DiscoveryHandle::inert("static"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BalancerOptions, Strategy};

    #[test]
    fn static_discovery_syncs_and_replaces() {
        let c = Cluster::with_nodes(
            "t",
            BalancerOptions::new(Strategy::RoundRobin),
            [Node::new("old", "h", 1).unwrap()],
        )
        .unwrap();
        let s = StaticDiscovery::new([
            Node::new("a", "h", 1).unwrap(),
            Node::new("b", "h", 2).unwrap(),
        ]);
        let h = s.start(&c).unwrap();
        assert!(!h.is_running());
        assert_eq!(h.source(), "static");
        let mut ids: Vec<String> = c.nodes().iter().map(|n| n.node.id().to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        h.stop();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn static_discovery_rejects_duplicates() {
        let c = Cluster::new("t", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
        let s = StaticDiscovery::new([
            Node::new("a", "h", 1).unwrap(),
            Node::new("a", "h", 2).unwrap(),
        ]);
        assert!(s.start(&c).is_err());
    }

    #[test]
    fn weak_cluster_does_not_keep_it_alive() {
        let c = Cluster::new("t", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
        let w = c.downgrade();
        assert!(w.upgrade().is_some());
        drop(c);
        assert!(w.upgrade().is_none());
    }
}
