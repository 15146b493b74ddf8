//! The task queue (issue #16): enqueue, introspection, dead letters, and consumers that
//! reserve and settle jobs. Types and errors only; the worker loop (threads, asyncio,
//! heartbeat, signals) is in python/clusterkit/queue.py on top of these calls.

use clusterkit::queue::{
    Consumer as CoreConsumer, DeadJob, EnqueueOptions, FailOutcome, Job as CoreJob, NewJobSpec,
    TaskQueue,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::aio;
use crate::errors::{bytes_arg, invalid, json_to_py, run, seconds_arg, str_arg, IntoPy};

/// A deployment's task queue service.
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Queue {
    pub(crate) q: TaskQueue,
}

/// A consumer of one queue (one name; any number of reserves may run on it at once).
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Consumer {
    c: CoreConsumer,
}

/// A reserved job.
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Job {
    job: CoreJob,
}

fn options(text: Option<&str>) -> PyResult<EnqueueOptions> {
    EnqueueOptions::from_json(text.unwrap_or("")).py()
}

/// `[(payload, options_json_or_None), ...]` as job specs.
fn specs(jobs: &Bound<'_, PyAny>) -> PyResult<Vec<NewJobSpec>> {
    let list = jobs
        .cast::<PyList>()
        .map_err(|_| invalid("jobs", "must be a list of (payload, options) pairs"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("jobs[{i}]");
        let t = item
            .cast::<PyTuple>()
            .map_err(|_| invalid(&field, "must be a (payload, options) pair"))?;
        if t.len() != 2 {
            return Err(invalid(&field, "must be a (payload, options) pair"));
        }
        let payload = bytes_arg(&t.get_item(0)?, &format!("{field}.payload"))?.into_owned();
        let opts = t.get_item(1)?;
        let options = if opts.is_none() {
            EnqueueOptions::default()
        } else {
            let text = str_arg(&opts, &format!("{field}.options"))?;
            EnqueueOptions::from_json(&text)
                .map_err(|e| e.in_field(&field))
                .py()?
        };
        out.push(NewJobSpec {
            payload: payload.into(),
            options,
        });
    }
    Ok(out)
}

fn to_json<T: serde::Serialize>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let v = serde_json::to_value(v)
        .map_err(|e| clusterkit::Error::Internal(format!("as JSON: {e}")))
        .py()?;
    json_to_py(py, &v)
}

fn py_str(py: Python<'_>, s: String) -> PyResult<Py<PyAny>> {
    Ok(pyo3::types::PyString::new(py, &s).into_any().unbind())
}

fn py_ids(py: Python<'_>, ids: Vec<String>) -> PyResult<Py<PyAny>> {
    Ok(PyList::new(py, ids)?.into_any().unbind())
}

fn py_u64(py: Python<'_>, n: u64) -> PyResult<Py<PyAny>> {
    Ok(n.into_pyobject(py)?.into_any().unbind())
}

fn py_bools(py: Python<'_>, v: Vec<bool>) -> PyResult<Py<PyAny>> {
    Ok(PyList::new(py, v)?.into_any().unbind())
}

fn py_unit(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

fn py_stats(py: Python<'_>, s: clusterkit::queue::QueueStats) -> PyResult<Py<PyAny>> {
    to_json(py, &s)
}

fn py_dead(py: Python<'_>, jobs: Vec<DeadJob>) -> PyResult<Py<PyAny>> {
    let l = PyList::empty(py);
    for j in jobs {
        let d = to_json(py, &j)?;
        let d = d.bind(py).cast::<PyDict>()?.clone();
        d.set_item("payload", PyBytes::new(py, &j.payload))?;
        l.append(d)?;
    }
    Ok(l.into_any().unbind())
}

fn py_outcome(py: Python<'_>, o: FailOutcome) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    match o {
        FailOutcome::Retry { at_ms, attempt } => {
            d.set_item("outcome", "retry")?;
            d.set_item("at_ms", at_ms)?;
            d.set_item("attempt", attempt)?;
        }
        _ => d.set_item("outcome", "dead")?,
    }
    Ok(d.into_any().unbind())
}

fn py_opt_job(py: Python<'_>, j: Option<CoreJob>) -> PyResult<Py<PyAny>> {
    match j {
        Some(job) => Ok(Py::new(py, Job { job })?.into_any()),
        None => Ok(py.None()),
    }
}

fn py_jobs(py: Python<'_>, jobs: Vec<CoreJob>) -> PyResult<Py<PyAny>> {
    let l = PyList::empty(py);
    for job in jobs {
        l.append(Py::new(py, Job { job })?)?;
    }
    Ok(l.into_any().unbind())
}

fn limit_arg(limit: i64) -> PyResult<usize> {
    if limit < 1 {
        return Err(invalid("limit", format!("must be >= 1, got {limit}")));
    }
    Ok(limit as usize)
}

fn max_arg(max: i64) -> PyResult<usize> {
    if max < 1 {
        return Err(invalid("max", format!("must be >= 1, got {max}")));
    }
    Ok(max as usize)
}

#[pymethods]
impl Queue {
    /// `"memory"` or `"redis"`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.q.backend_name()
    }

    /// The lease of a reserved job, in seconds.
    #[getter]
    fn visibility_timeout(&self) -> f64 {
        self.q.options().visibility_timeout.as_secs_f64()
    }

    /// The queue's default max attempts.
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.q.options().max_attempts
    }

    #[pyo3(signature = (queue, payload, options=None))]
    fn enqueue(
        &self,
        py: Python<'_>,
        queue: &Bound<'_, PyAny>,
        payload: &Bound<'_, PyAny>,
        options: Option<&str>,
    ) -> PyResult<String> {
        let queue = str_arg(queue, "queue")?;
        let payload = bytes_arg(payload, "payload")?;
        let o = self::options(options)?;
        run(py, self.q.enqueue(&queue, &payload, &o))
    }

    #[pyo3(signature = (queue, payload, options=None))]
    fn enqueue_async<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        payload: &Bound<'py, PyAny>,
        options: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let payload = bytes_arg(payload, "payload")?.into_owned();
        let o = self::options(options)?;
        let q = self.q.clone();
        aio::spawn(
            py,
            async move { q.enqueue(&queue, &payload, &o).await },
            py_str,
        )
    }

    /// `jobs`: a list of `(payload, options_json_or_None)`; one round trip.
    fn enqueue_many(
        &self,
        py: Python<'_>,
        queue: &Bound<'_, PyAny>,
        jobs: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        let queue = str_arg(queue, "queue")?;
        let jobs = specs(jobs)?;
        run(py, self.q.enqueue_many(&queue, &jobs))
    }

    fn enqueue_many_async<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        jobs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let jobs = specs(jobs)?;
        let q = self.q.clone();
        aio::spawn(
            py,
            async move { q.enqueue_many(&queue, &jobs).await },
            py_ids,
        )
    }

    fn stats(&self, py: Python<'_>, queue: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let s = run(py, self.q.stats(&queue))?;
        py_stats(py, s)
    }

    fn stats_async<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let q = self.q.clone();
        aio::spawn(py, async move { q.stats(&queue).await }, py_stats)
    }

    fn dead_jobs(
        &self,
        py: Python<'_>,
        queue: &Bound<'_, PyAny>,
        limit: i64,
    ) -> PyResult<Py<PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let limit = limit_arg(limit)?;
        let d = run(py, self.q.dead_jobs(&queue, limit))?;
        py_dead(py, d)
    }

    fn redrive(&self, py: Python<'_>, queue: &Bound<'_, PyAny>, limit: i64) -> PyResult<u64> {
        let queue = str_arg(queue, "queue")?;
        let limit = limit_arg(limit)?;
        run(py, self.q.redrive(&queue, limit))
    }

    fn redrive_async<'py>(
        &self,
        py: Python<'py>,
        queue: &Bound<'py, PyAny>,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = str_arg(queue, "queue")?;
        let limit = limit_arg(limit)?;
        let q = self.q.clone();
        aio::spawn(py, async move { q.redrive(&queue, limit).await }, py_u64)
    }

    fn purge(&self, py: Python<'_>, queue: &Bound<'_, PyAny>) -> PyResult<()> {
        let queue = str_arg(queue, "queue")?;
        run(py, self.q.purge(&queue))
    }

    /// This handle's counters as a dict.
    fn metrics(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_json(py, &self.q.metrics())
    }

    fn consumer(&self, queue: &Bound<'_, PyAny>) -> PyResult<Consumer> {
        let queue = str_arg(queue, "queue")?;
        Ok(Consumer {
            c: self.q.consumer(&queue).py()?,
        })
    }
}

#[pymethods]
impl Consumer {
    #[getter]
    fn name(&self) -> &str {
        self.c.name()
    }

    #[getter]
    fn queue(&self) -> &str {
        self.c.queue()
    }

    #[getter]
    fn is_stopped(&self) -> bool {
        self.c.is_stopped()
    }

    /// The next job within `timeout` seconds (0: do not wait), or None.
    fn reserve(&self, py: Python<'_>, timeout: &Bound<'_, PyAny>) -> PyResult<Option<Job>> {
        let t = seconds_arg(timeout, "timeout")?;
        Ok(run(py, self.c.reserve(t))?.map(|job| Job { job }))
    }

    fn reserve_async<'py>(
        &self,
        py: Python<'py>,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds_arg(timeout, "timeout")?;
        let c = self.c.clone();
        aio::spawn(py, async move { c.reserve(t).await }, py_opt_job)
    }

    fn reserve_many(
        &self,
        py: Python<'_>,
        max: i64,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Job>> {
        let t = seconds_arg(timeout, "timeout")?;
        let max = max_arg(max)?;
        Ok(run(py, self.c.reserve_many(max, t))?
            .into_iter()
            .map(|job| Job { job })
            .collect())
    }

    fn reserve_many_async<'py>(
        &self,
        py: Python<'py>,
        max: i64,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds_arg(timeout, "timeout")?;
        let max = max_arg(max)?;
        let c = self.c.clone();
        aio::spawn(py, async move { c.reserve_many(max, t).await }, py_jobs)
    }

    fn ack(&self, py: Python<'_>, receipt: &str) -> PyResult<()> {
        run(py, self.c.ack(receipt))
    }

    fn ack_async<'py>(&self, py: Python<'py>, receipt: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(py, async move { c.ack(&receipt).await }, py_unit)
    }

    /// One bool per receipt: `False` when its lease was gone.
    fn ack_many(&self, py: Python<'_>, receipts: Vec<String>) -> PyResult<Vec<bool>> {
        run(py, self.c.ack_many(&receipts))
    }

    fn ack_many_async<'py>(
        &self,
        py: Python<'py>,
        receipts: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(py, async move { c.ack_many(&receipts).await }, py_bools)
    }

    /// Acks `receipts` and reserves up to `max` jobs: one round trip (one script run on
    /// Redis) when jobs wait; else the reserve then waits up to `timeout`, the acks done.
    /// `(acked, jobs)`.
    fn ack_and_reserve(
        &self,
        py: Python<'_>,
        receipts: Vec<String>,
        max: i64,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<(Vec<bool>, Vec<Job>)> {
        let t = seconds_arg(timeout, "timeout")?;
        let max = max_arg(max)?;
        let (acked, jobs) = run(py, self.c.ack_and_reserve(&receipts, max, t))?;
        Ok((acked, jobs.into_iter().map(|job| Job { job }).collect()))
    }

    fn ack_and_reserve_async<'py>(
        &self,
        py: Python<'py>,
        receipts: Vec<String>,
        max: i64,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds_arg(timeout, "timeout")?;
        let max = max_arg(max)?;
        let c = self.c.clone();
        aio::spawn(
            py,
            async move { c.ack_and_reserve(&receipts, max, t).await },
            |py, (acked, jobs)| {
                let t = pyo3::types::PyTuple::new(py, [py_bools(py, acked)?, py_jobs(py, jobs)?])?;
                Ok(t.into_any().unbind())
            },
        )
    }

    /// `{"outcome": "retry", "at_ms": ..., "attempt": ...}` or `{"outcome": "dead"}`.
    fn fail(&self, py: Python<'_>, receipt: &str, error: &str) -> PyResult<Py<PyAny>> {
        let o = run(py, self.c.fail(receipt, error))?;
        py_outcome(py, o)
    }

    fn fail_async<'py>(
        &self,
        py: Python<'py>,
        receipt: String,
        error: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(
            py,
            async move { c.fail(&receipt, &error).await },
            py_outcome,
        )
    }

    fn extend(&self, py: Python<'_>, receipt: &str) -> PyResult<()> {
        run(py, self.c.extend(receipt))
    }

    fn extend_async<'py>(&self, py: Python<'py>, receipt: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(py, async move { c.extend(&receipt).await }, py_unit)
    }

    fn release(&self, py: Python<'_>, receipt: &str) -> PyResult<()> {
        run(py, self.c.release(receipt))
    }

    fn release_async<'py>(&self, py: Python<'py>, receipt: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(py, async move { c.release(&receipt).await }, py_unit)
    }

    /// Waiting reserves return None at once; never blocks (safe in a signal handler).
    fn stop(&self) {
        self.c.stop();
    }

    /// stop() + every job still leased to this consumer goes back; returns how many.
    fn shutdown(&self, py: Python<'_>) -> PyResult<u64> {
        run(py, self.c.shutdown())
    }

    fn shutdown_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c.clone();
        aio::spawn(py, async move { c.shutdown().await }, py_u64)
    }
}

#[pymethods]
impl Job {
    #[getter]
    fn id(&self) -> &str {
        &self.job.id
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.job.queue
    }
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.job.payload)
    }
    #[getter]
    fn attempt(&self) -> u32 {
        self.job.attempt
    }
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.job.max_attempts
    }
    #[getter]
    fn enqueued_at_ms(&self) -> u64 {
        self.job.enqueued_at_ms
    }
    #[getter]
    fn priority(&self) -> &'static str {
        self.job.priority.as_str()
    }
    #[getter]
    fn last_error(&self) -> Option<&str> {
        self.job.last_error.as_deref()
    }
    #[getter]
    fn receipt(&self) -> &str {
        &self.job.receipt
    }
    fn __repr__(&self) -> String {
        format!(
            "<clusterkit.Job queue={:?} id={} attempt={}/{}>",
            self.job.queue, self.job.id, self.job.attempt, self.job.max_attempts
        )
    }
}
