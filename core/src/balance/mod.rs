//! Load balancing: [`Strategy`], [`BalancerOptions`], the [`LoadBalancer`] handle and the
//! [`Pick`] guard.
//!
//! A pick reads the cluster's current membership snapshot through `arc-swap` (no lock, no
//! allocation) and chooses among the snapshot's *active* nodes: the healthy ones, or all of
//! them in panic mode. Strategy tables (smooth-WRR schedule, alias table, ketama ring, Maglev
//! table, rendezvous seeds) are built once per membership change by the writer, never by a pick.

mod table;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::{Inner, Snapshot};
use crate::error::{Error, Result};
use crate::hash::{ketama, key_hash, reduce};
use crate::node::{Node, NodeStats};
use crate::rng;

pub(crate) use table::Table;

/// How a pool chooses a node.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each active node in turn, ignoring weights.
    RoundRobin,
    /// nginx's smooth weighted round robin: exact proportions over every `sum(weights)` picks,
    /// heavy nodes interleaved with light ones (no bursts).
    WeightedRoundRobin,
    /// Weighted random (Vose alias table: O(1) per pick).
    Random,
    /// The active node with the fewest in-flight requests relative to its weight (scans all
    /// active nodes; ties broken at random).
    LeastConnections,
    /// Power of two choices: the less loaded of two random nodes (Envoy's least request).
    #[default]
    #[serde(
        rename = "p2c",
        alias = "power_of_two_choices",
        alias = "least_request"
    )]
    PowerOfTwoChoices,
    /// libmemcached-compatible ketama ring (md5, 160 points per server).
    Ketama,
    /// Maglev lookup table.
    Maglev,
    /// Rendezvous (highest random weight) hashing.
    Rendezvous,
}

impl Strategy {
    /// Every strategy, in documentation order.
    pub const ALL: [Strategy; 8] = [
        Strategy::RoundRobin,
        Strategy::WeightedRoundRobin,
        Strategy::Random,
        Strategy::LeastConnections,
        Strategy::PowerOfTwoChoices,
        Strategy::Ketama,
        Strategy::Maglev,
        Strategy::Rendezvous,
    ];

    /// The config name (`"round_robin"`, `"p2c"`, `"ketama"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::WeightedRoundRobin => "weighted_round_robin",
            Strategy::Random => "random",
            Strategy::LeastConnections => "least_connections",
            Strategy::PowerOfTwoChoices => "p2c",
            Strategy::Ketama => "ketama",
            Strategy::Maglev => "maglev",
            Strategy::Rendezvous => "rendezvous",
        }
    }

    /// True for the consistent hashing strategies, whose `pick_for(key)` depends on the key.
    pub fn is_hashing(self) -> bool {
        matches!(
            self,
            Strategy::Ketama | Strategy::Maglev | Strategy::Rendezvous
        )
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Strategy> {
        match s {
            "power_of_two_choices" | "least_request" => return Ok(Strategy::PowerOfTwoChoices),
            _ => {}
        }
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
                Error::invalid(
                    "strategy",
                    format!(
                        "unknown strategy {s:?}, expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// What a pick does when too few nodes are healthy.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicMode {
    /// Balance over every node that is not draining, healthy or not (Envoy's panic routing):
    /// better some errors than none of the traffic served.
    #[default]
    All,
    /// Fail picks with [`Error::Unavailable`] ("no healthy node").
    Error,
}

/// Balancing options of one pool. Build with [`BalancerOptions::new`] and the `with_*` methods;
/// [`BalancerOptions::validate`] (called by the cluster) rejects bad values naming the field.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerOptions {
    /// The strategy.
    pub strategy: Strategy,
    /// What happens when the healthy share falls below `panic_threshold`.
    pub panic_mode: PanicMode,
    /// Panic when the share of healthy nodes is below this (0.0..=1.0). 0.0 (the default)
    /// means: only when no node is healthy.
    pub panic_threshold: f64,
    /// Bounded-load factor `c` (>= 1.0) for the hashing strategies: no node gets a new pick
    /// while it has `ceil(c * average)` requests in flight or more; the key moves to the next
    /// node in the strategy's order instead. `None` disables the bound.
    pub bounded_load: Option<f64>,
    /// Maglev table size (a prime >= 100 x nodes); `None` picks 65537 or the next prime
    /// above 100 x nodes.
    pub maglev_table_size: Option<u32>,
}

impl Default for BalancerOptions {
    fn default() -> Self {
        BalancerOptions::new(Strategy::default())
    }
}

impl BalancerOptions {
    /// Options for `strategy` with defaults: panic mode [`PanicMode::All`], threshold 0, no
    /// load bound, default Maglev table size.
    pub fn new(strategy: Strategy) -> Self {
        BalancerOptions {
            strategy,
            panic_mode: PanicMode::All,
            panic_threshold: 0.0,
            bounded_load: None,
            maglev_table_size: None,
        }
    }
    /// Sets the panic mode.
    pub fn with_panic_mode(mut self, mode: PanicMode) -> Self {
        self.panic_mode = mode;
        self
    }
    /// Sets the panic threshold (share of healthy nodes, 0.0..=1.0).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }
    /// Sets the bounded-load factor (>= 1.0) for hashing strategies.
    pub fn with_bounded_load(mut self, factor: f64) -> Self {
        self.bounded_load = Some(factor);
        self
    }
    /// Sets the Maglev table size (a prime >= 100 x nodes).
    pub fn with_maglev_table_size(mut self, size: u32) -> Self {
        self.maglev_table_size = Some(size);
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !self.panic_threshold.is_finite() || !(0.0..=1.0).contains(&self.panic_threshold) {
            return Err(Error::invalid(
                "panic_threshold",
                format!("must be between 0.0 and 1.0, got {}", self.panic_threshold),
            ));
        }
        if let Some(c) = self.bounded_load {
            if !c.is_finite() || c < 1.0 {
                return Err(Error::invalid(
                    "bounded_load",
                    format!("must be a number >= 1.0, got {c}"),
                ));
            }
            if !self.strategy.is_hashing() {
                return Err(Error::invalid(
                    "bounded_load",
                    format!(
                        "applies to the hashing strategies (ketama, maglev, rendezvous), not {}",
                        self.strategy
                    ),
                ));
            }
        }
        if let Some(m) = self.maglev_table_size {
            if !crate::hash::maglev::is_prime(m) {
                return Err(Error::invalid(
                    "maglev_table_size",
                    format!("must be a prime number, got {m}"),
                ));
            }
            if m > crate::hash::maglev::MAX_TABLE_SIZE {
                return Err(Error::invalid(
                    "maglev_table_size",
                    format!(
                        "must be at most {}, got {m}",
                        crate::hash::maglev::MAX_TABLE_SIZE
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A handle that picks nodes from a [`Cluster`](crate::Cluster). Cheap to clone; every clone
/// sees the cluster's current membership and strategy.
#[derive(Clone)]
pub struct LoadBalancer {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("pool", &self.inner.name)
            .finish()
    }
}

impl LoadBalancer {
    /// Picks a node for a request. Lock-free; allocates nothing.
    ///
    /// For the hashing strategies a pick without a key lands on a uniformly random point of
    /// the strategy's table (so on each node in proportion to its share).
    ///
    /// Fails with [`Error::Unavailable`] when the pool is empty, or when no node is healthy
    /// and the panic mode is [`PanicMode::Error`].
    pub fn pick(&self) -> Result<Pick> {
        self.inner.check_fork();
        self.pick_in(self.inner.snapshot.load())
    }

    fn pick_in(&self, snap: arc_swap::Guard<Arc<Snapshot>>) -> Result<Pick> {
        let n = snap.active.len();
        if n == 0 {
            return Err(snap.no_node_error());
        }
        let slot = match &snap.table {
            Table::Plain => match snap.options.strategy {
                // Weighted round robin over equal weights is plain round robin.
                Strategy::RoundRobin | Strategy::WeightedRoundRobin => self.inner.next_turn() % n,
                Strategy::LeastConnections => least_connections(&snap),
                Strategy::PowerOfTwoChoices => p2c(&snap),
                _ => rng::below(n),
            },
            Table::Wrr(schedule) => schedule[self.inner.next_turn() % schedule.len()] as usize,
            Table::Alias(alias) => alias.sample(rng::next_u64()),
            Table::Ketama(_) | Table::Maglev(_) | Table::Rendezvous { .. } => {
                return Ok(self.pick_hashed(snap, rng::next_u64()));
            }
        };
        Ok(Pick::new(snap, slot, false))
    }

    /// Picks the node for `key`. With a hashing strategy the same key goes to the same node
    /// while membership and health do not change (and, with a load bound, while that node is
    /// not overloaded); other strategies ignore the key and behave like [`LoadBalancer::pick`].
    ///
    /// Fails like [`LoadBalancer::pick`].
    pub fn pick_for(&self, key: &[u8]) -> Result<Pick> {
        self.inner.check_fork();
        let snap = self.inner.snapshot.load();
        if snap.active.is_empty() {
            return Err(snap.no_node_error());
        }
        let hash = match &snap.table {
            Table::Ketama(_) => ketama::hash_key(key) as u64,
            Table::Maglev(_) | Table::Rendezvous { .. } => key_hash(key),
            _ => return self.pick_in(snap),
        };
        Ok(self.pick_hashed(snap, hash))
    }

    fn pick_hashed(&self, snap: arc_swap::Guard<Arc<Snapshot>>, hash: u64) -> Pick {
        let bound = snap.options.bounded_load.map(|c| {
            let total = snap.total_in_flight.load(Ordering::Relaxed);
            ((c * (total + 1) as f64) / snap.active.len() as f64).ceil() as u64
        });
        let slot = match (&snap.table, bound) {
            (Table::Ketama(ring), None) => ring.lookup(hash as u32).unwrap_or(0) as usize,
            (Table::Ketama(ring), Some(limit)) => {
                let mut chosen = None;
                ring.walk(hash as u32, |o| {
                    if snap.in_flight_of(o as usize) < limit {
                        chosen = Some(o as usize);
                        false
                    } else {
                        true
                    }
                });
                chosen.unwrap_or_else(|| ring.lookup(hash as u32).unwrap_or(0) as usize)
            }
            (Table::Maglev(t), None) => t.lookup(hash).unwrap_or(0) as usize,
            (Table::Maglev(t), Some(limit)) => {
                let start = t.slot(hash).unwrap_or(0);
                let first = t.owner_at(start) as usize;
                let mut chosen = first;
                if snap.in_flight_of(first) >= limit {
                    // Walk the following slots: they belong to other nodes in an order that
                    // depends on the key's slot, which spreads an overloaded node's keys.
                    for step in 1..t.size() {
                        let o = t.owner_at(start + step) as usize;
                        if snap.in_flight_of(o) < limit {
                            chosen = o;
                            break;
                        }
                    }
                }
                chosen
            }
            (Table::Rendezvous { nodes, uniform }, None) => {
                crate::hash::rendezvous::pick(hash, nodes, *uniform).unwrap_or(0)
            }
            (Table::Rendezvous { nodes, uniform }, Some(limit)) => {
                let mut best = None;
                let mut best_rank = 0u64;
                for (i, node) in nodes.iter().enumerate() {
                    if snap.in_flight_of(i) >= limit {
                        continue;
                    }
                    let r = crate::hash::rendezvous::rank(hash, node, *uniform);
                    if best.is_none() || r > best_rank {
                        best_rank = r;
                        best = Some(i);
                    }
                }
                best.unwrap_or_else(|| {
                    crate::hash::rendezvous::pick(hash, nodes, *uniform).unwrap_or(0)
                })
            }
            // Not reached: callers only pass hashing tables.
            _ => reduce(hash, snap.active.len()),
        };
        let counted = bound.is_some();
        Pick::new(snap, slot, counted)
    }

    /// The nodes that own `key` under the pool's hashing strategy, in preference order: the
    /// first is the node [`LoadBalancer::pick_for`] returns (without a load bound), the others
    /// follow in the strategy's order (the next distinct nodes clockwise on the ketama ring,
    /// the next slots of the Maglev table, the next-highest rendezvous scores). At most
    /// `count` nodes, fewer when the pool has fewer active nodes. Used for replica placement.
    ///
    /// Fails with [`Error::InvalidArgument`] when the strategy does not hash, or like
    /// [`LoadBalancer::pick`] when no node is available.
    pub fn owners(&self, key: &[u8], count: usize) -> Result<Vec<Arc<Node>>> {
        self.inner.check_fork();
        let snap = self.inner.snapshot.load();
        if snap.active.is_empty() {
            return Err(snap.no_node_error());
        }
        let count = count.min(snap.active.len());
        let node = |slot: usize| snap.members[snap.active[slot] as usize].node.clone();
        let mut out: Vec<Arc<Node>> = Vec::with_capacity(count);
        match &snap.table {
            Table::Ketama(ring) => ring.walk(ketama::hash_key(key), |o| {
                out.push(node(o as usize));
                out.len() < count
            }),
            Table::Maglev(t) => {
                let start = t.slot(key_hash(key)).unwrap_or(0);
                let mut seen: Vec<u32> = Vec::with_capacity(count);
                for step in 0..t.size() {
                    let o = t.owner_at(start + step);
                    if !seen.contains(&o) {
                        seen.push(o);
                        out.push(node(o as usize));
                        if out.len() == count {
                            break;
                        }
                    }
                }
            }
            Table::Rendezvous { nodes, uniform } => {
                let h = key_hash(key);
                let mut scored: Vec<(u64, usize)> = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (crate::hash::rendezvous::rank(h, n, *uniform), i))
                    .collect();
                // Highest rank first; ties by index, as pick() breaks them.
                scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                out.extend(scored.into_iter().take(count).map(|(_, i)| node(i)));
            }
            _ => {
                return Err(Error::invalid(
                    "strategy",
                    format!(
                        "key owners need a hashing strategy (ketama, maglev, rendezvous), not {}",
                        snap.options.strategy
                    ),
                ))
            }
        }
        Ok(out)
    }

    /// Lookup-only placement (issue #18): calls `f` with the node that owns `key` under the
    /// pool's hashing strategy (the first of [`LoadBalancer::owners`], the node
    /// [`LoadBalancer::pick_for`] returns without a load bound) and returns its result. No
    /// in-flight guard, no counter written, no allocation, no reference count touched: for
    /// callers that only need to know where a key lives (a cache client).
    ///
    /// Fails with [`Error::InvalidArgument`] when the strategy does not hash, or like
    /// [`LoadBalancer::pick`] when no node is available.
    #[inline]
    pub fn owner_with<R>(&self, key: &[u8], f: impl FnOnce(&Node) -> R) -> Result<R> {
        self.inner.check_fork();
        let snap = self.inner.snapshot.load();
        if snap.active.is_empty() {
            return Err(snap.no_node_error());
        }
        let slot = match &snap.table {
            Table::Ketama(ring) => ring.lookup(ketama::hash_key(key)).unwrap_or(0) as usize,
            Table::Maglev(t) => t.lookup(key_hash(key)).unwrap_or(0) as usize,
            Table::Rendezvous { nodes, uniform } => {
                crate::hash::rendezvous::pick(key_hash(key), nodes, *uniform).unwrap_or(0)
            }
            _ => {
                return Err(Error::invalid(
                    "strategy",
                    format!(
                        "key owners need a hashing strategy (ketama, maglev, rendezvous), not {}",
                        snap.options.strategy
                    ),
                ))
            }
        };
        Ok(f(&snap.members[snap.active[slot] as usize].node))
    }

    /// The node that owns `key` (see [`LoadBalancer::owner_with`]); one reference count
    /// increment, no in-flight guard.
    pub fn owner(&self, key: &[u8]) -> Result<Arc<Node>> {
        self.inner.check_fork();
        let snap = self.inner.snapshot.load();
        if snap.active.is_empty() {
            return Err(snap.no_node_error());
        }
        let slot = match &snap.table {
            Table::Ketama(ring) => ring.lookup(ketama::hash_key(key)).unwrap_or(0) as usize,
            Table::Maglev(t) => t.lookup(key_hash(key)).unwrap_or(0) as usize,
            Table::Rendezvous { nodes, uniform } => {
                crate::hash::rendezvous::pick(key_hash(key), nodes, *uniform).unwrap_or(0)
            }
            _ => return self.owners(key, 1).map(|mut v| v.remove(0)),
        };
        Ok(snap.members[snap.active[slot] as usize].node.clone())
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.inner.name
    }

    /// The strategy in force.
    pub fn strategy(&self) -> Strategy {
        self.inner.snapshot.load().options.strategy
    }
}

/// Least in-flight relative to weight, scanning from a random start so ties spread.
fn least_connections(snap: &Snapshot) -> usize {
    let n = snap.active.len();
    let start = rng::below(n);
    let mut best = start;
    let (mut best_load, mut best_w) = snap.load_of(start);
    for step in 1..n {
        let i = (start + step) % n;
        let (load, w) = snap.load_of(i);
        // load/w < best_load/best_w, without division.
        if (load as u128) * (best_w as u128) < (best_load as u128) * (w as u128) {
            best = i;
            best_load = load;
            best_w = w;
        }
    }
    best
}

/// Power of two choices on in-flight requests relative to weight.
fn p2c(snap: &Snapshot) -> usize {
    let n = snap.active.len();
    if n == 1 {
        return 0;
    }
    let r = rng::next_u64();
    let a = reduce(r, n);
    // A second index distinct from the first: pick among the other n - 1 and skip over `a`.
    let mut b = reduce(r.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15), n - 1);
    if b >= a {
        b += 1;
    }
    let (la, wa) = snap.load_of(a);
    let (lb, wb) = snap.load_of(b);
    if (lb as u128) * (wa as u128) < (la as u128) * (wb as u128) {
        b
    } else {
        a
    }
}

/// A picked node. Holds the node's in-flight count up until it is dropped or its outcome is
/// reported with [`Pick::success`] / [`Pick::failure`].
///
/// Dereferences to the [`Node`]. Keeps the membership snapshot it was picked from alive, so a
/// node removed or drained meanwhile can still be used to finish the request.
pub struct Pick {
    snap: arc_swap::Guard<Arc<Snapshot>>,
    member: usize,
    counted_total: bool,
}

impl Pick {
    fn new(snap: arc_swap::Guard<Arc<Snapshot>>, active_slot: usize, counted_total: bool) -> Pick {
        let member = snap.active[active_slot] as usize;
        let stats = &snap.members[member].stats;
        stats.start();
        if counted_total {
            snap.total_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        Pick {
            snap,
            member,
            counted_total,
        }
    }

    /// The picked node.
    pub fn node(&self) -> &Node {
        &self.snap.members[self.member].node
    }

    /// The node's live counters.
    pub fn stats(&self) -> &NodeStats {
        &self.snap.members[self.member].stats
    }

    /// Reports that the request succeeded after `latency`, and finishes the pick.
    pub fn success(self, latency: Duration) {
        self.stats().record_success(latency);
    }

    /// Reports that the request failed, and finishes the pick. With outlier detection on,
    /// enough consecutive failures eject the node (the pool's snapshot is rebuilt on this
    /// thread, once per ejection).
    pub fn failure(self) {
        let failures = self.stats().record_failure();
        let threshold = self
            .snap
            .health
            .outlier
            .as_ref()
            .map(|o| o.consecutive_failures);
        if threshold.is_some_and(|t| failures >= t) {
            if let Some(inner) = self.snap.owner.upgrade() {
                let id = self.node().id().to_string();
                let _ = crate::cluster::Cluster::from_inner(inner).eject(&id, failures);
            }
        }
    }
}

impl std::ops::Deref for Pick {
    type Target = Node;
    fn deref(&self) -> &Node {
        self.node()
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.stats().finish();
        if self.counted_total {
            self.snap.total_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick").field("node", self.node()).finish()
    }
}
