//! A pool's events (node added, removed, updated, health changed, panic mode, strategy,
//! discovery problems) as dicts, blocking with a timeout or awaited.

use std::sync::Arc;

use clusterkit::cluster::{EventSubscription, Received};
use clusterkit::{Cluster, ClusterEvent, Error};
use pyo3::prelude::*;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Mutex};

use crate::aio;
use crate::errors::{json_to_py, opt_seconds, IntoPy};

#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Events {
    blocking: EventSubscription,
    rx: Arc<Mutex<broadcast::Receiver<ClusterEvent>>>,
}

impl Events {
    pub(crate) fn new(c: &Cluster) -> Events {
        Events {
            blocking: c.subscribe_blocking(),
            rx: Arc::new(Mutex::new(c.subscribe())),
        }
    }
}

enum Got {
    Event(ClusterEvent),
    Lagged(u64),
    Nothing,
}

fn to_py_event(py: Python<'_>, g: Got) -> PyResult<Py<PyAny>> {
    match g {
        Got::Event(ev) => json_to_py(py, &ev.to_json()),
        Got::Lagged(n) => json_to_py(py, &serde_json::json!({"kind": "lagged", "missed": n})),
        Got::Nothing => Ok(py.None()),
    }
}

#[pymethods]
impl Events {
    /// The next event as a dict, or None when none came within `timeout` seconds (None:
    /// wait without limit... up to 24 h). Raises ClosedError when the pool is gone.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let wait =
            opt_seconds(timeout, "timeout")?.unwrap_or(std::time::Duration::from_secs(86_400));
        let r = py.detach(|| self.blocking.next_blocking(wait));
        let g = match r {
            Ok(Received::Event(ev)) => Got::Event(ev),
            Ok(Received::Lagged(n)) => Got::Lagged(n),
            Ok(_) => Got::Nothing,
            Err(e) if e.kind() == clusterkit::ErrorKind::Timeout => Got::Nothing,
            Err(e) => return Err(e).py(),
        };
        to_py_event(py, g)
    }

    #[pyo3(signature = (timeout=None))]
    fn next_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let wait = opt_seconds(timeout, "timeout")?;
        let rx = self.rx.clone();
        aio::spawn(
            py,
            async move {
                let mut rx = rx.lock().await;
                let r = match wait {
                    Some(w) => match tokio::time::timeout(w, rx.recv()).await {
                        Ok(r) => r,
                        Err(_) => return Ok(Got::Nothing),
                    },
                    None => rx.recv().await,
                };
                match r {
                    Ok(ev) => Ok(Got::Event(ev)),
                    Err(RecvError::Lagged(n)) => Ok(Got::Lagged(n)),
                    Err(RecvError::Closed) => Err(Error::Closed(
                        "the pool of this subscription is gone".into(),
                    )),
                }
            },
            to_py_event,
        )
    }
}
