//! [`LockWatch`]: a second, non-owning view of a held lock, for bindings that wait for the
//! lock to be lost (or read its validity) on one thread while another extends or releases it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{GuardInner, LockGuard};

/// A view of a [`LockGuard`] that owns no part of the lock: dropping it releases nothing, and
/// it cannot extend or release. Made by [`LockGuard::watch`]; cheap to clone.
#[derive(Clone)]
pub struct LockWatch {
    inner: Arc<GuardInner>,
}

impl fmt::Debug for LockWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockWatch")
            .field("name", &self.inner.name)
            .field(
                "fencing_token",
                &self.inner.fenced.then_some(self.inner.fence),
            )
            .finish()
    }
}

impl LockGuard {
    /// A view of this lock for waiting on its loss and reading its validity without holding
    /// the guard itself.
    pub fn watch(&self) -> LockWatch {
        LockWatch {
            inner: self.inner.clone(),
        }
    }
}

impl LockWatch {
    /// Remaining validity, as [`LockGuard::validity`].
    pub fn validity(&self) -> Duration {
        if self.inner.lost.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        let until: Instant = *self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.saturating_duration_since(Instant::now())
    }

    /// Whether the guard was released (by [`LockGuard::release`] or by being dropped).
    pub fn is_released(&self) -> bool {
        self.inner.released.load(Ordering::SeqCst)
    }

    /// As [`LockGuard::is_held`].
    pub fn is_held(&self) -> bool {
        !self.is_released() && self.validity() > Duration::ZERO
    }

    /// Completes when the lock is lost (a renewal or an extension failed, or the validity ran
    /// out) or released. Owns what it waits on: no borrow of the guard.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let w = self.clone();
        async move {
            let mut rx = w.inner.lost_tx.subscribe();
            loop {
                let remaining = w.validity();
                if remaining.is_zero() || w.is_released() {
                    return;
                }
                // Wake at least every 50 ms to see a release (which sends nothing).
                let nap = remaining.min(Duration::from_millis(50));
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() || *rx.borrow() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(nap) => {}
                }
            }
        }
    }
}
