//! The distributed cache (PSR-16-shaped operations over the deployment's cache backend).

pub(crate) mod packed;
mod reader;

pub use reader::*;

use crate::buf::{ck_buf, put_buf};
use crate::deployment::ck_deployment;
use crate::status::{arg_bytes, arg_cache_ttl, arg_out, arg_ref, ck_status, ffi_call, run};
use clusterkit::cache::Bytes;
use clusterkit::Error;
use packed::{pack, unpack};

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
/// (0: no expiry; at most CK_MAX_CACHE_TTL_MS, 100 years). Fails with CK_INVALID_ARGUMENT (NULL
/// `dep`, empty or oversized key, `ttl_ms` over the maximum,
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
        run(dep.inner.cache().set(key, value, arg_cache_ttl(ttl_ms)?))
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

/// Stores `value` under `key` only if the key is absent (or expired), expiring after
/// `ttl_ms` milliseconds (0: never; at most CK_MAX_CACHE_TTL_MS). Writes to `*added` whether it was stored. Fails like
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
        *added = run(dep.inner.cache().add(key, value, arg_cache_ttl(ttl_ms)?))?;
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

/// Stores many values at once, all expiring after `ttl_ms` milliseconds (0: never; at most
/// CK_MAX_CACHE_TTL_MS).
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
        run(dep.inner.cache().set_many(pairs, arg_cache_ttl(ttl_ms)?))
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

/// Deletes the cache entries of the deployment's namespace and nothing else: sessions, locks,
/// fences, registry entries and other namespaces stay (docs/keyspace.md). If
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
