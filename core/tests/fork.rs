//! The blocking facade keeps working in a child process after fork() (PHP-FPM, Python
//! multiprocessing). One test per binary: forking a process with many threads is best kept
//! away from other tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::blocking;

mod fork_util;
use fork_util::{run_in_child, spawn_child, wait_child, Outcome};

#[test]
fn runtime_is_recreated_in_a_forked_child() {
    // Use the runtime in the parent first, so the child inherits a started one.
    let parent_rt = blocking::runtime().unwrap();
    let v = blocking::block_on(async {
        let h = tokio::spawn(async { 20 });
        h.await.unwrap() + 1
    })
    .unwrap();
    assert_eq!(v, 21);

    let code = run_in_child(Duration::from_secs(20), || {
        let rt = blocking::runtime().unwrap();
        let fresh = !std::sync::Arc::ptr_eq(&rt, &parent_rt);
        let v = blocking::block_on(async {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.await.unwrap();
            }
            sum
        })
        .unwrap();
        if fresh && v == 28 {
            0
        } else {
            1
        }
    });
    assert_eq!(code, 0, "the child's runtime did not work");

    // The parent's runtime is untouched.
    assert_eq!(blocking::block_on(async { 2 }).unwrap(), 2);
}

#[test]
fn the_fork_helper_kills_a_hung_child_at_the_deadline() {
    let started = Instant::now();
    let pid = spawn_child(|| loop {
        std::thread::sleep(Duration::from_millis(10));
    });
    assert_eq!(
        wait_child(pid, Duration::from_millis(300)),
        Outcome::TimedOut
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        run_in_child(Duration::from_secs(10), || 7),
        7,
        "exit codes are passed through"
    );
}
