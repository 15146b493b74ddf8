//! `get_or_compute`: one computation per key per process at a time, and probabilistic early
//! recomputation (XFetch: Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache
//! Stampede Prevention", VLDB 2015).
//!
//! Values are stored in an envelope: `b"CKX1"`, the compute time in milliseconds (u32 LE), the
//! expiry as Unix milliseconds (u64 LE), then the payload. A reader recomputes early when
//! `now - delta * beta * ln(rand) >= expiry`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::OnceCell;

use crate::cache::Cache;
use crate::error::{Error, Result};

/// Default XFetch `beta` (the paper's recommended 1.0).
pub const DEFAULT_BETA: f64 = 1.0;

const MAGIC: &[u8; 4] = b"CKX1";
const HEADER: usize = 4 + 4 + 8;

type Flight = Arc<OnceCell<Result<Bytes>>>;

/// Computations in progress, by full key.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<Vec<u8>, Flight>>,
}

impl Flights {
    fn join(&self, key: &[u8]) -> Flight {
        let mut m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_vec()).or_default().clone()
    }

    fn is_running(&self, key: &[u8]) -> bool {
        let m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        m.contains_key(key)
    }

    fn leave(&self, key: &[u8], flight: &Flight) {
        let mut m = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            m.remove(key);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(delta: Duration, expiry_ms: u64, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_slice(MAGIC);
    b.put_u32_le(delta.as_millis().min(u32::MAX as u128) as u32);
    b.put_u64_le(expiry_ms);
    b.put_slice(payload);
    b.freeze()
}

/// (compute time ms, expiry unix ms, payload), or `None` if `raw` is not an envelope.
pub(crate) fn decode(raw: &Bytes) -> Option<(u32, u64, Bytes)> {
    if raw.len() < HEADER || &raw[..4] != MAGIC {
        return None;
    }
    let delta = u32::from_le_bytes(raw[4..8].try_into().ok()?);
    let expiry = u64::from_le_bytes(raw[8..16].try_into().ok()?);
    Some((delta, expiry, raw.slice(HEADER..)))
}

/// True when XFetch says this reader should recompute now.
pub(crate) fn refresh_early(delta_ms: u32, expiry_ms: u64, beta: f64, now_ms: u64) -> bool {
    if beta <= 0.0 {
        return false;
    }
    // r in (0, 1]; -ln(r) is an Exp(1) sample.
    let r = ((crate::rng::next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    now_ms as f64 - delta_ms as f64 * beta * r.ln() >= expiry_ms as f64
}

pub(crate) async fn get_or_compute<F, Fut>(
    cache: &Cache,
    key: &[u8],
    ttl: Duration,
    beta: f64,
    compute: F,
) -> Result<Bytes>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    let full = cache.full_key(key)?;
    if ttl.is_zero() {
        return Err(Error::invalid(
            "ttl",
            "must be more than 0 for get_or_compute",
        ));
    }
    super::check_ttl(Some(ttl))?;
    if !beta.is_finite() || beta < 0.0 {
        return Err(Error::invalid(
            "beta",
            format!("must be a number >= 0, got {beta}"),
        ));
    }
    if let Some(raw) = cache.get(key).await? {
        if let Some((delta, expiry, payload)) = decode(&raw) {
            if !refresh_early(delta, expiry, beta, unix_ms()) {
                return Ok(payload);
            }
            // This reader refreshes early; if someone already does, serve the current value.
            if cache.computing.is_running(&full) {
                return Ok(payload);
            }
        }
    }
    let flight = cache.computing.join(&full);
    let result = flight
        .get_or_init(|| async {
            let started = Instant::now();
            let value = compute().await?;
            cache.check_value(&value)?;
            let expiry = unix_ms().saturating_add(ttl.as_millis() as u64);
            cache
                .set(key, encode(started.elapsed(), expiry, &value), Some(ttl))
                .await?;
            Ok(value)
        })
        .await
        .clone();
    cache.computing.leave(&full, &flight);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let e = encode(Duration::from_millis(42), 1_000, b"payload");
        let (d, x, p) = decode(&e).unwrap();
        assert_eq!((d, x, &p[..]), (42, 1_000, &b"payload"[..]));
        assert!(decode(&Bytes::from_static(b"plain value")).is_none());
    }

    #[test]
    fn xfetch_probability_grows_towards_expiry() {
        let expiry = 100_000;
        let count = |now: u64| {
            (0..10_000)
                .filter(|_| refresh_early(1_000, expiry, 1.0, now))
                .count()
        };
        let far = count(expiry - 10_000); // 10 compute-times before expiry: e^-10
        let near = count(expiry - 1_000); // one compute-time before: e^-1 = 37%
        assert!(far < 50, "far {far}");
        assert!((3_000..4_400).contains(&near), "near {near}");
        assert_eq!(count(expiry), 10_000);
        assert!(!refresh_early(1_000, expiry, 0.0, expiry - 1));
    }
}
