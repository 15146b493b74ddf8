//! The library's log records for C: set a level, then poll (drain) records as JSON.

use crate::buf::{ck_buf, put_buf};
use crate::status::{arg_out, ck_status, ffi_call, ffi_value};
use clusterkit::cache::Bytes;
use clusterkit::log::Level;

/// Severity of log records, most severe first; CK_LOG_OFF keeps none.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_log_level {
    /// No records (the default: logging then costs nothing).
    CK_LOG_OFF = 0,
    /// Failures not recovered.
    CK_LOG_ERROR = 1,
    /// Failures handled (a node ejected, a lock lost, a reconnect).
    CK_LOG_WARN = 2,
    /// State changes (health, scaling advice).
    CK_LOG_INFO = 3,
    /// Per-operation detail (connections, lock waits).
    CK_LOG_DEBUG = 4,
    /// Everything, every cache operation (with the key's hash only).
    CK_LOG_TRACE = 5,
}

/// Most records ck_log_poll returns in one buffer when asked for more.
pub const CK_LOG_POLL_MAX: usize = 10000;

/// Keeps the library's log records at `level` (a ck_log_level value) and more severe, for
/// ck_log_poll (process-wide; at most CK_LOG_POLL_MAX are buffered, the oldest dropped
/// beyond). Records carry pool, node, a key's hash: never values, session ids or data, lock
/// tokens or passwords. CK_LOG_OFF also empties the buffer. Fails with CK_INVALID_ARGUMENT
/// (level outside the enum). Thread-safe.
#[no_mangle]
pub extern "C" fn ck_log_set_level(level: u32) -> ck_status {
    ffi_call("ck_log_set_level", || {
        let l = match level {
            0 => None,
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            5 => Some(Level::Trace),
            _ => {
                return Err(clusterkit::Error::invalid(
                    "level",
                    format!("must be a ck_log_level (0..=5), got {level}"),
                ))
            }
        };
        clusterkit::log::set_level(l)
    })
}

/// Takes up to `max` (at most CK_LOG_POLL_MAX) of the oldest buffered records and writes to
/// `*out` a new buffer with them as a JSON array of objects: `level` ("error".."trace"),
/// `target`, `message`, `fields` (an object of strings), `time_ms`. An empty array when
/// there are none. Fails with CK_INVALID_ARGUMENT (NULL `out`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn ck_log_poll(max: usize, out: *mut *mut ck_buf) -> ck_status {
    ffi_call("ck_log_poll", || {
        let out = arg_out(out, "out")?;
        let records: Vec<serde_json::Value> = clusterkit::log::drain(max.min(CK_LOG_POLL_MAX))
            .iter()
            .map(|r| r.to_json())
            .collect();
        put_buf(
            out,
            Bytes::from(serde_json::Value::Array(records).to_string()),
        );
        Ok(())
    })
}

/// Records dropped since the process started because nobody polled in time. Thread-safe.
#[no_mangle]
pub extern "C" fn ck_log_dropped() -> u64 {
    ffi_value("ck_log_dropped", 0, clusterkit::log::dropped)
}
