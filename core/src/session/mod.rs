//! Distributed web sessions that any node can serve, safe under concurrent requests.
//!
//! A [`SessionStore`] stores sessions through a [`Cache`](crate::cache::Cache)'s backend (embedded, one Redis, a
//! sharded pool — each session on the node its id hashes to — or a Redis Cluster), under the
//! cache's namespace: `<namespace>:s:{<id>}`, its lock `<namespace>:sl:{<id>}` (see
//! `docs/keyspace.md`). The embedded backend sweeps expired sessions and bounds their bytes.
//!
//! - **Ids**: 190 bits from the OS CSPRNG, 32 base62 characters (`[A-Za-z0-9]`, valid for PHP, express-session and any cookie). An id that is not
//!   exactly that shape is a miss on load, never a key sent to Redis.
//! - **Timeouts**: idle (sliding: every save or touch sets the TTL again) and absolute (from
//!   creation, never extended): the TTL is `min(idle, created + absolute - now)`, and a load
//!   also checks the stored creation time.
//! - **Delta saves**: a session is a Redis hash; a save writes only the fields set and deletes
//!   only the fields removed since the load, in one script that also refreshes the TTL. Two
//!   requests that change different fields both keep their changes. An unchanged session costs
//!   a TTL refresh, or nothing within `refresh_interval` of the last one.
//! - **Locking** (optional, [`SessionStore::load_locked`]): lock + read in one round trip and
//!   write + unlock in one round trip, for read-modify-write of one field. A session lock
//!   has no fencing counter (the save checks the lock's token in the same script) and
//!   publishes nothing (the id is a credential): a waiter retries with backoff. Locking an
//!   unknown id writes nothing.
//! - Values are bytes; [`Session::get_json`] / [`Session::set_json`] add a JSON layer.
//!
//! Round trips per request: load 1 + save 1, with or without the lock.

pub mod config;
pub(crate) mod store;

pub(crate) use store::MemSessions;
pub use store::{Session, SessionOptions, SessionStore};
