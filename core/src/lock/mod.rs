//! Distributed locks with fencing tokens: embedded, one Redis, or Redlock over N independent
//! Redis masters.
//!
//! ```text
//! let locks = DistributedLock::redlock(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"], LockOptions::default())?;
//! let guard = locks.acquire_timeout("invoice:42", Duration::from_secs(10), Duration::from_secs(2)).await?;
//! storage.write_if_newer(guard.fencing_token(), data)?;   // the resource rejects older tokens
//! guard.release().await?;
//! ```
//!
//! # What a lock guarantees, and what it does not
//!
//! - **Mutual exclusion while valid.** Only one guard holds a name at a time *within its
//!   validity* ([`LockGuard::validity`]): the TTL minus the time acquisition took minus a clock
//!   drift margin (1% of the TTL + 2 ms). A holder that pauses (GC, SIGSTOP, a slow disk) past
//!   its validity has lost the lock even though it may not know yet; another client can
//!   acquire it. [`LockGuard::is_held`] and [`LockGuard::lost`] tell the holder, and
//!   auto-renewal ([`LockOptions::auto_renew`]) extends the lock every third of its TTL and
//!   reports when an extension fails. Nothing can stop a paused process from acting on stale
//!   belief after it resumes: that is what fencing tokens are for.
//! - **Fencing tokens.** Every acquisition gets a number, strictly increasing per lock name
//!   across holders, also under Redlock and also when a holder never released. Pass it to
//!   the protected resource and have it reject writes with a token lower than the highest it
//!   has seen: a paused former holder's late write is then refused. Under Redlock a token is
//!   `max(stored counter + 1, the masters' clock in microseconds)`; on one Redis it is the
//!   stored counter + 1 (`INCR`), or the server's clock in microseconds when no counter is
//!   stored (first acquisition, expired, or lost in a restart) — about 1.8e15 today, below
//!   2^53 until the year 2255, so exact in JavaScript and PHP floats; the embedded backend
//!   counts from 1. Do not expect consecutive numbers, only increasing ones.
//! - **Fence counters expire.** A counter lives [`FENCE_TTL`] (or the lock's TTL if longer)
//!   after the last acquisition of its name under Redlock (every phase 2 refreshes it), and
//!   that long after its creation on one Redis (its `INCR` keeps the TTL; when it expires the
//!   next acquisition starts a new one from the clock), so locking per order id does not leave
//!   a key per order forever. Tokens still never go backwards, because a counter that is gone is
//!   replaced by the clock floor, under two stated assumptions: **(1)** a name is not acquired
//!   more than 10^6 times per second on average (the counter never runs ahead of the
//!   microsecond clock by as much as the fence TTL; on one Redis the counter starts at the
//!   clock reading when it is created and then counts acquisitions, so the average is over
//!   its lifetime — one Redis server runs far fewer than 10^6 scripts per second, so the
//!   counter stays behind the clock), and **(2)** for Redlock, the masters'
//!   clocks agree within the fence TTL (an hour; NTP keeps them within milliseconds). Why it
//!   holds: Redis expires the counter by the master's own wall clock, so when it has expired
//!   that clock reads at least `store time + FENCE_TTL`, which by (1) is more than the stored
//!   value (and by (2) more than any other master's floor of that time). A clock that steps
//!   back while the counter exists is harmless (the counter wins).
//! - **Redlock's fencing argument.** A token is handed out only after it is stored on a
//!   majority of masters: phase 1 acquires the lock on a majority and reads their counters
//!   and clocks; the token is `max(max counter + 1, max clock)`; phase 2 stores it (never
//!   lowering a counter) on *every* master and returns once a majority of masters where the
//!   lock is still ours confirmed (the stores to the others complete in the background). The
//!   next holder's acquiring majority intersects that confirming majority in at least one
//!   master, and on that master the next holder acquires only after our lock there is gone,
//!   i.e. after our store: it reads a counter `>=` ours (or, if it expired, a clock past ours,
//!   see above) and hands out a larger one. (A one-round-trip "maximum of the quorum's INCRs"
//!   is not enough: the master holding the maximum may be outside the next holder's quorum.)
//! - **Skipping the fencing token** ([`LockOptions::fencing`] `false`, `[locks] fencing =
//!   false`, or per acquisition [`DistributedLock::with_fencing`]). Redlock then acquires in
//!   phase 1 only (one fan-out round trip instead of two) and one Redis does not touch the
//!   fence counter. The guard has no token ([`LockGuard::fence`] is `None`,
//!   [`LockGuard::try_fencing_token`] fails with `not_found`), so nothing protects the
//!   resource from a holder that paused past its validity: mutual exclusion holds within the
//!   validity only, as with plain Redlock. Fenced and unfenced acquisitions of one name
//!   exclude each other, share the waiter queue and hand-over, and fenced tokens keep
//!   increasing across unfenced holders (the counter is untouched; the clock floor still
//!   applies). Default: fenced.
//! - **Release notifications only for waiters** (issue #18). A release publishes on the
//!   channel only when it hands the lock to a queued waiter. No waiter misses it: the first
//!   waiting attempt of a process waits (bounded by the connect timeout) until the
//!   subscriptions to every master are live (a quorum was not enough: the waiter can be
//!   queued only where its subscription was not live yet; a fresh waiter then missed 1
//!   release in 15). When that wait runs out (a loaded machine can take longer than the
//!   connect timeout to subscribe), a subscription that becomes live wakes every local
//!   waiter to retry once, and while any subscription is not live waiters retry at least
//!   every 250 ms (`UNHEARD_RETRY`) instead of sleeping out their backoff; every attempt
//!   registers its wake-up,
//!   then tries; a refused attempt joins the queue in the same
//!   script that found the lock held, so a release either ran before (the attempt found the
//!   lock free or handed to it) or finds it queued and publishes. Several waiters of one process
//!   are one queue entry: the releasing process wakes its own next waiter in-process. If a
//!   subscription is down (reconnecting), the jittered backoff is the safety net, as before.
//! - **Fencing across masters restarted with empty memory** (no persistence), also restarted
//!   at once. Take two acquisitions X then Y of one name (Y's phase 1 starts after X's
//!   token was handed out, as for successive holders or one process acquiring in a loop).
//!   Y's token is larger than X's if **either** (i) *the counter survives*: Y's quorum
//!   contains a master that still has X's counter (or a later one). X stored it on every
//!   master that was up; so this holds when the masters that missed X's store plus those
//!   restarted empty since number at most `N - quorum` — with three masters: **at most one
//!   master without the counter at a time**, where a master restarted empty stays "without"
//!   until the next acquisition of that name stores on it (the next acquisition does, since
//!   phase 2 writes to every master). **Or** (ii) *the clock floor covers it*: Y reads the
//!   clocks of its quorum after X read its own, and counters do not run ahead of the clocks
//!   (assumption (1)), so Y's floor exceeds X's token when the masters' clocks differ by less
//!   than the real time between X's and Y's phase 1 (at least a round trip plus X's hold
//!   time; an hour for a name idle for its fence TTL). A single Redis restarted empty is
//!   covered by (ii) with one clock: monotonic unless that clock steps back. **Unprotected:**
//!   two masters losing a name's counter with no acquisition of the name in between *and*
//!   master clocks further apart than the time between the two acquisitions (for example a
//!   master whose clock was set back). `core/tests/lock_faults.rs` checks (c) kill + restart
//!   after a TTL and (d) kill + immediate restart of one master at a time: the lone process's
//!   tokens strictly increase and no token is handed out twice.
//! - **Liveness with a stalled minority.** A Redlock attempt asks every master at once and
//!   returns as soon as a majority granted. When some master answered "held by someone else"
//!   and no majority is reached yet, the silent masters get a short grace — twice the time
//!   the answers so far took, at least 2 ms, at most the per-master timeout — and then the
//!   attempt gives its partial grants back (compare-and-delete, **no** release notification
//!   and no hand-over) instead of holding them for the stalled master's whole timeout. Before,
//!   each contender kept one live master for ~100 ms while waiting for the stalled one, and its
//!   undo published a release that woke another contender into the same split, so with one of
//!   three masters stalled nobody got two masters for seconds. A contender whose attempt split
//!   retries after a uniformly random share of its backoff (the Redlock paper's random delay),
//!   so the contenders desynchronise: the first to retry finds the live masters free. With a
//!   majority up, a new holder is found within about one per-master timeout (the fault test
//!   bounds the gap between holders at 2 × timeout + hold time, and sees ~35 ms).
//! - **Fair waiting.** A waiting acquisition that is refused joins the name's waiter queue
//!   (`<ns>:w:{<name>}`, a sorted set of clients by the time they started waiting, `NX` so a
//!   retry keeps its place). A release with waiters does not delete the lock but hands it to
//!   the longest-waiting client for [`HANDOFF`] (50 ms; the lock's value is `~h:<client>`): only that client
//!   can take it (its waiter is woken by the release notification); every other client — the
//!   releaser included — finds it held. So a releasing process cannot retake the lock 17 times
//!   in a row, and under contention holders take turns in the order they began waiting.
//!   Unfairness stays bounded rather than zero: a client that does not come within the
//!   hand-over window (it gave up, it is slow) loses its turn and the lock is free for anyone;
//!   Redlock masters whose queues disagree (one was stalled or restarted) reserve for
//!   different clients, nobody gets a majority, and the reservations expire after 50 ms. A
//!   waiter that gives up (deadline) leaves the queue. A client is a lock service in one
//!   process (`DistributedLock`, its clones included; a forked child is another client).
//!   Release notifications of a hand-over name the chosen client, so only its process wakes a
//!   waiter (before, every release woke one waiter in every process, and all but one were
//!   refused). Measured (8 processes, 2 ms hold, BENCHMARKS.md): per-process acquisitions
//!   max/min went from 5-36 (Redlock-3) and 400-700 (one Redis) to 1.00-1.02, at the same
//!   or higher throughput.
//! - **Why an acquisition failed.** `try_acquire` returns `None` when someone holds the lock
//!   or the masters' votes split. Errors, by situation (tested in `core/tests/lock_reasons.rs`):
//!
//!   | situation | kind | message |
//!   |---|---|---|
//!   | the wait's deadline passed while someone held it | `timeout` | `deadline passed after waiting …; it is held by someone else, for about N ms more unless extended` |
//!   | the deadline passed while attempts kept splitting the masters | `timeout` | `deadline passed …; no attempt reached a quorum (contenders split the masters: …)` |
//!   | too many masters did not answer within the per-master timeout | `timeout` | `masters timed out: K of N did not answer and a quorum needs Q (…)` |
//!   | too many masters refused or failed | `unavailable` | `no quorum reachable: K of N masters failed and a quorum needs Q (…)` |
//!
//!   A waiting acquisition retries the last two until its deadline and then reports them
//!   prefixed with `deadline passed after waiting …` (kind `unavailable` once any master
//!   refused during the wait: a dead master can look silent while the client reconnects).
//! - **Keys and channel** (see `docs/keyspace.md`): the lock `<ns>:l:{<name>}` (TTL = the
//!   lock's; a hand-over `~h:<client>` for 50 ms), its counter `<ns>:f:{<name>}` (TTL above),
//!   its waiter queue `<ns>:w:{<name>}` (TTL 1 s, refreshed by waiting attempts), in separate
//!   sub-spaces so no lock name can reach a counter or queue; releases are published on
//!   `<ns>:l:released` as `<xxh3 of the name>:<fencing token>`, plus `:<client>` for a
//!   hand-over — never the lock token (a credential) or the name.
//! - **When it can fail.** Clock jumps on a Redis master (TTLs expire early); failover to a
//!   replica that had not yet received the lock (Redis replication is asynchronous: use
//!   independent masters for Redlock, not a replicated set); a master restarted without
//!   persistence before the TTL elapsed forgets its locks, so two holders may overlap (run
//!   masters with `appendonly yes`, or keep a crashed master down for the longest lock TTL in
//!   use: **the restart rule for mutual exclusion**); a majority of masters lost. Fencing
//!   tokens still increase across such restarts under the assumption stated above, so the
//!   protected resource refuses the older holder's writes.
//! - **Quorum.** Redlock over N masters needs `N / 2 + 1` of them. N = 1 is a single Redis
//!   (its fence is assigned in the acquiring script itself); N = 2 needs both, so it tolerates
//!   no failure; an even N tolerates no more failures than N - 1. Use 3 or 5.

pub mod config;
#[cfg(feature = "etcd")]
pub(crate) mod etcd;
mod lock_watch;
mod memory;
pub use lock_watch::LockWatch;
pub(crate) mod redis;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cache::RedisOptions;
use crate::error::{Error, Result};

/// Longest lock name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest lock TTL (24 h).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// How long a fence counter outlives the last acquisition of its name (1 h; the lock's TTL
/// when that is longer). See the module docs for why tokens still never go backwards.
pub const FENCE_TTL: Duration = Duration::from_secs(3600);

/// How long a released lock stays reserved for the longest-waiting client (50 ms): long
/// enough for the release notification and one round trip on a loaded machine, short enough
/// that a waiter that left costs little. See "Fair waiting" in the module docs.
pub const HANDOFF: Duration = Duration::from_millis(50);

/// The hash of a lock name that release notifications carry instead of the name.
pub(crate) fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Options of a lock service.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// Connection settings per Redis master. The response timeout is each master's own short
    /// timeout during acquisition (default 100 ms here).
    pub redis: RedisOptions,
    /// The namespace of the lock keys (default `clusterkit`; a deployment uses its cache's
    /// namespace): locks are `<key_prefix>:l:{<name>}`, fence counters
    /// `<key_prefix>:f:{<name>}`, the release channel `<key_prefix>:l:released`. No `:`, `{`,
    /// `}`, whitespace or glob characters (see `docs/keyspace.md`).
    pub key_prefix: String,
    /// Waiters retry at least this often even without a release notification (jittered,
    /// doubling from `retry_min` up to `retry_max`; defaults 10 ms and 250 ms).
    pub retry_min: Duration,
    /// See `retry_min`.
    pub retry_max: Duration,
    /// Extend every lock at a third of its TTL until it is released (default off).
    pub auto_renew: bool,
    /// Hand out a fencing token with every acquisition (default on). Off, an acquisition
    /// skips the token: on one Redis the acquiring script does not touch the fence counter,
    /// and Redlock skips its second phase (storing the token on a majority), so an
    /// acquisition is one fan-out round trip instead of two. The guard then has no token
    /// ([`LockGuard::fence`] is `None`, [`LockGuard::try_fencing_token`] fails): mutual
    /// exclusion holds only within the lock's validity, and a paused former holder's late
    /// write cannot be refused by the resource. See "Skipping the fencing token" in the
    /// module docs.
    pub fencing: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            redis: RedisOptions::default()
                .with_timeouts(Duration::from_millis(250), Duration::from_millis(100)),
            key_prefix: "clusterkit".into(),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(250),
            auto_renew: false,
            fencing: true,
        }
    }
}

impl LockOptions {
    /// Enables or disables auto-renewal.
    pub fn with_auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }
    /// Enables or disables fencing tokens (see [`LockOptions::fencing`]).
    pub fn with_fencing(mut self, on: bool) -> Self {
        self.fencing = on;
        self
    }
    /// Sets the connection settings.
    pub fn with_redis(mut self, redis: RedisOptions) -> Self {
        self.redis = redis;
        self
    }
    /// Sets the namespace of the lock keys (see [`LockOptions::key_prefix`]).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
    /// Sets the retry backoff bounds.
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max;
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.redis.validate()?;
        crate::cache::check_namespace_field("key_prefix", &self.key_prefix)?;
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(Error::invalid("retry_min", "must be > 0 and <= retry_max"));
        }
        Ok(())
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("name", "a lock name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            "name",
            format!(
                "is {} bytes long, the maximum is {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a lock TTL: 1 ms ..= [`MAX_TTL`]. Fails with [`Error::InvalidArgument`] naming
/// `ttl`.
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(Error::invalid(
            "ttl",
            format!("must be between 1ms and 24h, got {ttl:?}"),
        ));
    }
    Ok(())
}

/// The error when a lock acquired without fencing is asked for its token.
pub fn no_fencing_token(name: &str) -> Error {
    Error::NotFound(format!(
        "lock {name:?} was acquired without a fencing token (fencing = false): \
         acquire it with fencing on to get one"
    ))
}

/// A uniformly random number in `[0, 1]` (for retry jitter).
fn unit_random() -> f64 {
    crate::rng::next_u64() as f64 / u64::MAX as f64
}

/// A random 128-bit token from the OS CSPRNG, hex-encoded.
pub(crate) fn new_token() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no OS randomness for a lock token: {e}")))?;
    Ok(crate::rng::hex(&b))
}

/// The result of one acquisition attempt.
pub(crate) enum Attempt {
    /// Acquired: fencing token and validity.
    Acquired { fence: u64, validity: Duration },
    /// Held by someone else; it expires in about this long (if known).
    Busy(Option<Duration>),
    /// Redlock: no quorum for this attempt and none known for anyone else — contenders split
    /// the masters (granted to us on `granted` masters, held by others on `busy`, no answer
    /// in time or an error from `silent`). The partial grants were given up.
    Split {
        granted: usize,
        busy: usize,
        silent: usize,
    },
}

pub(crate) enum Backend {
    Memory(memory::MemoryLocks),
    Redis(Box<redis::RedisLocks>),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdLocks>),
}

impl Backend {
    async fn try_once(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
        waiting_since: Option<u64>,
        retried: bool,
        fencing: bool,
    ) -> Result<Attempt> {
        match self {
            Backend::Memory(m) => m.try_once(name, token, ttl),
            Backend::Redis(r) => {
                r.try_once(name, token, ttl, waiting_since, retried, fencing)
                    .await
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.try_once(name, token, ttl).await,
        }
    }
    async fn release(&self, name: &str, token: &str, fence: u64) -> Result<bool> {
        match self {
            Backend::Memory(m) => m.release(name, token),
            Backend::Redis(r) => r.release(name, token, fence).await,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.release(token, fence).await,
        }
    }
    /// Extends; returns the new validity, or `None` if the lock is not held with `token`.
    async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<Option<Duration>> {
        match self {
            Backend::Memory(m) => m.extend(name, token, ttl),
            Backend::Redis(r) => r.extend(name, token, ttl).await,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.extend(token).await,
        }
    }
    /// The caller stops waiting for `name`: leave its waiter queue.
    fn leave_queue(&self, name: &str) {
        if let Backend::Redis(r) = self {
            r.leave_queue(name);
        }
    }
    /// True when a release may go unheard: some release subscription of this process is
    /// not live (still starting, or reconnecting to a master). A waiter then retries at
    /// least every [`UNHEARD_RETRY`] instead of sleeping out its backoff.
    fn releases_may_go_unheard(&self) -> bool {
        match self {
            Backend::Redis(r) => !r.subscriptions_live(),
            _ => false,
        }
    }

    /// A future that completes when `name` may have been released (a notification).
    fn released(&self, name: &str) -> Arc<tokio::sync::Notify> {
        match self {
            Backend::Memory(m) => m.waiters.get(name),
            Backend::Redis(r) => r.waiters.get(name),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.waiters.get(name),
        }
    }
}

/// The longest a waiter sleeps between attempts while a release subscription of its process
/// is not live (a loaded machine can take longer than the connect timeout to subscribe, and
/// a reconnecting subscriber misses what is published meanwhile): bounded retries instead of
/// a wake-up that may never come.
const UNHEARD_RETRY: Duration = Duration::from_millis(250);

/// Per-name wake-ups for waiters, shared by the backends. Names are known by their hash
/// ([`name_hash`]): that is all a release notification carries.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<std::collections::HashMap<u64, Waiter>>,
}

struct Waiter {
    notify: std::sync::Weak<tokio::sync::Notify>,
    /// Fencing token of the last release that woke someone: Redlock publishes a release once
    /// per master, and only the first copy should wake a waiter.
    last_release: Option<u64>,
}

impl Waiters {
    pub(crate) fn get(&self, name: &str) -> Arc<tokio::sync::Notify> {
        let hash = name_hash(name);
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get(&hash).and_then(|w| w.notify.upgrade()) {
            return n;
        }
        m.retain(|_, w| w.notify.strong_count() > 0);
        let n = Arc::new(tokio::sync::Notify::new());
        m.insert(
            hash,
            Waiter {
                notify: Arc::downgrade(&n),
                last_release: None,
            },
        );
        n
    }

    /// Wakes every waiter of this process once, whatever lock it waits for: called when a
    /// release subscription becomes live (again), because a release published before that
    /// moment was not heard (a first waiting attempt waits for the subscriptions only up to
    /// the connect timeout, and a reconnecting subscriber misses what is published meanwhile).
    /// Each waiter then retries once instead of sleeping out its backoff.
    pub(crate) fn wake_all(&self) {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for w in m.values() {
            if let Some(n) = w.notify.upgrade() {
                n.notify_one();
            }
        }
    }

    /// A release of the lock whose name hashes to `hash` (by the holder with fencing token
    /// `fence`) happened: wake one waiter of this process, the longest waiting (tokio's
    /// `Notify` is FIFO), once per release. One waiter, not all: the others would only be
    /// refused (thundering herd). A woken waiter that stops waiting passes the wake-up on.
    pub(crate) fn wake(&self, hash: u64, fence: u64) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = m.get_mut(&hash) else { return };
        if w.last_release == Some(fence) {
            return;
        }
        w.last_release = Some(fence);
        if let Some(n) = w.notify.upgrade() {
            n.notify_one();
        }
    }
}

/// A lock service. Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct DistributedLock {
    backend: Arc<Backend>,
    options: Arc<LockOptions>,
    /// Monitoring counters (issue #15), shared by clones and guards.
    stats: Arc<crate::metrics::LockCounters>,
}

impl fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.backend {
            Backend::Memory(_) => "memory".to_string(),
            Backend::Redis(r) => format!("redis x{}", r.masters()),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => format!("etcd {}", e.prefix()),
        };
        f.debug_struct("DistributedLock")
            .field("backend", &kind)
            .finish()
    }
}

impl DistributedLock {
    /// In-process locks with the same semantics (tokens, fencing, waiting), for one machine
    /// and tests.
    pub fn memory() -> DistributedLock {
        crate::log::init_from_env();
        DistributedLock {
            backend: Arc::new(Backend::Memory(memory::MemoryLocks::default())),
            options: Arc::new(LockOptions::default()),
            stats: Arc::default(),
        }
    }

    /// Locks on one Redis server (`host:port` or `redis://` URL). No I/O here.
    pub fn redis(address: &str, options: LockOptions) -> Result<DistributedLock> {
        crate::log::init_from_env();
        DistributedLock::redlock(&[address], options)
    }

    /// Redlock over independent Redis masters: a lock is held when a majority (`N / 2 + 1`)
    /// holds it. One address is a single Redis. Fails on an empty list, duplicate or invalid
    /// addresses, or bad options. No I/O here.
    pub fn redlock(addresses: &[&str], options: LockOptions) -> Result<DistributedLock> {
        crate::log::init_from_env();
        options.validate()?;
        let backend = redis::RedisLocks::new(addresses, &options)?;
        Ok(DistributedLock {
            backend: Arc::new(Backend::Redis(Box::new(backend))),
            options: Arc::new(options),
            stats: Arc::default(),
        })
    }

    /// Locks on etcd (needs the `etcd` cargo feature): a lease-bound key per contender under
    /// `prefix` (for example `/clusterkit/locks/app/`), waiting on the predecessor's deletion,
    /// the key's create revision as fencing token. See `lock/etcd.rs` and
    /// `docs/discovery.md`. No I/O here. `options.redis` is not used; `auto_renew` keeps the
    /// lease alive at a third of its TTL.
    #[cfg(feature = "etcd")]
    pub fn etcd(
        settings: crate::etcd::EtcdSettings,
        prefix: &str,
        options: LockOptions,
    ) -> Result<DistributedLock> {
        options.validate()?;
        let backend = etcd::EtcdLocks::new(settings, prefix)?;
        Ok(DistributedLock {
            backend: Arc::new(Backend::Etcd(Box::new(backend))),
            options: Arc::new(options),
            stats: Arc::default(),
        })
    }

    /// Requests this service sent to etcd so far (0 for other backends): shows that waiting
    /// watches instead of polling.
    pub fn backend_requests(&self) -> u64 {
        match &*self.backend {
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.requests(),
            _ => 0,
        }
    }

    /// This lock service with auto-renewal on or off (same backend, same key space): lets a
    /// binding choose renewal per acquisition.
    pub fn with_auto_renew(&self, on: bool) -> DistributedLock {
        let mut options = (*self.options).clone();
        options.auto_renew = on;
        DistributedLock {
            backend: self.backend.clone(),
            options: Arc::new(options),
            // The same service: one set of counters.
            stats: self.stats.clone(),
        }
    }

    /// This lock service with fencing tokens on or off (same backend, same key space, same
    /// counters): lets a caller skip the fencing phase per acquisition (see
    /// [`LockOptions::fencing`]).
    pub fn with_fencing(&self, on: bool) -> DistributedLock {
        let mut options = (*self.options).clone();
        options.fencing = on;
        DistributedLock {
            backend: self.backend.clone(),
            options: Arc::new(options),
            stats: self.stats.clone(),
        }
    }

    /// Whether acquisitions through this service get a fencing token.
    pub fn fencing(&self) -> bool {
        self.options.fencing
    }

    /// Acquires `name` for `ttl` if it is free now; `None` if someone else holds it.
    ///
    /// Fails with [`Error::InvalidArgument`] on a bad name or TTL, or with `unavailable` /
    /// `timeout` when too few masters answer.
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        check_name(name)?;
        check_ttl(ttl)?;
        let token = new_token()?;
        let started = Instant::now();
        match self
            .backend
            .try_once(name, &token, ttl, None, false, self.options.fencing)
            .await?
        {
            Attempt::Acquired { fence, validity } => {
                self.count_acquired(name, started);
                Ok(Some(self.guard(name, token, ttl, fence, started, validity)))
            }
            Attempt::Busy(_) | Attempt::Split { .. } => {
                crate::metrics::LockCounters::inc(&self.stats.refused);
                Ok(None)
            }
        }
    }

    /// Acquires `name` for `ttl`, waiting at most `wait`. A waiter is woken by the holder's
    /// release (pub/sub on Redis) and also retries with jittered backoff, so a release wakes it
    /// in about one round trip and a crowd of waiters does not hammer the server.
    ///
    /// Fails with [`Error::Timeout`] when `wait` passes, or like [`DistributedLock::try_acquire`].
    pub async fn acquire_timeout(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard> {
        let started = Instant::now();
        let r = self
            .acquire_until(name, ttl, Some(Instant::now() + wait))
            .await;
        self.count_wait(name, started, &r);
        r
    }

    /// Acquires `name` for `ttl`, waiting as long as it takes. Fails like
    /// [`DistributedLock::try_acquire`] (never with a timeout of its own).
    pub async fn acquire(&self, name: &str, ttl: Duration) -> Result<LockGuard> {
        let started = Instant::now();
        let r = self.acquire_until(name, ttl, None).await;
        self.count_wait(name, started, &r);
        r
    }

    /// This service's counters (monitoring).
    pub fn stats(&self) -> crate::metrics::LockStats {
        self.stats.read()
    }

    fn count_acquired(&self, name: &str, started: Instant) {
        crate::metrics::LockCounters::inc(&self.stats.acquired);
        self.stats.wait.record(started.elapsed());
        tracing::debug!(target: "clusterkit::lock", name_hash = %crate::log::key_hash(name.as_bytes()),
            waited = ?started.elapsed(), "lock acquired");
    }

    fn count_wait(&self, name: &str, started: Instant, r: &Result<LockGuard>) {
        match r {
            Ok(_) => self.count_acquired(name, started),
            Err(e) if e.kind() == crate::ErrorKind::Timeout => {
                crate::metrics::LockCounters::inc(&self.stats.timeouts)
            }
            Err(_) => {}
        }
    }

    async fn acquire_until(
        &self,
        name: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<LockGuard> {
        check_name(name)?;
        check_ttl(ttl)?;
        let token = new_token()?;
        #[cfg(feature = "etcd")]
        if let Backend::Etcd(e) = &*self.backend {
            let (fence, validity, at) = e.acquire(name, &token, ttl, deadline).await?;
            return Ok(self.guard(name, token, ttl, fence, at, validity));
        }
        let notify = self.backend.released(name);
        let waiting_started = Instant::now();
        // Our place in the name's waiter queue: when we started waiting (µs since the epoch,
        // the same on every master, so their queues agree).
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
            .max(1);
        let mut backoff = self.options.retry_min;
        let mut failure: Option<Error> = None;
        let mut retried = false;
        loop {
            // Register for the wake-up before trying, so a release in between is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let started = Instant::now();
            let outcome = self
                .backend
                .try_once(
                    name,
                    &token,
                    ttl,
                    Some(since),
                    retried,
                    self.options.fencing,
                )
                .await;
            retried = true;
            let now = Instant::now();
            let past_deadline = deadline.is_some_and(|d| now >= d);
            let mut sleep = backoff.mul_f64(0.5 + unit_random());
            match outcome {
                Ok(Attempt::Acquired { fence, validity }) => {
                    return Ok(self.guard(name, token, ttl, fence, started, validity))
                }
                Ok(Attempt::Busy(hint)) => {
                    if past_deadline {
                        self.backend.leave_queue(name);
                        let until = match hint {
                            Some(h) => {
                                format!(", for about {} ms more unless extended", h.as_millis())
                            }
                            None => String::new(),
                        };
                        return Err(Error::Timeout(format!(
                            "lock {name:?}: deadline passed after waiting {:?}; it is held by someone else{until}",
                            waiting_started.elapsed()
                        )));
                    }
                    if let Some(h) = hint {
                        sleep = sleep.min(h + Duration::from_millis(1));
                    }
                }
                Ok(Attempt::Split {
                    granted,
                    busy,
                    silent,
                }) => {
                    if past_deadline {
                        self.backend.leave_queue(name);
                        return Err(Error::Timeout(format!(
                            "lock {name:?}: deadline passed after waiting {:?}; no attempt reached a quorum \
                             (contenders split the masters: the last attempt was granted by {granted}, \
                             refused by {busy} held by others, unanswered by {silent})",
                            waiting_started.elapsed()
                        )));
                    }
                    // Desynchronise the contenders that split (the Redlock paper's random
                    // retry delay): each retries after a uniformly random share of the
                    // backoff, so one of them soon asks every master first.
                    sleep = backoff.mul_f64(unit_random());
                }
                // Too few masters now: keep trying until the deadline, then report why.
                Err(e)
                    if matches!(
                        e.kind(),
                        crate::ErrorKind::Unavailable | crate::ErrorKind::Timeout
                    ) =>
                {
                    // A dead master can look silent while the client reconnects: once a
                    // refusal was seen during this wait, `unavailable` is the reason given.
                    let e = match failure.take() {
                        Some(prev)
                            if prev.kind() == crate::ErrorKind::Unavailable
                                && e.kind() == crate::ErrorKind::Timeout =>
                        {
                            prev
                        }
                        _ => e,
                    };
                    if past_deadline {
                        self.backend.leave_queue(name);
                        let waited = waiting_started.elapsed();
                        return Err(match e {
                            Error::Unavailable(m) => Error::Unavailable(format!(
                                "deadline passed after waiting {waited:?}; {m}"
                            )),
                            Error::Timeout(m) => Error::Timeout(format!(
                                "deadline passed after waiting {waited:?}; {m}"
                            )),
                            other => other,
                        });
                    }
                    failure = Some(e);
                }
                Err(e) => return Err(e),
            }
            if self.backend.releases_may_go_unheard() {
                sleep = sleep.min(UNHEARD_RETRY);
            }
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            backoff = (backoff * 2).min(self.options.retry_max);
        }
    }

    fn guard(
        &self,
        name: &str,
        token: String,
        ttl: Duration,
        fence: u64,
        started: Instant,
        validity: Duration,
    ) -> LockGuard {
        let (lost_tx, _) = watch::channel(false);
        let inner = Arc::new(GuardInner {
            lock: self.clone(),
            name: name.to_string(),
            token,
            fence,
            fenced: self.options.fencing,
            ttl,
            valid_until: Mutex::new(started + validity),
            lost: AtomicBool::new(false),
            lost_tx,
            released: AtomicBool::new(false),
            renewer: Mutex::new(None),
        });
        if self.options.auto_renew {
            if let Ok(h) = crate::fork::spawn(renew(Arc::downgrade(&inner))) {
                *inner.renewer.lock().unwrap_or_else(|e| e.into_inner()) = Some(h.abort_handle());
            }
        }
        LockGuard { inner }
    }
}

struct GuardInner {
    lock: DistributedLock,
    name: String,
    token: String,
    /// The fencing token, or (unfenced) a random id of this acquisition that only the
    /// release notification carries (waiters dedupe Redlock's copies by it).
    fence: u64,
    /// Whether `fence` is a fencing token (see [`LockOptions::fencing`]).
    fenced: bool,
    ttl: Duration,
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
    lost_tx: watch::Sender<bool>,
    released: AtomicBool,
    renewer: Mutex<Option<tokio::task::AbortHandle>>,
}

impl GuardInner {
    fn mark_lost(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            crate::metrics::LockCounters::inc(&self.lock.stats.losses);
            tracing::warn!(target: "clusterkit::lock", name_hash = %crate::log::key_hash(self.name.as_bytes()),
                "lock lost while held");
        }
        self.lost.store(true, Ordering::SeqCst);
        let _ = self.lost_tx.send(true);
    }
    fn stop_renewal(&self) {
        if let Some(h) = self
            .renewer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases it in the
/// background (best effort, without blocking).
pub struct LockGuard {
    inner: Arc<GuardInner>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.inner.name)
            .field("fencing_token", &self.fence())
            .field("validity", &self.validity())
            .finish()
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// This holder's random token (128 bits from the OS CSPRNG, hex).
    pub fn token(&self) -> &str {
        &self.inner.token
    }
    /// The fencing token: strictly increasing across successive holders of this name; 0
    /// (never a real token) when the lock was acquired without one (fencing off, see
    /// [`LockOptions::fencing`]): prefer [`LockGuard::fence`] or
    /// [`LockGuard::try_fencing_token`] where fencing may be off.
    pub fn fencing_token(&self) -> u64 {
        self.fence().unwrap_or(0)
    }
    /// The fencing token, or `None` when the lock was acquired without one.
    pub fn fence(&self) -> Option<u64> {
        self.inner.fenced.then_some(self.inner.fence)
    }
    /// The fencing token; fails with [`Error::NotFound`] when the lock was acquired with
    /// fencing off (the message says so and names the option).
    pub fn try_fencing_token(&self) -> Result<u64> {
        self.fence()
            .ok_or_else(|| no_fencing_token(&self.inner.name))
    }
    /// Remaining validity by the local monotonic clock; zero once expired or lost.
    pub fn validity(&self) -> Duration {
        if self.inner.lost.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let until = *self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.saturating_duration_since(Instant::now())
    }
    /// True while the lock is valid and no renewal failed. Check it before committing work.
    pub fn is_held(&self) -> bool {
        !self.inner.released.load(Ordering::SeqCst) && self.validity() > Duration::ZERO
    }
    /// Completes when the lock is lost: a renewal failed or the validity ran out.
    pub async fn lost(&self) {
        let mut rx = self.inner.lost_tx.subscribe();
        loop {
            let remaining = self.validity();
            if remaining.is_zero() {
                return;
            }
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() || *rx.borrow() {
                        return;
                    }
                }
                _ = tokio::time::sleep(remaining) => {}
            }
        }
    }

    /// Extends the lock to `ttl` from now. Fails with [`Error::Conflict`] if the lock is no
    /// longer held with this token (it expired or was taken over).
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        check_ttl(ttl)?;
        let i = &self.inner;
        let started = Instant::now();
        match i.lock.backend.extend(&i.name, &i.token, ttl).await? {
            Some(validity) => {
                *i.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = started + validity;
                crate::metrics::LockCounters::inc(&i.lock.stats.renewals);
                tracing::trace!(target: "clusterkit::lock", name_hash = %crate::log::key_hash(i.name.as_bytes()),
                    "lock extended");
                Ok(())
            }
            None => {
                crate::metrics::LockCounters::inc(&i.lock.stats.renewal_failures);
                i.mark_lost();
                Err(Error::Conflict(format!(
                    "lock {:?} is no longer held by this guard",
                    i.name
                )))
            }
        }
    }

    /// Releases the lock. Fails with [`Error::Conflict`] if it was no longer held with this
    /// token (it expired and maybe someone else holds it now): the holder learns it, it is not
    /// silently ignored.
    pub async fn release(self) -> Result<()> {
        let i = &self.inner;
        i.released.store(true, Ordering::SeqCst);
        i.stop_renewal();
        // A release may run on the caller's task (one Redis master, issue #18): if this future
        // is dropped before it completes, finish the release in the background, as dropping
        // the guard would.
        let mut unfinished = ReleaseOnDrop(Some(self.inner.clone()));
        let held = i.lock.backend.release(&i.name, &i.token, i.fence).await;
        unfinished.0 = None;
        let held = held?;
        tracing::debug!(target: "clusterkit::lock", name_hash = %crate::log::key_hash(i.name.as_bytes()),
            held, "lock released");
        if held {
            crate::metrics::LockCounters::inc(&i.lock.stats.releases);
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "lock {:?} was not held by this guard any more (expired or taken over)",
                i.name
            )))
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let i = self.inner.clone();
        i.stop_renewal();
        if i.released.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Backend::Memory(m) = &*i.lock.backend {
            let _ = m.release(&i.name, &i.token);
            return;
        }
        // Never block here (this may run on a runtime thread): release in the background.
        let _ = crate::fork::spawn(async move {
            let _ = i.lock.backend.release(&i.name, &i.token, i.fence).await;
        });
    }
}

/// Releases a guard's lock in the background when dropped armed (a `release` future dropped
/// before its round trip completed).
struct ReleaseOnDrop(Option<Arc<GuardInner>>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            let _ = crate::fork::spawn(async move {
                let _ = i.lock.backend.release(&i.name, &i.token, i.fence).await;
            });
        }
    }
}

/// Extends at a third of the TTL; on failure (or when validity ran out first) marks the guard
/// lost so the holder can see it.
async fn renew(weak: std::sync::Weak<GuardInner>) {
    loop {
        let Some(i) = weak.upgrade() else { return };
        let period = i.ttl / 3;
        drop(i);
        tokio::time::sleep(period).await;
        let Some(i) = weak.upgrade() else { return };
        if i.released.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        match i.lock.backend.extend(&i.name, &i.token, i.ttl).await {
            Ok(Some(validity)) => {
                let mut v = i.valid_until.lock().unwrap_or_else(|e| e.into_inner());
                *v = started + validity;
                crate::metrics::LockCounters::inc(&i.lock.stats.renewals);
                tracing::trace!(target: "clusterkit::lock", name_hash = %crate::log::key_hash(i.name.as_bytes()),
                    "lock renewed");
            }
            _ => {
                crate::metrics::LockCounters::inc(&i.lock.stats.renewal_failures);
                i.mark_lost();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_release_wakes_one_waiter_once() {
        let w = Waiters::default();
        let n = w.get("job");
        let mut waiting: Vec<_> = (0..3).map(|_| Box::pin(n.notified())).collect();
        for f in &mut waiting {
            f.as_mut().enable();
        }
        let mut done = [false; 3];
        let mut poll =
            |waiting: &mut Vec<std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>>| {
                let mut woken = 0;
                for (i, f) in waiting.iter_mut().enumerate() {
                    if !done[i] && futures_util::FutureExt::now_or_never(f.as_mut()).is_some() {
                        done[i] = true;
                        woken += 1;
                    }
                }
                woken
            };
        let job = name_hash("job");
        w.wake(job, 7);
        w.wake(job, 7); // the same release from a second master
        assert_eq!(poll(&mut waiting), 1);
        w.wake(job, 8);
        assert_eq!(poll(&mut waiting), 1, "a new release wakes the next waiter");
        w.wake(name_hash("other"), 9); // nobody waits for it: no effect, no panic
    }
}

#[cfg(test)]
mod message_tests {
    use super::redis::{parse_release_message, release_message};
    use super::*;

    #[test]
    fn a_release_message_carries_the_name_hash_and_fence_only() {
        let m = release_message("invoice:42", 1_764_621_234_567_890);
        assert!(!m.contains("invoice"), "{m}");
        assert_eq!(
            parse_release_message(m.as_bytes()),
            Some((name_hash("invoice:42"), 1_764_621_234_567_890, None))
        );
        // Handed over: the notification names the client (not a secret), nothing more.
        let handed = format!("{m}:0123456789abcdef.42");
        assert_eq!(
            parse_release_message(handed.as_bytes()),
            Some((
                name_hash("invoice:42"),
                1_764_621_234_567_890,
                Some("0123456789abcdef.42")
            ))
        );
        for bad in [
            &b""[..],
            b"x",
            b"0123:1",
            b"zzzzzzzzzzzzzzzz:1",
            b"0123456789abcdef:x",
            b"0123456789abcdef:1:",
        ] {
            assert_eq!(parse_release_message(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_prefix_is_a_namespace_without_separator() {
        for bad in ["", "a:b", "a{b", "a b", "a*"] {
            let e = LockOptions::default()
                .with_key_prefix(bad)
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains("key_prefix"), "{bad:?}: {e}");
        }
        assert!(LockOptions::default()
            .with_key_prefix("app")
            .validate()
            .is_ok());
    }
}
