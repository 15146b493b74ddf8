//! clusterkit quickstart: an embedded pool of four nodes and the embedded cache, no server
//! needed.
//!
//! Builds the deployment from a config document, shows every strategy picking, marks a node
//! unhealthy and shows its traffic move to the others, brings it back, then uses the cache.
//!
//! Run: `cargo run --example quickstart`

use std::collections::BTreeMap;
use std::time::Duration;

use clusterkit::blocking::block_on;
use clusterkit::cache::Bytes;
use clusterkit::{Cluster, ClusterEvent, Clusterkit, Health, LoadBalancer, Strategy};

const CONFIG: &str = r#"
[pools.app]
strategy = "weighted_round_robin"
nodes = [
  { id = "web-1", host = "127.0.0.1", port = 8081, weight = 3, zone = "a" },
  { id = "web-2", host = "127.0.0.1", port = 8082, weight = 2, zone = "a" },
  { id = "web-3", host = "127.0.0.1", port = 8083, zone = "b" },
  { id = "web-4", host = "127.0.0.1", port = 8084, zone = "b" },
]
"#;

/// Sends `requests` through the balancer (key `user:<i>`, used by the hashing strategies) and
/// counts picks per node. Each pick is finished at once, so least_connections and p2c see no
/// load and spread evenly; under real concurrency they follow in-flight requests and weights.
fn traffic(lb: &LoadBalancer, requests: usize) -> clusterkit::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for i in 0..requests {
        let key = format!("user:{i}");
        let pick = lb.pick_for(key.as_bytes())?;
        *counts.entry(pick.id().to_string()).or_insert(0) += 1;
        pick.success(Duration::from_micros(250));
    }
    Ok(counts)
}

fn show(label: &str, counts: &BTreeMap<String, usize>) {
    let line: Vec<String> = counts
        .iter()
        .map(|(id, n)| format!("{id}={n:<4}"))
        .collect();
    println!("  {label:<22} {}", line.join(" "));
}

fn main() -> clusterkit::Result<()> {
    let deployment = Clusterkit::parse(CONFIG)?;
    let app: &Cluster = deployment.pool("app")?;
    let lb = app.balancer();
    let mut events = app.subscribe();

    println!(
        "pool {:?}: {} nodes (weights 3, 2, 1, 1)",
        app.name(),
        app.len()
    );
    println!("\n1000 requests per strategy:");
    for strategy in Strategy::ALL {
        app.set_strategy(strategy)?;
        show(strategy.as_str(), &traffic(&lb, 1000)?);
    }

    println!("\nweb-1 fails its health check (strategy p2c, then ketama):");
    for strategy in [Strategy::PowerOfTwoChoices, Strategy::Ketama] {
        app.set_strategy(strategy)?;
        let key_owner = lb.pick_for(b"user:7")?.id().to_string();
        app.set_health("web-1", Health::Unhealthy, "quickstart: simulated failure")?;
        show(&format!("{strategy}, web-1 down"), &traffic(&lb, 1000)?);
        let moved_to = lb.pick_for(b"user:7")?.id().to_string();
        app.set_health("web-1", Health::Healthy, "quickstart: recovered")?;
        show(&format!("{strategy}, web-1 back"), &traffic(&lb, 1000)?);
        if strategy.is_hashing() {
            println!(
                "  key user:7 -> {key_owner}, while web-1 is down -> {moved_to}, after -> {}",
                lb.pick_for(b"user:7")?.id()
            );
        }
    }

    println!("\nevents seen by a subscriber:");
    while let Ok(event) = events.try_recv() {
        match event {
            ClusterEvent::HealthChanged {
                node,
                old,
                new,
                reason,
            } => {
                println!("  {}: {old} -> {new} ({reason})", node.id())
            }
            ClusterEvent::StrategyChanged { strategy } => println!("  strategy -> {strategy}"),
            other => println!("  {other:?}"),
        }
    }
    for status in app.nodes() {
        println!(
            "  {:<6} {:<15} served={:<5} in-flight={} health={}",
            status.node.id(),
            status.node.address(),
            status.stats.successes(),
            status.stats.in_flight(),
            status.health
        );
    }

    // No [cache] section: the embedded in-process cache. Every call is async; block_on runs
    // it on clusterkit's shared runtime, as the C, PHP and Python layers do.
    let cache = deployment.cache();
    println!("\ncache ({:?}):", cache);
    block_on(cache.set(b"greeting", "hello", Some(Duration::from_secs(60))))??;
    println!("  get greeting -> {:?}", block_on(cache.get(b"greeting"))??);
    for _ in 0..3 {
        let v = block_on(
            cache.get_or_compute(b"report", Duration::from_secs(30), || async {
                println!("  (computing report once)");
                Ok(Bytes::from_static(b"42 orders"))
            }),
        )??;
        println!("  get_or_compute report -> {v:?}");
    }
    println!(
        "  increment visits -> {}",
        block_on(cache.increment(b"visits", 1))??
    );
    println!("  stats: {:?}", cache.stats());
    Ok(())
}
