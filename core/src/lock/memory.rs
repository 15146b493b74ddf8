//! In-process locks: same tokens, fencing and waiting as the Redis backends, for one machine
//! and tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::lock::{Attempt, Waiters};

#[derive(Default)]
pub(crate) struct MemoryLocks {
    state: crate::fork::Mutex<State>,
    pub(crate) waiters: Waiters,
}

/// Held locks are swept of expired entries once their number doubles since the last sweep
/// (amortised O(1) per acquisition), with at least this many between sweeps.
const MIN_SWEEP_AT: usize = 64;

#[derive(Default)]
struct State {
    /// Held locks: name → (token, expiry, fencing token).
    held: HashMap<String, (String, Instant, u64)>,
    /// One counter for every name: strictly increasing per name, and no per-name state left
    /// behind (no counter outlives its lock).
    fence: u64,
    /// Sweep expired entries of `held` when it reaches this size.
    sweep_at: usize,
}

impl MemoryLocks {
    pub(crate) fn try_once(&self, name: &str, token: &str, ttl: Duration) -> Result<Attempt> {
        let now = Instant::now();
        let mut s = self.state.lock();
        if let Some((_, until, _)) = s.held.get(name) {
            if *until > now {
                return Ok(Attempt::Busy(Some(until.saturating_duration_since(now))));
            }
        }
        if s.held.len() >= s.sweep_at.max(MIN_SWEEP_AT) {
            s.held.retain(|_, (_, until, _)| *until > now);
            s.sweep_at = (s.held.len() * 2).max(MIN_SWEEP_AT);
        }
        s.fence += 1;
        let fence = s.fence;
        s.held
            .insert(name.to_string(), (token.to_string(), now + ttl, fence));
        Ok(Attempt::Acquired {
            fence,
            validity: ttl,
        })
    }

    pub(crate) fn release(&self, name: &str, token: &str) -> Result<bool> {
        let now = Instant::now();
        let released = {
            let mut s = self.state.lock();
            match s.held.get(name) {
                Some((t, until, fence)) if t == token && *until > now => {
                    let fence = *fence;
                    s.held.remove(name);
                    Some(fence)
                }
                _ => None,
            }
        };
        if let Some(fence) = released {
            self.waiters.wake(crate::lock::name_hash(name), fence);
        }
        Ok(released.is_some())
    }

    pub(crate) fn extend(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>> {
        let now = Instant::now();
        let mut s = self.state.lock();
        match s.held.get_mut(name) {
            Some((t, until, _)) if t == token && *until > now => {
                *until = now + ttl;
                Ok(Some(ttl))
            }
            _ => Ok(None),
        }
    }
}
