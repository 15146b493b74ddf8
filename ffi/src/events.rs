//! Cluster events, polled: node added, removed, health changed.

use crate::buf::{ck_buf, put_buf};
use crate::cluster::{ck_cluster, ck_health};
use crate::status::{
    arg_ms, arg_out, arg_ref, c_string, ck_status, ffi_call, ffi_value, free_handle, CK_MAX_WAIT_MS,
};
use clusterkit::cache::Bytes;
use clusterkit::ClusterEvent;
use clusterkit::Error;
use std::ffi::c_char;
use std::ffi::CString;

/// A subscription to a cluster's events, read with ck_events_next. Opaque. Each subscription
/// has its own queue (1024 events; a reader that falls further behind gets one
/// CK_EVENT_LAGGED event and should re-read ck_cluster_nodes). Thread-safe (calls are
/// serialized).
#[derive(Debug)]
pub struct ck_events {
    /// Fork-safe (a child reads from its own subscription): see core's EventSubscription.
    pub(crate) rx: clusterkit::cluster::EventSubscription,
}

/// The kind of a cluster event.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_event_kind {
    /// A node joined.
    CK_EVENT_ADDED = 0,
    /// A node left.
    CK_EVENT_REMOVED = 1,
    /// A node's weight, zone or metadata changed.
    CK_EVENT_UPDATED = 2,
    /// A node's health changed (see ck_event_old_health / ck_event_new_health).
    CK_EVENT_HEALTH_CHANGED = 3,
    /// The pool entered or left panic mode.
    CK_EVENT_PANIC_CHANGED = 4,
    /// The balancing strategy changed.
    CK_EVENT_STRATEGY_CHANGED = 5,
    /// A discovery source skipped something it could not use.
    CK_EVENT_DISCOVERY_PROBLEM = 6,
    /// This subscription missed events (the message says how many); re-read the nodes.
    CK_EVENT_LAGGED = 7,
}

/// One event. Opaque; read it with the ck_event_* accessors, release it with ck_event_free.
/// Immutable: may be read from any thread.
#[derive(Debug)]
pub struct ck_event {
    pub(crate) kind: ck_event_kind,
    pub(crate) node_id: CString,
    pub(crate) old: ck_health,
    pub(crate) new: ck_health,
    pub(crate) message: CString,
    pub(crate) json: String,
}

impl ck_event {
    fn from_event(e: &ClusterEvent) -> ck_event {
        let kind = match e {
            ClusterEvent::Added { .. } => ck_event_kind::CK_EVENT_ADDED,
            ClusterEvent::Removed { .. } => ck_event_kind::CK_EVENT_REMOVED,
            ClusterEvent::Updated { .. } => ck_event_kind::CK_EVENT_UPDATED,
            ClusterEvent::HealthChanged { .. } => ck_event_kind::CK_EVENT_HEALTH_CHANGED,
            ClusterEvent::PanicChanged { .. } => ck_event_kind::CK_EVENT_PANIC_CHANGED,
            ClusterEvent::StrategyChanged { .. } => ck_event_kind::CK_EVENT_STRATEGY_CHANGED,
            _ => ck_event_kind::CK_EVENT_DISCOVERY_PROBLEM,
        };
        let (old, new) = match e {
            ClusterEvent::HealthChanged { old, new, .. } => ((*old).into(), (*new).into()),
            _ => (ck_health::CK_HEALTHY, ck_health::CK_HEALTHY),
        };
        ck_event {
            kind,
            node_id: c_string(e.node_id().unwrap_or("")),
            old,
            new,
            message: c_string(&e.message()),
            json: e.to_json().to_string(),
        }
    }

    fn lagged(missed: u64) -> ck_event {
        let message = format!("missed {missed} events: re-read the nodes");
        ck_event {
            kind: ck_event_kind::CK_EVENT_LAGGED,
            node_id: CString::default(),
            old: ck_health::CK_HEALTHY,
            new: ck_health::CK_HEALTHY,
            json: serde_json::json!({"kind": "lagged", "message": message, "missed": missed})
                .to_string(),
            message: c_string(&message),
        }
    }
}

/// Subscribes to the cluster's events from now on (node added, removed, updated, health
/// changed, panic mode, strategy, discovery problems). On success writes a new subscription
/// to `*out`; release it with ck_events_free. Fails with CK_INVALID_ARGUMENT (NULL
/// arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_cluster_subscribe(
    c: *const ck_cluster,
    out: *mut *mut ck_events,
) -> ck_status {
    ffi_call("ck_cluster_subscribe", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let c = unsafe { arg_ref(c, "cluster")? };
        let rx = c.inner.subscribe_blocking();
        *out = Box::into_raw(Box::new(ck_events { rx }));
        Ok(())
    })
}

/// Takes the next event of subscription `e`, waiting up to `timeout_ms` milliseconds for
/// one (0: do not wait; at most CK_MAX_WAIT_MS, 24 h). On success writes a new event to `*out` (release it with
/// ck_event_free). Returns CK_TIMEOUT when no event came in time, CK_CLOSED when the cluster
/// is gone and every event was read, CK_INVALID_ARGUMENT for NULL arguments or a
/// `timeout_ms` over the maximum. Blocks the
/// calling thread up to the timeout. Thread-safe (concurrent callers take turns).
#[no_mangle]
pub unsafe extern "C" fn ck_events_next(
    e: *const ck_events,
    timeout_ms: u64,
    out: *mut *mut ck_event,
) -> ck_status {
    ffi_call("ck_events_next", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let e = unsafe { arg_ref(e, "events")? };
        let wait = arg_ms(timeout_ms, CK_MAX_WAIT_MS, "timeout_ms")?;
        let ev = match e.rx.next_blocking(wait)? {
            clusterkit::cluster::Received::Lagged(n) => ck_event::lagged(n),
            clusterkit::cluster::Received::Event(ev) => ck_event::from_event(&ev),
            _ => return Err(Error::Internal("an unknown kind of event".into())),
        };
        *out = Box::into_raw(Box::new(ev));
        Ok(())
    })
}

/// Releases a subscription. NULL is a no-op. No other call may use `e` during or after this
/// one; never free it twice.
#[no_mangle]
pub unsafe extern "C" fn ck_events_free(e: *mut ck_events) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_events_free", e) }
}

/// The event's kind (CK_EVENT_LAGGED if `ev` is NULL). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_get_kind(ev: *const ck_event) -> ck_event_kind {
    ffi_value("ck_event_get_kind", ck_event_kind::CK_EVENT_LAGGED, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_event_kind::CK_EVENT_LAGGED, |e| e.kind)
    })
}

/// The id of the node the event is about ("" if none, NULL if `ev` is NULL). Owned by the
/// event. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_node_id(ev: *const ck_event) -> *const c_char {
    ffi_value("ck_event_node_id", std::ptr::null(), || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(std::ptr::null(), |e| e.node_id.as_ptr())
    })
}

/// The health before a CK_EVENT_HEALTH_CHANGED event (CK_HEALTHY for other kinds or NULL).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_old_health(ev: *const ck_event) -> ck_health {
    ffi_value("ck_event_old_health", ck_health::CK_HEALTHY, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_health::CK_HEALTHY, |e| e.old)
    })
}

/// The health after a CK_EVENT_HEALTH_CHANGED event (CK_HEALTHY for other kinds or NULL).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_new_health(ev: *const ck_event) -> ck_health {
    ffi_value("ck_event_new_health", ck_health::CK_HEALTHY, || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(ck_health::CK_HEALTHY, |e| e.new)
    })
}

/// A one-line description (a health change's reason, panic counts, ...); NULL if `ev` is
/// NULL. Owned by the event. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_message(ev: *const ck_event) -> *const c_char {
    ffi_value("ck_event_message", std::ptr::null(), || {
        // SAFETY: a non-NULL event is live (caller's promise).
        unsafe { ev.as_ref() }.map_or(std::ptr::null(), |e| e.message.as_ptr())
    })
}

/// Writes to `*out` a new buffer with the whole event as a JSON object (`kind` as a
/// snake_case name, `message`, and the kind's fields: `node`, `old_health`, `new_health`,
/// `active`/`healthy`/`total`, `strategy`, `source`, `missed`). Fails with
/// CK_INVALID_ARGUMENT (NULL arguments). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_event_json(ev: *const ck_event, out: *mut *mut ck_buf) -> ck_status {
    ffi_call("ck_event_json", || {
        let out = arg_out(out, "out")?;
        // SAFETY: checked by arg_ref; validity is the caller's promise.
        let ev = unsafe { arg_ref(ev, "event")? };
        put_buf(out, Bytes::from(ev.json.clone()));
        Ok(())
    })
}

/// Releases an event. NULL is a no-op. Never free an event twice.
#[no_mangle]
pub unsafe extern "C" fn ck_event_free(ev: *mut ck_event) {
    // SAFETY: the handle is the caller's to give up (see above).
    unsafe { free_handle("ck_event_free", ev) }
}
