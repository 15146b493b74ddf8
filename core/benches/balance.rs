//! Load balancer benchmarks (issue #2): pick cost per strategy and pool size, picks under
//! membership churn, table rebuild cost and table memory.
//!
//! Run with `cargo bench -p clusterkit --bench balance` (by hand, not in CI; about 3 minutes).
//! Figures that criterion does not report (worst pick latency during churn, table memory) are
//! printed to stderr with a `[balance]` prefix. Results are recorded in `BENCHMARKS.md`.
//! `BALANCE_REPORTS=0` skips those printed reports (for profiling one benchmark with a filter).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clusterkit::hash::ketama::{KetamaRing, KetamaServer};
use clusterkit::hash::maglev::{MaglevNode, MaglevTable, DEFAULT_TABLE_SIZE};
use clusterkit::{BalancerOptions, Cluster, Health, Node, Strategy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 3] = [10, 100, 1000];
/// Keys cycled through by `pick_for` benchmarks (a power of two: the index is masked).
const KEYS: usize = 4096;

/// `n` loopback nodes `node-{i}` on ports 10000.., weight 1, or 1..=4 when `weighted`.
fn nodes(n: usize, weighted: bool) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let node = Node::new(format!("node-{i}"), "127.0.0.1", 10_000 + i as u16).unwrap();
            if weighted {
                node.with_weight(1 + (i % 4) as u32).unwrap()
            } else {
                node
            }
        })
        .collect()
}

fn pool(strategy: Strategy, n: usize, weighted: bool) -> Cluster {
    Cluster::with_nodes(
        format!("{strategy}-{n}"),
        BalancerOptions::new(strategy),
        nodes(n, weighted),
    )
    .unwrap()
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("user:{:08x}:session", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect()
}

/// `lb.pick()` (and `pick_for` for the hashing strategies), guard dropped in the iteration.
fn bench_pick(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("pick");
    for strategy in Strategy::ALL {
        for n in SIZES {
            let cluster = pool(strategy, n, false);
            let lb = cluster.balancer();
            g.bench_with_input(BenchmarkId::new(strategy.as_str(), n), &n, |b, _| {
                b.iter(|| {
                    let p = lb.pick().unwrap();
                    black_box(p.port());
                })
            });
        }
    }
    for strategy in [Strategy::WeightedRoundRobin, Strategy::Random] {
        for n in SIZES {
            let cluster = pool(strategy, n, true);
            let lb = cluster.balancer();
            g.bench_with_input(
                BenchmarkId::new(format!("{}_weighted", strategy.as_str()), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        let p = lb.pick().unwrap();
                        black_box(p.port());
                    })
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("pick_for");
    for strategy in Strategy::ALL.into_iter().filter(|s| s.is_hashing()) {
        for n in SIZES {
            let cluster = pool(strategy, n, false);
            let lb = cluster.balancer();
            g.bench_with_input(BenchmarkId::new(strategy.as_str(), n), &n, |b, _| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (KEYS - 1);
                    let p = lb.pick_for(&keys[i]).unwrap();
                    black_box(p.port());
                })
            });
        }
    }
    g.finish();
}

/// A background thread changing node-0 about 1000 times a second: unhealthy, healthy,
/// weight 2, weight 1 (each a full snapshot + table rebuild). Stopped and joined on drop.
struct Churn {
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    started: Instant,
    handle: Option<thread::JoinHandle<()>>,
}

impl Churn {
    fn start(cluster: &Cluster) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(AtomicU64::new(0));
        let (c, s, k) = (cluster.clone(), stop.clone(), changes.clone());
        let handle = thread::spawn(move || {
            let mut step = 0u64;
            while !s.load(Ordering::Relaxed) {
                match step % 4 {
                    0 => c.set_health("node-0", Health::Unhealthy, "bench").unwrap(),
                    1 => c.set_health("node-0", Health::Healthy, "bench").unwrap(),
                    2 => c.set_weight("node-0", 2).unwrap(),
                    _ => c.set_weight("node-0", 1).unwrap(),
                }
                step += 1;
                k.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(900));
            }
        });
        Churn {
            stop,
            changes,
            started: Instant::now(),
            handle: Some(handle),
        }
    }

    /// Changes per second so far.
    fn rate(&self) -> f64 {
        self.changes.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

const CONTENDED: [Strategy; 4] = [
    Strategy::RoundRobin,
    Strategy::PowerOfTwoChoices,
    Strategy::Maglev,
    Strategy::Ketama,
];
const PICKERS: usize = 2;

/// One pick as the contended benchmarks do it: `pick_for` for the hashing strategies.
#[inline]
fn contended_pick(lb: &clusterkit::LoadBalancer, hashing: bool, key: &[u8]) -> u16 {
    let p = if hashing {
        lb.pick_for(key).unwrap()
    } else {
        lb.pick().unwrap()
    };
    p.port()
}

/// Two threads picking while a third changes membership; criterion gets the per-pick time of
/// one picking thread (both pick `iters` times concurrently; their mean elapsed time).
fn bench_contended(c: &mut Criterion) {
    for with_churn in [false, true] {
        contended_group(c, with_churn);
    }
    independent_group(c);
}

/// `PICKERS` threads, thread `t` picking `iters` times from `lbs[t]` at once; the mean of
/// their elapsed times.
fn pickers(
    lbs: [&clusterkit::LoadBalancer; PICKERS],
    hashing: bool,
    keys: &[Vec<u8>],
    iters: u64,
) -> Duration {
    let barrier = Barrier::new(PICKERS);
    let total: Duration = thread::scope(|s| {
        let hs: Vec<_> = (0..PICKERS)
            .map(|t| {
                let (lb, barrier) = (lbs[t], &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut i = t * 1024;
                    for _ in 0..iters {
                        i = (i + 1) & (KEYS - 1);
                        black_box(contended_pick(lb, hashing, &keys[i]));
                    }
                    start.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total / PICKERS as u32
}

/// The floor of the two-picker figures (issue #18): the same two threads, each picking from a
/// pool of its own (nothing shared, no cache line can bounce). What two threads cost per pick
/// here over one thread is this machine running two threads at once (vCPUs that share a
/// core, the hypervisor), not the library; `contended_2_pickers` is read against it.
fn independent_group(c: &mut Criterion) {
    let keys = Arc::new(keys());
    let mut g = c.benchmark_group("independent_2_pickers");
    for strategy in CONTENDED {
        for n in [100, 1000] {
            let pools: Vec<Cluster> = (0..PICKERS).map(|_| pool(strategy, n, false)).collect();
            let lbs: Vec<_> = pools.iter().map(|p| p.balancer()).collect();
            let hashing = strategy.is_hashing();
            g.bench_with_input(BenchmarkId::new(strategy.as_str(), n), &n, |b, _| {
                b.iter_custom(|iters| pickers([&lbs[0], &lbs[1]], hashing, &keys, iters))
            });
        }
    }
    g.finish();
}

fn contended_group(c: &mut Criterion, with_churn: bool) {
    let keys = Arc::new(keys());
    let name = if with_churn {
        "contended_2_pickers_churn"
    } else {
        "contended_2_pickers"
    };
    let mut g = c.benchmark_group(name);
    for strategy in CONTENDED {
        for n in [100, 1000] {
            let cluster = pool(strategy, n, false);
            let lb = cluster.balancer();
            let churn = with_churn.then(|| Churn::start(&cluster));
            let hashing = strategy.is_hashing();
            g.bench_with_input(BenchmarkId::new(strategy.as_str(), n), &n, |b, _| {
                b.iter_custom(|iters| pickers([&lb, &lb], hashing, &keys, iters))
            });
            if let Some(churn) = churn {
                eprintln!(
                    "[balance] contended {strategy}/{n}: membership changes during the run: \
                     {:.0}/s",
                    churn.rate()
                );
            }
        }
    }
    g.finish();
}

/// Latencies of individual picks: exact 1 ns bins up to 10 us, the slower ones kept as is.
#[derive(Default)]
struct Histogram {
    bins: Vec<u64>,
    slow: Vec<u64>,
    count: u64,
}

const BINS: usize = 10_000;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            bins: vec![0; BINS + 1],
            ..Default::default()
        }
    }
    #[inline]
    fn record(&mut self, ns: u64) {
        self.count += 1;
        if (ns as usize) <= BINS {
            self.bins[ns as usize] += 1;
        } else {
            self.slow.push(ns);
        }
    }
    fn merge(&mut self, o: Histogram) {
        for (a, b) in self.bins.iter_mut().zip(o.bins) {
            *a += b;
        }
        self.slow.extend(o.slow);
        self.count += o.count;
    }
    /// The `p` quantile (0..=1) in ns.
    /// Needs `slow` sorted (see `latency_run`).
    fn quantile(&self, p: f64) -> u64 {
        let rank = ((self.count.saturating_sub(1)) as f64 * p).round() as u64;
        let mut seen = 0;
        for (ns, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen > rank {
                return ns as u64;
            }
        }
        self.slow[(rank - seen) as usize]
    }
    fn max(&self) -> u64 {
        self.quantile(1.0)
    }
}

/// Per-pick latency distribution of `pickers` threads for `dur`, with or without churn.
/// Every pick is timed individually (the two clock reads add ~20-40 ns to each figure).
fn latency_run(
    cluster: &Cluster,
    hashing: bool,
    pickers: usize,
    churn: bool,
    dur: Duration,
) -> (Histogram, f64) {
    let keys = keys();
    let lb = cluster.balancer();
    let churn = churn.then(|| Churn::start(cluster));
    let barrier = Barrier::new(pickers);
    let hist = thread::scope(|s| {
        let hs: Vec<_> = (0..pickers)
            .map(|t| {
                let (lb, keys, barrier) = (&lb, &keys, &barrier);
                s.spawn(move || {
                    let mut h = Histogram::new();
                    barrier.wait();
                    let end = Instant::now() + dur;
                    let mut i = t * 1024;
                    loop {
                        for _ in 0..256 {
                            i = (i + 1) & (KEYS - 1);
                            let t0 = Instant::now();
                            black_box(contended_pick(lb, hashing, &keys[i]));
                            h.record(t0.elapsed().as_nanos() as u64);
                        }
                        if Instant::now() >= end {
                            break;
                        }
                    }
                    h
                })
            })
            .collect();
        let mut all = Histogram::new();
        for h in hs {
            all.merge(h.join().unwrap());
        }
        all.slow.sort_unstable();
        all
    });
    let rate = churn.as_ref().map_or(0.0, |c| c.rate());
    drop(churn);
    (hist, rate)
}

/// The "never stalls concurrent pickers" check: worst single-pick latency while membership
/// changes ~1000 times a second, against the same run without churn and with one picker.
fn report_worst_latency(_c: &mut Criterion) {
    if !reports() {
        return;
    }
    eprintln!(
        "[balance] latency per pick (ns): strategy/N, pickers, churn, changes/s, picks, \
         p50, p99, p99.9, p99.99, max, picks > 10 us"
    );
    for strategy in CONTENDED {
        for n in [100, 1000] {
            let cluster = pool(strategy, n, false);
            for (pickers, churn) in [(1, false), (1, true), (2, false), (2, true)] {
                let (lat, rate) = latency_run(
                    &cluster,
                    strategy.is_hashing(),
                    pickers,
                    churn,
                    Duration::from_millis(1500),
                );
                eprintln!(
                    "[balance] latency {strategy}/{n}: pickers={pickers} churn={churn} \
                     changes/s={rate:.0} picks={} p50={} p99={} p99.9={} p99.99={} max={} \
                     >10us={}",
                    lat.count,
                    lat.quantile(0.5),
                    lat.quantile(0.99),
                    lat.quantile(0.999),
                    lat.quantile(0.9999),
                    lat.max(),
                    lat.slow.len(),
                );
            }
        }
    }
}

/// Table builds alone, and a whole cluster change (snapshot + table) on 1000-node pools.
fn bench_rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild");
    let names: Vec<String> = (0..100).map(|i| format!("node-{i}")).collect();
    let mnodes: Vec<MaglevNode<'_>> = names
        .iter()
        .map(|n| MaglevNode { name: n, weight: 1 })
        .collect();
    g.bench_function("maglev_table_build/M=65537/N=100", |b| {
        b.iter(|| black_box(MaglevTable::build(black_box(&mnodes), DEFAULT_TABLE_SIZE).unwrap()))
    });
    let servers: Vec<KetamaServer<'_>> = (0..100)
        .map(|i| KetamaServer {
            host: "127.0.0.1",
            port: 10_000 + i as u16,
            weight: 1,
        })
        .collect();
    g.bench_function("ketama_ring_build/N=100", |b| {
        b.iter(|| black_box(KetamaRing::build(black_box(&servers))))
    });
    for (strategy, weighted) in [
        (Strategy::Maglev, false),
        (Strategy::Ketama, false),
        (Strategy::WeightedRoundRobin, true),
        (Strategy::RoundRobin, false),
    ] {
        let cluster = pool(strategy, 1000, weighted);
        let mut w = 1;
        g.bench_function(format!("cluster_set_weight/{strategy}/N=1000"), |b| {
            b.iter(|| {
                // Alternate weight 5 and 6 so every call is a real change (never a no-op).
                w = if w == 5 { 6 } else { 5 };
                cluster.set_weight("node-1", w).unwrap();
            })
        });
    }
    // Smooth WRR with weights 1..=256: the schedule has sum(weights) entries.
    let heavy: Vec<Node> = nodes(1000, false)
        .into_iter()
        .enumerate()
        .map(|(i, n)| n.with_weight(1 + (i % 256) as u32).unwrap())
        .collect();
    let cluster = Cluster::with_nodes(
        "wrr-heavy",
        BalancerOptions::new(Strategy::WeightedRoundRobin),
        heavy,
    )
    .unwrap();
    eprintln!(
        "[balance] memory weighted_round_robin (weights 1..256, N=1000): {}",
        cluster.table_memory_bytes()
    );
    g.sample_size(10);
    let mut w = 1;
    g.bench_function(
        "cluster_set_weight/weighted_round_robin_w1-256/N=1000",
        |b| {
            b.iter(|| {
                w = if w == 5 { 6 } else { 5 };
                cluster.set_weight("node-1", w).unwrap();
            })
        },
    );
    g.finish();
}

fn reports() -> bool {
    std::env::var("BALANCE_REPORTS").map_or(true, |v| v != "0")
}

fn report_memory(_c: &mut Criterion) {
    if !reports() {
        return;
    }
    eprintln!("[balance] table memory (bytes): strategy, N=10, N=100, N=1000");
    for (strategy, weighted) in [
        (Strategy::Maglev, false),
        (Strategy::Ketama, false),
        (Strategy::Rendezvous, false),
        (Strategy::WeightedRoundRobin, true),
        (Strategy::WeightedRoundRobin, false),
        (Strategy::Random, true),
    ] {
        let sizes: Vec<String> = SIZES
            .iter()
            .map(|&n| pool(strategy, n, weighted).table_memory_bytes().to_string())
            .collect();
        let label = if weighted { " (weights 1..4)" } else { "" };
        eprintln!("[balance] memory {strategy}{label}: {}", sizes.join(", "));
    }
}

/// Issue #3: what health awareness costs a pick. The same pool plain, and with outlier
/// detection and slow start configured and a tenth of its nodes unhealthy or draining. Health
/// is resolved into the snapshot's active list when it changes, so a pick reads nothing more.
fn bench_health_overhead(c: &mut Criterion) {
    use clusterkit::{HealthOptions, OutlierOptions};
    let keys = keys();
    let mut g = c.benchmark_group("health_overhead");
    for strategy in [
        Strategy::PowerOfTwoChoices,
        Strategy::RoundRobin,
        Strategy::Maglev,
    ] {
        let plain = pool(strategy, 100, false);
        let healthy = Cluster::with_health(
            "health",
            BalancerOptions::new(strategy),
            HealthOptions::default()
                .with_outlier(OutlierOptions::default())
                .with_slow_start(Duration::from_secs(30)),
            nodes(100, false),
        )
        .unwrap();
        for i in 0..10 {
            let h = if i % 2 == 0 {
                Health::Unhealthy
            } else {
                Health::Draining
            };
            healthy
                .set_health(&format!("node-{}", i * 10), h, "bench")
                .unwrap();
        }
        for (label, cluster) in [("plain", &plain), ("with_health", &healthy)] {
            let lb = cluster.balancer();
            let mut i = 0usize;
            g.bench_function(format!("{strategy}/N=100/{label}"), |b| {
                b.iter(|| {
                    i = (i + 1) & (KEYS - 1);
                    black_box(lb.pick_for(&keys[i]).unwrap());
                })
            });
        }
    }
    g.finish();
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = report_memory, bench_pick, bench_health_overhead, bench_rebuild, bench_contended, report_worst_latency
}
criterion_main!(benches);
