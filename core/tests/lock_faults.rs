//! Locks under faults, with contenders in separate OS processes (issue #12).
//!
//! Each scenario starts three fresh Redis masters, then 8 contender processes (this test
//! binary re-executed with `CKF_ROLE=contender`) that loop on one name — acquire (TTL 500 ms,
//! wait 1 s), hold 2 ms, release — and one lone process that takes a second name every
//! 100 ms. Meanwhile the parent injects faults into the masters:
//!
//! - (a) none;
//! - (b) one master repeatedly SIGSTOPped (800 ms stopped, 400 ms running);
//! - (c) one master at a time SIGKILLed and restarted empty after the documented delay
//!   (one lock TTL; here 600 ms);
//! - (d) one master at a time SIGKILLed and restarted empty at once.
//!
//! Every process records, with the system-wide monotonic clock, when each acquisition
//! returned, when its release started and its fencing token. The parent then asserts:
//! no two holders overlap in (a)–(c) (no holder is ever paused); no gap between successive
//! acquisitions longer than 2 × the per-master timeout + the hold time (a majority is always
//! up); the contenders' tokens strictly increase in acquisition order in (a)–(c) and are never
//! handed out twice in any scenario; the lone process's tokens strictly increase in every
//! scenario (the module docs promise (d) too). Per-contender counts are printed (fairness,
//! see BENCHMARKS.md) and bounded.
//!
//! A fifth run, 8 contender processes on one Redis, checks fairness and prints throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};

mod support;
use support::RedisServer;

const CONTENDERS: usize = 8;
const TTL: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(1);
const HOLD: Duration = Duration::from_millis(2);
const LONE_PERIOD: Duration = Duration::from_millis(100);
/// The per-master timeout of `LockOptions::default()`.
const MASTER_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest a child may take beyond its run time before the test fails (it is killed).
const CHILD_GRACE: Duration = Duration::from_secs(10);

/// Microseconds of the system-wide monotonic clock (comparable across processes).
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// One line a child writes per attempt.
#[derive(Debug, Clone, PartialEq)]
enum Record {
    /// Acquired at `acq` (µs), release started at `rel`, with fencing token `fence`.
    Held { acq: u64, rel: u64, fence: u64 },
    /// Failed at `at` with an error of `kind`; `message` is the error text.
    Failed {
        at: u64,
        kind: String,
        message: String,
    },
}

impl Record {
    fn line(&self) -> String {
        match self {
            Record::Held { acq, rel, fence } => format!("held {acq} {rel} {fence}"),
            Record::Failed { at, kind, message } => {
                format!("failed {at} {kind} {}", message.replace('\n', " "))
            }
        }
    }
    fn parse(line: &str) -> Option<Record> {
        let mut it = line.splitn(4, ' ');
        match it.next()? {
            "held" => Some(Record::Held {
                acq: it.next()?.parse().ok()?,
                rel: it.next()?.parse().ok()?,
                fence: it.next()?.parse().ok()?,
            }),
            "failed" => Some(Record::Failed {
                at: it.next()?.parse().ok()?,
                kind: it.next()?.to_string(),
                message: it.next().unwrap_or("").to_string(),
            }),
            _ => None,
        }
    }
}

/// The child process's entry point (this binary re-executed with `CKF_ROLE` set). Run by the
/// harness without `CKF_ROLE`, it checks the record format the parent relies on.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("CKF_ROLE") else {
        for r in [
            Record::Held {
                acq: 1,
                rel: 2,
                fence: 1_764_621_234_567_890,
            },
            Record::Failed {
                at: 3,
                kind: "timeout".into(),
                message: "lock \"x\" is held".into(),
            },
        ] {
            assert_eq!(Record::parse(&r.line()), Some(r.clone()));
        }
        assert_eq!(Record::parse("bogus 1 2"), None);
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let masters: Vec<String> = env("CKF_MASTERS").split(',').map(String::from).collect();
    let name = env("CKF_NAME");
    let run_for = Duration::from_millis(env("CKF_RUN_MS").parse().unwrap());
    let out = PathBuf::from(env("CKF_OUT"));
    let refs: Vec<&str> = masters.iter().map(|s| s.as_str()).collect();
    let locks = DistributedLock::redlock(&refs, LockOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = rt.block_on(async {
        let mut records = Vec::new();
        let end = Instant::now() + run_for;
        while Instant::now() < end {
            match locks.acquire_timeout(&name, TTL, WAIT).await {
                Ok(g) => {
                    let acq = mono_us();
                    tokio::time::sleep(HOLD).await;
                    let rel = mono_us();
                    let fence = g.fencing_token();
                    let _ = g.release().await;
                    records.push(Record::Held { acq, rel, fence });
                }
                Err(e) => {
                    records.push(Record::Failed {
                        at: mono_us(),
                        kind: e.kind().to_string(),
                        message: e.to_string(),
                    });
                    // A failure that returned at once (e.g. refused connections): do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            if role == "lone" {
                tokio::time::sleep(LONE_PERIOD).await;
            }
        }
        records
    });
    let mut f = std::fs::File::create(&out).unwrap();
    for r in &records {
        writeln!(f, "{}", r.line()).unwrap();
    }
    f.sync_all().unwrap();
}

struct Proc {
    child: Child,
    out: PathBuf,
    label: String,
}

fn spawn_child(
    role: &str,
    label: &str,
    masters: &[String],
    name: &str,
    run_for: Duration,
    dir: &Path,
) -> Proc {
    let out = dir.join(format!("{label}.txt"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("CKF_ROLE", role)
        .env("CKF_MASTERS", masters.join(","))
        .env("CKF_NAME", name)
        .env("CKF_RUN_MS", run_for.as_millis().to_string())
        .env("CKF_OUT", &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc {
        child,
        out,
        label: label.to_string(),
    }
}

/// Waits for every child until `deadline`; kills the rest and fails if one is late or failed.
fn collect(procs: Vec<Proc>, deadline: Instant) -> Vec<(String, Vec<Record>)> {
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for mut p in procs {
        let status = loop {
            match p.child.try_wait().unwrap() {
                Some(s) => break Some(s),
                None if Instant::now() >= deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        match status {
            Some(s) if s.success() => {
                let text = std::fs::read_to_string(&p.out).unwrap();
                let recs: Vec<Record> = text
                    .lines()
                    .map(|l| Record::parse(l).unwrap_or_else(|| panic!("bad line {l:?}")))
                    .collect();
                results.push((p.label, recs));
            }
            Some(s) => problems.push(format!("{} exited with {s}", p.label)),
            None => problems.push(format!("{} did not finish in time (killed)", p.label)),
        }
    }
    assert!(problems.is_empty(), "{problems:?}");
    results
}

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ck-lock-faults-{what}-{}-{}",
        std::process::id(),
        mono_us()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    Stop,
    KillDelayed,
    KillImmediate,
}

/// What one scenario measured.
struct Outcome {
    counts: Vec<usize>,
    failures: usize,
    overlaps: usize,
    max_gap: Duration,
    acquisitions: usize,
    run_for: Duration,
}

/// The scenarios run one at a time (the machine may have two cores).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_scenario(label: &str, n_masters: usize, fault: Fault, run_for: Duration) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut masters: Vec<RedisServer> = (0..n_masters).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = masters.iter().map(|m| m.addr()).collect();
    let dir = temp_dir(label);
    let mut procs: Vec<Proc> = (0..CONTENDERS)
        .map(|i| {
            spawn_child(
                "contender",
                &format!("c{i}"),
                &addrs,
                "shared",
                run_for,
                &dir,
            )
        })
        .collect();
    procs.push(spawn_child("lone", "lone", &addrs, "probe", run_for, &dir));
    let started = Instant::now();
    // Faults (the children need ~100 ms to start; faults begin after 1 s).
    std::thread::sleep(Duration::from_secs(1));
    let mut victim = 0;
    while started.elapsed() + Duration::from_millis(1500) < run_for {
        match fault {
            Fault::None => std::thread::sleep(Duration::from_millis(200)),
            Fault::Stop => {
                masters[1].pause();
                std::thread::sleep(Duration::from_millis(800));
                masters[1].resume();
                std::thread::sleep(Duration::from_millis(400));
            }
            Fault::KillDelayed => {
                masters[victim].kill();
                std::thread::sleep(TTL + Duration::from_millis(100));
                masters[victim].restart();
                std::thread::sleep(Duration::from_millis(700));
                victim = (victim + 1) % n_masters;
            }
            Fault::KillImmediate => {
                masters[victim].restart();
                std::thread::sleep(Duration::from_millis(600));
                victim = (victim + 1) % n_masters;
            }
        }
    }
    let results = collect(procs, started + run_for + CHILD_GRACE);
    let _ = std::fs::remove_dir_all(&dir);
    drop(masters);

    let mut held: Vec<(u64, u64, u64, usize)> = Vec::new();
    let mut counts = Vec::new();
    let mut failures = 0;
    let mut failure_kinds: HashMap<String, usize> = HashMap::new();
    let mut lone_tokens = Vec::new();
    for (who, recs) in &results {
        if who == "lone" {
            for r in recs {
                if let Record::Held { fence, .. } = r {
                    lone_tokens.push(*fence);
                }
            }
            continue;
        }
        let idx = counts.len();
        let mut n = 0;
        for r in recs {
            match r {
                Record::Held { acq, rel, fence } => {
                    held.push((*acq, *rel, *fence, idx));
                    n += 1;
                }
                Record::Failed { kind, message, .. } => {
                    failures += 1;
                    let reason: String = message.chars().take(90).collect();
                    *failure_kinds
                        .entry(format!("{kind}: {reason}"))
                        .or_default() += 1;
                }
            }
        }
        counts.push(n);
    }
    held.sort();
    // Overlaps, gaps, token order.
    let mut overlaps = 0;
    let mut max_gap = 0u64;
    let mut worst_gap_at = 0u64;
    let mut backwards = Vec::new();
    let mut end_so_far = 0u64;
    let mut last_fence = 0u64;
    for (i, &(acq, rel, fence, _)) in held.iter().enumerate() {
        if i > 0 {
            if acq < end_so_far {
                overlaps += 1;
            } else if acq - end_so_far > max_gap {
                max_gap = acq - end_so_far;
                worst_gap_at = acq;
            }
            if fence <= last_fence {
                backwards.push((last_fence, fence));
            }
        }
        end_so_far = end_so_far.max(rel);
        last_fence = last_fence.max(fence);
    }
    let mut all_tokens: Vec<u64> = held.iter().map(|h| h.2).collect();
    all_tokens.extend(&lone_tokens);
    let total = all_tokens.len();
    all_tokens.sort_unstable();
    all_tokens.dedup();
    let duplicates = total - all_tokens.len();
    let lone_backwards = lone_tokens.windows(2).filter(|w| w[1] <= w[0]).count();
    let max_gap = Duration::from_micros(max_gap);
    let first = held.first().map_or(0, |h| h.0);
    println!(
        "[{label}] acquisitions {} ({:.0}/s), per contender min {} max {} {:?}, failures {failures} {failure_kinds:?}, \
         overlaps {overlaps}, max gap {max_gap:?} (at +{} ms), tokens backwards {}, duplicates {duplicates}, \
         lone {} tokens ({} backwards)",
        held.len(),
        held.len() as f64 / run_for.as_secs_f64(),
        counts.iter().min().unwrap(),
        counts.iter().max().unwrap(),
        counts,
        worst_gap_at.saturating_sub(first) / 1000,
        backwards.len(),
        lone_tokens.len(),
        lone_backwards,
    );

    // Fencing: never a token twice; the lone process's strictly increase (all scenarios).
    assert_eq!(
        duplicates, 0,
        "[{label}] a fencing token was handed out twice"
    );
    assert!(
        lone_tokens.len() >= 10,
        "[{label}] the lone process took its lock {} times",
        lone_tokens.len()
    );
    assert_eq!(
        lone_backwards, 0,
        "[{label}] lone tokens did not increase: {lone_tokens:?}"
    );
    if fault != Fault::KillImmediate {
        // Mutual exclusion (no holder is paused) and token order among the contenders.
        assert_eq!(overlaps, 0, "[{label}] two holders overlapped");
        assert!(
            backwards.is_empty(),
            "[{label}] tokens went backwards: {:?}",
            &backwards[..backwards.len().min(5)]
        );
    }
    // Liveness: a majority is always up.
    let bound = MASTER_TIMEOUT * 2 + HOLD;
    assert!(
        max_gap <= bound,
        "[{label}] no acquisition for {max_gap:?} (bound {bound:?})"
    );
    assert!(
        held.len() >= 200,
        "[{label}] only {} acquisitions",
        held.len()
    );
    if fault == Fault::None {
        // Fairness without faults (issue #12's target): max/min per contender <= 2.
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(
            max <= 2 * min,
            "[{label}] unfair: per-contender acquisitions {counts:?}"
        );
    }
    Outcome {
        counts,
        failures,
        overlaps,
        max_gap,
        acquisitions: held.len(),
        run_for,
    }
}

#[test]
fn redlock_three_masters_multi_process_faults() {
    let run_for = Duration::from_secs(9);
    // For BENCHMARKS.md: `CKF_SCENARIOS=a` runs only the fault-free one (default: all).
    let only = std::env::var("CKF_SCENARIOS").unwrap_or_else(|_| "abcd".into());
    let mut report = Vec::new();
    for (label, fault) in [
        ("a-no-fault", Fault::None),
        ("b-sigstop", Fault::Stop),
        ("c-kill-restart-after-ttl", Fault::KillDelayed),
        ("d-kill-restart-at-once", Fault::KillImmediate),
    ] {
        if !only.contains(&label[..1]) {
            continue;
        }
        let o = run_scenario(label, 3, fault, run_for);
        report.push((label, o));
    }
    let (_, a) = &report[0];
    let (min, max) = (
        *a.counts.iter().min().unwrap(),
        *a.counts.iter().max().unwrap(),
    );
    println!(
        "fairness redlock-3: min {min} max {max} ratio {:.2}, {:.0} acquisitions/s",
        max as f64 / min.max(1) as f64,
        a.acquisitions as f64 / a.run_for.as_secs_f64()
    );
    for (label, o) in &report {
        println!(
            "{label}: failures {} overlaps {} max gap {:?}",
            o.failures, o.overlaps, o.max_gap
        );
    }
}

#[test]
fn one_redis_multi_process_fairness() {
    let o = run_scenario("one-redis", 1, Fault::None, Duration::from_secs(5));
    let (min, max) = (
        *o.counts.iter().min().unwrap(),
        *o.counts.iter().max().unwrap(),
    );
    println!(
        "fairness one-redis: min {min} max {max} ratio {:.2}, {:.0} acquisitions/s",
        max as f64 / min.max(1) as f64,
        o.acquisitions as f64 / o.run_for.as_secs_f64()
    );
}

/// Rule (i) of the module docs on its own, without the clock floor's help: counters far above
/// any clock, and one master at a time restarted empty at once. Every acquisition writes its
/// token to every master, so the counter survives each restart on the other two and tokens
/// keep increasing (before, the token was stored on a majority only, and two restarts in turn
/// could leave a quorum that had never seen it: the token fell back to the clock).
#[test]
fn fence_counters_survive_one_empty_restart_at_a_time() {
    let mut s: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    // Far above the clock floor (µs since 1970 are ~1.8e15): only counters can exceed it.
    const HIGH: u64 = 5_000_000_000_000_000;
    for m in &s {
        assert_eq!(
            m.cmd(&["SET", "clusterkit:f:{res}", &HIGH.to_string()]),
            "+OK"
        );
    }
    // Multi-threaded: the store to the third master runs as a background task, which a
    // current-thread runtime would not run once `block_on` returned.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut last = HIGH;
    for round in 0..6 {
        let victim = round % 3;
        s[victim].restart();
        // A new service each time: nothing remembered in the client either.
        let locks = DistributedLock::redlock(
            &s.iter()
                .map(|m| m.addr())
                .collect::<Vec<_>>()
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>(),
            LockOptions::default(),
        )
        .unwrap();
        let token = rt.block_on(async {
            let g = locks
                .acquire_timeout("res", Duration::from_secs(1), Duration::from_secs(5))
                .await
                .unwrap();
            let t = g.fencing_token();
            g.release().await.unwrap();
            t
        });
        assert!(token > last, "round {round}: token {token} after {last}");
        last = token;
        // The token reached every master (the third one in the background).
        for (i, m) in s.iter().enumerate() {
            support::eventually(
                &format!("master {i} stores token {token}"),
                Duration::from_secs(2),
                || {
                    support::bulk_reply(
                        m.port(),
                        &["GET", "clusterkit:f:{res}"],
                        Duration::from_secs(1),
                    ) == Some(token.to_string())
                },
            );
        }
    }
}
