//! The deployment: one config document (JSON or TOML text; "" = everything embedded) built
//! into pools, cache, locks and sessions.

use std::sync::Arc;

use clusterkit::Clusterkit;
use napi_derive::napi;

use crate::cache::Cache;
use crate::cluster::Pool;
use crate::errors::OrNapi;
use crate::lock::Locks;
use crate::session::Sessions;

/// A deployment built from a config document (native handle; see index.js `Clusterkit`).
#[napi]
pub struct Deployment {
    pub(crate) inner: Arc<Clusterkit>,
}

#[napi]
impl Deployment {
    /// Builds a deployment from JSON or TOML `text` ("" = everything embedded). With `shared`,
    /// the process (and every worker thread) shares one deployment per distinct text.
    #[napi(factory)]
    pub fn parse(text: String, shared: bool) -> napi::Result<Deployment> {
        let inner = if shared {
            Clusterkit::shared(&text).or_napi()?
        } else {
            Arc::new(Clusterkit::parse(&text).or_napi()?)
        };
        Ok(Deployment { inner })
    }

    /// The names of the pools.
    #[napi]
    pub fn pool_names(&self) -> Vec<String> {
        self.inner.pools().keys().cloned().collect()
    }

    /// A handle on pool `name` (not_found for an unknown name).
    #[napi]
    pub fn pool(&self, name: String) -> napi::Result<Pool> {
        Ok(Pool {
            inner: self.inner.pool(&name).or_napi()?.clone(),
        })
    }

    /// The cache.
    #[napi]
    pub fn cache(&self) -> Cache {
        Cache::new(self.inner.cache().clone())
    }

    /// The lock service.
    #[napi]
    pub fn locks(&self) -> Locks {
        let pool = self
            .inner
            .config()
            .locks
            .as_ref()
            .and_then(|l| l.pool.as_ref());
        Locks {
            inner: self.inner.locks().clone(),
            inline: pool.is_none(),
        }
    }

    /// The task queue service.
    #[napi]
    pub fn queue(&self) -> crate::queue::Queue {
        crate::queue::Queue::new(self.inner.queue().clone())
    }

    /// The session store.
    #[napi]
    pub fn sessions(&self) -> Sessions {
        Sessions {
            inner: self.inner.sessions().clone(),
            inline: self.inner.cache().memory_weight().is_some(),
        }
    }

    /// The metrics snapshot as JSON text (`cache`, `pools`).
    #[napi]
    pub fn metrics_json(&self) -> String {
        crate::metrics::deployment(&self.inner)
    }
}

/// The library version.
#[napi]
pub fn version() -> String {
    clusterkit::VERSION.to_string()
}
