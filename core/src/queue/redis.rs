//! The task queue on Redis Streams.
//!
//! Keys of queue `Q` (namespace `ns`, docs/keyspace.md), all in the hash slot of `{Q}`:
//!
//! - `ns:q:{Q}:h`, `:n`, `:l` — one stream per priority lane, consumer group `ck`. An entry
//!   is a job: `i` id, `p` payload, `a` attempt of its first delivery, `m` max attempts, `b`
//!   backoff, `t` enqueued at (ms), `e` last error. Acked entries are deleted (`XDEL`), so a
//!   lane holds only waiting and in-flight jobs (an ack batch trims the settled entries older
//!   than the oldest pending one with `XTRIM MINID` and deletes the others with `XDEL`).
//! - `ns:q:{Q}:d` — sorted set of delayed and retried jobs (member: the job's fields packed
//!   with MessagePack, score: due time in ms), promoted to their lane by the reserve script.
//! - `ns:q:{Q}:x` — the dead-letter stream (`MAXLEN ~ dead_history`).
//! - `ns:q:{Q}:w` — the wake-up stream (`MAXLEN 1`): a delayed job that becomes the earliest
//!   adds an entry, so that a consumer blocked on it (it is the fourth stream of the blocking
//!   read) re-arms its timer. Entries are deleted by whoever reads them.
//! - `ns:q:{Q}:u:<key>` — idempotency key → the first job's id, with the window as TTL.
//!
//! Every state change is one Lua script (atomic on the server), so any number of consumers
//! may promote, reclaim and settle at once. Waiting is `XREADGROUP ... BLOCK` on a connection
//! of its own, over the three lanes and the wake-up stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Script, Value};

use super::{
    now_ms, Backoff, DeadJob, FailOutcome, Job, NewJob, Priority, QueueCounters, QueueOptions,
    QueueStats,
};
use crate::cache::redis::{RedisOptions, SyncPool};
use crate::connection::link::{Link, LinkConnection};
use crate::connection::{prepare, ConnectionSettings, Resolution, Target};
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_millis(200);
const GROUP: &str = "ck";

const LIB: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fields(arr)
  local h = {}
  for i = 1, #arr, 2 do h[arr[i]] = arr[i + 1] end
  return h
end
local function n2s(x) return string.format('%.0f', x) end
local function job_args(h, attempt)
  local a = {'i', h.i, 'p', h.p, 'a', attempt, 'm', h.m, 'b', h.b, 't', h.t}
  if h.e then a[#a + 1] = 'e'; a[#a + 1] = h.e end
  return a
end
local function ensure_group(key)
  pcall(redis.call, 'XGROUP', 'CREATE', key, 'ck', '0', 'MKSTREAM')
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

const ENQUEUE: &str = r#"
-- Any number of jobs in one call (enqueue is a batch of one).
-- KEYS: lane h, n, l, delayed, wake stream, then the batch's idempotency keys
-- ARGV: 8 per job: id, payload, max, backoff, delay ms, lane (1..3), idempotency key's
--       index in KEYS (0: none), idempotency ttl ms
-- Returns {id, fresh (1/0)} per job, flat; a duplicate key returns the first job's id.
local now = now_ms()
local ts = n2s(now)
local out = {}
local earliest = false
for j = 1, #ARGV, 8 do
  local id = ARGV[j]
  local ik = tonumber(ARGV[j + 6])
  local prev = false
  if ik > 0 then
    prev = redis.call('GET', KEYS[ik])
    if not prev then redis.call('SET', KEYS[ik], id, 'PX', ARGV[j + 7]) end
  end
  if prev then
    out[#out + 1] = prev
    out[#out + 1] = 0
  else
    local delay = tonumber(ARGV[j + 4])
    local lane = tonumber(ARGV[j + 5])
    if delay > 0 then
      local m = cmsgpack.pack({lane, 'i', id, 'p', ARGV[j + 1], 'a', '1', 'm', ARGV[j + 2],
        'b', ARGV[j + 3], 't', ts})
      redis.call('ZADD', KEYS[4], now + delay, m)
      if not earliest then
        local first = redis.call('ZRANGE', KEYS[4], 0, 0)
        earliest = first[1] == m
      end
    else
      redis.call('XADD', KEYS[lane], '*', 'i', id, 'p', ARGV[j + 1], 'a', '1', 'm', ARGV[j + 2],
        'b', ARGV[j + 3], 't', ts)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
-- A job that became the earliest delayed one re-arms the timers of blocked consumers.
if earliest then redis.call('XADD', KEYS[5], 'MAXLEN', '1', '*', 'w', '1') end
return out
"#;

const RESERVE: &str = r#"
-- KEYS: lane h, n, l, delayed, dead, wake stream
-- ARGV: consumer, count, visibility ms, reclaim (0/1), dead maxlen, then jobs to ack first
--       (the groups of ack_batch): a worker's "ack the finished jobs and reserve the next"
--       is one round trip and one script run, as BullMQ's moveToFinished is.
-- Returns {reclaimed rows, reclaimed, dead, next due, now, acked, read}: a reclaimed row is
-- {lane, entry id, attempt, id, payload, max, t, e}; `read` is flat, per lane read: the
-- lane and XREADGROUP's entries as they came (no table per job: the client parses them).
local acked = ack_batch(6)
local now = now_ms()
if ARGV[4] == '1' then ensure_group(KEYS[6]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[4], m)
  local f = cmsgpack.unpack(m)
  redis.call('XADD', KEYS[f[1]], '*', unpack(f, 2))
end
local out = {}
local want = tonumber(ARGV[2])
local reclaimed, dead = 0, 0
if ARGV[4] == '1' then
  for li = 1, 3 do
    if #out >= want then break end
    local ok, r = pcall(redis.call, 'XAUTOCLAIM', KEYS[li], 'ck', ARGV[1], ARGV[3], '0-0',
      'COUNT', want - #out)
    if ok then
      for _, e in ipairs(r[2]) do
        if e and e[2] then
          local h = fields(e[2])
          if h.w then
            redis.call('XACK', KEYS[li], 'ck', e[1])
            redis.call('XDEL', KEYS[li], e[1])
          else
            local p = redis.call('XPENDING', KEYS[li], 'ck', e[1], e[1], 1)
            local attempt = tonumber(h.a) + tonumber(p[1][4]) - 1
            if attempt > tonumber(h.m) then
              local a = job_args(h, n2s(attempt - 1))
              a[#a + 1] = 'q'; a[#a + 1] = tostring(li)
              a[#a + 1] = 'f'; a[#a + 1] = n2s(now)
              a[#a + 1] = 'e'
              a[#a + 1] = 'lease expired: no ack within the visibility timeout on attempt ' .. n2s(attempt - 1)
              redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', unpack(a))
              redis.call('XACK', KEYS[li], 'ck', e[1])
              redis.call('XDEL', KEYS[li], e[1])
              dead = dead + 1
            else
              out[#out + 1] = {li, e[1], attempt, h.i, h.p, h.m, h.t, h.e or ''}
              reclaimed = reclaimed + 1
            end
          end
        end
      end
    end
  end
end
local read, got = {}, #out
for li = 1, 3 do
  if got >= want then break end
  -- An empty lane has nothing to read (XLEN is O(1); XREADGROUP is not cheap). On a reclaim
  -- round every lane is read, which creates missing groups.
  if ARGV[4] == '1' or redis.call('XLEN', KEYS[li]) > 0 then
    local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', 'ck', ARGV[1], 'COUNT', want - got,
      'STREAMS', KEYS[li], '>')
    if not ok then
      ensure_group(KEYS[li])
      ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', 'ck', ARGV[1], 'COUNT', want - got,
        'STREAMS', KEYS[li], '>')
    end
    if ok and r then
      local es = r[1][2]
      -- A job's first field is its id ('i'); anything else is not a job: settled here.
      local jobs = es
      for _, e in ipairs(es) do
        if not e[2] or e[2][1] ~= 'i' then
          jobs = {}
          for _, x in ipairs(es) do
            if x[2] and x[2][1] == 'i' then
              jobs[#jobs + 1] = x
            else
              redis.call('XACK', KEYS[li], 'ck', x[1])
              redis.call('XDEL', KEYS[li], x[1])
            end
          end
          break
        end
      end
      read[#read + 1] = li
      read[#read + 1] = jobs
      got = got + #jobs
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
return {out, reclaimed, dead, nxt[2] or '-1', n2s(now), acked, read}
"#;

const ACK_FN: &str = r#"
-- Acks the jobs in ARGV[from..], grouped by the client (`AckPlan`): per lane and consumer,
-- `lane (1..3), consumer, n`, then the group's n entry ids, ascending and without repeats.
-- Returns per id, in that order, 1 (acked) or 0 (the lease is gone: reclaimed, or settled
-- already). The owner check is one XPENDING per group over its id range (the consumer's own
-- pending list), then one XACK per lane and 1000 ids; settled entries are trimmed.
local function sid(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then return nil end
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local am, aq = sid(a)
  local bm, bq = sid(b)
  return am > bm or (am == bm and aq > bq)
end
local function ack_batch(from)
  local out, done, top = {}, {{}, {}, {}}, {}
  local j = from
  while j + 2 <= #ARGV do
    local li, c, n = tonumber(ARGV[j]), ARGV[j + 1], tonumber(ARGV[j + 2])
    local first, last = j + 3, j + 2 + n
    local cap = n + 1000
    local p = redis.call('XPENDING', KEYS[li], 'ck', ARGV[first], ARGV[last], cap, c)
    local owned = {}
    for _, x in ipairs(p) do owned[x[1]] = true end
    local full = #p >= cap
    local d = done[li]
    local hi = nil
    for k = first, last do
      local id = ARGV[k]
      local mine = owned[id]
      if not mine and full then
        -- More pending entries in the range than fetched: look at this one alone.
        mine = #redis.call('XPENDING', KEYS[li], 'ck', id, id, 1, c) > 0
      end
      if mine then
        d[#d + 1] = id
        hi = id
        out[#out + 1] = 1
      else
        out[#out + 1] = 0
      end
    end
    if hi and (not top[li] or newer(hi, top[li])) then top[li] = hi end
    j = last + 1
  end
  for li = 1, 3 do
    local d = done[li]
    for k = 1, #d, 1000 do
      redis.call('XACK', KEYS[li], 'ck', unpack(d, k, math.min(k + 999, #d)))
    end
    if #d > 0 then
      -- Every entry older than the oldest pending one was delivered and settled: trim them
      -- in one XTRIM (sequential, whole nodes at once) and XDEL only the acked entries at or
      -- after it (XDEL seeks each id: it was the most expensive command of an ack).
      local p = redis.call('XPENDING', KEYS[li], 'ck', '-', '+', 1)
      if p[1] then
        local oldest = p[1][1]
        redis.call('XTRIM', KEYS[li], 'MINID', oldest)
        if not newer(oldest, top[li]) then
          local pm, pq = sid(oldest)
          local rest = {}
          for _, id in ipairs(d) do
            local m, q = sid(id)
            if m > pm or (m == pm and q >= pq) then rest[#rest + 1] = id end
          end
          for k = 1, #rest, 1000 do
            redis.call('XDEL', KEYS[li], unpack(rest, k, math.min(k + 999, #rest)))
          end
        end
      else
        -- Nothing pending: everything up to the newest acked entry is settled.
        local hm, hq = sid(top[li])
        redis.call('XTRIM', KEYS[li], 'MINID', n2s(hm) .. '-' .. n2s(hq + 1))
      end
    end
  end
  return out
end
"#;

const ACK: &str = r#"
-- Any number of acks in one call (ack is a batch of one).
-- KEYS: lane h, n, l; ARGV: the groups of ack_batch
return ack_batch(1)
"#;

const EXTEND: &str = r#"
-- KEYS: lane; ARGV: entry id, consumer
local p = redis.call('XPENDING', KEYS[1], 'ck', ARGV[1], ARGV[1], 1, ARGV[2])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], 'ck', ARGV[2], 0, ARGV[1], 'JUSTID')
return 1
"#;

const RELEASE_FN: &str = r#"
local function release(key, id, deliveries)
  local e = redis.call('XRANGE', key, id, id)
  redis.call('XACK', key, 'ck', id)
  redis.call('XDEL', key, id)
  if #e == 0 then return end
  local h = fields(e[1][2])
  if h.w then return end
  redis.call('XADD', key, '*', unpack(job_args(h, n2s(tonumber(h.a) + deliveries - 1))))
end
"#;

const RELEASE: &str = r#"
-- KEYS: lane; ARGV: entry id, consumer
local p = redis.call('XPENDING', KEYS[1], 'ck', ARGV[1], ARGV[1], 1, ARGV[2])
if #p == 0 then return 0 end
release(KEYS[1], ARGV[1], tonumber(p[1][4]))
return 1
"#;

const SHUTDOWN: &str = r#"
-- KEYS: lanes h, n, l, wake stream; ARGV: consumer
local n = 0
pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[4], 'ck', ARGV[1])
for li = 1, 3 do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[li], 'ck', '-', '+', 100000, ARGV[1])
  if ok then
    for _, x in ipairs(p) do
      release(KEYS[li], x[1], tonumber(x[4]))
      n = n + 1
    end
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[li], 'ck', ARGV[1])
  end
end
return n
"#;

const FAIL: &str = r#"
-- KEYS: lane, delayed, dead, wake stream
-- ARGV: entry id, consumer, error, jitter draw, dead maxlen, lane index
local p = redis.call('XPENDING', KEYS[1], 'ck', ARGV[1], ARGV[1], 1, ARGV[2])
if #p == 0 then return {-1} end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
redis.call('XACK', KEYS[1], 'ck', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if #e == 0 then return {-1} end
local h = fields(e[1][2])
local attempt = tonumber(h.a) + tonumber(p[1][4]) - 1
local now = now_ms()
h.e = ARGV[3]
if attempt >= tonumber(h.m) then
  local a = job_args(h, n2s(attempt))
  a[#a + 1] = 'q'; a[#a + 1] = ARGV[6]
  a[#a + 1] = 'f'; a[#a + 1] = n2s(now)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(a))
  return {0}
end
local parts = {}
for s in string.gmatch(h.b, '[^,]+') do parts[#parts + 1] = s end
local d
if parts[1] == 'f' then
  d = tonumber(parts[2])
else
  d = tonumber(parts[2]) * (2 ^ math.min(attempt - 1, 40))
  if d > tonumber(parts[3]) then d = tonumber(parts[3]) end
  if parts[4] == '1' then d = d / 2 + (d / 2) * tonumber(ARGV[4]) end
end
local at = now + math.floor(d)
local f = {tonumber(ARGV[6])}
for _, v in ipairs(job_args(h, n2s(attempt + 1))) do f[#f + 1] = v end
local m = cmsgpack.pack(f)
redis.call('ZADD', KEYS[2], at, m)
local first = redis.call('ZRANGE', KEYS[2], 0, 0)
if first[1] == m then redis.call('XADD', KEYS[4], 'MAXLEN', '1', '*', 'w', '1') end
return {1, n2s(at), attempt + 1}
"#;

const STATS: &str = r#"
-- KEYS: lanes h, n, l, delayed, dead
local now = now_ms()
local waiting, inflight, oldest = 0, 0, -1
for li = 1, 3 do
  if redis.call('EXISTS', KEYS[li]) == 1 then
    local len = redis.call('XLEN', KEYS[li])
    local pending, last = 0, '0-0'
    local ok, g = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[li])
    if ok then
      for _, grp in ipairs(g) do
        local h = fields(grp)
        if h.name == 'ck' then pending = tonumber(h.pending); last = h['last-delivered-id'] end
      end
    end
    local undelivered = redis.call('XRANGE', KEYS[li], '(' .. last, '+', 'COUNT', 8)
    for _, e in ipairs(undelivered) do
      local h = fields(e[2])
      if h.t then
        local age = now - tonumber(h.t)
        if age > oldest then oldest = age end
        break
      end
    end
    waiting = waiting + len - pending
    inflight = inflight + pending
  end
end
local dead = 0
if redis.call('EXISTS', KEYS[5]) == 1 then dead = redis.call('XLEN', KEYS[5]) end
return {waiting, inflight, redis.call('ZCARD', KEYS[4]), dead, n2s(oldest)}
"#;

const REDRIVE: &str = r#"
-- KEYS: lanes h, n, l, dead; ARGV: limit
local es = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', tonumber(ARGV[1]))
for _, e in ipairs(es) do
  local h = fields(e[2])
  local li = tonumber(h.q) or 2
  redis.call('XADD', KEYS[li], '*', unpack(job_args(h, '1')))
  redis.call('XDEL', KEYS[4], e[1])
end
return #es
"#;

struct Scripts {
    enqueue: Script,
    reserve: Script,
    ack: Script,
    extend: Script,
    release: Script,
    shutdown: Script,
    fail: Script,
    stats: Script,
    redrive: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            enqueue: script(ENQUEUE),
            reserve: script(&format!("{ACK_FN}\n{RESERVE}")),
            ack: script(&format!("{ACK_FN}\n{ACK}")),
            extend: script(EXTEND),
            release: script(&format!("{RELEASE_FN}\n{RELEASE}")),
            shutdown: script(&format!("{RELEASE_FN}\n{SHUTDOWN}")),
            fail: script(FAIL),
            stats: script(STATS),
            redrive: script(REDRIVE),
        }
    }
}

pub(crate) struct RedisQueue {
    options: QueueOptions,
    link: Arc<Link>,
    /// Synchronous connections for blocking callers' own threads ([`Srv`]).
    sync: Option<Arc<SyncPool>>,
    target: Target,
    scripts: Arc<Scripts>,
}

struct Keys {
    lanes: [String; 3],
    delayed: String,
    dead: String,
    wake: String,
    base: String,
}

fn keys(ns: &str, queue: &str) -> Keys {
    let base = format!("{ns}:q:{{{queue}}}:");
    Keys {
        lanes: [format!("{base}h"), format!("{base}n"), format!("{base}l")],
        delayed: format!("{base}d"),
        dead: format!("{base}x"),
        wake: format!("{base}w"),
        base,
    }
}

fn map_err(e: redis::RedisError, address: &str) -> Error {
    crate::cache::redis::map_err(e, address)
}

/// Where a request goes: on a blocking caller's own thread (C, PHP, sync Python), a
/// synchronous connection of the pool, written and read on that thread like phpredis or
/// redis-py do (no hand-off to the runtime and back); everywhere else the shared multiplexed
/// link, where concurrent requests are pipelined.
#[derive(Clone, Copy)]
struct Srv<'a> {
    link: &'a Arc<Link>,
    sync: Option<&'a SyncPool>,
    address: &'a str,
}

impl Srv<'_> {
    fn inline(&self) -> Option<&SyncPool> {
        self.sync.filter(|_| crate::blocking::inline_io_allowed())
    }
}

/// A request the queue sends ([`Srv`]): a script invocation, a command or a pipeline.
trait Request: Sync {
    fn sync_query<T: FromRedisValue>(&self, c: &mut redis::Connection) -> redis::RedisResult<T>;
    fn async_query<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        c: &'a mut LinkConnection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'a;

    /// Sends the request and reads its answer; fails as the connection does (`unavailable`,
    /// `timeout`, `backend`).
    fn run_on<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        srv: Srv<'a>,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'a
    where
        Self: Sized,
    {
        async move {
            if let Some(pool) = srv.inline() {
                return pool.with(srv.address, |c| self.sync_query(c));
            }
            let mut c = LinkConnection(srv.link.clone());
            self.async_query(&mut c)
                .await
                .map_err(|e| map_err(e, srv.address))
        }
    }
}

impl Request for redis::ScriptInvocation<'_> {
    fn sync_query<T: FromRedisValue>(&self, c: &mut redis::Connection) -> redis::RedisResult<T> {
        self.invoke(c)
    }
    fn async_query<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        c: &'a mut LinkConnection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'a {
        self.invoke_async(c)
    }
}

/// `Request` for the types whose calls are `query` / `query_async`.
macro_rules! request_by_query {
    ($($t:ty),*) => {$(
        impl Request for $t {
            fn sync_query<T: FromRedisValue>(
                &self,
                c: &mut redis::Connection,
            ) -> redis::RedisResult<T> {
                self.query(c)
            }
            fn async_query<'a, T: FromRedisValue + Send + 'a>(
                &'a self,
                c: &'a mut LinkConnection,
            ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'a {
                self.query_async(c)
            }
        }
    )*};
}

request_by_query!(redis::Cmd, redis::Pipeline);

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text_of(v: &Value) -> Option<String> {
    bytes_of(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text_of(other).and_then(|s| s.parse().ok()),
    }
}

fn array_of(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

fn protocol(what: &str) -> Error {
    Error::Backend(format!("unexpected reply to {what}"))
}

/// A receipt: `<lane 1-3><entry id>@<consumer>`.
fn receipt(lane: usize, entry: &str, consumer: &str) -> String {
    format!("{lane}{entry}@{consumer}")
}

fn parse_receipt(r: &str) -> Result<(usize, &str, &str)> {
    let bad = || Error::invalid("receipt", "not a receipt of this queue's Redis backend");
    let lane = match r.as_bytes().first() {
        Some(b @ b'1'..=b'3') => usize::from(b - b'0'),
        _ => return Err(bad()),
    };
    let (entry, consumer) = r[1..].split_once('@').ok_or_else(bad)?;
    let ok = !entry.is_empty()
        && entry.len() <= 41
        && entry.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && !consumer.is_empty()
        && consumer.len() <= 64;
    if !ok {
        return Err(bad());
    }
    Ok((lane, entry, consumer))
}

/// Parses a batch of receipts; a malformed one names `receipts[i]` (or `receipt` alone).
fn parse_receipts<'a>(receipts: &[&'a str]) -> Result<Vec<(usize, &'a str, &'a str)>> {
    receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            parse_receipt(r).map_err(|e| {
                if receipts.len() == 1 {
                    e
                } else {
                    Error::invalid(
                        format!("receipts[{i}]"),
                        "not a receipt of this queue's Redis backend",
                    )
                }
            })
        })
        .collect()
}

/// A job from a lane's stream entry (`lane`: 0..3, `fields`: the entry's flat field list),
/// or `None` when the entry is not a job.
fn entry_job(lane: usize, id: &str, fields: &[Value], queue: &str, consumer: &str) -> Option<Job> {
    let get = |n: &str| {
        fields
            .chunks(2)
            .find(|c| c.len() == 2 && bytes_of(&c[0]) == Some(n.as_bytes()))
            .map(|c| &c[1])
    };
    if get("w").is_some() {
        return None;
    }
    Some(Job {
        id: get("i").and_then(text_of)?,
        queue: queue.to_string(),
        payload: Bytes::copy_from_slice(get("p").and_then(bytes_of)?),
        attempt: get("a").and_then(int_of)? as u32,
        max_attempts: get("m").and_then(int_of)? as u32,
        enqueued_at_ms: get("t").and_then(int_of)? as u64,
        priority: Priority::from_index(lane as i64)?,
        last_error: get("e").and_then(text_of),
        receipt: receipt(lane + 1, id, consumer),
    })
}

/// Receipts grouped as the scripts' `ack_batch` takes them: per lane and consumer, entry ids
/// ascending and without repeats (so the server needs no parsing or sorting).
struct AckPlan<'a> {
    /// `(lane 1..3, consumer, ids)`.
    groups: Vec<(usize, &'a str, Vec<&'a str>)>,
    /// Per receipt, its position in the script's answer; `None` (answered `false`): a repeat
    /// of an earlier receipt, or an id that is not a stream id.
    slots: Vec<Option<usize>>,
    /// How many ids are sent.
    sent: usize,
}

impl<'a> AckPlan<'a> {
    fn new(acks: &[(usize, &'a str, &'a str)]) -> AckPlan<'a> {
        let mut keyed: Vec<(usize, &str, (u64, u64), usize)> = acks
            .iter()
            .enumerate()
            .filter_map(|(i, (lane, id, c))| stream_id(id).map(|n| (*lane, *c, n, i)))
            .collect();
        // Lane, consumer, id, then the receipt's index: a repeat sorts after its first.
        keyed.sort_unstable();
        let mut plan = AckPlan {
            groups: Vec::new(),
            slots: vec![None; acks.len()],
            sent: 0,
        };
        let mut prev: Option<(usize, &str, (u64, u64))> = None;
        for (lane, c, n, i) in keyed {
            if prev == Some((lane, c, n)) {
                continue;
            }
            let same_group = prev.is_some_and(|(l, pc, _)| l == lane && pc == c);
            if !same_group {
                plan.groups.push((lane, c, Vec::new()));
            }
            prev = Some((lane, c, n));
            if let Some(g) = plan.groups.last_mut() {
                g.2.push(acks[i].1);
            }
            plan.slots[i] = Some(plan.sent);
            plan.sent += 1;
        }
        plan
    }

    fn push_args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for (lane, consumer, ids) in &self.groups {
            inv.arg(*lane).arg(*consumer).arg(ids.len());
            for id in ids {
                inv.arg(*id);
            }
        }
    }

    /// Per receipt, whether it was acked, from the script's answer.
    fn answers(&self, v: Option<&Value>) -> Result<Vec<bool>> {
        let a = v.map(array_of).unwrap_or(&[]);
        if a.len() != self.sent {
            return Err(protocol("ack"));
        }
        let sent = a
            .iter()
            .map(|x| int_of(x).map(|n| n == 1).ok_or_else(|| protocol("ack")))
            .collect::<Result<Vec<bool>>>()?;
        Ok(self
            .slots
            .iter()
            .map(|s| s.is_some_and(|k| sent[k]))
            .collect())
    }
}

/// A stream entry id `ms-seq` as numbers (`None`: not one).
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One job row of the reserve script: `{lane, entry id, attempt, id, payload, max, t, e}`.
fn job_of(row: &Value, queue: &str, consumer: &str) -> Option<Job> {
    let r = array_of(row);
    if r.len() < 8 {
        return None;
    }
    let lane = int_of(&r[0])? as usize;
    let entry = text_of(&r[1])?;
    let err = text_of(&r[7]).filter(|e| !e.is_empty());
    Some(Job {
        id: text_of(&r[3])?,
        queue: queue.to_string(),
        payload: Bytes::copy_from_slice(bytes_of(&r[4])?),
        attempt: int_of(&r[2])? as u32,
        max_attempts: int_of(&r[5])? as u32,
        enqueued_at_ms: int_of(&r[6])? as u64,
        priority: Priority::from_index(lane as i64 - 1)?,
        last_error: err,
        receipt: receipt(lane, &entry, consumer),
    })
}

impl RedisQueue {
    pub(crate) fn new(
        address: &str,
        options: QueueOptions,
        connection: &ConnectionSettings,
    ) -> Result<RedisQueue> {
        let target = prepare(address, connection, Resolution::Custom)?;
        let link = Arc::new(Link::new(&target, CONNECT_TIMEOUT, RESPONSE_TIMEOUT, SLACK));
        let sync = SyncPool::for_target(
            &target,
            &RedisOptions::default().with_timeouts(CONNECT_TIMEOUT, RESPONSE_TIMEOUT),
        )?;
        Ok(RedisQueue {
            options,
            link,
            sync,
            target,
            scripts: Arc::new(Scripts::new()),
        })
    }

    fn srv(&self) -> Srv<'_> {
        Srv {
            link: &self.link,
            sync: self.sync.as_deref(),
            address: &self.target.display,
        }
    }

    /// One script call for the whole batch (`ENQUEUE`): a bulk enqueue is one round trip and
    /// one script run on the server, not one per job.
    async fn enqueue_batch(
        &self,
        queue: &str,
        jobs: &[(&[u8], &NewJob)],
    ) -> Result<Vec<(String, bool)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let k = keys(&self.options.namespace, queue);
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(&k.lanes[0])
            .key(&k.lanes[1])
            .key(&k.lanes[2])
            .key(&k.delayed)
            .key(&k.wake);
        let mut idem_keys = 5usize;
        let now = now_ms();
        // Jobs of one batch nearly always share their backoff: encoded once.
        let mut backoff: Option<(super::Backoff, String)> = None;
        for (payload, job) in jobs {
            if backoff.as_ref().is_none_or(|(b, _)| *b != job.backoff) {
                backoff = Some((job.backoff, job.backoff.encode()));
            }
            let encoded = backoff.as_ref().map_or("", |(_, e)| e.as_str());
            let lane = job.priority.index();
            let delay = job.due_ms.saturating_sub(now);
            let (index, ttl) = match &job.idempotency {
                Some((key, t)) => {
                    inv.key(format!("{}u:{key}", k.base));
                    idem_keys += 1;
                    (idem_keys, t.as_millis().max(1))
                }
                None => (0, 0),
            };
            inv.arg(super::new_job_id())
                .arg(*payload)
                .arg(job.max_attempts)
                .arg(encoded)
                .arg(delay)
                .arg(lane + 1)
                .arg(index)
                .arg(ttl as u64);
        }
        let v: Value = inv.run_on(self.srv()).await?;
        let a = array_of(&v);
        if a.len() != jobs.len() * 2 {
            return Err(protocol("enqueue"));
        }
        a.chunks(2).map(parse_enqueued).collect()
    }

    pub(crate) async fn enqueue(
        &self,
        queue: &str,
        payload: &[u8],
        job: &NewJob,
    ) -> Result<(String, bool)> {
        self.enqueue_batch(queue, &[(payload, job)])
            .await?
            .pop()
            .ok_or_else(|| protocol("enqueue"))
    }

    pub(crate) async fn enqueue_many(
        &self,
        queue: &str,
        jobs: &[(Bytes, NewJob)],
    ) -> Result<Vec<(String, bool)>> {
        let batch: Vec<(&[u8], &NewJob)> = jobs.iter().map(|(p, j)| (&p[..], j)).collect();
        self.enqueue_batch(queue, &batch).await
    }

    pub(crate) fn consumer(&self, queue: &str) -> Result<RedisConsumer> {
        Ok(RedisConsumer {
            queue: queue.to_string(),
            name: super::new_consumer_name(),
            keys: keys(&self.options.namespace, queue),
            options: self.options.clone(),
            link: self.link.clone(),
            sync: self.sync.clone(),
            target: self.target.clone(),
            scripts: self.scripts.clone(),
            blocking: crate::fork::PerProcess::new(),
            last_reclaim_ms: AtomicU64::new(0),
        })
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let k = keys(&self.options.namespace, queue);
        let v: Value = self
            .scripts
            .stats
            .key(&k.lanes[0])
            .key(&k.lanes[1])
            .key(&k.lanes[2])
            .key(&k.delayed)
            .key(&k.dead)
            .run_on(self.srv())
            .await?;
        let a = array_of(&v);
        let n = |i: usize| a.get(i).and_then(int_of).ok_or_else(|| protocol("stats"));
        let oldest = n(4)?;
        Ok(QueueStats {
            waiting: n(0)?.max(0) as u64,
            in_flight: n(1)?.max(0) as u64,
            delayed: n(2)?.max(0) as u64,
            dead: n(3)?.max(0) as u64,
            oldest_age_ms: (oldest >= 0).then_some(oldest as u64),
        })
    }

    pub(crate) async fn dead_jobs(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>> {
        let k = keys(&self.options.namespace, queue);
        let v: Value = redis::cmd("XRANGE")
            .arg(&k.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .run_on(self.srv())
            .await?;
        let mut out = Vec::new();
        for e in array_of(&v) {
            let e = array_of(e);
            let Some(fields) = e.get(1) else { continue };
            let f = array_of(fields);
            let get = |name: &str| {
                f.chunks(2)
                    .find(|c| c.len() == 2 && bytes_of(&c[0]) == Some(name.as_bytes()))
                    .map(|c| &c[1])
            };
            let num = |name: &str| get(name).and_then(int_of).unwrap_or(0);
            out.push(DeadJob {
                id: get("i").and_then(text_of).unwrap_or_default(),
                payload: Bytes::copy_from_slice(get("p").and_then(bytes_of).unwrap_or(b"")),
                attempts: num("a") as u32,
                last_error: get("e").and_then(text_of).unwrap_or_default(),
                failed_at_ms: num("f") as u64,
                enqueued_at_ms: num("t") as u64,
                max_attempts: num("m") as u32,
                priority: Priority::from_index(num("q") - 1).unwrap_or_default(),
                backoff: get("b")
                    .and_then(text_of)
                    .and_then(|b| Backoff::decode(&b))
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    pub(crate) async fn redrive(&self, queue: &str, limit: usize) -> Result<u64> {
        let k = keys(&self.options.namespace, queue);
        let n: i64 = self
            .scripts
            .redrive
            .key(&k.lanes[0])
            .key(&k.lanes[1])
            .key(&k.lanes[2])
            .key(&k.dead)
            .arg(limit)
            .run_on(self.srv())
            .await?;
        Ok(n.max(0) as u64)
    }

    pub(crate) async fn purge(&self, queue: &str) -> Result<()> {
        let k = keys(&self.options.namespace, queue);
        let _: i64 = redis::cmd("DEL")
            .arg(&k.lanes[0])
            .arg(&k.lanes[1])
            .arg(&k.lanes[2])
            .arg(&k.delayed)
            .arg(&k.dead)
            .arg(&k.wake)
            .run_on(self.srv())
            .await?;
        Ok(())
    }
}

fn parse_enqueued(pair: &[Value]) -> Result<(String, bool)> {
    let id = pair
        .first()
        .and_then(text_of)
        .ok_or_else(|| protocol("enqueue"))?;
    let fresh = pair
        .get(1)
        .and_then(int_of)
        .ok_or_else(|| protocol("enqueue"))?
        == 1;
    Ok((id, fresh))
}

type BlockingPool = Arc<std::sync::Mutex<Vec<MultiplexedConnection>>>;

pub(crate) struct RedisConsumer {
    queue: String,
    name: String,
    keys: Keys,
    options: QueueOptions,
    link: Arc<Link>,
    sync: Option<Arc<SyncPool>>,
    target: Target,
    scripts: Arc<Scripts>,
    /// Connections for blocking reads: one per concurrent reserve (a blocked connection
    /// cannot serve anything else).
    blocking: crate::fork::PerProcess<BlockingPool>,
    /// When this consumer last looked for expired leases (ms).
    last_reclaim_ms: AtomicU64,
}

/// One run of the reserve script: the jobs, reclaimed + (dead-lettered << 32), the wait
/// until the next delayed job (ms), and per receipt acked first whether it was acked.
struct Reserved {
    jobs: Vec<Job>,
    counts: u64,
    wait: Option<u64>,
    acked: Vec<bool>,
}

enum Read {
    Jobs(Vec<Job>),
    /// Only wake-up markers, or the group was missing: run the reserve script again.
    Rearm,
    Nothing,
}

impl RedisConsumer {
    fn srv(&self) -> Srv<'_> {
        Srv {
            link: &self.link,
            sync: self.sync.as_deref(),
            address: &self.target.display,
        }
    }

    fn address(&self) -> &str {
        &self.target.display
    }

    fn reclaim_every(&self) -> u64 {
        (self.options.visibility_timeout.as_millis() as u64 / 2).max(5)
    }

    async fn run_reserve(
        &self,
        max: usize,
        reclaim: bool,
        acks: &[(usize, &str, &str)],
    ) -> Result<Reserved> {
        let k = &self.keys;
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.key(&k.lanes[0])
            .key(&k.lanes[1])
            .key(&k.lanes[2])
            .key(&k.delayed)
            .key(&k.dead)
            .key(&k.wake)
            .arg(&self.name)
            .arg(max)
            .arg(self.options.visibility_timeout.as_millis() as u64)
            .arg(if reclaim { "1" } else { "0" })
            .arg(self.options.dead_history);
        let plan = AckPlan::new(acks);
        plan.push_args(&mut inv);
        let v: Value = inv.run_on(self.srv()).await?;
        let a = array_of(&v);
        let mut jobs: Vec<Job> = a
            .first()
            .map(array_of)
            .unwrap_or(&[])
            .iter()
            .filter_map(|row| job_of(row, &self.queue, &self.name))
            .collect();
        // Read entries: per lane read, the lane (1..3) and XREADGROUP's entries.
        for pair in a.get(6).map(array_of).unwrap_or(&[]).chunks(2) {
            let [lane, entries] = pair else {
                return Err(protocol("reserve"));
            };
            let lane = match int_of(lane) {
                Some(l @ 1..=3) => l as usize - 1,
                _ => return Err(protocol("reserve")),
            };
            for e in array_of(entries) {
                let e = array_of(e);
                let (Some(id), Some(f)) = (e.first().and_then(text_of), e.get(1)) else {
                    return Err(protocol("reserve"));
                };
                // An entry with unreadable fields stays pending: reclaimed, then dead-lettered.
                if let Some(job) = entry_job(lane, &id, array_of(f), &self.queue, &self.name) {
                    jobs.push(job);
                }
            }
        }
        let reclaimed = a.get(1).and_then(int_of).unwrap_or(0).max(0) as u64;
        let dead = a.get(2).and_then(int_of).unwrap_or(0).max(0) as u64;
        if dead > 0 {
            tracing::warn!(target: "clusterkit::queue", queue = %self.queue, jobs = dead,
                "dead-lettered jobs whose lease expired on their last attempt");
        }
        let next_due = a.get(3).and_then(int_of).filter(|d| *d >= 0);
        let server_now = a.get(4).and_then(int_of).unwrap_or(0);
        // The wait until the next delayed job, by the server's clock.
        let wait = next_due.map(|d| (d - server_now).max(0) as u64);
        let acked = plan.answers(a.get(5))?;
        Ok(Reserved {
            jobs,
            counts: reclaimed + (dead << 32),
            wait,
            acked,
        })
    }

    fn pool(&self) -> Result<BlockingPool> {
        self.blocking.get_or_try_init(|| Ok(Arc::default()))
    }

    async fn blocking_conn(&self) -> Result<MultiplexedConnection> {
        let pool = self.pool()?;
        if let Some(c) = pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let mut config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        if let Some(r) = &self.target.resolver {
            config = config.set_dns_resolver(r.clone());
        }
        let c = tokio::time::timeout(
            CONNECT_TIMEOUT + SLACK,
            self.target
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| Error::Timeout(format!("{}: connecting took too long", self.address())))?
        .map_err(|e| map_err(e, self.address()))?;
        crate::metrics::counters::REDIS
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }

    async fn block_read(&self, max: usize, block: Duration) -> Result<Read> {
        let mut c = self.blocking_conn().await?;
        let k = &self.keys;
        let block_ms = block.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&k.lanes[0])
            .arg(&k.lanes[1])
            .arg(&k.lanes[2])
            .arg(&k.wake)
            .arg(">")
            .arg(">")
            .arg(">")
            .arg(">");
        let r =
            tokio::time::timeout(block + RESPONSE_TIMEOUT, cmd.query_async::<Value>(&mut c)).await;
        let v = match r {
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "{}: no answer to a blocking read",
                    self.address()
                )))
            }
            Ok(Err(e)) => {
                if e.code() == Some("NOGROUP") {
                    // The next reserve script creates the groups (a new queue, or a server
                    // that lost its data).
                    self.last_reclaim_ms.store(0, Ordering::Relaxed);
                    self.put_back(c);
                    return Ok(Read::Rearm);
                }
                return Err(map_err(e, self.address()));
            }
            Ok(Ok(v)) => v,
        };
        self.put_back(c);
        if matches!(v, Value::Nil) {
            return Ok(Read::Nothing);
        }
        let mut jobs = Vec::new();
        let mut markers: Vec<(usize, String)> = Vec::new();
        for stream in array_of(&v) {
            let s = array_of(stream);
            let (Some(name), Some(entries)) = (s.first().and_then(text_of), s.get(1)) else {
                continue;
            };
            let lane = if name == k.wake {
                3
            } else if let Some(lane) = k.lanes.iter().position(|l| *l == name) {
                lane
            } else {
                continue;
            };
            for e in array_of(entries) {
                let e = array_of(e);
                let (Some(id), Some(f)) = (e.first().and_then(text_of), e.get(1)) else {
                    continue;
                };
                let job = if lane == 3 {
                    None
                } else {
                    entry_job(lane, &id, array_of(f), &self.queue, &self.name)
                };
                match job {
                    Some(j) => jobs.push(j),
                    None => markers.push((lane, id)),
                }
            }
        }
        if !markers.is_empty() {
            let mut pipe = redis::pipe();
            for (lane, id) in &markers {
                let key = k.lanes.get(*lane).unwrap_or(&k.wake);
                pipe.cmd("XACK").arg(key).arg(GROUP).arg(id).ignore();
                pipe.cmd("XDEL").arg(key).arg(id).ignore();
            }
            let _: () = pipe.run_on(self.srv()).await?;
        }
        if jobs.is_empty() {
            return Ok(Read::Rearm);
        }
        jobs.sort_by_key(|j| j.priority.index());
        if jobs.len() > max {
            // Several lanes answered at once: keep the highest, give the rest back.
            for j in jobs.split_off(max) {
                let _ = self.release(&j.receipt).await;
            }
        }
        Ok(Read::Jobs(jobs))
    }

    fn put_back(&self, c: MultiplexedConnection) {
        if let Ok(pool) = self.pool() {
            let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() < 64 {
                p.push(c);
            }
        }
    }

    pub(crate) async fn reserve(
        &self,
        max: usize,
        timeout: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        counters: &QueueCounters,
    ) -> Result<(Vec<Job>, u64)> {
        let (_, jobs, reclaimed) = self
            .ack_and_reserve(&[], max, timeout, stop, counters)
            .await?;
        Ok((jobs, reclaimed))
    }

    /// Acks `receipts` and reserves up to `max` jobs: the acks travel with the first run of
    /// the reserve script (one round trip and one script run for both); then, when no job
    /// waits, the reserve blocks as [`RedisConsumer::reserve`] does. Returns per receipt
    /// whether it was acked, the jobs, and how many were reclaimed.
    pub(crate) async fn ack_and_reserve(
        &self,
        receipts: &[&str],
        max: usize,
        timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        counters: &QueueCounters,
    ) -> Result<(Vec<bool>, Vec<Job>, u64)> {
        let parsed = parse_receipts(receipts)?;
        let mut acks: &[(usize, &str, &str)] = &parsed;
        let mut acked = Vec::new();
        let deadline = Instant::now() + timeout;
        // After the deadline, one more look when a delayed job fell due meanwhile (a caller
        // descheduled past both would otherwise return empty with a due job unpromoted).
        let mut last_look = false;
        loop {
            if *stop.borrow() {
                if !acks.is_empty() {
                    acked = self.ack_parsed(acks).await?;
                }
                return Ok((acked, Vec::new(), 0));
            }
            let now = now_ms();
            let last = self.last_reclaim_ms.load(Ordering::Relaxed);
            let reclaim = now.saturating_sub(last) >= self.reclaim_every();
            if reclaim {
                self.last_reclaim_ms.store(now, Ordering::Relaxed);
            }
            let r = self.run_reserve(max, reclaim, acks).await?;
            if !acks.is_empty() {
                acked = r.acked;
                acks = &[];
            }
            let (jobs, next_due) = (r.jobs, r.wait);
            let reclaimed = r.counts & 0xffff_ffff;
            let dead = r.counts >> 32;
            QueueCounters::add(&counters.dead, dead);
            if !jobs.is_empty() {
                return Ok((acked, jobs, reclaimed));
            }
            let script_done = Instant::now();
            // Block until a job comes, the next delayed job is due, leases should be
            // checked again, or the caller's time runs out: one blocking read per `block`.
            loop {
                let now = Instant::now();
                if *stop.borrow() {
                    return Ok((acked, Vec::new(), 0));
                }
                if now >= deadline {
                    let due = next_due.is_some_and(|d| {
                        Duration::from_millis(d) <= now.duration_since(script_done)
                    });
                    if due && !last_look && !timeout.is_zero() {
                        last_look = true;
                        break;
                    }
                    return Ok((acked, Vec::new(), 0));
                }
                let mut wait = (deadline - now).min(self.options.block);
                let mut timer = false;
                if let Some(d) = next_due {
                    let left =
                        Duration::from_millis(d).saturating_sub(now.duration_since(script_done));
                    if left <= wait {
                        wait = left;
                        timer = true;
                    }
                }
                let since = now_ms().saturating_sub(self.last_reclaim_ms.load(Ordering::Relaxed));
                let left = Duration::from_millis(self.reclaim_every().saturating_sub(since));
                if left <= wait {
                    wait = left;
                    timer = true;
                }
                let wait = wait.max(Duration::from_millis(1));
                QueueCounters::inc(&counters.blocking_reads);
                let read = tokio::select! {
                    r = self.block_read(max, wait) => r?,
                    _ = stop.changed() => return Ok((acked, Vec::new(), 0)),
                };
                match read {
                    Read::Jobs(jobs) => return Ok((acked, jobs, 0)),
                    Read::Rearm => break,
                    Read::Nothing if timer => break,
                    Read::Nothing => {}
                }
            }
        }
    }

    /// Acks `receipts` in one script run: per receipt, whether it was acked (`false`: the
    /// lease is gone). A malformed receipt fails the call (nothing acked), naming its index.
    pub(crate) async fn ack_many(&self, receipts: &[&str]) -> Result<Vec<bool>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let parsed = parse_receipts(receipts)?;
        self.ack_parsed(&parsed).await
    }

    async fn ack_parsed(&self, acks: &[(usize, &str, &str)]) -> Result<Vec<bool>> {
        let mut inv = self.scripts.ack.prepare_invoke();
        inv.key(&self.keys.lanes[0])
            .key(&self.keys.lanes[1])
            .key(&self.keys.lanes[2]);
        let plan = AckPlan::new(acks);
        plan.push_args(&mut inv);
        let v: Value = inv.run_on(self.srv()).await?;
        plan.answers(Some(&v))
    }

    pub(crate) async fn extend(&self, r: &str) -> Result<bool> {
        let (lane, entry, consumer) = parse_receipt(r)?;
        let n: i64 = self
            .scripts
            .extend
            .key(&self.keys.lanes[lane - 1])
            .arg(entry)
            .arg(consumer)
            .run_on(self.srv())
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn release(&self, r: &str) -> Result<bool> {
        let (lane, entry, consumer) = parse_receipt(r)?;
        let n: i64 = self
            .scripts
            .release
            .key(&self.keys.lanes[lane - 1])
            .arg(entry)
            .arg(consumer)
            .run_on(self.srv())
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn fail(
        &self,
        r: &str,
        error: &str,
        draw: f64,
    ) -> Result<Option<FailOutcome>> {
        let (lane, entry, consumer) = parse_receipt(r)?;
        let k = &self.keys;
        let v: Value = self
            .scripts
            .fail
            .key(&k.lanes[lane - 1])
            .key(&k.delayed)
            .key(&k.dead)
            .key(&k.wake)
            .arg(entry)
            .arg(consumer)
            .arg(error)
            .arg(format!("{draw:.6}"))
            .arg(self.options.dead_history)
            .arg(lane)
            .run_on(self.srv())
            .await?;
        let a = array_of(&v);
        match a.first().and_then(int_of) {
            Some(-1) => Ok(None),
            Some(0) => Ok(Some(FailOutcome::Dead)),
            Some(1) => Ok(Some(FailOutcome::Retry {
                at_ms: a.get(1).and_then(int_of).unwrap_or(0) as u64,
                attempt: a.get(2).and_then(int_of).unwrap_or(0) as u32,
            })),
            _ => Err(protocol("fail")),
        }
    }

    pub(crate) async fn shutdown(&self) -> Result<u64> {
        let k = &self.keys;
        let n: i64 = self
            .scripts
            .shutdown
            .key(&k.lanes[0])
            .key(&k.lanes[1])
            .key(&k.lanes[2])
            .key(&k.wake)
            .arg(&self.name)
            .run_on(self.srv())
            .await?;
        if let Ok(pool) = self.pool() {
            pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_plan_groups_sorts_and_drops_repeats() {
        let acks = [
            (1, "100-2", "a"),
            (2, "50-0", "a"),
            (1, "100-10", "a"),
            (1, "99-7", "b"),
            (1, "100-2", "a"),
            (1, "9-0", "a"),
            (1, "x-1", "a"),
            (3, "7", "a"),
        ];
        let plan = AckPlan::new(&acks);
        assert_eq!(
            plan.groups,
            vec![
                (1, "a", vec!["9-0", "100-2", "100-10"]),
                (1, "b", vec!["99-7"]),
                (2, "a", vec!["50-0"]),
            ]
        );
        assert_eq!(plan.sent, 5);
        // Positions in the answer; the repeat and the two non-ids are not sent.
        assert_eq!(
            plan.slots,
            vec![
                Some(1),
                Some(4),
                Some(2),
                Some(3),
                None,
                Some(0),
                None,
                None
            ]
        );
        let answer = Value::Array([1, 0, 1, 1, 1].iter().map(|&n| Value::Int(n)).collect());
        assert_eq!(
            plan.answers(Some(&answer)).unwrap(),
            vec![false, true, true, true, false, true, false, false]
        );
        // An answer of the wrong length is a protocol error, not a wrong result.
        let short = Value::Array(vec![Value::Int(1)]);
        assert!(plan.answers(Some(&short)).is_err());
    }

    #[test]
    fn ack_plan_of_nothing_sends_nothing() {
        let plan = AckPlan::new(&[]);
        assert!(plan.groups.is_empty());
        assert!(plan
            .answers(Some(&Value::Array(vec![])))
            .unwrap()
            .is_empty());
        assert_eq!(stream_id("12-3"), Some((12, 3)));
        assert_eq!(stream_id("12"), None);
        assert_eq!(stream_id("1-2-3"), None);
    }
}
