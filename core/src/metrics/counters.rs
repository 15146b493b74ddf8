//! Counters of the locks, the sessions and the Redis connections, recorded with relaxed
//! atomics where the work happens and read into a [`super::MetricsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::histogram::{HistogramSnapshot, LatencyHistogram};

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Live counters of one lock service (shared by its clones and its guards).
#[derive(Debug, Default)]
pub struct LockCounters {
    pub(crate) acquired: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) renewal_failures: AtomicU64,
    pub(crate) losses: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) wait: LatencyHistogram,
}

impl LockCounters {
    pub(crate) fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn read(&self) -> LockStats {
        LockStats {
            acquired: get(&self.acquired),
            refused: get(&self.refused),
            timeouts: get(&self.timeouts),
            renewals: get(&self.renewals),
            renewal_failures: get(&self.renewal_failures),
            losses: get(&self.losses),
            releases: get(&self.releases),
            wait: self.wait.read(),
        }
    }
}

/// A copy of [`LockCounters`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockStats {
    /// Acquisitions that got the lock.
    pub acquired: u64,
    /// Attempts that found the lock held (a `try_acquire` that returned `None`).
    pub refused: u64,
    /// Waiting acquisitions that gave up at their deadline.
    pub timeouts: u64,
    /// Successful extensions (explicit or automatic).
    pub renewals: u64,
    /// Extensions that failed.
    pub renewal_failures: u64,
    /// Locks lost while held (an extension found another holder or the renewal failed).
    pub losses: u64,
    /// Explicit releases.
    pub releases: u64,
    /// Time from the start of an acquisition to getting the lock.
    pub wait: HistogramSnapshot,
}

impl LockStats {
    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &LockStats) {
        self.acquired += o.acquired;
        self.refused += o.refused;
        self.timeouts += o.timeouts;
        self.renewals += o.renewals;
        self.renewal_failures += o.renewal_failures;
        self.losses += o.losses;
        self.releases += o.releases;
        self.wait.merge(&o.wait);
    }
}

/// Live counters of one session store.
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub(crate) created: AtomicU64,
    pub(crate) loaded: AtomicU64,
    pub(crate) missing: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) lock_wait: LatencyHistogram,
}

impl SessionCounters {
    /// A copy of the counters.
    pub fn read(&self) -> SessionStats {
        SessionStats {
            created: get(&self.created),
            loaded: get(&self.loaded),
            missing: get(&self.missing),
            lock_waits: get(&self.lock_waits),
            lock_timeouts: get(&self.lock_timeouts),
            lock_wait: self.lock_wait.read(),
        }
    }

    pub(crate) fn count_load<T>(&self, r: &crate::Result<Option<T>>) {
        match r {
            Ok(Some(_)) => LockCounters::inc(&self.loaded),
            Ok(None) => LockCounters::inc(&self.missing),
            Err(e) if e.kind() == crate::ErrorKind::Timeout => {
                LockCounters::inc(&self.lock_timeouts)
            }
            Err(_) => {}
        }
    }
}

/// A copy of [`SessionCounters`].
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    /// Sessions created.
    pub created: u64,
    /// Loads that found the session.
    pub loaded: u64,
    /// Loads of an unknown or expired session (or a malformed id).
    pub missing: u64,
    /// Locked loads that had to wait for another request's lock.
    pub lock_waits: u64,
    /// Locked loads that gave up after `lock_wait`.
    pub lock_timeouts: u64,
    /// Time a locked load took, waiting included.
    pub lock_wait: HistogramSnapshot,
}

impl SessionStats {
    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &SessionStats) {
        self.created += o.created;
        self.loaded += o.loaded;
        self.missing += o.missing;
        self.lock_waits += o.lock_waits;
        self.lock_timeouts += o.lock_timeouts;
        self.lock_wait.merge(&o.lock_wait);
    }
}

/// Process-wide counters of the Redis connections every deployment of this process opens.
#[derive(Debug, Default)]
pub struct RedisCounters {
    pub(crate) connections: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
}

/// The process's Redis connection counters.
pub(crate) static REDIS: RedisCounters = RedisCounters {
    connections: AtomicU64::new(0),
    reconnects: AtomicU64::new(0),
    connect_failures: AtomicU64::new(0),
};

impl RedisCounters {
    /// A copy of the counters.
    pub fn read(&self) -> RedisStats {
        RedisStats {
            connections: get(&self.connections),
            reconnects: get(&self.reconnects),
            connect_failures: get(&self.connect_failures),
        }
    }
}

/// A copy of the process's Redis connection counters.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisStats {
    /// Connections established (first connections and reconnections).
    pub connections: u64,
    /// Connections established again after one was lost.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

impl RedisStats {
    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: &RedisStats) {
        self.connections += o.connections;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
    }
}
