//! clusterkit's load balancer side by side with peers, in one run on one machine (issue #2).
//!
//! Peers: pingora-load-balancing (`LoadBalancer::select` with `RoundRobin` and `Consistent`,
//! i.e. `KetamaHashing`), the `maglev`, `hashring` and `jumphash` crates. All backends are
//! loopback addresses; nothing here opens a socket or sends traffic.
//!
//! Each group holds one kind of pick, so criterion prints the contenders next to each other.
//! `clusterkit` rows are full picks (snapshot load, table lookup, in-flight accounting via the
//! `Pick` guard, dropped inside the iteration); `clusterkit_lookup` rows are the bare table
//! lookup (key hash + table read), comparable with the hashing crates, which only map a key to
//! a node.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use clusterkit::hash::ketama::{self, KetamaRing, KetamaServer};
use clusterkit::hash::maglev::{table_size_for, MaglevNode, MaglevTable, DEFAULT_TABLE_SIZE};
use clusterkit::hash::{key_hash, rendezvous};
use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use maglev::ConsistentHasher;
use pingora_load_balancing::selection::{BackendSelection, Consistent, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};

const SIZES: [usize; 3] = [10, 100, 1000];
const KEYS: usize = 4096;
/// pingora's `select` walks at most this many backends looking for a healthy one.
const MAX_ITERATIONS: usize = 256;
/// Virtual nodes per node given to `hashring` (which has none of its own), as in ketama.
const VNODES: u32 = 160;

fn port(i: usize) -> u16 {
    10_000 + i as u16
}

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("127.0.0.1:{}", port(i))).collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn cluster(strategy: Strategy, n: usize) -> Cluster {
    let nodes = (0..n).map(|i| Node::new(format!("node-{i}"), "127.0.0.1", port(i)).unwrap());
    Cluster::with_nodes("bench", BalancerOptions::new(strategy), nodes).unwrap()
}

fn pingora<S>(n: usize) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    // Literal socket addresses: parsed, never resolved.
    LoadBalancer::try_from_iter(addrs(n)).unwrap()
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("user:{:08x}:session", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect()
}

/// Runs `f` on successive keys of `keys`.
macro_rules! keyed {
    ($b:expr, $keys:expr, |$k:ident| $body:expr) => {{
        let mut i = 0usize;
        $b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            let $k: &[u8] = &$keys[i];
            black_box($body)
        })
    }};
}

fn round_robin(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_robin");
    for n in SIZES {
        let ck = cluster(Strategy::RoundRobin, n).balancer();
        g.bench_with_input(BenchmarkId::new("clusterkit", n), &n, |b, _| {
            b.iter(|| black_box(ck.pick().unwrap().port()))
        });
        let pg = pingora::<RoundRobin>(n);
        g.bench_with_input(BenchmarkId::new("pingora", n), &n, |b, _| {
            b.iter(|| black_box(pg.select(b"", MAX_ITERATIONS).unwrap().weight))
        });
    }
    g.finish();
}

fn ketama_pick(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("ketama_pick_for");
    for n in SIZES {
        let ck = cluster(Strategy::Ketama, n).balancer();
        g.bench_with_input(BenchmarkId::new("clusterkit", n), &n, |b, _| {
            keyed!(b, keys, |k| ck.pick_for(k).unwrap().port())
        });
        // Lookup-only placement (issue #18): the owner, no in-flight guard.
        g.bench_with_input(BenchmarkId::new("clusterkit_owner", n), &n, |b, _| {
            keyed!(b, keys, |k| ck.owner_with(k, |node| node.port()).unwrap())
        });
        // The floor of any libmemcached-compatible placement: md5 of the key alone.
        g.bench_with_input(BenchmarkId::new("md5_of_key_alone", n), &n, |b, _| {
            keyed!(b, keys, |k| ketama::hash_key(k))
        });
        let servers: Vec<KetamaServer<'_>> = (0..n)
            .map(|i| KetamaServer {
                host: "127.0.0.1",
                port: port(i),
                weight: 1,
            })
            .collect();
        let ring = KetamaRing::build(&servers);
        g.bench_with_input(BenchmarkId::new("clusterkit_lookup", n), &n, |b, _| {
            keyed!(b, keys, |k| ring.lookup(ketama::hash_key(k)).unwrap())
        });
        let pg = pingora::<Consistent>(n);
        g.bench_with_input(BenchmarkId::new("pingora", n), &n, |b, _| {
            keyed!(b, keys, |k| pg.select(k, MAX_ITERATIONS).unwrap().weight)
        });
        let mut hr = hashring::HashRing::new();
        hr.batch_add(
            names(n)
                .into_iter()
                .flat_map(|name| (0..VNODES).map(move |v| (name.clone(), v)))
                .collect(),
        );
        g.bench_with_input(BenchmarkId::new("hashring_160vnodes", n), &n, |b, _| {
            keyed!(b, keys, |k| hr.get(&k).unwrap().1)
        });
    }
    g.finish();
}

fn maglev_pick(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("maglev_pick_for");
    for n in SIZES {
        let ck = cluster(Strategy::Maglev, n).balancer();
        g.bench_with_input(BenchmarkId::new("clusterkit", n), &n, |b, _| {
            keyed!(b, keys, |k| ck.pick_for(k).unwrap().port())
        });
        g.bench_with_input(BenchmarkId::new("clusterkit_owner", n), &n, |b, _| {
            keyed!(b, keys, |k| ck.owner_with(k, |node| node.port()).unwrap())
        });
        let nm = names(n);
        let mnodes: Vec<MaglevNode<'_>> = nm
            .iter()
            .map(|name| MaglevNode { name, weight: 1 })
            .collect();
        let m = table_size_for(n);
        let table = MaglevTable::build(&mnodes, m).unwrap();
        g.bench_with_input(BenchmarkId::new("clusterkit_lookup", n), &n, |b, _| {
            keyed!(b, keys, |k| table.lookup(key_hash(k)).unwrap())
        });
        // Same table size as ours (65537, or 100003 at N = 1000).
        let peer = maglev::Maglev::with_capacity(nm.clone(), m as usize);
        assert_eq!(peer.capacity(), m as usize);
        g.bench_with_input(BenchmarkId::new("maglev_crate", n), &n, |b, _| {
            keyed!(b, keys, |k| peer.get(k).unwrap().len())
        });
    }
    g.finish();
}

fn other_hashing(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("rendezvous_jump_pick_for");
    for n in SIZES {
        let ck = cluster(Strategy::Rendezvous, n).balancer();
        g.bench_with_input(BenchmarkId::new("clusterkit_rendezvous", n), &n, |b, _| {
            keyed!(b, keys, |k| ck.pick_for(k).unwrap().port())
        });
        let rnodes: Vec<rendezvous::RendezvousNode> = names(n)
            .iter()
            .map(|name| rendezvous::RendezvousNode {
                seed: rendezvous::node_seed(name),
                weight: 1,
            })
            .collect();
        g.bench_with_input(
            BenchmarkId::new("clusterkit_rendezvous_lookup", n),
            &n,
            |b, _| {
                keyed!(b, keys, |k| rendezvous::pick(key_hash(k), &rnodes, true)
                    .unwrap())
            },
        );
        let nm = names(n);
        let jh = jumphash::JumpHasher::new_with_keys(0x1234, 0x5678);
        g.bench_with_input(BenchmarkId::new("jumphash", n), &n, |b, _| {
            keyed!(b, keys, |k| nm[jh.slot(&k, n as u32) as usize].len())
        });
    }
    g.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebuild_N=100");
    let nm = names(100);
    let mnodes: Vec<MaglevNode<'_>> = nm
        .iter()
        .map(|name| MaglevNode { name, weight: 1 })
        .collect();
    g.bench_function("maglev/clusterkit", |b| {
        b.iter(|| MaglevTable::build(black_box(&mnodes), DEFAULT_TABLE_SIZE).unwrap())
    });
    g.bench_function("maglev/maglev_crate", |b| {
        b.iter(|| maglev::Maglev::with_capacity(black_box(nm.clone()), DEFAULT_TABLE_SIZE as usize))
    });
    let servers: Vec<KetamaServer<'_>> = (0..100)
        .map(|i| KetamaServer {
            host: "127.0.0.1",
            port: port(i),
            weight: 1,
        })
        .collect();
    g.bench_function("ketama/clusterkit", |b| {
        b.iter(|| KetamaRing::build(black_box(&servers)))
    });
    let backends: BTreeSet<Backend> = addrs(100)
        .iter()
        .map(|a| Backend::new(a).unwrap())
        .collect();
    g.bench_function("ketama/pingora", |b| {
        b.iter(|| Consistent::build(black_box(&backends)))
    });
    let vnodes: Vec<(String, u32)> = nm
        .iter()
        .flat_map(|name| (0..VNODES).map(move |v| (name.clone(), v)))
        .collect();
    g.bench_function("ring_160vnodes/hashring", |b| {
        b.iter(|| {
            let mut hr = hashring::HashRing::new();
            hr.batch_add(black_box(vnodes.clone()));
            hr
        })
    });
    // A whole membership change in clusterkit (snapshot + ketama ring), for reference.
    let ck = cluster(Strategy::Ketama, 100);
    let mut w = 1;
    g.bench_function("ketama_cluster_change/clusterkit_set_weight", |b| {
        b.iter(|| {
            w = if w == 5 { 6 } else { 5 };
            ck.set_weight("node-1", w).unwrap();
        })
    });
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
    targets = round_robin, ketama_pick, maglev_pick, other_hashing, rebuild
}
criterion_main!(benches);
