//! Balancer picks: choosing a node from a deployment's pool or a cluster, and reporting the
//! outcome.

use crate::cluster::ck_cluster;
use crate::deployment::ck_deployment;
use crate::status::{
    arg_bytes, arg_ms, arg_out, arg_ref, arg_str, c_string, ck_status, ffi_call, ffi_value,
    free_handle, null, CK_MAX_WAIT_MS,
};
use clusterkit::Error;
use clusterkit::Pick;
use std::ffi::c_char;
use std::ffi::CString;
use std::time::Duration;

/// Takes back a pick made by `Box::into_raw` to finish it (success or failure).
pub(crate) unsafe fn take_pick(pick: *mut ck_pick) -> Result<Box<ck_pick>, Error> {
    if pick.is_null() {
        return Err(null("pick"));
    }
    // SAFETY: made by Box::into_raw in this library, finished once (caller's promise).
    Ok(unsafe { Box::from_raw(pick) })
}

/// A node picked by a pool's balancer. Opaque. While it lives it counts as one request in
/// flight on its node; finish it with ck_pick_success or ck_pick_failure (which report the
/// outcome and free it) or drop it with ck_pick_free. A pick may be moved to and finished on
/// another thread, but must not be used from two threads at once.
#[derive(Debug)]
pub struct ck_pick {
    pub(crate) pick: Pick,
    pub(crate) id: CString,
    pub(crate) host: CString,
}

impl ck_pick {
    /// A pick of `lb`, following `key` when it is not empty, as a new handle.
    fn make(lb: &clusterkit::LoadBalancer, key: &[u8]) -> Result<*mut ck_pick, Error> {
        let pick = if key.is_empty() {
            lb.pick()?
        } else {
            lb.pick_for(key)?
        };
        let (id, host) = (c_string(pick.id()), c_string(pick.host()));
        Ok(Box::into_raw(Box::new(ck_pick { pick, id, host })))
    }
}

/// Picks a node of pool `pool` (a NUL-terminated name from the config). With a key
/// (`key_len > 0`) the pick follows the key (consistent-hashing strategies place it, others
/// ignore it); `key` NULL or `key_len` 0 means no key. On success writes a new pick to `*out`.
/// Fails with CK_INVALID_ARGUMENT (NULL `dep`/`pool`/`out`, `key` NULL with `key_len` > 0,
/// `pool` not UTF-8), CK_NOT_FOUND (no such pool) or CK_UNAVAILABLE (no node to pick).
/// Thread-safe: many threads may pick from one deployment at once.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_pick(
    dep: *const ck_deployment,
    pool: *const c_char,
    key: *const u8,
    key_len: usize,
    out: *mut *mut ck_pick,
) -> ck_status {
    ffi_call("ck_deployment_pick", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, pool, key) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_str(pool, "pool")?,
                arg_bytes(key, key_len, "key")?,
            )
        };
        *out = ck_pick::make(&dep.inner.balancer(pool)?, key)?;
        Ok(())
    })
}

/// The picked node's id (NUL-terminated), or NULL if `pick` is NULL. Owned by the pick: valid
/// until the pick is finished or freed. Safe to call while no other thread uses `pick`.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_node_id(pick: *const ck_pick) -> *const c_char {
    ffi_value("ck_pick_node_id", std::ptr::null(), || {
        // SAFETY: a non-NULL pick is live (caller's promise).
        unsafe { pick.as_ref() }.map_or(std::ptr::null(), |p| p.id.as_ptr())
    })
}

/// The picked node's host (NUL-terminated), or NULL if `pick` is NULL. Owned by the pick:
/// valid until the pick is finished or freed. Safe to call while no other thread uses `pick`.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_host(pick: *const ck_pick) -> *const c_char {
    ffi_value("ck_pick_host", std::ptr::null(), || {
        // SAFETY: a non-NULL pick is live (caller's promise).
        unsafe { pick.as_ref() }.map_or(std::ptr::null(), |p| p.host.as_ptr())
    })
}

/// The picked node's port (1..65535), or 0 if `pick` is NULL. Safe to call while no other
/// thread uses `pick`.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_port(pick: *const ck_pick) -> u16 {
    ffi_value("ck_pick_port", 0, || {
        // SAFETY: a non-NULL pick is live (caller's promise).
        unsafe { pick.as_ref() }.map_or(0, |p| p.pick.port())
    })
}

/// Reports that the request sent to the picked node succeeded after `latency_ms`
/// milliseconds (at most CK_MAX_WAIT_MS, 24 h), and frees the pick (do not use or free it
/// afterwards; it is freed without a report when the call fails). Fails with
/// CK_INVALID_ARGUMENT when `pick` is NULL or `latency_ms` is over the maximum. The pick
/// must not be in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_success(pick: *mut ck_pick, latency_ms: u64) -> ck_status {
    ffi_call("ck_pick_success", || {
        // SAFETY: a pick of this library, finished once (caller's promise).
        let p = unsafe { take_pick(pick)? };
        p.pick
            .success(arg_ms(latency_ms, CK_MAX_WAIT_MS, "latency_ms")?);
        Ok(())
    })
}

/// Like ck_pick_success with the latency in microseconds (for requests faster than a few
/// milliseconds, where whole milliseconds would lose the difference between nodes); at most
/// CK_MAX_WAIT_MS * 1000 microseconds.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_success_us(pick: *mut ck_pick, latency_us: u64) -> ck_status {
    ffi_call("ck_pick_success_us", || {
        // SAFETY: a pick of this library, finished once (caller's promise).
        let p = unsafe { take_pick(pick)? };
        let max_us = CK_MAX_WAIT_MS.saturating_mul(1000);
        if latency_us > max_us {
            return Err(Error::invalid(
                "latency_us",
                format!("must be at most {max_us} us, got {latency_us}"),
            ));
        }
        p.pick.success(Duration::from_micros(latency_us));
        Ok(())
    })
}

/// Reports that the request sent to the picked node failed (feeding outlier detection), and
/// frees the pick (do not use or free it afterwards). Fails with CK_INVALID_ARGUMENT only when
/// `pick` is NULL. The pick must not be in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_failure(pick: *mut ck_pick) -> ck_status {
    ffi_call("ck_pick_failure", || {
        // SAFETY: a pick of this library, finished once (caller's promise).
        let p = unsafe { take_pick(pick)? };
        p.pick.failure();
        Ok(())
    })
}

/// Frees a pick without reporting an outcome (its in-flight count is released). NULL is a
/// no-op. Never free a pick twice, nor one already finished by ck_pick_success/failure.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_free(pick: *mut ck_pick) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_pick_free", pick) }
}

/// Picks a node of the cluster, following `key` when given (see ck_deployment_pick). Fails
/// with CK_INVALID_ARGUMENT or CK_UNAVAILABLE (no node to pick). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_pick(
    c: *const ck_cluster,
    key: *const u8,
    key_len: usize,
    out: *mut *mut ck_pick,
) -> ck_status {
    ffi_call("ck_cluster_pick", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, key) = unsafe { (arg_ref(c, "cluster")?, arg_bytes(key, key_len, "key")?) };
        *out = ck_pick::make(&c.inner.balancer(), key)?;
        Ok(())
    })
}
