//! Active health checks against real listeners, outlier ejection, slow start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit::{
    BalancerOptions, CheckKind, CheckOptions, Cluster, ClusterEvent, Health, HealthOptions, Node,
    OutlierOptions, Strategy,
};
use tokio::sync::broadcast::Receiver;

mod support;
use support::RedisServer;

/// Polls `f` every 20 ms until it is true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn health_events(rx: &mut Receiver<ClusterEvent>, id: &str) -> Vec<(Health, Health, String)> {
    let mut out = vec![];
    while let Ok(e) = rx.try_recv() {
        if let ClusterEvent::HealthChanged {
            node,
            old,
            new,
            reason,
        } = e
        {
            if node.id() == id {
                out.push((old, new, reason));
            }
        }
    }
    out
}

fn picks_of(c: &Cluster, id: &str, n: usize) -> usize {
    let lb = c.balancer();
    (0..n).filter(|_| lb.pick().unwrap().id() == id).count()
}

/// A listener that accepts and closes connections in a thread, until stopped.
struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(port: u16, http_status: Option<Arc<AtomicU16>>) -> Acceptor {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        if let Some(status) = &http_status {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                            let mut buf = [0u8; 1024];
                            let _ = conn.read(&mut buf);
                            let code = status.load(Ordering::Relaxed);
                            let _ = write!(
                                conn,
                                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Acceptor {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket.
    fn close(mut self) -> u16 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.port
    }
}

fn fast_check(kind: CheckKind) -> CheckOptions {
    CheckOptions::new(kind)
        .with_interval(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(500))
        .with_thresholds(2, 3)
        .with_jitter(0.1)
}

fn two_node_pool(a: u16, b: u16, check: CheckOptions) -> Cluster {
    Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        HealthOptions::default().with_check(check),
        [
            Node::new("a", "127.0.0.1", a).unwrap(),
            Node::new("b", "127.0.0.1", b).unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn tcp_check_follows_a_listener_closed_and_reopened() {
    let a = Acceptor::start(0, None);
    let b = Acceptor::start(0, None);
    let pool = two_node_pool(a.port, b.port, fast_check(CheckKind::Tcp));
    let mut rx = pool.subscribe();
    assert!(wait_for(Duration::from_secs(5), || pool
        .health_metrics()
        .checks
        >= 4));
    assert_eq!(pool.get("a").unwrap().health, Health::Healthy);

    let port = a.close();
    assert!(
        wait_for(Duration::from_secs(10), || pool.get("a").unwrap().health
            == Health::Unhealthy),
        "node a never went unhealthy"
    );
    let ev = health_events(&mut rx, "a");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].0, ev[0].1), (Health::Healthy, Health::Unhealthy));
    assert!(
        ev[0].2.starts_with("3 consecutive tcp checks failed"),
        "{}",
        ev[0].2
    );
    assert_eq!(picks_of(&pool, "a", 50), 0, "an unhealthy node was picked");

    let a = Acceptor::start(port, None);
    assert!(
        wait_for(Duration::from_secs(10), || pool.get("a").unwrap().health
            == Health::Healthy),
        "node a never came back"
    );
    let ev = health_events(&mut rx, "a");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        ev[0].2.starts_with("2 consecutive tcp checks passed"),
        "{}",
        ev[0].2
    );
    assert_eq!(picks_of(&pool, "a", 50), 25);
    let m = pool.health_metrics();
    assert!(
        m.check_failures >= 3 && m.marked_unhealthy == 1 && m.marked_healthy == 1,
        "{m:?}"
    );
    drop(pool);
    a.close();
    b.close();
}

#[test]
fn http_check_follows_status_codes() {
    let status = Arc::new(AtomicU16::new(200));
    let a = Acceptor::start(0, Some(status.clone()));
    let b = Acceptor::start(0, Some(Arc::new(AtomicU16::new(200))));
    let pool = two_node_pool(
        a.port,
        b.port,
        fast_check(CheckKind::Http {
            path: "/healthz".into(),
            expected: 200..=299,
        }),
    );
    let mut rx = pool.subscribe();
    assert!(wait_for(Duration::from_secs(5), || pool
        .health_metrics()
        .checks
        >= 4));
    assert_eq!(pool.health_metrics().check_failures, 0);

    status.store(500, Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(10), || pool
        .get("a")
        .unwrap()
        .health
        == Health::Unhealthy));
    let ev = health_events(&mut rx, "a");
    assert!(ev[0].2.contains("http status 500"), "{ev:?}");
    assert_eq!(picks_of(&pool, "a", 40), 0);

    status.store(204, Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(10), || pool
        .get("a")
        .unwrap()
        .health
        == Health::Healthy));
    assert_eq!(picks_of(&pool, "a", 40), 20);
    drop(pool);
    a.close();
    b.close();
}

#[test]
fn redis_ping_check_follows_a_paused_server() {
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    let pool = Cluster::with_health(
        "cache",
        BalancerOptions::new(Strategy::Ketama),
        HealthOptions::default().with_check(
            CheckOptions::new(CheckKind::RedisPing)
                .with_interval(Duration::from_millis(100))
                .with_timeout(Duration::from_millis(300))
                .with_thresholds(2, 3),
        ),
        [
            Node::new("a", "127.0.0.1", a.port()).unwrap(),
            Node::new("b", "127.0.0.1", b.port()).unwrap(),
        ],
    )
    .unwrap();
    let mut rx = pool.subscribe();
    assert!(wait_for(Duration::from_secs(5), || pool
        .health_metrics()
        .checks
        >= 4));
    assert_eq!(pool.health_metrics().check_failures, 0);
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
    let owned_by_a = |pool: &Cluster| {
        let lb = pool.balancer();
        keys.iter()
            .filter(|k| lb.pick_for(k).unwrap().id() == "a")
            .count()
    };
    assert!(owned_by_a(&pool) > 0);

    // SIGSTOP: connects still succeed (the kernel accepts), PING times out.
    a.pause();
    assert!(wait_for(Duration::from_secs(10), || pool
        .get("a")
        .unwrap()
        .health
        == Health::Unhealthy));
    let ev = health_events(&mut rx, "a");
    assert!(
        ev[0]
            .2
            .starts_with("3 consecutive redis ping checks failed"),
        "{ev:?}"
    );
    assert!(ev[0].2.contains("timed out"), "{ev:?}");
    assert_eq!(owned_by_a(&pool), 0, "keys still go to the paused node");

    a.resume();
    assert!(wait_for(Duration::from_secs(10), || pool
        .get("a")
        .unwrap()
        .health
        == Health::Healthy));
    assert!(owned_by_a(&pool) > 0, "the resumed node gets no keys");
}

#[test]
fn unreachable_addresses_fail_checks_without_hanging() {
    // A closed loopback port and a name under the reserved .invalid domain.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        HealthOptions::default().with_check(fast_check(CheckKind::Tcp)),
        [
            Node::new("closed", "127.0.0.1", closed).unwrap(),
            Node::new("nowhere", "node.invalid", 80).unwrap(),
        ],
    )
    .unwrap();
    let mut rx = pool.subscribe();
    assert!(wait_for(Duration::from_secs(15), || {
        pool.get("closed").unwrap().health == Health::Unhealthy
            && pool.get("nowhere").unwrap().health == Health::Unhealthy
    }));
    let reasons: Vec<String> = health_events(&mut rx, "nowhere")
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert!(!reasons.is_empty());
    // Both down: panic mode balances over both rather than failing.
    assert!(pool.in_panic());
    assert!(pool.balancer().pick().is_ok());
}

#[test]
fn checks_stop_when_the_cluster_is_dropped() {
    let a = Acceptor::start(0, None);
    let pool = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        HealthOptions::default().with_check(fast_check(CheckKind::Tcp)),
        [Node::new("a", "127.0.0.1", a.port).unwrap()],
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || a
        .accepted
        .load(Ordering::Relaxed)
        >= 3));
    drop(pool);
    std::thread::sleep(Duration::from_millis(300));
    let after_drop = a.accepted.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        a.accepted.load(Ordering::Relaxed),
        after_drop,
        "checks kept running"
    );
    a.close();
}

fn outlier_pool(n: usize, outlier: OutlierOptions) -> Cluster {
    Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        HealthOptions::default().with_outlier(outlier),
        (0..n).map(|i| Node::new(format!("n{i}"), "127.0.0.1", 9000 + i as u16).unwrap()),
    )
    .unwrap()
}

#[test]
fn consecutive_failures_eject_and_the_node_returns() {
    let pool = outlier_pool(
        3,
        OutlierOptions::default()
            .with_consecutive_failures(5)
            .with_ejection_times(Duration::from_millis(300), Duration::from_millis(700)),
    );
    let mut rx = pool.subscribe();
    for _ in 0..4 {
        pool.report_failure("n0").unwrap();
    }
    pool.report_success("n0", Duration::from_millis(1)).unwrap(); // resets the streak
    for _ in 0..4 {
        pool.report_failure("n0").unwrap();
    }
    assert_eq!(
        pool.get("n0").unwrap().health,
        Health::Healthy,
        "ejected before 5 consecutive failures"
    );

    let mut durations = vec![];
    let mut reasons = vec![];
    for round in 0..3 {
        // Through a pick's outcome report, as a caller would.
        let lb = pool.balancer();
        let mut failures = if round == 0 { 4 } else { 0 };
        while failures < 5 {
            let p = lb.pick().unwrap();
            if p.id() == "n0" {
                p.failure();
                failures += 1;
            }
        }
        let ejected_at = Instant::now();
        assert_eq!(pool.get("n0").unwrap().health, Health::Unhealthy);
        assert_eq!(picks_of(&pool, "n0", 30), 0);
        assert!(wait_for(Duration::from_secs(10), || pool
            .get("n0")
            .unwrap()
            .health
            == Health::Healthy));
        durations.push(ejected_at.elapsed());
        let ev = health_events(&mut rx, "n0");
        reasons.push(ev[0].2.clone());
        assert_eq!(ev[1].2, "outlier ejection ended");
    }
    // 300 ms, 2 x 300 ms, then capped at 700 ms (not 900 ms).
    assert!(
        reasons[0].starts_with("ejected for 300ms after 5 consecutive failures (ejection #1)"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("ejected for 600ms"), "{reasons:?}");
    assert!(reasons[2].starts_with("ejected for 700ms"), "{reasons:?}");
    assert!(durations[0] >= Duration::from_millis(280), "{durations:?}");
    assert!(durations[1] >= Duration::from_millis(580), "{durations:?}");
    assert!(durations[2] >= Duration::from_millis(680), "{durations:?}");
    assert_eq!(pool.health_metrics().ejections, 3);
}

#[test]
fn at_most_the_configured_share_is_ejected() {
    let pool = outlier_pool(
        4,
        OutlierOptions::default()
            .with_consecutive_failures(2)
            .with_max_ejected_share(0.5)
            .with_ejection_times(Duration::from_secs(30), Duration::from_secs(60)),
    );
    for id in ["n0", "n1", "n2", "n3"] {
        for _ in 0..2 {
            pool.report_failure(id).unwrap();
        }
    }
    let unhealthy = pool
        .nodes()
        .iter()
        .filter(|s| s.health == Health::Unhealthy)
        .count();
    assert_eq!(unhealthy, 2, "more than 50% of the pool was ejected");
    let m = pool.health_metrics();
    assert_eq!((m.ejections, m.ejections_refused), (2, 2));
}

#[test]
fn slow_start_ramps_a_returning_node() {
    let pool = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::WeightedRoundRobin),
        HealthOptions::default().with_slow_start(Duration::from_millis(1500)),
        [
            Node::new("a", "127.0.0.1", 1).unwrap(),
            Node::new("b", "127.0.0.1", 2).unwrap(),
        ],
    )
    .unwrap();
    // Initial members start at full weight.
    assert_eq!(picks_of(&pool, "b", 100), 50);
    pool.set_health("b", Health::Unhealthy, "test").unwrap();
    pool.set_health("b", Health::Healthy, "test").unwrap();
    // First step: 10% of its weight against a's full weight (weights 10:1).
    let share = picks_of(&pool, "b", 110);
    assert!(share <= 20, "b got {share} of 110 right after returning");
    assert!(share >= 10);
    // After the window it is back to an equal share.
    assert!(wait_for(Duration::from_secs(10), || picks_of(
        &pool, "b", 100
    ) == 50));
}

/// The supervisor follows membership (issue #18 made it keep a due-time queue and walk the
/// members only when they change): a node added later is checked, a removed node is no longer
/// checked, and an id removed and added again with another address is checked there.
#[test]
fn checks_follow_nodes_added_removed_and_readded() {
    let a = Acceptor::start(0, None);
    let b = Acceptor::start(0, None);
    let c = Acceptor::start(0, None);
    let pool = Cluster::with_health(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        HealthOptions::default().with_check(fast_check(CheckKind::Tcp)),
        [Node::new("a", "127.0.0.1", a.port).unwrap()],
    )
    .unwrap();
    let count = |x: &Acceptor| x.accepted.load(Ordering::Relaxed);
    assert!(
        wait_for(Duration::from_secs(5), || count(&a) >= 2),
        "a not checked"
    );
    assert_eq!(count(&b), 0);

    pool.add(Node::new("b", "127.0.0.1", b.port).unwrap())
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || count(&b) >= 3),
        "a node added later was not checked"
    );
    pool.remove("a").unwrap();
    // A check already running may still land; after that none.
    std::thread::sleep(Duration::from_millis(700));
    let a_after = count(&a);
    let b_before = count(&b);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        wait_for(Duration::from_secs(5), || count(&b) >= b_before + 3),
        "b stopped being checked"
    );
    assert_eq!(count(&a), a_after, "a removed node was still checked");

    // "b" leaves and comes back at c's address: c is checked, b's listener no longer.
    pool.remove("b").unwrap();
    pool.add(Node::new("b", "127.0.0.1", c.port).unwrap())
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || count(&c) >= 3),
        "the re-added id was not checked at its new address"
    );
    std::thread::sleep(Duration::from_millis(700));
    let b_after = count(&b);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(count(&b), b_after, "the old address was still checked");
    let m = pool.health_metrics();
    assert_eq!(m.check_failures, 0, "{m:?}");
    drop(pool);
    a.close();
    b.close();
    c.close();
}
