//! The deployment: one config document (JSON or TOML text; empty: everything embedded)
//! builds the pools, the cache, the locks and the sessions.

use std::path::PathBuf;
use std::sync::Arc;

use clusterkit::{Clusterkit, MetricsFormat};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::cache::Cache;
use crate::cluster::Pool;
use crate::errors::{json_to_py, seconds_arg, IntoPy};
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

    fn queue(&self) -> crate::queue::Queue {
        crate::queue::Queue {
            q: self.ck.queue().clone(),
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

    /// The full metrics snapshot (pools, nodes with latency buckets, cache, locks, sessions,
    /// redis, scaling) as a dict.
    fn metrics_snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = py.detach(|| self.ck.metrics_snapshot());
        json_to_py(py, &s.to_json())
    }

    /// This process's metrics rendered as `format` (json, prometheus, openmetrics, html,
    /// status_json); `title` only for html.
    #[pyo3(signature = (format, title=None))]
    fn metrics_text(&self, py: Python<'_>, format: &str, title: Option<&str>) -> PyResult<String> {
        let f = MetricsFormat::parse(format).py()?;
        py.detach(|| match (f, title) {
            (MetricsFormat::StatusHtml, Some(t)) => self.ck.status_html(Some(t)),
            _ => self.ck.metrics_text(f),
        })
        .py()
    }

    /// The latest recommendation of each configured scaling advisor, as dicts.
    fn scaling_advice(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = serde_json::to_value(self.ck.scaling_advice())
            .map_err(|e| clusterkit::Error::Internal(format!("scaling advice as JSON: {e}")))
            .py()?;
        json_to_py(py, &v)
    }

    /// Writes this process's snapshot to the directory `dir` for aggregate_metrics.
    fn publish_metrics(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        py.detach(|| self.ck.publish_metrics(&dir)).py()
    }

    /// This process's snapshot plus every snapshot published in `dir` within `max_age`
    /// seconds, as a dict.
    fn aggregate_metrics(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        max_age: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let max_age = seconds_arg(max_age, "max_age")?;
        let s = py
            .detach(|| self.ck.aggregate_metrics(&dir, max_age))
            .py()?;
        json_to_py(py, &s.to_json())
    }

    /// aggregate_metrics rendered as `format`.
    fn aggregate_metrics_text(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        max_age: &Bound<'_, PyAny>,
        format: &str,
    ) -> PyResult<String> {
        let max_age = seconds_arg(max_age, "max_age")?;
        let f = MetricsFormat::parse(format).py()?;
        py.detach(|| self.ck.aggregate_metrics_text(&dir, max_age, f))
            .py()
    }

    /// The document this deployment was built from, as JSON text (with defaults filled in).
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.ck.config())
            .map_err(|e| clusterkit::Error::Internal(format!("config as JSON: {e}")))
            .py()
    }
}
