//! The monitoring entry points of [`Clusterkit`] (issue #15), kept beside deployment.rs:
//! the snapshot, the Prometheus text, the status page, the scaling advice and the sharing
//! of snapshots between PHP-FPM workers. Each is one call returning a string, a JSON value
//! or a plain struct, so a binding only converts types.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::deployment::Clusterkit;
use crate::error::{Error, Result};
use crate::metrics::{
    CacheMetrics, HistogramSnapshot, MetricsConfig, MetricsSnapshot, NodeMetrics, PoolMetrics,
};
use crate::scaling::{Load, Recommendation, ScalingAdvisor};

/// Longest `max_age` of [`Clusterkit::aggregate_metrics`] (1 day).
pub const MAX_AGGREGATE_AGE: Duration = Duration::from_secs(86_400);

struct AdvisorState {
    advisor: ScalingAdvisor,
    last_latency: HistogramSnapshot,
    last_outcomes: (u64, u64),
    last: Option<Recommendation>,
}

pub(crate) struct Monitor {
    enabled: bool,
    advisors: Vec<(String, crate::fork::Mutex<AdvisorState>)>,
}

impl Monitor {
    pub(crate) fn new(config: Option<&MetricsConfig>) -> Result<Monitor> {
        let config = config.cloned().unwrap_or_default();
        let mut advisors = Vec::new();
        for (pool, s) in &config.scaling {
            let o = s
                .options()
                .map_err(|e| e.in_field(&format!("metrics.scaling.{pool}")))?;
            advisors.push((
                pool.clone(),
                crate::fork::Mutex::new(AdvisorState {
                    advisor: ScalingAdvisor::new(pool.clone(), o)?,
                    last_latency: HistogramSnapshot::default(),
                    last_outcomes: (0, 0),
                    last: None,
                }),
            ));
        }
        Ok(Monitor {
            enabled: config.is_enabled(),
            advisors,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn diff(now: &HistogramSnapshot, before: &HistogramSnapshot) -> HistogramSnapshot {
    HistogramSnapshot {
        counts: now
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(before.counts.get(i).copied().unwrap_or(0)))
            .collect(),
        sum_us: now.sum_us.saturating_sub(before.sum_us),
    }
}

impl Clusterkit {
    fn check_enabled(&self) -> Result<()> {
        if self.monitor.enabled {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "metrics are disabled ([metrics] enabled = false)".into(),
            ))
        }
    }

    /// True unless the document says `[metrics] enabled = false`.
    pub fn metrics_enabled(&self) -> bool {
        self.monitor.enabled
    }

    /// Everything this process measures for this deployment, now. Runs each scaling
    /// advisor once (its evaluation interval is the interval between snapshots: a scrape).
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let pools: Vec<PoolMetrics> = self
            .pools()
            .iter()
            .map(|(name, c)| {
                let h = c.health_metrics();
                PoolMetrics {
                    name: name.clone(),
                    strategy: c.options().strategy.as_str().to_string(),
                    total: c.len() as u64,
                    healthy: c.healthy_count() as u64,
                    in_panic: c.in_panic(),
                    checks: h.checks,
                    check_failures: h.check_failures,
                    ejections: h.ejections,
                    ejections_refused: h.ejections_refused,
                    nodes: c
                        .nodes()
                        .iter()
                        .map(|n| NodeMetrics {
                            id: n.node.id().to_string(),
                            address: n.node.address(),
                            weight: n.node.weight(),
                            health: n.health.as_str().to_string(),
                            reason: n.reason.to_string(),
                            ejected: n.stats.is_ejected(),
                            in_flight: n.stats.in_flight(),
                            picks: n.stats.picks(),
                            successes: n.stats.successes(),
                            failures: n.stats.failures(),
                            ejections: n.stats.ejections(),
                            latency: n.stats.latency(),
                        })
                        .collect(),
                }
            })
            .collect();
        let stats = self.cache().stats();
        let scaling = self.advise(&pools);
        MetricsSnapshot {
            processes: 1,
            taken_at_ms: now_ms(),
            pools,
            cache: CacheMetrics {
                node: self.cache().backend_name().to_string(),
                hits: stats.hits,
                misses: stats.misses,
                errors: stats.errors,
                writes: stats.writes,
                get_latency: self.cache().get_latency(),
            },
            locks: self.locks().stats(),
            sessions: self.sessions().stats(),
            redis: crate::metrics::counters::REDIS.read(),
            scaling,
            queue: self.queue().metrics(),
        }
    }

    fn advise(&self, pools: &[PoolMetrics]) -> Vec<Recommendation> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (name, state) in &self.monitor.advisors {
            let Some(p) = pools.iter().find(|p| &p.name == name) else {
                continue;
            };
            let mut st = state.lock();
            let mut latency = HistogramSnapshot::default();
            let (mut ok, mut failed) = (0u64, 0u64);
            for n in &p.nodes {
                latency.merge(&n.latency);
                ok += n.successes;
                failed += n.failures;
            }
            let window = diff(&latency, &st.last_latency);
            let (d_ok, d_failed) = (
                ok.saturating_sub(st.last_outcomes.0),
                failed.saturating_sub(st.last_outcomes.1),
            );
            st.last_latency = latency;
            st.last_outcomes = (ok, failed);
            let load = Load {
                nodes: p.total as u32,
                in_flight: p.nodes.iter().map(|n| n.in_flight as f64).sum(),
                p95: window.quantile_us(0.95).map(Duration::from_micros),
                error_rate: (d_ok + d_failed > 0)
                    .then(|| d_failed as f64 / (d_ok + d_failed) as f64),
            };
            let r = st.advisor.observe(now, load);
            st.last = Some(r.clone());
            out.push(r);
        }
        out
    }

    /// The latest recommendation of each configured advisor (`[metrics.scaling.<pool>]`)
    /// without evaluating again (empty before the first snapshot).
    pub fn scaling_advice(&self) -> Vec<Recommendation> {
        self.monitor
            .advisors
            .iter()
            .filter_map(|(_, s)| s.lock().last.clone())
            .collect()
    }

    /// [`Clusterkit::metrics_snapshot`] in the Prometheus text format for a scrape (content
    /// type [`crate::metrics::PROMETHEUS_CONTENT_TYPE`]). Fails with `unavailable` when
    /// metrics are disabled.
    pub fn prometheus_text(&self) -> Result<String> {
        self.check_enabled()?;
        Ok(self.metrics_snapshot().to_prometheus())
    }

    /// [`Clusterkit::metrics_snapshot`] as OpenMetrics text (content type
    /// [`crate::metrics::OPENMETRICS_CONTENT_TYPE`]). Fails like
    /// [`Clusterkit::prometheus_text`].
    pub fn openmetrics_text(&self) -> Result<String> {
        self.check_enabled()?;
        Ok(self.metrics_snapshot().to_openmetrics())
    }

    /// The status page (HTML, [`crate::status::HTML_CONTENT_TYPE`]) titled `title` (default
    /// "clusterkit status"). Fails with `unavailable` when metrics are disabled.
    pub fn status_html(&self, title: Option<&str>) -> Result<String> {
        self.check_enabled()?;
        Ok(crate::status::html(
            &self.metrics_snapshot(),
            title.unwrap_or("clusterkit status"),
        ))
    }

    /// The status page's JSON twin ([`crate::status::json`]). Fails like
    /// [`Clusterkit::status_html`].
    pub fn status_json(&self) -> Result<serde_json::Value> {
        self.check_enabled()?;
        Ok(crate::status::json(&self.metrics_snapshot()))
    }

    /// Writes this process's snapshot to `dir` for [`Clusterkit::aggregate_metrics`] in
    /// another process (PHP-FPM workers: each publishes after its requests, one scrape
    /// endpoint aggregates). Fails with `unavailable` when metrics are disabled or on an I/O
    /// error, `invalid_argument` (`dir`) on an empty path.
    pub fn publish_metrics(&self, dir: &Path) -> Result<()> {
        self.check_enabled()?;
        crate::metrics::publish(dir, &self.metrics_snapshot())
    }

    /// This process's snapshot plus every snapshot published in `dir` within `max_age`
    /// (older files, of workers that exited, are removed). Fails like
    /// [`Clusterkit::publish_metrics`]; `max_age` must be 1 ms..=1 day (field `max_age`).
    pub fn aggregate_metrics(&self, dir: &Path, max_age: Duration) -> Result<MetricsSnapshot> {
        self.check_enabled()?;
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid("dir", "must not be empty"));
        }
        crate::config::check_duration(
            "max_age",
            max_age,
            Duration::from_millis(1),
            MAX_AGGREGATE_AGE,
        )?;
        crate::metrics::aggregate(dir, max_age, Some(&self.metrics_snapshot()))
    }
}

/// How [`Clusterkit::metrics_text`] renders a snapshot.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// The snapshot as JSON ([`MetricsSnapshot::to_json`]).
    Json,
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics text.
    OpenMetrics,
    /// The status page (HTML).
    StatusHtml,
    /// The status page's JSON twin.
    StatusJson,
}

impl MetricsFormat {
    /// Parses `json`, `prometheus`, `openmetrics`, `html` or `status_json`; the error names
    /// the field `format`.
    pub fn parse(text: &str) -> Result<MetricsFormat> {
        Ok(match text {
            "json" => MetricsFormat::Json,
            "prometheus" => MetricsFormat::Prometheus,
            "openmetrics" => MetricsFormat::OpenMetrics,
            "html" => MetricsFormat::StatusHtml,
            "status_json" => MetricsFormat::StatusJson,
            _ => {
                return Err(Error::invalid(
                    "format",
                    format!(
                        "must be json, prometheus, openmetrics, html or status_json, got {text:?}"
                    ),
                ))
            }
        })
    }

    /// The HTTP content type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Json | MetricsFormat::StatusJson => "application/json",
            MetricsFormat::Prometheus => crate::metrics::PROMETHEUS_CONTENT_TYPE,
            MetricsFormat::OpenMetrics => crate::metrics::OPENMETRICS_CONTENT_TYPE,
            MetricsFormat::StatusHtml => crate::status::HTML_CONTENT_TYPE,
        }
    }

    /// Renders `s` (the status page titled "clusterkit status").
    pub fn render(self, s: &MetricsSnapshot) -> String {
        match self {
            MetricsFormat::Json => s.to_json().to_string(),
            MetricsFormat::Prometheus => s.to_prometheus(),
            MetricsFormat::OpenMetrics => s.to_openmetrics(),
            MetricsFormat::StatusHtml => crate::status::html(s, "clusterkit status"),
            MetricsFormat::StatusJson => crate::status::json(s).to_string(),
        }
    }
}

impl Clusterkit {
    /// This process's snapshot rendered as `format`: the one call a binding needs to serve
    /// a scrape, the status page or its JSON. Fails with `unavailable` when metrics are
    /// disabled.
    pub fn metrics_text(&self, format: MetricsFormat) -> Result<String> {
        self.check_enabled()?;
        Ok(format.render(&self.metrics_snapshot()))
    }

    /// [`Clusterkit::aggregate_metrics`] rendered as `format` (PHP-FPM: one endpoint for
    /// every worker). Fails like [`Clusterkit::aggregate_metrics`].
    pub fn aggregate_metrics_text(
        &self,
        dir: &Path,
        max_age: Duration,
        format: MetricsFormat,
    ) -> Result<String> {
        Ok(format.render(&self.aggregate_metrics(dir, max_age)?))
    }
}
