//! Thin wrappers over the internal decoders, for the in-tree fuzzer (`fuzz/`). Not part of
//! the API: names and signatures change without notice.
//!
//! Each wrapper calls the decoder the library uses on what Redis returns or what it stored,
//! unchanged, so the fuzzer exercises the real code.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::Ttl;
use crate::error::{Error, Result};

/// Session-id parsing: the id as a string if it has the shape of an id the store hands
/// out (anything else is a miss, never a key sent to Redis).
pub fn session_id(id: &[u8]) -> Option<&str> {
    crate::session::store::parse_id(id)
}

/// A session's HGETALL reply (flat field/value list) → (user fields, creation ms); `None`
/// for a missing or foreign hash.
pub fn session_hash(flat: Vec<Vec<u8>>) -> Option<(BTreeMap<String, Bytes>, u64)> {
    crate::session::store::decode(flat)
}

/// What the session lock script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLockReply {
    /// Locked and loaded: the HGETALL flat list.
    Loaded(Vec<Vec<u8>>),
    /// Held by another request, with its remaining lock time when known.
    Busy(Option<Duration>),
    /// The session does not exist (no lock was taken).
    Missing,
}

/// The reply of the session lock script (lock + read in one round trip).
pub fn session_lock_reply(v: redis::Value) -> Result<SessionLockReply> {
    Ok(match crate::session::store::parse_locked(v)? {
        crate::session::store::Locked::Loaded(flat) => SessionLockReply::Loaded(flat),
        crate::session::store::Locked::Busy(wait) => SessionLockReply::Busy(wait),
        crate::session::store::Locked::Missing => SessionLockReply::Missing,
    })
}

/// The reply of the lock acquisition scripts (`ck_acquire`, Redlock's phase 1): `(1,
/// fence)` when acquired, `(0, pttl)` when held by someone else, decoded as the lock
/// backend decodes it.
pub fn lock_acquire_reply(v: redis::Value) -> Result<(i64, i64)> {
    redis::from_redis_value::<(i64, i64)>(v)
        .map_err(|e| Error::Backend(format!("unexpected reply to the lock script: {e}")))
}

/// The `get_or_compute` envelope stored in the cache → (compute time ms, expiry Unix ms,
/// payload); `None` when `raw` is not an envelope.
pub fn cache_envelope(raw: &[u8]) -> Option<(u32, u64, Bytes)> {
    crate::cache::compute::decode(&Bytes::copy_from_slice(raw))
}

/// XFetch's decision for an envelope's values.
pub fn cache_refresh_early(delta_ms: u32, expiry_ms: u64, beta: f64, now_ms: u64) -> bool {
    crate::cache::compute::refresh_early(delta_ms, expiry_ms, beta, now_ms)
}

/// A PTTL answer as a [`Ttl`].
pub fn cache_pttl(ms: i64) -> Ttl {
    crate::cache::redis::ttl_from_pttl(ms)
}

/// The masters named in a `CLUSTER SLOTS` answer.
pub fn cluster_slots(answer: redis::Value, answering_host: &str) -> Vec<(String, u16)> {
    crate::cache::redis_cluster::slot_masters(answer, answering_host)
}
