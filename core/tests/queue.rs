//! The task queue on a real redis-server (issue #16): delay accuracy, the retry/backoff
//! schedule, dead letters and re-drive, idempotency keys, reclaiming, graceful shutdown,
//! visibility extension, promotion under concurrent consumers, bad input, and "no polling"
//! (an idle consumer's blocking reads counted with `INFO commandstats`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clusterkit::queue::{
    Backoff, EnqueueOptions, FailOutcome, NewJobSpec, Priority, QueueOptions, QueueStats, TaskQueue,
};
use clusterkit::{ConnectionSettings, Error, ErrorKind};
use support::RedisServer;

fn queue(server: &RedisServer, options: QueueOptions) -> TaskQueue {
    TaskQueue::redis(&server.addr(), options, &ConnectionSettings::default()).unwrap()
}

fn opts() -> QueueOptions {
    QueueOptions::default()
        .with_namespace("app")
        .with_visibility_timeout(Duration::from_millis(500))
        .with_block(Duration::from_millis(500))
        .with_backoff(Backoff::Fixed {
            delay: Duration::from_millis(50),
        })
}

fn field(e: Error) -> String {
    match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other}"),
    }
}

/// `calls` of `cmdstat_<name>` in `INFO commandstats` (0 when never called).
fn calls(server: &RedisServer, name: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_reserve_ack_priorities_and_stats() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    let low = q
        .enqueue("j", b"low", &EnqueueOptions::new().priority(Priority::Low))
        .await
        .unwrap();
    let n1 = q.enqueue("j", b"n1", &EnqueueOptions::new()).await.unwrap();
    let high = q
        .enqueue(
            "j",
            b"high",
            &EnqueueOptions::new().priority(Priority::High),
        )
        .await
        .unwrap();
    let many = q
        .enqueue_many(
            "j",
            &[
                NewJobSpec {
                    payload: Bytes::from_static(b"m1"),
                    options: EnqueueOptions::new(),
                },
                NewJobSpec {
                    payload: Bytes::from_static(&[0, 255, 1]),
                    options: EnqueueOptions::new(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(many.len(), 2);
    let s = q.stats("j").await.unwrap();
    assert_eq!((s.waiting, s.in_flight, s.delayed, s.dead), (5, 0, 0, 0));
    assert!(s.oldest_age_ms.is_some());
    let c = q.consumer("j").unwrap();
    let first = c.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(q.stats("j").await.unwrap().in_flight, 1);
    let mut order = vec![(first.id.clone(), first.payload.clone())];
    c.ack(&first.receipt).await.unwrap();
    assert_eq!(
        c.ack(&first.receipt).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    while let Some(j) = c.reserve(Duration::ZERO).await.unwrap() {
        assert_eq!((j.attempt, j.queue.as_str()), (1, "j"));
        order.push((j.id.clone(), j.payload.clone()));
        c.ack(&j.receipt).await.unwrap();
    }
    let ids: Vec<&str> = order.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids, [&high, &n1, &many[0], &many[1], &low]);
    assert_eq!(&order[3].1[..], &[0, 255, 1], "binary payloads intact");
    assert_eq!(q.stats("j").await.unwrap(), QueueStats::default());
    let m = q.metrics();
    assert_eq!((m.enqueued, m.completed, m.in_flight), (5, 5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_accuracy_while_a_consumer_blocks() {
    let server = RedisServer::start();
    // A long block period: the delayed job must still come on time (the enqueue wakes the
    // blocked consumer so that it re-arms its timer).
    let q = queue(&server, opts().with_block(Duration::from_secs(10)));
    let c = q.consumer("d").unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            let j = c.reserve(Duration::from_secs(20)).await.unwrap().unwrap();
            (Instant::now(), j)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let id = q
        .enqueue(
            "d",
            b"x",
            &EnqueueOptions::new().delay(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    assert_eq!(q.stats("d").await.unwrap().delayed, 1);
    let (at, j) = waiter.await.unwrap();
    let late = at.duration_since(t0);
    println!("delay 400ms: delivered after {late:?}");
    assert_eq!(j.id, id);
    assert!(late >= Duration::from_millis(395), "early: {late:?}");
    // Never early; the upper bound only catches a missed wake-up (the next block period is
    // 10 s away), not scheduling noise of a loaded machine.
    assert!(late < Duration::from_millis(400 + 3000), "late: {late:?}");
    c.ack(&j.receipt).await.unwrap();
    // run_at in the past: at once.
    q.enqueue(
        "d",
        b"y",
        &EnqueueOptions::new().run_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert!(c.reserve(Duration::ZERO).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_schedule_dead_letter_and_redrive() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    let backoff = Backoff::Exponential {
        base: Duration::from_millis(100),
        max: Duration::from_millis(300),
        jitter: false,
    };
    let id = q
        .enqueue(
            "r",
            b"p",
            &EnqueueOptions::new().max_attempts(4).backoff(backoff),
        )
        .await
        .unwrap();
    let c = q.consumer("r").unwrap();
    let mut gaps = Vec::new();
    let mut failed_at = Instant::now();
    for attempt in 1..=4u32 {
        let j = c.reserve(Duration::from_secs(5)).await.unwrap().unwrap();
        if attempt > 1 {
            gaps.push(failed_at.elapsed());
            assert_eq!(
                j.last_error.as_deref(),
                Some(&*format!("boom {}", attempt - 1))
            );
        }
        assert_eq!(
            (j.id.as_str(), j.attempt, j.max_attempts),
            (id.as_str(), attempt, 4)
        );
        failed_at = Instant::now();
        let out = c
            .fail(&j.receipt, &format!("boom {attempt}"))
            .await
            .unwrap();
        if attempt < 4 {
            match out {
                FailOutcome::Retry { attempt: a, .. } => assert_eq!(a, attempt + 1),
                other => panic!("{other:?}"),
            }
            let s = q.stats("r").await.unwrap();
            // The retried job is only delayed: no phantom waiting entry (reported by the
            // binding tests against an earlier version that kept a wake hint in the lane).
            assert_eq!((s.waiting, s.in_flight, s.delayed), (0, 0, 1), "{s:?}");
        } else {
            assert_eq!(out, FailOutcome::Dead);
        }
    }
    println!("backoff gaps: {gaps:?}");
    for (gap, want) in gaps.iter().zip([100u64, 200, 300]) {
        assert!(*gap >= Duration::from_millis(want - 5), "{gaps:?}");
        // Upper bound: no missed wake-up (the block period is 500 ms), with room for a loaded
        // machine; the printed gaps show the accuracy.
        assert!(*gap < Duration::from_millis(want + 3000), "{gaps:?}");
    }
    let s = q.stats("r").await.unwrap();
    assert_eq!((s.dead, s.waiting, s.delayed, s.in_flight), (1, 0, 0, 0));
    let dead = q.dead_jobs("r", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), (id.as_str(), 4));
    assert_eq!(dead[0].last_error, "boom 4");
    assert_eq!(&dead[0].payload[..], b"p");
    assert_eq!(q.redrive("r", 10).await.unwrap(), 1);
    assert_eq!(q.stats("r").await.unwrap().dead, 0);
    let j = c.reserve(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(
        (j.id.as_str(), j.attempt, j.max_attempts),
        (id.as_str(), 1, 4)
    );
    c.ack(&j.receipt).await.unwrap();
    assert_eq!(q.stats("r").await.unwrap(), QueueStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    let o = EnqueueOptions::new().idempotency_key("order-1", Some(Duration::from_millis(300)));
    let a = q.enqueue("i", b"1", &o).await.unwrap();
    let b = q.enqueue("i", b"2", &o).await.unwrap();
    assert_eq!(a, b);
    let batch = q
        .enqueue_many(
            "i",
            &[NewJobSpec {
                payload: Bytes::from_static(b"3"),
                options: o.clone(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(batch, std::slice::from_ref(&a));
    assert_eq!(q.stats("i").await.unwrap().waiting, 1);
    assert_eq!(q.metrics().duplicates, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = q.enqueue("i", b"4", &o).await.unwrap();
    assert_ne!(a, c);
    assert_eq!(q.stats("i").await.unwrap().waiting, 2);

    // A batch is one script call, whatever it holds, and keeps the order of its jobs: a key
    // repeated inside the batch returns the batch's own first job; delayed and plain jobs mix.
    let k = EnqueueOptions::new().idempotency_key("order-2", None);
    let spec = |p: &'static [u8], options: &EnqueueOptions| NewJobSpec {
        payload: Bytes::from_static(p),
        options: options.clone(),
    };
    let k3 = EnqueueOptions::new().idempotency_key("order-3", None);
    let d = q.enqueue("i", b"d", &k3).await.unwrap();
    let scripts_before = calls(&server, "evalsha") + calls(&server, "eval");
    let ids = q
        .enqueue_many(
            "i",
            &[
                spec(b"5", &k),
                spec(b"6", &EnqueueOptions::new().delay(Duration::from_secs(60))),
                spec(b"7", &k),
                spec(b"8", &k3),
                spec(b"9", &EnqueueOptions::new()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        calls(&server, "evalsha") + calls(&server, "eval") - scripts_before,
        1,
        "one script call for the whole batch"
    );
    assert_eq!(ids.len(), 5);
    assert_eq!(
        ids[2], ids[0],
        "a key repeated in the batch returns its first job"
    );
    assert_eq!(ids[3], d, "a key from before the batch returns that job");
    let fresh: std::collections::HashSet<&String> = [&ids[0], &ids[1], &ids[4], &a, &c, &d].into();
    assert_eq!(fresh.len(), 6, "fresh jobs get fresh ids");
    let s = q.stats("i").await.unwrap();
    assert_eq!((s.waiting, s.delayed), (5, 1));
    assert_eq!(q.metrics().duplicates, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_consumer_jobs_are_reclaimed() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    q.enqueue("c", b"x", &EnqueueOptions::new().max_attempts(2))
        .await
        .unwrap();
    let crashed = q.consumer("c").unwrap();
    let j1 = crashed.reserve(Duration::ZERO).await.unwrap().unwrap();
    let other = q.consumer("c").unwrap();
    let t0 = Instant::now();
    let j2 = other
        .reserve(Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    println!("reclaimed after {:?}", t0.elapsed());
    assert_eq!((j2.id.clone(), j2.attempt), (j1.id.clone(), 2));
    assert_eq!(
        crashed.ack(&j1.receipt).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(q.metrics().reclaimed, 1);
    // Its last attempt's lease expires too: dead-lettered, never delivered a third time.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let third = q.consumer("c").unwrap();
    assert!(third
        .reserve(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    let dead = q.dead_jobs("c", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].last_error.starts_with("lease expired"), "{dead:?}");
    assert_eq!(dead[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_the_lease() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    q.enqueue("e", b"x", &EnqueueOptions::new()).await.unwrap();
    let a = q.consumer("e").unwrap();
    let b = q.consumer("e").unwrap();
    let j = a.reserve(Duration::ZERO).await.unwrap().unwrap();
    // 1.5 s of work with a 500 ms visibility timeout, heartbeat every 200 ms.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.extend(&j.receipt).await.unwrap();
        assert!(b.reserve(Duration::ZERO).await.unwrap().is_none());
    }
    a.ack(&j.receipt).await.unwrap();
    assert_eq!(q.metrics().reclaimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() {
    let server = RedisServer::start();
    let q = queue(&server, opts().with_block(Duration::from_secs(10)));
    let c = q.consumer("s").unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.reserve(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    c.stop();
    assert!(waiter.await.unwrap().unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(c.shutdown().await.unwrap(), 0);

    let w = q.consumer("s").unwrap();
    for i in 0..3u8 {
        q.enqueue("s", &[i], &EnqueueOptions::new()).await.unwrap();
    }
    let held = w.reserve_many(3, Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 3);
    w.ack(&held[0].receipt).await.unwrap();
    assert_eq!(w.shutdown().await.unwrap(), 2);
    assert!(w.reserve(Duration::ZERO).await.unwrap().is_none());
    let s = q.stats("s").await.unwrap();
    assert_eq!((s.waiting, s.in_flight), (2, 0));
    let next = q.consumer("s").unwrap();
    let again = next.reserve_many(5, Duration::ZERO).await.unwrap();
    let mut got: Vec<&str> = again.iter().map(|j| j.id.as_str()).collect();
    got.sort();
    let mut want = vec![held[1].id.as_str(), held[2].id.as_str()];
    want.sort();
    assert_eq!(got, want);
    assert!(
        again.iter().all(|j| j.attempt == 1),
        "release consumes no attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_under_concurrent_consumers() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    let n = 300usize;
    let jobs: Vec<NewJobSpec> = (0..n)
        .map(|i| NewJobSpec {
            payload: Bytes::from(i.to_string()),
            options: EnqueueOptions::new().delay(Duration::from_millis(100 + (i as u64 * 7) % 400)),
        })
        .collect();
    let ids = q.enqueue_many("p", &jobs).await.unwrap();
    // (A delay that ran out while the batch was being built is stored as waiting.)
    let s = q.stats("p").await.unwrap();
    assert_eq!(s.delayed + s.waiting, n as u64, "{s:?}");
    assert_eq!(s.in_flight, 0);
    assert!(s.delayed > 0, "{s:?}");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = q.consumer("p").unwrap();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match c.reserve(Duration::from_millis(600)).await.unwrap() {
                    Some(j) => {
                        c.ack(&j.receipt).await.unwrap();
                        got.push(j.id);
                    }
                    None => {
                        // Done only when nothing is left anywhere (not merely slow: the box
                        // may be loaded).
                        let s = q.stats("p").await.unwrap();
                        if s.waiting + s.delayed + s.in_flight == 0 {
                            break;
                        }
                    }
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    let missing: Vec<usize> = (0..n).filter(|i| !unique.contains(&ids[*i])).collect();
    println!(
        "delivered {} ({} distinct), missing {missing:?}, stats {:?}, dead {:?}, metrics {:?}",
        all.len(),
        unique.len(),
        q.stats("p").await.unwrap(),
        q.dead_jobs("p", 10).await.unwrap(),
        q.metrics()
    );
    assert_eq!(all.len(), n, "every job delivered once");
    assert_eq!(unique.len(), n);
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    assert_eq!(q.stats("p").await.unwrap(), QueueStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let server = RedisServer::start();
    let q = queue(&server, opts().with_queues(vec!["known".into()]));
    let e = q
        .enqueue("unknown", b"x", &EnqueueOptions::new())
        .await
        .unwrap_err();
    assert_eq!(field(e), "queue");
    for name in ["", "a b", "{x}", "x:y"] {
        assert_eq!(field(q.consumer(name).unwrap_err()), "queue");
    }
    let big = vec![7u8; clusterkit::queue::DEFAULT_MAX_PAYLOAD + 1];
    let e = q
        .enqueue("known", &big, &EnqueueOptions::new())
        .await
        .unwrap_err();
    assert_eq!(field(e), "payload");
    for (doc, f) in [
        (r#"{"delay_ms": 0}"#, "options.delay_ms"),
        (r#"{"delay_ms": -1}"#, "options.delay_ms"),
        (r#"{"max_attempts": 0}"#, "options.max_attempts"),
        (r#"{"max_attempts": -3}"#, "options.max_attempts"),
    ] {
        let o = EnqueueOptions::from_json(doc).unwrap();
        let e = q.enqueue("known", b"x", &o).await.unwrap_err();
        assert_eq!(field(e), f);
    }
    let c = q.consumer("known").unwrap();
    for r in ["", "x", "4123-0@c", "1abc@c", "112-0@"] {
        assert_eq!(field(c.ack(r).await.unwrap_err()), "receipt", "{r:?}");
    }
    // Nothing was written.
    let s = q.stats("known").await.unwrap();
    assert_eq!((s.waiting, s.delayed), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_does_not_poll() {
    let server = RedisServer::start();
    let block = Duration::from_millis(300);
    let q = queue(
        &server,
        opts()
            .with_block(block)
            .with_visibility_timeout(Duration::from_secs(60)),
    );
    let c = q.consumer("idle").unwrap();
    // Warm up: the first reserve runs the script once (groups, reclaim).
    assert!(c.reserve(Duration::ZERO).await.unwrap().is_none());
    let reads0 = calls(&server, "xreadgroup");
    let scripts0 = calls(&server, "evalsha") + calls(&server, "eval");
    let window = Duration::from_millis(3000);
    let t0 = Instant::now();
    assert!(c.reserve(window).await.unwrap().is_none());
    let elapsed = t0.elapsed();
    let scripts = calls(&server, "evalsha") + calls(&server, "eval") - scripts0;
    // A script run reads only the lanes that hold entries (none: the queue is empty), and every
    // lane on a reclaim round only (every half visibility timeout: none in this window), so
    // every XREADGROUP counted here is a blocking read.
    let blocking = calls(&server, "xreadgroup") - reads0;
    let periods = (elapsed.as_millis() / block.as_millis()) as u64;
    println!(
        "idle {elapsed:?}: {blocking} blocking reads, {scripts} script runs, {periods} block periods"
    );
    assert!(blocking >= 1, "it did wait on the server");
    assert!(
        blocking <= periods + 1,
        "{blocking} blocking reads in {periods} periods of {block:?}"
    );
    assert!(scripts <= 1, "{scripts} script runs while idle");
    assert_eq!(q.metrics().blocking_reads, blocking);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_many_is_one_script_and_settles_each_receipt_once() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    let high = EnqueueOptions::new().priority(Priority::High);
    q.enqueue("m", b"a", &high).await.unwrap();
    q.enqueue("m", b"b", &EnqueueOptions::new()).await.unwrap();
    q.enqueue("m", b"c", &EnqueueOptions::new()).await.unwrap();
    let c = q.consumer("m").unwrap();
    let jobs = c.reserve_many(3, Duration::from_secs(1)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let (r0, r1) = (jobs[0].receipt.as_str(), jobs[1].receipt.as_str());
    let e = c.ack_many(&[r0, "garbage"]).await.unwrap_err();
    assert_eq!(field(e), "receipts[1]");
    assert_eq!(q.stats("m").await.unwrap().in_flight, 3);
    c.ack(&jobs[2].receipt).await.unwrap(); // (the script is loaded now)
                                            // Two lanes (high and normal) and a repeated receipt, in one script run.
    let before = calls(&server, "evalsha") + calls(&server, "eval");
    assert_eq!(
        c.ack_many(&[r0, r1, r0]).await.unwrap(),
        [true, true, false]
    );
    assert_eq!(
        calls(&server, "evalsha") + calls(&server, "eval") - before,
        1
    );
    assert_eq!(c.ack(r1).await.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(q.stats("m").await.unwrap(), QueueStats::default());
    // Acked entries are deleted from their lanes, not only acked.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for lane in ["h", "n", "l"] {
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("app:q:{{m}}:{lane}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(len, 0, "lane {lane}");
    }
    let m = q.metrics();
    assert_eq!((m.completed, m.lease_lost, m.in_flight), (3, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_and_reserve_is_one_script_run_then_blocks_like_reserve() {
    let server = RedisServer::start();
    let q = queue(&server, opts());
    for p in [b"a", b"b", b"c", b"d"] {
        q.enqueue("ar", p, &EnqueueOptions::new()).await.unwrap();
    }
    let c = q.consumer("ar").unwrap();
    // Nothing to ack: a reserve.
    let first = c
        .ack_and_reserve::<&str>(&[], 2, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(first.0, Vec::<bool>::new());
    assert_eq!(first.1.len(), 2);
    let (r0, r1) = (first.1[0].receipt.clone(), first.1[1].receipt.clone());
    // A malformed receipt fails the call, naming it: nothing acked, nothing reserved.
    let e = c
        .ack_and_reserve(&[r0.as_str(), "garbage"], 2, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(field(e), "receipts[1]");
    let e = c
        .ack_and_reserve(&[r0.as_str()], 0, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(field(e), "max");
    assert_eq!(q.stats("ar").await.unwrap().in_flight, 2);
    // Ack two (one repeated: settled once) and reserve the other two: ONE script run.
    let before = calls(&server, "evalsha") + calls(&server, "eval");
    let (acked, jobs) = c
        .ack_and_reserve(
            &[r0.as_str(), r1.as_str(), r0.as_str()],
            5,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(
        calls(&server, "evalsha") + calls(&server, "eval") - before,
        1
    );
    assert_eq!(acked, [true, true, false]);
    let payloads: Vec<&[u8]> = jobs.iter().map(|j| &j.payload[..]).collect();
    assert_eq!(payloads, [&b"c"[..], &b"d"[..]]);
    assert_eq!(c.ack(&r1).await.unwrap_err().kind(), ErrorKind::Conflict);
    // The queue is empty now: the acks are done at once and the reserve then blocks until a
    // job comes (no job is lost to the wait).
    let (r2, r3) = (jobs[0].receipt.clone(), jobs[1].receipt.clone());
    let q2 = q.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q2.enqueue("ar", b"e", &EnqueueOptions::new())
            .await
            .unwrap();
    });
    let t0 = Instant::now();
    let (acked, jobs) = c
        .ack_and_reserve(&[r2.as_str(), r3.as_str()], 5, Duration::from_secs(5))
        .await
        .unwrap();
    late.await.unwrap();
    assert_eq!(acked, [true, true]);
    assert_eq!(jobs.len(), 1);
    assert_eq!(&jobs[0].payload[..], b"e");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // A stopped consumer still acks, and reserves nothing.
    c.stop();
    let (acked, none) = c
        .ack_and_reserve(&[jobs[0].receipt.as_str()], 5, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((acked, none.len()), (vec![true], 0));
    assert_eq!(q.stats("ar").await.unwrap(), QueueStats::default());
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("app:q:{ar}:n")
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 0, "acked entries are deleted");
    let m = q.metrics();
    assert_eq!(
        (m.completed, m.lease_lost, m.in_flight, m.reserved),
        (5, 2, 0, 5)
    );
}
