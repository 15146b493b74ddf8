//! Distributed locks: the same behaviour on every backend, Redlock with stalled and killed
//! masters, fencing across holders that never release, and mutual exclusion under faults.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::ErrorKind;

mod support;
use support::RedisServer;

fn addrs(servers: &[RedisServer]) -> Vec<String> {
    servers.iter().map(|s| s.addr()).collect()
}

fn redlock(servers: &[RedisServer], options: LockOptions) -> DistributedLock {
    let a = addrs(servers);
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    DistributedLock::redlock(&refs, options).unwrap()
}

/// Behaviour every backend shares. `other` is a second client of the same backend.
async fn behaviour(locks: &DistributedLock, other: &DistributedLock) {
    let ttl = Duration::from_secs(5);
    // Mutual exclusion, tokens, fencing.
    let a = locks
        .try_acquire("job", ttl)
        .await
        .unwrap()
        .expect("free lock");
    assert_eq!(a.token().len(), 32, "128-bit token");
    assert!(a.validity() > Duration::from_secs(4) && a.validity() <= ttl);
    assert!(other.try_acquire("job", ttl).await.unwrap().is_none());
    let f1 = a.fencing_token();
    a.release().await.unwrap();
    let b = other
        .try_acquire("job", ttl)
        .await
        .unwrap()
        .expect("released lock");
    assert!(b.fencing_token() > f1, "fencing tokens must increase");
    b.release().await.unwrap();

    // Release or extend by a holder whose lock expired and was taken over: reported.
    let old = locks
        .try_acquire("short", Duration::from_millis(150))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!old.is_held());
    let new = other
        .try_acquire("short", ttl)
        .await
        .unwrap()
        .expect("expired lock is free");
    assert!(new.fencing_token() > old.fencing_token());
    assert_eq!(
        old.extend(ttl).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(old.release().await.unwrap_err().kind(), ErrorKind::Conflict);
    assert!(
        new.is_held(),
        "the wrong owner's release must not free the lock"
    );
    assert!(locks.try_acquire("short", ttl).await.unwrap().is_none());
    new.extend(Duration::from_secs(10)).await.unwrap();
    assert!(new.validity() > Duration::from_secs(9));
    new.release().await.unwrap();

    // acquire_timeout gives up on time.
    let held = locks.try_acquire("busy", ttl).await.unwrap().unwrap();
    let t = Instant::now();
    let e = other
        .acquire_timeout("busy", ttl, Duration::from_millis(400))
        .await
        .unwrap_err();
    let waited = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_millis(1400), "{waited:?}");

    // A waiter is woken by the release, well before its next retry (retry_min is 2 s here).
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move {
            let g = other
                .acquire_timeout("busy", ttl, Duration::from_secs(20))
                .await
                .unwrap();
            let at = Instant::now();
            g.release().await.unwrap();
            at
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // the waiter is asleep now
    let released_at = Instant::now();
    held.release().await.unwrap();
    let acquired_at = waiter.await.unwrap();
    let latency = acquired_at.duration_since(released_at);
    assert!(
        latency < Duration::from_millis(500),
        "woken {latency:?} after the release"
    );

    // Dropping a guard releases it (in the background).
    drop(locks.try_acquire("dropped", ttl).await.unwrap().unwrap());
    let mut free = false;
    for _ in 0..50 {
        if let Some(g) = other.try_acquire("dropped", ttl).await.unwrap() {
            g.release().await.unwrap();
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(free, "a dropped guard kept its lock");

    // Bad input.
    for (name, ttl) in [
        ("", ttl),
        ("x", Duration::ZERO),
        ("x", Duration::from_secs(100_000)),
    ] {
        let e = locks.try_acquire(name, ttl).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name:?} {ttl:?}");
    }
    let long = "n".repeat(clusterkit::lock::MAX_NAME_LEN + 1);
    assert_eq!(
        locks.try_acquire(&long, ttl).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

fn slow_retry() -> LockOptions {
    LockOptions::default().with_retry(Duration::from_secs(2), Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend() {
    let locks = DistributedLock::memory();
    behaviour(&locks, &locks.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_redis() {
    let s = RedisServer::start();
    let a = DistributedLock::redis(&s.addr(), slow_retry()).unwrap();
    let b = DistributedLock::redis(&s.addr(), slow_retry()).unwrap();
    behaviour(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_three_masters() {
    let s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    behaviour(&redlock(&s, slow_retry()), &redlock(&s, slow_retry())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_does_not_wait_for_a_stalled_master() {
    let mut s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locks = redlock(&s, LockOptions::default());
    s[1].pause();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let g = locks
            .try_acquire(&format!("k{i}"), Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        worst = worst.max(t.elapsed());
        assert!(g.validity() > Duration::from_secs(4));
        g.release().await.unwrap();
    }
    // The per-master timeout is 100 ms; quorum answers in about a round trip.
    assert!(
        worst < Duration::from_millis(100),
        "an acquisition waited {worst:?}"
    );
    // Two of three stalled: no quorum, a clear error or a timeout, never a hang.
    s[2].pause();
    let t = Instant::now();
    let e = locks
        .acquire_timeout("k", Duration::from_secs(5), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    s[1].resume();
    s[2].resume();
}

/// Successive holders that never release, each acquiring through a different majority, with
/// one master starting at a much higher counter: tokens strictly increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_fencing_increases_across_quorums() {
    let mut s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    // Far above any clock floor (µs since 1970 are ~1.8e15 today): only the counter of
    // master 0 can make the tokens exceed it.
    const HIGH: u64 = 5_000_000_000_000_000;
    assert_eq!(
        s[0].cmd(&["SET", "clusterkit:f:{res}", &HIGH.to_string()]),
        "+OK"
    );
    let locks = redlock(&s, LockOptions::default());
    let mut last = 0;
    for round in 0..6 {
        let paused = [2, 0, 1][round % 3];
        s[paused].pause();
        let g = locks
            .acquire_timeout("res", Duration::from_millis(300), Duration::from_secs(5))
            .await
            .unwrap();
        let f = g.fencing_token();
        assert!(f > last, "round {round}: token {f} after {last}");
        last = f;
        std::mem::forget(g); // the holder "pauses" and never releases
        s[paused].resume();
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert!(
        last > HIGH,
        "the high counter of master 0 was never seen: {last}"
    );
    assert!(last < 1 << 53, "tokens stay exact in a double: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_renewal_keeps_and_reports() {
    let mut s = RedisServer::start();
    let locks =
        DistributedLock::redis(&s.addr(), LockOptions::default().with_auto_renew(true)).unwrap();
    let g = locks
        .try_acquire("renewed", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(g.is_held(), "auto-renewal did not extend the lock");
    // The server stops answering: renewal fails and the holder is told.
    s.pause();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), g.lost())
        .await
        .expect("the holder was not told");
    assert!(!g.is_held());
    assert!(t.elapsed() < Duration::from_secs(2));
    s.resume();
}

#[test]
fn bad_pools_are_refused() {
    assert_eq!(
        DistributedLock::redlock(&[], LockOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let e = DistributedLock::redlock(&["127.0.0.1:1", "127.0.0.1:1"], LockOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    assert!(DistributedLock::redis("", LockOptions::default()).is_err());
}

/// The holder pauses past its TTL and another client acquires. The resource accepts a write
/// only with a fencing token at least as high as the highest it has seen, so the paused
/// holder's late write is refused and no update is lost; the paused holder learns its lock is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_is_fenced_off() {
    let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let resource = RedisServer::start();
    let client = redis::Client::open(resource.url().as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // KEYS[1] = value, KEYS[2] = highest token seen; ARGV = token, new value.
    let fenced_write = redis::Script::new(
        r"local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
          if tonumber(ARGV[1]) < seen then return 0 end
          redis.call('SET', KEYS[2], ARGV[1]); redis.call('SET', KEYS[1], ARGV[2]); return 1",
    );
    let a_locks = redlock(&masters, LockOptions::default());
    let b_locks = redlock(&masters, LockOptions::default());
    let a = a_locks
        .try_acquire("doc", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    // A "pauses" (GC, SIGSTOP) past its TTL; B takes the lock and writes.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let b = b_locks
        .acquire_timeout("doc", Duration::from_secs(5), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(b.fencing_token() > a.fencing_token());
    let ok: i64 = fenced_write
        .key("doc")
        .key("doc:token")
        .arg(b.fencing_token())
        .arg("from B")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ok, 1);
    // A resumes: it can tell it lost the lock, and its late write is refused.
    assert!(!a.is_held());
    tokio::time::timeout(Duration::from_millis(100), a.lost())
        .await
        .expect("lost() must be ready");
    let late: i64 = fenced_write
        .key("doc")
        .key("doc:token")
        .arg(a.fencing_token())
        .arg("from A")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(late, 0, "a stale holder's write went through");
    let v: String = redis::cmd("GET")
        .arg("doc")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "from B");
    assert_eq!(a.release().await.unwrap_err().kind(), ErrorKind::Conflict);
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_under_faults_three_masters() {
    mutual_exclusion_under_faults(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_under_faults_five_masters() {
    mutual_exclusion_under_faults(5).await;
}

/// 8 clients, each with its own connections, increment a counter in a separate resource
/// Redis under a Redlock over `n` masters while a minority is paused and resumed and a master
/// is killed and restarted after more than the TTL. No two holds overlap (monotonic-clock
/// intervals) and no increment is lost.
async fn mutual_exclusion_under_faults(n: usize) {
    let masters = Arc::new(Mutex::new(
        (0..n).map(|_| RedisServer::start()).collect::<Vec<_>>(),
    ));
    let resource = RedisServer::start();
    let addrs = addrs(&masters.lock().unwrap());
    let ttl = Duration::from_secs(2);
    let acquired = Arc::new(AtomicU64::new(0));
    let intervals = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let refs: Vec<String> = addrs.clone();
        let resource =
            clusterkit::cache::Cache::redis(&resource.addr(), "res", Default::default()).unwrap();
        let (acquired, intervals) = (acquired.clone(), intervals.clone());
        clients.push(tokio::spawn(async move {
            let r: Vec<&str> = refs.iter().map(|s| s.as_str()).collect();
            let locks = DistributedLock::redlock(&r, LockOptions::default()).unwrap();
            let mut done = 0;
            while Instant::now() < deadline && done < 300 {
                let Ok(g) = locks
                    .acquire_timeout("counter", ttl, Duration::from_secs(3))
                    .await
                else {
                    continue;
                };
                let start = Instant::now();
                let v: i64 = match resource.get(b"n").await.unwrap() {
                    Some(b) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
                    None => 0,
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
                resource.set(b"n", (v + 1).to_string(), None).await.unwrap();
                let end = Instant::now();
                assert!(g.is_held(), "the work outlived the lock's validity");
                intervals.lock().unwrap().push((start, end));
                acquired.fetch_add(1, Ordering::SeqCst);
                done += 1;
                let _ = g.release().await;
            }
        }));
    }
    // Faults: pause a minority for 1 s; kill master 0 and restart it after more than the TTL
    // (its lock keys and fence counters are gone: it has no persistence).
    let minority = (n - 1) / 2;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..minority {
        masters.lock().unwrap()[n - 1 - i].pause();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..minority {
        masters.lock().unwrap()[n - 1 - i].resume();
    }
    masters.lock().unwrap()[0].kill();
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    masters.lock().unwrap()[0].restart();
    for c in clients {
        c.await.unwrap();
    }
    let total = acquired.load(Ordering::SeqCst);
    eprintln!("redlock over {n} masters: {total} acquisitions by 8 clients");
    assert!(total >= 100, "only {total} acquisitions");
    let mut iv = intervals.lock().unwrap().clone();
    iv.sort();
    for w in iv.windows(2) {
        assert!(w[0].1 <= w[1].0, "two holds overlapped");
    }
    let check =
        clusterkit::cache::Cache::redis(&resource.addr(), "res", Default::default()).unwrap();
    let final_value: u64 = std::str::from_utf8(&check.get(b"n").await.unwrap().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(final_value, total, "increments were lost");
}
