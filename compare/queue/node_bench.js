'use strict'
// One measurement per process (bench.py interleaves them): clusterkit's queue from Node vs BullMQ.
//   node node_bench.js <ck|bullmq> enqueue <single|bulk> <port> <N>   -> {"jobs_s": ...}
//   node node_bench.js <ck|bullmq> fill <port> <N>
//   node node_bench.js <ck|bullmq> work <port> <concurrency>          -> "ready", waits for "go",
//        processes until idle 500 ms -> {"count": ..., "last_done_ms": ...}
// lib "ckbase" is clusterkit loaded from $QB_CK_BASE (another build, e.g. main's, for A/B).
// QB_PREFETCH sets the clusterkit Worker's prefetch (default: the Worker's own default).
const [libArg, mode, ...rest] = process.argv.slice(2)
const lib = libArg === 'ckbase' ? 'ck' : libArg
const CK_MODULE = libArg === 'ckbase' ? process.env.QB_CK_BASE : 'clusterkit'
if (!CK_MODULE) throw new Error('ckbase needs QB_CK_BASE (the path of another clusterkit Node package)')
const QUEUE = 'bench'
const BATCH = 1000

function payload (i) { return JSON.stringify({ i }) }

function ckQueue (port) {
  const { Clusterkit } = require(CK_MODULE)
  return new Clusterkit({ queue: { redis: `127.0.0.1:${port}`, namespace: 'bench' } }).queue
}

function bull (port) {
  const { Queue } = require('bullmq')
  return new Queue(QUEUE, { connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null } })
}

const BULL_OPTS = { removeOnComplete: true, removeOnFail: true }

async function enqueue (kind, port, n) {
  if (lib === 'ck') {
    const q = ckQueue(port)
    await q.stats(QUEUE) // connect outside the timing
    const t0 = process.hrtime.bigint()
    if (kind === 'single') {
      for (let i = 0; i < n; i++) await q.enqueue(QUEUE, payload(i))
    } else {
      for (let i = 0; i < n; i += BATCH) {
        const batch = []
        for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push(payload(j))
        await q.enqueueMany(QUEUE, batch)
      }
    }
    return Number(process.hrtime.bigint() - t0) / 1e9
  }
  const q = bull(port)
  await q.waitUntilReady()
  const t0 = process.hrtime.bigint()
  if (kind === 'single') {
    for (let i = 0; i < n; i++) await q.add('j', { i }, BULL_OPTS)
  } else {
    for (let i = 0; i < n; i += BATCH) {
      const batch = []
      for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push({ name: 'j', data: { i: j }, opts: BULL_OPTS })
      await q.addBulk(batch)
    }
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  await q.close()
  return s
}

function waitGo () {
  return new Promise((resolve) => {
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (d) => { if (d.includes('go')) resolve() })
  })
}

async function work (port, concurrency) {
  let count = 0
  let last = 0
  let closeFn
  if (lib === 'ck') {
    const { Worker } = require(CK_MODULE)
    const q = ckQueue(port)
    await q.stats(QUEUE)
    console.log('ready')
    await waitGo()
    const w = new Worker(q, QUEUE, async () => { count++; last = Date.now() }, { concurrency, ...(process.env.QB_PREFETCH ? { prefetch: Number(process.env.QB_PREFETCH) } : {}) })
    closeFn = () => w.close()
  } else {
    const { Worker } = require('bullmq')
    const w = new Worker(QUEUE, async () => { count++; last = Date.now() },
      { connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null }, concurrency, autorun: false })
    await w.waitUntilReady()
    console.log('ready')
    await waitGo()
    w.run()
    closeFn = () => w.close()
  }
  const started = Date.now()
  const cpu0 = process.cpuUsage()
  await new Promise((resolve) => {
    const t = setInterval(() => {
      const idle = count > 0 ? Date.now() - last > 500 : Date.now() - started > 15000
      if (idle) { clearInterval(t); resolve() }
    }, 50)
  })
  // CPU of this process (every thread) from "go" until idle, the idle 500 ms included.
  const cpu = process.cpuUsage(cpu0)
  await closeFn()
  console.log(JSON.stringify({ count, last_done_ms: last, cpu_us: cpu.user + cpu.system }))
  process.exit(0)
}

async function main () {
  if (mode === 'enqueue') {
    const [kind, port, n] = [rest[0], Number(rest[1]), Number(rest[2])]
    const s = await enqueue(kind, port, n)
    console.log(JSON.stringify({ jobs_s: n / s }))
  } else if (mode === 'fill') {
    await enqueue('bulk', Number(rest[0]), Number(rest[1]))
    console.log(JSON.stringify({ ok: true }))
  } else if (mode === 'work') {
    await work(Number(rest[0]), Number(rest[1]))
    return
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
  process.exit(0)
}

main().catch((e) => { console.error(e); process.exit(1) })
