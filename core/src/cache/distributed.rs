//! The distributed backend: keys sharded over a pool of Redis nodes by the pool's consistent
//! hashing strategy, each key on `replicas` owners (the key's node and the next ones in the
//! strategy's order, see [`LoadBalancer::owners`](crate::LoadBalancer::owners)).
//!
//! - Writes go to every owner in parallel and succeed when the write quorum (all owners, or a
//!   majority) acknowledged.
//! - Reads go to the first owner and fall back to the next on an error or a miss.
//! - A node that fails is reported to the pool's passive health: with the outlier settings the
//!   cache installs when the pool has none (eject after one failure), a dead or stalled node
//!   costs one timeout, not one per request.
//! - A node that missed writes (a write failed on it, or it was unhealthy and so skipped) is
//!   *dirty*: reads skip it until every namespace of this cache has been flushed from it
//!   (SCAN + UNLINK of the namespace's cache entries, `<namespace>:c:*`; sessions and the
//!   other concerns' keys are never flushed, see `docs/keyspace.md`). So a replica that was stopped while keys changed
//!   never serves the old values when it returns. A generation counter makes a flush count only
//!   if nothing failed on the node while it ran.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::sync::broadcast::error::RecvError;

use crate::cache::redis::{RedisConn, RedisOptions};
use crate::cache::Ttl;
use crate::cluster::health::OutlierOptions;
use crate::cluster::{Cluster, ClusterEvent};
use crate::error::{Error, Result};
use crate::node::{Health, Node};

/// How many owners must acknowledge a write.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteQuorum {
    /// Every owner (default).
    #[default]
    All,
    /// More than half of the owners.
    Majority,
}

/// What a read returns when no owner of the key answered.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFailure {
    /// A miss (default): the application recomputes, as with an empty cache.
    #[default]
    Miss,
    /// The error (`timeout` or `unavailable`).
    Error,
}

/// Options of the distributed backend.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedOptions {
    /// Owners per key (default 1).
    pub replicas: usize,
    /// Write quorum (default all owners).
    pub write_quorum: WriteQuorum,
    /// Read result when no owner answered (default a miss).
    pub on_unavailable: ReadFailure,
    /// Per-node connection settings.
    pub redis: RedisOptions,
    /// Time between attempts to flush a dirty node (default 250 ms).
    pub flush_retry: Duration,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        DistributedOptions {
            replicas: 1,
            write_quorum: WriteQuorum::All,
            on_unavailable: ReadFailure::Miss,
            redis: RedisOptions::default(),
            flush_retry: Duration::from_millis(250),
        }
    }
}

impl DistributedOptions {
    /// Sets the replication factor.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
    /// Sets the write quorum.
    pub fn with_write_quorum(mut self, quorum: WriteQuorum) -> Self {
        self.write_quorum = quorum;
        self
    }
    /// Sets what reads return when no owner answers.
    pub fn with_on_unavailable(mut self, policy: ReadFailure) -> Self {
        self.on_unavailable = policy;
        self
    }
    /// Sets the per-node connection settings.
    pub fn with_redis(mut self, redis: RedisOptions) -> Self {
        self.redis = redis;
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.replicas == 0 || self.replicas > 16 {
            return Err(Error::invalid(
                "replicas",
                format!("must be 1..=16, got {}", self.replicas),
            ));
        }
        if self.flush_retry.is_zero() {
            return Err(Error::invalid("flush_retry", "must be more than 0"));
        }
        self.redis.validate()
    }
}

#[derive(Default)]
struct DirtyState {
    /// Dirty nodes and the generation of their last failure.
    nodes: HashMap<String, u64>,
    generation: u64,
    /// Nodes with a flush task running.
    flushing: HashSet<String>,
}

struct Shared {
    cluster: Cluster,
    options: DistributedOptions,
    conns: crate::fork::Mutex<HashMap<String, (String, RedisConn)>>,
    dirty: crate::fork::Mutex<DirtyState>,
    /// Cache-entry prefixes (`<namespace>:c:`) used through this backend: flushed from a
    /// dirty node.
    prefixes: crate::fork::Mutex<HashSet<Vec<u8>>>,
}

pub(crate) struct DistributedBackend {
    shared: Arc<Shared>,
    /// The event watcher task (started again in a forked child, stopped on drop).
    _watcher: Arc<crate::fork::Background>,
}

/// Runs requests to several nodes concurrently. A single request runs as it is (a blocking
/// caller may then do its I/O on its own thread); several never run one after the other on
/// that thread: they go through the runtime together.
async fn fan_out<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<F> = futs.into_iter().collect();
    if futs.len() == 1 {
        if let Some(f) = futs.pop() {
            return vec![f.await];
        }
    }
    join_all(futs.into_iter().map(crate::blocking::not_inline)).await
}

/// Fork-gate mutexes (never inherited locked by a forked child).
/// The error of a read whose every owner was skipped as recovering.
fn no_owner_answered() -> Error {
    Error::Unavailable(
        "no owner of the key answered: each is unreachable or recovering from a failure".into(),
    )
}

fn lock<T>(m: &crate::fork::Mutex<T>) -> crate::fork::MutexGuard<'_, T> {
    m.lock()
}

impl DistributedBackend {
    pub(crate) fn new(cluster: Cluster, options: DistributedOptions) -> Result<DistributedBackend> {
        options.validate()?;
        if !cluster.options().strategy.is_hashing() {
            return Err(Error::invalid(
                "strategy",
                format!(
                    "the cache pool {:?} must use a hashing strategy (ketama, maglev or rendezvous), not {}",
                    cluster.name(),
                    cluster.options().strategy
                ),
            ));
        }
        let mut health = cluster.health_options();
        if health.outlier.is_none() {
            // One failed request ejects a cache node, so a dead node costs one timeout.
            health.outlier = Some(
                OutlierOptions::default()
                    .with_consecutive_failures(1)
                    .with_ejection_times(Duration::from_secs(5), Duration::from_secs(60)),
            );
            cluster.set_health_options(health)?;
        }
        let events = cluster.subscribe();
        let shared = Arc::new(Shared {
            cluster,
            options,
            conns: crate::fork::Mutex::new(HashMap::new()),
            dirty: crate::fork::Mutex::new(DirtyState::default()),
            prefixes: crate::fork::Mutex::new(HashSet::new()),
        });
        // Nodes unhealthy right now miss writes from now on.
        Shared::mark_unhealthy_dirty(&shared);
        // The first run uses the receiver subscribed above (so no event since the marking is
        // missed); a run in a forked child subscribes afresh and first marks every node that
        // is not healthy now (events between the fork and the restart were not seen).
        let first = crate::fork::Mutex::new(Some(events));
        let weak = Arc::downgrade(&shared);
        let watcher = crate::fork::Background::start(move || {
            let events = first.lock().take().or_else(|| {
                let shared = weak.upgrade()?;
                let events = shared.cluster.subscribe();
                Shared::mark_unhealthy_dirty(&shared);
                Some(events)
            });
            watch_events(weak.clone(), events)
        })?;
        Ok(DistributedBackend {
            shared,
            _watcher: watcher,
        })
    }

    /// In a forked child, starts the background tasks again (see [`crate::fork`]).
    fn check_fork(&self) {
        crate::fork::check();
    }

    pub(crate) fn register_prefix(&self, prefix: &[u8]) {
        lock(&self.shared.prefixes).insert(prefix.to_vec());
    }

    /// Owners of the full key `key` whose namespace prefix is `pk` bytes long: placed by the
    /// user's key alone.
    fn owners(&self, key: &[u8], pk: usize) -> Result<Vec<Arc<Node>>> {
        self.check_fork();
        let user_key = key.get(pk..).unwrap_or(key);
        self.shared
            .cluster
            .balancer()
            .owners(user_key, self.shared.options.replicas)
    }

    fn required(&self, owners: usize) -> usize {
        match self.shared.options.write_quorum {
            WriteQuorum::All => owners,
            WriteQuorum::Majority => owners / 2 + 1,
        }
    }

    /// The outcome of a read no owner answered: `miss` under [`ReadFailure::Miss`], else the
    /// last error — or, when every owner was skipped as recovering (marked dirty after a
    /// failure, so not even tried), an `unavailable` error: a skipped owner is no answer.
    fn unavailable_read<T>(&self, err: Option<Error>, miss: T) -> Result<T> {
        match self.shared.options.on_unavailable {
            ReadFailure::Error => Err(err.unwrap_or_else(no_owner_answered)),
            ReadFailure::Miss => Ok(miss),
        }
    }

    /// Runs `op` on one node, reporting the outcome to the pool's health.
    async fn on<T, F, Fut>(&self, node: &Node, op: F) -> Result<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let conn = self.shared.conn(node)?;
        let started = Instant::now();
        let r = op(conn).await;
        match &r {
            Ok(_) => {
                let _ = self
                    .shared
                    .cluster
                    .report_success(node.id(), started.elapsed());
            }
            // The node answered (with an error for this command: WRONGTYPE, not an
            // integer, an overflow): it is healthy, the request was wrong.
            Err(e) if e.kind() == crate::ErrorKind::Backend => {
                let _ = self
                    .shared
                    .cluster
                    .report_success(node.id(), started.elapsed());
            }
            Err(_) => {
                let _ = self.shared.cluster.report_failure(node.id());
            }
        }
        r
    }

    /// A write to every owner; nodes that fail become dirty. Returns per-owner results.
    async fn write_all<T, F, Fut>(&self, owners: &[Arc<Node>], op: F) -> Vec<Result<T>>
    where
        F: Fn(RedisConn) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let results = fan_out(owners.iter().map(|n| self.on(n, &op))).await;
        for (n, r) in owners.iter().zip(&results) {
            // A node that may have missed the write; one that refused the command (an
            // answer, the same on every replica) did not miss anything.
            if matches!(r, Err(e) if e.kind() != crate::ErrorKind::Backend) {
                Shared::mark_dirty(&self.shared, n.id());
            }
        }
        results
    }

    fn check_quorum<T>(&self, owners: &[Arc<Node>], results: &[Result<T>]) -> Result<()> {
        let ok = results.iter().filter(|r| r.is_ok()).count();
        if ok >= self.required(owners.len()) {
            return Ok(());
        }
        let first_err = results.iter().find_map(|r| r.as_ref().err().cloned());
        Err(Error::Unavailable(format!(
            "write reached {ok} of {} owners ({} required){}",
            owners.len(),
            self.required(owners.len()),
            first_err.map(|e| format!(": {e}")).unwrap_or_default()
        )))
    }

    pub(crate) async fn get(&self, key: &[u8], pk: usize) -> Result<Option<Bytes>> {
        let owners = self.owners(key, pk)?;
        let mut err = None;
        let mut answered = false;
        for n in &owners {
            if self.shared.is_dirty(n.id()) {
                continue;
            }
            match self.on(n, |c| async move { c.get(key).await }).await {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => answered = true,
                Err(e) => err = Some(e),
            }
        }
        if answered {
            return Ok(None);
        }
        self.unavailable_read(err, None)
    }

    async fn set_once(
        &self,
        key: &[u8],
        pk: usize,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let owners = self.owners(key, pk)?;
        let value = &value;
        let r = self
            .write_all(&owners, |c| async move { c.set(key, value, ttl).await })
            .await;
        self.check_quorum(&owners, &r)
    }

    /// `SET NX` on the first owner that answers; on success the value is copied to the others.
    async fn add_once(
        &self,
        key: &[u8],
        pk: usize,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let owners = self.owners(key, pk)?;
        let value = &value;
        let mut last = None;
        for (i, n) in owners.iter().enumerate() {
            match self
                .on(n, |c| async move { c.add(key, value, ttl).await })
                .await
            {
                Ok(false) => return Ok(false),
                Ok(true) => {
                    let rest = &owners[i + 1..];
                    self.write_all(rest, |c| async move { c.set(key, value, ttl).await })
                        .await;
                    return Ok(true);
                }
                Err(e) => {
                    Shared::mark_dirty(&self.shared, n.id());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no owner answered".into())))
    }

    async fn delete_once(&self, key: &[u8], pk: usize) -> Result<bool> {
        let owners = self.owners(key, pk)?;
        let r = self
            .write_all(&owners, |c| async move { c.delete_many(&[key]).await })
            .await;
        self.check_quorum(&owners, &r)?;
        Ok(r.iter().any(|x| matches!(x, Ok(n) if *n > 0)))
    }

    /// Runs a write; if it failed while the pool changed meanwhile (typically: the failing
    /// node was just ejected, so the key has other owners now), runs it once more against
    /// the new owners. So a node's death costs one failed attempt inside one call, not a
    /// failed call.
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let version = self.shared.cluster.version();
        match op().await {
            Err(e)
                if e.kind() != crate::ErrorKind::Backend
                    && self.shared.cluster.version() != version =>
            {
                op().await
            }
            r => r,
        }
    }

    pub(crate) async fn set(
        &self,
        key: &[u8],
        pk: usize,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.retrying(|| self.set_once(key, pk, value.clone(), ttl))
            .await
    }

    pub(crate) async fn add(
        &self,
        key: &[u8],
        pk: usize,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.retrying(|| self.add_once(key, pk, value.clone(), ttl))
            .await
    }

    pub(crate) async fn delete(&self, key: &[u8], pk: usize) -> Result<bool> {
        self.retrying(|| self.delete_once(key, pk)).await
    }

    pub(crate) async fn set_many(
        &self,
        items: Vec<(Vec<u8>, Bytes)>,
        pk: usize,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.retrying(|| self.set_many_once(&items, pk, ttl)).await
    }

    pub(crate) async fn increment(&self, key: &[u8], pk: usize, delta: i64) -> Result<i64> {
        self.retrying(|| self.increment_once(key, pk, delta)).await
    }

    pub(crate) async fn exists(&self, key: &[u8], pk: usize) -> Result<bool> {
        Ok(self.get(key, pk).await?.is_some())
    }

    pub(crate) async fn get_many(&self, keys: &[Vec<u8>], pk: usize) -> Result<Vec<Option<Bytes>>> {
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
        let owners: Vec<Vec<Arc<Node>>> = keys
            .iter()
            .map(|k| self.owners(k, pk))
            .collect::<Result<_>>()?;
        // Round r asks each pending key's r-th owner; misses and errors move on to the next.
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let mut answered = vec![false; keys.len()];
        let mut err: Option<Error> = None;
        for round in 0..self.shared.options.replicas {
            let mut groups: HashMap<&str, (Arc<Node>, Vec<usize>)> = HashMap::new();
            for &i in &pending {
                if let Some(n) = owners[i].get(round) {
                    if !self.shared.is_dirty(n.id()) {
                        groups
                            .entry(n.id())
                            .or_insert_with(|| (n.clone(), Vec::new()))
                            .1
                            .push(i);
                    }
                }
            }
            if groups.is_empty() {
                if pending.iter().all(|&i| owners[i].len() <= round + 1) {
                    break;
                }
                continue;
            }
            let results = fan_out(groups.values().map(|(n, idx)| {
                let ks: Vec<&[u8]> = idx.iter().map(|&i| keys[i].as_slice()).collect();
                async move {
                    (
                        idx,
                        self.on(n, |c| async move { c.get_many(&ks).await }).await,
                    )
                }
            }))
            .await;
            for (idx, r) in results {
                match r {
                    Ok(values) => {
                        for (&i, v) in idx.iter().zip(values) {
                            answered[i] = true;
                            out[i] = v;
                        }
                    }
                    Err(e) => err = Some(e),
                }
            }
            pending.retain(|&i| out[i].is_none());
            if pending.is_empty() {
                break;
            }
        }
        if pending.iter().any(|&i| !answered[i]) {
            // Some keys got no answer from any owner.
            return self.unavailable_read(err, out);
        }
        Ok(out)
    }

    async fn set_many_once(
        &self,
        items: &[(Vec<u8>, Bytes)],
        pk: usize,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let owners: Vec<Vec<Arc<Node>>> = items
            .iter()
            .map(|(k, _)| self.owners(k, pk))
            .collect::<Result<_>>()?;
        let mut groups: HashMap<&str, (Arc<Node>, Vec<usize>)> = HashMap::new();
        for (i, os) in owners.iter().enumerate() {
            for n in os {
                groups
                    .entry(n.id())
                    .or_insert_with(|| (n.clone(), Vec::new()))
                    .1
                    .push(i);
            }
        }
        let results = fan_out(groups.values().map(|(n, idx)| async move {
            let batch: Vec<(&[u8], &[u8])> = idx
                .iter()
                .map(|&i| (items[i].0.as_slice(), &items[i].1[..]))
                .collect();
            let r = self
                .on(n, |c| async move { c.set_many(&batch, ttl).await })
                .await;
            if r.is_err() {
                Shared::mark_dirty(&self.shared, n.id());
            }
            (idx, r)
        }))
        .await;
        let mut acks = vec![0usize; items.len()];
        let mut err = None;
        for (idx, r) in results {
            match r {
                Ok(()) => idx.iter().for_each(|&i| acks[i] += 1),
                Err(e) => err = Some(e),
            }
        }
        for (i, os) in owners.iter().enumerate() {
            if acks[i] < self.required(os.len()) {
                return Err(Error::Unavailable(format!(
                    "batch write reached {} of {} owners of a key{}",
                    acks[i],
                    os.len(),
                    err.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn delete_many(&self, keys: &[Vec<u8>], pk: usize) -> Result<u64> {
        let mut deleted = 0;
        // Deletions are rare next to reads: one key at a time keeps the quorum rule per key.
        for k in keys {
            deleted += self.delete(k, pk).await? as u64;
        }
        Ok(deleted)
    }

    /// INCRBY on the first owner that answers; the result is copied to the other owners
    /// (keeping their TTL), so replicas converge to the primary's count.
    async fn increment_once(&self, key: &[u8], pk: usize, delta: i64) -> Result<i64> {
        let owners = self.owners(key, pk)?;
        let mut last = None;
        for (i, n) in owners.iter().enumerate() {
            if self.shared.is_dirty(n.id()) && i + 1 < owners.len() {
                continue;
            }
            match self
                .on(n, |c| async move { c.increment(key, delta).await })
                .await
            {
                Ok(v) => {
                    let others: Vec<Arc<Node>> = owners
                        .iter()
                        .filter(|o| o.id() != n.id())
                        .cloned()
                        .collect();
                    let text = v.to_string();
                    let text = text.as_bytes();
                    self.write_all(&others, |c| async move { c.set_keep_ttl(key, text).await })
                        .await;
                    return Ok(v);
                }
                Err(e) if e.kind() == crate::ErrorKind::Backend => return Err(e),
                Err(e) => {
                    Shared::mark_dirty(&self.shared, n.id());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no owner answered".into())))
    }

    pub(crate) async fn ttl(&self, key: &[u8], pk: usize) -> Result<Ttl> {
        let owners = self.owners(key, pk)?;
        let mut err = None;
        let mut answered = false;
        for n in &owners {
            if self.shared.is_dirty(n.id()) {
                continue;
            }
            match self.on(n, |c| async move { c.ttl(key).await }).await {
                Ok(Ttl::Missing) => answered = true,
                Ok(t) => return Ok(t),
                Err(e) => err = Some(e),
            }
        }
        if answered {
            return Ok(Ttl::Missing);
        }
        self.unavailable_read(err, Ttl::Missing)
    }

    /// Deletes the namespace's cache entries (`prefix` is `<namespace>:c:`) on every node of
    /// the pool. A node that cannot be reached is
    /// marked dirty and flushed when it answers again; its keys are never served meanwhile.
    pub(crate) async fn clear_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let nodes: Vec<Arc<Node>> = self
            .shared
            .cluster
            .nodes()
            .into_iter()
            .map(|s| s.node)
            .collect();
        let results = fan_out(
            nodes
                .iter()
                .map(|n| self.on(n, |c| async move { c.clear_prefix(prefix).await })),
        )
        .await;
        let mut total = 0;
        for (n, r) in nodes.iter().zip(results) {
            match r {
                Ok(k) => total += k,
                Err(_) => Shared::mark_dirty(&self.shared, n.id()),
            }
        }
        Ok(total)
    }

    /// The connection to the first owner of `user_key` (sessions live on one node).
    pub(crate) fn owner_conn(&self, user_key: &[u8]) -> Result<(RedisConn, Arc<Node>)> {
        let owner = self
            .shared
            .cluster
            .balancer()
            .owners(user_key, 1)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Unavailable("no node for the key".into()))?;
        Ok((self.shared.conn(&owner)?, owner))
    }

    /// Reports an outcome (and its latency) on `node` to the pool's passive health.
    pub(crate) fn report(&self, node: &Node, ok: bool, latency: Duration) {
        let _ = if ok {
            self.shared.cluster.report_success(node.id(), latency)
        } else {
            self.shared.cluster.report_failure(node.id())
        };
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        for s in self.shared.cluster.nodes() {
            if s.health == Health::Healthy {
                self.shared.conn(&s.node)?.ping().await?;
            }
        }
        Ok(())
    }

    /// Dirty nodes, sorted (tests and metrics).
    pub(crate) fn dirty_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.shared.dirty).nodes.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Shared {
    fn conn(&self, node: &Node) -> Result<RedisConn> {
        let address = node.address();
        let mut conns = lock(&self.conns);
        if let Some((a, c)) = conns.get(node.id()) {
            if *a == address {
                return Ok(c.clone());
            }
        }
        let c = RedisConn::lazy(&address, &self.options.redis)?;
        conns.insert(node.id().to_string(), (address, c.clone()));
        Ok(c)
    }

    fn is_dirty(&self, id: &str) -> bool {
        lock(&self.dirty).nodes.contains_key(id)
    }

    /// Marks every node that is not healthy now as dirty.
    fn mark_unhealthy_dirty(this: &Arc<Shared>) {
        for s in this.cluster.nodes() {
            if s.health != Health::Healthy {
                Shared::mark_dirty(this, s.node.id());
            }
        }
    }

    /// Marks `id` as having missed writes and makes sure a flush task runs for it.
    fn mark_dirty(this: &Arc<Shared>, id: &str) {
        let start = {
            let mut d = lock(&this.dirty);
            d.generation += 1;
            let g = d.generation;
            d.nodes.insert(id.to_string(), g);
            d.flushing.insert(id.to_string())
        };
        if start
            && crate::fork::spawn(flush_until_clean(Arc::downgrade(this), id.to_string())).is_err()
        {
            lock(&this.dirty).flushing.remove(id);
        }
    }
}

/// Flushes every namespace of the cache from node `id` until a flush completes with no new
/// failure recorded meanwhile; then the node serves reads again.
async fn flush_until_clean(weak: Weak<Shared>, id: String) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let retry = shared.options.flush_retry;
        let generation = lock(&shared.dirty).nodes.get(&id).copied();
        let Some(generation) = generation else {
            lock(&shared.dirty).flushing.remove(&id);
            return;
        };
        let status = shared.cluster.get(&id);
        let Some(status) = status else {
            // The node left the pool: nothing to serve stale values from.
            let mut d = lock(&shared.dirty);
            d.nodes.remove(&id);
            d.flushing.remove(&id);
            return;
        };
        // Flush only once the pool uses the node again (healthy), so keys written while the
        // flush runs are not lost to it.
        let mut done = false;
        if status.health == Health::Healthy {
            if let Ok(conn) = shared.conn(&status.node) {
                let prefixes: Vec<Vec<u8>> = lock(&shared.prefixes).iter().cloned().collect();
                done = true;
                for p in prefixes {
                    if conn.clear_prefix(&p).await.is_err() {
                        done = false;
                        break;
                    }
                }
            }
        }
        if done {
            let mut d = lock(&shared.dirty);
            if d.nodes.get(&id) == Some(&generation) {
                d.nodes.remove(&id);
                d.flushing.remove(&id);
                return;
            }
            // A write failed on the node meanwhile: flush again.
            continue;
        }
        drop(shared);
        tokio::time::sleep(retry).await;
    }
}

/// Marks nodes dirty when they stop being healthy (writes skip them from then on).
async fn watch_events(
    weak: Weak<Shared>,
    events: Option<tokio::sync::broadcast::Receiver<ClusterEvent>>,
) {
    let Some(mut events) = events else { return };
    loop {
        let e = events.recv().await;
        let Some(shared) = weak.upgrade() else { return };
        match e {
            Ok(ClusterEvent::HealthChanged { node, new, .. }) if new != Health::Healthy => {
                Shared::mark_dirty(&shared, node.id());
            }
            Ok(ClusterEvent::Removed { node }) | Ok(ClusterEvent::Updated { old: node, .. }) => {
                lock(&shared.conns).remove(node.id());
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                // Missed events: treat every node that is not healthy now as dirty.
                for s in shared.cluster.nodes() {
                    if s.health != Health::Healthy {
                        Shared::mark_dirty(&shared, s.node.id());
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
