//! The task queue (ABI 1.2): enqueue, consumers with a blocking reserve, ack / fail / extend /
//! release, stats, re-drive, purge. Logic lives in core (`clusterkit::queue`); this file
//! converts types and errors only.

use std::ffi::{c_char, CString};

use crate::buf::{ck_buf, put_buf};
use crate::deployment::ck_deployment;
use crate::status::{
    arg_bytes, arg_out, arg_ref, arg_str, c_string, ck_status, ffi_call, ffi_value, free_handle,
    opt_str, run, CK_MAX_WAIT_MS,
};
use clusterkit::cache::Bytes;
use clusterkit::queue::{Consumer, EnqueueOptions, FailOutcome, Job};
use clusterkit::Error;

/// A consumer of one queue (a worker). Opaque. Thread-safe: several threads may reserve on
/// one consumer at once (each waits on its own connection), and ck_queue_consumer_stop may be
/// called from any thread (a signal-handling thread) while others wait in ck_queue_reserve.
#[derive(Debug)]
pub struct ck_queue_consumer {
    pub(crate) inner: Consumer,
}

/// A reserved job. Opaque, immutable: read it with the ck_job_* accessors from any thread,
/// settle it with ck_queue_ack / _fail / _extend / _release, free it with ck_job_free.
#[derive(Debug)]
pub struct ck_job {
    pub(crate) job: Job,
    pub(crate) id: CString,
    pub(crate) receipt: CString,
    pub(crate) last_error: Option<CString>,
}

/// Stores one job in queue `queue` (1..128 bytes of A-Z a-z 0-9 _ - .) with `payload`
/// (`payload_len` bytes, at most `[queue] max_payload_bytes`) and `options_json`, a JSON
/// object or NULL/"" for the defaults: `delay_ms` (> 0), `run_at_ms` (Unix ms), `max_attempts`
/// (1..1000), `backoff` ({"kind": "fixed"|"exponential", "delay_ms", "max_ms", "jitter"}),
/// `idempotency_key`, `idempotency_ttl_ms`, `priority` ("high"|"normal"|"low"). On success
/// writes the job id (32 hex characters; for a duplicate idempotency key within its window,
/// the FIRST job's id, and nothing is stored) to `*out_id` as a new buffer, unless `out_id` is
/// NULL. Fails with CK_INVALID_ARGUMENT naming the field (`queue`, `payload`,
/// `options.delay_ms`, ...), CK_UNAVAILABLE / CK_TIMEOUT (Redis down or slow). Blocks the
/// calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_enqueue(
    dep: *const ck_deployment,
    queue: *const c_char,
    payload: *const u8,
    payload_len: usize,
    options_json: *const c_char,
    out_id: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_queue_enqueue", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, queue, payload) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_str(queue, "queue")?,
                arg_bytes(payload, payload_len, "payload")?,
            )
        };
        let options = match opt_str(options_json, "options_json")? {
            Some(t) => EnqueueOptions::from_json(t)?,
            None => EnqueueOptions::default(),
        };
        let id = run(dep.inner.queue().enqueue(queue, payload, &options))?;
        // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
        if let Some(out) = unsafe { out_id.as_mut() } {
            put_buf(out, Bytes::from(id));
        }
        Ok(())
    })
}

/// Makes a consumer of queue `queue` (no I/O) and writes it to `*out`; free it with
/// ck_queue_consumer_free (after ck_queue_consumer_shutdown for a graceful end). Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, a bad or unknown queue name). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_consumer_new(
    dep: *const ck_deployment,
    queue: *const c_char,
    out: *mut *mut ck_queue_consumer,
) -> ck_status {
    ffi_call("ck_queue_consumer_new", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, queue) = unsafe { (arg_ref(dep, "dep")?, arg_str(queue, "queue")?) };
        let inner = dep.inner.queue().consumer(queue)?;
        *out = Box::into_raw(Box::new(ck_queue_consumer { inner }));
        Ok(())
    })
}

/// Waits up to `timeout_ms` (0: do not wait; at most CK_MAX_WAIT_MS) for the next job of the
/// consumer's queue and writes it to `*out` (free it with ck_job_free). The job is leased to
/// this consumer for the visibility timeout: settle it with ck_queue_ack, _fail, _extend or
/// _release. Returns CK_NOT_FOUND when no job came in time or the consumer is stopped.
/// Waiting is blocking reads on the server (no polling). Other failures:
/// CK_INVALID_ARGUMENT (NULL, `timeout_ms` too large), CK_UNAVAILABLE / CK_TIMEOUT. Blocks the
/// calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_reserve(
    c: *const ck_queue_consumer,
    timeout_ms: u64,
    out: *mut *mut ck_job,
) -> ck_status {
    ffi_call("ck_queue_reserve", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "consumer")? };
        let timeout = crate::status::arg_ms(timeout_ms, CK_MAX_WAIT_MS, "timeout_ms")?;
        let job = run(c.inner.reserve(timeout))?
            .ok_or_else(|| Error::NotFound("no job within the timeout".into()))?;
        *out = Box::into_raw(Box::new(ck_job {
            id: c_string(&job.id),
            receipt: c_string(&job.receipt),
            last_error: job.last_error.as_deref().map(c_string),
            job,
        }));
        Ok(())
    })
}

fn settle<'a>(
    c: *const ck_queue_consumer,
    j: *const ck_job,
) -> Result<(&'a ck_queue_consumer, &'a ck_job), Error> {
    // SAFETY: checked by arg_ref; validity is the caller's promise.
    unsafe { Ok((arg_ref(c, "consumer")?, arg_ref(j, "job")?)) }
}

/// The job is done: removes it. Fails with CK_CONFLICT when its lease is gone (the visibility
/// timeout passed and another consumer reclaimed it, or it was settled already),
/// CK_INVALID_ARGUMENT (NULL), CK_UNAVAILABLE / CK_TIMEOUT. Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_ack(c: *const ck_queue_consumer, j: *const ck_job) -> ck_status {
    ffi_call("ck_queue_ack", || {
        let (c, j) = settle(c, j)?;
        run(c.inner.ack(&j.job.receipt))
    })
}

/// The attempt failed with `error` (NUL-terminated, kept with the job up to 4096 bytes, never
/// logged; NULL means ""): the job is retried after its backoff, or moved to the dead-letter
/// list after its last attempt. Writes true to `*dead` (unless NULL) when it was
/// dead-lettered. Fails like ck_queue_ack. Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_fail(
    c: *const ck_queue_consumer,
    j: *const ck_job,
    error: *const c_char,
    dead: *mut bool,
) -> ck_status {
    ffi_call("ck_queue_fail", || {
        let (c, j) = settle(c, j)?;
        let error = opt_str(error, "error")?.unwrap_or("");
        let out = run(c.inner.fail(&j.job.receipt, error))?;
        // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
        if let Some(d) = unsafe { dead.as_mut() } {
            *d = matches!(out, FailOutcome::Dead);
        }
        Ok(())
    })
}

/// Heartbeat: the job's lease runs one full visibility timeout from now. Fails like
/// ck_queue_ack (CK_CONFLICT: it was reclaimed; stop working on it). Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_extend(
    c: *const ck_queue_consumer,
    j: *const ck_job,
) -> ck_status {
    ffi_call("ck_queue_extend", || {
        let (c, j) = settle(c, j)?;
        run(c.inner.extend(&j.job.receipt))
    })
}

/// Puts the job back at the end of its lane without consuming an attempt. Fails like
/// ck_queue_ack. Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_release(
    c: *const ck_queue_consumer,
    j: *const ck_job,
) -> ck_status {
    ffi_call("ck_queue_release", || {
        let (c, j) = settle(c, j)?;
        run(c.inner.release(&j.job.receipt))
    })
}

/// Stops the consumer: reserves waiting now return CK_NOT_FOUND at once, later ones too.
/// Never blocks; callable from any thread (a signal-handling thread). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_consumer_stop(c: *const ck_queue_consumer) {
    ffi_value("ck_queue_consumer_stop", (), || {
        // SAFETY: a non-NULL consumer is live (caller's promise).
        if let Some(c) = unsafe { c.as_ref() } {
            c.inner.stop();
        }
    })
}

/// Graceful end: stops the consumer, then every job still leased to it goes back to its lane
/// without consuming an attempt; writes how many to `*returned` (unless NULL). Settle the
/// jobs you finish before calling it. Fails with CK_INVALID_ARGUMENT (NULL consumer),
/// CK_UNAVAILABLE / CK_TIMEOUT (the leases then expire and are reclaimed). Blocks.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_consumer_shutdown(
    c: *const ck_queue_consumer,
    returned: *mut u64,
) -> ck_status {
    ffi_call("ck_queue_consumer_shutdown", || {
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "consumer")? };
        let n = run(c.inner.shutdown())?;
        // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
        if let Some(r) = unsafe { returned.as_mut() } {
            *r = n;
        }
        Ok(())
    })
}

/// Frees a consumer (jobs it still leases are reclaimed after their visibility timeout; call
/// ck_queue_consumer_shutdown first to return them at once). NULL is a no-op. No other call
/// may use `c` during or after this one.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_consumer_free(c: *mut ck_queue_consumer) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_queue_consumer_free", c) }
}

/// Writes to `*out` a new buffer with the state of queue `queue` as a JSON object: `waiting`,
/// `in_flight`, `delayed`, `dead` and `oldest_age_ms` (null when nothing waits). Fails with
/// CK_INVALID_ARGUMENT (NULL, bad queue name), CK_UNAVAILABLE / CK_TIMEOUT. Blocks.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_stats(
    dep: *const ck_deployment,
    queue: *const c_char,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_queue_stats", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, queue) = unsafe { (arg_ref(dep, "dep")?, arg_str(queue, "queue")?) };
        let s = run(dep.inner.queue().stats(queue))?;
        let text = serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?;
        put_buf(out, Bytes::from(text));
        Ok(())
    })
}

/// Moves up to `limit` (1..10000) dead-lettered jobs of `queue` back to their lanes with a
/// fresh attempt count; writes how many to `*moved` (unless NULL). Fails like
/// ck_queue_stats. Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_redrive(
    dep: *const ck_deployment,
    queue: *const c_char,
    limit: u64,
    moved: *mut u64,
) -> ck_status {
    ffi_call("ck_queue_redrive", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, queue) = unsafe { (arg_ref(dep, "dep")?, arg_str(queue, "queue")?) };
        if limit == 0 || limit > 10_000 {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and 10000, got {limit}"),
            ));
        }
        let n = run(dep.inner.queue().redrive(queue, limit as usize))?;
        // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
        if let Some(m) = unsafe { moved.as_mut() } {
            *m = n;
        }
        Ok(())
    })
}

/// Deletes every job of `queue` (waiting, in flight, delayed, dead). Fails like
/// ck_queue_stats. Blocks. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_queue_purge(
    dep: *const ck_deployment,
    queue: *const c_char,
) -> ck_status {
    ffi_call("ck_queue_purge", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, queue) = unsafe { (arg_ref(dep, "dep")?, arg_str(queue, "queue")?) };
        run(dep.inner.queue().purge(queue))
    })
}

/// The job's id (32 hex characters; NULL if `j` is NULL). Owned by the job. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_id(j: *const ck_job) -> *const c_char {
    ffi_value("ck_job_id", std::ptr::null(), || {
        // SAFETY: a non-NULL job is live (caller's promise).
        unsafe { j.as_ref() }.map_or(std::ptr::null(), |j| j.id.as_ptr())
    })
}

/// The job's payload (`*len` bytes, not NUL-terminated; NULL and 0 if `j` is NULL). Owned by
/// the job. `len` may be NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_payload(j: *const ck_job, len: *mut usize) -> *const u8 {
    ffi_value("ck_job_payload", std::ptr::null(), || {
        // SAFETY: a non-NULL job is live, a non-NULL `len` writable (caller's promise).
        let j = unsafe { j.as_ref() };
        if let Some(l) = unsafe { len.as_mut() } {
            *l = j.map_or(0, |j| j.job.payload.len());
        }
        j.map_or(std::ptr::null(), |j| j.job.payload.as_ptr())
    })
}

/// This delivery's attempt number, from 1 (0 if `j` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_attempt(j: *const ck_job) -> u32 {
    // SAFETY: a non-NULL job is live (caller's promise).
    ffi_value("ck_job_attempt", 0, || {
        unsafe { j.as_ref() }.map_or(0, |j| j.job.attempt)
    })
}

/// The job's max attempts (0 if `j` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_max_attempts(j: *const ck_job) -> u32 {
    // SAFETY: a non-NULL job is live (caller's promise).
    ffi_value("ck_job_max_attempts", 0, || {
        unsafe { j.as_ref() }.map_or(0, |j| j.job.max_attempts)
    })
}

/// When the job was first enqueued, Unix time in ms (0 if `j` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_enqueued_at_ms(j: *const ck_job) -> u64 {
    // SAFETY: a non-NULL job is live (caller's promise).
    ffi_value("ck_job_enqueued_at_ms", 0, || {
        unsafe { j.as_ref() }.map_or(0, |j| j.job.enqueued_at_ms)
    })
}

/// The job's lane: 0 high, 1 normal, 2 low (1 if `j` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_priority(j: *const ck_job) -> u32 {
    // SAFETY: a non-NULL job is live (caller's promise).
    ffi_value("ck_job_priority", 1, || {
        unsafe { j.as_ref() }.map_or(1, |j| j.job.priority.index() as u32)
    })
}

/// The error the previous attempt failed with, or NULL (first attempt, or `j` NULL). Owned
/// by the job. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_last_error(j: *const ck_job) -> *const c_char {
    ffi_value("ck_job_last_error", std::ptr::null(), || {
        // SAFETY: a non-NULL job is live (caller's promise).
        unsafe { j.as_ref() }
            .and_then(|j| j.last_error.as_ref())
            .map_or(std::ptr::null(), |e| e.as_ptr())
    })
}

/// The job's receipt (its lease token: opaque, not a secret; NULL if `j` is NULL). Owned by
/// the job. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_job_receipt(j: *const ck_job) -> *const c_char {
    ffi_value("ck_job_receipt", std::ptr::null(), || {
        // SAFETY: a non-NULL job is live (caller's promise).
        unsafe { j.as_ref() }.map_or(std::ptr::null(), |j| j.receipt.as_ptr())
    })
}

/// Frees a job (a job not settled stays leased until its visibility timeout). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn ck_job_free(j: *mut ck_job) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_job_free", j) }
}
