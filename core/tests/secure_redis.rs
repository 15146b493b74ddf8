//! Production connections against real secured `redis-server` processes: `--requirepass`, an
//! ACL user with the default user off, TLS only (certificates made by the test with openssl),
//! mutual TLS, a database index. Every backend and pool feature is driven through one config
//! document: the sharded cache (both nodes), the single-Redis cache (async and the blocking
//! callers' synchronous connections), Redlock over three masters, sessions, the Redis health
//! PING and registry discovery. Wrong passwords and a wrong CA give `unavailable` errors, and
//! no error message, `Debug` output or health reason contains a password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use clusterkit::discovery::{RedisRegistry, RegistryOptions};
use clusterkit::{
    Clusterkit, Config, ConnectionSettings, ErrorKind, Health, Node, Secret, TlsOptions,
};
use support::{eventually, SecureMode, SecureRedis, TestCerts};

const PATIENCE: Duration = Duration::from_secs(15);
// Timeouts in the documents are 3 s: a first TLS connection in a debug build on a loaded
// 2-core machine (rustls handshake, redis-rs loading the system roots) can exceed 1 s.

/// A password nobody would type, unique per call (so one test's secret never matches text
/// produced by another).
fn password(tag: &str) -> String {
    format!(
        "pw-{tag}-{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// The whole deployment over `servers` (2 cache shards = servers[0..2], 3 Redlock masters,
/// the registry on servers[0]) with `redis_section` as the document's `[redis]`.
fn document(redis_section: &str, servers: &[SecureRedis], extra: &str) -> String {
    let node = |i: usize| {
        format!(
            "{{ id = \"n{i}\", host = \"127.0.0.1\", port = {} }}",
            servers[i].port()
        )
    };
    format!(
        r#"
{redis_section}

[pools.cache]
strategy = "ketama"
nodes = [ {n0}, {n1} ]
health = {{ check = "redis", interval = "100ms", timeout = "1s", rise = 1, fall = 1 }}

[pools.locks]
nodes = [ {n0}, {n1}, {n2} ]

[pools.app]
discovery = {{ redis = "127.0.0.1:{p0}", service = "web", ttl = "2s", interval = "200ms" }}

[cache]
pool = "cache"
namespace = "sec"
timeout = "3s"

[locks]
pool = "locks"
timeout = "3s"
{extra}
"#,
        n0 = node(0),
        n1 = node(1),
        n2 = node(2),
        p0 = servers[0].port(),
    )
}

/// Keys matching `pattern` in database `db`.
fn count_keys(server: &SecureRedis, db: i64, pattern: &str) -> u64 {
    let out = server.cli(&["-n", &db.to_string(), "--scan", "--pattern", pattern]);
    out.lines().filter(|l| !l.trim().is_empty()).count() as u64
}

/// Runs every feature of a deployment built from `doc`; asserts that the data lands in
/// database `db` of the servers.
async fn every_feature(doc: &str, servers: &[SecureRedis], db: i64) {
    let ck = Clusterkit::parse(doc).unwrap();
    let settings = ck.config().redis_settings(None).unwrap();

    // Health: the Redis PING check passes only with working auth/TLS.
    let pool = ck.pool("cache").unwrap().clone();
    eventually("both cache nodes healthy", PATIENCE, || {
        pool.nodes().iter().all(|s| s.health == Health::Healthy)
    });

    // Sharded cache: every key readable, spread over both nodes, in database `db` (empty
    // first: this runs more than once on the same servers).
    ck.cache().clear().await.unwrap();
    let before: Vec<u64> = servers[..2]
        .iter()
        .map(|s| count_keys(s, db, "sec:c:k*"))
        .collect();
    for i in 0..20 {
        let k = format!("k{i}");
        ck.cache()
            .set(k.as_bytes(), format!("v{i}"), Some(Duration::from_secs(60)))
            .await
            .unwrap();
    }
    for i in 0..20 {
        let k = format!("k{i}");
        let v = ck.cache().get(k.as_bytes()).await.unwrap().unwrap();
        assert_eq!(&v[..], format!("v{i}").as_bytes());
    }
    let after: Vec<u64> = servers[..2]
        .iter()
        .map(|s| count_keys(s, db, "sec:c:k*"))
        .collect();
    assert_eq!(
        after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        20,
        "20 keys in db {db}: before {before:?}, after {after:?}"
    );
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both shards hold keys: {before:?} -> {after:?}"
    );

    // Sessions (in the cache's backend).
    let mut s = ck.sessions().create().unwrap();
    s.set("user", "alice");
    ck.sessions().save(&mut s).await.unwrap();
    let loaded = ck
        .sessions()
        .load(s.id().as_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&loaded.get("user").unwrap()[..], b"alice");
    let mut locked = ck
        .sessions()
        .load_locked(s.id().as_bytes())
        .await
        .unwrap()
        .unwrap();
    locked.set("n", "1");
    ck.sessions().save(&mut locked).await.unwrap();
    assert!(ck.sessions().destroy(s.id().as_bytes()).await.unwrap());

    // Redlock over three masters: exclusive, fenced, released.
    let g = ck
        .locks()
        .try_acquire("secure-lock", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a free lock is acquired");
    assert!(g.fencing_token() >= 1);
    // A majority holds the lock key in database `db` (the third may still be in flight).
    let holders = servers
        .iter()
        .filter(|s| count_keys(s, db, "*secure-lock*") > 0)
        .count();
    assert!(
        holders >= 2,
        "the lock key lands in db {db} on a majority: {holders}"
    );
    assert!(ck
        .locks()
        .try_acquire("secure-lock", Duration::from_secs(10))
        .await
        .unwrap()
        .is_none());
    g.release().await.unwrap();
    let g2 = ck
        .locks()
        .try_acquire("secure-lock", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("released lock is free again");
    g2.release().await.unwrap();

    // Single-Redis cache with the same settings: async and the blocking (synchronous) path.
    let single = clusterkit::cache::Cache::redis(
        &servers[2].addr(),
        "single",
        clusterkit::cache::RedisOptions::default().with_connection(settings.clone()),
    )
    .unwrap();
    single.set(b"one", "1", None).await.unwrap();
    assert_eq!(&single.get(b"one").await.unwrap().unwrap()[..], b"1");
    let blocking = single.clone();
    // From a plain thread, as C and PHP call it: the synchronous connection pool.
    let v = std::thread::spawn(move || blocking.get_blocking(b"one"))
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&v[..], b"1");
    let out = servers[2].cli(&["-n", &db.to_string(), "GET", "single:c:one"]);
    assert_eq!(out.trim(), "1", "the single cache writes db {db}");

    // Registry discovery: a registration over the same settings shows up in pool "app".
    let registry = RedisRegistry::new(
        &servers[0].addr(),
        "web",
        RegistryOptions::default()
            .with_ttl(Duration::from_secs(2))
            .with_heartbeat_interval(Duration::from_millis(200))
            .with_connection(settings.clone()),
    )
    .unwrap();
    let reg = registry
        .register(Node::new("web-1", "127.0.0.1", 8081).unwrap())
        .await
        .unwrap();
    let app = ck.pool("app").unwrap().clone();
    eventually("the registered node is discovered", PATIENCE, || {
        app.get("web-1").is_some()
    });
    reg.deregister().await.unwrap();
}

/// Every error message of a deployment whose password is wrong, plus the health reasons.
async fn failing_messages(doc: &str) -> Vec<String> {
    let ck = Clusterkit::parse(doc).unwrap();
    let mut out = Vec::new();
    let e = ck.cache().get(b"k").await;
    // The sharded cache reads a miss on unavailable owners by default: use set.
    let e2 = ck.cache().set(b"k", "v", None).await.unwrap_err();
    assert_eq!(e2.kind(), ErrorKind::Unavailable, "{e2}");
    out.push(e2.to_string());
    if let Err(e) = e {
        out.push(e.to_string());
    }
    match ck.locks().try_acquire("x", Duration::from_secs(1)).await {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            out.push(e.to_string());
        }
        Ok(g) => assert!(g.is_none(), "a lock acquired with a wrong password"),
    }
    let mut s = ck.sessions().create().unwrap();
    s.set("a", "b");
    out.push(ck.sessions().save(&mut s).await.unwrap_err().to_string());
    let pool = ck.pool("cache").unwrap().clone();
    eventually(
        "cache nodes unhealthy with a wrong password",
        PATIENCE,
        || pool.nodes().iter().all(|s| s.health == Health::Unhealthy),
    );
    for s in pool.nodes() {
        out.push(s.reason.to_string());
    }
    out.push(format!("{ck:?}"));
    out.push(format!("{:?}", ck.config()));
    out.push(serde_json::to_string(ck.config()).unwrap());
    out.push(ck.metrics().to_string());
    out
}

fn assert_no_secret(messages: &[String], secrets: &[&str]) {
    assert!(!messages.is_empty());
    for m in messages {
        for s in secrets {
            assert!(!m.contains(s), "a secret leaked into {m:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_serves_every_feature_and_wrong_password_is_unavailable() {
    let pw = password("req");
    let mode = SecureMode {
        requirepass: Some(pw.clone()),
        ..SecureMode::default()
    };
    let servers: Vec<SecureRedis> = (0..3)
        .map(|_| SecureRedis::start(mode.clone(), None))
        .collect();
    // The password from an environment variable, database 2.
    let var = format!("CK_SECURE_TEST_PW_{}", std::process::id());
    std::env::set_var(&var, &pw);
    let doc = document(
        &format!("[redis]\npassword_env = \"{var}\"\ndb = 2\n"),
        &servers,
        "",
    );
    every_feature(&doc, &servers, 2).await;

    // A wrong inline password: unavailable, "authentication failed", no secret anywhere.
    let wrong = password("wrong");
    let doc = document(&format!("[redis]\npassword = \"{wrong}\"\n"), &servers, "");
    let messages = failing_messages(&doc).await;
    assert!(
        messages[0].contains("authentication failed"),
        "{:?}",
        messages[0]
    );
    assert_no_secret(&messages, &[&pw, &wrong]);

    // A password in a URL (issue 11, item 4): neither a refused connection nor a refused AUTH
    // prints it.
    let closed = support::closed_port();
    for (port, expect) in [
        (closed, "unavailable"),
        (servers[0].port(), "authentication failed"),
    ] {
        let url = format!("redis://:{wrong}@127.0.0.1:{port}");
        let ck = Clusterkit::parse(&format!(
            "[cache]\nredis = \"{url}\"\ntimeout = \"500ms\"\n"
        ))
        .unwrap();
        let e = ck.cache().set(b"k", "v", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let m = e.to_string();
        assert!(m.contains(expect), "{m}");
        assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
        assert_no_secret(&[m, format!("{ck:?}")], &[&wrong]);
    }
    std::env::remove_var(&var);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_over_mutual_tls_serves_every_feature() {
    let certs = TestCerts::generate();
    let pw = password("acl");
    let mode = SecureMode {
        acl_user: Some(("app".into(), pw.clone())),
        tls: true,
        mutual_tls: true,
        ..SecureMode::default()
    };
    let servers: Vec<SecureRedis> = (0..3)
        .map(|_| SecureRedis::start(mode.clone(), Some(&certs)))
        .collect();
    // The default user is off: the ACL user is required.
    assert!(!servers[0]
        .cli(&["-n", "0", "ACL", "WHOAMI"])
        .contains("default"));
    let pw_file = certs.dir.join("redis-password");
    std::fs::write(&pw_file, format!("{pw}\n")).unwrap();
    let section = format!(
        "[redis]\nusername = \"app\"\npassword_file = \"{}\"\ndb = 3\ntls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        pw_file.display(),
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    let doc = document(&section, &servers, "");
    every_feature(&doc, &servers, 3).await;

    // Wrong password for the ACL user.
    let wrong = password("wrong-acl");
    let section_wrong = section.replace(
        &format!("password_file = \"{}\"", pw_file.display()),
        &format!("password = \"{wrong}\""),
    );
    let messages = failing_messages(&document(&section_wrong, &servers, "")).await;
    assert!(
        messages[0].contains("authentication failed"),
        "{messages:?}"
    );
    assert_no_secret(&messages, &[&pw, &wrong]);

    // A CA that did not sign the server's certificate: unavailable, not a panic.
    let wrong_ca = section.replace(
        &certs.ca.display().to_string(),
        &certs.other_ca.display().to_string(),
    );
    let ck = Clusterkit::parse(&document(&wrong_ca, &servers, "")).unwrap();
    let e = ck.cache().set(b"k", "v", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_no_secret(&[e.to_string()], &[&pw]);

    // No client certificate on a server that requires one: unavailable.
    let no_client_cert = format!(
        "[redis]\nusername = \"app\"\npassword = \"{pw}\"\ndb = 3\ntls = {{ ca_file = \"{}\" }}\n",
        certs.ca.display()
    );
    let ck = Clusterkit::parse(&document(&no_client_cert, &servers, "")).unwrap();
    let e = ck.cache().set(b"k", "v", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_no_secret(&[e.to_string(), format!("{ck:?}")], &[&pw]);

    // TLS server name: the registry and the health PING connect to 127.0.0.1 and verify
    // the certificate as "redis.test"; a name the certificate lacks fails.
    let base = ConnectionSettings::default()
        .with_username("app")
        .with_password(Secret::new(pw.clone()))
        .with_tls(
            TlsOptions::with_ca_file(&certs.ca)
                .with_client_cert(&certs.client_cert, &certs.client_key)
                .with_server_name("redis.test"),
        );
    let opts = |s: ConnectionSettings| {
        RegistryOptions::default()
            .with_connect_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(500))
            .with_connection(s)
    };
    let registry = RedisRegistry::new(&servers[0].addr(), "sni", opts(base.clone())).unwrap();
    registry.list().await.unwrap();
    let mut bad = base.clone();
    bad.tls = Some(
        TlsOptions::with_ca_file(&certs.ca)
            .with_client_cert(&certs.client_cert, &certs.client_key)
            .with_server_name("not-in-the-cert.test"),
    );
    let e = RedisRegistry::new(&servers[0].addr(), "sni", opts(bad))
        .unwrap()
        .list()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let node = Node::new("n", "127.0.0.1", servers[0].port()).unwrap();
    let check =
        clusterkit::CheckOptions::new(clusterkit::CheckKind::RedisPing).with_redis(base.clone());
    clusterkit::cluster::health::run_check(&node, &check)
        .await
        .unwrap();
    // Every feature with the certificate verified as "redis.test" while connecting to
    // 127.0.0.1: the sharded cache, Redlock and its release subscriptions, sessions, the
    // single-Redis cache from async and blocking callers, health and the registry.
    let sni_section = section.replace(
        "tls = { ca_file",
        "tls = { server_name = \"redis.test\", ca_file",
    );
    assert_ne!(sni_section, section);
    every_feature(&document(&sni_section, &servers, ""), &servers, 3).await;
    // A Redlock waiter is woken by the release message over such connections, well before
    // its next retry (2 s apart here).
    let sni_settings = Config::parse(&sni_section)
        .unwrap()
        .redis_settings(None)
        .unwrap();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    let addrs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    let lock_options = || {
        clusterkit::lock::LockOptions::default()
            .with_retry(Duration::from_secs(2), Duration::from_secs(2))
            .with_redis(
                clusterkit::cache::RedisOptions::default()
                    .with_timeouts(Duration::from_secs(3), Duration::from_secs(3))
                    .with_connection(sni_settings.clone()),
            )
    };
    let holder = clusterkit::lock::DistributedLock::redlock(&addrs, lock_options()).unwrap();
    let other = clusterkit::lock::DistributedLock::redlock(&addrs, lock_options()).unwrap();
    let held = holder
        .try_acquire("sni-wake", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a free lock is acquired");
    // The waiter's service is connected (and subscribed) before the release.
    assert!(other
        .try_acquire("sni-wake", Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    let waiter = tokio::spawn(async move {
        let g = other
            .acquire_timeout("sni-wake", Duration::from_secs(30), Duration::from_secs(20))
            .await;
        (g, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = std::time::Instant::now();
    held.release().await.unwrap();
    let (g, acquired) = waiter.await.unwrap();
    g.unwrap().release().await.unwrap();
    let after = acquired.duration_since(released);
    assert!(
        after < Duration::from_millis(1500),
        "woken {after:?} after the release (the next retry was 2 s away)"
    );
    // A name the certificate lacks: unavailable on the cache, nothing leaked.
    let wrong_name = section.replace(
        "tls = { ca_file",
        "tls = { server_name = \"not-in-the-cert.test\", ca_file",
    );
    let ck = Clusterkit::parse(&document(&wrong_name, &servers, "")).unwrap();
    let e = ck.cache().set(b"k", "v", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_no_secret(&[e.to_string()], &[&pw]);
    // A Redis Cluster verifies each node against the address its slot map announces: a
    // differing server name is rejected, naming the field.
    let mut cluster_settings = sni_settings;
    cluster_settings.db = None;
    let e = clusterkit::cache::Cache::redis_cluster(
        &[servers[0].addr().as_str()],
        "x",
        clusterkit::cache::RedisOptions::default().with_connection(cluster_settings),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("tls.server_name"), "{e}");
}

#[test]
fn config_errors_name_the_field_and_hide_the_secret() {
    let err = |doc: &str| {
        let e = Config::parse(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        e.to_string()
    };
    let e = err("[redis]\npassword_env = \"CK_SECURE_SURELY_UNSET\"\n");
    assert!(e.contains("redis.password_env"), "{e}");
    let e = err("[redis]\npassword_file = \"/nonexistent/pw\"\n");
    assert!(e.contains("redis.password_file"), "{e}");
    let e = err("[redis]\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n");
    assert!(e.contains("redis.tls.ca_file"), "{e}");
    let e = err("[redis]\ndb = -1\n");
    assert!(e.contains("redis.db"), "{e}");
    let e = err("[redis]\npassword = \"s3cr3t-inline\"\npassword_env = \"X\"\n");
    assert!(
        e.contains("redis.password") && !e.contains("s3cr3t-inline"),
        "{e}"
    );
    let e = err("[pools.cache.redis]\ntls = { cert_file = \"/etc/hostname\" }\n");
    assert!(e.contains("pools.cache.redis.tls.key_file"), "{e}");
    let e = err("[redis]\ncolour = 1\n");
    assert!(e.contains("colour"), "{e}");
    // A pool override merges over [redis]; the inline password never shows.
    let c = Config::parse(
        "[redis]\nusername = \"app\"\npassword = \"top-secret-pw\"\ndb = 1\n[pools.cache]\nredis = { db = 4 }\n",
    )
    .unwrap();
    let s = c.redis_settings(Some("cache")).unwrap();
    assert_eq!(s.db, Some(4));
    assert_eq!(s.username.as_deref(), Some("app"));
    assert_eq!(
        s.password.as_ref().map(|p| p.expose()),
        Some("top-secret-pw")
    );
    assert_eq!(c.redis_settings(None).unwrap().db, Some(1));
    for text in [
        format!("{c:?}"),
        format!("{s:?}"),
        serde_json::to_string(&c).unwrap(),
    ] {
        assert!(!text.contains("top-secret-pw"), "{text}");
    }
}

/// A Redis Cluster (three masters, TLS on the client port and the cluster bus, an ACL user,
/// client certificates required) serves the cache; a wrong password is `unavailable` without
/// the password in any message; `clear()` leaves other concerns' keys alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_acl_and_mutual_tls() {
    let certs = TestCerts::generate();
    let pw = password("cluster");
    let mode = SecureMode {
        acl_user: Some(("app".into(), pw.clone())),
        tls: true,
        mutual_tls: true,
        ..SecureMode::default()
    };
    let cluster = support::SecureCluster::start(mode, Some(&certs));
    let seeds = cluster.addrs();
    let seeds: Vec<&str> = seeds.iter().map(|s| s.as_str()).collect();
    let settings = |password: &str| {
        ConnectionSettings::default()
            .with_username("app")
            .with_password(Secret::new(password.to_string()))
            .with_tls(
                TlsOptions::with_ca_file(&certs.ca)
                    .with_client_cert(&certs.client_cert, &certs.client_key),
            )
    };
    let options = |password: &str| {
        clusterkit::cache::RedisOptions::default()
            .with_timeouts(Duration::from_secs(3), Duration::from_secs(3))
            .with_connection(settings(password))
    };
    let cache = clusterkit::cache::Cache::redis_cluster(&seeds, "secc", options(&pw)).unwrap();
    for i in 0..30 {
        cache
            .set(
                format!("k{i}").as_bytes(),
                format!("v{i}"),
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let values = cache.get_many(&keys).await.unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    // The keys are spread over the masters (hash slots), each in the cache's sub-space.
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "secc:c:*"])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
    // clear() deletes the cache entries only: another concern's key survives.
    let out = cluster.nodes[0].cli(&["-c", "SET", "secc:s:{other}", "kept"]);
    assert_eq!(out.trim(), "OK", "{out}");
    cache.clear().await.unwrap();
    assert!(cache.get(b"k1").await.unwrap().is_none());
    let out = cluster.nodes[0].cli(&["-c", "GET", "secc:s:{other}"]);
    assert_eq!(out.trim(), "kept");

    // A wrong password: unavailable, and neither password in the message or Debug output.
    let wrong = password("cluster-wrong");
    let bad = clusterkit::cache::Cache::redis_cluster(&seeds, "secc", options(&wrong)).unwrap();
    let e = bad.set(b"k", "v", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_no_secret(&[e.to_string(), format!("{bad:?}")], &[&pw, &wrong]);
}
