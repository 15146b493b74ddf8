//! Monitoring overhead (issue #15), side by side in one run: the cost of a pick and of an
//! embedded cache get (which now record their metrics) next to the cost of the recording
//! alone, and a `tracing` event site with logging disabled next to no event site at all.
//!
//! Run with `cargo bench -p clusterkit --bench monitoring` (about 1 minute). Results are in
//! BENCHMARKS.md, section "Monitoring (issue #15)".

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clusterkit::cache::{Cache, MemoryOptions};
use clusterkit::metrics::LatencyHistogram;
use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
use criterion::{criterion_group, criterion_main, Criterion};

fn pool(strategy: Strategy) -> Cluster {
    Cluster::with_nodes(
        "bench",
        BalancerOptions::new(strategy),
        (0..10).map(|i| Node::new(format!("n{i}"), "127.0.0.1", 10_000 + i).unwrap()),
    )
    .unwrap()
}

fn bench_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitoring/pick");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for strategy in [Strategy::RoundRobin, Strategy::PowerOfTwoChoices] {
        let lb = pool(strategy).balancer();
        g.bench_function(format!("{strategy}/pick_drop"), |b| {
            b.iter(|| drop(black_box(lb.pick().unwrap())))
        });
        g.bench_function(format!("{strategy}/pick_success"), |b| {
            b.iter(|| {
                lb.pick()
                    .unwrap()
                    .success(black_box(Duration::from_micros(700)))
            })
        });
    }
    // What a pick records now: one relaxed add on the node's pick counter.
    let picks = AtomicU64::new(0);
    g.bench_function("record/pick_counter", |b| {
        b.iter(|| black_box(&picks).fetch_add(1, Ordering::Relaxed))
    });
    // What a reported success records now: the latency histogram.
    let h = LatencyHistogram::default();
    g.bench_function("record/latency_histogram", |b| {
        b.iter(|| black_box(&h).record(black_box(Duration::from_micros(700))))
    });
    g.finish();
}

fn bench_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitoring/cache");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let cache = Cache::memory("bench", MemoryOptions::default()).unwrap();
    clusterkit::blocking::block_on(cache.set(b"key:1", b"value-of-key-1".to_vec(), None))
        .unwrap()
        .unwrap();
    g.bench_function("embedded_get_hit", |b| {
        b.iter(|| black_box(cache.get_now(black_box(b"key:1"))))
    });
    // What an embedded get records: one relaxed add on the hit counter.
    let hits = AtomicU64::new(0);
    g.bench_function("record/hit_counter", |b| {
        b.iter(|| black_box(&hits).fetch_add(1, Ordering::Relaxed))
    });
    g.finish();
}

#[inline(never)]
fn with_event(x: u64) -> u64 {
    tracing::trace!(target: "clusterkit::bench", key_hash = x, "get");
    x.wrapping_mul(31)
}

#[inline(never)]
fn without_event(x: u64) -> u64 {
    x.wrapping_mul(31)
}

fn bench_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitoring/log");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("no_event_site", |b| b.iter(|| without_event(black_box(7))));
    g.bench_function("trace_site/no_subscriber", |b| {
        b.iter(|| with_event(black_box(7)))
    });
    // The library's subscriber installed (a binding asked for records) at level error:
    // trace sites are disabled by tracing's cached interest and max level.
    clusterkit::log::set_level(Some(clusterkit::log::Level::Error)).unwrap();
    g.bench_function("trace_site/subscriber_at_error", |b| {
        b.iter(|| with_event(black_box(7)))
    });
    clusterkit::log::set_level(None).unwrap();
    g.bench_function("trace_site/subscriber_off", |b| {
        b.iter(|| with_event(black_box(7)))
    });
    g.finish();
}

criterion_group!(benches, bench_pick, bench_cache, bench_log);
criterion_main!(benches);
