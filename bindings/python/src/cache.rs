//! The distributed cache: bytes in, bytes out. Blocking methods release the GIL while they
//! wait; `*_async` methods return awaitables completed from the core's runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterkit::cache::{Bytes, Ttl};
use clusterkit::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tokio::sync::{mpsc, oneshot};

use crate::aio;
use crate::errors::{bytes_arg, invalid, json_to_py, opt_seconds, run, seconds_arg, IntoPy};

/// A deployment's cache (`clusterkit.Cache` wraps it).
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Cache {
    pub(crate) cache: clusterkit::cache::Cache,
}

fn py_bytes(py: Python<'_>, b: Option<Bytes>) -> PyResult<Py<PyAny>> {
    Ok(match b {
        Some(b) => PyBytes::new(py, &b).into_any().unbind(),
        None => py.None(),
    })
}

fn py_value<T: for<'a> IntoPyObject<'a>>(py: Python<'_>, v: T) -> PyResult<Py<PyAny>> {
    use pyo3::BoundObject;
    v.into_pyobject(py)
        .map(|o| o.into_any().unbind())
        .map_err(Into::into)
}

fn py_list(py: Python<'_>, v: Vec<Option<Bytes>>) -> PyResult<Py<PyAny>> {
    let l = PyList::empty(py);
    for b in v {
        l.append(py_bytes(py, b)?)?;
    }
    Ok(l.into_any().unbind())
}

fn py_ttl(py: Python<'_>, t: Ttl) -> PyResult<Py<PyAny>> {
    match t {
        Ttl::Missing => Ok(py.None()),
        Ttl::Persistent => py_value(py, f64::INFINITY),
        Ttl::Expires(d) => py_value(py, d.as_secs_f64()),
    }
}

fn py_unit(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

fn py_bool(py: Python<'_>, b: bool) -> PyResult<Py<PyAny>> {
    py_value(py, b)
}

fn py_u64(py: Python<'_>, n: u64) -> PyResult<Py<PyAny>> {
    py_value(py, n)
}

fn py_i64(py: Python<'_>, n: i64) -> PyResult<Py<PyAny>> {
    py_value(py, n)
}

fn py_owned_bytes(py: Python<'_>, b: Bytes) -> PyResult<Py<PyAny>> {
    Ok(PyBytes::new(py, &b).into_any().unbind())
}

fn keys_arg(keys: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (i, k) in keys
        .try_iter()
        .map_err(|_| invalid("keys", "must be an iterable of bytes or str"))?
        .enumerate()
    {
        out.push(bytes_arg(&k?, &format!("keys[{i}]"))?.into_owned());
    }
    Ok(out)
}

fn items_arg(items: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Bytes)>> {
    let mut out = Vec::new();
    let iter = if let Ok(d) = items.cast::<PyDict>() {
        d.items().into_any().try_iter()?
    } else {
        items.try_iter().map_err(|_| {
            invalid(
                "items",
                "must be a mapping or an iterable of (key, value) pairs",
            )
        })?
    };
    for (i, pair) in iter.enumerate() {
        let pair = pair?;
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair
            .extract()
            .map_err(|_| invalid(&format!("items[{i}]"), "must be a (key, value) pair"))?;
        out.push((
            bytes_arg(&k, &format!("items[{i}].key"))?.into_owned(),
            Bytes::copy_from_slice(&bytes_arg(&v, &format!("items[{i}].value"))?),
        ));
    }
    Ok(out)
}

fn delta_arg(delta: &Bound<'_, PyAny>) -> PyResult<i64> {
    if delta.is_instance_of::<pyo3::types::PyBool>() {
        return Err(invalid("delta", "must be an int"));
    }
    delta
        .extract::<i64>()
        .map_err(|_| invalid("delta", "must be an int in the signed 64-bit range"))
}

/// Keeps the Python exception raised by a compute function for the caller that ran it; the
/// core sees an error naming only the exception's type (waiters coalesced on the same key
/// get that one).
pub(crate) fn stash(slot: &Arc<Mutex<Option<PyErr>>>, e: PyErr) -> Error {
    let name = Python::attach(|py| {
        e.get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    });
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    Error::Internal(format!(
        "the get_or_compute function raised {name} (raised as is in the caller that ran it)"
    ))
}

/// The bytes a compute function returned (bytes or str), or its exception stashed.
pub(crate) fn compute_value(
    _py: Python<'_>,
    v: PyResult<Bound<'_, PyAny>>,
    slot: &Arc<Mutex<Option<PyErr>>>,
) -> clusterkit::Result<Bytes> {
    match v.and_then(|v| bytes_arg(&v, "value").map(|b| Bytes::copy_from_slice(&b))) {
        Ok(b) => Ok(b),
        Err(e) => Err(stash(slot, e)),
    }
}

fn take_stashed(slot: &Arc<Mutex<Option<PyErr>>>, r: PyResult<Bytes>) -> PyResult<Bytes> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(original) => Err(original),
            None => Err(e),
        },
    }
}

fn beta_arg(beta: Option<f64>) -> f64 {
    beta.unwrap_or(clusterkit::cache::DEFAULT_BETA)
}

#[pymethods]
impl Cache {
    /// The namespace of this cache's keys.
    #[getter]
    fn namespace(&self) -> &str {
        self.cache.namespace()
    }

    /// A view of the same backend under another namespace.
    fn with_namespace(&self, namespace: &str) -> PyResult<Cache> {
        Ok(Cache {
            cache: self.cache.with_namespace(namespace).py()?,
        })
    }

    /// Counters: hits, misses, errors, writes.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = self.cache.stats();
        json_to_py(
            py,
            &serde_json::json!({"hits": s.hits, "misses": s.misses, "errors": s.errors, "writes": s.writes}),
        )
    }

    // --- blocking -------------------------------------------------------------------------

    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let key = bytes_arg(key, "key")?;
        // The embedded backend answers without waiting: no runtime, no GIL release.
        let v = match self.cache.get_now(&key) {
            Some(r) => r.py()?,
            None => run(py, self.cache.get(&key))?,
        };
        py_bytes(py, v)
    }

    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (key, value) = (bytes_arg(key, "key")?, bytes_arg(value, "value")?);
        let ttl = opt_seconds(ttl, "ttl")?;
        let value = Bytes::copy_from_slice(&value);
        run(py, self.cache.set(&key, value, ttl))
    }

    #[pyo3(signature = (key, value, ttl=None))]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (key, value) = (bytes_arg(key, "key")?, bytes_arg(value, "value")?);
        let ttl = opt_seconds(ttl, "ttl")?;
        let value = Bytes::copy_from_slice(&value);
        run(py, self.cache.add(&key, value, ttl))
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = bytes_arg(key, "key")?;
        run(py, self.cache.delete(&key))
    }

    fn has(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = bytes_arg(key, "key")?;
        run(py, self.cache.has(&key))
    }

    fn get_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let keys = keys_arg(keys)?;
        let v = run(py, self.cache.get_many(&keys))?;
        py_list(py, v)
    }

    #[pyo3(signature = (items, ttl=None))]
    fn set_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let items = items_arg(items)?;
        let ttl = opt_seconds(ttl, "ttl")?;
        run(py, self.cache.set_many(items, ttl))
    }

    fn delete_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<u64> {
        let keys = keys_arg(keys)?;
        run(py, self.cache.delete_many(&keys))
    }

    #[pyo3(signature = (key, delta=None))]
    fn incr(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        delta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let key = bytes_arg(key, "key")?;
        let delta = delta.map(delta_arg).transpose()?.unwrap_or(1);
        run(py, self.cache.increment(&key, delta))
    }

    fn ttl(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let key = bytes_arg(key, "key")?;
        let t = run(py, self.cache.ttl(&key))?;
        py_ttl(py, t)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        run(py, self.cache.clear())
    }

    /// On a miss the core asks for the value; `compute` then runs on this thread with the
    /// GIL held and outside the runtime (so it may call clusterkit itself, block, or fork),
    /// while the wait for the backend (and for another caller's computation of the same key)
    /// happens with the GIL released.
    #[pyo3(signature = (key, ttl, compute, beta=None))]
    fn get_or_compute(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
        compute: Py<PyAny>,
        beta: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let key = bytes_arg(key, "key")?;
        let ttl: Duration = seconds_arg(ttl, "ttl")?;
        if !compute.bind(py).is_callable() {
            return Err(invalid("compute", "must be callable"));
        }
        type Reply = oneshot::Sender<clusterkit::Result<Bytes>>;
        let (ask, mut asked) = mpsc::unbounded_channel::<Reply>();
        let fut =
            self.cache
                .get_or_compute_with_beta(&key, ttl, beta_arg(beta), move || async move {
                    let (tx, rx) = oneshot::channel();
                    ask.send(tx)
                        .map_err(|_| Error::Internal("the get_or_compute caller is gone".into()))?;
                    rx.await.unwrap_or_else(|_| {
                        Err(Error::Internal(
                            "the get_or_compute function was abandoned".into(),
                        ))
                    })
                });
        let mut fut = std::pin::pin!(fut);
        let slot: Arc<Mutex<Option<PyErr>>> = Arc::default();
        enum Step {
            Done(clusterkit::Result<Bytes>),
            Compute(Reply),
        }
        loop {
            let step = run(py, async {
                Ok(tokio::select! {
                    r = &mut fut => Step::Done(r),
                    Some(tx) = asked.recv() => Step::Compute(tx),
                })
            })?;
            match step {
                Step::Done(r) => {
                    let v = take_stashed(&slot, r.py())?;
                    return py_owned_bytes(py, v);
                }
                Step::Compute(tx) => {
                    let v = compute.bind(py).call0();
                    let _ = tx.send(compute_value(py, v, &slot));
                }
            }
        }
    }

    // --- asyncio ----------------------------------------------------------------------------

    fn get_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let c = self.cache.clone();
        aio::spawn(py, async move { c.get(&key).await }, py_bytes)
    }

    #[pyo3(signature = (key, value, ttl=None))]
    fn set_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let value = Bytes::copy_from_slice(&bytes_arg(value, "value")?);
        let ttl = opt_seconds(ttl, "ttl")?;
        let c = self.cache.clone();
        aio::spawn(py, async move { c.set(&key, value, ttl).await }, py_unit)
    }

    #[pyo3(signature = (key, value, ttl=None))]
    fn add_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let value = Bytes::copy_from_slice(&bytes_arg(value, "value")?);
        let ttl = opt_seconds(ttl, "ttl")?;
        let c = self.cache.clone();
        aio::spawn(py, async move { c.add(&key, value, ttl).await }, py_bool)
    }

    fn delete_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let c = self.cache.clone();
        aio::spawn(py, async move { c.delete(&key).await }, py_bool)
    }

    fn has_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let c = self.cache.clone();
        aio::spawn(py, async move { c.has(&key).await }, py_bool)
    }

    fn get_many_async<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys_arg(keys)?;
        let c = self.cache.clone();
        aio::spawn(py, async move { c.get_many(&keys).await }, py_list)
    }

    #[pyo3(signature = (items, ttl=None))]
    fn set_many_async<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let items = items_arg(items)?;
        let ttl = opt_seconds(ttl, "ttl")?;
        let c = self.cache.clone();
        aio::spawn(py, async move { c.set_many(items, ttl).await }, py_unit)
    }

    fn delete_many_async<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = keys_arg(keys)?;
        let c = self.cache.clone();
        aio::spawn(py, async move { c.delete_many(&keys).await }, py_u64)
    }

    #[pyo3(signature = (key, delta=None))]
    fn incr_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        delta: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let delta = delta.map(delta_arg).transpose()?.unwrap_or(1);
        let c = self.cache.clone();
        aio::spawn(py, async move { c.increment(&key, delta).await }, py_i64)
    }

    fn ttl_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let c = self.cache.clone();
        aio::spawn(py, async move { c.ttl(&key).await }, py_ttl)
    }

    fn clear_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.cache.clone();
        aio::spawn(py, async move { c.clear().await }, py_u64)
    }

    /// Async `get_or_compute`: `compute` is a function returning bytes, or a coroutine
    /// function; on a miss it runs in the caller's loop, once per key at a time.
    #[pyo3(signature = (key, ttl, compute, beta=None))]
    fn get_or_compute_async<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        ttl: &Bound<'py, PyAny>,
        compute: Py<PyAny>,
        beta: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = bytes_arg(key, "key")?.into_owned();
        let ttl: Duration = seconds_arg(ttl, "ttl")?;
        if !compute.bind(py).is_callable() {
            return Err(invalid("compute", "must be callable"));
        }
        let lp = py
            .import("asyncio")?
            .call_method0("get_running_loop")?
            .unbind();
        let c = self.cache.clone();
        let slot: Arc<Mutex<Option<PyErr>>> = Arc::default();
        let s2 = slot.clone();
        let fut = async move {
            let r = c
                .get_or_compute_with_beta(&key, ttl, beta_arg(beta), move || {
                    aio::compute_in_loop(compute, lp, s2)
                })
                .await;
            (r, slot)
        };
        aio::spawn(py, async move { Ok(fut.await) }, |py, (r, slot)| {
            let v = take_stashed(&slot, r.py())?;
            py_owned_bytes(py, v)
        })
    }
}
