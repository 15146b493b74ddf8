//! Background tasks started before fork() run again in the child: active health checks (the
//! pool's supervisor) and the distributed cache's event watcher (which marks a node that
//! leaves as dirty so a stale replica is never read). Without them a forked PHP-FPM or
//! Python worker would keep picking dead nodes and could read old values.
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use clusterkit::cache::{Cache, DistributedOptions};
use clusterkit::{
    BalancerOptions, CheckKind, CheckOptions, Cluster, Health, HealthOptions, Node, Strategy,
};

mod fork_util;
mod support;
use support::RedisServer;

fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

#[test]
fn health_checks_and_cache_watcher_run_again_in_a_forked_child() {
    // A pool with active TCP checks every 50 ms on a live listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let health = HealthOptions::default().with_check(
        CheckOptions::new(CheckKind::Tcp)
            .with_interval(Duration::from_millis(50))
            .with_timeout(Duration::from_millis(500)),
    );
    let app = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        health,
        [Node::new("web-1", "127.0.0.1", port).unwrap()],
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || app.health_metrics().checks >= 2),
        "checks do not run in the parent"
    );

    // A distributed cache over two Redis nodes, used in the parent first.
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let pool = Cluster::with_nodes(
        "cache",
        BalancerOptions::new(Strategy::Ketama),
        [
            Node::new("r1", "127.0.0.1", r1.port()).unwrap(),
            Node::new("r2", "127.0.0.1", r2.port()).unwrap(),
        ],
    )
    .unwrap();
    let cache = Cache::distributed(
        pool.clone(),
        "app",
        DistributedOptions::default().with_replicas(2),
    )
    .unwrap();
    clusterkit::blocking::block_on(cache.set(b"k", "v", None))
        .unwrap()
        .unwrap();

    let code = fork_util::run_in_child(Duration::from_secs(40), || {
        // Using the pool (a pick) starts its checks again on the child's runtime.
        let before = app.health_metrics().checks;
        drop(app.balancer().pick().unwrap());
        if !wait_for(Duration::from_secs(10), || {
            app.health_metrics().checks >= before + 3
        }) {
            return 2;
        }
        // Using the cache starts its watcher again: a node taken out is marked dirty.
        let v = clusterkit::blocking::block_on(cache.get(b"k"))
            .unwrap()
            .unwrap();
        if v.as_deref() != Some(b"v".as_slice()) {
            return 3;
        }
        pool.set_health("r2", Health::Unhealthy, "test").unwrap();
        if !wait_for(Duration::from_secs(10), || {
            cache.dirty_nodes().contains(&"r2".to_string())
        }) {
            return 4;
        }
        0
    });
    assert_eq!(
        code, 0,
        "child failed: 2 = checks did not run again, 3 = cache read failed, \
         4 = the watcher did not mark the node dirty, 101 = panic"
    );
    // The parent's tasks were not disturbed by the child.
    let before = app.health_metrics().checks;
    assert!(wait_for(Duration::from_secs(10), || app
        .health_metrics()
        .checks
        >= before + 2));
    drop(listener);
}
