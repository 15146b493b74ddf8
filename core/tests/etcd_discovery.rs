//! Service discovery on a real 3-member etcd cluster (issue #17): join, leave, crash (lease
//! expiry), the leader killed and restarted, a watcher reconnecting across a compaction,
//! malformed entries skipped and reported, and the config document's `discovery = { etcd }`.
//!
//! Lease TTL 1 s (the cluster runs with a 500 ms election timeout, so 1 s is allowed). Every
//! wait is a bounded poll with generous margins for a loaded 2-core machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod etcd_support;

use std::time::{Duration, Instant};

use clusterkit::discovery::EtcdRegistry;
use clusterkit::etcd::EtcdSettings;
use clusterkit::{BalancerOptions, Cluster, ClusterEvent, Node, Strategy};
use etcd_support::EtcdCluster;
use tokio::sync::broadcast;

const TTL: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(20);

fn settings(eps: &[String]) -> EtcdSettings {
    let mut s = EtcdSettings::new(eps);
    s.timeout = Duration::from_millis(1000);
    s
}

fn registry(eps: &[String], prefix: &str) -> EtcdRegistry {
    EtcdRegistry::new(settings(eps), prefix, TTL).unwrap()
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

fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn problems(rx: &mut broadcast::Receiver<ClusterEvent>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(ClusterEvent::DiscoveryProblem { source, message }) => {
                assert_eq!(source, "etcd-registry");
                out.push(message);
            }
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

fn expect_problem(rx: &mut broadcast::Receiver<ClusterEvent>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let start = Instant::now();
    loop {
        seen.extend(problems(rx));
        if seen.iter().any(|m| m.contains(needle)) {
            return seen;
        }
        if start.elapsed() > PATIENCE {
            panic!("no DiscoveryProblem containing {needle:?}; got {seen:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn join_leave_and_crash_by_lease_expiry() {
    let etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let publisher = registry(&eps, "/ck/web");
    let c = cluster();
    let _w = registry(&eps, "/ck/web/").watch(&c).unwrap();

    let a = publisher.register_blocking(node("a", 8001)).unwrap();
    let b = publisher.register_blocking(node("b", 8002)).unwrap();
    let joined = eventually("a and b listed", PATIENCE, || ids(&c) == ["a", "b"]);
    eprintln!("timing: join seen after {joined:?}");
    assert_eq!(c.get("b").unwrap().node.port(), 8002);
    // The entry is the node's JSON under <prefix><id>, attached to a lease.
    let raw = etcd.ctl(&["get", "/ck/web/a", "--print-value-only"]);
    assert!(raw.contains("\"port\":8001"), "{raw}");
    assert!(a.lease_id().is_some());

    // Kept alive past several TTLs.
    std::thread::sleep(TTL * 3);
    assert_eq!(ids(&c), ["a", "b"], "live leases must not expire");

    // Leave: removed now.
    a.deregister_blocking().unwrap();
    eventually("a left", PATIENCE, || ids(&c) == ["b"]);
    assert_eq!(etcd.ctl(&["get", "/ck/web/a"]).trim(), "");

    // Crash: the keep-alive stops, the lease expires after its TTL, etcd deletes the key.
    let crashed = Instant::now();
    b.abandon();
    let gone = eventually("b expired", PATIENCE, || ids(&c).is_empty());
    eprintln!("timing: crashed node removed {gone:?} after its keep-alive stopped (TTL {TTL:?})");
    assert!(
        crashed.elapsed() >= Duration::from_millis(500),
        "the entry must outlive its last keep-alive for about a TTL, went after {:?}",
        crashed.elapsed()
    );
}

#[test]
fn leader_killed_and_restarted_keeps_membership_and_watch() {
    let mut etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let publisher = registry(&eps, "/ck/api/");
    let c = cluster();
    let _w = registry(&eps, "/ck/api/").watch(&c).unwrap();
    let _a = publisher.register_blocking(node("a", 9001)).unwrap();
    eventually("a listed", PATIENCE, || ids(&c) == ["a"]);

    let leader = etcd.leader();
    etcd.kill(leader);
    // A new leader among the two others; the registration's lease survives the election
    // (etcd extends leases on a leader change) and the watcher keeps following.
    let mut b = None;
    eventually("b registered during/after the election", PATIENCE, || {
        b = publisher.register_blocking(node("b", 9002)).ok();
        b.is_some()
    });
    eventually("b listed with the leader dead", PATIENCE, || {
        ids(&c) == ["a", "b"]
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(
        ids(&c),
        ["a", "b"],
        "a's lease must survive the leader's death"
    );
    let new_leader = etcd.leader();
    assert_ne!(new_leader, leader);

    etcd.restart(leader);
    let _c2 = publisher.register_blocking(node("c", 9003)).unwrap();
    eventually("c listed after the restart", PATIENCE, || {
        ids(&c) == ["a", "b", "c"]
    });
    b.take().unwrap().deregister_blocking().unwrap();
    eventually("b left", PATIENCE, || ids(&c) == ["a", "c"]);
}

#[test]
fn watcher_reconnecting_across_a_compaction_lists_again() {
    let mut etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    // The watcher talks to one follower only, so pausing it cuts the watcher off. Not the
    // leader: pausing the leader leaves the others without one until an election, and the
    // publisher's writes meanwhile fail with "no leader" (seen in a full run).
    let watcher_member = etcd.follower();
    let c = cluster();
    let mut events = c.subscribe();
    let _w = registry(&eps[watcher_member..=watcher_member], "/ck/jobs/")
        .watch(&c)
        .unwrap();
    let others: Vec<String> = eps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != watcher_member)
        .map(|(_, e)| e.clone())
        .collect();
    // A long lease: here entries leave only when deregistered. With the 1 s lease a keep-alive
    // late on a loaded machine expired `a` before the watcher was cut off (seen once in a
    // full run), and the watcher rightly showed it gone.
    let publisher =
        EtcdRegistry::new(settings(&others), "/ck/jobs/", Duration::from_secs(10)).unwrap();
    let a = publisher.register_blocking(node("a", 7001)).unwrap();
    eventually("a listed", PATIENCE, || ids(&c) == ["a"]);

    // The watcher's member stops answering; meanwhile the registry changes and is compacted.
    etcd.pause(watcher_member);
    a.deregister_blocking().unwrap();
    let _b = publisher.register_blocking(node("b", 7002)).unwrap();
    let _d = publisher.register_blocking(node("d", 7004)).unwrap();
    for i in 0..20 {
        etcd.ctl(&["put", &format!("/ck/unrelated/{i}"), "x"]);
    }
    let compacted = etcd.compact_now();
    assert_eq!(
        ids(&c),
        ["a"],
        "the cut-off watcher still shows the old view"
    );
    etcd.resume(watcher_member);

    // It cannot resume from its revision (compacted): it lists again and converges.
    let seen = expect_problem(&mut events, "compacted");
    eprintln!("compaction at revision {compacted}; problems: {seen:?}");
    eventually("the watcher converged after re-listing", PATIENCE, || {
        ids(&c) == ["b", "d"]
    });
    // And follows the stream again from there.
    let _e = publisher.register_blocking(node("e", 7005)).unwrap();
    eventually("e listed", PATIENCE, || ids(&c) == ["b", "d", "e"]);
}

#[test]
fn malformed_entries_are_skipped_and_reported() {
    let etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let publisher = registry(&eps, "/ck/mal/");
    let _good = publisher.register_blocking(node("good", 6001)).unwrap();
    etcd.ctl(&["put", "/ck/mal/junk", "{not json"]);
    etcd.ctl(&[
        "put",
        "/ck/mal/liar",
        r#"{"id":"other","host":"h","port":1}"#,
    ]);
    etcd.ctl(&[
        "put",
        "/ck/mal/zero",
        r#"{"id":"zero","host":"h","port":0}"#,
    ]);

    let c = cluster();
    let mut events = c.subscribe();
    let _w = registry(&eps, "/ck/mal/").watch(&c).unwrap();
    eventually("good listed", PATIENCE, || ids(&c) == ["good"]);
    let mut seen = Vec::new();
    for needle in ["/ck/mal/junk", "/ck/mal/liar", "/ck/mal/zero"] {
        let start = Instant::now();
        while !seen.iter().any(|m: &String| m.contains(needle)) {
            assert!(
                start.elapsed() < PATIENCE,
                "no problem naming {needle}: {seen:#?}"
            );
            seen.extend(problems(&mut events));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        seen.iter().any(|m| m.contains("does not match")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|m| m.contains("watch broke")),
        "no fault, no broken watch: {seen:#?}"
    );

    // A malformed entry arriving through the watch is skipped too, without disturbing the
    // valid ones; fixing it makes the node appear.
    etcd.ctl(&["put", "/ck/mal/late", "[]"]);
    expect_problem(&mut events, "/ck/mal/late");
    etcd.ctl(&[
        "put",
        "/ck/mal/late",
        r#"{"id":"late","host":"127.0.0.1","port":6002}"#,
    ]);
    eventually("late listed once fixed", PATIENCE, || {
        ids(&c) == ["good", "late"]
    });
    let listing = publisher.list_blocking().unwrap();
    assert_eq!(listing.skipped.len(), 3, "{:?}", listing.skipped);
}

#[test]
fn config_document_discovery_on_etcd() {
    let etcd = EtcdCluster::start();
    let eps = etcd.endpoints();
    let _r = registry(&eps, "/ck/doc/")
        .register_blocking(node("n1", 5001))
        .unwrap();
    let doc = format!(
        "[pools.web]\nstrategy = \"round_robin\"\ndiscovery = {{ etcd = {{ endpoints = {}, prefix = \"/ck/doc/\", ttl = \"2s\" }} }}\n",
        etcd.endpoints_literal()
    );
    let ck = clusterkit::Clusterkit::parse(&doc).unwrap();
    let pool = ck.pool("web").unwrap();
    eventually("n1 listed through the config document", PATIENCE, || {
        ids(pool) == ["n1"]
    });

    // Bad input: clear errors naming the field; secrets never echoed.
    let bad = [
        ("discovery = { etcd = { endpoints = [] , prefix = \"/p/\" } }", "endpoints"),
        ("discovery = { etcd = { endpoints = [\"nohost\"], prefix = \"/p/\" } }", "endpoints[0]"),
        ("discovery = { etcd = { endpoints = [\"127.0.0.1:1\"] } }", "etcd.prefix"),
        (
            "discovery = { redis = \"127.0.0.1:1\", service = \"s\", etcd = { endpoints = [\"127.0.0.1:1\"], prefix = \"/p/\" } }",
            "etcd",
        ),
        (
            "discovery = { etcd = { endpoints = [\"127.0.0.1:1\"], prefix = \"/p/\", user = \"u\", password = \"hunter2-secret\", password_env = \"X\" } }",
            "password",
        ),
        (
            "discovery = { etcd = { endpoints = [\"127.0.0.1:1\"], prefix = \"/p/\", user = \"u\" } }",
            "password",
        ),
    ];
    for (pool, field) in bad {
        let doc = format!("[pools.web]\n{pool}\n");
        let e = clusterkit::Clusterkit::parse(&doc).unwrap_err().to_string();
        assert!(e.contains(field), "{pool}: {e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
    }
    let cfg = clusterkit::Config::parse(
        "[pools.web]\ndiscovery = { etcd = { endpoints = [\"127.0.0.1:1\"], prefix = \"/p/\", user = \"u\", password = \"hunter2-secret\" } }\n",
    )
    .unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hunter2-secret"), "{dbg}");
    let json = serde_json::to_string(&cfg.pools["web"].discovery).unwrap();
    assert!(
        !json.contains("hunter2-secret") && json.contains("***"),
        "{json}"
    );
}
