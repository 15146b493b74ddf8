//! Metrics snapshots (JSON) of a deployment and of a cluster.

use crate::buf::{ck_buf, put_buf};
use crate::cluster::ck_cluster;
use crate::deployment::ck_deployment;
use crate::status::{arg_out, arg_ref, arg_str, ck_status, ffi_call, opt_str};
use clusterkit::cache::Bytes;
use std::ffi::c_char;
use std::path::Path;

/// Writes to `*out` a new buffer with the deployment's metrics as a JSON object: `cache`
/// (`namespace`, `hits`, `misses`, `errors`, `writes`) and `pools` (per pool: `name`,
/// `strategy`, `version`, `total`, `healthy`, `in_panic`, `health` counters and `nodes`, as
/// ck_cluster_metrics). Fails with CK_INVALID_ARGUMENT (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_metrics(
    dep: *const ck_deployment,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_deployment_metrics", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        put_buf(out, Bytes::from(dep.inner.metrics().to_string()));
        Ok(())
    })
}

/// Writes to `*out` a new buffer with the cluster's metrics as a JSON object: `name`,
/// `strategy`, `version`, `total`, `healthy`, `in_panic`, `health` (`checks`,
/// `check_failures`, `marked_unhealthy`, `marked_healthy`, `ejections`,
/// `ejections_refused`) and `nodes` (as ck_cluster_nodes). Fails with CK_INVALID_ARGUMENT
/// (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_metrics(
    c: *const ck_cluster,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cluster_metrics", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        put_buf(out, Bytes::from(c.inner.metrics().to_string()));
        Ok(())
    })
}

/// What ck_deployment_metrics_render and ck_deployment_metrics_aggregate write.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_metrics_format {
    /// The full snapshot as JSON (pools, nodes with latency buckets, cache, locks,
    /// sessions, redis, scaling).
    CK_METRICS_JSON = 0,
    /// Prometheus text format 0.0.4 (content type "text/plain; version=0.0.4").
    CK_METRICS_PROMETHEUS = 1,
    /// OpenMetrics text (content type "application/openmetrics-text; version=1.0.0").
    CK_METRICS_OPENMETRICS = 2,
    /// The status page, one HTML document.
    CK_METRICS_STATUS_HTML = 3,
    /// The status page's JSON twin.
    CK_METRICS_STATUS_JSON = 4,
}

impl From<ck_metrics_format> for clusterkit::MetricsFormat {
    fn from(f: ck_metrics_format) -> Self {
        match f {
            ck_metrics_format::CK_METRICS_JSON => clusterkit::MetricsFormat::Json,
            ck_metrics_format::CK_METRICS_PROMETHEUS => clusterkit::MetricsFormat::Prometheus,
            ck_metrics_format::CK_METRICS_OPENMETRICS => clusterkit::MetricsFormat::OpenMetrics,
            ck_metrics_format::CK_METRICS_STATUS_HTML => clusterkit::MetricsFormat::StatusHtml,
            ck_metrics_format::CK_METRICS_STATUS_JSON => clusterkit::MetricsFormat::StatusJson,
        }
    }
}

/// A format argument from C: any value outside the enum is CK_INVALID_ARGUMENT naming
/// `format` (C callers can pass any int).
fn arg_format(raw: u32) -> Result<clusterkit::MetricsFormat, clusterkit::Error> {
    Ok(match raw {
        0 => ck_metrics_format::CK_METRICS_JSON,
        1 => ck_metrics_format::CK_METRICS_PROMETHEUS,
        2 => ck_metrics_format::CK_METRICS_OPENMETRICS,
        3 => ck_metrics_format::CK_METRICS_STATUS_HTML,
        4 => ck_metrics_format::CK_METRICS_STATUS_JSON,
        _ => {
            return Err(clusterkit::Error::invalid(
                "format",
                format!("must be a ck_metrics_format (0..=4), got {raw}"),
            ))
        }
    }
    .into())
}

/// Writes to `*out` a new buffer with this process's metrics of the deployment rendered as
/// `format` (a ck_metrics_format value): the body of a Prometheus scrape, the status page or
/// its JSON. Fails with CK_INVALID_ARGUMENT (NULL arguments, unknown format) or
/// CK_UNAVAILABLE (`[metrics] enabled = false`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_metrics_render(
    dep: *const ck_deployment,
    format: u32,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_deployment_metrics_render", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let text = dep.inner.metrics_text(arg_format(format)?)?;
        put_buf(out, Bytes::from(text));
        Ok(())
    })
}

/// Writes this process's metrics snapshot to the directory `dir` (created if missing) for
/// ck_deployment_metrics_aggregate in another process: PHP-FPM workers publish, one scrape
/// endpoint adds them up. Fails with CK_INVALID_ARGUMENT (NULL or empty `dir`) or
/// CK_UNAVAILABLE (metrics disabled, I/O error). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_metrics_publish(
    dep: *const ck_deployment,
    dir: *const c_char,
) -> ck_status {
    ffi_call("ck_deployment_metrics_publish", || {
        // SAFETY: checked by arg_ref / arg_str; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let dir = unsafe { arg_str(dir, "dir")? };
        dep.inner.publish_metrics(Path::new(dir))
    })
}

/// Writes to `*out` a new buffer with this process's metrics plus every snapshot published
/// in `dir` within `max_age_ms` (files of exited workers, older than that, are removed),
/// rendered as `format`. Fails with CK_INVALID_ARGUMENT (NULL arguments, empty `dir`,
/// `max_age_ms` outside 1..=86400000, unknown format) or CK_UNAVAILABLE. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_metrics_aggregate(
    dep: *const ck_deployment,
    dir: *const c_char,
    max_age_ms: u64,
    format: u32,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_deployment_metrics_aggregate", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref / arg_str; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let dir = unsafe { arg_str(dir, "dir")? };
        let max_age = std::time::Duration::from_millis(max_age_ms);
        let text =
            dep.inner
                .aggregate_metrics_text(Path::new(dir), max_age, arg_format(format)?)?;
        put_buf(out, Bytes::from(text));
        Ok(())
    })
}

/// Writes to `*out` a new buffer with the status page (HTML) titled `title` (NULL or "":
/// "clusterkit status"). Fails like ck_deployment_metrics_render. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_status_html(
    dep: *const ck_deployment,
    title: *const c_char,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_deployment_status_html", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let dep = unsafe { arg_ref(dep, "dep")? };
        let title = opt_str(title, "title")?;
        put_buf(out, Bytes::from(dep.inner.status_html(title)?));
        Ok(())
    })
}
