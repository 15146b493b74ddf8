//! [`Link`]: one shared multiplexed connection to a Redis server, opened on first use and
//! opened again after a connection error or a timeout, connecting through the target's
//! [`NameResolver`] when the TLS server name differs from the host.
//!
//! The discovery registry uses it for its commands; the cache, locks and sessions use it
//! instead of redis-rs's `ConnectionManager` when a server name must be routed to another
//! host (the manager takes no resolver in redis-rs 1.8).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::Target;
use crate::error::Result;

/// Why a [`Link`] call failed.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Connecting (or the handshake: AUTH, SELECT, TLS) failed.
    Connect(RedisError),
    /// Connecting took longer than the connect deadline.
    ConnectTimeout(Duration),
    /// The request failed.
    Request(RedisError),
    /// The answer took longer than the response deadline.
    RequestTimeout(Duration),
}

impl LinkError {
    /// The failure as a redis-rs error (timeouts as I/O `TimedOut` errors), for callers that
    /// map redis-rs errors themselves.
    pub(crate) fn into_redis(self) -> RedisError {
        match self {
            LinkError::Connect(e) | LinkError::Request(e) => e,
            LinkError::ConnectTimeout(d) => RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting took longer than {d:?}"),
            )),
            LinkError::RequestTimeout(d) => RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {d:?}"),
            )),
        }
    }
}

/// One shared multiplexed connection, re-established after connection errors.
pub(crate) struct Link {
    /// The printable address (never with a password).
    pub(crate) address: String,
    client: Client,
    config: AsyncConnectionConfig,
    /// The connection slot of this process: a forked child gets a fresh one (the parent's
    /// lock may be held by one of its tasks across an await, and its connection is driven by
    /// the parent's runtime).
    slot: crate::fork::PerProcess<ConnSlot>,
    generation: AtomicU64,
    connect_deadline: Duration,
    response_deadline: Duration,
}

type ConnSlot = Arc<tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>>;

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Whether `e` means the connection is gone or unusable (so the next call should reconnect).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl Link {
    /// A link to `target` (no I/O): redis-rs's own timeouts are `connect_timeout` and
    /// `response_timeout`; the outer deadlines add `slack` (DNS, scheduling).
    pub(crate) fn new(
        target: &Target,
        connect_timeout: Duration,
        response_timeout: Duration,
        slack: Duration,
    ) -> Link {
        Link {
            address: target.display.clone(),
            client: target.client.clone(),
            config: target.async_config(connect_timeout, response_timeout),
            slot: crate::fork::PerProcess::new(),
            generation: AtomicU64::new(0),
            connect_deadline: connect_timeout + slack,
            response_deadline: response_timeout + slack,
        }
    }

    fn slot(&self) -> Result<ConnSlot> {
        self.slot.get_or_try_init(|| Ok(Arc::default()))
    }

    /// This process's connection (opened now if there is none) and its generation.
    async fn connection(&self) -> std::result::Result<(u64, MultiplexedConnection), LinkError> {
        let slot = self
            .slot()
            .map_err(|e| LinkError::Connect(RedisError::from(std::io::Error::other(e))))?;
        let mut slot = slot.lock().await;
        if let Some((g, c)) = slot.as_ref() {
            return Ok((*g, c.clone()));
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| {
                let r = &crate::metrics::counters::REDIS;
                r.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "clusterkit::connection", address = %self.address,
                    "Redis connection attempt failed");
                LinkError::Connect(e)
            })?;
        let g = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let r = &crate::metrics::counters::REDIS;
        r.connections.fetch_add(1, Ordering::Relaxed);
        if g > 1 {
            r.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "clusterkit::connection", address = %self.address, "Redis reconnected");
        } else {
            tracing::debug!(target: "clusterkit::connection", address = %self.address, "Redis connected");
        }
        *slot = Some((g, conn.clone()));
        Ok((g, conn))
    }

    async fn reset(&self, generation: u64) {
        let Ok(slot) = self.slot() else { return };
        let mut slot = slot.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    /// Runs `f` on the connection within the deadlines; drops the connection after a
    /// connection error or a timeout so the next call reconnects.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> std::result::Result<T, LinkError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (g, conn) = match tokio::time::timeout(self.connect_deadline, self.connection()).await {
            Ok(r) => r?,
            Err(_) => return Err(LinkError::ConnectTimeout(self.connect_deadline)),
        };
        match tokio::time::timeout(self.response_deadline, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.reset(g).await;
                }
                Err(LinkError::Request(e))
            }
            Err(_) => {
                self.reset(g).await;
                Err(LinkError::RequestTimeout(self.response_deadline))
            }
        }
    }
}

/// A [`Link`] as a redis-rs connection, so commands, pipelines and scripts run on it the
/// way they run on a `ConnectionManager`.
#[derive(Clone, Debug)]
pub(crate) struct LinkConnection(pub(crate) Arc<Link>);

impl ConnectionLike for LinkConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.0
                .run(|mut c| async move { c.req_packed_command(cmd).await })
                .await
                .map_err(LinkError::into_redis)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.0
                .run(|mut c| async move { c.req_packed_commands(cmd, offset, count).await })
                .await
                .map_err(LinkError::into_redis)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.client.get_connection_info().redis_settings().db()
    }
}
