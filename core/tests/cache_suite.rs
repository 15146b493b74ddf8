//! One behavioural suite, run against every cache backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clusterkit::cache::{
    Bytes, Cache, DistributedOptions, MemoryOptions, RedisOptions, Ttl, MAX_KEY_LEN,
};
use clusterkit::{BalancerOptions, Cluster, ErrorKind, Node, Strategy};

mod support;
use support::{RedisClusterHarness, RedisServer};

/// Runs every behaviour against `cache` (and `other`, the same backend under another
/// namespace).
async fn suite(cache: Cache, other: Cache) {
    basics(&cache).await;
    expiry(&cache).await;
    add_semantics(&cache).await;
    increments(&cache).await;
    batches(&cache).await;
    namespaces(&cache, &other).await;
    limits(&cache).await;
    compute(&cache).await;
}

async fn basics(c: &Cache) {
    assert_eq!(c.get(b"absent").await.unwrap(), None);
    assert!(!c.has(b"absent").await.unwrap());
    c.set(b"k", "v1", None).await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap().unwrap(), "v1");
    c.set(b"k", Bytes::from_static(b"v2"), None).await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap().unwrap(), "v2");
    assert!(c.has(b"k").await.unwrap());
    // Binary keys and values, including NUL and non-UTF-8 bytes.
    c.set(b"\x00\xff bin", vec![0u8, 1, 255], None)
        .await
        .unwrap();
    assert_eq!(
        &c.get(b"\x00\xff bin").await.unwrap().unwrap()[..],
        &[0u8, 1, 255]
    );
    assert!(c.delete(b"k").await.unwrap());
    assert!(!c.delete(b"k").await.unwrap());
    assert_eq!(c.get(b"k").await.unwrap(), None);
    // Empty values are values, not misses.
    c.set(b"empty", "", None).await.unwrap();
    assert_eq!(c.get(b"empty").await.unwrap().unwrap(), "");
}

async fn expiry(c: &Cache) {
    c.set(b"ttl", "x", Some(Duration::from_millis(400)))
        .await
        .unwrap();
    match c.ttl(b"ttl").await.unwrap() {
        Ttl::Expires(d) => assert!(
            d <= Duration::from_millis(400) && d > Duration::ZERO,
            "{d:?}"
        ),
        t => panic!("expected a TTL, got {t:?}"),
    }
    assert_eq!(c.get(b"ttl").await.unwrap().unwrap(), "x");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        c.get(b"ttl").await.unwrap(),
        None,
        "the key outlived its TTL"
    );
    assert_eq!(c.ttl(b"ttl").await.unwrap(), Ttl::Missing);
    c.set(b"forever", "x", None).await.unwrap();
    assert_eq!(c.ttl(b"forever").await.unwrap(), Ttl::Persistent);
    // TTL zero deletes (PSR-16: a TTL of 0 or less expires the item).
    c.set(b"forever", "y", Some(Duration::ZERO)).await.unwrap();
    assert_eq!(c.get(b"forever").await.unwrap(), None);
}

async fn add_semantics(c: &Cache) {
    assert!(c.add(b"once", "first", None).await.unwrap());
    assert!(!c.add(b"once", "second", None).await.unwrap());
    assert_eq!(c.get(b"once").await.unwrap().unwrap(), "first");
    // An expired key can be added again.
    assert!(c
        .add(b"brief", "a", Some(Duration::from_millis(200)))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.add(b"brief", "b", None).await.unwrap());
    assert_eq!(c.get(b"brief").await.unwrap().unwrap(), "b");
    // Of many concurrent adds exactly one wins.
    let wins = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            let wins = wins.clone();
            tokio::spawn(async move {
                if c.add(b"race", format!("task {i}"), None).await.unwrap() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.add(b"z", "v", Some(Duration::ZERO))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

async fn increments(c: &Cache) {
    assert_eq!(c.increment(b"n", 5).await.unwrap(), 5);
    assert_eq!(c.decrement(b"n", 2).await.unwrap(), 3);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    c.increment(b"counter", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get(b"counter").await.unwrap().unwrap(), "800");
    c.set(b"text", "abc", None).await.unwrap();
    assert_eq!(
        c.increment(b"text", 1).await.unwrap_err().kind(),
        ErrorKind::Backend
    );
    c.set(b"big", i64::MAX.to_string(), None).await.unwrap();
    assert_eq!(
        c.increment(b"big", 1).await.unwrap_err().kind(),
        ErrorKind::Backend
    );
    // An increment keeps the TTL.
    c.set(b"ttl-n", "1", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    c.increment(b"ttl-n", 1).await.unwrap();
    assert!(matches!(c.ttl(b"ttl-n").await.unwrap(), Ttl::Expires(_)));
}

async fn batches(c: &Cache) {
    let items: Vec<(String, String)> = (0..50)
        .map(|i| (format!("b{i}"), format!("v{i}")))
        .collect();
    c.set_many(items.iter().map(|(k, v)| (k.as_bytes(), v.clone())), None)
        .await
        .unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("b{i}")).collect();
    let got = c.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 60);
    for (i, v) in got.iter().enumerate() {
        if i < 50 {
            assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "key b{i}");
        } else {
            assert_eq!(*v, None, "key b{i}");
        }
    }
    assert_eq!(c.delete_many(&keys[..10]).await.unwrap(), 10);
    assert_eq!(c.delete_many(&keys[..10]).await.unwrap(), 0);
    assert_eq!(
        c.get_many(&keys[..12])
            .await
            .unwrap()
            .iter()
            .filter(|v| v.is_some())
            .count(),
        2
    );
    assert!(c.get_many::<&[u8]>(&[]).await.unwrap().is_empty());
    // A bad key anywhere fails the whole batch before any I/O.
    let e = c.get_many(&["ok".as_bytes(), b""]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

async fn namespaces(c: &Cache, other: &Cache) {
    c.set(b"shared-name", "mine", None).await.unwrap();
    other.set(b"shared-name", "theirs", None).await.unwrap();
    assert_eq!(c.get(b"shared-name").await.unwrap().unwrap(), "mine");
    assert_eq!(other.get(b"shared-name").await.unwrap().unwrap(), "theirs");
    let removed = c.clear().await.unwrap();
    assert!(removed >= 1);
    assert_eq!(c.get(b"shared-name").await.unwrap(), None);
    assert_eq!(
        other.get(b"shared-name").await.unwrap().unwrap(),
        "theirs",
        "clear touched another namespace"
    );
    other.clear().await.unwrap();
}

async fn limits(c: &Cache) {
    let e = c.get(b"").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("key"));
    let long = vec![b'k'; MAX_KEY_LEN + 1];
    assert_eq!(
        c.set(&long, "v", None).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(c.set(&vec![b'k'; MAX_KEY_LEN], "v", None).await.is_ok());
    let small = c
        .clone()
        .with_limits(clusterkit::cache::CacheLimits { max_value_len: 8 })
        .unwrap();
    let e = small.set(b"big", vec![0u8; 9], None).await.unwrap_err();
    assert!(e.to_string().contains("value"), "{e}");
    assert!(c.with_namespace("").is_err());
    assert!(c.with_namespace("has space").is_err());
    assert!(c.with_namespace("glob*").is_err());
}

async fn compute(c: &Cache) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                c.get_or_compute(b"expensive", Duration::from_secs(30), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Bytes::from_static(b"computed"))
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "computed");
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the computation ran more than once"
    );
    // Errors are returned, not stored.
    let e = c
        .get_or_compute(b"failing", Duration::from_secs(30), || async {
            Err(clusterkit::Error::Timeout("upstream".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(c.get(b"failing").await.unwrap(), None);
    let v = c
        .get_or_compute(b"failing", Duration::from_secs(30), || async {
            Ok(Bytes::from_static(b"ok"))
        })
        .await
        .unwrap();
    assert_eq!(v, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend() {
    let c = Cache::memory("app", MemoryOptions::default()).unwrap();
    let other = c.with_namespace("other-app").unwrap();
    suite(c, other).await;
}

#[test]
fn memory_backend_bounds_bytes() {
    let c = Cache::memory("app", MemoryOptions::default().with_max_bytes(1 << 20)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..10_000u32 {
            c.set(format!("k{i}").as_bytes(), vec![7u8; 1000], None)
                .await
                .unwrap();
        }
        let w = c.memory_weight().unwrap();
        assert!(w <= 1 << 20, "weight {w} above the 1 MiB bound");
        // A value that cannot fit is refused, not silently dropped.
        let e = c.set(b"huge", vec![0u8; 2 << 20], None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    let server = RedisServer::start();
    let c = Cache::redis(&server.addr(), "app", RedisOptions::default()).unwrap();
    c.ping().await.unwrap();
    let other = c.with_namespace("other-app").unwrap();
    suite(c, other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_backend_three_nodes_two_replicas() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let pool = Cluster::with_nodes(
        "cache",
        BalancerOptions::new(Strategy::Ketama),
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| Node::new(format!("r{i}"), "127.0.0.1", s.port()).unwrap()),
    )
    .unwrap();
    let c =
        Cache::distributed(pool, "app", DistributedOptions::default().with_replicas(2)).unwrap();
    c.ping().await.unwrap();
    let other = c.with_namespace("other-app").unwrap();
    suite(c.clone(), other).await;
    // Every key lives on exactly two servers.
    c.set_many((0..30).map(|i| (format!("rep{i}"), "v")), None)
        .await
        .unwrap();
    for i in 0..30 {
        let key = format!("app:c:rep{i}");
        let copies = servers
            .iter()
            .filter(|s| s.cmd(&["EXISTS", &key]) == ":1")
            .count();
        assert_eq!(copies, 2, "{key}");
    }
}

#[test]
fn redis_backend_bad_addresses() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(
            Cache::redis("", "app", RedisOptions::default())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        assert!(Cache::redis("host with space:1", "app", RedisOptions::default()).is_err());
        // A closed port: a clear error, quickly.
        let c = Cache::redis(
            &format!("127.0.0.1:{}", support::closed_port()),
            "app",
            RedisOptions::default(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = c.get(b"k").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A name under .invalid does not resolve: unavailable or timeout, never a hang.
        let c = Cache::redis("cache.invalid:6379", "app", RedisOptions::default()).unwrap();
        let started = std::time::Instant::now();
        let e = c.set(b"k", "v", None).await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        // A pool that does not hash cannot shard a cache.
        let pool = Cluster::new("p", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
        let e = Cache::distributed(pool, "app", DistributedOptions::default()).unwrap_err();
        assert!(e.to_string().contains("hashing strategy"), "{e}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend() {
    let cluster = RedisClusterHarness::start();
    // One seed is enough: the client discovers the other masters from the slot map.
    let seeds = cluster.addrs();
    let c = Cache::redis_cluster(&[seeds[0].as_str()], "app", RedisOptions::default()).unwrap();
    c.ping().await.unwrap();
    assert!(format!("{c:?}").contains("redis-cluster"));
    let other = c.with_namespace("other-app").unwrap();
    suite(c.clone(), other.clone()).await;
    c.clear().await.unwrap();
    // Keys really are spread over every master, and a batch spanning all of them works
    // (with chunks smaller than the batch).
    let small_chunks = Cache::redis_cluster(
        &seeds.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "app",
        RedisOptions::default().with_batch_chunk(7),
    )
    .unwrap();
    small_chunks
        .set_many(
            (0..100).map(|i| (format!("spread{i}"), format!("v{i}"))),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    for node in cluster.nodes() {
        let reply = node.cmd(&["DBSIZE"]);
        let n: u64 = reply.trim_start_matches(':').parse().unwrap();
        assert!(n >= 10, "master {} holds only {n} keys", node.addr());
    }
    let keys: Vec<String> = (0..110).map(|i| format!("spread{i}")).collect();
    let got = c.get_many(&keys).await.unwrap();
    for (i, v) in got.iter().enumerate() {
        let want = (i < 100).then(|| format!("v{i}"));
        assert_eq!(
            v.as_deref(),
            want.as_deref().map(str::as_bytes),
            "spread{i}"
        );
    }
    assert!(matches!(c.ttl(b"spread3").await.unwrap(), Ttl::Expires(_)));
    // clear reaches every master, and only this namespace.
    other.set(b"kept", "x", None).await.unwrap();
    assert_eq!(small_chunks.clear().await.unwrap(), 100);
    assert!(c.get_many(&keys).await.unwrap().iter().all(|v| v.is_none()));
    assert_eq!(other.get(b"kept").await.unwrap().unwrap(), "x");
    assert_eq!(other.clear().await.unwrap(), 1);
}

#[test]
fn redis_cluster_unreachable_seed() {
    // Built outside any runtime (as blocking callers do): must not panic.
    let seed = format!("127.0.0.1:{}", support::closed_port());
    let outside = Cache::redis_cluster(&[seed.as_str()], "app", RedisOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = outside.set(b"k", "v", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert_eq!(
            Cache::redis_cluster(&[], "app", RedisOptions::default())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        assert!(
            Cache::redis_cluster(&["host with space:1"], "app", RedisOptions::default()).is_err()
        );
        let c = Cache::redis_cluster(&[seed.as_str()], "app", RedisOptions::default()).unwrap();
        for _ in 0..2 {
            // A clear error, quickly, each time (the connection is retried, not cached).
            let started = std::time::Instant::now();
            let e = c.get(b"k").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains(&seed), "{e}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        let e = c.ping().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    });
}
