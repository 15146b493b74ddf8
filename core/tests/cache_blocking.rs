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
    block_on(c.set(b"k", "v", Some(Duration::from_secs(10)))).unwrap().unwrap();
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
