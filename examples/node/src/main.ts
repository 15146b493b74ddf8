// clusterkit in a Node application: two Express app processes behind clusterkit's load
// balancer, a distributed cache, a distributed lock and sessions, from one config document.
//
//   npm start                              cache, locks, sessions embedded (per process)
//   REDIS=127.0.0.1:6379 npm start         cache, locks, sessions shared in Redis
import { fork, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import path from 'node:path'
import { Clusterkit, ClusterkitError, type Pick } from 'clusterkit'
import { config } from './config'

interface Answer { node: string, price: number, computedBy: string | null, viewed: number }

function startNode (id: string): Promise<{ id: string, port: number, proc: ChildProcess }> {
  const proc = fork(path.join(__dirname, 'server.js'), [], { env: { ...process.env, NODE_ID: id, PORT: '0' } })
  return new Promise((resolve, reject) => {
    proc.once('message', (m: { port: number }) => resolve({ id, port: m.port, proc }))
    proc.once('error', reject)
    proc.once('exit', (code) => reject(new Error(`${id} exited with ${String(code)}`)))
  })
}

function get (pick: Pick, urlPath: string, cookie: string | null, method = 'GET'): Promise<{ body: string, cookie: string | null }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: pick.host, port: pick.port, path: urlPath, method, timeout: 1000, headers: cookie ? { cookie } : {} }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => resolve({ body, cookie: res.headers['set-cookie']?.[0]?.split(';')[0] ?? cookie }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

/** A balanced call: picks a node, reports the outcome (feeds outlier detection), retries. */
async function call (ck: Clusterkit, urlPath: string, cookie: string | null, method = 'GET'): Promise<{ body: string, cookie: string | null }> {
  let last: unknown = null
  for (let attempt = 0; attempt < 5; attempt++) {
    const pick = ck.pool('app').pick()
    const started = performance.now()
    try {
      const r = await get(pick, urlPath, cookie, method)
      pick.success(performance.now() - started)
      return r
    } catch (e) {
      pick.failure()
      last = e
    }
  }
  throw last instanceof Error ? last : new Error('no answer')
}

async function main (): Promise<void> {
  const nodes = await Promise.all(['web-1', 'web-2'].map(startNode))
  const ck = new Clusterkit(config(nodes))
  try {
    console.log(`clusterkit: app nodes ${nodes.map((n) => `${n.id}@127.0.0.1:${n.port}`).join(', ')}; ` +
      `cache/locks/sessions: ${process.env.REDIS ? `Redis at ${process.env.REDIS}` : 'embedded'}`)
    const warm = JSON.parse((await call(ck, '/warmup', null, 'POST')).body) as { node: string, fencingToken?: number }
    console.log(`warm-up ran on ${warm.node} under a lock (fencing token ${String(warm.fencingToken)})`)

    let cookie: string | null = null
    const served = new Map<string, number>()
    let last: Answer | null = null
    for (const item of [1, 2, 3, 4, 5, 1, 2, 6, 7, 8]) {
      const r = await call(ck, `/price?item=${item}`, cookie)
      cookie = r.cookie
      last = JSON.parse(r.body) as Answer
      served.set(last.node, (served.get(last.node) ?? 0) + 1)
    }
    console.log(`10 requests, one session (${String(last?.viewed)} items viewed): ` +
      [...served].map(([k, v]) => `${k}×${v}`).join(', '))

    // A node goes away: outlier detection and health checks take it out.
    nodes[1].proc.kill('SIGKILL')
    const after = new Map<string, number>()
    for (let item = 100; item < 110; item++) {
      const a = JSON.parse((await call(ck, `/price?item=${item}`, null)).body) as Answer
      after.set(a.node, (after.get(a.node) ?? 0) + 1)
    }
    console.log(`web-2 stopped; next 10 calls served by: ${[...after].map(([k, v]) => `${k}×${v}`).join(', ')}`)
    for (const n of ck.pool('app').nodes()) console.log(`  ${n.id.padEnd(6)} ${n.health.padEnd(9)} ${n.reason}`)

    try {
      await ck.cache.get('')
    } catch (e) {
      if (e instanceof ClusterkitError) console.log(`errors carry a code: ${e.code}: ${e.message}`)
    }
    const m = ck.metrics()
    console.log(`this process's cache: ${m.cache.hits} hits, ${m.cache.misses} misses`)
  } finally {
    for (const n of nodes) n.proc.kill('SIGTERM')
  }
}

main().catch((e: unknown) => { console.error(e); process.exitCode = 1 })
