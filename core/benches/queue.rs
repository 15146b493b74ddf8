//! Task queue benchmarks (issue #16): enqueue and process throughput (jobs/s), embedded and
//! one Redis, 1 and 4 workers, side by side in one run on one private redis-server.
//!
//! Run with `cargo bench -p clusterkit --bench queue` (by hand; about 30 s). Figures:
//!
//! - `enqueue (single)`: one client, `enqueue` one job at a time (one round trip each).
//! - `enqueue (bulk)`: one client, `enqueue_many` of 1000 jobs per call (one round trip each).
//! - `process, N workers`: N worker tasks, each with its own `Consumer`, `reserve_many(50)`
//!   and one `ack_many` per batch (one round trip settles the 50 jobs), until the queue (filled beforehand) is empty. Every job is acked:
//!   a processed job is a completed one.
//!
//! Environment: `QUEUE_BENCH_JOBS` (jobs per figure, default 50 000). Payloads are 64 bytes.
//! The client runs on a 2-thread tokio runtime. The redis-server listens on 127.0.0.1 and is
//! killed when its handle drops. Results print as a Markdown table (BENCHMARKS.md, "Task
//! queue (issue #16)"); the BullMQ and RQ peers are measured by the Node and Python bindings'
//! benchmarks against the same kind of server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use clusterkit::queue::{EnqueueOptions, NewJobSpec, QueueOptions, TaskQueue};
use clusterkit::ConnectionSettings;
use common::{kfmt, loadavg, RedisServer};

fn jobs() -> usize {
    common::env_f64("QUEUE_BENCH_JOBS", 50_000.0) as usize
}

async fn enqueue_single(q: &TaskQueue, name: &str, n: usize) -> f64 {
    let payload = [b'x'; 64];
    let t0 = Instant::now();
    for _ in 0..n {
        q.enqueue(name, &payload, &EnqueueOptions::new())
            .await
            .unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

async fn enqueue_bulk(q: &TaskQueue, name: &str, n: usize) -> f64 {
    let batch: Vec<NewJobSpec> = (0..1000)
        .map(|_| NewJobSpec {
            payload: Bytes::from_static(&[b'x'; 64]),
            options: EnqueueOptions::new(),
        })
        .collect();
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        q.enqueue_many(name, &batch[..k]).await.unwrap();
        done += k;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

async fn process(q: &TaskQueue, name: &str, n: usize, workers: usize) -> f64 {
    enqueue_bulk(q, name, n).await;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let c = q.consumer(name).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let jobs = c.reserve_many(50, Duration::ZERO).await.unwrap();
                if jobs.is_empty() {
                    return done;
                }
                let receipts: Vec<&str> = jobs.iter().map(|j| j.receipt.as_str()).collect();
                let acked = c.ack_many(&receipts).await.unwrap();
                assert!(acked.iter().all(|&a| a), "every lease held");
                done += acked.len();
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, n, "every job processed once");
    n as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = jobs();
    let server = RedisServer::start(false);
    let options = QueueOptions::default().with_namespace("bench");
    let redis = TaskQueue::redis(
        &server.address(),
        options.clone(),
        &ConnectionSettings::default(),
    )
    .unwrap();
    let memory = TaskQueue::memory(options).unwrap();
    println!(
        "task queue, {n} jobs per figure, 64-byte payloads, load {}",
        loadavg()
    );
    println!();
    println!("| figure | embedded (jobs/s) | Redis (jobs/s) |");
    println!("|---|---:|---:|");
    rt.block_on(async {
        let single_n = n.min(20_000);
        let m = enqueue_single(&memory, "s", single_n).await;
        let r = enqueue_single(&redis, "s", single_n).await;
        println!("| enqueue (single, 1 client) | {} | {} |", kfmt(m), kfmt(r));
        memory.purge("s").await.unwrap();
        redis.purge("s").await.unwrap();
        let m = enqueue_bulk(&memory, "b", n).await;
        let r = enqueue_bulk(&redis, "b", n).await;
        println!(
            "| enqueue (bulk, enqueue_many x1000) | {} | {} |",
            kfmt(m),
            kfmt(r)
        );
        memory.purge("b").await.unwrap();
        redis.purge("b").await.unwrap();
        for workers in [1, 4] {
            let name = format!("p{workers}");
            let m = process(&memory, &name, n, workers).await;
            let r = process(&redis, &name, n, workers).await;
            println!(
                "| process (reserve_many(50) + ack_many), {workers} worker{} | {} | {} |",
                if workers > 1 { "s" } else { "" },
                kfmt(m),
                kfmt(r)
            );
        }
    });
}
