//! Cache benchmarks (issue #4), side by side with redis-benchmark and redis-rs in one run.
//!
//! Run with `cargo bench -p clusterkit --bench cache` (by hand, not in CI; about 4 minutes).
//! Sections, in this order (name them as arguments to run only some, e.g.
//! `cargo bench -p clusterkit --bench cache -- zipf memory`):
//!
//! - `memory`: resident memory growth while 1 GiB of 1 KiB values (and 4M small values) is
//!   written through a memory cache bounded at 64 MiB; measured in a child process of this
//!   binary (a fresh heap), with a counting allocator for the heap bytes per entry.
//! - `zipf`: embedded backend, gets per second on one thread, Zipf(s = 1.0) over 2^20 keys.
//! - `single`: single GET / SET with 1 and 50 concurrent callers: clusterkit's Redis backend,
//!   redis-rs (`MultiplexedConnection`, `ConnectionManager`) and `redis-benchmark`, on one
//!   private redis-server.
//! - `batch`: `get_many` of 16 and 256 keys, one Redis backend, the distributed backend over
//!   1 node and over 3 nodes (3 private redis-servers), and a raw redis-rs MGET.
//!
//! Environment: `CACHE_BENCH_SECS` (measured seconds per figure, default 1.5),
//! `CACHE_BENCH_ROUNDS` (rounds of the Redis sections, default 3; figures are medians),
//! `CACHE_BENCH_PIN=1` (this process on CPU 0, the redis-servers on CPU 1).
//! Every redis-server this starts listens on 127.0.0.1 only and is killed when its handle
//! drops (also on panic) and, through `PR_SET_PDEATHSIG`, if this process dies.
//! Results are printed as Markdown tables and recorded in `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clusterkit::cache::{Cache, DistributedOptions, MemoryOptions, RedisOptions, ENTRY_OVERHEAD};
use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
use futures_util::FutureExt;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use common::{current_thread_runtime, loadavg, pin_to, RedisServer};

// ---------------------------------------------------------------------------------------------
// Counting allocator (only counts in the `memory` child process).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(l) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            LIVE.fetch_add(l.size() as i64, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(l) };
        if COUNTING.load(Relaxed) && !p.is_null() {
            LIVE.fetch_add(l.size() as i64, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(l.size() as i64, Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let q = unsafe { System.realloc(p, l, new_size) };
        if COUNTING.load(Relaxed) && !q.is_null() {
            LIVE.fetch_add(new_size as i64 - l.size() as i64, Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// splitmix64: a fast, good enough generator for key choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

fn secs() -> Duration {
    let s: f64 = std::env::var("CACHE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.5);
    Duration::from_secs_f64(s)
}

fn rounds() -> usize {
    std::env::var("CACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

const WARMUP: Duration = Duration::from_millis(300);

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{}-{}", kfmt(lo), kfmt(hi))
}

/// 123456.7 → "123.5k", 1234567 → "1.23M".
fn kfmt(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn proc_status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap()
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

/// `CACHE_BENCH_PIN=1`: this process (and so redis-benchmark and the memory child) on CPU 0,
/// every redis-server on CPU 1, so client and server never share or swap a vCPU.
fn pinned() -> bool {
    std::env::var("CACHE_BENCH_PIN").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------------
// 4. Memory (child process).

/// Key written in the memory test: `key:%08d` (12 bytes, 14 with the `m:` namespace).
fn mem_key(i: usize) -> String {
    format!("key:{i:08}")
}

fn memory_child(value_size: usize, total: u64) {
    COUNTING.store(true, Relaxed);
    let bound: u64 = 64 << 20;
    let rss0 = proc_status("VmRSS:");
    let heap0 = LIVE.load(Relaxed);
    let cache = Cache::memory("m", MemoryOptions::default().with_max_bytes(bound)).unwrap();
    let rss1 = proc_status("VmRSS:");
    let heap1 = LIVE.load(Relaxed);
    let n = (total / value_size as u64) as usize;
    let t = Instant::now();
    for i in 0..n {
        let mut v = vec![0u8; value_size];
        v[..8.min(value_size)].copy_from_slice(&(i as u64).to_le_bytes()[..8.min(value_size)]);
        cache
            .set(mem_key(i).as_bytes(), Bytes::from(v), None)
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    let elapsed = t.elapsed();
    let rss2 = proc_status("VmRSS:");
    let hwm = proc_status("VmHWM:");
    let heap2 = LIVE.load(Relaxed);
    let weight = cache.memory_weight().unwrap();
    let key_len = 2 + mem_key(0).len() as u64;
    let per = key_len + value_size as u64 + ENTRY_OVERHEAD;
    let entries = weight / per;
    // Count the entries by reading every key back (quick_cache evicted the others).
    let mut found = 0u64;
    for i in 0..n {
        if cache
            .get(mem_key(i).as_bytes())
            .now_or_never()
            .unwrap()
            .unwrap()
            .is_some()
        {
            found += 1;
        }
    }
    let payload = (key_len + value_size as u64) as f64;
    let growth = rss2 as f64 - rss0 as f64;
    let heap_growth = (heap2 - heap0) as f64;
    println!(
        "| {value_size} B | {n} ({}) | {:.2} s | {} | {} of bound | {} | {} | {entries} / {found} | {:.0} B | {:.0} B |",
        mib((n as u64 * value_size as u64) as f64),
        elapsed.as_secs_f64(),
        mib(growth),
        format_args!("{:.2}x", growth / bound as f64),
        mib(heap_growth),
        mib(hwm as f64 - rss0 as f64),
        heap_growth / found as f64 - payload,
        growth / found as f64 - payload,
    );
    eprintln!(
        "[cache] memory child: value {value_size} B, rss before {} / after new {} / after {} ; heap before {} / after new {} / after {} ; weight {weight}",
        mib(rss0 as f64),
        mib(rss1 as f64),
        mib(rss2 as f64),
        mib(heap0 as f64),
        mib(heap1 as f64),
        mib(heap2 as f64)
    );
}

fn section_memory() {
    println!("\n### Memory: writes through a memory cache bounded at 64 MiB (one process each)\n");
    println!(
        "| value | writes (bytes) | time | RSS growth | growth / bound | heap growth (requested bytes) | peak RSS growth | entries by weight / found | heap overhead per entry | RSS overhead per entry |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let exe = std::env::current_exe().unwrap();
    for (size, total) in [(1024usize, 1u64 << 30), (32, 4_000_000 * 32)] {
        let status = Command::new(&exe)
            .env("CACHE_BENCH_CHILD", format!("memory:{size}:{total}"))
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "memory child failed: {status}");
    }
    println!(
        "\n(`ENTRY_OVERHEAD` = {ENTRY_OVERHEAD} B; overhead per entry = growth / entries found - (key + value); key = 14 B with the namespace.)"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Embedded backend, Zipf gets on one thread.

/// `len` ranks drawn from Zipf(s) over `n` keys (rank 0 the most popular), each mapped to a
/// key index by a fixed bijection so popular keys are spread over the table.
fn zipf_sequence(n: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    assert!(n.is_power_of_two());
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0f64;
    for k in 1..=n {
        acc += 1.0 / (k as f64).powf(s);
        cdf.push(acc);
    }
    let total = acc;
    let mut rng = Rng(seed);
    (0..len)
        .map(|_| {
            let u = rng.unit() * total;
            let rank = cdf.partition_point(|&c| c < u).min(n - 1);
            ((rank as u64).wrapping_mul(2_654_435_761) & (n as u64 - 1)) as u32
        })
        .collect()
}

/// Key `i` of the Zipf test: `key:%08d`, 12 bytes (14 with the `z:` namespace).
fn zipf_key(i: u32) -> [u8; 12] {
    let mut k = *b"key:00000000";
    let mut x = i;
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (x % 10) as u8;
        x /= 10;
    }
    k
}

/// Gets per second of `cache.get` and of a bare quick_cache over the keys of `seq`, laid out
/// one after the other (as a caller that has its key at hand: reading the key costs the
/// harness no cache miss), `PASSES` passes each.
fn zipf_run(
    label: &str,
    seq: &[u32],
    cache: &Cache,
    qc: &quick_cache::sync::Cache<Vec<u8>, Bytes>,
    out: &mut Vec<(String, Vec<f64>)>,
) {
    const PASSES: usize = 5;
    let user: Vec<u8> = seq.iter().flat_map(|&i| zipf_key(i)).collect();
    let full: Vec<u8> = seq
        .iter()
        .flat_map(|&i| {
            let mut k = [0u8; 14];
            k[..2].copy_from_slice(b"z:");
            k[2..].copy_from_slice(&zipf_key(i));
            k
        })
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..PASSES {
        let t = Instant::now();
        let mut hits = 0usize;
        for k in user.chunks_exact(12) {
            let v = cache.get(k).now_or_never().unwrap().unwrap();
            hits += v.is_some() as usize;
            black_box(v);
        }
        a.push(seq.len() as f64 / t.elapsed().as_secs_f64());
        assert_eq!(hits, seq.len(), "every key must be present");

        let t = Instant::now();
        for k in full.chunks_exact(14) {
            black_box(qc.get(k));
        }
        b.push(seq.len() as f64 / t.elapsed().as_secs_f64());
    }
    out.push((
        format!("{label}: clusterkit `Cache::get` (memory), `now_or_never`"),
        a,
    ));
    out.push((
        format!(
            "{label}: bare quick_cache 0.6 `get` (same full keys, no expiry check, no counters)"
        ),
        b,
    ));
}

fn section_zipf() {
    const N: usize = 1 << 20;
    const SEQ: usize = 1 << 22;
    const VALUE: usize = 64;
    println!("\n### Embedded backend: gets on one thread, {VALUE} B values, 2^20 keys cached\n");
    let t = Instant::now();
    let seq = zipf_sequence(N, 1.0, SEQ, 42);
    let mut top = vec![0u32; N];
    for &i in &seq {
        top[i as usize] += 1;
    }
    let distinct = top.iter().filter(|&&c| c > 0).count();
    let hottest = top.iter().copied().max().unwrap_or(0);
    let top1000: u64 = {
        let mut c: Vec<u32> = top.clone();
        c.sort_unstable_by(|x, y| y.cmp(x));
        c[..1000].iter().map(|&x| x as u64).sum()
    };
    eprintln!(
        "[cache] zipf: {SEQ} draws in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let value = Bytes::from(vec![b'v'; VALUE]);
    let cache = Cache::memory(
        "z",
        MemoryOptions::default()
            .with_max_bytes(1 << 30)
            .with_estimated_entries(N),
    )
    .unwrap();
    // Bare quick_cache with the same full keys, as a floor.
    let qc: quick_cache::sync::Cache<Vec<u8>, Bytes> = quick_cache::sync::Cache::new(N);
    for i in 0..N as u32 {
        let k = zipf_key(i);
        // A value per entry (as stored values are), each a distinct allocation.
        let v = Bytes::copy_from_slice(&value);
        cache
            .set(&k, v.clone(), None)
            .now_or_never()
            .unwrap()
            .unwrap();
        qc.insert([b"z:".as_slice(), &k].concat(), v);
    }
    let mut results = Vec::new();
    zipf_run(
        "Zipf(s = 1.0) over 2^20 keys",
        &seq,
        &cache,
        &qc,
        &mut results,
    );
    // Uniform over 1024 keys: everything stays in the CPU caches; the code path alone.
    let mut rng = Rng(7);
    let hot: Vec<u32> = (0..SEQ).map(|_| (rng.below(1024) * 1021) as u32).collect();
    zipf_run(
        "uniform over 1024 keys (CPU-cache resident)",
        &hot,
        &cache,
        &qc,
        &mut results,
    );
    println!(
        "| keys | gets/s on one thread (median of 5 passes of 2^22 gets) | range | ns per get |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (k, v) in &results {
        let m = median(v);
        println!("| {k} | {} | {} | {:.0} |", kfmt(m), spread(v), 1e9 / m);
    }
    println!(
        "\n(Zipf: {distinct} distinct keys drawn, hottest key {:.2}% of draws, top 1000 keys {:.1}%; all keys present, hit rate 100%.)",
        100.0 * hottest as f64 / SEQ as f64,
        100.0 * top1000 as f64 / SEQ as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Single get / set.

const SINGLE_KEYS: usize = 100_000;
const SINGLE_VALUE: usize = 100;

#[derive(Clone)]
enum Client {
    Ck(Cache),
    Mux(MultiplexedConnection),
    Mgr(ConnectionManager),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Set,
    Get,
}

struct Keys {
    /// `key:%012d` (clusterkit adds its namespace `ck:`).
    user: Vec<Vec<u8>>,
    /// `ck:key:%012d`, what redis-rs sends, so every client reads the same keys.
    full: Vec<Vec<u8>>,
}

async fn one_op(c: &mut Client, op: Op, keys: &Keys, k: usize, value: &Bytes) {
    match (c, op) {
        (Client::Ck(c), Op::Get) => {
            black_box(c.get(&keys.user[k]).await.unwrap());
        }
        (Client::Ck(c), Op::Set) => c.set(&keys.user[k], value.clone(), None).await.unwrap(),
        (Client::Mux(m), Op::Get) => {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&keys.full[k])
                .query_async(m)
                .await
                .unwrap();
            black_box(v);
        }
        (Client::Mux(m), Op::Set) => redis::cmd("SET")
            .arg(&keys.full[k])
            .arg(&value[..])
            .query_async::<()>(m)
            .await
            .unwrap(),
        (Client::Mgr(m), Op::Get) => {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&keys.full[k])
                .query_async(m)
                .await
                .unwrap();
            black_box(v);
        }
        (Client::Mgr(m), Op::Set) => redis::cmd("SET")
            .arg(&keys.full[k])
            .arg(&value[..])
            .query_async::<()>(m)
            .await
            .unwrap(),
    }
}

/// Runs `callers` tasks, caller `t` on `clients[t % len]`, each doing `op` in a loop; returns
/// operations per second over `secs()` after a warm-up.
async fn single_throughput(
    clients: &[Client],
    callers: usize,
    op: Op,
    keys: &Arc<Keys>,
    value: &Bytes,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(callers);
    for t in 0..callers {
        let mut client = clients[t % clients.len()].clone();
        let (stop, done, keys, value) = (stop.clone(), done.clone(), keys.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(t as u64 + 1);
            while !stop.load(Relaxed) {
                let k = rng.below(SINGLE_KEYS);
                one_op(&mut client, op, &keys, k, &value).await;
                done.fetch_add(1, Relaxed);
            }
        }));
    }
    tokio::time::sleep(WARMUP).await;
    let (c0, t0) = (done.load(Relaxed), Instant::now());
    tokio::time::sleep(secs()).await;
    let (c1, t1) = (done.load(Relaxed), Instant::now());
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

/// `redis-benchmark -c callers -n requests -t get,set -d SINGLE_VALUE -r SINGLE_KEYS -q`:
/// (SET, GET) requests per second.
fn redis_benchmark(port: u16, callers: usize, requests: usize) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &callers.to_string(), "-n", &requests.to_string()])
        .args(["-t", "get,set", "-d", &SINGLE_VALUE.to_string()])
        .args(["-r", &SINGLE_KEYS.to_string(), "-q"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |name: &str| -> f64 {
        text.split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| l.contains("requests per second"))
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no {name} figure in redis-benchmark output: {text}"))
    };
    (find("SET: "), find("GET: "))
}

async fn redis_clients(address: &str, n: usize, kind: &str) -> Vec<Client> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let c = match kind {
            "ck" => {
                let c = Cache::redis(address, "ck", RedisOptions::default()).unwrap();
                c.ping().await.unwrap();
                Client::Ck(c)
            }
            "mux" => Client::Mux(
                redis::Client::open(format!("redis://{address}/"))
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            ),
            _ => Client::Mgr(
                redis::Client::open(format!("redis://{address}/"))
                    .unwrap()
                    .get_connection_manager()
                    .await
                    .unwrap(),
            ),
        };
        v.push(c);
    }
    v
}

fn section_single(server: &RedisServer) {
    let rt = current_thread_runtime();
    let address = server.address();
    let keys = Arc::new(Keys {
        user: (0..SINGLE_KEYS)
            .map(|i| format!("key:{i:012}").into_bytes())
            .collect(),
        full: (0..SINGLE_KEYS)
            .map(|i| format!("ck:key:{i:012}").into_bytes())
            .collect(),
    });
    let value = Bytes::from(vec![b'x'; SINGLE_VALUE]);
    // (callers, label) → per op → figures
    let mut res: BTreeMap<(usize, &str), BTreeMap<Op, Vec<f64>>> = BTreeMap::new();
    let variants: [(&str, &str, bool); 5] = [
        (
            "a clusterkit `Cache::redis`, 1 handle (1 connection)",
            "ck",
            false,
        ),
        (
            "b redis-rs `MultiplexedConnection`, 1 connection",
            "mux",
            false,
        ),
        ("c redis-rs `ConnectionManager`, 1 connection", "mgr", false),
        (
            "d clusterkit, one `Cache::redis` per caller (N connections)",
            "ck",
            true,
        ),
        (
            "e redis-rs, one `MultiplexedConnection` per caller",
            "mux",
            true,
        ),
    ];
    rt.block_on(async {
        // Every key exists before the GETs.
        let c = Cache::redis(&address, "ck", RedisOptions::default()).unwrap();
        for chunk in keys.user.chunks(1000) {
            c.set_many(chunk.iter().map(|k| (k.as_slice(), value.clone())), None)
                .await
                .unwrap();
        }
    });
    for round in 0..rounds() {
        eprintln!("[cache] single: round {} (load {})", round + 1, loadavg());
        for callers in [1usize, 50] {
            for (label, kind, per_caller) in variants {
                if per_caller && callers == 1 {
                    continue;
                }
                let n = if per_caller { callers } else { 1 };
                rt.block_on(async {
                    let clients = redis_clients(&address, n, kind).await;
                    for op in [Op::Set, Op::Get] {
                        let r = single_throughput(&clients, callers, op, &keys, &value).await;
                        res.entry((callers, label))
                            .or_default()
                            .entry(op)
                            .or_default()
                            .push(r);
                    }
                });
            }
            let (set, get) = redis_benchmark(server.port, callers, 100_000);
            let e = res.entry((callers, "f redis-benchmark")).or_default();
            e.entry(Op::Set).or_default().push(set);
            e.entry(Op::Get).or_default().push(get);
        }
    }
    println!(
        "\n### Single GET / SET, {SINGLE_VALUE} B values, {SINGLE_KEYS} keys, one redis-server (ops/s, median of {} rounds)\n",
        rounds()
    );
    println!("| callers | client | SET | GET | SET range | GET range | SET / redis-benchmark | GET / redis-benchmark |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for callers in [1usize, 50] {
        let rb = &res[&(callers, "f redis-benchmark")];
        let (rb_set, rb_get) = (median(&rb[&Op::Set]), median(&rb[&Op::Get]));
        for ((c, label), by_op) in &res {
            if *c != callers {
                continue;
            }
            let (s, g) = (median(&by_op[&Op::Set]), median(&by_op[&Op::Get]));
            println!(
                "| {callers} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
                &label[2..],
                kfmt(s),
                kfmt(g),
                spread(&by_op[&Op::Set]),
                spread(&by_op[&Op::Get]),
                s / rb_set,
                g / rb_get
            );
        }
    }
    println!("\nclusterkit / redis-rs (same connections, same callers):\n");
    println!("| callers | clusterkit vs | SET | GET |");
    println!("| ---: | --- | ---: | ---: |");
    let pairs: [(usize, &str, &str, &str); 4] = [
        (1, "a", "b", "`MultiplexedConnection`, 1 connection"),
        (1, "a", "c", "`ConnectionManager`, 1 connection"),
        (50, "a", "b", "`MultiplexedConnection`, 1 connection"),
        (50, "d", "e", "`MultiplexedConnection`, 50 connections"),
    ];
    let find = |c: usize, prefix: &str| {
        res.iter()
            .find(|((cc, l), _)| *cc == c && l.starts_with(prefix))
            .map(|(_, v)| v)
            .unwrap()
    };
    for (c, a, b, what) in pairs {
        let (x, y) = (find(c, a), find(c, b));
        println!(
            "| {c} | {what} | {:.2} | {:.2} |",
            median(&x[&Op::Set]) / median(&y[&Op::Set]),
            median(&x[&Op::Get]) / median(&y[&Op::Get])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Batches.

const BATCH_KEYS: usize = 100_000;
const BATCH_VALUE: usize = 100;

#[derive(Clone)]
enum Batcher {
    Ck(Cache),
    /// Raw redis-rs MGET of `rb:` keys.
    Mux(MultiplexedConnection),
}

async fn batch_throughput(
    client: &Batcher,
    callers: usize,
    batch: usize,
    keys: &Arc<Vec<Vec<u8>>>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(callers);
    for t in 0..callers {
        let mut client = client.clone();
        let (stop, done, keys) = (stop.clone(), done.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(t as u64 + 1000);
            let mut checked = false;
            while !stop.load(Relaxed) {
                let ks: Vec<&[u8]> = (0..batch)
                    .map(|_| keys[rng.below(BATCH_KEYS)].as_slice())
                    .collect();
                let found = match &mut client {
                    Batcher::Ck(c) => {
                        let v = c.get_many(&ks).await.unwrap();
                        v.iter().filter(|x| x.is_some()).count()
                    }
                    Batcher::Mux(m) => {
                        let full: Vec<Vec<u8>> =
                            ks.iter().map(|k| [b"rb:".as_slice(), k].concat()).collect();
                        let v: Vec<Option<Vec<u8>>> =
                            redis::cmd("MGET").arg(&full).query_async(m).await.unwrap();
                        v.iter().filter(|x| x.is_some()).count()
                    }
                };
                if !checked {
                    assert_eq!(found, batch, "every key must be present");
                    checked = true;
                }
                done.fetch_add(batch as u64, Relaxed);
            }
        }));
    }
    tokio::time::sleep(WARMUP).await;
    let (c0, t0) = (done.load(Relaxed), Instant::now());
    tokio::time::sleep(secs()).await;
    let (c1, t1) = (done.load(Relaxed), Instant::now());
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

fn distributed(servers: &[&RedisServer], name: &str) -> Cache {
    let nodes = servers
        .iter()
        .enumerate()
        .map(|(i, s)| Node::new(format!("n{i}"), "127.0.0.1", s.port).unwrap());
    let pool = Cluster::with_nodes(name, BalancerOptions::new(Strategy::Ketama), nodes).unwrap();
    Cache::distributed(pool, name, DistributedOptions::default().with_replicas(1)).unwrap()
}

fn section_batch(s0: &RedisServer, s1: &RedisServer, s2: &RedisServer) {
    let rt = current_thread_runtime();
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..BATCH_KEYS)
            .map(|i| format!("k:{i:06}").into_bytes())
            .collect(),
    );
    let value = Bytes::from(vec![b'y'; BATCH_VALUE]);
    let (single, d1, d3, mux) = rt.block_on(async {
        let single = Cache::redis(&s0.address(), "rb", RedisOptions::default()).unwrap();
        let d1 = distributed(&[s0], "d1");
        let d3 = distributed(&[s0, s1, s2], "d3");
        for c in [&single, &d1, &d3] {
            c.ping().await.unwrap();
            for chunk in keys.chunks(1000) {
                c.set_many(chunk.iter().map(|k| (k.as_slice(), value.clone())), None)
                    .await
                    .unwrap();
            }
        }
        let mux = redis::Client::open(format!("redis://{}/", s0.address()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        (single, d1, d3, mux)
    });
    let backends: [(&str, usize, Batcher); 4] = [
        (
            "redis-rs MGET, 1 connection (reference)",
            1,
            Batcher::Mux(mux),
        ),
        ("clusterkit `Cache::redis`", 1, Batcher::Ck(single)),
        ("clusterkit distributed, 1 node", 1, Batcher::Ck(d1)),
        ("clusterkit distributed, 3 nodes", 3, Batcher::Ck(d3)),
    ];
    let shapes: [(usize, usize); 4] = [(16, 1), (16, 8), (256, 1), (256, 8)];
    let mut res: BTreeMap<(usize, usize, usize), Vec<f64>> = BTreeMap::new();
    // One discarded pass: connections, and the servers' hash tables rehashed after the fill.
    for (_, _, b) in &backends {
        rt.block_on(batch_throughput(b, 8, 16, &keys));
    }
    for round in 0..rounds() {
        eprintln!("[cache] batch: round {} (load {})", round + 1, loadavg());
        for (batch, callers) in shapes {
            for (bi, (_, _, b)) in backends.iter().enumerate() {
                let r = rt.block_on(batch_throughput(b, callers, batch, &keys));
                res.entry((batch, callers, bi)).or_default().push(r);
            }
        }
    }
    println!(
        "\n### get_many, {BATCH_VALUE} B values, {BATCH_KEYS} keys, random keys per batch (keys/s, median of {} rounds)\n",
        rounds()
    );
    println!("| batch | callers | backend | keys/s | range | keys/s per node | vs 1 node (distributed) |");
    println!("| ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    for (batch, callers) in shapes {
        let one = median(&res[&(batch, callers, 2)]);
        for (bi, (label, nodes, _)) in backends.iter().enumerate() {
            let v = &res[&(batch, callers, bi)];
            let m = median(v);
            let vs = if bi == 3 {
                format!("{:.2}x", m / one)
            } else {
                String::new()
            };
            println!(
                "| {batch} | {callers} | {label} | {} | {} | {} | {vs} |",
                kfmt(m),
                spread(v),
                kfmt(m / *nodes as f64)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if let Ok(spec) = std::env::var("CACHE_BENCH_CHILD") {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            ["memory", size, total] => memory_child(size.parse().unwrap(), total.parse().unwrap()),
            _ => panic!("unknown child {spec:?}"),
        }
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if pinned() {
        pin_to(0);
    }
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
        "## cache bench: {} cpus ({cpu}), load {}, {} s per figure, {} rounds, pinned: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        loadavg(),
        secs().as_secs_f64(),
        rounds(),
        pinned()
    );
    let started = Instant::now();
    if run("memory") {
        section_memory();
    }
    if run("zipf") {
        section_zipf();
    }
    if run("single") || run("batch") {
        let s0 = RedisServer::start(pinned());
        if run("single") {
            section_single(&s0);
        }
        if run("batch") {
            let (s1, s2) = (RedisServer::start(pinned()), RedisServer::start(pinned()));
            section_batch(&s0, &s1, &s2);
        }
    }
    println!(
        "\n(total {:.0} s, load at the end {})",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
