//! Locks on a real 3-member etcd cluster (issue #17): mutual exclusion with 8 clients while a
//! member is SIGSTOPped and the leader is killed (a counter guarded by the fencing token stays
//! exact), waiters woken by a watch (request count, no polling), a holder whose lease expired
//! fenced off and told it lost the lock, and the `[locks] etcd = {...}` config section.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod etcd_support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterkit::etcd::EtcdSettings;
use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::ErrorKind;
use etcd_support::EtcdCluster;

fn locks(eps: &[String], prefix: &str) -> DistributedLock {
    let mut s = EtcdSettings::new(eps);
    s.timeout = Duration::from_millis(1000);
    DistributedLock::etcd(s, prefix, LockOptions::default()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The protected resource: accepts a write only with a fencing token at least the highest
/// seen, so a late write of an earlier holder is refused.
#[derive(Default)]
struct Resource {
    highest: u64,
    counter: u64,
    refused: u64,
}

impl Resource {
    fn read(&self) -> u64 {
        self.counter
    }
    fn write(&mut self, fence: u64, value: u64) -> bool {
        if fence < self.highest {
            self.refused += 1;
            return false;
        }
        self.highest = fence;
        self.counter = value;
        true
    }
}

#[test]
fn mutual_exclusion_with_8_clients_through_a_paused_member_and_a_killed_leader() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 250;
    const BOUND: Duration = Duration::from_secs(240);
    let mut etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let rt = runtime();
    let resource = Arc::new(Mutex::new(Resource::default()));
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let l = locks(&eps, "/ck/locks/");
            let (resource, inside, overlaps, done, errors, stop) = (
                resource.clone(),
                inside.clone(),
                overlaps.clone(),
                done.clone(),
                errors.clone(),
                stop.clone(),
            );
            rt.spawn(async move {
                let mut mine = 0;
                let mut attempts = 0;
                while mine < PER_CLIENT && !stop.load(Ordering::SeqCst) && attempts < PER_CLIENT * 4
                {
                    attempts += 1;
                    let g = match l
                        .acquire_timeout("counter", Duration::from_secs(2), Duration::from_secs(15))
                        .await
                    {
                        Ok(g) => g,
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            continue;
                        }
                    };
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    // Read, yield, write: an overlapping holder would lose an increment.
                    let v = resource.lock().unwrap().read();
                    tokio::task::yield_now().await;
                    let ok = resource.lock().unwrap().write(g.fencing_token(), v + 1);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    if ok {
                        mine += 1;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Err(e) = g.release().await {
                        errors.lock().unwrap().push(format!("release: {e}"));
                    }
                }
                mine
            })
        })
        .collect();

    // Faults, while the clients run: a follower frozen for 4 s, then the leader killed and
    // restarted 2 s later.
    let wait_for = |n: u64| {
        let t = Instant::now();
        while done.load(Ordering::SeqCst) < n && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(200);
    let f = etcd.follower();
    etcd.pause(f);
    let before = done.load(Ordering::SeqCst);
    // 4 s: a request routed to the frozen member waits out the 1 s request timeout before it
    // is retried on another one, and an acquisition makes several requests (seen: 0 in a 2 s
    // window in a full run, 1 to 3 in others). Known weakness: see the issue #17 note.
    std::thread::sleep(Duration::from_secs(4));
    let during_pause = done.load(Ordering::SeqCst) - before;
    etcd.resume(f);
    wait_for(done.load(Ordering::SeqCst) + 200);
    let leader = etcd.leader();
    etcd.kill(leader);
    let before = done.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    let during_kill = done.load(Ordering::SeqCst) - before;
    etcd.restart(leader);

    let total: usize = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut total = 0;
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(r) => total += r.unwrap(),
                Err(_) => {
                    stop.store(true, Ordering::SeqCst);
                    panic!("clients did not finish within {BOUND:?}");
                }
            }
        }
        total
    });
    let elapsed = started.elapsed();
    let r = resource.lock().unwrap();
    let errors = errors.lock().unwrap();
    eprintln!(
        "{total} acquisitions by {CLIENTS} clients in {elapsed:?} ({:.0}/s); {during_pause} while a \
         follower was frozen, {during_kill} in the 2 s after the leader was killed; {} errors: {:?}",
        total as f64 / elapsed.as_secs_f64(),
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(r.refused, 0, "a fencing token went backwards");
    assert_eq!(
        total,
        CLIENTS * PER_CLIENT,
        "every client finished its acquisitions"
    );
    assert_eq!(r.counter, total as u64, "the fenced counter is exact");
    assert!(during_pause > 0, "progress while a member was frozen");
    assert!(errors.len() < CLIENTS * PER_CLIENT / 10, "{errors:?}");
}

#[test]
fn waiters_are_woken_by_a_watch_not_by_polling() {
    let etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let rt = runtime();
    let holder = locks(&eps, "/ck/wake/");
    let waiter = locks(&eps, "/ck/wake/");
    rt.block_on(async {
        let hold = Duration::from_secs(3);
        let g = holder
            .try_acquire("job", Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        let first = g.fencing_token();
        // Warm the waiter's connections so its count is the wait alone.
        let warm = waiter
            .try_acquire("other", Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        warm.release().await.unwrap();
        let before = waiter.backend_requests();
        let w = tokio::spawn({
            let waiter = waiter.clone();
            async move {
                let g = waiter
                    .acquire_timeout("job", Duration::from_secs(10), Duration::from_secs(20))
                    .await
                    .unwrap();
                (Instant::now(), g)
            }
        });
        tokio::time::sleep(hold).await;
        let released = Instant::now();
        g.release().await.unwrap();
        let (woken, g2) = w.await.unwrap();
        let requests = waiter.backend_requests() - before;
        let latency = woken.saturating_duration_since(released);
        eprintln!(
            "waited {hold:?}: {requests} etcd requests (lease, key, listings, one watch, \
             keep-alives); woken {latency:?} after the release"
        );
        assert!(g2.fencing_token() > first);
        // A poller at the Redis backend's 10..250 ms backoff would send at least 12 requests in
        // 3 s; the watcher sends a fixed handful: grant, put, list, watch, list, plus a
        // keep-alive every third of the 10 s TTL.
        assert!(
            requests <= 8,
            "{requests} requests while waiting: is it polling?"
        );
        g2.release().await.unwrap();
    });
}

#[test]
fn a_holder_whose_lease_expired_is_fenced_off_and_told() {
    let etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let rt = runtime();
    let a = locks(&eps, "/ck/fence/");
    let b = locks(&eps, "/ck/fence/");
    let mut resource = Resource::default();
    rt.block_on(async {
        // A takes the lock for 1 s without renewal, then "pauses" (does nothing) past it.
        let ga = a
            .try_acquire("invoice", Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        let watch = ga.watch();
        assert!(ga.is_held());
        let v = resource.read();
        // B waits; etcd deletes A's key when A's lease expires, which wakes B.
        let t = Instant::now();
        let gb = b
            .acquire_timeout("invoice", Duration::from_secs(10), Duration::from_secs(15))
            .await
            .unwrap();
        eprintln!("B got the lock {:?} after A stopped renewing", t.elapsed());
        assert!(gb.fencing_token() > ga.fencing_token());
        assert!(resource.write(gb.fencing_token(), v + 10));
        // A resumes and tries its late write: refused by the fencing token.
        assert!(!resource.write(ga.fencing_token(), v + 1));
        assert_eq!(resource.counter, v + 10);
        // A was told: its validity ran out, lost() completed, release is a conflict.
        tokio::time::timeout(Duration::from_secs(5), watch.lost())
            .await
            .expect("lost() completes");
        assert!(!ga.is_held());
        let e = ga.release().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        gb.release().await.unwrap();

        // With auto-renewal the lease lives on, until it is revoked behind the holder's back
        // (an operator, or the lease lost in a partition): the next keep-alive finds it gone
        // and the guard reports the loss through the same signal.
        let renewing = a.with_auto_renew(true);
        let g = renewing
            .try_acquire("invoice", Duration::from_secs(3))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            g.is_held(),
            "auto-renewal keeps the lease alive past its TTL"
        );
        let leases = etcd.ctl(&["lease", "list"]);
        for id in leases.lines().skip(1) {
            let _ = etcd.try_ctl(&["lease", "revoke", id.trim()]);
        }
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), g.watch().lost())
            .await
            .expect("the loss is reported");
        eprintln!(
            "loss reported {:?} after the lease was revoked",
            t.elapsed()
        );
        assert!(!g.is_held());
        assert!(a.stats().losses >= 1);
    });
}

#[test]
fn config_document_locks_on_etcd() {
    let etcd = EtcdCluster::start();
    let doc = format!(
        "[locks]\netcd = {{ endpoints = {}, prefix = \"/ck/doc-locks/\" }}\n",
        etcd.endpoints_literal()
    );
    let ck = clusterkit::Clusterkit::parse(&doc).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let g = ck
            .locks()
            .try_acquire("report", Duration::from_secs(5))
            .await
            .unwrap()
            .expect("free");
        assert!(g.fencing_token() > 0);
        assert!(ck
            .locks()
            .try_acquire("report", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        let keys = etcd.ctl(&["get", "--prefix", "/ck/doc-locks/", "--keys-only"]);
        assert!(keys.contains("/ck/doc-locks/report/"), "{keys}");
        // The value carries nothing: the lock token stays in the process.
        let values = etcd.ctl(&["get", "--prefix", "/ck/doc-locks/", "--print-value-only"]);
        assert!(!values.contains(g.token()), "{values}");
        g.release().await.unwrap();
        assert_eq!(
            etcd.ctl(&["get", "--prefix", "/ck/doc-locks/", "--keys-only"])
                .trim(),
            ""
        );
    });
    for (locks, field) in [
        ("etcd = { endpoints = [] }", "locks.etcd.endpoints"),
        (
            "pool = \"x\"\netcd = { endpoints = [\"127.0.0.1:1\"] }",
            "locks",
        ),
        (
            "etcd = { endpoints = [\"127.0.0.1:1\"], tls = { ca_file = \"/nonexistent/ca.pem\" } }",
            "tls.ca_file",
        ),
    ] {
        let e = clusterkit::Clusterkit::parse(&format!("[locks]\n{locks}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{locks}: {e}");
    }
}
