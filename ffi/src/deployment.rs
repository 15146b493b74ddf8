//! A deployment: the handle built from a config document that owns the pools, the cache,
//! the locks and the sessions.

use crate::status::{arg_out, arg_str, ck_status, ffi_call, free_handle};
use clusterkit::Clusterkit;
use std::ffi::c_char;
use std::sync::Arc;
use std::sync::Once;

/// A whole deployment built from a config document: its pools (balancers) and its cache.
/// Opaque. Thread-safe: one handle may be used from many threads at once.
#[derive(Debug)]
pub struct ck_deployment {
    pub(crate) inner: Arc<Clusterkit>,
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
pub(crate) fn pin_library() {
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
