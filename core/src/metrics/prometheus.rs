//! Prometheus / OpenMetrics text of a [`MetricsSnapshot`], through a `prometheus-client`
//! registry owned by this call (no process-wide recorder): one collector that encodes the
//! snapshot.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{HistogramSnapshot, MetricsSnapshot};

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

/// Accumulates samples of one family, then writes the family once.
enum Sample {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, Sample)>,
) -> Result<(), std::fmt::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, s) in samples {
        let e = m.encode_family(&labels)?;
        match s {
            Sample::Counter(v) => ConstCounter::new(v).encode(e)?,
            Sample::Gauge(v) => ConstGauge::new(v).encode(e)?,
            Sample::Histogram(h) => {
                let mut e = e;
                e.encode_histogram::<NoLabelSet>(
                    h.sum_us as f64 / 1e6,
                    h.count(),
                    &h.encoder_buckets(),
                    None,
                )?
            }
        }
    }
    Ok(())
}

fn gauge_bool(b: bool) -> Sample {
    Sample::Gauge(i64::from(b))
}

fn gauge_u64(v: u64) -> Sample {
    Sample::Gauge(v.min(i64::MAX as u64) as i64)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let s = &self.0;
        let pool = |p: &str| -> Labels { vec![("pool", p.to_string())] };
        let node =
            |p: &str, n: &str| -> Labels { vec![("pool", p.to_string()), ("node", n.to_string())] };
        type Getter = fn(&super::PoolMetrics) -> Sample;
        let pool_families: [(&str, &str, MetricType, Getter); 7] = [
            ("clusterkit_pool_nodes", "Nodes in the pool.", Gauge, |p| {
                gauge_u64(p.total)
            }),
            (
                "clusterkit_pool_healthy_nodes",
                "Healthy nodes in the pool.",
                Gauge,
                |p| gauge_u64(p.healthy),
            ),
            (
                "clusterkit_pool_panic",
                "1 while the pool is in panic mode (too few healthy nodes: all are used).",
                Gauge,
                |p| gauge_bool(p.in_panic),
            ),
            (
                "clusterkit_pool_health_checks",
                "Active health checks run.",
                Counter,
                |p| Sample::Counter(p.checks),
            ),
            (
                "clusterkit_pool_health_check_failures",
                "Active health checks that failed.",
                Counter,
                |p| Sample::Counter(p.check_failures),
            ),
            (
                "clusterkit_pool_ejections",
                "Outlier ejections in the pool.",
                Counter,
                |p| Sample::Counter(p.ejections),
            ),
            (
                "clusterkit_pool_ejections_refused",
                "Ejections refused because the maximum ejected share was reached.",
                Counter,
                |p| Sample::Counter(p.ejections_refused),
            ),
        ];
        for (name, help, kind, get) in pool_families {
            let samples = s.pools.iter().map(|p| (pool(&p.name), get(p))).collect();
            family(&mut enc, name, help, kind, samples)?;
        }
        type NodeGetter = fn(&super::NodeMetrics) -> Sample;
        let node_families: [(&str, &str, MetricType, NodeGetter); 9] = [
            (
                "clusterkit_node_picks",
                "Picks handed out for the node.",
                Counter,
                |n| Sample::Counter(n.picks),
            ),
            (
                "clusterkit_node_in_flight",
                "Requests picked for the node and not finished.",
                Gauge,
                |n| gauge_u64(n.in_flight),
            ),
            (
                "clusterkit_node_successes",
                "Outcomes reported as successes.",
                Counter,
                |n| Sample::Counter(n.successes),
            ),
            (
                "clusterkit_node_failures",
                "Outcomes reported as failures.",
                Counter,
                |n| Sample::Counter(n.failures),
            ),
            (
                "clusterkit_node_latency_seconds",
                "Latency of the node's reported successes.",
                Histogram,
                |n| Sample::Histogram(n.latency.clone()),
            ),
            (
                "clusterkit_node_healthy",
                "1 while the node is healthy (receives picks).",
                Gauge,
                |n| gauge_bool(n.health == "healthy"),
            ),
            (
                "clusterkit_node_ejected",
                "1 while outlier detection keeps the node ejected.",
                Gauge,
                |n| gauge_bool(n.ejected),
            ),
            (
                "clusterkit_node_ejections",
                "Outlier ejections of the node.",
                Counter,
                |n| Sample::Counter(n.ejections),
            ),
            (
                "clusterkit_node_weight",
                "The node's balancing weight.",
                Gauge,
                |n| Sample::Gauge(i64::from(n.weight)),
            ),
        ];
        for (name, help, kind, get) in node_families {
            let samples = s
                .pools
                .iter()
                .flat_map(|p| p.nodes.iter().map(move |n| (node(&p.name, &n.id), get(n))))
                .collect();
            family(&mut enc, name, help, kind, samples)?;
        }
        let c = &s.cache;
        let cn = || -> Labels { vec![("node", c.node.clone())] };
        for (name, help, v) in [
            (
                "clusterkit_cache_hits",
                "Cache reads that found the key.",
                c.hits,
            ),
            (
                "clusterkit_cache_misses",
                "Cache reads that did not find the key.",
                c.misses,
            ),
            (
                "clusterkit_cache_errors",
                "Cache operations that failed.",
                c.errors,
            ),
            (
                "clusterkit_cache_writes",
                "Cache keys written or deleted.",
                c.writes,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                Counter,
                vec![(cn(), Sample::Counter(v))],
            )?;
        }
        family(
            &mut enc,
            "clusterkit_cache_latency_seconds",
            "Latency of cache reads from a network backend.",
            Histogram,
            vec![(
                vec![("node", c.node.clone()), ("operation", "get".to_string())],
                Sample::Histogram(c.get_latency.clone()),
            )],
        )?;
        let l = &s.locks;
        for (name, help, v) in [
            (
                "clusterkit_lock_acquisitions",
                "Lock acquisitions that got the lock.",
                l.acquired,
            ),
            (
                "clusterkit_lock_refusals",
                "Lock attempts that found it held.",
                l.refused,
            ),
            (
                "clusterkit_lock_timeouts",
                "Waiting lock acquisitions that gave up.",
                l.timeouts,
            ),
            (
                "clusterkit_lock_renewals",
                "Lock extensions that succeeded.",
                l.renewals,
            ),
            (
                "clusterkit_lock_renewal_failures",
                "Lock extensions that failed.",
                l.renewal_failures,
            ),
            ("clusterkit_lock_losses", "Locks lost while held.", l.losses),
            ("clusterkit_lock_releases", "Locks released.", l.releases),
        ] {
            family(
                &mut enc,
                name,
                help,
                Counter,
                vec![(vec![], Sample::Counter(v))],
            )?;
        }
        family(
            &mut enc,
            "clusterkit_lock_wait_seconds",
            "Time from the start of an acquisition to getting the lock.",
            Histogram,
            vec![(vec![], Sample::Histogram(l.wait.clone()))],
        )?;
        let se = &s.sessions;
        for (name, help, v) in [
            (
                "clusterkit_sessions_created",
                "Sessions created.",
                se.created,
            ),
            (
                "clusterkit_sessions_loaded",
                "Session loads that found the session.",
                se.loaded,
            ),
            (
                "clusterkit_sessions_missing",
                "Session loads of an unknown or expired session.",
                se.missing,
            ),
            (
                "clusterkit_session_lock_waits",
                "Locked session loads that waited for another request.",
                se.lock_waits,
            ),
            (
                "clusterkit_session_lock_timeouts",
                "Locked session loads that gave up.",
                se.lock_timeouts,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                Counter,
                vec![(vec![], Sample::Counter(v))],
            )?;
        }
        family(
            &mut enc,
            "clusterkit_session_lock_wait_seconds",
            "Time a locked session load took, waiting included.",
            Histogram,
            vec![(vec![], Sample::Histogram(se.lock_wait.clone()))],
        )?;
        let q = &s.queue;
        for (name, help, v) in [
            (
                "clusterkit_queue_jobs_enqueued",
                "Jobs stored by enqueue (duplicates not counted).",
                q.enqueued,
            ),
            (
                "clusterkit_queue_jobs_duplicate",
                "Enqueues answered with an existing job (idempotency key).",
                q.duplicates,
            ),
            (
                "clusterkit_queue_jobs_reserved",
                "Deliveries handed to this process's consumers.",
                q.reserved,
            ),
            (
                "clusterkit_queue_jobs_completed",
                "Jobs acked.",
                q.completed,
            ),
            ("clusterkit_queue_jobs_failed", "Failed attempts.", q.failed),
            (
                "clusterkit_queue_jobs_retried",
                "Failed attempts scheduled for a retry.",
                q.retried,
            ),
            (
                "clusterkit_queue_jobs_dead",
                "Jobs dead-lettered by this process.",
                q.dead,
            ),
            (
                "clusterkit_queue_jobs_reclaimed",
                "Jobs reclaimed from consumers whose lease expired.",
                q.reclaimed,
            ),
            (
                "clusterkit_queue_lease_lost",
                "Settle calls that found the lease gone.",
                q.lease_lost,
            ),
            (
                "clusterkit_queue_blocking_reads",
                "Blocking reads issued while idle.",
                q.blocking_reads,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                Counter,
                vec![(vec![], Sample::Counter(v))],
            )?;
        }
        family(
            &mut enc,
            "clusterkit_queue_jobs_in_flight",
            "Jobs reserved by this process and not yet settled.",
            Gauge,
            vec![(
                vec![],
                Sample::Gauge(q.in_flight.min(i64::MAX as u64) as i64),
            )],
        )?;
        family(
            &mut enc,
            "clusterkit_queue_reserve_wait_seconds",
            "Time a reserve waited for its jobs.",
            Histogram,
            // Labelled like every other histogram here (operation): an unlabelled histogram
            // is valid text, but the Node suite's parser (parse-prometheus-text-format)
            // cannot read one.
            vec![(
                vec![("operation", "reserve".to_string())],
                Sample::Histogram(q.reserve_wait.clone()),
            )],
        )?;
        let r = &s.redis;
        for (name, help, v) in [
            (
                "clusterkit_redis_connections",
                "Redis connections established by this process.",
                r.connections,
            ),
            (
                "clusterkit_redis_reconnects",
                "Redis connections established again after a loss.",
                r.reconnects,
            ),
            (
                "clusterkit_redis_connect_failures",
                "Redis connection attempts that failed.",
                r.connect_failures,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                Counter,
                vec![(vec![], Sample::Counter(v))],
            )?;
        }
        family(
            &mut enc,
            "clusterkit_scaling_recommended_nodes",
            "Nodes the scaling advisor recommends for the pool.",
            Gauge,
            s.scaling
                .iter()
                .map(|r| (pool(&r.pool), Sample::Gauge(i64::from(r.recommended))))
                .collect(),
        )?;
        family(
            &mut enc,
            "clusterkit_scaling_desired_nodes",
            "Nodes the pool's load alone asks for (before hysteresis, cooldown and bounds).",
            Gauge,
            s.scaling
                .iter()
                .map(|r| (pool(&r.pool), Sample::Gauge(i64::from(r.desired))))
                .collect(),
        )?;
        family(
            &mut enc,
            "clusterkit_processes",
            "Processes whose metrics are added up here (PHP-FPM workers).",
            Gauge,
            vec![(vec![], gauge_u64(s.processes))],
        )?;
        Ok(())
    }
}

impl MetricsSnapshot {
    /// The snapshot as OpenMetrics text (content type [`OPENMETRICS_CONTENT_TYPE`]), as
    /// `prometheus-client` encodes it: counter families named without `_total`, samples
    /// with it, ending with `# EOF`.
    pub fn to_openmetrics(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector(self.clone())));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The snapshot in the Prometheus text format 0.0.4 (content type
    /// [`PROMETHEUS_CONTENT_TYPE`]), which every scraper and `promtool check metrics`
    /// read: [`MetricsSnapshot::to_openmetrics`] with counter families named with their
    /// `_total` suffix and no `# EOF`. Latencies are histograms in seconds.
    pub fn to_prometheus(&self) -> String {
        let om = self.to_openmetrics();
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.split_once(' '))
            .filter(|(_, t)| *t == "counter")
            .map(|(n, _)| n)
            .collect();
        let mut out = String::with_capacity(om.len() + 256);
        for line in om.lines() {
            if line == "# EOF" {
                continue;
            }
            let meta = line
                .strip_prefix("# HELP ")
                .map(|r| ("# HELP ", r))
                .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
            match meta {
                Some((kind, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    out.push_str(kind);
                    out.push_str(name);
                    if counters.contains(name) {
                        out.push_str("_total");
                    }
                    out.push(' ');
                    out.push_str(tail);
                }
                None => out.push_str(&line.replacen("{} ", " ", 1)),
            }
            out.push('\n');
        }
        out
    }
}

/// The content type of [`MetricsSnapshot::to_prometheus`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of [`MetricsSnapshot::to_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
