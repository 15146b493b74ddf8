//! THE FAULT TEST of the task queue (issue #16): 100,000 jobs, 4 worker PROCESSES SIGKILLed
//! at random mid-job, the queue's redis-server (AOF on, `appendfsync always`) SIGKILLed and
//! restarted once. At the end every job was completed by the idempotent handler or sits in
//! the dead-letter stream; none is lost; duplicate executions are counted and printed.
//!
//! `appendfsync always`: Redis answers a write only after it is fsynced, so an enqueue or an
//! ack the client saw acknowledged survives even a machine crash. (With `everysec`, a
//! SIGKILL of the server alone would also lose nothing — the data is written to the kernel
//! before the reply — but a power loss could drop up to a second of enqueues; the test holds
//! the library to the strict setting.)
//!
//! The handler records each execution in a SECOND redis-server (the "application
//! database", never restarted): `HINCRBY runs <job number> 1`, then acks. A worker killed
//! between the record and the ack makes a duplicate (the job is reclaimed after the
//! visibility timeout and runs again): at-least-once, counted.
//!
//! Runs as its own binary (`harness = false`): with the argument `worker` it is one worker
//! process; without, it is the test that starts and kills them. Bounded: at most 170 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clusterkit::queue::{EnqueueOptions, NewJobSpec, QueueOptions, TaskQueue};
use clusterkit::ConnectionSettings;
use support::RedisServer;

const JOBS: usize = 100_000;
const WORKERS: usize = 4;
const QUEUE: &str = "fault";
const DEADLINE: Duration = Duration::from_secs(170);

fn options() -> QueueOptions {
    QueueOptions::default()
        .with_namespace("ft")
        .with_visibility_timeout(Duration::from_secs(2))
        .with_block(Duration::from_millis(500))
        .with_max_attempts(20)
}

fn worker(queue_addr: &str, records_addr: &str) {
    let q = TaskQueue::redis(queue_addr, options(), &ConnectionSettings::default()).unwrap();
    let records = redis::Client::open(format!("redis://{records_addr}/")).unwrap();
    let mut db = records.get_connection().unwrap();
    let c = q.consumer(QUEUE).unwrap();
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        let jobs = match clusterkit::blocking::block_on(c.reserve_many(16, Duration::from_secs(1)))
            .unwrap()
        {
            Ok(j) => j,
            Err(_) => {
                // The queue's server is down or restarting: try again shortly.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        for j in jobs {
            let n = String::from_utf8_lossy(&j.payload).into_owned();
            // The idempotent effect, recorded (and counted) in the application's database.
            let _: i64 = redis::cmd("HINCRBY")
                .arg("runs")
                .arg(&n)
                .arg(1)
                .query(&mut db)
                .unwrap();
            // A little work, so that kills land mid-job.
            if n.ends_with('7') {
                std::thread::sleep(Duration::from_micros(300));
            }
            // An ack that fails (server restarting, lease lost) only makes a duplicate.
            let _ = clusterkit::blocking::block_on(c.ack(&j.receipt));
        }
    }
}

fn spawn_worker(queue_addr: &str, records_addr: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["worker", queue_addr, records_addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker process")
}

fn kill(child: &mut Child) {
    // SIGKILL by pid (Child::kill sends SIGKILL), then reap.
    let _ = child.kill();
    let _ = child.wait();
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill(c);
        }
    }
}

fn hlen(db: &mut redis::Connection) -> usize {
    redis::cmd("HLEN").arg("runs").query(db).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        worker(&args[2], &args[3]);
        return;
    }
    // `cargo test` passes its own flags (--nocapture, filters); ignore them.
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("ck-queue-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_string_lossy().into_owned();
    let mut server = RedisServer::start_with_args(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_s,
    ]);
    let records = RedisServer::start();
    let q = TaskQueue::redis(&server.addr(), options(), &ConnectionSettings::default()).unwrap();

    // Enqueue 100,000 jobs in batches of 1000 (one round trip each).
    let mut ids = Vec::with_capacity(JOBS);
    for chunk in 0..JOBS / 1000 {
        let batch: Vec<NewJobSpec> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| NewJobSpec {
                payload: Bytes::from(i.to_string()),
                options: EnqueueOptions::new(),
            })
            .collect();
        ids.extend(
            clusterkit::blocking::block_on(q.enqueue_many(QUEUE, &batch))
                .unwrap()
                .unwrap(),
        );
    }
    println!("enqueued {} jobs in {:?}", ids.len(), t0.elapsed());
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), JOBS);

    let client = redis::Client::open(records.url()).unwrap();
    let mut db = client.get_connection().unwrap();
    let qa = server.addr();
    let ra = records.addr();
    let mut workers = Workers((0..WORKERS).map(|_| spawn_worker(&qa, &ra)).collect());
    let mut kills = 0u32;
    let mut restarted = false;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let finished = loop {
        assert!(t0.elapsed() < DEADLINE, "not finished within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(200 + next() % 300));
        let done = hlen(&mut db);
        if done >= JOBS {
            break done;
        }
        let stats = clusterkit::blocking::block_on(q.stats(QUEUE)).unwrap();
        if let Ok(s) = &stats {
            if s.waiting + s.in_flight + s.delayed == 0 && done + s.dead as usize >= JOBS {
                break done;
            }
        }
        // Kill a random worker mid-job and start a new one (at most 40 kills).
        if kills < 40 && done < JOBS * 9 / 10 {
            let i = (next() % WORKERS as u64) as usize;
            kill(&mut workers.0[i]);
            workers.0[i] = spawn_worker(&qa, &ra);
            kills += 1;
        }
        // Restart the queue's server once, at about 40 %.
        if !restarted && done >= JOBS * 2 / 5 {
            println!("SIGKILL + restart of the queue's redis-server at {done} jobs done");
            server.restart();
            restarted = true;
        }
    };
    drop(workers);
    assert!(restarted, "the server restart happened");
    let stats = clusterkit::blocking::block_on(q.stats(QUEUE))
        .unwrap()
        .unwrap();
    let runs: Vec<(String, u64)> = redis::cmd("HGETALL").arg("runs").query(&mut db).unwrap();
    let completed: HashSet<usize> = runs.iter().map(|(n, _)| n.parse().unwrap()).collect();
    let executions: u64 = runs.iter().map(|(_, c)| *c).sum();
    let duplicates = executions - runs.len() as u64;
    let dead = clusterkit::blocking::block_on(q.dead_jobs(QUEUE, 10_000))
        .unwrap()
        .unwrap();
    let dead_nums: HashSet<usize> = dead
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).parse().unwrap())
        .collect();
    let lost: Vec<usize> = (0..JOBS)
        .filter(|i| !completed.contains(i) && !dead_nums.contains(i))
        .collect();
    println!(
        "queue faults: {JOBS} jobs, {WORKERS} worker processes, {kills} SIGKILLs, 1 redis restart \
         (AOF appendfsync always): completed {}, dead-lettered {}, lost {}, duplicate executions \
         {duplicates} ({:.3}%), final stats {stats:?}, {:?}",
        completed.len(),
        dead_nums.len(),
        lost.len(),
        duplicates as f64 * 100.0 / JOBS as f64,
        t0.elapsed()
    );
    assert!(
        lost.is_empty(),
        "lost jobs: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(finished + dead_nums.len() >= JOBS);
    assert!(kills > 0);
    let _ = std::fs::remove_dir_all(&dir);
    println!("test result: ok. 1 passed; 0 failed");
}
