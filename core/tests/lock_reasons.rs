//! Every reason a lock acquisition can fail with, each produced by a real situation (issue
//! #12), and the waiter queue / hand-over that makes waiting fair, with its keys.
//!
//! | situation | kind | message says |
//! |---|---|---|
//! | someone holds it past our deadline | `timeout` | `deadline passed after waiting …; it is held by someone else, for about N ms more` |
//! | contenders split the masters past our deadline | `timeout` | `deadline passed …; no attempt reached a quorum (contenders split …)` |
//! | too many masters silent | `timeout` | `masters timed out: 2 of 3 did not answer …` |
//! | too many masters down | `unavailable` | `no quorum reachable: 2 of 3 masters failed …` |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::ErrorKind;
use futures_util::StreamExt;

mod support;
use support::RedisServer;

fn redlock(servers: &[RedisServer]) -> DistributedLock {
    let a: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    DistributedLock::redlock(&refs, LockOptions::default()).unwrap()
}

async fn held_reason(locks: &DistributedLock, other: &DistributedLock) {
    let g = locks
        .try_acquire("job", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let t = Instant::now();
    let e = other
        .acquire_timeout("job", Duration::from_secs(5), Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("deadline passed after waiting") && m.contains("held by someone else"),
        "{m}"
    );
    // The remaining TTL: about 4.7 s of the 5 s.
    let ms: u64 = m
        .split("for about ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no remaining TTL in {m:?}"));
    assert!((3_500..=5_000).contains(&ms), "remaining {ms} ms: {m}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_300),
        "waited {waited:?}"
    );
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_by_another_with_the_remaining_ttl() {
    let one = RedisServer::start();
    held_reason(
        &DistributedLock::redis(&one.addr(), LockOptions::default()).unwrap(),
        &DistributedLock::redis(&one.addr(), LockOptions::default()).unwrap(),
    )
    .await;
    let three: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    held_reason(&redlock(&three), &redlock(&three)).await;
}

/// Master 0 is held by someone else, master 1 is stalled, master 2 grants: no quorum is
/// possible without the stalled master. The attempt gives its grant back after a short grace,
/// not after the stalled master's 100 ms timeout, and publishes nothing while undoing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_vote_is_given_up_at_once_and_reported() {
    let mut s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locks = redlock(&s);
    // Warm the connections (the first attempt also connects).
    locks
        .try_acquire("warm", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    let client = redis::Client::open(s[2].url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("clusterkit:l:released").await.unwrap();
    let mut messages = pubsub.into_on_message();

    assert_eq!(
        s[0].cmd(&["SET", "clusterkit:l:{job}", "someone-else", "PX", "10000"]),
        "+OK"
    );
    s[1].pause();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert!(locks
            .try_acquire("job", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(60),
        "a split attempt held its grant for {worst:?} (the per-master timeout is 100 ms)"
    );
    // The grant on master 2 was given back...
    support::eventually(
        "master 2 no longer holds job",
        Duration::from_secs(2),
        || s[2].cmd(&["EXISTS", "clusterkit:l:{job}"]) == ":0",
    );
    // ... without a release notification (it would wake a contender into the same split).
    let heard = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
    assert!(heard.is_err(), "an undo published {heard:?}");

    let t = Instant::now();
    let e = locks
        .acquire_timeout("job", Duration::from_secs(5), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("deadline passed") && m.contains("no attempt reached a quorum"),
        "{m}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1_300),
        "{:?}",
        t.elapsed()
    );
    s[1].resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_timed_out_and_no_quorum_reachable() {
    let mut s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locks = redlock(&s);
    drop(
        locks
            .try_acquire("warm", Duration::from_secs(1))
            .await
            .unwrap(),
    );
    // Two of three stalled: they time out.
    s[0].pause();
    s[1].pause();
    let t = Instant::now();
    let e = locks
        .try_acquire("job", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        e.to_string()
            .contains("masters timed out: 2 of 3 did not answer"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    s[0].resume();
    s[1].resume();
    // Two of three down: refused connections.
    s[0].kill();
    s[1].kill();
    // The first attempts may still time out while the client notices the dead connections
    // and reconnects, or answer "busy" when the live master answered (an entry of the
    // attempt that timed out above) before the dead ones failed (bounded: 20 attempts);
    // then the refusals are reported.
    let mut e = None;
    for _ in 0..20 {
        let err = match locks.try_acquire("job", Duration::from_secs(5)).await {
            Ok(None) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Ok(Some(_)) => panic!("acquired with 2 of 3 masters dead"),
            Err(err) => err,
        };
        let done = err.kind() == ErrorKind::Unavailable;
        e = Some(err);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = e.unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string()
            .contains("no quorum reachable: 2 of 3 masters failed"),
        "{e}"
    );
    // Waiting does not hide it: at the deadline the same reason comes back.
    let t = Instant::now();
    let e = locks
        .acquire_timeout("job", Duration::from_secs(5), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("no quorum reachable"), "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t.elapsed()
    );
}

/// A waiter queues itself; the release hands the lock to it, not back to the releaser; the
/// queue key has a TTL and is gone once nobody waits; a waiter that gives up leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_hands_the_lock_to_the_waiter() {
    let server = RedisServer::start();
    let a = DistributedLock::redis(&server.addr(), LockOptions::default()).unwrap();
    let b = DistributedLock::redis(&server.addr(), LockOptions::default()).unwrap();
    let held = a
        .try_acquire("job", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let first = held.fencing_token();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.acquire_timeout("job", Duration::from_secs(5), Duration::from_secs(3))
                .await
        })
    };
    support::eventually("b is queued", Duration::from_secs(2), || {
        server.cmd(&["ZCARD", "clusterkit:w:{job}"]) == ":1"
    });
    let pttl: i64 = server.cmd(&["PTTL", "clusterkit:w:{job}"])[1..]
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 1_000, "queue PTTL {pttl}");
    held.release().await.unwrap();
    // The releaser cannot take it back while b is being handed the lock.
    assert!(a
        .try_acquire("job", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    let t = Instant::now();
    let g = waiter.await.unwrap().unwrap();
    assert!(g.fencing_token() > first);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.cmd(&["EXISTS", "clusterkit:w:{job}"]), ":0");

    // A waiter that gives up leaves the queue: the next release deletes the lock.
    let e = a
        .acquire_timeout("job", Duration::from_secs(5), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    support::eventually("a left the queue", Duration::from_secs(2), || {
        server.cmd(&["EXISTS", "clusterkit:w:{job}"]) == ":0"
    });
    g.release().await.unwrap();
    assert_eq!(server.cmd(&["EXISTS", "clusterkit:l:{job}"]), ":0");
    assert!(a
        .try_acquire("job", Duration::from_secs(5))
        .await
        .unwrap()
        .is_some());
}
