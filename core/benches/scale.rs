//! The scale curve (issue #18): how each cost grows with the cluster, N = 10 .. 10 000 nodes.
//!
//! Run with `scripts/bench-scale` (or `cargo bench -p clusterkit --bench scale -- [sections]`
//! with `SCALE_OUT=<dir>`). Sections, in this order: `pick`, `rebuild`, `health`, `registry`,
//! `redlock`, `sharded`. Every loop is bounded in count and time; every redis-server is a
//! private one on 127.0.0.1, killed when the bench ends (also on panic); the health-check
//! targets are loopback listeners in a child process of this binary.
//!
//! Writes `scale.json`, `scale.md` (Markdown tables) and one SVG plot per section (log-log:
//! cost per operation against N) to `SCALE_OUT` (default `docs/bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clusterkit::cache::{Cache, DistributedOptions};
use clusterkit::discovery::{RedisRegistry, RegistryOptions};
use clusterkit::lock::{DistributedLock, LockOptions};
use clusterkit::{BalancerOptions, Cluster, Node, Strategy};
use clusterkit::{CheckKind, CheckOptions, HealthOptions};

use common::{loadavg, median, RedisServer};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// A section: appends its Markdown tables and its plots.
type Section = fn(&mut String, &mut Vec<Plot>);

/// One measured series: a name, its documented complexity, and (N, value) points.
struct Series {
    name: String,
    complexity: &'static str,
    points: Vec<(f64, f64)>,
}

struct Plot {
    file: &'static str,
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<Series>,
}

fn out_dir() -> std::path::PathBuf {
    let d = std::env::var("SCALE_OUT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench").to_string());
    let p = std::path::PathBuf::from(d);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn nodes(n: usize, weighted: bool) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let node = Node::new(
                format!("node-{i}"),
                "127.0.0.1",
                10_000 + (i % 50_000) as u16,
            )
            .unwrap();
            if weighted {
                node.with_weight(1 + (i % 4) as u32).unwrap()
            } else {
                node
            }
        })
        .collect()
}

/// Median over 5 rounds of the mean time of `f` (ns), each round bounded to ~`budget`/5 and
/// at most `max_iters` calls.
fn time_ns(budget: Duration, max_iters: u64, mut f: impl FnMut(u64)) -> f64 {
    // Calibrate: how many calls fit a round.
    let t = Instant::now();
    let mut calib = 0u64;
    while t.elapsed() < Duration::from_millis(5) && calib < max_iters {
        f(calib);
        calib += 1;
    }
    let per = t.elapsed().as_secs_f64() / calib.max(1) as f64;
    let round = budget.as_secs_f64() / 5.0;
    let iters = ((round / per) as u64).clamp(1, max_iters);
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..iters {
            f(i);
        }
        v.push(t.elapsed().as_secs_f64() * 1e9 / iters as f64);
    }
    median(&v)
}

fn complexity_of(s: Strategy) -> &'static str {
    match s {
        Strategy::LeastConnections | Strategy::Rendezvous => "O(N)",
        Strategy::Ketama => "O(log N)",
        _ => "O(1)",
    }
}

// ---------------------------------------------------------------------------------------------
// Picks.

fn section_pick(md: &mut String, plots: &mut Vec<Plot>) {
    let keys: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| format!("user:{:08x}:session", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect();
    let mut series: Vec<Series> = Vec::new();
    let mut lookup: Vec<Series> = Vec::new();
    for s in Strategy::ALL {
        let weighted = matches!(s, Strategy::WeightedRoundRobin | Strategy::Random);
        let mut pts = Vec::new();
        let mut lpts = Vec::new();
        for n in SIZES {
            let c =
                Cluster::with_nodes("scale", BalancerOptions::new(s), nodes(n, weighted)).unwrap();
            let lb = c.balancer();
            let ns = time_ns(Duration::from_millis(250), 5_000_000, |i| {
                let k = &keys[(i & 4095) as usize];
                black_box(lb.pick_for(k).unwrap().port());
            });
            pts.push((n as f64, ns));
            if s.is_hashing() {
                let ns = time_ns(Duration::from_millis(250), 5_000_000, |i| {
                    let k = &keys[(i & 4095) as usize];
                    black_box(lb.owner_with(k, |node| node.port()).unwrap());
                });
                lpts.push((n as f64, ns));
            }
        }
        let label = if weighted {
            format!("{s} (weights 1..4)")
        } else {
            s.to_string()
        };
        if s.is_hashing() {
            lookup.push(Series {
                name: format!("{s} owner_with (lookup only)"),
                complexity: complexity_of(s),
                points: lpts,
            });
        }
        series.push(Series {
            name: format!("{label} pick_for"),
            complexity: complexity_of(s),
            points: pts,
        });
    }
    series.extend(lookup);
    table(
        md,
        "Pick cost (ns per pick, one thread, guard dropped)",
        "ns",
        &series,
    );
    plots.push(Plot {
        file: "scale-pick.svg",
        title: "Pick cost vs pool size".into(),
        x_label: "nodes N",
        y_label: "ns per pick",
        series,
    });
}

// ---------------------------------------------------------------------------------------------
// Table rebuild per membership change, and table memory.

fn section_rebuild(md: &mut String, plots: &mut Vec<Plot>) {
    let mut cost = Vec::new();
    let mut mem = Vec::new();
    for s in Strategy::ALL {
        let weighted = matches!(s, Strategy::WeightedRoundRobin | Strategy::Random);
        let mut pts = Vec::new();
        let mut mpts = Vec::new();
        for n in SIZES {
            let c =
                Cluster::with_nodes("scale", BalancerOptions::new(s), nodes(n, weighted)).unwrap();
            // One change = a node leaves or joins (a full snapshot + table build). The node
            // that leaves comes back, so N stays within every strategy's limit (Maglev: 10 000).
            let node0 = nodes(1, weighted).remove(0);
            let mut v = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(3);
            for _ in 0..30 {
                let t = Instant::now();
                c.remove("node-0").unwrap();
                v.push(t.elapsed().as_secs_f64() * 1e6);
                let t = Instant::now();
                c.add(node0.clone()).unwrap();
                v.push(t.elapsed().as_secs_f64() * 1e6);
                if Instant::now() > deadline && v.len() >= 6 {
                    break;
                }
            }
            pts.push((n as f64, median(&v)));
            mpts.push((n as f64, c.table_memory_bytes().max(1) as f64));
        }
        let label = if weighted {
            format!("{s} (weights 1..4)")
        } else {
            s.to_string()
        };
        let cx = match s {
            Strategy::Ketama => "O(N log N)",
            Strategy::Maglev => "O(M log M), M ≥ 100 N",
            _ => "O(N)",
        };
        cost.push(Series {
            name: label.clone(),
            complexity: cx,
            points: pts,
        });
        let mcx = match s {
            Strategy::RoundRobin | Strategy::LeastConnections | Strategy::PowerOfTwoChoices => {
                "0 (no table)"
            }
            Strategy::Maglev => "O(M), M = max(65537, 100 N)",
            _ => "O(N)",
        };
        mem.push(Series {
            name: label,
            complexity: mcx,
            points: mpts,
        });
    }
    table(
        md,
        "Rebuild cost per membership change (µs, median of node joins and leaves)",
        "µs",
        &cost,
    );
    table(md, "Table memory per pool (bytes)", "B", &mem);
    plots.push(Plot {
        file: "scale-rebuild.svg",
        title: "Rebuild cost per membership change".into(),
        x_label: "nodes N",
        y_label: "µs per change",
        series: cost,
    });
    plots.push(Plot {
        file: "scale-memory.svg",
        title: "Table memory per pool".into(),
        x_label: "nodes N",
        y_label: "bytes (1 = no table)",
        series: mem,
    });
}

// ---------------------------------------------------------------------------------------------
// Health-check supervision.

/// Child process: `RESPONDERS` loopback listeners answering every connection with an HTTP 200
/// (a TCP check just connects and closes). Prints the ports, runs until stdin closes.
fn responder_main(count: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut ports = Vec::new();
    for _ in 0..count {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
        let stop = stop.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Relaxed) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                if let Ok(n) = s.read(&mut buf) {
                    if n > 0 {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            }
        });
    }
    println!(
        "{}",
        ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_to_string(&mut sink);
    stop.store(true, Relaxed);
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
}

fn section_health(md: &mut String, plots: &mut Vec<Plot>) {
    const RESPONDERS: usize = 32;
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--responder", &RESPONDERS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), RESPONDERS);
    let interval = Duration::from_secs(1);
    let mut rate = Vec::new();
    let mut cpu = Vec::new();
    let mut rows = String::new();
    for (kind_name, kind) in [
        ("tcp", CheckKind::Tcp),
        (
            "http",
            CheckKind::Http {
                path: "/health".into(),
                expected: 200..=299,
            },
        ),
    ] {
        let mut rpts = Vec::new();
        let mut cpts = Vec::new();
        for n in SIZES {
            let ns: Vec<Node> = (0..n)
                .map(|i| {
                    Node::new(format!("node-{i}"), "127.0.0.1", ports[i % RESPONDERS]).unwrap()
                })
                .collect();
            let check = CheckOptions::new(kind.clone())
                .with_interval(interval)
                .with_timeout(Duration::from_secs(1));
            let c = Cluster::with_health(
                "scale-health",
                BalancerOptions::new(Strategy::RoundRobin),
                HealthOptions::default().with_check(check),
                ns,
            )
            .unwrap();
            // Warm up one interval (the first round of checks starts at once), then measure.
            std::thread::sleep(interval + Duration::from_millis(300));
            let (m0, c0, t0) = (c.health_metrics(), cpu_seconds(), Instant::now());
            std::thread::sleep(Duration::from_secs(3));
            let (m1, c1, t1) = (c.health_metrics(), cpu_seconds(), Instant::now());
            let checks = (m1.checks - m0.checks) as f64;
            let per_s = checks / (t1 - t0).as_secs_f64();
            let cpu_us = (c1 - c0) * 1e6 / checks.max(1.0);
            let failed = m1.check_failures - m0.check_failures;
            writeln!(
                rows,
                "| {kind_name} | {n} | {:.0} | {per_s:.0} | {:.0}% | {cpu_us:.1} | {failed} | {} |",
                n as f64 / interval.as_secs_f64(),
                100.0 * per_s * interval.as_secs_f64() / n as f64,
                c.healthy_count()
            )
            .unwrap();
            rpts.push((n as f64, per_s));
            cpts.push((n as f64, cpu_us));
            drop(c);
            // Let the supervisor of the dropped pool stop.
            std::thread::sleep(Duration::from_millis(200));
        }
        rate.push(Series {
            name: format!("{kind_name} checks/s sustained"),
            complexity: "O(N) checks/s (target N / interval)",
            points: rpts,
        });
        cpu.push(Series {
            name: format!("{kind_name} CPU µs per check"),
            complexity: "O(1) per check",
            points: cpts,
        });
    }
    drop(child.stdin.take());
    let _ = child.wait();
    md.push_str(&format!(
        "\n### Health-check supervision (interval {} s, {RESPONDERS} loopback responders in a child process; CPU = this process only)\n\n",
        interval.as_secs()
    ));
    md.push_str("| check | N | checks/s due | checks/s done | share | CPU µs per check | failed | healthy at end |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    md.push_str(&rows);
    md.push_str("\nComplexity: O(1) CPU per check, so O(N) CPU per interval.\n");
    let mut s = cpu;
    s.extend(rate);
    plots.push(Plot {
        file: "scale-health.svg",
        title: "Health-check supervision".into(),
        x_label: "nodes N",
        y_label: "CPU µs per check / checks per s",
        series: s,
    });
}

// ---------------------------------------------------------------------------------------------
// Registry listing and watch convergence.

fn section_registry(md: &mut String, plots: &mut Vec<Plot>) {
    let server = RedisServer::start(false);
    let addr = server.address();
    let mut list_ms = Vec::new();
    let mut conv_ms = Vec::new();
    let mut join_ms = Vec::new();
    let mut leave_ms = Vec::new();
    let mut rows = String::new();
    for n in SIZES {
        let service = format!("scale{n}");
        let reg = RedisRegistry::new(&addr, &service, RegistryOptions::default()).unwrap();
        // N registrations written directly in the registry's data model (docs/discovery.md):
        // one pipeline, as N heartbeating processes would leave them.
        let mut conn = server.conn();
        let mut pipe = redis::pipe();
        for i in 0..n {
            let id = format!("node-{i}");
            let json = format!(
                r#"{{"id":"{id}","host":"127.0.0.1","port":{},"weight":1}}"#,
                10_000 + i
            );
            pipe.cmd("SET")
                .arg(reg.node_key(&id))
                .arg(json)
                .arg("PX")
                .arg(600_000)
                .ignore();
            pipe.cmd("SADD").arg(reg.listing_key()).arg(&id).ignore();
        }
        pipe.exec(&mut conn).unwrap();
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let l = reg.list_blocking().unwrap();
            v.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(l.nodes.len(), n);
        }
        let list = median(&v);
        // Watch convergence: a new watcher until its pool holds the N nodes.
        // Round robin: the watcher's own cost, not a table's (a Maglev pool holds at most
        // 10 000 nodes, so the joiner below, the 10 001st, would be refused there; the
        // rebuild section has the per-strategy table costs).
        let pool = Cluster::new(&service, BalancerOptions::new(Strategy::RoundRobin)).unwrap();
        let mut events = pool.subscribe();
        let t = Instant::now();
        let _w = reg.watch(&pool).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(pool.len(), n, "watcher did not converge within 30 s");
        let conv = t.elapsed().as_secs_f64() * 1e3;
        // One node joins: until the watching pool of N has it.
        let t = Instant::now();
        let me = reg
            .register_blocking(Node::new("joiner", "127.0.0.1", 9_999).unwrap())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while pool.get("joiner").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        // Reported (NaN, "not seen"), not hidden: the table says so.
        let join = if pool.get("joiner").is_some() {
            t.elapsed().as_secs_f64() * 1e3
        } else {
            eprintln!("[scale] registry N = {n}: the join was not seen within 15 s");
            while let Ok(e) = events.try_recv() {
                if let clusterkit::ClusterEvent::DiscoveryProblem { message, .. } = e {
                    eprintln!("[scale]   discovery problem: {message}");
                }
            }
            f64::NAN
        };
        // One node leaves: until the watching pool no longer has it.
        let t = Instant::now();
        me.deregister_blocking().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while pool.get("joiner").is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        let leave = if pool.get("joiner").is_none() {
            t.elapsed().as_secs_f64() * 1e3
        } else {
            eprintln!("[scale] registry N = {n}: the leave was not seen within 15 s");
            f64::NAN
        };
        writeln!(
            rows,
            "| {n} | {list:.2} | {conv:.2} | {join:.2} | {leave:.2} |"
        )
        .unwrap();
        list_ms.push((n as f64, list));
        conv_ms.push((n as f64, conv));
        join_ms.push((n as f64, join));
        leave_ms.push((n as f64, leave));
    }
    md.push_str("\n### Redis registry with N registered nodes (one private redis-server)\n\n");
    md.push_str("| N | `list()` ms (median of 5) | new watcher converged, ms | one join seen by a watcher of N, ms | one leave seen, ms |\n| ---: | ---: | ---: | ---: | ---: |\n");
    md.push_str(&rows);
    md.push_str("\nComplexity: listing and a new watcher's first sync O(N); one join costs O(1) at the registry (the watcher reads the notified key with one MGET, issue #18) plus the O(N) rebuild of the pool's snapshot (round robin here; see the rebuild section for each strategy's table); a leave likewise.\n");
    plots.push(Plot {
        file: "scale-registry.svg",
        title: "Redis registry".into(),
        x_label: "registered nodes N",
        y_label: "ms",
        series: vec![
            Series {
                name: "list()".into(),
                complexity: "O(N)",
                points: list_ms,
            },
            Series {
                name: "new watcher converged".into(),
                complexity: "O(N)",
                points: conv_ms,
            },
            Series {
                name: "one join seen".into(),
                complexity: "O(1) at the registry + O(N) snapshot",
                points: join_ms,
            },
            Series {
                name: "one leave seen".into(),
                complexity: "O(1) at the registry + O(N) snapshot",
                points: leave_ms,
            },
        ],
    });
}

// ---------------------------------------------------------------------------------------------
// Redlock over 1, 3, 5, 7 masters.

fn section_redlock(md: &mut String, plots: &mut Vec<Plot>) {
    let servers: Vec<RedisServer> = (0..7).map(|_| RedisServer::start(false)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut p50 = Vec::new();
    let mut rows = String::new();
    for m in [1usize, 3, 5, 7] {
        let addrs: Vec<String> = servers[..m].iter().map(|s| s.address()).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let lock = DistributedLock::redlock(&refs, LockOptions::default()).unwrap();
        let mut lat: Vec<f64> = rt.block_on(async {
            for _ in 0..50 {
                let g = lock
                    .acquire("scale:warm", Duration::from_secs(5))
                    .await
                    .unwrap();
                g.release().await.unwrap();
            }
            let mut lat = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(2);
            while lat.len() < 5000 && Instant::now() < deadline {
                let t = Instant::now();
                let g = lock
                    .acquire("scale:lock", Duration::from_secs(5))
                    .await
                    .unwrap();
                g.release().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            lat
        });
        lat.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        writeln!(
            rows,
            "| {m} | {} | {:.0} | {:.0} | {:.0} |",
            lat.len(),
            q(0.5),
            q(0.99),
            q(0.5) / p50.first().map(|x: &(f64, f64)| x.1).unwrap_or(q(0.5))
        )
        .unwrap();
        p50.push((m as f64, q(0.5)));
    }
    md.push_str("\n### Redlock: acquire + release, one client, fencing on (default)\n\n");
    md.push_str("| masters | samples | p50 µs | p99 µs | p50 / one Redis |\n| ---: | ---: | ---: | ---: | ---: |\n");
    md.push_str(&rows);
    md.push_str("\nComplexity: the masters are asked in parallel: O(1) round trips, O(masters) messages and client CPU.\n");
    plots.push(Plot {
        file: "scale-redlock.svg",
        title: "Redlock acquire + release".into(),
        x_label: "masters",
        y_label: "µs (p50)",
        series: vec![Series {
            name: "acquire + release p50".into(),
            complexity: "O(1) round trips, O(masters) messages",
            points: p50,
        }],
    });
}

// ---------------------------------------------------------------------------------------------
// Sharded cache over 1, 3, 6 Redis nodes.

fn section_sharded(md: &mut String, plots: &mut Vec<Plot>) {
    let servers: Vec<RedisServer> = (0..6).map(|_| RedisServer::start(false)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const KEYS: usize = 10_000;
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("k:{i:06}").into_bytes())
            .collect(),
    );
    let mut tput = Vec::new();
    let mut rows = String::new();
    for shards in [1usize, 3, 6] {
        let ns = servers[..shards]
            .iter()
            .enumerate()
            .map(|(i, s)| Node::new(format!("shard-{i}"), "127.0.0.1", s.port).unwrap());
        let pool = Cluster::with_nodes(
            format!("scale-shards-{shards}"),
            BalancerOptions::new(Strategy::Ketama),
            ns,
        )
        .unwrap();
        let cache =
            Cache::distributed(pool, "sc", DistributedOptions::default().with_replicas(1)).unwrap();
        let value = Bytes::from(vec![b'v'; 100]);
        for callers in [16usize, 64] {
            let rate = rt.block_on(async {
                for k in keys.iter() {
                    cache.set(k, value.clone(), None).await.unwrap();
                }
                let stop = Arc::new(AtomicBool::new(false));
                let done = Arc::new(AtomicU64::new(0));
                let mut tasks = Vec::new();
                for t in 0..callers {
                    let (cache, keys, stop, done) =
                        (cache.clone(), keys.clone(), stop.clone(), done.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut i = t * 7919;
                        let mut n = 0u64;
                        while !stop.load(Relaxed) && n < 5_000_000 {
                            i = (i + 1) % KEYS;
                            let v = cache.get(&keys[i]).await.unwrap();
                            assert!(v.is_some());
                            done.fetch_add(1, Relaxed);
                            n += 1;
                        }
                    }));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (c0, t0) = (done.load(Relaxed), Instant::now());
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (c1, t1) = (done.load(Relaxed), Instant::now());
                stop.store(true, Relaxed);
                for t in tasks {
                    t.await.unwrap();
                }
                (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
            });
            writeln!(rows, "| {shards} | {callers} | {:.0} |", rate).unwrap();
            if callers == 64 {
                tput.push((shards as f64, rate));
            }
        }
    }
    md.push_str("\n### Sharded cache (ketama, 1 replica): gets/s with concurrent callers on a 2-worker runtime\n\n");
    md.push_str("| Redis nodes | concurrent callers | gets/s |\n| ---: | ---: | ---: |\n");
    md.push_str(&rows);
    md.push_str("\nComplexity: O(1) client work per get whatever the shard count (ketama lookup O(log points)); throughput here is bounded by the 2 vCPUs the client and every redis-server share.\n");
    plots.push(Plot {
        file: "scale-sharded.svg",
        title: "Sharded cache throughput".into(),
        x_label: "Redis nodes",
        y_label: "gets per s (64 callers)",
        series: vec![Series {
            name: "gets/s".into(),
            complexity: "O(1) per get",
            points: tput,
        }],
    });
}

// ---------------------------------------------------------------------------------------------
// Output: Markdown tables and SVG plots.

fn table(md: &mut String, title: &str, unit: &str, series: &[Series]) {
    let xs: Vec<f64> = series
        .first()
        .map(|s| s.points.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    md.push_str(&format!("\n### {title}\n\n| series | complexity |"));
    for x in &xs {
        md.push_str(&format!(" N = {x} |"));
    }
    md.push_str(" growth 10 → 10 000 |\n| --- | --- |");
    for _ in &xs {
        md.push_str(" ---: |");
    }
    md.push_str(" ---: |\n");
    for s in series {
        md.push_str(&format!("| {} | {} |", s.name, s.complexity));
        for p in &s.points {
            md.push_str(&format!(" {} {unit} |", fmt_num(p.1)));
        }
        let g = match (s.points.first(), s.points.last()) {
            (Some(a), Some(b)) if a.1 > 0.0 => format!("{:.1}x", b.1 / a.1),
            _ => String::new(),
        };
        md.push_str(&format!(" {g} |\n"));
    }
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

const COLORS: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939",
];

fn svg(plot: &Plot) -> String {
    let (w, h) = (860.0, 520.0);
    let (l, r, t, b) = (80.0, 330.0, 40.0, 60.0);
    let pts: Vec<(f64, f64)> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    let lo = |v: f64| v.log10().floor();
    let hi = |v: f64| v.log10().ceil();
    let x0 = pts.iter().map(|p| lo(p.0)).fold(f64::INFINITY, f64::min);
    let x1 = pts
        .iter()
        .map(|p| hi(p.0))
        .fold(f64::NEG_INFINITY, f64::max)
        .max(x0 + 1.0);
    let y0 = pts.iter().map(|p| lo(p.1)).fold(f64::INFINITY, f64::min);
    let y1 = pts
        .iter()
        .map(|p| hi(p.1))
        .fold(f64::NEG_INFINITY, f64::max)
        .max(y0 + 1.0);
    let px = |x: f64| l + (x.log10() - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - (y.log10() - y0) / (y1 - y0) * (h - t - b);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>
"#,
        (w - r + l) / 2.0,
        esc(&plot.title)
    );
    // Grid and axis labels (decades).
    let mut e = x0;
    while e <= x1 + 1e-9 {
        let x = px(10f64.powf(e));
        writeln!(s, r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##, h - b, h - b + 18.0, decade(e)).unwrap();
        e += 1.0;
    }
    let mut e = y0;
    while e <= y1 + 1e-9 {
        let y = py(10f64.powf(e));
        writeln!(s, r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##, w - r, l - 6.0, y + 4.0, decade(e)).unwrap();
        e += 1.0;
    }
    writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        w - l - r,
        h - t - b
    )
    .unwrap();
    writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{} (log)</text>"#,
        (w - r + l) / 2.0,
        h - 15.0,
        esc(plot.x_label)
    )
    .unwrap();
    writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{} (log)</text>"#,
        (h - b + t) / 2.0,
        (h - b + t) / 2.0,
        esc(plot.y_label)
    )
    .unwrap();
    for (i, se) in plot.series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let dash = if i >= COLORS.len() {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let path: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        )
        .unwrap();
        for p in se.points.iter().filter(|p| p.0 > 0.0 && p.1 > 0.0) {
            writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(p.0),
                py(p.1)
            )
            .unwrap();
        }
        let ly = t + 10.0 + i as f64 * 18.0;
        writeln!(s, r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/><text x="{}" y="{}">{} — {}</text>"#, w - r + 12.0, w - r + 32.0, w - r + 38.0, ly + 4.0, esc(&se.name), esc(se.complexity)).unwrap();
    }
    s.push_str("</svg>\n");
    s
}

fn decade(e: f64) -> String {
    let v = 10f64.powf(e);
    if (0.0..=6.0).contains(&e) {
        format!("{v:.0}")
    } else {
        format!("1e{e:.0}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn json(plots: &[Plot]) -> String {
    let mut s = String::from("{\n");
    for (i, p) in plots.iter().enumerate() {
        write!(s, "  {:?}: {{", p.file.trim_end_matches(".svg")).unwrap();
        for (j, se) in p.series.iter().enumerate() {
            let pts: Vec<String> = se
                .points
                .iter()
                .map(|(x, y)| format!("[{x}, {y:.3}]"))
                .collect();
            write!(
                s,
                "{}\n    {:?}: [{}]",
                if j > 0 { "," } else { "" },
                se.name,
                pts.join(", ")
            )
            .unwrap();
        }
        s.push_str(if i + 1 < plots.len() {
            "\n  },\n"
        } else {
            "\n  }\n"
        });
    }
    s.push_str("}\n");
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--responder") {
        responder_main(args.get(1).and_then(|v| v.parse().ok()).unwrap_or(32));
        return;
    }
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |s: &str| wanted.is_empty() || wanted.contains(&s);
    let started = Instant::now();
    let mut md = format!(
        "Run: {} UTC-epoch s, load average before: {}\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        loadavg()
    );
    let mut plots = Vec::new();
    let sections: [(&str, Section); 6] = [
        ("pick", section_pick),
        ("rebuild", section_rebuild),
        ("health", section_health),
        ("registry", section_registry),
        ("redlock", section_redlock),
        ("sharded", section_sharded),
    ];
    for (name, f) in sections {
        if run(name) {
            let t = Instant::now();
            f(&mut md, &mut plots);
            eprintln!("[scale] {name}: {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    writeln!(
        md,
        "\nTotal {:.0} s; load average after: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    )
    .unwrap();
    let dir = out_dir();
    for p in &plots {
        std::fs::write(dir.join(p.file), svg(p)).unwrap();
    }
    std::fs::write(dir.join("scale.md"), &md).unwrap();
    std::fs::write(dir.join("scale.json"), json(&plots)).unwrap();
    println!("{md}");
    eprintln!("[scale] wrote {}", dir.display());
}
