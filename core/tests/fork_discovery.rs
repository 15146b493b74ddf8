//! Discovery keeps working in a forked child: the watcher of a pool runs again there (a node
//! registered after the fork shows up in the child's pool), and so does the heartbeat of a
//! registration the child inherited (it re-creates the entry after the parent removed it).
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clusterkit::{BalancerOptions, Cluster, Node, RedisRegistry, RegistryOptions, Strategy};

mod fork_util;
mod support;
use support::RedisServer;

/// Set by the parent after it deregistered web-1.
const DEREGISTERED: &str = "test:parent-deregistered";

fn wait_for(limit: Duration, ok: impl FnMut() -> bool) -> bool {
    support::wait_until_every(limit, Duration::from_millis(10), ok)
}

#[test]
fn discovery_watchers_and_heartbeats_run_again_in_a_forked_child() {
    let redis = RedisServer::start();
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(2))
        .with_heartbeat_interval(Duration::from_millis(100));
    let registry = RedisRegistry::new(&redis.addr(), "svc", options.clone()).unwrap();
    let registration = registry
        .register_blocking(Node::new("web-1", "127.0.0.1", 8081).unwrap())
        .unwrap();
    let pool = Cluster::new("app", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
    let watcher = registry.watch(&pool).unwrap();
    assert!(wait_for(Duration::from_secs(10), || pool.len() == 1));
    let key = registry.node_key("web-1");
    let exists = |k: &str| redis.cmd(&["EXISTS", k]) == ":1";
    assert!(exists(&key));

    let pid = fork_util::spawn_child(|| {
        // The first call into the library starts the background tasks again.
        let _ = clusterkit::blocking::runtime().unwrap();
        if !watcher.is_running() {
            return 2;
        }
        // A node registered by someone else now appears in the child's own pool: only the
        // child's watcher updates the child's memory.
        let other = RedisRegistry::new(&redis.addr(), "svc", options.clone()).unwrap();
        let second = other
            .register_blocking(Node::new("web-2", "127.0.0.1", 8082).unwrap())
            .unwrap();
        if !wait_for(Duration::from_secs(5), || pool.len() == 2) {
            return 3;
        }
        second.abandon();
        // The parent removes web-1's entry (deregister, which also stops its own heartbeat)
        // and then sets a marker key: once the marker is there, an existing entry can only
        // have been re-created by the child's copy of the registration. (Watching for the
        // entry to disappear would race with that very heartbeat.)
        if !wait_for(Duration::from_secs(10), || exists(DEREGISTERED)) {
            return 4;
        }
        if !wait_for(Duration::from_secs(5), || exists(&key)) {
            return 5;
        }
        // Leave with _exit: the child's copy of the registration is not dropped (no removal).
        0
    });
    // Give the child time to start its tasks, then remove the entry from the parent.
    std::thread::sleep(Duration::from_millis(300));
    registration.deregister_blocking().unwrap();
    assert_eq!(redis.cmd(&["SET", DEREGISTERED, "1"]), "+OK");
    let outcome = fork_util::wait_child(pid, Duration::from_secs(30));
    assert_eq!(
        outcome,
        fork_util::Outcome::Exited(0),
        "child failed: 2 = watcher not running, 3 = watcher did not see a join, 4 = the parent's \
         removal marker was not seen, 5 = the child's heartbeat did not re-create the entry, 101 = panic"
    );
    // The parent's watcher still runs.
    assert!(watcher.is_running());
}
