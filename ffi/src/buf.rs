//! Library-owned byte buffers handed out to C (values, packed lists, JSON).

use crate::status::{ffi_value, free_handle};
use clusterkit::cache::Bytes;

/// A byte buffer owned by the library (a cached value). Opaque and immutable: read it with
/// ck_buf_data / ck_buf_len from any thread, release it once with ck_buf_free.
#[derive(Debug)]
pub struct ck_buf {
    pub(crate) data: Bytes,
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

/// Writes a new library-owned buffer holding `data` to `out`.
pub(crate) fn put_buf(out: &mut *mut ck_buf, data: Bytes) {
    *out = Box::into_raw(Box::new(ck_buf { data }));
}
