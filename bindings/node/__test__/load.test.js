'use strict'
// Concurrency, event-loop responsiveness under a stalled backend, worker threads sharing one
// deployment, and 1,000,000 mixed operations with flat memory.
const test = require('node:test')
const assert = require('node:assert/strict')
const { Worker } = require('node:worker_threads')
const path = require('node:path')
const { Clusterkit } = require('..')
const { startRedis, redisConfig, sleep } = require('./helpers')

test('10,000 concurrent Promises on one cache and one lock (real Redis)', async (t) => {
  const r = await startRedis(t)
  // 10,000 requests queue on one connection: answers may take longer than the default
  // per-request timeouts (cache 500 ms, locks 100 ms) on a loaded 2-core machine, and a
  // timed-out lock attempt is neither a win nor a conflict. Generous timeouts keep the claim
  // (exactly one winner, everyone else refused) about concurrency, not about latency.
  const config = redisConfig(r.port, 'conc')
  config.cache.timeout = '30s'
  config.locks.timeout = '30s'
  const dep = new Clusterkit(config)
  const c = dep.cache
  const N = 10000
  await Promise.all(Array.from({ length: N }, (_, i) => c.set(`k${i}`, `v${i}`)))
  const got = await Promise.all(Array.from({ length: N }, (_, i) => c.getString(`k${i}`)))
  got.forEach((v, i) => assert.equal(v, `v${i}`))
  const incs = await Promise.all(Array.from({ length: N }, () => c.incr('counter')))
  assert.equal(Math.max(...incs), N)
  assert.equal(new Set(incs).size, N)
  // one lock: 10,000 try-acquires at once, exactly one wins, the rest see conflict
  const results = await Promise.allSettled(Array.from({ length: N }, () => dep.locks.acquire('one', { ttl: 10000 })))
  const won = results.filter((x) => x.status === 'fulfilled')
  assert.equal(won.length, 1)
  const codes = results.filter((x) => x.status === 'rejected').map((x) => x.reason.code)
  assert.ok(codes.every((code) => code === 'conflict'), `refusals other than conflict: ${[...new Set(codes)]}`)
  await won[0].value.release()
  // mutual exclusion with waiting: 200 waiters each run a critical section in turn
  let inside = 0; let max = 0; let done = 0
  await Promise.all(Array.from({ length: 200 }, async () => {
    const l = await dep.locks.acquire('turns', { ttl: 5000, wait: 60000 })
    inside++; max = Math.max(max, inside)
    await sleep(0)
    inside--; done++
    await l.release()
  }))
  assert.equal(max, 1)
  assert.equal(done, 200)
})

test('the event loop stays responsive while the Redis server is SIGSTOPped', async (t) => {
  const r = await startRedis(t)
  const dep = new Clusterkit(redisConfig(r.port, 'stall'))
  await dep.cache.set('k', 'v')
  process.kill(r.proc.pid, 'SIGSTOP')
  let resumed = false
  const resume = () => { if (!resumed) { resumed = true; process.kill(r.proc.pid, 'SIGCONT') } }
  t.after(resume)
  let ticks = 0
  let maxGap = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; ticks++
  }, 1)
  const pending = Array.from({ length: 50 }, () => dep.cache.get('k').then(() => 'ok', (e) => e.code))
  const lockTry = dep.locks.acquire('stalled', { ttl: 1000 }).then(() => 'ok', (e) => e.code)
  await sleep(1500)
  clearInterval(timer)
  // ~1500 ticks expected with a 1 ms timer; the loop must not have been blocked.
  assert.ok(ticks > 300, `only ${ticks} timer ticks in 1.5 s`)
  assert.ok(maxGap < 250, `the event loop was blocked for ${maxGap.toFixed(0)} ms`)
  resume()
  const outcomes = await Promise.race([Promise.all([...pending, lockTry]), sleep(20000).then(() => 'hung')])
  assert.notEqual(outcomes, 'hung', 'operations did not settle within 20 s of SIGCONT')
  for (const o of outcomes) assert.ok(['ok', 'timeout', 'unavailable'].includes(o), o)
  assert.equal(await dep.cache.getString('k'), 'v')
})

test('worker_threads share one deployment (shared: true)', async (t) => {
  const r = await startRedis(t)
  const config = JSON.stringify(redisConfig(r.port, 'workers'))
  const main = new Clusterkit(config, { shared: true })
  const src = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { Clusterkit } = require(${JSON.stringify(path.join(__dirname, '..'))})
    ;(async () => {
      const dep = new Clusterkit(workerData.config, { shared: true })
      for (let i = 0; i < 500; i++) await dep.cache.incr('shared-counter')
      await dep.cache.set('from-' + workerData.id, 'hello ' + workerData.id)
      const l = await dep.locks.acquire('worker-lock', { ttl: 5000, wait: 30000 })
      await l.release()
      const embedded = new Clusterkit(undefined, { shared: true })
      await embedded.cache.incr('embedded-shared')
      parentPort.postMessage({ ok: true, fence: l.fencingToken })
    })().catch((e) => parentPort.postMessage({ ok: false, error: String(e) }))
  `
  const runs = Array.from({ length: 4 }, (_, id) => new Promise((resolve, reject) => {
    const w = new Worker(src, { eval: true, workerData: { config, id } })
    w.once('message', resolve)
    w.once('error', reject)
  }))
  const out = await Promise.all(runs)
  for (const o of out) assert.ok(o.ok, o.error)
  assert.equal(new Set(out.map((o) => o.fence)).size, 4)
  assert.equal(await main.cache.getString('shared-counter'), '2000')
  for (let id = 0; id < 4; id++) assert.equal(await main.cache.getString('from-' + id), 'hello ' + id)
  // the embedded backend is in-process: shared by the worker threads through the one deployment
  assert.equal(await new Clusterkit(undefined, { shared: true }).cache.getString('embedded-shared'), '4')
})

test('1,000,000 mixed operations with heap and RSS flat', { timeout: 600000 }, async () => {
  assert.equal(typeof global.gc, 'function', 'run with node --expose-gc')
  const dep = Clusterkit.embedded()
  const c = dep.cache
  const sessions = dep.sessions
  const batch = async (from, n) => {
    const ps = []
    for (let i = from; i < from + n; i++) {
      const k = `key${i % 5000}`
      switch (i % 8) {
        case 0: ps.push(c.set(k, 'value-' + i, 60000)); break
        case 1: ps.push(c.get(k)); break
        case 2: ps.push(c.getMany([k, 'key1', 'key2'])); break
        case 3: ps.push(c.incr('n')); break
        case 4: ps.push(c.delete(k)); break
        case 5: ps.push(c.has(k)); break
        case 6: ps.push(dep.locks.acquire('l' + (i % 100), { ttl: 1000 }).then((l) => l.release(), () => {})); break
        case 7: { const s = sessions.create(); s.set('a', 'b'); ps.push(sessions.save(s).then(() => sessions.destroy(s.id))); break }
      }
    }
    await Promise.all(ps)
    // Let the loop turn (as a server's does between requests): napi runs the finalizers of
    // collected native objects from the event loop, not from microtasks.
    await new Promise(setImmediate)
  }
  const TOTAL = 1000000; const STEP = 1000
  const sample = async () => { for (let i = 0; i < 3; i++) { global.gc(); await new Promise(setImmediate) } const m = process.memoryUsage(); return { heap: m.heapUsed, rss: m.rss } }
  let done = 0
  while (done < 200000) { await batch(done, STEP); done += STEP }
  const base = await sample()
  while (done < TOTAL) { await batch(done, STEP); done += STEP }
  const end = await sample()
  const mb = (x) => (x / 1048576).toFixed(1)
  console.log(`after warm-up heap ${mb(base.heap)} MB rss ${mb(base.rss)} MB; after 1M ops heap ${mb(end.heap)} MB rss ${mb(end.rss)} MB`)
  // 800,000 measured operations: a leak of 3 bytes per operation would add 2.4 MB to the heap,
  // of 5 bytes 4 MB to the RSS (measured growth: heap -0.5 MB, RSS +1.3 MB).
  assert.ok(end.heap - base.heap < 2 * 1048576, `heap grew ${mb(end.heap - base.heap)} MB`)
  assert.ok(end.rss - base.rss < 4 * 1048576, `rss grew ${mb(end.rss - base.rss)} MB`)
})

test('an auto-renewed lock whose renewal fails fires its AbortSignal (Redis SIGSTOPped)', async (t) => {
  const r = await startRedis(t)
  const dep = new Clusterkit(redisConfig(r.port, 'renew'))
  const lock = await dep.locks.acquire('renewed', { ttl: 600, autoRenew: true })
  const signal = lock.signal
  await sleep(700)
  assert.equal(signal.aborted, false, 'renewal keeps it past its TTL')
  process.kill(r.proc.pid, 'SIGSTOP')
  t.after(() => { try { process.kill(r.proc.pid, 'SIGCONT') } catch {} })
  const fired = await Promise.race([
    new Promise((resolve) => signal.addEventListener('abort', () => resolve(true))),
    sleep(5000).then(() => false),
  ])
  process.kill(r.proc.pid, 'SIGCONT')
  assert.equal(fired, true, 'the signal fired within 5 s of the server stalling')
  assert.equal(signal.reason.code, 'conflict')
  assert.equal(lock.isHeld, false)
})

test('a worker terminated with operations in flight leaves the process healthy', async (t) => {
  const r = await startRedis(t)
  const config = JSON.stringify(redisConfig(r.port, 'term'))
  const src = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { Clusterkit } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const dep = new Clusterkit(workerData.config, { shared: true })
    for (let i = 0; i < 2000; i++) dep.cache.set('t' + i, 'v')
    dep.locks.acquire('held-by-worker', { ttl: 60000, wait: 1000 }).catch(() => {})
    parentPort.postMessage('started')
  `
  for (let round = 0; round < 5; round++) {
    const w = new Worker(src, { eval: true, workerData: { config } })
    await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject) })
    await w.terminate()
  }
  const dep = new Clusterkit(config, { shared: true })
  await dep.cache.set('after', 'ok')
  assert.equal(await dep.cache.getString('after'), 'ok')
})
