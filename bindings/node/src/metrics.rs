//! Metrics, the status page, the scaling advice and the library's log records: each call
//! converts arguments and renders with the core (`Clusterkit::metrics_text`, `log::drain`);
//! index.js parses the JSON text into objects.

use std::path::Path;

use clusterkit::{Cluster, Clusterkit, MetricsFormat};
use napi_derive::napi;

use crate::deployment::Deployment;
use crate::errors::{ms, OrNapi};

pub(crate) fn deployment(ck: &Clusterkit) -> String {
    ck.metrics().to_string()
}

pub(crate) fn cluster(c: &Cluster) -> String {
    c.metrics().to_string()
}

fn dir_arg(dir: &str) -> napi::Result<&Path> {
    if dir.is_empty() {
        return Err(crate::errors::invalid("dir", "must not be empty"));
    }
    Ok(Path::new(dir))
}

#[napi]
impl Deployment {
    /// This process's snapshot rendered as `format` (json, prometheus, openmetrics, html,
    /// status_json). Fails with `unavailable` when metrics are disabled.
    #[napi]
    pub fn metrics_text(&self, format: String) -> napi::Result<String> {
        let f = MetricsFormat::parse(&format).or_napi()?;
        self.inner.metrics_text(f).or_napi()
    }

    /// The HTTP content type of `format`.
    #[napi]
    pub fn metrics_content_type(&self, format: String) -> napi::Result<String> {
        Ok(MetricsFormat::parse(&format)
            .or_napi()?
            .content_type()
            .to_string())
    }

    /// The status page (HTML) titled `title` (null: "clusterkit status").
    #[napi]
    pub fn status_html(&self, title: Option<String>) -> napi::Result<String> {
        self.inner.status_html(title.as_deref()).or_napi()
    }

    /// The latest scaling recommendation of each configured advisor, as JSON text (an array;
    /// empty before the first snapshot).
    #[napi]
    pub fn scaling_advice_json(&self) -> napi::Result<String> {
        serde_json::to_string(&self.inner.scaling_advice()).map_err(|e| {
            crate::errors::to_napi(clusterkit::Error::Internal(format!("scaling advice: {e}")))
        })
    }

    /// Writes this process's snapshot to `dir` for `aggregateMetricsText` in another process.
    #[napi]
    pub fn publish_metrics(&self, dir: String) -> napi::Result<()> {
        self.inner.publish_metrics(dir_arg(&dir)?).or_napi()
    }

    /// This process's snapshot plus those published in `dir` within `maxAgeMs`, as `format`.
    #[napi]
    pub fn aggregate_metrics_text(
        &self,
        dir: String,
        max_age_ms: f64,
        format: String,
    ) -> napi::Result<String> {
        let f = MetricsFormat::parse(&format).or_napi()?;
        let max_age = ms("maxAge", max_age_ms)?;
        self.inner
            .aggregate_metrics_text(dir_arg(&dir)?, max_age, f)
            .or_napi()
    }
}

/// Keeps the library's log records at `level` (off, error, warn, info, debug, trace) and more
/// severe for `logDrain` (process-wide). `off` stops recording and empties the buffer.
#[napi]
pub fn log_set_level(level: String) -> napi::Result<()> {
    let l = clusterkit::log::Level::parse(&level).or_napi()?;
    clusterkit::log::set_level(l).or_napi()
}

/// Takes up to `max` of the oldest buffered records as JSON text (an array of objects with
/// `level`, `target`, `message`, `fields`, `time_ms`).
#[napi]
pub fn log_drain(max: u32) -> String {
    let records: Vec<serde_json::Value> = clusterkit::log::drain(max as usize)
        .iter()
        .map(|r| r.to_json())
        .collect();
    serde_json::Value::Array(records).to_string()
}

/// Records dropped since the process started because nobody drained them in time.
#[napi]
pub fn log_dropped() -> f64 {
    clusterkit::log::dropped() as f64
}
