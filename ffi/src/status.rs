//! Shared by every C function: the status codes, the calling thread's last error
//! ([`ck_last_error`]), the panic-catching wrappers [`ffi_call`] and [`ffi_value`], argument
//! and handle conversion, and the blocking bridge to the core's runtime.

use clusterkit::Error;
use clusterkit::ErrorKind;
use std::cell::RefCell;
use std::ffi::c_char;
use std::ffi::CStr;
use std::ffi::CString;
use std::panic::catch_unwind;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

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

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// A C string of `s`; an interior NUL (which C cannot carry) becomes `?` rather than cutting
/// the text or failing.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).unwrap_or_default()
}

pub(crate) fn set_last_error(message: String) {
    let c = c_string(&message);
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = Some(c);
        }
    });
}

pub(crate) fn fail(e: &Error) -> ck_status {
    set_last_error(e.to_string());
    e.kind().into()
}

pub(crate) fn panic_message(name: &str, payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("internal error: panic in {name}: {what}")
}

/// Runs the body of an exported function: `Ok` becomes `CK_OK`, an error its status (with the
/// message stored for [`ck_last_error`]), a panic `CK_INTERNAL`.
pub(crate) fn ffi_call(name: &str, f: impl FnOnce() -> Result<(), Error>) -> ck_status {
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
pub(crate) fn ffi_value<T>(name: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(panic_message(name, &*payload));
            default
        }
    }
}

pub(crate) fn null(name: &str) -> Error {
    Error::invalid(name, "must not be NULL")
}

/// A NUL-terminated UTF-8 string argument.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
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
pub(crate) unsafe fn arg_bytes<'a>(
    p: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Error> {
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
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: a non-NULL handle was made by this library and not freed (caller's promise).
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// An out-parameter, checked before any work so nothing is done for a call that cannot report.
pub(crate) fn arg_out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: a non-NULL out-parameter points to writable storage (caller's promise).
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

/// Longest cache TTL a caller may pass (100 years, in ms): the core's `cache::MAX_TTL`
/// (a larger value means a bug in the caller: an unconverted unit, a wrapped negative
/// number).
pub const CK_MAX_CACHE_TTL_MS: u64 = 3153600000000;

/// Longest wait or timeout a caller may pass (24 h, in ms): a longer blocking call is a
/// caller's bug, and near `u64::MAX` a deadline `now + wait` cannot be represented.
pub const CK_MAX_WAIT_MS: u64 = 86400000;

// Written as plain literals so the C header gets plain (long) literals, not `int` products.
const _: () = assert!(CK_MAX_CACHE_TTL_MS as u128 == clusterkit::cache::MAX_TTL.as_millis());
const _: () = assert!(CK_MAX_WAIT_MS == 86_400 * 1000);

/// A duration argument in milliseconds, at most `max_ms`; the error names `name`.
pub(crate) fn arg_ms(ms: u64, max_ms: u64, name: &str) -> Result<Duration, Error> {
    if ms > max_ms {
        return Err(Error::invalid(
            name,
            format!("must be at most {max_ms} ms, got {ms}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// A cache TTL argument: 0 is "no expiry" (`None`), otherwise 1..=[`CK_MAX_CACHE_TTL_MS`].
pub(crate) fn arg_cache_ttl(ms: u64) -> Result<Option<Duration>, Error> {
    let ttl = arg_ms(ms, CK_MAX_CACHE_TTL_MS, "ttl_ms")?;
    Ok((ms != 0).then_some(ttl))
}

/// A lock TTL argument, checked by the core's [`clusterkit::lock::check_ttl`] (1 ms..=24 h); the
/// message names the C parameter.
pub(crate) fn arg_lock_ttl(ms: u64) -> Result<Duration, Error> {
    let ttl = Duration::from_millis(ms);
    // The core's bound, reported under the C parameter's name.
    clusterkit::lock::check_ttl(ttl).map_err(|e| match e {
        Error::InvalidArgument { message, .. } => Error::invalid("ttl_ms", message),
        other => other,
    })?;
    Ok(ttl)
}

/// Body of every `ck_*_free`: drops a handle made by `Box::into_raw` in this library; NULL is a
/// no-op. A panic in a destructor is caught like everywhere else.
pub(crate) unsafe fn free_handle<T>(name: &str, p: *mut T) {
    ffi_value(name, (), || {
        if !p.is_null() {
            // SAFETY: made by Box::into_raw in this library and freed once (caller's promise).
            drop(unsafe { Box::from_raw(p) });
        }
    })
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

/// The deployment's blocking bridge: runs `fut` on the shared runtime.
pub(crate) fn run<T>(fut: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    clusterkit::blocking::block_on(fut)?
}

pub(crate) fn opt_str<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, NUL-terminated (caller's promise).
    unsafe { arg_str(p, name) }.map(|s| (!s.is_empty()).then_some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit::ErrorKind;

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        let st = ffi_call("ck_test", || panic!("boom"));
        assert_eq!(st, ck_status::CK_INTERNAL);
        let msg = unsafe { CStr::from_ptr(ck_last_error()) }.to_str().unwrap();
        assert!(msg.contains("panic in ck_test: boom"), "{msg}");
    }

    #[test]
    fn durations_out_of_range_name_the_parameter() {
        assert_eq!(arg_cache_ttl(0).unwrap(), None);
        assert_eq!(
            arg_cache_ttl(CK_MAX_CACHE_TTL_MS).unwrap(),
            Some(Duration::from_millis(CK_MAX_CACHE_TTL_MS))
        );
        for ms in [CK_MAX_CACHE_TTL_MS + 1, u64::MAX] {
            let e = arg_cache_ttl(ms).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains("ttl_ms"), "{e}");
        }
        assert_eq!(arg_lock_ttl(86_400_000).unwrap(), clusterkit::lock::MAX_TTL);
        for ms in [0, 86_400_001, u64::MAX] {
            let e = arg_lock_ttl(ms).unwrap_err();
            assert!(e.to_string().contains("ttl_ms"), "{e}");
        }
        assert_eq!(
            arg_ms(0, CK_MAX_WAIT_MS, "wait_ms").unwrap(),
            Duration::ZERO
        );
        let e = arg_ms(CK_MAX_WAIT_MS + 1, CK_MAX_WAIT_MS, "wait_ms").unwrap_err();
        assert!(e.to_string().contains("wait_ms"), "{e}");
        assert!(e.to_string().contains("86400000"), "{e}");
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
