//! Distributed sessions: create, load (optionally locked), read and write fields, save (delta),
//! regenerate, destroy, touch.

use std::sync::{Arc, Mutex, MutexGuard};

use clusterkit::cache::Bytes;
use clusterkit::session::{Session as CoreSession, SessionStore};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::aio;
use crate::errors::{bytes_arg, run, str_arg, IntoPy};

/// A deployment's session store.
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Sessions {
    pub(crate) store: SessionStore,
}

/// One session as a request sees it. Not meant for concurrent use from several threads
/// (calls are serialized).
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Session {
    store: SessionStore,
    s: Arc<Mutex<CoreSession>>,
}

impl Session {
    fn new(store: &SessionStore, s: CoreSession) -> Session {
        Session {
            store: store.clone(),
            s: Arc::new(Mutex::new(s)),
        }
    }
    fn lock(&self) -> MutexGuard<'_, CoreSession> {
        self.s.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let s = self.lock().clone();
        if !s.is_locked() {
            return;
        }
        // A lock never given back by save/unlock: give it back in the background.
        let (store, mut s) = (self.store.clone(), s);
        let _ = clusterkit::blocking::spawn(async move {
            let _ = store.unlock(&mut s).await;
        });
    }
}

fn opt_session(py: Python<'_>, v: Option<(SessionStore, CoreSession)>) -> PyResult<Py<PyAny>> {
    match v {
        Some((store, s)) => Ok(Py::new(py, Session::new(&store, s))?.into_any()),
        None => Ok(py.None()),
    }
}

fn py_bool(py: Python<'_>, b: bool) -> PyResult<Py<PyAny>> {
    Ok(pyo3::types::PyBool::new(py, b)
        .to_owned()
        .into_any()
        .unbind())
}

/// A session's state after an async operation on a copy, written back.
fn write_back(py: Python<'_>, v: (Arc<Mutex<CoreSession>>, CoreSession)) -> PyResult<Py<PyAny>> {
    *v.0.lock().unwrap_or_else(|e| e.into_inner()) = v.1;
    Ok(py.None())
}

#[pymethods]
impl Sessions {
    /// A new empty session with a fresh id (nothing stored until save).
    fn create(&self) -> PyResult<Session> {
        Ok(Session::new(&self.store, self.store.create().py()?))
    }

    /// The session `id`, or None if unknown, expired or malformed. `lock`: hold the
    /// session's lock until save/unlock (TimeoutError if another request keeps it).
    #[pyo3(signature = (id, lock=false))]
    fn load(&self, py: Python<'_>, id: &Bound<'_, PyAny>, lock: bool) -> PyResult<Option<Session>> {
        let id = bytes_arg(id, "id")?;
        let s = if lock {
            run(py, self.store.load_locked(&id))?
        } else {
            run(py, self.store.load(&id))?
        };
        Ok(s.map(|s| Session::new(&self.store, s)))
    }

    fn destroy(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = bytes_arg(id, "id")?;
        run(py, self.store.destroy(&id))
    }

    fn touch(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = bytes_arg(id, "id")?;
        run(py, self.store.touch(&id))
    }

    #[pyo3(signature = (id, lock=false))]
    fn load_async<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
        lock: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = bytes_arg(id, "id")?.into_owned();
        let store = self.store.clone();
        aio::spawn(
            py,
            async move {
                let s = if lock {
                    store.load_locked(&id).await?
                } else {
                    store.load(&id).await?
                };
                Ok(s.map(|s| (store, s)))
            },
            opt_session,
        )
    }

    fn destroy_async<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = bytes_arg(id, "id")?.into_owned();
        let store = self.store.clone();
        aio::spawn(py, async move { store.destroy(&id).await }, py_bool)
    }

    fn touch_async<'py>(
        &self,
        py: Python<'py>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = bytes_arg(id, "id")?.into_owned();
        let store = self.store.clone();
        aio::spawn(py, async move { store.touch(&id).await }, py_bool)
    }
}

#[pymethods]
impl Session {
    /// The session id (a secret: send it only in the cookie).
    #[getter]
    fn id(&self) -> String {
        self.lock().id().to_string()
    }
    #[getter]
    fn is_new(&self) -> bool {
        self.lock().is_new()
    }
    #[getter]
    fn is_modified(&self) -> bool {
        self.lock().is_modified()
    }
    #[getter]
    fn is_locked(&self) -> bool {
        self.lock().is_locked()
    }
    #[getter]
    fn created_at_ms(&self) -> u64 {
        self.lock().created_at_ms()
    }

    fn get(&self, py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyBytes>>> {
        let name = str_arg(name, "name")?;
        Ok(self.lock().get(&name).map(|b| PyBytes::new(py, b).unbind()))
    }

    fn set(&self, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = str_arg(name, "name")?;
        if name.is_empty() {
            return Err(crate::errors::invalid("name", "must not be empty"));
        }
        let value = Bytes::copy_from_slice(&bytes_arg(value, "value")?);
        self.lock().set(name, value);
        Ok(())
    }

    fn remove(&self, name: &Bound<'_, PyAny>) -> PyResult<()> {
        let name = str_arg(name, "name")?;
        self.lock().remove(&name);
        Ok(())
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let s = self.lock();
        PyList::new(py, s.keys())
    }

    /// Writes the changed fields (and gives back the lock, if held).
    fn save(&self, py: Python<'_>) -> PyResult<()> {
        let (store, s) = (self.store.clone(), self.s.clone());
        py.detach(move || {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            clusterkit::blocking::block_on(store.save(&mut g)).and_then(|r| r)
        })
        .py()
    }

    /// Gives back the session's lock without saving.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        let (store, s) = (self.store.clone(), self.s.clone());
        py.detach(move || {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            clusterkit::blocking::block_on(store.unlock(&mut g)).and_then(|r| r)
        })
        .py()
    }

    /// A new id for the same fields (call after login: fixation defence).
    fn regenerate(&self, py: Python<'_>) -> PyResult<()> {
        let (store, s) = (self.store.clone(), self.s.clone());
        py.detach(move || {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            clusterkit::blocking::block_on(store.regenerate(&mut g)).and_then(|r| r)
        })
        .py()
    }

    fn save_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (store, arc, mut s) = (self.store.clone(), self.s.clone(), self.lock().clone());
        aio::spawn(
            py,
            async move { store.save(&mut s).await.map(|_| (arc, s)) },
            write_back,
        )
    }

    fn unlock_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (store, arc, mut s) = (self.store.clone(), self.s.clone(), self.lock().clone());
        aio::spawn(
            py,
            async move { store.unlock(&mut s).await.map(|_| (arc, s)) },
            write_back,
        )
    }

    fn regenerate_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (store, arc, mut s) = (self.store.clone(), self.s.clone(), self.lock().clone());
        aio::spawn(
            py,
            async move { store.regenerate(&mut s).await.map(|_| (arc, s)) },
            write_back,
        )
    }

    fn __repr__(&self) -> String {
        let s = self.lock();
        // The id is a secret: never in a repr.
        format!(
            "<clusterkit.Session fields={} new={} locked={}>",
            s.keys().count(),
            s.is_new(),
            s.is_locked()
        )
    }
}
