//! etcd lock benchmark (issue #17), three lock implementations side by side in one run:
//!
//! - `clusterkit etcd`: `DistributedLock::etcd` on a private 3-member etcd (lease-bound key,
//!   watch on the predecessor, create-revision fencing);
//! - `clusterkit Redlock-3`: `DistributedLock::redlock` over 3 private redis-server masters;
//! - `etcd-client lock API`: the `etcd-client` crate's `lock` / `unlock` (the v3lock service
//!   behind `etcdctl lock`), with a lease granted and revoked per acquisition as etcdctl does.
//!
//! Figures: uncontended acquire + release pairs per second (one client, one name, sequential),
//! contended acquisitions per second (8 clients, one name) and wake-up latency (a waiter
//! blocked behind a holder; the time from the holder's release call to the waiter holding the
//! lock), p50 / p90 / max over `ETCD_BENCH_ROUNDS` rounds (default 30).
//!
//! Run with `cargo bench -p clusterkit --features etcd --bench etcd_lock` (by hand, not in CI).
//! Every server listens on 127.0.0.1 only and is killed when its handle drops.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "../tests/etcd_support/mod.rs"]
mod etcd_support;

use std::time::{Duration, Instant};

use clusterkit::etcd::EtcdSettings;
use clusterkit::lock::{DistributedLock, LockOptions};
use common::{dfmt, loadavg, RedisServer};
use etcd_client::{Client, LockOptions as EtcdLockOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One lock implementation under test.
#[derive(Clone)]
enum Imp {
    Ck(DistributedLock),
    Raw(Box<Client>),
}

enum Held {
    Ck(clusterkit::lock::LockGuard),
    Raw(Box<Client>, Vec<u8>, i64),
}

impl Imp {
    async fn acquire(&self, name: &str) -> Held {
        match self {
            Imp::Ck(l) => Held::Ck(
                l.acquire_timeout(name, Duration::from_secs(10), Duration::from_secs(30))
                    .await
                    .unwrap(),
            ),
            Imp::Raw(c) => {
                let mut c = c.clone();
                let lease = c.lease_grant(10, None).await.unwrap().id();
                let r = c
                    .lock(name, Some(EtcdLockOptions::new().with_lease(lease)))
                    .await
                    .unwrap();
                Held::Raw(c, r.key().to_vec(), lease)
            }
        }
    }
}

impl Held {
    async fn release(self) {
        match self {
            Held::Ck(g) => g.release().await.unwrap(),
            Held::Raw(mut c, key, lease) => {
                c.unlock(key).await.unwrap();
                c.lease_revoke(lease).await.unwrap();
            }
        }
    }
}

async fn uncontended(imp: &Imp, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        imp.acquire("bench-u").await.release().await;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn contended(imps: &[Imp], per: usize) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = imps
        .iter()
        .cloned()
        .map(|imp| {
            tokio::spawn(async move {
                for _ in 0..per {
                    imp.acquire("bench-c").await.release().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (imps.len() * per) as f64 / t.elapsed().as_secs_f64()
}

async fn wakeup(holder: &Imp, waiter: &Imp, rounds: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let h = holder.acquire("bench-w").await;
        let w = waiter.clone();
        let task = tokio::spawn(async move {
            let g = w.acquire("bench-w").await;
            (Instant::now(), g)
        });
        // Let the waiter queue up behind the holder.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let released = Instant::now();
        h.release().await;
        let (got, g) = task.await.unwrap();
        out.push(got.saturating_duration_since(released));
        g.release().await;
    }
    out
}

fn main() {
    let rounds = env_usize("ETCD_BENCH_ROUNDS", 30);
    let n = env_usize("ETCD_BENCH_PAIRS", 300);
    let per = env_usize("ETCD_BENCH_PER_CLIENT", 40);
    let etcd = etcd_support::EtcdCluster::start();
    let redis: Vec<RedisServer> = (0..3).map(|_| RedisServer::start(false)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let eps = etcd.endpoints();
    let addrs: Vec<String> = redis.iter().map(|r| r.address()).collect();
    let refs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();

    let make = |kind: &str| -> Imp {
        match kind {
            "ck-etcd" => Imp::Ck(
                DistributedLock::etcd(
                    EtcdSettings::new(&eps),
                    "/bench/locks/",
                    LockOptions::default(),
                )
                .unwrap(),
            ),
            "ck-redlock" => {
                Imp::Ck(DistributedLock::redlock(&refs, LockOptions::default()).unwrap())
            }
            _ => Imp::Raw(Box::new(rt.block_on(Client::connect(&eps, None)).unwrap())),
        }
    };
    let kinds = [
        ("ck-etcd", "clusterkit etcd (3 members)"),
        ("ck-redlock", "clusterkit Redlock-3 (3 redis-server)"),
        ("raw", "etcd-client lock API (`etcdctl lock` semantics)"),
    ];
    println!(
        "etcd lock benchmark: {n} uncontended pairs, 8 clients x {per} contended, {rounds} wake-up rounds; load {}",
        loadavg()
    );
    println!("| implementation | uncontended pairs/s | contended acq/s (8 clients) | wake-up p50 | p90 | max |");
    println!("|---|---|---|---|---|---|");
    let mut results = Vec::new();
    for (kind, label) in kinds {
        let imp = make(kind);
        let clients: Vec<Imp> = (0..8).map(|_| make(kind)).collect();
        let waiter = make(kind);
        let (u, c, mut w) = rt.block_on(async {
            // Warm up connections.
            imp.acquire("warm").await.release().await;
            waiter.acquire("warm").await.release().await;
            let u = uncontended(&imp, n).await;
            let c = contended(&clients, per).await;
            let w = wakeup(&imp, &waiter, rounds).await;
            (u, c, w)
        });
        let (p50, p90, max) = (pct(&mut w, 0.5), pct(&mut w, 0.9), pct(&mut w, 1.0));
        println!(
            "| {label} | {u:.0} | {c:.0} | {} | {} | {} |",
            dfmt(p50),
            dfmt(p90),
            dfmt(max)
        );
        results.push((kind, u, c, p50));
    }
    let get = |k: &str| results.iter().find(|r| r.0 == k).unwrap();
    let (e, r, x) = (get("ck-etcd"), get("ck-redlock"), get("raw"));
    println!(
        "\nratios: clusterkit etcd / etcd-client lock API: uncontended {:.2}x, contended {:.2}x, wake-up p50 {:.2}x",
        e.1 / x.1,
        e.2 / x.2,
        e.3.as_secs_f64() / x.3.as_secs_f64()
    );
    println!(
        "ratios: clusterkit etcd / clusterkit Redlock-3: uncontended {:.2}x, contended {:.2}x, wake-up p50 {:.2}x",
        e.1 / r.1,
        e.2 / r.2,
        e.3.as_secs_f64() / r.3.as_secs_f64()
    );
}
