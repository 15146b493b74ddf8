//! Unit tests of the queue's options and of the embedded backend (the Redis backend runs the
//! same scenarios in `core/tests/queue.rs`).

use std::time::{Duration, Instant};

use super::*;
use crate::error::ErrorKind;

fn q() -> TaskQueue {
    TaskQueue::memory(
        QueueOptions::default()
            .with_visibility_timeout(Duration::from_millis(200))
            .with_backoff(Backoff::Fixed {
                delay: Duration::from_millis(50),
            }),
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn field(e: Error) -> String {
    match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other}"),
    }
}

#[test]
fn backoff_schedule() {
    let b = Backoff::Exponential {
        base: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        jitter: false,
    };
    let d: Vec<u128> = (1..=6).map(|a| b.delay(a, 0.5).as_millis()).collect();
    assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
    let j = Backoff::Exponential {
        base: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        jitter: true,
    };
    assert_eq!(j.delay(3, 0.0).as_millis(), 200);
    assert_eq!(j.delay(3, 0.999_999).as_millis(), 399);
    assert_eq!(j.delay(100, 0.0).as_millis(), 500);
    let f = Backoff::Fixed {
        delay: Duration::from_millis(70),
    };
    assert_eq!(f.delay(9, 0.3).as_millis(), 70);
    for b in [b, j, f] {
        assert_eq!(Backoff::decode(&b.encode()), Some(b));
    }
}

#[test]
fn bad_input_names_the_field() {
    let q = q();
    rt().block_on(async {
        let e = |o: &str| EnqueueOptions::from_json(o).unwrap_err();
        assert_eq!(field(e(r#"{"delay_ms": "x"}"#)), "options.delay_ms");
        assert_eq!(field(e(r#"{"bogus": 1}"#)), "options.bogus");
        let opts = |o: &str| EnqueueOptions::from_json(o).unwrap();
        for (doc, f) in [
            (r#"{"delay_ms": 0}"#, "options.delay_ms"),
            (r#"{"delay_ms": -5}"#, "options.delay_ms"),
            (r#"{"max_attempts": 0}"#, "options.max_attempts"),
            (r#"{"max_attempts": -1}"#, "options.max_attempts"),
            (r#"{"run_at_ms": -1}"#, "options.run_at_ms"),
            (r#"{"delay_ms": 5, "run_at_ms": 5}"#, "options.run_at_ms"),
            (
                r#"{"backoff": {"kind": "fixed"}}"#,
                "options.backoff.delay_ms",
            ),
            (r#"{"backoff": {"kind": "linear"}}"#, "options.backoff.kind"),
            (
                r#"{"backoff": {"kind": "fixed", "delay_ms": -1}}"#,
                "options.backoff.delay_ms",
            ),
            (r#"{"idempotency_key": ""}"#, "options.idempotency_key"),
            (r#"{"idempotency_ttl_ms": 5}"#, "options.idempotency_ttl_ms"),
            (
                r#"{"idempotency_key": "k", "idempotency_ttl_ms": 0}"#,
                "options.idempotency_ttl_ms",
            ),
        ] {
            let err = q.enqueue("jobs", b"x", &opts(doc)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{doc}");
            assert_eq!(field(err), f, "{doc}");
        }
        for name in ["", "a b", "a:b", "{x}", "é", &"x".repeat(129)] {
            let err = q
                .enqueue(name, b"x", &EnqueueOptions::new())
                .await
                .unwrap_err();
            assert_eq!(field(err), "queue", "{name:?}");
            assert_eq!(field(q.consumer(name).unwrap_err()), "queue");
            assert_eq!(field(q.stats(name).await.unwrap_err()), "queue");
        }
        let big = vec![0u8; DEFAULT_MAX_PAYLOAD + 1];
        let err = q
            .enqueue("jobs", &big, &EnqueueOptions::new())
            .await
            .unwrap_err();
        assert_eq!(field(err), "payload");
        let many = [
            NewJobSpec {
                payload: Bytes::from_static(b"ok"),
                options: EnqueueOptions::new(),
            },
            NewJobSpec {
                payload: Bytes::from_static(b"bad"),
                options: opts(r#"{"delay_ms": 0}"#),
            },
        ];
        let err = q.enqueue_many("jobs", &many).await.unwrap_err();
        assert_eq!(field(err), "jobs[1].options.delay_ms");
        assert_eq!(q.stats("jobs").await.unwrap().waiting, 0, "nothing stored");
        let c = q.consumer("jobs").unwrap();
        assert_eq!(field(c.ack("garbage").await.unwrap_err()), "receipt");
        assert_eq!(
            field(c.reserve_many(0, Duration::ZERO).await.unwrap_err()),
            "max"
        );
    });
    let restricted =
        TaskQueue::memory(QueueOptions::default().with_queues(vec!["a".into()])).unwrap();
    let e = restricted.consumer("b").unwrap_err();
    assert!(e.to_string().contains("unknown queue"), "{e}");
    assert!(restricted.consumer("a").is_ok());
    for bad in [
        QueueOptions::default().with_max_attempts(0),
        QueueOptions::default().with_visibility_timeout(Duration::ZERO),
        QueueOptions::default().with_namespace("a:b"),
        QueueOptions::default().with_max_payload_bytes(0),
        QueueOptions::default().with_queues(vec!["a b".into()]),
    ] {
        assert_eq!(
            TaskQueue::memory(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}

#[test]
fn enqueue_reserve_ack_in_priority_order() {
    let q = q();
    rt().block_on(async {
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
        let n2 = q.enqueue("j", b"n2", &EnqueueOptions::new()).await.unwrap();
        let s = q.stats("j").await.unwrap();
        assert_eq!((s.waiting, s.in_flight), (4, 0));
        assert!(s.oldest_age_ms.is_some());
        let c = q.consumer("j").unwrap();
        let mut order = Vec::new();
        while let Some(j) = c.reserve(Duration::ZERO).await.unwrap() {
            assert_eq!(j.attempt, 1);
            assert_eq!(j.queue, "j");
            order.push(j.id.clone());
            c.ack(&j.receipt).await.unwrap();
            // A second ack finds the lease gone.
            assert_eq!(
                c.ack(&j.receipt).await.unwrap_err().kind(),
                ErrorKind::Conflict
            );
        }
        assert_eq!(order, [high, n1, n2, low]);
        let s = q.stats("j").await.unwrap();
        assert_eq!(s, QueueStats::default());
        let m = q.metrics();
        assert_eq!((m.enqueued, m.completed, m.in_flight), (4, 4, 0));
    });
}

#[test]
fn delay_and_run_at() {
    let q = q();
    rt().block_on(async {
        let c = q.consumer("d").unwrap();
        let t0 = Instant::now();
        q.enqueue(
            "d",
            b"x",
            &EnqueueOptions::new().delay(Duration::from_millis(150)),
        )
        .await
        .unwrap();
        assert_eq!(q.stats("d").await.unwrap().delayed, 1);
        assert!(c.reserve(Duration::ZERO).await.unwrap().is_none());
        let j = c.reserve(Duration::from_secs(2)).await.unwrap().unwrap();
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        c.ack(&j.receipt).await.unwrap();
        // run_at in the past: now.
        q.enqueue(
            "d",
            b"y",
            &EnqueueOptions::new()
                .run_at(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
        )
        .await
        .unwrap();
        assert!(c.reserve(Duration::ZERO).await.unwrap().is_some());
    });
}

#[test]
fn retries_then_dead_letter_then_redrive() {
    let q = q();
    rt().block_on(async {
        let id = q
            .enqueue("r", b"p", &EnqueueOptions::new().max_attempts(3))
            .await
            .unwrap();
        let c = q.consumer("r").unwrap();
        for attempt in 1..=3u32 {
            let j = c.reserve(Duration::from_secs(2)).await.unwrap().unwrap();
            assert_eq!((j.id.as_str(), j.attempt), (id.as_str(), attempt));
            if attempt > 1 {
                assert_eq!(j.last_error.as_deref(), Some("boom"));
            }
            let out = c.fail(&j.receipt, "boom").await.unwrap();
            if attempt < 3 {
                assert!(matches!(out, FailOutcome::Retry { attempt: a, .. } if a == attempt + 1));
                assert_eq!(q.stats("r").await.unwrap().delayed, 1);
            } else {
                assert_eq!(out, FailOutcome::Dead);
            }
        }
        let s = q.stats("r").await.unwrap();
        assert_eq!((s.dead, s.waiting, s.delayed, s.in_flight), (1, 0, 0, 0));
        let dead = q.dead_jobs("r", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id.as_str(), dead[0].attempts), (id.as_str(), 3));
        assert_eq!(dead[0].last_error, "boom");
        assert_eq!(&dead[0].payload[..], b"p");
        assert_eq!(q.redrive("r", 10).await.unwrap(), 1);
        let j = c.reserve(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            (j.id.as_str(), j.attempt, j.max_attempts),
            (id.as_str(), 1, 3)
        );
        c.ack(&j.receipt).await.unwrap();
        assert_eq!(q.stats("r").await.unwrap(), QueueStats::default());
    });
}

#[test]
fn idempotency_key_returns_the_first_id() {
    let q = q();
    rt().block_on(async {
        let o = EnqueueOptions::new().idempotency_key("order-1", Some(Duration::from_millis(100)));
        let a = q.enqueue("i", b"1", &o).await.unwrap();
        let b = q.enqueue("i", b"2", &o).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(q.stats("i").await.unwrap().waiting, 1);
        assert_eq!(q.metrics().duplicates, 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let c = q.enqueue("i", b"3", &o).await.unwrap();
        assert_ne!(a, c);
        assert_eq!(q.stats("i").await.unwrap().waiting, 2);
    });
}

#[test]
fn expired_lease_is_reclaimed_and_counts_as_an_attempt() {
    let q = q();
    rt().block_on(async {
        q.enqueue("c", b"x", &EnqueueOptions::new().max_attempts(2))
            .await
            .unwrap();
        let crashed = q.consumer("c").unwrap();
        let other = q.consumer("c").unwrap();
        let j1 = crashed.reserve(Duration::ZERO).await.unwrap().unwrap();
        assert!(other
            .reserve(Duration::from_millis(50))
            .await
            .unwrap()
            .is_none());
        // The visibility timeout (200 ms) passes: the other consumer gets it.
        let j2 = other
            .reserve(Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((j2.id.clone(), j2.attempt), (j1.id.clone(), 2));
        assert_eq!(
            crashed.ack(&j1.receipt).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        // Expires again on its last attempt: dead-lettered, not delivered.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(other.reserve(Duration::ZERO).await.unwrap().is_none());
        let dead = q.dead_jobs("c", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].last_error.starts_with("lease expired"),
            "{}",
            dead[0].last_error
        );
        assert_eq!(q.metrics().reclaimed, 1);
    });
}

#[test]
fn extend_keeps_the_lease() {
    let q = q();
    rt().block_on(async {
        q.enqueue("e", b"x", &EnqueueOptions::new()).await.unwrap();
        let a = q.consumer("e").unwrap();
        let b = q.consumer("e").unwrap();
        let j = a.reserve(Duration::ZERO).await.unwrap().unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            a.extend(&j.receipt).await.unwrap();
            assert!(b.reserve(Duration::ZERO).await.unwrap().is_none());
        }
        a.ack(&j.receipt).await.unwrap();
    });
}

#[test]
fn stop_and_shutdown_return_jobs() {
    let q = q();
    rt().block_on(async {
        let c = q.consumer("s").unwrap();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.reserve(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        c.stop();
        assert!(waiter.await.unwrap().unwrap().is_none());
        assert!(t0.elapsed() < Duration::from_secs(5));
        let w = q.consumer("s").unwrap();
        q.enqueue("s", b"1", &EnqueueOptions::new()).await.unwrap();
        q.enqueue("s", b"2", &EnqueueOptions::new()).await.unwrap();
        let held = w.reserve_many(2, Duration::ZERO).await.unwrap();
        assert_eq!(held.len(), 2);
        w.ack(&held[0].receipt).await.unwrap();
        assert_eq!(w.shutdown().await.unwrap(), 1);
        assert!(
            w.reserve(Duration::ZERO).await.unwrap().is_none(),
            "stopped"
        );
        let again = q
            .consumer("s")
            .unwrap()
            .reserve(Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id.as_str(), again.attempt), (held[1].id.as_str(), 1));
    });
}

#[test]
fn release_does_not_consume_an_attempt() {
    let q = q();
    rt().block_on(async {
        q.enqueue("rel", b"x", &EnqueueOptions::new().max_attempts(1))
            .await
            .unwrap();
        let c = q.consumer("rel").unwrap();
        for _ in 0..3 {
            let j = c.reserve(Duration::ZERO).await.unwrap().unwrap();
            assert_eq!(j.attempt, 1);
            c.release(&j.receipt).await.unwrap();
        }
    });
}

#[test]
fn config_section() {
    let ck = crate::Clusterkit::parse(
        "[queue]\nvisibility_timeout = \"2s\"\nmax_attempts = 7\nbackoff = { kind = \"fixed\", delay = \"250ms\" }\nqueues = [\"a\"]\n",
    )
    .unwrap();
    let o = ck.queue().options();
    assert_eq!(o.visibility_timeout, Duration::from_secs(2));
    assert_eq!(o.max_attempts, 7);
    assert_eq!(
        o.backoff,
        Backoff::Fixed {
            delay: Duration::from_millis(250)
        }
    );
    assert_eq!(ck.queue().backend_name(), "memory");
    for (doc, f) in [
        ("[queue]\nmax_attempts = 0", "queue.max_attempts"),
        (
            "[queue]\nvisibility_timeout = \"1ms\"",
            "queue.visibility_timeout",
        ),
        ("[queue]\npool = \"nope\"", "queue.pool"),
        (
            "[queue]\nbackoff = { kind = \"fixed\" }",
            "queue.backoff.delay",
        ),
        ("[queue]\nqueues = [\"a b\"]", "queue.queues[0]"),
        ("[queue]\nbogus = 1", "queue.bogus"),
    ] {
        let e = crate::Config::parse(doc).unwrap_err();
        assert_eq!(field(e), f, "{doc}");
    }
}

#[test]
fn ack_many_settles_each_receipt_once() {
    rt().block_on(async {
        let q = q();
        for p in [b"a", b"b", b"c"] {
            q.enqueue("m", p, &EnqueueOptions::new()).await.unwrap();
        }
        let c = q.consumer("m").unwrap();
        let jobs = c.reserve_many(3, Duration::ZERO).await.unwrap();
        assert_eq!(jobs.len(), 3);
        let (r0, r1) = (jobs[0].receipt.as_str(), jobs[1].receipt.as_str());
        // A malformed receipt fails the call, naming it, and acks nothing.
        let e = c.ack_many(&[r0, "garbage"]).await.unwrap_err();
        assert_eq!(field(e), "receipts[1]");
        assert_eq!(q.stats("m").await.unwrap().in_flight, 3);
        // A receipt repeated in the call is acked once.
        assert_eq!(
            c.ack_many(&[r0, r1, r0]).await.unwrap(),
            [true, true, false]
        );
        assert_eq!(c.ack_many::<&str>(&[]).await.unwrap(), Vec::<bool>::new());
        let too_many = vec![r0; MAX_BATCH + 1];
        assert_eq!(field(c.ack_many(&too_many).await.unwrap_err()), "receipts");
        assert_eq!(c.ack(r1).await.unwrap_err().kind(), ErrorKind::Conflict);
        c.ack(&jobs[2].receipt).await.unwrap();
        assert_eq!(q.stats("m").await.unwrap(), QueueStats::default());
        let m = q.metrics();
        assert_eq!((m.completed, m.lease_lost, m.in_flight), (3, 2, 0));
    });
}

#[test]
fn ack_and_reserve_acks_then_reserves() {
    rt().block_on(async {
        let q = q();
        for p in [b"a", b"b", b"c"] {
            q.enqueue("m", p, &EnqueueOptions::new()).await.unwrap();
        }
        let c = q.consumer("m").unwrap();
        let (acked, jobs) = c
            .ack_and_reserve::<&str>(&[], 2, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((acked.len(), jobs.len()), (0, 2));
        let r0 = jobs[0].receipt.as_str();
        let e = c
            .ack_and_reserve(&[r0, "garbage"], 2, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(field(e), "receipts[1]");
        assert_eq!(
            field(
                c.ack_and_reserve(&[r0], 0, Duration::ZERO)
                    .await
                    .unwrap_err()
            ),
            "max"
        );
        let (acked, more) = c
            .ack_and_reserve(&[r0, r0, jobs[1].receipt.as_str()], 5, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(acked, [true, false, true]);
        assert_eq!(more.len(), 1);
        assert_eq!(&more[0].payload[..], b"c");
        c.stop();
        let (acked, none) = c
            .ack_and_reserve(&[more[0].receipt.as_str()], 5, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((acked, none.len()), (vec![true], 0));
        assert_eq!(q.stats("m").await.unwrap(), QueueStats::default());
        let m = q.metrics();
        assert_eq!((m.completed, m.lease_lost, m.in_flight), (3, 1, 0));
    });
}

#[test]
fn job_ids_are_unique_hex_and_never_shared_with_a_forked_child() {
    let ids: std::collections::HashSet<String> = (0..2000).map(|_| new_job_id()).collect();
    assert_eq!(
        ids.len(),
        2000,
        "2000 ids over several refills of the random buffer"
    );
    assert!(ids.iter().all(|i| i.len() == 32
        && i.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    // The parent has buffered random bytes now; a forked child must not hand out the same.
    let _ = new_job_id();
    let mut fds = [0i32; 2];
    // SAFETY: a pipe and a fork in a test; the child only computes an id, writes it and exits.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let id = new_job_id();
            libc::write(fds[1], id.as_ptr().cast(), id.len());
            libc::_exit(0);
        }
        let parent = new_job_id();
        let mut buf = [0u8; 32];
        let n = libc::read(fds[0], buf.as_mut_ptr().cast(), 32);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
        assert_eq!(n, 32);
        let child = std::str::from_utf8(&buf).unwrap();
        assert_ne!(child, parent, "the child drew the parent's next id");
        assert!(!ids.contains(child));
    }
}
