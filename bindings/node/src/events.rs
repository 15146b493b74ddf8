//! A pool's events (node added, removed, updated, health changed, panic mode, strategy,
//! discovery problems) read one at a time as JSON text; index.js turns them into an async
//! iterator and an EventEmitter.

use std::sync::Arc;
use std::time::Duration;

use clusterkit::ClusterEvent;
use napi::{Env, Unknown};
use napi_derive::napi;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::sync::Mutex;

use crate::errors::ms;

/// A subscription (native handle). `next(waitMs)` resolves with the next event as JSON text,
/// or null when none came within `waitMs` or the subscription is closed.
#[napi]
pub struct EventStream {
    rx: Arc<Mutex<Option<Receiver<ClusterEvent>>>>,
}

impl EventStream {
    pub(crate) fn new(rx: Receiver<ClusterEvent>) -> EventStream {
        EventStream {
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

async fn next(rx: Arc<Mutex<Option<Receiver<ClusterEvent>>>>, wait: Duration) -> Option<String> {
    let mut guard = rx.lock().await;
    let r = guard.as_mut()?;
    match tokio::time::timeout(wait, r.recv()).await {
        Err(_) => None,
        Ok(Ok(ev)) => Some(ev.to_json().to_string()),
        Ok(Err(RecvError::Lagged(n))) => Some(
            serde_json::json!({
                "kind": "lagged",
                "missed": n,
                "message": format!("missed {n} events: re-read the nodes"),
            })
            .to_string(),
        ),
        Ok(Err(RecvError::Closed)) => {
            *guard = None;
            Some(serde_json::json!({"kind": "closed"}).to_string())
        }
    }
}

#[napi]
impl EventStream {
    /// The next event as JSON text, or null after `waitMs` without one.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn next<'env>(&self, env: &'env Env, wait_ms: f64) -> napi::Result<Unknown<'env>> {
        let wait = ms("waitMs", wait_ms)?;
        let rx = self.rx.clone();
        crate::promise::spawn(
            env,
            true,
            async move { Ok(next(rx, wait).await) },
            |_, v| Ok(v),
        )
    }

    /// Stops the subscription; pending and later `next` calls resolve with null.
    #[napi]
    pub fn close(&self) {
        if let Ok(mut g) = self.rx.try_lock() {
            *g = None;
        } else {
            let rx = self.rx.clone();
            if let Ok(rt) = clusterkit::blocking::runtime() {
                rt.spawn(async move {
                    *rx.lock().await = None;
                });
            }
        }
    }
}
