//! Issue #18: a release publishes only when a waiter is queued, yet no waiter misses a
//! release (a fresh client, several waiters of one process); locks without fencing token
//! (one Redis and Redlock: one round trip, no token, still exclusive, still fair).
//!
//! Every waiter here retries only every 10 s (`with_retry(10 s, 10 s)`) and must be done
//! within 4 s of the release: only the release notification (or the local wake-up of the
//! releasing process) can wake it in time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::ErrorKind;

mod support;
use support::{bulk_reply, RedisServer};

const TTL: Duration = Duration::from_secs(10);
/// Longer than any test here waits for a wake-up: only a notification wakes a waiter in time.
fn no_backoff() -> LockOptions {
    LockOptions::default().with_retry(Duration::from_secs(10), Duration::from_secs(10))
}
/// How soon after a release its waiter must hold the lock (the backoff is 10 s, jittered
/// down to at least 5 s; the waits' deadlines are 8 s).
const WOKEN_WITHIN: Duration = Duration::from_secs(4);

fn locks(servers: &[RedisServer], options: LockOptions) -> DistributedLock {
    let a: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    DistributedLock::redlock(&refs, options).unwrap()
}

/// Calls of `command` on `server` since the last `CONFIG RESETSTAT` (INFO commandstats).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = bulk_reply(
        server.port(),
        &["INFO", "commandstats"],
        Duration::from_secs(2),
    )
    .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}

fn reset_stats(servers: &[RedisServer]) {
    for s in servers {
        assert_eq!(s.cmd(&["CONFIG", "RESETSTAT"]), "+OK");
    }
}

fn publishes(servers: &[RedisServer]) -> u64 {
    servers.iter().map(|s| calls(s, "publish")).sum()
}

/// Holder `a` takes `name`; `waiter` waits for it; `a` releases once the waiter is queued.
/// Returns how long after the release the waiter held the lock.
async fn handed_over(
    servers: &[RedisServer],
    a: &DistributedLock,
    waiter: &DistributedLock,
    name: &str,
) -> Duration {
    let held = a.try_acquire(name, TTL).await.unwrap().expect("free");
    let w = {
        let (waiter, name) = (waiter.clone(), name.to_string());
        tokio::spawn(async move {
            let g = waiter
                .acquire_timeout(&name, TTL, Duration::from_secs(8))
                .await
                .unwrap();
            let at = Instant::now();
            g.release().await.unwrap();
            at
        })
    };
    queued(servers, name).await;
    let released = Instant::now();
    held.release().await.unwrap();
    w.await.unwrap().duration_since(released)
}

/// Waits (bounded) until some client is in the waiter queue of `name` on a majority.
async fn queued(servers: &[RedisServer], name: &str) {
    let key = format!("clusterkit:w:{{{name}}}");
    let majority = servers.len() / 2 + 1;
    for _ in 0..500 {
        let n = servers
            .iter()
            .filter(|s| s.cmd(&["ZCARD", &key]) != ":0")
            .count();
        if n >= majority {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no waiter queued for {name:?} within 1 s");
}

async fn publish_only_for_waiters(n: usize) {
    let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
    let a = locks(&servers, no_backoff());
    let b = locks(&servers, no_backoff());
    // Warm up (scripts loaded, subscriptions live).
    a.try_acquire("warm", TTL)
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    reset_stats(&servers);
    for i in 0..20 {
        let g = a.try_acquire("quiet", TTL).await.unwrap().expect("free");
        g.release().await.unwrap();
        if i % 2 == 0 {
            // Unfenced acquisitions publish nothing either.
            let g = a
                .with_fencing(false)
                .try_acquire("quiet", TTL)
                .await
                .unwrap()
                .expect("free");
            g.release().await.unwrap();
        }
    }
    assert_eq!(
        publishes(&servers),
        0,
        "a release with nobody waiting published"
    );

    // With a waiter: the release is published (on every master that queued it) and wakes it.
    let after = handed_over(&servers, &a, &b, "busy").await;
    assert!(after < WOKEN_WITHIN, "woken {after:?} after the release");
    let p = publishes(&servers);
    assert!(p >= 1 && p <= n as u64, "{p} publishes for one release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_publishes_only_when_someone_waits() {
    publish_only_for_waiters(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_publishes_only_when_someone_waits() {
    publish_only_for_waiters(3).await;
}

/// Several waiters in one process are one client, i.e. one queue entry: the release that
/// hands the lock to that client pops it, and the next releases (by this same process) find
/// the queue empty and publish nothing; the releasing process wakes its own next waiter.
async fn waiters_of_one_process(n: usize, fencing: bool) {
    let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
    let holder = locks(&servers, no_backoff());
    let waiters = locks(&servers, no_backoff()).with_fencing(fencing);
    let held = holder.try_acquire("job", TTL).await.unwrap().expect("free");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let w = waiters.clone();
            tokio::spawn(async move {
                let g = w
                    .acquire_timeout("job", TTL, Duration::from_secs(8))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(g.fence().is_some(), fencing);
                g.release().await.unwrap();
                Instant::now()
            })
        })
        .collect();
    queued(&servers, "job").await;
    tokio::time::sleep(Duration::from_millis(50)).await; // every task has tried once
    let released = Instant::now();
    held.release().await.unwrap();
    for t in tasks {
        let after = t.await.unwrap().duration_since(released);
        assert!(
            after < WOKEN_WITHIN,
            "a waiter of the process finished {after:?} after the first release"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_wakes_every_waiter_of_one_process() {
    waiters_of_one_process(1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_wakes_every_waiter_of_one_process() {
    waiters_of_one_process(3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_unfenced_waiters_of_one_process() {
    waiters_of_one_process(3, false).await;
}

/// A client that never locked before starts waiting and the holder releases the moment its
/// queue entry appears: the waiter subscribed before it queued, so it hears that release.
async fn fresh_waiter_hears_the_release(n: usize) {
    let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
    let holder = locks(&servers, no_backoff());
    for round in 0..5 {
        let fresh = locks(&servers, no_backoff());
        let name = format!("fresh{round}");
        let after = handed_over(&servers, &holder, &fresh, &name).await;
        assert!(
            after < WOKEN_WITHIN,
            "round {round}: woken {after:?} after the release"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_fresh_waiter_hears_the_release() {
    fresh_waiter_hears_the_release(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_fresh_waiter_hears_the_release() {
    fresh_waiter_hears_the_release(3).await;
}

/// Without fencing: no token (a clear error when asked), still exclusive, handed over to
/// waiters of either kind, fenced tokens keep increasing around it, and on Redlock one script
/// call per master (no second phase).
async fn unfenced(n: usize) {
    let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
    let fenced = locks(&servers, no_backoff());
    let plain = locks(&servers, no_backoff().with_fencing(false));
    assert!(fenced.fencing() && !plain.fencing());
    assert!(!fenced.with_fencing(false).fencing());

    let f1 = fenced.try_acquire("u", TTL).await.unwrap().unwrap();
    let t1 = f1.fencing_token();
    assert_eq!(f1.fence(), Some(t1));
    assert_eq!(f1.try_fencing_token().unwrap(), t1);
    f1.release().await.unwrap();

    // The release and the fence store return at a majority; let the last master's finish
    // (the lock key gone everywhere), so that no call of theirs is counted below.
    for _ in 0..250 {
        if servers
            .iter()
            .all(|s| s.cmd(&["EXISTS", "clusterkit:l:{u}"]) == ":0")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_stats(&servers);
    let g = plain.try_acquire("u", TTL).await.unwrap().expect("free");
    let validity_at_acquire = g.validity();
    // The acquisition returns at a quorum: the last master's script may still be running.
    let count = || -> u64 { servers.iter().map(|s| calls(s, "evalsha")).sum() };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while count() < n as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let evals = count();
    // At most one script call per master (no fencing phase); the last master's may not be
    // sent at all when a quorum answered before its connection was made (a loaded machine).
    assert!(
        (n as u64 / 2 + 1..=n as u64).contains(&evals),
        "an unfenced acquisition is one script call per master, at least a quorum: {evals} on {n}"
    );
    assert_eq!(g.fence(), None);
    assert_eq!(g.fencing_token(), 0, "0 is never a real token");
    let e = g.try_fencing_token().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("fencing = false"), "{e}");
    assert!(!e.to_string().contains(g.token()), "{e}");
    assert!(format!("{g:?}").contains("None"), "{g:?}");
    assert!(g.is_held() && validity_at_acquire > Duration::from_secs(9));
    // Exclusive against both kinds.
    assert!(fenced.try_acquire("u", TTL).await.unwrap().is_none());
    assert!(plain.try_acquire("u", TTL).await.unwrap().is_none());
    g.extend(TTL).await.unwrap();
    g.release().await.unwrap();

    // Fenced tokens still increase across unfenced holders.
    let f2 = fenced.try_acquire("u", TTL).await.unwrap().unwrap();
    assert!(f2.fencing_token() > t1);
    f2.release().await.unwrap();

    // Hand-over between the kinds, woken by the release notification.
    let after = handed_over(&servers, &fenced, &plain, "h1").await;
    assert!(
        after < WOKEN_WITHIN,
        "unfenced waiter woken after {after:?}"
    );
    let after = handed_over(&servers, &plain, &fenced, "h2").await;
    assert!(after < WOKEN_WITHIN, "fenced waiter woken after {after:?}");

    // An unfenced waiter that was refused and queued leaves the queues when it acquires:
    // its release then hands the lock to the next waiter (not to itself).
    let other = locks(&servers, no_backoff());
    let held = fenced.try_acquire("q", TTL).await.unwrap().unwrap();
    let first = {
        let plain = plain.clone();
        tokio::spawn(async move {
            let g = plain
                .acquire_timeout("q", TTL, Duration::from_secs(8))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            g.release().await.unwrap();
            Instant::now()
        })
    };
    queued(&servers, "q").await;
    let second = {
        let other = other.clone();
        tokio::spawn(async move {
            let g = other
                .acquire_timeout("q", TTL, Duration::from_secs(8))
                .await
                .unwrap();
            let at = Instant::now();
            g.release().await.unwrap();
            at
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await; // both queued
    held.release().await.unwrap();
    let first_done = first.await.unwrap();
    let after = second.await.unwrap().duration_since(first_done);
    assert!(
        after < WOKEN_WITHIN,
        "the second waiter got the lock {after:?} after the unfenced holder released it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_without_fencing() {
    unfenced(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_without_fencing() {
    unfenced(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_without_fencing() {
    let l = DistributedLock::memory().with_fencing(false);
    let g = l.try_acquire("m", TTL).await.unwrap().unwrap();
    assert_eq!(g.fence(), None);
    assert_eq!(
        g.try_fencing_token().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(l.try_acquire("m", TTL).await.unwrap().is_none());
    g.release().await.unwrap();
}

/// `[locks] fencing = false` in the config document.
#[test]
fn config_turns_fencing_off() {
    let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let nodes: Vec<String> = masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "{{ id = \"m{i}\", host = \"127.0.0.1\", port = {} }}",
                m.port()
            )
        })
        .collect();
    for (setting, fenced) in [
        ("", true),
        ("fencing = true\n", true),
        ("fencing = false\n", false),
    ] {
        let doc = format!(
            "[pools.locks]\nstrategy = \"round_robin\"\nnodes = [ {} ]\n\n[locks]\npool = \"locks\"\n{setting}",
            nodes.join(", ")
        );
        let ck = clusterkit::Clusterkit::parse(&doc).unwrap();
        assert_eq!(ck.locks().fencing(), fenced, "{setting:?}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let g = ck.locks().try_acquire("cfg", TTL).await.unwrap().unwrap();
            assert_eq!(g.fence().is_some(), fenced, "{setting:?}");
            g.release().await.unwrap();
        });
    }
    let e = clusterkit::Clusterkit::parse(
        "[pools.locks]\nnodes = [ { id = \"a\", host = \"127.0.0.1\", port = 1 } ]\n[locks]\npool = \"locks\"\nfencing = \"no\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("fencing"), "{e}");
}
