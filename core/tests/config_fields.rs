//! Every config field's bad values are refused by `Config::parse` with the field's path as
//! written in the document (table-driven), and a document using every field parses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clusterkit::{Config, Error, ErrorKind};

/// The field path of the error `doc` gives (panics, failing the test, if it parses).
fn field_of(doc: &str) -> (String, String) {
    match Config::parse(doc) {
        Ok(_) => panic!("document was accepted but must be refused:\n{doc}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{doc}\n{e}");
            let text = e.to_string();
            match e {
                Error::InvalidArgument { field, .. } => (field, text),
                other => panic!("{other:?}"),
            }
        }
    }
}

const NODE: &str = r#"{ id = "a", host = "127.0.0.1", port = 1 }"#;

fn pool(extra: &str) -> String {
    format!("[pools.app]\nnodes = [ {NODE} ]\n{extra}\n")
}

fn hashing_pool(extra: &str) -> String {
    format!("[pools.app]\nstrategy = \"maglev\"\nnodes = [ {NODE} ]\n{extra}\n")
}

fn node(extra: &str) -> String {
    format!("[pools.app]\nnodes = [ {{ id = \"a\", host = \"127.0.0.1\", port = 1{extra} }} ]\n")
}

#[test]
fn every_bad_value_names_its_field_path() {
    let big = "x".repeat(300);
    let mut cases: Vec<(String, &str)> = vec![
        // --- document (an unknown field is named by its own path) ---
        ("{ not json".into(), "document"),
        (format!("[pools.app]\nnodes = []\n# {}", "x".repeat(2 << 20)), "document"),
        ("[nope]\n".into(), "nope"),
        // --- pools ---
        (format!("[pools.\"{big}\"]\n"), "pools"),
        ("[pools.\"a b\"]\n".into(), "pools"),
        ("[pools.app]\nstrategy = \"fastest\"\n".into(), "pools.app.strategy"),
        ("[pools.app]\nstratgy = \"p2c\"\n".into(), "pools.app.stratgy"),
        ("[pools.app]\npanic_mode = \"maybe\"\n".into(), "pools.app.panic_mode"),
        (pool("panic_threshold = 1.5"), "pools.app.panic_threshold"),
        (pool("panic_threshold = -0.1"), "pools.app.panic_threshold"),
        (pool("panic_threshold = nan"), "pools.app.panic_threshold"),
        (pool("panic_threshold = inf"), "pools.app.panic_threshold"),
        (pool("bounded_load = 1.25"), "pools.app.bounded_load"), // not a hashing strategy
        (hashing_pool("bounded_load = 0.5"), "pools.app.bounded_load"),
        (hashing_pool("bounded_load = 1e9"), "pools.app.bounded_load"),
        (hashing_pool("maglev_table_size = 1000"), "pools.app.maglev_table_size"), // not prime
        (hashing_pool("maglev_table_size = 97"), "pools.app.maglev_table_size"), // < 100 x nodes
        (hashing_pool("maglev_table_size = 2147483647"), "pools.app.maglev_table_size"), // too big
        (hashing_pool("maglev_table_size = 5000000000"), "pools.app.maglev_table_size"), // > u32
        (pool("maglev_table_size = 65537"), "pools.app.maglev_table_size"), // not maglev
        (pool("slow_start = \"0ms\""), "pools.app.slow_start"),
        (pool("slow_start = \"2h\""), "pools.app.slow_start"),
        (pool("slow_start = \"soon\""), "pools.app.slow_start"),
        // --- nodes ---
        ("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = 0 } ]\n".into(), "pools.app.nodes[0].port"),
        ("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = 70000 } ]\n".into(), "pools.app.nodes[0].port"),
        ("[pools.app]\nnodes = [ { id = \"a\", host = \"h\", port = -1 } ]\n".into(), "pools.app.nodes[0].port"),
        (format!("[pools.app]\nnodes = [ {NODE}, {{ id = \"b\", host = \"h\", port = 0 }} ]\n"), "pools.app.nodes[1].port"),
        (format!("[pools.app]\nnodes = [ {NODE}, {{ id = \"a\", host = \"h\", port = 2 }} ]\n"), "pools.app.nodes[1].id"),
        ("[pools.app]\nnodes = [ { id = \"\", host = \"h\", port = 1 } ]\n".into(), "pools.app.nodes[0].id"),
        (format!("[pools.app]\nnodes = [ {{ id = \"{big}\", host = \"h\", port = 1 }} ]\n"), "pools.app.nodes[0].id"),
        ("[pools.app]\nnodes = [ { id = \"a\", host = \"\", port = 1 } ]\n".into(), "pools.app.nodes[0].host"),
        ("[pools.app]\nnodes = [ { id = \"a\", host = \"a b\", port = 1 } ]\n".into(), "pools.app.nodes[0].host"),
        ("[pools.app]\nnodes = [ { host = \"h\", port = 1 } ]\n".into(), "pools.app.nodes[0]"),
        (node(", weight = 0"), "pools.app.nodes[0].weight"),
        (node(", weight = 257"), "pools.app.nodes[0].weight"),
        (node(", zone = \"\""), "pools.app.nodes[0].zone"),
        (node(", zone = \"a b\""), "pools.app.nodes[0].zone"),
        (node(", metadata = { \"\" = \"x\" }"), "pools.app.nodes[0].metadata"),
        (node(&format!(", metadata = {{ role = \"{}\" }}", "v".repeat(5000))), "pools.app.nodes[0].metadata.role"),
        (node(", colour = 1"), "pools.app.nodes[0].colour"),
        (node(", health = { check = \"tcp\", interval = \"1ms\" }"), "pools.app.nodes[0].health.interval"),
        (node(", health = { check = \"tcp\", fall = 0 }"), "pools.app.nodes[0].health.fall"),
        (node(", health = { check = \"tcp\", path = \"/x\" }"), "pools.app.nodes[0].health.path"),
        (node(", health = { check = \"http\", interval = \"2 parsecs\" }"), "pools.app.nodes[0].health.interval"),
        // --- health ---
        (pool("health = { check = \"smtp\" }"), "pools.app.health.check"),
        (pool("health = { interval = \"2s\" }"), "pools.app.health"),
        (pool("health = { check = \"http\", path = \"no-slash\" }"), "pools.app.health.path"),
        (pool("health = { check = \"http\", path = \"/a b\" }"), "pools.app.health.path"),
        (pool(&format!("health = {{ check = \"http\", path = \"/{}\" }}", "p".repeat(3000))), "pools.app.health.path"),
        (pool("health = { check = \"tcp\", path = \"/healthz\" }"), "pools.app.health.path"),
        (pool("health = { check = \"redis\", expected_status = [200, 299] }"), "pools.app.health.expected_status"),
        (pool("health = { check = \"http\", expected_status = [300, 200] }"), "pools.app.health.expected_status"),
        (pool("health = { check = \"http\", expected_status = [99, 200] }"), "pools.app.health.expected_status"),
        (pool("health = { check = \"http\", expected_status = [200, 600] }"), "pools.app.health.expected_status"),
        (pool("health = { check = \"http\", expected_status = [200] }"), "pools.app.health.expected_status"),
        (pool("health = { check = \"tcp\", interval = \"5ms\" }"), "pools.app.health.interval"),
        (pool("health = { check = \"tcp\", interval = \"2h\" }"), "pools.app.health.interval"),
        (pool("health = { check = \"tcp\", interval = \"2 parsecs\" }"), "pools.app.health.interval"),
        (pool("health = { check = \"tcp\", timeout = \"0ms\" }"), "pools.app.health.timeout"),
        (pool("health = { check = \"tcp\", timeout = \"61s\" }"), "pools.app.health.timeout"),
        (pool("health = { check = \"tcp\", rise = 0 }"), "pools.app.health.rise"),
        (pool("health = { check = \"tcp\", rise = 1001 }"), "pools.app.health.rise"),
        (pool("health = { check = \"tcp\", rise = -1 }"), "pools.app.health.rise"),
        (pool("health = { check = \"tcp\", fall = 0 }"), "pools.app.health.fall"),
        (pool("health = { check = \"tcp\", fall = 100000 }"), "pools.app.health.fall"),
        (pool("health = { check = \"tcp\", jitter = 0.9 }"), "pools.app.health.jitter"),
        (pool("health = { check = \"tcp\", jitter = -0.1 }"), "pools.app.health.jitter"),
        (pool("health = { check = \"tcp\", jitter = nan }"), "pools.app.health.jitter"),
        (pool("health = { check = \"tcp\", colour = 1 }"), "pools.app.health.colour"),
        // --- outlier ---
        (pool("outlier = { consecutive_failures = 0 }"), "pools.app.outlier.consecutive_failures"),
        (pool("outlier = { consecutive_failures = 5000 }"), "pools.app.outlier.consecutive_failures"),
        (pool("outlier = { base_ejection_time = \"0ms\" }"), "pools.app.outlier.base_ejection_time"),
        (pool("outlier = { base_ejection_time = \"25h\" }"), "pools.app.outlier.base_ejection_time"),
        (pool("outlier = { base_ejection_time = \"10m\" }"), "pools.app.outlier.base_ejection_time"), // > default max 300s
        (pool("outlier = { max_ejection_time = \"0ms\" }"), "pools.app.outlier.max_ejection_time"),
        (pool("outlier = { max_ejection_time = \"48h\" }"), "pools.app.outlier.max_ejection_time"),
        (pool("outlier = { base_ejection_time = \"60s\", max_ejection_time = \"30s\" }"), "pools.app.outlier.max_ejection_time"),
        (pool("outlier = { max_ejected_percent = 150 }"), "pools.app.outlier.max_ejected_percent"),
        (pool("outlier = { max_ejected_percent = -1 }"), "pools.app.outlier.max_ejected_percent"),
        (pool("outlier = { max_ejected_percent = nan }"), "pools.app.outlier.max_ejected_percent"),
        (pool("outlier = { max_ejected_share = 0.5 }"), "pools.app.outlier.max_ejected_share"),
        // --- discovery ---
        (pool("discovery = { redis = \"\", service = \"web\" }"), "pools.app.discovery.redis"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"\" }"), "pools.app.discovery.service"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"a b\" }"), "pools.app.discovery.service"),
        (pool(&format!("discovery = {{ redis = \"127.0.0.1:6379\", service = \"{big}\" }}")), "pools.app.discovery.service"),
        (pool("discovery = { redis = \"127.0.0.1:6379\" }"), "pools.app.discovery.service"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", ttl = \"10ms\" }"), "pools.app.discovery.ttl"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", ttl = \"48h\" }"), "pools.app.discovery.ttl"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", interval = \"1ms\" }"), "pools.app.discovery.interval"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", ttl = \"1s\", interval = \"2s\" }"), "pools.app.discovery.interval"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", key_prefix = \"a b\" }"), "pools.app.discovery.key_prefix"),
        (pool("discovery = { redis = \"127.0.0.1:6379\", service = \"web\", key_prefix = \"\" }"), "pools.app.discovery.key_prefix"),
        (pool("discovery = { redis = \"::not a url\", service = \"web\" }"), "pools.app.discovery.redis"),
        (pool("discovery = { redis = \"redis://:secretpw@\", service = \"web\" }"), "pools.app.discovery.redis"),
        // --- cache ---
        ("[cache]\npool = \"nope\"\n".into(), "cache.pool"),
        (format!("{}[cache]\npool = \"app\"\n", pool("")), "cache.pool"), // p2c cannot shard
        (format!("{}[cache]\npool = \"app\"\nredis = \"127.0.0.1:6379\"\n", hashing_pool("")), "cache.pool"),
        ("[cache]\nredis = \"\"\n".into(), "cache.redis"),
        ("[cache]\nredis = \"a b:1\"\n".into(), "cache.redis"),
        ("[cache]\nredis = \"redis://:secretpw@/x y\"\n".into(), "cache.redis"),
        ("[cache]\nredis = \"http://:secretpw@h:1\"\n".into(), "cache.redis"),
        ("[cache]\nnamespace = \"\"\n".into(), "cache.namespace"),
        ("[cache]\nnamespace = \"a*\"\n".into(), "cache.namespace"),
        (format!("[cache]\nnamespace = \"{big}\"\n"), "cache.namespace"),
        ("[cache]\nreplicas = 0\n".into(), "cache.replicas"),
        ("[cache]\nreplicas = 17\n".into(), "cache.replicas"),
        ("[cache]\nreplicas = -1\n".into(), "cache.replicas"),
        ("[cache]\nwrite_quorum = \"some\"\n".into(), "cache.write_quorum"),
        ("[cache]\non_unavailable = \"panic\"\n".into(), "cache.on_unavailable"),
        ("[cache]\ntimeout = \"0ms\"\n".into(), "cache.timeout"),
        ("[cache]\ntimeout = \"2m\"\n".into(), "cache.timeout"),
        ("[cache]\ntimeout = 5\n".into(), "cache.timeout"),
        ("[cache]\nbatch_chunk = 0\n".into(), "cache.batch_chunk"),
        ("[cache]\nbatch_chunk = 1000001\n".into(), "cache.batch_chunk"),
        ("[cache]\nmax_value_bytes = 0\n".into(), "cache.max_value_bytes"),
        ("[cache]\nmax_value_bytes = 1000000000000\n".into(), "cache.max_value_bytes"),
        ("[cache]\nmax_bytes = 10\n".into(), "cache.max_bytes"),
        ("[cache]\nmax_bytes = 9000000000000000\n".into(), "cache.max_bytes"),
        ("[cache]\nnamesapce = \"x\"\n".into(), "cache.namesapce"),
        // --- locks ---
        ("[locks]\npool = \"nope\"\n".into(), "locks.pool"),
        ("[pools.l]\n[locks]\npool = \"l\"\n".into(), "locks.pool"), // no nodes
        (format!("[pools.l]\nnodes = [ {NODE}, {{ id = \"b\", host = \"127.0.0.1\", port = 1 }} ]\n[locks]\npool = \"l\"\n"), "locks.pool"), // same master twice
        ("[locks]\ntimeout = \"0ms\"\n".into(), "locks.timeout"),
        ("[locks]\ntimeout = \"10m\"\n".into(), "locks.timeout"),
        ("[locks]\ntimeout = \"later\"\n".into(), "locks.timeout"),
        ("[locks]\nconnect_timeout = \"0ms\"\n".into(), "locks.connect_timeout"),
        ("[locks]\nconnect_timeout = \"2m\"\n".into(), "locks.connect_timeout"),
        ("[locks]\nkey_prefix = \"\"\n".into(), "locks.key_prefix"),
        ("[locks]\nkey_prefix = \"a b\"\n".into(), "locks.key_prefix"),
        ("[locks]\nkey_prefix = \"a:b\"\n".into(), "locks.key_prefix"),
        (format!("[locks]\nkey_prefix = \"{big}\"\n"), "locks.key_prefix"),
        ("[locks]\nauto_renew = \"yes\"\n".into(), "locks.auto_renew"),
        ("[locks]\nttl = \"1s\"\n".into(), "locks.ttl"),
        // --- sessions ---
        ("[sessions]\nidle_timeout = \"0ms\"\n".into(), "sessions.idle_timeout"),
        ("[sessions]\nidle_timeout = \"9000h\"\n".into(), "sessions.idle_timeout"),
        ("[sessions]\nabsolute_timeout = \"0ms\"\n".into(), "sessions.absolute_timeout"),
        ("[sessions]\nabsolute_timeout = \"9000h\"\n".into(), "sessions.absolute_timeout"),
        ("[sessions]\nrefresh_interval = \"25h\"\n".into(), "sessions.refresh_interval"),
        ("[sessions]\nlock_ttl = \"0ms\"\n".into(), "sessions.lock_ttl"),
        ("[sessions]\nlock_ttl = \"25h\"\n".into(), "sessions.lock_ttl"),
        ("[sessions]\nlock_wait = \"2h\"\n".into(), "sessions.lock_wait"),
        ("[sessions]\nlock_wait = \"soon\"\n".into(), "sessions.lock_wait"),
        ("[sessions]\nlock = { ttl = \"1s\" }\n".into(), "sessions.lock"),
    ];
    // JSON takes the same paths.
    cases.extend([
        (r#"{"pools":{"app":{"nodes":[{"id":"a","host":"h","port":1},{"id":"b","host":"h","port":0}]}}}"#.to_string(), "pools.app.nodes[1].port"),
        (r#"{"pools":{"app":{"health":{"check":"tcp","fall":0}}}}"#.into(), "pools.app.health.fall"),
        (r#"{"pools":{"app":{"outlier":{"max_ejected_percent":101}}}}"#.into(), "pools.app.outlier.max_ejected_percent"),
        (r#"{"pools":{"app":{"strategy":"maglev","maglev_table_size":4294967291}}}"#.into(), "pools.app.maglev_table_size"),
        (r#"{"cache":{"batch_chunk":0}}"#.into(), "cache.batch_chunk"),
        (r#"{"locks":{"timeout":"0ms"}}"#.into(), "locks.timeout"),
        (r#"{"sessions":{"lock_ttl":"48h"}}"#.into(), "sessions.lock_ttl"),
        (r#"{"pools":{"app":{"nodes":[{"id":"a","host":"h","port":1,"health":{"check":"tcp","interval":"0ms"}}]}}}"#.into(), "pools.app.nodes[0].health.interval"),
        // --- metrics (docs/monitoring.md) ---
        ("[metrics]\nenabled = \"yes\"\n".into(), "metrics.enabled"),
        ("[metrics]\nenbled = true\n".into(), "metrics.enbled"),
        ("[metrics.scaling.nowhere]\n".into(), "metrics.scaling.nowhere"),
        (pool("[metrics.scaling.app]\ntarget_in_flight = 0"), "metrics.scaling.app.target_in_flight"),
        (pool("[metrics.scaling.app]\ntarget_p95 = \"0ms\""), "metrics.scaling.app.target_p95"),
        (pool("[metrics.scaling.app]\nmax_error_rate = 1.5"), "metrics.scaling.app.max_error_rate"),
        (pool("[metrics.scaling.app]\nmin_nodes = 0"), "metrics.scaling.app.min_nodes"),
        (pool("[metrics.scaling.app]\nmin_nodes = 5\nmax_nodes = 4"), "metrics.scaling.app.max_nodes"),
        (pool("[metrics.scaling.app]\ntolerance = 1.0"), "metrics.scaling.app.tolerance"),
        (pool("[metrics.scaling.app]\nscale_out_after = \"48h\""), "metrics.scaling.app.scale_out_after"),
        (pool("[metrics.scaling.app]\nscale_in_after = \"48h\""), "metrics.scaling.app.scale_in_after"),
        (pool("[metrics.scaling.app]\ncooldown = \"48h\""), "metrics.scaling.app.cooldown"),
        (pool("[metrics.scaling.app]\ncooldwn = \"1s\""), "metrics.scaling.app.cooldwn"),
        // --- queue (issue #16) ---
        ("[queue]\npool = \"nowhere\"\n".into(), "queue.pool"),
        ("[queue]\nredis = \"a b\"\n".into(), "queue.redis"),
        (pool("[queue]\npool = \"app\"\nredis = \"127.0.0.1:6379\""), "queue.redis"),
        ("[queue]\nnamespace = \"a:b\"\n".into(), "queue.namespace"),
        ("[queue]\nvisibility_timeout = \"1ms\"\n".into(), "queue.visibility_timeout"),
        ("[queue]\nvisibility_timeout = \"25h\"\n".into(), "queue.visibility_timeout"),
        ("[queue]\nblock = \"2m\"\n".into(), "queue.block"),
        ("[queue]\nmax_attempts = 0\n".into(), "queue.max_attempts"),
        ("[queue]\nmax_attempts = -1\n".into(), "queue.max_attempts"),
        ("[queue]\nbackoff = { kind = \"linear\" }\n".into(), "queue.backoff.kind"),
        ("[queue]\nbackoff = { kind = \"fixed\" }\n".into(), "queue.backoff.delay"),
        ("[queue]\nbackoff = { kind = \"exponential\", delay = \"2s\", max = \"1s\" }\n".into(), "queue.backoff.max"),
        ("[queue]\nbackoff = { kind = \"fixed\", delay = \"0ms\" }\n".into(), "queue.backoff.delay"),
        ("[queue]\nmax_payload_bytes = 0\n".into(), "queue.max_payload_bytes"),
        ("[queue]\ndead_history = 0\n".into(), "queue.dead_history"),
        ("[queue]\nidempotency_ttl = \"0ms\"\n".into(), "queue.idempotency_ttl"),
        ("[queue]\nqueues = [\"ok\", \"not ok\"]\n".into(), "queue.queues[1]"),
        ("[queue]\nqueus = []\n".into(), "queue.queus"),
    ]);
    let mut wrong = Vec::new();
    for (doc, want) in &cases {
        let (field, text) = field_of(doc);
        if field != *want {
            wrong.push(format!(
                "want {want:?}, got {field:?} ({text}) for:\n{}",
                &doc[..doc.len().min(300)]
            ));
        }
        assert!(
            text.len() < 2000,
            "message too long ({} bytes) for {want}",
            text.len()
        );
        assert!(!text.contains("secretpw"), "the password is quoted: {text}");
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases name the wrong field:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n\n")
    );
}

/// Every field at a sane value (its bounds included) parses, so the bounds refuse only
/// what they should.
#[test]
fn a_document_with_every_field_parses() {
    let doc = r#"
[pools.app]
strategy = "p2c"
panic_mode = "error"
panic_threshold = 0.5
slow_start = "1h"
nodes = [
  { id = "web-1", host = "127.0.0.1", port = 65535, weight = 256, zone = "a", metadata = { role = "web" }, health = { check = "http", path = "/ready", expected_status = [100, 599], interval = "10ms", timeout = "60s", rise = 1000, fall = 1, jitter = 0.5 } },
  { id = "web-2", host = "::1", port = 1 },
]
health = { check = "tcp", interval = "1h", timeout = "1ms", rise = 1, fall = 1000, jitter = 0.0 }
outlier = { consecutive_failures = 1000, base_ejection_time = "24h", max_ejection_time = "24h", max_ejected_percent = 100 }
discovery = { redis = "127.0.0.1:6379", service = "web", ttl = "24h", interval = "10ms", key_prefix = "ckreg" }

[pools.cache]
strategy = "maglev"
maglev_table_size = 1000003
bounded_load = 100.0
nodes = [ { id = "r1", host = "127.0.0.1", port = 6379 } ]

[pools.locks]
nodes = [ { id = "l1", host = "127.0.0.1", port = 7001 }, { id = "l2", host = "127.0.0.1", port = 7002 } ]

[cache]
pool = "cache"
namespace = "myapp"
replicas = 16
write_quorum = "majority"
on_unavailable = "error"
timeout = "60s"
batch_chunk = 100000
max_value_bytes = 536870912
max_bytes = 1099511627776

[locks]
pool = "locks"
timeout = "1ms"
key_prefix = "applock"
auto_renew = true

[sessions]
idle_timeout = "8760h"
absolute_timeout = "8760h"
refresh_interval = "0ms"
lock_ttl = "24h"
lock_wait = "0ms"

[metrics]
enabled = true

[queue]
pool = "cache"
namespace = "jobs"
visibility_timeout = "24h"
block = "60s"
max_attempts = 1000
backoff = { kind = "exponential", delay = "1ms", max = "8760h", jitter = false }
max_payload_bytes = 536870912
dead_history = 100000000
idempotency_ttl = "8760h"
queues = ["emails", "reports.daily"]

[metrics.scaling.app]
target_in_flight = 0.5
target_p95 = "24h"
max_error_rate = 0.99
min_nodes = 1
max_nodes = 10000
tolerance = 0.0
scale_out_after = "0ms"
scale_in_after = "24h"
cooldown = "24h"
"#;
    let c = Config::parse(doc).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.pools.len(), 3);
    assert_eq!(c.pools["cache"].maglev_table_size, Some(1_000_003));
    // Written back as JSON, it parses to the same document.
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(Config::parse(&json).unwrap(), c);
}

/// The README's example document parses (the bounds refuse nothing it shows).
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("a toml block in README.md") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("the block ends");
    let c = Config::parse(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.pools.contains_key("app") && c.cache.is_some(), "{c:?}");
}

/// Error messages say durations the way the document writes them.
#[test]
fn duration_bounds_are_written_like_the_document() {
    let e = Config::parse("[sessions]\nlock_ttl = \"48h\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid sessions.lock_ttl: must be between 1ms and 24h, got 48h"
    );
    let c = Config::parse("[pools.app]\nhealth = { check = \"tcp\", interval = \"10ms\" }\n")
        .unwrap_or_else(|e| panic!("the lower bound itself is valid: {e}"));
    assert_eq!(
        c.pools["app"].health.as_ref().unwrap().interval.unwrap().0,
        std::time::Duration::from_millis(10)
    );
    let e = Config::parse("[pools.app]\nhealth = { check = \"tcp\", interval = \"5ms\" }\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid pools.app.health.interval: must be between 10ms and 1h, got 5ms"
    );
}

/// A float written back as JSON parses to the same bits (the fuzzer found a jitter that moved
/// by one ULP before serde_json's exact float parsing was enabled).
#[test]
fn floats_survive_a_json_round_trip() {
    let c = Config::parse(
        "[pools.app]\nhealth = { check = \"tcp\", jitter = 0.19223372036854775807 }\n",
    )
    .unwrap();
    let again = Config::parse(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}
