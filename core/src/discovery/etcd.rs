//! Service discovery on etcd (issue #17).
//!
//! - **Data**: one key per node, `<prefix><node id>`, holding the node as JSON (the Redis
//!   registry's entry format: `id`, `host`, `port`, `weight`, `zone`, `metadata`), attached to
//!   the registering process's lease. The process keeps the lease alive (every third of the
//!   TTL); when it stops (crash, pause, partition) etcd deletes the key after the TTL, by the
//!   leader's own timer: no clock comparison between machines.
//! - **Watch**: list the prefix once, then follow a watch from the listing's revision + 1, so
//!   no change between the two is missed. After a broken stream the watcher resumes from the
//!   last revision it applied; if that revision was compacted meanwhile, etcd cancels the
//!   watch and the watcher lists again.
//! - **Problems** (never a crash, never a wiped membership) are
//!   [`ClusterEvent::DiscoveryProblem`] events with source [`SOURCE`]: malformed entries
//!   (skipped, each reported once while unchanged), an unreachable cluster (membership kept,
//!   retried with a backoff of at most 1 s), a compaction (re-listed).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};

use super::redis::{parse_entry, to_json, Listing};
use super::{Discovery, DiscoveryHandle};
use crate::cluster::{Cluster, ClusterEvent, WeakCluster};
use crate::error::{Error, Result};
use crate::etcd::{map_error, on_runtime, EtcdLink, EtcdSettings};
use crate::node::Node;

/// The `source` of the [`ClusterEvent::DiscoveryProblem`] events an etcd watcher emits.
pub const SOURCE: &str = "etcd-registry";
/// Default lease TTL of a registration.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const REPEAT_PROBLEM_EVERY: Duration = Duration::from_secs(10);

/// A registry of nodes under a key prefix in etcd. Cheap to clone. No I/O until used.
#[derive(Clone)]
pub struct EtcdRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    link: Arc<EtcdLink>,
    prefix: String,
    ttl: Duration,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.shared.link.settings.endpoints)
            .field("prefix", &self.shared.prefix)
            .field("ttl", &self.shared.ttl)
            .finish()
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_millis().max(1).div_ceil(1000)).min(i64::MAX as u128) as i64
}

impl EtcdRegistry {
    /// A registry under `prefix` (a `/` is appended when missing) with leases of `ttl`
    /// (whole seconds, rounded up). Fails with [`Error::InvalidArgument`] on a bad prefix or
    /// TTL (1 s ..= 1 day).
    pub fn new(settings: EtcdSettings, prefix: &str, ttl: Duration) -> Result<EtcdRegistry> {
        let prefix = crate::etcd::normalise_prefix("prefix", prefix)?;
        crate::config::check_duration(
            "ttl",
            ttl,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        )?;
        Ok(EtcdRegistry {
            shared: Arc::new(Shared {
                link: Arc::new(EtcdLink::new(settings)),
                prefix,
                ttl,
            }),
        })
    }

    /// The key prefix (ends with `/`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The key of node `id`.
    pub fn node_key(&self, id: &str) -> String {
        format!("{}{id}", self.shared.prefix)
    }

    /// Registers `node` under a new lease and keeps the lease alive in the background (a
    /// lease that expired anyway, say after a long pause, is replaced and the entry written
    /// again) until the [`EtcdRegistration`] is deregistered, abandoned or dropped.
    pub async fn register(&self, node: Node) -> Result<EtcdRegistration> {
        let state = Arc::new(RegState {
            shared: self.shared.clone(),
            id: node.id().to_string(),
            json: to_json(&node)?,
            lease: std::sync::Mutex::new(None),
        });
        let s = state.clone();
        on_runtime(async move { s.write().await }).await?;
        let beat = state.clone();
        let keeper = crate::fork::Background::start(move || keep_alive(beat.clone()))?;
        Ok(EtcdRegistration {
            state,
            keeper: Some(keeper),
        })
    }

    /// Blocking form of [`register`](EtcdRegistry::register).
    pub fn register_blocking(&self, node: Node) -> Result<EtcdRegistration> {
        crate::blocking::block_on(self.register(node))?
    }

    /// Reads every entry under the prefix once: the valid nodes and the skipped entries.
    pub async fn list(&self) -> Result<Listing> {
        let shared = self.shared.clone();
        on_runtime(async move { list(&shared).await.map(|(l, _)| l.listing()) }).await
    }

    /// Blocking form of [`list`](EtcdRegistry::list).
    pub fn list_blocking(&self) -> Result<Listing> {
        crate::blocking::block_on(self.list())?
    }

    /// Requests sent to etcd so far (tests: the watcher does not poll).
    pub fn requests(&self) -> u64 {
        self.shared
            .link
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a watcher that keeps `cluster`'s membership equal to the registered nodes (see
    /// the module docs). Returns immediately.
    pub fn watch(&self, cluster: &Cluster) -> Result<DiscoveryHandle> {
        let (shared, cluster) = (self.shared.clone(), cluster.downgrade());
        let task =
            crate::fork::Background::start(move || watch_loop(shared.clone(), cluster.clone()))?;
        Ok(DiscoveryHandle::with_task(SOURCE, task))
    }
}

impl Discovery for EtcdRegistry {
    fn start(&self, cluster: &Cluster) -> Result<DiscoveryHandle> {
        self.watch(cluster)
    }
}

struct RegState {
    shared: Arc<Shared>,
    id: String,
    json: String,
    lease: std::sync::Mutex<Option<i64>>,
}

impl RegState {
    /// Grants a lease and writes the entry under it.
    async fn write(&self) -> Result<()> {
        let link = &self.shared.link;
        let secs = ttl_secs(self.shared.ttl);
        let lease = link
            .call("granting a lease", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?
            .id();
        let key = format!("{}{}", self.shared.prefix, self.id);
        link.call("writing a node entry", |mut c| {
            let (key, json) = (key.clone(), self.json.clone());
            async move {
                c.put(key, json, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        Ok(())
    }

    fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn remove(&self) -> Result<()> {
        let link = &self.shared.link;
        let key = format!("{}{}", self.shared.prefix, self.id);
        link.call("deleting a node entry", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
        if let Some(l) = self.lease() {
            let _ = link
                .call("revoking a lease", |mut c| async move {
                    c.lease_revoke(l).await
                })
                .await;
        }
        Ok(())
    }
}

/// Keeps the registration's lease alive on one keep-alive stream; re-registers when the
/// lease is gone.
async fn keep_alive(state: Arc<RegState>) {
    let period = Duration::from_secs(ttl_secs(state.shared.ttl) as u64) / 3;
    let link = state.shared.link.clone();
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(lease) = state.lease() else {
            if state.write().await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            continue;
        };
        let stream = async {
            let mut c = link.stream_client().await?;
            link.count();
            let (keeper, stream) = c
                .lease_keep_alive(lease)
                .await
                .map_err(|e| map_error("keeping a lease alive", &e))?;
            Ok::<_, Error>((keeper, stream))
        }
        .await;
        let Ok((mut keeper, mut stream)) = stream else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        loop {
            link.count();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(link.settings.timeout, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => backoff = MIN_BACKOFF,
                Ok(Ok(Some(_))) => {
                    // The lease expired (a long pause, a partition): register again.
                    *state.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    break;
                }
                _ => break,
            }
            tokio::time::sleep(period).await;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A node registered in etcd, kept alive by a background lease keep-alive.
pub struct EtcdRegistration {
    state: Arc<RegState>,
    keeper: Option<Arc<crate::fork::Background>>,
}

impl fmt::Debug for EtcdRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistration")
            .field("id", &self.state.id)
            .field("active", &self.keeper.is_some())
            .finish()
    }
}

impl EtcdRegistration {
    /// The lease the entry is attached to (changes if it had to be replaced).
    pub fn lease_id(&self) -> Option<i64> {
        self.state.lease()
    }

    /// Stops the keep-alive and deletes the entry and its lease now.
    pub async fn deregister(mut self) -> Result<()> {
        if let Some(k) = self.keeper.take() {
            k.stop();
        }
        let state = self.state.clone();
        on_runtime(async move { state.remove().await }).await
    }

    /// Blocking form of [`deregister`](EtcdRegistration::deregister).
    pub fn deregister_blocking(self) -> Result<()> {
        crate::blocking::block_on(self.deregister())?
    }

    /// Stops the keep-alive *without* deleting the entry, as a crashed process would: etcd
    /// removes it when the lease's TTL lapses.
    pub fn abandon(mut self) {
        if let Some(k) = self.keeper.take() {
            k.stop();
        }
    }
}

impl Drop for EtcdRegistration {
    fn drop(&mut self) {
        let Some(k) = self.keeper.take() else {
            return;
        };
        k.stop();
        let state = self.state.clone();
        let _ = crate::fork::spawn(async move {
            let _ = state.remove().await;
        });
    }
}

/// Entries by key, as last read or watched.
#[derive(Default)]
struct View {
    entries: BTreeMap<String, std::result::Result<Node, String>>,
}

impl View {
    fn set(&mut self, prefix: &str, key: &[u8], value: &[u8]) {
        let key = String::from_utf8_lossy(key).into_owned();
        let id = key.strip_prefix(prefix).unwrap_or(&key).to_string();
        let entry = if id.is_empty() || id.contains('/') {
            Err("not a node key (expected <prefix><node id>)".to_string())
        } else {
            parse_entry(&id, value)
        };
        self.entries.insert(key, entry);
    }

    fn listing(&self) -> Listing {
        let mut l = Listing::default();
        for (k, e) in &self.entries {
            match e {
                Ok(n) => l.nodes.push(n.clone()),
                Err(r) => l.skipped.push((k.clone(), r.clone())),
            }
        }
        l.nodes.sort_by(|a, b| a.id().cmp(b.id()));
        l
    }
}

async fn list(shared: &Shared) -> Result<(View, i64)> {
    let r = shared
        .link
        .call("listing the registry", |mut c| {
            let prefix = shared.prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut view = View::default();
    for kv in r.kvs() {
        view.set(&shared.prefix, kv.key(), kv.value());
    }
    Ok((view, r.header().map_or(0, |h| h.revision())))
}

fn emit(cluster: &Cluster, message: String) {
    cluster.emit(ClusterEvent::DiscoveryProblem {
        source: SOURCE.to_string(),
        message,
    });
}

#[derive(Default)]
struct WatchState {
    reported: HashMap<String, String>,
    last_failure: Option<(Instant, String)>,
}

impl WatchState {
    fn apply(&mut self, cluster: &Cluster, view: &View) {
        self.last_failure = None;
        let listing = view.listing();
        let mut still_bad = std::collections::HashSet::new();
        for (key, reason) in &listing.skipped {
            still_bad.insert(key.clone());
            if self.reported.get(key) != Some(reason) {
                // The reason (which may quote the entry) goes to the pool's event only.
                tracing::warn!(target: "clusterkit::discovery", source = SOURCE, key = %key,
                    "skipped a malformed registry entry");
                emit(cluster, format!("skipped registry entry {key}: {reason}"));
                self.reported.insert(key.clone(), reason.clone());
            }
        }
        self.reported.retain(|k, _| still_bad.contains(k));
        if let Err(e) = cluster.sync(listing.nodes) {
            emit(cluster, format!("cannot apply the etcd listing: {e}"));
        }
    }

    fn failed(&mut self, cluster: &Cluster, error: &str) {
        let now = Instant::now();
        let repeat = match &self.last_failure {
            None => true,
            Some((at, what)) => now.duration_since(*at) >= REPEAT_PROBLEM_EVERY || what != error,
        };
        if repeat {
            emit(
                cluster,
                format!(
                    "{error}; keeping the current {} nodes and retrying",
                    cluster.len()
                ),
            );
            self.last_failure = Some((now, error.to_string()));
        }
    }
}

enum StreamEnd {
    /// The stream broke: resume from the last applied revision.
    Broken(String),
    /// The revision to resume from was compacted: list again.
    Compacted(i64),
    /// The cluster is gone.
    Stop,
}

async fn watch_loop(shared: Arc<Shared>, cluster: WeakCluster) {
    let mut state = WatchState::default();
    let mut backoff = MIN_BACKOFF;
    // The view and the revision it reflects; `None`: list (again).
    let mut current: Option<(View, i64)> = None;
    loop {
        let (mut view, rev) = match current.take() {
            Some(v) => v,
            None => match list(&shared).await {
                Ok((view, rev)) => {
                    let Some(c) = cluster.upgrade() else { return };
                    state.apply(&c, &view);
                    backoff = MIN_BACKOFF;
                    (view, rev)
                }
                Err(e) => {
                    let Some(c) = cluster.upgrade() else { return };
                    state.failed(&c, &format!("cannot list the etcd registry: {e}"));
                    drop(c);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let mut rev = rev;
        match follow(&shared, &cluster, &mut state, &mut view, &mut rev).await {
            StreamEnd::Stop => return,
            StreamEnd::Compacted(at) => {
                if let Some(c) = cluster.upgrade() {
                    emit(
                        &c,
                        format!(
                            "the watch could not resume from revision {} (compacted up to {at}); listing again",
                            rev + 1
                        ),
                    );
                }
                current = None;
            }
            StreamEnd::Broken(why) => {
                if let Some(c) = cluster.upgrade() {
                    state.failed(&c, &format!("the etcd watch broke: {why}"));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                current = Some((view, rev));
            }
        }
    }
}

/// Follows the watch from `rev + 1`, applying every change; returns why it ended.
async fn follow(
    shared: &Shared,
    cluster: &WeakCluster,
    state: &mut WatchState,
    view: &mut View,
    rev: &mut i64,
) -> StreamEnd {
    let link = &shared.link;
    let mut c = match link.stream_client().await {
        Ok(c) => c,
        Err(e) => return StreamEnd::Broken(e.to_string()),
    };
    link.count();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*rev + 1)
        .with_progress_notify();
    let mut stream = match c.watch(shared.prefix.clone(), Some(opts)).await {
        Ok(s) => s,
        Err(e) => return StreamEnd::Broken(map_error("watching", &e).to_string()),
    };
    loop {
        // Progress notifications come every few minutes at most; a cluster dropped in the
        // meantime is noticed at the next check.
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        if cluster.upgrade().is_none() {
            return StreamEnd::Stop;
        }
        let r = match msg {
            Err(_) => continue,
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return StreamEnd::Broken("the watch stream ended".into()),
            Ok(Err(e)) => return StreamEnd::Broken(map_error("watching", &e).to_string()),
        };
        if r.compact_revision() > 0 {
            return StreamEnd::Compacted(r.compact_revision());
        }
        if r.canceled() {
            return StreamEnd::Broken(format!(
                "the watch was cancelled: {}",
                crate::connection::redact(r.cancel_reason())
            ));
        }
        if r.events().is_empty() {
            // Created, or a progress notification.
            if let Some(h) = r.header() {
                if !r.created() {
                    *rev = (*rev).max(h.revision());
                }
            }
            continue;
        }
        for ev in r.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => view.set(&shared.prefix, kv.key(), kv.value()),
                EventType::Delete => {
                    view.entries
                        .remove(String::from_utf8_lossy(kv.key()).as_ref());
                }
            }
            *rev = (*rev).max(kv.mod_revision());
        }
        let Some(c) = cluster.upgrade() else {
            return StreamEnd::Stop;
        };
        state.apply(&c, view);
    }
}
