//! Lock benchmarks (issue #5), all backends side by side in one run, on private redis-servers.
//!
//! Run with `cargo bench -p clusterkit --bench lock` (by hand, not in CI; about 1 minute).
//! Sections, in this order (name them as arguments to run only some, e.g.
//! `cargo bench -p clusterkit --bench lock -- wakeup stall`):
//!
//! - `uncontended`: one client task, acquire + release of one name in a loop: one Redis,
//!   Redlock over 3 and over 5 masters, the embedded backend. Pairs per second, acquire and
//!   release latency p50/p99.
//! - `stall`: Redlock over 3 masters with one master stopped (SIGSTOP): acquire latency
//!   p50/p99/max (releases run in background tasks, distinct names), release latency, and the
//!   first acquisitions after the master resumes (SIGCONT).
//! - `contention`: 8 client tasks, each with its own `DistributedLock` (own connections and
//!   subscriptions), acquire + release one name for a fixed time, on one Redis and on
//!   Redlock-3: acquisitions per second, per-client share, wait per acquisition (p50/p99/max),
//!   mutual-exclusion violations, and the commands the servers executed per acquisition
//!   (`INFO commandstats` after `CONFIG RESETSTAT`).
//! - `wakeup`: a waiter blocked behind a holder with retry backoff 2 s (only the pub/sub
//!   release notification can wake it in time); release -> acquired latency over 200 rounds.
//!
//! Environment: `LOCK_BENCH_SECS` (measured seconds per uncontended figure, default 1.0),
//! `LOCK_BENCH_ROUNDS` (rounds of the uncontended section, default 3; figures are medians),
//! `LOCK_BENCH_CONTENTION_SECS` (default 3), `LOCK_BENCH_PIN=1` (this process on CPU 0, the
//! redis-servers on CPU 1). The client side runs on one current-thread tokio runtime (the
//! library's pub/sub subscribers run on its shared runtime). Every redis-server this starts
//! listens on 127.0.0.1 only and is killed when its handle drops (also on panic) and, through
//! `PR_SET_PDEATHSIG`, if this process dies. Results are printed as Markdown tables and
//! recorded in `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};
use common::{current_thread_runtime, dfmt, kfmt, loadavg, median, pin_to, spread, RedisServer};

// ---------------------------------------------------------------------------------------------
// Settings and small helpers.

fn secs() -> Duration {
    Duration::from_secs_f64(common::env_f64("LOCK_BENCH_SECS", 1.0))
}

fn rounds() -> usize {
    common::env_f64("LOCK_BENCH_ROUNDS", 3.0) as usize
}

fn contention_secs() -> Duration {
    Duration::from_secs_f64(common::env_f64("LOCK_BENCH_CONTENTION_SECS", 3.0))
}

fn pinned() -> bool {
    std::env::var("LOCK_BENCH_PIN").is_ok_and(|v| v == "1")
}

/// Sorted latency samples.
struct Lat(Vec<Duration>);

impl Lat {
    fn new(mut v: Vec<Duration>) -> Lat {
        v.sort();
        Lat(v)
    }
    fn q(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() as f64 * q) as usize).min(self.0.len() - 1);
        self.0[i]
    }
    fn p50(&self) -> Duration {
        self.q(0.50)
    }
    fn p99(&self) -> Duration {
        self.q(0.99)
    }
    fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Private redis-servers.

fn redlock(servers: &[&RedisServer], options: LockOptions) -> DistributedLock {
    let addrs: Vec<String> = servers.iter().map(|s| s.address()).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    DistributedLock::redlock(&refs, options).unwrap()
}

/// One acquire + release so that connections, scripts and subscriptions exist.
async fn warm(lock: &DistributedLock, name: &str) {
    for _ in 0..50 {
        let g = lock
            .try_acquire(name, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("warm-up name is free");
        g.release().await.unwrap();
    }
    // The release subscriptions are started by the first attempt, in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------------------------
// 1. Uncontended acquire + release, one client task.

struct Uncontended {
    pairs_per_sec: f64,
    acquire: Vec<Duration>,
    release: Vec<Duration>,
}

async fn uncontended_once(lock: &DistributedLock, name: &str, dur: Duration) -> Uncontended {
    let ttl = Duration::from_secs(10);
    let warm_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < warm_until {
        let g = lock.try_acquire(name, ttl).await.unwrap().unwrap();
        g.release().await.unwrap();
    }
    let mut acquire = Vec::with_capacity(100_000);
    let mut release = Vec::with_capacity(100_000);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        let t0 = Instant::now();
        let g = lock
            .try_acquire(name, ttl)
            .await
            .unwrap()
            .expect("uncontended lock is free");
        let t1 = Instant::now();
        g.release().await.unwrap();
        let t2 = Instant::now();
        acquire.push(t1 - t0);
        release.push(t2 - t1);
        n += 1;
    }
    Uncontended {
        pairs_per_sec: n as f64 / start.elapsed().as_secs_f64(),
        acquire,
        release,
    }
}

fn section_uncontended(servers: &[RedisServer]) {
    println!("\n### Uncontended acquire + release (one client task, one name)\n");
    let rt = current_thread_runtime();
    rt.block_on(async {
        let all: Vec<&RedisServer> = servers.iter().collect();
        let cases: Vec<(&str, DistributedLock)> = vec![
            (
                "one Redis",
                redlock(&all[..1], LockOptions::default()),
            ),
            ("Redlock, 3 masters", redlock(&all[..3], LockOptions::default())),
            ("Redlock, 5 masters", redlock(&all[..5], LockOptions::default())),
            ("embedded (memory)", DistributedLock::memory()),
        ];
        for (_, l) in &cases {
            warm(l, "bench:warm").await;
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        let mut acq: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
        let mut rel: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
        for _ in 0..rounds() {
            for (i, (_, l)) in cases.iter().enumerate() {
                let r = uncontended_once(l, "bench:uncontended", secs()).await;
                rates[i].push(r.pairs_per_sec);
                acq[i].extend(r.acquire);
                rel[i].extend(r.release);
            }
        }
        println!("| backend | acquire+release /s (median, spread) | acquire p50 | acquire p99 | release p50 | release p99 | acquire p50 vs one Redis |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let base = Lat::new(acq[0].clone()).p50();
        for (i, (label, _)) in cases.iter().enumerate() {
            let a = Lat::new(std::mem::take(&mut acq[i]));
            let r = Lat::new(std::mem::take(&mut rel[i]));
            println!(
                "| {label} | {} ({}) | {} | {} | {} | {} | {:.2}x |",
                kfmt(median(&rates[i])),
                spread(&rates[i]),
                dfmt(a.p50()),
                dfmt(a.p99()),
                dfmt(r.p50()),
                dfmt(r.p99()),
                a.p50().as_secs_f64() / base.as_secs_f64()
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 2. One of three masters stalled.

/// `n` acquisitions of distinct names; each release runs in a background task so that the
/// loop times acquisition only. Returns the acquire latencies and how many were refused.
async fn acquire_distinct(
    lock: &DistributedLock,
    prefix: &str,
    n: usize,
) -> (Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut refused = 0;
    let mut releases = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}:{i}");
        let t0 = Instant::now();
        match lock.try_acquire(&name, Duration::from_secs(10)).await {
            Ok(Some(g)) => {
                lat.push(t0.elapsed());
                releases.push(tokio::spawn(async move {
                    let _ = g.release().await;
                }));
            }
            Ok(None) | Err(_) => refused += 1,
        }
    }
    for h in releases {
        let _ = h.await;
    }
    (lat, refused)
}

fn section_stall(servers: &[RedisServer]) {
    println!("\n### Redlock over 3 masters, one stalled (SIGSTOP)\n");
    let rt = current_thread_runtime();
    rt.block_on(async {
        let three: Vec<&RedisServer> = servers.iter().take(3).collect();
        let lock = redlock(&three, LockOptions::default());
        warm(&lock, "stall:warm").await;
        const N: usize = 1000;
        let (healthy, r0) = acquire_distinct(&lock, "stall:healthy", N).await;
        three[2].stall();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let (stalled, r1) = acquire_distinct(&lock, "stall:stalled", N).await;
        let stalled_elapsed = t.elapsed();
        // Releases with the master stalled, one at a time.
        let mut rel = Vec::new();
        for i in 0..10 {
            let g = lock
                .try_acquire(&format!("stall:rel:{i}"), Duration::from_secs(10))
                .await
                .unwrap()
                .unwrap();
            let t0 = Instant::now();
            g.release().await.unwrap();
            rel.push(t0.elapsed());
        }
        three[2].resume();
        let resumed_at = Instant::now();
        let (after, r2) = acquire_distinct(&lock, "stall:after", 200).await;
        let after_elapsed = resumed_at.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (later, r3) = acquire_distinct(&lock, "stall:later", N).await;
        println!("| phase | acquisitions | refused | acquire p50 | acquire p99 | max |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (label, v, refused) in [
            ("3 masters healthy", healthy, r0),
            ("1 of 3 stalled", stalled, r1),
            ("first 200 after SIGCONT", after, r2),
            ("healthy again (300 ms later)", later, r3),
        ] {
            let l = Lat::new(v);
            println!(
                "| {label} | {} | {refused} | {} | {} | {} |",
                l.0.len(),
                dfmt(l.p50()),
                dfmt(l.p99()),
                dfmt(l.max())
            );
        }
        let rel = Lat::new(rel);
        println!(
            "\nWith one master stalled: {N} acquisitions (+ background releases) took {:.2} s; \
             a release awaited on its own takes p50 {} / max {} (10 releases); the 200 \
             acquisitions right after SIGCONT took {:.0} ms.",
            stalled_elapsed.as_secs_f64(),
            dfmt(rel.p50()),
            dfmt(rel.max()),
            after_elapsed.as_secs_f64() * 1e3
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Contention: 8 clients, one name.

const CLIENTS: usize = 8;

struct ClientResult {
    count: u64,
    waits: Vec<Duration>,
    conflicts: u64,
}

fn section_contention(servers: &[RedisServer]) {
    println!(
        "\n### Contention: {CLIENTS} client tasks (own DistributedLock each) on one name, {:.0} s, hold time 0\n",
        contention_secs().as_secs_f64()
    );
    let rt = current_thread_runtime();
    let mut rows = Vec::new();
    let mut cmd_rows = Vec::new();
    for (label, n) in [("one Redis", 1usize), ("Redlock, 3 masters", 3)] {
        let used: Vec<&RedisServer> = servers.iter().take(n).collect();
        let (results, elapsed, violations) = rt.block_on(async {
            let locks: Vec<DistributedLock> = (0..CLIENTS)
                .map(|_| redlock(&used, LockOptions::default()))
                .collect();
            for (i, l) in locks.iter().enumerate() {
                warm(l, &format!("contention:warm:{i}")).await;
            }
            for s in &used {
                s.reset_stats();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let held = Arc::new(AtomicBool::new(false));
            let violations = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let handles: Vec<_> = locks
                .into_iter()
                .map(|lock| {
                    let (stop, held, violations) = (stop.clone(), held.clone(), violations.clone());
                    tokio::spawn(async move {
                        let mut r = ClientResult {
                            count: 0,
                            waits: Vec::new(),
                            conflicts: 0,
                        };
                        while !stop.load(SeqCst) {
                            let t0 = Instant::now();
                            let g = lock
                                .acquire_timeout(
                                    "contention",
                                    Duration::from_secs(5),
                                    Duration::from_secs(60),
                                )
                                .await
                                .unwrap();
                            r.waits.push(t0.elapsed());
                            r.count += 1;
                            if held.swap(true, SeqCst) {
                                violations.fetch_add(1, SeqCst);
                            }
                            held.store(false, SeqCst);
                            if g.release().await.is_err() {
                                r.conflicts += 1;
                            }
                        }
                        r
                    })
                })
                .collect();
            tokio::time::sleep(contention_secs()).await;
            stop.store(true, SeqCst);
            let mut results = Vec::new();
            for h in handles {
                results.push(h.await.unwrap());
            }
            (results, start.elapsed(), violations.load(SeqCst))
        });
        // Commands the servers executed, summed over the masters.
        let mut calls: BTreeMap<String, u64> = BTreeMap::new();
        for s in &used {
            for (k, v) in s.command_calls() {
                *calls.entry(k).or_default() += v;
            }
        }
        let total: u64 = results.iter().map(|r| r.count).sum();
        let counts: Vec<u64> = results.iter().map(|r| r.count).collect();
        let waits = Lat::new(results.iter().flat_map(|r| r.waits.clone()).collect());
        let conflicts: u64 = results.iter().map(|r| r.conflicts).sum();
        let per = |k: &str| *calls.get(k).unwrap_or(&0) as f64 / total as f64;
        let client_cmds: u64 = calls
            .iter()
            .filter(|(k, _)| {
                ["evalsha", "eval", "script|load", "subscribe", "ping"].contains(&k.as_str())
            })
            .map(|(_, v)| v)
            .sum();
        let all_cmds: u64 = calls.values().sum();
        rows.push(format!(
            "| {label} | {} | {:.0} | {} / {} | {} | {} | {} | {violations} | {conflicts} |",
            total,
            total as f64 / elapsed.as_secs_f64(),
            counts.iter().min().unwrap(),
            counts.iter().max().unwrap(),
            dfmt(waits.p50()),
            dfmt(waits.p99()),
            dfmt(waits.max()),
        ));
        cmd_rows.push(format!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            client_cmds as f64 / total as f64,
            per("evalsha"),
            per("set"),
            per("publish"),
            all_cmds as f64 / total as f64,
            calls
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        println!(
            "{label}: per-client acquisitions {counts:?} (elapsed incl. drain {:.2} s)",
            elapsed.as_secs_f64()
        );
    }
    println!("\n| backend | acquisitions | per second | per client min / max | wait p50 | wait p99 | max wait | exclusion violations | release conflicts |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!("{r}");
    }
    println!("\nCommands the server(s) executed per acquisition (summed over masters; commands run inside scripts are counted too):\n");
    println!("| backend | client requests | of which EVALSHA | SET (NX tries + fence stores) | PUBLISH | all commands | raw counts |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in cmd_rows {
        println!("{r}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Waiter wake-up latency.

fn section_wakeup(servers: &[RedisServer]) {
    const ROUNDS: usize = 200;
    println!("\n### Waiter wake-up: release -> acquired (retry backoff 2 s, {ROUNDS} rounds)\n");
    let rt = current_thread_runtime();
    println!("| backend | release start -> acquired p50 | p99 | max | release returned -> acquired p50 | p99 | woken later than 100 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, n) in [("one Redis", 1usize), ("Redlock, 3 masters", 3)] {
        let used: Vec<&RedisServer> = servers.iter().take(n).collect();
        rt.block_on(async {
            let holder = redlock(&used, LockOptions::default());
            let waiter = redlock(
                &used,
                LockOptions::default().with_retry(Duration::from_secs(2), Duration::from_secs(2)),
            );
            warm(&holder, "wakeup:warm:h").await;
            warm(&waiter, "wakeup:warm:w").await;
            let mut from_start = Vec::new();
            let mut from_return = Vec::new();
            for _ in 0..ROUNDS {
                let g = holder
                    .try_acquire("wakeup", Duration::from_secs(30))
                    .await
                    .unwrap()
                    .expect("free at round start");
                let w = waiter.clone();
                let h = tokio::spawn(async move {
                    let g = w
                        .acquire_timeout("wakeup", Duration::from_secs(30), Duration::from_secs(10))
                        .await;
                    (Instant::now(), g)
                });
                // Let the waiter make its first (busy) attempt and go to sleep.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let t0 = Instant::now();
                g.release().await.unwrap();
                let t1 = Instant::now();
                let (t2, g2) = h.await.unwrap();
                g2.unwrap().release().await.unwrap();
                from_start.push(t2.saturating_duration_since(t0));
                from_return.push(t2.saturating_duration_since(t1));
            }
            let late = from_start
                .iter()
                .filter(|d| **d > Duration::from_millis(100))
                .count();
            let a = Lat::new(from_start);
            let b = Lat::new(from_return);
            println!(
                "| {label} | {} | {} | {} | {} | {} | {late} |",
                dfmt(a.p50()),
                dfmt(a.p99()),
                dfmt(a.max()),
                dfmt(b.p50()),
                dfmt(b.p99())
            );
        });
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |s: &str| wanted.is_empty() || wanted.iter().any(|w| w == s);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!(
        "## lock bench: {} cpus ({cpu}), load {}, {} s per figure, {} rounds, pinned: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        loadavg(),
        secs().as_secs_f64(),
        rounds(),
        pinned()
    );
    // After the header: available_parallelism() counts the CPUs this process may use.
    if pinned() {
        pin_to(0);
    }
    let started = Instant::now();
    let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start(pinned())).collect();
    if run("uncontended") {
        section_uncontended(&servers);
    }
    if run("stall") {
        section_stall(&servers);
    }
    if run("contention") {
        section_contention(&servers);
    }
    if run("wakeup") {
        section_wakeup(&servers);
    }
    println!(
        "\n(total {:.0} s, load at the end {})",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
