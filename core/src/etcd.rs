//! etcd (v3 API) as a backend for service discovery and locks (issue #17): the config
//! section both use and the shared connection.
//!
//! ```toml
//! [pools.web]
//! discovery = { etcd = { endpoints = ["10.0.0.1:2379", "10.0.0.2:2379"], prefix = "/svc/web/", ttl = "10s" } }
//!
//! [locks]
//! etcd = { endpoints = ["https://10.0.0.1:2379"], user = "app", password_env = "ETCD_PASSWORD",
//!          tls = { ca_file = "/etc/etcd/ca.pem" } }
//! ```
//!
//! The section always parses; building it needs the `etcd` cargo feature (the C library and
//! the Python and Node bindings enable it), otherwise it fails with a clear error naming the
//! field. Passwords are [`Secret`]s: `***` in `Debug`, serialization, errors and logs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{check_duration, DurationText};
use crate::connection::config::{RedisSection, TlsSection};
use crate::connection::{Secret, TlsOptions};
use crate::error::{Error, Result};

/// Most endpoints in one section.
pub const MAX_ENDPOINTS: usize = 32;
/// Longest endpoint, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 512;
/// Longest key prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 512;
/// Default per-request timeout (`timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// `etcd = { endpoints = [...], prefix = "...", ttl = "10s", user = "...", password_env = "...",
/// tls = { ca_file = "...", cert_file = "...", key_file = "...", server_name = "..." } }`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Client URLs of the members: `host:port`, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Key prefix (discovery: default `/clusterkit/discovery/<service>/`; locks: default
    /// `/clusterkit/locks/<key_prefix>/`). Ends with `/` (added when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Lease TTL of a registered node (discovery; default 10s; whole seconds, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<DurationText>,
    /// Per-request timeout (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// etcd user (needs a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Inline password (prefer `password_env` or `password_file`). Serialized as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of the environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (trailing newlines are removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS (rustls): `https://` endpoints, or every endpoint when this is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

/// Resolved connection settings of an [`EtcdSection`] (password read, files checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Endpoints as written.
    pub endpoints: Vec<String>,
    /// User and password.
    pub user: Option<(String, Secret)>,
    /// TLS.
    pub tls: Option<TlsOptions>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl EtcdSettings {
    /// Plain-text settings for `endpoints` (tests, tools).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> EtcdSettings {
        EtcdSettings {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_string()).collect(),
            user: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn check_endpoint(i: usize, e: &str) -> Result<()> {
    let field = format!("endpoints[{i}]");
    if e.is_empty() || e.len() > MAX_ENDPOINT_LEN || e.chars().any(|c| c.is_whitespace()) {
        return Err(Error::invalid(
            &field,
            format!("must be host:port or an http(s):// URL of 1..={MAX_ENDPOINT_LEN} bytes"),
        ));
    }
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .unwrap_or(e);
    if rest.contains('@') {
        return Err(Error::invalid(
            &field,
            "must not hold credentials: use user and password_env / password_file",
        ));
    }
    let hostport = rest.trim_end_matches('/');
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return Err(Error::invalid(&field, "expected host:port"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(Error::invalid(
            &field,
            "expected host:port with a port 1..=65535",
        ));
    }
    Ok(())
}

/// Normalises a key prefix: non-empty, no control characters, ends with `/`.
pub(crate) fn normalise_prefix(field: &str, p: &str) -> Result<String> {
    if p.is_empty() || p.len() > MAX_PREFIX_LEN || p.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            field,
            format!("must be 1..={MAX_PREFIX_LEN} bytes without control characters"),
        ));
    }
    Ok(if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    })
}

impl EtcdSection {
    /// Checks the values and resolves the password and TLS files. Errors name the field as
    /// written in the section (`endpoints[1]`, `password_env`, `tls.ca_file`, ...), never a
    /// password.
    pub fn settings(&self) -> Result<EtcdSettings> {
        if self.endpoints.is_empty() || self.endpoints.len() > MAX_ENDPOINTS {
            return Err(Error::invalid(
                "endpoints",
                format!("give 1..={MAX_ENDPOINTS} endpoints"),
            ));
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            check_endpoint(i, e)?;
        }
        if let Some(p) = &self.prefix {
            normalise_prefix("prefix", p)?;
        }
        if let Some(t) = self.ttl {
            check_duration(
                "ttl",
                t.0,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            )?;
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        check_duration(
            "timeout",
            timeout,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )?;
        // The password and TLS rules are the [redis] section's: reuse them.
        let shared = RedisSection {
            username: self.user.clone(),
            password: self.password.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            db: None,
            tls: self.tls.clone(),
        };
        let resolved = shared.settings()?;
        let user = match (&self.user, resolved.password) {
            (Some(u), Some(p)) => {
                crate::config::check_text("user", u, 255)?;
                Some((u.clone(), p))
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "password",
                    "user needs a password (password, password_env or password_file)",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::invalid("user", "a password needs a user"));
            }
            (None, None) => None,
        };
        if let Some(t) = &resolved.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(Error::invalid(
                    "tls.cert_file",
                    "cert_file and key_file go together",
                ));
            }
        }
        Ok(EtcdSettings {
            endpoints: self.endpoints.clone(),
            user,
            tls: resolved.tls,
            timeout,
        })
    }
}

/// A message from the etcd client library, with registered secrets scrubbed.
#[cfg(feature = "etcd")]
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut text = crate::connection::redact(&text);
    if text.len() > 512 {
        let mut end = 512;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Maps an etcd client error to the library's kinds (`unavailable`, `timeout`, `backend`).
#[cfg(feature = "etcd")]
pub(crate) fn map_error(what: &str, e: &etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    let message = format!("etcd: {what}: {}", describe(e));
    match e {
        // tonic is not a direct dependency: match the code by name.
        E::GRpcStatus(s) => match format!("{:?}", s.code()).as_str() {
            "DeadlineExceeded" => Error::Timeout(message),
            "Unavailable" | "Cancelled" | "Unknown" | "Aborted" => Error::Unavailable(message),
            // Refused credentials or permissions: the store cannot be used with this
            // configuration, as a Redis AUTH failure is `unavailable` (never the password).
            "Unauthenticated" | "PermissionDenied" => Error::Unavailable(message),
            // etcd 3.4 answers a wrong password with InvalidArgument "authentication failed".
            "InvalidArgument" if message.contains("authentication failed") => {
                Error::Unavailable(message)
            }
            _ => Error::Backend(message),
        },
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => {
            Error::Unavailable(message)
        }
        _ => Error::Backend(message),
    }
}

#[cfg(feature = "etcd")]
pub(crate) use link::EtcdLink;

#[cfg(feature = "etcd")]
mod link {
    use super::*;
    use etcd_client::{Client, ConnectOptions};

    /// A lazily connected etcd client (reconnected in a forked child), shared by clones.
    pub(crate) struct EtcdLink {
        pub(crate) settings: EtcdSettings,
        /// [unary client (per-request timeout), stream client (no deadline: etcd would end a
        /// watch or keep-alive stream at the request's `grpc-timeout`)], by fork generation.
        clients: [crate::fork::Mutex<Option<(u64, Client)>>; 2],
        connecting: tokio::sync::Mutex<()>,
        /// Requests sent (for tests and benchmarks: waiting does not poll).
        pub(crate) requests: std::sync::atomic::AtomicU64,
    }

    impl std::fmt::Debug for EtcdLink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EtcdLink")
                .field("endpoints", &self.settings.endpoints)
                .finish()
        }
    }

    impl EtcdLink {
        pub(crate) fn new(settings: EtcdSettings) -> EtcdLink {
            EtcdLink {
                settings,
                clients: Default::default(),
                connecting: tokio::sync::Mutex::new(()),
                requests: std::sync::atomic::AtomicU64::new(0),
            }
        }

        pub(crate) fn count(&self) {
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }

        fn cached(&self, slot: usize) -> Option<Client> {
            let g = crate::fork::generation();
            self.clients[slot]
                .lock()
                .as_ref()
                .filter(|(gen, _)| *gen == g)
                .map(|(_, c)| c.clone())
        }

        /// The client for unary requests (each bounded by the per-request timeout),
        /// connecting on first use. Must run on the shared runtime (the channel's worker task
        /// lives there).
        pub(crate) async fn client(&self) -> crate::error::Result<Client> {
            self.client_in(0).await
        }

        /// The client for watch and lease keep-alive streams: no request deadline (HTTP/2
        /// keep-alives detect a dead or frozen member within about 2 s).
        pub(crate) async fn stream_client(&self) -> crate::error::Result<Client> {
            self.client_in(1).await
        }

        /// Runs one unary request, retried (at most 3 attempts, 50 / 100 ms apart) when the
        /// member it reached was unavailable (killed, restarting): the balanced channel may
        /// still route to it until its connection is seen to fail. Requests made this way are
        /// idempotent or harmless to repeat (a lease granted twice expires on its own).
        pub(crate) async fn call<T, F, Fut>(&self, what: &str, f: F) -> crate::error::Result<T>
        where
            F: Fn(Client) -> Fut,
            Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
        {
            let mut attempt = 0u32;
            loop {
                let c = self.client().await?;
                self.count();
                match f(c).await {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        let err = map_error(what, &e);
                        attempt += 1;
                        if attempt >= 3 || err.kind() != crate::error::ErrorKind::Unavailable {
                            return Err(err);
                        }
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    }
                }
            }
        }

        async fn client_in(&self, slot: usize) -> crate::error::Result<Client> {
            if let Some(c) = self.cached(slot) {
                return Ok(c);
            }
            let _one = self.connecting.lock().await;
            if let Some(c) = self.cached(slot) {
                return Ok(c);
            }
            let s = &self.settings;
            let mut o = ConnectOptions::new().with_connect_timeout(s.timeout);
            if slot == 0 {
                o = o.with_timeout(s.timeout);
            }
            o = o
                .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
                .with_keep_alive_while_idle(true)
                .with_require_leader(true);
            if let Some((u, p)) = &s.user {
                o = o.with_user(u.clone(), p.expose().to_string());
            }
            let mut endpoints = s.endpoints.clone();
            if let Some(t) = &s.tls {
                let mut tls = etcd_client::TlsOptions::new();
                if let Some(ca) = &t.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| {
                        Error::invalid("tls.ca_file", format!("cannot read {}: {e}", ca.display()))
                    })?;
                    tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
                } else {
                    return Err(Error::invalid(
                        "tls.ca_file",
                        "etcd over TLS needs the CA certificate(s) of the cluster",
                    ));
                }
                if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
                    let cert = std::fs::read(c).map_err(|e| {
                        Error::invalid("tls.cert_file", format!("cannot read {}: {e}", c.display()))
                    })?;
                    let key = std::fs::read(k).map_err(|e| {
                        Error::invalid("tls.key_file", format!("cannot read {}: {e}", k.display()))
                    })?;
                    tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
                }
                if let Some(n) = &t.server_name {
                    tls = tls.domain_name(n.clone());
                }
                o = o.with_tls(tls);
                // With TLS options every endpoint is https.
                endpoints = endpoints
                    .into_iter()
                    .map(|e| {
                        let bare = e.strip_prefix("http://").unwrap_or(&e);
                        if bare.starts_with("https://") {
                            bare.to_string()
                        } else {
                            format!("https://{bare}")
                        }
                    })
                    .collect();
            }
            self.count();
            let c = tokio::time::timeout(s.timeout * 2, Client::connect(endpoints, Some(o)))
                .await
                .map_err(|_| {
                    Error::Timeout(format!(
                        "etcd: connecting to {:?} took longer than {:?}",
                        s.endpoints,
                        s.timeout * 2
                    ))
                })?
                .map_err(|e| map_error("connecting", &e))?;
            *self.clients[slot].lock() = Some((crate::fork::generation(), c.clone()));
            Ok(c)
        }
    }

    /// Runs `fut` on the shared runtime and waits for it from whatever executor the caller
    /// uses; dropping the returned future aborts the task.
    pub(crate) async fn on_runtime<T, F>(fut: F) -> crate::error::Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
    {
        struct AbortOnDrop<U>(tokio::task::JoinHandle<U>);
        impl<U> Drop for AbortOnDrop<U> {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut h = AbortOnDrop(crate::fork::spawn(fut)?);
        (&mut h.0)
            .await
            .map_err(|e| Error::Internal(format!("an etcd task failed: {e}")))?
    }
}

#[cfg(feature = "etcd")]
pub(crate) use link::on_runtime;
