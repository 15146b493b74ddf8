//! Distributed locks: acquire, extend, release, fencing tokens.

use crate::deployment::ck_deployment;
use crate::status::{
    arg_lock_ttl, arg_ms, arg_out, arg_ref, arg_str, c_string, ck_status, ffi_call, ffi_value,
    free_handle, run, CK_MAX_WAIT_MS,
};
use clusterkit::lock::LockGuard;
use clusterkit::Error;
use std::ffi::c_char;
use std::ffi::CString;
use std::sync::Mutex;

/// A held (or formerly held) distributed lock. Opaque. Thread-safe: accessors, extend and
/// release may be called from any thread (calls that change it are serialized).
#[derive(Debug)]
pub struct ck_lock {
    pub(crate) guard: Mutex<Option<LockGuard>>,
    pub(crate) name: CString,
    pub(crate) token: CString,
    /// The fencing token; `None` when acquired with CK_LOCK_NO_FENCING.
    pub(crate) fence: Option<u64>,
}

/// Flags of ck_lock_acquire_flags (a bit set; 0 is the default: fenced).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_lock_flag {
    /// No flag: the lock carries a fencing token.
    CK_LOCK_DEFAULT = 0,
    /// Acquire without a fencing token: one round trip less on Redlock (no second phase);
    /// ck_lock_fencing_token then returns 0 and ck_lock_get_fencing_token fails with
    /// CK_NOT_FOUND. The trade-off: a paused former holder's late write cannot be refused by
    /// the protected resource (README, "Locks").
    CK_LOCK_NO_FENCING = 1,
}

pub(crate) fn lock_guard(l: &ck_lock) -> std::sync::MutexGuard<'_, Option<LockGuard>> {
    l.guard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Acquires the lock `name` (1..1024 bytes of UTF-8) for `ttl_ms` milliseconds
/// (1..86400000) with the deployment's lock service (embedded, one Redis, or Redlock over
/// the `[locks]` pool's masters). `wait_ms` 0 makes one attempt and returns CK_CONFLICT if
/// someone else holds the lock; otherwise waits up to `wait_ms` (at most CK_MAX_WAIT_MS,
/// 24 h; woken by the holder's
/// release) and returns CK_TIMEOUT when that passes. On success writes a new lock to `*out`
/// carrying its fencing token (strictly increasing across holders of `name`); release it
/// with ck_lock_release and free it with ck_lock_free. Other failures: CK_INVALID_ARGUMENT
/// (NULL arguments, bad name, `ttl_ms` or `wait_ms` out of range: the message names it),
/// CK_UNAVAILABLE (no quorum of masters answered).
/// Blocks the calling thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_acquire(
    dep: *const ck_deployment,
    name: *const c_char,
    ttl_ms: u64,
    wait_ms: u64,
    out: *mut *mut ck_lock,
) -> ck_status {
    // SAFETY: forwarded unchanged (the caller's promise).
    unsafe { acquire("ck_lock_acquire", dep, name, ttl_ms, wait_ms, 0, out) }
}

/// Like ck_lock_acquire, with `flags`: a bit set of ck_lock_flag values (0 = the
/// deployment's default, `[locks] fencing`; CK_LOCK_NO_FENCING = no fencing token for this
/// acquisition). Unknown bits: CK_INVALID_ARGUMENT naming `flags`. Blocks the calling
/// thread. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_acquire_flags(
    dep: *const ck_deployment,
    name: *const c_char,
    ttl_ms: u64,
    wait_ms: u64,
    flags: u32,
    out: *mut *mut ck_lock,
) -> ck_status {
    // SAFETY: forwarded unchanged (the caller's promise).
    unsafe {
        acquire(
            "ck_lock_acquire_flags",
            dep,
            name,
            ttl_ms,
            wait_ms,
            flags,
            out,
        )
    }
}

unsafe fn acquire(
    function: &str,
    dep: *const ck_deployment,
    name: *const c_char,
    ttl_ms: u64,
    wait_ms: u64,
    flags: u32,
    out: *mut *mut ck_lock,
) -> ck_status {
    ffi_call(function, || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, name) = unsafe { (arg_ref(dep, "dep")?, arg_str(name, "name")?) };
        let known = ck_lock_flag::CK_LOCK_NO_FENCING as u32;
        if flags & !known != 0 {
            return Err(Error::invalid(
                "flags",
                format!(
                    "unknown bits {:#x} (known: CK_LOCK_NO_FENCING = 1)",
                    flags & !known
                ),
            ));
        }
        let unfenced;
        let mut locks = dep.inner.locks();
        if flags & known != 0 {
            unfenced = locks.with_fencing(false);
            locks = &unfenced;
        }
        let ttl = arg_lock_ttl(ttl_ms)?;
        let wait = arg_ms(wait_ms, CK_MAX_WAIT_MS, "wait_ms")?;
        let guard = if wait.is_zero() {
            run(locks.try_acquire(name, ttl))?
                .ok_or_else(|| Error::Conflict(format!("lock {name:?} is held by someone else")))?
        } else {
            run(locks.acquire_timeout(name, ttl, wait))?
        };
        let lock = ck_lock {
            name: c_string(guard.name()),
            token: c_string(guard.token()),
            fence: guard.fence(),
            guard: Mutex::new(Some(guard)),
        };
        *out = Box::into_raw(Box::new(lock));
        Ok(())
    })
}

/// The lock's fencing token (0 if `l` is NULL, or when it was acquired without one, see
/// CK_LOCK_NO_FENCING; a real token is never 0): pass it to the resource the lock protects
/// so it can refuse a write from an older holder. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_fencing_token(l: *const ck_lock) -> u64 {
    ffi_value("ck_lock_fencing_token", 0, || {
        // SAFETY: a non-NULL lock is live (caller's promise).
        unsafe { l.as_ref() }.map_or(0, |l| l.fence.unwrap_or(0))
    })
}

/// Writes the lock's fencing token to `*out`. Fails with CK_NOT_FOUND when the lock was
/// acquired without one (CK_LOCK_NO_FENCING or `[locks] fencing = false`; the message says
/// so), CK_INVALID_ARGUMENT for NULL arguments. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_lock_get_fencing_token(l: *const ck_lock, out: *mut u64) -> ck_status {
    ffi_call("ck_lock_get_fencing_token", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let l = unsafe { arg_ref(l, "lock")? };
        *out = l
            .fence
            .ok_or_else(|| clusterkit::lock::no_fencing_token(&l.name.to_string_lossy()))?;
        Ok(())
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

/// Extends the lock to `ttl_ms` milliseconds (1..86400000) from now. Fails with CK_CONFLICT when the lock
/// is no longer held with this token (it expired or was taken over), CK_CLOSED after
/// ck_lock_release, CK_INVALID_ARGUMENT (NULL, `ttl_ms` out of range), CK_UNAVAILABLE (no quorum). Blocks
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
        run(g.extend(arg_lock_ttl(ttl_ms)?))
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
