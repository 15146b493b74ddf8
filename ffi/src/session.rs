//! Distributed sessions: create, load (optionally locked), read and write fields, save,
//! regenerate, destroy.

use crate::buf::{ck_buf, put_buf};
use crate::cache::packed::pack;
use crate::deployment::ck_deployment;
use crate::status::{
    arg_bytes, arg_out, arg_ref, arg_str, c_string, ck_status, ffi_call, ffi_value, free_handle,
    null, run,
};
use clusterkit::cache::Bytes;
use clusterkit::session::Session;
use clusterkit::session::SessionStore;
use clusterkit::Error;
use std::ffi::c_char;
use std::ffi::CString;

/// One web session as a request sees it: its fields and the changes made since it was
/// loaded. Opaque. Not thread-safe: use a session from one thread at a time (it may move
/// between threads).
#[derive(Debug)]
pub struct ck_session {
    pub(crate) store: SessionStore,
    pub(crate) s: Session,
    pub(crate) id: CString,
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

pub(crate) unsafe fn arg_session<'a>(s: *mut ck_session) -> Result<&'a mut ck_session, Error> {
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
