//! Logs: the library emits `tracing` events (targets `clusterkit::*`) with structured
//! fields — pool, node id, a key's hash — and never values, session ids or data, lock
//! tokens or passwords. A Rust application sees them through its own `tracing` subscriber.
//!
//! For the bindings (C, PHP, Python, Node), which have no `tracing`, this module owns a
//! small subscriber that keeps the records in a bounded buffer for the binding to drain
//! ([`drain`]) and hand to its own logger (PSR-3, `logging`, an EventEmitter, a C poll
//! call). [`set_level`] installs it (once, as the process's global `tracing` subscriber);
//! until then, and while the level is off, an event costs one relaxed load of tracing's
//! global max level: nothing is formatted, nothing is buffered.
//!
//! Operators can also send the records to a file (or stderr) as JSON lines without any
//! code, with two environment variables read when the first deployment is built
//! ([`init_from_env`]): `CLUSTERKIT_LOG` (a level) and `CLUSTERKIT_LOG_FILE` (a path;
//! `{pid}` in it becomes the process id, so forked workers write apart; absent: stderr).
//! The test command runs every suite that way and audits every record against the
//! catalog in docs/monitoring.md (scripts/log-audit).

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use crate::error::{Error, Result};
use crate::node::Node;

/// Most records kept until drained; the oldest are dropped beyond (and counted).
pub const BUFFER_CAPACITY: usize = 10_000;

/// Severity of a record, most severe first.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something failed and was not recovered.
    Error = 1,
    /// Something failed and was handled (a node ejected, a lock lost, a reconnect).
    Warn = 2,
    /// A state change an operator wants to see (health, scaling advice).
    Info = 3,
    /// Per-operation detail (connections, lock waits).
    Debug = 4,
    /// Everything, including every cache operation (with the key's hash only).
    Trace = 5,
}

impl Level {
    /// `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// Parses a level name (`off` is `None`); the error names the field `level`.
    pub fn parse(text: &str) -> Result<Option<Level>> {
        Ok(Some(match text.to_ascii_lowercase().as_str() {
            "off" | "none" => return Ok(None),
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => {
                return Err(Error::invalid(
                    "level",
                    format!("must be off, error, warn, info, debug or trace, got {text:?}"),
                ))
            }
        }))
    }

    fn from_tracing(l: &tracing::Level) -> Level {
        match *l {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// One log record as a binding receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// The module that emitted it (`clusterkit::cluster`, `clusterkit::cache`, ...).
    pub target: String,
    /// The message.
    pub message: String,
    /// Structured fields (`pool`, `node`, `key_hash`, ...), as text.
    pub fields: Vec<(String, String)>,
    /// When, in Unix milliseconds.
    pub time_ms: u64,
}

impl LogRecord {
    /// The record as a JSON object: `level`, `target`, `message`, `fields` (an object) and
    /// `time_ms`.
    pub fn to_json(&self) -> serde_json::Value {
        let fields: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "level": self.level.as_str(),
            "target": self.target,
            "message": self.message,
            "fields": fields,
            "time_ms": self.time_ms,
        })
    }
}

/// 0 = off, else a [`Level`] as u8.
static LEVEL: AtomicU8 = AtomicU8::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static BUFFER: crate::fork::Mutex<VecDeque<LogRecord>> = crate::fork::Mutex::new(VecDeque::new());
static INSTALLED: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
/// 0 = no sink, else a [`Level`] as u8: the level of the environment's JSON-lines sink.
static SINK_LEVEL: AtomicU8 = AtomicU8::new(0);
static SINK: crate::fork::Mutex<Option<Sink>> = crate::fork::Mutex::new(None);
static ENV_READ: std::sync::Once = std::sync::Once::new();

/// Where `CLUSTERKIT_LOG_FILE` sends records: reopened after a fork when the path names
/// the process id.
struct Sink {
    template: Option<String>,
    pid: u32,
    out: Option<std::fs::File>,
}

impl Sink {
    fn open(template: &str, pid: u32) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(template.replace("{pid}", &pid.to_string()))
    }

    fn write(&mut self, line: &[u8]) {
        use std::io::Write as _;
        let pid = std::process::id();
        match &self.template {
            None => {
                let _ = std::io::stderr().write_all(line);
            }
            Some(t) => {
                if self.out.is_none() || (pid != self.pid && t.contains("{pid}")) {
                    self.out = Self::open(t, pid).ok();
                    self.pid = pid;
                }
                if let Some(f) = self.out.as_mut() {
                    // One write per record, O_APPEND: whole lines even with several writers.
                    let _ = f.write_all(line);
                }
            }
        }
    }
}

fn level_from_u8(v: u8) -> Option<Level> {
    match v {
        1 => Some(Level::Error),
        2 => Some(Level::Warn),
        3 => Some(Level::Info),
        4 => Some(Level::Debug),
        5 => Some(Level::Trace),
        _ => None,
    }
}

/// Reads `CLUSTERKIT_LOG` and `CLUSTERKIT_LOG_FILE` once per process (later calls do
/// nothing) and, when a level is set, writes every record at or above it as one JSON line
/// ([`LogRecord::to_json`]) to the file or to stderr, beside whatever [`set_level`] buffers.
/// Called when a deployment is built. A bad level or an unopenable file is reported once
/// on stderr and leaves the sink off; a process that installed its own `tracing`
/// subscriber keeps it (and gets the records there).
pub fn init_from_env() {
    ENV_READ.call_once(|| {
        let Ok(text) = std::env::var("CLUSTERKIT_LOG") else {
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let level = match Level::parse(text.trim()) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                eprintln!("clusterkit: CLUSTERKIT_LOG ignored: {e}");
                return;
            }
        };
        let template = std::env::var("CLUSTERKIT_LOG_FILE")
            .ok()
            .filter(|t| !t.is_empty());
        let pid = std::process::id();
        let out = match &template {
            Some(t) => match Sink::open(t, pid) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("clusterkit: CLUSTERKIT_LOG_FILE {t:?} cannot be opened: {e}");
                    return;
                }
            },
            None => None,
        };
        if install().is_err() {
            return;
        }
        *SINK.lock() = Some(Sink { template, pid, out });
        SINK_LEVEL.store(level as u8, Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
    });
}

/// The level of the environment's sink ([`init_from_env`]; `None`: no sink).
pub fn sink_level() -> Option<Level> {
    level_from_u8(SINK_LEVEL.load(Ordering::Relaxed))
}

fn install() -> std::result::Result<(), String> {
    INSTALLED
        .get_or_init(|| {
            tracing::subscriber::set_global_default(BufferSubscriber).map_err(|_| {
                "another tracing subscriber is installed in this process; it receives clusterkit's events".to_string()
            })
        })
        .clone()
}

struct BufferSubscriber;

impl BufferSubscriber {
    fn level() -> Option<Level> {
        level_from_u8(LEVEL.load(Ordering::Relaxed))
    }

    /// The most detailed level anyone listens at: the buffer's or the sink's.
    fn max_level() -> Option<Level> {
        level_from_u8(
            LEVEL
                .load(Ordering::Relaxed)
                .max(SINK_LEVEL.load(Ordering::Relaxed)),
        )
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl Subscriber for BufferSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level changes at run time: ask `enabled` each time (one atomic load).
        Interest::sometimes()
    }
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.is_event()
            && m.target().starts_with("clusterkit")
            && Self::max_level().is_some_and(|l| Level::from_tracing(m.level()) <= l)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match Self::max_level() {
            None => LevelFilter::OFF,
            Some(Level::Error) => LevelFilter::ERROR,
            Some(Level::Warn) => LevelFilter::WARN,
            Some(Level::Info) => LevelFilter::INFO,
            Some(Level::Debug) => LevelFilter::DEBUG,
            Some(Level::Trace) => LevelFilter::TRACE,
        })
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let m = event.metadata();
        let record = LogRecord {
            level: Level::from_tracing(m.level()),
            target: m.target().to_string(),
            message: f.message,
            fields: f.fields,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        if sink_level().is_some_and(|l| record.level <= l) {
            let mut line = record.to_json().to_string().into_bytes();
            line.push(b'\n');
            if let Some(sink) = SINK.lock().as_mut() {
                sink.write(&line);
            }
        }
        if Self::level().is_none_or(|l| record.level > l) {
            return;
        }
        let mut buf = BUFFER.lock();
        if buf.len() >= BUFFER_CAPACITY {
            buf.pop_front();
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        buf.push_back(record);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Sets the level of the records buffered for [`drain`] (`None`: off, the default).
///
/// The first call with a level installs the library's subscriber as the process's global
/// `tracing` subscriber. Fails with `unavailable` if the application already installed
/// one (a Rust application: its subscriber receives clusterkit's events directly).
pub fn set_level(level: Option<Level>) -> Result<()> {
    if level.is_some() {
        install().map_err(Error::Unavailable)?;
    }
    let old = LEVEL.swap(level.map_or(0, |l| l as u8), Ordering::Relaxed);
    if old != LEVEL.load(Ordering::Relaxed) {
        tracing::callsite::rebuild_interest_cache();
    }
    if level.is_none() {
        BUFFER.lock().clear();
    }
    Ok(())
}

/// The level set by [`set_level`] (`None`: off).
pub fn level() -> Option<Level> {
    BufferSubscriber::level()
}

/// Takes up to `max` of the oldest buffered records.
pub fn drain(max: usize) -> Vec<LogRecord> {
    let mut buf = BUFFER.lock();
    let n = max.min(buf.len());
    buf.drain(..n).collect()
}

/// Records dropped because the buffer was full ([`BUFFER_CAPACITY`]) since the process
/// started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A key's hash for log fields (xxh3, hex): correlates operations on one key without
/// showing it.
pub fn key_hash(key: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key))
}

pub(crate) fn ejected(node: &Node, failures: u32, time: Duration) {
    tracing::warn!(target: "clusterkit::cluster", node = node.id(), failures, ejected_for = ?time,
        "node ejected by outlier detection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(Level::parse("WARN").unwrap(), Some(Level::Warn));
        assert_eq!(Level::parse("off").unwrap(), None);
        let e = Level::parse("loud").unwrap_err();
        assert!(e.to_string().contains("level"), "{e}");
        assert!(Level::Error < Level::Trace);
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
    }
}
