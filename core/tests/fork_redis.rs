//! A process that used a Redis cache and a lock, then forks, keeps working in the child
//! (PHP-FPM and Python's multiprocessing fork workers from a parent that used the library).
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, RedisOptions};
use clusterkit::lock::{DistributedLock, LockOptions};

mod fork_util;
mod support;
use support::RedisServer;

#[test]
fn redis_handles_work_in_a_forked_child() {
    let server = RedisServer::start();
    let cache = Cache::redis(&server.addr(), "app", RedisOptions::default()).unwrap();
    let locks = DistributedLock::redis(&server.addr(), LockOptions::default()).unwrap();
    // Used in the parent first: connections and their driver tasks exist on its runtime.
    block_on(cache.set(b"from-parent", "1", None))
        .unwrap()
        .unwrap();
    let g = block_on(locks.try_acquire("p", Duration::from_secs(5)))
        .unwrap()
        .unwrap()
        .unwrap();
    block_on(g.release()).unwrap().unwrap();

    let code = fork_util::run_in_child(Duration::from_secs(20), || {
        let started = Instant::now();
        let v = block_on(cache.get(b"from-parent"))
            .unwrap()
            .unwrap()
            .unwrap();
        block_on(cache.set(b"from-child", "2", None))
            .unwrap()
            .unwrap();
        let g = block_on(locks.try_acquire("c", Duration::from_secs(5)))
            .unwrap()
            .unwrap()
            .unwrap();
        block_on(g.release()).unwrap().unwrap();
        // Works at once, not after a timeout and a reconnect.
        if v.as_ref() != b"1".as_slice() {
            return 2;
        }
        if started.elapsed() >= Duration::from_millis(400) {
            return 3;
        }
        0
    });
    assert_eq!(
        code, 0,
        "the child's Redis handles did not work (2 = wrong value, 3 = too slow, 101 = panic)"
    );
    // The parent's handles still work, and see the child's write.
    assert_eq!(
        block_on(cache.get(b"from-child"))
            .unwrap()
            .unwrap()
            .unwrap(),
        "2"
    );
}
