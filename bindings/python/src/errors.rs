//! Errors and argument conversion: core errors become the `clusterkit.errors` classes (one per
//! `ErrorKind`, rooted at `ClusterkitError`); Python arguments become core types, and a bad one
//! raises `InvalidArgumentError` naming the argument.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use clusterkit::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};

/// `clusterkit.errors._BY_KIND`: kind name -> exception class.
static CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn class_for<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    let by_kind = CLASSES.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let m = py.import("clusterkit.errors")?;
        Ok(m.getattr("_BY_KIND")?.cast_into::<PyDict>()?.unbind())
    })?;
    by_kind
        .bind(py)
        .get_item(kind)?
        .ok_or_else(|| PyRuntimeError::new_err(format!("no exception class for kind {kind}")))
}

/// The Python exception for a core error: its class by kind, the message, and `field` for
/// an invalid argument. Messages come from the core, which never puts secrets in them.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let kind = e.kind();
        let field = match &e {
            Error::InvalidArgument { field, .. } => Some(field.clone()),
            _ => None,
        };
        match class_for(py, kind.as_str()).and_then(|cls| cls.call1((e.to_string(), field))) {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        }
    })
}

/// An `InvalidArgumentError` for argument `field`.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> PyErr {
    to_py(Error::invalid(field, message))
}

/// Result of a core call as a Python result.
pub(crate) trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for clusterkit::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Runs `fut` on the core's runtime with the GIL released while it waits.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    fut: impl Future<Output = clusterkit::Result<T>> + Send,
) -> PyResult<T> {
    py.detach(|| clusterkit::blocking::block_on(fut).and_then(|r| r))
        .py()
}

/// Bytes of a `bytes`, `bytearray`, `memoryview`-free argument, or of a `str` encoded as
/// UTF-8. Anything else is an `InvalidArgumentError` naming `field`.
pub(crate) fn bytes_arg<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(match s.to_cow()? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        });
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    Err(invalid(
        field,
        format!(
            "must be bytes or str, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
    ))
}

/// A `str` argument.
pub(crate) fn str_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(invalid(field, "must be a str")),
    }
}

/// Seconds (int, float or `datetime.timedelta`) as a duration: finite, not negative.
pub(crate) fn seconds_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Duration> {
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(invalid(
            field,
            "must be seconds (int, float or timedelta), got bool",
        ));
    }
    let secs: f64 = if let Ok(v) = obj.extract::<f64>() {
        v
    } else if obj.hasattr("total_seconds")? {
        obj.call_method0("total_seconds")?.extract::<f64>()?
    } else {
        return Err(invalid(field, "must be seconds (int, float or timedelta)"));
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(
            field,
            format!("must be a finite number of seconds >= 0, got {secs}"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| invalid(field, format!("is too large: {secs}")))
}

/// An optional duration argument (`None` stays `None`).
pub(crate) fn opt_seconds(
    obj: Option<&Bound<'_, PyAny>>,
    field: &str,
) -> PyResult<Option<Duration>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => seconds_arg(o, field).map(Some),
    }
}

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub(crate) fn json_to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                n.as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(json_to_py(py, x)?)?;
            }
            l.into_any().unbind()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}
