//! The task queue (issue #16): enqueue, introspection, dead letters, and consumers that
//! reserve and settle jobs. Types and errors only; index.js adds the option objects, the
//! async iterator of jobs, the `Worker` (concurrency, heartbeat, graceful close) and
//! AbortSignal support.

use clusterkit::queue::{
    Consumer as CoreConsumer, EnqueueOptions, FailOutcome, Job as CoreJob, NewJobSpec, TaskQueue,
};
use napi::bindgen_prelude::{Buffer, Either, ToNapiValue};
use napi::{sys, Env, Unknown};
use napi_derive::napi;

use crate::cache::bytes;
use crate::errors::{invalid, ms, to_napi, OrNapi};
use crate::promise::spawn;

/// A reserved job.
#[napi(object)]
pub struct JobData {
    pub id: String,
    pub queue: String,
    pub payload: Buffer,
    /// This delivery's attempt, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Unix ms of the first enqueue.
    pub enqueued_at_ms: f64,
    /// "high" | "normal" | "low".
    pub priority: String,
    /// The previous attempt's error.
    pub last_error: Option<String>,
    /// The lease token of this delivery (ack/fail/extend/release take it).
    pub receipt: String,
}

fn job_data(j: CoreJob) -> JobData {
    JobData {
        payload: Buffer::from(j.payload.to_vec()),
        attempt: j.attempt,
        max_attempts: j.max_attempts,
        enqueued_at_ms: j.enqueued_at_ms as f64,
        priority: j.priority.as_str().to_string(),
        last_error: j.last_error,
        receipt: j.receipt,
        queue: j.queue,
        id: j.id,
    }
}

/// A JavaScript value built on the JavaScript thread (returned as it is).
struct Raw(sys::napi_value);

impl ToNapiValue for Raw {
    unsafe fn to_napi_value(_env: sys::napi_env, v: Self) -> napi::Result<sys::napi_value> {
        Ok(v.0)
    }
}

/// Slots per job in [`flat_batch`].
const SLOTS: usize = 8;

/// The acks' results and a batch of jobs in the shape lib/queue.js reads without copying:
/// `[acked (boolean[]), payloads (one Buffer, all payloads back to back), then per job
/// id, receipt, attempt, maxAttempts, enqueuedAtMs, priority index (0 high .. 2 low),
/// lastError (string or null), end offset of its payload]`. One array and one buffer per
/// batch instead of an object with nine named properties and a buffer per job.
fn flat_batch(env: Env, acked: &[bool], jobs: Vec<CoreJob>) -> napi::Result<Raw> {
    let raw = env.raw();
    let mut total = 0;
    for j in &jobs {
        total += j.payload.len();
    }
    let mut all = Vec::with_capacity(total);
    for j in &jobs {
        all.extend_from_slice(&j.payload);
    }
    let mut arr = std::ptr::null_mut();
    // SAFETY: napi calls on the JavaScript thread (call_js or the inline path) with valid
    // out-pointers; every value is set into `arr` before the next allocation can collect it
    // (napi values live until the callback returns).
    unsafe {
        napi::check_status!(sys::napi_create_array_with_length(
            raw,
            2 + SLOTS * jobs.len(),
            &mut arr
        ))?;
        let mut a = std::ptr::null_mut();
        napi::check_status!(sys::napi_create_array_with_length(raw, acked.len(), &mut a))?;
        for (i, &ok) in acked.iter().enumerate() {
            let mut b = std::ptr::null_mut();
            napi::check_status!(sys::napi_get_boolean(raw, ok, &mut b))?;
            napi::check_status!(sys::napi_set_element(raw, a, i as u32, b))?;
        }
        napi::check_status!(sys::napi_set_element(raw, arr, 0, a))?;
        let mut buf = std::ptr::null_mut();
        let mut data = std::ptr::null_mut();
        napi::check_status!(sys::napi_create_buffer_copy(
            raw,
            all.len(),
            all.as_ptr().cast(),
            &mut data,
            &mut buf
        ))?;
        napi::check_status!(sys::napi_set_element(raw, arr, 1, buf))?;
        let mut k = 2u32;
        let mut end = 0usize;
        for j in jobs {
            end += j.payload.len();
            let vals = [
                String::to_napi_value(raw, j.id)?,
                String::to_napi_value(raw, j.receipt)?,
                u32::to_napi_value(raw, j.attempt)?,
                u32::to_napi_value(raw, j.max_attempts)?,
                f64::to_napi_value(raw, j.enqueued_at_ms as f64)?,
                u32::to_napi_value(raw, j.priority.index() as u32)?,
                Option::<String>::to_napi_value(raw, j.last_error)?,
                f64::to_napi_value(raw, end as f64)?,
            ];
            for v in vals {
                napi::check_status!(sys::napi_set_element(raw, arr, k, v))?;
                k += 1;
            }
        }
    }
    Ok(Raw(arr))
}

/// A dead-lettered job.
#[napi(object)]
pub struct DeadJobData {
    pub id: String,
    pub payload: Buffer,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at_ms: f64,
    pub enqueued_at_ms: f64,
    pub max_attempts: u32,
    pub priority: String,
}

fn options(text: Option<String>) -> napi::Result<EnqueueOptions> {
    EnqueueOptions::from_json(text.as_deref().unwrap_or("")).or_napi()
}

fn json<T: serde::Serialize>(v: &T) -> napi::Result<String> {
    serde_json::to_string(v)
        .map_err(|e| to_napi(clusterkit::Error::Internal(format!("as JSON: {e}"))))
}

fn limit(v: f64, field: &str) -> napi::Result<usize> {
    if !v.is_finite() || v < 1.0 || v.fract() != 0.0 {
        return Err(invalid(field, format!("must be an integer >= 1, got {v}")));
    }
    Ok(v.min(1e9) as usize)
}

/// The task queue service of a deployment (native handle; see index.js `Queue`).
#[napi]
pub struct Queue {
    pub(crate) inner: TaskQueue,
    inline: bool,
}

impl Queue {
    pub(crate) fn new(inner: TaskQueue) -> Queue {
        Queue {
            inline: inner.backend_name() == "memory",
            inner,
        }
    }
}

#[napi]
impl Queue {
    /// "memory" or "redis".
    #[napi(getter)]
    pub fn backend(&self) -> String {
        self.inner.backend_name().to_string()
    }

    /// The lease of a reserved job, in ms.
    #[napi(getter)]
    pub fn visibility_timeout_ms(&self) -> f64 {
        self.inner.options().visibility_timeout.as_millis() as f64
    }

    /// Stores one job; resolves to its id. `optionsJson`: the options document (ms).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn enqueue<'e>(
        &self,
        env: &'e Env,
        queue: String,
        payload: Either<String, Buffer>,
        options_json: Option<String>,
    ) -> napi::Result<Unknown<'e>> {
        let o = options(options_json)?;
        let payload = bytes(payload);
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.enqueue(&queue, &payload, &o).await },
            |_, id| Ok(id),
        )
    }

    /// Many jobs in one round trip. `optionsJson[i]` ("" or absent = defaults) goes with
    /// `payloads[i]`; a single entry applies to every job.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn enqueue_many<'e>(
        &self,
        env: &'e Env,
        queue: String,
        payloads: Vec<Either<String, Buffer>>,
        options_json: Option<Vec<String>>,
    ) -> napi::Result<Unknown<'e>> {
        let opts = options_json.unwrap_or_default();
        if opts.len() > 1 && opts.len() != payloads.len() {
            return Err(invalid(
                "options",
                "must have one entry per job, or a single entry for all",
            ));
        }
        let shared = match opts.len() {
            1 => Some(EnqueueOptions::from_json(&opts[0]).or_napi()?),
            _ => None,
        };
        let mut jobs = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.into_iter().enumerate() {
            let options = match (&shared, opts.get(i)) {
                (Some(s), _) => s.clone(),
                (None, Some(t)) => EnqueueOptions::from_json(t)
                    .map_err(|e| e.in_field(&format!("jobs[{i}]")))
                    .or_napi()?,
                (None, None) => EnqueueOptions::default(),
            };
            jobs.push(NewJobSpec {
                payload: bytes(p),
                options,
            });
        }
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.enqueue_many(&queue, &jobs).await },
            |_, ids| Ok(ids),
        )
    }

    /// `{waiting, in_flight, delayed, dead, oldest_age_ms}` as JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn stats_json<'e>(&self, env: &'e Env, queue: String) -> napi::Result<Unknown<'e>> {
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.stats(&queue).await },
            |_, s| json(&s),
        )
    }

    /// Dead-lettered jobs, oldest first.
    #[napi(ts_return_type = "Promise<DeadJobData[]>")]
    pub fn dead_jobs<'e>(
        &self,
        env: &'e Env,
        queue: String,
        max: f64,
    ) -> napi::Result<Unknown<'e>> {
        let n = limit(max, "limit")?;
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.dead_jobs(&queue, n).await },
            |_, jobs| {
                Ok(jobs
                    .into_iter()
                    .map(|j| DeadJobData {
                        id: j.id,
                        payload: Buffer::from(j.payload.to_vec()),
                        attempts: j.attempts,
                        last_error: j.last_error,
                        failed_at_ms: j.failed_at_ms as f64,
                        enqueued_at_ms: j.enqueued_at_ms as f64,
                        max_attempts: j.max_attempts,
                        priority: j.priority.as_str().to_string(),
                    })
                    .collect::<Vec<_>>())
            },
        )
    }

    /// Moves up to `max` dead jobs back to their lanes; resolves to how many moved.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn redrive<'e>(&self, env: &'e Env, queue: String, max: f64) -> napi::Result<Unknown<'e>> {
        let n = limit(max, "limit")?;
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.redrive(&queue, n).await },
            |_, n| Ok(n as f64),
        )
    }

    /// Deletes every job of `queue`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn purge<'e>(&self, env: &'e Env, queue: String) -> napi::Result<Unknown<'e>> {
        let q = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { q.purge(&queue).await },
            |_, ()| Ok(()),
        )
    }

    /// This handle's counters as JSON text.
    #[napi]
    pub fn metrics_json(&self) -> napi::Result<String> {
        json(&self.inner.metrics())
    }

    /// A consumer of `queue` (its own name).
    #[napi]
    pub fn consumer(&self, queue: String) -> napi::Result<Consumer> {
        Ok(Consumer {
            inner: self.inner.consumer(&queue).or_napi()?,
            inline: self.inline,
        })
    }
}

/// A consumer of one queue (native handle; see index.js).
#[napi]
pub struct Consumer {
    inner: CoreConsumer,
    inline: bool,
}

#[napi]
impl Consumer {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[napi(getter)]
    pub fn queue(&self) -> String {
        self.inner.queue().to_string()
    }

    #[napi(getter)]
    pub fn is_stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// The next job within `timeoutMs` (0: do not wait), or null.
    #[napi(ts_return_type = "Promise<JobData | null>")]
    pub fn reserve<'e>(&self, env: &'e Env, timeout_ms: f64) -> napi::Result<Unknown<'e>> {
        let t = ms("timeout", timeout_ms)?;
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.reserve(t).await },
            |_, j| Ok(j.map(job_data)),
        )
    }

    /// Acks `receipts` and reserves up to `max` jobs (one round trip and one script run on
    /// Redis when jobs wait), waiting up to `timeoutMs` for the first. Resolves to the flat
    /// batch lib/queue.js reads (`[acked, payloads, 8 slots per job]`).
    #[napi(ts_return_type = "Promise<unknown[]>")]
    pub fn ack_and_reserve<'e>(
        &self,
        env: &'e Env,
        receipts: Vec<String>,
        max: f64,
        timeout_ms: f64,
    ) -> napi::Result<Unknown<'e>> {
        let t = ms("timeout", timeout_ms)?;
        let n = limit(max, "max")?;
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.ack_and_reserve(&receipts, n, t).await },
            |env, (acked, jobs)| flat_batch(env, &acked, jobs),
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn ack<'e>(&self, env: &'e Env, receipt: String) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.ack(&receipt).await },
            |_, ()| Ok(()),
        )
    }

    /// Acks many jobs in one round trip: resolves to one boolean per receipt (`false`: the
    /// lease was gone).
    #[napi(ts_return_type = "Promise<boolean[]>")]
    pub fn ack_many<'e>(&self, env: &'e Env, receipts: Vec<String>) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.ack_many(&receipts).await },
            |_, acked| Ok(acked),
        )
    }

    /// Resolves to `{"outcome":"retry","at_ms":..,"attempt":..}` or `{"outcome":"dead"}` (JSON).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn fail<'e>(
        &self,
        env: &'e Env,
        receipt: String,
        error: String,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.fail(&receipt, &error).await },
            |_, o| {
                Ok(match o {
                    FailOutcome::Retry { at_ms, attempt } => {
                        format!("{{\"outcome\":\"retry\",\"at_ms\":{at_ms},\"attempt\":{attempt}}}")
                    }
                    _ => "{\"outcome\":\"dead\"}".to_string(),
                })
            },
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn extend<'e>(&self, env: &'e Env, receipt: String) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.extend(&receipt).await },
            |_, ()| Ok(()),
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'e>(&self, env: &'e Env, receipt: String) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.release(&receipt).await },
            |_, ()| Ok(()),
        )
    }

    /// Waiting reserves resolve to null at once; later ones too. Never blocks.
    #[napi]
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// stop() + every job still leased to this consumer goes back; resolves to how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn shutdown<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { c.shutdown().await },
            |_, n| Ok(n as f64),
        )
    }
}
