//! A Redis Cluster cache used in the parent keeps working in a forked child: the child
//! connects afresh on its own runtime instead of using the parent's connection (whose driver
//! task ran on the parent's runtime, dead in the child).
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, RedisOptions};

mod fork_util;
mod support;
use support::RedisClusterHarness;

#[test]
fn redis_cluster_cache_works_in_a_forked_child() {
    let cluster = RedisClusterHarness::start();
    let addrs = cluster.addrs();
    let seeds: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let cache = Cache::redis_cluster(&seeds, "app", RedisOptions::default()).unwrap();
    // Connected and used in the parent first.
    for i in 0..20 {
        block_on(cache.set(format!("p{i}").as_bytes(), "1", None))
            .unwrap()
            .unwrap();
    }
    let code = fork_util::run_in_child(Duration::from_secs(30), || {
        let started = Instant::now();
        for i in 0..20 {
            match block_on(cache.get(format!("p{i}").as_bytes())) {
                Ok(Ok(Some(v))) if v.as_ref() == b"1" => {}
                _ => return 2,
            }
            if !matches!(
                block_on(cache.set(format!("c{i}").as_bytes(), "2", None)),
                Ok(Ok(_))
            ) {
                return 3;
            }
        }
        // At once, not after timeouts of the parent's dead connection.
        if started.elapsed() > Duration::from_secs(3) {
            return 4;
        }
        0
    });
    assert_eq!(
        code, 0,
        "child failed: 2 = read, 3 = write, 4 = too slow, 101 = panic"
    );
    // The parent's connection still works and sees the child's writes.
    for i in 0..20 {
        assert_eq!(
            block_on(cache.get(format!("c{i}").as_bytes()))
                .unwrap()
                .unwrap()
                .unwrap(),
            "2"
        );
    }
}
