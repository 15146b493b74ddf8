//! etcd over mutual TLS with user/password auth (issue #17): a private one-member etcd that
//! accepts only TLS clients with a certificate from the test CA and has auth enabled; locks
//! and discovery through the config document work with the right user, and a wrong password
//! is refused with neither password in the message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod etcd_support;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clusterkit::discovery::EtcdRegistry;
use clusterkit::etcd::EtcdSection;
use clusterkit::{ErrorKind, Node};
use support::TestCerts;

use etcd_support::{ETCD, ETCDCTL};

struct SecureEtcd {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctl(e: &SecureEtcd, certs: &TestCerts, user: Option<&str>, args: &[&str]) -> (bool, String) {
    let endpoint = format!("https://127.0.0.1:{}", e.port);
    let mut cmd = Command::new(ETCDCTL);
    cmd.env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoint, "--dial-timeout", "5s"])
        .args(["--cacert", certs.ca.to_str().unwrap()])
        .args(["--cert", certs.client_cert.to_str().unwrap()])
        .args(["--key", certs.client_key.to_str().unwrap()]);
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(e: &SecureEtcd, certs: &TestCerts, user: Option<&str>, args: &[&str]) {
    let (ok, text) = ctl(e, certs, user, args);
    assert!(ok, "etcdctl {args:?}: {text}");
}

fn start(certs: &TestCerts) -> SecureEtcd {
    for p in [ETCD, ETCDCTL] {
        assert!(
            Path::new(p).exists(),
            "{p} not installed: run ./scripts/test, which installs etcd-server and etcd-client"
        );
    }
    let port = support::free_port();
    let peer = support::free_port();
    let dir = std::env::temp_dir().join(format!("ck-etcd-secure-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(ETCD)
        .args([
            "--name",
            "s0",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
        ])
        .args(["--listen-client-urls", &format!("https://127.0.0.1:{port}")])
        .args([
            "--advertise-client-urls",
            &format!("https://127.0.0.1:{port}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("s0=http://127.0.0.1:{peer}")])
        .args(["--cert-file", certs.server_cert.to_str().unwrap()])
        .args(["--key-file", certs.server_key.to_str().unwrap()])
        .args(["--trusted-ca-file", certs.ca.to_str().unwrap()])
        .arg("--client-cert-auth")
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let e = SecureEtcd { child, port, dir };
    let started = Instant::now();
    loop {
        let (ok, text) = ctl(&e, certs, None, &["endpoint", "health"]);
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "secure etcd did not become healthy: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    e
}

#[test]
fn locks_and_discovery_over_mutual_tls_with_a_user_and_password() {
    let certs = TestCerts::generate();
    let e = start(&certs);
    let root_pw = format!("root-pw-{}", std::process::id());
    let app_pw = format!("app-pw-{}", std::process::id());
    must(
        &e,
        &certs,
        None,
        &[
            "user",
            "add",
            &format!("root:{root_pw}"),
            "--interactive=false",
        ],
    );
    must(&e, &certs, None, &["auth", "enable"]);
    let root = format!("root:{root_pw}");
    let r = Some(root.as_str());
    must(&e, &certs, r, &["role", "add", "app"]);
    must(
        &e,
        &certs,
        r,
        &[
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            "/ck/",
        ],
    );
    must(
        &e,
        &certs,
        r,
        &[
            "user",
            "add",
            &format!("app:{app_pw}"),
            "--interactive=false",
        ],
    );
    must(&e, &certs, r, &["user", "grant-role", "app", "app"]);

    let var = format!("CK_ETCD_PW_{}", std::process::id());
    std::env::set_var(&var, &app_pw);
    let section = |prefix: &str, password_env: &str| {
        format!(
            "{{ endpoints = [\"https://127.0.0.1:{}\"], prefix = \"{prefix}\", ttl = \"2s\", \
             user = \"app\", password_env = \"{password_env}\", tls = {{ ca_file = {:?}, \
             cert_file = {:?}, key_file = {:?} }} }}",
            e.port, certs.ca, certs.client_cert, certs.client_key
        )
    };

    // A node registered by the app user (TLS + auth) is listed by the pool of a document.
    let reg_section: EtcdSection = toml::from_str(&format!(
        "endpoints = [\"https://127.0.0.1:{}\"]\nuser = \"app\"\npassword_env = \"{var}\"\n\
         tls = {{ ca_file = {:?}, cert_file = {:?}, key_file = {:?} }}\n",
        e.port, certs.ca, certs.client_cert, certs.client_key
    ))
    .unwrap();
    let registry = EtcdRegistry::new(
        reg_section.settings().unwrap(),
        "/ck/svc/",
        Duration::from_secs(2),
    )
    .unwrap();
    let _registration = registry
        .register_blocking(Node::new("n1", "127.0.0.1", 5001).unwrap())
        .unwrap();
    let doc = format!(
        "[pools.web]\nstrategy = \"round_robin\"\ndiscovery = {{ etcd = {} }}\n[locks]\netcd = {}\n",
        section("/ck/svc/", &var),
        section("/ck/locks/", &var)
    );
    let ck = clusterkit::Clusterkit::parse(&doc).unwrap();
    let pool = ck.pool("web").unwrap();
    let started = Instant::now();
    while pool.nodes().len() != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n1 not listed over TLS + auth"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.nodes()[0].node.id(), "n1");

    // Locks: acquired, fenced by the revision, refused to a second caller, released.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = ck
            .locks()
            .try_acquire("report", Duration::from_secs(5))
            .await
            .unwrap()
            .expect("free");
        assert!(g.fencing_token() > 0);
        assert!(ck
            .locks()
            .try_acquire("report", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        g.release().await.unwrap();
    });

    // A wrong password is refused: a clear error, neither password in it.
    let wrong = format!("wrong-pw-{}", std::process::id());
    let bad_var = format!("CK_ETCD_BAD_PW_{}", std::process::id());
    std::env::set_var(&bad_var, &wrong);
    let bad = clusterkit::Clusterkit::parse(&format!(
        "[locks]\netcd = {}\n",
        section("/ck/locks/", &bad_var)
    ))
    .unwrap();
    let err = rt
        .block_on(bad.locks().try_acquire("report", Duration::from_secs(5)))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{text}"
    );
    assert!(!text.contains(&wrong) && !text.contains(&app_pw), "{text}");
    assert!(
        !format!("{bad:?}").contains(&wrong),
        "Debug shows the password"
    );

    // Without a client certificate the server refuses the connection.
    let no_cert = clusterkit::Clusterkit::parse(&format!(
        "[locks]\netcd = {{ endpoints = [\"https://127.0.0.1:{}\"], prefix = \"/ck/locks/\", \
         user = \"app\", password_env = \"{var}\", tls = {{ ca_file = {:?} }} }}\n",
        e.port, certs.ca
    ))
    .unwrap();
    assert!(rt
        .block_on(
            no_cert
                .locks()
                .try_acquire("report", Duration::from_secs(5))
        )
        .is_err());
}
