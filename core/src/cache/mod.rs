//! Distributed cache: one PSR-16-shaped interface over several backends.
//!
//! - [`Cache::memory`]: the embedded in-process backend (default), bounded by bytes, with TTL.
//! - `Cache::redis`: one Redis server (see the `redis` module).
//! - `Cache::distributed`: keys sharded over a pool of Redis nodes by consistent hashing,
//!   replicated, with failover.
//! - `Cache::redis_cluster`: a Redis Cluster (server-side sharding by hash slot), for users
//!   who outgrow client-side sharding.
//!
//! Keys and values are bytes. Every key is stored under the cache's namespace, in the cache's
//! own sub-space (`<namespace>:c:<key>`, see `docs/keyspace.md`), so applications sharing
//! servers do not see each other's keys, and [`Cache::clear`] removes only this namespace's
//! cache entries: never its sessions, locks, fences or registry entries, never another
//! namespace (a namespace contains no `:`, so `a` cannot reach `a:b`'s or `ab`'s keys). Limits: a key is 1..=[`MAX_KEY_LEN`] bytes, a
//! value at most [`CacheLimits::max_value_len`] bytes (default [`DEFAULT_MAX_VALUE_LEN`]). A TTL
//! of zero means "expire now" (the key is deleted, as PSR-16 asks for a TTL of 0 or less);
//! `None` means no expiry.

pub(crate) mod compute;
pub mod config;
pub(crate) mod distributed;
mod memory;
pub(crate) mod redis;
pub(crate) mod redis_cluster;
pub(crate) mod resp;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use bytes::Bytes;

use crate::error::{Error, Result};

pub use compute::DEFAULT_BETA;
pub use distributed::{DistributedOptions, ReadFailure, WriteQuorum};
pub use memory::{MemoryOptions, ENTRY_OVERHEAD};
pub use redis::RedisOptions;

/// Longest key, in bytes, not counting the namespace.
pub const MAX_KEY_LEN: usize = 4096;
/// Default largest value, in bytes (16 MiB).
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 << 20;
/// Largest configurable value limit (Redis's own limit is 512 MiB).
pub const MAX_VALUE_LEN_LIMIT: usize = 512 << 20;
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Longest cache TTL (100 years): a longer one is a caller's bug (an unconverted unit, a wrapped
/// negative number); near `u64::MAX` an embedded deadline would overflow and Redis would reject
/// the `PX`. The C ABI's `CK_MAX_CACHE_TTL_MS` and PHP's `DistributedCache::MAX_TTL_SECONDS`
/// mirror it.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Fails with `invalid_argument` naming `ttl` when `ttl` is longer than [`MAX_TTL`].
pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<()> {
    match ttl {
        Some(t) if t > MAX_TTL => Err(Error::invalid(
            "ttl",
            format!(
                "must be at most {} s, got {} s",
                MAX_TTL.as_secs(),
                t.as_secs()
            ),
        )),
        _ => Ok(()),
    }
}

/// The cache's sub-space marker: cache entries are `<namespace>:c:<key>`.
pub(crate) const CACHE_SPACE: &[u8] = b":c:";

/// Escapes the glob metacharacters of `literal` for a `SCAN ... MATCH` pattern (`*`, `?`,
/// `[`, `]`, `\` get a backslash), so the pattern matches exactly `literal` followed by
/// whatever the caller appends.
pub(crate) fn glob_escape(literal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(literal.len() + 4);
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The remaining lifetime of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

/// Size limits checked before any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Largest value in bytes (default [`DEFAULT_MAX_VALUE_LEN`], at most
    /// [`MAX_VALUE_LEN_LIMIT`]).
    pub max_value_len: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_value_len: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

/// Counters of one cache handle (shared by its clones).
#[derive(Debug, Default)]
pub struct CacheMetrics {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
    /// Latency of reads from a network backend (monitoring, issue #15).
    get_latency: crate::metrics::LatencyHistogram,
}

/// A copy of the counters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Keys read and found.
    pub hits: u64,
    /// Keys read and not found.
    pub misses: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Keys written or deleted.
    pub writes: u64,
}

impl CacheMetrics {
    fn read(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// What a backend stores: full keys (namespace included), values, TTLs. `pk` is the length
/// of the namespace prefix: the distributed backend places a key by the part after it (the
/// user's key, as libmemcached hashes keys without their prefix), so every namespace places
/// a key alike and `pick_for(key)` names its node.
pub(crate) enum Backend {
    Memory(memory::MemoryBackend),
    Redis(redis::RedisConn),
    Distributed(distributed::DistributedBackend),
    RedisCluster(Box<redis_cluster::RedisClusterBackend>),
}

fn refs(keys: &[Vec<u8>]) -> Vec<&[u8]> {
    keys.iter().map(|k| k.as_slice()).collect()
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Distributed(_) => "distributed",
            Backend::RedisCluster(_) => "redis-cluster",
        }
    }
    async fn get(&self, key: &[u8], pk: usize) -> Result<Option<Bytes>> {
        match self {
            Backend::Memory(b) => b.get(key),
            Backend::Redis(b) => b.get(key).await,
            Backend::Distributed(b) => b.get(key, pk).await,
            Backend::RedisCluster(b) => b.get(key).await,
        }
    }
    async fn set(&self, key: &[u8], pk: usize, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        match self {
            Backend::Memory(b) => b.set(key, value, ttl),
            Backend::Redis(b) => b.set(key, &value, ttl).await,
            Backend::Distributed(b) => b.set(key, pk, value, ttl).await,
            Backend::RedisCluster(b) => b.set(key, &value, ttl).await,
        }
    }
    async fn add(
        &self,
        key: &[u8],
        pk: usize,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        match self {
            Backend::Memory(b) => b.add(key, value, ttl),
            Backend::Redis(b) => b.add(key, &value, ttl).await,
            Backend::Distributed(b) => b.add(key, pk, value, ttl).await,
            Backend::RedisCluster(b) => b.add(key, &value, ttl).await,
        }
    }
    async fn delete(&self, key: &[u8], pk: usize) -> Result<bool> {
        match self {
            Backend::Memory(b) => b.delete(key),
            Backend::Redis(b) => Ok(b.delete_many(&[key]).await? > 0),
            Backend::Distributed(b) => b.delete(key, pk).await,
            Backend::RedisCluster(b) => b.delete(key).await,
        }
    }
    async fn exists(&self, key: &[u8], pk: usize) -> Result<bool> {
        match self {
            Backend::Memory(b) => b.exists(key),
            Backend::Redis(b) => b.exists(key).await,
            Backend::Distributed(b) => b.exists(key, pk).await,
            Backend::RedisCluster(b) => b.exists(key).await,
        }
    }
    async fn get_many(&self, keys: &[Vec<u8>], pk: usize) -> Result<Vec<Option<Bytes>>> {
        match self {
            Backend::Memory(b) => keys.iter().map(|k| b.get(k)).collect(),
            Backend::Redis(b) => b.get_many(&refs(keys)).await,
            Backend::Distributed(b) => b.get_many(keys, pk).await,
            Backend::RedisCluster(b) => b.get_many(keys).await,
        }
    }
    async fn set_many(
        &self,
        items: Vec<(Vec<u8>, Bytes)>,
        pk: usize,
        ttl: Option<Duration>,
    ) -> Result<()> {
        match self {
            Backend::Memory(b) => {
                for (k, v) in items {
                    b.set(&k, v, ttl)?;
                }
                Ok(())
            }
            Backend::Redis(b) => {
                let pairs: Vec<(&[u8], &[u8])> =
                    items.iter().map(|(k, v)| (k.as_slice(), &v[..])).collect();
                b.set_many(&pairs, ttl).await
            }
            Backend::Distributed(b) => b.set_many(items, pk, ttl).await,
            Backend::RedisCluster(b) => b.set_many(&items, ttl).await,
        }
    }
    async fn delete_many(&self, keys: &[Vec<u8>], pk: usize) -> Result<u64> {
        match self {
            Backend::Memory(b) => {
                let mut n = 0;
                for k in keys {
                    n += b.delete(k)? as u64;
                }
                Ok(n)
            }
            Backend::Redis(b) => b.delete_many(&refs(keys)).await,
            Backend::Distributed(b) => b.delete_many(keys, pk).await,
            Backend::RedisCluster(b) => b.delete_many(keys).await,
        }
    }
    async fn increment(&self, key: &[u8], pk: usize, delta: i64) -> Result<i64> {
        match self {
            Backend::Memory(b) => b.increment(key, delta),
            Backend::Redis(b) => b.increment(key, delta).await,
            Backend::Distributed(b) => b.increment(key, pk, delta).await,
            Backend::RedisCluster(b) => b.increment(key, delta).await,
        }
    }
    async fn ttl(&self, key: &[u8], pk: usize) -> Result<Ttl> {
        match self {
            Backend::Memory(b) => b.ttl(key),
            Backend::Redis(b) => b.ttl(key).await,
            Backend::Distributed(b) => b.ttl(key, pk).await,
            Backend::RedisCluster(b) => b.ttl(key).await,
        }
    }
    async fn clear_prefix(&self, prefix: &[u8]) -> Result<u64> {
        match self {
            Backend::Memory(b) => b.clear_prefix(prefix),
            Backend::Redis(b) => b.clear_prefix(prefix).await,
            Backend::Distributed(b) => b.clear_prefix(prefix).await,
            Backend::RedisCluster(b) => b.clear_prefix(prefix).await,
        }
    }
}

/// A cache handle: cheap to clone, thread-safe; all clones share the backend, namespace and
/// counters.
#[derive(Clone)]
pub struct Cache {
    pub(crate) backend: Arc<Backend>,
    /// `<namespace>:c:`, prepended to every key.
    pub(crate) prefix: Arc<[u8]>,
    /// The namespace alone (no separator); sessions build their own sub-space from it.
    pub(crate) namespace: Arc<str>,
    limits: CacheLimits,
    metrics: Arc<CacheMetrics>,
    computing: Arc<compute::Flights>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Cache");
        d.field("backend", &self.backend.name());
        if let Backend::RedisCluster(c) = &*self.backend {
            d.field("seeds", &c.seeds());
        }
        d.field("namespace", &self.namespace).finish()
    }
}

/// Checks a namespace (of the cache, the sessions, the locks or the registry): 1 to
/// [`MAX_NAMESPACE_LEN`] bytes, no `:` (the separator: a namespace that may not contain it
/// is never a prefix of another namespace's keys, so `a` cannot reach `a:b`), no `{`/`}`
/// (Redis Cluster hash tags are the library's), no whitespace, control or glob characters.
/// The error names `field`.
pub(crate) fn check_namespace_field(field: &str, ns: &str) -> Result<()> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
        return Err(Error::invalid(
            field,
            format!("must be 1..={MAX_NAMESPACE_LEN} bytes, got {}", ns.len()),
        ));
    }
    if ns.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ':' | '{' | '}' | '*' | '?' | '[' | ']' | '\\')
    }) {
        return Err(Error::invalid(
            field,
            format!("must not contain ':', '{{', '}}', whitespace, control characters or glob characters (*?[]\\), got {ns:?}"),
        ));
    }
    Ok(())
}

/// [`check_namespace_field`] for the field `namespace`.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    check_namespace_field("namespace", ns)
}

/// `<namespace>:c:`, the prefix of this namespace's cache entries.
fn cache_prefix(namespace: &str) -> Vec<u8> {
    let mut prefix = namespace.as_bytes().to_vec();
    prefix.extend_from_slice(CACHE_SPACE);
    prefix
}

impl Cache {
    fn from_backend(backend: Backend, namespace: &str) -> Result<Cache> {
        check_namespace(namespace)?;
        let prefix = cache_prefix(namespace);
        if let Backend::Distributed(d) = &backend {
            d.register_prefix(&prefix);
        }
        Ok(Cache {
            backend: Arc::new(backend),
            prefix: prefix.into(),
            namespace: namespace.into(),
            limits: CacheLimits::default(),
            metrics: Arc::default(),
            computing: Arc::default(),
        })
    }

    /// The embedded in-process cache (the default when nothing is configured), under
    /// `namespace`. Fails on an empty or invalid namespace or bad options.
    pub fn memory(namespace: &str, options: MemoryOptions) -> Result<Cache> {
        crate::log::init_from_env();
        Cache::from_backend(
            Backend::Memory(memory::MemoryBackend::new(options)?),
            namespace,
        )
    }

    /// One Redis server at `address` (`host:port` or a `redis://` URL), under `namespace`.
    /// Connects on first use (no I/O here), so this works before the server is up; call
    /// [`Cache::ping`] to check. Callable from anywhere (outside a tokio runtime the
    /// connection's helper task runs on the shared runtime).
    pub fn redis(address: &str, namespace: &str, options: RedisOptions) -> Result<Cache> {
        crate::log::init_from_env();
        Cache::from_backend(
            Backend::Redis(redis::RedisConn::lazy(address, &options)?),
            namespace,
        )
    }

    /// Keys sharded over the Redis nodes of `pool` by its hashing strategy (ketama, maglev or
    /// rendezvous), each on `options.replicas` nodes, under `namespace`. If the pool has no
    /// outlier settings, it gets "eject after one failure" (5 s, growing to 60 s).
    ///
    /// Fails if the pool does not hash or an option is invalid.
    pub fn distributed(
        pool: crate::Cluster,
        namespace: &str,
        options: DistributedOptions,
    ) -> Result<Cache> {
        Cache::from_backend(
            Backend::Distributed(distributed::DistributedBackend::new(pool, options)?),
            namespace,
        )
    }

    /// A Redis Cluster reached through `seeds` (`host:port` or `redis://` URLs of one or more
    /// of its nodes; the others are discovered from the cluster's slot map), under
    /// `namespace`. Keys are spread over the cluster's masters by hash slot (the whole key,
    /// namespace included; a `{hash tag}` in a key is honoured as Redis Cluster defines it).
    ///
    /// Connects on first use (no I/O here, so this works before the cluster is up; a failed
    /// first connection is retried by the next operation); call [`Cache::ping`] to check.
    /// Callable from anywhere (outside a tokio runtime the connection's driver task runs on
    /// the shared runtime).
    /// `options` bound every attempt (`connect_timeout`, `response_timeout`) and a whole
    /// request including retries and redirections (about `connect_timeout +
    /// response_timeout`); `reconnect_retries` (at least 1, for `MOVED`/`ASK`) caps the
    /// retries of one request; batches are split into chunks of `batch_chunk` keys, grouped
    /// by slot.
    ///
    /// Fails on no seed, a malformed seed or invalid options.
    pub fn redis_cluster(seeds: &[&str], namespace: &str, options: RedisOptions) -> Result<Cache> {
        crate::log::init_from_env();
        Cache::from_backend(
            Backend::RedisCluster(Box::new(redis_cluster::RedisClusterBackend::new(
                seeds, &options,
            )?)),
            namespace,
        )
    }

    /// Checks that the backend answers (a PING to a Redis server; always Ok for the memory
    /// backend; for the distributed backend, every healthy node; for a Redis Cluster, every
    /// master answers and reports `cluster_state:ok`).
    pub async fn ping(&self) -> Result<()> {
        match &*self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(c) => c.ping().await,
            Backend::Distributed(d) => d.ping().await,
            Backend::RedisCluster(c) => c.ping().await,
        }
    }

    /// Nodes of the distributed backend that missed writes and are not read from until their
    /// namespaces are flushed (empty for the other backends).
    pub fn dirty_nodes(&self) -> Vec<String> {
        match &*self.backend {
            Backend::Distributed(d) => d.dirty_nodes(),
            _ => Vec::new(),
        }
    }

    /// The same backend under another namespace (counters are separate).
    pub fn with_namespace(&self, namespace: &str) -> Result<Cache> {
        check_namespace(namespace)?;
        let prefix = cache_prefix(namespace);
        if let Backend::Distributed(d) = &*self.backend {
            d.register_prefix(&prefix);
        }
        Ok(Cache {
            backend: self.backend.clone(),
            prefix: prefix.into(),
            namespace: namespace.into(),
            limits: self.limits,
            metrics: Arc::default(),
            computing: Arc::default(),
        })
    }

    /// The same cache with other size limits. Fails if `max_value_len` is 0 or above
    /// [`MAX_VALUE_LEN_LIMIT`].
    pub fn with_limits(mut self, limits: CacheLimits) -> Result<Cache> {
        if limits.max_value_len == 0 || limits.max_value_len > MAX_VALUE_LEN_LIMIT {
            return Err(Error::invalid(
                "max_value_len",
                format!(
                    "must be 1..={MAX_VALUE_LEN_LIMIT} bytes, got {}",
                    limits.max_value_len
                ),
            ));
        }
        self.limits = limits;
        Ok(self)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Bytes the embedded backend counts against its bound (keys, values and
    /// [`ENTRY_OVERHEAD`] per entry); `None` for the other backends.
    pub fn memory_weight(&self) -> Option<u64> {
        match &*self.backend {
            Backend::Memory(m) => Some(m.weight()),
            _ => None,
        }
    }

    /// The backend's name for metrics: `memory`, `redis`, `distributed` or `redis-cluster`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Latencies of this handle's reads from a network backend.
    pub fn get_latency(&self) -> crate::metrics::HistogramSnapshot {
        self.metrics.get_latency.read()
    }

    /// Counters of this handle.
    pub fn stats(&self) -> CacheStats {
        self.metrics.read()
    }

    fn full_key(&self, key: &[u8]) -> Result<Vec<u8>> {
        self.check_key(key)?;
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        Ok(k)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("key", "must not be empty"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid(
                "key",
                format!("is {} bytes long, the maximum is {MAX_KEY_LEN}", key.len()),
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.limits.max_value_len {
            return Err(Error::invalid(
                "value",
                format!(
                    "is {} bytes long, the maximum is {}",
                    value.len(),
                    self.limits.max_value_len
                ),
            ));
        }
        Ok(())
    }

    fn count<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn count_read(&self, found: bool) {
        if found {
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The value of `key`, or `None` if it is absent or expired.
    ///
    /// Fails with [`Error::InvalidArgument`] on a bad key, or with the backend's error
    /// (`timeout`, `unavailable`, `backend`).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(r) = self.get_now(key) {
            return r;
        }
        let k = self.full_key(key)?;
        let started = std::time::Instant::now();
        let r = self.backend.get(&k, self.prefix.len()).await;
        self.metrics.get_latency.record(started.elapsed());
        self.trace_op("get", key, r.is_ok());
        let r = self.count(r)?;
        self.count_read(r.is_some());
        Ok(r)
    }

    /// [`Cache::get`] for blocking callers (the C, PHP and Python layers): an embedded read is
    /// answered on the calling thread without entering the runtime ([`Cache::get_now`]),
    /// anything else goes through [`crate::blocking::block_on`].
    ///
    /// Fails like [`Cache::get`], or like `block_on` when called inside an async runtime.
    pub fn get_blocking(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.get_now(key) {
            Some(r) => r,
            None => crate::blocking::block_on(self.get(key))?,
        }
    }

    /// [`Cache::get`] without a future, for the backends that answer without waiting: the
    /// embedded one. `None` for network backends (use `get`). The blocking facades (C, PHP,
    /// Python) take this path to skip the runtime entirely on embedded reads.
    pub fn get_now(&self, key: &[u8]) -> Option<Result<Option<Bytes>>> {
        let Backend::Memory(m) = &*self.backend else {
            return None;
        };
        // The embedded store's shard locks are taken outside any future here: one section of
        // the fork gate, so a forked child never inherits one locked (see crate::fork).
        let _section = crate::fork::section();
        Some((|| {
            // The embedded hot path: the full key on the stack when it is short.
            self.check_key(key)?;
            let mut buf = [0u8; 256];
            let n = self.prefix.len() + key.len();
            let r = if n <= buf.len() {
                buf[..self.prefix.len()].copy_from_slice(&self.prefix);
                buf[self.prefix.len()..n].copy_from_slice(key);
                m.get(&buf[..n])
            } else {
                m.get(&self.full_key(key)?)
            };
            let r = self.count(r)?;
            self.count_read(r.is_some());
            Ok(r)
        })())
    }

    /// A trace record of one keyed operation: the key's hash, never the key or a value.
    fn trace_op(&self, op: &'static str, key: &[u8], ok: bool) {
        tracing::trace!(target: "clusterkit::cache", key_hash = %crate::log::key_hash(key),
            backend = self.backend.name(), ok, "{}", op);
    }

    /// A trace record of one multi-key operation: how many keys, never which.
    fn trace_many(&self, op: &'static str, keys: usize, ok: bool) {
        tracing::trace!(target: "clusterkit::cache", keys, backend = self.backend.name(), ok,
            "{}", op);
    }

    /// Stores `value` under `key` for `ttl` (`None`: no expiry; zero: delete the key).
    ///
    /// Fails on a bad key, an oversized value, a TTL over [`MAX_TTL`], or a backend error.
    pub async fn set(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let k = self.full_key(key)?;
        let value = value.into();
        self.check_value(&value)?;
        check_ttl(ttl)?;
        self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        if ttl.is_some_and(|t| t.is_zero()) {
            let r = self.backend.delete(&k, self.prefix.len()).await;
            self.trace_op("set", key, r.is_ok());
            return self.count(r).map(|_| ());
        }
        let r = self.backend.set(&k, self.prefix.len(), value, ttl).await;
        self.trace_op("set", key, r.is_ok());
        self.count(r)
    }

    /// Stores `value` only if `key` is absent; returns whether it was stored. Atomic: of
    /// concurrent `add`s of one key, exactly one succeeds.
    ///
    /// Fails on a bad key, an oversized value, a zero TTL, or a backend error.
    pub async fn add(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let k = self.full_key(key)?;
        let value = value.into();
        self.check_value(&value)?;
        check_ttl(ttl)?;
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid("ttl", "must be more than 0 for add"));
        }
        let r = self.backend.add(&k, self.prefix.len(), value, ttl).await;
        self.trace_op("add", key, r.is_ok());
        let added = self.count(r)?;
        if added {
            self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(added)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool> {
        let k = self.full_key(key)?;
        self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        let r = self.backend.delete(&k, self.prefix.len()).await;
        self.trace_op("delete", key, r.is_ok());
        self.count(r)
    }

    /// Whether `key` exists (and has not expired).
    pub async fn has(&self, key: &[u8]) -> Result<bool> {
        let k = self.full_key(key)?;
        let r = self.backend.exists(&k, self.prefix.len()).await;
        self.trace_op("has", key, r.is_ok());
        self.count(r)
    }

    /// The values of `keys`, in order, `None` for absent ones. Fails on any bad key before
    /// any I/O.
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let ks = keys
            .iter()
            .map(|k| self.full_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if ks.is_empty() {
            return Ok(Vec::new());
        }
        let r = self.backend.get_many(&ks, self.prefix.len()).await;
        self.trace_many("get_many", ks.len(), r.is_ok());
        let r = self.count(r)?;
        for v in &r {
            self.count_read(v.is_some());
        }
        Ok(r)
    }

    /// Stores every `(key, value)` with one `ttl` (zero: delete them). Fails on any bad key or
    /// value before any I/O.
    pub async fn set_many<K: AsRef<[u8]>, V: Into<Bytes>>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        check_ttl(ttl)?;
        let mut batch = Vec::new();
        for (k, v) in items {
            let k = self.full_key(k.as_ref())?;
            let v = v.into();
            self.check_value(&v)?;
            batch.push((k, v));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.metrics
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if ttl.is_some_and(|t| t.is_zero()) {
            let keys: Vec<Vec<u8>> = batch.into_iter().map(|(k, _)| k).collect();
            let r = self.backend.delete_many(&keys, self.prefix.len()).await;
            self.trace_many("set_many", keys.len(), r.is_ok());
            return self.count(r).map(|_| ());
        }
        let n = batch.len();
        let r = self.backend.set_many(batch, self.prefix.len(), ttl).await;
        self.trace_many("set_many", n, r.is_ok());
        self.count(r)
    }

    /// Deletes `keys`; returns how many existed.
    pub async fn delete_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        let ks = keys
            .iter()
            .map(|k| self.full_key(k.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if ks.is_empty() {
            return Ok(0);
        }
        self.metrics
            .writes
            .fetch_add(ks.len() as u64, Ordering::Relaxed);
        let r = self.backend.delete_many(&ks, self.prefix.len()).await;
        self.trace_many("delete_many", ks.len(), r.is_ok());
        self.count(r)
    }

    /// Atomically adds `delta` to the integer stored at `key` (an absent key counts as 0) and
    /// returns the new value. The value is stored as decimal text, as Redis `INCRBY` does;
    /// an existing TTL is kept.
    ///
    /// Fails with [`Error::Backend`] if the stored value is not a 64-bit integer or the result
    /// overflows.
    pub async fn increment(&self, key: &[u8], delta: i64) -> Result<i64> {
        let k = self.full_key(key)?;
        self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        let r = self.backend.increment(&k, self.prefix.len(), delta).await;
        self.trace_op("increment", key, r.is_ok());
        self.count(r)
    }

    /// Atomically subtracts `delta`; see [`Cache::increment`].
    pub async fn decrement(&self, key: &[u8], delta: i64) -> Result<i64> {
        let d = delta
            .checked_neg()
            .ok_or_else(|| Error::invalid("delta", "out of range"))?;
        self.increment(key, d).await
    }

    /// The remaining lifetime of `key`.
    pub async fn ttl(&self, key: &[u8]) -> Result<Ttl> {
        let k = self.full_key(key)?;
        let r = self.backend.ttl(&k, self.prefix.len()).await;
        self.trace_op("ttl", key, r.is_ok());
        self.count(r)
    }

    /// Deletes every cache entry of this namespace (`<namespace>:c:*`) and only those: this
    /// namespace's sessions, locks, fences and registry entries stay, other namespaces on the
    /// same servers are untouched; never `FLUSHALL`. The same on every backend. Returns how
    /// many entries were deleted.
    pub async fn clear(&self) -> Result<u64> {
        let r = self.backend.clear_prefix(&self.prefix).await;
        tracing::debug!(target: "clusterkit::cache", backend = self.backend.name(), ok = r.is_ok(),
            "clear");
        self.count(r)
    }

    /// The value of `key`, computing and storing it with `compute` on a miss.
    ///
    /// Concurrent callers in this process for the same key wait for one computation. Values
    /// are stored with their compute time and expiry, and are recomputed early with
    /// probability growing towards the expiry (XFetch, `beta` = [`DEFAULT_BETA`]), so
    /// a popular key is refreshed by one caller before it expires instead of by all callers
    /// after. Keys written by this method hold that small header: read them with this method.
    ///
    /// Fails with the compute function's error (not stored) or a backend error.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: &[u8],
        ttl: Duration,
        compute: F,
    ) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        self.get_or_compute_with_beta(key, ttl, compute::DEFAULT_BETA, compute)
            .await
    }

    /// [`Cache::get_or_compute`] with an explicit XFetch `beta` (> 0; larger refreshes
    /// earlier; 0 disables early refresh).
    pub async fn get_or_compute_with_beta<F, Fut>(
        &self,
        key: &[u8],
        ttl: Duration,
        beta: f64,
        compute: F,
    ) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes>>,
    {
        compute::get_or_compute(self, key, ttl, beta, compute).await
    }
}

#[cfg(test)]
mod keyspace_tests {
    use super::*;

    #[test]
    fn scan_patterns_match_their_prefix_literally() {
        assert_eq!(glob_escape(b"a:c:"), b"a:c:".to_vec());
        assert_eq!(glob_escape(br"x*?[]\y"), br"x\*\?\[\]\\y".to_vec());
    }

    #[test]
    fn namespaces_cannot_overlap_or_carry_glob_or_tag_characters() {
        for bad in [
            "", "a:b", "a{", "b}", "a*", "a?", "a[", "a]", "a\\", "a b", "a\n",
        ] {
            let e = Cache::memory(bad, MemoryOptions::default()).unwrap_err();
            assert!(e.to_string().contains("namespace"), "{bad:?}: {e}");
        }
        let c = Cache::memory("a", MemoryOptions::default()).unwrap();
        assert_eq!(&*c.prefix, b"a:c:");
        assert_eq!(c.namespace(), "a");
        assert_eq!(c.with_namespace("ab").unwrap().namespace(), "ab");
    }

    #[test]
    fn ttls_longer_than_the_maximum_are_refused_naming_ttl() {
        let c = Cache::memory("t", MemoryOptions::default()).unwrap();
        let too_long = Some(MAX_TTL + Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for e in [
                c.set(b"k", "v", too_long).await.unwrap_err(),
                c.add(b"k", "v", too_long).await.unwrap_err(),
                c.set_many([(b"k", "v")], too_long).await.unwrap_err(),
            ] {
                assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
                assert!(e.to_string().contains("ttl"), "{e}");
            }
            assert!(!c.has(b"k").await.unwrap(), "nothing stored");
            c.set(b"k", "v", Some(MAX_TTL)).await.unwrap();
            assert!(c.has(b"k").await.unwrap());
        });
    }
}
