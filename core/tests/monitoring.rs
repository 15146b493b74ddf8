//! Monitoring (issue #15) against real servers: the Prometheus text parsed by a real parser
//! (`promtool check metrics`) with numbers matching what the test did (N picks -> counter
//! N, a SIGSTOPped node ejected), the status page of a 3-pool deployment loaded in headless
//! Chromium, and logs at trace level + metrics that never show values, session ids or data,
//! lock tokens or passwords.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit::blocking::block_on;
use clusterkit::Clusterkit;

mod support;
use support::RedisServer;

/// Parses OpenMetrics text into `name{labels}` -> value (labels as written).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Runs `promtool check metrics` on `text`; panics with its output if it rejects it.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: install Debian's `prometheus` package (scripts/test does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node_toml(id: &str, port: u16) -> String {
    format!("{{ id = \"{id}\", host = \"127.0.0.1\", port = {port} }}")
}

#[test]
fn prometheus_text_parses_and_counts_what_happened() {
    let apps: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let store = RedisServer::start();
    let doc = format!(
        r#"
[pools.app]
strategy = "round_robin"
nodes = [{}, {}, {}]
outlier = {{ consecutive_failures = 3, base_ejection_time = "60s", max_ejected_percent = 50 }}

[pools.cache]
strategy = "ketama"
nodes = [{}]

[pools.locks]
strategy = "round_robin"
nodes = [{}]

[cache]
pool = "cache"
namespace = "montest"

[locks]
pool = "locks"
"#,
        node_toml("a0", apps[0].port()),
        node_toml("a1", apps[1].port()),
        node_toml("a2", apps[2].port()),
        node_toml("r0", store.port()),
        node_toml("r0", store.port()),
    );
    let ck = Clusterkit::parse(&doc).unwrap();
    let lb = ck.balancer("app").unwrap();
    const N: u64 = 60;
    for _ in 0..N {
        let p = lb.pick().unwrap();
        p.success(Duration::from_millis(2));
    }
    // The cache, a lock, a session: each counted once.
    block_on(ck.cache().set(b"k1", b"v1".to_vec(), None))
        .unwrap()
        .unwrap();
    assert!(ck.cache().get_blocking(b"k1").unwrap().is_some());
    assert!(ck.cache().get_blocking(b"absent").unwrap().is_none());
    let g = block_on(ck.locks().acquire("job", Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    block_on(g.release()).unwrap().unwrap();
    let store_ = ck.sessions();
    let mut s = store_.create().unwrap();
    s.set("user", b"42".to_vec());
    block_on(store_.save(&mut s)).unwrap().unwrap();
    assert!(block_on(store_.load(s.id().as_bytes()))
        .unwrap()
        .unwrap()
        .is_some());

    let text = ck.prometheus_text().unwrap();
    promtool(&text);
    let om = ck.openmetrics_text().unwrap();
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE clusterkit_node_picks counter"), "{om}");
    let m = samples(&text);
    let picks: f64 = ["a0", "a1", "a2"]
        .iter()
        .map(|n| m[&format!("clusterkit_node_picks_total{{pool=\"app\",node=\"{n}\"}}")])
        .sum();
    assert_eq!(picks as u64, N, "N picks -> picks counter N");
    assert_eq!(
        m["clusterkit_node_picks_total{pool=\"app\",node=\"a0\"}"] as u64,
        N / 3,
        "round robin: N/3 each"
    );
    assert_eq!(
        m["clusterkit_node_latency_seconds_count{pool=\"app\",node=\"a1\"}"] as u64,
        N / 3
    );
    assert_eq!(m["clusterkit_cache_hits_total{node=\"distributed\"}"], 1.0);
    assert_eq!(
        m["clusterkit_cache_misses_total{node=\"distributed\"}"],
        1.0
    );
    assert_eq!(
        m["clusterkit_cache_latency_seconds_count{node=\"distributed\",operation=\"get\"}"],
        2.0
    );
    assert_eq!(m["clusterkit_lock_acquisitions_total"], 1.0);
    assert_eq!(m["clusterkit_lock_releases_total"], 1.0);
    assert_eq!(m["clusterkit_sessions_created_total"], 1.0);
    assert_eq!(m["clusterkit_sessions_loaded_total"], 1.0);
    assert_eq!(m["clusterkit_pool_nodes{pool=\"app\"}"], 3.0);
    assert_eq!(m["clusterkit_node_ejected{pool=\"app\",node=\"a2\"}"], 0.0);
    assert!(m["clusterkit_redis_connections_total"] >= 1.0);

    // SIGSTOP one app node: every request to it times out, the caller reports failures,
    // outlier detection ejects it, and the scrape shows it.
    let mut frozen = apps.into_iter().collect::<Vec<_>>();
    frozen[2].pause();
    let frozen_port = frozen[2].port();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ejected = false;
    for _ in 0..300 {
        let p = lb.pick().unwrap();
        let started = Instant::now();
        if support::ping(p.port(), Duration::from_millis(150)) {
            p.success(started.elapsed());
        } else {
            assert_eq!(p.port(), frozen_port, "only the frozen node fails");
            p.failure();
        }
        let t = ck.prometheus_text().unwrap();
        if samples(&t)["clusterkit_node_ejected{pool=\"app\",node=\"a2\"}"] == 1.0 {
            ejected = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    assert!(ejected, "the SIGSTOPped node was never shown as ejected");
    let text = ck.prometheus_text().unwrap();
    promtool(&text);
    let m = samples(&text);
    assert_eq!(m["clusterkit_node_healthy{pool=\"app\",node=\"a2\"}"], 0.0);
    assert_eq!(
        m["clusterkit_node_ejections_total{pool=\"app\",node=\"a2\"}"],
        1.0
    );
    assert_eq!(
        m["clusterkit_node_failures_total{pool=\"app\",node=\"a2\"}"],
        3.0
    );
    assert_eq!(m["clusterkit_pool_ejections_total{pool=\"app\"}"], 1.0);
    assert_eq!(m["clusterkit_pool_healthy_nodes{pool=\"app\"}"], 2.0);
    let snap = ck.metrics_snapshot();
    let a2 = &snap.pools.iter().find(|p| p.name == "app").unwrap().nodes[2];
    assert!(a2.ejected && a2.health == "unhealthy", "{a2:?}");
    frozen[2].resume();
    // The existing JSON call keeps its shape and gains locks/sessions/redis.
    let j = ck.metrics();
    assert_eq!(j["cache"]["hits"], 1);
    assert_eq!(j["locks"]["acquired"], 1);
    assert!(j["pools"]["app"]["nodes"].is_array());
}

/// A one-page HTTP server on loopback serving `body` at `/status` (404 elsewhere) until
/// the flag is set; bounded to 50 requests.
fn serve(body: String) -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while !s.load(Ordering::Relaxed) && Instant::now() < end && served < 50 {
            match listener.accept() {
                Ok((mut c, _)) => {
                    served += 1;
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 4096];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let (status, b) = if req.starts_with("GET /status ") {
                        ("200 OK", body.as_str())
                    } else {
                        ("404 Not Found", "not found")
                    };
                    let _ = write!(
                        c,
                        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                        clusterkit::status::HTML_CONTENT_TYPE,
                        b.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, stop, h)
}

/// Loads `url` in headless Chromium and returns the DOM it rendered.
pub fn chromium_dom(url: &str) -> String {
    let bin = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("chromium is missing: install Debian's `chromium` package (scripts/test does)");
    let profile = std::env::temp_dir().join(format!("ck-chromium-{}", std::process::id()));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: kill it if it hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = std::fs::remove_dir_all(profile);
    out
}

/// The `data-health` of the node row `pool`/`node` in a DOM dump.
fn row_health(dom: &str, pool: &str, node: &str) -> Option<String> {
    let needle = format!("data-pool=\"{pool}\" data-node=\"{node}\" data-health=\"");
    let at = dom.find(&needle)? + needle.len();
    Some(dom[at..].split('"').next()?.to_string())
}

#[test]
fn status_page_shows_every_node_of_three_pools_in_chromium() {
    let redis = RedisServer::start();
    let closed = support::closed_port();
    let doc = format!(
        r#"
[pools.web]
strategy = "p2c"
nodes = [{}, {}, {}]
[pools.web.health]
check = "redis"
interval = "50ms"
timeout = "200ms"
fall = 1
rise = 1

[pools.cache]
strategy = "ketama"
nodes = [{}, {}]

[pools.api]
strategy = "round_robin"
nodes = [{}, {}]

[metrics.scaling.web]
target_in_flight = 5
"#,
        node_toml("w0", redis.port()),
        node_toml("w1", redis.port()),
        node_toml("w-down", closed),
        node_toml("c0", 7001),
        node_toml("c1", 7002),
        node_toml("api-<1>", 8001),
        node_toml("api-2", 8002),
    );
    let ck = Clusterkit::parse(&doc).unwrap();
    ck.pool("api").unwrap().drain("api-2").unwrap();
    support::eventually("w-down unhealthy", Duration::from_secs(10), || {
        ck.pool("web").unwrap().healthy_count() == 2
    });
    let html = ck.status_html(Some("test <status>")).unwrap();
    let (port, stop, h) = serve(html);
    let dom = chromium_dom(&format!("http://127.0.0.1:{port}/status"));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(dom.contains("<title>test &lt;status&gt;</title>"), "{dom}");
    let expect = [
        ("web", "w0", "healthy"),
        ("web", "w1", "healthy"),
        ("web", "w-down", "unhealthy"),
        ("cache", "c0", "healthy"),
        ("cache", "c1", "healthy"),
        ("api", "api-&lt;1&gt;", "healthy"),
        ("api", "api-2", "draining"),
    ];
    for (pool, node, health) in expect {
        assert_eq!(
            row_health(&dom, pool, node).as_deref(),
            Some(health),
            "pool {pool} node {node} in the DOM:\n{dom}"
        );
    }
    let rows = dom.matches("<tr class=\"node ").count();
    assert_eq!(rows, 7, "every node once");
    assert!(dom.contains("id=\"scaling\""), "the advisor's row: {dom}");
    // The JSON twin names the same nodes and health.
    let j = ck.status_json().unwrap();
    let web = j["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap();
    let down = web["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "w-down")
        .unwrap();
    assert_eq!(down["health"], "unhealthy");
    assert_eq!(j["scaling"][0]["pool"], "web");
    // Disabled metrics: the page and the text are refused, the snapshot still works.
    let off = Clusterkit::parse("[metrics]\nenabled = false\n").unwrap();
    assert_eq!(
        off.status_html(None).unwrap_err().kind(),
        clusterkit::ErrorKind::Unavailable
    );
    assert!(off.prometheus_text().is_err());
    assert_eq!(off.metrics_snapshot().processes, 1);
}

#[test]
fn trace_logs_and_metrics_never_show_secrets() {
    let password = format!("pw-secret-{}", std::process::id());
    let redis = support::SecureRedis::start(
        support::SecureMode {
            requirepass: Some(password.clone()),
            ..Default::default()
        },
        None,
    );
    let var = format!("CK_MON_PW_{}", std::process::id());
    std::env::set_var(&var, &password);
    clusterkit::log::set_level(Some(clusterkit::log::Level::Trace)).unwrap();
    let doc = format!(
        "[redis]\npassword_env = \"{var}\"\n[pools.cache]\nstrategy = \"ketama\"\nnodes = [{}]\n\
         [cache]\npool = \"cache\"\n[locks]\npool = \"cache\"\n",
        node_toml("r0", redis.port())
    );
    let ck = Clusterkit::parse(&doc).unwrap();
    let value = b"VALUE-secret-7f3a".to_vec();
    block_on(ck.cache().set(b"user:1", value.clone(), None))
        .unwrap()
        .unwrap();
    assert_eq!(
        block_on(ck.cache().get(b"user:1"))
            .unwrap()
            .unwrap()
            .unwrap(),
        value
    );
    assert_eq!(ck.cache().get_blocking(b"user:1").unwrap().unwrap(), value);
    let guard = block_on(ck.locks().acquire("job", Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let token = guard.token().to_string();
    block_on(guard.release()).unwrap().unwrap();
    let store = ck.sessions();
    let mut s = store.create().unwrap();
    s.set("card", b"SESSION-data-91c2".to_vec());
    block_on(store.save(&mut s)).unwrap().unwrap();
    let mut locked = block_on(store.load_locked(s.id().as_bytes()))
        .unwrap()
        .unwrap()
        .unwrap();
    block_on(store.unlock(&mut locked)).unwrap().unwrap();
    let sid = s.id().to_string();
    // A failing connection too (wrong port): errors are logged, with the address only.
    let bad = Clusterkit::parse(&format!(
        "[redis]\npassword_env = \"{var}\"\n[pools.c]\nstrategy = \"ketama\"\nnodes = [{}]\n[cache]\npool = \"c\"\ntimeout = \"200ms\"\non_unavailable = \"error\"\n",
        node_toml("dead", support::closed_port())
    ))
    .unwrap();
    assert!(block_on(bad.cache().get(b"x")).unwrap().is_err());
    assert!(bad.cache().get_blocking(b"x").is_err());

    let records = clusterkit::log::drain(usize::MAX);
    clusterkit::log::set_level(None).unwrap();
    let mut captured: String = records
        .iter()
        .map(|r| format!("{}\n", r.to_json()))
        .collect();
    assert!(
        records.iter().any(|r| r.message == "get"
            && r.fields
                .iter()
                .any(|(k, v)| k == "key_hash" && *v == clusterkit::log::key_hash(b"user:1"))),
        "the cache get is logged with the key's hash: {captured}"
    );
    assert!(
        records.iter().any(|r| r.target == "clusterkit::lock"),
        "{captured}"
    );
    assert!(
        records.iter().any(|r| r.target == "clusterkit::connection"),
        "{captured}"
    );
    captured.push_str(&ck.prometheus_text().unwrap());
    captured.push_str(&ck.status_html(None).unwrap());
    captured.push_str(&ck.status_json().unwrap().to_string());
    captured.push_str(&ck.metrics().to_string());
    captured.push_str(&bad.prometheus_text().unwrap());
    for (what, secret) in [
        ("cache value", "VALUE-secret-7f3a"),
        ("session data", "SESSION-data-91c2"),
        ("session id", sid.as_str()),
        ("lock token", token.as_str()),
        ("password", password.as_str()),
        ("key", "user:1"),
    ] {
        assert!(
            !captured.contains(secret),
            "{what} leaked into logs or metrics"
        );
    }
}

#[test]
fn workers_publish_and_one_scrape_adds_them_up() {
    let dir = std::env::temp_dir().join(format!("ck-mon-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ck = Clusterkit::parse(
        "[pools.app]\nnodes = [{ id = \"a\", host = \"127.0.0.1\", port = 1 }]\n",
    )
    .unwrap();
    for _ in 0..5 {
        ck.balancer("app")
            .unwrap()
            .pick()
            .unwrap()
            .success(Duration::from_millis(1));
    }
    // Another worker's file (as a forked PHP-FPM worker would write it), and a stale one.
    let mut other = ck.metrics_snapshot();
    other.pools[0].nodes[0].picks = 7;
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ck-999999991.json"),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("ck-999999992.json"),
        serde_json::to_vec(&other).unwrap(),
    )
    .unwrap();
    let old = std::fs::File::options()
        .write(true)
        .open(dir.join("ck-999999992.json"))
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(old);
    ck.publish_metrics(&dir).unwrap();
    let total = ck.aggregate_metrics(&dir, Duration::from_secs(60)).unwrap();
    assert_eq!(
        total.processes, 2,
        "own + one fresh worker; the stale file is ignored"
    );
    assert_eq!(total.pools[0].nodes[0].picks, 12);
    assert!(
        !dir.join("ck-999999992.json").exists(),
        "stale files are removed"
    );
    let text = total.to_prometheus();
    promtool(&text);
    assert!(
        text.contains("clusterkit_node_picks_total{pool=\"app\",node=\"a\"} 12"),
        "{text}"
    );
    assert!(text.contains("clusterkit_processes 2"), "{text}");
    let e = ck.aggregate_metrics(&dir, Duration::ZERO).unwrap_err();
    assert!(e.to_string().contains("max_age"), "{e}");
    let e = ck.publish_metrics(std::path::Path::new("")).unwrap_err();
    assert!(e.to_string().contains("dir"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every metric name in `text` (identifiers starting with `clusterkit_`).
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("clusterkit_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(text[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn dashboards_and_alerts_name_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/monitoring");
    // Every family the library can export: a deployment with a pool, an advisor and data.
    let ck = Clusterkit::parse(
        "[pools.app]\nnodes = [{ id = \"a\", host = \"127.0.0.1\", port = 1 }]\n\
         [metrics.scaling.app]\ntarget_in_flight = 2\n",
    )
    .unwrap();
    ck.balancer("app")
        .unwrap()
        .pick()
        .unwrap()
        .success(Duration::from_millis(1));
    let exported: std::collections::HashSet<String> = ck
        .prometheus_text()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(exported.len() > 30, "{exported:?}");
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "query names no clusterkit metric: {expr}"
            );
            for n in names {
                assert!(known(&n), "panel {:?}: {n} is not exported", panel["title"]);
            }
            queries += 1;
        }
    }
    assert!(queries >= 12, "{queries} queries");
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            for n in metric_names(q) {
                assert!(known(&n), "variable {:?}: {n}", v["name"]);
            }
        }
    }
    let alerts = std::fs::read_to_string(root.join("alerts.yml")).unwrap();
    let mut exprs = 0;
    for line in alerts.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for n in metric_names(line) {
            assert!(known(&n), "alerts.yml: {n} is not exported ({line})");
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "{exprs} metric references in alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("alerts.yml"))
        .output()
        .expect("promtool is missing: install Debian's `prometheus` package (scripts/test does)");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
