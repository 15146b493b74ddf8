//! The status page (like HAProxy's stats page): one self-contained HTML document rendered
//! from a [`MetricsSnapshot`] — pools, nodes with health, weight, in flight, picks,
//! outcomes, latency and ejections; the cache's hit rate; locks; sessions; the scaling
//! advice — and its JSON twin. No script, no external resource; every value is escaped.
//! Each node row carries `data-pool`, `data-node` and `data-health` attributes for tools.

use std::fmt::Write as _;

use crate::metrics::{HistogramSnapshot, MetricsSnapshot};

/// The content type of [`html`].
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// Escapes `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(h: &HistogramSnapshot, q: f64) -> String {
    match h.quantile_us(q) {
        Some(us) if us >= 1000 => format!("≤{} ms", us / 1000),
        Some(us) => format!("≤{us} µs"),
        None => "–".into(),
    }
}

fn rate(hits: u64, misses: u64) -> String {
    let total = hits + misses;
    if total == 0 {
        "–".into()
    } else {
        format!("{:.1}%", hits as f64 * 100.0 / total as f64)
    }
}

const STYLE: &str = "body{font-family:sans-serif;font-size:13px;margin:1em}\
table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #999;padding:2px 6px}\
th{background:#20305a;color:#fff}tr.healthy td.health{background:#7f7}\
tr.unhealthy td.health{background:#f77}tr.draining td.health{background:#fc6}\
tr.ejected td.health{background:#f4a}h2{margin:.5em 0 .2em}caption{text-align:left;font-weight:bold}";

/// The status page of `s` as one HTML document titled `title`.
pub fn html(s: &MetricsSnapshot, title: &str) -> String {
    let mut o = String::with_capacity(4096);
    let t = escape(title);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<style>{STYLE}</style></head><body><h1>{t}</h1><p id=\"summary\">{} pools, {} processes, \
taken at <span id=\"taken-at\">{}</span> (Unix ms)</p>",
        s.pools.len(),
        s.processes,
        s.taken_at_ms
    );
    for p in &s.pools {
        let name = escape(&p.name);
        let _ = write!(
            o,
            "<table class=\"pool\" id=\"pool-{name}\" data-pool=\"{name}\"><caption>pool {name} \
({}) — {} of {} healthy{}</caption><tr><th>node</th><th>address</th><th>weight</th>\
<th>health</th><th>reason</th><th>in flight</th><th>picks</th><th>successes</th>\
<th>failures</th><th>p50</th><th>p95</th><th>ejections</th></tr>",
            escape(&p.strategy),
            p.healthy,
            p.total,
            if p.in_panic { " — PANIC MODE" } else { "" }
        );
        for n in &p.nodes {
            let health = if n.ejected {
                "ejected"
            } else {
                n.health.as_str()
            };
            let _ = write!(
                o,
                "<tr class=\"node {h}\" data-pool=\"{name}\" data-node=\"{id}\" data-health=\"{h}\">\
<td class=\"id\">{id}</td><td>{addr}</td><td>{}</td><td class=\"health\">{h}</td><td>{reason}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                n.weight,
                n.in_flight,
                n.picks,
                n.successes,
                n.failures,
                ms(&n.latency, 0.5),
                ms(&n.latency, 0.95),
                n.ejections,
                h = escape(health),
                id = escape(&n.id),
                addr = escape(&n.address),
                reason = escape(&n.reason),
            );
        }
        o.push_str("</table>");
    }
    let c = &s.cache;
    let _ = write!(
        o,
        "<table id=\"cache\"><caption>cache ({})</caption><tr><th>hit rate</th><th>hits</th>\
<th>misses</th><th>errors</th><th>writes</th><th>get p95</th></tr><tr><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        escape(&c.node),
        rate(c.hits, c.misses),
        c.hits,
        c.misses,
        c.errors,
        c.writes,
        ms(&c.get_latency, 0.95)
    );
    let l = &s.locks;
    let _ = write!(
        o,
        "<table id=\"locks\"><caption>locks</caption><tr><th>acquired</th><th>refused</th>\
<th>timeouts</th><th>renewals</th><th>renewal failures</th><th>losses</th><th>releases</th>\
<th>wait p95</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td></tr></table>",
        l.acquired,
        l.refused,
        l.timeouts,
        l.renewals,
        l.renewal_failures,
        l.losses,
        l.releases,
        ms(&l.wait, 0.95)
    );
    let se = &s.sessions;
    let _ = write!(
        o,
        "<table id=\"sessions\"><caption>sessions</caption><tr><th>created</th><th>loaded</th>\
<th>missing or expired</th><th>lock waits</th><th>lock timeouts</th></tr><tr><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        se.created, se.loaded, se.missing, se.lock_waits, se.lock_timeouts
    );
    if !s.scaling.is_empty() {
        o.push_str(
            "<table id=\"scaling\"><caption>scaling advice</caption><tr><th>pool</th>\
<th>current</th><th>recommended</th><th>reason</th></tr>",
        );
        for r in &s.scaling {
            let _ = write!(
                o,
                "<tr data-pool=\"{p}\"><td>{p}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.current,
                r.recommended,
                escape(&r.reason),
                p = escape(&r.pool)
            );
        }
        o.push_str("</table>");
    }
    let r = &s.redis;
    let _ = write!(
        o,
        "<p id=\"redis\">Redis connections: {} established, {} reconnects, {} failed attempts</p>\
</body></html>",
        r.connections, r.reconnects, r.connect_failures
    );
    o.push('\n');
    o
}

/// The JSON twin of [`html`]: the snapshot itself plus, per pool, the hit rate and per
/// node p50/p95 in microseconds (`null` without data).
pub fn json(s: &MetricsSnapshot) -> serde_json::Value {
    let mut v = s.to_json();
    if let Some(pools) = v.get_mut("pools").and_then(|p| p.as_array_mut()) {
        for (pv, p) in pools.iter_mut().zip(&s.pools) {
            if let Some(nodes) = pv.get_mut("nodes").and_then(|n| n.as_array_mut()) {
                for (nv, n) in nodes.iter_mut().zip(&p.nodes) {
                    if let Some(o) = nv.as_object_mut() {
                        o.insert(
                            "p50_us".into(),
                            serde_json::json!(n.latency.quantile_us(0.5)),
                        );
                        o.insert(
                            "p95_us".into(),
                            serde_json::json!(n.latency.quantile_us(0.95)),
                        );
                    }
                }
            }
        }
    }
    if let Some(o) = v.get_mut("cache").and_then(|c| c.as_object_mut()) {
        let total = s.cache.hits + s.cache.misses;
        let r = (total > 0).then(|| s.cache.hits as f64 / total as f64);
        o.insert("hit_rate".into(), serde_json::json!(r));
    }
    v
}
