//! The deployment: one config document (JSON or TOML text; empty: everything embedded)
//! builds the pools, the cache, the locks and the sessions.

use std::sync::Arc;

use clusterkit::Clusterkit;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::cache::Cache;
use crate::cluster::Pool;
use crate::errors::{json_to_py, IntoPy};
use crate::lock::Locks;
use crate::session::Sessions;

#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Deployment {
    ck: Arc<Clusterkit>,
}

#[pymethods]
impl Deployment {
    /// Builds the deployment of `text` (JSON or TOML; "" is everything embedded). No I/O.
    #[new]
    #[pyo3(signature = (text=""))]
    fn new(py: Python<'_>, text: &str) -> PyResult<Deployment> {
        let ck = py.detach(|| Clusterkit::parse(text)).py()?;
        Ok(Deployment { ck: Arc::new(ck) })
    }

    /// The process-wide deployment of `text`: built once, shared by every later call with
    /// the same text (rebuilt once in a forked child).
    #[staticmethod]
    fn shared(py: Python<'_>, text: &str) -> PyResult<Deployment> {
        let ck = py.detach(|| Clusterkit::shared(text)).py()?;
        Ok(Deployment { ck })
    }

    fn pool_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.ck.pools().keys())
    }

    fn pool(&self, name: &str) -> PyResult<Pool> {
        Ok(Pool {
            cluster: self.ck.pool(name).py()?.clone(),
        })
    }

    fn cache(&self) -> Cache {
        Cache {
            cache: self.ck.cache().clone(),
        }
    }

    fn locks(&self) -> Locks {
        Locks {
            locks: self.ck.locks().clone(),
        }
    }

    fn sessions(&self) -> Sessions {
        Sessions {
            store: self.ck.sessions().clone(),
        }
    }

    /// The deployment's metrics (cache counters, each pool's health metrics) as a dict.
    fn metrics(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &self.ck.metrics())
    }

    /// The document this deployment was built from, as JSON text (with defaults filled in).
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.ck.config())
            .map_err(|e| clusterkit::Error::Internal(format!("config as JSON: {e}")))
            .py()
    }
}
