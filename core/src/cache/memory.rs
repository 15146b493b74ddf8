//! The embedded in-process backend: quick_cache (S3-FIFO-like eviction) bounded by bytes,
//! with per-entry expiry checked on access.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::{Cache as Qc, EntryAction, EntryResult};
use quick_cache::Weighter;

use crate::cache::Ttl;
use crate::error::{Error, Result};

/// Bytes counted per entry on top of its key and value (hash table slot, entry header,
/// `Bytes` handle and its allocation, expiry): 136-157 bytes of resident memory per entry
/// were measured by the cache benchmark (BENCHMARKS.md), so the bound holds.
pub const ENTRY_OVERHEAD: u64 = 144;

/// Options of the embedded backend.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Bound on keys + values + [`ENTRY_OVERHEAD`] per entry, in bytes (default 64 MiB).
    pub max_bytes: u64,
    /// Expected number of entries, to size the table (default 16384).
    pub estimated_entries: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            max_bytes: 64 << 20,
            estimated_entries: 16384,
        }
    }
}

impl MemoryOptions {
    /// Sets the byte bound.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }
    /// Sets the expected number of entries.
    pub fn with_estimated_entries(mut self, n: usize) -> Self {
        self.estimated_entries = n;
        self
    }
}

/// Keys up to this many bytes are stored inside the entry (no allocation of their own, no
/// pointer to chase when a lookup compares keys).
const KEY_INLINE: usize = 30;
/// Values up to this many bytes are stored inside the entry (issue #18): a hit then reads
/// one entry and copies the value out, instead of also touching the shared header of a
/// `Bytes` elsewhere in memory (a second cache miss for a cold entry, two atomic operations).
pub(crate) const VALUE_INLINE: usize = 64;

/// A stored key: inline when short. Hashes and compares as the byte slice it holds, so the
/// map is queried with a plain `&[u8]`.
#[derive(Clone)]
pub(crate) enum MemKey {
    Inline { len: u8, bytes: [u8; KEY_INLINE] },
    Heap(Box<[u8]>),
}

impl MemKey {
    fn new(key: &[u8]) -> MemKey {
        if key.len() <= KEY_INLINE {
            let mut bytes = [0u8; KEY_INLINE];
            bytes[..key.len()].copy_from_slice(key);
            MemKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            MemKey::Heap(key.into())
        }
    }
    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => &bytes[..*len as usize],
            MemKey::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for MemKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::hash::Hash for MemKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Same as hashing the slice: lookups hash a `&[u8]`.
        self.as_slice().hash(state)
    }
}

impl PartialEq for MemKey {
    #[inline]
    fn eq(&self, other: &MemKey) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MemKey {}

/// A stored value: inline when small.
#[derive(Clone)]
enum MemValue {
    Inline { len: u8, bytes: [u8; VALUE_INLINE] },
    Shared(Bytes),
}

impl MemValue {
    fn new(value: Bytes) -> MemValue {
        if value.len() <= VALUE_INLINE {
            let mut bytes = [0u8; VALUE_INLINE];
            bytes[..value.len()].copy_from_slice(&value);
            MemValue::Inline {
                len: value.len() as u8,
                bytes,
            }
        } else {
            MemValue::Shared(value)
        }
    }
    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            MemValue::Inline { len, bytes } => &bytes[..*len as usize],
            MemValue::Shared(b) => b,
        }
    }
    #[inline]
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    #[inline]
    fn into_bytes(self) -> Bytes {
        match self {
            MemValue::Inline { len, bytes } => Bytes::copy_from_slice(&bytes[..len as usize]),
            MemValue::Shared(b) => b,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Entry {
    value: MemValue,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<MemKey, Entry> for ByteWeighter {
    fn weight(&self, key: &MemKey, val: &Entry) -> u64 {
        key.as_slice().len() as u64 + val.value.len() as u64 + ENTRY_OVERHEAD
    }
}

pub(crate) struct MemoryBackend {
    cache: Qc<MemKey, Entry, ByteWeighter>,
    /// Sessions stored through this backend (by full key), shared by every session store
    /// built on it.
    pub(crate) sessions: std::sync::Arc<crate::session::MemSessions>,
}

fn deadline(ttl: Option<Duration>) -> Option<Instant> {
    ttl.and_then(|t| Instant::now().checked_add(t))
}

impl MemoryBackend {
    pub(crate) fn new(options: MemoryOptions) -> Result<MemoryBackend> {
        if options.max_bytes < 1024 {
            return Err(Error::invalid("max_bytes", "must be at least 1024 bytes"));
        }
        let cache = Qc::with_weighter(
            options.estimated_entries.max(16),
            options.max_bytes,
            ByteWeighter,
        );
        Ok(MemoryBackend {
            cache,
            sessions: std::sync::Arc::new(crate::session::MemSessions::new(options.max_bytes)),
        })
    }

    fn check_fits(&self, key: &[u8], value: &Bytes) -> Result<()> {
        let w = key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD;
        // quick_cache silently drops an item heavier than one shard: refuse it loudly.
        if w > self.cache.shard_capacity() {
            return Err(Error::invalid(
                "value",
                format!(
                    "{} bytes do not fit the memory cache (at most {} bytes per entry with max_bytes = {}); raise max_bytes",
                    value.len(),
                    self.cache.shard_capacity().saturating_sub(ENTRY_OVERHEAD + key.len() as u64),
                    self.cache.capacity()
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        // The map hands out a copy of the entry: for an inline value that is a copy of bytes
        // already in the CPU cache with the entry (no pointer to chase, no atomic).
        let Some(e) = self.cache.get(key) else {
            return Ok(None);
        };
        // No clock read for entries without a TTL.
        if e.expires.is_none() || e.live(Instant::now()) {
            Ok(Some(e.value.into_bytes()))
        } else {
            self.cache.remove_if(key, |v| !v.live(Instant::now()));
            Ok(None)
        }
    }

    pub(crate) fn set(&self, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.check_fits(key, &value)?;
        self.cache.insert(
            MemKey::new(key),
            Entry {
                value: MemValue::new(value),
                expires: deadline(ttl),
            },
        );
        Ok(())
    }

    pub(crate) fn add(&self, key: &[u8], value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        self.check_fits(key, &value)?;
        let now = Instant::now();
        let entry = Entry {
            value: MemValue::new(value),
            expires: deadline(ttl),
        };
        match self.cache.entry(&MemKey::new(key), None, |_, v| {
            if v.live(now) {
                EntryAction::Retain(())
            } else {
                EntryAction::ReplaceWithGuard
            }
        }) {
            EntryResult::Retained(()) => Ok(false),
            EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => Ok(g.insert(entry).is_ok()),
            EntryResult::Removed(..) | EntryResult::Timeout => Ok(false),
        }
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self
            .cache
            .remove(key)
            .is_some_and(|(_, e)| e.live(Instant::now())))
    }

    pub(crate) fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    pub(crate) fn increment(&self, key: &[u8], delta: i64) -> Result<i64> {
        let now = Instant::now();
        let r = self.cache.entry(&MemKey::new(key), None, |_, v| {
            if !v.live(now) {
                return EntryAction::ReplaceWithGuard;
            }
            let cur = std::str::from_utf8(v.value.as_slice())
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            let next = match cur {
                None => return EntryAction::Retain(Err(not_integer())),
                Some(c) => match c.checked_add(delta) {
                    None => return EntryAction::Retain(Err(overflow())),
                    Some(n) => n,
                },
            };
            v.value = MemValue::new(Bytes::from(next.to_string()));
            EntryAction::Retain(Ok(next))
        });
        match r {
            EntryResult::Retained(r) => r,
            EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => {
                let entry = Entry {
                    value: MemValue::new(Bytes::from(delta.to_string())),
                    expires: None,
                };
                g.insert(entry)
                    .map(|_| delta)
                    .map_err(|_| Error::Internal("increment could not store its value".into()))
            }
            EntryResult::Removed(..) | EntryResult::Timeout => {
                Err(Error::Internal("increment lost its entry".into()))
            }
        }
    }

    pub(crate) fn ttl(&self, key: &[u8]) -> Result<Ttl> {
        let now = Instant::now();
        Ok(match self.cache.get(key) {
            Some(e) if e.live(now) => match e.expires {
                None => Ttl::Persistent,
                Some(t) => Ttl::Expires(t.saturating_duration_since(now)),
            },
            _ => Ttl::Missing,
        })
    }

    pub(crate) fn clear_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let now = Instant::now();
        let removed = AtomicU64::new(0);
        self.cache.retain(|k, v| {
            if k.as_slice().starts_with(prefix) {
                if v.live(now) {
                    removed.fetch_add(1, Ordering::Relaxed);
                }
                false
            } else {
                true
            }
        });
        Ok(removed.load(Ordering::Relaxed))
    }

    /// Bytes counted against the bound.
    pub(crate) fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

/// Redis's own wording, so every backend reports the same error.
fn not_integer() -> Error {
    Error::Backend("ERR value is not an integer or out of range".into())
}

fn overflow() -> Error {
    Error::Backend("ERR increment or decrement would overflow".into())
}
