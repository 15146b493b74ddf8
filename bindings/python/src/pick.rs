//! A pick: one node chosen for one request; it counts as in flight until its outcome is
//! reported (success with latency, or failure) or it is dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use clusterkit::Error;
use pyo3::prelude::*;

use crate::errors::{opt_seconds, IntoPy};

#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Pick {
    pick: Mutex<Option<clusterkit::Pick>>,
    id: String,
    host: String,
    port: u16,
    started: Instant,
}

impl Pick {
    pub(crate) fn new(p: clusterkit::Pick) -> Pick {
        Pick {
            id: p.id().to_string(),
            host: p.host().to_string(),
            port: p.port(),
            started: Instant::now(),
            pick: Mutex::new(Some(p)),
        }
    }

    fn take(&self) -> PyResult<clusterkit::Pick> {
        self.pick
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::Closed("the outcome of this pick was already reported".into()))
            .py()
    }
}

#[pymethods]
impl Pick {
    #[getter]
    fn node_id(&self) -> &str {
        &self.id
    }
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }
    /// `host:port` (IPv6 hosts in brackets).
    #[getter]
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
    /// Seconds since the pick.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
    /// True until the outcome was reported.
    #[getter]
    fn is_open(&self) -> bool {
        self.pick
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Reports success; `latency` in seconds (default: the time since the pick).
    #[pyo3(signature = (latency=None))]
    fn success(&self, latency: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let l: Duration =
            opt_seconds(latency, "latency")?.unwrap_or_else(|| self.started.elapsed());
        self.take()?.success(l);
        Ok(())
    }

    fn failure(&self) -> PyResult<()> {
        self.take()?.failure();
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "<clusterkit.Pick node={:?} address={}>",
            self.id,
            self.address()
        )
    }
}
