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
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use clusterkit::cache::Bytes;
use clusterkit::lock::LockGuard;
use clusterkit::session::{Session, SessionStore};
use clusterkit::{
    Cluster, ClusterEvent, Clusterkit, Error, ErrorKind, Health, Node, Pick, Strategy,
};

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

/// A C string of `s`; an interior NUL (which C cannot carry) becomes `?` rather than cutting
/// the text or failing.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).unwrap_or_default()
}

fn set_last_error(message: String) {
    let c = c_string(&message);
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

/// Body of every `ck_*_free`: drops a handle made by `Box::into_raw` in this library; NULL is a
/// no-op. A panic in a destructor is caught like everywhere else.
unsafe fn free_handle<T>(name: &str, p: *mut T) {
    ffi_value(name, (), || {
        if !p.is_null() {
            // SAFETY: made by Box::into_raw in this library and freed once (caller's promise).
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Takes back a pick made by `Box::into_raw` to finish it (success or failure).
unsafe fn take_pick(pick: *mut ck_pick) -> Result<Box<ck_pick>, Error> {
    if pick.is_null() {
        return Err(null("pick"));
    }
    // SAFETY: made by Box::into_raw in this library, finished once (caller's promise).
    Ok(unsafe { Box::from_raw(pick) })
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
    inner: Arc<Clusterkit>,
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
        pin_library();
        let inner = Arc::new(Clusterkit::parse(text)?);
        *out = Box::into_raw(Box::new(ck_deployment { inner }));
        Ok(())
    })
}

/// Like ck_deployment_new, but the deployment is shared by the whole process: the first call
/// with a given `config` text builds it, later calls with the same text return new handles to
/// the same deployment (same connections, runtime, health state and embedded cache). This is
/// what a PHP-FPM worker should use so that each request does not pay for new connections
/// (like phpredis's persistent connections). In a forked child the first call builds a fresh
/// deployment. Each handle is released with ck_deployment_free, which drops only that
/// reference (the process keeps the deployment). Fails like ck_deployment_new; a failure is
/// not remembered. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_shared(
    config: *const c_char,
    out: *mut *mut ck_deployment,
) -> ck_status {
    ffi_call("ck_deployment_shared", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_str; the caller promises a NUL-terminated string.
        let text = unsafe { arg_str(config, "config") }?;
        pin_library();
        let inner = Clusterkit::shared(text)?;
        *out = Box::into_raw(Box::new(ck_deployment { inner }));
        Ok(())
    })
}

/// Keeps this shared library mapped for the life of the process, even if the program that
/// loaded it calls dlclose (PHP's FFI does when an FFI object is freed): the runtime's worker
/// threads run code from it. Done once, before the first object that can start threads.
fn pin_library() {
    static PIN: Once = Once::new();
    PIN.call_once(|| {
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let here = pin_library as *const libc::c_void;
        // SAFETY: dladdr only reads the loader's tables; `info` is valid writable storage.
        if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is the NUL-terminated path of the object that holds `here`;
            // RTLD_NOLOAD only takes one more reference to an object already loaded.
            let handle = unsafe {
                libc::dlopen(
                    info.dli_fname,
                    libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                )
            };
            // The reference is kept on purpose (never dlclosed).
            let _ = handle;
        }
    });
}

/// Releases a deployment. NULL is a no-op. Picks and buffers obtained from it stay valid and
/// must still be freed. Not thread-safe with respect to the handle: no other call may use
/// `dep` during or after this one. Never free a handle twice.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_free(dep: *mut ck_deployment) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_deployment_free", dep) }
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
/// milliseconds, and frees the pick (do not use or free it afterwards). Fails with
/// CK_INVALID_ARGUMENT only when `pick` is NULL. The pick must not be in use on another thread.
#[no_mangle]
pub unsafe extern "C" fn ck_pick_success(pick: *mut ck_pick, latency_ms: u64) -> ck_status {
    ffi_call("ck_pick_success", || {
        // SAFETY: a pick of this library, finished once (caller's promise).
        let p = unsafe { take_pick(pick)? };
        p.pick.success(Duration::from_millis(latency_ms));
        Ok(())
    })
}

/// Like ck_pick_success with the latency in microseconds (for requests faster than a few
/// milliseconds, where whole milliseconds would lose the difference between nodes).
#[no_mangle]
pub unsafe extern "C" fn ck_pick_success_us(pick: *mut ck_pick, latency_us: u64) -> ck_status {
    ffi_call("ck_pick_success_us", || {
        // SAFETY: a pick of this library, finished once (caller's promise).
        let p = unsafe { take_pick(pick)? };
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
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_buf_free", buf) }
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
        match dep.inner.cache().get_blocking(key)? {
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
        run(dep.inner.cache().set(key, value, ttl(ttl_ms)))
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
        let found = run(dep.inner.cache().delete(key))?;
        // SAFETY: a non-NULL `existed` points to writable storage (caller's promise).
        if let Some(existed) = unsafe { existed.as_mut() } {
            *existed = found;
        }
        Ok(())
    })
}

/// Writes a new library-owned buffer holding `data` to `out`.
fn put_buf(out: &mut *mut ck_buf, data: Bytes) {
    *out = Box::into_raw(Box::new(ck_buf { data }));
}

/// The deployment's blocking bridge: runs `fut` on the shared runtime.
fn run<T>(fut: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    clusterkit::blocking::block_on(fut)?
}

/// Reads `key` like ck_cache_get, but copies a value of at most `dst_cap` bytes into the
/// caller's buffer `dst` instead of allocating: the fast path for callers that keep one
/// buffer for every read (PHP's binding does). On a hit writes the value's length to
/// `*out_len`; if it is <= `dst_cap` the value is in `dst[0..len]` and `*out_big` is left
/// untouched, otherwise `dst` is untouched and `*out_big` receives a new buffer with the
/// value (free it with ck_buf_free). A miss returns CK_NOT_FOUND and writes nothing. `dst`
/// may be NULL when `dst_cap` is 0. Fails like ck_cache_get (also when `out_len` or
/// `out_big` is NULL). Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_get_into(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    dst: *mut u8,
    dst_cap: usize,
    out_len: *mut usize,
    out_big: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cache_get_into", || {
        let out_len = arg_out(out_len, "out_len")?;
        let out_big = arg_out(out_big, "out_big")?;
        if dst.is_null() && dst_cap > 0 {
            return Err(Error::invalid(
                "dst",
                format!("must not be NULL when dst_cap is {dst_cap}"),
            ));
        }
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(key, key_len, "key")?) };
        let Some(data) = dep.inner.cache().get_blocking(key)? else {
            return Err(Error::NotFound("no such key in the cache".into()));
        };
        let n = data.len();
        if n <= dst_cap {
            // SAFETY: `dst` has room for `dst_cap` >= n bytes (caller's promise) and does not
            // overlap the library-owned value.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, n) };
        } else {
            put_buf(out_big, data);
        }
        *out_len = n;
        Ok(())
    })
}

/// A reader: the fastest way to read many cache values one by one from a language whose
/// calls cost per argument (PHP's FFI). It owns a buffer of fixed capacity that every read
/// copies the value into, so a read is one call with three arguments and the caller keeps
/// one pointer (ck_reader_data) for all of them. Opaque. Not thread-safe: one thread at a
/// time (a reader may move between threads).
#[derive(Debug)]
pub struct ck_reader {
    dep: Arc<Clusterkit>,
    buf: Box<[u8]>,
    last: Option<Bytes>,
}

/// Largest buffer of a reader (16 MiB).
const MAX_READER_CAPACITY: usize = 16 << 20;

/// Makes a reader for the deployment's cache with a buffer of `capacity` bytes (1..16 MiB;
/// values up to that size are copied into it, larger ones are held by the reader, see
/// ck_reader_value). On success writes it to `*out`; free it with ck_reader_free. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, capacity out of range). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_new(
    dep: *const ck_deployment,
    capacity: usize,
    out: *mut *mut ck_reader,
) -> ck_status {
    ffi_call("ck_reader_new", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        if capacity == 0 || capacity > MAX_READER_CAPACITY {
            return Err(Error::invalid(
                "capacity",
                format!("must be 1..{MAX_READER_CAPACITY} bytes, not {capacity}"),
            ));
        }
        let reader = ck_reader {
            dep: dep.inner.clone(),
            buf: vec![0u8; capacity].into_boxed_slice(),
            last: None,
        };
        *out = Box::into_raw(Box::new(reader));
        Ok(())
    })
}

/// The reader's buffer (fixed for its life; NULL if `r` is NULL): after a ck_reader_get that
/// returned a length <= the capacity, the value is its first bytes.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_data(r: *const ck_reader) -> *const u8 {
    ffi_value("ck_reader_data", std::ptr::null(), || {
        // SAFETY: a non-NULL reader is live (caller's promise).
        unsafe { r.as_ref() }.map_or(std::ptr::null(), |r| r.buf.as_ptr())
    })
}

/// The value of the last successful ck_reader_get, wherever it is (the buffer or, for a
/// value larger than the capacity, memory held by the reader); NULL before the first hit or
/// if `r` is NULL. Valid until the next ck_reader_get or ck_reader_free.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_value(r: *const ck_reader) -> *const u8 {
    ffi_value("ck_reader_value", std::ptr::null(), || {
        // SAFETY: a non-NULL reader is live (caller's promise).
        unsafe { r.as_ref() }.map_or(std::ptr::null(), |r| match &r.last {
            Some(v) if v.len() > r.buf.len() => v.as_ptr(),
            Some(_) => r.buf.as_ptr(),
            None => std::ptr::null(),
        })
    })
}

/// Reads `key` (`key_len` bytes) from the cache. Returns the value's length (>= 0) on a hit:
/// the value is at ck_reader_data(r) when the length is <= the capacity, else at
/// ck_reader_value(r). Returns -CK_NOT_FOUND (-1) on a miss — an ordinary outcome, so
/// ck_last_error() is left as it was — and minus the ck_status of a failure otherwise
/// (-CK_INVALID_ARGUMENT for NULL `r` or a bad key; the backend's errors), with the message
/// in ck_last_error(). Blocks the calling thread for network backends.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_get(r: *mut ck_reader, key: *const u8, key_len: usize) -> i64 {
    let mut len = 0i64;
    let status = ffi_call("ck_reader_get", || {
        // SAFETY: a non-NULL reader is live and used by one thread (caller's promise).
        let r = unsafe { r.as_mut() }.ok_or_else(|| null("reader"))?;
        // SAFETY: checked by arg_bytes; validity is the caller's promise.
        let key = unsafe { arg_bytes(key, key_len, "key")? };
        let Some(v) = r.dep.cache().get_blocking(key)? else {
            len = -(ck_status::CK_NOT_FOUND as i64);
            return Ok(());
        };
        if let Some(dst) = r.buf.get_mut(..v.len()) {
            dst.copy_from_slice(&v);
        }
        len = v.len() as i64;
        r.last = Some(v);
        Ok(())
    });
    match status {
        ck_status::CK_OK => len,
        s => -(s as i64),
    }
}

/// Frees a reader. NULL is a no-op; never free twice.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_free(r: *mut ck_reader) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_reader_free", r) }
}

/// Stores `value` under `key` only if the key is absent (or expired), expiring after
/// `ttl_ms` milliseconds (0: never). Writes to `*added` whether it was stored. Fails like
/// ck_cache_set (also when `added` is NULL). Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_add(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
    added: *mut bool,
) -> ck_status {
    ffi_call("ck_cache_add", || {
        let added = arg_out(added, "added")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key, value) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_bytes(key, key_len, "key")?,
                arg_bytes(value, value_len, "value")?,
            )
        };
        let value = Bytes::copy_from_slice(value);
        *added = run(dep.inner.cache().add(key, value, ttl(ttl_ms)))?;
        Ok(())
    })
}

/// Writes to `*found` whether `key` is in the cache (and not expired). Fails with
/// CK_INVALID_ARGUMENT (NULL `dep`/`found`, empty or oversized key) or the backend's error.
/// Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_has(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    found: *mut bool,
) -> ck_status {
    ffi_call("ck_cache_has", || {
        let found = arg_out(found, "found")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(key, key_len, "key")?) };
        *found = run(dep.inner.cache().has(key))?;
        Ok(())
    })
}

/// Adds `delta` (may be negative) to the integer stored under `key` (an absent key counts as
/// 0 and is created without expiry) and writes the new value to `*out_value`. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, bad key), CK_BACKEND when the stored value is not an
/// integer or the result overflows, or the backend's error. Blocks the calling thread.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_increment(
    dep: *const ck_deployment,
    key: *const u8,
    key_len: usize,
    delta: i64,
    out_value: *mut i64,
) -> ck_status {
    ffi_call("ck_cache_increment", || {
        let out_value = arg_out(out_value, "out_value")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, key) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(key, key_len, "key")?) };
        *out_value = run(dep.inner.cache().increment(key, delta))?;
        Ok(())
    })
}

/// Splits a packed list (entries of a 4-byte little-endian length and that many bytes).
fn unpack<'a>(mut buf: &'a [u8], name: &str) -> Result<Vec<&'a [u8]>, Error> {
    let mut items = Vec::new();
    while !buf.is_empty() {
        let Some((head, rest)) = buf.split_first_chunk::<4>() else {
            return Err(Error::invalid(
                name,
                format!(
                    "packed list entry {} is cut short: {} bytes left, a length needs 4",
                    items.len(),
                    buf.len()
                ),
            ));
        };
        let len = u32::from_le_bytes(*head) as usize;
        if len > rest.len() {
            return Err(Error::invalid(
                name,
                format!(
                    "packed list entry {} says {len} bytes but only {} follow",
                    items.len(),
                    rest.len()
                ),
            ));
        }
        let (item, rest) = rest.split_at(len);
        items.push(item);
        buf = rest;
    }
    Ok(items)
}

/// Appends one entry to a packed list; `None` is the absent marker 0xFFFFFFFF.
fn pack(out: &mut Vec<u8>, item: Option<&[u8]>) -> Result<(), Error> {
    match item {
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(b) => {
            let len = u32::try_from(b.len())
                .ok()
                .filter(|&n| n != u32::MAX)
                .ok_or_else(|| Error::invalid("value", "is larger than a packed list can hold"))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(b);
        }
    }
    Ok(())
}

/// Reads many keys at once. `packed_keys` is a packed list of keys (`packed_len` bytes:
/// each entry a 4-byte little-endian length followed by the key). On success writes to
/// `*out` a new buffer holding a packed list of the values in the same order, with the
/// length 0xFFFFFFFF (and no bytes) for each absent key. Keys are grouped per node and the
/// groups fetched in parallel. Fails with CK_INVALID_ARGUMENT (NULL arguments, a malformed
/// list, a bad key) or the backend's error. Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_get_many(
    dep: *const ck_deployment,
    packed_keys: *const u8,
    packed_len: usize,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cache_get_many", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, packed) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_bytes(packed_keys, packed_len, "packed_keys")?,
            )
        };
        let keys = unpack(packed, "packed_keys")?;
        let values = run(dep.inner.cache().get_many(&keys))?;
        let mut buf = Vec::with_capacity(values.iter().flatten().map(|v| v.len() + 4).sum());
        for v in &values {
            pack(&mut buf, v.as_deref())?;
        }
        put_buf(out, Bytes::from(buf));
        Ok(())
    })
}

/// Stores many values at once, all expiring after `ttl_ms` milliseconds (0: never).
/// `packed_pairs` is a packed list (see ck_cache_get_many) alternating key, value, key,
/// value. Fails with CK_INVALID_ARGUMENT (NULL arguments, a malformed list or an odd number
/// of entries, a bad key or value) or the backend's error; on a backend error some keys may
/// have been written. Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_set_many(
    dep: *const ck_deployment,
    packed_pairs: *const u8,
    packed_len: usize,
    ttl_ms: u64,
) -> ck_status {
    ffi_call("ck_cache_set_many", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, packed) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_bytes(packed_pairs, packed_len, "packed_pairs")?,
            )
        };
        let items = unpack(packed, "packed_pairs")?;
        if items.len() % 2 != 0 {
            return Err(Error::invalid(
                "packed_pairs",
                format!(
                    "has {} entries: keys and values must alternate",
                    items.len()
                ),
            ));
        }
        let pairs: Vec<(&[u8], Bytes)> = items
            .chunks_exact(2)
            .map(|kv| (kv[0], Bytes::copy_from_slice(kv[1])))
            .collect();
        run(dep.inner.cache().set_many(pairs, ttl(ttl_ms)))
    })
}

/// Deletes many keys at once (`packed_keys` as in ck_cache_get_many). If `deleted` is not
/// NULL, writes how many existed. Fails with CK_INVALID_ARGUMENT (NULL `dep`, a malformed
/// list, a bad key) or the backend's error. Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_delete_many(
    dep: *const ck_deployment,
    packed_keys: *const u8,
    packed_len: usize,
    deleted: *mut u64,
) -> ck_status {
    ffi_call("ck_cache_delete_many", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, packed) = unsafe {
            (
                arg_ref(dep, "dep")?,
                arg_bytes(packed_keys, packed_len, "packed_keys")?,
            )
        };
        let keys = unpack(packed, "packed_keys")?;
        let n = run(dep.inner.cache().delete_many(&keys))?;
        // SAFETY: a non-NULL `deleted` points to writable storage (caller's promise).
        if let Some(d) = unsafe { deleted.as_mut() } {
            *d = n;
        }
        Ok(())
    })
}

/// Deletes every key of the deployment cache's namespace (and nothing outside it). If
/// `deleted` is not NULL, writes how many keys were removed. Fails with CK_INVALID_ARGUMENT
/// (NULL `dep`) or the backend's error. Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cache_clear(dep: *const ck_deployment, deleted: *mut u64) -> ck_status {
    ffi_call("ck_cache_clear", || {
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let n = run(dep.inner.cache().clear())?;
        // SAFETY: a non-NULL `deleted` points to writable storage (caller's promise).
        if let Some(d) = unsafe { deleted.as_mut() } {
            *d = n;
        }
        Ok(())
    })
}

/// Writes to `*out` a new buffer with the deployment's metrics as a JSON object: `cache`
/// (`namespace`, `hits`, `misses`, `errors`, `writes`) and `pools` (per pool: `name`,
/// `strategy`, `version`, `total`, `healthy`, `in_panic`, `health` counters and `nodes`, as
/// ck_cluster_metrics). Fails with CK_INVALID_ARGUMENT (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_metrics(
    dep: *const ck_deployment,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_deployment_metrics", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        put_buf(out, Bytes::from(dep.inner.metrics().to_string()));
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Clusters, node by node
// ---------------------------------------------------------------------------------------------

/// One pool of nodes (the seed's ClusterManager): membership, health and a balancer. Opaque.
/// Thread-safe: many threads may pick while others change membership.
#[derive(Debug)]
pub struct ck_cluster {
    inner: Cluster,
}

/// A node's health.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_health {
    /// Receives traffic.
    CK_HEALTHY = 0,
    /// Receives no traffic (failed checks, ejected, or marked by the operator).
    CK_UNHEALTHY = 1,
    /// Receives no new traffic; requests in flight finish.
    CK_DRAINING = 2,
}

impl From<Health> for ck_health {
    fn from(h: Health) -> Self {
        match h {
            Health::Unhealthy => ck_health::CK_UNHEALTHY,
            Health::Draining => ck_health::CK_DRAINING,
            // Healthy, and any state added later.
            _ => ck_health::CK_HEALTHY,
        }
    }
}

/// Builds an empty pool named `name` balancing with `strategy` ("round_robin",
/// "weighted_round_robin", "random", "least_connections", "p2c", "ketama", "maglev",
/// "rendezvous"; NULL or "" is round robin). On success writes a new handle to `*out`
/// (release it with ck_cluster_free). Fails with CK_INVALID_ARGUMENT (NULL `name`/`out`,
/// an empty or non-UTF-8 name, an unknown strategy). No I/O. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_new(
    name: *const c_char,
    strategy: *const c_char,
    out: *mut *mut ck_cluster,
) -> ck_status {
    ffi_call("ck_cluster_new", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_str; the caller promises NUL-terminated strings.
        let name = unsafe { arg_str(name, "name")? };
        let strategy = if strategy.is_null() {
            Strategy::default()
        } else {
            // SAFETY: as above.
            match unsafe { arg_str(strategy, "strategy")? } {
                "" => Strategy::default(),
                s => Strategy::from_str(s).map_err(|e| e.in_field("strategy"))?,
            }
        };
        pin_library();
        let inner = Cluster::new(name, clusterkit::BalancerOptions::new(strategy))?;
        *out = Box::into_raw(Box::new(ck_cluster { inner }));
        Ok(())
    })
}

/// A handle on pool `pool` of a deployment (sharing its membership, health and counters;
/// the pool lives as long as either handle). Release it with ck_cluster_free. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, non-UTF-8 name) or CK_NOT_FOUND (no such pool).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_cluster(
    dep: *const ck_deployment,
    pool: *const c_char,
    out: *mut *mut ck_cluster,
) -> ck_status {
    ffi_call("ck_deployment_cluster", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, pool) = unsafe { (arg_ref(dep, "dep")?, arg_str(pool, "pool")?) };
        let inner = dep.inner.pool(pool)?.clone();
        *out = Box::into_raw(Box::new(ck_cluster { inner }));
        Ok(())
    })
}

/// Releases a cluster handle. NULL is a no-op. Picks made from it stay valid. No other call
/// may use `c` during or after this one; never free a handle twice.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_free(c: *mut ck_cluster) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_cluster_free", c) }
}

fn opt_str<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, NUL-terminated (caller's promise).
    unsafe { arg_str(p, name) }.map(|s| (!s.is_empty()).then_some(s))
}

/// Adds a node: `id` (unique in the pool), `host`, `port` (1..65535), `weight` (1..256; 0
/// means the default 1), `zone` (NULL or "" for none) and `metadata_json` (NULL, "" or a
/// JSON object whose values are strings). Fails with CK_INVALID_ARGUMENT (NULL or bad
/// values; the message names the field), CK_CONFLICT (the id is taken). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_add_node(
    c: *const ck_cluster,
    id: *const c_char,
    host: *const c_char,
    port: u16,
    weight: u32,
    zone: *const c_char,
    metadata_json: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_add_node", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id, host) = unsafe {
            (
                arg_ref(c, "cluster")?,
                arg_str(id, "id")?,
                arg_str(host, "host")?,
            )
        };
        let mut node = Node::new(id, host, port)?;
        if weight != 0 {
            node = node.with_weight(weight)?;
        }
        if let Some(z) = opt_str(zone, "zone")? {
            node = node.with_zone(z)?;
        }
        if let Some(m) = opt_str(metadata_json, "metadata_json")? {
            let map: BTreeMap<String, String> = serde_json::from_str(m).map_err(|e| {
                Error::invalid(
                    "metadata_json",
                    format!("must be a JSON object of strings: {e}"),
                )
            })?;
            node = node.with_metadata_map(map)?;
        }
        c.inner.add(node)
    })
}

/// Removes node `id`. Picks already holding it finish normally. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments) or CK_NOT_FOUND. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_remove_node(
    c: *const ck_cluster,
    id: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_remove_node", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        c.inner.remove(id).map(|_| ())
    })
}

/// Sets the operator's word on node `id`: CK_UNHEALTHY or CK_DRAINING take it out of
/// balancing whatever its checks say, CK_HEALTHY lifts the override (checks and outlier
/// detection decide again). `reason` (NULL for none) shows in events and metrics. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, a value outside ck_health) or CK_NOT_FOUND.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_set_health(
    c: *const ck_cluster,
    id: *const c_char,
    health: u32,
    reason: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_set_health", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        let reason = opt_str(reason, "reason")?.unwrap_or("marked by operator");
        let health = match health {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            2 => Health::Draining,
            other => {
                return Err(Error::invalid(
                    "health",
                    format!("{other} is not a ck_health value (0, 1 or 2)"),
                ))
            }
        };
        c.inner.set_health(id, health, reason)
    })
}

/// Changes node `id`'s weight (1..256). Fails with CK_INVALID_ARGUMENT or CK_NOT_FOUND.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_set_weight(
    c: *const ck_cluster,
    id: *const c_char,
    weight: u32,
) -> ck_status {
    ffi_call("ck_cluster_set_weight", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        c.inner.set_weight(id, weight)
    })
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

/// Number of nodes in the cluster (0 if `c` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_len(c: *const ck_cluster) -> usize {
    ffi_value("ck_cluster_len", 0, || {
        // SAFETY: a non-NULL handle is live (caller's promise).
        unsafe { c.as_ref() }.map_or(0, |c| c.inner.len())
    })
}

/// Number of healthy nodes (0 if `c` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_healthy_count(c: *const ck_cluster) -> usize {
    ffi_value("ck_cluster_healthy_count", 0, || {
        // SAFETY: a non-NULL handle is live (caller's promise).
        unsafe { c.as_ref() }.map_or(0, |c| c.inner.healthy_count())
    })
}

/// Writes to `*out` a new buffer with the nodes as a JSON array; each node is an object with
/// `id`, `host`, `port`, `weight`, `zone` (or null), `metadata`, `health` ("healthy",
/// "unhealthy", "draining"), `reason`, `since_ms`, `in_flight`, `successes`, `failures`,
/// `consecutive_failures`, `last_latency_us`. Fails with CK_INVALID_ARGUMENT (NULL
/// arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_nodes(
    c: *const ck_cluster,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cluster_nodes", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        let nodes: Vec<serde_json::Value> = c.inner.nodes().iter().map(|n| n.to_json()).collect();
        put_buf(out, Bytes::from(serde_json::Value::from(nodes).to_string()));
        Ok(())
    })
}

/// Writes to `*out` a new buffer with the cluster's metrics as a JSON object: `name`,
/// `strategy`, `version`, `total`, `healthy`, `in_panic`, `health` (`checks`,
/// `check_failures`, `marked_unhealthy`, `marked_healthy`, `ejections`,
/// `ejections_refused`) and `nodes` (as ck_cluster_nodes). Fails with CK_INVALID_ARGUMENT
/// (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_metrics(
    c: *const ck_cluster,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cluster_metrics", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        put_buf(out, Bytes::from(c.inner.metrics().to_string()));
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Events (polled)
// ---------------------------------------------------------------------------------------------

/// A subscription to a cluster's events, read with ck_events_next. Opaque. Each subscription
/// has its own queue (1024 events; a reader that falls further behind gets one
/// CK_EVENT_LAGGED event and should re-read ck_cluster_nodes). Thread-safe (calls are
/// serialized).
#[derive(Debug)]
pub struct ck_events {
    /// Fork-safe (a child reads from its own subscription): see core's EventSubscription.
    rx: clusterkit::cluster::EventSubscription,
}

/// The kind of a cluster event.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_event_kind {
    /// A node joined.
    CK_EVENT_ADDED = 0,
    /// A node left.
    CK_EVENT_REMOVED = 1,
    /// A node's weight, zone or metadata changed.
    CK_EVENT_UPDATED = 2,
    /// A node's health changed (see ck_event_old_health / ck_event_new_health).
    CK_EVENT_HEALTH_CHANGED = 3,
    /// The pool entered or left panic mode.
    CK_EVENT_PANIC_CHANGED = 4,
    /// The balancing strategy changed.
    CK_EVENT_STRATEGY_CHANGED = 5,
    /// A discovery source skipped something it could not use.
    CK_EVENT_DISCOVERY_PROBLEM = 6,
    /// This subscription missed events (the message says how many); re-read the nodes.
    CK_EVENT_LAGGED = 7,
}

/// One event. Opaque; read it with the ck_event_* accessors, release it with ck_event_free.
/// Immutable: may be read from any thread.
#[derive(Debug)]
pub struct ck_event {
    kind: ck_event_kind,
    node_id: CString,
    old: ck_health,
    new: ck_health,
    message: CString,
    json: String,
}

impl ck_event {
    fn from_event(e: &ClusterEvent) -> ck_event {
        let kind = match e {
            ClusterEvent::Added { .. } => ck_event_kind::CK_EVENT_ADDED,
            ClusterEvent::Removed { .. } => ck_event_kind::CK_EVENT_REMOVED,
            ClusterEvent::Updated { .. } => ck_event_kind::CK_EVENT_UPDATED,
            ClusterEvent::HealthChanged { .. } => ck_event_kind::CK_EVENT_HEALTH_CHANGED,
            ClusterEvent::PanicChanged { .. } => ck_event_kind::CK_EVENT_PANIC_CHANGED,
            ClusterEvent::StrategyChanged { .. } => ck_event_kind::CK_EVENT_STRATEGY_CHANGED,
            _ => ck_event_kind::CK_EVENT_DISCOVERY_PROBLEM,
        };
        let (old, new) = match e {
            ClusterEvent::HealthChanged { old, new, .. } => ((*old).into(), (*new).into()),
            _ => (ck_health::CK_HEALTHY, ck_health::CK_HEALTHY),
        };
        ck_event {
            kind,
            node_id: c_string(e.node_id().unwrap_or("")),
            old,
            new,
            message: c_string(&e.message()),
            json: e.to_json().to_string(),
        }
    }

    fn lagged(missed: u64) -> ck_event {
        let message = format!("missed {missed} events: re-read the nodes");
        ck_event {
            kind: ck_event_kind::CK_EVENT_LAGGED,
            node_id: CString::default(),
            old: ck_health::CK_HEALTHY,
            new: ck_health::CK_HEALTHY,
            json: serde_json::json!({"kind": "lagged", "message": message, "missed": missed})
                .to_string(),
            message: c_string(&message),
        }
    }
}

/// Subscribes to the cluster's events from now on (node added, removed, updated, health
/// changed, panic mode, strategy, discovery problems). On success writes a new subscription
/// to `*out`; release it with ck_events_free. Fails with CK_INVALID_ARGUMENT (NULL
/// arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_subscribe(
    c: *const ck_cluster,
    out: *mut *mut ck_events,
) -> ck_status {
    ffi_call("ck_cluster_subscribe", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        let rx = c.inner.subscribe_blocking();
        *out = Box::into_raw(Box::new(ck_events { rx }));
        Ok(())
    })
}

/// Takes the next event of subscription `e`, waiting up to `timeout_ms` milliseconds for
/// one (0: do not wait). On success writes a new event to `*out` (release it with
/// ck_event_free). Returns CK_TIMEOUT when no event came in time, CK_CLOSED when the cluster
/// is gone and every event was read, CK_INVALID_ARGUMENT for NULL arguments. Blocks the
/// calling thread up to the timeout. Thread-safe (concurrent callers take turns).
#[no_mangle]
pub unsafe extern "C" fn ck_events_next(
    e: *const ck_events,
    timeout_ms: u64,
    out: *mut *mut ck_event,
) -> ck_status {
    ffi_call("ck_events_next", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let e = unsafe { arg_ref(e, "events")? };
        let ev = match e.rx.next_blocking(Duration::from_millis(timeout_ms))? {
            clusterkit::cluster::Received::Lagged(n) => ck_event::lagged(n),
            clusterkit::cluster::Received::Event(ev) => ck_event::from_event(&ev),
            _ => return Err(Error::Internal("an unknown kind of event".into())),
        };
        *out = Box::into_raw(Box::new(ev));
        Ok(())
    })
}

/// Releases a subscription. NULL is a no-op. No other call may use `e` during or after this
/// one; never free it twice.
#[no_mangle]
pub unsafe extern "C" fn ck_events_free(e: *mut ck_events) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_events_free", e) }
}

/// The event's kind (CK_EVENT_LAGGED if `ev` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_get_kind(ev: *const ck_event) -> ck_event_kind {
    ffi_value("ck_event_get_kind", ck_event_kind::CK_EVENT_LAGGED, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_event_kind::CK_EVENT_LAGGED, |e| e.kind)
    })
}

/// The id of the node the event is about ("" if none, NULL if `ev` is NULL). Owned by the
/// event. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_node_id(ev: *const ck_event) -> *const c_char {
    ffi_value("ck_event_node_id", std::ptr::null(), || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(std::ptr::null(), |e| e.node_id.as_ptr())
    })
}

/// The health before a CK_EVENT_HEALTH_CHANGED event (CK_HEALTHY for other kinds or NULL).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_old_health(ev: *const ck_event) -> ck_health {
    ffi_value("ck_event_old_health", ck_health::CK_HEALTHY, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_health::CK_HEALTHY, |e| e.old)
    })
}

/// The health after a CK_EVENT_HEALTH_CHANGED event (CK_HEALTHY for other kinds or NULL).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_new_health(ev: *const ck_event) -> ck_health {
    ffi_value("ck_event_new_health", ck_health::CK_HEALTHY, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_health::CK_HEALTHY, |e| e.new)
    })
}

/// A one-line description (a health change's reason, panic counts, ...); NULL if `ev` is
/// NULL. Owned by the event. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_message(ev: *const ck_event) -> *const c_char {
    ffi_value("ck_event_message", std::ptr::null(), || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(std::ptr::null(), |e| e.message.as_ptr())
    })
}

/// Writes to `*out` a new buffer with the whole event as a JSON object (`kind` as a
/// snake_case name, `message`, and the kind's fields: `node`, `old_health`, `new_health`,
/// `active`/`healthy`/`total`, `strategy`, `source`, `missed`). Fails with
/// CK_INVALID_ARGUMENT (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_json(ev: *const ck_event, out: *mut *mut ck_buf) -> ck_status {
    ffi_call("ck_event_json", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let ev = unsafe { arg_ref(ev, "event")? };
        put_buf(out, Bytes::from(ev.json.clone()));
        Ok(())
    })
}

/// Releases an event. NULL is a no-op. Never free an event twice.
#[no_mangle]
pub unsafe extern "C" fn ck_event_free(ev: *mut ck_event) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_event_free", ev) }
}

// ---------------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------------

/// A held (or formerly held) distributed lock. Opaque. Thread-safe: accessors, extend and
/// release may be called from any thread (calls that change it are serialized).
#[derive(Debug)]
pub struct ck_lock {
    guard: Mutex<Option<LockGuard>>,
    name: CString,
    token: CString,
    fence: u64,
}

fn lock_guard(l: &ck_lock) -> std::sync::MutexGuard<'_, Option<LockGuard>> {
    l.guard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Acquires the lock `name` (1..1024 bytes of UTF-8) for `ttl_ms` milliseconds
/// (1..86400000) with the deployment's lock service (embedded, one Redis, or Redlock over
/// the `[locks]` pool's masters). `wait_ms` 0 makes one attempt and returns CK_CONFLICT if
/// someone else holds the lock; otherwise waits up to `wait_ms` (woken by the holder's
/// release) and returns CK_TIMEOUT when that passes. On success writes a new lock to `*out`
/// carrying its fencing token (strictly increasing across holders of `name`); release it
/// with ck_lock_release and free it with ck_lock_free. Other failures: CK_INVALID_ARGUMENT
/// (NULL arguments, bad name or TTL), CK_UNAVAILABLE (no quorum of masters answered).
/// Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_acquire(
    dep: *const ck_deployment,
    name: *const c_char,
    ttl_ms: u64,
    wait_ms: u64,
    out: *mut *mut ck_lock,
) -> ck_status {
    ffi_call("ck_lock_acquire", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, name) = unsafe { (arg_ref(dep, "dep")?, arg_str(name, "name")?) };
        let locks = dep.inner.locks();
        let ttl = Duration::from_millis(ttl_ms);
        let guard = if wait_ms == 0 {
            run(locks.try_acquire(name, ttl))?
                .ok_or_else(|| Error::Conflict(format!("lock {name:?} is held by someone else")))?
        } else {
            run(locks.acquire_timeout(name, ttl, Duration::from_millis(wait_ms)))?
        };
        let lock = ck_lock {
            name: c_string(guard.name()),
            token: c_string(guard.token()),
            fence: guard.fencing_token(),
            guard: Mutex::new(Some(guard)),
        };
        *out = Box::into_raw(Box::new(lock));
        Ok(())
    })
}

/// The lock's fencing token (0 if `l` is NULL): pass it to the resource the lock protects so
/// it can refuse a write from an older holder. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_fencing_token(l: *const ck_lock) -> u64 {
    ffi_value("ck_lock_fencing_token", 0, || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.map_or(0, |l| l.fence)
    })
}

/// Remaining validity of the lock in milliseconds by the local monotonic clock; 0 once it
/// expired, was lost or released (or `l` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_validity_ms(l: *const ck_lock) -> u64 {
    ffi_value("ck_lock_validity_ms", 0, || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.map_or(0, |l| {
            lock_guard(l)
                .as_ref()
                .map_or(0, |g| g.validity().as_millis() as u64)
        })
    })
}

/// True while the lock is valid, not released and no renewal failed (false if `l` is NULL).
/// Check it before committing work done under the lock. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_is_held(l: *const ck_lock) -> bool {
    ffi_value("ck_lock_is_held", false, || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.is_some_and(|l| lock_guard(l).as_ref().is_some_and(|g| g.is_held()))
    })
}

/// The lock's name (NULL if `l` is NULL). Owned by the lock. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_name(l: *const ck_lock) -> *const c_char {
    ffi_value("ck_lock_name", std::ptr::null(), || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.map_or(std::ptr::null(), |l| l.name.as_ptr())
    })
}

/// This holder's random token (32 hex characters; NULL if `l` is NULL). Owned by the lock.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_token(l: *const ck_lock) -> *const c_char {
    ffi_value("ck_lock_token", std::ptr::null(), || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.map_or(std::ptr::null(), |l| l.token.as_ptr())
    })
}

/// Extends the lock to `ttl_ms` milliseconds from now. Fails with CK_CONFLICT when the lock
/// is no longer held with this token (it expired or was taken over), CK_CLOSED after
/// ck_lock_release, CK_INVALID_ARGUMENT (NULL, bad TTL), CK_UNAVAILABLE (no quorum). Blocks
/// the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_extend(l: *const ck_lock, ttl_ms: u64) -> ck_status {
    ffi_call("ck_lock_extend", || {
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let l = unsafe { arg_ref(l, "lock")? };
        let slot = lock_guard(l);
        let g = slot
            .as_ref()
            .ok_or_else(|| Error::Closed("the lock was already released".into()))?;
        run(g.extend(Duration::from_millis(ttl_ms)))
    })
}

/// Releases the lock (the handle stays valid for its accessors; free it with ck_lock_free).
/// Fails with CK_CONFLICT when the lock had expired or been taken over before the release
/// (work done under it may have overlapped another holder), CK_CLOSED when already released,
/// CK_INVALID_ARGUMENT for NULL, CK_UNAVAILABLE when no quorum answered (the lock then
/// expires after its TTL). Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_release(l: *const ck_lock) -> ck_status {
    ffi_call("ck_lock_release", || {
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let l = unsafe { arg_ref(l, "lock")? };
        let g = lock_guard(l)
            .take()
            .ok_or_else(|| Error::Closed("the lock was already released".into()))?;
        run(g.release())
    })
}

/// Frees a lock handle; a lock still held is released in the background (without waiting).
/// NULL is a no-op. No other call may use `l` during or after this one; never free twice.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_free(l: *mut ck_lock) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_lock_free", l) }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// One web session as a request sees it: its fields and the changes made since it was
/// loaded. Opaque. Not thread-safe: use a session from one thread at a time (it may move
/// between threads).
#[derive(Debug)]
pub struct ck_session {
    store: SessionStore,
    s: Session,
    id: CString,
}

impl ck_session {
    fn new(store: &SessionStore, s: Session) -> ck_session {
        ck_session {
            id: c_string(s.id()),
            store: store.clone(),
            s,
        }
    }
}

impl Drop for ck_session {
    fn drop(&mut self) {
        if !self.s.is_locked() {
            return;
        }
        // Give a lock that was never saved back, in the background (a free never blocks).
        let (store, mut s) = (self.store.clone(), self.s.clone());
        if let Ok(rt) = clusterkit::blocking::runtime() {
            rt.spawn(async move {
                let _ = store.unlock(&mut s).await;
            });
        }
    }
}

unsafe fn arg_session<'a>(s: *mut ck_session) -> Result<&'a mut ck_session, Error> {
    // SAFETY: a non-NULL session is live and used by one thread (caller's promise).
    unsafe { s.as_mut() }.ok_or_else(|| null("session"))
}

/// Starts a new, empty session with a fresh id (32 characters [A-Za-z0-9] from the OS
/// CSPRNG). Nothing is stored until ck_session_save. On success writes a new session to
/// `*out`; free it with ck_session_free. Fails with CK_INVALID_ARGUMENT (NULL arguments).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_session_create(
    dep: *const ck_deployment,
    out: *mut *mut ck_session,
) -> ck_status {
    ffi_call("ck_session_create", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let store = dep.inner.sessions();
        *out = Box::into_raw(Box::new(ck_session::new(store, store.create()?)));
        Ok(())
    })
}

/// Loads session `id` (`id_len` bytes). With `lock` true it also takes the session's lock in
/// the same round trip, waiting for another request's lock up to the configured lock_wait
/// (CK_TIMEOUT then); the lock is released by ck_session_save or ck_session_unlock. Returns
/// CK_NOT_FOUND when the session is unknown, expired, or `id` is malformed (never a lookup of
/// an arbitrary key). On success writes a new session to `*out`. Other failures:
/// CK_INVALID_ARGUMENT (NULL arguments) or the backend's error. Blocks the calling thread.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_session_load(
    dep: *const ck_deployment,
    id: *const u8,
    id_len: usize,
    lock: bool,
    out: *mut *mut ck_session,
) -> ck_status {
    ffi_call("ck_session_load", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, id) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(id, id_len, "id")?) };
        let store = dep.inner.sessions();
        let loaded = if lock {
            run(store.load_locked(id))?
        } else {
            run(store.load(id))?
        };
        let s = loaded.ok_or_else(|| Error::NotFound("no such session".into()))?;
        *out = Box::into_raw(Box::new(ck_session::new(store, s)));
        Ok(())
    })
}

/// The session's id (NUL-terminated; NULL if `s` is NULL). Owned by the session: valid until
/// it is regenerated or freed.
#[no_mangle]
pub unsafe extern "C" fn ck_session_id(s: *const ck_session) -> *const c_char {
    ffi_value("ck_session_id", std::ptr::null(), || {
        // SAFETY: a non-NULL session is live (caller's promise).
        unsafe { s.as_ref() }.map_or(std::ptr::null(), |s| s.id.as_ptr())
    })
}

/// True if the session was created by ck_session_create and not saved yet (false for NULL).
#[no_mangle]
pub unsafe extern "C" fn ck_session_is_new(s: *const ck_session) -> bool {
    ffi_value("ck_session_is_new", false, || {
        // SAFETY: a non-NULL session is live (caller's promise).
        unsafe { s.as_ref() }.is_some_and(|s| s.s.is_new())
    })
}

/// Reads field `name`: on success writes a pointer to its bytes to `*data` and their number
/// to `*len`. The bytes belong to the session and stay valid until the session is changed
/// (set, remove, save, regenerate) or freed. Returns CK_NOT_FOUND for an absent field,
/// CK_INVALID_ARGUMENT for NULL arguments or a non-UTF-8 name.
#[no_mangle]
pub unsafe extern "C" fn ck_session_get(
    s: *const ck_session,
    name: *const c_char,
    data: *mut *const u8,
    len: *mut usize,
) -> ck_status {
    ffi_call("ck_session_get", || {
        let data = arg_out(data, "data")?;
        let len = arg_out(len, "len")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (s, name) = unsafe { (arg_ref(s, "session")?, arg_str(name, "name")?) };
        let v =
            s.s.get(name)
                .ok_or_else(|| Error::NotFound(format!("no field {name:?} in the session")))?;
        *data = v.as_ptr();
        *len = v.len();
        Ok(())
    })
}

/// Sets field `name` to `value` (`value_len` bytes) in the session; stored by the next
/// ck_session_save (only changed fields are written). Fails with CK_INVALID_ARGUMENT (NULL
/// arguments, non-UTF-8 name).
#[no_mangle]
pub unsafe extern "C" fn ck_session_set(
    s: *mut ck_session,
    name: *const c_char,
    value: *const u8,
    value_len: usize,
) -> ck_status {
    ffi_call("ck_session_set", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (s, name, value) = unsafe {
            (
                arg_session(s)?,
                arg_str(name, "name")?,
                arg_bytes(value, value_len, "value")?,
            )
        };
        s.s.set(name, Bytes::copy_from_slice(value));
        Ok(())
    })
}

/// Removes field `name` from the session (removed from the store by the next save; removing
/// an absent field is fine). Fails with CK_INVALID_ARGUMENT (NULL arguments, non-UTF-8 name).
#[no_mangle]
pub unsafe extern "C" fn ck_session_remove(s: *mut ck_session, name: *const c_char) -> ck_status {
    ffi_call("ck_session_remove", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (s, name) = unsafe { (arg_session(s)?, arg_str(name, "name")?) };
        s.s.remove(name);
        Ok(())
    })
}

/// Writes to `*out` a new buffer holding the session's field names as a packed list (see
/// ck_cache_get_many), in sorted order. Fails with CK_INVALID_ARGUMENT (NULL arguments).
#[no_mangle]
pub unsafe extern "C" fn ck_session_keys(s: *const ck_session, out: *mut *mut ck_buf) -> ck_status {
    ffi_call("ck_session_keys", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let s = unsafe { arg_ref(s, "session")? };
        let mut buf = Vec::new();
        for k in s.s.keys() {
            pack(&mut buf, Some(k.as_bytes()))?;
        }
        put_buf(out, Bytes::from(buf));
        Ok(())
    })
}

/// Saves the session: only the fields changed since the load are written (concurrent
/// requests changing other fields do not overwrite each other), the idle timeout is
/// refreshed and the session's lock, if this request holds it, is released — one round trip.
/// Fails with CK_NOT_FOUND (the session expired or was destroyed meanwhile; it is not
/// resurrected), CK_CONFLICT (its lock was lost), CK_INVALID_ARGUMENT (NULL arguments) or the
/// backend's error. Blocks the calling thread.
#[no_mangle]
pub unsafe extern "C" fn ck_session_save(
    dep: *const ck_deployment,
    s: *mut ck_session,
) -> ck_status {
    ffi_call("ck_session_save", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, s) = unsafe { (arg_ref(dep, "dep")?, arg_session(s)?) };
        run(dep.inner.sessions().save(&mut s.s))
    })
}

/// Releases the session's lock without saving anything (a request that read the session and
/// wrote nothing); the unsaved changes stay in `s`. Nothing happens if `s` holds no lock.
/// Fails with CK_INVALID_ARGUMENT (NULL arguments) or the backend's error. Blocks the calling
/// thread.
#[no_mangle]
pub unsafe extern "C" fn ck_session_unlock(
    dep: *const ck_deployment,
    s: *mut ck_session,
) -> ck_status {
    ffi_call("ck_session_unlock", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, s) = unsafe { (arg_ref(dep, "dep")?, arg_session(s)?) };
        run(dep.inner.sessions().unlock(&mut s.s))
    })
}

/// Gives the session a new id with the same data (unsaved changes are saved first); the old
/// id stops working at once. Call it at login (session fixation defence). Fails like
/// ck_session_save. Blocks the calling thread.
#[no_mangle]
pub unsafe extern "C" fn ck_session_regenerate(
    dep: *const ck_deployment,
    s: *mut ck_session,
) -> ck_status {
    ffi_call("ck_session_regenerate", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, s) = unsafe { (arg_ref(dep, "dep")?, arg_session(s)?) };
        run(dep.inner.sessions().regenerate(&mut s.s))?;
        s.id = c_string(s.s.id());
        Ok(())
    })
}

/// Deletes session `id`. If `existed` is not NULL, writes whether it existed. A malformed id
/// is simply absent. Fails with CK_INVALID_ARGUMENT (NULL `dep`, NULL `id` with a length) or
/// the backend's error. Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_session_destroy(
    dep: *const ck_deployment,
    id: *const u8,
    id_len: usize,
    existed: *mut bool,
) -> ck_status {
    ffi_call("ck_session_destroy", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, id) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(id, id_len, "id")?) };
        let found = run(dep.inner.sessions().destroy(id))?;
        // SAFETY: a non-NULL `existed` points to writable storage (caller's promise).
        if let Some(e) = unsafe { existed.as_mut() } {
            *e = found;
        }
        Ok(())
    })
}

/// Refreshes the idle timeout of session `id` without loading it. If `found` is not NULL,
/// writes whether the session exists. Fails like ck_session_destroy. Blocks the calling
/// thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_session_touch(
    dep: *const ck_deployment,
    id: *const u8,
    id_len: usize,
    found: *mut bool,
) -> ck_status {
    ffi_call("ck_session_touch", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, id) = unsafe { (arg_ref(dep, "dep")?, arg_bytes(id, id_len, "id")?) };
        let alive = run(dep.inner.sessions().touch(id))?;
        // SAFETY: a non-NULL `found` points to writable storage (caller's promise).
        if let Some(f) = unsafe { found.as_mut() } {
            *f = alive;
        }
        Ok(())
    })
}

/// Frees a session. A session lock still held (loaded with lock, never saved or unlocked) is
/// released in the background without writing. NULL is a no-op; never free twice.
#[no_mangle]
pub unsafe extern "C" fn ck_session_free(s: *mut ck_session) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_session_free", s) }
}

// Handles cross threads in C: make sure the Rust types allow it.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<ck_deployment>();
    send_sync::<ck_buf>();
    send_sync::<ck_cluster>();
    send_sync::<ck_events>();
    send_sync::<ck_event>();
    send_sync::<ck_lock>();
    send::<ck_pick>();
    send::<ck_session>();
    send::<ck_reader>();
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
    fn packed_lists_round_trip_and_reject_malformed_input() {
        let mut buf = Vec::new();
        pack(&mut buf, Some(b"ab")).unwrap();
        pack(&mut buf, Some(b"")).unwrap();
        pack(&mut buf, Some(b"xyz")).unwrap();
        let items = unpack(&buf, "list").unwrap();
        assert_eq!(items, vec![&b"ab"[..], &b""[..], &b"xyz"[..]]);
        assert!(unpack(&[], "list").unwrap().is_empty());
        // A length cut short, and an entry longer than what follows.
        let e = unpack(&buf[..buf.len() - 1], "list").unwrap_err();
        assert!(e.to_string().contains("only 2 follow"), "{e}");
        let e = unpack(&[1, 0], "list").unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        // Absent values are the 0xFFFFFFFF marker, which is never a valid input length.
        let mut absent = Vec::new();
        pack(&mut absent, None).unwrap();
        assert_eq!(absent, vec![0xff; 4]);
        assert!(unpack(&absent, "list").is_err());
    }

    #[test]
    fn reader_returns_lengths_and_negative_statuses() {
        let mut dep: *mut ck_deployment = std::ptr::null_mut();
        unsafe {
            assert_eq!(ck_deployment_new(c"".as_ptr(), &mut dep), ck_status::CK_OK);
            let mut r: *mut ck_reader = std::ptr::null_mut();
            assert_eq!(ck_reader_new(dep, 4, &mut r), ck_status::CK_OK);
            let big = b"0123456789";
            assert_eq!(
                ck_cache_set(dep, b"k".as_ptr(), 1, big.as_ptr(), big.len(), 0),
                ck_status::CK_OK
            );
            assert_eq!(
                ck_cache_set(dep, b"s".as_ptr(), 1, b"ab".as_ptr(), 2, 0),
                ck_status::CK_OK
            );
            assert_eq!(ck_reader_get(r, b"s".as_ptr(), 1), 2);
            assert_eq!(std::slice::from_raw_parts(ck_reader_data(r), 2), b"ab");
            assert_eq!(ck_reader_value(r), ck_reader_data(r));
            // Larger than the buffer: held by the reader.
            assert_eq!(ck_reader_get(r, b"k".as_ptr(), 1), 10);
            assert_eq!(std::slice::from_raw_parts(ck_reader_value(r), 10), big);
            assert_eq!(
                ck_reader_get(r, b"absent".as_ptr(), 6),
                -(ck_status::CK_NOT_FOUND as i64)
            );
            assert_eq!(
                ck_reader_get(std::ptr::null_mut(), b"k".as_ptr(), 1),
                -(ck_status::CK_INVALID_ARGUMENT as i64)
            );
            ck_reader_free(r);
            ck_deployment_free(dep);
        }
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
