//! A service registry in Redis: nodes register themselves with a heartbeat TTL, watchers keep a
//! [`Cluster`] equal to the registered nodes.
//!
//! # Data model
//!
//! For a service `S` and the namespace `P` (`key_prefix`, default `clusterkit`), in the
//! registry's sub-space `P:r:` (see `docs/keyspace.md`):
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:r:{S}:node:<id>` | string with a `PX` TTL | the node as JSON: `id`, `host`, `port`, `weight`, `zone`, `metadata` |
//! | `P:r:{S}:nodes` | set | the ids of registered nodes (the listing; ids whose key expired are removed by readers) |
//! | `P:r:{S}:events` | pub/sub channel | `up <id>` / `down <id>` notifications, a hint to re-read sooner |
//! | `P:r:{S}:epoch` | string | a random token set by the first reader; a new token means the data was lost |
//!
//! A [`Registration`] writes its node key and set entry atomically (one Lua script) and
//! refreshes the TTL every heartbeat interval, re-creating the entry if it vanished (a Redis
//! restart without persistence, a failover to a replica that never saw it). A watcher
//! ([`RedisRegistry::watch`]) re-reads the whole listing every heartbeat interval and applies
//! it with [`Cluster::sync`]; between those reads, a notification naming a node reads that
//! node's key only (a join or a leave costs one `MGET`, not a read of all N entries), and a
//! (re)subscription or a burst of more than 64 notifications takes a full read at once.
//! Pub/sub is only a hint: the periodic full read is the source of truth. See `docs/discovery.md` for the guarantees.
//!
//! ```no_run
//! use clusterkit::discovery::{RedisRegistry, RegistryOptions};
//! use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
//!
//! let registry = RedisRegistry::new("redis://127.0.0.1:6379", "web", RegistryOptions::default())?;
//! // On each web server:
//! let registration = registry.register_blocking(Node::new("web-1", "10.0.0.5", 8080)?)?;
//! // On each client of the service:
//! let pool = Cluster::new("web", BalancerOptions::new(Strategy::RoundRobin))?;
//! let _watcher = registry.watch(&pool)?;
//! // ... on shutdown:
//! registration.deregister_blocking()?;
//! # Ok::<(), clusterkit::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushKind, RedisError, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Discovery, DiscoveryHandle};
use crate::cluster::WeakCluster;
use crate::cluster::{Cluster, ClusterEvent};
use crate::connection::link::{is_connection_error, Link, LinkError};
use crate::connection::redact;
use crate::error::{Error, Result};
use crate::node::Node;

/// The `source` of the [`ClusterEvent::DiscoveryProblem`] events a watcher emits.
pub const SOURCE: &str = "redis-registry";
/// Default heartbeat TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default namespace of the registry's keys (they live in its sub-space `<namespace>:r:`).
pub const DEFAULT_KEY_PREFIX: &str = "clusterkit";
/// Longest wait between two attempts after a failure (reconnects, failed heartbeats).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Slack added to the connect/response timeouts for the outer deadlines (DNS, scheduling).
const SLACK: Duration = Duration::from_millis(250);
/// A watcher that keeps failing repeats its problem event at most this often.
const REPEAT_PROBLEM_EVERY: Duration = Duration::from_secs(10);
/// Longest accepted service name and key prefix, in bytes.
const MAX_NAME_LEN: usize = 255;

/// Options of a [`RedisRegistry`]. Build with [`RegistryOptions::default`] and the `with_*`
/// methods; [`RegistryOptions::validate`] (called by [`RedisRegistry::new`]) rejects bad
/// values naming the field.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// How long a registration lives without a heartbeat (default 10 s, at least 100 ms). A
    /// crashed node stays listed for up to `ttl` plus one heartbeat interval.
    pub ttl: Duration,
    /// How often registrations refresh their TTL and watchers re-read the listing. `None` (the
    /// default) means `ttl / 3`; must be shorter than `ttl`.
    pub heartbeat_interval: Option<Duration>,
    /// Namespace of every key and channel (default `clusterkit`): keys are
    /// `<key_prefix>:r:{<service>}:...`. No `:`, `{`, `}`, whitespace or glob characters.
    pub key_prefix: String,
    /// Deadline for establishing a connection, DNS included (default 1 s).
    pub connect_timeout: Duration,
    /// Deadline for one command's answer (default 1 s).
    pub response_timeout: Duration,
    /// Credentials, database and TLS of the registry's connections (commands and pub/sub).
    pub connection: crate::connection::ConnectionSettings,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            ttl: DEFAULT_TTL,
            heartbeat_interval: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            connection: crate::connection::ConnectionSettings::default(),
        }
    }
}

impl RegistryOptions {
    /// Sets the heartbeat TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
    /// Sets the heartbeat interval (also the watchers' re-read interval).
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }
    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets the response timeout.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
    /// Sets the credentials, database and TLS of the registry's connections.
    pub fn with_connection(mut self, connection: crate::connection::ConnectionSettings) -> Self {
        self.connection = connection;
        self
    }

    /// The heartbeat interval in force: the configured one, or `ttl / 3`.
    pub fn interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.ttl / 3)
    }

    /// Checks the options: `ttl` at least 100 ms, the interval at least 10 ms and shorter than
    /// `ttl`, timeouts between 1 ms and 1 hour, a valid namespace as prefix. Fails
    /// with [`Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.ttl < Duration::from_millis(100) || self.ttl > Duration::from_secs(86_400) {
            return Err(Error::invalid(
                "ttl",
                format!("must be between 100ms and 24h, got {:?}", self.ttl),
            ));
        }
        let interval = self.interval();
        if interval < Duration::from_millis(10) || interval >= self.ttl {
            return Err(Error::invalid(
                "heartbeat_interval",
                format!(
                    "must be at least 10ms and shorter than the ttl ({:?}), got {interval:?}",
                    self.ttl
                ),
            ));
        }
        for (field, t) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if t < Duration::from_millis(1) || t > Duration::from_secs(3600) {
                return Err(Error::invalid(
                    field,
                    format!("must be between 1ms and 1h, got {t:?}"),
                ));
            }
        }
        crate::cache::check_namespace_field("key_prefix", &self.key_prefix)
    }
}

fn check_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long, the maximum is {MAX_NAME_LEN}",
                value.len()
            ),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        return Err(Error::invalid(
            field,
            format!("must not contain whitespace, control characters, '{{' or '}}', got {value:?}"),
        ));
    }
    Ok(())
}

/// The result of one full read of the registry.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// The valid registered nodes, sorted by id.
    pub nodes: Vec<Node>,
    /// Entries that were skipped, as `(key, reason)`: malformed JSON, wrong field types,
    /// invalid node fields, an id that does not match its key, a key of the wrong Redis type.
    pub skipped: Vec<(String, String)>,
}

/// The registry's keys for one service.
#[derive(Debug)]
struct Keys {
    set: String,
    node_prefix: String,
    channel: String,
    epoch: String,
}

impl Keys {
    /// The service's keys, in the registry's sub-space `<prefix>:r:`; `{service}` delimits
    /// the service name (which holds no braces), so no service reaches another's keys.
    fn new(prefix: &str, service: &str) -> Keys {
        Keys {
            set: format!("{prefix}:r:{{{service}}}:nodes"),
            node_prefix: format!("{prefix}:r:{{{service}}}:node:"),
            channel: format!("{prefix}:r:{{{service}}}:events"),
            epoch: format!("{prefix}:r:{{{service}}}:epoch"),
        }
    }
    fn node(&self, id: &str) -> String {
        format!("{}{id}", self.node_prefix)
    }
}

/// The JSON form of a node in the registry.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    host: String,
    port: u16,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

pub(crate) fn to_json(node: &Node) -> Result<String> {
    let entry = Entry {
        id: node.id().to_string(),
        host: node.host().to_string(),
        port: node.port(),
        weight: node.weight(),
        zone: node.zone().map(str::to_string),
        metadata: node.metadata().clone(),
    };
    serde_json::to_string(&entry)
        .map_err(|e| Error::Internal(format!("cannot encode node {:?}: {e}", node.id())))
}

/// Parses one registry entry; `id` is the id the listing holds it under.
pub(crate) fn parse_entry(id: &str, raw: &[u8]) -> std::result::Result<Node, String> {
    let entry: Entry =
        serde_json::from_slice(raw).map_err(|e| format!("not a valid node entry: {e}"))?;
    if entry.id != id {
        return Err(format!(
            "the entry's id {:?} does not match its key's id {id:?}",
            entry.id
        ));
    }
    let mut node = Node::new(entry.id, entry.host, entry.port)
        .and_then(|n| n.with_weight(entry.weight))
        .map_err(|e| format!("invalid node: {e}"))?;
    if let Some(zone) = entry.zone {
        node = node
            .with_zone(zone)
            .map_err(|e| format!("invalid node: {e}"))?;
    }
    if !entry.metadata.is_empty() {
        node = node
            .with_metadata_map(entry.metadata)
            .map_err(|e| format!("invalid node: {e}"))?;
    }
    Ok(node)
}

/// Writes a node entry with its TTL, adds the id to the listing, and publishes `up <id>` when
/// the entry was created or changed (or when asked to). Returns 1 if it published.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = redis.pcall('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local added = redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[5] == '1' or added == 1 or old ~= ARGV[1] then
  redis.call('PUBLISH', ARGV[4], 'up ' .. ARGV[3])
  return 1
end
return 0
",
    )
});

/// Reads the listing atomically: returns `{epoch, {id, 'ok', json} | {id, 'error', message} ...}`
/// and removes ids whose node key expired. Sets the epoch token (ARGV[2]) if none exists.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local ids = redis.call('SMEMBERS', KEYS[1])
local out = {epoch}
for _, id in ipairs(ids) do
  local v = redis.pcall('GET', ARGV[1] .. id)
  if type(v) == 'table' and v.err then
    out[#out + 1] = {id, 'error', v.err}
  elseif v then
    out[#out + 1] = {id, 'ok', v}
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
",
    )
});

fn map_redis_error(address: &str, what: &str, err: &RedisError) -> Error {
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
    {
        return Error::Unavailable(format!(
            "{what}: the registry {address}: authentication failed"
        ));
    }
    let e = redact(&err.to_string());
    let e = &e;
    if err.is_timeout() {
        Error::Timeout(format!("{what} at the registry {address}: {e}"))
    } else if is_connection_error(err) {
        Error::Unavailable(format!(
            "{what}: the registry {address} is unreachable: {e}"
        ))
    } else {
        Error::Backend(format!("{what} at the registry {address}: {e}"))
    }
}

impl Shared {
    /// Runs `f` on the registry's connection ([`Link::run`]), its failure as an error that
    /// says what was being done.
    async fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let address = &self.link.address;
        self.link.run(f).await.map_err(|e| match e {
            LinkError::Connect(e) => {
                if e.kind() == redis::ErrorKind::AuthenticationFailed
                    || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
                {
                    return Error::Unavailable(format!(
                        "{what}: cannot connect to the registry {address}: authentication failed"
                    ));
                }
                let message = format!(
                    "{what}: cannot connect to the registry {address}: {}",
                    redact(&e.to_string())
                );
                if e.is_timeout() {
                    Error::Timeout(message)
                } else if is_connection_error(&e) {
                    Error::Unavailable(message)
                } else {
                    Error::Backend(message)
                }
            }
            LinkError::ConnectTimeout(d) => Error::Timeout(format!(
                "{what}: connecting to the registry {address} took longer than {d:?}"
            )),
            LinkError::Request(e) => map_redis_error(address, what, &e),
            LinkError::RequestTimeout(d) => Error::Timeout(format!(
                "{what}: the registry {address} did not answer within {d:?}"
            )),
        })
    }
}

/// State shared by a registry, its registrations and its watchers.
struct Shared {
    service: String,
    options: RegistryOptions,
    keys: Keys,
    link: Link,
    /// A RESP3 client for the watchers' pub/sub connections.
    pubsub: Client,
    /// Their connection config (timeouts, and the resolver that routes a TLS server name to
    /// the real host, see [`crate::connection`]).
    sub_config: AsyncConnectionConfig,
}

/// A service registry in one Redis server: [`register`](RedisRegistry::register) nodes,
/// [`watch`](RedisRegistry::watch) it from clusters, [`list`](RedisRegistry::list) it once.
///
/// Cheap to clone; clones share one connection. All network work runs on the shared runtime
/// ([`crate::blocking::runtime`]), so the async methods work from any executor and the
/// `_blocking` ones from plain threads.
#[derive(Clone)]
pub struct RedisRegistry {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("address", &self.shared.link.address)
            .field("service", &self.shared.service)
            .field("options", &self.shared.options)
            .finish()
    }
}

fn random_token() -> String {
    format!(
        "{:016x}{:016x}",
        crate::rng::next_u64(),
        crate::rng::next_u64()
    )
}

/// Runs `fut` on the shared runtime (so connections and their driver tasks live there) and
/// waits for it from whatever executor the caller uses.
async fn on_runtime<T, F>(fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    crate::fork::spawn(fut)?
        .await
        .map_err(|e| Error::Internal(format!("a registry task failed: {e}")))?
}

impl RedisRegistry {
    /// A registry for `service` in the Redis server at `address` (`redis://host:port/db`,
    /// or just `host:port`). Connects lazily: no network I/O happens here.
    ///
    /// Fails with [`Error::InvalidArgument`] if the address cannot be parsed, the service name
    /// is empty or contains whitespace, or an option is out of range.
    pub fn new(address: &str, service: &str, options: RegistryOptions) -> Result<RedisRegistry> {
        crate::log::init_from_env();
        check_name("service", service)?;
        options.validate()?;
        let target = crate::connection::prepare(
            address,
            &options.connection,
            crate::connection::Resolution::Custom,
        )?;
        let pubsub = target.pubsub_client()?;
        // The watchers' pub/sub connections: RESP3 pushes, through the same resolver.
        let sub_config = target.async_config(options.connect_timeout, options.response_timeout);
        let keys = Keys::new(&options.key_prefix, service);
        let link = Link::new(
            &target,
            options.connect_timeout,
            options.response_timeout,
            SLACK,
        );
        Ok(RedisRegistry {
            shared: Arc::new(Shared {
                service: service.to_string(),
                options,
                keys,
                link,
                pubsub,
                sub_config,
            }),
        })
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The options in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.shared.options
    }

    /// The Redis key holding `id`'s entry (for tooling and tests).
    pub fn node_key(&self, id: &str) -> String {
        self.shared.keys.node(id)
    }

    /// The Redis key of the set listing the registered ids.
    pub fn listing_key(&self) -> &str {
        &self.shared.keys.set
    }

    /// The pub/sub channel notifications are published on.
    pub fn channel(&self) -> &str {
        &self.shared.keys.channel
    }

    /// Registers `node`: writes its entry with the TTL, adds it to the listing and notifies
    /// watchers, then keeps refreshing it every heartbeat interval in the background (also
    /// re-creating it if it vanished) until the returned [`Registration`] is deregistered,
    /// abandoned or dropped.
    ///
    /// Registering an id that is already registered replaces its entry (last writer wins).
    /// Fails with [`Error::Unavailable`] or [`Error::Timeout`] if the registry cannot be
    /// reached within the timeouts, [`Error::Backend`] if Redis answers with an error; no
    /// heartbeat is started then.
    pub async fn register(&self, node: Node) -> Result<Registration> {
        let state = Arc::new(RegState {
            shared: self.shared.clone(),
            id: node.id().to_string(),
            json: crate::fork::Mutex::new(to_json(&node)?),
            node: crate::fork::Mutex::new(node),
            last_error: crate::fork::Mutex::new(None),
        });
        let s = state.clone();
        on_runtime(async move { write_entry(&s, true).await.map(|_| ()) }).await?;
        let beat = state.clone();
        let heartbeat = crate::fork::Background::start(move || heartbeat(beat.clone()))?;
        Ok(Registration {
            state,
            heartbeat: Some(heartbeat),
        })
    }

    /// Blocking form of [`register`](RedisRegistry::register), for threads outside any async
    /// runtime. Also fails with [`Error::InvalidArgument`] when called from inside one.
    pub fn register_blocking(&self, node: Node) -> Result<Registration> {
        crate::blocking::block_on(self.register(node))?
    }

    /// Reads the full listing once: the valid nodes and the skipped entries. Removes ids whose
    /// entry expired from the listing as a side effect.
    ///
    /// Fails with [`Error::Unavailable`] or [`Error::Timeout`] if the registry cannot be
    /// reached, [`Error::Backend`] if Redis answers with an error (for example the listing key
    /// holds another type).
    pub async fn list(&self) -> Result<Listing> {
        let shared = self.shared.clone();
        on_runtime(async move { read(&shared).await.map(|(listing, _)| listing) }).await
    }

    /// Blocking form of [`list`](RedisRegistry::list).
    pub fn list_blocking(&self) -> Result<Listing> {
        crate::blocking::block_on(self.list())?
    }

    /// Starts a background watcher that keeps `cluster`'s membership equal to the registered
    /// nodes: it re-reads the full listing every heartbeat interval, and sooner when a
    /// notification arrives on the channel, and applies it with [`Cluster::sync`].
    ///
    /// Problems are reported as [`ClusterEvent::DiscoveryProblem`] events with source
    /// [`SOURCE`]: an unreachable registry (the membership is kept, reads are retried with a
    /// backoff of at most 1 s), malformed entries (skipped; each reported once while it stays
    /// the same), lost registry data (after a Redis restart or failover, known nodes are kept
    /// for one TTL plus one interval so their heartbeats can re-create them).
    ///
    /// Returns immediately; the first read happens in the background. The watcher stops when
    /// the returned handle is dropped or the cluster is dropped. Fails only if the shared
    /// runtime cannot be started.
    pub fn watch(&self, cluster: &Cluster) -> Result<DiscoveryHandle> {
        let (shared, cluster) = (self.shared.clone(), cluster.downgrade());
        let task =
            crate::fork::Background::start(move || watch_loop(shared.clone(), cluster.clone()))?;
        Ok(DiscoveryHandle::with_task(SOURCE, task))
    }
}

impl Discovery for RedisRegistry {
    /// Same as [`RedisRegistry::watch`].
    fn start(&self, cluster: &Cluster) -> Result<DiscoveryHandle> {
        self.watch(cluster)
    }
}

/// What a registration's heartbeat and its owner share.
struct RegState {
    shared: Arc<Shared>,
    id: String,
    node: crate::fork::Mutex<Node>,
    json: crate::fork::Mutex<String>,
    last_error: crate::fork::Mutex<Option<Error>>,
}

/// Writes the current entry; `announce` publishes even if nothing changed.
async fn write_entry(state: &RegState, announce: bool) -> Result<bool> {
    let shared = &state.shared;
    let json = state.json.lock().clone();
    let key = shared.keys.node(&state.id);
    let ttl_ms = shared.options.ttl.as_millis().min(u64::MAX as u128) as u64;
    let published: i64 = shared
        .run("registering", |mut c| async move {
            let mut inv = WRITE.prepare_invoke();
            inv.key(&key)
                .key(&shared.keys.set)
                .arg(&json)
                .arg(ttl_ms)
                .arg(&state.id)
                .arg(&shared.keys.channel)
                .arg(if announce { "1" } else { "0" });
            inv.invoke_async(&mut c).await
        })
        .await?;
    Ok(published == 1)
}

async fn delete_entry(shared: &Shared, id: &str) -> Result<()> {
    let key = shared.keys.node(id);
    shared
        .run("deregistering", |mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("SREM")
                .arg(&shared.keys.set)
                .arg(id)
                .ignore()
                .cmd("PUBLISH")
                .arg(&shared.keys.channel)
                .arg(format!("down {id}"))
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
}

async fn heartbeat(state: Arc<RegState>) {
    let interval = state.shared.options.interval();
    let max_backoff = MAX_BACKOFF.min(interval);
    let mut delay = interval;
    let mut backoff = MIN_BACKOFF.min(max_backoff);
    loop {
        tokio::time::sleep(delay).await;
        let result = write_entry(&state, false).await;
        let mut last = state.last_error.lock();
        match result {
            Ok(_) => {
                *last = None;
                delay = interval;
                backoff = MIN_BACKOFF.min(max_backoff);
            }
            Err(e) => {
                *last = Some(e);
                delay = backoff;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// A registered node, kept alive by a background heartbeat.
///
/// End it with [`deregister`](Registration::deregister) (removes the entry now), or drop it
/// (stops the heartbeat and removes the entry in the background, best effort). A process that
/// dies without either is removed when its TTL lapses.
pub struct Registration {
    state: Arc<RegState>,
    /// Started again in a forked child; stopped by deregister, abandon or drop.
    heartbeat: Option<Arc<crate::fork::Background>>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.state.shared.service)
            .field("node", &self.node())
            .field("active", &self.heartbeat.is_some())
            .finish()
    }
}

impl Registration {
    /// The registered node as last written.
    pub fn node(&self) -> Node {
        self.state.node.lock().clone()
    }

    /// The last heartbeat failure, or `None` if the last heartbeat succeeded. A failing
    /// heartbeat is retried with a backoff of at most 1 s (or the interval, if shorter).
    pub fn last_error(&self) -> Option<Error> {
        self.state.last_error.lock().clone()
    }

    /// Replaces the registered node (weight, zone, metadata, address) and notifies watchers.
    ///
    /// Fails with [`Error::InvalidArgument`] if `node` has another id. If the write fails
    /// ([`Error::Unavailable`], [`Error::Timeout`], [`Error::Backend`]) the new node is kept
    /// and the next heartbeat writes it.
    pub async fn update(&self, node: Node) -> Result<()> {
        if node.id() != self.state.id {
            return Err(Error::invalid(
                "node.id",
                format!(
                    "a registration cannot change its id ({:?} -> {:?}); register the new id instead",
                    self.state.id,
                    node.id()
                ),
            ));
        }
        let json = to_json(&node)?;
        *self.state.json.lock() = json;
        *self.state.node.lock() = node;
        let state = self.state.clone();
        on_runtime(async move { write_entry(&state, true).await.map(|_| ()) }).await
    }

    /// Blocking form of [`update`](Registration::update).
    pub fn update_blocking(&self, node: Node) -> Result<()> {
        crate::blocking::block_on(self.update(node))?
    }

    /// Stops the heartbeat and removes the entry from the registry now; watchers see the node
    /// leave within one heartbeat interval (sooner when the notification reaches them).
    ///
    /// Fails with [`Error::Unavailable`], [`Error::Timeout`] or [`Error::Backend`] if the
    /// removal could not be written; the entry then disappears when its TTL lapses.
    pub async fn deregister(mut self) -> Result<()> {
        let heartbeat = self.heartbeat.take().and_then(|h| h.stop());
        let state = self.state.clone();
        on_runtime(async move {
            stop(heartbeat).await;
            delete_entry(&state.shared, &state.id).await
        })
        .await
    }

    /// Blocking form of [`deregister`](Registration::deregister).
    pub fn deregister_blocking(self) -> Result<()> {
        crate::blocking::block_on(self.deregister())?
    }

    /// Stops the heartbeat *without* removing the entry, as a crashed process would: the
    /// node stays listed until its TTL lapses. For crash tests and for handing a node over
    /// to another process that registers the same id.
    pub fn abandon(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.stop();
        }
    }
}

/// Aborts a heartbeat and waits until it has really stopped (so it cannot write after a
/// removal).
async fn stop(heartbeat: Option<JoinHandle<()>>) {
    if let Some(h) = heartbeat {
        h.abort();
        let _ = h.await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(heartbeat) = self.heartbeat.take() else {
            return;
        };
        let heartbeat = heartbeat.stop();
        // Never block here (this may run on a runtime thread): remove in the background.
        let state = self.state.clone();
        let _ = crate::fork::spawn(async move {
            stop(heartbeat).await;
            let _ = delete_entry(&state.shared, &state.id).await;
        });
    }
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// One full read: the listing and the registry's epoch token.
async fn read(shared: &Shared) -> Result<(Listing, String)> {
    let token = random_token();
    let raw: Value = shared
        .run("reading the listing", |mut c| async move {
            let mut inv = READ.prepare_invoke();
            inv.key(&shared.keys.set)
                .key(&shared.keys.epoch)
                .arg(&shared.keys.node_prefix)
                .arg(&token);
            inv.invoke_async(&mut c).await
        })
        .await?;
    let bad_reply = || {
        Error::Backend(format!(
            "unexpected reply to the listing read from {}",
            shared.link.address
        ))
    };
    let Value::Array(items) = raw else {
        return Err(bad_reply());
    };
    let mut items = items.into_iter();
    let epoch = items
        .next()
        .as_ref()
        .and_then(bytes_of)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(bad_reply)?;
    let mut listing = Listing::default();
    for item in items {
        let Value::Array(parts) = item else {
            return Err(bad_reply());
        };
        let [id, status, payload] = parts.as_slice() else {
            return Err(bad_reply());
        };
        let (Some(id), Some(status), Some(payload)) =
            (bytes_of(id), bytes_of(status), bytes_of(payload))
        else {
            return Err(bad_reply());
        };
        let id = String::from_utf8_lossy(id).into_owned();
        let key = shared.keys.node(&id);
        if status != b"ok" {
            let message = String::from_utf8_lossy(payload).into_owned();
            listing
                .skipped
                .push((key, format!("cannot read the entry: {message}")));
            continue;
        }
        match parse_entry(&id, payload) {
            Ok(node) => listing.nodes.push(node),
            Err(reason) => listing.skipped.push((key, reason)),
        }
    }
    listing.nodes.sort_by(|a, b| a.id().cmp(b.id()));
    listing.skipped.sort();
    Ok((listing, epoch))
}

/// Most ids a watcher reads one by one after notifications; more at once take a full read.
const MAX_INCREMENTAL: usize = 64;

/// Notifications received since the watcher last looked (issue #18: a join or a leave reads
/// that node's key, not the whole listing).
#[derive(Default)]
struct Pending {
    /// Ids named by `up <id>` / `down <id>` notifications.
    ids: Vec<String>,
    /// A full read is due: a (re)subscription (notifications may have been missed), a
    /// message of another form, or more than [`MAX_INCREMENTAL`] ids.
    full: bool,
}

impl Pending {
    /// Records one notification's payload.
    fn note(&mut self, payload: Option<&[u8]>) {
        let id = payload
            .and_then(|p| p.strip_prefix(b"up ").or_else(|| p.strip_prefix(b"down ")))
            .and_then(|id| std::str::from_utf8(id).ok())
            .filter(|id| !id.is_empty());
        match id {
            Some(id) if !self.full && self.ids.len() < MAX_INCREMENTAL => {
                self.ids.push(id.to_string())
            }
            _ => {
                self.full = true;
                self.ids.clear();
            }
        }
    }
}

/// Reads the current entries of `ids` (one round trip): `None` for a key that is gone.
async fn read_ids(shared: &Shared, ids: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
    let keys: Vec<String> = ids.iter().map(|id| shared.keys.node(id)).collect();
    shared
        .run("reading changed entries", |mut c| async move {
            redis::cmd("MGET").arg(&keys).query_async(&mut c).await
        })
        .await
}

/// Aborts a task when dropped (the watcher's subscriber dies with the watcher).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn emit(cluster: &Cluster, message: String) {
    cluster.emit(ClusterEvent::DiscoveryProblem {
        source: SOURCE.to_string(),
        message,
    });
}

/// What a watcher remembers between reads.
#[derive(Default)]
struct WatchState {
    /// The registry's epoch token at the last successful read.
    epoch: Option<String>,
    /// Until then, known nodes missing from the listing are kept (data was lost).
    grace_until: Option<Instant>,
    /// The nodes applied by the last successful sync.
    applied: Vec<Node>,
    /// Skipped entries already reported: key -> reason.
    reported: HashMap<String, String>,
    /// Last failure report: when, and what.
    last_failure: Option<(Instant, String)>,
}

impl WatchState {
    fn apply(&mut self, shared: &Shared, cluster: &Cluster, listing: Listing, epoch: String) {
        let now = Instant::now();
        let interval = shared.options.interval();
        // Recovered (if it was failing): the sync below converges, nothing to report.
        self.last_failure = None;
        if self.epoch.as_ref().is_some_and(|e| *e != epoch) {
            let grace = shared.options.ttl + interval;
            self.grace_until = Some(now + grace);
            emit(
                cluster,
                format!(
                    "the registry {} lost its data for service {:?} (restart or failover); \
                     keeping the {} known nodes for up to {grace:?} while they re-register",
                    shared.link.address,
                    shared.service,
                    self.applied.len()
                ),
            );
        }
        self.epoch = Some(epoch);

        // Report each malformed entry once while it stays the same.
        let mut still_bad = HashSet::new();
        for (key, reason) in &listing.skipped {
            still_bad.insert(key.clone());
            if self.reported.get(key) != Some(reason) {
                emit(cluster, format!("skipped registry entry {key}: {reason}"));
                self.reported.insert(key.clone(), reason.clone());
            }
        }
        self.reported.retain(|k, _| still_bad.contains(k));

        let mut nodes = listing.nodes;
        if self.grace_until.is_some_and(|t| now < t) {
            let listed: HashSet<String> = nodes.iter().map(|n| n.id().to_string()).collect();
            nodes.extend(
                self.applied
                    .iter()
                    .filter(|n| !listed.contains(n.id()))
                    .cloned(),
            );
        } else {
            self.grace_until = None;
        }
        match cluster.sync(nodes.clone()) {
            Ok(()) => self.applied = nodes,
            Err(e) => emit(
                cluster,
                format!(
                    "cannot apply the listing of service {:?}: {e}",
                    shared.service
                ),
            ),
        }
    }

    /// Applies the current entries of a few notified ids (`None`: the key is gone) to the
    /// applied listing. Redis work is O(ids), not O(N). Returns false if a full read is
    /// needed instead: an entry that does not parse (the full read reports it) or a sync
    /// that failed.
    fn apply_ids(
        &mut self,
        cluster: &Cluster,
        ids: Vec<String>,
        entries: Vec<Option<Vec<u8>>>,
    ) -> bool {
        if ids.len() != entries.len() {
            return false;
        }
        let grace = self.grace_until.is_some_and(|t| Instant::now() < t);
        let mut changed: HashMap<String, Option<Node>> = HashMap::new();
        for (id, raw) in ids.into_iter().zip(entries) {
            match raw {
                Some(raw) => match parse_entry(&id, &raw) {
                    Ok(node) => {
                        changed.insert(id, Some(node));
                    }
                    Err(_) => return false,
                },
                // While data is lost (grace), a missing key is not a leave.
                None if grace => {}
                None => {
                    changed.insert(id, None);
                }
            }
        }
        let known: HashMap<&str, &Node> = self.applied.iter().map(|n| (n.id(), n)).collect();
        if changed.iter().all(|(id, n)| match n {
            None => !known.contains_key(id.as_str()),
            Some(n) => known.get(id.as_str()).is_some_and(|a| *a == n),
        }) {
            return true;
        }
        drop(known);
        let mut nodes: Vec<Node> = self
            .applied
            .iter()
            .filter(|n| !changed.contains_key(n.id()))
            .cloned()
            .collect();
        let mut added: Vec<Node> = changed.into_values().flatten().collect();
        added.sort_by(|a, b| a.id().cmp(b.id()));
        nodes.extend(added);
        match cluster.sync(nodes.clone()) {
            Ok(()) => {
                self.applied = nodes;
                true
            }
            Err(_) => false,
        }
    }

    fn failed(&mut self, shared: &Shared, cluster: &Cluster, error: &Error) {
        let message = format!(
            "cannot read the listing of service {:?}: {error}; keeping the current {} nodes and retrying",
            shared.service,
            cluster.len()
        );
        let now = Instant::now();
        let repeat = match &self.last_failure {
            None => true,
            Some((at, what)) => {
                now.duration_since(*at) >= REPEAT_PROBLEM_EVERY || *what != error.to_string()
            }
        };
        if repeat {
            emit(cluster, message);
            self.last_failure = Some((now, error.to_string()));
        }
    }
}

async fn watch_loop(shared: Arc<Shared>, cluster: WeakCluster) {
    let notify = Arc::new(Notify::new());
    let pending = Arc::new(crate::fork::Mutex::new(Pending::default()));
    let _subscriber = AbortOnDrop(
        tokio::spawn(crate::fork::gated(subscriber(
            shared.clone(),
            notify.clone(),
            pending.clone(),
        )))
        .abort_handle(),
    );
    let interval = shared.options.interval();
    let max_backoff = MAX_BACKOFF.min(interval);
    let mut backoff = MIN_BACKOFF.min(max_backoff);
    let mut state = WatchState::default();
    loop {
        let result = read(&shared).await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        match result {
            Ok((listing, epoch)) => {
                state.apply(&shared, &c, listing, epoch);
                drop(c);
                backoff = MIN_BACKOFF.min(max_backoff);
                // Until the next periodic full read: notifications naming a few ids read
                // those keys only (one round trip); anything else ends the wait early.
                let next_full = tokio::time::Instant::now() + interval;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next_full) => break,
                        _ = notify.notified() => {}
                    }
                    let batch = std::mem::take(&mut *pending.lock());
                    if batch.full {
                        break;
                    }
                    let mut ids = batch.ids;
                    ids.sort_unstable();
                    ids.dedup();
                    if ids.is_empty() {
                        continue;
                    }
                    let Ok(entries) = read_ids(&shared, &ids).await else {
                        break;
                    };
                    let Some(c) = cluster.upgrade() else {
                        return;
                    };
                    if !state.apply_ids(&c, ids, entries) {
                        break;
                    }
                }
            }
            Err(e) => {
                state.failed(&shared, &c, &e);
                drop(c);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Keeps a RESP3 connection subscribed to the channel and wakes the watcher on every
/// notification and after every (re)subscription. Reconnects with a backoff of at most 1 s.
async fn subscriber(
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    pending: Arc<crate::fork::Mutex<Pending>>,
) {
    let options = &shared.options;
    let deadline = options.connect_timeout + options.response_timeout + SLACK;
    let mut backoff = MIN_BACKOFF;
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let config = shared.sub_config.clone().set_push_sender(tx);
        let connect = async {
            let mut conn = shared
                .pubsub
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&shared.keys.channel).await?;
            Ok::<_, RedisError>(conn)
        };
        if let Ok(Ok(conn)) = tokio::time::timeout(deadline, connect).await {
            backoff = MIN_BACKOFF;
            // Notifications may have been missed while unsubscribed: re-read now.
            pending.lock().full = true;
            notify.notify_one();
            while let Some(push) = rx.recv().await {
                match push.kind {
                    PushKind::Message => {
                        pending.lock().note(push.data.get(1).and_then(bytes_of));
                        notify.notify_one();
                    }
                    PushKind::Disconnection => break,
                    _ => {}
                }
            }
            drop(conn);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn entries_round_trip() {
        let n = Node::new("web-1", "10.0.0.1", 8080)
            .unwrap()
            .with_weight(3)
            .unwrap()
            .with_zone("a")
            .unwrap()
            .with_metadata("role", "web")
            .unwrap();
        let json = to_json(&n).unwrap();
        assert_eq!(parse_entry("web-1", json.as_bytes()).unwrap(), n);
        let minimal = br#"{"id":"x","host":"h","port":1}"#;
        assert_eq!(
            parse_entry("x", minimal).unwrap(),
            Node::new("x", "h", 1).unwrap()
        );
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        for (raw, needle) in [
            (&b"not json"[..], "not a valid node entry"),
            (br#"{"id":"x","host":"h","port":"80"}"#, "invalid type"),
            (br#"{"id":"x","host":"h","port":0}"#, "port"),
            (br#"{"id":"x","host":"h","port":70000}"#, "not a valid"),
            (br#"{"id":"x","host":"h","port":1,"weight":0}"#, "weight"),
            (br#"{"id":"y","host":"h","port":1}"#, "does not match"),
            (br#"{"id":"x","host":"a b","port":1}"#, "host"),
            (br#"[1,2]"#, "not a valid"),
        ] {
            let e = parse_entry("x", raw).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn options_are_validated() {
        assert!(RegistryOptions::default().validate().is_ok());
        assert_eq!(
            RegistryOptions::default().interval(),
            Duration::from_millis(3333) + Duration::from_nanos(333_333)
        );
        let e = RegistryOptions::default()
            .with_ttl(Duration::from_millis(10))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
        let e = RegistryOptions::default()
            .with_heartbeat_interval(Duration::from_secs(10))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval"), "{e}");
        let e = RegistryOptions::default()
            .with_key_prefix("a b")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("key_prefix"), "{e}");
        let e = RegistryOptions::default()
            .with_connect_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("connect_timeout"), "{e}");
    }

    #[test]
    fn bad_addresses_and_names_are_invalid_arguments() {
        let o = RegistryOptions::default;
        let e = RedisRegistry::new("redis://[::1", "s", o()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = RedisRegistry::new("127.0.0.1:6379", "", o()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = RedisRegistry::new("127.0.0.1:6379", "a b", o()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let r = RedisRegistry::new("127.0.0.1:6379", "web", o()).unwrap();
        assert_eq!(r.node_key("n1"), "clusterkit:r:{web}:node:n1");
        assert_eq!(r.listing_key(), "clusterkit:r:{web}:nodes");
        assert_eq!(r.channel(), "clusterkit:r:{web}:events");
        let e = RedisRegistry::new("127.0.0.1:6379", "a}b", o()).unwrap_err();
        assert!(e.to_string().contains("service"), "{e}");
        let e =
            RedisRegistry::new("127.0.0.1:6379", "web", o().with_key_prefix("a:b")).unwrap_err();
        assert!(e.to_string().contains("key_prefix"), "{e}");
    }
}
