//! Session benchmarks (issue #6): request cycles per second (load, modify one field, save),
//! with and without the session lock, on the embedded backend and on one private Redis.
//!
//! Run with `cargo bench -p clusterkit --bench session` (by hand; about 30 s).
//! `SESSION_BENCH_SECS` sets the seconds per figure (default 2). The redis-server it starts
//! listens on 127.0.0.1 only and is killed on drop (and with this process, PR_SET_PDEATHSIG).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit::cache::{Cache, MemoryOptions, RedisOptions};
use clusterkit::session::{SessionOptions, SessionStore};
use common::RedisServer;

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("SESSION_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    )
}

/// `clients` tasks each run request cycles on their own session (`shared` = false) or all on
/// one session (`shared` = true); returns cycles per second.
async fn cycles(store: &SessionStore, clients: usize, locked: bool, shared: bool) -> f64 {
    let mut ids = Vec::new();
    for _ in 0..if shared { 1 } else { clients } {
        let mut s = store.create().unwrap();
        s.set("user", "alice");
        s.set("n", "0");
        store.save(&mut s).await.unwrap();
        ids.push(s.id().to_string());
    }
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + secs();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            let id = ids[if shared { 0 } else { c }].clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    let mut s = if locked {
                        store.load_locked(id.as_bytes()).await
                    } else {
                        store.load(id.as_bytes()).await
                    }
                    .unwrap()
                    .unwrap();
                    let n: u64 = std::str::from_utf8(s.get("n").unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    s.set("n", (n + 1).to_string());
                    store.save(&mut s).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start(false);
    println!("| backend | clients | sessions | unlocked cycles/s | locked cycles/s |");
    println!("| --- | ---: | --- | ---: | ---: |");
    rt.block_on(async {
        let backends = [
            (
                "embedded",
                Cache::memory("bench", MemoryOptions::default()).unwrap(),
            ),
            (
                "one Redis",
                Cache::redis(
                    &format!("127.0.0.1:{}", redis.port),
                    "bench",
                    RedisOptions::default(),
                )
                .unwrap(),
            ),
        ];
        for (name, cache) in backends {
            let store = SessionStore::new(&cache, SessionOptions::default()).unwrap();
            for (clients, shared) in [(1, false), (8, false), (8, true)] {
                let free = cycles(&store, clients, false, shared).await;
                let locked = cycles(&store, clients, true, shared).await;
                println!(
                    "| {name} | {clients} | {} | {free:.0} | {locked:.0} |",
                    if shared { "one shared" } else { "one each" }
                );
            }
        }
    });
}
