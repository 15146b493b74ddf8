'use strict'
// Monitoring from Node (issue #15): Prometheus text through a real parser with numbers matching
// what the test did, the status page of a 3-pool deployment over real HTTP (Express mount and
// node:http) and in headless Chromium, worker aggregation across processes, the scaling advice,
// trace-level log records that never carry values, session data, tokens or passwords.

const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFile, execFileSync } = require('node:child_process')
const express = require('express')
const parseText = require('parse-prometheus-text-format')
const { Clusterkit, logs, ClusterkitError } = require('..')
const { startRedis, sleep } = require('./helpers')

/**
 * Parses Prometheus text: promtool (Prometheus's own parser) checks the whole text, then
 * parse-prometheus-text-format reads it family by family for the numbers. That package
 * (1.1.1) throws a TypeError on a histogram without labels whose _sum/_count lines come before
 * its buckets, valid text that prometheus-client writes; only those named families may be
 * left out of its result, any other failure fails the test.
 */
const UNLABELED_HISTOGRAMS = ['clusterkit_lock_wait_seconds', 'clusterkit_session_lock_wait_seconds']
function parsePrometheus (text) {
  try {
    execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'], timeout: 30000 })
  } catch (e) {
    if (e.code === 'ENOENT') assert.fail('promtool is missing (Debian package prometheus)')
    assert.fail(`promtool check metrics rejected the text: ${e.stdout}${e.stderr}`)
  }
  const out = []
  for (const block of text.split(/^(?=# HELP )/m)) {
    if (!block.trim()) continue
    try {
      out.push(...parseText(block))
    } catch (e) {
      const name = /^# HELP (\S+)/.exec(block)?.[1]
      if (!(e instanceof TypeError && UNLABELED_HISTOGRAMS.includes(name))) throw e
    }
  }
  return out
}

/** GET `key` from a Redis with `password` (raw RESP over a socket): a bulk string or null. */
function redisGet (port, password, key) {
  const net = require('node:net')
  const cmd = (...a) => `*${a.length}\r\n` + a.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => c.write(cmd('AUTH', password) + cmd('GET', key)))
    let buf = ''
    const timer = setTimeout(() => { c.destroy(); reject(new Error('redis GET timed out')) }, 5000)
    c.on('data', (d) => {
      buf += d
      const m = /^\+OK\r\n(?:\$-1\r\n|\$(\d+)\r\n)/.exec(buf)
      if (!m) return
      if (m[1] === undefined) { clearTimeout(timer); c.destroy(); resolve(null); return }
      const start = m[0].length
      if (buf.length < start + Number(m[1])) return
      clearTimeout(timer); c.destroy(); resolve(buf.slice(start, start + Number(m[1])))
    })
    c.on('error', (e) => { clearTimeout(timer); reject(e) })
  })
}

const node = (id, port) => ({ id, host: '127.0.0.1', port })

/** The samples of metric family `name` (parsed), with their labels. */
function family (parsed, name) {
  const f = parsed.find((m) => m.name === name)
  assert.ok(f, `metric ${name} in the parsed Prometheus text`)
  return f
}

function sum (f, labels = {}) {
  return f.metrics
    .filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
    .reduce((s, m) => s + Number(m.value), 0)
}

function listen (handler) {
  return new Promise((resolve) => {
    const server = http.createServer(handler)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

async function get (url) {
  const r = await fetch(url)
  return { status: r.status, type: r.headers.get('content-type'), body: await r.text() }
}

test('Prometheus text parses with a real parser and counts what was done', () => {
  const ck = new Clusterkit({ pools: { app: { nodes: [node('a', 9001), node('b', 9002), node('c', 9003)] } } })
  const pool = ck.pool('app')
  const N = 37
  let failures = 0
  let fast = 0 // successes of 2 ms (<= 2.5 ms); the others take 3..6 ms
  for (let i = 0; i < N; i++) {
    const p = pool.pick()
    if (i % 10 === 3) { p.failure(); failures++ } else { p.success(2 + (i % 5)); if (i % 5 === 0) fast++ }
  }
  const held = pool.pick() // picked, not finished: in flight
  const text = ck.metricsText('prometheus')
  assert.match(ck.metricsText(), /^# HELP clusterkit_/, 'prometheus is the default format')
  const parsed = parsePrometheus(text)
  assert.ok(parsed.length > 10, `${parsed.length} metric families`)
  const picks = parsed.find((m) => m.name === 'clusterkit_node_picks_total' || m.name === 'clusterkit_node_picks')
  assert.ok(picks, 'clusterkit_node_picks_total is exported')
  assert.equal(picks.type, 'COUNTER')
  assert.equal(sum(picks, { pool: 'app' }), N + 1)
  assert.deepEqual(picks.metrics.map((m) => m.labels.node).sort(), ['a', 'b', 'c'])
  const successes = parsed.find((m) => m.name.startsWith('clusterkit_node_successes'))
  const failed = parsed.find((m) => m.name.startsWith('clusterkit_node_failures'))
  assert.equal(sum(successes, { pool: 'app' }), N - failures)
  assert.equal(sum(failed, { pool: 'app' }), failures)
  assert.equal(sum(family(parsed, 'clusterkit_node_in_flight'), { pool: 'app' }), 1)
  assert.equal(sum(family(parsed, 'clusterkit_pool_nodes'), { pool: 'app' }), 3)
  assert.equal(sum(family(parsed, 'clusterkit_pool_healthy_nodes'), { pool: 'app' }), 3)
  held.release()

  // The latency histogram, in a one-node deployment (the package merges a family's labelled
  // histogram series into one: with one series, its cumulative buckets are that node's).
  const one = new Clusterkit({ pools: { one: { nodes: [node('x', 9009)] } } })
  let ok = 0
  for (let i = 0; i < N; i++) {
    const p = one.pool('one').pick()
    if (i % 10 === 3) p.failure(); else { p.success(2 + (i % 5)); ok++ }
  }
  const latency = family(parsePrometheus(one.metricsText('prometheus')), 'clusterkit_node_latency_seconds')
  assert.equal(latency.type, 'HISTOGRAM')
  assert.equal(latency.metrics.length, 1)
  const bucket = (le) => Number(latency.metrics[0].buckets[le])
  assert.equal(ok, N - failures)
  assert.equal(bucket('+Inf'), ok, 'le=+Inf counts every success')
  assert.equal(bucket('0.001'), 0, 'no success under 1 ms')
  assert.equal(bucket('0.0025'), fast, 'successes of 2 ms in le=0.0025 (cumulative)')
  assert.equal(bucket('0.01'), ok, 'every success within 10 ms')

  // The structured snapshot says the same.
  const snap = ck.metricsSnapshot()
  const app = snap.pools.find((p) => p.name === 'app')
  assert.equal(app.nodes.reduce((s, n) => s + n.picks, 0), N + 1)
  assert.equal(app.nodes.reduce((s, n) => s + n.failures, 0), failures)
  assert.equal(app.nodes.reduce((s, n) => s + n.in_flight, 0), 0)
  assert.equal(snap.processes, 1)
  for (const k of ['cache', 'locks', 'sessions', 'redis', 'scaling']) assert.ok(k in snap, `snapshot has ${k}`)

  // OpenMetrics: the same families, the terminating # EOF.
  const om = ck.metricsText('openmetrics')
  assert.match(om, /\n# EOF\n?$/)
  assert.match(om, /clusterkit_node_picks_total\{pool="app",node="a"\} \d+/)
  assert.match(ck.metricsContentType('prometheus'), /^text\/plain; version=0\.0\.4/)
  assert.match(ck.metricsContentType('openmetrics'), /^application\/openmetrics-text/)
  assert.equal(ck.metricsContentType('status_json'), 'application/json')
  assert.match(ck.metricsText('html'), /^<!DOCTYPE html>/i)
  assert.equal(JSON.parse(ck.metricsText('json')).pools[0].name, 'app')
})

test('bad arguments name the field; disabled metrics are unavailable', async () => {
  const ck = new Clusterkit({ pools: { app: { nodes: [node('a', 9001)] } } })
  const isCode = (code, field) => (e) => e instanceof ClusterkitError && e.code === code && (!field || e.message.includes(field))
  assert.throws(() => ck.metricsText('xml'), isCode('invalid_argument', 'format'))
  assert.throws(() => ck.metricsText(42), isCode('invalid_argument', 'format'))
  assert.throws(() => ck.statusPage(7), isCode('invalid_argument', 'title'))
  assert.throws(() => ck.publishMetrics(''), isCode('invalid_argument', 'dir'))
  assert.throws(() => ck.aggregateMetrics(os.tmpdir(), { maxAge: -1 }), isCode('invalid_argument', 'maxAge'))
  assert.throws(() => ck.aggregateMetrics(os.tmpdir(), { maxAge: 0 }), isCode('invalid_argument', 'max_age'))
  assert.throws(() => ck.metricsHandler('yaml'), isCode('invalid_argument', 'format'))
  assert.throws(() => logs.setLevel('loud'), isCode('invalid_argument', 'level'))
  assert.throws(() => logs.setLevel('info', { intervalMs: 0 }), isCode('invalid_argument', 'intervalMs'))

  const off = new Clusterkit({ pools: { app: { nodes: [node('a', 9001)] } }, metrics: { enabled: false } })
  assert.throws(() => off.metricsText('prometheus'), isCode('unavailable'))
  assert.throws(() => off.statusPage(), isCode('unavailable'))
  const server = await listen(off.statusHandler())
  try {
    const r = await get(`http://127.0.0.1:${server.address().port}/status`)
    assert.equal(r.status, 503)
    assert.match(r.body, /^unavailable: metrics are disabled/)
  } finally {
    server.close()
  }
  ck.close()
  assert.throws(() => ck.metricsText(), isCode('closed'))
})

/** A deployment of 3 pools with nodes in each health, and what the page must show. */
function threePools () {
  const ck = new Clusterkit({
    pools: {
      web: { nodes: [node('w0', 9101), node('w1', 9102), node('w-down', 9103)] },
      cache: { nodes: [node('r1', 9201)] },
      api: { nodes: [node('api-1', 9301), node('api-2', 9302)] },
    },
  })
  ck.pool('web').setHealth('w-down', 'unhealthy', 'test: down')
  ck.pool('api').setHealth('api-2', 'draining', 'test: deploy')
  for (let i = 0; i < 5; i++) ck.pool('web').pick().success(3)
  const expect = [
    ['web', 'w0', 'healthy'], ['web', 'w1', 'healthy'], ['web', 'w-down', 'unhealthy'],
    ['cache', 'r1', 'healthy'], ['api', 'api-1', 'healthy'], ['api', 'api-2', 'draining'],
  ]
  return { ck, expect }
}

function assertEveryNode (html, expect, where) {
  for (const [pool, id, health] of expect) {
    assert.ok(html.includes(`data-pool="${pool}" data-node="${id}" data-health="${health}"`),
      `pool ${pool} node ${id} ${health} in ${where}`)
  }
  assert.equal(html.split('<tr class="node ').length - 1, expect.length, `node rows in ${where}`)
}

test('the status page mounted in Express and node:http shows every node of 3 pools with its health', async (t) => {
  const { ck, expect } = threePools()
  const app = express()
  app.use('/internal/status', ck.statusHandler({ title: 'Node <status>' }))
  app.use('/internal/metrics', ck.metricsHandler('prometheus'))
  app.get('/', (req, res) => res.send('the app'))
  const server = await new Promise((resolve) => { const s = app.listen(0, '127.0.0.1', () => resolve(s)) })
  t.after(() => server.close())
  const base = `http://127.0.0.1:${server.address().port}`

  const page = await get(`${base}/internal/status`)
  assert.equal(page.status, 200)
  assert.match(page.type, /^text\/html/)
  assert.ok(page.body.includes('<title>Node &lt;status&gt;</title>'), 'the title, escaped')
  assertEveryNode(page.body, expect, 'the Express-mounted page')

  for (const twin of ['/internal/status/json', '/internal/status?format=json']) {
    const j = await get(base + twin)
    assert.equal(j.status, 200, twin)
    assert.equal(j.type, 'application/json')
    const doc = JSON.parse(j.body)
    assert.deepEqual(doc.pools.map((p) => p.name).sort(), ['api', 'cache', 'web'])
    for (const [pool, id, health] of expect) {
      const n = doc.pools.find((p) => p.name === pool).nodes.find((x) => x.id === id)
      assert.equal(n.health, health, `${pool}/${id} in ${twin}`)
      assert.ok('p95_us' in n, 'status JSON has p95_us')
    }
  }
  const scrape = await get(`${base}/internal/metrics`)
  assert.match(scrape.type, /^text\/plain; version=0\.0\.4/)
  const parsed = parsePrometheus(scrape.body)
  assert.equal(sum(parsed.find((m) => m.name.startsWith('clusterkit_node_picks')), { pool: 'web' }), 5)
  assert.equal((await get(`${base}/`)).body, 'the app', 'the rest of the app is untouched')
  const post = await fetch(`${base}/internal/status`, { method: 'POST' })
  assert.equal(post.status, 404, 'POST falls through to Express (next())')

  // Plain node:http: the app routes a path of its choice to the handler.
  const handler = ck.statusHandler()
  const plain = await listen((req, res) => {
    if (req.url.startsWith('/ops/status')) return handler(req, res)
    res.statusCode = 404; res.end()
  })
  t.after(() => plain.close())
  const pbase = `http://127.0.0.1:${plain.address().port}`
  const p2 = await get(`${pbase}/ops/status`)
  assert.equal(p2.status, 200)
  assert.ok(p2.body.includes('<title>clusterkit status</title>'))
  assertEveryNode(p2.body, expect, 'the node:http page')
  assert.equal(JSON.parse((await get(`${pbase}/ops/status.json`)).body).pools.length, 3)
  const head = await fetch(`${pbase}/ops/status`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal((await head.text()), '')
  const put = await fetch(`${pbase}/ops/status`, { method: 'PUT' })
  assert.equal(put.status, 405)

  // Headless Chromium renders the page served over HTTP: every node with its health in the DOM.
  let chromium = null
  for (const b of ['chromium', 'chromium-browser']) {
    for (const dir of (process.env.PATH ?? '').split(':')) {
      if (!chromium && dir && fs.existsSync(path.join(dir, b))) chromium = path.join(dir, b)
    }
  }
  assert.ok(chromium, 'chromium is missing (Debian package chromium)')
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-node-chromium-'))
  t.after(() => fs.rmSync(profile, { recursive: true, force: true }))
  const dom = await new Promise((resolve, reject) => {
    execFile(chromium, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      `--user-data-dir=${profile}`, '--dump-dom', `${base}/internal/status`],
    { timeout: 90000, maxBuffer: 16 << 20 }, (err, stdout) => err ? reject(err) : resolve(stdout))
  })
  assert.ok(dom.includes('<title>Node &lt;status&gt;</title>'), 'Chromium loaded the page')
  assertEveryNode(dom, expect, 'the DOM Chromium rendered')
})

test('processes publish their metrics and one scrape adds them up', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-node-agg-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const config = { pools: { app: { nodes: [node('a', 9001), node('b', 9002)] } } }
  // Another process (a cluster worker) picks 7 times and publishes.
  const child = `const { Clusterkit } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const ck = new Clusterkit(${JSON.stringify(JSON.stringify(config))});
    for (let i = 0; i < 7; i++) ck.pool('app').pick().success(1);
    ck.publishMetrics(${JSON.stringify(dir)});`
  execFileSync(process.execPath, ['-e', child], { timeout: 60000 })
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.json')).length, 1, 'the worker published one file')

  const ck = new Clusterkit(config)
  for (let i = 0; i < 5; i++) ck.pool('app').pick().success(1)
  const agg = ck.aggregateMetrics(dir, { maxAge: 60000 })
  assert.equal(agg.processes, 2)
  assert.equal(agg.pools[0].nodes.reduce((s, n) => s + n.picks, 0), 12)
  const parsed = parsePrometheus(ck.aggregateMetrics(dir, { format: 'prometheus' }))
  assert.equal(sum(parsed.find((m) => m.name.startsWith('clusterkit_node_picks')), { pool: 'app' }), 12)
  assert.equal(sum(family(parsed, 'clusterkit_processes')), 2)

  const server = await listen(ck.metricsHandler('prometheus', { aggregateDir: dir, maxAge: 60000 }))
  t.after(() => server.close())
  const scrape = parsePrometheus((await get(`http://127.0.0.1:${server.address().port}/metrics`)).body)
  assert.equal(sum(scrape.find((m) => m.name.startsWith('clusterkit_node_picks')), { pool: 'app' }), 12)

  ck.publishMetrics(dir)
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.json')).length, 2, 'this process published too')
})

test('the scaling advice is exposed as an object and a metric', () => {
  const ck = new Clusterkit({
    pools: { app: { nodes: [node('a', 9001), node('b', 9002), node('c', 9003)] } },
    metrics: { scaling: { app: { target_in_flight: 1, min_nodes: 2, max_nodes: 10, scale_out_after: '1ms', cooldown: '1ms' } } },
  })
  assert.deepEqual(ck.scalingAdvice(), [], 'empty before the first snapshot')
  const held = []
  for (let i = 0; i < 12; i++) held.push(ck.pool('app').pick()) // 4 in flight per node, target 1
  const first = ck.metricsSnapshot().scaling
  assert.equal(first.length, 1)
  assert.equal(first[0].pool, 'app')
  assert.equal(first[0].current, 3)
  const start = Date.now()
  let advice = ck.scalingAdvice()
  while (advice[0].recommended === 3 && Date.now() - start < 5000) {
    const t0 = Date.now(); while (Date.now() - t0 < 5) { /* let scale_out_after pass */ }
    ck.metricsSnapshot()
    advice = ck.scalingAdvice()
  }
  assert.equal(advice[0].pool, 'app')
  assert.equal(advice[0].recommended, 10, `advice: ${JSON.stringify(advice[0])}`)
  assert.equal(typeof advice[0].reason, 'string')
  assert.ok(advice[0].reason.length > 0)
  const parsed = parsePrometheus(ck.metricsText('prometheus'))
  assert.equal(sum(family(parsed, 'clusterkit_scaling_recommended_nodes'), { pool: 'app' }), 10)
  for (const p of held) p.release()
})

test('trace-level log records while doing cache/lock/session work carry no secrets', async (t) => {
  const password = 'pw-Sup3rSecret-' + process.pid
  const redis = await startRedis(t, ['--requirepass', password])
  const ck = new Clusterkit({
    pools: { locks: { nodes: [node('r1', redis.port)] } },
    cache: { redis: redis.address, namespace: 'cknodemon' },
    locks: { pool: 'locks' },
    redis: { password },
  })
  const records = []
  const onRecord = (r) => records.push(r)
  assert.equal(logs.active, false, 'nothing is recorded while nobody listens')
  logs.setLevel('trace', { intervalMs: 20 })
  logs.on('record', onRecord)
  t.after(() => { logs.off('record', onRecord); logs.setLevel('info') })
  assert.equal(logs.active, true)

  const value = 'cache-value-' + 'v'.repeat(8) + '-' + process.pid
  const key = 'user:profile:' + process.pid
  await ck.cache.set(key, value, 60000)
  assert.equal(await ck.cache.getString(key), value)
  assert.equal(await ck.cache.getString('absent-' + process.pid), null)
  await ck.cache.getOrCompute('computed-' + process.pid, 60000, () => value + '-computed')
  const lockName = 'orders-lock-' + process.pid
  const lock = await ck.locks.acquire(lockName, { ttl: 5000 })
  const token = await redisGet(redis.port, password, `cknodemon:l:{${lockName}}`)
  assert.ok(typeof token === 'string' && token.length >= 16, 'the lock token, read from Redis')
  await lock.extend(5000)
  await lock.release()
  const sessionData = 'session-secret-data-' + process.pid
  const s = ck.sessions.create()
  s.set('card', sessionData)
  await ck.sessions.save(s)
  const loaded = await ck.sessions.loadLocked(s.id)
  assert.equal(loaded.getString('card'), sessionData)
  await ck.sessions.unlock(loaded)
  await ck.sessions.destroy(s.id)
  // Delivered by the timer too (not only on flush).
  const deadline = Date.now() + 5000
  while (records.length === 0 && Date.now() < deadline) await sleep(20)
  assert.ok(records.length > 0, 'records arrived from the timer')
  logs.flush()

  assert.ok(records.some((r) => r.level === 'trace' && r.fields.key_hash), 'trace records of cache reads with key_hash')
  assert.ok(records.some((r) => r.level === 'debug'), 'debug records (lock acquired, session created, connections)')
  for (const r of records) {
    assert.deepEqual(Object.keys(r).sort(), ['fields', 'level', 'message', 'target', 'time_ms'])
    assert.ok(r.target.startsWith('clusterkit'), r.target)
  }
  const everything = JSON.stringify(records) + ck.metricsText('prometheus') + ck.metricsText('openmetrics') +
    ck.statusPage() + ck.metricsText('status_json')
  for (const secret of [password, value, sessionData, s.id, key, lockName, token]) {
    assert.ok(!everything.includes(secret), 'a secret or a value in the logs, metrics or page')
  }

  // The level filters: at warn, the same work yields no trace/debug/info records.
  logs.setLevel('warn')
  logs.flush()
  records.length = 0
  await ck.cache.getString(key)
  await (await ck.locks.acquire(lockName, { ttl: 5000 })).release()
  logs.flush()
  assert.deepEqual(records.filter((r) => r.level !== 'warn' && r.level !== 'error'), [])

  // Nobody listening: the core keeps nothing.
  logs.off('record', onRecord)
  assert.equal(logs.active, false)
  await ck.cache.getString(key)
  logs.setLevel('trace')
  assert.equal(logs.active, false)
  const late = []
  logs.on('record', (r) => late.push(r))
  logs.flush()
  assert.deepEqual(late, [], 'records made while nobody listened were not kept')
  logs.removeAllListeners('record')
  assert.equal(logs.active, false)
})
