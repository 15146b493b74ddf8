//! Membership changes, events, errors and concurrent picking during churn.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clusterkit::{BalancerOptions, Cluster, ClusterEvent, ErrorKind, Health, Node, Strategy};

fn n(i: u16) -> Node {
    Node::new(format!("n{i}"), "127.0.0.1", 8000 + i).unwrap()
}

#[test]
fn add_remove_update_and_events() {
    let c = Cluster::new("app", BalancerOptions::new(Strategy::RoundRobin)).unwrap();
    let mut rx = c.subscribe();
    c.add(n(1)).unwrap();
    c.add(n(2)).unwrap();
    let e = c.add(n(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(c.len(), 2, "a duplicate must not overwrite");
    let e = c.add_all([n(3), n(3)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(c.len(), 2, "a failed batch adds nothing");

    c.set_weight("n1", 5).unwrap();
    assert_eq!(c.get("n1").unwrap().node.weight(), 5);
    assert_eq!(
        c.set_weight("n1", 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        c.set_weight("nope", 2).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    c.set_metadata("n2", [("role".to_string(), "api".to_string())].into())
        .unwrap();
    c.set_health("n2", Health::Unhealthy, "probe failed")
        .unwrap();
    c.set_health("n2", Health::Unhealthy, "again").unwrap(); // no event: same state
    let removed = c.remove("n1").unwrap();
    assert_eq!(removed.id(), "n1");
    assert_eq!(c.remove("n1").unwrap_err().kind(), ErrorKind::NotFound);

    let mut got = vec![];
    while let Ok(e) = rx.try_recv() {
        got.push(e);
    }
    let names: Vec<&str> = got
        .iter()
        .map(|e| match e {
            ClusterEvent::Added { .. } => "added",
            ClusterEvent::Removed { .. } => "removed",
            ClusterEvent::Updated { .. } => "updated",
            ClusterEvent::HealthChanged { .. } => "health",
            ClusterEvent::PanicChanged { .. } => "panic",
            _ => "other",
        })
        .collect();
    // Removing n1 leaves only the unhealthy n2: the pool enters panic mode.
    assert_eq!(
        names,
        ["added", "added", "updated", "updated", "health", "removed", "panic"]
    );
    match &got[4] {
        ClusterEvent::HealthChanged {
            node,
            old,
            new,
            reason,
        } => {
            assert_eq!(node.id(), "n2");
            assert_eq!((*old, *new), (Health::Healthy, Health::Unhealthy));
            assert_eq!(reason, "probe failed");
        }
        e => panic!("unexpected {e:?}"),
    }
    let s = c.get("n2").unwrap();
    assert_eq!(s.health, Health::Unhealthy);
    assert_eq!(&*s.reason, "probe failed");
    assert_eq!(s.node.metadata()["role"], "api");
    assert!(c.version() >= 6);
}

#[test]
fn strategy_is_swappable_at_runtime() {
    let c = Cluster::with_nodes(
        "app",
        BalancerOptions::new(Strategy::RoundRobin),
        (1..=4).map(n),
    )
    .unwrap();
    let lb = c.balancer();
    for s in Strategy::ALL {
        c.set_strategy(s).unwrap();
        assert_eq!(lb.strategy(), s);
        assert!(lb.pick().is_ok());
        assert!(lb.pick_for(b"k").is_ok());
    }
    // A load bound only applies to hashing strategies: rejected, and the old options stay.
    c.set_strategy(Strategy::Maglev).unwrap();
    c.set_options(BalancerOptions::new(Strategy::Maglev).with_bounded_load(1.5))
        .unwrap();
    let e = c.set_strategy(Strategy::RoundRobin).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(c.options().strategy, Strategy::Maglev);
    assert!(c
        .set_options(BalancerOptions::new(Strategy::Maglev).with_bounded_load(0.5))
        .is_err());
    assert!(c
        .set_options(BalancerOptions::new(Strategy::Maglev).with_maglev_table_size(100))
        .is_err());
}

/// Readers keep picking valid nodes, without errors, while a writer churns membership.
#[test]
fn picks_during_membership_churn() {
    for strategy in [
        Strategy::RoundRobin,
        Strategy::PowerOfTwoChoices,
        Strategy::Maglev,
        Strategy::Ketama,
    ] {
        let c =
            Cluster::with_nodes("app", BalancerOptions::new(strategy), (1..=50).map(n)).unwrap();
        let stop = AtomicBool::new(false);
        let picks = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..2 {
                let c = &c;
                let stop = &stop;
                let picks = &picks;
                s.spawn(move || {
                    let lb = c.balancer();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let p = lb.pick_for(&(i + t).to_le_bytes()).unwrap();
                        assert!(p.port() > 8000);
                        i += 1;
                    }
                    picks.fetch_add(i, Ordering::Relaxed);
                });
            }
            for round in 0..200u16 {
                let id = format!("n{}", 1 + round % 50);
                match round % 4 {
                    0 => c.set_health(&id, Health::Unhealthy, "churn").unwrap(),
                    1 => c.set_health(&id, Health::Healthy, "churn").unwrap(),
                    2 => c.add(n(1000 + round)).unwrap(),
                    _ => drop(c.remove(&format!("n{}", 1000 + round - 1)).unwrap()),
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert!(
            picks.load(Ordering::Relaxed) > 100,
            "{strategy}: readers made no progress"
        );
        assert!(c.nodes().iter().all(|s| s.stats.in_flight() == 0));
    }
}

#[test]
fn pick_guards_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<clusterkit::Pick>();
    assert_send_sync::<Cluster>();
    assert_send_sync::<clusterkit::LoadBalancer>();
}
