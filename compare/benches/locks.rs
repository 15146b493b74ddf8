//! clusterkit's locks side by side with rslock (the Rust Redlock crate), in one run on the same
//! private redis-servers (issue #5).
//!
//! One client task on a current-thread tokio runtime does acquire + release of one name in a
//! loop, uncontended: on one Redis and on Redlock over 3 masters, for clusterkit
//! (`DistributedLock::try_acquire` + `LockGuard::release`, which also assign a fencing token and
//! publish a release notification) and rslock (`LockManager::lock` + `unlock`: SET NX PX and a
//! compare-and-delete script, no fencing token, no notification). Issue #18 adds clusterkit's
//! Redlock with `fencing = false` (one fan-out round trip, no token) and the physical floor:
//! two bare PING round trips (blocking sockets, no client library) to one server and to the
//! three at once, in place of acquire and release. Rounds alternate between the
//! contenders so that drift of the machine hits both alike; figures are medians over rounds,
//! latencies are pooled over rounds.
//!
//!     cd compare && CARGO_TARGET_DIR=$HOME/.cache/clusterkit/compare-target cargo bench --bench locks
//!
//! Environment: `LOCK_BENCH_SECS` (seconds per figure, default 1.0), `LOCK_BENCH_ROUNDS`
//! (default 5), `LOCK_BENCH_PIN=1` (this process on CPU 0, the redis-servers on CPU 1).
//! redis-servers listen on 127.0.0.1 only and are killed when their handle drops (also on
//! panic) and, through `PR_SET_PDEATHSIG`, if this process dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clusterkit::lock::{DistributedLock, LockOptions};
use rslock::LockManager;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs() -> Duration {
    Duration::from_secs_f64(env_f64("LOCK_BENCH_SECS", 1.0))
}

fn rounds() -> usize {
    env_f64("LOCK_BENCH_ROUNDS", 5.0) as usize
}

/// `LOCK_BENCH_ONLY=i,j`: run only these cases (indices into the case list) and print how
/// many acquire + release pairs each ran instead of the table: with two runs of different
/// lengths under `valgrind --tool=callgrind`, the difference of the instruction totals over
/// the difference of the pairs is the client's instructions per pair (issue #18).
fn only() -> Option<Vec<usize>> {
    let v = std::env::var("LOCK_BENCH_ONLY").ok()?;
    Some(v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
}

fn pinned() -> bool {
    std::env::var("LOCK_BENCH_PIN").is_ok_and(|v| v == "1")
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

fn dfmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn q(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

// ---------------------------------------------------------------------------------------------
// Private redis-servers (as in core/benches/lock.rs).

struct RedisServer {
    child: Child,
    port: u16,
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    fn start() -> RedisServer {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = Command::new("/usr/bin/redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let pin = pinned();
            // SAFETY: prctl and sched_setaffinity are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if pin {
                        pin_to(1);
                    }
                    Ok(())
                });
            }
            let server = RedisServer {
                child: cmd.spawn().expect("spawn /usr/bin/redis-server"),
                port,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if ping(port) {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start redis-server");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------

enum Contender {
    Clusterkit(DistributedLock),
    Rslock(LockManager),
    /// The physical floor (issue #18): two bare round trips (PING, blocking sockets, no
    /// client library) to every server at once, in place of acquire and release.
    Floor(Vec<TcpStream>),
}

/// One bare round trip to every server at once: PING written to all, then every +PONG read.
fn ping_all(conns: &mut [TcpStream]) {
    for c in conns.iter_mut() {
        c.write_all(b"PING\r\n").unwrap();
    }
    for c in conns.iter_mut() {
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
}

const TTL: Duration = Duration::from_secs(10);

/// clusterkit's lock options: the defaults, with `LOCK_BENCH_RESPONSE_MS` as the per-master
/// response timeout if set (under valgrind the default 100 ms is too short).
fn ck_options() -> LockOptions {
    let o = LockOptions::default();
    match std::env::var("LOCK_BENCH_RESPONSE_MS").ok().and_then(|v| v.parse().ok()) {
        Some(ms) => {
            let r = o
                .redis
                .clone()
                .with_timeouts(Duration::from_secs(5), Duration::from_millis(ms));
            o.with_redis(r)
        }
        None => o,
    }
}

impl Contender {
    /// One acquire + release; returns the acquire and release latencies.
    async fn pair(&mut self, name: &str) -> (Duration, Duration) {
        let t0 = Instant::now();
        match self {
            Contender::Floor(conns) => {
                ping_all(conns);
                let t1 = Instant::now();
                ping_all(conns);
                (t1 - t0, t1.elapsed())
            }
            Contender::Clusterkit(l) => {
                let g = l.try_acquire(name, TTL).await.unwrap().expect("free");
                let t1 = Instant::now();
                g.release().await.unwrap();
                (t1 - t0, t1.elapsed())
            }
            Contender::Rslock(m) => {
                let lock = m.lock(name, TTL).await.expect("free");
                let t1 = Instant::now();
                m.unlock(&lock).await;
                (t1 - t0, t1.elapsed())
            }
        }
    }
}

struct Figures {
    rates: Vec<f64>,
    acquire: Vec<Duration>,
    release: Vec<Duration>,
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!(
        "## locks vs rslock: {} cpus ({cpu}), load {}, {} s per figure, {} rounds, pinned: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        loadavg(),
        secs().as_secs_f64(),
        rounds(),
        pinned()
    );
    // After the header: available_parallelism() counts the CPUs this process may use.
    if pinned() {
        pin_to(0);
    }
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let addrs: Vec<String> = servers.iter().map(RedisServer::address).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}/")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let floor = |n: usize| {
            Contender::Floor(
                servers[..n]
                    .iter()
                    .map(|s| {
                        let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
                        c.set_nodelay(true).unwrap();
                        c
                    })
                    .collect(),
            )
        };
        // (setup, library, contender, index of its peer (rslock), index of the same library
        // on one Redis)
        let mut cases: Vec<(&str, &str, Contender, usize, usize)> = vec![
            (
                "one Redis",
                "clusterkit",
                Contender::Clusterkit(
                    DistributedLock::redis(refs[0], ck_options()).unwrap(),
                ),
                1,
                0,
            ),
            (
                "one Redis",
                "rslock 0.10.0",
                Contender::Rslock(LockManager::new(vec![urls[0].clone()])),
                1,
                1,
            ),
            ("one Redis", "floor: 2 bare PING round trips", floor(1), 1, 2),
            (
                "Redlock, 3 masters",
                "clusterkit",
                Contender::Clusterkit(DistributedLock::redlock(&refs, ck_options()).unwrap()),
                5,
                0,
            ),
            (
                "Redlock, 3 masters",
                "clusterkit, fencing = false",
                Contender::Clusterkit(
                    DistributedLock::redlock(&refs, ck_options().with_fencing(false))
                        .unwrap(),
                ),
                5,
                0,
            ),
            (
                "Redlock, 3 masters",
                "rslock 0.10.0",
                Contender::Rslock(LockManager::new(urls.clone())),
                5,
                1,
            ),
            ("Redlock, 3 masters", "floor: 2 bare PING fan-outs", floor(3), 5, 2),
        ];
        let mut figs: Vec<Figures> = cases
            .iter()
            .map(|_| Figures {
                rates: Vec::new(),
                acquire: Vec::new(),
                release: Vec::new(),
            })
            .collect();
        let only = only();
        let mut pairs = vec![0u64; cases.len()];
        for (i, (_, _, c, _, _)) in cases.iter_mut().enumerate() {
            if !only.as_ref().is_none_or(|o| o.contains(&i)) {
                continue;
            }
            let name = format!("cmp:warm:{i}");
            for _ in 0..200 {
                c.pair(&name).await;
                pairs[i] += 1;
            }
        }
        for _ in 0..rounds() {
            for (i, (_, _, c, _, _)) in cases.iter_mut().enumerate() {
                if !only.as_ref().is_none_or(|o| o.contains(&i)) {
                    continue;
                }
                let name = format!("cmp:uncontended:{i}");
                let warm_until = Instant::now() + Duration::from_millis(200);
                while Instant::now() < warm_until {
                    c.pair(&name).await;
                    pairs[i] += 1;
                }
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < secs() {
                    let (a, r) = c.pair(&name).await;
                    figs[i].acquire.push(a);
                    figs[i].release.push(r);
                    n += 1;
                }
                pairs[i] += n;
                figs[i].rates.push(n as f64 / start.elapsed().as_secs_f64());
            }
        }
        if let Some(only) = only {
            // Instruction counting (callgrind, see the module docs): pairs run per case.
            for i in only {
                println!("pairs case {i} ({} / {}): {}", cases[i].0, cases[i].1, pairs[i]);
            }
            return;
        }
        println!("\n| setup | library | acquire+release /s (median, spread) | vs rslock | acquire p50 | acquire p99 | release p50 | release p99 | acquire p50 vs same library (floor: floor) on one Redis |");
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let p50s: Vec<Duration> = figs
            .iter_mut()
            .map(|f| {
                f.acquire.sort();
                f.release.sort();
                q(&f.acquire, 0.5)
            })
            .collect();
        for (i, (setup, lib, _, peer, single)) in cases.iter().enumerate() {
            let f = &figs[i];
            let vs = median(&f.rates) / median(&figs[*peer].rates);
            let single = p50s[*single];
            println!(
                "| {setup} | {lib} | {:.0} ({}) | {:.2}x | {} | {} | {} | {} | {:.2}x |",
                median(&f.rates),
                spread(&f.rates),
                vs,
                dfmt(q(&f.acquire, 0.5)),
                dfmt(q(&f.acquire, 0.99)),
                dfmt(q(&f.release, 0.5)),
                dfmt(q(&f.release, 0.99)),
                p50s[i].as_secs_f64() / single.as_secs_f64()
            );
        }
    });
    println!("\n(load at the end {})", loadavg());
}
