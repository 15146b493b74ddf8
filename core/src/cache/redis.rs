//! Redis as a cache backend: one server over one multiplexed connection (redis-rs
//! `ConnectionManager`, which reconnects by itself), every operation one round trip, batches
//! as MGET or pipelines split into chunks.
//!
//! [`RedisConn`] is also the per-node connection of the distributed backend.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisFuture, Value};

use crate::cache::Ttl;
use crate::connection::link::{Link, LinkConnection};
use crate::connection::{prepare, redact, ConnectionSettings, Resolution, Target};
use crate::error::{Error, Result};

/// Connection settings of a Redis backend.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Time to establish a connection (default 500 ms).
    pub connect_timeout: Duration,
    /// Time to wait for an answer before the operation fails with `timeout` (default 500 ms).
    pub response_timeout: Duration,
    /// Reconnection attempts after a connection breaks, before operations fail fast until
    /// the next attempt (default 1; redis-rs's default of 6 makes a dead server cost ~10 s).
    pub reconnect_retries: usize,
    /// Keys per MGET / pipeline in batch operations (default 500), so one call neither blocks
    /// a server for long nor buffers without bound.
    pub batch_chunk: usize,
    /// Credentials, database and TLS of every connection (default: what the address says).
    pub connection: ConnectionSettings,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            reconnect_retries: 1,
            batch_chunk: 500,
            connection: ConnectionSettings::default(),
        }
    }
}

impl RedisOptions {
    /// Sets both timeouts.
    pub fn with_timeouts(mut self, connect: Duration, response: Duration) -> Self {
        self.connect_timeout = connect;
        self.response_timeout = response;
        self
    }
    /// Sets the batch chunk size.
    pub fn with_batch_chunk(mut self, keys: usize) -> Self {
        self.batch_chunk = keys;
        self
    }
    /// Sets the credentials, database and TLS.
    pub fn with_connection(mut self, connection: ConnectionSettings) -> Self {
        self.connection = connection;
        self
    }
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(Error::invalid(
                "timeout",
                "connect and response timeouts must be more than 0",
            ));
        }
        if self.batch_chunk == 0 {
            return Err(Error::invalid("batch_chunk", "must be at least 1"));
        }
        Ok(())
    }
}

/// `host:port`, `[v6]:port` or a `redis://` / `rediss://` / `unix://` URL → a client URL.
pub(crate) fn client_url(address: &str) -> Result<String> {
    crate::connection::client_url(address)
}

/// Maps a redis-rs error onto clusterkit's kinds. A server that is up but cannot serve yet
/// (LOADING its dataset after a restart, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, a READONLY
/// replica) is `unavailable`, like a server that is down, so pools take it out of rotation; a
/// command the server refused (WRONGTYPE, not an integer) is `backend`.
///
/// A refused `AUTH` (wrong password or user, or a password the server requires and was not
/// given) is `unavailable: <address>: authentication failed`. Every message is redacted
/// ([`crate::connection::redact`]): no password reaches it.
pub(crate) fn map_err(e: RedisError, what: &str) -> Error {
    let err = map_err_raw(e, what);
    match err {
        Error::Timeout(m) => Error::Timeout(redact(&m)),
        Error::Unavailable(m) => Error::Unavailable(redact(&m)),
        Error::Backend(m) => Error::Backend(redact(&m)),
        other => other,
    }
}

fn map_err_raw(e: RedisError, what: &str) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        return Error::Unavailable(format!("{what}: authentication failed ({e})"));
    }
    if e.is_timeout() {
        Error::Timeout(format!("{what}: {e}"))
    } else if e.is_connection_refusal()
        || e.is_io_error()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
        )
    {
        Error::Unavailable(format!("{what}: {e}"))
    } else {
        Error::Backend(format!("{what}: {e}"))
    }
}

/// The async connection to one server: redis-rs's `ConnectionManager`, or a [`Link`] when the
/// TLS server name differs from the host (the manager cannot route a name to another host).
/// Cheap to clone; commands, pipelines and scripts run on either.
#[derive(Clone)]
pub(crate) enum Conn {
    /// redis-rs's reconnecting manager (the common case).
    Manager(ConnectionManager),
    /// A shared multiplexed connection opened through the server-name resolver.
    Link(LinkConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(m) => m.req_packed_command(cmd),
            Conn::Link(l) => l.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(m) => m.req_packed_commands(cmd, offset, count),
            Conn::Link(l) => l.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(m) => m.get_db(),
            Conn::Link(l) => l.get_db(),
        }
    }
}

/// The async connection for `address` with `options`' timeouts and retries, connecting on
/// first use, and the prepared target. redis-rs spawns a manager's helper task on the current
/// tokio runtime; outside of one (a blocking caller) the shared runtime is used.
pub(crate) fn lazy_manager(address: &str, options: &RedisOptions) -> Result<(Conn, Target)> {
    options.validate()?;
    let target = prepare(address, &options.connection, Resolution::Custom)?;
    if target.resolver.is_some() {
        let link = Link::new(
            &target,
            options.connect_timeout,
            options.response_timeout,
            LINK_SLACK,
        );
        return Ok((Conn::Link(LinkConnection(Arc::new(link))), target));
    }
    let client = target.client.clone();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(options.reconnect_retries)
        .set_max_delay(Duration::from_millis(200));
    let _guard = match tokio::runtime::Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(crate::blocking::runtime()?),
    };
    let _entered = _guard.as_ref().map(|rt| rt.enter());
    let conn = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| map_err(e, &target.display))?;
    Ok((Conn::Manager(conn), target))
}

/// Slack of a [`Link`]'s outer deadlines over redis-rs's own timeouts (name lookup, scheduling).
const LINK_SLACK: Duration = Duration::from_millis(100);

/// A `ConnectionManager` that is built again in a child process after `fork()`: its driver
/// tasks ran on the parent's runtime, whose threads do not exist in the child (PHP-FPM and
/// Python's multiprocessing fork after the parent used the library).
#[derive(Clone)]
pub(crate) struct ForkSafeManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    address: String,
    options: RedisOptions,
    state: crate::fork::PerProcess<Conn>,
}

impl ForkSafeManager {
    /// A lazily connecting manager for `address` and its prepared target (client with the
    /// credentials and TLS applied, printable address). No network I/O.
    pub(crate) fn new(address: &str, options: &RedisOptions) -> Result<(ForkSafeManager, Target)> {
        let (conn, target) = lazy_manager(address, options)?;
        Ok((
            ForkSafeManager {
                inner: Arc::new(ManagerInner {
                    address: address.to_string(),
                    options: options.clone(),
                    state: crate::fork::PerProcess::with(conn),
                }),
            },
            target,
        ))
    }

    /// The manager for this process (rebuilt once after a fork; the parent's is leaked).
    pub(crate) fn get(&self) -> Result<Conn> {
        self.inner.state.get_or_try_init(|| {
            lazy_manager(&self.inner.address, &self.inner.options).map(|(conn, _)| conn)
        })
    }
}

/// One Redis server.
#[derive(Clone)]
pub(crate) struct RedisConn {
    conn: ForkSafeManager,
    chunk: usize,
    address: String,
    /// Synchronous connections for blocking callers (see [`SyncPool`]).
    /// `None` when the TLS server name differs from the host (redis-rs's synchronous
    /// connections cannot route a name to another host; blocking callers use `conn` then).
    sync: Option<Arc<SyncPool>>,
}

/// Plain blocking connections to one server, used when a blocking caller's own thread polls
/// the request ([`crate::blocking::inline_io_allowed`]): the command is written and the answer
/// read on that thread, as phpredis or redis-py do, instead of going through the runtime's
/// connection task and waking the caller afterwards. Each caller takes a connection, so
/// concurrent blocking callers never share one; a connection that failed is dropped, and the
/// pool is emptied in a forked child (those sockets belong to the parent).
pub(crate) struct SyncPool {
    client: Client,
    options: RedisOptions,
    /// This process's idle connections: a forked child starts with none (the parent's
    /// sockets are leaked there, never used or closed: the parent may be using them).
    idle: crate::fork::PerProcess<Arc<crate::fork::Mutex<Vec<redis::Connection>>>>,
    /// A connection was lost: the next one counts as a reconnect (monitoring).
    lost: std::sync::atomic::AtomicBool,
    /// Where the RESP connections of the batch read go ([`crate::cache::resp`]); `None` for
    /// targets only redis-rs serves (TLS).
    raw: Option<crate::cache::resp::RawSpec>,
    /// This process's idle RESP connections (like `idle`).
    raw_idle: crate::fork::PerProcess<Arc<crate::fork::Mutex<Vec<crate::cache::resp::RawConn>>>>,
}

/// Idle synchronous connections kept per server: one per concurrent blocking caller is kept
/// (up to this many), so a steady number of threads never reconnects.
const SYNC_IDLE_MAX: usize = 128;

impl SyncPool {
    /// A pool of connections made by `client` (credentials, db and TLS already applied).
    pub(crate) fn new(client: Client, options: &RedisOptions) -> Result<SyncPool> {
        let raw = crate::cache::resp::RawSpec::from_client(
            &client,
            options.connect_timeout,
            options.response_timeout,
        );
        Ok(SyncPool {
            client,
            options: options.clone(),
            idle: crate::fork::PerProcess::new(),
            lost: Default::default(),
            raw,
            raw_idle: crate::fork::PerProcess::new(),
        })
    }

    /// The pool for `target`, or `None` when its TLS server name differs from its host:
    /// redis-rs's synchronous connections take no resolver (see [`Conn`]).
    pub(crate) fn for_target(
        target: &Target,
        options: &RedisOptions,
    ) -> Result<Option<Arc<SyncPool>>> {
        if target.resolver.is_some() {
            return Ok(None);
        }
        Ok(Some(Arc::new(SyncPool::new(
            target.client.clone(),
            options,
        )?)))
    }

    /// Whether [`SyncPool::with_raw`] can serve this server (plain TCP or Unix, RESP2).
    pub(crate) fn has_raw(&self) -> bool {
        self.raw.is_some()
    }

    /// Runs `f` on one of the RESP connections of [`crate::cache::resp`] (fails with
    /// `internal` when [`SyncPool::has_raw`] is false); failures are handled as in
    /// [`SyncPool::pooled`].
    pub(crate) fn with_raw<T>(
        &self,
        address: &str,
        f: impl FnOnce(&mut crate::cache::resp::RawConn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let Some(spec) = &self.raw else {
            return Err(Error::Internal(format!(
                "{address}: no RESP connection for this target"
            )));
        };
        let idle = self.raw_idle.get_or_try_init(|| Ok(Arc::default()))?;
        self.pooled(address, &idle, || spec.connect(), f)
    }

    /// Runs `f` on a redis-rs connection (see [`SyncPool::pooled`]).
    pub(crate) fn with<T>(
        &self,
        address: &str,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let idle = self.idle.get_or_try_init(|| Ok(Arc::default()))?;
        let connect = || {
            let c = self
                .client
                .get_connection_with_timeout(self.options.connect_timeout)?;
            let t = Some(self.options.response_timeout);
            c.set_read_timeout(t)?;
            c.set_write_timeout(t)?;
            Ok(c)
        };
        self.pooled(address, &idle, connect, f)
    }

    /// Runs `f` on the fastest connection this server allows: the library's own RESP
    /// connection for plain TCP and Unix targets, redis-rs's otherwise (TLS).
    pub(crate) fn with_conn<T>(
        &self,
        address: &str,
        f: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        if self.has_raw() {
            self.with_raw(address, |c| f(c))
        } else {
            self.with(address, |c| f(c))
        }
    }

    /// Takes an idle connection from `idle` or makes one with `connect` (counted for
    /// monitoring), runs `f`, and keeps the connection unless the failure may have left it
    /// out of step (I/O error, timeout, dropped connection, unreadable reply). A lost server
    /// drops every idle connection of both kinds: they are as dead as this one, and dropping
    /// them now spares the next callers one failed request each.
    fn pooled<C, T>(
        &self,
        address: &str,
        idle: &crate::fork::Mutex<Vec<C>>,
        connect: impl FnOnce() -> redis::RedisResult<C>,
        f: impl FnOnce(&mut C) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let popped = idle.lock().pop();
        let mut c = match popped {
            Some(c) => c,
            None => {
                let r = &crate::metrics::counters::REDIS;
                let c = connect().map_err(|e| {
                    r.connect_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "clusterkit::connection", address, "Redis connection attempt failed");
                    map_err(e, address)
                })?;
                r.connections.fetch_add(1, Ordering::Relaxed);
                if self.lost.swap(false, Ordering::Relaxed) {
                    r.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "clusterkit::connection", address, "Redis reconnected");
                }
                c
            }
        };
        let r = f(&mut c);
        let keep = match &r {
            Ok(_) => true,
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                self.raw_idle.update(|idle| idle.lock().clear());
                self.idle.update(|idle| idle.lock().clear());
                self.lost.store(true, Ordering::Relaxed);
                tracing::warn!(target: "clusterkit::connection", address, "Redis connection lost");
                false
            }
            Err(e) => {
                !(e.is_timeout()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::Parse)
            }
        };
        if keep {
            let mut idle = idle.lock();
            if idle.len() < SYNC_IDLE_MAX {
                idle.push(c);
            }
        }
        r.map_err(|e| map_err(e, address))
    }
}

/// `SET key value [NX] [PX ms]`.
pub(crate) fn set_cmd(
    key: &[u8],
    value: &[u8],
    ttl: Option<Duration>,
    only_if_absent: bool,
) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if only_if_absent {
        cmd.arg("NX");
    }
    if let Some(t) = ttl {
        cmd.arg("PX").arg(px(t));
    }
    cmd
}

/// A PTTL answer as a [`Ttl`].
pub(crate) fn ttl_from_pttl(ms: i64) -> Ttl {
    match ms {
        -2 => Ttl::Missing,
        -1 => Ttl::Persistent,
        ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
    }
}

/// An invocation of `script` with binary keys and arguments.
pub(crate) fn invocation<'a>(
    script: &'a redis::Script,
    keys: &[&[u8]],
    args: &[&[u8]],
) -> redis::ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    for a in args {
        inv.arg(*a);
    }
    inv
}

pub(crate) fn px(ttl: Duration) -> u64 {
    // Redis takes whole milliseconds; round a sub-millisecond TTL up rather than to "never".
    (ttl.as_millis() as u64).max(1)
}

impl RedisConn {
    /// A connection that is established on first use (no I/O here). Its helper task runs on
    /// the caller's tokio runtime, or on the shared one when called outside a runtime; blocking
    /// callers get synchronous connections of their own ([`SyncPool`]).
    pub(crate) fn lazy(address: &str, options: &RedisOptions) -> Result<RedisConn> {
        let (conn, target) = ForkSafeManager::new(address, options)?;
        Ok(RedisConn {
            conn,
            chunk: options.batch_chunk,
            sync: SyncPool::for_target(&target, options)?,
            address: target.display,
        })
    }

    /// The synchronous pool, when the current poll may do its I/O inline.
    fn inline(&self) -> Option<&SyncPool> {
        self.sync
            .as_deref()
            .filter(|_| crate::blocking::inline_io_allowed())
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        if let Some(pool) = self.inline() {
            return pool.with_conn(&self.address, |c| cmd.query(c));
        }
        let mut c = self.conn.get()?;
        cmd.query_async(&mut c)
            .await
            .map_err(|e| map_err(e, &self.address))
    }

    /// Runs a Lua script (EVALSHA, loading it on NOSCRIPT).
    pub(crate) async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T> {
        let inv = invocation(script, keys, args);
        if let Some(pool) = self.inline() {
            return pool.with_conn(&self.address, |c| inv.invoke(c));
        }
        let mut c = self.conn.get()?;
        inv.invoke_async(&mut c)
            .await
            .map_err(|e| map_err(e, &self.address))
    }

    /// Runs a pipeline (one round trip), on the blocking caller's own connection when it may.
    pub(crate) async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        if let Some(pool) = self.inline() {
            return pool.with_conn(&self.address, |c| pipe.query(c));
        }
        let mut c = self.conn.get()?;
        pipe.query_async(&mut c)
            .await
            .map_err(|e| map_err(e, &self.address))
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Backend(format!(
                "{}: PING answered {pong:?}",
                self.address
            )))
        }
    }

    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        Ok(v.map(Bytes::from))
    }

    pub(crate) async fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.query::<()>(&set_cmd(key, value, ttl, false)).await
    }

    pub(crate) async fn add(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let r: Option<String> = self.query(&set_cmd(key, value, ttl, true)).await?;
        Ok(r.is_some())
    }

    pub(crate) async fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        let mut n = 0;
        for chunk in keys.chunks(self.chunk) {
            n += self.query::<u64>(redis::cmd("DEL").arg(chunk)).await?;
        }
        Ok(n)
    }

    pub(crate) async fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.query::<u64>(redis::cmd("EXISTS").arg(key)).await? > 0)
    }

    pub(crate) async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        if let Some(pool) = self.inline().filter(|p| p.has_raw()) {
            // The blocking caller's thread: RESP connection, values as slices of one buffer.
            for chunk in keys.chunks(self.chunk) {
                out.extend(pool.with_raw(&self.address, |c| c.mget(chunk))?);
            }
        } else if keys.len() <= self.chunk {
            let v: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(keys)).await?;
            out.extend(v.into_iter().map(|x| x.map(Bytes::from)));
        } else {
            // One pipeline of MGETs: one round trip, bounded command sizes.
            let mut pipe = redis::pipe();
            for chunk in keys.chunks(self.chunk) {
                pipe.cmd("MGET").arg(chunk);
            }
            let mut c = self.conn.get()?;
            let parts: Vec<Vec<Option<Vec<u8>>>> = pipe
                .query_async(&mut c)
                .await
                .map_err(|e| map_err(e, &self.address))?;
            out.extend(parts.into_iter().flatten().map(|x| x.map(Bytes::from)));
        }
        if out.len() != keys.len() {
            return Err(Error::Backend(format!(
                "{}: MGET returned {} values for {} keys",
                self.address,
                out.len(),
                keys.len()
            )));
        }
        Ok(out)
    }

    pub(crate) async fn set_many(
        &self,
        items: &[(&[u8], &[u8])],
        ttl: Option<Duration>,
    ) -> Result<()> {
        for chunk in items.chunks(self.chunk) {
            let mut pipe = redis::pipe();
            for (k, v) in chunk {
                let c = pipe.cmd("SET").arg(*k).arg(*v);
                if let Some(t) = ttl {
                    c.arg("PX").arg(px(t));
                }
                c.ignore();
            }
            let mut c = self.conn.get()?;
            pipe.query_async::<()>(&mut c)
                .await
                .map_err(|e| map_err(e, &self.address))?;
        }
        Ok(())
    }

    /// `SET key value KEEPTTL` (Redis >= 6.0): overwrite, keeping the key's TTL.
    pub(crate) async fn set_keep_ttl(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value).arg("KEEPTTL"))
            .await
    }

    pub(crate) async fn increment(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    pub(crate) async fn ttl(&self, key: &[u8]) -> Result<Ttl> {
        let ms: i64 = self.query(redis::cmd("PTTL").arg(key)).await?;
        Ok(ttl_from_pttl(ms))
    }

    /// Deletes every key starting with `prefix` (SCAN + UNLINK in batches; never FLUSHALL).
    /// Glob characters in `prefix` are escaped: it matches literally.
    pub(crate) async fn clear_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let mut pattern = crate::cache::glob_escape(prefix);
        pattern.push(b'*');
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                removed += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind as K, ServerErrorKind as S};

    #[test]
    fn a_server_that_cannot_serve_is_unavailable_a_refused_command_is_backend() {
        let kind = |k: K| map_err(RedisError::from((k, "test")), "r1").kind();
        for s in [
            S::BusyLoading,
            S::MasterDown,
            S::TryAgain,
            S::ClusterDown,
            S::ReadOnly,
        ] {
            assert_eq!(kind(K::Server(s)), crate::ErrorKind::Unavailable, "{s:?}");
        }
        assert_eq!(kind(K::Io), crate::ErrorKind::Unavailable);
        assert_eq!(kind(K::Server(S::ResponseError)), crate::ErrorKind::Backend);
        assert_eq!(kind(K::UnexpectedReturnType), crate::ErrorKind::Backend);
    }
}
