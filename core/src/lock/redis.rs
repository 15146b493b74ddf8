//! Locks on Redis: one server (the fence is assigned in the acquiring script) or Redlock over
//! N independent masters (two phases: acquire on a majority and read their fence counters and
//! clocks, then store `max(max counter + 1, max clock)` on a majority; see the module docs for
//! why). Keys: `<ns>:l:{<name>}` (the lock) and `<ns>:f:{<name>}` (its fence counter, with a
//! TTL); releases are published on `<ns>:l:released` as `<name hash>:<fence>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Script;

use crate::cache::redis::{map_err, ForkSafeManager, SyncPool};
use crate::error::{Error, Result};
use crate::lock::{Attempt, LockOptions, Waiters};

/// Single master: `SET NX PX` the lock, then assign the fence in the same script:
/// `max(stored + 1, TIME in µs)`, stored with a TTL (refreshed by every acquisition). KEYS:
/// lock, fence. ARGV: token, ttl ms, fence ttl ms. → `{1, fence}` or `{0, pttl}` when held.
const ACQUIRE_ONE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local f = (tonumber(redis.call('GET', KEYS[2])) or 0) + 1
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if f < floor then f = floor end
  redis.call('SET', KEYS[2], string.format('%d', f), 'PX', ARGV[3])
  return {1, f}
end
return {0, redis.call('PTTL', KEYS[1])}";

/// Compare-and-delete, then a release notification that carries no secret: `message` is
/// `<hash of the name>:<fencing token>` (see [`release_message`]). KEYS: lock. ARGV: token,
/// channel, message. → 1, or 0 when `token` does not hold the lock.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0";

/// Redlock phase 1: SET NX PX, and read the fence counter and the master's clock (µs).
/// → `{1, counter, time_us}` or `{0, pttl}`.
const ACQUIRE_READ: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  return {1, tonumber(redis.call('GET', KEYS[2])) or 0, tonumber(t[1]) * 1000000 + tonumber(t[2])}
end
return {0, redis.call('PTTL', KEYS[1])}";

/// Redlock phase 2: store the fence (never lowering it) with its TTL, only while the lock is
/// ours. ARGV: token, fence, fence ttl ms.
const STORE_FENCE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local cur = tonumber(redis.call('GET', KEYS[2])) or 0
  if tonumber(ARGV[2]) > cur then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return 1
end
return 0";

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

/// Parses [`release_message`]'s format; `None` for anything else.
pub(crate) fn parse_release_message(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (hash, fence) = text.split_once(':')?;
    if hash.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(hash, 16).ok()?, fence.parse().ok()?))
}

/// How long a fence counter lives after the last acquisition of its name: at least
/// [`crate::lock::FENCE_TTL`], and never less than the lock's own TTL.
fn fence_ttl_ms(ttl: Duration) -> String {
    (ttl.max(crate::lock::FENCE_TTL).as_millis() as u64).to_string()
}

struct Master {
    address: String,
    conn: ForkSafeManager,
    /// The client (credentials, db and TLS applied) of the release subscription.
    sub: redis::Client,
    /// Synchronous connections for blocking callers, only when this is the only master
    /// (Redlock's masters are always asked concurrently, through the runtime).
    sync: Option<Arc<SyncPool>>,
}

struct Scripts {
    acquire_one: Script,
    acquire_read: Script,
    store_fence: Script,
    release: Script,
    extend: Script,
}

pub(crate) struct RedisLocks {
    masters: Vec<Master>,
    quorum: usize,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
    pub(crate) waiters: Arc<Waiters>,
    /// One release subscriber per master, started on first use; started again in a forked
    /// child and stopped when the lock service is dropped.
    subscribers: crate::fork::Mutex<Vec<Arc<crate::fork::Background>>>,
    /// Set once the subscribers were started (a fast check for every acquisition).
    started: std::sync::atomic::AtomicBool,
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
                1 => Some(Arc::new(SyncPool::new(
                    target.client.clone(),
                    &options.redis,
                )?)),
                _ => None,
            };
            masters.push(Master {
                address: target.display,
                conn,
                sub: target.client,
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
                extend: Script::new(EXTEND),
            },
            waiters: Arc::new(Waiters::default()),
            subscribers: crate::fork::Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
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
    fn channel(&self) -> String {
        release_channel(&self.prefix)
    }

    /// Runs `script` on master `m` within the per-master timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        m: &Master,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let inv = crate::cache::redis::invocation(script, &keys, &args);
        // A blocking caller of a single master does the round trip on its own thread (see
        // `crate::blocking::inline_io_allowed`).
        if let Some(pool) = m
            .sync
            .as_ref()
            .filter(|_| crate::blocking::inline_io_allowed())
        {
            return pool.with(&m.address, |c| inv.invoke(c));
        }
        let mut conn = m.conn.get()?;
        match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
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

    pub(crate) async fn try_once(&self, name: &str, token: &str, ttl: Duration) -> Result<Attempt> {
        self.ensure_subscribed();
        let key = self.key(name);
        let fence_key = self.fence_key(name);
        let ttl_ms = (ttl.as_millis() as u64).max(1).to_string();
        let fence_ttl = fence_ttl_ms(ttl);
        let started = Instant::now();
        if self.masters.len() == 1 {
            let m = &self.masters[0];
            let (ok, value): (i64, i64) = self
                .run(
                    m,
                    &self.scripts.acquire_one,
                    &[&key, &fence_key],
                    &[token, &ttl_ms, &fence_ttl],
                )
                .await?;
            if ok == 1 {
                let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
                if validity.is_zero() {
                    let _ = self.release(name, token, value.max(0) as u64).await;
                    return Ok(Attempt::Busy(None));
                }
                return Ok(Attempt::Acquired {
                    fence: value.max(0) as u64,
                    validity,
                });
            }
            return Ok(Attempt::Busy(
                (value > 0).then(|| Duration::from_millis(value as u64)),
            ));
        }

        // Phase 1 on every master in parallel; stop waiting once the outcome is decided.
        let n = self.masters.len();
        let mut pending: FuturesUnordered<_> = self
            .masters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (key, fence_key, ttl_ms) = (&key, &fence_key, &ttl_ms);
                async move {
                    let r: Result<Vec<i64>> = self
                        .run(
                            m,
                            &self.scripts.acquire_read,
                            &[key, fence_key],
                            &[token, ttl_ms],
                        )
                        .await;
                    (i, r)
                }
            })
            .collect();
        // (master, its counter, its clock in µs)
        let mut acquired: Vec<(usize, u64, u64)> = Vec::new();
        // Masters that answered "held by someone else": they cannot hold our token.
        let mut busy: Vec<usize> = Vec::new();
        let mut refused = 0;
        let mut hint: Option<Duration> = None;
        let mut last_err = None;
        while let Some((i, r)) = pending.next().await {
            let reply = match r {
                Ok(v) => v,
                Err(e) => {
                    refused += 1;
                    last_err = Some(e);
                    Vec::new()
                }
            };
            match reply.as_slice() {
                [] => {}
                &[1, counter, time_us] => {
                    acquired.push((i, counter.max(0) as u64, time_us.max(0) as u64))
                }
                &[0, pttl] => {
                    refused += 1;
                    busy.push(i);
                    if pttl > 0 {
                        let d = Duration::from_millis(pttl as u64);
                        hint = Some(hint.map_or(d, |h: Duration| h.min(d)));
                    }
                }
                _ => {
                    refused += 1;
                    last_err = Some(Error::Backend(
                        "unexpected reply to the Redlock acquire script".into(),
                    ));
                }
            }
            if acquired.len() >= self.quorum || refused > n - self.quorum {
                break;
            }
        }
        drop(pending);
        if acquired.len() < self.quorum {
            // Undo where the lock may be ours: granted, errored or not answered yet.
            let undo: Vec<usize> = (0..n).filter(|i| !busy.contains(i)).collect();
            self.release_on(name, token, 0, Some(&undo)).await;
            // Busy means "someone else holds it": only when enough masters answered that
            // a quorum was possible. When too many failed, nobody can say: unavailable.
            let failed = refused - busy.len();
            return match last_err {
                Some(e) if failed > n - self.quorum => Err(Error::Unavailable(format!(
                    "Redlock needs {} of {} masters, {failed} did not answer; {e}",
                    self.quorum, n
                ))),
                _ => Ok(Attempt::Busy(hint)),
            };
        }

        // Phase 2: store max(max counter + 1, max clock) on a majority, only where the lock is
        // ours (the clock floor keeps tokens increasing when a counter expired or was lost;
        // see the module docs).
        let counter = acquired.iter().map(|(_, c, _)| *c).max().unwrap_or(0) + 1;
        let floor = acquired.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
        let fence = counter.max(floor);
        let fence_s = fence.to_string();
        let mut pending: FuturesUnordered<_> = acquired
            .iter()
            .map(|(i, _, _)| {
                let m = &self.masters[*i];
                let (key, fence_key, fence_s, fence_ttl) = (&key, &fence_key, &fence_s, &fence_ttl);
                async move {
                    self.run::<i64>(
                        m,
                        &self.scripts.store_fence,
                        &[key, fence_key],
                        &[token, fence_s, fence_ttl],
                    )
                    .await
                }
            })
            .collect();
        let mut stored = 0;
        let mut failed = 0;
        while let Some(r) = pending.next().await {
            if matches!(r, Ok(1)) {
                stored += 1;
            } else {
                failed += 1;
            }
            if stored >= self.quorum || failed > acquired.len() - self.quorum {
                break;
            }
        }
        drop(pending);
        let validity = ttl.saturating_sub(started.elapsed() + Self::drift(ttl));
        if stored < self.quorum || validity.is_zero() {
            self.release_on(name, token, fence, None).await;
            return Ok(Attempt::Busy(None));
        }
        Ok(Attempt::Acquired { fence, validity })
    }

    /// Sends the release to the masters `which` (all of them when `None`) and returns once a
    /// majority confirmed (the lock is free for the next holder then) or every master
    /// answered. Each release runs as its own task, so the rest still complete after this
    /// returns: a stalled master delays nobody, and its key expires with its TTL if it never
    /// answers. True if at least one master held the lock with this token. `fence` (0 when
    /// none was assigned) goes into the release notification.
    async fn release_on(
        &self,
        name: &str,
        token: &str,
        fence: u64,
        which: Option<&[usize]>,
    ) -> bool {
        let key = self.key(name);
        let channel = self.channel();
        let message = release_message(name, fence);
        let all: Vec<usize> = (0..self.masters.len()).collect();
        let targets = which.unwrap_or(&all);
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|&i| {
                let m = &self.masters[i];
                let (conn, script, timeout) =
                    (m.conn.get(), self.scripts.release.clone(), self.timeout);
                let (key, token, message, channel) = (
                    key.clone(),
                    token.to_string(),
                    message.clone(),
                    channel.clone(),
                );
                tokio::spawn(crate::fork::gated(async move {
                    let Ok(mut conn) = conn else { return false };
                    let mut inv = script.prepare_invoke();
                    inv.key(&key).arg(&token).arg(&channel).arg(&message);
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

    /// Releases everywhere; true if this token held the lock on at least one master.
    pub(crate) async fn release(&self, name: &str, token: &str, fence: u64) -> Result<bool> {
        Ok(self.release_on(name, token, fence, None).await)
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
            let (client, channel, waiters) = (m.sub.clone(), self.channel(), self.waiters.clone());
            match crate::fork::Background::start(move || {
                subscribe_loop(client.clone(), channel.clone(), waiters.clone())
            }) {
                Ok(b) => subs.push(b),
                Err(_) => return,
            }
        }
        self.started.store(true, Ordering::Release);
    }
}

/// Keeps one subscription to `channel` on the master reached by `client`, waking waiters by name;
/// reconnects with a bounded backoff. Ends when aborted (the lock service was dropped).
async fn subscribe_loop(client: redis::Client, channel: String, waiters: Arc<Waiters>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let mut pubsub =
                tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                // "<name hash>:<fence>" (see `release_message`).
                if let Some((hash, fence)) = parse_release_message(msg.get_payload_bytes()) {
                    waiters.wake(hash, fence);
                }
            }
            Ok::<(), String>(())
        };
        if attempt.await.is_ok() {
            backoff = Duration::from_millis(50);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
