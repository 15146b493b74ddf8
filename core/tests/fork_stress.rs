//! 200 forks taken while the parent is busy: active health checks, a Redis registry with
//! heartbeats and a watcher, auto-renewed locks, cache traffic from several threads and a
//! thread flipping node health (membership changes, events, the distributed cache's dirty-node
//! watcher and flushes). Every child must pick a node, read the cache, take and release a
//! lock and exit within a deadline; a child that deadlocks on a lock inherited in a locked
//! state is killed at its deadline and fails the test (it never hangs the suite).
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, DistributedOptions, RedisOptions};
use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::{
    BalancerOptions, CheckKind, CheckOptions, Cluster, Health, HealthOptions, Node, RedisRegistry,
    RegistryOptions, Strategy,
};

mod fork_util;
mod support;
use fork_util::{spawn_child, wait_child, Outcome};
use support::RedisServer;

const FORKS: usize = 200;
/// Each child must be done within this (it needs a few milliseconds when nothing is stuck).
const CHILD_DEADLINE: Duration = Duration::from_secs(10);
/// The whole run (forks are taken one after the other).
const TOTAL_LIMIT: Duration = Duration::from_secs(90);

fn wait_for(limit: Duration, ok: impl FnMut() -> bool) -> bool {
    support::wait_until_every(limit, Duration::from_millis(10), ok)
}

#[test]
fn two_hundred_forks_while_background_tasks_and_traffic_run() {
    let redis = RedisServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // An app pool with TCP checks every 10 ms on a listener that accepts (bounded loop).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < TOTAL_LIMIT * 2 {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }
    let health = HealthOptions::default().with_check(
        CheckOptions::new(CheckKind::Tcp)
            .with_interval(Duration::from_millis(10))
            .with_timeout(Duration::from_millis(500)),
    );
    let app = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        health,
        [
            Node::new("web-1", "127.0.0.1", port).unwrap(),
            Node::new("web-2", "127.0.0.1", port).unwrap(),
        ],
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || app.health_metrics().checks >= 4),
        "checks do not run in the parent"
    );

    // Discovery: a registration with a fast heartbeat and a watcher keeping a pool in sync.
    let registry = RedisRegistry::new(
        &redis.addr(),
        "stress",
        RegistryOptions::default()
            .with_ttl(Duration::from_millis(1500))
            .with_heartbeat_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let registration = registry
        .register_blocking(Node::new("reg-1", "127.0.0.1", port).unwrap())
        .unwrap();
    let discovered =
        Cluster::new("discovered", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
    let watcher = registry.watch(&discovered).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || discovered.len() == 1),
        "the watcher does not see the registration"
    );

    // Locks held in the parent with auto-renewal (renewed every third of 300 ms).
    let locks = DistributedLock::redis(&redis.addr(), LockOptions::default().with_auto_renew(true))
        .unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| {
            block_on(locks.try_acquire(&format!("parent-{i}"), Duration::from_millis(300)))
                .unwrap()
                .unwrap()
                .unwrap()
        })
        .collect();

    // Cache traffic: a single-Redis cache (inline I/O and its connection pool) and a
    // distributed cache over a pool whose health a thread keeps flipping.
    let cache = Cache::redis(&redis.addr(), "stress", RedisOptions::default()).unwrap();
    block_on(cache.set(b"known", "value", None))
        .unwrap()
        .unwrap();
    let flip = Cluster::with_nodes(
        "flip",
        BalancerOptions::new(Strategy::Ketama),
        [
            Node::new("r1", "127.0.0.1", redis.port()).unwrap(),
            Node::new("r2", "127.0.0.1", redis.port()).unwrap(),
        ],
    )
    .unwrap();
    let dist = Cache::distributed(
        flip.clone(),
        "dist",
        DistributedOptions::default().with_replicas(2),
    )
    .unwrap();
    let ops = Arc::new(AtomicU64::new(0));
    for t in 0..3 {
        let (stop, cache, dist, ops) = (stop.clone(), cache.clone(), dist.clone(), ops.clone());
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < TOTAL_LIMIT * 2 {
                let key = format!("t{t}-{}", i % 64);
                let c = if i.is_multiple_of(2) { &cache } else { &dist };
                let _ = block_on(c.set(key.as_bytes(), "x", Some(Duration::from_secs(30))));
                let _ = block_on(c.get(key.as_bytes()));
                ops.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    {
        let (stop, flip) = (stop.clone(), flip.clone());
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut up = false;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < TOTAL_LIMIT * 2 {
                let h = if up {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                let _ = flip.set_health("r2", h, "flip");
                up = !up;
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    assert!(
        wait_for(Duration::from_secs(10), || ops.load(Ordering::Relaxed)
            >= 200),
        "cache traffic does not run"
    );

    let started = Instant::now();
    let waited_before = clusterkit::fork::forks_that_waited();
    let mut ok = 0usize;
    let mut failures: Vec<(usize, String)> = Vec::new();
    let mut slowest = Duration::ZERO;
    for n in 0..FORKS {
        // Bounded: stop at the time limit or after a few failed children (each deadlocked
        // child costs its whole deadline), and report them below.
        if started.elapsed() >= TOTAL_LIMIT || failures.len() >= 3 {
            failures.push((n, format!("stopped after {:?}", started.elapsed())));
            break;
        }
        let (app, cache, locks) = (&app, &cache, &locks);
        let (watcher, discovered) = (&watcher, &discovered);
        let (flip, dist) = (&flip, &dist);
        let forked_at = Instant::now();
        let pid = spawn_child(move || {
            // A pick (restarts the background tasks on the child's runtime).
            let Ok(pick) = app.balancer().pick() else {
                return 2;
            };
            drop(pick);
            // A cache read of a key the parent wrote.
            match block_on(cache.get(b"known")) {
                Ok(Ok(Some(v))) if v.as_ref() == b"value" => {}
                _ => return 3,
            }
            // A membership change and a subscription on the pool whose write lock and event
            // channel a parent thread uses all the time, and a read through the distributed
            // cache whose connection map and dirty set the parent's threads lock.
            let _events = flip.subscribe();
            if flip.set_health("r1", Health::Healthy, "child").is_err() {
                return 8;
            }
            if block_on(dist.get(b"t0-0")).is_err() {
                return 9;
            }
            // A lock of our own, taken and released.
            let name = format!("child-{n}");
            let Ok(Ok(Some(g))) = block_on(locks.try_acquire(&name, Duration::from_secs(5))) else {
                return 4;
            };
            if !matches!(block_on(g.release()), Ok(Ok(_))) {
                return 5;
            }
            // The discovery watcher was started again here.
            if !watcher.is_running() || discovered.is_empty() {
                return 6;
            }
            // Every 25th child also waits for its own health checks to run.
            if n % 25 == 0 {
                let before = app.health_metrics().checks;
                if !wait_for(Duration::from_secs(5), || {
                    app.health_metrics().checks >= before + 2
                }) {
                    return 7;
                }
            }
            0
        });
        let outcome = wait_child(pid, CHILD_DEADLINE);
        slowest = slowest.max(forked_at.elapsed());
        match outcome {
            Outcome::Exited(0) => ok += 1,
            other => failures.push((n, format!("{other:?}"))),
        }
    }
    let elapsed = started.elapsed();
    let waited = clusterkit::fork::forks_that_waited() - waited_before;
    eprintln!(
        "fork stress: {ok}/{FORKS} children ok in {elapsed:?} (slowest {slowest:?}); \
         {waited} forks waited for a library lock or poll in progress; {} cache ops",
        ops.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "children failed (2 = pick, 3 = cache read, 4 = lock, 5 = release, 6 = watcher not \
         restarted, 7 = checks not restarted, 8 = membership change, 9 = distributed read, 101 = panic, TimedOut = deadlock): {failures:?}"
    );
    assert_eq!(ok, FORKS);
    assert_eq!(clusterkit::fork::forks_without_drain(), 0);
    // The window the gate closes was really exercised: some forks found a lock or a poll in
    // progress on another thread.
    assert!(
        waited > 0,
        "no fork met a busy library thread: the test proves nothing"
    );

    // The parent's background work went on: locks still held (renewed past their 300 ms
    // TTL many times), checks still running, the registration still listed.
    for g in &held {
        assert!(g.is_held(), "an auto-renewed lock of the parent was lost");
    }
    let before = app.health_metrics().checks;
    assert!(wait_for(Duration::from_secs(10), || app
        .health_metrics()
        .checks
        >= before + 2));
    assert_eq!(discovered.len(), 1);
    registration.deregister_blocking().unwrap();
}
