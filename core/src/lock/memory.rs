//! In-process locks: same tokens, fencing and waiting as the Redis backends, for one machine
//! and tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::lock::{Attempt, Waiters};

#[derive(Default)]
pub(crate) struct MemoryLocks {
    state: Mutex<State>,
    pub(crate) waiters: Waiters,
}

#[derive(Default)]
struct State {
    held: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
}

impl MemoryLocks {
    pub(crate) fn try_once(&self, name: &str, token: &str, ttl: Duration) -> Result<Attempt> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, until)) = s.held.get(name) {
            if *until > now {
                return Ok(Attempt::Busy(Some(until.saturating_duration_since(now))));
            }
        }
        s.held
            .insert(name.to_string(), (token.to_string(), now + ttl));
        let f = s.fences.entry(name.to_string()).or_insert(0);
        *f += 1;
        Ok(Attempt::Acquired {
            fence: *f,
            validity: ttl,
        })
    }

    pub(crate) fn release(&self, name: &str, token: &str) -> Result<bool> {
        let now = Instant::now();
        let released = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match s.held.get(name) {
                Some((t, until)) if t == token && *until > now => {
                    s.held.remove(name);
                    true
                }
                _ => false,
            }
        };
        if released {
            self.waiters.wake(name, token);
        }
        Ok(released)
    }

    pub(crate) fn extend(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<Duration>> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.held.get_mut(name) {
            Some((t, until)) if t == token && *until > now => {
                *until = now + ttl;
                Ok(Some(ttl))
            }
            _ => Ok(None),
        }
    }
}
