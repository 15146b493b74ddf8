//! A blocking event reader (the C ABI's ck_events_next) may be waiting for an event while
//! another thread forks: the child reads from its own subscription instead of waiting forever
//! for the lock the parent's reader held at the fork. (Without a reader at the fork, the child
//! keeps reading the inherited subscription: tests/c/test_fork.c.)
//! One test per binary: forking a process with many threads is best kept away from others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::cluster::Received;
use clusterkit::{BalancerOptions, Cluster, ClusterEvent, ErrorKind, Health, Node, Strategy};

mod fork_util;

#[test]
fn a_blocked_event_reader_does_not_block_a_forked_child() {
    let pool = Cluster::with_nodes(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        [
            Node::new("web-1", "127.0.0.1", 8081).unwrap(),
            Node::new("web-2", "127.0.0.1", 8082).unwrap(),
        ],
    )
    .unwrap();
    let sub = pool.subscribe_blocking();
    // The basics: nothing yet, then the event, then a timeout of about the asked length.
    assert_eq!(
        sub.next_blocking(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    pool.set_health("web-1", Health::Draining, "t").unwrap();
    match sub.next_blocking(Duration::from_secs(5)).unwrap() {
        Received::Event(ClusterEvent::HealthChanged { new, .. }) => {
            assert_eq!(new, Health::Draining)
        }
        other => panic!("unexpected {other:?}"),
    }
    let started = Instant::now();
    let e = sub.next_blocking(Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert!(started.elapsed() < Duration::from_secs(3));

    std::thread::scope(|s| {
        // A reader blocked in next_blocking for the whole fork.
        let reader = s.spawn(|| sub.next_blocking(Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(200));
        let code = fork_util::run_in_child(Duration::from_secs(20), || {
            // Not the parent's reader's lock: an answer at once.
            let started = Instant::now();
            match sub.next_blocking(Duration::ZERO) {
                Err(e) if e.kind() == ErrorKind::Timeout => {}
                _ => return 2,
            }
            if started.elapsed() > Duration::from_secs(2) {
                return 3;
            }
            // And the child's own subscription sees the child's changes.
            pool.set_health("web-1", Health::Healthy, "child").unwrap();
            match sub.next_blocking(Duration::from_secs(5)) {
                Ok(Received::Event(ClusterEvent::HealthChanged {
                    new: Health::Healthy,
                    ..
                })) => {}
                _ => return 4,
            }
            0
        });
        assert_eq!(
            code, 0,
            "child: 2 = no timeout answer, 3 = too slow, 4 = no event, 101 = panic"
        );
        // The parent's reader is woken by a change in the parent.
        pool.set_health("web-1", Health::Unhealthy, "parent")
            .unwrap();
        match reader.join().unwrap().unwrap() {
            Received::Event(ClusterEvent::HealthChanged { new, .. }) => {
                assert_eq!(new, Health::Unhealthy)
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    drop(pool);
    assert_eq!(
        sub.next_blocking(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::Closed
    );
}
