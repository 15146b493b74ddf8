//! The library's log records (core `clusterkit::log`): set a level, drain records as dicts.
//! The `clusterkit.logging` module feeds them to the standard `logging` logger "clusterkit".

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{json_to_py, IntoPy};

/// Most records one drain call returns.
const DRAIN_MAX: usize = clusterkit::log::BUFFER_CAPACITY;

/// Keeps records at `level` ("off", "error", "warn", "info", "debug", "trace") and more
/// severe for log_drain (process-wide). "off" also empties the buffer.
#[pyfunction]
pub(crate) fn log_set_level(py: Python<'_>, level: &str) -> PyResult<()> {
    let l = clusterkit::log::Level::parse(level).py()?;
    py.detach(|| clusterkit::log::set_level(l)).py()
}

/// The level set by log_set_level ("off" when none).
#[pyfunction]
pub(crate) fn log_level() -> &'static str {
    clusterkit::log::level().map_or("off", |l| l.as_str())
}

/// Takes up to `max` of the oldest buffered records as dicts: level, target, message,
/// fields (a dict of str), time_ms.
#[pyfunction]
#[pyo3(signature = (max=DRAIN_MAX))]
pub(crate) fn log_drain(py: Python<'_>, max: usize) -> PyResult<Bound<'_, PyList>> {
    let records = clusterkit::log::drain(max.min(DRAIN_MAX));
    let items = records
        .iter()
        .map(|r| json_to_py(py, &r.to_json()))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// Records dropped since the process started because nobody drained in time.
#[pyfunction]
pub(crate) fn log_dropped() -> u64 {
    clusterkit::log::dropped()
}
