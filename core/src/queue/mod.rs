//! The task queue (issue #16): at-least-once background jobs on Redis Streams, with an
//! embedded in-process twin of the same semantics.
//!
//! ```
//! use clusterkit::queue::{EnqueueOptions, QueueOptions, TaskQueue};
//! # clusterkit::blocking::block_on(async {
//! let q = TaskQueue::memory(QueueOptions::default())?;
//! let id = q.enqueue("emails", b"hello", &EnqueueOptions::default()).await?;
//! let worker = q.consumer("emails")?;
//! let job = worker.reserve(std::time::Duration::from_secs(1)).await?.expect("a job");
//! assert_eq!(job.id, id);
//! worker.ack(&job.receipt).await?;
//! # Ok::<(), clusterkit::Error>(())
//! # }).unwrap().unwrap();
//! ```
//!
//! # Model
//!
//! - A **queue** is named per call (1..=128 bytes of `[A-Za-z0-9_.-]`). With `[queue] queues`
//!   set, only the names listed there are accepted (`invalid_argument` naming `queue`).
//! - **Enqueue** stores a job (payload bytes + options) and returns its id. A delay (or a
//!   `run_at`) puts it in the queue's delayed set first; an idempotency key makes a duplicate
//!   within its window return the original id and store nothing.
//! - A **consumer** ([`Consumer`]) reserves jobs: a reserved job is leased to it for the
//!   queue's visibility timeout. The holder `ack`s it (done), `fail`s it (retried with backoff
//!   through the delayed set, or dead-lettered after `max_attempts`), `extend`s the lease
//!   (heartbeat: the lease runs one full visibility timeout from now) or `release`s it (back
//!   to the queue without consuming an attempt). A lease that expires (the worker crashed) is
//!   reclaimed by another consumer, and that delivery counts as an attempt.
//! - **Attempts**: [`Job::attempt`] is 1 on the first delivery. After a failure or an expired
//!   lease of attempt `max_attempts`, the job goes to the dead-letter list with its last
//!   error; [`TaskQueue::redrive`] puts dead jobs back with a fresh attempt count.
//! - **Priority lanes**: `high`, `normal` (default) and `low`; a reserve takes the oldest job
//!   of the highest non-empty lane.
//!
//! Every receipt is plain data (a string): bindings keep it with the job and hand it back.

mod config;
mod memory;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::histogram::LatencyHistogram;
use crate::metrics::HistogramSnapshot;

pub use config::QueueConfig;

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 128;
/// Largest `max_payload_bytes` (512 MiB, Redis's own limit for one value).
pub const MAX_PAYLOAD_LIMIT: usize = 512 << 20;
/// Default `max_payload_bytes` (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Most attempts a job can have.
pub const MAX_ATTEMPTS: i64 = 1000;
/// Longest delay, backoff or idempotency window (365 days).
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 512;
/// Most jobs in one `enqueue_many` or `reserve_many` call.
pub const MAX_BATCH: usize = 10_000;
/// Longest error text kept with a failed job (longer texts are cut).
pub const MAX_ERROR_LEN: usize = 4096;

/// A priority lane.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Taken before `normal` and `low`.
    High,
    /// The default lane.
    #[default]
    Normal,
    /// Taken only when `high` and `normal` are empty.
    Low,
}

impl Priority {
    /// 0 (`high`), 1 (`normal`) or 2 (`low`): the lane index, also the C ABI's number.
    pub fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The lane of index `i` (0, 1, 2), `None` for anything else.
    pub fn from_index(i: i64) -> Option<Priority> {
        match i {
            0 => Some(Priority::High),
            1 => Some(Priority::Normal),
            2 => Some(Priority::Low),
            _ => None,
        }
    }

    /// `"high"`, `"normal"` or `"low"`.
    pub fn as_str(self) -> &'static str {
        ["high", "normal", "low"][self.index()]
    }
}

/// How long a failed job waits before its next attempt.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay after every failure.
    Fixed {
        /// The delay.
        delay: Duration,
    },
    /// `base × 2^(attempt-1)`, at most `max`; with `jitter`, a uniformly random point in the
    /// upper half of that delay (so retries of many jobs failed together spread out).
    Exponential {
        /// The delay after the first failure.
        base: Duration,
        /// The longest delay.
        max: Duration,
        /// Randomise the upper half of each delay.
        jitter: bool,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay after the failure of attempt `attempt` (1-based), `r` in `[0, 1)` being the
    /// jitter draw.
    pub fn delay(&self, attempt: u32, r: f64) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential { base, max, jitter } => {
                let shift = attempt.saturating_sub(1).min(40);
                let d = base
                    .checked_mul(1u32 << shift.min(31))
                    .and_then(|d| d.checked_mul(1u32 << shift.saturating_sub(31)))
                    .unwrap_or(max)
                    .min(max);
                if jitter {
                    let half = d / 2;
                    half + half.mul_f64(r.clamp(0.0, 1.0))
                } else {
                    d
                }
            }
        }
    }

    /// The wire form stored with each job: `f,<ms>` or `e,<base ms>,<max ms>,<0|1>`.
    pub(crate) fn encode(&self) -> String {
        match *self {
            Backoff::Fixed { delay } => format!("f,{}", delay.as_millis()),
            Backoff::Exponential { base, max, jitter } => format!(
                "e,{},{},{}",
                base.as_millis(),
                max.as_millis(),
                u8::from(jitter)
            ),
        }
    }

    /// Parses [`Backoff::encode`]'s form.
    pub(crate) fn decode(s: &str) -> Option<Backoff> {
        let mut parts = s.split(',');
        let kind = parts.next()?;
        let mut n = || parts.next().and_then(|p| p.parse::<u64>().ok());
        match kind {
            "f" => Some(Backoff::Fixed {
                delay: Duration::from_millis(n()?),
            }),
            "e" => Some(Backoff::Exponential {
                base: Duration::from_millis(n()?),
                max: Duration::from_millis(n()?),
                jitter: n()? == 1,
            }),
            _ => None,
        }
    }
}

/// The backoff as written in an options document (`{"kind": "exponential", "delay_ms": 1000,
/// "max_ms": 60000, "jitter": true}` or `{"kind": "fixed", "delay_ms": 500}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// `fixed` or `exponential`.
    pub kind: String,
    /// The fixed delay, or the first delay of an exponential backoff (ms, > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    /// The longest exponential delay (ms, default 300 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<i64>,
    /// Randomise exponential delays (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

impl BackoffSpec {
    /// The backoff this spec describes. Fails naming the field (`backoff.delay_ms`, ...).
    pub fn to_backoff(&self) -> Result<Backoff> {
        let ms = |field: &str, v: Option<i64>, default: Option<u64>| -> Result<Duration> {
            match v {
                None => default
                    .map(Duration::from_millis)
                    .ok_or_else(|| Error::invalid(field, "is required")),
                Some(v) => positive_ms(field, v, MAX_DELAY),
            }
        };
        match self.kind.as_str() {
            "fixed" => {
                if self.max_ms.is_some() || self.jitter.is_some() {
                    return Err(Error::invalid(
                        "backoff.kind",
                        "max_ms and jitter are for kind \"exponential\"",
                    ));
                }
                Ok(Backoff::Fixed {
                    delay: ms("backoff.delay_ms", self.delay_ms, None)?,
                })
            }
            "exponential" => {
                let base = ms("backoff.delay_ms", self.delay_ms, Some(1000))?;
                let max = ms("backoff.max_ms", self.max_ms, Some(300_000))?;
                if max < base {
                    return Err(Error::invalid(
                        "backoff.max_ms",
                        format!(
                            "must be at least delay_ms ({} ms), got {} ms",
                            base.as_millis(),
                            max.as_millis()
                        ),
                    ));
                }
                Ok(Backoff::Exponential {
                    base,
                    max,
                    jitter: self.jitter.unwrap_or(true),
                })
            }
            other => Err(Error::invalid(
                "backoff.kind",
                format!(
                    "must be \"fixed\" or \"exponential\", got {:?}",
                    crate::config::excerpt(other)
                ),
            )),
        }
    }
}

fn positive_ms(field: &str, v: i64, max: Duration) -> Result<Duration> {
    if v <= 0 {
        return Err(Error::invalid(
            field,
            format!("must be more than 0 ms, got {v}"),
        ));
    }
    let d = Duration::from_millis(v as u64);
    if d > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {} ms, got {v}", max.as_millis()),
        ));
    }
    Ok(d)
}

/// Options of one enqueued job. Every field is optional; absent fields take the queue's
/// defaults. The same shape is accepted as JSON by [`EnqueueOptions::from_json`] (what the C
/// ABI and the bindings pass):
///
/// ```json
/// {"delay_ms": 1500, "max_attempts": 5, "priority": "high",
///  "backoff": {"kind": "exponential", "delay_ms": 1000, "max_ms": 60000, "jitter": true},
///  "idempotency_key": "order-42", "idempotency_ttl_ms": 86400000}
/// ```
///
/// Numbers are signed so that a zero or negative value is reported as such
/// (`invalid_argument` naming the field) rather than wrapped.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueOptions {
    /// Run no sooner than this many ms from now (> 0). Not with `run_at_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    /// Run no sooner than this Unix time in ms (> 0; a time in the past means now). Not with
    /// `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<i64>,
    /// Deliveries before the job is dead-lettered (1..=1000; default: the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    /// Delay between attempts (default: the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// A duplicate enqueue with the same key within the window returns the first job's id and
    /// stores nothing (1..=512 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The idempotency window in ms (> 0; default: the queue's, 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_ttl_ms: Option<i64>,
    /// The lane (default `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

impl EnqueueOptions {
    /// No options: the queue's defaults, run now, `normal` priority.
    pub fn new() -> Self {
        Self::default()
    }
    /// Parses the JSON form (an empty string or `null` means no options). Fails with
    /// `invalid_argument` naming the field (`options.delay_ms`, `options.priority`, ...).
    pub fn from_json(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.is_empty() || t == "null" {
            return Ok(Self::default());
        }
        let de = &mut serde_json::Deserializer::from_str(t);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "options".to_string()
            } else {
                format!("options.{path}")
            };
            let msg = e.inner().to_string();
            Error::invalid(field, crate::config::excerpt(&msg))
        })
    }
    /// Sets the delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay_ms = Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self
    }
    /// Sets the absolute run time.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.run_at_ms = Some(ms);
        self
    }
    /// Sets the attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(i64::from(n));
        self
    }
    /// Sets the backoff.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = Some(match b {
            Backoff::Fixed { delay } => BackoffSpec {
                kind: "fixed".into(),
                delay_ms: Some(delay.as_millis() as i64),
                max_ms: None,
                jitter: None,
            },
            Backoff::Exponential { base, max, jitter } => BackoffSpec {
                kind: "exponential".into(),
                delay_ms: Some(base.as_millis() as i64),
                max_ms: Some(max.as_millis() as i64),
                jitter: Some(jitter),
            },
        });
        self
    }
    /// Sets the idempotency key (and window, `None` for the queue's default).
    pub fn idempotency_key(mut self, key: impl Into<String>, ttl: Option<Duration>) -> Self {
        self.idempotency_key = Some(key.into());
        self.idempotency_ttl_ms = ttl.map(|t| t.as_millis() as i64);
        self
    }
    /// Sets the lane.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }

    /// Checks every field against its bounds and fills the queue's defaults.
    pub(crate) fn resolve(&self, defaults: &QueueOptions) -> Result<NewJob> {
        if self.delay_ms.is_some() && self.run_at_ms.is_some() {
            return Err(Error::invalid(
                "options.run_at_ms",
                "give either delay_ms or run_at_ms, not both",
            ));
        }
        let now = now_ms();
        let due_ms = match (self.delay_ms, self.run_at_ms) {
            (Some(d), _) => now + positive_ms("options.delay_ms", d, MAX_DELAY)?.as_millis() as u64,
            (_, Some(at)) => {
                if at <= 0 {
                    return Err(Error::invalid(
                        "options.run_at_ms",
                        format!("must be a Unix time in ms (> 0), got {at}"),
                    ));
                }
                let at = at as u64;
                if at > now + MAX_DELAY.as_millis() as u64 {
                    return Err(Error::invalid(
                        "options.run_at_ms",
                        "must be at most 365 days from now",
                    ));
                }
                at
            }
            _ => 0,
        };
        let max_attempts = match self.max_attempts {
            None => defaults.max_attempts,
            Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => n as u32,
            Some(n) => {
                return Err(Error::invalid(
                    "options.max_attempts",
                    format!("must be between 1 and {MAX_ATTEMPTS}, got {n}"),
                ))
            }
        };
        let backoff = match &self.backoff {
            None => defaults.backoff,
            Some(b) => b.to_backoff().map_err(|e| e.in_field("options"))?,
        };
        let idempotency = match &self.idempotency_key {
            None => {
                if self.idempotency_ttl_ms.is_some() {
                    return Err(Error::invalid(
                        "options.idempotency_ttl_ms",
                        "needs an idempotency_key",
                    ));
                }
                None
            }
            Some(k) => {
                if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN {
                    return Err(Error::invalid(
                        "options.idempotency_key",
                        format!(
                            "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
                            k.len()
                        ),
                    ));
                }
                let ttl = match self.idempotency_ttl_ms {
                    None => defaults.idempotency_ttl,
                    Some(t) => positive_ms("options.idempotency_ttl_ms", t, MAX_DELAY)?,
                };
                Some((k.clone(), ttl))
            }
        };
        Ok(NewJob {
            due_ms,
            max_attempts,
            backoff,
            idempotency,
            priority: self.priority.unwrap_or_default(),
        })
    }
}

/// Options resolved against the queue's defaults.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    /// Unix ms when the job may run; 0 = now.
    pub(crate) due_ms: u64,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) idempotency: Option<(String, Duration)>,
    pub(crate) priority: Priority,
}

/// A reserved job: plain data. Hand `receipt` back to [`Consumer::ack`], [`Consumer::fail`],
/// [`Consumer::extend`] or [`Consumer::release`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// The job id (the same across retries, the one `enqueue` returned).
    pub id: String,
    /// The queue name.
    pub queue: String,
    /// The payload, as enqueued.
    #[serde(skip)]
    pub payload: Bytes,
    /// This delivery's attempt number, from 1.
    pub attempt: u32,
    /// The job's `max_attempts`.
    pub max_attempts: u32,
    /// When the job was first enqueued (Unix ms).
    pub enqueued_at_ms: u64,
    /// The lane it came from.
    pub priority: Priority,
    /// The error of the previous attempt's `fail`, if any.
    pub last_error: Option<String>,
    /// The lease token of this delivery (opaque; not a secret: it grants only what the
    /// queue name and job id would).
    pub receipt: String,
}

/// What [`Consumer::fail`] did with the job.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailOutcome {
    /// Scheduled for another attempt.
    Retry {
        /// When it becomes available again (Unix ms).
        at_ms: u64,
        /// The attempt number it will have.
        attempt: u32,
    },
    /// Moved to the dead-letter list (it had used all its attempts).
    Dead,
}

/// A job in the dead-letter list.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadJob {
    /// The job id.
    pub id: String,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
    /// Attempts used.
    pub attempts: u32,
    /// The error of the last attempt (`lease expired` when its worker disappeared).
    pub last_error: String,
    /// When it was dead-lettered (Unix ms).
    pub failed_at_ms: u64,
    /// When it was first enqueued (Unix ms).
    pub enqueued_at_ms: u64,
    /// Its `max_attempts` (a re-drive gives it as many again).
    pub max_attempts: u32,
    /// Its lane (a re-drive puts it back there).
    pub priority: Priority,
    /// Its backoff.
    #[serde(skip)]
    pub(crate) backoff: Backoff,
}

/// The state of one queue.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Jobs ready to be reserved.
    pub waiting: u64,
    /// Jobs reserved and not yet acked, failed or released.
    pub in_flight: u64,
    /// Jobs waiting for their delay or retry backoff.
    pub delayed: u64,
    /// Jobs in the dead-letter list.
    pub dead: u64,
    /// Age of the oldest waiting job (ms since it was enqueued), `None` when none waits.
    pub oldest_age_ms: Option<u64>,
}

/// Options of a [`TaskQueue`] (the `[queue]` section's values).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// Namespace of the keys (`<ns>:q:...`, docs/keyspace.md); default `clusterkit`.
    pub namespace: String,
    /// How long a reserved job is leased before another consumer may reclaim it (30 s).
    pub visibility_timeout: Duration,
    /// The longest single blocking read of an idle consumer (5 s).
    pub block: Duration,
    /// Default attempts (3).
    pub max_attempts: u32,
    /// Default backoff (exponential 1 s .. 5 min with jitter).
    pub backoff: Backoff,
    /// Largest payload (1 MiB).
    pub max_payload_bytes: usize,
    /// Dead-letter entries kept per queue, oldest dropped first (10 000).
    pub dead_history: u64,
    /// Default idempotency window (24 h).
    pub idempotency_ttl: Duration,
    /// When not empty: the only queue names accepted.
    pub queues: Vec<String>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            namespace: "clusterkit".into(),
            visibility_timeout: Duration::from_secs(30),
            block: Duration::from_secs(5),
            max_attempts: 3,
            backoff: Backoff::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            dead_history: 10_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            queues: Vec::new(),
        }
    }
}

impl QueueOptions {
    /// Sets the visibility timeout.
    pub fn with_visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
    /// Sets the blocking read period.
    pub fn with_block(mut self, d: Duration) -> Self {
        self.block = d;
        self
    }
    /// Sets the default attempts.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets the default backoff.
    pub fn with_backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
    /// Sets the namespace.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }
    /// Sets the largest payload.
    pub fn with_max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }
    /// Sets the dead-letter history.
    pub fn with_dead_history(mut self, n: u64) -> Self {
        self.dead_history = n;
        self
    }
    /// Restricts the accepted queue names.
    pub fn with_queues(mut self, names: Vec<String>) -> Self {
        self.queues = names;
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        crate::cache::check_namespace_field("namespace", &self.namespace)?;
        crate::config::check_duration(
            "visibility_timeout",
            self.visibility_timeout,
            Duration::from_millis(10),
            Duration::from_secs(24 * 3600),
        )?;
        crate::config::check_duration(
            "block",
            self.block,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )?;
        crate::config::check_int(
            "max_attempts",
            i64::from(self.max_attempts),
            1,
            MAX_ATTEMPTS,
        )?;
        crate::config::check_int(
            "max_payload_bytes",
            self.max_payload_bytes,
            1,
            MAX_PAYLOAD_LIMIT,
        )?;
        crate::config::check_int("dead_history", self.dead_history, 1, 100_000_000)?;
        crate::config::check_duration(
            "idempotency_ttl",
            self.idempotency_ttl,
            Duration::from_millis(1),
            MAX_DELAY,
        )?;
        for (i, q) in self.queues.iter().enumerate() {
            check_name_syntax(q).map_err(|e| match e {
                Error::InvalidArgument { message, .. } => {
                    Error::invalid(format!("queues[{i}]"), message)
                }
                other => other,
            })?;
        }
        Ok(())
    }

    fn check_queue(&self, name: &str) -> Result<()> {
        check_name_syntax(name)?;
        if !self.queues.is_empty() && !self.queues.iter().any(|q| q == name) {
            return Err(Error::invalid(
                "queue",
                format!(
                    "unknown queue {:?}: [queue] queues lists {:?}",
                    crate::config::excerpt(name),
                    self.queues
                ),
            ));
        }
        Ok(())
    }

    fn check_payload(&self, payload: &[u8]) -> Result<()> {
        if payload.len() > self.max_payload_bytes {
            return Err(Error::invalid(
                "payload",
                format!(
                    "is {} bytes, the queue's max_payload_bytes is {}",
                    payload.len(),
                    self.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn check_name_syntax(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME_LEN {
        return Err(Error::invalid(
            "queue",
            format!(
                "a queue name is 1 to {MAX_QUEUE_NAME_LEN} bytes, got {}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(Error::invalid(
            "queue",
            format!(
                "a queue name may contain only A-Z a-z 0-9 _ - . (found {c:?} in {:?})",
                crate::config::excerpt(name)
            ),
        ));
    }
    Ok(())
}

/// Unix time in ms.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new job id: 128 random bits, 32 hex digits.
pub(crate) fn new_job_id() -> String {
    let mut b = [0u8; 16];
    random_id_bytes(&mut b);
    crate::rng::hex(&b)
}

/// Random bytes for job ids from the OS, fetched 4 KiB at a time per thread (one `getrandom`
/// per 256 ids instead of one per id). A forked child never reuses its parent's buffered
/// bytes: the buffer belongs to the process id that filled it.
fn random_id_bytes(out: &mut [u8; 16]) {
    use std::cell::RefCell;
    const POOL: usize = 4096;
    thread_local! {
        static BUF: RefCell<(u32, usize, Box<[u8; POOL]>)> = RefCell::new((0, POOL, Box::new([0; POOL])));
    }
    let pid = std::process::id();
    let filled = BUF.try_with(|cell| {
        let mut guard = cell.borrow_mut();
        let (owner, used, bytes) = &mut *guard;
        const N: usize = 16;
        if *owner != pid || *used + N > POOL {
            if getrandom::fill(&mut bytes[..]).is_err() {
                return false;
            }
            *owner = pid;
            *used = 0;
        }
        out.copy_from_slice(&bytes[*used..*used + N]);
        // Used bytes are wiped so that they cannot be handed out twice.
        bytes[*used..*used + N].fill(0);
        *used += N;
        true
    });
    if filled != Ok(true) && getrandom::fill(out).is_err() {
        out[..8].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
        out[8..].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
    }
}

/// A consumer name: 64 random bits and the process id.
pub(crate) fn new_consumer_name() -> String {
    format!("{:016x}.{}", crate::rng::next_u64(), std::process::id())
}

/// The error text kept with a job: at most [`MAX_ERROR_LEN`] bytes.
pub(crate) fn cut_error(e: &str) -> String {
    if e.len() <= MAX_ERROR_LEN {
        return e.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &e[..end])
}

/// Live counters of one task queue handle (shared by its clones and consumers).
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) reserved: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) blocking_reads: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) reserve_wait: LatencyHistogram,
}

/// A copy of [`QueueCounters`] (the `queue` object of [`crate::Clusterkit::metrics`]).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMetrics {
    /// Jobs stored by `enqueue`/`enqueue_many` (duplicates not counted).
    pub enqueued: u64,
    /// Enqueues answered with an existing job's id (idempotency key).
    pub duplicates: u64,
    /// Deliveries handed to this process's consumers.
    pub reserved: u64,
    /// Jobs acked.
    pub completed: u64,
    /// `fail` calls.
    pub failed: u64,
    /// Failures scheduled for another attempt.
    pub retried: u64,
    /// Jobs dead-lettered by this process (failed or reclaimed past their attempts).
    pub dead: u64,
    /// Jobs of other (crashed) consumers reclaimed by this process's consumers.
    pub reclaimed: u64,
    /// Jobs released back without consuming an attempt.
    pub released: u64,
    /// ack/fail/extend/release calls that found the lease gone.
    pub lease_lost: u64,
    /// Blocking reads issued while idle.
    pub blocking_reads: u64,
    /// Jobs reserved by this process and not yet finished.
    pub in_flight: u64,
    /// Time a reserve waited for a job.
    pub reserve_wait: HistogramSnapshot,
}

impl QueueMetrics {
    /// Adds `o`'s counts to these (snapshots of several processes).
    pub fn merge(&mut self, o: &QueueMetrics) {
        self.enqueued += o.enqueued;
        self.duplicates += o.duplicates;
        self.reserved += o.reserved;
        self.completed += o.completed;
        self.failed += o.failed;
        self.retried += o.retried;
        self.dead += o.dead;
        self.reclaimed += o.reclaimed;
        self.released += o.released;
        self.lease_lost += o.lease_lost;
        self.blocking_reads += o.blocking_reads;
        self.in_flight += o.in_flight;
        self.reserve_wait.merge(&o.reserve_wait);
    }
}

impl QueueCounters {
    fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
    fn done(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    /// A copy of the counters.
    pub fn read(&self) -> QueueMetrics {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueMetrics {
            enqueued: g(&self.enqueued),
            duplicates: g(&self.duplicates),
            reserved: g(&self.reserved),
            completed: g(&self.completed),
            failed: g(&self.failed),
            retried: g(&self.retried),
            dead: g(&self.dead),
            reclaimed: g(&self.reclaimed),
            released: g(&self.released),
            lease_lost: g(&self.lease_lost),
            blocking_reads: g(&self.blocking_reads),
            in_flight: g(&self.in_flight),
            reserve_wait: self.reserve_wait.read(),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<memory::MemoryQueue>),
    Redis(Arc<redis::RedisQueue>),
}

/// The task queue service of a deployment: enqueue, introspection, dead letters, and
/// [`Consumer`]s that reserve jobs. Cheap to clone.
#[derive(Clone)]
pub struct TaskQueue {
    backend: Backend,
    options: Arc<QueueOptions>,
    counters: Arc<QueueCounters>,
}

impl std::fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueue")
            .field("backend", &self.backend_name())
            .field("namespace", &self.options.namespace)
            .finish()
    }
}

/// One job of [`TaskQueue::enqueue_many`].
#[derive(Debug, Clone, Default)]
pub struct NewJobSpec {
    /// The payload.
    pub payload: Bytes,
    /// Its options.
    pub options: EnqueueOptions,
}

impl TaskQueue {
    /// The embedded backend: one process, same semantics (leases, retries, dead letters,
    /// idempotency, priorities), nothing survives the process.
    pub fn memory(options: QueueOptions) -> Result<TaskQueue> {
        options.validate()?;
        Ok(TaskQueue {
            backend: Backend::Memory(Arc::new(memory::MemoryQueue::new(options.clone()))),
            options: Arc::new(options),
            counters: Arc::default(),
        })
    }

    /// One Redis server (`host:port` or a `redis://` URL) with `connection`'s credentials,
    /// database and TLS. No I/O until first use.
    pub fn redis(
        address: &str,
        options: QueueOptions,
        connection: &crate::connection::ConnectionSettings,
    ) -> Result<TaskQueue> {
        options.validate()?;
        let backend = redis::RedisQueue::new(address, options.clone(), connection)?;
        Ok(TaskQueue {
            backend: Backend::Redis(Arc::new(backend)),
            options: Arc::new(options),
            counters: Arc::default(),
        })
    }

    /// `"memory"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// The options this queue service runs with.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// Stores one job and returns its id (or, for a duplicate idempotency key within its
    /// window, the first job's id, storing nothing). Fails with `invalid_argument` naming
    /// `queue`, `payload` or the option (`options.delay_ms`, ...), or with the backend's
    /// error (`unavailable`, `timeout`).
    pub async fn enqueue(
        &self,
        queue: &str,
        payload: &[u8],
        options: &EnqueueOptions,
    ) -> Result<String> {
        self.options.check_queue(queue)?;
        self.options.check_payload(payload)?;
        let job = options.resolve(&self.options)?;
        let (id, fresh) = match &self.backend {
            Backend::Memory(m) => m.enqueue(queue, Bytes::copy_from_slice(payload), job),
            Backend::Redis(r) => r.enqueue(queue, payload, &job).await?,
        };
        if fresh {
            QueueCounters::inc(&self.counters.enqueued);
        } else {
            QueueCounters::inc(&self.counters.duplicates);
        }
        tracing::debug!(target: "clusterkit::queue", queue, job = %id, duplicate = !fresh, "enqueued");
        Ok(id)
    }

    /// Stores many jobs of one queue in one round trip; ids in order. Every job is checked
    /// before anything is stored (`invalid_argument` naming `jobs[i].payload`,
    /// `jobs[i].options.delay_ms`, ...).
    pub async fn enqueue_many(&self, queue: &str, jobs: &[NewJobSpec]) -> Result<Vec<String>> {
        self.options.check_queue(queue)?;
        if jobs.len() > MAX_BATCH {
            return Err(Error::invalid(
                "jobs",
                format!("at most {MAX_BATCH} jobs per call, got {}", jobs.len()),
            ));
        }
        let mut resolved = Vec::with_capacity(jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            let prefix = format!("jobs[{i}]");
            self.options
                .check_payload(&j.payload)
                .map_err(|e| e.in_field(&prefix))?;
            resolved.push((
                j.payload.clone(),
                j.options
                    .resolve(&self.options)
                    .map_err(|e| e.in_field(&prefix))?,
            ));
        }
        let out = match &self.backend {
            Backend::Memory(m) => resolved
                .into_iter()
                .map(|(p, j)| m.enqueue(queue, p, j))
                .collect(),
            Backend::Redis(r) => r.enqueue_many(queue, &resolved).await?,
        };
        let fresh = out.iter().filter(|(_, f)| *f).count() as u64;
        QueueCounters::add(&self.counters.enqueued, fresh);
        QueueCounters::add(&self.counters.duplicates, out.len() as u64 - fresh);
        tracing::debug!(target: "clusterkit::queue", queue, jobs = out.len(), "enqueued many");
        Ok(out.into_iter().map(|(id, _)| id).collect())
    }

    /// A consumer of `queue` with a name of its own (64 random bits and the process id).
    /// Fails with `invalid_argument` naming `queue`.
    pub fn consumer(&self, queue: &str) -> Result<Consumer> {
        self.options.check_queue(queue)?;
        let state = match &self.backend {
            Backend::Memory(m) => ConsumerState::Memory(m.clone()),
            Backend::Redis(r) => ConsumerState::Redis(Arc::new(r.consumer(queue)?)),
        };
        Ok(Consumer {
            inner: Arc::new(ConsumerInner {
                queue: queue.to_string(),
                name: new_consumer_name(),
                state,
                counters: self.counters.clone(),
                stop: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// Length, in flight, delayed, dead and the oldest waiting job's age of `queue`.
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.options.check_queue(queue)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stats(queue)),
            Backend::Redis(r) => r.stats(queue).await,
        }
    }

    /// Up to `limit` dead-lettered jobs of `queue`, oldest first.
    pub async fn dead_jobs(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>> {
        self.options.check_queue(queue)?;
        let limit = limit.clamp(1, MAX_BATCH);
        match &self.backend {
            Backend::Memory(m) => Ok(m.dead_jobs(queue, limit)),
            Backend::Redis(r) => r.dead_jobs(queue, limit).await,
        }
    }

    /// Moves up to `limit` dead-lettered jobs of `queue` (oldest first) back to their lanes
    /// with a fresh attempt count; returns how many moved.
    pub async fn redrive(&self, queue: &str, limit: usize) -> Result<u64> {
        self.options.check_queue(queue)?;
        let limit = limit.clamp(1, MAX_BATCH);
        let n = match &self.backend {
            Backend::Memory(m) => m.redrive(queue, limit),
            Backend::Redis(r) => r.redrive(queue, limit).await?,
        };
        tracing::info!(target: "clusterkit::queue", queue, jobs = n, "re-drove dead jobs");
        Ok(n)
    }

    /// Deletes every key of `queue`: waiting, in-flight, delayed and dead jobs (the
    /// idempotency keys expire by themselves). The owner's way to remove a queue.
    pub async fn purge(&self, queue: &str) -> Result<()> {
        self.options.check_queue(queue)?;
        match &self.backend {
            Backend::Memory(m) => {
                m.purge(queue);
                Ok(())
            }
            Backend::Redis(r) => r.purge(queue).await,
        }
    }

    /// This handle's counters (all its consumers included).
    pub fn metrics(&self) -> QueueMetrics {
        self.counters.read()
    }
}

enum ConsumerState {
    Memory(Arc<memory::MemoryQueue>),
    Redis(Arc<redis::RedisConsumer>),
}

struct ConsumerInner {
    queue: String,
    name: String,
    state: ConsumerState,
    counters: Arc<QueueCounters>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Reserves jobs of one queue and settles them. Cheap to clone; clones are the same consumer
/// (one name), and any number of reserves may run at once on it (concurrency per worker).
///
/// Blocking callers (C, PHP, Python threads) run these futures with
/// [`crate::blocking::block_on`]; async callers await them.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<ConsumerInner>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.inner.queue)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Consumer {
    /// The queue this consumer reserves from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// This consumer's name (in the Redis consumer group).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether [`Consumer::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// The next job, waiting up to `timeout` for one (zero: do not wait). `Ok(None)` when
    /// none came in time or the consumer was stopped. Waiting is blocking reads on the
    /// server (no polling): one read per `[queue] block` period at most while idle.
    pub async fn reserve(&self, timeout: Duration) -> Result<Option<Job>> {
        Ok(self.reserve_many(1, timeout).await?.pop())
    }

    /// Up to `max` jobs (1..=10 000) in one round trip when that many wait, else what comes
    /// within `timeout` (at least one unless the time runs out or the consumer is stopped).
    pub async fn reserve_many(&self, max: usize, timeout: Duration) -> Result<Vec<Job>> {
        if max == 0 || max > MAX_BATCH {
            return Err(Error::invalid(
                "max",
                format!("must be between 1 and {MAX_BATCH}, got {max}"),
            ));
        }
        if self.is_stopped() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let stop = self.inner.stop.subscribe();
        let i = &self.inner;
        let (jobs, reclaimed) = match &i.state {
            ConsumerState::Memory(m) => {
                m.reserve(&i.queue, &i.name, max, timeout, stop, &i.counters)
                    .await?
            }
            ConsumerState::Redis(r) => r.reserve(max, timeout, stop, &i.counters).await?,
        };
        self.count_reserved(&jobs, reclaimed, started);
        Ok(jobs)
    }

    fn lost(&self, what: &str) -> Error {
        QueueCounters::inc(&self.inner.counters.lease_lost);
        tracing::warn!(target: "clusterkit::queue", queue = %self.inner.queue, what,
            "lease lost: the job was reclaimed or settled elsewhere");
        Error::Conflict(format!(
            "{what}: the lease is gone (expired and reclaimed, or already settled)"
        ))
    }

    /// The job is done: removes it. Fails with `conflict` when the lease is gone (the job
    /// was reclaimed by another consumer after the visibility timeout, or already settled),
    /// `invalid_argument` naming `receipt` for a malformed receipt.
    pub async fn ack(&self, receipt: &str) -> Result<()> {
        let acked = self.ack_many(&[receipt]).await?;
        if acked.first() == Some(&true) {
            Ok(())
        } else {
            Err(Error::Conflict(
                "ack: the lease is gone (expired and reclaimed, or already settled)".into(),
            ))
        }
    }

    /// Acks many jobs at once: one round trip and one script run on Redis for all of them
    /// (a worker running jobs concurrently settles those that finish together). Returns, per
    /// receipt in order, `true` when it was acked and `false` when its lease was gone (what
    /// [`Consumer::ack`] reports as `conflict`; a receipt repeated in the call is acked
    /// once). Fails with `invalid_argument` naming `receipts[i]` for a malformed receipt
    /// (then nothing is acked), or `receipts` for more than 10 000, and as the backend fails.
    pub async fn ack_many<S: AsRef<str>>(&self, receipts: &[S]) -> Result<Vec<bool>> {
        if receipts.len() > MAX_BATCH {
            return Err(Error::invalid(
                "receipts",
                format!("at most {MAX_BATCH} per call, got {}", receipts.len()),
            ));
        }
        let receipts: Vec<&str> = receipts.iter().map(AsRef::as_ref).collect();
        let i = &self.inner;
        let acked = match &i.state {
            ConsumerState::Memory(m) => m.ack_many(&i.queue, &receipts)?,
            ConsumerState::Redis(r) => r.ack_many(&receipts).await?,
        };
        self.count_acked(&acked);
        Ok(acked)
    }

    /// Acks `receipts` and reserves up to `max` jobs, in one round trip and one script run
    /// on Redis when jobs wait (a worker settling the jobs it finished and fetching the next
    /// ones, as BullMQ's moveToFinished does); when none waits, the reserve then blocks up to
    /// `timeout` as [`Consumer::reserve_many`] does, the acks already done. Returns per
    /// receipt what [`Consumer::ack_many`] returns, and the jobs. `receipts` may be empty.
    /// A stopped consumer acks and reserves nothing. Fails like both (`receipts[i]`, `max`);
    /// on a failure the acks may or may not have been done, as with `ack_many`.
    pub async fn ack_and_reserve<S: AsRef<str>>(
        &self,
        receipts: &[S],
        max: usize,
        timeout: Duration,
    ) -> Result<(Vec<bool>, Vec<Job>)> {
        if max == 0 || max > MAX_BATCH {
            return Err(Error::invalid(
                "max",
                format!("must be between 1 and {MAX_BATCH}, got {max}"),
            ));
        }
        if receipts.len() > MAX_BATCH {
            return Err(Error::invalid(
                "receipts",
                format!("at most {MAX_BATCH} per call, got {}", receipts.len()),
            ));
        }
        let i = &self.inner;
        let ConsumerState::Redis(r) = &i.state else {
            // Embedded: both are in-process calls already.
            let acked = self.ack_many(receipts).await?;
            return Ok((acked, self.reserve_many(max, timeout).await?));
        };
        if self.is_stopped() {
            return Ok((self.ack_many(receipts).await?, Vec::new()));
        }
        let receipts: Vec<&str> = receipts.iter().map(AsRef::as_ref).collect();
        let started = std::time::Instant::now();
        let stop = self.inner.stop.subscribe();
        let (acked, jobs, reclaimed) = r
            .ack_and_reserve(&receipts, max, timeout, stop, &i.counters)
            .await?;
        self.count_acked(&acked);
        self.count_reserved(&jobs, reclaimed, started);
        Ok((acked, jobs))
    }

    fn count_acked(&self, acked: &[bool]) {
        let i = &self.inner;
        for &ok in acked {
            if ok {
                i.counters.done();
                QueueCounters::inc(&i.counters.completed);
            } else {
                // Counted and logged as a lost lease; the caller gets `false` (or conflict).
                let _ = self.lost("ack");
            }
        }
    }

    fn count_reserved(&self, jobs: &[Job], reclaimed: u64, started: std::time::Instant) {
        let i = &self.inner;
        if !jobs.is_empty() {
            QueueCounters::add(&i.counters.reserved, jobs.len() as u64);
            QueueCounters::add(&i.counters.in_flight, jobs.len() as u64);
            i.counters.reserve_wait.record(started.elapsed());
        }
        if reclaimed > 0 {
            QueueCounters::add(&i.counters.reclaimed, reclaimed);
            tracing::info!(target: "clusterkit::queue", queue = %i.queue, jobs = reclaimed,
                "reclaimed jobs whose lease expired");
        }
    }

    /// The attempt failed with `error` (kept with the job, at most 4096 bytes; never logged):
    /// the job is retried after its backoff, or dead-lettered when it used its last attempt.
    /// Fails like [`Consumer::ack`].
    pub async fn fail(&self, receipt: &str, error: &str) -> Result<FailOutcome> {
        let i = &self.inner;
        let error = cut_error(error);
        let r = crate::rng::next_u64() as f64 / (u64::MAX as f64 + 1.0);
        let out = match &i.state {
            ConsumerState::Memory(m) => m.fail(&i.queue, receipt, &error, r, &i.counters)?,
            ConsumerState::Redis(c) => c.fail(receipt, &error, r).await?,
        };
        let Some(out) = out else {
            return Err(self.lost("fail"));
        };
        i.counters.done();
        QueueCounters::inc(&i.counters.failed);
        match out {
            FailOutcome::Retry { attempt, .. } => {
                QueueCounters::inc(&i.counters.retried);
                tracing::debug!(target: "clusterkit::queue", queue = %i.queue, attempt, "job failed, will retry");
            }
            FailOutcome::Dead => {
                QueueCounters::inc(&i.counters.dead);
                tracing::warn!(target: "clusterkit::queue", queue = %i.queue, "job failed its last attempt: dead-lettered");
            }
        }
        Ok(out)
    }

    /// Heartbeat: the lease of the job runs one full visibility timeout from now. Fails like
    /// [`Consumer::ack`] (`conflict`: the job was already reclaimed; stop working on it).
    pub async fn extend(&self, receipt: &str) -> Result<()> {
        let i = &self.inner;
        let ok = match &i.state {
            ConsumerState::Memory(m) => m.extend(&i.queue, receipt)?,
            ConsumerState::Redis(r) => r.extend(receipt).await?,
        };
        if ok {
            Ok(())
        } else {
            Err(self.lost("extend"))
        }
    }

    /// Puts the job back at the end of its lane without consuming an attempt (graceful
    /// shutdown of a worker that will not finish it). Fails like [`Consumer::ack`].
    pub async fn release(&self, receipt: &str) -> Result<()> {
        let i = &self.inner;
        let ok = match &i.state {
            ConsumerState::Memory(m) => m.release(&i.queue, receipt)?,
            ConsumerState::Redis(r) => r.release(receipt).await?,
        };
        if !ok {
            return Err(self.lost("release"));
        }
        i.counters.done();
        QueueCounters::inc(&i.counters.released);
        Ok(())
    }

    /// Stops this consumer: reserves waiting now return at once with no job, later ones
    /// return no job. Jobs already reserved stay leased: settle them (or call
    /// [`Consumer::shutdown`]). Never blocks; callable from a signal-handling thread.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Graceful end: [`Consumer::stop`], then every job still leased to this consumer (also
    /// one a reserve fetched while being stopped) goes back to its lane without consuming an
    /// attempt. Returns how many were returned. Finish or settle the jobs you want to finish
    /// before calling it.
    pub async fn shutdown(&self) -> Result<u64> {
        self.stop();
        let i = &self.inner;
        let n = match &i.state {
            ConsumerState::Memory(m) => m.shutdown(&i.queue, &i.name),
            ConsumerState::Redis(r) => r.shutdown().await?,
        };
        for _ in 0..n {
            i.counters.done();
        }
        QueueCounters::add(&i.counters.released, n);
        tracing::info!(target: "clusterkit::queue", queue = %i.queue, returned = n, "consumer shut down");
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
