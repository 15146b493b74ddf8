//! [`ScalingAdvisor`]: reads a pool's load (in flight per node, p95 latency, error rate)
//! against targets and recommends a node count, with hysteresis (a breach must last), a
//! cooldown between changes, min/max bounds and the reason. It only recommends: the
//! operator's orchestrator acts on it (see docs/monitoring.md for a worked example).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{check_duration, DurationText};
use crate::error::{Error, Result};

/// Largest `max_nodes`.
pub const MAX_NODES: u32 = 10_000;
/// Longest `scale_out_after`, `scale_in_after` or `cooldown` (1 day).
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// Targets and pacing of one advisor.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingOptions {
    /// Wanted requests in flight per node (> 0).
    pub target_in_flight: f64,
    /// Wanted p95 latency of reported outcomes (`None`: latency is not a signal).
    pub target_p95: Option<Duration>,
    /// Highest acceptable share of failed outcomes, 0..1 (`None`: not a signal).
    pub max_error_rate: Option<f64>,
    /// Fewest nodes ever recommended (>= 1).
    pub min_nodes: u32,
    /// Most nodes ever recommended (>= `min_nodes`, <= [`MAX_NODES`]).
    pub max_nodes: u32,
    /// Relative band around the targets in which nothing changes (default 0.1: ±10 %).
    pub tolerance: f64,
    /// How long load must stay above the targets before scaling out (default 30 s).
    pub scale_out_after: Duration,
    /// How long load must stay below the targets before scaling in (default 5 min).
    pub scale_in_after: Duration,
    /// Least time between two changes of the recommendation (default 5 min).
    pub cooldown: Duration,
}

impl Default for ScalingOptions {
    fn default() -> Self {
        ScalingOptions {
            target_in_flight: 10.0,
            target_p95: None,
            max_error_rate: None,
            min_nodes: 1,
            max_nodes: 100,
            tolerance: 0.1,
            scale_out_after: Duration::from_secs(30),
            scale_in_after: Duration::from_secs(300),
            cooldown: Duration::from_secs(300),
        }
    }
}

impl ScalingOptions {
    /// Checks every field; errors name it.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_in_flight.is_finite() && self.target_in_flight > 0.0) {
            return Err(Error::invalid("target_in_flight", "must be a number > 0"));
        }
        if let Some(p) = self.target_p95 {
            check_duration("target_p95", p, Duration::from_micros(1), MAX_WINDOW)?;
        }
        if let Some(e) = self.max_error_rate {
            if !(e > 0.0 && e < 1.0) {
                return Err(Error::invalid("max_error_rate", "must be between 0 and 1"));
            }
        }
        if self.min_nodes == 0 {
            return Err(Error::invalid("min_nodes", "must be at least 1"));
        }
        if self.max_nodes < self.min_nodes || self.max_nodes > MAX_NODES {
            return Err(Error::invalid(
                "max_nodes",
                format!(
                    "must be between min_nodes ({}) and {MAX_NODES}",
                    self.min_nodes
                ),
            ));
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 1.0) {
            return Err(Error::invalid("tolerance", "must be in 0..1"));
        }
        check_duration(
            "scale_out_after",
            self.scale_out_after,
            Duration::ZERO,
            MAX_WINDOW,
        )?;
        check_duration(
            "scale_in_after",
            self.scale_in_after,
            Duration::ZERO,
            MAX_WINDOW,
        )?;
        check_duration("cooldown", self.cooldown, Duration::ZERO, MAX_WINDOW)?;
        Ok(())
    }
}

/// `[metrics.scaling.<pool>]` of the config document (see [`ScalingOptions`] for the
/// meaning and defaults of each field).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    /// [`ScalingOptions::target_in_flight`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_in_flight: Option<f64>,
    /// [`ScalingOptions::target_p95`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_p95: Option<DurationText>,
    /// [`ScalingOptions::max_error_rate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// [`ScalingOptions::min_nodes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_nodes: Option<u32>,
    /// [`ScalingOptions::max_nodes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<u32>,
    /// [`ScalingOptions::tolerance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// [`ScalingOptions::scale_out_after`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_after: Option<DurationText>,
    /// [`ScalingOptions::scale_in_after`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_after: Option<DurationText>,
    /// [`ScalingOptions::cooldown`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<DurationText>,
}

impl ScalingConfig {
    /// The options this section describes (defaults for absent fields), validated.
    pub fn options(&self) -> Result<ScalingOptions> {
        let d = ScalingOptions::default();
        let o = ScalingOptions {
            target_in_flight: self.target_in_flight.unwrap_or(d.target_in_flight),
            target_p95: self.target_p95.map(|t| t.0),
            max_error_rate: self.max_error_rate,
            min_nodes: self.min_nodes.unwrap_or(d.min_nodes),
            max_nodes: self.max_nodes.unwrap_or(d.max_nodes),
            tolerance: self.tolerance.unwrap_or(d.tolerance),
            scale_out_after: self.scale_out_after.map_or(d.scale_out_after, |t| t.0),
            scale_in_after: self.scale_in_after.map_or(d.scale_in_after, |t| t.0),
            cooldown: self.cooldown.map_or(d.cooldown, |t| t.0),
        };
        o.validate()?;
        Ok(o)
    }
}

/// One observation of a pool's load.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Nodes in the pool now.
    pub nodes: u32,
    /// Requests in flight, all nodes together.
    pub in_flight: f64,
    /// p95 latency of the outcomes since the last observation (`None`: none reported).
    pub p95: Option<Duration>,
    /// Share of failed outcomes since the last observation (`None`: none reported).
    pub error_rate: Option<f64>,
}

/// What the advisor recommends now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The pool.
    pub pool: String,
    /// Nodes in the pool now.
    pub current: u32,
    /// Nodes recommended.
    pub recommended: u32,
    /// The load alone asks for this many (before hysteresis, cooldown and bounds).
    pub desired: u32,
    /// True when this observation changed the recommendation.
    pub changed: bool,
    /// Why, in one line.
    pub reason: String,
}

/// The advisor of one pool; feed it one [`Load`] per evaluation interval.
#[derive(Debug, Clone)]
pub struct ScalingAdvisor {
    pool: String,
    options: ScalingOptions,
    recommended: Option<u32>,
    /// Since when the load asks for more (or fewer) nodes than recommended.
    above_since: Option<Instant>,
    below_since: Option<Instant>,
    last_change: Option<Instant>,
}

impl ScalingAdvisor {
    /// An advisor for `pool`. Fails on invalid options (the error names the field).
    pub fn new(pool: impl Into<String>, options: ScalingOptions) -> Result<ScalingAdvisor> {
        options.validate()?;
        Ok(ScalingAdvisor {
            pool: pool.into(),
            options,
            recommended: None,
            above_since: None,
            below_since: None,
            last_change: None,
        })
    }

    /// The options.
    pub fn options(&self) -> &ScalingOptions {
        &self.options
    }

    fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.options.min_nodes, self.options.max_nodes)
    }

    /// Takes one observation at `now` and returns the recommendation.
    pub fn observe(&mut self, now: Instant, load: Load) -> Recommendation {
        let o = &self.options;
        let base = self.recommended.unwrap_or(load.nodes.max(1));
        let nodes = load.nodes.max(1) as f64;
        // The most demanding signal, as a ratio to its target (1.0 = on target).
        let mut ratio = load.in_flight / nodes / o.target_in_flight;
        let mut signal = format!(
            "in flight per node {:.1} vs target {:.1}",
            load.in_flight / nodes,
            o.target_in_flight
        );
        if let (Some(t), Some(p)) = (o.target_p95, load.p95) {
            let r = p.as_secs_f64() / t.as_secs_f64();
            if r > ratio {
                ratio = r;
                signal = format!("p95 latency {p:?} vs target {t:?}");
            }
        }
        if let (Some(m), Some(e)) = (o.max_error_rate, load.error_rate) {
            let r = e / m;
            if r > ratio {
                ratio = r;
                signal = format!("error rate {:.1}% vs max {:.1}%", e * 100.0, m * 100.0);
            }
        }
        let desired_raw = if (ratio - 1.0).abs() <= o.tolerance {
            load.nodes.max(1)
        } else {
            (nodes * ratio).ceil().min(f64::from(MAX_NODES)) as u32
        };
        let desired = self.clamp(desired_raw.max(1));
        let bounded = if desired != desired_raw.max(1) {
            format!(
                " (bounded to {}..={})",
                self.options.min_nodes, self.options.max_nodes
            )
        } else {
            String::new()
        };
        let o = &self.options;
        if desired > base {
            self.below_since = None;
            let since = *self.above_since.get_or_insert(now);
            let held = now.duration_since(since);
            if held < o.scale_out_after {
                return self.result(
                    load,
                    base,
                    desired,
                    false,
                    format!(
                        "{signal}: above target for {held:?}, scaling out after {:?}",
                        o.scale_out_after
                    ),
                );
            }
        } else if desired < base {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            let held = now.duration_since(since);
            if held < o.scale_in_after {
                return self.result(
                    load,
                    base,
                    desired,
                    false,
                    format!(
                        "{signal}: below target for {held:?}, scaling in after {:?}",
                        o.scale_in_after
                    ),
                );
            }
        } else {
            self.above_since = None;
            self.below_since = None;
            let rec = self.clamp(base);
            self.recommended = Some(rec);
            return self.result(
                load,
                rec,
                desired,
                false,
                format!("{signal}: within target{bounded}"),
            );
        }
        if let Some(last) = self.last_change {
            let since = now.duration_since(last);
            if since < o.cooldown {
                return self.result(
                    load,
                    base,
                    desired,
                    false,
                    format!(
                        "{signal}: wants {desired} nodes but in cooldown for {:?} more",
                        o.cooldown - since
                    ),
                );
            }
        }
        let dir = if desired > base { "out" } else { "in" };
        self.recommended = Some(desired);
        self.last_change = Some(now);
        self.above_since = None;
        self.below_since = None;
        self.result(
            load,
            desired,
            desired,
            true,
            format!("{signal}: scale {dir} to {desired}{bounded}"),
        )
    }

    fn result(
        &mut self,
        load: Load,
        rec: u32,
        desired: u32,
        changed: bool,
        reason: String,
    ) -> Recommendation {
        let rec = self.clamp(rec);
        self.recommended.get_or_insert(rec);
        if changed {
            tracing::info!(target: "clusterkit::scaling", pool = %self.pool, current = load.nodes,
                recommended = rec, reason = %reason, "scaling recommendation changed");
        }
        Recommendation {
            pool: self.pool.clone(),
            current: load.nodes,
            recommended: rec,
            desired,
            changed,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisor() -> ScalingAdvisor {
        ScalingAdvisor::new(
            "app",
            ScalingOptions {
                target_in_flight: 10.0,
                min_nodes: 2,
                max_nodes: 6,
                scale_out_after: Duration::from_secs(30),
                scale_in_after: Duration::from_secs(120),
                cooldown: Duration::from_secs(60),
                ..ScalingOptions::default()
            },
        )
        .unwrap()
    }

    fn load(nodes: u32, in_flight: f64) -> Load {
        Load {
            nodes,
            in_flight,
            ..Load::default()
        }
    }

    #[test]
    fn sustained_load_scales_out() {
        let mut a = advisor();
        let t0 = Instant::now();
        // 3 nodes at 20 in flight each: twice the target, wants 6.
        let mut r = a.observe(t0, load(3, 60.0));
        assert_eq!((r.recommended, r.desired, r.changed), (3, 6, false));
        for s in [10, 20] {
            r = a.observe(t0 + Duration::from_secs(s), load(3, 60.0));
            assert_eq!(r.recommended, 3, "{}", r.reason);
        }
        r = a.observe(t0 + Duration::from_secs(30), load(3, 60.0));
        assert_eq!((r.recommended, r.changed), (6, true), "{}", r.reason);
        assert!(r.reason.contains("scale out to 6"), "{}", r.reason);
    }

    #[test]
    fn short_spike_changes_nothing() {
        let mut a = advisor();
        let t0 = Instant::now();
        a.observe(t0, load(3, 30.0));
        let r = a.observe(t0 + Duration::from_secs(5), load(3, 90.0));
        assert_eq!((r.recommended, r.changed), (3, false));
        assert!(r.reason.contains("above target"), "{}", r.reason);
        // The spike is over before scale_out_after: the clock starts again.
        let r = a.observe(t0 + Duration::from_secs(20), load(3, 30.0));
        assert_eq!((r.recommended, r.changed), (3, false));
        let r = a.observe(t0 + Duration::from_secs(40), load(3, 90.0));
        assert_eq!((r.recommended, r.changed), (3, false), "{}", r.reason);
    }

    #[test]
    fn scale_in_waits_for_the_cooldown_and_the_window() {
        let mut a = advisor();
        let t0 = Instant::now();
        a.observe(t0, load(3, 60.0));
        let r = a.observe(t0 + Duration::from_secs(30), load(3, 60.0));
        assert_eq!(r.recommended, 6);
        // Load drops right away: low for the scale-in window but still in the cooldown?
        // The window (120 s) is longer than the cooldown (60 s) here, so check both orders.
        let t1 = t0 + Duration::from_secs(31);
        let r = a.observe(t1, load(6, 12.0));
        assert_eq!((r.recommended, r.changed), (6, false), "{}", r.reason);
        let r = a.observe(t1 + Duration::from_secs(119), load(6, 12.0));
        assert_eq!((r.recommended, r.changed), (6, false), "{}", r.reason);
        let r = a.observe(t1 + Duration::from_secs(120), load(6, 12.0));
        assert_eq!((r.recommended, r.changed), (2, true), "{}", r.reason);
        assert!(r.reason.contains("scale in"), "{}", r.reason);
    }

    #[test]
    fn cooldown_holds_a_second_change() {
        let mut a = ScalingAdvisor::new(
            "app",
            ScalingOptions {
                scale_out_after: Duration::ZERO,
                scale_in_after: Duration::ZERO,
                cooldown: Duration::from_secs(60),
                max_nodes: 50,
                ..ScalingOptions::default()
            },
        )
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(a.observe(t0, load(2, 40.0)).recommended, 4);
        let r = a.observe(t0 + Duration::from_secs(10), load(4, 80.0));
        assert_eq!((r.recommended, r.changed), (4, false));
        assert!(r.reason.contains("cooldown"), "{}", r.reason);
        let r = a.observe(t0 + Duration::from_secs(60), load(4, 80.0));
        assert_eq!((r.recommended, r.changed), (8, true), "{}", r.reason);
    }

    #[test]
    fn bounds_hold() {
        let mut a = advisor();
        let t0 = Instant::now();
        a.observe(t0, load(3, 1000.0));
        let r = a.observe(t0 + Duration::from_secs(30), load(3, 1000.0));
        assert_eq!(r.recommended, 6, "max_nodes");
        assert!(r.reason.contains("bounded to 2..=6"), "{}", r.reason);
        let mut a = advisor();
        a.observe(t0, load(3, 0.0));
        let r = a.observe(t0 + Duration::from_secs(120), load(3, 0.0));
        assert_eq!(r.recommended, 2, "min_nodes");
        // A pool below min_nodes is advised up at once.
        let mut a = advisor();
        assert_eq!(a.observe(t0, load(1, 0.0)).recommended, 2);
    }

    #[test]
    fn latency_and_errors_are_signals_too() {
        let mut a = ScalingAdvisor::new(
            "app",
            ScalingOptions {
                target_p95: Some(Duration::from_millis(100)),
                max_error_rate: Some(0.05),
                scale_out_after: Duration::ZERO,
                ..ScalingOptions::default()
            },
        )
        .unwrap();
        let t0 = Instant::now();
        let r = a.observe(
            t0,
            Load {
                nodes: 2,
                in_flight: 2.0,
                p95: Some(Duration::from_millis(300)),
                error_rate: Some(0.0),
            },
        );
        assert_eq!(r.recommended, 6, "{}", r.reason);
        assert!(r.reason.contains("p95"), "{}", r.reason);
    }

    #[test]
    fn bad_options_name_the_field() {
        let e = ScalingAdvisor::new(
            "a",
            ScalingOptions {
                min_nodes: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("min_nodes"), "{e}");
        let e = ScalingAdvisor::new(
            "a",
            ScalingOptions {
                min_nodes: 5,
                max_nodes: 2,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_nodes"), "{e}");
        let e = ScalingAdvisor::new(
            "a",
            ScalingOptions {
                target_in_flight: f64::NAN,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("target_in_flight"), "{e}");
    }
}
