//! The health sections of a pool in the config document: `health = { ... }` (active checks,
//! also per node) and `outlier = { ... }` (passive outlier detection).
//!
//! Every value is bounded; [`HealthCheckConfig::validate`] and [`OutlierConfig::validate`]
//! report the field by its name in the document (`fall`, `max_ejected_percent`), relative
//! to the section; the pool prefixes its own path (`pools.app.health.fall`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::health::{CheckKind, CheckOptions, OutlierOptions};
use crate::config::{check_duration, check_float, check_int, DurationText};
use crate::error::{Error, Result};

/// Shortest interval between two checks of one node.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval between two checks of one node (1 h).
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest check timeout (60 s).
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `rise` / `fall` threshold.
pub const MAX_THRESHOLD: u32 = 1000;
/// Longest HTTP check path, in bytes.
pub const MAX_CHECK_PATH_LEN: usize = 2048;
/// Largest `consecutive_failures`.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;
/// Longest ejection time, base or maximum (1 day).
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(86_400);

/// Which probe an active check uses.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http,
    /// Redis PING.
    Redis,
}

/// `health = { check = "http", path = "/healthz", interval = "2s", rise = 2, fall = 3 }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The probe: `tcp`, `http` or `redis`.
    pub check: CheckName,
    /// HTTP path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Accepted HTTP statuses `[low, high]` (default `[200, 299]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<[u16; 2]>,
    /// Time between checks (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
    /// Check timeout (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Successes to become healthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures to become unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// Interval jitter share, 0.0..=0.5 (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl HealthCheckConfig {
    /// The check options this section describes.
    pub fn options(&self) -> CheckOptions {
        let kind = match self.check {
            CheckName::Tcp => CheckKind::Tcp,
            CheckName::Redis => CheckKind::RedisPing,
            CheckName::Http => {
                let [lo, hi] = self.expected_status.unwrap_or([200, 299]);
                CheckKind::Http {
                    path: self.path.clone().unwrap_or_else(|| "/".into()),
                    expected: lo..=hi,
                }
            }
        };
        let mut o = CheckOptions::new(kind);
        if let Some(d) = self.interval {
            o.interval = d.0;
        }
        if let Some(d) = self.timeout {
            o.timeout = d.0;
        }
        if let Some(r) = self.rise {
            o.rise = r;
        }
        if let Some(f) = self.fall {
            o.fall = f;
        }
        if let Some(j) = self.jitter {
            o.jitter = j;
        }
        o
    }

    /// Checks every value against its bound. Fails with [`Error::InvalidArgument`] naming
    /// the field as written in the section (`interval`, `fall`, `expected_status`).
    pub fn validate(&self) -> Result<()> {
        if self.check != CheckName::Http {
            if self.path.is_some() {
                return Err(Error::invalid("path", "applies to check = \"http\" only"));
            }
            if self.expected_status.is_some() {
                return Err(Error::invalid(
                    "expected_status",
                    "applies to check = \"http\" only",
                ));
            }
        }
        if let Some(p) = &self.path {
            if !p.starts_with('/')
                || p.len() > MAX_CHECK_PATH_LEN
                || p.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid(
                    "path",
                    format!(
                        "must start with /, be at most {MAX_CHECK_PATH_LEN} bytes and contain no whitespace, got {:?}",
                        crate::config::excerpt(p)
                    ),
                ));
            }
        }
        if let Some([lo, hi]) = self.expected_status {
            if lo > hi || lo < 100 || hi > 599 {
                return Err(Error::invalid(
                    "expected_status",
                    format!(
                        "must be [low, high] within 100..=599 with low <= high, got [{lo}, {hi}]"
                    ),
                ));
            }
        }
        if let Some(d) = self.interval {
            check_duration("interval", d.0, MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL)?;
        }
        if let Some(d) = self.timeout {
            check_duration("timeout", d.0, Duration::from_millis(1), MAX_CHECK_TIMEOUT)?;
        }
        if let Some(r) = self.rise {
            check_int("rise", r, 1, MAX_THRESHOLD)?;
        }
        if let Some(f) = self.fall {
            check_int("fall", f, 1, MAX_THRESHOLD)?;
        }
        if let Some(j) = self.jitter {
            check_float("jitter", j, 0.0, 0.5)?;
        }
        // The core's own rules (cross-field ones included), named like the document.
        self.options()
            .validate()
            .map_err(|e| rename(e, &[("health.", "")]))
    }
}

/// `outlier = { consecutive_failures = 5, base_ejection_time = "30s", max_ejection_time = "300s", max_ejected_percent = 50 }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures that eject (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<DurationText>,
    /// Longest ejection (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<DurationText>,
    /// Largest share of the pool ejected at once, in percent (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<f64>,
}

impl OutlierConfig {
    /// The outlier options this section describes.
    pub fn options(&self) -> OutlierOptions {
        let mut o = OutlierOptions::default();
        if let Some(n) = self.consecutive_failures {
            o.consecutive_failures = n;
        }
        if let Some(d) = self.base_ejection_time {
            o.base_ejection_time = d.0;
        }
        if let Some(d) = self.max_ejection_time {
            o.max_ejection_time = d.0;
        }
        if let Some(p) = self.max_ejected_percent {
            o.max_ejected_share = p / 100.0;
        }
        o
    }

    /// Checks every value against its bound. Fails with [`Error::InvalidArgument`] naming
    /// the field as written in the section (`base_ejection_time`, `max_ejected_percent`).
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = self.consecutive_failures {
            check_int("consecutive_failures", n, 1, MAX_CONSECUTIVE_FAILURES)?;
        }
        let one_ms = Duration::from_millis(1);
        if let Some(d) = self.base_ejection_time {
            check_duration("base_ejection_time", d.0, one_ms, MAX_EJECTION_TIME)?;
        }
        if let Some(d) = self.max_ejection_time {
            check_duration("max_ejection_time", d.0, one_ms, MAX_EJECTION_TIME)?;
        }
        let o = self.options();
        if o.max_ejection_time < o.base_ejection_time {
            // Blame the value the user wrote: the maximum if given, else the base.
            let field = if self.max_ejection_time.is_some() {
                "max_ejection_time"
            } else {
                "base_ejection_time"
            };
            return Err(Error::invalid(
                field,
                format!(
                    "max_ejection_time ({}) must be at least base_ejection_time ({})",
                    crate::config::human(o.max_ejection_time),
                    crate::config::human(o.base_ejection_time)
                ),
            ));
        }
        if let Some(p) = self.max_ejected_percent {
            check_float("max_ejected_percent", p, 0.0, 100.0)?;
        }
        o.validate().map_err(|e| {
            rename(
                e,
                &[
                    ("outlier.max_ejected_share", "max_ejected_percent"),
                    ("outlier.", ""),
                ],
            )
        })
    }
}

/// Renames the field of an [`Error::InvalidArgument`] from the core's option names to the
/// document's: the first `(from, to)` prefix that matches is replaced.
fn rename(e: Error, map: &[(&str, &str)]) -> Error {
    match e {
        Error::InvalidArgument { field, message } => {
            let field = map
                .iter()
                .find_map(|(from, to)| field.strip_prefix(from).map(|rest| format!("{to}{rest}")))
                .unwrap_or(field);
            Error::InvalidArgument { field, message }
        }
        other => other,
    }
}
