//! `clusterkit._native`: the Python binding's private native module. It translates types and
//! errors between Python and the core (`clusterkit`); every piece of logic lives in the core.
//! The public API is the `clusterkit` Python package (python/clusterkit/), which wraps these
//! classes. One file per concept, mirroring core: errors, deployment, cluster (pools, nodes),
//! pick, events, cache, lock, session, metrics, plus the asyncio bridge (aio).

use pyo3::prelude::*;

mod aio;
mod cache;
mod cluster;
mod deployment;
mod errors;
mod events;
mod lock;
mod log;
mod metrics;
mod pick;
mod queue;
mod session;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VERSION", clusterkit::VERSION)?;
    m.add_class::<deployment::Deployment>()?;
    m.add_class::<cluster::Pool>()?;
    m.add_class::<pick::Pick>()?;
    m.add_class::<events::Events>()?;
    m.add_class::<cache::Cache>()?;
    m.add_class::<lock::Locks>()?;
    m.add_class::<lock::Lock>()?;
    m.add_class::<session::Sessions>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<aio::Wake>()?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<queue::Consumer>()?;
    m.add_class::<queue::Job>()?;
    m.add_function(wrap_pyfunction!(metrics::fork_stats, m)?)?;
    m.add_function(wrap_pyfunction!(log::log_set_level, m)?)?;
    m.add_function(wrap_pyfunction!(log::log_level, m)?)?;
    m.add_function(wrap_pyfunction!(log::log_drain, m)?)?;
    m.add_function(wrap_pyfunction!(log::log_dropped, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::content_type, m)?)?;
    Ok(())
}
