//! The asyncio face: a core future runs on the core's shared runtime (no thread per call) and
//! completes an `asyncio.Future` of the caller's running loop through
//! `loop.call_soon_threadsafe` (`clusterkit._aio._complete` ignores a future that was cancelled
//! meanwhile).

use std::future::Future;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::oneshot;

use crate::errors::{to_py, IntoPy};

struct Helpers {
    get_running_loop: Py<PyAny>,
    complete: Py<PyAny>,
    compute: Py<PyAny>,
}

static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();

fn helpers(py: Python<'_>) -> PyResult<&Helpers> {
    HELPERS.get_or_try_init(py, || -> PyResult<Helpers> {
        let aio = py.import("clusterkit._aio")?;
        Ok(Helpers {
            get_running_loop: py.import("asyncio")?.getattr("get_running_loop")?.unbind(),
            complete: aio.getattr("_complete")?.unbind(),
            compute: aio.getattr("_compute")?.unbind(),
        })
    })
}

/// Converts a core result value into a Python object (with the GIL held).
pub(crate) type Convert<T> = fn(Python<'_>, T) -> PyResult<Py<PyAny>>;

/// An awaitable for `fut`, whose value is converted by `conv`. Must be called from a coroutine
/// running in an asyncio loop.
pub(crate) fn spawn<'py, T, F>(
    py: Python<'py>,
    fut: F,
    conv: Convert<T>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = clusterkit::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let h = helpers(py)?;
    let lp = h.get_running_loop.bind(py).call0()?;
    let f = lp.call_method0("create_future")?;
    // Work that completes without waiting (the embedded backends) completes the future here,
    // on the loop's thread: no task, no thread hop.
    let fut = match clusterkit::blocking::poll_once(Box::pin(fut)).py()? {
        Ok(r) => {
            match r.map_err(to_py).and_then(|t| conv(py, t)) {
                Ok(v) => f.call_method1("set_result", (v,))?,
                Err(e) => f.call_method1("set_exception", (e.into_value(py),))?,
            };
            return Ok(f);
        }
        Err(pending) => pending,
    };
    let (lp_u, f_u) = (lp.unbind(), f.clone().unbind());
    clusterkit::blocking::spawn(async move {
        let r = fut.await;
        // Every Python object is used and released with the GIL held.
        Python::attach(move |py| {
            let (ok, v) = match r.map_err(to_py).and_then(|t| conv(py, t)) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            if let Ok(h) = helpers(py) {
                // A closed loop refuses the call: nobody waits for the result any more.
                let _ = lp_u.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (h.complete.clone_ref(py), f_u, ok, v),
                );
            }
            drop(lp_u);
        });
    })
    .py()?;
    Ok(f)
}

/// Called by a `concurrent.futures.Future` when it is done: wakes the core future waiting
/// for it.
#[pyclass(module = "clusterkit._native")]
#[derive(Debug)]
pub struct Wake {
    tx: Mutex<Option<oneshot::Sender<()>>>,
}

#[pymethods]
impl Wake {
    fn __call__(&self, _fut: &Bound<'_, PyAny>) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

/// Runs the Python callable `f` (a plain function or one returning an awaitable) in the loop
/// `lp` and waits for its value, which must be bytes (or str). For `get_or_compute` in the
/// async face: the core calls this on a miss, at most once per key at a time.
pub(crate) async fn compute_in_loop(
    f: Py<PyAny>,
    lp: Py<PyAny>,
    slot: std::sync::Arc<Mutex<Option<PyErr>>>,
) -> clusterkit::Result<clusterkit::cache::Bytes> {
    let (tx, rx) = oneshot::channel();
    let started = Python::attach(|py| -> PyResult<Py<PyAny>> {
        let h = helpers(py)?;
        let cf = h.compute.bind(py).call1((f, lp))?;
        let wake = Py::new(
            py,
            Wake {
                tx: Mutex::new(Some(tx)),
            },
        )?;
        cf.call_method1("add_done_callback", (wake,))?;
        Ok(cf.unbind())
    });
    let cf = match started {
        Ok(cf) => cf,
        Err(e) => return Err(crate::cache::stash(&slot, e)),
    };
    let _ = rx.await;
    Python::attach(move |py| {
        let v = cf.bind(py).call_method0("result");
        let r = crate::cache::compute_value(py, v, &slot);
        drop(cf);
        r
    })
}
