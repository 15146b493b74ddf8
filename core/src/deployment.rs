//! [`Clusterkit`]: one entry point that builds a whole deployment from the config document —
//! its pools, their balancers, the cache, the locks and the sessions — or, with no document,
//! runs fully embedded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::balance::LoadBalancer;
use crate::cache::Cache;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lock::DistributedLock;
use crate::session::SessionStore;

/// A deployment built from a [`Config`]: named pools and the cache.
///
/// Cheap to clone (pools and cache are shared handles). Building does no network I/O: health
/// checks and discovery start in the background, Redis connections open on first use.
#[derive(Clone)]
pub struct Clusterkit {
    config: Config,
    pools: BTreeMap<String, Cluster>,
    cache: Cache,
    locks: DistributedLock,
    sessions: SessionStore,
    /// The task queue (issue #16), built from `[queue]`.
    queue: crate::queue::TaskQueue,
    /// Monitoring (issue #15): see `crate::deployment_metrics`.
    pub(crate) monitor: Arc<crate::deployment_metrics::Monitor>,
}

impl fmt::Debug for Clusterkit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clusterkit")
            .field("pools", &self.pools.keys().collect::<Vec<_>>())
            .field("cache", &self.cache)
            .finish()
    }
}

impl Clusterkit {
    /// Everything embedded: no pools, an in-process cache.
    pub fn embedded() -> Result<Clusterkit> {
        Clusterkit::from_config(&Config::default())
    }

    /// Parses `text` (JSON or TOML, see [`Config::parse`]) and builds it.
    pub fn parse(text: &str) -> Result<Clusterkit> {
        Clusterkit::from_config(&Config::parse(text)?)
    }

    /// Builds every pool and the cache of `config`. Fails with [`Error::InvalidArgument`]
    /// naming the field of the first invalid value.
    pub fn from_config(config: &Config) -> Result<Clusterkit> {
        crate::log::init_from_env();
        let pools = config.build_pools()?;
        let cache_config = config.cache.clone().unwrap_or_default();
        let cache = cache_config
            .build_with(
                &pools,
                &config.redis_settings(cache_config.pool.as_deref())?,
            )
            .map_err(|e| e.in_field("cache"))?;
        // One namespace per deployment: locks default to the cache's (docs/keyspace.md).
        let mut locks_config = config.locks.clone().unwrap_or_default();
        if locks_config.key_prefix.is_none() {
            locks_config.key_prefix = Some(cache.namespace().to_string());
        }
        let locks = locks_config
            .build_with(
                &pools,
                &config.redis_settings(locks_config.pool.as_deref())?,
            )
            .map_err(|e| e.in_field("locks"))?;
        let sessions = SessionStore::new(
            &cache,
            config.sessions.clone().unwrap_or_default().options(),
        )
        .map_err(|e| e.in_field("sessions"))?;
        let queue_config = config.queue.clone().unwrap_or_default();
        let queue = queue_config
            .build_with(
                cache.namespace(),
                &pools,
                &config.redis_settings(queue_config.pool.as_deref())?,
            )
            .map_err(|e| e.in_field("queue"))?;
        let monitor = Arc::new(crate::deployment_metrics::Monitor::new(
            config.metrics.as_ref(),
        )?);
        Ok(Clusterkit {
            monitor,
            config: config.clone(),
            pools,
            cache,
            locks,
            sessions,
            queue,
        })
    }

    /// The pool named `name`. Fails with [`Error::NotFound`] for an unknown name.
    pub fn pool(&self, name: &str) -> Result<&Cluster> {
        self.pools.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.pools.keys().map(|k| k.as_str()).collect();
            Error::NotFound(format!("no pool named {name:?} (pools: {known:?})"))
        })
    }

    /// The balancer of pool `name`. Fails like [`Clusterkit::pool`].
    pub fn balancer(&self, name: &str) -> Result<LoadBalancer> {
        Ok(self.pool(name)?.balancer())
    }

    /// All pools by name.
    pub fn pools(&self) -> &BTreeMap<String, Cluster> {
        &self.pools
    }

    /// The cache (embedded unless the document's `[cache]` names a pool or a server).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The lock service (embedded unless `[locks]` names a pool of Redis masters).
    pub fn locks(&self) -> &DistributedLock {
        &self.locks
    }

    /// The session store, on the cache's backend.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The task queue (embedded unless `[queue]` names a pool or a server).
    pub fn queue(&self) -> &crate::queue::TaskQueue {
        &self.queue
    }

    /// The document this deployment was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The deployment built from `text` shared by the whole process: the first call parses
    /// and builds it, later calls with the same text get the same deployment (its
    /// connections, runtime and health state), like phpredis's persistent connections. A
    /// PHP-FPM worker or a Python process that builds "its" deployment on every request
    /// therefore pays for it once. In a forked child the first call builds a fresh one (the
    /// parent's background tasks do not exist there); the parent's is never dropped in the
    /// child.
    ///
    /// Fails like [`Clusterkit::parse`]; a failure is not remembered.
    pub fn shared(text: &str) -> Result<Arc<Clusterkit>> {
        type Registry = HashMap<String, (u64, Arc<Clusterkit>)>;
        // A fork-gate mutex: a forked child never inherits it locked (see crate::fork).
        static SHARED: crate::fork::Mutex<Option<Registry>> = crate::fork::Mutex::new(None);
        let generation = crate::blocking::fork_generation();
        let mut slot = SHARED.lock();
        let registry = slot.get_or_insert_with(HashMap::new);
        if let Some((g, ck)) = registry.get(text) {
            if *g == generation {
                return Ok(ck.clone());
            }
        }
        let ck = Arc::new(Clusterkit::parse(text)?);
        if let Some((g, stale)) = registry.insert(text.to_string(), (generation, ck.clone())) {
            if g != generation {
                // Built by the parent before fork(): dropping it could wait on tasks that
                // do not exist in this process.
                std::mem::forget(stale);
            }
        }
        Ok(ck)
    }

    /// The deployment's metrics as one JSON object: `cache` (`backend`, `hits`, `misses`,
    /// `errors`, `writes`), `pools` (each pool's [`Cluster::metrics`] by name), `locks`
    /// ([`crate::metrics::LockStats`]), `sessions` ([`crate::metrics::SessionStats`]) and
    /// `redis` ([`crate::metrics::RedisStats`]). The full snapshot is
    /// [`Clusterkit::metrics_snapshot`].
    pub fn metrics(&self) -> serde_json::Value {
        let stats = self.cache.stats();
        let pools: serde_json::Map<String, serde_json::Value> = self
            .pools
            .iter()
            .map(|(name, c)| (name.clone(), c.metrics()))
            .collect();
        serde_json::json!({
            "cache": {
                "namespace": self.cache.namespace(),
                "hits": stats.hits,
                "misses": stats.misses,
                "errors": stats.errors,
                "writes": stats.writes,
            },
            "pools": pools,
            "locks": self.locks.stats(),
            "sessions": self.sessions.stats(),
            "redis": crate::metrics::counters::REDIS.read(),
            "queue": self.queue.metrics(),
        })
    }
}
