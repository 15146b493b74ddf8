'use strict'
// The task queue from Node.js: `ck.queue.enqueue(...)`, `for await (const job of
// ck.queue.jobs('emails', { signal }))`, and a `Worker` with concurrency and a graceful
// `close()`. Every rule (leases, retries with backoff, dead letters, idempotency keys,
// priorities, reclaiming the jobs of crashed workers) is in the Rust core; this file converts
// options and runs the loops. Delivery is at least once: handlers must be idempotent.

const { EventEmitter } = require('node:events')
const { ClusterkitError, sync, promise, invalid } = require('./errors')

const OPTION_NAMES = new Set(['delay', 'runAt', 'maxAttempts', 'backoff', 'idempotencyKey', 'idempotencyTtl', 'priority'])

function checkQueueName (v) {
  if (typeof v !== 'string') throw invalid('queue', `must be a string, got ${v === null ? 'null' : typeof v}`)
  return v
}

function checkPayload (p, field = 'payload') {
  if (typeof p === 'string' || Buffer.isBuffer(p)) return p
  if (p instanceof Uint8Array) return Buffer.from(p.buffer, p.byteOffset, p.byteLength)
  throw invalid(field, `must be a string or a Buffer, got ${p === null ? 'null' : typeof p}`)
}

function num (v, field) {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(field, `must be a finite number, got ${String(v)}`)
  return v
}

// A positive fraction of a millisecond is one millisecond; zero and negatives go to the core
// as they are and are reported there (options.delay_ms ...).
function ms (v, field) {
  num(v, field)
  return v > 0 ? Math.ceil(v) : Math.trunc(v)
}

/** Options object (ms) -> the core's options document (JSON text), or undefined. */
function optionsJson (o, field = 'options') {
  if (o === undefined || o === null) return undefined
  if (typeof o !== 'object') throw invalid(field, 'must be an object')
  const out = {}
  for (const k of Object.keys(o)) {
    if (!OPTION_NAMES.has(k)) throw invalid(`${field}.${k}`, 'unknown option')
  }
  if (o.delay !== undefined) out.delay_ms = ms(o.delay, `${field}.delay`)
  if (o.runAt !== undefined) {
    const t = o.runAt instanceof Date ? o.runAt.getTime() : o.runAt
    out.run_at_ms = ms(t, `${field}.runAt`)
  }
  if (o.maxAttempts !== undefined) {
    if (!Number.isInteger(o.maxAttempts)) throw invalid(`${field}.maxAttempts`, 'must be an integer')
    out.max_attempts = o.maxAttempts
  }
  if (o.backoff !== undefined) {
    const b = o.backoff
    if (b === null || typeof b !== 'object') throw invalid(`${field}.backoff`, 'must be { kind, delay[, max, jitter] }')
    const bo = { kind: b.kind }
    for (const k of Object.keys(b)) {
      if (!['kind', 'delay', 'max', 'jitter'].includes(k)) throw invalid(`${field}.backoff.${k}`, 'unknown option')
    }
    if (b.delay !== undefined) bo.delay_ms = ms(b.delay, `${field}.backoff.delay`)
    if (b.max !== undefined) bo.max_ms = ms(b.max, `${field}.backoff.max`)
    if (b.jitter !== undefined) bo.jitter = b.jitter
    out.backoff = bo
  }
  if (o.idempotencyKey !== undefined) {
    if (typeof o.idempotencyKey !== 'string') throw invalid(`${field}.idempotencyKey`, 'must be a string')
    out.idempotency_key = o.idempotencyKey
  }
  if (o.idempotencyTtl !== undefined) out.idempotency_ttl_ms = ms(o.idempotencyTtl, `${field}.idempotencyTtl`)
  if (o.priority !== undefined) out.priority = o.priority
  return JSON.stringify(out)
}

function checkLimit (v, field, dflt) {
  if (v === undefined || v === null) return dflt
  return num(v, field)
}

function errorText (e) {
  if (e instanceof Error) return `${e.name}: ${e.message}`
  return String(e)
}

const PRIORITIES = ['high', 'normal', 'low']
const NO_RECEIPTS = []

/** A reserved job: its data plus ack/fail/extend/release on the consumer that holds it. */
class Job {
  #c
  #settled = false
  #payload
  #buf
  #start
  #end
  /**
   * @internal From a JobData object (`d`), or from slot `k` of a flat batch `b` (see
   * `batchJobs`) whose payloads are bytes `start..` of `b[1]`: the payload is sliced from the
   * batch's buffer when it is first read.
   */
  constructor (consumer, d, queue, b, k, start) {
    this.#c = consumer
    if (d) {
      this.id = d.id
      this.queue = d.queue
      this.#payload = d.payload
      this.attempt = d.attempt
      this.maxAttempts = d.maxAttempts
      this.enqueuedAt = d.enqueuedAtMs
      this.priority = d.priority
      this.lastError = d.lastError ?? null
      this.receipt = d.receipt
    } else {
      this.id = b[k]
      this.queue = queue
      this.#buf = b[1]
      this.#start = start
      this.#end = b[k + 7]
      this.attempt = b[k + 2]
      this.maxAttempts = b[k + 3]
      this.enqueuedAt = b[k + 4]
      this.priority = PRIORITIES[b[k + 5]]
      this.lastError = b[k + 6]
      this.receipt = b[k + 1]
    }
  }

  /** The payload, as enqueued (a Buffer). */
  get payload () {
    if (this.#payload === undefined) {
      this.#payload = this.#buf.subarray(this.#start, this.#end)
      this.#buf = undefined
    }
    return this.#payload
  }

  /** The payload parsed as JSON. */
  json () { return JSON.parse(this.payload.toString('utf8')) }
  /** The payload as UTF-8 text. */
  text () { return this.payload.toString('utf8') }
  get settled () { return this.#settled }
  toJSON () {
    return {
      id: this.id,
      queue: this.queue,
      payload: this.payload,
      attempt: this.attempt,
      maxAttempts: this.maxAttempts,
      enqueuedAt: this.enqueuedAt,
      priority: this.priority,
      lastError: this.lastError,
      receipt: this.receipt
    }
  }
  /** @internal (Consumer.ackMany) */
  _markSettled () { this.#settled = true }

  /** Done: removes the job. Rejects with `conflict` if the lease was lost (reclaimed). */
  async ack () { this.#settled = true; await promise(() => this.#c.ack(this.receipt)) }
  /** Retry after the backoff, or dead letter after the last attempt: `{outcome, at_ms?, attempt?}`. */
  async fail (error) {
    this.#settled = true
    return JSON.parse(await promise(() => this.#c.fail(this.receipt, errorText(error))))
  }

  /** Heartbeat: the lease runs one full visibility timeout from now. */
  async extend () { await promise(() => this.#c.extend(this.receipt)) }
  /** Back to the end of its lane, no attempt used. */
  async release () { this.#settled = true; await promise(() => this.#c.release(this.receipt)) }
}

/** The jobs of a flat batch from the native `ackAndReserve` (`[acked, payloads, 8 slots per job]`). */
function batchJobs (consumer, queue, b) {
  const n = (b.length - 2) / 8
  const jobs = new Array(n)
  let start = 0
  for (let i = 0, k = 2; i < n; i++, k += 8) {
    jobs[i] = new Job(consumer, null, queue, b, k, start)
    start = b[k + 7]
  }
  return jobs
}

/** Extends the leases of the jobs in `set` every `every` ms; `onLost(job)` when one is gone. */
function heartbeat (set, every, onLost) {
  const t = setInterval(() => {
    for (const job of set) {
      if (job.settled) continue
      job.extend().catch((e) => { if (e && e.code === 'conflict') onLost(job) })
    }
  }, every)
  t.unref()
  return () => clearInterval(t)
}

/** Reserves jobs of one queue (native consumer wrapper). */
class Consumer {
  #n
  constructor (n) { this.#n = n }
  get name () { return this.#n.name }
  get queue () { return this.#n.queue }
  get isStopped () { return this.#n.isStopped }

  /** The next job within `timeout` ms (default 1000; 0 = do not wait), or null. `signal` stops the wait. */
  async reserve ({ timeout = 1000, signal } = {}) {
    const d = await this.#withSignal(signal, () => this.#n.reserve(num(timeout, 'timeout')))
    return d ? new Job(this.#n, d) : null
  }

  async reserveMany (max, { timeout = 1000, signal } = {}) {
    return (await this.ackAndReserve(NO_RECEIPTS, max, { timeout, signal })).jobs
  }

  /**
   * Acks `jobs` (Jobs or receipts) and reserves up to `max` more: one round trip (and one
   * script run on Redis) when jobs wait, else the reserve then waits up to `timeout` ms as
   * `reserveMany` does, the acks already done. Resolves to `{ acked, jobs }` (`acked`: one
   * boolean per job, as `ackMany`).
   */
  async ackAndReserve (jobs, max, { timeout = 1000, signal } = {}) {
    const receipts = jobs === NO_RECEIPTS ? jobs : this.#receipts(jobs)
    num(max, 'max')
    num(timeout, 'timeout')
    return this._ackAndReserve(receipts, max, timeout, signal)
  }

  /** @internal receipts already checked */
  async _ackAndReserve (receipts, max, timeout, signal) {
    const b = await this.#withSignal(signal, () => this.#n.ackAndReserve(receipts, max, timeout))
    return { acked: b[0], jobs: batchJobs(this.#n, this.#queue ??= this.#n.queue, b) }
  }

  #queue
  #receipts (jobs) {
    if (!Array.isArray(jobs)) throw invalid('jobs', 'must be an array of jobs or receipts')
    return jobs.map((j, i) => {
      if (j instanceof Job) { j._markSettled(); return j.receipt }
      if (typeof j === 'string') return j
      throw invalid(`jobs[${i}]`, 'must be a Job or its receipt')
    })
  }

  async #withSignal (signal, fn) {
    if (!signal) return promise(fn)
    if (signal.aborted) this.#n.stop()
    const onAbort = () => this.#n.stop()
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      return await promise(fn)
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Acks many jobs (or receipts) in one round trip; resolves to one boolean per job, `false`
   * when its lease was gone (what `job.ack()` rejects with `conflict`).
   */
  async ackMany (jobs) {
    return this._ackMany(this.#receipts(jobs))
  }

  /** @internal receipts already checked */
  _ackMany (receipts) { return promise(() => this.#n.ackMany(receipts)) }

  /** Waiting reserves resolve to null at once, later ones too. */
  stop () { this.#n.stop() }
  /** stop() and every job still leased here goes back (no attempt used); resolves to how many. */
  async shutdown () { return promise(() => this.#n.shutdown()) }
}

class Queue {
  #n
  constructor (n) { this.#n = n }
  /** "redis" or "memory" (embedded). */
  get backend () { return this.#n.backend }
  /** The lease of a reserved job (ms). */
  get visibilityTimeout () { return this.#n.visibilityTimeoutMs }

  /**
   * Stores a job; resolves to its id (a duplicate `idempotencyKey` within its window resolves
   * to the first job's id and stores nothing). Options (times in ms): delay, runAt (Date or
   * Unix ms), maxAttempts, backoff {kind: 'fixed'|'exponential', delay, max, jitter},
   * idempotencyKey, idempotencyTtl, priority ('high'|'normal'|'low').
   */
  async enqueue (queue, payload, options) {
    checkQueueName(queue)
    checkPayload(payload)
    const o = optionsJson(options)
    return promise(() => this.#n.enqueue(queue, payload, o))
  }

  /**
   * Many jobs in one round trip: each a payload, or `{ payload, options }`; `options` (second
   * argument) applies to the jobs that have none.
   */
  async enqueueMany (queue, jobs, options) {
    checkQueueName(queue)
    if (!Array.isArray(jobs)) throw invalid('jobs', 'must be an array')
    const common = optionsJson(options)
    const payloads = new Array(jobs.length)
    let opts
    let perJob = false
    for (let i = 0; i < jobs.length; i++) {
      const j = jobs[i]
      if (j !== null && typeof j === 'object' && !Buffer.isBuffer(j) && !(j instanceof Uint8Array)) {
        payloads[i] = checkPayload(j.payload, `jobs[${i}].payload`)
        if (j.options !== undefined) {
          opts ??= new Array(jobs.length).fill(common ?? '')
          opts[i] = optionsJson(j.options, `jobs[${i}].options`)
          perJob = true
        }
      } else {
        payloads[i] = checkPayload(j, `jobs[${i}]`)
      }
    }
    const o = perJob ? opts : (common !== undefined ? [common] : undefined)
    return promise(() => this.#n.enqueueMany(queue, payloads, o))
  }

  /** `{ waiting, in_flight, delayed, dead, oldest_age_ms }`. */
  async stats (queue) {
    checkQueueName(queue)
    return JSON.parse(await promise(() => this.#n.statsJson(queue)))
  }

  /** Dead-lettered jobs, oldest first (`limit`, default 100). */
  async deadJobs (queue, { limit } = {}) {
    checkQueueName(queue)
    return promise(() => this.#n.deadJobs(queue, checkLimit(limit, 'limit', 100)))
  }

  /** Moves dead jobs back to their lanes with fresh attempts (`limit`, default 1000); resolves to how many. */
  async redrive (queue, { limit } = {}) {
    checkQueueName(queue)
    return promise(() => this.#n.redrive(queue, checkLimit(limit, 'limit', 1000)))
  }

  /** Deletes every job of `queue`. */
  async purge (queue) { checkQueueName(queue); return promise(() => this.#n.purge(queue)) }
  /** This handle's counters. */
  metrics () { return JSON.parse(sync(() => this.#n.metricsJson())) }
  /** A consumer of `queue` with a name of its own. */
  consumer (queue) { checkQueueName(queue); return new Consumer(sync(() => this.#n.consumer(queue))) }

  /**
   * An async iterator of the jobs of `queue` until `signal` aborts or the loop exits. A job
   * the loop body leaves unsettled is acked when the loop asks for the next one (the body
   * finished); on `break` or a throw it goes back to the queue (no attempt used). A
   * heartbeat extends the lease of the current job (every `heartbeat` ms, default a third of
   * the visibility timeout). `prefetch` jobs are reserved per round trip (default 1).
   */
  jobs (queue, { signal, prefetch = 1, heartbeat: every, block = 1000 } = {}) {
    checkQueueName(queue)
    num(prefetch, 'prefetch')
    num(block, 'block')
    const consumer = sync(() => this.#n.consumer(queue))
    const beatEvery = every === undefined ? Math.max(1, this.visibilityTimeout / 3) : num(every, 'heartbeat')
    const self = this
    return {
      [Symbol.asyncIterator] () {
        const buffered = []
        const current = new Set()
        let done = false
        const stopBeat = heartbeat(current, beatEvery, () => {})
        const onAbort = () => consumer.stop()
        if (signal) {
          if (signal.aborted) consumer.stop()
          else signal.addEventListener('abort', onAbort, { once: true })
        }
        const finish = async () => {
          if (done) return
          done = true
          stopBeat()
          if (signal) signal.removeEventListener('abort', onAbort)
          current.clear()
          await promise(() => consumer.shutdown())
        }
        return {
          async next () {
            for (const j of current) {
              if (!j.settled) await j.ack().catch((e) => { if (!(e && e.code === 'conflict')) throw e })
            }
            current.clear()
            while (!done) {
              if (buffered.length === 0) {
                if (consumer.isStopped) break
                const b = await promise(() => consumer.ackAndReserve(NO_RECEIPTS, prefetch, block))
                for (const job of batchJobs(consumer, queue, b)) buffered.push(job)
                continue
              }
              const job = buffered.shift()
              current.add(job)
              return { value: job, done: false }
            }
            await finish()
            return { value: undefined, done: true }
          },
          async return () {
            await finish()
            return { value: undefined, done: true }
          },
        }
      },
      get queue () { return self }
    }
  }
}

function jobReceipt (j) { return j.receipt }

/**
 * Runs `handler(job, signal)` for the jobs of `queue` with `concurrency` in flight. A resolved
 * handler acks the job, a rejection fails it (retry with backoff, or dead letter). `signal`
 * aborts when the job's lease is lost (it was reclaimed elsewhere). `prefetch` (default:
 * 4 x `concurrency`, as Celery) jobs are reserved ahead of the free slots. Starts at once; `close()`
 * stops taking jobs, waits for the ones in progress and returns anything still leased.
 * Events: 'completed' (job, result), 'failed' (job, error, outcome), 'lost' (job), 'error' (err).
 */
class Worker extends EventEmitter {
  #consumer; #handler; #concurrency; #active = 0; #wake = null; #closing = false; #done; #beatStop
  #inFlight = new Set(); #controllers = new Map(); #block; #acks = null; #settling = 0
  #prefetch; #buffer = []; #flushQueued = false; #running = true; #sleeping = false
  #calls = 0; #quick = 0; #requested = 0
  constructor (queue, name, handler, { concurrency = 1, prefetch, heartbeat: every, signal, block = 1000 } = {}) {
    super()
    if (!(queue instanceof Queue)) throw invalid('queue', 'must be a clusterkit Queue (ck.queue)')
    if (typeof handler !== 'function') throw invalid('handler', 'must be a function')
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10000) {
      throw invalid('concurrency', `must be an integer between 1 and 10000, got ${String(concurrency)}`)
    }
    // Celery's default (worker_prefetch_multiplier = 4): short jobs arrive in batches big
    // enough to amortize the round trip; long jobs want a lower value (0: none).
    if (prefetch === undefined) prefetch = Math.min(4 * concurrency, 10000)
    if (!Number.isInteger(prefetch) || prefetch < 0 || prefetch > 10000) {
      throw invalid('prefetch', `must be an integer between 0 and 10000, got ${String(prefetch)}`)
    }
    this.#consumer = queue.consumer(name)
    this.#handler = handler
    this.#concurrency = concurrency
    this.#prefetch = prefetch
    this.#block = num(block, 'block')
    this.completed = 0
    this.failed = 0
    this.lost = 0
    const beatEvery = every === undefined ? Math.max(1, queue.visibilityTimeout / 3) : num(every, 'heartbeat')
    this.#beatStop = heartbeat(this.#inFlight, beatEvery, (job) => this.#lose(job))
    if (signal) {
      if (signal.aborted) queueMicrotask(() => this.close())
      else signal.addEventListener('abort', () => this.close(), { once: true })
    }
    this.#done = this.#loop()
  }

  get name () { return this.#consumer.name }
  get running () { return !this.#closing }

  #lose (job) {
    const c = this.#controllers.get(job)
    if (c && !c.signal.aborted) c.abort(new ClusterkitError('conflict', 'the lease of this job was lost'))
  }

  async #loop () {
    const c = this.#consumer
    // Room for the jobs that run now and for `prefetch` more, reserved ahead (leased and kept
    // alive by the heartbeat) so that a freed slot starts its next job at once instead of
    // waiting for a round trip.
    const slots = this.#concurrency + this.#prefetch
    try {
      while (!this.#closing) {
        const free = slots - this.#active - this.#buffer.length - this.#requested
        // One reserve at a time. (Measured: a second, non-waiting reserve for half the slots
        // while one is out, to overlap Redis and this process, cost more CPU per job in
        // smaller batches than the overlap gained on 2 cores.)
        const first = this.#calls === 0 && free > 0
        if (this.#sleeping || !first) {
          await new Promise((resolve) => { this.#wake = resolve })
          // Let the other jobs finishing in this turn of the event loop free their slots too,
          // so that one reserve fetches for all of them (not one round trip per job).
          await new Promise((resolve) => setImmediate(resolve))
          continue
        }
        // The jobs finished since the last reserve are acked by this one: one round trip and
        // one script run for both (the core's ackAndReserve). A reserve that carries acks
        // does not wait for jobs (their settlement would wait with it); the next one does.
        const acks = this.#acks
        this.#acks = null
        this.#reserve(c, free, acks === null ? this.#block : 0, acks)
      }
      this.#running = false
      while (this.#calls > 0 || this.#active > 0 || this.#settling > 0) {
        if (this.#acks !== null) this.#flushAcks()
        await new Promise((resolve) => { this.#wake = resolve })
      }
      // Reserved jobs that did not start go back with the shutdown below.
      for (const job of this.#buffer) this.#inFlight.delete(job)
      this.#buffer.length = 0
    } finally {
      this.#running = false
      this.#beatStop()
    }
    return c.shutdown()
  }

  async #reserve (c, max, timeout, acks) {
    this.#calls++
    this.#requested += max
    if (timeout === 0) this.#quick++
    let r = null
    let err = null
    try {
      r = await c._ackAndReserve(acks === null ? NO_RECEIPTS : acks.jobs.map(jobReceipt), max, timeout)
    } catch (e) {
      err = e
    }
    this.#calls--
    this.#requested -= max
    if (timeout === 0) this.#quick--
    if (err !== null) {
      if (acks !== null) this.#acked(acks, null, err)
      // Redis down or slow: report it (when someone listens) and try again shortly.
      if (this.listenerCount('error') > 0) this.emit('error', err)
      this.#sleeping = true
      setTimeout(() => { this.#sleeping = false; this.#signal() }, 200).unref()
    } else {
      if (acks !== null) this.#acked(acks, r.acked, null)
      for (const job of r.jobs) {
        this.#inFlight.add(job)
        this.#buffer.push(job)
      }
      this.#pump()
    }
    this.#signal()
    if (this.#acks !== null) this.#checkAcks()
  }

  #pump () {
    while (!this.#closing && this.#active < this.#concurrency && this.#buffer.length > 0) {
      this.#run(this.#buffer.shift())
    }
  }

  #run (job) {
    this.#active++
    const ac = new AbortController()
    this.#controllers.set(job, ac)
    let p
    try {
      p = this.#handler(job, ac.signal)
    } catch (e) {
      p = Promise.reject(e)
    }
    Promise.resolve(p).then((result) => this.#finish(job, null, result), (e) => this.#finish(job, e ?? new Error('handler rejected')))
  }

  // The handler is done: its slot is free now, while the job is being settled, so the next
  // reserve goes out together with this ack (close() still waits for every settlement).
  #finish (job, failed, result) {
    this.#inFlight.delete(job)
    this.#controllers.delete(job)
    this.#active--
    this.#settling++
    if (failed === null) {
      job._markSettled()
      if (this.#acks === null) this.#acks = { jobs: [], results: [] }
      this.#acks.jobs.push(job)
      this.#acks.results.push(result)
      this.#checkAcks()
    } else {
      job.fail(failed).then((outcome) => {
        this.failed++
        this.emit('failed', job, failed, outcome)
      }, (e) => this.#settleError(job, e)).finally(() => {
        this.#settling--
        this.#signal()
      })
    }
    this.#pump()
    this.#signal()
  }

  #settleError (job, e) {
    if (e && e.code === 'conflict') {
      this.lost++
      this.emit('lost', job)
    } else if (this.listenerCount('error') > 0) {
      this.emit('error', e)
    }
  }

  // A batch of acks came back: `acked[i]` per job, or `err` for the whole batch.
  #acked (batch, acked, err) {
    const { jobs, results } = batch
    for (let i = 0; i < jobs.length; i++) {
      try {
        if (err) this.#settleError(jobs[i], err)
        else if (acked[i]) {
          this.completed++
          this.emit('completed', jobs[i], results[i])
        } else {
          this.#settleError(jobs[i], new ClusterkitError('conflict', 'ack: the lease is gone (expired and reclaimed, or already settled)'))
        }
      } catch (e) {
        // A throwing listener must not leave the other jobs unsettled: reported as an error.
        if (this.listenerCount('error') > 0) this.emit('error', e)
      }
    }
    this.#settling -= jobs.length
    this.#signal()
  }

  #signal () {
    const w = this.#wake
    this.#wake = null
    if (w) w()
  }

  // Jobs that finish in one turn of the event loop are acked together (#finish, #checkAcks).

  // After this turn of the event loop: when a reserve that does not wait is out (its return
  // sends the next one, with these acks) or the loop is about to send one, the acks go with
  // it; otherwise (the loop waits for jobs on a blocking read, sleeps after an error, or has
  // ended) they go on their own.
  #checkAcks () {
    if (this.#flushQueued) return
    this.#flushQueued = true
    setImmediate(() => {
      this.#flushQueued = false
      if (this.#acks === null) return
      const taken = this.#quick > 0 || (this.#running && this.#calls === 0 && !this.#sleeping)
      if (!taken) this.#flushAcks()
    })
  }

  async #flushAcks () {
    const batch = this.#acks
    this.#acks = null
    if (batch === null) return
    let acked
    try {
      acked = await this.#consumer._ackMany(batch.jobs.map(jobReceipt))
    } catch (e) {
      this.#acked(batch, null, e)
      return
    }
    this.#acked(batch, acked, null)
  }

  /** Stops taking jobs, waits for those in progress, returns what is still leased; resolves to that count. */
  async close () {
    if (!this.#closing) {
      this.#closing = true
      this.#consumer.stop()
      this.#signal()
    }
    return this.#done
  }

  /** Resolves when the worker has closed (to the number of jobs returned at shutdown). */
  get closed () { return this.#done }
}

module.exports = { Queue, Consumer, Job, Worker }
