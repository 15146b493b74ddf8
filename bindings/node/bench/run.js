'use strict'
// Node binding benchmarks, side by side in one run on the same redis-server(s):
//   node bindings/node/bench/run.js            (after bindings/node/run-tests or a napi build,
//                                                and `npm ci` in bindings/node/bench)
// Prints a table of ops/s per scenario and the ratio clusterkit / peer. No assertions: the
// figures go to BENCHMARKS.md ("Node.js (issue #14)").
const { spawn, execFileSync } = require('node:child_process')
const http = require('node:http')
const path = require('node:path')
const { Clusterkit, ClusterkitStore } = require('..')
const { startRedis } = require('../__test__/helpers')

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)

async function timeIt (fn, { concurrency = 1 } = {}) {
  // warm-up, then as many operations as fit in SECONDS with `concurrency` in flight
  const warm = Date.now() + 300
  while (Date.now() < warm) await fn()
  let n = 0
  const end = performance.now() + SECONDS * 1000
  const worker = async () => { while (performance.now() < end) { await fn(); n++ } }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, worker))
  return n / ((performance.now() - t0) / 1000)
}

function redisBenchmark (port) {
  const out = execFileSync('redis-benchmark', ['-h', '127.0.0.1', '-p', String(port), '-c', '1', '-n', '100000', '-t', 'set,get', '-q'], { encoding: 'utf8' })
  const rate = (name) => Number(new RegExp(`${name}: ([\\d.]+) requests per second`).exec(out)[1])
  return { set: rate('SET'), get: rate('GET') }
}

const rows = []
function row (scenario, ck, peerName, peer, target) {
  const ratio = ck / peer
  rows.push({ scenario, clusterkit: Math.round(ck), peer: peerName, peerOps: Math.round(peer), ratio: ratio.toFixed(2), target })
  console.log(`${scenario.padEnd(44)} clusterkit ${Math.round(ck).toString().padStart(8)}/s  ${peerName.padEnd(26)} ${Math.round(peer).toString().padStart(8)}/s  ratio ${ratio.toFixed(2)}  (target ${target})`)
}

async function main () {
  const t = { after: (f) => process.on('exit', f) }
  const r = await startRedis(t)
  const masters = [r, await startRedis(t), await startRedis(t)]
  const Redis = require('ioredis')
  const { createClient } = require('redis')
  const ck = new Clusterkit({ cache: { redis: r.address, namespace: 'bench' }, pools: { locks: { nodes: [{ id: 'r1', host: '127.0.0.1', port: r.port }] } }, locks: { pool: 'locks' } })
  const ck3 = new Clusterkit({ pools: { locks: { nodes: masters.map((m, i) => ({ id: `m${i}`, host: '127.0.0.1', port: m.port })) } }, locks: { pool: 'locks' } })
  const io = new Redis({ port: r.port, host: '127.0.0.1' })
  const ioAuto = new Redis({ port: r.port, host: '127.0.0.1', enableAutoPipelining: true })
  const nr = createClient({ socket: { host: '127.0.0.1', port: r.port } })
  await nr.connect()
  const value = 'x'.repeat(100)
  const c = ck.cache
  await c.set('k', value); await io.set('bench:c:k', value)

  console.log(`node ${process.version}, ${require('node:os').cpus()[0].model} x${require('node:os').cpus().length}, redis-server on loopback, ${SECONDS}s per figure`)
  const rb = redisBenchmark(r.port)
  row('GET, 1 in flight', await timeIt(() => c.get('k')), 'redis-benchmark -c 1', rb.get, '>= 0.90')
  row('SET, 1 in flight', await timeIt(() => c.set('k', value)), 'redis-benchmark -c 1', rb.set, '>= 0.90')
  row('GET, 1 in flight', await timeIt(() => c.get('k')), 'ioredis', await timeIt(() => io.get('bench:c:k')), 'info')
  row('GET, 1 in flight', await timeIt(() => c.get('k')), 'node-redis v5', await timeIt(() => nr.get('bench:c:k')), 'info')
  const ck50 = await timeIt(() => c.get('k'), { concurrency: 50 })
  row('GET, 50 concurrent', ck50, 'ioredis autoPipelining', await timeIt(() => ioAuto.get('bench:c:k'), { concurrency: 50 }), '>= 1.3')
  row('GET, 50 concurrent', ck50, 'ioredis', await timeIt(() => io.get('bench:c:k'), { concurrency: 50 }), 'info')
  row('GET, 50 concurrent', ck50, 'node-redis v5', await timeIt(() => nr.get('bench:c:k'), { concurrency: 50 }), 'info')
  const keys = Array.from({ length: 16 }, (_, i) => `m${i}`)
  await c.setMany(keys.map((k) => [k, value]))
  await io.mset(...keys.flatMap((k) => [`bench:c:${k}`, value]))
  const ioKeys = keys.map((k) => `bench:c:${k}`)
  row('getMany 16 keys, 1 in flight', await timeIt(() => c.getMany(keys)), 'ioredis mget', await timeIt(() => io.mget(ioKeys)), '>= 1.3')

  // locks: acquire + release, 1 in flight
  const { default: Redlock } = require('redlock')
  const rl1 = new Redlock([io], { retryCount: 0 })
  const rl3Clients = masters.map((m) => new Redis({ port: m.port, host: '127.0.0.1' }))
  const rl3 = new Redlock(rl3Clients, { retryCount: 0 })
  let i = 0
  row('lock acquire+release, one Redis', await timeIt(async () => { const l = await ck.locks.acquire(`L${i++ % 64}`, { ttl: 5000 }); await l.release() }),
    'node-redlock', await timeIt(async () => { const l = await rl1.acquire([`L${i++ % 64}`], 5000); await l.release() }), '>= 1.0')
  row('lock acquire+release, three masters', await timeIt(async () => { const l = await ck3.locks.acquire(`L${i++ % 64}`, { ttl: 5000 }); await l.release() }),
    'node-redlock', await timeIt(async () => { const l = await rl3.acquire([`L${i++ % 64}`], 5000); await l.release() }), '>= 1.5')

  // express-session: one request that reads and changes a session, sequential client
  const express = require('express'); const session = require('express-session')
  const { RedisStore } = require('connect-redis')
  const server = (store) => {
    const app = express()
    app.use(session({ secret: 's', store, resave: false, saveUninitialized: false, cookie: { maxAge: 600000 } }))
    app.get('/', (req, res) => { req.session.n = (req.session.n || 0) + 1; res.end(String(req.session.n)) })
    return new Promise((resolve) => { const s = http.createServer(app).listen(0, '127.0.0.1', () => resolve(s)) })
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const hit = (port, cookie) => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', agent, headers: cookie ? { cookie } : {} }, (res) => {
      res.resume(); res.on('end', () => resolve(res.headers['set-cookie']?.[0]?.split(';')[0] ?? cookie))
    }).on('error', reject)
  })
  const sCk = await server(new ClusterkitStore({ clusterkit: ck, expressSession: session }))
  const sCr = await server(new RedisStore({ client: nr, prefix: 'sess:' }))
  const cookieCk = await hit(sCk.address().port); const cookieCr = await hit(sCr.address().port)
  row('express-session request with a session', await timeIt(() => hit(sCk.address().port, cookieCk)),
    'connect-redis (node-redis v5)', await timeIt(() => hit(sCr.address().port, cookieCr)), '>= 1.5')
  sCk.close(); sCr.close(); agent.destroy()
  io.disconnect(); ioAuto.disconnect(); for (const x of rl3Clients) x.disconnect(); await nr.quit()
  console.log(JSON.stringify(rows))
  process.exit(0)
}
main().catch((e) => { console.error(e); process.exit(1) })
