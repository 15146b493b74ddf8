//! The cache reader: reads many values one by one into one caller-visible buffer.

use crate::deployment::ck_deployment;
use crate::status::{
    arg_bytes, arg_out, arg_ref, ck_status, ffi_call, ffi_value, free_handle, null,
};
use clusterkit::cache::Bytes;
use clusterkit::Clusterkit;
use clusterkit::Error;
use std::sync::Arc;

/// A reader: the fastest way to read many cache values one by one from a language whose
/// calls cost per argument (PHP's FFI). It owns a buffer of fixed capacity that every read
/// copies the value into, so a read is one call with three arguments and the caller keeps
/// one pointer (ck_reader_data) for all of them. Opaque. Not thread-safe: one thread at a
/// time (a reader may move between threads).
#[derive(Debug)]
pub struct ck_reader {
    pub(crate) dep: Arc<Clusterkit>,
    pub(crate) buf: Box<[u8]>,
    pub(crate) last: Option<Bytes>,
}

/// Largest buffer of a reader (16 MiB).
pub(crate) const MAX_READER_CAPACITY: usize = 16 << 20;

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

/// Reads `count` keys at once into the reader (one call, one copy; the batch read for
/// languages whose calls and string operations cost per item, like PHP's). `keys` is a key
/// table of `keys_len` bytes: `count` 4-byte little-endian key lengths, then the keys one
/// after the other (each 1..4096 bytes). Returns the length (>= 0) of the answer, which is
/// at ck_reader_data(r) when it is <= the capacity, else at ck_reader_value(r): `count`
/// 4-byte little-endian value lengths (0xFFFFFFFF for an absent key), then the values one
/// after the other, in the keys' order (`count` 0: 0, no I/O). Returns minus the ck_status of a failure
/// (-CK_INVALID_ARGUMENT for NULL `r`, a table whose lengths do not add up to `keys_len`, a
/// bad key; the backend's errors), with the message in ck_last_error(). Keys are
/// grouped per node like ck_cache_get_many. Blocks the calling thread for network backends.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_get_many(
    r: *mut ck_reader,
    keys: *const u8,
    keys_len: usize,
    count: usize,
) -> i64 {
    let mut len = 0i64;
    let status = ffi_call("ck_reader_get_many", || {
        // SAFETY: a non-NULL reader is live and used by one thread (caller's promise).
        let r = unsafe { r.as_mut() }.ok_or_else(|| null("reader"))?;
        // SAFETY: checked by arg_bytes; validity is the caller's promise.
        let table = unsafe { arg_bytes(keys, keys_len, "keys")? };
        let list = key_table(table, count)?;
        let values = r.dep.cache().get_many(&list);
        let values = crate::status::run(values)?;
        if values.len() != count {
            return Err(Error::Internal(format!(
                "the cache answered {} values for {count} keys",
                values.len()
            )));
        }
        let mut total = 4 * count;
        for v in values.iter().flatten() {
            if v.len() >= u32::MAX as usize {
                return Err(Error::invalid("value", "is larger than 4 GiB - 2"));
            }
            total += v.len();
        }
        let fill = |dst: &mut [u8]| {
            let (head, mut body) = dst.split_at_mut(4 * count);
            for (slot, v) in head.chunks_exact_mut(4).zip(&values) {
                let n = v.as_ref().map_or(u32::MAX, |v| v.len() as u32);
                slot.copy_from_slice(&n.to_le_bytes());
                if let Some(v) = v {
                    let (d, rest) = std::mem::take(&mut body).split_at_mut(v.len());
                    d.copy_from_slice(v);
                    body = rest;
                }
            }
        };
        if let Some(dst) = r.buf.get_mut(..total) {
            fill(dst);
            // ck_reader_value points into the buffer for an answer that fits.
            r.last = Some(Bytes::new());
        } else {
            let mut big = vec![0u8; total];
            fill(&mut big);
            r.last = Some(Bytes::from(big));
        }
        len = total as i64;
        Ok(())
    });
    match status {
        ck_status::CK_OK => len,
        s => -(s as i64),
    }
}

/// Splits a key table (`count` 4-byte LE lengths, then the keys) into the keys.
fn key_table(table: &[u8], count: usize) -> Result<Vec<&[u8]>, Error> {
    let head = count
        .checked_mul(4)
        .filter(|&h| h <= table.len())
        .ok_or_else(|| {
            Error::invalid(
                "keys",
                format!(
                    "has {} bytes: too short for {count} key lengths",
                    table.len()
                ),
            )
        })?;
    let (lens, mut body) = table.split_at(head);
    let mut out = Vec::with_capacity(count);
    for (i, l) in lens.chunks_exact(4).enumerate() {
        let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if n > body.len() {
            return Err(Error::invalid(
                "keys",
                format!("key {i} says {n} bytes but only {} follow", body.len()),
            ));
        }
        let (k, rest) = body.split_at(n);
        out.push(k);
        body = rest;
    }
    if !body.is_empty() {
        return Err(Error::invalid(
            "keys",
            format!("{} bytes follow the last key", body.len()),
        ));
    }
    Ok(out)
}

/// Frees a reader. NULL is a no-op; never free twice.
#[no_mangle]
pub unsafe extern "C" fn ck_reader_free(r: *mut ck_reader) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_reader_free", r) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ck_cache_set, ck_deployment_free, ck_deployment_new};

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
}
