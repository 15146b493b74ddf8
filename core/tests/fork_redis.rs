//! A process that used a Redis cache and a lock, then forks, keeps working in the child
//! (PHP-FPM and Python's multiprocessing fork workers from a parent that used the library).
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::blocking::block_on;
use clusterkit::cache::{Cache, RedisOptions};
use clusterkit::lock::{DistributedLock, LockOptions};

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

    // SAFETY: fork() in a test process; the child only runs the code below and _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
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
            v.as_ref() == b"1".as_slice() && started.elapsed() < Duration::from_millis(400)
        }))
        .unwrap_or(false);
        // SAFETY: leave the child without running the harness's exit path.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's Redis handles did not work: {status}"
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
