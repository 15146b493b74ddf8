//! Metrics: the deployment's and each pool's counters as dicts (see deployment.rs and
//! cluster.rs), and the fork gate's counters.

use pyo3::prelude::*;

use crate::errors::json_to_py;

/// The fork gate's counters: forks that found no library call in progress, and forks that
/// waited for one to finish.
#[pyfunction]
pub(crate) fn fork_stats(py: Python<'_>) -> PyResult<Py<PyAny>> {
    json_to_py(
        py,
        &serde_json::json!({
            "forks_without_drain": clusterkit::fork::forks_without_drain(),
            "forks_that_waited": clusterkit::fork::forks_that_waited(),
        }),
    )
}

/// The HTTP content type of a metrics format (json, prometheus, openmetrics, html,
/// status_json).
#[pyfunction]
pub(crate) fn content_type(format: &str) -> PyResult<&'static str> {
    use crate::errors::IntoPy;
    Ok(clusterkit::MetricsFormat::parse(format)
        .py()?
        .content_type())
}
