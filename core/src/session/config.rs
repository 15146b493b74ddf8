//! The `[sessions]` section of the config document.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{check_duration, DurationText};
use crate::error::Result;
use crate::session::SessionOptions;

/// Longest idle or absolute session timeout (365 days).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);
/// Longest `refresh_interval` (1 day).
pub const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(86_400);
/// Longest `lock_wait` (1 h).
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(3600);

/// `[sessions]`: `idle_timeout = "30m"`, `absolute_timeout = "12h"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle (sliding) timeout (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<DurationText>,
    /// Absolute timeout from creation (default 12h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<DurationText>,
    /// Unchanged sessions are not refreshed more often than this (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<DurationText>,
    /// Lock TTL for locked loads (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<DurationText>,
    /// Longest wait for a session lock (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait: Option<DurationText>,
}

impl SessionsConfig {
    /// The session options this section describes.
    pub fn options(&self) -> SessionOptions {
        let d = SessionOptions::default();
        let pick = |v: Option<DurationText>, default: Duration| v.map(|x| x.0).unwrap_or(default);
        d.clone()
            .with_timeouts(
                pick(self.idle_timeout, d.idle_timeout),
                pick(self.absolute_timeout, d.absolute_timeout),
            )
            .with_refresh_interval(pick(self.refresh_interval, d.refresh_interval))
            .with_lock(
                pick(self.lock_ttl, d.lock_ttl),
                pick(self.lock_wait, d.lock_wait),
            )
    }

    /// Checks every value against its bound. Fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the field as written
    /// in the section (`idle_timeout`, `lock_ttl`, ...).
    pub fn validate(&self) -> Result<()> {
        let one_ms = Duration::from_millis(1);
        if let Some(d) = self.idle_timeout {
            check_duration("idle_timeout", d.0, one_ms, MAX_TIMEOUT)?;
        }
        if let Some(d) = self.absolute_timeout {
            check_duration("absolute_timeout", d.0, one_ms, MAX_TIMEOUT)?;
        }
        if let Some(d) = self.refresh_interval {
            check_duration(
                "refresh_interval",
                d.0,
                Duration::ZERO,
                MAX_REFRESH_INTERVAL,
            )?;
        }
        if let Some(d) = self.lock_ttl {
            check_duration("lock_ttl", d.0, one_ms, crate::lock::MAX_TTL)?;
        }
        if let Some(d) = self.lock_wait {
            check_duration("lock_wait", d.0, Duration::ZERO, MAX_LOCK_WAIT)?;
        }
        self.options().validate()
    }
}
