//! The cache from plain threads through the blocking facade, as the C, PHP and Python layers
//! use it: no runtime of the caller's own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, MemoryOptions, RedisOptions};

mod support;
use support::RedisServer;

#[test]
fn redis_cache_built_and_used_outside_any_runtime() {
    let server = RedisServer::start();
    // Built outside a runtime: must not panic (redis-rs spawns a helper task).
    let c = Cache::redis(&server.addr(), "app", RedisOptions::default()).unwrap();
    block_on(c.set(b"k", "v", Some(Duration::from_secs(10))))
        .unwrap()
        .unwrap();
    assert_eq!(block_on(c.get(b"k")).unwrap().unwrap().unwrap(), "v");
    // From several threads at once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let c = &c;
            s.spawn(move || {
                for i in 0..50 {
                    block_on(c.increment(b"n", 1)).unwrap().unwrap();
                    let _ = (t, i);
                }
            });
        }
    });
    assert_eq!(block_on(c.get(b"n")).unwrap().unwrap().unwrap(), "200");
}

#[test]
fn memory_cache_through_the_facade() {
    let c = Cache::memory("app", MemoryOptions::default()).unwrap();
    block_on(c.set(b"k", "v", None)).unwrap().unwrap();
    assert_eq!(block_on(c.get(b"k")).unwrap().unwrap().unwrap(), "v");
}

/// The config document's `[cache]` section, through the one entry point.
#[test]
fn deployment_builds_the_configured_cache() {
    use clusterkit::Clusterkit;
    // Nothing configured: embedded.
    let ck = Clusterkit::embedded().unwrap();
    block_on(ck.cache().set(b"k", "v", None)).unwrap().unwrap();
    assert_eq!(ck.cache().namespace(), "clusterkit");
    assert!(ck.cache().memory_weight().is_some());
    assert_eq!(
        ck.pool("app").unwrap_err().kind(),
        clusterkit::ErrorKind::NotFound
    );

    // A pool of two Redis servers, two replicas.
    let a = RedisServer::start();
    let b = RedisServer::start();
    let doc = format!(
        r#"
[pools.cache]
strategy = "ketama"
nodes = [ {{ id = "a", host = "127.0.0.1", port = {} }}, {{ id = "b", host = "127.0.0.1", port = {} }} ]

[cache]
pool = "cache"
replicas = 2
namespace = "shop"
timeout = "300ms"
"#,
        a.port(),
        b.port()
    );
    let ck = Clusterkit::parse(&doc).unwrap();
    block_on(ck.cache().set(b"cart:1", "3 items", None))
        .unwrap()
        .unwrap();
    assert_eq!(a.cmd(&["EXISTS", "shop:c:cart:1"]), ":1");
    assert_eq!(b.cmd(&["EXISTS", "shop:c:cart:1"]), ":1");
    assert_eq!(ck.balancer("cache").unwrap().pool(), "cache");
}

/// `[locks]` and `[sessions]` through the entry point.
#[test]
fn deployment_builds_locks_and_sessions() {
    use clusterkit::Clusterkit;
    // Embedded: locks and sessions work with no document.
    let ck = Clusterkit::embedded().unwrap();
    let g = block_on(ck.locks().try_acquire("job", Duration::from_secs(5)))
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(g.fencing_token() >= 1);
    let mut s = ck.sessions().create().unwrap();
    s.set("user", "alice");
    block_on(ck.sessions().save(&mut s)).unwrap().unwrap();
    let back = block_on(ck.sessions().load(s.id().as_bytes()))
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back.get("user").unwrap(), "alice");

    // Redlock over a pool of three masters; sessions on a Redis cache.
    let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let cache = RedisServer::start();
    let nodes: Vec<String> = masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "{{ id = \"m{i}\", host = \"127.0.0.1\", port = {} }}",
                m.port()
            )
        })
        .collect();
    let doc = format!(
        "[pools.locks]\nstrategy = \"round_robin\"\nnodes = [ {} ]\n\n[locks]\npool = \"locks\"\ntimeout = \"200ms\"\n\n[cache]\nredis = \"{}\"\nnamespace = \"shop\"\n\n[sessions]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1h\"\n",
        nodes.join(", "),
        cache.addr()
    );
    let ck = Clusterkit::parse(&doc).unwrap();
    let g = block_on(ck.locks().try_acquire("invoice", Duration::from_secs(5)))
        .unwrap()
        .unwrap()
        .unwrap();
    let held = masters
        .iter()
        .filter(|m| m.cmd(&["EXISTS", "shop:l:{invoice}"]) == ":1")
        .count();
    assert!(held >= 2, "the lock is on {held} of 3 masters");
    block_on(g.release()).unwrap().unwrap();
    let mut s = ck.sessions().create().unwrap();
    s.set("cart", "3 items");
    block_on(ck.sessions().save(&mut s)).unwrap().unwrap();
    assert_eq!(
        cache.cmd(&["EXISTS", &format!("shop:s:{{{}}}", s.id())]),
        ":1"
    );

    for (bad, field) in [
        ("[locks]\npool = \"nope\"\n", "locks.pool"),
        ("[sessions]\nidle_timeout = \"0s\"\n", "sessions"),
        ("[sessions]\nidle = \"1m\"\n", "idle"),
    ] {
        let e = Clusterkit::parse(bad).unwrap_err();
        assert_eq!(e.kind(), clusterkit::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains(field), "{bad}: {e}");
    }
}

/// `Clusterkit::shared`: one deployment per config text in a process (PHP-FPM workers reuse
/// it across requests); a different text is a different deployment; a bad text is an error
/// that is not remembered.
#[test]
fn shared_deployments_are_one_per_config_text() {
    use clusterkit::Clusterkit;
    let doc = "[cache]\nnamespace = \"shared-test\"\n";
    let a = Clusterkit::shared(doc).unwrap();
    let b = Clusterkit::shared(doc).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    block_on(a.cache().set(b"k", "v", None)).unwrap().unwrap();
    assert_eq!(
        block_on(b.cache().get(b"k")).unwrap().unwrap().unwrap(),
        "v"
    );
    let c = Clusterkit::shared("[cache]\nnamespace = \"other\"\n").unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
    assert_eq!(block_on(c.cache().get(b"k")).unwrap().unwrap(), None);
    let e = Clusterkit::shared("[cache]\nreplicas = \"x\"\n").unwrap_err();
    assert_eq!(e.kind(), clusterkit::ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("replicas"), "{e}");
}

/// `Cache::get_now` answers embedded reads without a future and declines network backends.
#[test]
fn get_now_is_the_embedded_fast_path() {
    let ck = clusterkit::Clusterkit::embedded().unwrap();
    block_on(ck.cache().set(b"k", "v", None)).unwrap().unwrap();
    assert_eq!(ck.cache().get_now(b"k").unwrap().unwrap().unwrap(), "v");
    assert_eq!(ck.cache().get_now(b"absent").unwrap().unwrap(), None);
    let e = ck.cache().get_now(b"").unwrap().unwrap_err();
    assert_eq!(e.kind(), clusterkit::ErrorKind::InvalidArgument);
    let stats = ck.cache().stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    let server = RedisServer::start();
    let redis = clusterkit::cache::Cache::redis(
        &server.addr(),
        "x",
        clusterkit::cache::RedisOptions::default(),
    )
    .unwrap();
    assert!(redis.get_now(b"k").is_none());
}

/// Metrics and events as JSON: the documents every binding hands out unchanged.
#[test]
fn metrics_and_events_as_json() {
    use clusterkit::{Clusterkit, Health};
    let ck = Clusterkit::parse(
        "[pools.app]\nstrategy = \"round_robin\"\nnodes = [ { id = \"web-1\", host = \"127.0.0.1\", port = 8081, zone = \"a\" }, { id = \"web-2\", host = \"127.0.0.1\", port = 8082 } ]\n",
    )
    .unwrap();
    let pool = ck.pool("app").unwrap();
    let mut rx = pool.subscribe();
    ck.balancer("app")
        .unwrap()
        .pick()
        .unwrap()
        .success(Duration::from_millis(3));
    pool.set_health("web-2", Health::Draining, "deploy")
        .unwrap();
    let m = ck.metrics();
    let app = &m["pools"]["app"];
    assert_eq!(app["total"], 2);
    assert_eq!(app["healthy"], 1);
    assert_eq!(app["strategy"], "round_robin");
    let nodes = app["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["id"], "web-1");
    assert_eq!(nodes[0]["zone"], "a");
    assert_eq!(nodes[1]["health"], "draining");
    assert_eq!(nodes[1]["reason"], "deploy");
    let successes: u64 = nodes.iter().map(|n| n["successes"].as_u64().unwrap()).sum();
    assert_eq!(successes, 1);
    assert!(m["cache"]["hits"].is_u64());

    let e = rx.try_recv().unwrap();
    assert_eq!(e.kind_name(), "health_changed");
    assert_eq!(e.node_id(), Some("web-2"));
    assert_eq!(e.message(), "deploy");
    let j = e.to_json();
    assert_eq!(j["kind"], "health_changed");
    assert_eq!(j["old_health"], "healthy");
    assert_eq!(j["new_health"], "draining");
    assert_eq!(j["node"]["port"], 8082);
}

/// Blocking callers on one Redis do their I/O on their own thread (like phpredis): a stalled
/// server makes the call fail with `timeout` after the response timeout (not hang), a killed
/// one with `unavailable`, and the cache works again once the server is back.
#[test]
fn blocking_io_on_the_callers_thread_times_out_and_recovers() {
    let mut server = RedisServer::start();
    let options = RedisOptions::default()
        .with_timeouts(Duration::from_millis(300), Duration::from_millis(300));
    let c = Cache::redis(&server.addr(), "app", options).unwrap();
    block_on(c.set(b"k", "v", None)).unwrap().unwrap();
    // The async path on the same cache still works beside the synchronous one.
    let rt = clusterkit::blocking::runtime().unwrap();
    assert_eq!(
        rt.block_on(async { c.get(b"k").await.unwrap() }).unwrap(),
        "v"
    );

    server.pause();
    let started = std::time::Instant::now();
    let e = block_on(c.get(b"k")).unwrap().unwrap_err();
    assert_eq!(e.kind(), clusterkit::ErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    support::eventually(
        "recovery after the server resumed",
        Duration::from_secs(10),
        || matches!(block_on(c.get(b"k")), Ok(Ok(Some(_)))),
    );

    server.kill();
    let e = block_on(c.set(b"k", "w", None)).unwrap().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            clusterkit::ErrorKind::Unavailable | clusterkit::ErrorKind::Timeout
        ),
        "{e}"
    );
    server.restart();
    support::eventually(
        "recovery after the server restarted",
        Duration::from_secs(10),
        || matches!(block_on(c.set(b"k", "w", None)), Ok(Ok(()))),
    );
    assert_eq!(block_on(c.get(b"k")).unwrap().unwrap().unwrap(), "w");
}

/// A sharded, replicated pool used through the blocking facade (reads on the caller's
/// thread, writes fanned out through the runtime): with one replica stalled (SIGSTOP) every
/// key stays readable, each read bounded by the response timeout, the stalled node is
/// ejected after its first failure so later reads do not wait, and writes reach a majority.
#[test]
fn blocking_pool_reads_survive_a_stalled_replica() {
    use clusterkit::cache::{DistributedOptions, WriteQuorum};
    use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
    let mut r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let pool = Cluster::with_nodes(
        "cache",
        BalancerOptions::new(Strategy::Ketama),
        [
            Node::new("r1", "127.0.0.1", r1.port()).unwrap(),
            Node::new("r2", "127.0.0.1", r2.port()).unwrap(),
        ],
    )
    .unwrap();
    let redis = RedisOptions::default()
        .with_timeouts(Duration::from_millis(200), Duration::from_millis(200));
    let cache = Cache::distributed(
        pool,
        "app",
        DistributedOptions::default()
            .with_replicas(2)
            .with_write_quorum(WriteQuorum::Majority)
            .with_redis(redis),
    )
    .unwrap();
    for i in 0..20 {
        block_on(cache.set(format!("k{i}").as_bytes(), format!("v{i}"), None))
            .unwrap()
            .unwrap();
    }
    r1.pause();
    let started = std::time::Instant::now();
    for i in 0..20 {
        let t = std::time::Instant::now();
        let v = block_on(cache.get(format!("k{i}").as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "key k{i}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "read took {:?}",
            t.elapsed()
        );
    }
    // One timeout at most per stalled node, not one per key.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "20 reads took {:?}",
        started.elapsed()
    );
    block_on(cache.set(b"during", "pause", None))
        .unwrap()
        .unwrap();
    r1.resume();
    assert_eq!(
        block_on(cache.get(b"during")).unwrap().unwrap().unwrap(),
        "pause"
    );
}

/// A single-master lock service used from plain threads (as C and PHP do): acquire, refuse,
/// wait for a release from another thread, extend, release — on the callers' own threads.
/// The waiter's retry backoff is 5 s (jittered: at least 2.5 s before its second attempt),
/// so acquiring within 1.5 s of the start shows the release itself woke it.
#[test]
fn blocking_single_redis_locks() {
    use clusterkit::lock::{DistributedLock, LockOptions};
    let server = RedisServer::start();
    let backoff = Duration::from_secs(5);
    let locks = DistributedLock::redis(
        &server.addr(),
        LockOptions::default().with_retry(backoff, backoff),
    )
    .unwrap();
    let ttl = Duration::from_secs(5);
    let a = block_on(locks.try_acquire("job", ttl))
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(block_on(locks.try_acquire("job", ttl))
        .unwrap()
        .unwrap()
        .is_none());
    block_on(a.extend(Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    assert!(a.validity() > Duration::from_secs(5));
    let fence = a.fencing_token();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = std::time::Instant::now();
            let g = block_on(locks.acquire_timeout("job", ttl, Duration::from_secs(10)))
                .unwrap()
                .unwrap();
            (g.fencing_token(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        block_on(a.release()).unwrap().unwrap();
        let (next, waited) = waiter.join().unwrap();
        assert!(
            next > fence,
            "fencing token must increase: {next} after {fence}"
        );
        // Released after 200 ms; the backoff alone would not retry before 2.5 s.
        assert!(
            waited < Duration::from_millis(1500),
            "woken {waited:?} after the start: by the backoff, not by the release"
        );
    });
}
