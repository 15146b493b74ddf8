//! Distributed locks: acquire (try or wait), fencing token, validity, extend, release, and a
//! "lost" signal (index.js turns it into an AbortSignal).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clusterkit::lock::{DistributedLock, LockGuard};
use napi::{Env, Unknown};
use napi_derive::napi;
use tokio::sync::oneshot;

use crate::errors::{ms, to_napi};
use crate::promise::spawn;

/// The lock service (native handle; see index.js `Locks`).
#[napi]
pub struct Locks {
    pub(crate) inner: DistributedLock,
    /// Embedded backend: operations complete during the call.
    pub(crate) inline: bool,
}

#[napi]
impl Locks {
    /// Acquires `name` for `ttlMs`. `waitMs` 0 (or absent) makes one attempt and rejects with
    /// `conflict` when someone else holds it; otherwise waits up to `waitMs` (`timeout`).
    /// With `autoRenew` the lock is extended every third of its TTL until released. With
    /// `fencing` false it carries no fencing token (Redlock: one round trip less).
    #[napi(ts_return_type = "Promise<Lock>")]
    pub fn acquire<'e>(
        &self,
        env: &'e Env,
        name: String,
        ttl_ms: f64,
        wait_ms: Option<f64>,
        auto_renew: Option<bool>,
        fencing: Option<bool>,
    ) -> napi::Result<Unknown<'e>> {
        let ttl = ms("ttl", ttl_ms)?;
        let wait = wait_ms
            .map(|w| ms("wait", w))
            .transpose()?
            .unwrap_or_default();
        let locks = if auto_renew.unwrap_or(false) {
            self.inner.with_auto_renew(true)
        } else {
            self.inner.clone()
        };
        let locks = match fencing {
            Some(false) => locks.with_fencing(false),
            _ => locks,
        };
        let fut = async move {
            if wait.is_zero() {
                locks.try_acquire(&name, ttl).await?.ok_or_else(|| {
                    clusterkit::Error::Conflict(format!("lock {name:?} is held by someone else"))
                })
            } else {
                locks.acquire_timeout(&name, ttl, wait).await
            }
        };
        let inline = self.inline;
        spawn(env, inline, fut, move |_, g| Ok(Lock::new(g, inline)))
    }
}

type Watcher = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

struct State {
    guard: Option<Arc<LockGuard>>,
    watchers: Vec<Watcher>,
}

/// A held lock (native handle; see index.js `Lock`).
#[napi]
pub struct Lock {
    state: Arc<Mutex<State>>,
    inline: bool,
    name: String,
    /// `None` when acquired with `fencing: false`.
    fence: Option<u64>,
}

impl Lock {
    fn new(g: LockGuard, inline: bool) -> Lock {
        Lock {
            inline,
            name: g.name().to_string(),
            fence: g.fence(),
            state: Arc::new(Mutex::new(State {
                guard: Some(Arc::new(g)),
                watchers: Vec::new(),
            })),
        }
    }

    fn guard(&self) -> Option<Arc<LockGuard>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .guard
            .clone()
    }
}

fn released() -> clusterkit::Error {
    clusterkit::Error::Closed("the lock was already released".into())
}

#[napi]
impl Lock {
    /// The lock's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The fencing token: strictly increasing across successive holders of this name.
    /// Throws `not_found` when the lock was acquired with `fencing: false`.
    #[napi(getter)]
    pub fn fencing_token(&self) -> napi::Result<f64> {
        self.fence
            .map(|f| f as f64)
            .ok_or_else(|| to_napi(clusterkit::lock::no_fencing_token(&self.name)))
    }

    /// Whether this lock carries a fencing token (false when acquired with `fencing: false`).
    #[napi(getter)]
    pub fn has_fencing_token(&self) -> bool {
        self.fence.is_some()
    }

    /// Remaining validity in milliseconds (0 once expired, lost or released).
    #[napi(getter)]
    pub fn valid_for(&self) -> f64 {
        self.guard()
            .map_or(0.0, |g| g.validity().as_secs_f64() * 1000.0)
    }

    /// True while the lock is valid and not released.
    #[napi(getter)]
    pub fn is_held(&self) -> bool {
        self.guard().is_some_and(|g| g.is_held())
    }

    /// Extends the lock to `ttlMs` from now (`conflict` if it is no longer held).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn extend<'e>(&self, env: &'e Env, ttl_ms: f64) -> napi::Result<Unknown<'e>> {
        let ttl = ms("ttl", ttl_ms)?;
        let g = self.guard().ok_or_else(|| to_napi(released()))?;
        spawn(
            env,
            self.inline,
            async move { g.extend(ttl).await },
            |_, ()| Ok(()),
        )
    }

    /// Releases the lock (`conflict` if it expired meanwhile, `closed` if already released).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let (g, watchers) = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            (s.guard.take(), std::mem::take(&mut s.watchers))
        };
        let mut g = g.ok_or_else(|| to_napi(released()))?;
        let fut = async move {
            for (stop, task) in watchers {
                let _ = stop.send(());
                let _ = task.await;
            }
            // An extend still in flight holds a reference for one round trip.
            let mut tries = 0u32;
            let owned = loop {
                match Arc::try_unwrap(g) {
                    Ok(owned) => break owned,
                    Err(shared) if tries < 10_000 => {
                        g = shared;
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => {
                        return Err(clusterkit::Error::Conflict(
                            "the lock is busy (an extend did not finish)".into(),
                        ))
                    }
                }
            };
            owned.release().await
        };
        spawn(env, self.inline, fut, |_, ()| Ok(()))
    }

    /// Resolves with true when the lock is lost (a renewal failed or its validity ran out),
    /// or false when it is released first.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn lost<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let Some(g) = self.guard() else {
            return spawn(env, self.inline, async { Ok(false) }, |_, b| Ok(b));
        };
        let rt = clusterkit::blocking::runtime().map_err(to_napi)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<bool>();
        let task = rt.spawn(async move {
            let lost = tokio::select! {
                _ = g.lost() => true,
                _ = stop_rx => false,
            };
            drop(g);
            let _ = done_tx.send(lost);
        });
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watchers
            .push((stop_tx, task));
        spawn(
            env,
            self.inline,
            async move { Ok(done_rx.await.unwrap_or(false)) },
            |_, b| Ok(b),
        )
    }
}
