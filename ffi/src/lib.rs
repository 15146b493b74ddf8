//! C ABI of clusterkit (see `include/clusterkit.h`, generated from this crate by cbindgen).
//!
//! Conventions (DESIGN.md §3, modelled on rustls-ffi): the prefix `ck_`; opaque handles made
//! by `*_new` and released by `*_free` (NULL is a no-op); every function returns a
//! [`ck_status`] and writes its outputs through out-parameters only on success; buffers are
//! `(const uint8_t *ptr, size_t len)`; strings are NUL-terminated UTF-8; memory the library
//! hands out is freed only by its own `ck_*_free`; [`ck_last_error`] explains the last failure
//! on the calling thread. Every exported body runs through `ffi_call` (or `ffi_value`),
//! which catches panics, so no unwinding ever crosses into C.
#![allow(non_camel_case_types)]
// The exported functions check every pointer themselves; they are `unsafe` to call from Rust
// only in the sense every C function is.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use clusterkit::cache::Bytes;
use clusterkit::{Clusterkit, Error, ErrorKind, Pick};

// ---------------------------------------------------------------------------------------------
// Status codes, last error, the one wrapper
// ---------------------------------------------------------------------------------------------

/// The result of every fallible ck_ function. CK_OK is 0; every other value has a message in
/// ck_last_error(). The codes map clusterkit's error kinds one to one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_status {
    /// Success.
    CK_OK = 0,
    /// The thing asked for does not exist (a cache key, a pool name).
    CK_NOT_FOUND = 1,
    /// A bad argument or configuration value (NULL pointer, invalid UTF-8, bad key); the
    /// message names the argument or config field.
    CK_INVALID_ARGUMENT = 2,
    /// An operation did not finish within its deadline.
    CK_TIMEOUT = 3,
    /// No healthy node, no quorum, or the backend is down.
    CK_UNAVAILABLE = 4,
    /// Someone else holds the lock, the lock was lost, a compare failed.
    CK_CONFLICT = 5,
    /// A handle was used after it was closed.
    CK_CLOSED = 6,
    /// The backend server answered with an error.
    CK_BACKEND = 7,
    /// A bug in clusterkit, including a panic caught at the C boundary.
    CK_INTERNAL = 8,
}

impl From<ErrorKind> for ck_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => ck_status::CK_INVALID_ARGUMENT,
            ErrorKind::NotFound => ck_status::CK_NOT_FOUND,
            ErrorKind::Timeout => ck_status::CK_TIMEOUT,
            ErrorKind::Unavailable => ck_status::CK_UNAVAILABLE,
            ErrorKind::Conflict => ck_status::CK_CONFLICT,
            ErrorKind::Closed => ck_status::CK_CLOSED,
            ErrorKind::Backend => ck_status::CK_BACKEND,
            // Internal, and any kind added later.
            _ => ck_status::CK_INTERNAL,
        }
    }
}

/// ABI version constants of this header. ck_abi_version() returns the library's
/// (major << 16) | minor. A caller accepts the library when
/// `ck_abi_version() >> 16 == CK_ABI_MAJOR && ck_abi_version() >= CK_ABI_VERSION`
/// (same major, minor at least the header's).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_abi {
    /// The ABI major version: bumped on every incompatible change (it is the soname's number).
    CK_ABI_MAJOR = 1,
    /// The full ABI version of this header: (major << 16) | minor.
    CK_ABI_VERSION = 0x0001_0000,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    // A message with an interior NUL is cut there rather than lost.
    let bytes: Vec<u8> = message
        .into_bytes()
        .into_iter()
        .take_while(|&b| b != 0)
        .collect();
    let c = CString::new(bytes).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = Some(c);
        }
    });
}

fn fail(e: &Error) -> ck_status {
    set_last_error(e.to_string());
    e.kind().into()
}

fn panic_message(name: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("internal error: panic in {name}: {what}")
}

/// Runs the body of an exported function: `Ok` becomes `CK_OK`, an error its status (with the
/// message stored for [`ck_last_error`]), a panic `CK_INTERNAL`.
fn ffi_call(name: &str, f: impl FnOnce() -> Result<(), Error>) -> ck_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ck_status::CK_OK,
        Ok(Err(e)) => fail(&e),
        Err(payload) => {
            set_last_error(panic_message(name, &*payload));
            ck_status::CK_INTERNAL
        }
    }
}

/// Like [`ffi_call`] for the few functions that return a plain value (accessors, frees):
/// a panic yields `default` and sets the last error.
fn ffi_value<T>(name: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(panic_message(name, &*payload));
            default
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Argument checks
// ---------------------------------------------------------------------------------------------

fn null(name: &str) -> Error {
    Error::invalid(name, "must not be NULL")
}

/// A NUL-terminated UTF-8 string argument.
unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Error::invalid(
            name,
            format!(
                "is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// A `(ptr, len)` byte buffer argument; `len == 0` is the empty buffer whatever `ptr` is.
unsafe fn arg_bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(
            name,
            format!("must not be NULL when its length is {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(name, "length is larger than isize::MAX"));
    }
    // SAFETY: the caller promises `len` readable bytes at `p` for the duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A handle argument.
unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: a non-NULL handle was made by this library and not freed (caller's promise).
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// An out-parameter, checked before any work so nothing is done for a call that cannot report.
fn arg_out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

fn ttl(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

// ---------------------------------------------------------------------------------------------
// Version and errors
// ---------------------------------------------------------------------------------------------

/// NUL-terminated version string of the library, e.g. "0.1.0". Static: never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn ck_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the loaded library: (major << 16) | minor. Compare it with the ck_abi
/// constants of the header the caller was built with. Thread-safe.
#[no_mangle]
pub extern "C" fn ck_abi_version() -> u32 {
    ck_abi::CK_ABI_VERSION as u32
}

/// The message of the last failed ck_ call on the calling thread ("" if none failed yet).
/// Meaningful right after a call that returned a status other than CK_OK; successful calls do
/// not clear it. Owned by the library: do not free it; it stays valid until the next ck_ call
/// on the same thread. Thread-safe (each thread has its own message).
#[no_mangle]
pub extern "C" fn ck_last_error() -> *const c_char {
    const EMPTY: &CStr = c"";
    ffi_value("ck_last_error", EMPTY.as_ptr(), || {
        LAST_ERROR
            .try_with(|slot| match slot.try_borrow().as_deref() {
                Ok(Some(s)) => s.as_ptr(),
                _ => EMPTY.as_ptr(),
            })
            .unwrap_or(EMPTY.as_ptr())
    })
}

// ---------------------------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------------------------

/// A whole deployment built from a config document: its pools (balancers) and its cache.
/// Opaque. Thread-safe: one handle may be used from many threads at once.
#[derive(Debug)]
pub struct ck_deployment {
    inner: Clusterkit,
}

/// Builds a deployment from `config`, a NUL-terminated JSON or TOML document (see the config
/// reference); "" means everything embedded (no pools, an in-process cache). On success
/// writes a new handle to `*out`, to be released with ck_deployment_free. Fails with
/// CK_INVALID_ARGUMENT when `config` or `out` is NULL, `config` is not UTF-8, or the document
/// is invalid (the message names the field). No network I/O happens here. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_new(
    config: *const c_char,
    out: *mut *mut ck_deployment,
) -> ck_status {
    ffi_call("ck_deployment_new", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_str; the caller promises a NUL-terminated string.
        let text = unsafe { arg_str(config, "config") }?;
        let inner = Clusterkit::parse(text)?;
        *out = Box::into_raw(Box::new(ck_deployment { inner }));
        Ok(())
    })
}

/// Releases a deployment. NULL is a no-op. Picks and buffers obtained from it stay valid and
/// must still be freed. Not thread-safe with respect to the handle: no other call may use
/// `dep` during or after this one. Never free a handle twice.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_free(dep: *mut ck_deployment) {
    ffi_value("ck_deployment_free", (), || {
        if !dep.is_null() {
            // SAFETY: made by Box::into_raw in ck_deployment_new, freed once (caller's promise).
            drop(unsafe { Box::from_raw(dep) });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Balancer picks
// ---------------------------------------------------------------------------------------------

/// A node picked by a pool's balancer. Opaque. While it lives it counts as one request in
/// flight on its node; finish it with ck_pick_success or ck_pick_failure (which report the
/// outcome and free it) or drop it with ck_pick_free. A pick may be moved to and finished on
/// another thread, but must not be used from two threads at once.
#[derive(Debug)]
pub struct ck_pick {
    pick: Pick,
    id: CString,
    host: CString,
}

impl ck_pick {
    fn new(pick: Pick) -> Result<ck_pick, Error> {
        let id =
            CString::new(pick.id()).map_err(|_| Error::Internal("node id contains NUL".into()))?;
        let host = CString::new(pick.host())
            .map_err(|_| Error::Internal("node host contains NUL".into()))?;
        Ok(ck_pick { pick, id, host })
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
        let lb = dep.inner.balancer(pool)?;
        let pick = if key.is_empty() {
            lb.pick()?
        } else {
            lb.pick_for(key)?
        };
        *out = Box::into_raw(Box::new(ck_pick::new(pick)?));
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
/// milliseconds, and frees the pick (do not use or free it afterwards). Fails with
/// CK_INVALID_ARGUMENT only when `pick` is NULL. The pick must not be in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_success(pick: *mut ck_pick, latency_ms: u64) -> ck_status {
    ffi_call("ck_pick_success", || {
        if pick.is_null() {
            return Err(null("pick"));
        }
        // SAFETY: made by Box::into_raw in ck_deployment_pick, finished once (caller's promise).
        let p = unsafe { Box::from_raw(pick) };
        p.pick.success(Duration::from_millis(latency_ms));
        Ok(())
    })
}

/// Reports that the request sent to the picked node failed (feeding outlier detection), and
/// frees the pick (do not use or free it afterwards). Fails with CK_INVALID_ARGUMENT only when
/// `pick` is NULL. The pick must not be in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_failure(pick: *mut ck_pick) -> ck_status {
    ffi_call("ck_pick_failure", || {
        if pick.is_null() {
            return Err(null("pick"));
        }
        // SAFETY: made by Box::into_raw in ck_deployment_pick, finished once (caller's promise).
        let p = unsafe { Box::from_raw(pick) };
        p.pick.failure();
        Ok(())
    })
}

/// Frees a pick without reporting an outcome (its in-flight count is released). NULL is a
/// no-op. Never free a pick twice, nor one already finished by ck_pick_success/failure.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_free(pick: *mut ck_pick) {
    ffi_value("ck_pick_free", (), || {
        if !pick.is_null() {
            // SAFETY: made by Box::into_raw in ck_deployment_pick, freed once (caller's promise).
            drop(unsafe { Box::from_raw(pick) });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

/// A byte buffer owned by the library (a cached value). Opaque and immutable: read it with
/// ck_buf_data / ck_buf_len from any thread, release it once with ck_buf_free.
#[derive(Debug)]
pub struct ck_buf {
    data: Bytes,
}

/// The bytes of `buf` (`ck_buf_len(buf)` of them; not NUL-terminated), or NULL if `buf` is
/// NULL. Valid until ck_buf_free(buf). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_buf_data(buf: *const ck_buf) -> *const u8 {
    ffi_value("ck_buf_data", std::ptr::null(), || {
        // SAFETY: a non-NULL buffer is live (caller's promise).
        unsafe { buf.as_ref() }.map_or(std::ptr::null(), |b| b.data.as_ptr())
    })
}

/// The length of `buf` in bytes, or 0 if `buf` is NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_buf_len(buf: *const ck_buf) -> usize {
    ffi_value("ck_buf_len", 0, || {
        // SAFETY: a non-NULL buffer is live (caller's promise).
        unsafe { buf.as_ref() }.map_or(0, |b| b.data.len())
    })
}

/// Frees a buffer. NULL is a no-op. Never free a buffer twice; no other thread may read it
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn ck_buf_free(buf: *mut ck_buf) {
    ffi_value("ck_buf_free", (), || {
        if !buf.is_null() {
            // SAFETY: made by Box::into_raw in ck_cache_get, freed once (caller's promise).
            drop(unsafe { Box::from_raw(buf) });
        }
    })
}

/// Reads `key` (`key_len` bytes, 1..4096) from the deployment's cache. On a hit writes a new
/// buffer holding the value to `*out` (free it with ck_buf_free); a miss returns CK_NOT_FOUND
/// and leaves `*out` untouched. Fails with CK_INVALID_ARGUMENT (NULL `dep`/`out`, empty or
/// oversized key) or the backend's error (CK_TIMEOUT, CK_UNAVAILABLE, CK_BACKEND). Blocks the
/// calling thread (never call it from inside an async runtime). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_get(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cache_get", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(key, key_len, "key")?) };
        match clusterkit::blocking::block_on(dep.inner.cache().get(key))?? {
            Some(data) => {
                *out = Box::into_raw(Box::new(ck_buf { data }));
                Ok(())
            }
            None => Err(Error::NotFound("no such key in the cache".into())),
        }
    })
}

/// Stores `value` (`value_len` bytes; `value` may be NULL when `value_len` is 0) under `key`
/// (`key_len` bytes, 1..4096) in the deployment's cache, expiring after `ttl_ms` milliseconds
/// (0: no expiry). Fails with CK_INVALID_ARGUMENT (NULL `dep`, empty or oversized key,
/// oversized value, NULL pointer with a non-zero length) or the backend's error. Blocks the
/// calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_set(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> ck_status {
    ffi_call("ck_cache_set", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key, value) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_bytes(key, key_len, "key")?,
                arg_bytes(value, value_len, "value")?,
            )
        };
        let value = Bytes::copy_from_slice(value);
        clusterkit::blocking::block_on(dep.inner.cache().set(key, value, ttl(ttl_ms)))?
    })
}

/// Deletes `key` (`key_len` bytes, 1..4096) from the deployment's cache. Deleting an absent
/// key succeeds. If `existed` is not NULL, writes on success whether the key existed. Fails
/// with CK_INVALID_ARGUMENT (NULL `dep`, empty or oversized key) or the backend's error.
/// Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_delete(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    existed: *mut bool,
) -> ck_status {
    ffi_call("ck_cache_delete", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(key, key_len, "key")?) };
        let found = clusterkit::blocking::block_on(dep.inner.cache().delete(key))??;
        // SAFETY: a non-NULL `existed` points to writable storage (caller's promise).
        if let Some(existed) = unsafe { existed.as_mut() } {
            *existed = found;
        }
        Ok(())
    })
}

// Handles cross threads in C: make sure the Rust types allow it.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<ck_deployment>();
    send_sync::<ck_buf>();
    send::<ck_pick>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_core() {
        let s = unsafe { std::ffi::CStr::from_ptr(super::ck_version()) };
        assert_eq!(s.to_str().unwrap(), clusterkit::VERSION);
    }

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        let st = ffi_call("ck_test", || panic!("boom"));
        assert_eq!(st, ck_status::CK_INTERNAL);
        let msg = unsafe { CStr::from_ptr(ck_last_error()) }.to_str().unwrap();
        assert!(msg.contains("panic in ck_test: boom"), "{msg}");
    }

    #[test]
    fn abi_version_has_the_major_in_the_high_half() {
        assert_eq!(ck_abi_version() >> 16, ck_abi::CK_ABI_MAJOR as u32);
    }

    #[test]
    fn every_error_kind_has_a_status() {
        assert_eq!(
            ck_status::from(ErrorKind::NotFound),
            ck_status::CK_NOT_FOUND
        );
        assert_eq!(ck_status::from(ErrorKind::Internal), ck_status::CK_INTERNAL);
    }
}
