use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::Script;

use crate::cache::{Backend, Cache};
use crate::error::{Error, Result};

mod list;

/// Length of a session id: 32 base62 characters (190 random bits).
const ID_LEN: usize = 32;
/// Field holding the creation time (Unix ms); user fields are stored as `f:<name>`.
const CREATED: &[u8] = b"_ck:created";
const FIELD_PREFIX: &[u8] = b"f:";

/// Session settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Idle timeout: a session not saved or touched for this long expires (default 30 min).
    pub idle_timeout: Duration,
    /// Absolute timeout from creation, never extended (default 12 h).
    pub absolute_timeout: Duration,
    /// An unchanged session is not touched again within this long of its last refresh
    /// (default 60 s; zero refreshes on every save).
    pub refresh_interval: Duration,
    /// Lock TTL for [`SessionStore::load_locked`] (default 30 s).
    pub lock_ttl: Duration,
    /// Longest wait for a locked session (default 10 s).
    pub lock_wait: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            refresh_interval: Duration::from_secs(60),
            lock_ttl: Duration::from_secs(30),
            lock_wait: Duration::from_secs(10),
        }
    }
}

impl SessionOptions {
    /// Sets both timeouts.
    pub fn with_timeouts(mut self, idle: Duration, absolute: Duration) -> Self {
        self.idle_timeout = idle;
        self.absolute_timeout = absolute;
        self
    }
    /// Sets the refresh interval for unchanged sessions.
    pub fn with_refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }
    /// Sets the lock TTL and the longest wait for a lock.
    pub fn with_lock(mut self, ttl: Duration, wait: Duration) -> Self {
        self.lock_ttl = ttl;
        self.lock_wait = wait;
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.idle_timeout < Duration::from_millis(1) {
            return Err(Error::invalid("idle_timeout", "must be at least 1ms"));
        }
        if self.absolute_timeout < self.idle_timeout.min(Duration::from_millis(1))
            || self.absolute_timeout.is_zero()
        {
            return Err(Error::invalid("absolute_timeout", "must be more than 0"));
        }
        crate::lock::check_ttl(self.lock_ttl).map_err(|e| match e {
            Error::InvalidArgument { message, .. } => Error::invalid("lock_ttl", message),
            other => other,
        })?;
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new session id: 32 characters of `[A-Za-z0-9]` from the OS CSPRNG (190 bits).
///
/// Base62 rather than base64url: PHP's session layer refuses ids containing `_`, and
/// `-`/`_` are awkward in some cookie parsers; every id made here is valid everywhere. Bytes
/// are drawn by rejection sampling (values >= 248 are discarded) so every character is
/// equally likely.
fn new_id() -> Result<String> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(ID_LEN);
    while out.len() < ID_LEN {
        let mut b = [0u8; 48];
        getrandom::fill(&mut b)
            .map_err(|e| Error::Internal(format!("no OS randomness for a session id: {e}")))?;
        for byte in b {
            if byte < 248 && out.len() < ID_LEN {
                out.push(ALPHABET[(byte % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// `id` as a string if it has the exact shape of an id this store hands out.
pub(crate) fn parse_id(id: &[u8]) -> Option<&str> {
    std::str::from_utf8(id)
        .ok()
        .filter(|s| valid_id(s.as_bytes()))
}

/// True if `id` has the shape of a session id: 32 URL-safe characters (`[A-Za-z0-9_-]`).
/// Ids made here are base62; `-` and `_` are accepted too so stores driven by other
/// frameworks' ids (express-session's 24-byte base64url ids) work.
pub(crate) fn valid_id(id: &[u8]) -> bool {
    id.len() == ID_LEN
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// One session as a request sees it: loaded fields plus the changes made since the load.
#[derive(Clone)]
pub struct Session {
    id: String,
    fields: BTreeMap<String, Bytes>,
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
    created_ms: u64,
    is_new: bool,
    lock_token: Option<String>,
    refreshed: Instant,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id is a credential: show only its start.
        f.debug_struct("Session")
            .field("id", &format!("{}…", &self.id[..6.min(self.id.len())]))
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("modified", &self.is_modified())
            .field("locked", &self.lock_token.is_some())
            .finish()
    }
}

impl Session {
    fn fresh(
        id: String,
        fields: BTreeMap<String, Bytes>,
        created_ms: u64,
        is_new: bool,
        lock_token: Option<String>,
    ) -> Session {
        Session {
            id,
            fields,
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
            created_ms,
            is_new,
            lock_token,
            refreshed: Instant::now(),
        }
    }

    /// The session id (send it to the client in a cookie).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.fields.get(name)
    }
    /// Sets a field (written by the next save).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        self.removed.remove(&name);
        self.changed.insert(name.clone());
        self.fields.insert(name, value.into());
    }
    /// Removes a field (deleted by the next save).
    pub fn remove(&mut self, name: &str) {
        if self.fields.remove(name).is_some() || !self.is_new {
            self.changed.remove(name);
            self.removed.insert(name.to_string());
        }
    }
    /// A field decoded from JSON; `None` if absent. Fails on invalid JSON for `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.get(name)
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| Error::invalid(name, format!("not valid JSON for this type: {e}")))
            })
            .transpose()
    }
    /// Sets a field to `value` encoded as JSON.
    pub fn set_json<T: serde::Serialize>(
        &mut self,
        name: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let name = name.into();
        let bytes = serde_json::to_vec(value).map_err(|e| Error::invalid(&name, e.to_string()))?;
        self.set(name, bytes);
        Ok(())
    }
    /// Field names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(|k| k.as_str())
    }
    /// True when fields were set or removed since the load.
    pub fn is_modified(&self) -> bool {
        !self.changed.is_empty() || !self.removed.is_empty()
    }
    /// True for a session created by [`SessionStore::create`] and not saved yet.
    pub fn is_new(&self) -> bool {
        self.is_new
    }
    /// True while this request holds the session's lock.
    pub fn is_locked(&self) -> bool {
        self.lock_token.is_some()
    }
    /// Creation time, Unix milliseconds.
    pub fn created_at_ms(&self) -> u64 {
        self.created_ms
    }
}

/// Bytes counted per embedded session on top of its key, field names and values (map slot,
/// the session's header, its field map's nodes).
const MEM_SESSION_OVERHEAD: u64 = 160;
/// Operations between two sweeps of expired embedded sessions, at least (a sweep visits every
/// session, so the sweep interval grows with the number of sessions: amortised O(1) each).
const MIN_SWEEP_EVERY: usize = 64;

/// Sessions of the embedded backend, by full key: bounded by bytes and swept of expired
/// sessions, like the cache entries beside them.
///
/// - Expired sessions are removed by a sweep every `max(64, live sessions)` operations (and
///   on access), so memory does not keep sessions nobody loads again.
/// - Their bytes (keys, field names and values, [`MEM_SESSION_OVERHEAD`] each) are bounded by
///   the backend's `max_bytes` (sessions have a bound of their own, equal to the cache's):
///   beyond it, expired sessions go first, then the ones closest to expiry (like Redis's
///   `volatile-ttl`), down to 90% of the bound.
pub(crate) struct MemSessions {
    state: crate::fork::Mutex<MemState>,
}

impl MemSessions {
    /// An empty map bounded by `max_bytes`.
    pub(crate) fn new(max_bytes: u64) -> MemSessions {
        MemSessions {
            state: crate::fork::Mutex::new(MemState {
                map: HashMap::new(),
                bytes: 0,
                max_bytes,
                until_sweep: MIN_SWEEP_EVERY,
            }),
        }
    }

    /// Sessions held (live or not yet swept) and their counted bytes.
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        let s = self.state.lock();
        (s.map.len(), s.bytes)
    }
}

pub(crate) struct MemState {
    map: HashMap<Vec<u8>, MemSession>,
    /// Sum of the sessions' weights.
    bytes: u64,
    max_bytes: u64,
    /// Operations left before the next sweep.
    until_sweep: usize,
}

pub(crate) struct MemSession {
    fields: BTreeMap<String, Bytes>,
    created_ms: u64,
    expires: Instant,
    lock: Option<(String, Instant)>,
    /// Counted bytes (see [`MemSessions`]).
    weight: u64,
}

impl MemSession {
    fn new(created_ms: u64, expires: Instant) -> MemSession {
        MemSession {
            fields: BTreeMap::new(),
            created_ms,
            expires,
            lock: None,
            weight: 0,
        }
    }
    fn weigh(&self, key: &[u8]) -> u64 {
        MEM_SESSION_OVERHEAD
            + key.len() as u64
            + self
                .fields
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
    }
}

impl MemState {
    /// Counts one operation: sweeps expired sessions every so often.
    fn tick(&mut self, now: Instant) {
        self.until_sweep = self.until_sweep.saturating_sub(1);
        if self.until_sweep == 0 {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, s| {
            let live = s.expires > now;
            if !live {
                freed += s.weight;
            }
            live
        });
        self.bytes -= freed;
        self.until_sweep = self.map.len().max(MIN_SWEEP_EVERY);
    }

    /// The live session at `key` (an expired one is removed).
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut MemSession> {
        if self.map.get(key).is_some_and(|s| s.expires <= now) {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn remove(&mut self, key: &[u8]) -> Option<MemSession> {
        let s = self.map.remove(key)?;
        self.bytes -= s.weight;
        Some(s)
    }

    fn insert(&mut self, key: Vec<u8>, mut s: MemSession, now: Instant) {
        self.remove(&key);
        s.weight = s.weigh(&key);
        self.bytes += s.weight;
        self.map.insert(key, s);
        self.bound(now);
    }

    /// Counts `key`'s session again after its fields changed.
    fn reweigh(&mut self, key: &[u8], now: Instant) {
        if let Some(s) = self.map.get_mut(key) {
            let w = s.weigh(key);
            self.bytes = self.bytes - s.weight + w;
            s.weight = w;
            self.bound(now);
        }
    }

    /// Keeps the bytes within `max_bytes`: expired sessions first, then the ones closest to
    /// expiry, down to 90% of the bound (so a full map does not sort on every write).
    fn bound(&mut self, now: Instant) {
        if self.bytes <= self.max_bytes {
            return;
        }
        self.sweep(now);
        if self.bytes <= self.max_bytes {
            return;
        }
        let target = self.max_bytes / 10 * 9;
        let mut by_expiry: Vec<(Instant, Vec<u8>)> = self
            .map
            .iter()
            .map(|(k, s)| (s.expires, k.clone()))
            .collect();
        by_expiry.sort_unstable();
        for (_, k) in by_expiry {
            if self.bytes <= target {
                break;
            }
            self.remove(&k);
        }
    }
}

enum Storage {
    /// The embedded backend's session map (`MemoryBackend::sessions`).
    Memory(Arc<MemSessions>),
    Redis(Arc<Backend>),
}

struct Scripts {
    save: Script,
    load_locked: Script,
    save_unlock: Script,
    touch: Script,
    rename: Script,
}

/// Where sessions live. Cheap to clone; thread-safe.
///
/// Keys (see `docs/keyspace.md`): the session `<namespace>:s:{<id>}` (a hash, TTL = the idle
/// or absolute timeout, whichever is sooner) and, while a request holds it, its lock
/// `<namespace>:sl:{<id>}` (TTL `lock_ttl`, deleted by the save or unlock). Nothing else: no
/// fence counter, no pub/sub message (a session id is a credential).
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    prefix: Vec<u8>,
    options: SessionOptions,
    scripts: Scripts,
    /// `<namespace>:sl:`, the session locks' sub-space.
    lock_prefix: Vec<u8>,
    /// Monitoring counters (issue #15).
    stats: crate::metrics::SessionCounters,
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore")
            .field("prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .field("options", &self.inner.options)
            .finish()
    }
}

/// SAVE: KEYS[1] session. From `argv[b]`: mode ('create' | 'update'), ttl ms, created ms,
/// number of fields to set, then name/value pairs, then names to delete. Returns 1, or 0 when
/// an update finds the session gone (expired or destroyed: it is not resurrected). An update
/// refreshes the TTL first (PEXPIRE answers 0 for a missing key: the existence check for
/// free); fields are set and deleted with one HSET / HDEL each (in bounded batches).
const LUA_SAVE_FN: &str = r"
local function ck_batches(cmd, k, argv, from, to, step)
  while from <= to do
    local last = math.min(to, from + step - 1)
    redis.call(cmd, k, unpack(argv, from, last))
    from = last + 1
  end
end
local function ck_save(k, argv, b)
  local create = argv[b] == 'create'
  if create then
    redis.call('HSET', k, '_ck:created', argv[b + 2])
  elseif redis.call('PEXPIRE', k, argv[b + 1]) == 0 then
    return 0
  end
  local i = b + 4 + 2 * tonumber(argv[b + 3])
  ck_batches('HSET', k, argv, b + 4, i - 1, 2000)
  ck_batches('HDEL', k, argv, i, #argv, 2000)
  if create then redis.call('PEXPIRE', k, argv[b + 1]) end
  return 1
end
";

impl SessionStore {
    /// A store using `cache`'s backend and namespace. Fails on invalid options.
    pub fn new(cache: &Cache, options: SessionOptions) -> Result<SessionStore> {
        options.validate()?;
        let storage = match &*cache.backend {
            Backend::Memory(m) => Storage::Memory(m.sessions.clone()),
            _ => Storage::Redis(cache.backend.clone()),
        };
        let prefix = format!("{}:s:", cache.namespace()).into_bytes();
        let lock_prefix = format!("{}:sl:", cache.namespace()).into_bytes();
        Ok(SessionStore {
            inner: Arc::new(Inner {
                storage,
                prefix,
                options,
                scripts: Scripts {
                    save: Script::new(&format!("{LUA_SAVE_FN}return ck_save(KEYS[1], ARGV, 1)")),
                    load_locked: Script::new(LUA_LOAD_LOCKED),
                    // KEYS: session, lock. ARGV: token, then the save arguments (none: only
                    // unlock). No PUBLISH: waiters poll (the id is a credential).
                    save_unlock: Script::new(&format!(
                        "{LUA_SAVE_FN}
                         if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
                         local saved = 1
                         if #ARGV > 1 then saved = ck_save(KEYS[1], ARGV, 2) end
                         redis.call('DEL', KEYS[2])
                         return saved"
                    )),
                    touch: Script::new("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return 0"),
                    // KEYS: old, new. ARGV: ttl ms. Copies the hash (also across cluster slots
                    // it is called per node, see regenerate) then deletes the old one.
                    rename: Script::new(
                        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                         redis.call('RENAME', KEYS[1], KEYS[2])
                         redis.call('PEXPIRE', KEYS[2], ARGV[1])
                         return 1",
                    ),
                },
                lock_prefix,
                stats: Default::default(),
            }),
        })
    }

    /// The embedded session map, locked.
    fn mem<'a>(&self, m: &'a MemSessions) -> crate::fork::MutexGuard<'a, MemState> {
        let mut g = m.state.lock();
        g.tick(Instant::now());
        g
    }

    fn key(&self, id: &str) -> Vec<u8> {
        // {id}: the session and its lock share a Redis Cluster hash slot.
        tagged(&self.inner.prefix, id)
    }

    fn lock_key(&self, id: &str) -> Vec<u8> {
        tagged(&self.inner.lock_prefix, id)
    }

    /// Remaining lifetime for a session created at `created_ms`: min(idle, absolute left).
    fn ttl_for(&self, created_ms: u64) -> Duration {
        let age = Duration::from_millis(now_ms().saturating_sub(created_ms));
        self.inner
            .options
            .idle_timeout
            .min(self.inner.options.absolute_timeout.saturating_sub(age))
    }

    /// A new, empty session with a fresh id. Nothing is stored until [`SessionStore::save`].
    pub fn create(&self) -> Result<Session> {
        crate::metrics::LockCounters::inc(&self.inner.stats.created);
        tracing::debug!(target: "clusterkit::session", "session created");
        Ok(Session::fresh(
            new_id()?,
            BTreeMap::new(),
            now_ms(),
            true,
            None,
        ))
    }

    /// Loads session `id`; `None` if it is unknown, expired (idle or absolute) or `id` is
    /// malformed (wrong length or characters, non-UTF-8): a miss, never a lookup of an
    /// attacker-chosen key. One round trip.
    pub async fn load(&self, id: &[u8]) -> Result<Option<Session>> {
        let r = self.load_uncounted(id).await;
        self.inner.stats.count_load(&r);
        tracing::trace!(target: "clusterkit::session", ok = r.is_ok(),
            found = matches!(r, Ok(Some(_))), "session loaded");
        r
    }

    /// This store's counters (monitoring).
    pub fn stats(&self) -> crate::metrics::SessionStats {
        self.inner.stats.read()
    }

    async fn load_uncounted(&self, id: &[u8]) -> Result<Option<Session>> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        let raw = match &self.inner.storage {
            Storage::Memory(b) => {
                let key = self.key(id);
                self.mem(b)
                    .live(&key, Instant::now())
                    .map(|s| (s.fields.clone(), s.created_ms))
            }
            Storage::Redis(b) => {
                let key = self.key(id);
                let flat: Vec<Vec<u8>> = eval(
                    b,
                    id,
                    &Script::new("return redis.call('HGETALL', KEYS[1])"),
                    &[&key],
                    &[],
                )
                .await?;
                decode(flat)
            }
        };
        Ok(raw.and_then(|(fields, created_ms)| self.session(id, fields, created_ms, None)))
    }

    fn session(
        &self,
        id: &str,
        fields: BTreeMap<String, Bytes>,
        created_ms: u64,
        lock: Option<String>,
    ) -> Option<Session> {
        if self.ttl_for(created_ms).is_zero() {
            return None; // past the absolute timeout
        }
        Some(Session::fresh(
            id.to_string(),
            fields,
            created_ms,
            false,
            lock,
        ))
    }

    /// Loads session `id` and locks it, in one round trip, waiting up to `lock_wait` for
    /// another request's lock (retrying with jittered backoff from 5 to 100 ms, never past the
    /// holder's remaining lock TTL). The lock is released by
    /// [`SessionStore::save`] (or expires after `lock_ttl`). `None` like [`SessionStore::load`]
    /// (no lock is kept then).
    ///
    /// Fails with [`Error::Timeout`] when the lock is still held after `lock_wait`.
    pub async fn load_locked(&self, id: &[u8]) -> Result<Option<Session>> {
        let started = Instant::now();
        let r = self.load_locked_uncounted(id).await;
        self.inner.stats.count_load(&r);
        self.inner.stats.lock_wait.record(started.elapsed());
        r
    }

    async fn load_locked_uncounted(&self, id: &[u8]) -> Result<Option<Session>> {
        let Some(id) = parse_id(id) else {
            return Ok(None);
        };
        let token = crate::lock::new_token()?;
        let deadline = Instant::now() + self.inner.options.lock_wait;
        let mut backoff = Duration::from_millis(5);
        loop {
            let hint = match &self.inner.storage {
                Storage::Memory(b) => {
                    let key = self.key(id);
                    let mut map = self.mem(b);
                    let now = Instant::now();
                    match map.live(&key, now) {
                        Some(s) => match &s.lock {
                            Some((_, until)) if *until > now => Some(*until - now),
                            _ => {
                                s.lock = Some((token.clone(), now + self.inner.options.lock_ttl));
                                let (fields, created) = (s.fields.clone(), s.created_ms);
                                drop(map);
                                return Ok(self.session(id, fields, created, Some(token)));
                            }
                        },
                        _ => return Ok(None),
                    }
                }
                Storage::Redis(b) => {
                    let key = self.key(id);
                    let lock = self.lock_key(id);
                    let ttl = (self.inner.options.lock_ttl.as_millis() as u64).to_string();
                    let locked = match load_locked_pipeline(b, id, &key, &lock, &token, &ttl).await
                    {
                        Some(r) => {
                            let (locked, missing_but_locked) = r?;
                            if missing_but_locked {
                                // The lock was taken for a session that does not exist: give
                                // it back (one more round trip, for unknown ids only).
                                let _ = self.release_lock(b, id, &token).await;
                            }
                            locked
                        }
                        None => {
                            let v: redis::Value = eval(
                                b,
                                id,
                                &self.inner.scripts.load_locked,
                                &[&key, &lock],
                                &[token.as_bytes(), ttl.as_bytes()],
                            )
                            .await?;
                            parse_locked(v)?
                        }
                    };
                    match locked {
                        // No such session: no lock was taken, nothing was written.
                        Locked::Missing => return Ok(None),
                        Locked::Loaded(flat) => {
                            let Some((fields, created)) = decode(flat) else {
                                // No such session: give the lock back.
                                let _ = self.release_lock(b, id, &token).await;
                                return Ok(None);
                            };
                            return Ok(self.session(id, fields, created, Some(token)));
                        }
                        Locked::Busy(pttl) => pttl,
                    }
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "session is locked by another request for more than {:?}",
                    self.inner.options.lock_wait
                )));
            }
            if backoff == Duration::from_millis(5) {
                // The first wait of this load (backoff still at its start).
                crate::metrics::LockCounters::inc(&self.inner.stats.lock_waits);
                tracing::debug!(target: "clusterkit::session", "session lock busy: waiting");
            }
            let mut sleep = backoff.mul_f64(0.5 + crate::rng::next_u64() as f64 / u64::MAX as f64);
            if let Some(h) = hint {
                sleep = sleep.min(h + Duration::from_millis(1));
            }
            tokio::time::sleep(sleep.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Releases the session's lock without writing anything (a request that read the session
    /// and decided not to save it, like PHP's `session_abort()`); the unsaved changes stay in
    /// `s`. Nothing happens for a session that holds no lock. A lock already lost (its
    /// `lock_ttl` passed) is not an error here: there is nothing left to release.
    pub async fn unlock(&self, s: &mut Session) -> Result<()> {
        let Some(token) = s.lock_token.take() else {
            return Ok(());
        };
        match &self.inner.storage {
            Storage::Memory(b) => {
                let key = self.key(&s.id);
                let mut map = self.mem(b);
                if let Some(m) = map.live(&key, Instant::now()) {
                    if matches!(&m.lock, Some((held, _)) if *held == token) {
                        m.lock = None;
                    }
                }
                Ok(())
            }
            Storage::Redis(b) => self.release_lock(b, &s.id, &token).await,
        }
    }

    async fn release_lock(&self, b: &Backend, id: &str, token: &str) -> Result<()> {
        let key = self.key(id);
        let lock = self.lock_key(id);
        eval::<i64>(
            b,
            id,
            &self.inner.scripts.save_unlock,
            &[&key, &lock],
            &[token.as_bytes()],
        )
        .await
        .map(|_| ())
    }

    /// Saves the changes made since the load (only those: delta save), refreshes the idle
    /// timeout and releases the session's lock if this request holds it; one round trip. An
    /// unchanged, unlocked session within `refresh_interval` of its last refresh costs nothing.
    ///
    /// Fails with [`Error::NotFound`] if the session expired or was destroyed meanwhile (it is
    /// not resurrected), or [`Error::Conflict`] if its lock was lost.
    pub async fn save(&self, s: &mut Session) -> Result<()> {
        tracing::trace!(target: "clusterkit::session", modified = s.is_modified(), "session save");
        let ttl = self.ttl_for(s.created_ms);
        if ttl.is_zero() {
            self.destroy(s.id.as_bytes()).await?;
            return Err(Error::NotFound(
                "the session passed its absolute timeout".into(),
            ));
        }
        if !s.is_modified()
            && !s.is_new
            && s.lock_token.is_none()
            && s.refreshed.elapsed() < self.inner.options.refresh_interval
        {
            return Ok(());
        }
        let saved = match &self.inner.storage {
            Storage::Memory(b) => {
                let key = self.key(&s.id);
                let mut map = self.mem(b);
                let now = Instant::now();
                if s.is_new {
                    map.insert(key.clone(), MemSession::new(s.created_ms, now + ttl), now);
                }
                let saved = match map.live(&key, now) {
                    Some(m) => {
                        if let Some(t) = &s.lock_token {
                            if !matches!(&m.lock, Some((held, until)) if held == t && *until > now)
                            {
                                return Err(Error::Conflict(
                                    "the session lock was lost (lock_ttl passed)".into(),
                                ));
                            }
                            m.lock = None;
                        }
                        for k in &s.changed {
                            if let Some(v) = s.fields.get(k) {
                                m.fields.insert(k.clone(), v.clone());
                            }
                        }
                        for k in &s.removed {
                            m.fields.remove(k);
                        }
                        m.expires = now + ttl;
                        true
                    }
                    None => false,
                };
                if saved {
                    map.reweigh(&key, now);
                }
                saved
            }
            Storage::Redis(b) => {
                let key = self.key(&s.id);
                let ttl_ms = (ttl.as_millis() as u64).max(1).to_string();
                let created = s.created_ms.to_string();
                let mode: &[u8] = if s.is_new { b"create" } else { b"update" };
                let names: Vec<Vec<u8>> = s.changed.iter().map(|k| field(k)).collect();
                let dels: Vec<Vec<u8>> = s.removed.iter().map(|k| field(k)).collect();
                let n = names.len().to_string();
                let mut args: Vec<&[u8]> =
                    vec![mode, ttl_ms.as_bytes(), created.as_bytes(), n.as_bytes()];
                for (name, k) in names.iter().zip(&s.changed) {
                    args.push(name);
                    args.push(s.fields.get(k).map(|v| &v[..]).unwrap_or(b""));
                }
                args.extend(dels.iter().map(|d| d.as_slice()));
                match &s.lock_token {
                    None => {
                        eval::<i64>(b, &s.id, &self.inner.scripts.save, &[&key], &args).await? == 1
                    }
                    Some(t) => {
                        let lock = self.lock_key(&s.id);
                        let mut all: Vec<&[u8]> = vec![t.as_bytes()];
                        all.extend(args);
                        match eval::<i64>(
                            b,
                            &s.id,
                            &self.inner.scripts.save_unlock,
                            &[&key, &lock],
                            &all,
                        )
                        .await?
                        {
                            -1 => {
                                return Err(Error::Conflict(
                                    "the session lock was lost (lock_ttl passed)".into(),
                                ))
                            }
                            r => r == 1,
                        }
                    }
                }
            }
        };
        if !saved {
            return Err(Error::NotFound(
                "the session expired or was destroyed".into(),
            ));
        }
        s.changed.clear();
        s.removed.clear();
        s.is_new = false;
        s.lock_token = None;
        s.refreshed = Instant::now();
        Ok(())
    }

    /// Refreshes the idle timeout of session `id` without loading it; false if it does not
    /// exist (or the id is malformed).
    pub async fn touch(&self, id: &[u8]) -> Result<bool> {
        let Some(id) = parse_id(id) else {
            return Ok(false);
        };
        match &self.inner.storage {
            Storage::Memory(b) => {
                let key = self.key(id);
                let mut map = self.mem(b);
                let now = Instant::now();
                let Some(s) = map.live(&key, now) else {
                    return Ok(false);
                };
                let ttl = self.ttl_for(s.created_ms);
                s.expires = now + ttl;
                Ok(!ttl.is_zero())
            }
            Storage::Redis(b) => {
                let Some(s) = self.load(id.as_bytes()).await? else {
                    return Ok(false);
                };
                let ttl = (self.ttl_for(s.created_ms).as_millis() as u64)
                    .max(1)
                    .to_string();
                Ok(eval::<i64>(
                    b,
                    id,
                    &self.inner.scripts.touch,
                    &[&self.key(id)],
                    &[ttl.as_bytes()],
                )
                .await?
                    == 1)
            }
        }
    }

    /// Gives the session a new id with the same data and creation time; the old id stops
    /// working at once (session fixation defence: call it at login). Unsaved changes are
    /// saved first.
    pub async fn regenerate(&self, s: &mut Session) -> Result<()> {
        if s.is_new {
            s.id = new_id()?;
            return Ok(());
        }
        self.save(s).await?;
        let new = new_id()?;
        let moved = match &self.inner.storage {
            Storage::Memory(b) => {
                let mut map = self.mem(b);
                let now = Instant::now();
                let old = self.key(&s.id);
                match map.live(&old, now).is_some() {
                    true => {
                        if let Some(v) = map.remove(&old) {
                            map.insert(self.key(&new), v, now);
                        }
                        true
                    }
                    false => false,
                }
            }
            Storage::Redis(b) => {
                let ttl = (self.ttl_for(s.created_ms).as_millis() as u64)
                    .max(1)
                    .to_string();
                if same_node(b) {
                    eval::<i64>(
                        b,
                        &s.id,
                        &self.inner.scripts.rename,
                        &[&self.key(&s.id), &self.key(&new)],
                        &[ttl.as_bytes()],
                    )
                    .await?
                        == 1
                } else {
                    // The ids may live on different nodes: write the data under the new id,
                    // then delete the old one.
                    let mut copy = s.clone();
                    copy.id = new.clone();
                    copy.is_new = true;
                    copy.changed = copy.fields.keys().cloned().collect();
                    copy.lock_token = None;
                    Box::pin(self.save(&mut copy)).await?;
                    self.destroy(s.id.as_bytes()).await?;
                    true
                }
            }
        };
        if !moved {
            return Err(Error::NotFound(
                "the session expired or was destroyed".into(),
            ));
        }
        s.id = new;
        Ok(())
    }

    /// Deletes session `id` (a malformed id is a no-op). Returns whether it existed.
    pub async fn destroy(&self, id: &[u8]) -> Result<bool> {
        tracing::debug!(target: "clusterkit::session", "session destroy");
        let Some(id) = parse_id(id) else {
            return Ok(false);
        };
        match &self.inner.storage {
            Storage::Memory(b) => {
                let mut map = self.mem(b);
                let key = self.key(id);
                let live = map.live(&key, Instant::now()).is_some();
                map.remove(&key);
                Ok(live)
            }
            Storage::Redis(b) => Ok(eval::<i64>(
                b,
                id,
                &Script::new("return redis.call('DEL', KEYS[1])"),
                &[&self.key(id)],
                &[],
            )
            .await?
                == 1),
        }
    }
}

fn field(name: &str) -> Vec<u8> {
    let mut f = FIELD_PREFIX.to_vec();
    f.extend_from_slice(name.as_bytes());
    f
}

/// HGETALL's flat reply → (user fields, created ms); `None` for a missing session.
pub(crate) fn decode(flat: Vec<Vec<u8>>) -> Option<(BTreeMap<String, Bytes>, u64)> {
    if flat.is_empty() {
        return None;
    }
    let mut fields = BTreeMap::new();
    let mut created = None;
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if k == CREATED {
            created = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
        } else if let Some(name) = k.strip_prefix(FIELD_PREFIX) {
            if let Ok(name) = String::from_utf8(name.to_vec()) {
                fields.insert(name, Bytes::from(v));
            }
        }
    }
    // A hash without a creation time was not written by this store: treat as missing.
    created.map(|c| (fields, c))
}

pub(crate) enum Locked {
    Loaded(Vec<Vec<u8>>),
    Busy(Option<Duration>),
    /// The session does not exist (no lock was taken).
    Missing,
}

/// `prefix` + `{id}`.
fn tagged(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len() + 2);
    k.extend_from_slice(prefix);
    k.push(b'{');
    k.extend_from_slice(id.as_bytes());
    k.push(b'}');
    k
}

/// LOAD LOCKED: KEYS[1] session, KEYS[2] its lock; ARGV token, lock ttl ms. `{2}` when the
/// session does not exist (an unknown id leaves no key: a lock taken for it is deleted in the same script), `{1, HGETALL}`
/// once locked, `{0, pttl}` while another request holds the lock. No fence counter: a
/// session lock is released by its save, which checks the token.
///
/// The common case (the lock is free) runs two commands: SET NX, then HGETALL; a session
/// found missing then has its lock deleted again in the same script (no key is left).
const LUA_LOAD_LOCKED: &str = r"
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local h = redis.call('HGETALL', KEYS[1])
  if #h == 0 then
    redis.call('DEL', KEYS[2])
    return {2}
  end
  return {1, h}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {2} end
return {0, redis.call('PTTL', KEYS[2])}";

pub(crate) fn parse_locked(v: redis::Value) -> Result<Locked> {
    use redis::Value;
    let Value::Array(items) = v else {
        return Err(Error::Backend(
            "unexpected reply to the session lock script".into(),
        ));
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    match (items.first().and_then(int), items.get(1).and_then(int)) {
        (Some(2), None) if items.len() == 1 => Ok(Locked::Missing),
        (Some(1), None) => {
            let flat = match items.get(1) {
                Some(Value::Array(f)) => f
                    .iter()
                    .map(|x| match x {
                        Value::BulkString(b) => b.clone(),
                        _ => Vec::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Locked::Loaded(flat))
        }
        (Some(0), pttl) => Ok(Locked::Busy(
            pttl.filter(|p| *p > 0)
                .map(|p| Duration::from_millis(p as u64)),
        )),
        _ => Err(Error::Backend(
            "unexpected reply to the session lock script".into(),
        )),
    }
}

/// LOAD LOCKED without a script, for one server or a pool's owner (`None` for a Redis
/// Cluster, which runs [`LUA_LOAD_LOCKED`]): `SET lock token NX PX ttl`, `HGETALL session` and
/// `PTTL lock` in one pipeline (one round trip, no Lua: a script call costs the server about as
/// much as the whole pipeline). The answer, and whether the lock was taken for a session that
/// does not exist (the caller releases it then).
///
/// Same outcomes as the script: the lock is taken only when it was free; with the lock taken
/// the HGETALL that follows runs while this request holds it (what another request's locked
/// save could change is excluded); a missing session is `Missing` whether or not a lock exists.
async fn load_locked_pipeline(
    b: &Backend,
    id: &str,
    key: &[u8],
    lock: &[u8],
    token: &str,
    ttl_ms: &str,
) -> Option<Result<(Locked, bool)>> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(lock)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .cmd("HGETALL")
        .arg(key)
        .cmd("PTTL")
        .arg(lock);
    let r: Result<(redis::Value, Vec<Vec<u8>>, i64)> = match b {
        Backend::Redis(c) => c.pipeline(&pipe).await,
        Backend::Distributed(d) => {
            let (conn, node) = match d.owner_conn(id.as_bytes()) {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            let started = Instant::now();
            let r = conn.pipeline(&pipe).await;
            d.report(&node, r.is_ok(), started.elapsed());
            r
        }
        _ => return None,
    };
    Some(r.map(|(set, flat, pttl)| {
        let taken = !matches!(set, redis::Value::Nil);
        match (taken, flat.is_empty()) {
            (true, false) => (Locked::Loaded(flat), false),
            (true, true) => (Locked::Missing, true),
            (false, true) => (Locked::Missing, false),
            (false, false) => (
                Locked::Busy((pttl > 0).then(|| Duration::from_millis(pttl as u64))),
                false,
            ),
        }
    }))
}

/// True when every key lives on one server (so a two-key script can run).
fn same_node(b: &Backend) -> bool {
    matches!(b, Backend::Redis(_))
}

/// Runs a script on the backend's node for session `id` (its owner in a pool, its slot's
/// master in a cluster, the one server otherwise).
async fn eval<T: redis::FromRedisValue>(
    b: &Backend,
    id: &str,
    script: &Script,
    keys: &[&[u8]],
    args: &[&[u8]],
) -> Result<T> {
    match b {
        Backend::Redis(c) => c.eval(script, keys, args).await,
        Backend::RedisCluster(c) => c.eval(script, keys, args).await,
        Backend::Distributed(d) => {
            let (conn, node) = d.owner_conn(id.as_bytes())?;
            let started = Instant::now();
            let r = conn.eval(script, keys, args).await;
            d.report(&node, r.is_ok(), started.elapsed());
            r
        }
        Backend::Memory(_) => Err(Error::Internal("memory sessions do not run scripts".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryOptions;

    fn usage(cache: &Cache) -> (usize, u64) {
        match &*cache.backend {
            Backend::Memory(m) => m.sessions.usage(),
            _ => unreachable!("a memory cache"),
        }
    }

    #[tokio::test]
    async fn embedded_sessions_are_swept_once_expired() {
        let cache = Cache::memory("app", MemoryOptions::default()).unwrap();
        let store = SessionStore::new(
            &cache,
            SessionOptions::default()
                .with_timeouts(Duration::from_millis(30), Duration::from_secs(60)),
        )
        .unwrap();
        for _ in 0..500 {
            let mut s = store.create().unwrap();
            s.set("k", "v");
            store.save(&mut s).await.unwrap();
        }
        assert_eq!(usage(&cache).0, 500);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Operations on other ids (misses) drive the sweep: no session is loaded again.
        for i in 0..600 {
            let id = format!("{i:032}");
            assert!(store.load(id.as_bytes()).await.unwrap().is_none());
        }
        assert_eq!(usage(&cache), (0, 0), "expired sessions stayed in memory");
    }

    #[tokio::test]
    async fn embedded_sessions_are_bounded_by_max_bytes() {
        let max = 64 * 1024;
        let cache = Cache::memory("app", MemoryOptions::default().with_max_bytes(max)).unwrap();
        let store = SessionStore::new(&cache, SessionOptions::default()).unwrap();
        let mut last = None;
        for _ in 0..1000 {
            let mut s = store.create().unwrap();
            s.set("blob", vec![b'x'; 500]);
            store.save(&mut s).await.unwrap();
            last = Some(s.id().to_string());
        }
        let (n, bytes) = usage(&cache);
        assert!(
            bytes <= max,
            "{bytes} bytes in {n} sessions over the {max} bound"
        );
        assert!(n > 50, "the bound kept only {n} sessions");
        // The newest session (furthest from expiry) is kept.
        let last = last.unwrap();
        assert!(store.load(last.as_bytes()).await.unwrap().is_some());
        // Weights follow changes: removing the fields gives the bytes back.
        let mut s = store.load(last.as_bytes()).await.unwrap().unwrap();
        s.remove("blob");
        store.save(&mut s).await.unwrap();
        assert!(usage(&cache).1 <= bytes - 500);
    }
}
