//! Locks on etcd (issue #17): a lease-bound key per contender, queued by create revision.
//!
//! - **Key**: `<prefix><escaped name>/<lease id, 16 hex>`, attached to a lease of the lock's
//!   TTL (whole seconds, rounded up, at least the cluster's minimum lease TTL). The value is
//!   empty: the lock token never leaves the process.
//! - **Acquire**: grant a lease, create the key if absent (one transaction), then list the
//!   name's keys by create revision. The lowest holds the lock. A waiter watches the deletion
//!   of the key just before its own (its predecessor) from the listing's revision on — no
//!   polling, and a release wakes exactly one waiter (no herd). While it waits, it keeps its
//!   lease alive. A waiter whose own key vanished (its lease expired) starts again.
//! - **Fencing token**: the key's create revision: etcd's revision is global and strictly
//!   increasing, so successive holders of a name get increasing tokens, also across leader
//!   changes and restarts (it is in the raft log), with no clock involved.
//! - **Loss**: when the lease expires (the holder paused, or keep-alives failed for a TTL)
//!   etcd deletes the key and the next waiter gets the lock. The guard reports it through
//!   [`LockGuard::lost`](super::LockGuard::lost) / [`LockWatch`](super::LockWatch): its
//!   validity runs out at the lease's TTL, and auto-renewal (a keep-alive every third of the
//!   TTL) marks it lost as soon as a keep-alive finds the lease gone.
//! - **Release**: delete the key if it is still ours (a transaction comparing its create
//!   revision with the fencing token), then revoke the lease.
//! - `extend` refreshes the lease (etcd leases keep the TTL they were granted with; a new
//!   `ttl` does not change it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType,
    WatchOptions,
};

use crate::error::{Error, Result};
use crate::etcd::{map_error, on_runtime, EtcdLink, EtcdSettings};

use super::Attempt;

/// A held (or waiting) contender's key.
#[derive(Clone)]
struct Held {
    key: Vec<u8>,
    lease: i64,
}

pub(crate) struct EtcdLocks {
    link: Arc<EtcdLink>,
    prefix: String,
    /// Keys of the guards of this service, by lock token.
    held: crate::fork::Mutex<HashMap<String, Held>>,
    pub(crate) waiters: super::Waiters,
}

/// Escapes a lock name for a key segment: `%` and `/` are percent-encoded so no name reaches
/// another name's keys (`a` and `a/b` are `a/` and `a%2Fb/`).
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

fn lease_secs(ttl: Duration) -> i64 {
    let ms = ttl.as_millis().max(1);
    ms.div_ceil(1000).min(i64::MAX as u128) as i64
}

/// The local validity of a lease granted `ttl_secs` after a request sent at `sent`: the TTL
/// counts on the leader from when it handled the request, later than `sent`.
fn validity_of(sent: Instant, ttl_secs: i64) -> Duration {
    let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
    (sent + ttl).saturating_duration_since(Instant::now())
}

impl EtcdLocks {
    pub(crate) fn new(settings: EtcdSettings, prefix: &str) -> Result<EtcdLocks> {
        let prefix = crate::etcd::normalise_prefix("prefix", prefix)?;
        Ok(EtcdLocks {
            link: Arc::new(EtcdLink::new(settings)),
            prefix,
            held: crate::fork::Mutex::default(),
            waiters: super::Waiters::default(),
        })
    }

    pub(crate) fn requests(&self) -> u64 {
        self.link
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name_prefix(&self, name: &str) -> String {
        format!("{}{}/", self.prefix, escape(name))
    }

    /// One attempt without waiting: acquired, or busy (our key is withdrawn).
    pub(crate) async fn try_once(&self, name: &str, token: &str, ttl: Duration) -> Result<Attempt> {
        let link = self.link.clone();
        let name_prefix = self.name_prefix(name);
        let (attempt, held) = on_runtime(async move {
            let c = Contender::enter(&link, &name_prefix, ttl).await?;
            match c.position(&link).await? {
                Position::First => Ok((
                    Attempt::Acquired {
                        fence: c.rev as u64,
                        validity: validity_of(c.sent, c.ttl_secs),
                    },
                    Some(c.held()),
                )),
                Position::After(_, _) | Position::Gone => {
                    c.withdraw(&link).await;
                    Ok((Attempt::Busy(None), None))
                }
            }
        })
        .await?;
        if let Some(h) = held {
            self.held.lock().insert(token.to_string(), h);
        }
        Ok(attempt)
    }

    /// Waits for the lock until `deadline`: returns the fencing token, the validity and when
    /// it was measured from.
    pub(crate) async fn acquire(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<(u64, Duration, Instant)> {
        let link = self.link.clone();
        let name_prefix = self.name_prefix(name);
        let display = name.to_string();
        let (fence, validity, at, held) = on_runtime(async move {
            let started = Instant::now();
            loop {
                let c = match tokio::time::timeout_at(
                    deadline.map_or_else(far_future, tokio::time::Instant::from_std),
                    Contender::enter(&link, &name_prefix, ttl),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => return Err(timeout(&display, started, None)),
                };
                // Withdraws the key if this task ends (deadline, abort) before it is handed
                // to a guard.
                let mut pending = Pending {
                    link: link.clone(),
                    held: Some(c.held()),
                };
                let keeper = KeepAlive::start(&link, c.lease, c.ttl_secs);
                match c.wait(&link, deadline).await {
                    Ok(true) => {
                        let sent = keeper.stop().unwrap_or(c.sent);
                        let held = pending.held.take();
                        return Ok((
                            c.rev as u64,
                            validity_of(sent, c.ttl_secs),
                            Instant::now(),
                            held,
                        ));
                    }
                    // Our key vanished (lease expired while waiting): enter again.
                    Ok(false) => {
                        keeper.stop();
                        continue;
                    }
                    Err(WaitError::Deadline) => {
                        keeper.stop();
                        pending.withdraw().await;
                        return Err(timeout(&display, started, Some(c.rev)));
                    }
                    Err(WaitError::Failed(e)) => {
                        keeper.stop();
                        pending.withdraw().await;
                        return Err(e);
                    }
                }
            }
        })
        .await?;
        if let Some(h) = held {
            self.held.lock().insert(token.to_string(), h);
        }
        Ok((fence, validity, at))
    }

    /// Refreshes the lease: the new validity, or `None` when the lease (and so the key) is
    /// gone.
    pub(crate) async fn extend(&self, token: &str) -> Result<Option<Duration>> {
        let Some(h) = self.held.lock().get(token).cloned() else {
            return Ok(None);
        };
        let link = self.link.clone();
        on_runtime(async move {
            let sent = Instant::now();
            match keep_alive_once(&link, h.lease).await? {
                ttl if ttl > 0 => Ok(Some(validity_of(sent, ttl))),
                _ => Ok(None),
            }
        })
        .await
    }

    /// Deletes the key if it is still ours (`fence` is its create revision), then revokes
    /// the lease. `false`: it was not ours any more.
    pub(crate) async fn release(&self, token: &str, fence: u64) -> Result<bool> {
        let Some(h) = self.held.lock().remove(token) else {
            return Ok(false);
        };
        let link = self.link.clone();
        on_runtime(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    h.key.clone(),
                    CompareOp::Equal,
                    fence as i64,
                )])
                .and_then([TxnOp::delete(h.key.clone(), None)]);
            let r = link
                .call("releasing a lock", |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            let lease = h.lease;
            let _ = link
                .call("revoking a lease", |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
            Ok(r.succeeded())
        })
        .await
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

fn timeout(name: &str, started: Instant, _rev: Option<i64>) -> Error {
    Error::Timeout(format!(
        "lock {name:?}: deadline passed after waiting {:?}; it is held by someone else",
        started.elapsed()
    ))
}

/// A key withdrawn when dropped (in the background) unless taken.
struct Pending {
    link: Arc<EtcdLink>,
    held: Option<Held>,
}

impl Pending {
    async fn withdraw(&mut self) {
        if let Some(h) = self.held.take() {
            withdraw(&self.link, &h).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            let link = self.link.clone();
            let _ = crate::fork::spawn(async move { withdraw(&link, &h).await });
        }
    }
}

async fn withdraw(link: &EtcdLink, h: &Held) {
    let _ = link
        .call("withdrawing a lock key", |mut c| {
            let key = h.key.clone();
            async move { c.delete(key, None).await }
        })
        .await;
    let lease = h.lease;
    let _ = link
        .call("revoking a lease", |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await;
}

async fn keep_alive_once(link: &EtcdLink, lease: i64) -> Result<i64> {
    let mut c = link.stream_client().await?;
    link.count();
    let (mut keeper, mut stream) = c
        .lease_keep_alive(lease)
        .await
        .map_err(|e| map_error("keeping a lease alive", &e))?;
    keeper
        .keep_alive()
        .await
        .map_err(|e| map_error("keeping a lease alive", &e))?;
    let timeout = link.settings.timeout;
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r.ttl()),
        Ok(Ok(None)) => Err(Error::Unavailable(
            "etcd: the lease keep-alive stream ended".into(),
        )),
        Ok(Err(e)) => Err(map_error("keeping a lease alive", &e)),
        Err(_) => Err(Error::Timeout(format!(
            "etcd: no keep-alive answer within {timeout:?}"
        ))),
    }
}

/// Keeps a waiting contender's lease alive (every third of its TTL) until stopped.
struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl KeepAlive {
    fn start(link: &Arc<EtcdLink>, lease: i64, ttl_secs: i64) -> KeepAlive {
        let last = Arc::new(std::sync::Mutex::new(None));
        let (l, link) = (last.clone(), link.clone());
        let period = Duration::from_secs(ttl_secs.max(1) as u64) / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let sent = Instant::now();
                if let Ok(ttl) = keep_alive_once(&link, lease).await {
                    if ttl <= 0 {
                        return;
                    }
                    *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
                }
            }
        });
        KeepAlive { task, last }
    }

    /// Stops; the time the last successful keep-alive was sent, if any.
    fn stop(self) -> Option<Instant> {
        self.task.abort();
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Position {
    First,
    /// The predecessor's key, and the listing's revision.
    After(Vec<u8>, i64),
    /// Our key is not there (its lease expired).
    Gone,
}

enum WaitError {
    Deadline,
    Failed(Error),
}

/// A contender's key in the queue of one lock name.
struct Contender {
    name_prefix: String,
    key: Vec<u8>,
    lease: i64,
    ttl_secs: i64,
    /// Create revision of our key: the fencing token if we get the lock.
    rev: i64,
    /// When the lease grant was sent.
    sent: Instant,
}

impl Contender {
    async fn enter(link: &EtcdLink, name_prefix: &str, ttl: Duration) -> Result<Contender> {
        let sent = Instant::now();
        let secs = lease_secs(ttl);
        let lease = link
            .call("granting a lease", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        let (id, ttl_secs) = (lease.id(), lease.ttl());
        let key = format!("{name_prefix}{id:016x}").into_bytes();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                Vec::<u8>::new(),
                Some(etcd_client::PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = link
            .call("creating a lock key", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                let _ = link
                    .call("revoking a lease", |mut c| async move {
                        c.lease_revoke(id).await
                    })
                    .await;
                return Err(e);
            }
        };
        let rev = if r.succeeded() {
            r.header().map_or(0, |h| h.revision())
        } else {
            // Our fresh lease's key already exists: only a retried request does that.
            r.op_responses()
                .into_iter()
                .find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(g) => {
                        g.kvs().first().map(|kv| kv.create_revision())
                    }
                    _ => None,
                })
                .unwrap_or(0)
        };
        if rev <= 0 {
            return Err(Error::Backend(
                "etcd: the lock key's create revision is missing".into(),
            ));
        }
        Ok(Contender {
            name_prefix: name_prefix.to_string(),
            key,
            lease: id,
            ttl_secs,
            rev,
            sent,
        })
    }

    fn held(&self) -> Held {
        Held {
            key: self.key.clone(),
            lease: self.lease,
        }
    }

    /// Where our key is in the name's queue.
    async fn position(&self, link: &EtcdLink) -> Result<Position> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_max_create_revision(self.rev)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(2);
        let r = link
            .call("listing a lock's queue", |mut c| {
                let (key, opts) = (self.name_prefix.clone(), opts.clone());
                async move { c.get(key, Some(opts)).await }
            })
            .await?;
        let revision = r.header().map_or(0, |h| h.revision());
        let kvs = r.kvs();
        match kvs.first() {
            Some(kv) if kv.key() == self.key.as_slice() => match kvs.get(1) {
                Some(pred) => Ok(Position::After(pred.key().to_vec(), revision)),
                None => Ok(Position::First),
            },
            _ => Ok(Position::Gone),
        }
    }

    async fn withdraw(&self, link: &EtcdLink) {
        withdraw(link, &self.held()).await;
    }

    /// Waits until we are first (`true`) or our key is gone (`false`).
    async fn wait(
        &self,
        link: &EtcdLink,
        deadline: Option<Instant>,
    ) -> std::result::Result<bool, WaitError> {
        let until = deadline.map_or_else(far_future, tokio::time::Instant::from_std);
        let mut failures = 0u32;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WaitError::Deadline);
            }
            let pos = match tokio::time::timeout_at(until, self.position(link)).await {
                Err(_) => return Err(WaitError::Deadline),
                Ok(Ok(p)) => {
                    failures = 0;
                    p
                }
                Ok(Err(e)) => {
                    // A member down or an election: retry within the deadline.
                    failures += 1;
                    if failures > 50 {
                        return Err(WaitError::Failed(e));
                    }
                    let nap = Duration::from_millis(50 * u64::from(failures.min(10)));
                    if tokio::time::timeout_at(until, tokio::time::sleep(nap))
                        .await
                        .is_err()
                    {
                        return Err(WaitError::Deadline);
                    }
                    continue;
                }
            };
            let (pred, revision) = match pos {
                Position::First => return Ok(true),
                Position::Gone => return Ok(false),
                Position::After(k, r) => (k, r),
            };
            match tokio::time::timeout_at(until, wait_deleted(link, pred, revision, self.ttl_secs))
                .await
            {
                Err(_) => return Err(WaitError::Deadline),
                Ok(_) => continue,
            }
        }
    }
}

/// Waits until `key` is deleted after `revision` (a watch, no polling). Returns early when
/// the watch fails (the caller lists again) and, as a backstop against a watch stuck on a
/// member cut off from the others, after a few lease TTLs.
async fn wait_deleted(link: &EtcdLink, key: Vec<u8>, revision: i64, ttl_secs: i64) {
    let backstop = Duration::from_secs((ttl_secs.max(1) as u64) * 3).max(Duration::from_secs(5));
    let watched = async {
        let Ok(mut c) = link.stream_client().await else {
            return;
        };
        link.count();
        let opts = WatchOptions::new()
            .with_start_revision(revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let Ok(mut stream) = c.watch(key, Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        };
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    if r.canceled() || r.compact_revision() > 0 {
                        return;
                    }
                    if r.events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(backstop, watched).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_reach_each_others_keys() {
        assert_eq!(escape("a"), "a");
        assert_eq!(escape("a/b"), "a%2Fb");
        assert_eq!(escape("a%2Fb"), "a%252Fb");
        assert_ne!(escape("a/b"), escape("a%2Fb"));
    }

    #[test]
    fn lease_ttl_rounds_up_to_seconds() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1001)), 2);
    }
}
