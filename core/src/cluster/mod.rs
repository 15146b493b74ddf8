//! [`Cluster`]: one pool of nodes (the seed's `ClusterManager`).
//!
//! Membership is an immutable snapshot swapped atomically with `arc-swap`: readers (picks,
//! `get`, `nodes`) never take a lock; writers (add, remove, update, health changes, strategy
//! changes) are serialized by a mutex, build the next snapshot with its strategy table once, and
//! publish it. Subscribers receive a [`ClusterEvent`] for every change.

pub mod config;
pub mod health;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, Notify};

use health::{Counters, HealthMetrics, HealthOptions};

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
    /// A discovery source met something it could not use (an unreachable registry, a
    /// malformed entry) and skipped it.
    DiscoveryProblem {
        /// The source (for example `redis-registry`).
        source: String,
        /// What went wrong.
        message: String,
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
    /// The operator's word: `Healthy` means "no override".
    pub(crate) admin: Health,
    /// Active checks currently fail.
    pub(crate) check_failing: bool,
    /// Ejected by outlier detection until then.
    pub(crate) ejected_until: Option<Instant>,
    /// Ejections so far (multiplies the ejection time).
    pub(crate) ejections: u32,
    /// When the last ejection ended.
    pub(crate) returned_at: Option<Instant>,
    /// Effective health, derived from the three sources above.
    pub(crate) health: Health,
    pub(crate) reason: Arc<str>,
    pub(crate) since: SystemTime,
    /// When the node last became healthy (slow start ramps from here).
    pub(crate) healthy_at: Instant,
    pub(crate) stats: Arc<NodeStats>,
}

impl Member {
    fn new(node: Arc<Node>, healthy_at: Instant) -> Member {
        Member {
            node,
            admin: Health::Healthy,
            check_failing: false,
            ejected_until: None,
            ejections: 0,
            returned_at: None,
            health: Health::Healthy,
            reason: Arc::from("added"),
            since: SystemTime::now(),
            healthy_at,
            stats: Arc::new(NodeStats::default()),
        }
    }

    fn effective(&self) -> Health {
        if self.admin == Health::Draining {
            Health::Draining
        } else if self.admin == Health::Unhealthy
            || self.check_failing
            || self.ejected_until.is_some()
        {
            Health::Unhealthy
        } else {
            Health::Healthy
        }
    }
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
    pub(crate) health: Arc<HealthOptions>,
    pub(crate) table: Table,
    /// Effective weight of each active node (differs from the node's weight in slow start).
    pub(crate) weights: Vec<u32>,
    pub(crate) total_in_flight: Arc<AtomicU64>,
    /// When this snapshot must be rebuilt (an ejection ends, a slow-start step).
    pub(crate) next_refresh: Option<Instant>,
    /// The cluster, for outcome reports that eject a node.
    pub(crate) owner: Weak<Inner>,
}

/// Slow start ramps in this many steps (10% each).
const SLOW_START_STEPS: u32 = 10;

impl Snapshot {
    fn build(
        version: u64,
        members: Vec<Member>,
        options: BalancerOptions,
        health: Arc<HealthOptions>,
        total_in_flight: Arc<AtomicU64>,
        owner: Weak<Inner>,
    ) -> Result<Snapshot> {
        options.validate()?;
        health.validate()?;
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
        let now = Instant::now();
        let mut next_refresh = members.iter().filter_map(|m| m.ejected_until).min();
        // Slow start: nodes that became healthy less than a window ago get 10%..100% of their
        // weight (all weights scaled by 10 meanwhile). Hashing strategies are exempt.
        let mut weights: Vec<u32> = nodes.iter().map(|n| n.weight()).collect();
        if let (Some(window), false) = (health.slow_start, options.strategy.is_hashing()) {
            let mut ramping = false;
            let step = window / SLOW_START_STEPS;
            let fractions: Vec<u32> = active
                .iter()
                .map(|&i| {
                    let age = now.saturating_duration_since(members[i as usize].healthy_at);
                    if age >= window {
                        SLOW_START_STEPS
                    } else {
                        ramping = true;
                        let done = (age.as_nanos() / step.as_nanos().max(1)) as u32;
                        let next = members[i as usize].healthy_at + step * (done + 1);
                        next_refresh = Some(next_refresh.map_or(next, |r: Instant| r.min(next)));
                        (done + 1).min(SLOW_START_STEPS)
                    }
                })
                .collect();
            if ramping {
                for (w, f) in weights.iter_mut().zip(fractions) {
                    *w = (*w * f).max(1);
                }
            }
        }
        let table = Table::build(&options, &nodes, &weights)?;
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
            health,
            table,
            weights,
            total_in_flight,
            next_refresh,
            owner,
        })
    }

    /// In-flight requests of the node at active position `slot`.
    #[inline]
    pub(crate) fn in_flight_of(&self, slot: usize) -> u64 {
        self.members[self.active[slot] as usize].stats.in_flight()
    }

    /// (in-flight, weight) of the node at active position `slot`.
    #[inline]
    pub(crate) fn load_of(&self, slot: usize) -> (u64, u32) {
        let m = &self.members[self.active[slot] as usize];
        (m.stats.in_flight(), self.weights[slot])
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
    /// Serializes writers. A fork-gate mutex: a child never inherits it locked.
    write: crate::fork::Mutex<()>,
    /// Round-robin turn counters, each on its own cache line; a thread always uses the same
    /// one (issue #18: one shared counter's line moved between the cores on every pick).
    turns: [CachePadded<AtomicUsize>; TURN_STRIPES],
    events: broadcast::Sender<ClusterEvent>,
    /// Woken on every change (the check supervisor sleeps on it).
    pub(crate) changed: Arc<Notify>,
    pub(crate) counters: Counters,
    /// The active-check supervisor task, while checks are configured (started again in a
    /// forked child).
    pub(crate) supervisor: crate::fork::Mutex<Option<Arc<crate::fork::Background>>>,
    /// True while a refresher task (ejection ends, slow start steps) is scheduled.
    pub(crate) refresher_running: AtomicBool,
    /// Replaced snapshots still read by picks in flight. The writer frees them once no pick
    /// holds them, so a request thread never pays for freeing a large table.
    retired: crate::fork::Mutex<Vec<Arc<Snapshot>>>,
    /// Discovery watchers owned by the pool (stopped when it is dropped).
    discovery: crate::fork::Mutex<Vec<crate::discovery::DiscoveryHandle>>,
}

#[repr(align(128))]
struct CachePadded<T>(T);

/// Round-robin turn counters per pool. Each thread takes its turns from one of them, so each
/// thread's own sequence is exact round robin (every node once per `n` of its picks, the
/// weighted schedule in order) and the pool's total is within `TURN_STRIPES` picks per node
/// of exact; two threads never write the same counter unless more threads than stripes pick.
const TURN_STRIPES: usize = 8;

/// Start of stripe `s`: spread, so threads that start together do not walk the nodes in
/// lockstep (they would then write the same node's counters at the same time).
fn turn_start(s: usize) -> usize {
    s.wrapping_mul(0x9e37_79b9)
}

/// This thread's stripe (assigned round robin on first use).
#[inline]
fn turn_stripe() -> usize {
    use std::cell::Cell;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|c| {
            let s = c.get();
            if s != usize::MAX {
                return s;
            }
            let s = NEXT.fetch_add(1, Ordering::Relaxed) % TURN_STRIPES;
            c.set(s);
            s
        })
        .unwrap_or(0)
}

impl Inner {
    #[inline]
    pub(crate) fn next_turn(&self) -> usize {
        self.turns[turn_stripe()].0.fetch_add(1, Ordering::Relaxed)
    }

    /// Called on picks and changes: in a process forked after this pool (or anything else)
    /// started background tasks, starts them again on the child's runtime (see
    /// [`crate::fork`]). One relaxed load when nothing forked.
    #[inline]
    pub(crate) fn check_fork(self: &Arc<Self>) {
        crate::fork::check();
    }

    /// Starts the one-shot refresher (ejection ends, slow start steps) unless one runs.
    fn start_refresher(self: &Arc<Self>) {
        if !self.refresher_running.swap(true, Ordering::SeqCst)
            && crate::fork::spawn(health::refresher(Arc::downgrade(self))).is_err()
        {
            self.refresher_running.store(false, Ordering::SeqCst);
        }
    }
}

/// In a forked child: the supervisor restarts itself (a [`crate::fork::Background`]); the
/// refresher is a one-shot task, started again if the snapshot still schedules one.
impl crate::fork::RestartInChild for Inner {
    fn restart_in_child(&self) {
        self.refresher_running.store(false, Ordering::SeqCst);
        if self.snapshot.load().next_refresh.is_some() {
            if let Some(owner) = self.snapshot.load().owner.upgrade() {
                owner.start_refresher();
            }
        }
    }
}

/// What [`EventSubscription::next_blocking`] received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Received {
    /// The next event.
    Event(ClusterEvent),
    /// This many events were missed (the reader fell more than the queue's length behind):
    /// re-read the nodes.
    Lagged(u64),
}

type SharedReceiver = Arc<tokio::sync::Mutex<broadcast::Receiver<ClusterEvent>>>;

/// A subscription to a cluster's events for blocking readers (made by
/// [`Cluster::subscribe_blocking`]). Thread-safe: concurrent readers take turns.
///
/// Fork-safe: a forked child keeps reading the inherited subscription (events queued before
/// the fork included) unless a thread of the parent was waiting on it at the fork; then the
/// child never waits for that reader (it does not exist there): it reads from a subscription
/// of its own, made on its first read (events from before that are not replayed).
pub struct EventSubscription {
    cluster: WeakCluster,
    /// The fork generation the receiver belongs to, and the receiver.
    rx: crate::fork::Mutex<(u64, SharedReceiver)>,
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription")
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl EventSubscription {
    /// This process's receiver (see the type's docs for a forked child).
    fn receiver(&self) -> Result<SharedReceiver> {
        let g = crate::blocking::current_generation();
        let mut slot = self.rx.lock();
        if slot.0 != g {
            // Free now means free at the fork: no reader of the parent holds or waits for it
            // (a waiter would have been handed the lock on release).
            let free = slot.1.try_lock().is_ok();
            if !free {
                let c = self.cluster.upgrade().ok_or_else(|| {
                    Error::Closed("the cluster of this subscription is gone".into())
                })?;
                let fresh = Arc::new(tokio::sync::Mutex::new(c.subscribe()));
                // The parent's reader holds it: never touch it again here.
                std::mem::forget(std::mem::replace(&mut slot.1, fresh));
            }
            slot.0 = g;
        }
        Ok(slot.1.clone())
    }

    /// Takes the next event, waiting up to `wait` for one (zero: do not wait), blocking the
    /// calling thread.
    ///
    /// Fails with [`Error::Timeout`] when no event came in time, [`Error::Closed`] when the
    /// cluster is gone and every event was read, or as [`crate::blocking::block_on`] does.
    pub fn next_blocking(&self, wait: Duration) -> Result<Received> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let rx = self.receiver()?;
        let got = if wait.is_zero() {
            // The guard is dropped inside the future (in a fork-gate section).
            let r = crate::blocking::block_on(async { rx.lock().await.try_recv() })?;
            match r {
                Ok(ev) => Ok(ev),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => return Err(Error::Timeout("no event".into())),
            }
        } else {
            // The timer must be created inside the runtime (it needs its clock).
            let next =
                async { tokio::time::timeout(wait, async { rx.lock().await.recv().await }).await };
            match crate::blocking::block_on(next)? {
                Ok(r) => r,
                Err(_) => return Err(Error::Timeout(format!("no event within {wait:?}"))),
            }
        };
        match got {
            Ok(ev) => Ok(Received::Event(ev)),
            Err(RecvError::Lagged(n)) => Ok(Received::Lagged(n)),
            Err(RecvError::Closed) => Err(Error::Closed(
                "the cluster of this subscription is gone".into(),
            )),
        }
    }
}

/// A weak handle on a [`Cluster`]: see [`Cluster::downgrade`].
#[derive(Clone)]
pub struct WeakCluster(Weak<Inner>);

impl WeakCluster {
    /// The cluster, while someone else still holds it; `None` once it was dropped.
    pub fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(Cluster::from_inner)
    }
}

impl fmt::Debug for WeakCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakCluster")
            .field("alive", &(self.0.strong_count() > 0))
            .finish()
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
        crate::log::init_from_env();
        options.validate()?;
        let name = name.into();
        crate::node::check_token("name", &name, crate::node::MAX_ID_LEN)?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            // An empty pool needs no table: picks fail before they would read one.
            let snapshot = Snapshot {
                version: 0,
                members: Vec::new(),
                by_id: HashMap::new(),
                active: Vec::new(),
                panic: false,
                healthy: 0,
                options,
                health: Arc::default(),
                table: Table::Plain,
                weights: Vec::new(),
                total_in_flight: Arc::new(AtomicU64::new(0)),
                next_refresh: None,
                owner: weak.clone(),
            };
            Inner {
                name,
                snapshot: ArcSwap::from_pointee(snapshot),
                write: crate::fork::Mutex::new(()),
                turns: std::array::from_fn(|s| CachePadded(AtomicUsize::new(turn_start(s)))),
                events,
                changed: Arc::new(Notify::new()),
                counters: Counters::default(),
                supervisor: crate::fork::Mutex::new(None),
                refresher_running: AtomicBool::new(false),
                retired: crate::fork::Mutex::new(Vec::new()),
                discovery: crate::fork::Mutex::new(Vec::new()),
            }
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        crate::fork::register(weak);
        Ok(Cluster { inner })
    }

    /// Creates a pool with balancing and health options and starts its active checks (if
    /// any) on the shared runtime.
    pub fn with_health(
        name: impl Into<String>,
        options: BalancerOptions,
        health: HealthOptions,
        nodes: impl IntoIterator<Item = Node>,
    ) -> Result<Cluster> {
        let c = Cluster::new(name, options)?;
        c.add_all(nodes)?;
        c.set_health_options(health)?;
        Ok(c)
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

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Cluster {
        Cluster { inner }
    }

    /// A weak handle that does not keep the pool alive (for background tasks that should end
    /// when the pool is dropped).
    pub fn downgrade(&self) -> WeakCluster {
        WeakCluster(Arc::downgrade(&self.inner))
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
        let _section = crate::fork::section();
        self.inner.events.subscribe()
    }

    /// A subscription for blocking readers (the C ABI and the bindings), from now on; see
    /// [`EventSubscription`].
    pub fn subscribe_blocking(&self) -> EventSubscription {
        EventSubscription {
            cluster: self.downgrade(),
            rx: crate::fork::Mutex::new((
                crate::blocking::current_generation(),
                Arc::new(tokio::sync::Mutex::new(self.subscribe())),
            )),
        }
    }

    fn lock(&self) -> crate::fork::MutexGuard<'_, ()> {
        // The mutex guards no data (it only serializes writers), so a poisoned lock is safe
        // to take over. Held for the whole change (events and wake-ups included): the change
        // is one section of the fork gate.
        self.inner.write.lock()
    }

    /// Runs one membership change: `f` edits a copy of the members and returns the events it
    /// caused; expired ejections end, effective health is derived again (with an event for
    /// every node whose health changed), and the new snapshot (with its table) is built once
    /// and published.
    fn change(
        &self,
        options: Option<BalancerOptions>,
        health: Option<HealthOptions>,
        f: impl FnOnce(&mut Vec<Member>, &HashMap<Arc<str>, usize>) -> Result<Vec<ClusterEvent>>,
    ) -> Result<()> {
        self.inner.check_fork();
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
        let now = Instant::now();
        for m in members.iter_mut() {
            if m.ejected_until.is_some_and(|t| t <= now) {
                m.ejected_until = None;
                m.stats.ejected.store(false, Ordering::Relaxed);
                m.returned_at = Some(now);
                m.stats.consecutive_failures.store(0, Ordering::Relaxed);
                m.reason = Arc::from("outlier ejection ended");
            }
            let new = m.effective();
            if new != m.health {
                let old = m.health;
                m.health = new;
                m.since = SystemTime::now();
                if new == Health::Healthy {
                    m.healthy_at = now;
                }
                events.push(ClusterEvent::HealthChanged {
                    node: m.node.clone(),
                    old,
                    new,
                    reason: m.reason.to_string(),
                });
            }
        }
        let options = options.unwrap_or_else(|| cur.options.clone());
        let health = match health {
            Some(h) => Arc::new(h),
            None => cur.health.clone(),
        };
        let next = Snapshot::build(
            cur.version + 1,
            members,
            options,
            health,
            cur.total_in_flight.clone(),
            Arc::downgrade(&self.inner),
        )?;
        if next.panic != cur.panic {
            events.push(ClusterEvent::PanicChanged {
                active: next.panic,
                healthy: next.healthy,
                total: next.members.len(),
            });
        }
        let scheduled = next.next_refresh.is_some();
        let old = self.inner.snapshot.swap(Arc::new(next));
        self.retire(old);
        self.inner.changed.notify_waiters();
        for e in events {
            // No subscriber is not an error.
            let _ = self.inner.events.send(e);
        }
        if scheduled {
            self.inner.start_refresher();
        }
        Ok(())
    }

    /// Keeps a replaced snapshot until no pick holds it, and frees those no longer held.
    /// (arc-swap counts outstanding load guards in the strong count once a snapshot is
    /// replaced.)
    fn retire(&self, old: Arc<Snapshot>) {
        let mut retired = self.inner.retired.lock();
        retired.retain(|s| Arc::strong_count(s) > 1);
        if Arc::strong_count(&old) > 1 {
            retired.push(old);
        }
    }

    /// Rebuilds the snapshot now: ends expired ejections and advances slow start. Runs by
    /// itself when something is scheduled; public for callers that drive time themselves.
    pub fn refresh(&self) -> Result<()> {
        self.change(None, None, |_, _| Ok(vec![]))
    }

    /// Adds a healthy node. Fails with [`Error::Conflict`] if a node with the same id exists.
    pub fn add(&self, node: Node) -> Result<()> {
        self.add_all([node])
    }

    /// Adds several nodes in one change (one table build). Nothing is added if any id is
    /// already present or repeated.
    pub fn add_all(&self, nodes: impl IntoIterator<Item = Node>) -> Result<()> {
        let nodes: Vec<Node> = nodes.into_iter().collect();
        self.change(None, None, |members, by_id| {
            // Nodes joining a pool that already has members slow-start; the first ones do not.
            let healthy_at = if members.is_empty() {
                Instant::now()
                    .checked_sub(Duration::from_secs(86_400 * 365))
                    .unwrap_or_else(Instant::now)
            } else {
                Instant::now()
            };
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
                members.push(Member::new(node.clone(), healthy_at));
                events.push(ClusterEvent::Added { node });
            }
            Ok(events)
        })
    }

    /// Removes a node and returns it. Picks already handed out for it finish normally.
    /// Fails with [`Error::NotFound`] for an unknown id.
    pub fn remove(&self, id: &str) -> Result<Arc<Node>> {
        let mut removed = None;
        self.change(None, None, |members, by_id| {
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
        self.change(None, None, |members, by_id| {
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

    /// Sets the operator's word on a node's health, recording `reason`: `Draining` and
    /// `Unhealthy` override active checks and outlier detection; `Healthy` removes the
    /// override (the node is then healthy unless checks fail or it is ejected). Setting the
    /// same word again is a no-op. Fails with [`Error::NotFound`] for an unknown id.
    pub fn set_health(&self, id: &str, health: Health, reason: &str) -> Result<()> {
        self.change(None, None, |members, by_id| {
            let i = *by_id.get(id).ok_or_else(|| self.not_found(id))?;
            let m = &mut members[i];
            if m.admin != health {
                m.admin = health;
                m.reason = Arc::from(reason);
            }
            Ok(vec![])
        })
    }

    /// Records the verdict of active checks on a node (used by the check supervisor).
    pub(crate) fn set_check_failing(&self, id: &str, failing: bool, reason: &str) -> Result<()> {
        self.change(None, None, |members, by_id| {
            let i = *by_id.get(id).ok_or_else(|| self.not_found(id))?;
            let m = &mut members[i];
            if m.check_failing != failing {
                m.check_failing = failing;
                m.reason = Arc::from(reason);
            }
            Ok(vec![])
        })
    }

    /// Ejects a node after `failures` consecutive reported failures, unless it is already
    /// ejected or the maximum ejected share is reached.
    pub(crate) fn eject(&self, id: &str, failures: u32) -> Result<()> {
        let Some(outlier) = self.inner.snapshot.load().health.outlier.clone() else {
            return Ok(());
        };
        let counters = &self.inner.counters;
        self.change(None, None, |members, by_id| {
            let i = *by_id.get(id).ok_or_else(|| self.not_found(id))?;
            let now = Instant::now();
            if members[i].ejected_until.is_some_and(|t| t > now) {
                return Ok(vec![]);
            }
            let ejected = members
                .iter()
                .filter(|m| m.ejected_until.is_some_and(|t| t > now))
                .count();
            let allowed =
                ((members.len() as f64 * outlier.max_ejected_share).floor() as usize).max(1);
            if ejected + 1 > allowed {
                counters.ejections_refused.fetch_add(1, Ordering::Relaxed);
                return Ok(vec![]);
            }
            let m = &mut members[i];
            // A node that stayed in for a full max_ejection_time starts from the base again.
            if m.returned_at
                .is_some_and(|r| now.duration_since(r) >= outlier.max_ejection_time)
            {
                m.ejections = 0;
            }
            m.ejections = m.ejections.saturating_add(1);
            let time = outlier.ejection_time(m.ejections);
            m.ejected_until = Some(now + time);
            m.reason = Arc::from(format!(
                "ejected for {time:?} after {failures} consecutive failures (ejection #{})",
                m.ejections
            ));
            counters.ejections.fetch_add(1, Ordering::Relaxed);
            m.stats.ejections.fetch_add(1, Ordering::Relaxed);
            m.stats.ejected.store(true, Ordering::Relaxed);
            crate::log::ejected(&m.node, failures, time);
            Ok(vec![])
        })
    }

    /// Reports a successful request to node `id` (for callers that do not hold a [`Pick`](crate::Pick)).
    /// Fails with [`Error::NotFound`] for an unknown id.
    pub fn report_success(&self, id: &str, latency: Duration) -> Result<()> {
        let snap = self.inner.snapshot.load();
        let i = *snap.by_id.get(id).ok_or_else(|| self.not_found(id))?;
        snap.members[i].stats.record_success(latency);
        Ok(())
    }

    /// Reports a failed request to node `id`; enough consecutive failures eject it when
    /// outlier detection is on. Fails with [`Error::NotFound`] for an unknown id.
    pub fn report_failure(&self, id: &str) -> Result<()> {
        let snap = self.inner.snapshot.load();
        let i = *snap.by_id.get(id).ok_or_else(|| self.not_found(id))?;
        let failures = snap.members[i].stats.record_failure();
        let threshold = snap.health.outlier.as_ref().map(|o| o.consecutive_failures);
        drop(snap);
        if threshold.is_some_and(|t| failures >= t) {
            self.eject(id, failures)?;
        }
        Ok(())
    }

    /// Replaces the health options (active checks, outlier detection, slow start) and starts
    /// or stops the active-check supervisor accordingly. Active checks need the shared runtime
    /// ([`crate::blocking::runtime`]). Fails on invalid options, keeping the current ones.
    pub fn set_health_options(&self, health: HealthOptions) -> Result<()> {
        let checks = health.check.is_some() || !health.per_node.is_empty();
        self.change(None, Some(health), |_, _| Ok(vec![]))?;
        let mut sup = self.inner.supervisor.lock();
        if checks && sup.is_none() {
            let weak = Arc::downgrade(&self.inner);
            *sup = Some(crate::fork::Background::start(move || {
                health::supervise(weak.clone())
            })?);
        }
        Ok(())
    }

    /// The health options in force.
    pub fn health_options(&self) -> HealthOptions {
        (*self.inner.snapshot.load().health).clone()
    }

    /// Counters of checks, failures and ejections.
    pub fn health_metrics(&self) -> HealthMetrics {
        self.inner.counters.read()
    }

    /// Makes the membership equal to `nodes` in one change: new ids are added, changed nodes
    /// updated, missing ones removed (used by discovery sources). Health state and counters
    /// of nodes that stay are kept. Fails on duplicate ids in `nodes`.
    pub fn sync(&self, nodes: Vec<Node>) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for n in &nodes {
            if !seen.insert(n.id().to_string()) {
                return Err(Error::Conflict(format!(
                    "duplicate node id {:?} in sync",
                    n.id()
                )));
            }
        }
        self.change(None, None, |members, _| {
            let mut events = Vec::new();
            let wanted: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id(), n)).collect();
            members.retain(|m| {
                let keep = wanted.contains_key(m.node.id());
                if !keep {
                    events.push(ClusterEvent::Removed {
                        node: m.node.clone(),
                    });
                }
                keep
            });
            let now = Instant::now();
            let first = members.is_empty();
            // Index of the kept members by id: one hash lookup per listed node, not a scan
            // (a sync of N nodes is O(N), issue #18).
            let held: Vec<Arc<Node>> = members.iter().map(|m| m.node.clone()).collect();
            let index: HashMap<&str, usize> =
                held.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
            for n in &nodes {
                match index.get(n.id()).map(|&i| &mut members[i]) {
                    Some(m) if *m.node != *n => {
                        let new = Arc::new(n.clone());
                        events.push(ClusterEvent::Updated {
                            old: m.node.clone(),
                            new: new.clone(),
                        });
                        m.node = new;
                    }
                    Some(_) => {}
                    None => {
                        let node = Arc::new(n.clone());
                        let at = if first {
                            now.checked_sub(Duration::from_secs(86_400 * 365))
                                .unwrap_or(now)
                        } else {
                            now
                        };
                        members.push(Member::new(node.clone(), at));
                        events.push(ClusterEvent::Added { node });
                    }
                }
            }
            Ok(events)
        })
    }

    /// Keeps a discovery watcher alive as long as this pool (it holds only a weak handle on
    /// the pool, so there is no cycle); it stops when the pool is dropped.
    pub fn attach_discovery(&self, handle: crate::discovery::DiscoveryHandle) {
        self.inner.discovery.lock().push(handle);
    }

    /// Publishes an event to subscribers (used by discovery sources to report problems).
    pub fn emit(&self, event: ClusterEvent) {
        let _section = crate::fork::section();
        let _ = self.inner.events.send(event);
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
        self.change(Some(options), None, |_, _| {
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
