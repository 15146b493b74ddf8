//! The Redis service registry against real `redis-server` processes: joins, updates, leaves,
//! crashes (TTL expiry), Redis restarts and pauses, malformed entries, unreachable registries.
//!
//! Timing: TTL 1 s, heartbeat 250 ms. Every wait is a bounded poll; timing assertions carry
//! generous margins for a loaded 2-core machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use clusterkit::discovery::{Discovery, RedisRegistry, RegistryOptions, StaticDiscovery};
use clusterkit::{BalancerOptions, Cluster, ClusterEvent, ErrorKind, Node, Strategy};
use support::{eventually, wait_until, RedisServer};
use tokio::sync::broadcast;

const TTL: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_millis(250);
/// Slack for scheduling on a loaded machine, added to every protocol bound we assert.
const MARGIN: Duration = Duration::from_millis(2000);
/// Upper bound of every poll loop.
const PATIENCE: Duration = Duration::from_secs(10);

fn opts() -> RegistryOptions {
    RegistryOptions::default()
        .with_ttl(TTL)
        .with_heartbeat_interval(INTERVAL)
        .with_connect_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_millis(500))
}

fn registry(address: &str, service: &str) -> RedisRegistry {
    RedisRegistry::new(address, service, opts()).unwrap()
}

fn cluster() -> Cluster {
    Cluster::new("pool", BalancerOptions::new(Strategy::RoundRobin)).unwrap()
}

fn node(id: &str, port: u16) -> Node {
    Node::new(id, "127.0.0.1", port).unwrap()
}

fn ids(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = c.nodes().iter().map(|s| s.node.id().to_string()).collect();
    v.sort();
    v
}

fn weight(c: &Cluster, id: &str) -> Option<u32> {
    c.get(id).map(|s| s.node.weight())
}

/// Drains the DiscoveryProblem messages received so far.
fn problems(rx: &mut broadcast::Receiver<ClusterEvent>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(ClusterEvent::DiscoveryProblem { source, message }) => {
                assert_eq!(source, "redis-registry");
                out.push(message);
            }
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// Waits for a DiscoveryProblem containing `needle`; returns every problem seen meanwhile.
fn expect_problem(rx: &mut broadcast::Receiver<ClusterEvent>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let found = wait_until(PATIENCE, || {
        seen.extend(problems(rx));
        seen.iter().any(|m| m.contains(needle))
    });
    assert!(
        found,
        "no DiscoveryProblem containing {needle:?}; got {seen:#?}"
    );
    seen
}

#[test]
fn a_registered_node_and_its_updates_reach_other_clusters() {
    let redis = RedisServer::start();
    let publisher = registry(&redis.url(), "web");
    // Two watchers with their own registry handles (own connections), one per cluster.
    let (c1, c2) = (cluster(), cluster());
    let _w1 = registry(&redis.url(), "web").watch(&c1).unwrap();
    let _w2 = registry(&redis.addr(), "web").start(&c2).unwrap();

    let start = Instant::now();
    let r1 = publisher.register_blocking(node("n1", 8001)).unwrap();
    let r2 = publisher.register_blocking(node("n2", 8002)).unwrap();
    eventually("both clusters list n1 and n2", PATIENCE, || {
        ids(&c1) == ["n1", "n2"] && ids(&c2) == ["n1", "n2"]
    });
    let joined = start.elapsed();
    eprintln!("timing: join seen after {joined:?}");
    assert!(joined < INTERVAL + MARGIN, "join took {joined:?}");

    // An update (weight, zone, metadata) is seen by both.
    let start = Instant::now();
    let updated = node("n1", 8001)
        .with_weight(5)
        .unwrap()
        .with_zone("eu-1")
        .unwrap()
        .with_metadata("version", "2")
        .unwrap();
    r1.update_blocking(updated.clone()).unwrap();
    eventually("both clusters see n1 with weight 5", PATIENCE, || {
        weight(&c1, "n1") == Some(5) && weight(&c2, "n1") == Some(5)
    });
    let seen = start.elapsed();
    eprintln!("timing: update seen after {seen:?}");
    assert!(seen < INTERVAL + MARGIN, "update took {seen:?}");
    assert_eq!(*c2.get("n1").unwrap().node, updated);
    assert_eq!(r1.node(), updated);
    assert!(r1.last_error().is_none());

    // A registration cannot change its id.
    let e = r1.update_blocking(node("other", 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    // The listing agrees.
    let listing = publisher.list_blocking().unwrap();
    assert_eq!(listing.nodes.len(), 2);
    assert!(listing.skipped.is_empty());

    // Heartbeats keep the nodes alive well past the TTL.
    std::thread::sleep(TTL * 2);
    assert_eq!(ids(&c1), ["n1", "n2"]);
    assert_eq!(ids(&c2), ["n1", "n2"]);
    drop((r1, r2));
}

#[test]
fn a_crashed_node_disappears_after_its_ttl() {
    let redis = RedisServer::start();
    let reg = registry(&redis.url(), "crash");
    let c = cluster();
    let _w = reg.watch(&c).unwrap();
    let _survivor = reg.register_blocking(node("alive", 9001)).unwrap();
    let victim = reg.register_blocking(node("victim", 9002)).unwrap();
    eventually("both nodes listed", PATIENCE, || {
        ids(&c) == ["alive", "victim"]
    });

    // Crash: the heartbeat stops, nothing is deleted.
    let start = Instant::now();
    victim.abandon();
    eventually("the crashed node is removed", PATIENCE, || {
        ids(&c) == ["alive"]
    });
    let gone = start.elapsed();
    eprintln!("timing: crashed node removed after {gone:?} (ttl {TTL:?})");
    // The entry was refreshed at most one interval before the crash, so it lives between
    // TTL - INTERVAL and TTL after it; the watcher sees it within one more interval.
    assert!(
        gone >= TTL - INTERVAL - Duration::from_millis(150),
        "removed after {gone:?}: before its TTL could lapse"
    );
    assert!(gone < TTL + INTERVAL + MARGIN, "removed after {gone:?}");
    // The expired id is also cleaned from the listing set.
    eventually("the listing set forgets the id", PATIENCE, || {
        redis.cmd(&["SISMEMBER", reg.listing_key(), "victim"]) == ":0"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_node_leaves_within_one_interval() {
    let redis = RedisServer::start();
    let reg = registry(&redis.url(), "leave");
    let c = cluster();
    let _w = reg.watch(&c).unwrap();
    let a = reg.register(node("a", 1)).await.unwrap();
    let b = reg.register(node("b", 2)).await.unwrap();
    let d = reg.register(node("d", 3)).await.unwrap();
    poll_async("a, b and d listed", || ids(&c) == ["a", "b", "d"]).await;

    let start = Instant::now();
    b.deregister().await.unwrap();
    poll_async("b removed", || ids(&c) == ["a", "d"]).await;
    let took = start.elapsed();
    eprintln!("timing: deregistration seen after {took:?}");
    assert!(took < INTERVAL + MARGIN, "deregistration took {took:?}");
    assert_eq!(redis.cmd(&["EXISTS", &reg.node_key("b")]), ":0");

    // Dropping a registration removes it too (in the background).
    drop(d);
    poll_async("d removed after drop", || ids(&c) == ["a"]).await;
    assert_eq!(redis.cmd(&["EXISTS", &reg.node_key("d")]), ":0");

    // Blocking calls from inside a runtime are refused, not deadlocked.
    let e = reg.list_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    a.deregister().await.unwrap();
    poll_async("empty", || c.is_empty()).await;
}

async fn poll_async(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_watcher_converges_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let reg = registry(&redis.url(), "restart");
    let c = cluster();
    let mut events = c.subscribe();
    let _w = registry(&redis.url(), "restart").watch(&c).unwrap();
    let a = reg.register_blocking(node("a", 1)).unwrap();
    let b = reg.register_blocking(node("b", 2)).unwrap();
    eventually("a and b listed", PATIENCE, || ids(&c) == ["a", "b"]);
    problems(&mut events);

    // Redis dies: the watcher reports it and keeps the membership.
    redis.kill();
    expect_problem(&mut events, "cannot read the listing");
    assert_eq!(ids(&c), ["a", "b"], "membership must survive an outage");
    eventually("a's heartbeat notices the outage", PATIENCE, || {
        a.last_error().is_some()
    });
    // b crashes while Redis is down.
    b.abandon();

    // Redis comes back empty on the same port.
    redis.restart();
    assert_eq!(redis.cmd(&["DBSIZE"]), ":0");
    let mut c_reg = None;
    eventually("c registers after the restart", PATIENCE, || {
        c_reg = reg.register_blocking(node("c", 3)).ok();
        c_reg.is_some()
    });
    let seen = expect_problem(&mut events, "lost its data");
    assert!(!seen.is_empty());
    // a's heartbeat re-creates its entry; b never comes back and leaves after the grace
    // period (one TTL plus one interval); c joins.
    eventually("a's entry is re-created", PATIENCE, || {
        redis.cmd(&["EXISTS", &reg.node_key("a")]) == ":1"
    });
    let took = eventually("the watcher converges to a and c", PATIENCE, || {
        ids(&c) == ["a", "c"]
    });
    eprintln!("timing: converged {took:?} after the re-created entry was seen");
    assert!(a.last_error().is_none());
    // And stays converged.
    std::thread::sleep(INTERVAL * 4);
    assert_eq!(ids(&c), ["a", "c"]);
}

#[test]
fn a_paused_redis_keeps_the_membership_and_recovers() {
    let mut redis = RedisServer::start();
    let reg = registry(&redis.url(), "pause");
    let c = cluster();
    let mut events = c.subscribe();
    let _w = reg.watch(&c).unwrap();
    let _a = reg.register_blocking(node("a", 1)).unwrap();
    eventually("a listed", PATIENCE, || ids(&c) == ["a"]);
    problems(&mut events);

    redis.pause();
    let start = Instant::now();
    let seen = expect_problem(&mut events, "cannot read the listing");
    assert!(
        seen.iter().any(|m| m.contains("timed out")),
        "a frozen server is a timeout: {seen:#?}"
    );
    assert!(start.elapsed() < INTERVAL + Duration::from_millis(750) + MARGIN);
    assert_eq!(ids(&c), ["a"]);
    // A blocking call against the frozen server is bounded by the timeouts.
    let start = Instant::now();
    let e = reg.list_blocking().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(start.elapsed() < Duration::from_millis(1500) + MARGIN);

    redis.resume();
    let late = reg.register_blocking(node("b", 2));
    let _b = match late {
        Ok(r) => r,
        // The registry's connection may still be draining the paused replies: retry.
        Err(_) => {
            let mut r = None;
            eventually("b registers after resume", PATIENCE, || {
                r = reg.register_blocking(node("b", 2)).ok();
                r.is_some()
            });
            r.unwrap()
        }
    };
    eventually("a and b listed after resume", PATIENCE, || {
        ids(&c) == ["a", "b"]
    });
}

#[test]
fn malformed_entries_are_skipped_and_reported() {
    let redis = RedisServer::start();
    let reg = registry(&redis.url(), "junk");
    let set = reg.listing_key().to_string();
    let c = cluster();
    let mut events = c.subscribe();
    let _good = reg.register_blocking(node("good", 1)).unwrap();
    let entries = [
        ("garbage", "{not json"),
        (
            "wrongtype",
            r#"{"id":"wrongtype","host":"h","port":"eighty"}"#,
        ),
        ("portzero", r#"{"id":"portzero","host":"h","port":0}"#),
        (
            "badweight",
            r#"{"id":"badweight","host":"h","port":1,"weight":-3}"#,
        ),
        ("mismatch", r#"{"id":"someone-else","host":"h","port":1}"#),
    ];
    for (id, json) in entries {
        assert_eq!(redis.cmd(&["SET", &reg.node_key(id), json]), "+OK");
        assert_eq!(redis.cmd(&["SADD", &set, id]), ":1");
    }
    // A key of the wrong Redis type, and an id without any key (cleaned silently).
    assert_eq!(redis.cmd(&["HSET", &reg.node_key("hash"), "f", "v"]), ":1");
    assert_eq!(redis.cmd(&["SADD", &set, "hash", "ghost"]), ":2");

    let _w = reg.watch(&c).unwrap();
    eventually("the valid node is listed", PATIENCE, || ids(&c) == ["good"]);
    let bad = [
        "garbage",
        "wrongtype",
        "portzero",
        "badweight",
        "mismatch",
        "hash",
    ];
    let mut seen = Vec::new();
    let all_reported = wait_until(PATIENCE, || {
        seen.extend(problems(&mut events));
        bad.iter()
            .all(|id| seen.iter().any(|m| m.contains(&reg.node_key(id))))
    });
    assert!(all_reported, "not every bad entry was reported: {seen:#?}");
    // Still alive: a new node joins, and each bad entry was reported only once.
    let _late = reg.register_blocking(node("late", 2)).unwrap();
    eventually("a later node joins", PATIENCE, || {
        ids(&c) == ["good", "late"]
    });
    std::thread::sleep(INTERVAL * 4);
    let mut all = seen;
    all.extend(problems(&mut events));
    let garbage_key = reg.node_key("garbage");
    let reports = all.iter().filter(|m| m.contains(&garbage_key)).count();
    assert!(reports <= 1, "reported {reports} times: {all:#?}");
    assert_eq!(redis.cmd(&["SISMEMBER", &set, "ghost"]), ":0");

    let listing = reg.list_blocking().unwrap();
    let names: Vec<&str> = listing.nodes.iter().map(|n| n.id()).collect();
    assert_eq!(names, ["good", "late"]);
    assert_eq!(listing.skipped.len(), 6, "{:#?}", listing.skipped);
    let port0 = listing
        .skipped
        .iter()
        .find(|(k, _)| k.ends_with(":portzero"))
        .unwrap();
    assert!(port0.1.contains("port"), "{port0:?}");
}

#[test]
fn entries_written_without_a_notification_are_found_by_the_periodic_read() {
    let redis = RedisServer::start();
    let reg = registry(&redis.url(), "quiet");
    let c = cluster();
    let _w = reg.watch(&c).unwrap();
    std::thread::sleep(INTERVAL);
    let start = Instant::now();
    let json = r#"{"id":"silent","host":"127.0.0.9","port":7000,"weight":4,"zone":"b"}"#;
    assert_eq!(
        redis.cmd(&["SET", &reg.node_key("silent"), json, "PX", "60000"]),
        "+OK"
    );
    assert_eq!(redis.cmd(&["SADD", reg.listing_key(), "silent"]), ":1");
    eventually("the unannounced node is found", PATIENCE, || {
        ids(&c) == ["silent"]
    });
    let took = start.elapsed();
    eprintln!("timing: unannounced entry found after {took:?}");
    assert!(took < INTERVAL + MARGIN, "found after {took:?}");
    let n = c.get("silent").unwrap().node;
    assert_eq!((n.weight(), n.zone(), n.port()), (4, Some("b"), 7000));
}

#[test]
fn unreachable_registries_give_errors_and_events_not_panics_or_hangs() {
    let port = support::closed_port();
    for address in [
        format!("127.0.0.1:{port}"),
        "redis://clusterkit-registry.invalid:6379".to_string(),
    ] {
        let reg = registry(&address, "nowhere");

        let start = Instant::now();
        let e = reg.list_blocking().unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{address}: {e}"
        );
        assert!(e.to_string().contains("registry"), "{e}");
        eprintln!(
            "timing: {address}: list failed after {:?}: {e}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_secs(1) + MARGIN,
            "{address}"
        );

        let start = Instant::now();
        let e = reg.register_blocking(node("x", 1)).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{address}: {e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1) + MARGIN,
            "{address}"
        );

        // A watcher keeps the membership it has and reports the problem.
        let c = cluster();
        let mut events = c.subscribe();
        let _static = StaticDiscovery::new([node("keep", 1)]).start(&c).unwrap();
        let w = reg.watch(&c).unwrap();
        expect_problem(&mut events, "cannot read the listing");
        assert!(w.is_running());
        assert_eq!(ids(&c), ["keep"]);
        w.stop();
    }
}

#[test]
fn a_watcher_stops_with_its_handle_or_its_cluster() {
    let redis = RedisServer::start();
    let reg = registry(&redis.url(), "stop");
    let c = cluster();
    let w = reg.watch(&c).unwrap();
    let _a = reg.register_blocking(node("a", 1)).unwrap();
    eventually("a listed", PATIENCE, || ids(&c) == ["a"]);
    assert!(w.is_running());
    drop(w);
    let _b = reg.register_blocking(node("b", 2)).unwrap();
    std::thread::sleep(INTERVAL * 4);
    assert_eq!(
        ids(&c),
        ["a"],
        "a stopped watcher must not change the cluster"
    );

    let c2 = cluster();
    let w2 = reg.watch(&c2).unwrap();
    eventually("a and b listed", PATIENCE, || ids(&c2) == ["a", "b"]);
    drop(c2);
    eventually("the watcher ends with its cluster", PATIENCE, || {
        !w2.is_running()
    });
}

/// A pool described by the config document watches its registry for as long as it lives.
#[test]
fn config_document_wires_a_registry_watch() {
    let redis = RedisServer::start();
    let doc = format!(
        r#"
[pools.web]
strategy = "round_robin"
discovery = {{ redis = "{}", service = "web", ttl = "1s", interval = "250ms" }}
"#,
        redis.addr()
    );
    let pools = clusterkit::Config::parse(&doc)
        .unwrap()
        .build_pools()
        .unwrap();
    let web = &pools["web"];
    let reg = registry(&redis.addr(), "web");
    let r = reg.register_blocking(node("w1", 8001)).unwrap();
    eventually("the configured pool sees w1", PATIENCE, || {
        ids(web) == ["w1"]
    });
    r.deregister_blocking().unwrap();
    eventually("the configured pool sees w1 leave", PATIENCE, || {
        ids(web).is_empty()
    });

    let bad = "[pools.web]\ndiscovery = { redis = \"\", service = \"web\" }\n";
    let e = clusterkit::Config::parse(bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("pools.web.discovery"), "{e}");
}

/// Calls of one command at a test server, from `INFO commandstats` (commands run by Lua
/// scripts count too).
fn calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Issue #18: with many registered nodes, a join, an update and a leave each read the notified
/// node's key (one MGET), not the whole listing (SMEMBERS + a GET per node): the cost of an
/// event at the registry does not grow with N. The periodic full read (every 60 s here) does
/// not run during the test.
#[test]
fn a_join_update_or_leave_reads_only_the_notified_node() {
    const N: usize = 300;
    let redis = RedisServer::start();
    let options = RegistryOptions::default()
        .with_ttl(Duration::from_secs(180))
        .with_heartbeat_interval(Duration::from_secs(60))
        .with_connect_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_secs(2));
    let reg = RedisRegistry::new(&redis.url(), "many", options).unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 0..N {
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

    let pool = cluster();
    let _w = reg.watch(&pool).unwrap();
    eventually("the watcher lists the N nodes", PATIENCE, || {
        pool.len() == N
    });
    // Two full reads at start: the first, and the one after the subscription (notifications
    // may have been missed before it).
    eventually("the post-subscription full read", PATIENCE, || {
        calls(&mut conn, "smembers") >= 2
    });
    let full_reads = calls(&mut conn, "smembers");
    assert_eq!(full_reads, 2, "unexpected full reads");
    let mgets = calls(&mut conn, "mget");

    let joiner = reg.register_blocking(node("joiner", 9_999)).unwrap();
    eventually("the join is seen", PATIENCE, || {
        pool.get("joiner").is_some()
    });
    assert_eq!(pool.len(), N + 1);
    joiner
        .update_blocking(node("joiner", 9_999).with_weight(7).unwrap())
        .unwrap();
    eventually("the update is seen", PATIENCE, || {
        weight(&pool, "joiner") == Some(7)
    });
    joiner.deregister_blocking().unwrap();
    eventually("the leave is seen", PATIENCE, || {
        pool.get("joiner").is_none()
    });
    assert_eq!(pool.len(), N);

    assert_eq!(
        calls(&mut conn, "smembers"),
        full_reads,
        "a join, an update or a leave re-read the whole listing"
    );
    let event_reads = calls(&mut conn, "mget") - mgets;
    assert!(
        (3..=6).contains(&event_reads),
        "expected one MGET per event, got {event_reads}"
    );
    // The next full read agrees with what the events built.
    let listing = reg.list_blocking().unwrap();
    assert_eq!(listing.nodes.len(), N);
    assert_eq!(ids(&pool).len(), N);
}
