//! The `[redis]` section of the config document (and its per-pool override
//! `[pools.<name>.redis]`): credentials, database and TLS for every Redis connection.
//!
//! ```toml
//! [redis]
//! username = "app"                 # ACL user (optional)
//! password_env = "REDIS_PASSWORD"  # or password_file = "/run/secrets/redis"; or password = "..."
//! db = 0
//! tls = { ca_file = "ca.pem", server_name = "redis.internal" }  # cert_file/key_file optional
//!
//! [pools.cache.redis]              # overrides [redis] for the connections of pool "cache"
//! db = 2
//! ```
//!
//! A pool's section overrides the top-level one field by field; giving any password source
//! (`password`, `password_env`, `password_file`) replaces the top-level password, and giving
//! `tls` replaces the top-level `tls` table as a whole.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConnectionSettings, Secret, TlsOptions};
use crate::error::{Error, Result};

/// `[redis]`: defaults for every Redis connection the deployment opens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// ACL username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Inline password (works, but prefer `password_env` or `password_file`). Serialized as
    /// `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of the environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (trailing newlines are removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Database index (default 0, or the URL's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
    /// TLS (rustls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

/// `tls = { ca_file = "ca.pem", cert_file = "client.pem", key_file = "client.key", server_name = "redis.internal" }`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificate(s), PEM; absent: the system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, PEM (mutual TLS; needs `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client private key, PEM (needs `cert_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name verified in the server's certificate when it differs from the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl RedisSection {
    /// This section over `base`: every field set here wins (see the module docs for the
    /// password and `tls` rules).
    pub fn over(&self, base: &RedisSection) -> RedisSection {
        let own_password =
            self.password.is_some() || self.password_env.is_some() || self.password_file.is_some();
        let (password, password_env, password_file) = if own_password {
            (
                self.password.clone(),
                self.password_env.clone(),
                self.password_file.clone(),
            )
        } else {
            (
                base.password.clone(),
                base.password_env.clone(),
                base.password_file.clone(),
            )
        };
        RedisSection {
            username: self.username.clone().or_else(|| base.username.clone()),
            password,
            password_env,
            password_file,
            db: self.db.or(base.db),
            tls: self.tls.clone().or_else(|| base.tls.clone()),
        }
    }

    /// The connection settings this section describes: reads the password from its
    /// environment variable or file and checks every value and that the TLS files are
    /// readable. Errors name the field (`password_env`, `password_file`, `db`,
    /// `tls.ca_file`, ...), never the password.
    pub fn settings(&self) -> Result<ConnectionSettings> {
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources > 1 {
            return Err(Error::invalid(
                "password",
                "give one of password, password_env and password_file",
            ));
        }
        let password = if let Some(p) = &self.password {
            Some(p.clone())
        } else if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|e| {
                Error::invalid("password_env", format!("environment variable {var:?}: {e}"))
            })?;
            if value.is_empty() {
                return Err(Error::invalid(
                    "password_env",
                    format!("environment variable {var:?} is empty"),
                ));
            }
            Some(Secret::new(value))
        } else if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(
                    "password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(Error::invalid(
                    "password_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Some(Secret::new(value))
        } else {
            None
        };
        let tls = self.tls.as_ref().map(|t| TlsOptions {
            ca_file: t.ca_file.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            server_name: t.server_name.clone(),
        });
        if let Some(t) = &tls {
            for (field, path) in [
                ("tls.ca_file", &t.ca_file),
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
            ] {
                if let Some(p) = path {
                    std::fs::File::open(p).map_err(|e| {
                        Error::invalid(field, format!("cannot read {}: {e}", p.display()))
                    })?;
                }
            }
        }
        let settings = ConnectionSettings {
            username: self.username.clone(),
            password,
            db: self.db,
            tls,
        };
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> RedisSection {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn pool_overrides_field_by_field() {
        let base = section("username = \"app\"\npassword = \"base-pw\"\ndb = 1\n");
        let pool = section("db = 2\npassword_env = \"X\"\n");
        let m = pool.over(&base);
        assert_eq!(m.username.as_deref(), Some("app"));
        assert_eq!(m.db, Some(2));
        assert!(m.password.is_none());
        assert_eq!(m.password_env.as_deref(), Some("X"));
        let m = RedisSection::default().over(&base);
        assert_eq!(m, base);
    }

    #[test]
    fn password_sources() {
        let dir = std::env::temp_dir().join(format!("ck-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file-pw\n").unwrap();
        let s = RedisSection {
            password_file: Some(file.clone()),
            ..RedisSection::default()
        }
        .settings()
        .unwrap();
        assert_eq!(s.password.unwrap().expose(), "from-file-pw");
        let e = RedisSection {
            password_env: Some("CK_SURELY_UNSET_VARIABLE".into()),
            ..RedisSection::default()
        }
        .settings()
        .unwrap_err();
        assert!(e.to_string().contains("password_env"), "{e}");
        let e = RedisSection {
            password_file: Some(dir.join("missing")),
            ..RedisSection::default()
        }
        .settings()
        .unwrap_err();
        assert!(e.to_string().contains("password_file"), "{e}");
        let e = section("password = \"a-b-c-d\"\npassword_env = \"X\"\n")
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("invalid password"), "{e}");
        assert!(!e.to_string().contains("a-b-c-d"), "{e}");
        let e = section("tls = { ca_file = \"/nonexistent/ca.pem\" }\n")
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("tls.ca_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn inline_password_never_serialized() {
        let s = section("password = \"inline-secret-pw\"\n");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("inline-secret-pw"), "{json}");
        assert!(!format!("{s:?}").contains("inline-secret-pw"));
    }
}
