//! The keyspace of docs/keyspace.md, held to account: after each lifecycle (sessions, locks,
//! Redlock, cache, registry) every key in the server is listed with its TTL and must be one
//! the document allows, with a TTL or an owner; `clear()` on every backend deletes cache
//! entries only and never another namespace's; a `PSUBSCRIBE *` observer sees no session id,
//! lock token or value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use clusterkit::cache::{Cache, DistributedOptions, MemoryOptions, RedisOptions};
use clusterkit::discovery::{RedisRegistry, RegistryOptions};
use clusterkit::lock::{DistributedLock, LockOptions, FENCE_TTL};
use clusterkit::session::{SessionOptions, SessionStore};
use clusterkit::{ErrorKind, Node};
use support::{RedisClusterHarness, RedisServer};

/// Every key of `port` with its PTTL in ms (-1: no TTL), sorted (SCAN, bounded).
fn keys_of(port: u16) -> Vec<(String, i64)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut c = client.get_connection().unwrap();
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .unwrap();
        for k in keys {
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            if pttl != -2 {
                out.push((k, pttl));
            }
        }
        if next == 0 {
            out.sort();
            return out;
        }
        cursor = next;
    }
    panic!("SCAN did not finish");
}

fn key_names(port: u16) -> Vec<String> {
    keys_of(port).into_iter().map(|(k, _)| k).collect()
}

/// The keys docs/keyspace.md allows, with their TTL bound in ms (`None`: owned, no TTL).
fn allowed(key: &str, ns: &str) -> Option<Option<i64>> {
    let rest = key.strip_prefix(ns)?.strip_prefix(':')?;
    let (space, rest) = rest.split_once(':')?;
    let braced = rest.starts_with('{') && rest.ends_with('}') && rest.len() > 2;
    let hour = FENCE_TTL.as_millis() as i64;
    match space {
        "s" if braced && rest.len() == 34 => Some(Some(12 * 3600 * 1000)),
        "sl" if braced && rest.len() == 34 => Some(Some(30_000)),
        "l" if braced => Some(Some(86_400_000)),
        "f" if braced => Some(Some(hour.max(86_400_000))),
        "c" => Some(Some(i64::MAX)), // user data, with the TTL the user gave
        // The service's listing and epoch are owned by the service (no TTL); node entries
        // live for the heartbeat TTL.
        "r" if rest.starts_with('{') => {
            Some(if rest.ends_with(":epoch") || rest.ends_with(":nodes") {
                None
            } else {
                Some(86_400_000)
            })
        }
        // The task queue (issue #16): a queue's lanes, delayed set and dead letters are owned
        // by the queue (`TaskQueue::purge` deletes them); idempotency keys live for their
        // window (24 h by default).
        "q" if rest.starts_with('{') => {
            let (name, suffix) = rest[1..].split_once("}:")?;
            if name.is_empty() || name.contains(['{', '}', ':']) {
                return None;
            }
            match suffix {
                "h" | "n" | "l" | "d" | "x" | "w" => Some(None),
                s if s.starts_with("u:") && s.len() > 2 => Some(Some(86_400_000)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Asserts that every key of `port` is one docs/keyspace.md allows for namespace `ns`, with a
/// TTL within its bound (or a documented owner), and returns the names.
#[track_caller]
fn assert_documented(port: u16, ns: &str, when: &str) -> Vec<String> {
    let keys = keys_of(port);
    for (k, pttl) in &keys {
        match allowed(k, ns) {
            None => panic!("{when}: undocumented key {k:?} (pttl {pttl}) in {keys:?}"),
            Some(Some(max)) => assert!(
                *pttl > 0 && *pttl <= max,
                "{when}: {k:?} must have a TTL in (0, {max}] ms, has {pttl}"
            ),
            Some(None) => assert_eq!(*pttl, -1, "{when}: {k:?}"),
        }
    }
    keys.into_iter().map(|(k, _)| k).collect()
}

/// A well-formed session id nobody created (what a random cookie looks like).
fn unknown_id(i: usize) -> String {
    format!("Unknown{i:025}")
}

fn options() -> RedisOptions {
    RedisOptions::default().with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lifecycles_leave_only_documented_keys() {
    let server = RedisServer::start();
    let port = server.port();
    let cache = Cache::redis(&server.addr(), "app", options()).unwrap();
    let store = SessionStore::new(
        &cache,
        SessionOptions::default()
            .with_timeouts(Duration::from_secs(600), Duration::from_secs(3600))
            .with_lock(Duration::from_secs(5), Duration::from_secs(1)),
    )
    .unwrap();

    // Unknown ids (random cookies): load, locked load, touch, destroy write nothing.
    for i in 0..100 {
        let id = unknown_id(i);
        assert!(store.load(id.as_bytes()).await.unwrap().is_none());
        assert!(store.load_locked(id.as_bytes()).await.unwrap().is_none());
        assert!(!store.touch(id.as_bytes()).await.unwrap());
        assert!(!store.destroy(id.as_bytes()).await.unwrap());
    }
    assert_eq!(keys_of(port), vec![], "unknown ids left keys behind");

    // create + save: the session, with its TTL (idle timeout).
    let mut s = store.create().unwrap();
    s.set("user", "alice");
    store.save(&mut s).await.unwrap();
    let session_key = format!("app:s:{{{}}}", s.id());
    assert_eq!(
        assert_documented(port, "app", "create"),
        vec![session_key.clone()]
    );
    let (_, pttl) = keys_of(port)[0].clone();
    assert!(pttl > 590_000 && pttl <= 600_000, "session TTL {pttl}");

    // load: nothing new.
    assert!(store.load(s.id().as_bytes()).await.unwrap().is_some());
    assert_eq!(key_names(port), vec![session_key.clone()]);

    // locked load: the lock, with lock_ttl; no fence counter.
    let mut locked = store.load_locked(s.id().as_bytes()).await.unwrap().unwrap();
    let lock_key = format!("app:sl:{{{}}}", s.id());
    assert_eq!(
        assert_documented(port, "app", "locked load"),
        vec![session_key.clone(), lock_key.clone()]
    );
    let lock_ttl = keys_of(port)[1].1;
    assert!(lock_ttl > 4_000 && lock_ttl <= 5_000, "lock TTL {lock_ttl}");
    // save releases the lock.
    locked.set("cart", "3 items");
    store.save(&mut locked).await.unwrap();
    assert_eq!(
        assert_documented(port, "app", "locked save"),
        vec![session_key.clone()]
    );
    // unlock releases it too.
    let mut locked = store.load_locked(s.id().as_bytes()).await.unwrap().unwrap();
    store.unlock(&mut locked).await.unwrap();
    assert_eq!(
        assert_documented(port, "app", "unlock"),
        vec![session_key.clone()]
    );

    // regenerate: only the new id's key.
    let mut s = store.load(s.id().as_bytes()).await.unwrap().unwrap();
    store.regenerate(&mut s).await.unwrap();
    let new_key = format!("app:s:{{{}}}", s.id());
    assert_ne!(new_key, session_key);
    assert_eq!(assert_documented(port, "app", "regenerate"), vec![new_key]);

    // destroy: nothing.
    assert!(store.destroy(s.id().as_bytes()).await.unwrap());
    assert_eq!(keys_of(port), vec![], "destroy left keys behind");

    // Expiry: a session past its idle timeout leaves nothing (Redis expires it).
    let short = SessionStore::new(
        &cache,
        SessionOptions::default()
            .with_timeouts(Duration::from_millis(200), Duration::from_secs(60)),
    )
    .unwrap();
    let mut s = short.create().unwrap();
    s.set("x", "y");
    short.save(&mut s).await.unwrap();
    assert_eq!(assert_documented(port, "app", "short session").len(), 1);
    let gone = support::wait_until(Duration::from_secs(5), || keys_of(port).is_empty());
    assert!(gone, "an expired session stayed: {:?}", keys_of(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_lifecycles_leave_only_fences_with_a_ttl() {
    let server = RedisServer::start();
    let port = server.port();
    let locks = DistributedLock::redis(
        &server.addr(),
        LockOptions::default().with_key_prefix("app"),
    )
    .unwrap();
    let ttl = Duration::from_secs(10);

    // acquire: the lock (TTL = its own) and its fence (TTL >= an hour).
    let g = locks.try_acquire("order:42", ttl).await.unwrap().unwrap();
    let keys = keys_of(port);
    assert_eq!(
        assert_documented(port, "app", "acquire"),
        vec![
            "app:f:{order:42}".to_string(),
            "app:l:{order:42}".to_string()
        ]
    );
    let fence_ttl = keys[0].1;
    let hour = FENCE_TTL.as_millis() as i64;
    assert!(
        fence_ttl > hour - 10_000 && fence_ttl <= hour,
        "fence TTL {fence_ttl}"
    );
    assert!(
        keys[1].1 > 9_000 && keys[1].1 <= 10_000,
        "lock TTL {}",
        keys[1].1
    );
    let first = g.fencing_token();
    g.release().await.unwrap();
    // release: only the fence.
    assert_eq!(
        assert_documented(port, "app", "release"),
        vec!["app:f:{order:42}".to_string()]
    );

    // Tokens increase, are at least the server's clock in µs, and stay below 2^53.
    let g = locks.try_acquire("order:42", ttl).await.unwrap().unwrap();
    assert!(g.fencing_token() > first);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        first + 60_000_000 > now_us && g.fencing_token() < 1 << 53,
        "token {first} vs clock {now_us}"
    );
    let second = g.fencing_token();
    g.release().await.unwrap();
    // A fence that expired (here: deleted) still never gives a smaller token.
    assert_eq!(server.cmd(&["DEL", "app:f:{order:42}"]), ":1");
    let g = locks.try_acquire("order:42", ttl).await.unwrap().unwrap();
    assert!(
        g.fencing_token() > second,
        "{} after {second}",
        g.fencing_token()
    );
    g.release().await.unwrap();

    // Expiry: a holder that never releases leaves its lock only until the TTL.
    let g = locks
        .try_acquire("crashed", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    std::mem::forget(g);
    assert_eq!(assert_documented(port, "app", "crashed holder").len(), 3);
    let expired = support::wait_until(Duration::from_secs(5), || {
        !key_names(port).contains(&"app:l:{crashed}".to_string())
    });
    assert!(expired, "the lock outlived its TTL");
    assert_eq!(
        assert_documented(port, "app", "after expiry"),
        vec![
            "app:f:{crashed}".to_string(),
            "app:f:{order:42}".to_string()
        ]
    );

    // Lock names cannot reach fences: `x:fence` and `x` are independent.
    let a = locks.try_acquire("x:fence", ttl).await.unwrap().unwrap();
    let b = locks.try_acquire("x", ttl).await.unwrap().unwrap();
    let a2 = locks.try_acquire("x:fence", ttl).await.unwrap();
    assert!(a2.is_none(), "x:fence must still be held");
    b.release().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_leaves_only_fences_with_a_ttl_on_every_master() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let refs: Vec<&str> = addrs.iter().map(|s| s.as_str()).collect();
    let locks = DistributedLock::redlock(&refs, LockOptions::default()).unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let g = locks
            .acquire_timeout("job", Duration::from_secs(5), Duration::from_secs(2))
            .await
            .unwrap();
        assert!(g.fencing_token() > last);
        last = g.fencing_token();
        let holding = servers
            .iter()
            .filter(|s| key_names(s.port()).contains(&"clusterkit:l:{job}".to_string()))
            .count();
        assert!(holding >= 2, "the lock is on {holding} masters");
        g.release().await.unwrap();
    }
    assert!(last < 1 << 53);
    let fence = "clusterkit:f:{job}".to_string();
    for s in &servers {
        // Releases complete in the background on the last master: wait for them (bounded).
        // A master outside every storing quorum has no fence at all.
        let clean = support::wait_until(Duration::from_secs(3), || {
            key_names(s.port()).iter().all(|k| *k == fence)
        });
        assert!(clean, "master {}: {:?}", s.addr(), keys_of(s.port()));
        assert_documented(s.port(), "clusterkit", "redlock release");
    }
    let with_fence = servers
        .iter()
        .filter(|s| key_names(s.port()).contains(&fence))
        .count();
    assert!(
        with_fence >= 2,
        "the fence is stored on {with_fence} masters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_register_and_deregister_leave_only_the_epoch() {
    let server = RedisServer::start();
    let port = server.port();
    let registry = RedisRegistry::new(
        &server.url(),
        "web",
        RegistryOptions::default().with_key_prefix("app"),
    )
    .unwrap();
    let reg = registry
        .register(Node::new("web-1", "127.0.0.1", 8080).unwrap())
        .await
        .unwrap();
    assert_eq!(registry.list().await.unwrap().nodes.len(), 1);
    let keys = assert_documented(port, "app", "register");
    assert!(
        keys.contains(&"app:r:{web}:node:web-1".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&"app:r:{web}:nodes".to_string()), "{keys:?}");
    reg.deregister().await.unwrap();
    let keys = assert_documented(port, "app", "deregister");
    assert!(
        keys.iter().all(|k| k == "app:r:{web}:epoch"),
        "deregister left {keys:?}"
    );
}

/// Puts one of everything in namespace `ns` (cache entries, a session, a lock, a fence and a
/// registry entry where the backend has them) and returns the session id.
async fn populate(cache: &Cache, n: usize) -> String {
    for i in 0..n {
        cache
            .set(format!("k{i}").as_bytes(), "v", None)
            .await
            .unwrap();
    }
    let store = SessionStore::new(cache, SessionOptions::default()).unwrap();
    let mut s = store.create().unwrap();
    s.set("user", "alice");
    store.save(&mut s).await.unwrap();
    s.id().to_string()
}

async fn session_alive(cache: &Cache, id: &str) -> bool {
    let store = SessionStore::new(cache, SessionOptions::default()).unwrap();
    store.load(id.as_bytes()).await.unwrap().is_some()
}

/// `clear` of namespace `a` on `a`'s cache: exactly `a`'s entries, `ab`'s stay, sessions of
/// both stay. `copies`: how many servers hold each entry; `extra`: entries `a` already holds.
async fn clear_scoped(a: &Cache, copies: u64, extra: u64) {
    let ab = a.with_namespace("ab").unwrap();
    assert_eq!(
        a.with_namespace("a:b").unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "a namespace with the separator would overlap another"
    );
    let sa = populate(a, 20).await;
    let sab = populate(&ab, 7).await;
    assert_eq!(a.clear().await.unwrap(), 20 * copies + extra);
    assert!(a.get(b"k0").await.unwrap().is_none());
    assert_eq!(ab.get(b"k6").await.unwrap().unwrap(), "v");
    assert!(session_alive(a, &sa).await, "clear deleted a session");
    assert!(session_alive(&ab, &sab).await);
    assert_eq!(ab.clear().await.unwrap(), 7 * copies);
    assert!(session_alive(&ab, &sab).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_on_the_embedded_backend_deletes_cache_entries_only() {
    let a = Cache::memory("a", MemoryOptions::default()).unwrap();
    clear_scoped(&a, 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_on_one_redis_deletes_cache_entries_only() {
    let server = RedisServer::start();
    let port = server.port();
    let a = Cache::redis(&server.addr(), "a", options()).unwrap();
    // Locks, fences and registry entries of namespace `a` on the same server.
    let locks = DistributedLock::redis(&server.addr(), LockOptions::default().with_key_prefix("a"))
        .unwrap();
    let held = locks
        .try_acquire("c:k0", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let registry = RedisRegistry::new(
        &server.url(),
        "c",
        RegistryOptions::default().with_key_prefix("a"),
    )
    .unwrap();
    let reg = registry
        .register(Node::new("n1", "127.0.0.1", 1).unwrap())
        .await
        .unwrap();
    // Keys that look like cache keys to a careless pattern: a user key `*` and one with `[`.
    a.set(b"*", "star", None).await.unwrap();
    a.set(b"[x]", "bracket", None).await.unwrap();
    let before: Vec<String> = key_names(port)
        .into_iter()
        .filter(|k| !k.starts_with("a:c:"))
        .collect();
    clear_scoped(&a, 1, 2).await;
    assert!(a.get(b"*").await.unwrap().is_none());
    let after: Vec<String> = key_names(port)
        .into_iter()
        .filter(|k| !k.starts_with("a:c:") && !k.starts_with("ab:"))
        .collect();
    for k in &before {
        assert!(after.contains(k), "clear deleted {k}: {after:?}");
    }
    for want in [
        "a:l:{c:k0}",
        "a:f:{c:k0}",
        "a:r:{c}:node:n1",
        "a:r:{c}:nodes",
    ] {
        assert!(
            after.contains(&want.to_string()),
            "{want} missing: {after:?}"
        );
    }
    assert!(held.is_held());
    held.release().await.unwrap();
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_on_a_sharded_pool_deletes_cache_entries_only() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let pool = support::ketama_pool(&servers);
    let a = Cache::distributed(pool, "a", DistributedOptions::default().with_replicas(2)).unwrap();
    clear_scoped(&a, 2, 0).await;
    for s in &servers {
        for k in key_names(s.port()) {
            assert!(
                k.starts_with("a:s:{") || k.starts_with("ab:s:{"),
                "{}: {k} survived the clears",
                s.addr()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_on_a_redis_cluster_deletes_cache_entries_only() {
    let cluster = RedisClusterHarness::start();
    let seeds = cluster.addrs();
    let refs: Vec<&str> = seeds.iter().map(|s| s.as_str()).collect();
    let a = Cache::redis_cluster(&refs, "a", options()).unwrap();
    clear_scoped(&a, 1, 0).await;
    // Only sessions are left on the masters.
    for node in cluster.nodes() {
        for k in key_names(node.port()) {
            assert!(
                k.starts_with("a:s:{") || k.starts_with("ab:s:{"),
                "{}: {k} survived the clears",
                node.addr()
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psubscribe_observer_sees_no_secret() {
    // Every test server runs a `PSUBSCRIBE *` audit (support::PubSubAudit).
    let server = RedisServer::start();
    let cache = Cache::redis(&server.addr(), "app", options()).unwrap();
    let store = SessionStore::new(
        &cache,
        SessionOptions::default().with_lock(Duration::from_secs(5), Duration::from_secs(3)),
    )
    .unwrap();
    let locks = DistributedLock::redis(
        &server.addr(),
        LockOptions::default().with_key_prefix("app"),
    )
    .unwrap();
    let mut secrets: Vec<String> = Vec::new();

    // Cache traffic.
    for i in 0..10 {
        let value = format!("cache-value-secret-{i}");
        cache
            .set(format!("k{i}").as_bytes(), value.clone(), None)
            .await
            .unwrap();
        assert_eq!(
            cache
                .get(format!("k{i}").as_bytes())
                .await
                .unwrap()
                .unwrap(),
            value
        );
        secrets.push(value);
    }
    cache.clear().await.unwrap();

    // Sessions, locked saves and regeneration.
    for _ in 0..5 {
        let mut s = store.create().unwrap();
        s.set("user", "session-value-secret");
        store.save(&mut s).await.unwrap();
        secrets.push(s.id().to_string());
        let mut l = store.load_locked(s.id().as_bytes()).await.unwrap().unwrap();
        l.set("cart", "session-value-secret");
        store.save(&mut l).await.unwrap();
        store.regenerate(&mut l).await.unwrap();
        secrets.push(l.id().to_string());
        store.destroy(l.id().as_bytes()).await.unwrap();
    }
    secrets.push("session-value-secret".into());

    // Locks: releases with a waiter (the notification path), so something is published.
    let name = "lock-name-secret";
    let mut releases = 0;
    for _ in 0..5 {
        let g = locks
            .try_acquire(name, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        secrets.push(g.token().to_string());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let g = locks
                    .acquire_timeout(name, Duration::from_secs(5), Duration::from_secs(3))
                    .await
                    .unwrap();
                let t = g.token().to_string();
                g.release().await.unwrap();
                t
            })
        };
        // Time for the waiter to be refused and queued: only a release that hands the lock
        // to a queued waiter publishes (issue #18); the waiter's own release has nobody to
        // wake and publishes nothing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        g.release().await.unwrap();
        secrets.push(waiter.await.unwrap());
        releases += 1;
    }

    // A short grace period for messages in flight, then everything the audit saw.
    std::thread::sleep(Duration::from_millis(300));
    let seen: Vec<u8> = server
        .published()
        .into_iter()
        .flat_map(|(channel, message)| [channel, b"\n".to_vec(), message, b"\n".to_vec()])
        .flatten()
        .collect();
    // Not vacuous: the observer did see the lock releases.
    let channel_msgs = seen
        .windows(b"app:l:released".len())
        .filter(|w| *w == b"app:l:released")
        .count();
    assert!(
        (1..=releases).contains(&channel_msgs),
        "the observer saw {channel_msgs} release messages, expected 1..={releases}: {}",
        String::from_utf8_lossy(&seen)
    );
    assert!(!contains(&seen, name), "a lock name was published");
    for secret in &secrets {
        assert!(
            !contains(&seen, secret),
            "{secret:?} was published: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}

/// The audit every test server runs (support::PubSubAudit): it records what is published and
/// fails on a message docs/keyspace.md does not list, so the whole Rust suite's pub/sub
/// traffic is held to the document, not only this file's.
#[test]
fn every_test_server_audits_what_is_published() {
    let mut server = RedisServer::start();
    let bad = ("app:s:{sess}", "0123456789abcdef0123456789abcdef\ntoken");
    let good = ("app:l:released", "00ff00ff00ff00ff:1787654321000000");
    assert_eq!(server.cmd(&["PUBLISH", bad.0, bad.1]), ":1");
    assert_eq!(server.cmd(&["PUBLISH", good.0, good.1]), ":1");
    let seen = support::wait_until(Duration::from_secs(5), || server.published().len() == 2);
    assert!(seen, "{:?}", server.published());
    let published = server.published();
    assert_eq!(published[0].0, bad.0.as_bytes());
    assert_eq!(published[1].1, good.1.as_bytes());
    let port = server.port();
    let caught = std::panic::catch_unwind(|| support::check_published(port, &published));
    assert!(caught.is_err(), "an off-list message must fail the audit");
    support::check_published(port, &published[1..]);
    for (channel, message) in [
        ("p:r:{web}:events", "up web-1"),
        ("p:r:{web}:events", "down web-1"),
        ("a:l:released", "00ff00ff00ff00ff:12:0123456789abcdef.4242"),
    ] {
        support::check_published(port, &[(channel.into(), message.into())]);
    }
    for (channel, message) in [
        ("a:l:released", "00ff00ff00ff00ff:12:tok en"),
        ("a:l:released", "secret-token"),
        ("p:r:{web}:events", "up web-1 extra"),
    ] {
        let r = std::panic::catch_unwind(|| {
            support::check_published(port, &[(channel.into(), message.into())])
        });
        assert!(r.is_err(), "{channel} {message:?} must fail");
    }
    server.forget_published();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_lifecycle_leaves_only_owned_keys_and_ttl_idempotency_keys() {
    use clusterkit::queue::{EnqueueOptions, QueueOptions, TaskQueue};
    let server = RedisServer::start();
    let port = server.port();
    let q = TaskQueue::redis(
        &server.addr(),
        QueueOptions::default()
            .with_namespace("app")
            .with_max_attempts(1),
        &clusterkit::ConnectionSettings::default(),
    )
    .unwrap();
    q.enqueue(
        "mail",
        b"secret payload",
        &EnqueueOptions::new().idempotency_key("k1", None),
    )
    .await
    .unwrap();
    q.enqueue(
        "mail",
        b"later",
        &EnqueueOptions::new().delay(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let c = q.consumer("mail").unwrap();
    let j = c.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    c.fail(&j.receipt, "boom").await.unwrap();
    let keys = assert_documented(port, "app", "queue in use");
    for k in [
        "app:q:{mail}:n",
        "app:q:{mail}:d",
        "app:q:{mail}:x",
        "app:q:{mail}:u:k1",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    c.shutdown().await.unwrap();
    q.purge("mail").await.unwrap();
    let keys = assert_documented(port, "app", "queue purged");
    assert_eq!(
        keys,
        ["app:q:{mail}:u:k1"],
        "purge leaves only the TTL'd idempotency key"
    );
}
