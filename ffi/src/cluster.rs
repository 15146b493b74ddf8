//! Clusters built node by node (or a deployment's pool): membership, health and weights.

use crate::buf::{ck_buf, put_buf};
use crate::deployment::{ck_deployment, pin_library};
use crate::status::{
    arg_out, arg_ref, arg_str, ck_status, ffi_call, ffi_value, free_handle, opt_str,
};
use clusterkit::cache::Bytes;
use clusterkit::Cluster;
use clusterkit::Error;
use clusterkit::Health;
use clusterkit::Node;
use clusterkit::Strategy;
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::str::FromStr;

/// One pool of nodes (the seed's ClusterManager): membership, health and a balancer. Opaque.
/// Thread-safe: many threads may pick while others change membership.
#[derive(Debug)]
pub struct ck_cluster {
    pub(crate) inner: Cluster,
}

/// A node's health.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_health {
    /// Receives traffic.
    CK_HEALTHY = 0,
    /// Receives no traffic (failed checks, ejected, or marked by the operator).
    CK_UNHEALTHY = 1,
    /// Receives no new traffic; requests in flight finish.
    CK_DRAINING = 2,
}

impl From<Health> for ck_health {
    fn from(h: Health) -> Self {
        match h {
            Health::Unhealthy => ck_health::CK_UNHEALTHY,
            Health::Draining => ck_health::CK_DRAINING,
            // Healthy, and any state added later.
            _ => ck_health::CK_HEALTHY,
        }
    }
}

/// Builds an empty pool named `name` balancing with `strategy` ("round_robin",
/// "weighted_round_robin", "random", "least_connections", "p2c", "ketama", "maglev",
/// "rendezvous"; NULL or "" is round robin). On success writes a new handle to `*out`
/// (release it with ck_cluster_free). Fails with CK_INVALID_ARGUMENT (NULL `name`/`out`,
/// an empty or non-UTF-8 name, an unknown strategy). No I/O. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_new(
    name: *const c_char,
    strategy: *const c_char,
    out: *mut *mut ck_cluster,
) -> ck_status {
    ffi_call("ck_cluster_new", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_str; the caller promises NUL-terminated strings.
        let name = unsafe { arg_str(name, "name")? };
        let strategy = if strategy.is_null() {
            Strategy::default()
        } else {
            // SAFETY: as above.
            match unsafe { arg_str(strategy, "strategy")? } {
                "" => Strategy::default(),
                s => Strategy::from_str(s).map_err(|e| e.in_field("strategy"))?,
            }
        };
        pin_library();
        let inner = Cluster::new(name, clusterkit::BalancerOptions::new(strategy))?;
        *out = Box::into_raw(Box::new(ck_cluster { inner }));
        Ok(())
    })
}

/// A handle on pool `pool` of a deployment (sharing its membership, health and counters;
/// the pool lives as long as either handle). Release it with ck_cluster_free. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, non-UTF-8 name) or CK_NOT_FOUND (no such pool).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_deployment_cluster(
    dep: *const ck_deployment,
    pool: *const c_char,
    out: *mut *mut ck_cluster,
) -> ck_status {
    ffi_call("ck_deployment_cluster", || {
        let out = arg_out(out, "out")?;
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (dep, pool) = unsafe { (arg_ref(dep, "dep")?, arg_str(pool, "pool")?) };
        let inner = dep.inner.pool(pool)?.clone();
        *out = Box::into_raw(Box::new(ck_cluster { inner }));
        Ok(())
    })
}

/// Releases a cluster handle. NULL is a no-op. Picks made from it stay valid. No other call
/// may use `c` during or after this one; never free a handle twice.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_free(c: *mut ck_cluster) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_cluster_free", c) }
}

/// Adds a node: `id` (unique in the pool), `host`, `port` (1..65535), `weight` (1..256; 0
/// means the default 1), `zone` (NULL or "" for none) and `metadata_json` (NULL, "" or a
/// JSON object whose values are strings). Fails with CK_INVALID_ARGUMENT (NULL or bad
/// values; the message names the field), CK_CONFLICT (the id is taken). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_add_node(
    c: *const ck_cluster,
    id: *const c_char,
    host: *const c_char,
    port: u16,
    weight: u32,
    zone: *const c_char,
    metadata_json: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_add_node", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id, host) = unsafe {
            (
                arg_ref(c, "cluster")?,
                arg_str(id, "id")?,
                arg_str(host, "host")?,
            )
        };
        let mut node = Node::new(id, host, port)?;
        if weight != 0 {
            node = node.with_weight(weight)?;
        }
        if let Some(z) = opt_str(zone, "zone")? {
            node = node.with_zone(z)?;
        }
        if let Some(m) = opt_str(metadata_json, "metadata_json")? {
            let map: BTreeMap<String, String> = serde_json::from_str(m).map_err(|e| {
                Error::invalid(
                    "metadata_json",
                    format!("must be a JSON object of strings: {e}"),
                )
            })?;
            node = node.with_metadata_map(map)?;
        }
        c.inner.add(node)
    })
}

/// Removes node `id`. Picks already holding it finish normally. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments) or CK_NOT_FOUND. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_remove_node(
    c: *const ck_cluster,
    id: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_remove_node", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        c.inner.remove(id).map(|_| ())
    })
}

/// Sets the operator's word on node `id`: CK_UNHEALTHY or CK_DRAINING take it out of
/// balancing whatever its checks say, CK_HEALTHY lifts the override (checks and outlier
/// detection decide again). `reason` (NULL for none) shows in events and metrics. Fails with
/// CK_INVALID_ARGUMENT (NULL arguments, a value outside ck_health) or CK_NOT_FOUND.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_set_health(
    c: *const ck_cluster,
    id: *const c_char,
    health: u32,
    reason: *const c_char,
) -> ck_status {
    ffi_call("ck_cluster_set_health", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        let reason = opt_str(reason, "reason")?.unwrap_or("marked by operator");
        let health = match health {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            2 => Health::Draining,
            other => {
                return Err(Error::invalid(
                    "health",
                    format!("{other} is not a ck_health value (0, 1 or 2)"),
                ))
            }
        };
        c.inner.set_health(id, health, reason)
    })
}

/// Changes node `id`'s weight (1..256). Fails with CK_INVALID_ARGUMENT or CK_NOT_FOUND.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_set_weight(
    c: *const ck_cluster,
    id: *const c_char,
    weight: u32,
) -> ck_status {
    ffi_call("ck_cluster_set_weight", || {
        // SAFETY: pointers checked by the helpers; validity is the caller's promise.
        let (c, id) = unsafe { (arg_ref(c, "cluster")?, arg_str(id, "id")?) };
        c.inner.set_weight(id, weight)
    })
}

/// Number of nodes in the cluster (0 if `c` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_len(c: *const ck_cluster) -> usize {
    ffi_value("ck_cluster_len", 0, || {
        // SAFETY: a non-NULL handle is live (caller's promise).
        unsafe { c.as_ref() }.map_or(0, |c| c.inner.len())
    })
}

/// Number of healthy nodes (0 if `c` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_healthy_count(c: *const ck_cluster) -> usize {
    ffi_value("ck_cluster_healthy_count", 0, || {
        // SAFETY: a non-NULL handle is live (caller's promise).
        unsafe { c.as_ref() }.map_or(0, |c| c.inner.healthy_count())
    })
}

/// Writes to `*out` a new buffer with the nodes as a JSON array; each node is an object with
/// `id`, `host`, `port`, `weight`, `zone` (or null), `metadata`, `health` ("healthy",
/// "unhealthy", "draining"), `reason`, `since_ms`, `in_flight`, `successes`, `failures`,
/// `consecutive_failures`, `last_latency_us`. Fails with CK_INVALID_ARGUMENT (NULL
/// arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_nodes(
    c: *const ck_cluster,
    out: *mut *mut ck_buf,
) -> ck_status {
    ffi_call("ck_cluster_nodes", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        let nodes: Vec<serde_json::Value> = c.inner.nodes().iter().map(|n| n.to_json()).collect();
        put_buf(out, Bytes::from(serde_json::Value::from(nodes).to_string()));
        Ok(())
    })
}
