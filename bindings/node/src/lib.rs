//! clusterkit for Node.js: a napi-rs addon over the core crate. Types and errors are translated
//! here; every operation that can touch the network returns a Promise settled from the core's
//! shared runtime (`clusterkit::blocking::runtime()`), pure computations are synchronous.
//!
//! The public JavaScript API (index.js) wraps these native classes: it adds the option objects,
//! EventEmitter / async iterator, AbortSignal, `Symbol.asyncDispose` and the `code` of errors.
#![deny(clippy::all)]
#![allow(missing_debug_implementations)]
// Under `cargo test` the napi macros register nothing, so exported items look unused.
#![cfg_attr(test, allow(dead_code))]

mod cache;
mod cluster;
mod deployment;
mod errors;
mod events;
mod lock;
mod metrics;
mod pick;
mod promise;
mod queue;
mod session;
