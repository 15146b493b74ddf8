'use strict'
// The task queue from Node: enqueue options, stats, dead letters and re-drive, the async
// iterator of jobs (AbortSignal, auto-ack, break returns the job), the Worker (concurrency,
// failures, heartbeat, graceful close), bad input, and a worker process SIGKILLed mid-job whose
// job is reclaimed. Each API test runs on the embedded backend and on a private redis-server.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Clusterkit, Worker, ClusterkitError } = require('..')
const { startRedis, redisConfig, sleep } = require('./helpers')

let nsCounter = 0
function config (kind, redis, queue = {}) {
  const ns = `qn${process.pid}x${nsCounter++}`
  const q = { namespace: ns, block: '200ms', ...queue }
  if (kind === 'embedded') return { queue: q }
  return { ...redisConfig(redis.port, ns), queue: { ...q, redis: redis.address } }
}

async function rejects (p, code, field) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof ClusterkitError, `not a ClusterkitError: ${e}`)
    assert.equal(e.code, code, e.message)
    if (field) assert.ok(e.message.includes(`invalid ${field}:`), `${field} not named in: ${e.message}`)
    return true
  })
}

/** `calls` of `cmdstat_<name>` in the server's `INFO commandstats` (0 when never called). */
function commandCalls (port, name) {
  const info = execFileSync('redis-cli', ['-p', String(port), 'INFO', 'commandstats'], { encoding: 'utf8' })
  const m = new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info)
  return m ? Number(m[1]) : 0
}

async function until (fn, what, ms = 10000) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

for (const kind of ['embedded', 'redis']) {
  test(`queue on ${kind}`, async (t) => {
    const redis = kind === 'redis' ? await startRedis(t) : null
    const mk = (q) => new Clusterkit(config(kind, redis, q))

    await t.test('enqueue, reserve, ack, stats', async () => {
      const q = mk().queue
      assert.equal(q.backend, kind === 'embedded' ? 'memory' : 'redis')
      const id = await q.enqueue('emails', Buffer.from('hello'), { maxAttempts: 4 })
      assert.match(id, /^[0-9a-f]{32}$/)
      assert.equal((await q.stats('emails')).waiting, 1)
      const c = q.consumer('emails')
      const job = await c.reserve({ timeout: 2000 })
      assert.equal(job.id, id)
      assert.equal(job.payload.toString(), 'hello')
      assert.equal(job.attempt, 1)
      assert.equal(job.maxAttempts, 4)
      assert.equal(job.priority, 'normal')
      assert.equal(job.lastError, null)
      assert.ok(Math.abs(job.enqueuedAt - Date.now()) < 60000)
      assert.equal((await q.stats('emails')).in_flight, 1)
      await job.ack()
      assert.deepEqual(await q.stats('emails'), { waiting: 0, in_flight: 0, delayed: 0, dead: 0, oldest_age_ms: null })
      await rejects(job.ack(), 'conflict')
      assert.equal(await c.reserve({ timeout: 0 }), null)
      assert.ok(q.metrics().completed >= 1)
    })

    await t.test('enqueueMany with per-job options and priorities; delay', async () => {
      const q = mk().queue
      const ids = await q.enqueueMany('work', ['low', { payload: 'high', options: { priority: 'high' } }, Buffer.from('n')])
      assert.equal(new Set(ids).size, 3)
      await q.enqueue('work', 'later', { delay: 300 })
      const c = q.consumer('work')
      const got = await c.reserveMany(10, { timeout: 2000 })
      assert.equal(got[0].text(), 'high')
      assert.deepEqual(got.map((j) => j.text()).sort(), ['high', 'low', 'n'])
      // ackMany: jobs or receipts, one boolean each; a repeated one is acked once
      assert.deepEqual(await c.ackMany([got[0], got[1].receipt, got[2], got[0]]), [true, true, true, false])
      assert.ok(got[0].settled)
      await rejects(got[1].ack(), 'conflict')
      await rejects(c.ackMany([got[0], 42]), 'invalid_argument', 'jobs[1]')
      await rejects(c.ackMany([got[0].receipt, 'garbage']), 'invalid_argument', 'receipts[1]')
      await rejects(c.ackMany('nope'), 'invalid_argument', 'jobs')
      assert.equal((await q.stats('work')).in_flight, 0)
      assert.equal((await q.stats('work')).delayed, 1)
      const t0 = Date.now()
      const later = await until(() => c.reserve({ timeout: 500 }), 'delayed job')
      assert.equal(later.text(), 'later')
      assert.ok(Date.now() - t0 >= 100)
      await later.ack()
    })

    await t.test('idempotency key', async () => {
      const q = mk().queue
      const a = await q.enqueue('i', 'x', { idempotencyKey: 'order-42' })
      const b = await q.enqueue('i', 'y', { idempotencyKey: 'order-42', idempotencyTtl: 60000 })
      assert.equal(a, b)
      assert.equal((await q.stats('i')).waiting, 1)
    })

    await t.test('fail, retry with backoff, dead letter, redrive', async () => {
      const q = mk().queue
      const id = await q.enqueue('f', 'p', { maxAttempts: 2, backoff: { kind: 'fixed', delay: 50 } })
      const c = q.consumer('f')
      const j = await c.reserve({ timeout: 2000 })
      const out = await j.fail(new Error('boom 1'))
      assert.equal(out.outcome, 'retry')
      assert.equal(out.attempt, 2)
      const j2 = await until(() => c.reserve({ timeout: 500 }), 'retry')
      assert.equal(j2.id, id)
      assert.equal(j2.attempt, 2)
      assert.equal(j2.lastError, 'Error: boom 1')
      assert.deepEqual(await j2.fail('boom 2'), { outcome: 'dead' })
      const dead = await q.deadJobs('f')
      assert.equal(dead.length, 1)
      assert.equal(dead[0].id, id)
      assert.equal(dead[0].lastError, 'boom 2')
      assert.equal(dead[0].payload.toString(), 'p')
      assert.equal(await q.redrive('f'), 1)
      const j3 = await c.reserve({ timeout: 2000 })
      assert.equal(j3.attempt, 1)
      await j3.ack()
      assert.equal((await q.stats('f')).dead, 0)
    })

    await t.test('bad input names the field', async () => {
      const q = mk().queue
      await rejects(q.enqueue('', 'x'), 'invalid_argument', 'queue')
      await rejects(q.enqueue('bad name!', 'x'), 'invalid_argument', 'queue')
      await rejects(q.enqueue(7, 'x'), 'invalid_argument', 'queue')
      await rejects(q.enqueue('ok', 12), 'invalid_argument', 'payload')
      await rejects(q.enqueue('ok', 'x', { delay: 0 }), 'invalid_argument', 'options.delay_ms')
      await rejects(q.enqueue('ok', 'x', { delay: -5 }), 'invalid_argument', 'options.delay_ms')
      await rejects(q.enqueue('ok', 'x', { delay: 'soon' }), 'invalid_argument', 'options.delay')
      await rejects(q.enqueue('ok', 'x', { maxAttempts: 0 }), 'invalid_argument', 'options.max_attempts')
      await rejects(q.enqueue('ok', 'x', { maxAttempts: -1 }), 'invalid_argument', 'options.max_attempts')
      await rejects(q.enqueue('ok', 'x', { priority: 'urgent' }), 'invalid_argument', 'options.priority')
      await rejects(q.enqueue('ok', 'x', { colour: 'red' }), 'invalid_argument', 'options.colour')
      await rejects(q.enqueue('ok', Buffer.alloc(1024 * 1024 + 1)), 'invalid_argument', 'payload')
      await rejects(q.enqueueMany('ok', ['a', { payload: 'b', options: { delay: -2 } }]), 'invalid_argument', 'jobs[1].options.delay_ms')
      await rejects(q.consumer('ok').reserve({ timeout: -1 }), 'invalid_argument', 'timeout')
      await rejects(q.redrive('ok', { limit: 0 }), 'invalid_argument', 'limit')
      assert.throws(() => new Worker(q, 'ok', () => {}, { concurrency: 0 }), /invalid concurrency/)
      assert.equal((await q.stats('ok')).waiting, 0)
      const allow = new Clusterkit(config(kind, redis, { queues: ['emails'] })).queue
      await rejects(allow.enqueue('reports', 'x'), 'invalid_argument', 'queue')
    })

    await t.test('async iterator: auto-ack, AbortSignal, break returns the job', async () => {
      const q = mk().queue
      await q.enqueueMany('it', ['1', '2', '3', '4'])
      const ac = new AbortController()
      const seen = []
      for await (const job of q.jobs('it', { signal: ac.signal })) {
        seen.push(job.text())
        if (seen.length === 3) ac.abort()
      }
      assert.deepEqual(seen, ['1', '2', '3'])
      // The body finished with each job: all three were acked (the third when the loop asked
      // for more and found the consumer stopped).
      let s = await q.stats('it')
      assert.equal(s.in_flight, 0)
      assert.equal(s.waiting, 1)
      for await (const job of q.jobs('it')) {
        assert.equal(job.text(), '4')
        break // returned to the queue, no attempt used
      }
      s = await q.stats('it')
      assert.equal(s.waiting, 1)
      assert.equal(s.in_flight, 0)
      const ac2 = new AbortController()
      for await (const job of q.jobs('it', { signal: ac2.signal, prefetch: 10 })) {
        assert.equal(job.attempt, 1)
        await job.fail('no') // settled explicitly: not acked
        ac2.abort()
      }
      s = await q.stats('it')
      // delayed, not waiting: the failed job waits for its backoff.
      assert.equal(s.delayed, 1, JSON.stringify(s))
      assert.equal(s.waiting, 0, JSON.stringify(s))
      assert.equal(s.in_flight, 0)
    })

    await t.test('ackAndReserve: acks and reserves in one call (one script run on Redis)', async () => {
      const q = mk().queue
      await q.enqueueMany('ar', ['a', 'b', { payload: 'c', options: { priority: 'high', maxAttempts: 3, backoff: { kind: 'fixed', delay: 20 } } }, 'd', 'e'], { maxAttempts: 3, backoff: { kind: 'fixed', delay: 20 } })
      const c = q.consumer('ar')
      const first = await c.ackAndReserve([], 2, { timeout: 1000 })
      assert.deepEqual(first.acked, [])
      assert.deepEqual(first.jobs.map((j) => j.text()), ['c', 'a'])
      const [j0, j1] = first.jobs
      assert.equal(j0.priority, 'high')
      assert.equal(j1.priority, 'normal')
      assert.equal(j1.queue, 'ar')
      assert.equal(j1.attempt, 1)
      assert.equal(j1.maxAttempts, 3)
      assert.equal(j1.lastError, null)
      assert.match(j1.id, /^[0-9a-f]{32}$/)
      assert.ok(Math.abs(j1.enqueuedAt - Date.now()) < 60000)
      assert.equal(JSON.parse(JSON.stringify(j1)).id, j1.id)
      await rejects(c.ackAndReserve([j0.receipt, 'garbage'], 2), 'invalid_argument', 'receipts[1]')
      await rejects(c.ackAndReserve([j0, 7], 2), 'invalid_argument', 'jobs[1]')
      await rejects(c.ackAndReserve([j0.receipt], 0), 'invalid_argument', 'max')
      assert.equal((await q.stats('ar')).in_flight, 2)
      const scripts = () => redis ? commandCalls(redis.port, 'evalsha') + commandCalls(redis.port, 'eval') : 0
      const before = scripts()
      const second = await c.ackAndReserve([j0, j1.receipt, j0.receipt], 2, { timeout: 1000 })
      if (redis) assert.equal(scripts() - before, 1, 'acks and reserve in one script run')
      assert.deepEqual(second.acked, [true, true, false])
      assert.deepEqual(second.jobs.map((j) => j.text()), ['b', 'd'])
      await rejects(j1.ack(), 'conflict')
      // A failed job comes back with its error, through the same flat batch.
      assert.equal((await second.jobs[0].fail(new Error('boom'))).outcome, 'retry')
      const third = await c.ackAndReserve([second.jobs[1]], 5, { timeout: 3000 })
      assert.deepEqual(third.acked, [true])
      const texts = third.jobs.map((j) => j.text()).sort()
      assert.deepEqual(texts, ['e'])
      const again = await c.reserveMany(5, { timeout: 3000 })
      assert.deepEqual(again.map((j) => [j.text(), j.attempt, j.lastError]), [['b', 2, 'Error: boom']])
      assert.deepEqual((await c.ackAndReserve([third.jobs[0], again[0]], 5, { timeout: 0 })).acked, [true, true])
      assert.deepEqual(await q.stats('ar'), { waiting: 0, in_flight: 0, delayed: 0, dead: 0, oldest_age_ms: null })
    })

    await t.test('Worker: concurrency, failures retried, events, close()', async () => {
      const q = mk().queue
      const n = 200
      await q.enqueueMany('w', Array.from({ length: n }, (_, i) => String(i)), { backoff: { kind: 'fixed', delay: 20 } })
      const done = new Set()
      let active = 0
      let peak = 0
      const w = new Worker(q, 'w', async (job) => {
        const i = Number(job.text())
        if (i % 50 === 7 && job.attempt === 1) throw new Error(`flaky ${i}`)
        active++
        peak = Math.max(peak, active)
        await sleep(2)
        active--
        done.add(i)
      }, { concurrency: 8 })
      const failed = []
      w.on('failed', (job, err, outcome) => failed.push([job.id, err.message, outcome.outcome]))
      await until(() => done.size === n, 'all jobs', 30000)
      const returned = await w.close()
      assert.equal(returned, 0)
      assert.equal(w.completed, n)
      assert.equal(w.failed, 4)
      assert.deepEqual(failed.map((f) => f[2]), ['retry', 'retry', 'retry', 'retry'])
      assert.ok(peak > 1 && peak <= 8, `peak ${peak}`)
      const s = await q.stats('w')
      assert.equal(s.in_flight, 0)
      assert.equal(s.waiting, 0)
    })

    await t.test('Worker: heartbeat keeps a job longer than the visibility timeout', async () => {
      const q = mk({ visibility_timeout: '300ms' }).queue
      await q.enqueue('long', 'x')
      const other = q.consumer('long')
      const stolen = []
      let lostSignal = false
      const w = new Worker(q, 'long', async (job, signal) => {
        const end = Date.now() + 1000
        while (Date.now() < end) {
          const j = await other.reserve({ timeout: 100 })
          if (j) stolen.push(j)
        }
        lostSignal = signal.aborted
      }, { heartbeat: 80 })
      await until(() => w.completed === 1, 'long job done')
      await w.close()
      assert.deepEqual(stolen, [])
      assert.equal(lostSignal, false)
      assert.equal(w.lost, 0)
    })

    await t.test('Worker: prefetch reserves ahead, close() returns what did not start', async () => {
      const q = mk().queue
      await q.enqueueMany('p', Array.from({ length: 10 }, (_, i) => String(i)))
      let started = 0
      let release
      const gate = new Promise((resolve) => { release = resolve })
      const w = new Worker(q, 'p', async () => { started++; await gate }, { concurrency: 2, prefetch: 3 })
      // Redis shows the leases before the reserve's reply reaches the worker: wait for both.
      await until(async () => started === 2 && (await q.stats('p')).in_flight === 5, '2 running + 3 reserved ahead')
      const closing = w.close()
      release()
      assert.equal(await closing, 3)
      assert.equal(started, 2)
      assert.equal(w.completed, 2)
      const s = await q.stats('p')
      assert.deepEqual([s.in_flight, s.waiting], [0, 8])
      for (const prefetch of [-1, 1.5, 'x']) {
        assert.throws(() => new Worker(q, 'p', async () => {}, { prefetch }), (e) => e.code === 'invalid_argument' && /prefetch/.test(e.message))
      }
    })

    await t.test('Worker: the default prefetch is 4 x concurrency (Celery\'s)', async () => {
      const q = mk().queue
      await q.enqueueMany('d', Array.from({ length: 20 }, (_, i) => String(i)))
      let started = 0
      let release
      const gate = new Promise((resolve) => { release = resolve })
      const w = new Worker(q, 'd', async () => { started++; await gate }, { concurrency: 2 })
      await until(async () => started === 2 && (await q.stats('d')).in_flight === 10, '2 running + 8 reserved ahead')
      const closing = w.close()
      release()
      assert.equal(await closing, 8)
      const s = await q.stats('d')
      assert.deepEqual([s.in_flight, s.waiting], [0, 18])
    })

    await t.test('Worker: close() waits for the job in progress, AbortSignal closes', async () => {
      const q = mk().queue
      await q.enqueueMany('c', ['1', '2', '3'])
      const ac = new AbortController()
      let started = 0
      const w = new Worker(q, 'c', async () => { started++; ac.abort(); await sleep(200) }, { signal: ac.signal })
      await w.closed
      assert.equal(started, 1)
      assert.equal(w.completed, 1)
      const s = await q.stats('c')
      assert.equal(s.in_flight, 0)
      assert.equal(s.waiting, 2)
    })
  })
}

const CHILD = `
const { Clusterkit, Worker } = require(${JSON.stringify(path.join(__dirname, '..'))})
const fs = require('node:fs')
const [cfg, marker] = [JSON.parse(process.argv[1]), process.argv[2]]
const q = new Clusterkit(cfg).queue
// A job that never ends, in a process kept alive by a timer: a pending promise alone keeps no
// Node process running, and the child used to exit by itself before the SIGKILL.
setInterval(() => {}, 1000)
new Worker(q, 'k', async (job) => { fs.writeFileSync(marker, job.id); await new Promise(() => {}) })
`

test('a worker process SIGKILLed mid-job: its job is reclaimed after the visibility timeout', async (t) => {
  const redis = await startRedis(t)
  const cfg = config('redis', redis, { visibility_timeout: '500ms' })
  const q = new Clusterkit(cfg).queue
  const id = await q.enqueue('k', 'work', { maxAttempts: 3 })
  const markerDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-q-'))
  t.after(() => fs.rmSync(markerDir, { recursive: true, force: true }))
  const marker = path.join(markerDir, 'started')
  const child = spawn(process.execPath, ['-e', CHILD, JSON.stringify(cfg), marker], { stdio: 'inherit' })
  t.after(() => { try { child.kill('SIGKILL') } catch {} })
  await until(() => fs.existsSync(marker), 'child started the job', 20000)
  assert.equal(fs.readFileSync(marker, 'utf8'), id)
  assert.equal((await q.stats('k')).in_flight, 1)
  assert.equal(child.exitCode, null, 'the child must still be running its job')
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
  const c = q.consumer('k')
  const job = await until(() => c.reserve({ timeout: 300 }), 'reclaimed job')
  assert.equal(job.id, id)
  assert.equal(job.attempt, 2)
  await job.ack()
  assert.deepEqual(await q.stats('k'), { waiting: 0, in_flight: 0, delayed: 0, dead: 0, oldest_age_ms: null })
})
