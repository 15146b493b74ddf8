//! A picked node: holds its in-flight count until the outcome is reported.

use std::time::Duration;

use napi_derive::napi;

use crate::errors::{ms, to_napi};

/// A picked node (native handle). Report the outcome with `success(latencyMs)` or
/// `failure()`; either finishes the pick (a second report is a `closed` error).
#[napi]
pub struct Pick {
    pick: Option<clusterkit::Pick>,
    id: String,
    host: String,
    port: u32,
}

impl Pick {
    pub(crate) fn new(p: clusterkit::Pick) -> Pick {
        Pick {
            id: p.node().id().to_string(),
            host: p.node().host().to_string(),
            port: p.node().port() as u32,
            pick: Some(p),
        }
    }

    fn take(&mut self) -> napi::Result<clusterkit::Pick> {
        self.pick.take().ok_or_else(|| {
            to_napi(clusterkit::Error::Closed(
                "this pick was already finished".into(),
            ))
        })
    }
}

#[napi]
impl Pick {
    /// The node's id.
    #[napi(getter)]
    pub fn node_id(&self) -> String {
        self.id.clone()
    }
    /// The node's host.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.host.clone()
    }
    /// The node's port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.port
    }
    /// `host:port`.
    #[napi(getter)]
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// Whether the outcome was not reported yet.
    #[napi(getter)]
    pub fn pending(&self) -> bool {
        self.pick.is_some()
    }
    /// Reports success after `latencyMs` milliseconds and finishes the pick.
    #[napi]
    pub fn success(&mut self, latency_ms: f64) -> napi::Result<()> {
        let latency: Duration = ms("latencyMs", latency_ms)?;
        self.take()?.success(latency);
        Ok(())
    }
    /// Reports failure and finishes the pick.
    #[napi]
    pub fn failure(&mut self) -> napi::Result<()> {
        self.take()?.failure();
        Ok(())
    }
    /// Finishes the pick without reporting an outcome.
    #[napi]
    pub fn release(&mut self) {
        self.pick = None;
    }
}
