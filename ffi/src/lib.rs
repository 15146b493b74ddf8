//! C ABI of clusterkit (see `include/clusterkit.h`, generated from this crate by cbindgen).
//!
//! Conventions (DESIGN.md §3, modelled on rustls-ffi): the prefix `ck_`; opaque handles made
//! by `*_new` and released by `*_free` (NULL is a no-op); every function returns a
//! [`ck_status`] and writes its outputs through out-parameters only on success; buffers are
//! `(const uint8_t *ptr, size_t len)`; strings are NUL-terminated UTF-8; memory the library
//! hands out is freed only by its own `ck_*_free`; [`ck_last_error`] explains the last failure
//! on the calling thread. Every exported body runs through `ffi_call` (or `ffi_value`),
//! which catches panics, so no unwinding ever crosses into C.
#![allow(non_camel_case_types)]
// The exported functions check every pointer themselves; they are `unsafe` to call from Rust
// only in the sense every C function is.
#![allow(clippy::missing_safety_doc)]

// cbindgen writes the header's functions in the order of these declarations (and rustfmt
// sorts only within a group of consecutive lines): version and errors first, then one module
// per concept, as in core.
mod version;

mod status;

mod deployment;
mod pick;

mod buf;
mod cache;
mod metrics;

mod cluster;
mod events;

mod lock;

mod session;

mod log;

mod queue;

pub use buf::*;
pub use cache::*;
pub use cluster::*;
pub use deployment::*;
pub use events::*;
pub use lock::*;
pub use log::*;
pub use metrics::*;
pub use pick::*;
pub use queue::*;
pub use session::*;
pub use status::*;
pub use version::*;

// Handles cross threads in C: make sure the Rust types allow it.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<ck_deployment>();
    send_sync::<ck_buf>();
    send_sync::<ck_cluster>();
    send_sync::<ck_events>();
    send_sync::<ck_event>();
    send_sync::<ck_lock>();
    send::<ck_pick>();
    send::<ck_session>();
    send::<ck_reader>();
    send_sync::<ck_queue_consumer>();
    send_sync::<ck_job>();
};
