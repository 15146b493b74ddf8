//! Production Redis connections: ACL username and password, database index and TLS
//! (rustls: a CA file, an optional client certificate and key, a server name), in one
//! [`ConnectionSettings`] value used by every connection the library opens — the single-Redis
//! cache, every node of a sharded pool, Redis Cluster, single and Redlock locks (and their
//! release subscriptions), sessions (which live in the cache's backend), the health PING and
//! the discovery registry (its commands and its pub/sub connection).
//!
//! # Addresses and settings
//!
//! An address is `host:port`, `[v6]:port`, or a `redis://` / `rediss://` URL that may carry
//! `user:password@` and a `/db` path. The settings are merged over what the address says,
//! field by field: a username, password or db given in the settings wins over the URL's;
//! what the settings leave unset keeps the URL's value. `tls` in the settings turns a plain
//! address into a TLS one; a `rediss://` URL without `tls` settings uses TLS with the system's
//! trusted roots.
//!
//! # Secrets
//!
//! Passwords are held in a [`Secret`], whose `Debug` and `Display` print `***`. Every
//! address the library prints is redacted (`redis://app:***@host:6379`), and every error
//! message built from a redis-rs error goes through [`redact`], which also removes every
//! password the process has loaded, so a password never reaches an error, a log line or a
//! metric label.
//!
//! # Server name
//!
//! `tls.server_name` is the name the server's certificate is verified against (and the SNI
//! sent), for when it differs from the host connected to (an IP address, say). redis-rs 1.8
//! takes both from one host name; clusterkit connects to the real host through its own
//! resolver. Every single-server connection supports it: the cache, sharded pools, single and
//! Redlock locks and their release subscriptions, sessions, the health PING and the registry
//! (where redis-rs's connection manager and synchronous connections take no resolver,
//! clusterkit uses a shared multiplexed connection of its own, `connection::link`). A Redis Cluster is
//! the exception: its nodes are reached at the addresses its slot map announces and each
//! certificate is verified against that address, so a `server_name` that differs from the
//! seed's host is rejected with `invalid_argument` naming `tls.server_name` (let the servers
//! announce their certificate names: `cluster-announce-hostname` with
//! `cluster-preferred-endpoint-type hostname`).

pub mod config;
pub(crate) mod link;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::error::{Error, Result};

pub use config::{RedisSection, TlsSection};

/// A secret string (a password). `Debug` and `Display` print `***`; the value is only
/// reachable through [`Secret::expose`]. Creating one registers the value with [`redact`],
/// so it is scrubbed from every error message the library builds from a server's or a
/// client library's text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `value` (and registers it for redaction).
    pub fn new(value: impl Into<String>) -> Secret {
        let value: String = value.into();
        register_secret(&value);
        Secret(Arc::from(value))
    }

    /// The secret value itself. Never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS settings of a Redis connection (rustls).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA(s) the server's certificate must chain to; `None`: the system's
    /// trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client's private key; needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate is verified against when it differs from the host
    /// connected to (see the module docs for where this is supported).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// TLS verified against the CA certificates in `ca_file`.
    pub fn with_ca_file(ca_file: impl Into<PathBuf>) -> TlsOptions {
        TlsOptions {
            ca_file: Some(ca_file.into()),
            ..TlsOptions::default()
        }
    }
    /// Sets the client certificate and key (mutual TLS).
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }
    /// Sets the server name.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// How to authenticate to and secure a Redis connection. The default is what an address
/// alone says (no credentials beyond the URL's, db from the URL or 0, TLS only for
/// `rediss://`).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// ACL username (`AUTH username password`); `None`: the URL's, or the default user.
    pub username: Option<String>,
    /// Password; `None`: the URL's, or none.
    pub password: Option<Secret>,
    /// Database index (`SELECT`); `None`: the URL's path, or 0.
    pub db: Option<i64>,
    /// TLS; `None`: only when the address is a `rediss://` URL.
    pub tls: Option<TlsOptions>,
}

impl ConnectionSettings {
    /// Sets the ACL username.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
    /// Sets the password.
    pub fn with_password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }
    /// Sets the database index.
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }
    /// Sets TLS.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the values that need no I/O; the error names the field (`db`, `username`,
    /// `tls.key_file`, ...). Files are read when a connection is prepared.
    pub fn validate(&self) -> Result<()> {
        if let Some(db) = self.db {
            if !(0..=1_000_000).contains(&db) {
                return Err(Error::invalid(
                    "db",
                    format!("must be 0..=1000000, got {db}"),
                ));
            }
        }
        if let Some(u) = &self.username {
            if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(
                    "username",
                    "must be non-empty, without spaces or control characters",
                ));
            }
        }
        if let Some(p) = &self.password {
            if p.expose().is_empty() {
                return Err(Error::invalid("password", "must not be empty"));
            }
        }
        if let Some(t) = &self.tls {
            match (&t.cert_file, &t.key_file) {
                (Some(_), None) => {
                    return Err(Error::invalid(
                        "tls.key_file",
                        "cert_file needs key_file (the client's private key)",
                    ))
                }
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        "tls.cert_file",
                        "key_file needs cert_file (the client's certificate)",
                    ))
                }
                _ => {}
            }
            if let Some(n) = &t.server_name {
                if rustls_pki_name_ok(n).is_err() {
                    return Err(Error::invalid(
                        "tls.server_name",
                        format!("{n:?} is not a valid DNS name or IP address"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when nothing is set (an address alone decides).
    pub fn is_default(&self) -> bool {
        *self == ConnectionSettings::default()
    }
}

fn rustls_pki_name_ok(name: &str) -> std::result::Result<(), ()> {
    if name.is_empty() || name.len() > 253 {
        return Err(());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// A prepared connection target: the redis-rs client (credentials, db and TLS applied), the
/// address to print (never with a password) and, when the server name differs from the
/// host, the resolver that sends connections for the server name to the real host.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) client: Client,
    pub(crate) display: String,
    pub(crate) resolver: Option<NameResolver>,
}

impl Target {
    /// An async connection config with these timeouts that connects through this target's
    /// resolver (when the TLS server name differs from the host).
    pub(crate) fn async_config(
        &self,
        connect_timeout: std::time::Duration,
        response_timeout: std::time::Duration,
    ) -> redis::AsyncConnectionConfig {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        match &self.resolver {
            Some(r) => config.set_dns_resolver(r.clone()),
            None => config,
        }
    }
}

impl Target {
    /// A client for pub/sub over RESP3 pushes on a multiplexed connection (which, unlike
    /// redis-rs's dedicated pub/sub connection, connects through [`Target::async_config`]'s
    /// resolver). Same credentials, db and TLS as [`Target::client`].
    pub(crate) fn pubsub_client(&self) -> Result<Client> {
        let info = self.client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        Client::open(info.set_redis_settings(resp3)).map_err(|e| {
            Error::invalid(
                "address",
                format!("{:?}: {}", self.display, redact(&e.to_string())),
            )
        })
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.display)
            .finish_non_exhaustive()
    }
}

/// Whether a connection path can route a TLS server name to a different host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The caller sets [`Target::resolver`] on its `AsyncConnectionConfig`/cluster builder.
    Custom,
    /// redis-rs resolves the host itself (the Redis Cluster client, whose other nodes come
    /// from the slot map).
    HostOnly,
}

/// `host:port`, `[v6]:port` or a URL → a `redis://`-style URL (no I/O).
pub(crate) fn client_url(address: &str) -> Result<String> {
    let a = address.trim();
    if a.is_empty() {
        return Err(Error::invalid("address", "must not be empty"));
    }
    if a.contains("://") {
        return Ok(a.to_string());
    }
    if a.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(Error::invalid(
            "address",
            format!(
                "expected host:port or a redis:// URL, got {:?}",
                redact(address)
            ),
        ));
    }
    Ok(format!("redis://{a}/"))
}

/// Prepares a connection to `address` with `settings` (reads the TLS files; no network
/// I/O). Errors name the field: `address`, `tls.ca_file`, `tls.cert_file`, `tls.key_file`,
/// `tls.server_name`, `db`.
pub(crate) fn prepare(
    address: &str,
    settings: &ConnectionSettings,
    resolution: Resolution,
) -> Result<Target> {
    settings.validate()?;
    let url = client_url(address)?;
    let shown = redact(address);
    let mut info: ConnectionInfo = url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::invalid("address", format!("{shown:?}: {}", redact(&e.to_string()))))?;
    if let Some(p) = info.redis_settings().password() {
        register_secret(p);
    }
    let mut redis = info.redis_settings().clone();
    if let Some(u) = &settings.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &settings.password {
        redis = redis.set_password(p.expose());
    }
    if let Some(db) = settings.db {
        redis = redis.set_db(db);
    }
    info = info.set_redis_settings(redis);

    let (host, port, tls_in_url) = match info.addr() {
        ConnectionAddr::Tcp(h, p) => (h.clone(), *p, false),
        ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
        _ => {
            if settings.tls.is_some() {
                return Err(Error::invalid(
                    "tls",
                    format!("{shown:?}: TLS needs a TCP address (host:port)"),
                ));
            }
            return Ok(Target {
                client: Client::open(info).map_err(|e| {
                    Error::invalid("address", format!("{shown:?}: {}", redact(&e.to_string())))
                })?,
                display: shown,
                resolver: None,
            });
        }
    };
    let display = format_host_port(&host, port);
    let Some(tls) = &settings.tls else {
        let client = Client::open(info).map_err(|e| {
            Error::invalid("address", format!("{shown:?}: {}", redact(&e.to_string())))
        })?;
        let display = if tls_in_url {
            format!("rediss://{display}")
        } else {
            display
        };
        return Ok(Target {
            client,
            display,
            resolver: None,
        });
    };

    // TLS: the certificate name is the server name when given, else the host.
    let mut resolver = None;
    let mut tls_host = host.clone();
    if let Some(name) = &tls.server_name {
        if !name.eq_ignore_ascii_case(&host) {
            if resolution == Resolution::HostOnly {
                return Err(Error::invalid(
                    "tls.server_name",
                    format!(
                        "{name:?} differs from the host {host:?}: a Redis Cluster's nodes are \
                         verified against the addresses its slot map announces; let the servers \
                         announce {name:?} (cluster-announce-hostname) and use it as the seed, \
                         or leave server_name unset"
                    ),
                ));
            }
            resolver = Some(NameResolver {
                name: Arc::from(name.as_str()),
                host: Arc::from(host.as_str()),
            });
            tls_host = name.clone();
        }
    }
    info = info.set_addr(ConnectionAddr::TcpTls {
        host: tls_host,
        port,
        insecure: false,
        tls_params: None,
    });
    let client = match certificates(tls)? {
        None => Client::open(info),
        Some(certs) => Client::build_with_tls(info, certs),
    }
    .map_err(|e| {
        Error::invalid(
            "tls",
            format!(
                "{shown:?}: cannot use the certificates: {}",
                redact(&e.to_string())
            ),
        )
    })?;
    Ok(Target {
        client,
        display: format!("rediss://{display}"),
        resolver,
    })
}

/// The PEM files of `tls` read (`None` when neither a CA file nor a client certificate is
/// given: the system's roots). Also installs the rustls crypto provider. Errors name the
/// file's field.
pub(crate) fn certificates(tls: &TlsOptions) -> Result<Option<redis::TlsCertificates>> {
    install_crypto_provider();
    let root_cert = match &tls.ca_file {
        Some(p) => Some(read_pem("tls.ca_file", p)?),
        None => None,
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem("tls.cert_file", c)?,
            client_key: read_pem("tls.key_file", k)?,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Reads a PEM file; a missing, unreadable, empty or non-PEM file is an error naming `field`.
fn read_pem(field: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid(field, format!("cannot read {}: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::invalid(
            field,
            format!("{} is not a PEM file", path.display()),
        ));
    }
    Ok(bytes)
}

/// rustls needs a process-wide crypto provider; clusterkit builds with `ring`. Installing
/// fails harmlessly when the application installed one first.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends connections for the TLS server name to the real host.
#[derive(Clone, Debug)]
pub(crate) struct NameResolver {
    name: Arc<str>,
    host: Arc<str>,
}

impl redis::io::AsyncDNSResolver for NameResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let target = if host.eq_ignore_ascii_case(&self.name) {
            self.host.to_string()
        } else {
            host.to_string()
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// Every password this process has loaded (settings, URLs), for [`redact`].
static SECRETS: crate::fork::Mutex<Vec<Arc<str>>> = crate::fork::Mutex::new(Vec::new());

/// Passwords shorter than this are not scrubbed from free text (they would mangle ordinary
/// words); URL userinfo is redacted whatever its length.
const MIN_SCRUBBED_LEN: usize = 4;

fn register_secret(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut s = SECRETS.lock();
    if !s.iter().any(|x| &**x == value) && s.len() < 1024 {
        s.push(Arc::from(value));
    }
}

/// `text` with the password of every URL in it replaced by `***`
/// (`redis://user:pw@host` → `redis://user:***@host`) and every password the process has
/// loaded replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = redact_urls(text);
    let secrets = SECRETS.lock();
    for s in secrets.iter() {
        if out.contains(&**s) {
            out = out.replace(&**s, "***");
        }
    }
    out
}

fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        // The authority ends at '/', whitespace, a quote or the end; userinfo at its last '@'.
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_stars() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let settings = ConnectionSettings::default().with_password(s);
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_urls("unavailable: redis://:secretpw@127.0.0.1:16401: refused"),
            "unavailable: redis://:***@127.0.0.1:16401: refused"
        );
        assert_eq!(
            redact_urls("a rediss://app:p@ss:w@h:1/2 b redis://h:2"),
            "a rediss://app:***@h:1/2 b redis://h:2"
        );
        assert_eq!(redact_urls("redis://user@h:1"), "redis://user@h:1");
        assert_eq!(redact_urls("no url"), "no url");
        let _ = Secret::new("zq-registered-pw");
        assert_eq!(redact("said zq-registered-pw twice"), "said *** twice");
    }

    #[test]
    fn settings_merge_over_the_url() {
        let t = prepare(
            "redis://u1:pw-from-url@127.0.0.1:7001/3",
            &ConnectionSettings::default().with_db(5),
            Resolution::HostOnly,
        )
        .unwrap();
        let r = t.client.get_connection_info().redis_settings();
        assert_eq!(r.db(), 5);
        assert_eq!(r.username(), Some("u1"));
        assert_eq!(r.password(), Some("pw-from-url"));
        assert_eq!(t.display, "127.0.0.1:7001");
        let t = prepare(
            "127.0.0.1:7001",
            &ConnectionSettings::default()
                .with_username("app")
                .with_password(Secret::new("pw-setting")),
            Resolution::HostOnly,
        )
        .unwrap();
        let r = t.client.get_connection_info().redis_settings();
        assert_eq!(
            (r.username(), r.password(), r.db()),
            (Some("app"), Some("pw-setting"), 0)
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        let field = |s: ConnectionSettings, res| match prepare("127.0.0.1:1", &s, res) {
            Err(Error::InvalidArgument { field, message }) => {
                assert!(!message.is_empty());
                field
            }
            other => panic!("{other:?}"),
        };
        let missing = TlsOptions::with_ca_file("/nonexistent/ca.pem");
        assert_eq!(
            field(
                ConnectionSettings::default().with_tls(missing),
                Resolution::Custom
            ),
            "tls.ca_file"
        );
        let half = TlsOptions {
            cert_file: Some("c.pem".into()),
            ..TlsOptions::default()
        };
        assert_eq!(
            field(
                ConnectionSettings::default().with_tls(half),
                Resolution::Custom
            ),
            "tls.key_file"
        );
        let sni = TlsOptions::default().with_server_name("redis.internal");
        assert_eq!(
            field(
                ConnectionSettings::default().with_tls(sni.clone()),
                Resolution::HostOnly
            ),
            "tls.server_name"
        );
        assert!(prepare(
            "127.0.0.1:1",
            &ConnectionSettings::default().with_tls(sni),
            Resolution::Custom
        )
        .unwrap()
        .resolver
        .is_some());
        assert_eq!(
            field(
                ConnectionSettings::default().with_db(-1),
                Resolution::Custom
            ),
            "db"
        );
    }
}
