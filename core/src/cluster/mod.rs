//! [`Cluster`]: one pool of nodes (the seed's `ClusterManager`).
//!
//! Membership is an immutable [`Snapshot`] swapped atomically with `arc-swap`: readers (picks,
//! `get`, `nodes`) never take a lock; writers (add, remove, update, health changes, strategy
//! changes) are serialized by a mutex, build the next snapshot with its strategy table once, and
//! publish it. Subscribers receive a [`ClusterEvent`] for every change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::balance::{BalancerOptions, LoadBalancer, PanicMode, Strategy, Table};
use crate::error::{Error, Result};
use crate::node::{check_weight, Health, Node, NodeStats};

/// Capacity of each subscriber's event queue; a subscriber that falls further behind is told
/// how many events it missed (`RecvError::Lagged`) and should re-read [`Cluster::nodes`].
pub const EVENT_QUEUE: usize = 1024;
/// Largest number of nodes in one pool (Maglev tables index nodes with 16 bits).
pub const MAX_NODES: usize = crate::hash::maglev::MAX_NODES;

/// A change in a cluster, delivered to every subscriber.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// A node joined.
    Added {
        /// The new node.
        node: Arc<Node>,
    },
    /// A node left.
    Removed {
        /// The node as it was.
        node: Arc<Node>,
    },
    /// A node's weight, zone or metadata changed.
    Updated {
        /// Before.
        old: Arc<Node>,
        /// After.
        new: Arc<Node>,
    },
    /// A node's health changed.
    HealthChanged {
        /// The node.
        node: Arc<Node>,
        /// Previous state.
        old: Health,
        /// New state.
        new: Health,
        /// Why (for example "marked by operator", "3 failed checks").
        reason: String,
    },
    /// The pool entered or left panic mode (too few healthy nodes: balancing over all).
    PanicChanged {
        /// True when panic mode started, false when it ended.
        active: bool,
        /// Healthy nodes at the time.
        healthy: usize,
        /// All nodes at the time.
        total: usize,
    },
    /// The balancing options changed.
    StrategyChanged {
        /// The new strategy.
        strategy: Strategy,
    },
}

/// A read-only view of one node: the node, its health and its live counters.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node.
    pub node: Arc<Node>,
    /// Current health.
    pub health: Health,
    /// Why the health last changed.
    pub reason: Arc<str>,
    /// When the health last changed.
    pub since: SystemTime,
    /// Live counters (shared: they keep moving after this view was taken).
    pub stats: Arc<NodeStats>,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) node: Arc<Node>,
    pub(crate) health: Health,
    pub(crate) reason: Arc<str>,
    pub(crate) since: SystemTime,
    pub(crate) stats: Arc<NodeStats>,
}

/// One immutable membership state with its derived strategy table.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) version: u64,
    pub(crate) members: Vec<Member>,
    pub(crate) by_id: HashMap<Arc<str>, usize>,
    /// Member indexes picks choose among (healthy ones, or all non-draining in panic mode).
    pub(crate) active: Vec<u32>,
    pub(crate) panic: bool,
    pub(crate) healthy: usize,
    pub(crate) options: BalancerOptions,
    pub(crate) table: Table,
    pub(crate) total_in_flight: Arc<AtomicU64>,
}

impl Snapshot {
    fn build(
        version: u64,
        members: Vec<Member>,
        options: BalancerOptions,
        total_in_flight: Arc<AtomicU64>,
    ) -> Result<Snapshot> {
        options.validate()?;
        let healthy: Vec<u32> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.health == Health::Healthy)
            .map(|(i, _)| i as u32)
            .collect();
        let total = members.len();
        let below_threshold = total > 0
            && (healthy.is_empty()
                || (healthy.len() as f64) < options.panic_threshold * total as f64);
        let (active, panic) = if below_threshold {
            match options.panic_mode {
                PanicMode::All => (
                    members
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.health != Health::Draining)
                        .map(|(i, _)| i as u32)
                        .collect(),
                    true,
                ),
                // Below the threshold with some healthy nodes left, keep using them; with none,
                // picks fail.
                PanicMode::Error => (healthy.clone(), true),
            }
        } else {
            (healthy.clone(), false)
        };
        let nodes: Vec<&Node> = active.iter().map(|&i| &*members[i as usize].node).collect();
        let table = Table::build(&options, &nodes)?;
        let by_id = members
            .iter()
            .enumerate()
            .map(|(i, m)| (Arc::<str>::from(m.node.id()), i))
            .collect();
        Ok(Snapshot {
            version,
            healthy: healthy.len(),
            members,
            by_id,
            active,
            panic,
            options,
            table,
            total_in_flight,
        })
    }

    /// In-flight requests of the node at active position `slot`.
    #[inline]
    pub(crate) fn in_flight_of(&self, slot: usize) -> u64 {
        self.members[self.active[slot] as usize]
            .stats
            .in_flight
            .load(Ordering::Relaxed)
    }

    /// (in-flight, weight) of the node at active position `slot`.
    #[inline]
    pub(crate) fn load_of(&self, slot: usize) -> (u64, u32) {
        let m = &self.members[self.active[slot] as usize];
        (m.stats.in_flight.load(Ordering::Relaxed), m.node.weight())
    }

    pub(crate) fn no_node_error(&self) -> Error {
        if self.members.is_empty() {
            Error::Unavailable("the pool has no nodes".into())
        } else {
            Error::Unavailable(format!(
                "no healthy node ({} of {} healthy, panic mode {:?})",
                self.healthy,
                self.members.len(),
                self.options.panic_mode
            ))
        }
    }

    fn status(&self, i: usize) -> NodeStatus {
        let m = &self.members[i];
        NodeStatus {
            node: m.node.clone(),
            health: m.health,
            reason: m.reason.clone(),
            since: m.since,
            stats: m.stats.clone(),
        }
    }
}

/// Shared state of a cluster and its balancers.
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    write: Mutex<()>,
    /// Round-robin turn counter, on its own cache line so it does not slow snapshot loads.
    turn: CachePadded<AtomicUsize>,
    events: broadcast::Sender<ClusterEvent>,
}

#[repr(align(128))]
struct CachePadded<T>(T);

impl Inner {
    #[inline]
    pub(crate) fn next_turn(&self) -> usize {
        self.turn.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A pool of nodes with health and a balancing strategy.
///
/// Cheap to clone (an `Arc`); all clones share the same state. Thread-safe: any number of
/// threads may pick while others change membership.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.inner.snapshot.load();
        f.debug_struct("Cluster")
            .field("name", &self.inner.name)
            .field("strategy", &snap.options.strategy)
            .field("nodes", &snap.members.len())
            .field("healthy", &snap.healthy)
            .finish()
    }
}

impl Cluster {
    /// Creates an empty pool named `name` with the given balancing options.
    ///
    /// Fails with [`Error::InvalidArgument`] if an option is out of range.
    pub fn new(name: impl Into<String>, options: BalancerOptions) -> Result<Cluster> {
        let snapshot = Snapshot::build(0, Vec::new(), options, Arc::new(AtomicU64::new(0)))?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        Ok(Cluster {
            inner: Arc::new(Inner {
                name: name.into(),
                snapshot: ArcSwap::from_pointee(snapshot),
                write: Mutex::new(()),
                turn: CachePadded(AtomicUsize::new(0)),
                events,
            }),
        })
    }

    /// Creates a pool and adds `nodes` in one change (one table build).
    ///
    /// Fails on bad options, duplicate ids or more than [`MAX_NODES`] nodes.
    pub fn with_nodes(
        name: impl Into<String>,
        options: BalancerOptions,
        nodes: impl IntoIterator<Item = Node>,
    ) -> Result<Cluster> {
        let c = Cluster::new(name, options)?;
        c.add_all(nodes)?;
        Ok(c)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A balancer picking from this pool.
    pub fn balancer(&self) -> LoadBalancer {
        LoadBalancer {
            inner: self.inner.clone(),
        }
    }

    /// Subscribes to membership and health events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data (it only serializes writers), so a poisoned lock is safe
        // to take over.
        self.inner.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one membership change: `f` edits a copy of the members and returns the events it
    /// caused; the new snapshot (with its table) is built once and published.
    fn change(
        &self,
        options: Option<BalancerOptions>,
        f: impl FnOnce(&mut Vec<Member>, &HashMap<Arc<str>, usize>) -> Result<Vec<ClusterEvent>>,
    ) -> Result<()> {
        let _guard = self.lock();
        let cur = self.inner.snapshot.load_full();
        let mut members = cur.members.clone();
        let mut events = f(&mut members, &cur.by_id)?;
        if members.len() > MAX_NODES {
            return Err(Error::invalid(
                "nodes",
                format!("a pool holds at most {MAX_NODES} nodes"),
            ));
        }
        let options = options.unwrap_or_else(|| cur.options.clone());
        let next = Snapshot::build(
            cur.version + 1,
            members,
            options,
            cur.total_in_flight.clone(),
        )?;
        if next.panic != cur.panic {
            events.push(ClusterEvent::PanicChanged {
                active: next.panic,
                healthy: next.healthy,
                total: next.members.len(),
            });
        }
        self.inner.snapshot.store(Arc::new(next));
        for e in events {
            // No subscriber is not an error.
            let _ = self.inner.events.send(e);
        }
        Ok(())
    }

    /// Adds a healthy node. Fails with [`Error::Conflict`] if a node with the same id exists.
    pub fn add(&self, node: Node) -> Result<()> {
        self.add_all([node])
    }

    /// Adds several nodes in one change (one table build). Nothing is added if any id is
    /// already present or repeated.
    pub fn add_all(&self, nodes: impl IntoIterator<Item = Node>) -> Result<()> {
        let nodes: Vec<Node> = nodes.into_iter().collect();
        self.change(None, |members, by_id| {
            let mut events = Vec::with_capacity(nodes.len());
            let mut seen = std::collections::HashSet::new();
            for n in nodes {
                if by_id.contains_key(n.id()) || !seen.insert(n.id().to_string()) {
                    return Err(Error::Conflict(format!(
                        "a node with id {:?} is already in pool {:?}",
                        n.id(),
                        self.inner.name
                    )));
                }
                let node = Arc::new(n);
                members.push(Member {
                    node: node.clone(),
                    health: Health::Healthy,
                    reason: Arc::from("added"),
                    since: SystemTime::now(),
                    stats: Arc::new(NodeStats::default()),
                });
                events.push(ClusterEvent::Added { node });
            }
            Ok(events)
        })
    }

    /// Removes a node and returns it. Picks already handed out for it finish normally.
    /// Fails with [`Error::NotFound`] for an unknown id.
    pub fn remove(&self, id: &str) -> Result<Arc<Node>> {
        let mut removed = None;
        self.change(None, |members, by_id| {
            let i = *by_id.get(id).ok_or_else(|| self.not_found(id))?;
            let m = members.remove(i);
            removed = Some(m.node.clone());
            Ok(vec![ClusterEvent::Removed { node: m.node }])
        })?;
        removed.ok_or_else(|| Error::Internal("removed node missing".into()))
    }

    fn not_found(&self, id: &str) -> Error {
        Error::NotFound(format!(
            "no node with id {id:?} in pool {:?}",
            self.inner.name
        ))
    }

    /// Replaces a node's weight, zone and metadata with those of `node` (same id; host and
    /// port may change too). Fails with [`Error::NotFound`] for an unknown id.
    pub fn update(&self, node: Node) -> Result<()> {
        self.change(None, |members, by_id| {
            let i = *by_id
                .get(node.id())
                .ok_or_else(|| self.not_found(node.id()))?;
            let old = members[i].node.clone();
            if *old == node {
                return Ok(vec![]);
            }
            let new = Arc::new(node);
            members[i].node = new.clone();
            Ok(vec![ClusterEvent::Updated { old, new }])
        })
    }

    /// Changes a node's weight. Fails on an unknown id or a weight outside 1..=256.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<()> {
        check_weight(weight)?;
        let node = self.get(id).ok_or_else(|| self.not_found(id))?.node;
        self.update((*node).clone().with_weight(weight)?)
    }

    /// Replaces a node's metadata. Fails on an unknown id or an empty key.
    pub fn set_metadata(&self, id: &str, metadata: BTreeMap<String, String>) -> Result<()> {
        let node = self.get(id).ok_or_else(|| self.not_found(id))?.node;
        self.update((*node).clone().with_metadata_map(metadata)?)
    }

    /// Sets a node's health, recording `reason`. Setting the current state again is a no-op
    /// (no event). Fails with [`Error::NotFound`] for an unknown id.
    pub fn set_health(&self, id: &str, health: Health, reason: &str) -> Result<()> {
        self.change(None, |members, by_id| {
            let i = *by_id.get(id).ok_or_else(|| self.not_found(id))?;
            let m = &mut members[i];
            if m.health == health {
                return Ok(vec![]);
            }
            let old = m.health;
            m.health = health;
            m.reason = Arc::from(reason);
            m.since = SystemTime::now();
            Ok(vec![ClusterEvent::HealthChanged {
                node: m.node.clone(),
                old,
                new: health,
                reason: reason.to_string(),
            }])
        })
    }

    /// Drains a node: no new picks; picks already handed out finish. Same as
    /// `set_health(id, Health::Draining, "draining")`.
    pub fn drain(&self, id: &str) -> Result<()> {
        self.set_health(id, Health::Draining, "draining")
    }

    /// Replaces the balancing options (strategy, panic mode, bounds); the table is rebuilt
    /// once. Fails on invalid options, leaving the current ones in force.
    pub fn set_options(&self, options: BalancerOptions) -> Result<()> {
        let strategy = options.strategy;
        self.change(Some(options), |_, _| {
            Ok(vec![ClusterEvent::StrategyChanged { strategy }])
        })
    }

    /// Switches the strategy, keeping the other options. Fails if the other options do not
    /// apply to the new strategy (for example a load bound with round robin).
    pub fn set_strategy(&self, strategy: Strategy) -> Result<()> {
        let mut options = self.options();
        options.strategy = strategy;
        self.set_options(options)
    }

    /// The balancing options in force.
    pub fn options(&self) -> BalancerOptions {
        self.inner.snapshot.load().options.clone()
    }

    /// One node's status, or `None` for an unknown id.
    pub fn get(&self, id: &str) -> Option<NodeStatus> {
        let snap = self.inner.snapshot.load();
        snap.by_id.get(id).map(|&i| snap.status(i))
    }

    /// Every node's status, in the order they were added.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let snap = self.inner.snapshot.load();
        (0..snap.members.len()).map(|i| snap.status(i)).collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.inner.snapshot.load().members.len()
    }

    /// True when the pool has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of healthy nodes.
    pub fn healthy_count(&self) -> usize {
        self.inner.snapshot.load().healthy
    }

    /// True while the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.inner.snapshot.load().panic
    }

    /// Membership version: increases by one with every change.
    pub fn version(&self) -> u64 {
        self.inner.snapshot.load().version
    }

    /// Heap bytes held by the current strategy table (ketama ring, Maglev table, ...).
    pub fn table_memory_bytes(&self) -> usize {
        self.inner.snapshot.load().table.memory_bytes()
    }
}
