//! Distributed locks: acquire (try, or wait), fencing token, validity, extend, release, and
//! learning that a lock was lost (renewal failed or validity ran out).

use std::sync::Arc;
use std::time::Duration;

use clusterkit::lock::{DistributedLock, LockGuard, LockWatch};
use clusterkit::Error;
use pyo3::prelude::*;
use tokio::sync::Mutex;

use crate::aio;
use crate::errors::{opt_seconds, run, seconds_arg, str_arg};

/// A deployment's lock service.
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Locks {
    pub(crate) locks: DistributedLock,
}

/// One acquisition of a lock. Dropping it while held releases it in the background.
#[pyclass(module = "clusterkit._native", frozen)]
pub struct Lock {
    guard: Arc<Mutex<Option<LockGuard>>>,
    watch: LockWatch,
    name: String,
    token: String,
    /// `None` when acquired with `fencing=False`.
    fence: Option<u64>,
}

impl Lock {
    fn new(g: LockGuard) -> Lock {
        Lock {
            watch: g.watch(),
            name: g.name().to_string(),
            token: g.token().to_string(),
            fence: g.fence(),
            guard: Arc::new(Mutex::new(Some(g))),
        }
    }
}

fn py_lock(py: Python<'_>, g: LockGuard) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Lock::new(g))?.into_any())
}

fn py_opt_lock(py: Python<'_>, g: Option<LockGuard>) -> PyResult<Py<PyAny>> {
    match g {
        Some(g) => py_lock(py, g),
        None => Ok(py.None()),
    }
}

fn lock_ttl(ttl: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let d = seconds_arg(ttl, "ttl")?;
    clusterkit::lock::check_ttl(d).map_err(crate::errors::to_py)?;
    Ok(d)
}

async fn acquire(
    locks: DistributedLock,
    name: String,
    ttl: Duration,
    wait: Option<Duration>,
) -> clusterkit::Result<LockGuard> {
    match wait {
        None => locks.acquire(&name, ttl).await,
        Some(w) if w.is_zero() => locks
            .try_acquire(&name, ttl)
            .await?
            .ok_or_else(|| Error::Conflict(format!("lock {name:?} is held by someone else"))),
        Some(w) => locks.acquire_timeout(&name, ttl, w).await,
    }
}

async fn extend(guard: Arc<Mutex<Option<LockGuard>>>, ttl: Duration) -> clusterkit::Result<()> {
    let g = guard.lock().await;
    match &*g {
        Some(g) => g.extend(ttl).await,
        None => Err(Error::Closed("the lock was already released".into())),
    }
}

async fn release(guard: Arc<Mutex<Option<LockGuard>>>) -> clusterkit::Result<()> {
    let g = guard.lock().await.take();
    match g {
        Some(g) => g.release().await,
        None => Err(Error::Closed("the lock was already released".into())),
    }
}

async fn wait_lost(watch: LockWatch, timeout: Option<Duration>) -> clusterkit::Result<bool> {
    match timeout {
        None => {
            watch.lost().await;
            Ok(true)
        }
        Some(t) => Ok(tokio::time::timeout(t, watch.lost()).await.is_ok()),
    }
}

fn unit(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

fn boolean(py: Python<'_>, b: bool) -> PyResult<Py<PyAny>> {
    Ok(pyo3::types::PyBool::new(py, b)
        .to_owned()
        .into_any()
        .unbind())
}

impl Locks {
    /// The lock service for one acquisition: `fencing` false turns the token off; true keeps
    /// the deployment's `[locks] fencing`.
    fn locks_for(&self, fencing: bool) -> DistributedLock {
        if fencing {
            self.locks.clone()
        } else {
            self.locks.with_fencing(false)
        }
    }
}

#[pymethods]
impl Locks {
    /// Acquires `name` for `ttl` seconds. `wait`: None waits as long as it takes, 0 tries once
    /// (ConflictError if held), otherwise waits at most that long (TimeoutError).
    /// `fencing=False`: no fencing token (one round trip less on Redlock).
    #[pyo3(signature = (name, ttl, wait=None, fencing=true))]
    fn acquire(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
        wait: Option<&Bound<'_, PyAny>>,
        fencing: bool,
    ) -> PyResult<Lock> {
        let name = str_arg(name, "name")?;
        let (ttl, wait) = (lock_ttl(ttl)?, opt_seconds(wait, "wait")?);
        let g = run(py, acquire(self.locks_for(fencing), name, ttl, wait))?;
        Ok(Lock::new(g))
    }

    /// One attempt: the lock, or None if someone else holds it.
    #[pyo3(signature = (name, ttl, fencing=true))]
    fn try_acquire(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
        fencing: bool,
    ) -> PyResult<Option<Lock>> {
        let name = str_arg(name, "name")?;
        let ttl = lock_ttl(ttl)?;
        let locks = self.locks_for(fencing);
        Ok(run(py, locks.try_acquire(&name, ttl))?.map(Lock::new))
    }

    #[pyo3(signature = (name, ttl, wait=None, fencing=true))]
    fn acquire_async<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        ttl: &Bound<'py, PyAny>,
        wait: Option<&Bound<'py, PyAny>>,
        fencing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = str_arg(name, "name")?;
        let (ttl, wait) = (lock_ttl(ttl)?, opt_seconds(wait, "wait")?);
        aio::spawn(
            py,
            acquire(self.locks_for(fencing), name, ttl, wait),
            py_lock,
        )
    }

    #[pyo3(signature = (name, ttl, fencing=true))]
    fn try_acquire_async<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        ttl: &Bound<'py, PyAny>,
        fencing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = str_arg(name, "name")?;
        let ttl = lock_ttl(ttl)?;
        let locks = self.locks_for(fencing);
        aio::spawn(
            py,
            async move { locks.try_acquire(&name, ttl).await },
            py_opt_lock,
        )
    }
}

#[pymethods]
impl Lock {
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// This holder's random token (a secret: never logged).
    #[getter]
    fn token(&self) -> &str {
        &self.token
    }

    /// Strictly increasing across successive holders of this name. NotFoundError when the
    /// lock was acquired with `fencing=False`.
    #[getter]
    fn fencing_token(&self) -> PyResult<u64> {
        self.fence
            .ok_or_else(|| crate::errors::to_py(clusterkit::lock::no_fencing_token(&self.name)))
    }

    /// Whether this lock carries a fencing token.
    #[getter]
    fn has_fencing_token(&self) -> bool {
        self.fence.is_some()
    }

    /// Remaining validity in seconds (0 once expired, lost or released).
    #[getter]
    fn valid_for(&self) -> f64 {
        if self.watch.is_released() {
            return 0.0;
        }
        self.watch.validity().as_secs_f64()
    }

    /// True while valid, not released, and no renewal failed.
    #[getter]
    fn is_held(&self) -> bool {
        self.watch.is_held()
    }

    fn extend(&self, py: Python<'_>, ttl: &Bound<'_, PyAny>) -> PyResult<()> {
        let ttl = lock_ttl(ttl)?;
        run(py, extend(self.guard.clone(), ttl))
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        run(py, release(self.guard.clone()))
    }

    /// Waits until the lock is lost or released (True), or `timeout` seconds pass (False).
    #[pyo3(signature = (timeout=None))]
    fn wait_lost(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let t = opt_seconds(timeout, "timeout")?;
        run(py, wait_lost(self.watch.clone(), t))
    }

    fn extend_async<'py>(
        &self,
        py: Python<'py>,
        ttl: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ttl = lock_ttl(ttl)?;
        aio::spawn(py, extend(self.guard.clone(), ttl), unit)
    }

    fn release_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        aio::spawn(py, release(self.guard.clone()), unit)
    }

    #[pyo3(signature = (timeout=None))]
    fn wait_lost_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = opt_seconds(timeout, "timeout")?;
        aio::spawn(py, wait_lost(self.watch.clone(), t), boolean)
    }

    fn __repr__(&self) -> String {
        format!(
            "<clusterkit.Lock name={:?} fencing_token={} held={}>",
            self.name,
            self.fence.map_or("None".to_string(), |f| f.to_string()),
            self.watch.is_held()
        )
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in Debug output.
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("fencing_token", &self.fence)
            .finish()
    }
}
