//! Redis Cluster as a cache backend (redis-rs cluster client): the server side shards keys
//! over its masters by hash slot, the client follows the slot map and its changes (`MOVED`,
//! `ASK`, failover), so users who outgrow client-side sharding keep the same interface.
//!
//! Single-key operations go to the master owning the key's slot. Multi-key commands only work
//! within one slot in a cluster, so batches are split into chunks of
//! [`RedisOptions::batch_chunk`] keys, each chunk is grouped by slot, and the groups (one
//! `MGET`, `DEL` or pipeline of `SET`s each) run in parallel; the client's multiplexed
//! connections pipeline them per node. `clear` scans every master (SCAN + UNLINK, never
//! FLUSHALL).
//!
//! The connection is established on first use, so building the backend does no I/O; a failed
//! first connection is retried by the next operation. Its driver task runs on the runtime
//! the backend was built on, or on the shared runtime when built outside one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, try_join_all};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{FromRedisValue, RedisError, Value};
use tokio::sync::OnceCell;

use super::redis::{client_url, map_err, px, set_cmd, ttl_from_pttl, RedisOptions};
use crate::cache::Ttl;
use crate::error::{Error, Result};

/// Keys per `SCAN` step on each master.
const SCAN_COUNT: u64 = 1000;

/// A Redis Cluster, reached through its seed nodes.
pub(crate) struct RedisClusterBackend {
    client: ClusterClient,
    /// The runtime the connection's driver task runs on: the constructor's, or the shared
    /// one when built outside a runtime (as the single-server backend does). In a forked
    /// child the shared runtime of the child (the parent's runtime does not run there).
    runtime: tokio::runtime::Handle,
    /// The fork generation the backend was built in.
    generation: u64,
    /// This process's connection: a forked child connects afresh (the parent's handle is
    /// driven by the parent's runtime, and its cell may be mid-initialisation); the parent's
    /// is leaked there, never used or dropped.
    conn: crate::fork::PerProcess<Arc<OnceCell<ClusterConnection>>>,
    chunk: usize,
    /// Bound on establishing the first connection (seeds, slot map, masters).
    connect_deadline: Duration,
    /// The seeds, for messages.
    seeds: String,
}

/// Maps a redis-rs error like the single-server backend does, and the cluster's own
/// "cannot serve this now" answers (no connection to the node, `CLUSTERDOWN`, `MASTERDOWN`,
/// `TRYAGAIN`, a redirection that could not be followed) to `unavailable`.
fn cluster_err(e: RedisError, what: &str) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    match e.kind() {
        K::ClusterConnectionNotFound
        | K::Server(S::ClusterDown | S::MasterDown | S::TryAgain | S::Moved | S::Ask) => {
            // Redacted like every redis-rs message (it may name a URL with credentials).
            Error::Unavailable(format!(
                "{what}: {}",
                crate::connection::redact(&e.to_string())
            ))
        }
        _ => map_err(e, what),
    }
}

fn parse<T: FromRedisValue>(v: Value, what: &str) -> Result<T> {
    T::from_redis_value(v).map_err(|e| map_err(e.into(), what))
}

/// Indices of `keys` grouped by hash slot, groups and indices in first-seen order.
fn slot_groups<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut index: HashMap<Slot, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let g = *index.entry(Slot::for_key(k.as_ref())).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// `host:port` (the host may itself hold colons: IPv6) → its parts.
fn split_address(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

impl RedisClusterBackend {
    /// A client for the cluster reached through `seeds` (`host:port` or `redis://` URLs);
    /// no I/O. Fails on no seed, a bad address or bad options.
    pub(crate) fn new(seeds: &[&str], options: &RedisOptions) -> Result<RedisClusterBackend> {
        options.validate()?;
        if seeds.is_empty() {
            return Err(Error::invalid("seeds", "must name at least one node"));
        }
        if options.connection.db.is_some_and(|db| db != 0) {
            return Err(Error::invalid("db", "a Redis Cluster has only database 0"));
        }
        // Each seed with the credentials and TLS mode applied; the certificates go to the
        // builder, which uses them for every node of the slot map.
        let infos = seeds
            .iter()
            .map(|s| {
                client_url(s).map_err(|e| e.in_field("seeds"))?;
                crate::connection::prepare(
                    s,
                    &options.connection,
                    crate::connection::Resolution::HostOnly,
                )
                .map(|t| t.client.get_connection_info().clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let certs = match &options.connection.tls {
            Some(t) => crate::connection::certificates(t)?,
            None => None,
        };
        // Every attempt is bounded by the timeouts; a whole request (retries, reconnection,
        // MOVED/ASK redirections) by one reconnection plus one answer, so a dead master costs
        // about a second rather than redis-rs's default 16 retries with growing waits.
        let retries = u32::try_from(options.reconnect_retries.max(1)).unwrap_or(u32::MAX);
        let mut builder = ClusterClientBuilder::new(infos);
        if let Some(c) = certs {
            builder = builder.certs(c);
        }
        let client = builder
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.response_timeout)
            .overall_response_timeout(Some(options.connect_timeout + options.response_timeout))
            .retries(retries)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(|e| {
                let shown: Vec<String> =
                    seeds.iter().map(|s| crate::connection::redact(s)).collect();
                Error::invalid(
                    "seeds",
                    format!("{shown:?}: {}", crate::connection::redact(&e.to_string())),
                )
            })?;
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => crate::blocking::runtime()?.handle().clone(),
        };
        Ok(RedisClusterBackend {
            client,
            runtime,
            generation: crate::blocking::fork_generation(),
            conn: crate::fork::PerProcess::new(),
            chunk: options.batch_chunk,
            // Seeds in parallel, then the slot map, then the other masters.
            connect_deadline: 2 * options.connect_timeout + 2 * options.response_timeout,
            seeds: seeds
                .iter()
                .map(|s| crate::connection::redact(s))
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    /// The seeds, comma-separated.
    pub(crate) fn seeds(&self) -> &str {
        &self.seeds
    }

    /// The cluster connection, established on first use (a failure is returned and the next
    /// call tries again).
    async fn conn(&self) -> Result<ClusterConnection> {
        let cell = self.conn.get_or_try_init(|| Ok(Arc::default()))?;
        let c = cell
            .get_or_try_init(|| async {
                // redis-rs spawns the connection's driver task on the runtime it connects
                // from: connect on the backend's runtime, whichever runtime the caller uses
                // (in a forked child: the child's shared runtime).
                let runtime = if self.generation == crate::blocking::current_generation() {
                    self.runtime.clone()
                } else {
                    crate::blocking::runtime()?.handle().clone()
                };
                let client = self.client.clone();
                let mut task = runtime.spawn(async move { client.get_async_connection().await });
                match tokio::time::timeout(self.connect_deadline, &mut task).await {
                    Ok(Ok(Ok(c))) => Ok(c),
                    Ok(Ok(Err(e))) => Err(cluster_err(
                        e,
                        &format!("redis cluster {}: connecting", self.seeds),
                    )),
                    Ok(Err(e)) => Err(Error::Unavailable(format!(
                        "redis cluster {}: connecting: the runtime is gone ({e})",
                        self.seeds
                    ))),
                    Err(_) => {
                        task.abort();
                        Err(Error::Timeout(format!(
                            "redis cluster {}: no connection within {:?}",
                            self.seeds, self.connect_deadline
                        )))
                    }
                }
            })
            .await?;
        Ok(c.clone())
    }

    fn what(&self) -> String {
        format!("redis cluster {}", self.seeds)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c)
            .await
            .map_err(|e| cluster_err(e, &self.what()))
    }

    /// Every master of the cluster as `(host, port)`, checked to be reachable.
    ///
    /// redis-rs silently skips masters it has no connection to when it fans a command out,
    /// so the list is not taken from the fan-out alone: every master that answers reports its
    /// view of the slot map (`CLUSTER SLOTS`), and a master named there that did not answer
    /// fails the call with `unavailable` (a `clear` or `ping` must not skip a master).
    async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let mut c = self.conn().await?;
        // No response policy: one answer per master, keyed by its address.
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let v = c
            .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
            .await
            .map_err(|e| cluster_err(e, &self.what()))?;
        let Value::Map(entries) = v else {
            return Err(Error::Backend(format!(
                "{}: expected one CLUSTER SLOTS answer per master, got {v:?}",
                self.what()
            )));
        };
        let mut answered: BTreeSet<(String, u16)> = BTreeSet::new();
        let mut named: BTreeSet<(String, u16)> = BTreeSet::new();
        for (addr, answer) in entries {
            let addr: String = parse(addr, &self.what())?;
            let what = format!("{}: {addr}", self.what());
            if let Value::ServerError(e) = answer {
                return Err(cluster_err(e.into(), &what));
            }
            let node = split_address(&addr)
                .ok_or_else(|| Error::Backend(format!("{what}: not a host:port address")))?;
            named.extend(slot_masters(answer, &node.0));
            answered.insert(node);
        }
        if answered.is_empty() {
            return Err(Error::Unavailable(format!(
                "{}: no master reachable",
                self.what()
            )));
        }
        let missing: Vec<String> = named
            .difference(&answered)
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Unavailable(format!(
                "{}: master(s) {} did not answer",
                self.what(),
                missing.join(", ")
            )));
        }
        Ok(answered.into_iter().collect())
    }

    /// Sends `cmd` to the node at `host:port` (through the cluster client's connection).
    async fn on_node(&self, cmd: redis::Cmd, host: &str, port: u16) -> Result<Value> {
        let mut c = self.conn().await?;
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        });
        c.route_command(cmd, routing)
            .await
            .map_err(|e| cluster_err(e, &format!("{}: {host}:{port}", self.what())))
    }

    /// Checks that every master answers and reports `cluster_state:ok`.
    /// Runs a Lua script on the master of its keys (which must share a hash slot).
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T> {
        let inv = crate::cache::redis::invocation(script, keys, args);
        let mut c = self.conn().await?;
        inv.invoke_async(&mut c)
            .await
            .map_err(|e| cluster_err(e, &self.what()))
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let masters = self.masters().await?;
        try_join_all(masters.iter().map(|(host, port)| async move {
            let what = format!("{}: {host}:{port}", self.what());
            let info: String = parse(
                self.on_node(redis::cmd("CLUSTER").arg("INFO").clone(), host, *port)
                    .await?,
                &what,
            )?;
            if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Ok(());
            }
            let state = info
                .lines()
                .find(|l| l.starts_with("cluster_state:"))
                .unwrap_or("no cluster_state")
                .trim()
                .to_string();
            Err(Error::Unavailable(format!("{what}: reports {state}")))
        }))
        .await?;
        Ok(())
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

    pub(crate) async fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.query::<u64>(redis::cmd("DEL").arg(key)).await? > 0)
    }

    pub(crate) async fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.query::<u64>(redis::cmd("EXISTS").arg(key)).await? > 0)
    }

    pub(crate) async fn increment(&self, key: &[u8], delta: i64) -> Result<i64> {
        self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    pub(crate) async fn ttl(&self, key: &[u8]) -> Result<Ttl> {
        let ms: i64 = self.query(redis::cmd("PTTL").arg(key)).await?;
        Ok(ttl_from_pttl(ms))
    }

    pub(crate) async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>> {
        let conn = self.conn().await?;
        let what = self.what();
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
        for (n, chunk) in keys.chunks(self.chunk).enumerate() {
            let base = n * self.chunk;
            let groups = slot_groups(chunk);
            let results = join_all(groups.iter().map(|idx| {
                let mut c = conn.clone();
                let mut cmd = redis::cmd("MGET");
                for &i in idx {
                    cmd.arg(&chunk[i]);
                }
                let what = &what;
                async move {
                    cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut c)
                        .await
                        .map_err(|e| cluster_err(e, what))
                }
            }))
            .await;
            for (idx, r) in groups.iter().zip(results) {
                let values = r?;
                if values.len() != idx.len() {
                    return Err(Error::Backend(format!(
                        "{what}: MGET returned {} values for {} keys",
                        values.len(),
                        idx.len()
                    )));
                }
                for (&i, v) in idx.iter().zip(values) {
                    out[base + i] = v.map(Bytes::from);
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn set_many(
        &self,
        items: &[(Vec<u8>, Bytes)],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        let what = self.what();
        for chunk in items.chunks(self.chunk) {
            let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
            let groups = slot_groups(&keys);
            // One pipeline per slot: the cluster client sends it to the slot's master.
            let results = join_all(groups.iter().map(|idx| {
                let mut c = conn.clone();
                let mut pipe = redis::pipe();
                for &i in idx {
                    let (k, v) = &chunk[i];
                    let cmd = pipe.cmd("SET").arg(k.as_slice()).arg(&v[..]);
                    if let Some(t) = ttl {
                        cmd.arg("PX").arg(px(t));
                    }
                    cmd.ignore();
                }
                let what = &what;
                async move {
                    pipe.query_async::<()>(&mut c)
                        .await
                        .map_err(|e| cluster_err(e, what))
                }
            }))
            .await;
            results.into_iter().collect::<Result<Vec<()>>>()?;
        }
        Ok(())
    }

    pub(crate) async fn delete_many(&self, keys: &[Vec<u8>]) -> Result<u64> {
        let conn = self.conn().await?;
        self.remove(&conn, "DEL", keys).await
    }

    /// `DEL` or `UNLINK` of `keys`, one command per slot (per chunk), in parallel; returns how
    /// many keys existed.
    async fn remove<K: AsRef<[u8]>>(
        &self,
        conn: &ClusterConnection,
        command: &str,
        keys: &[K],
    ) -> Result<u64> {
        let what = self.what();
        let mut removed = 0;
        for chunk in keys.chunks(self.chunk) {
            let groups = slot_groups(chunk);
            let results = join_all(groups.iter().map(|idx| {
                let mut c = conn.clone();
                let mut cmd = redis::cmd(command);
                for &i in idx {
                    cmd.arg(chunk[i].as_ref());
                }
                let what = &what;
                async move {
                    cmd.query_async::<u64>(&mut c)
                        .await
                        .map_err(|e| cluster_err(e, what))
                }
            }))
            .await;
            for r in results {
                removed += r?;
            }
        }
        Ok(removed)
    }

    /// Deletes every key starting with `prefix` on every master (SCAN + UNLINK; never
    /// FLUSHALL), the masters in parallel. Glob characters in `prefix` are escaped: it
    /// matches literally.
    pub(crate) async fn clear_prefix(&self, prefix: &[u8]) -> Result<u64> {
        let conn = self.conn().await?;
        let masters = self.masters().await?;
        let mut pattern = crate::cache::glob_escape(prefix);
        pattern.push(b'*');
        let counts = try_join_all(
            masters
                .iter()
                .map(|(host, port)| self.clear_on(&conn, host, *port, &pattern)),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }

    async fn clear_on(
        &self,
        conn: &ClusterConnection,
        host: &str,
        port: u16,
        pattern: &[u8],
    ) -> Result<u64> {
        let what = format!("{}: {host}:{port}", self.what());
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                parse(self.on_node(scan, host, port).await?, &what)?;
            if !keys.is_empty() {
                // Keys of one master still span many slots: UNLINK per slot.
                removed += self.remove(conn, "UNLINK", &keys).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// The masters named in a `CLUSTER SLOTS` answer, as redis-rs reads them: an empty, null or
/// wildcard host means the answering node's host, `?` an unknown node (skipped).
pub(crate) fn slot_masters(answer: Value, answering_host: &str) -> Vec<(String, u16)> {
    let Value::Array(ranges) = answer else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else {
            continue;
        };
        let Some(Value::Array(master)) = range.into_iter().nth(2) else {
            continue;
        };
        let mut fields = master.into_iter();
        let host = match fields.next() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(&h).into_owned(),
            Some(Value::SimpleString(h)) => h,
            Some(Value::Nil) => String::new(),
            _ => continue,
        };
        let port = match fields.next() {
            Some(Value::Int(p)) => match u16::try_from(p) {
                Ok(p) => p,
                Err(_) => continue,
            },
            _ => continue,
        };
        let host = match host.as_str() {
            "?" => continue,
            "" | "0.0.0.0" | "::" => answering_host.to_string(),
            _ => host,
        };
        out.push((host, port));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_order_and_split_slots() {
        let keys: Vec<Vec<u8>> = vec![
            b"{a}1".to_vec(),
            b"{b}1".to_vec(),
            b"{a}2".to_vec(),
            b"{b}2".to_vec(),
            b"{a}3".to_vec(),
        ];
        assert_eq!(slot_groups(&keys), vec![vec![0, 2, 4], vec![1, 3]]);
    }

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_address("127.0.0.1:7000"),
            Some(("127.0.0.1".to_string(), 7000))
        );
        assert_eq!(split_address("::1:7000"), Some(("::1".to_string(), 7000)));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address("h:notaport"), None);
    }

    #[test]
    fn masters_from_cluster_slots() {
        let node = |h: Value, p: i64| Value::Array(vec![h, Value::Int(p)]);
        let range = |m: Value| Value::Array(vec![Value::Int(0), Value::Int(10), m]);
        let answer = Value::Array(vec![
            range(node(Value::BulkString(b"10.0.0.1".to_vec()), 7000)),
            range(node(Value::BulkString(Vec::new()), 7001)),
            range(node(Value::Nil, 7002)),
            range(node(Value::BulkString(b"?".to_vec()), 7003)),
            range(node(Value::BulkString(b"0.0.0.0".to_vec()), 7004)),
            Value::Array(vec![Value::Int(0)]),
        ]);
        assert_eq!(
            slot_masters(answer, "me"),
            vec![
                ("10.0.0.1".to_string(), 7000),
                ("me".to_string(), 7001),
                ("me".to_string(), 7002),
                ("me".to_string(), 7004),
            ]
        );
    }

    #[test]
    fn bad_seeds_are_rejected_without_io() {
        let o = RedisOptions::default();
        assert!(RedisClusterBackend::new(&[], &o).is_err());
        assert!(RedisClusterBackend::new(&[""], &o).is_err());
        assert!(RedisClusterBackend::new(&["has space:1"], &o).is_err());
        assert!(RedisClusterBackend::new(&["127.0.0.1:7000", "127.0.0.1:7001"], &o).is_ok());
    }

    #[test]
    fn connection_settings_apply_to_the_seeds() {
        use crate::connection::{ConnectionSettings, Secret};
        let with = |s: ConnectionSettings| RedisOptions::default().with_connection(s);
        // A cluster has only database 0.
        let e = RedisClusterBackend::new(
            &["127.0.0.1:7000"],
            &with(ConnectionSettings::default().with_db(1)),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("db"), "{e}");
        // Credentials reach the client; the printed seeds never hold a password.
        let b = RedisClusterBackend::new(
            &["redis://:seed-url-pw@127.0.0.1:7000", "127.0.0.1:7001"],
            &with(ConnectionSettings::default().with_password(Secret::new("cluster-settings-pw"))),
        )
        .unwrap();
        assert!(!b.seeds().contains("seed-url-pw"), "{}", b.seeds());
    }
}
