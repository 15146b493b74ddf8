//! The embedded task queue: the Redis backend's semantics in one process (leases, reclaiming,
//! retries through a delayed set, dead letters, idempotency keys, priority lanes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    now_ms, Backoff, DeadJob, FailOutcome, Job, NewJob, Priority, QueueCounters, QueueOptions,
    QueueStats,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    payload: Bytes,
    /// The attempt number of the next first delivery.
    attempt_base: u32,
    max_attempts: u32,
    backoff: Backoff,
    enqueued_at: u64,
    priority: Priority,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Leased {
    entry: Entry,
    consumer: String,
    deadline: u64,
    deliveries: u32,
}

impl Leased {
    fn attempt(&self) -> u32 {
        self.entry.attempt_base + self.deliveries - 1
    }
}

#[derive(Debug, Default)]
struct QState {
    lanes: [VecDeque<(u64, Entry)>; 3],
    in_flight: HashMap<u64, Leased>,
    delayed: BTreeMap<(u64, u64), Entry>,
    dead: VecDeque<DeadJob>,
    idempotency: HashMap<String, (String, u64)>,
    ops: u64,
}

pub(crate) struct MemoryQueue {
    options: QueueOptions,
    queues: crate::fork::Mutex<HashMap<String, QState>>,
    notify: tokio::sync::Notify,
    seq: AtomicU64,
}

fn parse_receipt(receipt: &str) -> Result<(u64, &str)> {
    receipt
        .strip_prefix('m')
        .and_then(|r| r.split_once('/'))
        .and_then(|(seq, consumer)| seq.parse::<u64>().ok().map(|s| (s, consumer)))
        .ok_or_else(|| Error::invalid("receipt", "not a receipt of this queue's embedded backend"))
}

impl QState {
    fn promote(&mut self, now: u64) {
        while let Some((&(due, seq), _)) = self.delayed.first_key_value() {
            if due > now {
                break;
            }
            if let Some(e) = self.delayed.remove(&(due, seq)) {
                self.lanes[e.priority.index()].push_back((seq, e));
            }
        }
    }

    fn bury(&mut self, e: Entry, attempts: u32, error: String, now: u64, history: u64) {
        self.dead.push_back(DeadJob {
            id: e.id,
            payload: e.payload,
            attempts,
            last_error: error,
            failed_at_ms: now,
            enqueued_at_ms: e.enqueued_at,
            max_attempts: e.max_attempts,
            priority: e.priority,
            backoff: e.backoff,
        });
        while self.dead.len() as u64 > history {
            self.dead.pop_front();
        }
    }

    /// Leases whose deadline passed go to `consumer` (a new delivery: an attempt) or, past
    /// their last attempt, to the dead letters. Returns the reclaimed jobs' seqs.
    fn reclaim(
        &mut self,
        now: u64,
        consumer: &str,
        visibility: u64,
        history: u64,
        counters: &QueueCounters,
    ) -> Vec<u64> {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for seq in expired {
            let Some(mut l) = self.in_flight.remove(&seq) else {
                continue;
            };
            l.deliveries += 1;
            if l.attempt() > l.entry.max_attempts {
                let attempts = l.attempt() - 1;
                QueueCounters::inc(&counters.dead);
                self.bury(
                    l.entry,
                    attempts,
                    format!(
                        "lease expired: no ack within the visibility timeout on attempt {attempts}"
                    ),
                    now,
                    history,
                );
                continue;
            }
            l.consumer = consumer.to_string();
            l.deadline = now + visibility;
            self.in_flight.insert(seq, l);
            out.push(seq);
        }
        out
    }

    fn job(&self, queue: &str, seq: u64) -> Option<Job> {
        let l = self.in_flight.get(&seq)?;
        Some(Job {
            id: l.entry.id.clone(),
            queue: queue.to_string(),
            payload: l.entry.payload.clone(),
            attempt: l.attempt(),
            max_attempts: l.entry.max_attempts,
            enqueued_at_ms: l.entry.enqueued_at,
            priority: l.entry.priority,
            last_error: l.entry.last_error.clone(),
            receipt: format!("m{seq}/{}", l.consumer),
        })
    }

    /// The lease of `receipt` if it is still the holder's.
    fn held(&mut self, receipt: &str) -> Result<Option<Leased>> {
        let (seq, consumer) = parse_receipt(receipt)?;
        match self.in_flight.get(&seq) {
            Some(l) if l.consumer == consumer => Ok(self.in_flight.remove(&seq)),
            _ => Ok(None),
        }
    }

    fn sweep_idempotency(&mut self, now: u64) {
        self.ops += 1;
        if self
            .ops
            .is_multiple_of(64.max(self.idempotency.len() as u64))
        {
            self.idempotency.retain(|_, (_, exp)| *exp > now);
        }
    }
}

impl MemoryQueue {
    pub(crate) fn new(options: QueueOptions) -> MemoryQueue {
        MemoryQueue {
            options,
            queues: crate::fork::Mutex::new(HashMap::new()),
            notify: tokio::sync::Notify::new(),
            seq: AtomicU64::new(1),
        }
    }

    pub(crate) fn enqueue(&self, queue: &str, payload: Bytes, job: NewJob) -> (String, bool) {
        let now = now_ms();
        let mut queues = self.queues.lock();
        let q = queues.entry(queue.to_string()).or_default();
        q.sweep_idempotency(now);
        if let Some((key, _)) = &job.idempotency {
            if let Some((id, exp)) = q.idempotency.get(key) {
                if *exp > now {
                    return (id.clone(), false);
                }
            }
        }
        let id = super::new_job_id();
        if let Some((key, ttl)) = job.idempotency {
            q.idempotency
                .insert(key, (id.clone(), now + ttl.as_millis() as u64));
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let e = Entry {
            id: id.clone(),
            payload,
            attempt_base: 1,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            enqueued_at: now,
            priority: job.priority,
            last_error: None,
        };
        if job.due_ms > now {
            q.delayed.insert((job.due_ms, seq), e);
        } else {
            q.lanes[job.priority.index()].push_back((seq, e));
        }
        drop(queues);
        self.notify.notify_waiters();
        (id, true)
    }

    pub(crate) async fn reserve(
        &self,
        queue: &str,
        consumer: &str,
        max: usize,
        timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        counters: &QueueCounters,
    ) -> Result<(Vec<Job>, u64)> {
        let deadline = Instant::now() + timeout;
        let visibility = self.options.visibility_timeout.as_millis() as u64;
        let history = self.options.dead_history;
        loop {
            if *stop.borrow() {
                return Ok((Vec::new(), 0));
            }
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let wake_at;
            {
                let now = now_ms();
                let mut queues = self.queues.lock();
                let q = queues.entry(queue.to_string()).or_default();
                q.promote(now);
                let mut seqs = q.reclaim(now, consumer, visibility, history, counters);
                let reclaimed = seqs.len() as u64;
                seqs.truncate(max);
                while seqs.len() < max {
                    let Some((seq, e)) = q.lanes.iter_mut().find_map(|l| l.pop_front()) else {
                        break;
                    };
                    q.in_flight.insert(
                        seq,
                        Leased {
                            entry: e,
                            consumer: consumer.to_string(),
                            deadline: now + visibility,
                            deliveries: 1,
                        },
                    );
                    seqs.push(seq);
                }
                if !seqs.is_empty() {
                    let jobs = seqs.iter().filter_map(|s| q.job(queue, *s)).collect();
                    return Ok((jobs, reclaimed));
                }
                let next_due = q.delayed.keys().next().map(|(d, _)| *d);
                let next_lease = q.in_flight.values().map(|l| l.deadline).min();
                wake_at = [next_due, next_lease].into_iter().flatten().min();
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok((Vec::new(), 0));
            }
            let mut until = deadline;
            if let Some(at) = wake_at {
                let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                until = until.min(now + wait);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn with<T>(&self, queue: &str, f: impl FnOnce(&mut QState) -> T) -> T {
        let mut queues = self.queues.lock();
        f(queues.entry(queue.to_string()).or_default())
    }

    /// Acks each receipt (`false`: its lease is gone), all checked first (a malformed one fails the
    /// call naming `receipts[i]`, nothing acked).
    pub(crate) fn ack_many(&self, queue: &str, receipts: &[&str]) -> Result<Vec<bool>> {
        for (i, r) in receipts.iter().enumerate() {
            if receipts.len() > 1 && parse_receipt(r).is_err() {
                return Err(Error::invalid(
                    format!("receipts[{i}]"),
                    "not a receipt of this queue's embedded backend",
                ));
            }
        }
        self.with(queue, |q| {
            receipts.iter().map(|r| Ok(q.held(r)?.is_some())).collect()
        })
    }

    pub(crate) fn fail(
        &self,
        queue: &str,
        receipt: &str,
        error: &str,
        r: f64,
        _counters: &QueueCounters,
    ) -> Result<Option<FailOutcome>> {
        let history = self.options.dead_history;
        let out = self.with(queue, |q| -> Result<Option<FailOutcome>> {
            let Some(l) = q.held(receipt)? else {
                return Ok(None);
            };
            let now = now_ms();
            let attempt = l.attempt();
            let (seq, _) = parse_receipt(receipt)?;
            let mut e = l.entry;
            if attempt >= e.max_attempts {
                q.bury(e, attempt, error.to_string(), now, history);
                return Ok(Some(FailOutcome::Dead));
            }
            let at = now + e.backoff.delay(attempt, r).as_millis() as u64;
            e.attempt_base = attempt + 1;
            e.last_error = Some(error.to_string());
            q.delayed.insert((at, seq), e);
            Ok(Some(FailOutcome::Retry {
                at_ms: at,
                attempt: attempt + 1,
            }))
        })?;
        self.notify.notify_waiters();
        Ok(out)
    }

    pub(crate) fn extend(&self, queue: &str, receipt: &str) -> Result<bool> {
        let visibility = self.options.visibility_timeout.as_millis() as u64;
        self.with(queue, |q| {
            let (seq, consumer) = parse_receipt(receipt)?;
            match q.in_flight.get_mut(&seq) {
                Some(l) if l.consumer == consumer => {
                    l.deadline = now_ms() + visibility;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    pub(crate) fn release(&self, queue: &str, receipt: &str) -> Result<bool> {
        let ok = self.with(queue, |q| -> Result<bool> {
            let (seq, _) = parse_receipt(receipt)?;
            let Some(l) = q.held(receipt)? else {
                return Ok(false);
            };
            let attempt = l.attempt();
            let mut e = l.entry;
            e.attempt_base = attempt;
            q.lanes[e.priority.index()].push_back((seq, e));
            Ok(true)
        })?;
        self.notify.notify_waiters();
        Ok(ok)
    }

    pub(crate) fn shutdown(&self, queue: &str, consumer: &str) -> u64 {
        let n = self.with(queue, |q| {
            let mine: Vec<u64> = q
                .in_flight
                .iter()
                .filter(|(_, l)| l.consumer == consumer)
                .map(|(s, _)| *s)
                .collect();
            for seq in &mine {
                if let Some(l) = q.in_flight.remove(seq) {
                    let attempt = l.attempt();
                    let mut e = l.entry;
                    e.attempt_base = attempt;
                    q.lanes[e.priority.index()].push_back((*seq, e));
                }
            }
            mine.len() as u64
        });
        self.notify.notify_waiters();
        n
    }

    pub(crate) fn stats(&self, queue: &str) -> QueueStats {
        let now = now_ms();
        self.with(queue, |q| {
            q.promote(now);
            QueueStats {
                waiting: q.lanes.iter().map(|l| l.len() as u64).sum(),
                in_flight: q.in_flight.len() as u64,
                delayed: q.delayed.len() as u64,
                dead: q.dead.len() as u64,
                oldest_age_ms: q
                    .lanes
                    .iter()
                    .flat_map(|l| l.iter().map(|(_, e)| e.enqueued_at))
                    .min()
                    .map(|t| now.saturating_sub(t)),
            }
        })
    }

    pub(crate) fn dead_jobs(&self, queue: &str, limit: usize) -> Vec<DeadJob> {
        self.with(queue, |q| q.dead.iter().take(limit).cloned().collect())
    }

    pub(crate) fn redrive(&self, queue: &str, limit: usize) -> u64 {
        let n = self.with(queue, |q| {
            let mut n = 0;
            while n < limit as u64 {
                let Some(d) = q.dead.pop_front() else { break };
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                q.lanes[d.priority.index()].push_back((
                    seq,
                    Entry {
                        id: d.id,
                        payload: d.payload,
                        attempt_base: 1,
                        max_attempts: d.max_attempts,
                        backoff: d.backoff,
                        enqueued_at: d.enqueued_at_ms,
                        priority: d.priority,
                        last_error: Some(d.last_error),
                    },
                ));
                n += 1;
            }
            n
        });
        self.notify.notify_waiters();
        n
    }

    pub(crate) fn purge(&self, queue: &str) {
        self.queues.lock().remove(queue);
        self.notify.notify_waiters();
    }
}
