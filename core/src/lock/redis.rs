//! Locks on Redis: one server (the fence is assigned in the acquiring script) or Redlock over
//! N independent masters (two phases: acquire on a majority and read their fence counters and
//! clocks, then store `max(max counter + 1, max clock)` on every master and wait for a
//! majority; see the module docs for why). Keys: `<ns>:l:{<name>}` (the lock, or `~h:<client>`
//! while a release hands it over), `<ns>:f:{<name>}` (its fence counter, with a TTL) and
//! `<ns>:w:{<name>}` (the waiter queue, with a TTL); releases are published on
//! `<ns>:l:released` as `<name hash>:<fence>[:<client handed to>]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Script;

use crate::cache::redis::{map_err, ForkSafeManager, SyncPool};
use crate::error::{Error, Result};
use crate::lock::{Attempt, LockOptions, Waiters};

/// Single master: take the lock if it is free (`SET NX`; or handed over to this client, see
/// [`RELEASE`]), then assign the fence in the same script: `INCR` of the stored counter (which
/// keeps its TTL); when there was no counter (the `INCR` gave 1: never acquired, expired, or
/// lost in a restart without persistence) the fence is the server's clock in µs instead,
/// stored with the fence TTL (the clock floor; see "Fence counters expire" in the module
/// docs: a counter that expires an hour after its creation holds less than the clock then,
/// since it started from the clock and counts fewer than 10^6 acquisitions per second).
/// When the lock is held, a waiting client joins the name's waiter queue (a sorted set scored
/// by when it started waiting; `NX` keeps its place across retries). KEYS: lock, fence, and
/// for a waiting client its queue. ARGV: token, ttl ms, fence ttl ms, this client's hand-over
/// marker (`~h:<client>`), then only for a waiting client (absent: not waiting, do not queue)
/// client, wait start (µs), queue ttl ms. → `{1, fence}` or `{0, pttl}` when held. A fence
/// TTL of `0` means fencing is off: the counter is not touched and the reply is `{1, 0}`. (Issue #18: an uncontended fenced acquisition runs two
/// commands, `SET NX PX` and `INCR`, where it ran five and a number format.)
const ACQUIRE_ONE: &str = r"
local got = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not got and redis.call('GET', KEYS[1]) == ARGV[4] then
  got = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if got then
  if ARGV[5] then redis.call('ZREM', KEYS[3], ARGV[5]) end
  if ARGV[3] == '0' then return {1, 0} end
  local f = redis.call('INCR', KEYS[2])
  if f == 1 then
    local t = redis.call('TIME')
    f = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', KEYS[2], string.format('%d', f), 'PX', ARGV[3])
  end
  return {1, f}
end
if ARGV[5] then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[6], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return {0, redis.call('PTTL', KEYS[1])}";

/// Compare-and-release, then a release notification that carries no secret: `message` is
/// `<hash of the name>:<fencing token>` (see [`release_message`]). When clients wait in the
/// name's queue, the lock is not deleted but handed over: the longest-waiting client is
/// popped and the lock set to `~h:<that client>` for `handoff` ms, which only that client can
/// take (any other, the releaser included, sees it held); if it does not come, the marker
/// expires and the lock is free for anyone; the notification then names that client
/// (`<message>:<client>`), so only its process wakes a waiter (no herd). With nobody in the
/// queue, nothing is published (issue #18): every waiting client is in the queue, because a
/// refused waiting attempt joins it in the same script that found the lock held (so a
/// release either ran before that check — the attempt then found the lock free — or finds
/// the waiter queued), and it subscribed before its first waiting attempt. Waiters of the
/// releasing process are woken locally (see [`RedisLocks::release`]). KEYS: lock, queue.
/// ARGV: token, channel, message, handoff ms. → 1, or 0 when `token` does not hold the lock.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local head = redis.call('ZPOPMIN', KEYS[2])
  if head[1] then
    redis.call('SET', KEYS[1], '~h:' .. head[1], 'PX', ARGV[4])
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. head[1])
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0";

/// Undoes a partial Redlock grant: compare-and-delete, no notification (nobody waits for an
/// attempt that never held the lock; a wake-up would only restart the same split vote) and no
/// hand-over. KEYS: lock. ARGV: token. → 1 or 0.
const UNDO: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Redlock phase 1: like [`ACQUIRE_ONE`], but reads the fence counter and the master's clock
/// (µs) instead of assigning, and leaves the queue only when the whole acquisition succeeded
/// (phase 2). A waiter that already retried (ARGV[7] = `1`) also queues where it was granted
/// — unless the grant is a hand-over to it — so that every master's queue holds it and the
/// queues agree on who is next (a waiter granted on one master and refused on another would
/// otherwise be missing from the first one's queue, which then hands over to someone else
/// and nobody gets a majority). → `{1, counter, time_us}` or `{0, pttl}`.
const ACQUIRE_READ: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if v == false and ARGV[7] == '1' and ARGV[5] ~= '0' then
    redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[4])
    redis.call('PEXPIRE', KEYS[3], ARGV[6])
  end
  local t = redis.call('TIME')
  return {1, tonumber(redis.call('GET', KEYS[2])) or 0, tonumber(t[1]) * 1000000 + tonumber(t[2])}
end
if ARGV[5] ~= '0' then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return {0, redis.call('PTTL', KEYS[1])}";

/// Redlock phase 2: store the fence, never lowering it, with its TTL. Sent to every master:
/// → 1 where the lock is ours (these count toward the quorum), 2 where it is not (the store
/// still spreads the counter, so a master that later restarts empty is not the only one
/// that had it). The acquirer leaves the name's waiter queue. KEYS: lock, fence, queue.
/// ARGV: token, fence, fence ttl ms, client.
const STORE_FENCE: &str = r"
redis.call('ZREM', KEYS[3], ARGV[4])
local cur = tonumber(redis.call('GET', KEYS[2])) or 0
if tonumber(ARGV[2]) > cur then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 2";

/// Compare-and-pexpire.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// The channel on which releases of locks of namespace `ns` are published.
pub(crate) fn release_channel(ns: &str) -> String {
    format!("{ns}:l:released")
}

/// What a release publishes: `<xxh3 of the name, 16 hex digits>:<fencing token>`. No lock
/// token (a credential: with it anyone could release or extend the lock) and not the name
/// itself; the hash routes the wake-up to the waiters of that name, the fencing token dedupes
/// the copies Redlock publishes (one per master). An unrelated name with the same hash only
/// wakes a waiter early (it retries and finds the lock held).
pub(crate) fn release_message(name: &str, fence: u64) -> String {
    format!("{:016x}:{fence}", crate::lock::name_hash(name))
}

/// A parsed release notification: the name's hash, the fencing token, and the client the
/// lock was handed to (`<message>:<client>`, see [`RELEASE`]), if any.
pub(crate) type ReleaseNotice<'a> = (u64, u64, Option<&'a str>);

/// Parses [`release_message`]'s format, optionally followed by `:<client>`; `None` for
/// anything else.
pub(crate) fn parse_release_message(payload: &[u8]) -> Option<ReleaseNotice<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(3, ':');
    let (hash, fence, client) = (parts.next()?, parts.next()?, parts.next());
    if hash.len() != 16 || client.is_some_and(|c| c.is_empty()) {
        return None;
    }
    Some((
        u64::from_str_radix(hash, 16).ok()?,
        fence.parse().ok()?,
        client,
    ))
}

/// The error when too many masters failed for a quorum: `timeout` when every failure was a
/// master that did not answer in time ("masters timed out"), `unavailable` otherwise ("no
/// quorum reachable"). Lists each failure (addresses only; no credentials).
fn no_quorum(name: &str, n: usize, quorum: usize, errors: &[Error]) -> Error {
    let detail: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let detail = detail.join("; ");
    if errors.iter().all(|e| e.kind() == crate::ErrorKind::Timeout) {
        Error::Timeout(format!(
            "lock {name:?}: masters timed out: {} of {n} did not answer and a quorum needs {quorum} ({detail})",
            errors.len()
        ))
    } else {
        Error::Unavailable(format!(
            "lock {name:?}: no quorum reachable: {} of {n} masters failed and a quorum needs {quorum} ({detail})",
            errors.len()
        ))
    }
}

/// How long a fence counter lives after the last acquisition of its name: at least
/// [`crate::lock::FENCE_TTL`], and never less than the lock's own TTL.
fn fence_ttl_ms(ttl: Duration) -> String {
    (ttl.max(crate::lock::FENCE_TTL).as_millis() as u64).to_string()
}

struct Master {
    address: String,
    conn: ForkSafeManager,
    /// The RESP3 client (credentials, db and TLS applied) of the release subscription and its
    /// connection config (timeouts, server-name resolver).
    sub: (redis::Client, redis::AsyncConnectionConfig),
    /// Synchronous connections for blocking callers, only when this is the only master
    /// (Redlock's masters are always asked concurrently, through the runtime).
    sync: Option<Arc<SyncPool>>,
}

struct Scripts {
    acquire_one: Script,
    acquire_read: Script,
    store_fence: Script,
    release: Script,
    undo: Script,
    extend: Script,
}

pub(crate) struct RedisLocks {
    masters: Vec<Master>,
    quorum: usize,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
    /// Random id of this lock service (with the process id appended per call, so a forked
    /// child is another client): the member of the waiter queues, and what a hand-over names.
    client: String,
    /// This process's client id and hand-over marker (see [`RedisLocks::ids`]).
    ids: crate::fork::PerProcess<Arc<(String, String)>>,
    /// How long a released lock stays reserved for the longest-waiting client, in ms (a
    /// script argument).
    handoff_ms: String,
    /// The release channel (see [`release_channel`]).
    channel: String,
    /// TTL of a waiter queue, refreshed by every waiting attempt.
    queue_ttl: Duration,
    pub(crate) waiters: Arc<Waiters>,
    /// One release subscriber per master, started on first use; started again in a forked
    /// child and stopped when the lock service is dropped.
    subscribers: crate::fork::Mutex<Vec<Arc<crate::fork::Background>>>,
    /// Set once the subscribers were started (a fast check for every acquisition).
    started: std::sync::atomic::AtomicBool,
    /// How many masters' release subscriptions are live (a waiting attempt waits, bounded,
    /// until all are, so that its queue entry is never announced before it can hear the
    /// release).
    /// (Counted per process: the process id, and the count of that process.)
    subscribed: Arc<tokio::sync::watch::Sender<(u32, usize)>>,
    /// How long a waiting attempt waits for the subscriptions (the connect timeout).
    subscribe_wait: Duration,
    /// The process id that waited for its subscriptions once (see `wait_subscribed`).
    subscribed_once: std::sync::atomic::AtomicU32,
}

impl RedisLocks {
    pub(crate) fn new(addresses: &[&str], options: &LockOptions) -> Result<RedisLocks> {
        if addresses.is_empty() {
            return Err(Error::invalid(
                "masters",
                "at least one Redis address is needed",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut masters = Vec::with_capacity(addresses.len());
        for a in addresses {
            if !seen.insert(a.trim().to_string()) {
                return Err(Error::invalid(
                    "masters",
                    format!("{:?} is listed twice", crate::connection::redact(a)),
                ));
            }
            let (conn, target) = ForkSafeManager::new(a, &options.redis)?;
            let sync = match addresses.len() {
                1 => SyncPool::for_target(&target, &options.redis)?,
                _ => None,
            };
            masters.push(Master {
                address: target.display.clone(),
                conn,
                sub: (
                    target.pubsub_client()?,
                    target.async_config(
                        options.redis.connect_timeout,
                        options.redis.response_timeout,
                    ),
                ),
                sync,
            });
        }
        Ok(RedisLocks {
            quorum: masters.len() / 2 + 1,
            masters,
            prefix: options.key_prefix.clone(),
            timeout: options.redis.response_timeout,
            scripts: Scripts {
                acquire_one: Script::new(ACQUIRE_ONE),
                acquire_read: Script::new(ACQUIRE_READ),
                store_fence: Script::new(STORE_FENCE),
                release: Script::new(RELEASE),
                undo: Script::new(UNDO),
                extend: Script::new(EXTEND),
            },
            client: crate::lock::new_token()?[..16].to_string(),
            ids: crate::fork::PerProcess::new(),
            handoff_ms: (crate::lock::HANDOFF.as_millis() as u64).max(1).to_string(),
            channel: release_channel(&options.key_prefix),
            queue_ttl: (options.retry_max * 4).max(Duration::from_secs(1)),
            waiters: Arc::new(Waiters::default()),
            subscribers: crate::fork::Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
            subscribed: Arc::new(tokio::sync::watch::Sender::new((0, 0))),
            subscribe_wait: options.redis.connect_timeout,
            subscribed_once: std::sync::atomic::AtomicU32::new(0),
        })
    }

    pub(crate) fn masters(&self) -> usize {
        self.masters.len()
    }

    /// `<ns>:l:{<name>}`: the lock (see `docs/keyspace.md`).
    fn key(&self, name: &str) -> String {
        format!("{}:l:{{{name}}}", self.prefix)
    }
    /// `<ns>:f:{<name>}`: its fence counter, in a sub-space of its own (no lock name can
    /// reach it), in the lock's hash slot.
    fn fence_key(&self, name: &str) -> String {
        format!("{}:f:{{{name}}}", self.prefix)
    }
    /// `<ns>:w:{<name>}`: the waiter queue of a name (a sorted set of clients by the time
    /// they started waiting), in the lock's hash slot.
    fn queue_key(&self, name: &str) -> String {
        format!("{}:w:{{{name}}}", self.prefix)
    }
    /// This client's id (see [`RedisLocks::client`]).
    fn client_id(&self) -> String {
        self.ids().0.clone()
    }
    /// This client's id and its hand-over marker `~h:<id>`, built once per process.
    fn ids(&self) -> Arc<(String, String)> {
        let make = || {
            let id = format!("{}.{}", self.client, std::process::id());
            let mine = format!("~h:{id}");
            Arc::new((id, mine))
        };
        // The init cannot fail; the fallback only satisfies the signature.
        self.ids
            .get_or_try_init(|| Ok(make()))
            .unwrap_or_else(|_| make())
    }

    /// Runs `script` on master `m` within the per-master timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        m: &Master,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T> {
        // EVALSHA built in one command buffer (issue #18: not through a `ScriptInvocation`,
        // which copies every key and argument into a vector of its own first); a server that
        // does not know the script yet gets it with `SCRIPT LOAD`, as redis-rs does.
        let len: usize = keys.iter().chain(args).map(|a| a.len()).sum();
        let mut cmd = redis::Cmd::with_capacity(3 + keys.len() + args.len(), len + 64);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for a in keys.iter().chain(args) {
            cmd.arg(a.as_bytes());
        }
        let no_script = |e: &redis::RedisError| {
            e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        };
        // A blocking caller of a single master does the round trip on its own thread (see
        // `crate::blocking::inline_io_allowed`).
        if let Some(pool) = m
            .sync
            .as_ref()
            .filter(|_| crate::blocking::inline_io_allowed())
        {
            return pool.with(&m.address, |c| match cmd.query(c) {
                Err(e) if no_script(&e) => {
                    script.load(c)?;
                    cmd.query(c)
                }
                r => r,
            });
        }
        let mut conn = m.conn.get()?;
        let call = async {
            match cmd.query_async(&mut conn).await {
                Err(e) if no_script(&e) => {
                    script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                r => r,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(|e| map_err(e, &m.address)),
            Err(_) => Err(Error::Timeout(format!(
                "{}: no answer within {:?}",
                m.address, self.timeout
            ))),
        }
    }

    fn drift(ttl: Duration) -> Duration {
        ttl / 100 + Duration::from_millis(2)
    }

    /// One acquisition attempt. `waiting_since` (µs since the epoch, when the caller started
    /// waiting) makes a refused attempt join the name's waiter queue; `None` (a
    /// `try_acquire`) does not queue. `retried`: this waiter was refused before (it then
    /// queues on every Redlock master, see [`ACQUIRE_READ`]). `fencing` off: no fencing
    /// token (one Redis: the counter is not touched; Redlock: no second phase), and the
    /// `fence` of the returned attempt is a random id for the release notification only.
    pub(crate) async fn try_once(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
        waiting_since: Option<u64>,
        retried: bool,
        fencing: bool,
    ) -> Result<Attempt> {
        self.ensure_subscribed();
        if waiting_since.is_some() {
            self.wait_subscribed().await;
        }
        let key = self.key(name);
        let fence_key = self.fence_key(name);
        let queue_key = self.queue_key(name);
        let ids = self.ids();
        let (client, mine) = (ids.0.as_str(), ids.1.as_str());
        let since = waiting_since.unwrap_or(0).to_string();
        let queue_ttl = (self.queue_ttl.as_millis() as u64).to_string();
        let ttl_ms = (ttl.as_millis() as u64).max(1).to_string();
        let fence_ttl = if fencing {
            fence_ttl_ms(ttl)
        } else {
            "0".to_string()
        };
        let started = Instant::now();
        if self.masters.len() == 1 {
            let m = &self.masters[0];
            // A caller that does not wait passes neither the queue nor its arguments.
            let keys = [key.as_str(), &fence_key, &queue_key];
            let args = [token, &ttl_ms, &fence_ttl, mine, client, &since, &queue_ttl];
            let (nkeys, nargs) = match waiting_since {
                Some(_) => (3, 7),
                None => (2, 4),
            };
            let (ok, value): (i64, i64) = self
                .run(m, &self.scripts.acquire_one, &keys[..nkeys], &args[..nargs])
                .await?;
            if ok == 1 {
                let fence = match fencing {
                    true => value.max(0) as u64,
                    false => release_id(),
                };
                let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
                if validity.is_zero() {
                    let _ = self.release(name, token, fence).await;
                    return Ok(Attempt::Busy(None));
                }
                return Ok(Attempt::Acquired { fence, validity });
            }
            return Ok(Attempt::Busy(
                (value > 0).then(|| Duration::from_millis(value as u64)),
            ));
        }

        // Phase 1 on every master in parallel; stop waiting once the outcome is decided, or
        // once a contended attempt cannot win without the masters that have not answered
        // (see "Liveness" in the module docs).
        let n = self.masters.len();
        let mut pending: FuturesUnordered<_> = self
            .masters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let args = [
                    token,
                    ttl_ms.as_str(),
                    mine,
                    client,
                    since.as_str(),
                    queue_ttl.as_str(),
                    if retried { "1" } else { "0" },
                ];
                let keys = [key.as_str(), fence_key.as_str(), queue_key.as_str()];
                async move {
                    let r: Result<Vec<i64>> =
                        self.run(m, &self.scripts.acquire_read, &keys, &args).await;
                    (i, r)
                }
            })
            .collect();
        // (master, its counter, its clock in µs)
        let mut acquired: Vec<(usize, u64, u64)> = Vec::new();
        // Masters that answered "held by someone else": they cannot hold our token.
        let mut busy: Vec<usize> = Vec::new();
        let mut errors: Vec<Error> = Vec::new();
        let mut hint: Option<Duration> = None;
        let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut gave_up = false;
        loop {
            let next = match grace.as_mut() {
                Some(g) => tokio::select! {
                    r = pending.next() => r,
                    _ = g => { gave_up = true; None }
                },
                None => pending.next().await,
            };
            let Some((i, r)) = next else { break };
            match r.as_deref() {
                Ok(&[1, counter, time_us]) => {
                    acquired.push((i, counter.max(0) as u64, time_us.max(0) as u64))
                }
                Ok(&[0, pttl]) => {
                    busy.push(i);
                    if pttl > 0 {
                        let d = Duration::from_millis(pttl as u64);
                        hint = Some(hint.map_or(d, |h: Duration| h.min(d)));
                    }
                }
                Ok(_) => errors.push(Error::Backend(format!(
                    "{}: unexpected reply to the Redlock acquire script",
                    self.masters[i].address
                ))),
                Err(e) => errors.push(e.clone()),
            }
            let refused = busy.len() + errors.len();
            if acquired.len() >= self.quorum || refused > n - self.quorum {
                break;
            }
            // Contended (another client holds some master) and undecided: the silent masters
            // get a short grace (twice the time the answers so far took, at least 2 ms)
            // instead of the full per-master timeout. Holding our partial grants while a
            // stalled master times out is what kept every contender from a majority.
            if !busy.is_empty() && grace.is_none() {
                let g = (started.elapsed() * 2)
                    .max(Duration::from_millis(2))
                    .min(self.timeout);
                grace = Some(Box::pin(tokio::time::sleep(g)));
            }
        }
        drop(pending);
        if acquired.len() < self.quorum {
            // Undo where the lock may be ours: granted, errored or not answered yet. No
            // notification: nobody waits for a lock this attempt never held.
            let undo: Vec<usize> = (0..n).filter(|i| !busy.contains(i)).collect();
            self.undo_on(name, token, &undo).await;
            let silent = n - acquired.len() - busy.len() - errors.len();
            if busy.len() >= self.quorum {
                return Ok(Attempt::Busy(hint));
            }
            // Too many masters failed to answer for any quorum to be possible: say which.
            if errors.len() > n - self.quorum {
                return Err(no_quorum(name, n, self.quorum, &errors));
            }
            if gave_up || !acquired.is_empty() || !errors.is_empty() {
                return Ok(Attempt::Split {
                    granted: acquired.len(),
                    busy: busy.len(),
                    silent: silent + errors.len(),
                });
            }
            return Ok(Attempt::Busy(hint));
        }

        if !fencing {
            // No second phase. A waiter that queued on some master leaves the queues before
            // the lock is handed out (phase 2 does it otherwise): else its own release could
            // hand the lock to itself.
            // Queued where refused: on an earlier attempt, or on this one by a master that
            // answered "held" (wait for the removal); a master that has not answered may
            // still refuse and queue us (remove in the background: it runs on the same
            // connection, behind the acquisition).
            if waiting_since.is_some() {
                if retried || !busy.is_empty() {
                    self.leave_queue_now(name).await;
                } else if acquired.len() < n {
                    self.leave_queue(name);
                }
            }
            let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
            let fence = release_id();
            if validity.is_zero() {
                self.release_on(name, token, fence, None).await;
                return Ok(Attempt::Busy(None));
            }
            return Ok(Attempt::Acquired { fence, validity });
        }

        // Phase 2: store max(max counter + 1, max clock) on every master (never lowering a
        // counter); a majority of masters where the lock is still ours must confirm before the
        // token is handed out (the clock floor keeps tokens increasing when a counter expired
        // or was lost; see the module docs). The stores run as tasks of their own: a stalled
        // master delays nobody, and the others still get the counter.
        let counter = acquired.iter().map(|(_, c, _)| *c).max().unwrap_or(0) + 1;
        let floor = acquired.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
        let fence = counter.max(floor);
        let mut pending: FuturesUnordered<_> = self
            .masters
            .iter()
            .map(|m| {
                let (conn, script, timeout) =
                    (m.conn.get(), self.scripts.store_fence.clone(), self.timeout);
                let (key, fence_key, queue_key, token, fence_s, fence_ttl, client) = (
                    key.clone(),
                    fence_key.clone(),
                    queue_key.clone(),
                    token.to_string(),
                    fence.to_string(),
                    fence_ttl.clone(),
                    client.to_string(),
                );
                tokio::spawn(crate::fork::gated(async move {
                    let Ok(mut conn) = conn else { return 0 };
                    let mut inv = script.prepare_invoke();
                    inv.key(&key)
                        .key(&fence_key)
                        .key(&queue_key)
                        .arg(&token)
                        .arg(&fence_s)
                        .arg(&fence_ttl)
                        .arg(&client);
                    match tokio::time::timeout(timeout, inv.invoke_async::<i64>(&mut conn)).await {
                        Ok(Ok(r)) => r,
                        _ => 0,
                    }
                }))
            })
            .collect();
        let mut stored = 0;
        let mut other = 0;
        while let Some(r) = pending.next().await {
            if matches!(r, Ok(1)) {
                stored += 1;
            } else {
                other += 1;
            }
            if stored >= self.quorum || other > n - self.quorum {
                break;
            }
        }
        let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
        if stored < self.quorum || validity.is_zero() {
            self.release_on(name, token, fence, None).await;
            return Ok(Attempt::Busy(None));
        }
        Ok(Attempt::Acquired { fence, validity })
    }

    /// Deletes the lock where `token` holds it on the masters `which`, without notification
    /// or hand-over, and without waiting for the answers (each runs as its own task).
    async fn undo_on(&self, name: &str, token: &str, which: &[usize]) {
        let key = self.key(name);
        for &i in which {
            let m = &self.masters[i];
            let (conn, script, timeout) = (m.conn.get(), self.scripts.undo.clone(), self.timeout);
            let (key, token) = (key.clone(), token.to_string());
            tokio::spawn(crate::fork::gated(async move {
                let Ok(mut conn) = conn else { return };
                let mut inv = script.prepare_invoke();
                inv.key(&key).arg(&token);
                let _ = tokio::time::timeout(timeout, inv.invoke_async::<i64>(&mut conn)).await;
            }));
        }
    }

    /// Sends the release to the masters `which` (all of them when `None`) and returns once a
    /// majority confirmed (the lock is free for the next holder then) or every master
    /// answered. Each release runs as its own task, so the rest still complete after this
    /// returns: a stalled master delays nobody, and its key expires with its TTL if it never
    /// answers. True if at least one master held the lock with this token. `fence` goes into
    /// the release notification. Where clients wait, the lock is handed to the longest
    /// waiting one (see [`RELEASE`]).
    async fn release_on(
        &self,
        name: &str,
        token: &str,
        fence: u64,
        which: Option<&[usize]>,
    ) -> bool {
        let key = self.key(name);
        let queue_key = self.queue_key(name);
        let message = release_message(name, fence);
        if self.masters.len() == 1 && which.is_none_or(|w| w.contains(&0)) {
            // One master (issue #18): no task per master, the release is this call's own
            // round trip — on the caller's thread for a blocking caller (see `run`). The
            // caller must wait for this master anyway; `LockGuard::release` finishes it in
            // the background if its future is dropped early.
            let m = &self.masters[0];
            return matches!(
                self.run::<i64>(
                    m,
                    &self.scripts.release,
                    &[&key, &queue_key],
                    &[token, &self.channel, &message, &self.handoff_ms],
                )
                .await,
                Ok(1)
            );
        }
        let channel = self.channel.clone();
        let handoff = self.handoff_ms.clone();
        let all: Vec<usize> = (0..self.masters.len()).collect();
        let targets = which.unwrap_or(&all);
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|&i| {
                let m = &self.masters[i];
                let (conn, script, timeout) =
                    (m.conn.get(), self.scripts.release.clone(), self.timeout);
                let (key, queue_key, token, message, channel, handoff) = (
                    key.clone(),
                    queue_key.clone(),
                    token.to_string(),
                    message.clone(),
                    channel.clone(),
                    handoff.clone(),
                );
                tokio::spawn(crate::fork::gated(async move {
                    let Ok(mut conn) = conn else { return false };
                    let mut inv = script.prepare_invoke();
                    inv.key(&key)
                        .key(&queue_key)
                        .arg(&token)
                        .arg(&channel)
                        .arg(&message)
                        .arg(&handoff);
                    matches!(
                        tokio::time::timeout(timeout, inv.invoke_async::<i64>(&mut conn)).await,
                        Ok(Ok(1))
                    )
                }))
            })
            .collect();
        let mut released = 0;
        while let Some(r) = pending.next().await {
            if matches!(r, Ok(true)) {
                released += 1;
                if released >= self.quorum {
                    break;
                }
            }
        }
        released > 0
    }

    /// Leaves the waiter queue of `name` on every master (a waiter that gives up), so the
    /// next release does not hand the lock to a client that is gone. Best effort, in the
    /// background.
    pub(crate) fn leave_queue(&self, name: &str) {
        let (queue_key, client) = (self.queue_key(name), self.client_id());
        for m in &self.masters {
            let (conn, timeout) = (m.conn.get(), self.timeout);
            let (queue_key, client) = (queue_key.clone(), client.clone());
            tokio::spawn(crate::fork::gated(async move {
                zrem_waiter(conn, &queue_key, &client, timeout).await;
            }));
        }
    }

    /// Like [`RedisLocks::leave_queue`], but waits until every master answered (or timed
    /// out); the masters are asked in parallel.
    async fn leave_queue_now(&self, name: &str) {
        let (queue_key, client) = (self.queue_key(name), self.client_id());
        futures_util::future::join_all(
            self.masters
                .iter()
                .map(|m| zrem_waiter(m.conn.get(), &queue_key, &client, self.timeout)),
        )
        .await;
    }

    /// Releases everywhere; true if this token held the lock on at least one master. Then
    /// wakes one waiter of this process for the name, if any: a release without queued
    /// waiters publishes nothing, and this process's waiters may not be queued (the queue
    /// holds one entry per client, popped when the lock was handed to this client).
    pub(crate) async fn release(&self, name: &str, token: &str, fence: u64) -> Result<bool> {
        let released = self.release_on(name, token, fence, None).await;
        self.waiters.wake(crate::lock::name_hash(name), fence);
        Ok(released)
    }

    /// True when the release subscriptions of every master are live in this process.
    pub(crate) fn subscriptions_live(&self) -> bool {
        let (p, c) = *self.subscribed.borrow();
        p == std::process::id() && c >= self.masters.len()
    }

    /// On this process's first waiting attempt, waits (at most the connect timeout) until the
    /// release subscriptions of every master are live (a waiter queues on the masters that
    /// refused it, which need not be those of a live quorum). Only the first time: a master
    /// that is down later (reconnecting) must not slow every waiting attempt; a waiter that
    /// misses a release then retries with its backoff, as before.
    async fn wait_subscribed(&self) {
        use std::sync::atomic::Ordering;
        let pid = std::process::id();
        if self.subscribed_once.load(Ordering::Relaxed) == pid {
            return;
        }
        let all = self.masters.len();
        let ready = |&(p, c): &(u32, usize)| p == pid && c >= all;
        if !ready(&self.subscribed.borrow()) {
            let mut rx = self.subscribed.subscribe();
            let _ = tokio::time::timeout(self.subscribe_wait, rx.wait_for(ready)).await;
        }
        self.subscribed_once.store(pid, Ordering::Relaxed);
    }

    pub(crate) async fn extend(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>> {
        let key = self.key(name);
        let ttl_ms = (ttl.as_millis() as u64).max(1).to_string();
        let started = Instant::now();
        let (key, ttl_ms) = (&key, &ttl_ms);
        let results = futures_util::future::join_all(self.masters.iter().map(|m| async move {
            self.run::<i64>(m, &self.scripts.extend, &[key], &[token, ttl_ms])
                .await
        }))
        .await;
        let ok = results.iter().filter(|r| matches!(r, Ok(1))).count();
        if ok < self.quorum {
            if results.iter().all(|r| r.is_err()) {
                if let Some(Err(e)) = results.into_iter().next() {
                    return Err(e);
                }
            }
            return Ok(None);
        }
        let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
        Ok((!validity.is_zero()).then_some(validity))
    }

    /// Starts (once) one subscriber per master on the release channel; a message names the
    /// released lock and wakes its local waiters.
    /// In a forked child they are started again by [`crate::fork`] (each is a
    /// [`crate::fork::Background`]).
    fn ensure_subscribed(&self) {
        use std::sync::atomic::Ordering;
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut subs = self.subscribers.lock();
        if self.started.load(Ordering::Acquire) {
            return;
        }
        for m in &self.masters {
            let (client, channel, waiters, client_id, live) = (
                m.sub.clone(),
                self.channel.clone(),
                self.waiters.clone(),
                self.client.clone(),
                self.subscribed.clone(),
            );
            match crate::fork::Background::start(move || {
                subscribe_loop(
                    client.clone(),
                    channel.clone(),
                    waiters.clone(),
                    client_id.clone(),
                    live.clone(),
                )
            }) {
                Ok(b) => subs.push(b),
                Err(_) => return,
            }
        }
        self.started.store(true, Ordering::Release);
    }
}

/// Removes `client` from a name's waiter queue on one master, within `timeout`; a master
/// that cannot be reached keeps the entry until its TTL.
async fn zrem_waiter(
    conn: Result<crate::cache::redis::Conn>,
    queue_key: &str,
    client: &str,
    timeout: Duration,
) {
    let Ok(mut conn) = conn else { return };
    let mut cmd = redis::cmd("ZREM");
    cmd.arg(queue_key).arg(client);
    let _ = tokio::time::timeout(timeout, cmd.query_async::<i64>(&mut conn)).await;
}

/// A random id for the release notification of an acquisition without fencing token (the
/// waiters dedupe Redlock's per-master copies of one release by it).
fn release_id() -> u64 {
    crate::rng::next_u64()
}

/// Decrements a live-subscription count when dropped.
struct Uncount<'a>(&'a tokio::sync::watch::Sender<(u32, usize)>, u32);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|(p, c)| {
            if *p == self.1 {
                *c = c.saturating_sub(1);
            }
        });
    }
}

/// Keeps one subscription to `channel` on the master reached by `client` (RESP3 pushes on a
/// multiplexed connection made with `config`), waking waiters by name; reconnects with a
/// bounded backoff. Ends when aborted (the lock service was dropped).
async fn subscribe_loop(
    (client, config): (redis::Client, redis::AsyncConnectionConfig),
    channel: String,
    waiters: Arc<Waiters>,
    client_id: String,
    live: Arc<tokio::sync::watch::Sender<(u32, usize)>>,
) {
    // This process's client name in hand-over messages (a forked child runs its own loop).
    let me = format!("{client_id}.{}", std::process::id());
    let mut backoff = Duration::from_millis(50);
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let config = config.clone().set_push_sender(tx);
        let connect = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            backoff = Duration::from_millis(50);
            // Counted while subscribed; uncounted when the connection ends (also when this
            // task is aborted: the guard's drop).
            let pid = std::process::id();
            // A forked child inherits its parent's count: it counts its own from 0.
            live.send_modify(|(p, c)| {
                if *p != pid {
                    (*p, *c) = (pid, 0);
                }
                *c += 1;
            });
            let _counted = Uncount(&live, pid);
            // A release published before this subscription was live was not heard: every
            // local waiter retries once now (a first waiting attempt waits for the
            // subscriptions only up to the connect timeout; a reconnect misses messages).
            waiters.wake_all();
            while let Some(push) = rx.recv().await {
                match push.kind {
                    redis::PushKind::Message => {
                        // [channel, payload]; the payload is "<name hash>:<fence>[:<client>]"
                        // (see `release_message`).
                        let Some(redis::Value::BulkString(payload)) = push.data.get(1) else {
                            continue;
                        };
                        if let Some((hash, fence, to)) = parse_release_message(payload) {
                            // Handed over to another client: none of our waiters can take it.
                            if to.is_none_or(|c| c == me) {
                                waiters.wake(hash, fence);
                            }
                        }
                    }
                    redis::PushKind::Disconnection => break,
                    _ => {}
                }
            }
            drop(conn);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
