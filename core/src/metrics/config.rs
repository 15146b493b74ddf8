//! The `[metrics]` section of the config document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::scaling::ScalingConfig;

/// `[metrics]`: `enabled = true` (the default) exposes the Prometheus text, the snapshot
/// and the status page; `[metrics.scaling.<pool>]` gives a pool a [`crate::scaling::ScalingAdvisor`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Expose metrics (default true). When false, the counters are still kept (they are
    /// the health and balancing state), but the Prometheus text, the status page and the
    /// publishing for PHP-FPM fail with `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Scaling advisors by pool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scaling: BTreeMap<String, ScalingConfig>,
}

impl MetricsConfig {
    /// Whether metrics are exposed.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// Checks every advisor (errors name `scaling.<pool>.<field>`); each must name a pool
    /// among `pools`.
    pub fn validate<V>(&self, pools: &BTreeMap<String, V>) -> Result<()> {
        for (name, s) in &self.scaling {
            if !pools.contains_key(name) {
                return Err(Error::invalid(
                    format!("scaling.{name}"),
                    format!(
                        "names no pool (pools: {:?})",
                        pools.keys().collect::<Vec<_>>()
                    ),
                ));
            }
            s.options()
                .and_then(|o| o.validate())
                .map_err(|e| e.in_field(&format!("scaling.{name}")))?;
        }
        Ok(())
    }
}
