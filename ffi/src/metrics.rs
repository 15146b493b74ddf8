//! Metrics snapshots (JSON) of a deployment and of a cluster.

use crate::buf::{ck_buf, put_buf};
use crate::cluster::ck_cluster;
use crate::deployment::ck_deployment;
use crate::status::{arg_out, arg_ref, ck_status, ffi_call};
use clusterkit::cache::Bytes;

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
